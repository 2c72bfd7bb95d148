"""The project's test lab: a real Hive Metastore 2.3 (from pyspark's jars, embedded Derby,
s3a:// emulated on local disk), hms-guard in front of it, and Spark sessions through it.

CLI:  python tests/lab/hms.py start --dir DIR [--port PORT]   (prints the port)
      python tests/lab/hms.py stop --dir DIR
Everything a lab starts lives in its own process group and is killed by stop()."""
import argparse
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BUCKET = "datalake"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def jars_dir():
    import pyspark
    return Path(pyspark.__file__).parent / "jars"


def s3a_conf(lab):
    """Hadoop keys that map s3a://datalake/... onto LAB_PARENT/s3/datalake (viewfs overload
    scheme). The metastore and every Spark session of one lab live in sibling directories, so
    they share this one emulated bucket."""
    root = Path(lab).parent / "s3" / BUCKET
    (root / "datawarehouse").mkdir(parents=True, exist_ok=True)
    return {
        "fs.s3a.impl": "org.apache.hadoop.fs.viewfs.ViewFileSystemOverloadScheme",
        "fs.AbstractFileSystem.s3a.impl": "org.apache.hadoop.fs.viewfs.ViewFsOverloadScheme",
        "fs.viewfs.overload.scheme.target.s3a.impl": "org.apache.hadoop.fs.RawLocalFileSystem",
        f"fs.viewfs.mounttable.{BUCKET}.link./datawarehouse": f"file://{root}/datawarehouse",
        f"fs.viewfs.mounttable.{BUCKET}.linkFallback": f"file://{root}",
    }


def site_xml(props):
    body = "".join(f"  <property><name>{k}</name><value>{v}</value></property>\n"
                   for k, v in props.items())
    return f'<?xml version="1.0"?>\n<configuration>\n{body}</configuration>\n'


def wait_port(port, proc, timeout, log):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited ({proc.returncode}); log tail:\n{tail(log)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"port {port} not open after {timeout}s; log tail:\n{tail(log)}")


def tail(path, n=40):
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def hms_client(port):
    from hmsclient import hmsclient
    return hmsclient.HMSClient(host="127.0.0.1", port=port)


class Metastore:
    """A real Hive Metastore 2.3 with embedded Derby, all files under `lab`."""

    def __init__(self, lab, port=None, admin_users=("admin",)):
        self.lab = Path(lab)
        self.port = port or free_port()
        self.admin_users = admin_users
        self.proc = None
        self.log = self.lab / "metastore.log"

    def start(self, timeout=180):
        lab = self.lab
        conf = lab / "conf"
        conf.mkdir(parents=True, exist_ok=True)
        (lab / "tmp").mkdir(exist_ok=True)
        (lab / "warehouse").mkdir(exist_ok=True)
        props = {
            "javax.jdo.option.ConnectionURL":
                f"jdbc:derby:;databaseName={lab}/metastore_db;create=true",
            "hive.metastore.warehouse.dir": f"file://{lab}/warehouse",
            "datanucleus.schema.autoCreateAll": "true",
            "hive.metastore.schema.verification": "false",
            "hive.async.log.enabled": "false",
            "datanucleus.connectionPoolingType": "HikariCP",
            "hive.warehouse.subdir.inherit.perms": "false",
            "hive.users.in.admin.role": ",".join(self.admin_users),
        }
        (conf / "hive-site.xml").write_text(site_xml(props))
        (conf / "core-site.xml").write_text(site_xml(s3a_conf(lab)))
        (conf / "log4j2.properties").write_text(
            "status = error\nappender.f.type = File\nappender.f.name = F\n"
            f"appender.f.fileName = {lab}/metastore-log4j.log\n"
            "appender.f.layout.type = PatternLayout\n"
            "appender.f.layout.pattern = %d %p %c{1} %m%n\n"
            "rootLogger.level = info\nrootLogger.appenderRef.f.ref = F\n")
        cmd = ["java", "-Xmx512m",
               f"-Djava.io.tmpdir={lab}/tmp",
               f"-Dderby.stream.error.file={lab}/derby.log",
               f"-Dderby.system.home={lab}",
               f"-Dlog4j2.configurationFile={conf}/log4j2.properties",
               "-cp", f"{conf}:{jars_dir()}/*",
               "org.apache.hadoop.hive.metastore.HiveMetaStore", "-p", str(self.port)]
        self.proc = subprocess.Popen(cmd, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT,
                                     cwd=lab, start_new_session=True)
        (lab / "metastore.pid").write_text(str(self.proc.pid))
        wait_port(self.port, self.proc, timeout, self.log)
        # Open is not ready: wait until it answers a real call.
        deadline = time.time() + timeout
        while True:
            try:
                with hms_client(self.port) as c:
                    c.get_all_databases()
                return self
            except Exception as e:  # noqa: BLE001 - retried until the deadline
                if self.proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"metastore never answered: {e}\n{tail(self.log)}")
                time.sleep(0.5)

    def stop(self):
        kill_group(self.proc)


def kill_group(proc):
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def guard_bin():
    return os.environ.get("HMS_GUARD_BIN", str(REPO / "target/debug/hms-guard"))


class Guard:
    """hms-guard in front of `upstream_port`, config written to lab/NAME.toml."""

    def __init__(self, lab, upstream_port, extra="", name="guard", upstream_uris=None):
        self.lab = Path(lab)
        self.port = free_port()
        self.admin_port = free_port()
        self.name = name
        self.uris = upstream_uris or [f"thrift://127.0.0.1:{upstream_port}"]
        self.extra = extra
        self.proc = None
        self.log = self.lab / f"{name}.log"
        self.config = self.lab / f"{name}.toml"

    def start(self, timeout=30):
        uris = ", ".join(f'"{u}"' for u in self.uris)
        self.config.write_text(
            f'[server]\nlisten = "127.0.0.1:{self.port}"\n'
            f"[upstream]\nuris = [{uris}]\n"
            f'[admin]\nlisten = "127.0.0.1:{self.admin_port}"\n'
            f'[logging]\nformat = "json"\nlevel = "hms_guard=debug,info"\n' + self.extra)
        self.proc = subprocess.Popen([guard_bin(), "serve", "--config", str(self.config)],
                                     stdout=open(self.lab / f"{self.name}.out", "ab"),
                                     stderr=open(self.log, "ab"), start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"hms-guard exited ({self.proc.returncode}):\n{tail(self.log)}")
            try:
                if self.http("/readyz")[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"hms-guard not ready after {timeout}s:\n{tail(self.log)}")

    def http(self, path):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}{path}", timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def metrics(self):
        return self.http("/metrics")[1]

    def stop(self):
        kill_group(self.proc)


def spark_session(lab, metastore_port, app="hms-guard-lab"):
    """A local Spark session whose metastore is thrift://127.0.0.1:metastore_port."""
    from pyspark.sql import SparkSession
    lab = Path(lab)
    for d in ("spark-warehouse", "spark-local", "scratch", "local-scratch", "resources", "tmp"):
        (lab / d).mkdir(parents=True, exist_ok=True)
    b = (SparkSession.builder.master("local[2]").appName(app)
         .config("spark.hadoop.hive.metastore.uris", f"thrift://127.0.0.1:{metastore_port}")
         .config("spark.sql.warehouse.dir", f"file://{lab}/spark-warehouse")
         .config("spark.local.dir", str(lab / "spark-local"))
         .config("spark.ui.enabled", "false")
         .config("spark.sql.shuffle.partitions", "2")
         .config("spark.hadoop.hive.exec.scratchdir", str(lab / "scratch"))
         .config("spark.hadoop.hive.exec.local.scratchdir", str(lab / "local-scratch"))
         .config("spark.hadoop.hive.downloaded.resources.dir", str(lab / "resources"))
         .config("spark.driver.extraJavaOptions", f"-Djava.io.tmpdir={lab}/tmp")
         .enableHiveSupport())
    for k, v in s3a_conf(lab).items():
        b = b.config(f"spark.hadoop.{k}", v)
    return b.getOrCreate()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=["start", "stop"])
    ap.add_argument("--dir", required=True)
    ap.add_argument("--port", type=int)
    a = ap.parse_args()
    Path(a.dir).mkdir(parents=True, exist_ok=True)
    if a.cmd == "start":
        m = Metastore(a.dir, a.port).start()
        print(m.port)
    else:
        pidf = Path(a.dir) / "metastore.pid"
        if pidf.exists():
            try:
                os.killpg(int(pidf.read_text()), signal.SIGTERM)
            except ProcessLookupError:
                pass
            pidf.unlink()


if __name__ == "__main__":
    sys.exit(main())
