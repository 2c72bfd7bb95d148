"""The project's test lab: a real Hive Metastore 2.3 (PyPI pyspark's jars, embedded Derby,
s3a:// emulated on local disk), hms-guard in front of it, and Spark sessions through it.

One lab is one directory; everything any part writes stays inside it:

    DIR/hms/          the metastore: conf/ (hive-site.xml, core-site.xml, hive-log4j2.properties),
                      metastore_db/ (Derby), warehouse/, tmp/, metastore.log (its log4j log),
                      metastore.out (its stdout/stderr), metastore.pid; with notifications=True
                      it records its notification log (tests/lab/notify, tests/README.md)
    DIR/s3/datalake/  the emulated bucket: s3a://datalake/KEY is DIR/s3/datalake/KEY
    DIR/spark/        a Spark session's dirs and spark.log
    DIR/NAME.toml     an hms-guard config; NAME.log (stderr: its JSON log), NAME.out (stdout)

CLI (uses the venv of tests/lab/setup.sh):
    python tests/lab/hms.py start --dir DIR [--port PORT]   starts a metastore, prints its port
    python tests/lab/hms.py stop --dir DIR                  stops it

From Python, Metastore/Guard/spark_session start processes in their own process group that are
killed by stop(), at interpreter exit, and (Linux) by the kernel when this process dies."""
import argparse
import atexit
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BUCKET = "datalake"
METASTORE_TIMEOUT = 120  # seconds until a started metastore must answer a Thrift call
GUARD_TIMEOUT = 30  # seconds until hms-guard's /readyz must say 200

_live = []  # processes to kill at interpreter exit


# ---------------------------------------------------------------------------------------------
# helpers


def free_port():
    """An ephemeral port free right now on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def jars_dir():
    import pyspark
    return Path(pyspark.__file__).parent / "jars"


def java():
    home = os.environ.get("JAVA_HOME")
    return str(Path(home) / "bin" / "java") if home else "java"


def javac():
    home = os.environ.get("JAVA_HOME")
    return str(Path(home) / "bin" / "javac") if home else (shutil.which("javac") or "javac")


NOTIFY_SRC = REPO / "tests" / "lab" / "notify"


def notify_jar():
    """The lab's notification-log listener (tests/lab/notify, hmsguard.lab.NotificationLog)
    as a jar, compiled with javac against pyspark's metastore jars on first use and cached
    under the lab cache (${HMS_GUARD_CACHE:-~/.cache/hms-guard}/notify/HASH.jar, HASH over
    the sources and the metastore jar's name: a changed source makes a new jar). Raises
    RuntimeError if javac is missing or the compilation fails."""
    import hashlib
    import tempfile
    import zipfile
    sources = sorted(NOTIFY_SRC.rglob("*.java"))
    if not sources:
        raise RuntimeError(f"no Java sources under {NOTIFY_SRC}")
    metastore_jars = sorted(p.name for p in jars_dir().glob("hive-metastore-*.jar"))
    if not metastore_jars:
        raise RuntimeError(f"no hive-metastore jar in {jars_dir()}: run tests/lab/setup.sh")
    h = hashlib.sha256("\n".join(metastore_jars).encode())
    for src in sources:
        h.update(str(src.relative_to(NOTIFY_SRC)).encode() + b"\0" + src.read_bytes())
    cache = Path(os.environ.get("HMS_GUARD_CACHE", Path.home() / ".cache" / "hms-guard"))
    jar = cache / "notify" / f"hms-guard-lab-notify-{h.hexdigest()[:16]}.jar"
    if jar.is_file():
        return jar
    compiler = javac()
    if not (shutil.which(compiler) or os.access(compiler, os.X_OK)):
        raise RuntimeError(f"javac not found ({compiler}): the lab's notification listener "
                           "is compiled with it; tests/lab/setup.sh installs a JDK 17+")
    jar.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=jar.parent) as tmp:
        classes = Path(tmp) / "classes"
        r = subprocess.run([compiler, "-nowarn", "--release", "17", "-d", str(classes),
                            "-cp", f"{jars_dir()}/*", *map(str, sources)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"javac of {NOTIFY_SRC} failed ({r.returncode}):\n"
                               f"{r.stdout}{r.stderr}")
        part = Path(tmp) / "notify.jar"
        with zipfile.ZipFile(part, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\n")
            for f in sorted(classes.rglob("*.class")):
                z.write(f, str(f.relative_to(classes)))
        os.replace(part, jar)  # atomic: a concurrent builder writes the same bytes
    return jar


def tail(*paths, n=40):
    """The last n lines of each existing file, for error messages."""
    out = []
    for p in paths:
        try:
            lines = Path(p).read_text(errors="replace").splitlines()[-n:]
        except OSError:
            continue
        out.append(f"--- {p} (last {len(lines)} lines)\n" + "\n".join(lines))
    return "\n".join(out) or "(no log)"


def site_xml(props):
    from xml.sax.saxutils import escape
    body = "".join(f"  <property><name>{escape(k)}</name><value>{escape(v)}</value></property>\n"
                   for k, v in props.items())
    return f'<?xml version="1.0"?>\n<configuration>\n{body}</configuration>\n'


def bucket_dir(lab):
    return Path(lab) / "s3" / BUCKET


def s3a_conf(lab):
    """Hadoop keys mapping s3a://datalake/... onto DIR/s3/datalake and s3a://archive/... onto
    DIR/s3/archive (Hadoop's viewfs overload scheme over the local filesystem). Creates the link targets, which must exist before a
    metastore or Spark starts. Locations stay s3a://... in the metastore."""
    root = bucket_dir(lab)
    (root / "datawarehouse").mkdir(parents=True, exist_ok=True)
    archive = Path(lab) / "s3" / "archive"
    archive.mkdir(parents=True, exist_ok=True)
    return {
        "fs.s3a.impl": "org.apache.hadoop.fs.viewfs.ViewFileSystemOverloadScheme",
        "fs.AbstractFileSystem.s3a.impl": "org.apache.hadoop.fs.viewfs.ViewFsOverloadScheme",
        "fs.viewfs.overload.scheme.target.s3a.impl": "org.apache.hadoop.fs.RawLocalFileSystem",
        f"fs.viewfs.mounttable.{BUCKET}.link./datawarehouse": f"file://{root}/datawarehouse",
        f"fs.viewfs.mounttable.{BUCKET}.linkFallback": f"file://{root}",
        # s3a://archive: the lab's second bucket, which no user's storage role may read.
        "fs.viewfs.mounttable.archive.linkFallback": f"file://{archive}",
        # Hadoop's default committer for s3a is the S3A committer from hadoop-aws, which
        # pyspark does not ship: Hive-format INSERTs use the classic file committer.
        "mapreduce.outputcommitter.factory.scheme.s3a":
            "org.apache.hadoop.mapreduce.lib.output.FileOutputCommitterFactory",
    }


def log4j2(path, level="info"):
    """A log4j2 properties config writing everything to one file."""
    return ("status = error\n"
            "appender.f.type = File\nappender.f.name = F\n"
            f"appender.f.fileName = {path}\n"
            "appender.f.layout.type = PatternLayout\n"
            "appender.f.layout.pattern = %d{ISO8601} %-5p [%t] %c{1}: %m%n\n"
            f"rootLogger.level = {level}\nrootLogger.appenderRef.f.ref = F\n")


try:
    _prctl = ctypes.CDLL(None, use_errno=True).prctl  # loaded here, not in a forked child
except (OSError, AttributeError):
    _prctl = None


def _die_with_parent():
    """preexec_fn: the kernel SIGKILLs the child when this (parent) process dies, so a
    killed test run leaves nothing behind (Linux only; a no-op elsewhere)."""
    if _prctl is not None:
        _prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG


def spawn(cmd, out, err=None, cwd=None, daemon=False, env=None):
    """Starts cmd in a new process group, stdout to `out` and stderr to `err` (or `out`),
    with this process's environment plus `env`. Unless daemon, it dies with this process at
    the latest."""
    with open(out, "ab") as o:
        e = open(err, "ab") if err else None
        try:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=o,
                                    stderr=e or subprocess.STDOUT, cwd=cwd,
                                    env=dict(os.environ, **env) if env else None,
                                    start_new_session=True,
                                    preexec_fn=None if daemon else _die_with_parent)
        finally:
            if e:
                e.close()
    if not daemon:
        _live.append(proc)
    return proc


def kill_group(proc, grace=15):
    """SIGTERM to proc's process group, SIGKILL after `grace` seconds; waits for the exit."""
    if proc is None:
        return
    if proc in _live:
        _live.remove(proc)
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


@atexit.register
def _kill_all():
    for p in list(_live):
        kill_group(p, grace=5)


# ---------------------------------------------------------------------------------------------
# Thrift clients


def external_table(db, name, location, owner="admin", params=None, partitioned=False,
                   external=True):
    """A one-column EXTERNAL_TABLE DB.NAME at LOCATION (hmsclient's Thrift types), with
    EXTERNAL=TRUE unless `external` is false, partitioned by `ds` if asked."""
    from hmsclient.genthrift.hive_metastore import ttypes as tt
    sd = tt.StorageDescriptor(
        cols=[tt.FieldSchema("id", "int", "")], location=location,
        inputFormat="org.apache.hadoop.mapred.TextInputFormat",
        outputFormat="org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat",
        serdeInfo=tt.SerDeInfo(None, "org.apache.hadoop.hive.serde2.lazy.LazySimpleSerDe", {}),
        bucketCols=[], sortCols=[], parameters={})
    return tt.Table(tableName=name, dbName=db, owner=owner, sd=sd,
                    partitionKeys=[tt.FieldSchema("ds", "string", "")] if partitioned else [],
                    parameters={**({"EXTERNAL": "TRUE"} if external else {}), **(params or {})},
                    tableType="EXTERNAL_TABLE")


def grant(client, obj, user, *privs):
    """As `client` (the administrator), grants each of PRIVS on the HiveObjectRef OBJ to the
    user USER (grantor "admin"); asserts the metastore took it."""
    from hmsclient.genthrift.hive_metastore import ttypes as tt
    assert client.grant_privileges(tt.PrivilegeBag([tt.HiveObjectPrivilege(
        obj, user, tt.PrincipalType.USER,
        tt.PrivilegeGrantInfo(p, 0, "admin", tt.PrincipalType.USER, False)) for p in privs]))


def denied(call, *parts):
    """Runs CALL, which must raise the MetaException of an hms-guard denial whose message
    contains "permission denied" and each of PARTS; returns the message."""
    import pytest
    from hmsclient.genthrift.hive_metastore import ttypes as tt
    with pytest.raises(tt.MetaException) as e:
        call()
    msg = e.value.message
    for p in ("permission denied",) + parts:
        assert p in msg, msg
    return msg


def connect(port, user=None, timeout=30):
    """A raw HMS Thrift client (hmsclient's generated code; binary, buffered) on
    127.0.0.1:PORT that has called set_ugi(USER) if a user is given; its transport is
    `client._transport`. A hung server fails the call after `timeout` seconds."""
    from hmsclient.genthrift.hive_metastore import ThriftHiveMetastore as T
    from thrift.protocol import TBinaryProtocol
    from thrift.transport import TSocket, TTransport
    sock = TSocket.TSocket("127.0.0.1", port)
    sock.setTimeout(timeout * 1000)
    t = TTransport.TBufferedTransport(sock)
    t.open()
    c = T.Client(TBinaryProtocol.TBinaryProtocol(t))
    c._transport = t
    if user is not None:
        c.set_ugi(user, [])
    return c


def ask_question(client, action, db=None, table=None, path=None, privileges=(),
                 asker="hms-guard-spark/lab"):
    """Asks hms-guard's own question (`hms_guard_authorize`, docs/SPARK.md) on a client from
    connect(): ("allow", text) or ("deny", message)."""
    from thrift.Thrift import TMessageType, TType
    op, ip = client._oprot, client._iprot
    op.writeMessageBegin("hms_guard_authorize", TMessageType.CALL, 0)
    op.writeStructBegin("hms_guard_authorize_args")
    for fid, v in ((1, action), (2, db), (3, table), (4, path), (6, asker)):
        if v is not None:
            op.writeFieldBegin("f", TType.STRING, fid)
            op.writeString(v)
            op.writeFieldEnd()
    if privileges:
        op.writeFieldBegin("privileges", TType.LIST, 5)
        op.writeListBegin(TType.STRING, len(privileges))
        for p in privileges:
            op.writeString(p)
        op.writeListEnd()
        op.writeFieldEnd()
    op.writeFieldStop()
    op.writeStructEnd()
    op.writeMessageEnd()
    op.trans.flush()
    _, mtype, _ = ip.readMessageBegin()
    if mtype == TMessageType.EXCEPTION:
        from thrift.Thrift import TApplicationException
        x = TApplicationException()
        x.read(ip)
        ip.readMessageEnd()
        raise x
    answer = None
    ip.readStructBegin()
    while True:
        _, ftype, fid = ip.readFieldBegin()
        if ftype == TType.STOP:
            break
        if fid == 0 and ftype == TType.STRING:
            answer = ("allow", ip.readString())
        elif fid == 1 and ftype == TType.STRUCT:
            ip.readStructBegin()
            while True:
                _, t2, f2 = ip.readFieldBegin()
                if t2 == TType.STOP:
                    break
                if f2 == 1 and t2 == TType.STRING:
                    answer = ("deny", ip.readString())
                else:
                    ip.skip(t2)
                ip.readFieldEnd()
            ip.readStructEnd()
        else:
            ip.skip(ftype)
        ip.readFieldEnd()
    ip.readStructEnd()
    ip.readMessageEnd()
    return answer


def current_event_id(client):
    """get_current_notificationEventId: the id of the newest event of the notification log
    (0 when none was ever recorded)."""
    return client.get_current_notificationEventId().eventId


def next_events(client, last_id, max_events=None):
    """get_next_notification: the events with ids above `last_id`, ascending, at most
    `max_events` (all if None) — Thrift NotificationEvent objects (eventId, eventTime,
    eventType, dbName, tableName, message, messageFormat)."""
    from hmsclient.genthrift.hive_metastore import ttypes as tt
    rqst = tt.NotificationEventRequest(lastEvent=last_id, maxEvents=max_events)
    return list(client.get_next_notification(rqst).events or [])


def thrift_from_json(cls, text):
    """A Thrift object of class `cls` (hmsclient's types) read from Thrift's JSON protocol,
    as notification messages carry objects (e.g. a create-table message's tableObjJson)."""
    from thrift.protocol import TJSONProtocol
    from thrift.transport import TTransport
    obj = cls()
    obj.read(TJSONProtocol.TJSONProtocol(TTransport.TMemoryBuffer(text.encode())))
    return obj


def hms_client(port, host="127.0.0.1", timeout=30):
    """An unopened hmsclient.HMSClient (use `with hms_client(port) as c:`), socket timeout in
    seconds so a hung server fails the caller instead of blocking it."""
    from hmsclient import hmsclient
    from thrift.protocol import TBinaryProtocol
    from thrift.transport import TSocket, TTransport
    sock = TSocket.TSocket(host, int(port))
    sock.setTimeout(timeout * 1000)
    proto = TBinaryProtocol.TBinaryProtocol(TTransport.TBufferedTransport(sock))
    return hmsclient.HMSClient(iprot=proto)


# ---------------------------------------------------------------------------------------------
# the metastore


class Metastore:
    """A real Hive Metastore 2.3 with embedded Derby; its files under DIR/hms, the emulated
    bucket under DIR/s3/datalake."""

    def __init__(self, lab, port=None, admin_users=("admin",), kerberos=None, home=None,
                 notifications=False, notification_ttl_s=None, notification_clean_ms=500):
        """`kerberos`: a dict {principal, keytab, krb5_conf, proxy_users, protection} for a
        metastore in SASL mode (Kerberos for clients, delegation tokens for proxy users).
        `notifications`: record the notification log (get_next_notification) with the lab's
        listener (notify_jar(), tests/README.md); `notification_ttl_s`: its events' time to
        live in seconds (Hive's default, a day, if None), purged every
        `notification_clean_ms` milliseconds. Read at each start."""
        self.lab = Path(lab)
        self.notifications = notifications
        self.notification_ttl_s = notification_ttl_s
        self.notification_clean_ms = notification_clean_ms
        self.kerberos = kerberos
        self.home = Path(home) if home else self.lab / "hms"
        self.port = port or free_port()
        self.admin_users = admin_users
        self.proc = None
        self.log = self.home / "metastore.log"
        self.out = self.home / "metastore.out"
        self.pidfile = self.home / "metastore.pid"

    @property
    def uri(self):
        return f"thrift://127.0.0.1:{self.port}"

    def write_config(self, in_test=False):
        home = self.home
        conf = home / "conf"
        for d in (conf, home / "tmp", home / "warehouse"):
            d.mkdir(parents=True, exist_ok=True)
        l4j = conf / "hive-log4j2.properties"
        l4j.write_text(log4j2(self.log))
        props = {
            "javax.jdo.option.ConnectionURL":
                f"jdbc:derby:;databaseName={home}/metastore_db;create=true",
            "hive.metastore.warehouse.dir": f"file://{home}/warehouse",
            "datanucleus.schema.autoCreateAll": "true",
            "hive.metastore.schema.verification": "false",
            # Without it: NoClassDefFoundError com/lmax/disruptor (not shipped).
            "hive.async.log.enabled": "false",
            # BoneCP is not shipped; without HikariCP drop_database kills the connection.
            "datanucleus.connectionPoolingType": "HikariCP",
            # Users without an OS account (set_ugi as anyone) fail with "no primary group".
            "hive.warehouse.subdir.inherit.perms": "false",
            "hive.users.in.admin.role": ",".join(self.admin_users),
            # HiveMetaStore.main re-initialises log4j from this file (else from hive-common's
            # default, which writes to java.io.tmpdir/USER/hive.log).
            "hive.log4j.file": str(l4j),
            # Transactions and locks (DbTxnManager keeps them in the metastore's database).
            "hive.support.concurrency": "true",
            "hive.txn.manager": "org.apache.hadoop.hive.ql.lockmgr.DbTxnManager",
        }
        if self.notifications:
            # Transactional: the event is written in the JDO transaction of the change (a
            # change and its event commit together), as Hive 2.3 configures its
            # DbNotificationListener.
            props["hive.metastore.transactional.event.listeners"] = "hmsguard.lab.NotificationLog"
            props["hmsguard.lab.notification.clean.interval.ms"] = str(
                int(self.notification_clean_ms))
            if self.notification_ttl_s is not None:
                props["hive.metastore.event.db.listener.timetolive"] = (
                    f"{int(self.notification_ttl_s)}s")
        if in_test:
            # Hive 2.3 creates its transaction tables (TXNS, HIVE_LOCKS, NEXT_LOCK_ID…) only
            # in test mode, on the first transaction call; test mode also refuses lock
            # components without an operation type, so it is on for that first boot only.
            props["hive.in.test"] = "true"
        core = s3a_conf(self.lab)
        k = self.kerberos
        if k:
            props.update({
                "hive.metastore.sasl.enabled": "true",
                "hive.metastore.kerberos.principal": k["principal"],
                "hive.metastore.kerberos.keytab.file": str(k["keytab"]),
                # Delegation tokens in the metastore's memory (the default store is the
                # database, whose tables Hive 2.3 creates only in test mode).
                "hive.cluster.delegation.token.store.class":
                    "org.apache.hadoop.hive.thrift.MemoryTokenStore",
            })
            core.update({
                "hadoop.security.authentication": "kerberos",
                "hadoop.rpc.protection": k.get("protection", "authentication"),
                "hadoop.security.auth_to_local": "RULE:[1:$1@$0](.*@" + k["realm"].replace(
                    ".", "\\.") + ")s/@.*//\nRULE:[2:$1@$0](.*@" + k["realm"].replace(
                    ".", "\\.") + ")s/@.*//\nDEFAULT",
            })
            for user in k.get("proxy_users", ()):
                core.update({f"hadoop.proxyuser.{user}.hosts": "*",
                             f"hadoop.proxyuser.{user}.groups": "*",
                             f"hadoop.proxyuser.{user}.users": "*"})
        (conf / "hive-site.xml").write_text(site_xml(props))
        (conf / "core-site.xml").write_text(site_xml(core))
        return conf

    def command(self, conf):
        home = self.home
        krb = ([f"-Djava.security.krb5.conf={self.kerberos['krb5_conf']}"]
               if self.kerberos else [])
        return [java(), "-Xmx512m", *krb,
                f"-Djava.io.tmpdir={home}/tmp",
                f"-Dderby.stream.error.file={home}/derby.log",
                f"-Dderby.system.home={home}",
                f"-Dlog4j2.configurationFile={conf}/hive-log4j2.properties",
                "-cp", f"{conf}:{jars_dir()}/*" + (f":{notify_jar()}" if self.notifications
                                                   else ""),
                "org.apache.hadoop.hive.metastore.HiveMetaStore", "-p", str(self.port)]

    def start(self, timeout=METASTORE_TIMEOUT, daemon=False, txn_tables=True):
        """Starts the metastore and returns self once it answers get_all_databases; raises
        RuntimeError with the tail of its logs if it exits or does not answer in time. A new
        database gets its transaction tables first (one boot in test mode, then stopped);
        txn_tables=False skips that boot, for a metastore that serves no transaction calls."""
        marker = self.home / "txn-tables-created"
        if txn_tables and not marker.exists():
            self._boot(self.write_config(in_test=True), timeout, daemon=False)
            with hms_client(self.port, timeout=30) as c:
                c.get_open_txns()  # creates the transaction tables
            self.stop()
            marker.write_text("created by a first boot with hive.in.test=true\n")
        return self._boot(self.write_config(), timeout, daemon)

    def _boot(self, conf, timeout, daemon):
        t0 = time.monotonic()
        self.proc = spawn(self.command(conf), self.out, cwd=self.home, daemon=daemon)
        self.pidfile.write_text(str(self.proc.pid))
        deadline = t0 + timeout
        last = None
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"metastore exited with {self.proc.returncode} before "
                                   f"answering:\n{tail(self.out, self.log)}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"metastore on port {self.port} did not answer "
                                   f"get_all_databases within {timeout}s (last error: {last!r})"
                                   f":\n{tail(self.out, self.log)}")
            try:
                # A plain connect first: thrift's TSocket logs every refused connection.
                socket.create_connection(("127.0.0.1", self.port), timeout=5).close()
                if self.kerberos:
                    # SASL only: listening is what can be checked without a ticket.
                    self.started_in = time.monotonic() - t0
                    return self
                with hms_client(self.port, timeout=10) as c:
                    c.get_all_databases()
                self.started_in = time.monotonic() - t0
                return self
            except Exception as e:  # noqa: BLE001 - not up yet: retried until the deadline
                last = e
                time.sleep(0.3)

    def stop(self):
        kill_group(self.proc)
        self.pidfile.unlink(missing_ok=True)


def _group_gone(pgid):
    try:
        os.killpg(pgid, 0)
        return False
    except ProcessLookupError:
        return True


def stop_dir(lab, grace=15):
    """Stops the metastore a CLI `start --dir lab` left running (by its pid file)."""
    pidfile = Path(lab) / "hms" / "metastore.pid"
    if not pidfile.exists():
        return False
    pgid = int(pidfile.read_text())
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10)):
        if _group_gone(pgid):
            break
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        end = time.monotonic() + wait
        while time.monotonic() < end and not _group_gone(pgid):
            time.sleep(0.2)
    pidfile.unlink(missing_ok=True)
    return True


# ---------------------------------------------------------------------------------------------
# hms-guard


def guard_bin():
    return os.environ.get("HMS_GUARD_BIN", str(REPO / "target" / "debug" / "hms-guard"))


class Guard:
    """hms-guard (`hms-guard serve --config DIR/NAME.toml`) in front of `upstream` (a port,
    or a list of thrift:// URIs); `extra` is TOML appended to the config; `env` is added to its
    environment; `metastore_version` sets `upstream.metastore_version` (default: "any")."""

    def __init__(self, lab, upstream, extra="", name="guard", level="info", env=None,
                 metastore_version=None):
        self.lab = Path(lab)
        self.metastore_version = metastore_version
        self.port = free_port()
        self.admin_port = free_port()
        self.name = name
        if isinstance(upstream, (list, tuple)):
            self.uris = list(upstream)
        else:
            self.uris = [f"thrift://127.0.0.1:{upstream}"]
        self.extra = extra
        self.level = level
        self.env = env
        self.proc = None
        self.log = self.lab / f"{name}.log"
        self.out = self.lab / f"{name}.out"
        self.config = self.lab / f"{name}.toml"

    @property
    def uri(self):
        return f"thrift://127.0.0.1:{self.port}"

    def config_text(self):
        uris = ", ".join(f'"{u}"' for u in self.uris)
        return (f'[server]\nlisten = "127.0.0.1:{self.port}"\n\n'
                f"[upstream]\nuris = [{uris}]\n"
                + (f'metastore_version = "{self.metastore_version}"\n'
                   if self.metastore_version else "")
                + "\n"
                f'[admin]\nlisten = "127.0.0.1:{self.admin_port}"\n\n'
                f'[logging]\nformat = "json"\nlevel = "{self.level}"\n'
                + (f"\n{self.extra}" if self.extra else ""))

    def start(self, timeout=GUARD_TIMEOUT):
        """Starts hms-guard and returns self once GET /readyz answers 200; raises RuntimeError
        with the tail of its log if it exits or is not ready in time."""
        binary = guard_bin()
        if not os.access(binary, os.X_OK):
            raise RuntimeError(f"hms-guard binary {binary} missing: run `cargo build` "
                               "or set HMS_GUARD_BIN")
        self.lab.mkdir(parents=True, exist_ok=True)
        self.config.write_text(self.config_text())
        self.proc = spawn([binary, "serve", "--config", str(self.config)], self.out, self.log,
                          cwd=self.lab, env=self.env)
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"hms-guard exited with {self.proc.returncode}:\n"
                                   f"{tail(self.log, self.out)}")
            try:
                status, body = self.http("/readyz")
                if status == 200:
                    return self
                last = (status, body.strip())
            except OSError as e:
                last = e
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"hms-guard not ready after {timeout}s (last /readyz: {last!r}):\n"
                           f"{tail(self.log, self.out)}")

    def http(self, path, timeout=10):
        """(status, body) of GET http://ADMIN/path."""
        url = f"http://127.0.0.1:{self.admin_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def metrics(self):
        status, body = self.http("/metrics")
        if status != 200:
            raise RuntimeError(f"/metrics answered {status}: {body[:200]}")
        return body

    def stop(self):
        kill_group(self.proc)


def parse_metrics(text):
    """Prometheus text format -> [(name, {label: value}, float)] (no escapes beyond \\" and
    \\\\ in label values, which is all this project's exporter produces)."""
    samples = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        labels = {}
        if "{" in line:
            name, rest = line.split("{", 1)
            body, value = rest.rsplit("}", 1)
            i = 0
            while i < len(body):
                eq = body.index("=", i)
                key = body[i:eq].strip().lstrip(",").strip()
                j = eq + 2  # past ="
                val = []
                while body[j] != '"':
                    if body[j] == "\\":
                        j += 1
                        val.append({"n": "\n"}.get(body[j], body[j]))
                    else:
                        val.append(body[j])
                    j += 1
                labels[key] = "".join(val)
                i = j + 1
        else:
            name, value = line.split(None, 1)
        samples.append((name.strip(), labels, float(value.split()[0])))
    return samples


def metric_series(text, name, **labels):
    """The samples of metric `name` whose labels include `labels`."""
    return [(lb, v) for n, lb, v in parse_metrics(text)
            if n == name and all(lb.get(k) == want for k, want in labels.items())]


# ---------------------------------------------------------------------------------------------
# Spark


def spark_session(lab, metastore_uri, app="hms-guard-lab", extra_conf=None, name="spark",
                  java_opts=""):
    """A local[2] Spark session with Hive support whose metastore is `metastore_uri`
    (thrift://HOST:PORT, or a port on 127.0.0.1). Its dirs and its log (DIR/NAME/spark.log)
    are under DIR/NAME (give sessions of one lab in other processes their own NAME);
    s3a://datalake is the lab's emulated bucket, as for the metastore.
    `java_opts` are added to the driver JVM's options. Stop it with stop_spark(), which also
    ends its JVM."""
    from pyspark.sql import SparkSession
    if isinstance(metastore_uri, int) or str(metastore_uri).isdigit():
        metastore_uri = f"thrift://127.0.0.1:{metastore_uri}"
    lab = Path(lab)
    home = lab / name
    for d in ("warehouse", "local", "scratch", "local-scratch", "resources", "tmp"):
        (home / d).mkdir(parents=True, exist_ok=True)
    l4j = home / "log4j2.properties"
    l4j.write_text(log4j2(home / "spark.log", level="warn"))
    conf = {
        "spark.master": "local[2]",
        "spark.app.name": app,
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        # Loopback only (Spark otherwise binds its driver to the host's first non-loopback
        # address when the hostname resolves to 127.0.0.1).
        "spark.driver.host": "127.0.0.1",
        "spark.driver.bindAddress": "127.0.0.1",
        "spark.sql.shuffle.partitions": "2",
        "spark.sql.warehouse.dir": f"file://{home}/warehouse",
        "spark.local.dir": str(home / "local"),
        "spark.driver.extraJavaOptions":
            f"-Djava.io.tmpdir={home}/tmp -Dlog4j2.configurationFile={l4j} {java_opts}".strip(),
        "spark.hadoop.hive.metastore.uris": metastore_uri,
        # A hung metastore (or proxy) fails a statement in a minute, not ten.
        "spark.hadoop.hive.metastore.client.socket.timeout": "60s",
        "spark.hadoop.hive.exec.scratchdir": str(home / "scratch"),
        "spark.hadoop.hive.exec.local.scratchdir": str(home / "local-scratch"),
        "spark.hadoop.hive.downloaded.resources.dir": str(home / "resources"),
    }
    conf.update({f"spark.hadoop.{k}": v for k, v in s3a_conf(lab).items()})
    conf.update(extra_conf or {})
    b = SparkSession.builder
    for k, v in conf.items():
        b = b.config(k, v)
    return b.enableHiveSupport().getOrCreate()


def stop_spark(spark, timeout=30):
    """Stops the session and waits for its JVM to exit (killing it after `timeout` s), so that
    nothing is left running and a later spark_session() starts afresh."""
    from pyspark import SparkContext
    spark.stop()
    gw = SparkContext._gateway
    proc = getattr(gw, "proc", None)
    if gw is not None:
        try:
            gw.shutdown()
        except Exception:  # noqa: BLE001 - best effort; the JVM is ended below
            pass
    SparkContext._gateway = None
    SparkContext._jvm = None
    if proc is not None:
        try:
            proc.stdin.close()  # the gateway JVM exits on EOF
        except OSError:
            pass
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


# ---------------------------------------------------------------------------------------------
# CLI


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("cmd", choices=["start", "stop"])
    ap.add_argument("--dir", required=True, help="the lab directory")
    ap.add_argument("--port", type=int, help="metastore port (default: a free one)")
    ap.add_argument("--timeout", type=int, default=METASTORE_TIMEOUT)
    a = ap.parse_args(argv)
    lab = Path(a.dir).resolve()
    lab.mkdir(parents=True, exist_ok=True)
    if a.cmd == "start":
        if (lab / "hms" / "metastore.pid").exists():
            stop_dir(lab)
        try:
            m = Metastore(lab, a.port).start(timeout=a.timeout, daemon=True)
        except RuntimeError as e:
            print(f"hms.py: {e}", file=sys.stderr)
            return 1
        print(m.port)
        print(f"metastore {m.uri} ready in {m.started_in:.1f}s (pid {m.proc.pid}); "
              f"log {m.log}; bucket s3a://{BUCKET} = {bucket_dir(lab)}", file=sys.stderr)
        return 0
    if not stop_dir(lab):
        print(f"hms.py: no metastore pid file in {lab}/hms", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
