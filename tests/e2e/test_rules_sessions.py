"""Sessions as the peer proved them, and sockets before identity, against the real metastore
(issue 18: Kerberos sessions on every replica, wrapped frames, the deadline before identity).

Written as an attacker would: a Kerberos client speaking the SASL/GSSAPI exchange byte by byte
(pykerberos, with exactly the GSSAPI flags it chooses) through a recording TCP relay; a
replayer that holds no ticket and only sends the recorded bytes to a second hms-guard replica
with its own replay cache; wrapped frames sent twice or out of order; silent sockets from many
loopback addresses. After every refused attempt the metastore's databases are checked."""
import base64
import socket
import struct
import threading
import time

import kerberos
import pytest
from hmsclient.genthrift.hive_metastore import ThriftHiveMetastore as T
from hmsclient.genthrift.hive_metastore import ttypes as tt
from thrift.protocol import TBinaryProtocol
from thrift.transport import TTransport

import hms
from kdc import Kdc

SERVICE = "hive/localhost"
START, OK, BAD, ERROR, COMPLETE = 1, 2, 3, 4, 5
MUTUAL = kerberos.GSS_C_MUTUAL_FLAG
SEQUENCE = kerberos.GSS_C_SEQUENCE_FLAG
REPLAY = kerberos.GSS_C_REPLAY_FLAG
QOP_BITS = {"auth": 1, "auth-int": 2, "auth-conf": 4}


class SessionGuard(hms.Guard):
    """hms.Guard with keys of its own in [server] (`server`: TOML lines)."""

    def __init__(self, *args, server="", **kwargs):
        super().__init__(*args, **kwargs)
        self.server = server

    def config_text(self):
        listen = f'listen = "127.0.0.1:{self.port}"\n'
        return super().config_text().replace(listen, listen + self.server, 1)


def counter(g, name, **labels):
    return sum(v for _, v in hms.metric_series(g.metrics(), name, **labels))


def databases(metastore):
    with hms.hms_client(metastore.port) as direct:
        return set(direct.get_all_databases())


# ---------------------------------------------------------------------------------------------
# Kerberos: a KDC, two replicas with separate replay caches.

@pytest.fixture(scope="module")
def kdc(lab):
    k = Kdc(lab / "kdc-sessions").start()
    k.add(SERVICE, "admin", "alice")
    yield k
    k.stop()


@pytest.fixture(scope="module")
def as_admin(kdc, lab):
    """A ticket cache for admin; the process's Kerberos environment points at it."""
    import os
    d = lab / "kdc-sessions" / "users"
    d.mkdir(exist_ok=True)
    kt = kdc.keytab(d / "admin.keytab", "admin")
    env = kdc.kinit("admin", kt, d / "admin.cc")
    for k in ("KRB5_CONFIG", "KRB5CCNAME"):
        os.environ[k] = env[k]
    return env


def kerberos_replica(lab, metastore, kdc, name, server=""):
    keytab = lab / "kdc-sessions" / "hms-guard.keytab"
    if not keytab.exists():
        kdc.keytab(keytab, SERVICE)
    rcache = lab / "kdc-sessions" / f"rcache-{name}"
    rcache.mkdir(exist_ok=True)
    return SessionGuard(lab, metastore.port, name=name, server=server, env={
        "KRB5RCACHEDIR": str(rcache)}, extra=(
        '[authz]\nmode = "enforce"\n\n[storage]\nenabled = false\n\n'
        '[identity]\nmode = "kerberos"\n\n[identity.kerberos]\n'
        f'principal = "{SERVICE}@{kdc.realm}"\nkeytab = "{keytab}"\n'
        f'krb5_conf = "{kdc.conf}"\n'
        'auth_to_local = ["RULE:[1:$1@$0](.*@HMSGUARD\\\\.TEST)s/@.*//"]\n'))


@pytest.fixture(scope="module")
def replicas(lab, metastore, kdc):
    """Two hms-guard replicas, each with its own replay cache (as the standalone overlay runs
    them); the second bounds handshakes (2 s) and frames (server.read_timeout_ms, 3 s)."""
    a = kerberos_replica(lab, metastore, kdc, "guard-sessions-a")
    b = kerberos_replica(lab, metastore, kdc, "guard-sessions-b", server=(
        "handshake_timeout_ms = 2000\nread_timeout_ms = 3000\n"))
    a.start()
    try:
        b.start()
        try:
            yield a, b
        finally:
            b.stop()
    finally:
        a.stop()


def read_exact(sock, n):
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise EOFError(f"closed after {len(out)} of {n} bytes")
        out += chunk
    return out


def send_msg(sock, status, payload):
    sock.sendall(bytes([status]) + struct.pack(">I", len(payload)) + payload)


def read_msg(sock):
    status, n = struct.unpack(">BI", read_exact(sock, 5))
    return status, read_exact(sock, n)


class Relay:
    """A TCP relay on loopback that records every byte the client sends to `port`."""

    def __init__(self, port):
        self.port = port
        self.sent = bytearray()
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(1)
        self.addr = self.server.getsockname()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        client, _ = self.server.accept()
        upstream = socket.create_connection(("127.0.0.1", self.port))

        def pump(src, dst, record):
            try:
                while True:
                    data = src.recv(65536)
                    if not data:
                        break
                    if record:
                        self.sent.extend(data)
                    dst.sendall(data)
            except OSError:
                pass
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        threading.Thread(target=pump, args=(upstream, client, False), daemon=True).start()
        pump(client, upstream, True)


class GssapiClient(TTransport.TTransportBase):
    """A SASL/GSSAPI client (RFC 4752 over the metastore's TSaslTransport) asking GSSAPI for
    exactly `flags`, then the Thrift byte stream in (wrapped) frames."""

    def __init__(self, addr, flags, qop="auth"):
        self.sock = socket.create_connection(addr, timeout=20)
        self.flags, self.qop = flags, qop
        self.rbuf, self.wbuf = b"", b""
        self.ctx = None

    def b64(self, data):
        return base64.b64encode(data).decode()

    def response(self):
        r = kerberos.authGSSClientResponse(self.ctx)
        return base64.b64decode(r) if r else b""

    def open(self):
        """The negotiation; raises TTransportException with the server's BAD text."""
        _, self.ctx = kerberos.authGSSClientInit("hive@localhost", gssflags=self.flags)
        send_msg(self.sock, START, b"GSSAPI")
        done = kerberos.authGSSClientStep(self.ctx, "") == kerberos.AUTH_GSS_COMPLETE
        send_msg(self.sock, OK, self.response())
        while True:
            status, payload = read_msg(self.sock)
            if status in (BAD, ERROR):
                raise TTransport.TTransportException(message=payload.decode())
            if status == COMPLETE:
                return
            if not done:  # the acceptor's AP-REP (mutual authentication)
                done = kerberos.authGSSClientStep(self.ctx, self.b64(payload)) == 1
                send_msg(self.sock, OK, self.response())
                continue
            kerberos.authGSSClientUnwrap(self.ctx, self.b64(payload))
            offer = self.response()
            assert offer[0] & QOP_BITS[self.qop], offer
            answer = struct.pack(">I", QOP_BITS[self.qop] << 24 | 0xFFFF) + b""
            kerberos.authGSSClientWrap(self.ctx, self.b64(answer))
            send_msg(self.sock, OK, self.response())

    def wrap(self, data):
        if self.qop == "auth":
            return data
        kerberos.authGSSClientWrap(self.ctx, self.b64(data), None,
                                   1 if self.qop == "auth-conf" else 0)
        return self.response()

    def frame(self, data):
        """The frame carrying `data` (wrapped under auth-int/auth-conf)."""
        w = self.wrap(data)
        return struct.pack(">I", len(w)) + w

    def isOpen(self):
        return True

    def read(self, sz):
        if not self.rbuf:
            n, = struct.unpack(">I", read_exact(self.sock, 4))
            data = read_exact(self.sock, n)
            if self.qop != "auth":
                kerberos.authGSSClientUnwrap(self.ctx, self.b64(data))
                data = self.response()
            self.rbuf = data
        out, self.rbuf = self.rbuf[:sz], self.rbuf[sz:]
        return out

    def write(self, buf):
        self.wbuf += buf

    def flush(self):
        data, self.wbuf = self.wbuf, b""
        self.sock.sendall(self.frame(data))

    def close(self):
        self.sock.close()


def call_bytes(method, *args):
    """The Thrift bytes of one call (what a client writes into a frame)."""
    buf = TTransport.TMemoryBuffer()
    getattr(T.Client(TBinaryProtocol.TBinaryProtocol(buf)), "send_" + method)(*args)
    return buf.getvalue()


def new_db(lab, name):
    return tt.Database(name=name, locationUri=f"file://{lab}/{name}.db", parameters={})


def split_negotiation(recorded):
    """The recorded client bytes as negotiation messages (status 1..5, length, payload); the
    frames after them start with a length byte 0."""
    msgs, i = [], 0
    while i + 5 <= len(recorded) and START <= recorded[i] <= COMPLETE:
        n, = struct.unpack(">I", bytes(recorded[i + 1:i + 5]))
        msgs.append(bytes(recorded[i:i + 5 + n]))
        i += 5 + n
    return msgs


def replay(port, recorded):
    """Sends the recorded negotiation verbatim, one message at a time, reading the server's
    answer to each (START gets none). Holds no ticket: only these bytes. Returns the socket
    and the server's messages."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=20)
    answers = []
    for i, m in enumerate(split_negotiation(recorded)):
        sock.sendall(m)
        if i == 0:
            continue
        try:
            answers.append(read_msg(sock))
        except EOFError:
            break
        if answers[-1][0] in (BAD, ERROR, COMPLETE):
            break
    return sock, answers


@pytest.mark.parametrize("flags", [0, SEQUENCE, REPLAY | SEQUENCE],
                         ids=["no-flags", "sequence", "replay+sequence"])
def test_a_negotiation_without_mutual_auth_replayed_to_another_replica_is_refused(
        replicas, as_admin, metastore, lab, flags):
    a, b = replicas
    relay = Relay(a.port)
    victim = GssapiClient(relay.addr, flags, "auth")
    refused = None
    try:
        victim.open()
    except TTransport.TTransportException as e:
        refused = str(e)
    victim.close()
    time.sleep(0.2)
    assert relay.sent, "the relay saw the client's negotiation"
    before = counter(b, "hms_guard_sasl_handshakes_total", outcome="unprotected")
    sock, answers = replay(b.port, relay.sent)
    status, text = answers[-1]
    if status == COMPLETE:
        # What an accepted replay gives the attacker under QOP auth: new calls as admin.
        T.Client(TBinaryProtocol.TBinaryProtocol(_Plain(sock))).create_database(
            new_db(lab, "replayed_session_db"))
    sock.close()
    assert "replayed_session_db" not in databases(metastore), "the replayer acted as admin"
    assert refused and "did not ask for mutual authentication" in refused, refused
    assert status == BAD, answers
    assert "did not ask for mutual authentication" in text.decode(), text
    assert "admin" not in text.decode(), "the replayer is not told whose session it holds"
    assert counter(b, "hms_guard_sasl_handshakes_total", outcome="unprotected") == before + 1
    assert any("unprotected" in line and "admin@HMSGUARD.TEST" in line
               for line in b.log.read_text().splitlines()), "the log names the principal"


class _Plain(TTransport.TTransportBase):
    """Thrift in QOP `auth` frames on a socket whose negotiation someone else did."""

    def __init__(self, sock):
        self.sock, self.rbuf, self.wbuf = sock, b"", b""

    def isOpen(self):
        return True

    def read(self, sz):
        if not self.rbuf:
            n, = struct.unpack(">I", read_exact(self.sock, 4))
            self.rbuf = read_exact(self.sock, n)
        out, self.rbuf = self.rbuf[:sz], self.rbuf[sz:]
        return out

    def write(self, buf):
        self.wbuf += buf

    def flush(self):
        data, self.wbuf = self.wbuf, b""
        self.sock.sendall(struct.pack(">I", len(data)) + data)


@pytest.mark.parametrize("qop", ["auth", "auth-conf"])
def test_a_mutually_authenticated_negotiation_replayed_elsewhere_cannot_finish(
        replicas, as_admin, metastore, lab, qop):
    """The client's own default (mutual + sequence): its session works; the recording,
    replayed to the other replica, fails at the security-layer answer (sealed under the first
    replica's acceptor subkey), and replayed to the same replica, at its replay cache."""
    a, b = replicas
    relay = Relay(a.port)
    victim = GssapiClient(relay.addr, MUTUAL | SEQUENCE, qop)
    victim.open()
    admin = T.Client(TBinaryProtocol.TBinaryProtocol(victim))
    assert "default" in admin.get_all_databases()
    victim.close()
    time.sleep(0.2)
    sock, answers = replay(b.port, relay.sent)
    sock.close()
    assert answers[-1][0] == BAD, answers
    assert "reading the security-layer choice" in answers[-1][1].decode(), answers
    sock, answers = replay(a.port, relay.sent)
    sock.close()
    assert answers[-1][0] == BAD and b"replay" in answers[-1][1], answers
    assert "replayed_session_db" not in databases(metastore)


@pytest.mark.parametrize("qop", ["auth-int", "auth-conf"])
@pytest.mark.parametrize("flags", [MUTUAL, MUTUAL | REPLAY], ids=["mutual", "mutual+replay"])
def test_a_wrapped_layer_without_sequence_detection_is_refused(
        replicas, as_admin, metastore, lab, qop, flags):
    a, _ = replicas
    name = f"seq_{qop.replace('-', '_')}_{flags}"
    client = GssapiClient(("127.0.0.1", a.port), flags, qop)
    try:
        client.open()
    except TTransport.TTransportException as e:
        assert "without sequence detection" in str(e) and qop in str(e), e
        return
    # Accepted (the old behaviour): a recorded wrapped frame is replayed after the drop.
    create = client.frame(call_bytes("create_database", new_db(lab, name)))
    client.sock.sendall(create)
    admin = T.Client(TBinaryProtocol.TBinaryProtocol(client))
    admin.recv_create_database()
    admin.drop_database(name, False, False)
    client.sock.sendall(create)
    time.sleep(1)
    client.close()
    assert name not in databases(metastore), "a replayed wrapped frame created it again"
    pytest.fail(f"{qop} without sequence detection was accepted")


@pytest.mark.parametrize("qop", ["auth-int", "auth-conf"])
def test_a_replayed_or_reordered_wrapped_frame_is_refused(
        replicas, as_admin, metastore, lab, qop):
    a, _ = replicas
    tag = qop.replace("-", "_")
    # Replayed: the frame that created a database, sent again after the drop.
    client = GssapiClient(("127.0.0.1", a.port), MUTUAL | SEQUENCE, qop)
    client.open()
    admin = T.Client(TBinaryProtocol.TBinaryProtocol(client))
    create = client.frame(call_bytes("create_database", new_db(lab, f"again_{tag}")))
    client.sock.sendall(create)
    admin.recv_create_database()
    admin.drop_database(f"again_{tag}", False, False)
    client.sock.sendall(create)
    with pytest.raises((EOFError, OSError)):
        read_exact(client.sock, 4)
    client.close()
    assert f"again_{tag}" not in databases(metastore)
    # Reordered: the second frame sent first.
    client = GssapiClient(("127.0.0.1", a.port), MUTUAL | SEQUENCE, qop)
    client.open()
    first = client.frame(call_bytes("create_database", new_db(lab, f"first_{tag}")))
    second = client.frame(call_bytes("create_database", new_db(lab, f"second_{tag}")))
    client.sock.sendall(second + first)
    with pytest.raises((EOFError, OSError)):
        read_exact(client.sock, 4)
    client.close()
    assert not {f"first_{tag}", f"second_{tag}"} & databases(metastore)
    assert "SASL unwrap failed" in a.log.read_text()
    assert counter(a, "hms_guard_client_errors_total", kind="sasl_frame") >= 2


def test_a_started_wrapped_frame_is_bound_by_the_read_timeout(replicas, as_admin):
    _, b = replicas  # read_timeout_ms = 3000; idle_timeout_ms stays one hour
    client = GssapiClient(("127.0.0.1", b.port), MUTUAL | SEQUENCE, "auth-conf")
    client.open()
    admin = T.Client(TBinaryProtocol.TBinaryProtocol(client))
    assert "default" in admin.get_all_databases()
    frame = client.frame(call_bytes("get_all_databases"))
    client.sock.sendall(frame[:6])  # the header and two bytes of the token, then nothing
    t = time.monotonic()
    client.sock.settimeout(15)
    with pytest.raises(EOFError):
        read_exact(client.sock, 4)
    took = time.monotonic() - t
    client.close()
    assert 2.5 < took < 8, f"closed after {took:.1f} s"


def test_a_sasl_negotiation_that_stalls_is_closed_at_the_handshake_deadline(replicas):
    _, b = replicas  # handshake_timeout_ms = 2000
    before = counter(b, "hms_guard_handshake_timeouts_total", kind="sasl")
    sock = socket.create_connection(("127.0.0.1", b.port), timeout=15)
    send_msg(sock, START, b"GSSAPI")  # and never the token
    t = time.monotonic()
    with pytest.raises(EOFError):
        read_msg(sock)
    took = time.monotonic() - t
    sock.close()
    assert took < 6, f"closed after {took:.1f} s"
    assert counter(b, "hms_guard_handshake_timeouts_total", kind="sasl") == before + 1


# ---------------------------------------------------------------------------------------------
# Sockets before identity: silent sockets from many loopback addresses.

def test_silent_sockets_from_many_addresses_are_closed_and_a_client_is_served(
        lab, metastore):
    g = SessionGuard(lab, metastore.port, name="guard-sessions-silent", server=(
        "max_connections = 40\nmax_connections_per_client = 2\n"
        "handshake_timeout_ms = 1500\n"), extra='[authz]\nmode = "off"\n')
    g.start()
    silent = []
    try:
        for i in range(2, 51):
            for _ in range(2):
                s = socket.socket()
                s.bind((f"127.0.0.{i}", 0))
                s.settimeout(10)
                s.connect(("127.0.0.1", g.port))
                silent.append(s)
        time.sleep(0.3)
        assert counter(g, "hms_guard_connections_rejected_total", kind="limit") > 0
        # Every slot is held: a legitimate client is turned away at first, and served
        # within the handshake timeout (plus a margin), as the silent ones are closed.
        t = time.monotonic()
        served = None
        while served is None and time.monotonic() - t < 4.5:
            try:
                with hms.hms_client(g.port, timeout=3) as c:
                    served = c.get_all_databases()
            except Exception:
                time.sleep(0.1)
        assert served is not None and "default" in served, "never served"
        assert time.monotonic() - t < 4.5
        for s in silent:
            try:
                data = s.recv(1)
            except OSError:
                data = b""
            assert data == b"", "a silent socket was answered"
        assert counter(g, "hms_guard_handshake_timeouts_total", kind="first_call") >= 40
        assert "no whole first call within the handshake timeout" in g.log.read_text()
    finally:
        for s in silent:
            s.close()
        g.stop()
