"""Upstream failover against real metastores. Two extra Hive Metastores for this module (each
with its own Derby database and warehouse: DIR/failover-a/hms, DIR/failover-b/hms) behind one
hms-guard (authorization enforced) with upstream.uris = [a, b]. Metastore a is killed with
SIGKILL under hms-guard's clients, b survives. Every client connection must carry on against b:
an idle connection's next call gets a new upstream connection (the next URI, with the caller's
set_ugi identity sent again); a call in flight at the kill may fail, but only with hms-guard's
clean TApplicationException ("hms-guard: ..."), never with a dropped socket. hms-guard's own
metastore connections (its grant lookups) must fail over as well. Metastore a is started again
(same port and database, ~3 s) for each test that kills it.

Which metastore served a call, and as whom, is read from the metastore's audit log (logger
HiveMetaStore.audit, in its metastore.log: "ugi=USER<TAB>ip=IP<TAB>cmd=source:IP METHOD: ARGS").
Hive 2.3 does not derive a database's ownerName from set_ugi (checked below), so the owner
cannot show the identity."""
import os
import pwd
import random
import re
import signal
import socket
import threading
import time
import uuid

import pytest
from hmsclient.genthrift.hive_metastore import ttypes as tt
from thrift.Thrift import TApplicationException

import hms
from hms import connect

GUARD_CONFIG = ('[authz]\nmode = "enforce"\n'
                # Grants read before the kill stay cached for the whole module: what is tested
                # is the client connections, not the proxy's own fact lookups.
                'cache_ttl_ms = 600000\n\n'
                '[storage]\nenabled = false  # no locations are checked here\n')
IDLE_SETTLE = 0.5  # seconds after the kill for hms-guard to see its idle upstream closed
THREADS = 4
CALLS_AFTER_KILL = 10  # successful calls each connection must make after the kill
AUDIT = re.compile(r"audit: ugi=(?P<ugi>\S+)\tip=\S*\tcmd=source:\S+ (?P<cmd>[^\n]*)")


# ---------------------------------------------------------------------------------------------
# helpers


def database(lab, name):
    return tt.Database(name=name, locationUri=f"file://{lab}/failover-dbs/{name}.db",
                       parameters={})


def unique(prefix):
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def log_size(m):
    return m.log.stat().st_size if m.log.exists() else 0


def audit(m, offset=0):
    """[(ugi, cmd)] of the metastore's audit lines written after byte `offset` of its log."""
    with open(m.log, "rb") as f:
        f.seek(offset)
        text = f.read().decode(errors="replace")
    return [(x["ugi"], x["cmd"].rstrip("\t ")) for x in AUDIT.finditer(text)]


def wait_audit(m, offset, pred, what, timeout=5):
    """The audit lines after `offset` matching pred(ugi, cmd), waiting up to `timeout` s for at
    least one (log4j writes them as the call runs)."""
    deadline = time.monotonic() + timeout
    while True:
        hits = [(u, c) for u, c in audit(m, offset) if pred(u, c)]
        if hits or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert hits, (f"no audit line for {what} in {m.log} after byte {offset}:\n"
                  f"{hms.tail(m.log, n=30)}")
    return hits


def created_by(m, offset, name):
    """The ugi users the metastore audited create_database(name) for."""
    hits = wait_audit(m, offset, lambda u, c: c.startswith(f"create_database: Database(name:{name},"),
                      f"create_database {name}")
    return [u for u, _ in hits]


def port_open(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except ConnectionRefusedError:
        return False


def kill_hard(m, timeout=10):
    """SIGKILL to the metastore's process group; returns (monotonic time the signal was sent,
    monotonic time its port was seen closed)."""
    sent = time.monotonic()
    os.killpg(m.proc.pid, signal.SIGKILL)
    m.proc.wait(timeout=timeout)
    deadline = time.monotonic() + timeout
    while port_open(m.port):
        assert time.monotonic() < deadline, f"port {m.port} still open {timeout}s after SIGKILL"
        time.sleep(0.02)
    return sent, time.monotonic()


def upstream_connects(guard):
    series = hms.metric_series(guard.metrics(), "hms_guard_upstream_connects_total")
    assert len(series) == 1, f"hms_guard_upstream_connects_total: {series}"
    return series[0][1]


def grant_lookups(guard):
    """Successful get_role_grants_for_principal calls hms-guard made for its decisions (Hive
    2.3 does not audit them, so they are counted here)."""
    return sum(v for _, v in hms.metric_series(guard.metrics(), "hms_guard_facts_calls_total",
                                               method="get_role_grants_for_principal",
                                               outcome="ok"))


def os_user():
    return os.environ.get("HADOOP_USER_NAME") or pwd.getpwuid(os.getuid()).pw_name


# ---------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def metastores(lab):
    """(a, b): a is killed by the tests (and started again by `killable`), b survives. No
    transaction tables (no transaction calls here). Started one after the other from this
    thread: a metastore dies with the thread that started it (PR_SET_PDEATHSIG)."""
    a = hms.Metastore(lab / "failover-a")
    b = hms.Metastore(lab / "failover-b")
    try:
        a.start(txn_tables=False)
        b.start(txn_tables=False)
        yield a, b
    finally:
        a.stop()
        b.stop()


@pytest.fixture(scope="module")
def guard(lab, metastores):
    a, b = metastores
    g = hms.Guard(lab, [a.uri, b.uri], extra=GUARD_CONFIG, name="guard-failover")
    try:
        g.start()
        yield g
    finally:
        g.stop()


@pytest.fixture
def killable(metastores):
    """Metastore a, running (started again on its port and database if a test killed it)."""
    a, _ = metastores
    if a.proc is None or a.proc.poll() is not None:
        a.start(txn_tables=False)
    return a


# ---------------------------------------------------------------------------------------------
# tests


def test_survivor_audits_the_set_ugi_user(lab, metastores):
    """The evidence used below, checked on the real metastore: the audit log names the set_ugi
    user of the connection (the metastore's own OS user without set_ugi); ownerName is not
    set from set_ugi by Hive 2.3."""
    _, b = metastores
    offset = log_size(b)
    named, anon = unique("failover_ugi"), unique("failover_anon")
    c = connect(b.port, "fo_probe")
    ct = c._transport
    n = connect(b.port)
    nt = n._transport
    try:
        c.create_database(database(lab, named))
        n.create_database(database(lab, anon))
        assert c.get_database(named).ownerName is None, \
            "Hive 2.3 was expected not to set ownerName from set_ugi"
        assert created_by(b, offset, named) == ["fo_probe"]
        assert created_by(b, offset, anon) == [os_user()]
    finally:
        for cl, name in ((c, named), (n, anon)):
            try:
                cl.drop_database(name, True, True)
            except tt.NoSuchObjectException:
                pass
        ct.close()
        nt.close()


def test_idle_connection_reestablishes_upstream(lab, guard, killable, metastores):
    """An idle client connection whose metastore was killed: its next call is served by the
    next metastore, as the same set_ugi user, on the same client connection."""
    a, b = killable, metastores[1]
    offset_a = log_size(a)
    c = connect(guard.port, "admin")
    ct = c._transport
    try:
        assert "default" in c.get_all_databases()
        wait_audit(a, offset_a, lambda u, cmd: u == "admin" and cmd == "get_all_databases",
                   "admin's get_all_databases on a (the first URI)")
        connects = upstream_connects(guard)

        kill_hard(a)
        time.sleep(IDLE_SETTLE)
        offset_b = log_size(b)
        try:
            dbs = c.get_all_databases()
        except Exception as e:  # noqa: BLE001 - the failure under test, reported as such
            pytest.fail(f"the first call on the idle client connection after metastore a was "
                        f"killed failed: {type(e).__name__}: {e}")
        assert "default" in dbs
        assert upstream_connects(guard) > connects, "no new upstream connection was counted"

        name = unique("failover_idle")
        c.create_database(database(lab, name))
        d = connect(b.port, "admin")
        dt = d._transport
        try:
            assert d.get_database(name).name == name, "the database was not created on b"
            assert created_by(b, offset_b, name) == ["admin"], \
                "the caller's identity was not sent to b"
        finally:
            d.drop_database(name, True, True)
            dt.close()
        assert name not in c.get_all_databases()
    finally:
        ct.close()


class Worker(threading.Thread):
    """One client connection making calls through hms-guard (admin) with short pauses; after a
    failed call it reconnects. Records (start, end, outcome, detail) per call; outcome: ok,
    clean (a TApplicationException from hms-guard), other. While `hold` is set it parks
    between calls (idle, its connection open) and says so with `parked`."""

    def __init__(self, i, port, stop):
        super().__init__(name=f"failover-worker-{i}", daemon=True)
        self.i, self.port, self.stop = i, port, stop
        self.hold, self.parked = threading.Event(), threading.Event()
        self.calls = []

    def ok_after(self, t):
        return sum(1 for s, _, o, _ in self.calls if o == "ok" and s >= t)

    def run(self):
        rnd = random.Random(self.i)
        c = t = None
        n = 0
        while not self.stop.is_set():
            if self.hold.is_set():
                self.parked.set()
                while self.hold.is_set() and not self.stop.is_set():
                    time.sleep(0.01)
                self.parked.clear()
            if c is None:
                start = time.monotonic()
                try:
                    c = connect(self.port, "admin")
                    t = c._transport
                except Exception as e:  # noqa: BLE001 - recorded, asserted on by the test
                    self.calls.append((start, time.monotonic(), "other", f"reconnect: {e!r}"))
                    time.sleep(0.1)
                    continue
            n += 1
            start = time.monotonic()
            try:
                if n % 2:
                    got = "default" in c.get_all_databases()
                else:
                    got = c.get_database("default").name == "default"
                outcome, detail = ("ok", "") if got else ("other", "wrong reply")
            except TApplicationException as e:
                msg = e.message or ""
                outcome = "clean" if msg.startswith("hms-guard:") else "other"
                detail = f"TApplicationException(type={e.type}): {msg}"
            except Exception as e:  # noqa: BLE001 - recorded, asserted on by the test
                outcome, detail = "other", f"{type(e).__name__}: {e}"
            self.calls.append((start, time.monotonic(), outcome, detail))
            if outcome != "ok":
                t.close()
                c = t = None
            time.sleep(rnd.uniform(0, 0.01))
        if t is not None:
            t.close()


def test_connections_survive_kill_under_traffic(guard, killable, metastores):
    """Client connections busy through hms-guard while metastore a is killed: each keeps
    working; only a call in flight at the kill may fail, and then cleanly. Half the workers
    run freely (mostly in flight at the kill), half are parked between calls at the kill (so
    idle connections are always part of it)."""
    a, b = killable, metastores[1]
    offset_a = log_size(a)
    stop = threading.Event()
    workers = [Worker(i, guard.port, stop) for i in range(THREADS)]
    parked = workers[THREADS // 2:]
    for w in workers:
        w.start()
    try:
        deadline = time.monotonic() + 30
        while not all(w.ok_after(0) >= 5 for w in workers):
            assert time.monotonic() < deadline, \
                f"workers did not get going: {[w.calls[-3:] for w in workers]}"
            time.sleep(0.05)
        wait_audit(a, offset_a, lambda u, cmd: u == "admin", "the workers' calls on a")
        for w in parked:
            w.hold.set()
        for w in parked:
            assert w.parked.wait(timeout=30), f"worker {w.i} did not park"
        connects = upstream_connects(guard)
        offset_b = log_size(b)

        killed, closed = kill_hard(a)
        time.sleep(IDLE_SETTLE)
        for w in parked:
            w.hold.clear()

        deadline = time.monotonic() + 20
        while not all(w.ok_after(closed) >= CALLS_AFTER_KILL for w in workers):
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
    finally:
        stop.set()
        for w in workers:
            w.hold.clear()
            w.join(timeout=60)
    assert not any(w.is_alive() for w in workers), "a worker hung"

    problems = []
    for w in workers:
        for start, end, outcome, detail in w.calls:
            when = (f"worker {w.i}{' (parked at the kill)' if w in parked else ''}: call "
                    f"{start - killed:+.3f}s..{end - killed:+.3f}s from the kill")
            if outcome == "other":
                problems.append(f"{when}: {detail}")
            elif outcome == "clean" and not (start < closed and end >= killed):
                problems.append(f"{when}: clean error on a call not in flight at the kill: "
                                f"{detail}")
        if w.ok_after(closed) < CALLS_AFTER_KILL:
            problems.append(f"worker {w.i}: only {w.ok_after(closed)} successful calls after "
                            f"the kill")
    assert not problems, ("failures besides hms-guard's clean errors on in-flight calls:\n"
                          + "\n".join(problems))
    wait_audit(b, offset_b, lambda u, cmd: u == "admin", "the workers' calls on b")
    # Nothing reached b without an identity (it would run as the metastore's own OS user):
    # every re-established connection sent its caller's set_ugi again.
    lost = [(u, cmd) for u, cmd in audit(b, offset_b) if u not in ("admin", "hms-guard")]
    assert not lost, f"calls on b without the caller's identity: {lost[:5]}"
    # Every connection needed a new upstream connection (to b).
    assert upstream_connects(guard) - connects >= THREADS


def test_fact_lookups_fail_over(lab, killable, metastores):
    """hms-guard's own metastore connections (the grants it reads to decide a call) fail over
    too: with a 1 ms grants cache, the first call after the kill needs a fresh grant lookup,
    which b must answer (the lookups before the kill left their idle connections on a)."""
    a, b = killable, metastores[1]
    g = hms.Guard(lab, [a.uri, b.uri], name="guard-failover-facts",
                  extra=GUARD_CONFIG.replace("cache_ttl_ms = 600000", "cache_ttl_ms = 1"))
    g.start()
    try:
        c = connect(g.port, "admin")
        ct = c._transport
        try:
            assert "default" in c.get_all_databases()
            lookups = grant_lookups(g)
            assert lookups > 0, "no grant lookup before the kill"
            kill_hard(a)
            time.sleep(IDLE_SETTLE)
            try:
                dbs = c.get_all_databases()
            except Exception as e:  # noqa: BLE001 - the failure under test, reported as such
                pytest.fail(f"the first call after metastore a was killed, needing a grant "
                            f"lookup, failed: {type(e).__name__}: {e}")
            assert "default" in dbs
            # Decided on grants read after the kill (b is the only metastore left), not cached.
            assert grant_lookups(g) > lookups, "no grant lookup after the kill"
        finally:
            ct.close()
    finally:
        g.stop()
