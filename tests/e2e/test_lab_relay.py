"""The lab's slow-metastore relay (tests/lab/relay.py) against the real metastore: every call
delayed once before it is forwarded and counted exactly, whatever its TCP reads look like; large
calls and replies intact; connections concurrent; the command line with its control port; an
unreachable metastore fails loudly. Framed and compact transports, which the lab's metastore
does not speak, are checked against a byte sink."""
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hmsclient.genthrift.hive_metastore import ThriftHiveMetastore as T
from hmsclient.genthrift.hive_metastore import ttypes as tt
from thrift.protocol import TBinaryProtocol, TCompactProtocol
from thrift.transport import TTransport

import hms
import relay as relay_mod
from hms import connect
from relay import RelayThread

DB = "relay_db"
RELAY = Path(relay_mod.__file__)


@pytest.fixture(scope="module")
def direct(lab, metastore):
    c = connect(metastore.port, "admin")
    c.create_database(tt.Database(name=DB, locationUri=f"file://{lab}/{DB}.db", parameters={}))
    c.create_table(hms.external_table(DB, "t", f"file://{lab}/{DB}.db/t"))
    return c


def call_bytes(*calls, proto=TBinaryProtocol.TBinaryProtocol):
    """The request bytes of CALLS [(method, args…)] as hmsclient's client writes them."""
    buf = TTransport.TMemoryBuffer()
    c = T.Client(proto(buf))
    for name, *args in calls:
        getattr(c, f"send_{name}")(*args)
    return buf.getvalue()


def read_reply(sock, proto=TBinaryProtocol.TBinaryProtocol, name="get_table"):
    """One reply from a raw socket, decoded by the generated client."""
    t = TTransport.TBufferedTransport(_SockTransport(sock))
    c = T.Client(proto(t))
    return getattr(c, f"recv_{name}")()


class _SockTransport(TTransport.TTransportBase):
    def __init__(self, sock):
        self.sock = sock

    def read(self, n):
        return self.sock.recv(n)


def test_calls_delayed_once_and_counted(direct, metastore):
    n, delay = 25, 20
    with RelayThread(metastore.port, delay_ms=0) as fast:
        c = connect(fast.port, "admin")
        t0 = time.monotonic()
        for _ in range(n):
            c.get_table(DB, "t")
        undelayed = time.monotonic() - t0
        c._transport.close()
    with RelayThread(metastore.port, delay_ms=delay) as r:
        c = connect(r.port, "admin")
        t0 = time.monotonic()
        for _ in range(n):
            assert c.get_table(DB, "t").tableName == "t"
        took = time.monotonic() - t0
        c._transport.close()
        assert r.calls == n + 1
        assert r.methods == {"set_ugi": 1, "get_table": n}
    assert took >= n * delay / 1000, took
    # Once per call, not more: the delayed run costs about n × delay over the undelayed one.
    assert took - undelayed < n * delay / 1000 * 1.5 + 0.5, (took, undelayed)


def test_call_in_many_reads_and_calls_in_one(direct, metastore):
    """A call written a few bytes at a time is one call, delayed once; two calls in one write
    are two calls, each delayed."""
    delay = 150
    one = call_bytes(("get_table", DB, "t"))
    with RelayThread(metastore.port, delay_ms=delay) as r:
        with socket.create_connection(("127.0.0.1", r.port)) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            t0 = time.monotonic()
            for i in range(0, len(one), 3):
                s.sendall(one[i:i + 3])
                time.sleep(0.002)
            sent = time.monotonic()
            assert read_reply(s).tableName == "t"
            after = time.monotonic() - sent
            assert r.calls == 1
            # The delay starts at the call's first byte: the reply comes at least
            # delay − sending time after the last byte, and is not delayed per piece.
            assert after >= delay / 1000 - (sent - t0) - 0.01
            assert time.monotonic() - t0 < 3 * delay / 1000  # per piece: 13 × delay
            t0 = time.monotonic()
            s.sendall(one + one)
            assert read_reply(s).tableName == "t"
            assert read_reply(s).tableName == "t"
            assert time.monotonic() - t0 >= 2 * delay / 1000
            assert r.methods == {"get_table": 3}


def test_large_call_and_reply_intact(direct, metastore, lab):
    """A ~1.6 MB create_table (many TCP reads) through the relay is one call, and its table
    read back through the relay (a reply as large) equals the one read directly."""
    params = {f"p{i:04d}": f"{i:04d}" + "x" * 3_896 for i in range(400)}
    t = hms.external_table(DB, "big", f"file://{lab}/{DB}.db/big", params=params)
    t.sd.cols = [tt.FieldSchema(f"c{i:05d}_" + "y" * 100, "string", "z" * 200)
                 for i in range(2_000)]
    with RelayThread(metastore.port, delay_ms=20) as r:
        c = connect(r.port, "admin")
        c.create_table(t)
        via = c.get_table(DB, "big")
        names = c.get_all_tables(DB)
        c._transport.close()
        assert r.methods == {"set_ugi": 1, "create_table": 1, "get_table": 1,
                             "get_all_tables": 1}
    mine = direct.get_table(DB, "big")
    assert len(call_bytes(("get_table", DB, "big"))) < 100
    assert via == mine
    assert len(via.parameters) > 400 and len(via.sd.cols) == 2_000
    buf = TTransport.TMemoryBuffer()
    mine.write(TBinaryProtocol.TBinaryProtocol(buf))
    assert len(buf.getvalue()) > 1_500_000
    assert sorted(names) == sorted(direct.get_all_tables(DB))


def test_two_connections_interleave(direct, metastore):
    delay = 200
    with RelayThread(metastore.port, delay_ms=delay) as r:
        a, b = connect(r.port, "alice"), connect(r.port, "bob")
        # Sent a then b, answered b then a: neither waits for the other's reply.
        t0 = time.monotonic()
        a.send_get_table(DB, "t")
        b.send_get_table(DB, "t")
        assert b.recv_get_table().tableName == "t"
        assert a.recv_get_table().tableName == "t"
        assert time.monotonic() - t0 < 2 * delay / 1000
        # Five calls each on two threads: the delays overlap.
        errors = []

        def five(c):
            try:
                for _ in range(5):
                    c.get_table(DB, "t")
            except Exception as e:  # noqa: BLE001 - asserted below
                errors.append(e)

        t0 = time.monotonic()
        threads = [threading.Thread(target=five, args=(c,)) for c in (a, b)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(30)
        took = time.monotonic() - t0
        assert not errors
        assert 5 * delay / 1000 <= took < 8 * delay / 1000, took
        assert r.methods == {"set_ugi": 2, "get_table": 12}
        for c in (a, b):
            c._transport.close()


def test_unknown_transport_refused(metastore):
    with RelayThread(metastore.port, delay_ms=0) as r:
        with socket.create_connection(("127.0.0.1", r.port)) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            s.settimeout(10)
            assert s.recv(100) == b""  # closed by the relay
        deadline = time.monotonic() + 5
        while r.stats()["refused"] != 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert r.stats()["refused"] == 1
        assert r.calls == 0


@pytest.fixture
def sink():
    """A byte sink standing in for a metastore that speaks framed or compact (the lab's speaks
    unframed binary only): it keeps every byte of its one connection."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    got = bytearray()

    def run():
        conn, _ = srv.accept()
        with conn:
            while data := conn.recv(65536):
                got.extend(data)

    th = threading.Thread(target=run, daemon=True)
    th.start()
    yield srv.getsockname()[1], got, th
    srv.close()


@pytest.mark.parametrize("kind", ["compact", "framed-binary", "framed-compact"])
def test_other_transports_counted(sink, kind):
    port, got, th = sink
    proto = (TCompactProtocol.TCompactProtocol if "compact" in kind
             else TBinaryProtocol.TBinaryProtocol)
    calls = [("set_ugi", "admin", ["g"]),
             ("create_table", hms.external_table("d", "t", "s3a://b/t", partitioned=True,
                                                 params={"k": "v" * 70_000})),
             ("get_table", "d", "t")]
    msgs = [call_bytes(c, proto=proto) for c in calls]
    if kind.startswith("framed"):
        msgs = [len(m).to_bytes(4, "big") + m for m in msgs]
    data = b"".join(msgs)
    with RelayThread(port, delay_ms=5) as r:
        with socket.create_connection(("127.0.0.1", r.port)) as s:
            for i in range(0, len(data), 1000):
                s.sendall(data[i:i + 1000])
        th.join(10)
        assert bytes(got) == data
        assert r.methods == {"set_ugi": 1, "create_table": 1, "get_table": 1}


def _relay_proc(*args):
    return subprocess.Popen([sys.executable, str(RELAY), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _ask(port, line):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(line.encode() + b"\n")
        return s.makefile().readline().strip()


def test_command_line_with_control_port(direct, metastore):
    listen, control = hms.free_port(), hms.free_port()
    p = _relay_proc("--listen", f"127.0.0.1:{listen}", "--upstream",
                    f"127.0.0.1:{metastore.port}", "--delay-ms", "20",
                    "--control", f"127.0.0.1:{control}")
    try:
        assert p.stdout.readline().strip() == f"listening 127.0.0.1:{listen}"
        assert p.stdout.readline().strip() == f"control 127.0.0.1:{control}"
        c = connect(listen, "admin")
        t0 = time.monotonic()
        for _ in range(10):
            c.get_table(DB, "t")
        assert time.monotonic() - t0 >= 0.2
        c._transport.close()
        assert _ask(control, "calls") == "11"
        assert _ask(control, "methods") == '{"set_ugi": 1, "get_table": 10}'
        assert _ask(control, "reset") == "ok"
        assert _ask(control, "calls") == "0"
        assert _ask(control, "delay 0") == "ok"
        assert _ask(control, "nonsense").startswith("error:")
        p.send_signal(signal.SIGTERM)
        assert p.wait(15) == 0
        assert '"calls": 0' in p.stderr.read()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_unreachable_metastore_fails_loudly():
    dead = hms.free_port()
    p = _relay_proc("--upstream", f"127.0.0.1:{dead}")
    out, err = p.communicate(timeout=30)
    assert p.returncode == 2
    assert f"metastore 127.0.0.1:{dead} unreachable" in err
    assert out == ""
