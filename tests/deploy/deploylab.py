"""The deployment tests' shared parts (conftest.py exposes the fixtures and hooks; the test
modules import the rest from here, not from conftest, which tests/e2e also has).

The fixtures: the kustomize renders, and a monitoring lab
in which a real Prometheus (Debian's) scrapes three real hms-guard processes in front of a real
Hive Metastore 2.3 while traffic flows through them:

    main    authz enforce, audit to a file, storage checks against the project's AWS stand-in
            (tests/lab/moto_lab.py: a real moto server): admin's role may write under
            s3a://datalake/datawarehouse/ but not in s3a://archive; clients: admin, analyst
            (granted SELECT on one table), nobody
    shadow  authz shadow (decides and audits, forwards anyway)
    broken  every upstream URI dead, audit sink /dev/full (audit.on_failure = "allow"),
            server.max_connections = 2: upstream errors, failed readiness, audit write
            failures, facts-unavailable denials and connections refused at the limit

Prometheus loads the alert rules of deploy/k8s/monitoring/prometheusrule.yaml (scrape and rule
interval 1 s). A thread plays the kubelet (GET /readyz on each proxy every second) and another
sends calls until the session ends. Everything started here is stopped at session end, also on
failure (and, through tests/lab/hms.py, killed if this process dies).

Run: tests/lab/setup.sh && tests/deploy/setup.sh && cargo build --bins, then
~/.cache/hms-guard/venv/bin/python -m pytest tests/deploy (HMS_GUARD_BIN overrides
target/debug/hms-guard)."""
import json
import os
import shutil
import socket
import struct
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "tests" / "lab"))
sys.path.insert(0, str(HERE))
import certs  # noqa: E402
import hms  # noqa: E402
from hms import connect  # noqa: E402
import kustomize  # noqa: E402
import moto_lab  # noqa: E402
import pytest_hooks  # noqa: E402
from kdc import Kdc  # noqa: E402

K8S = REPO / "deploy" / "k8s"
OVERLAYS = ["base", "standalone", "sidecar", "monitoring"]
RULES = K8S / "monitoring" / "prometheusrule.yaml"
DASHBOARD = REPO / "grafana" / "hms-guard.json"
JOB = "hms-guard"
PROMETHEUS_TIMEOUT = 60  # seconds until a started Prometheus must be ready
SCRAPE_TIMEOUT = 60  # seconds until every target has been scraped after the traffic started
TRAFFIC_MAX_SECONDS = 900  # the traffic thread stops by itself after this long at the latest

DB = "deploy_db"
WAREHOUSE = "s3a://datalake/datawarehouse"
ARCHIVE = "s3a://archive/deploy"  # the storage stand-in lets no user role write here


# ---------------------------------------------------------------------------------------------
# renders


@pytest.fixture(scope="session")
def rendered():
    """{overlay: [objects]} as `kustomize build deploy/k8s/OVERLAY` renders them."""
    return {name: [d for d in yaml.safe_load_all(kustomize.build(K8S / name)) if d]
            for name in OVERLAYS}


def rule_groups():
    """The `groups` of the PrometheusRule (a Prometheus rule file's content)."""
    doc = yaml.safe_load(RULES.read_text())
    return {"groups": doc["spec"]["groups"]}


# ---------------------------------------------------------------------------------------------
# processes


class UnreadyGuard(hms.Guard):
    """An hms-guard that is expected never to be ready (no metastore): started once /healthz
    answers."""

    def start(self, timeout=hms.GUARD_TIMEOUT):
        binary = hms.guard_bin()
        if not os.access(binary, os.X_OK):
            raise RuntimeError(f"hms-guard binary {binary} missing: run `cargo build`")
        self.config.write_text(self.config_text())
        self.proc = hms.spawn([binary, "serve", "--config", str(self.config)], self.out,
                              self.log, cwd=self.lab)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"hms-guard exited with {self.proc.returncode}:\n"
                                   f"{hms.tail(self.log, self.out)}")
            try:
                if self.http("/healthz")[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"hms-guard /healthz not 200 after {timeout}s:\n{hms.tail(self.log)}")


class Prometheus:
    """Debian's prometheus on a free loopback port, its data under DIR/prometheus."""

    def __init__(self, lab, targets, rules):
        self.dir = Path(lab) / "prometheus"
        self.port = hms.free_port()
        self.targets = targets
        self.rules = rules
        self.proc = None
        self.log = self.dir / "prometheus.log"

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout=PROMETHEUS_TIMEOUT):
        binary = shutil.which("prometheus")
        if binary is None:
            raise RuntimeError("prometheus is not installed: run tests/deploy/setup.sh")
        (self.dir / "data").mkdir(parents=True, exist_ok=True)
        (self.dir / "rules.yml").write_text(yaml.safe_dump(self.rules, sort_keys=False))
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s",
                       "evaluation_interval": "1s"},
            "rule_files": [str(self.dir / "rules.yml")],
            "scrape_configs": [{
                "job_name": JOB,
                "static_configs": [{"targets": [f"127.0.0.1:{p}"], "labels": {"role": role}}
                                   for role, p in self.targets.items()],
            }],
        }
        (self.dir / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
        self.proc = hms.spawn([binary, f"--config.file={self.dir / 'prometheus.yml'}",
                               f"--storage.tsdb.path={self.dir / 'data'}",
                               f"--web.listen-address=127.0.0.1:{self.port}",
                               "--storage.tsdb.retention.time=1h", "--log.level=warn"],
                              self.log, cwd=self.dir)
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited with {self.proc.returncode}:\n"
                                   f"{hms.tail(self.log)}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=5) as r:
                    if r.status == 200:
                        return self
            except (OSError, urllib.error.URLError) as e:
                last = e
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"prometheus not ready after {timeout}s ({last!r}):\n"
                           f"{hms.tail(self.log)}")

    def api(self, path, **params):
        """The `data` of GET /api/v1/PATH?params; raises on an error answer."""
        url = f"{self.url}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=30) as r:
                body = json.load(r)
        except urllib.error.HTTPError as e:
            body = json.loads(e.read() or b"{}")
            raise PromQLError(body.get("error", str(e))) from None
        if body.get("status") != "success":
            raise PromQLError(body.get("error", repr(body)))
        return body["data"]

    def query(self, expr):
        """The result of an instant query: [{metric, value}] for a vector, [] for no series
        (a scalar answer is returned as one series without labels)."""
        data = self.api("query", query=expr)
        if data["resultType"] == "vector":
            return data["result"]
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        raise PromQLError(f"{expr}: unexpected result type {data['resultType']}")

    def stop(self):
        hms.kill_group(self.proc)


class PromQLError(RuntimeError):
    pass


# ---------------------------------------------------------------------------------------------
# clients


def close(c):
    try:
        c._transport.close()
    except Exception:  # noqa: BLE001 - closing a client that may be broken
        pass


def table(lab, name, location=None):
    return hms.external_table(DB, name, location or f"{WAREHOUSE}/{DB}.db/{name}",
                              external=False)


def seed(lab, port):
    """Through the main proxy, as admin: a database, two tables, SELECT on one for analyst."""
    from hmsclient.genthrift.hive_metastore import ttypes as tt
    admin = connect(port, "admin")
    try:
        admin.create_database(tt.Database(name=DB, locationUri=f"{WAREHOUSE}/{DB}.db",
                                          parameters={}))
        for t in ("events", "secrets"):
            admin.create_table(table(lab, t))
        obj = tt.HiveObjectRef(tt.HiveObjectType.TABLE, DB, "events", None, None)
        hms.grant(admin, obj, "analyst", "SELECT")
    finally:
        close(admin)


def attempt(fn):
    """Runs a call that may be refused; returns the exception type name or 'ok'."""
    try:
        fn()
        return "ok"
    except Exception as e:  # noqa: BLE001 - denials and upstream failures are expected
        return type(e).__name__


def raw_send(port, data, timeout=5):
    """Sends bytes on a fresh connection and reads until the proxy closes it (or timeout)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        try:
            while s.recv(4096):
                pass
        except OSError:
            pass


def hold_connections(port, n, seconds=0.3):
    """Opens n connections at once and holds them a moment (beyond a max_connections limit
    the proxy closes the extra ones at accept)."""
    socks = []
    try:
        for _ in range(n):
            try:
                socks.append(socket.create_connection(("127.0.0.1", port), timeout=5))
            except OSError:
                pass
        time.sleep(seconds)
    finally:
        for s in socks:
            s.close()


# A strict-binary call header whose method name claims 2^31-1 bytes: a protocol error.
OVERSIZED_CALL = struct.pack(">I", 0x80010001) + struct.pack(">i", 0x7FFFFFFF) + b"get_table"
HTTP_REQUEST = b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n"


def _string_field(fid, value):
    return struct.pack(">bhi", 11, fid, len(value)) + value


# get_table naming its table twice: refused by the schema-exact reader (duplicate_field).
DUPLICATE_FIELD_CALL = (struct.pack(">I", 0x80010001) + struct.pack(">i", 9) + b"get_table"
                        + struct.pack(">i", 1) + _string_field(1, b"db") + _string_field(2, b"t")
                        + _string_field(2, b"u") + b"\x00")


def kerberos_call(port, kerberos, call):
    """CALL(client) on a connection to the Kerberos proxy: TLS (trusting the lab's CA), then
    SASL/GSSAPI with the ticket cache of `kerberos["env"]`."""
    from hmsclient.genthrift.hive_metastore import ThriftHiveMetastore as T
    from thrift.protocol import TBinaryProtocol
    from thrift.transport import TSSLSocket, TTransport
    for k in ("KRB5_CONFIG", "KRB5CCNAME"):
        os.environ[k] = kerberos["env"][k]
    sock = TSSLSocket.TSSLSocket("localhost", port, ca_certs=str(kerberos["ca"]))
    sock.setTimeout(20_000)
    t = TTransport.TSaslClientTransport(sock, host="localhost", service="hive",
                                        mechanism="GSSAPI")
    t.open()
    try:
        return call(T.Client(TBinaryProtocol.TBinaryProtocol(t)))
    finally:
        t.close()


def sasl_plain_over_tls(port, ca):
    """A SASL client asking for PLAIN (refused: Kerberos only), over TLS."""
    import ssl
    ctx = ssl.create_default_context(cafile=str(ca))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            s.sendall(b"\x01" + struct.pack(">I", 5) + b"PLAIN")
            try:
                while s.recv(4096):
                    pass
            except OSError:
                pass


class Traffic(threading.Thread):
    """Calls through the proxies, over and over, until stopped (or TRAFFIC_MAX_SECONDS):
    counters keep moving, so rates and increases over the last minutes are defined. Counts
    outcomes per (proxy, call) in `seen`."""

    def __init__(self, guards, kerberos=None):
        super().__init__(name="traffic", daemon=True)
        self.guards = guards
        self.kerberos = kerberos
        self.stop_event = threading.Event()
        self.rounds = 0
        self.seen = {}
        self.error = None

    def note(self, key, outcome):
        self.seen.setdefault(key, {}).setdefault(outcome, 0)
        self.seen[key][outcome] += 1

    def one_round(self):
        from hmsclient.genthrift.hive_metastore import ttypes as tt
        main, shadow, broken = (self.guards[r].port for r in ("main", "shadow", "broken"))
        admin = connect(main, "admin")
        analyst = connect(main, "analyst")
        nobody = connect(main, "nobody")
        try:
            for _ in range(3):
                self.note("main admin get_table", attempt(lambda: admin.get_table(DB, "secrets")))
                self.note("main analyst get_table",
                          attempt(lambda: analyst.get_table(DB, "events")))
                self.note("main nobody get_table", attempt(lambda: nobody.get_table(DB, "events")))
            self.note("main analyst get_all_tables", attempt(lambda: analyst.get_all_tables(DB)))
            self.note("main nobody drop_table",
                      attempt(lambda: nobody.drop_table(DB, "secrets", False)))
            self.note("main nobody create_role",
                      attempt(lambda: nobody.create_role(tt.Role(roleName="r", ownerName="nobody"))))
            self.note("main admin get_all_databases", attempt(admin.get_all_databases))
            # An engine's question (hms-guard-spark's): a write by a reader, refused.
            self.note("main analyst question", attempt(lambda: hms.ask_question(
                analyst, "write_table", DB, "events", privileges=["INSERT"])))
            # location-bearing DDL: storage checks (allowed, then cached; denied)
            for _ in range(2):
                self.note("main admin create_table warehouse",
                          attempt(lambda: admin.create_table(table(None, "scratch"))))
                attempt(lambda: admin.drop_table(DB, "scratch", False))
            self.note("main admin create_table archive", attempt(lambda: admin.create_table(
                table(None, "archived", location=f"{ARCHIVE}/archived"))))
            attempt(lambda: admin.drop_table(DB, "archived", False))
        finally:
            for c in (admin, analyst, nobody):
                close(c)
        s = connect(shadow, "nobody")
        try:
            self.note("shadow nobody get_table", attempt(lambda: s.get_table(DB, "secrets")))
        finally:
            close(s)
        # After an upstream failure the proxy answers with an exception and closes the
        # connection pair: one connection per call.
        for what, call in (("getVersion", lambda c: c.getVersion()),
                           ("get_table", lambda c: c.get_table(DB, "events"))):
            try:
                b = connect(broken, "nobody", timeout=10)
            except Exception as e:  # noqa: BLE001 - refused at the limit while others hold it
                self.note("broken connect", type(e).__name__)
                continue
            try:
                self.note(f"broken nobody {what}", attempt(lambda: call(b)))
            finally:
                close(b)
        hold_connections(broken, 4)
        k = self.guards.get("kerberos")
        if k is not None:
            # Kerberos inside TLS to a kerberized metastore: the analyst's calls run there as
            # the analyst (a delegation token); a plain client fails the TLS handshake, a SASL
            # PLAIN client is refused.
            self.note("kerberos analyst get_all_databases", attempt(
                lambda: kerberos_call(k.port, self.kerberos, lambda c: c.get_all_databases())))
            raw_send(k.port, HTTP_REQUEST)
            sasl_plain_over_tls(k.port, self.kerberos["ca"])
        raw_send(main, HTTP_REQUEST)
        raw_send(main, OVERSIZED_CALL)
        raw_send(main, DUPLICATE_FIELD_CALL)

    def run(self):
        end = time.monotonic() + TRAFFIC_MAX_SECONDS
        while not self.stop_event.is_set() and time.monotonic() < end:
            try:
                self.one_round()
                self.rounds += 1
            except Exception as e:  # noqa: BLE001 - reported by the fixture
                self.error = e
                return
            self.stop_event.wait(0.5)

    def stop(self):
        self.stop_event.set()
        self.join(timeout=60)


class Kubelet(threading.Thread):
    """GET /readyz on every proxy each second, as the kubelet's readiness probe does
    (hms_guard_upstream_up is set by that check)."""

    def __init__(self, guards):
        super().__init__(name="kubelet", daemon=True)
        self.guards = guards
        self.stop_event = threading.Event()

    def run(self):
        end = time.monotonic() + TRAFFIC_MAX_SECONDS
        while not self.stop_event.is_set() and time.monotonic() < end:
            for g in self.guards.values():
                try:
                    g.http("/readyz", timeout=8)
                except OSError:
                    pass
            self.stop_event.wait(1)

    def stop(self):
        self.stop_event.set()
        self.join(timeout=30)


# ---------------------------------------------------------------------------------------------
# the monitoring lab


_lab_dir = None


class Lab:
    pass


@pytest.fixture(scope="session")
def monitoring(tmp_path_factory):
    """The running lab: .metastore, .guards {main, shadow, broken, kerberos}, .prometheus,
    .traffic. The kerberos proxy: TLS and Kerberos towards clients, Kerberos towards a second,
    kerberized metastore (.krb_metastore), a KDC on loopback (.kdc).
    Returns once Prometheus has scraped every proxy at least 5 times after the traffic
    started."""
    global _lab_dir
    lab_dir = tmp_path_factory.mktemp("deploy-lab")
    _lab_dir = lab_dir
    lab = Lab()
    lab.dir = lab_dir
    started = []
    saved_env = dict(os.environ)
    try:
        lab.moto = moto_lab.MotoLab()
        facts = lab.moto.start()
        started.append(lab.moto)
        # The proxies' own AWS identity (the default credential chain reads the environment).
        os.environ.update({"AWS_ACCESS_KEY_ID": facts["compute"]["access_key_id"],
                           "AWS_SECRET_ACCESS_KEY": facts["compute"]["secret_access_key"],
                           "AWS_EC2_METADATA_DISABLED": "true"})
        for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ROLE_ARN",
                  "AWS_WEB_IDENTITY_TOKEN_FILE"):
            os.environ.pop(k, None)
        assert (f"s3a://{facts['buckets']['datalake']}/" in WAREHOUSE + "/"
                and f"s3a://{facts['buckets']['archive']}/" in ARCHIVE + "/"), facts["buckets"]
        roles = facts["roles"]
        storage = ("[storage]\n"
                   f'endpoint_url = "{facts["endpoint"]}"\n'
                   f'region = "{facts["region"]}"\n'
                   f'default_role = "{roles["account_default"]}"\n'
                   f'user_roles = {{ admin = "{roles["etl"]}" }}\n')
        lab.metastore = hms.Metastore(lab_dir)
        lab.metastore.start()
        started.append(lab.metastore)
        # Kerberos: a KDC, a kerberized metastore where hms-guard is a proxy user, the TLS
        # certificates of the Kerberos proxy, an analyst's ticket.
        kd = lab_dir / "kdc"
        lab.kdc = Kdc(kd).start()
        started.append(lab.kdc)
        lab.kdc.add("hive/localhost", "hms-guard/localhost", "analyst")
        service_kt = lab.kdc.keytab(kd / "service.keytab", "hive/localhost")
        guard_kt = lab.kdc.keytab(kd / "guard.keytab", "hms-guard/localhost")
        analyst_kt = lab.kdc.keytab(kd / "analyst.keytab", "analyst")
        kerberos = {"env": lab.kdc.kinit("analyst", analyst_kt, kd / "analyst.cc"),
                    "ca": certs.make_certs(lab_dir / "tls", users=()) / "ca.pem"}
        realm = lab.kdc.realm
        lab.krb_metastore = hms.Metastore(lab_dir, home=lab_dir / "hms-krb", kerberos={
            "principal": f"hive/localhost@{realm}", "keytab": service_kt,
            "krb5_conf": lab.kdc.conf, "realm": realm, "proxy_users": ["hms-guard"]})
        lab.krb_metastore.start(txn_tables=False)
        started.append(lab.krb_metastore)
        dead = hms.free_port()  # nothing listens there
        lab.audit_file = lab_dir / "audit-main.jsonl"
        lab.guards = {
            "main": hms.Guard(lab_dir, lab.metastore.port, name="guard-main", extra=(
                '[authz]\nmode = "enforce"\ncache_ttl_ms = 60000\n\n'
                # The shared metadata cache too (its metrics and the dashboard's row).
                '[cache]\nenabled = true\n\n'
                f'[audit]\nsink = "file"\npath = "{lab.audit_file}"\n\n' + storage)),
            "shadow": hms.Guard(lab_dir, lab.metastore.port, name="guard-shadow",
                                extra='[authz]\nmode = "shadow"\n'),
            "broken": UnreadyGuard(lab_dir, [f"thrift://127.0.0.1:{dead}"], name="guard-broken",
                                   extra=('[authz]\nmode = "enforce"\nfacts_timeout_ms = 2000\n\n'
                                          '[audit]\nsink = "file"\npath = "/dev/full"\n'
                                          'on_failure = "allow"\nall_calls = true\n')),
        }
        tls = lab_dir / "tls"
        lab.guards["kerberos"] = hms.Guard(
            lab_dir, lab.krb_metastore.port, name="guard-kerberos",
            env={"KRB5RCACHEDIR": str(kd)}, extra=(
                '[authz]\nmode = "enforce"\n\n'
                f'[server.tls]\ncert = "{tls}/server.pem"\nkey = "{tls}/server.key"\n\n'
                '[identity]\nmode = "kerberos"\n\n[identity.kerberos]\n'
                f'principal = "hive/localhost@{realm}"\nkeytab = "{service_kt}"\n'
                f'krb5_conf = "{lab.kdc.conf}"\n\n[upstream.kerberos]\n'
                f'principal = "hms-guard/localhost@{realm}"\nkeytab = "{guard_kt}"\n'
                f'service_principal = "hive/localhost@{realm}"\n'))
        lab.guards["broken"].config_text = _with_server_limit(lab.guards["broken"], 2)
        for g in lab.guards.values():
            g.start()
            started.append(g)
        seed(lab_dir, lab.guards["main"].port)
        lab.prometheus = Prometheus(lab_dir, {r: g.admin_port for r, g in lab.guards.items()},
                                    rule_groups())
        lab.prometheus.start()
        started.append(lab.prometheus)
        lab.kubelet = Kubelet(lab.guards)
        lab.kubelet.start()
        started.append(lab.kubelet)
        lab.traffic = Traffic(lab.guards, kerberos)
        lab.traffic.start()
        started.append(lab.traffic)
        wait_for_scrapes(lab, n=5)
        yield lab
    finally:
        for part in reversed(started):
            try:
                part.stop()
            except Exception:  # noqa: BLE001 - stop the rest anyway
                pass
        os.environ.clear()
        os.environ.update(saved_env)


def _with_server_limit(guard, limit):
    """config_text of `guard` with server.max_connections = limit."""
    base = guard.config_text

    def text():
        return base().replace("[server]\n", f"[server]\nmax_connections = {limit}\n", 1)
    return text


def wait_for_scrapes(lab, n):
    """Waits until the traffic has run a few rounds and each target has been scraped n times
    since, so rates over the last minutes exist."""
    deadline = time.monotonic() + SCRAPE_TIMEOUT
    while lab.traffic.rounds < 2:
        if lab.traffic.error is not None:
            raise RuntimeError(f"traffic failed: {lab.traffic.error!r}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"traffic made {lab.traffic.rounds} rounds in {SCRAPE_TIMEOUT}s")
        time.sleep(0.2)
    since = time.time()
    while True:
        counts = {}
        for r in lab.prometheus.query(f'count_over_time(up{{job="{JOB}"}}[1m])'):
            counts[r["metric"].get("role")] = float(r["value"][1])
        fresh = all(t["health"] == "up" and _ts(t["lastScrape"]) > since
                    for t in lab.prometheus.api("targets")["activeTargets"])
        if fresh and len(counts) == len(lab.guards) and min(counts.values()) >= n:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"Prometheus did not scrape every target {n} times within "
                               f"{SCRAPE_TIMEOUT}s: {lab.prometheus.api('targets')}")
        time.sleep(0.5)


def _ts(rfc3339):
    from datetime import datetime
    s = rfc3339.rstrip("Z")
    if "." in s:
        head, frac = s.split(".", 1)
        s = f"{head}.{frac[:6]}"
    try:
        return datetime.fromisoformat(s + "+00:00").timestamp()
    except ValueError:
        return 0.0


# A failing test's report carries the tails of the lab's logs (tests/lab/pytest_hooks.py); not
# for the many expression tests: their message names the expression and the metric.
pytest_runtest_makereport, pytest_terminal_summary = pytest_hooks.lab_hooks(
    lambda: _lab_dir, ["hms/metastore.log", "prometheus/prometheus.log"],
    "deploy lab (logs, configs, Prometheus data)", n=8, quiet=["_returns_series["])
