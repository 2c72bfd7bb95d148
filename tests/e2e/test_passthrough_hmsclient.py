"""A Python Hive Metastore client (PyPI hmsclient's generated Thrift code + thrift) through
hms-guard with authorization off: create/get/alter/drop of databases and tables, roles, role
grants and privileges, errors, an unknown method. Every byte is checked two ways:

 (i)  a recording TCP relay sits between hms-guard and the metastore (hms-guard's upstream is the
      relay) while the client's transport records what it writes and reads: the bytes the client
      wrote are exactly the bytes the metastore received, and the bytes the metastore sent are
      exactly the bytes the client read, for the whole conversation;
 (ii) every read call is also made directly to the metastore on a second connection, and its
      reply through hms-guard is byte-identical to the direct reply."""
import socket
import threading
import time

import pytest
from hmsclient.genthrift.hive_metastore import ThriftHiveMetastore as T
from hmsclient.genthrift.hive_metastore import ttypes as tt
from thrift.protocol import TBinaryProtocol
from thrift.Thrift import TApplicationException, TMessageType
from thrift.transport import TSocket, TTransport

import hms

TIMEOUT_MS = 30_000  # a hung proxy fails the test instead of blocking it


class RecordingTransport(TTransport.TTransportBase):
    """A buffered socket transport recording every byte the protocol writes and reads."""

    def __init__(self, port):
        sock = TSocket.TSocket("127.0.0.1", port)
        sock.setTimeout(TIMEOUT_MS)
        self.inner = TTransport.TBufferedTransport(sock)
        self.written = bytearray()
        self.read_bytes = bytearray()

    def isOpen(self):
        return self.inner.isOpen()

    def open(self):
        self.inner.open()

    def close(self):
        self.inner.close()

    def read(self, sz):
        b = self.inner.read(sz)
        self.read_bytes += b
        return b

    def write(self, buf):
        self.written += buf
        self.inner.write(buf)

    def flush(self):
        self.inner.flush()


class Conn:
    """One recorded client: the generated client, its protocol and its recording transport."""

    def __init__(self, port):
        self.trans = RecordingTransport(port)
        self.trans.open()
        self.proto = TBinaryProtocol.TBinaryProtocol(self.trans)
        self.client = T.Client(self.proto)

    def close(self):
        self.trans.close()


class RelayConnection:
    def __init__(self):
        self.to_upstream = bytearray()
        self.from_upstream = bytearray()
        self.closed = threading.Event()  # both directions ended


class Relay:
    """A TCP relay to `target_port` recording both directions of every connection."""

    def __init__(self, target_port):
        self.target = target_port
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            rec = RelayConnection()
            with self.lock:
                self.conns.append(rec)
            try:
                u = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                c.close()
                rec.closed.set()
                continue
            done = []
            for src, dst, buf in ((c, u, rec.to_upstream), (u, c, rec.from_upstream)):
                threading.Thread(target=self._pump, args=(src, dst, buf, rec, done),
                                 daemon=True).start()

    def _pump(self, src, dst, buf, rec, done):
        while True:
            try:
                b = src.recv(65536)
            except OSError:
                b = b""
            if not b:
                break
            with self.lock:
                buf += b
            try:
                dst.sendall(b)
            except OSError:
                break
        for s, how in ((dst, socket.SHUT_WR), (src, socket.SHUT_RD)):
            try:
                s.shutdown(how)
            except OSError:
                pass
        with self.lock:
            done.append(1)
            if len(done) == 2:
                src.close()
                dst.close()
                rec.closed.set()

    def mark(self):
        with self.lock:
            return len(self.conns)

    def conversations_since(self, mark, settle=5.0):
        """The connections opened since `mark` that carried bytes, once they closed (or after
        `settle` seconds)."""
        deadline = time.monotonic() + settle
        with self.lock:
            new = list(self.conns[mark:])
        for c in new:
            c.closed.wait(max(0.0, deadline - time.monotonic()))
        return [c for c in new if c.to_upstream or c.from_upstream]

    def close(self):
        self.sock.close()


@pytest.fixture(scope="module")
def relayed(lab, metastore):
    """hms-guard (authorization off) whose upstream is a recording relay to the metastore."""
    relay = Relay(metastore.port)
    g = hms.Guard(lab, [f"thrift://127.0.0.1:{relay.port}"], extra='[authz]\nmode = "off"\n',
                  name="guard-relay")
    try:
        g.start()
        yield g, relay
    finally:
        g.stop()
        relay.close()


class Pair:
    """The same calls on a connection through hms-guard and on one straight to the metastore."""

    def __init__(self, guard_port, metastore_port):
        self.proxied = Conn(guard_port)
        self.direct = Conn(metastore_port)
        self.seqid = 0
        self.compared = []

    def read(self, name, call):
        """Runs a read call on both connections (same sequence id, like a Java client's
        counter) and asserts that the two replies are the same bytes; returns the result."""
        self.seqid += 1
        results = []
        replies = []
        for conn in (self.direct, self.proxied):
            conn.client._seqid = self.seqid
            start = len(conn.trans.read_bytes)
            try:
                results.append(("ok", call(conn.client)))
            except tt.TException as e:
                results.append(("exception", e))
            replies.append(bytes(conn.trans.read_bytes[start:]))
        assert replies[0], f"{name}: no reply"
        assert replies[1] == replies[0], (
            f"{name}: reply through hms-guard differs from the direct reply\n"
            f"direct : {replies[0][:200].hex()}\nproxied: {replies[1][:200].hex()}")
        assert results[1] == results[0]
        self.compared.append(name)
        kind, value = results[1]
        if kind == "exception":
            raise value
        return value

    def write(self, call):
        """A call that changes state: through hms-guard only."""
        self.seqid += 1
        self.proxied.client._seqid = self.seqid
        return call(self.proxied.client)


def table_object(db, name, location):
    sd = tt.StorageDescriptor(
        cols=[tt.FieldSchema("id", "int", "the id"), tt.FieldSchema("name", "string", "")],
        location=location,
        inputFormat="org.apache.hadoop.mapred.TextInputFormat",
        outputFormat="org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat",
        compressed=False, numBuckets=-1,
        serdeInfo=tt.SerDeInfo(None, "org.apache.hadoop.hive.serde2.lazy.LazySimpleSerDe",
                               {"serialization.format": ","}),
        bucketCols=[], sortCols=[], parameters={})
    return tt.Table(tableName=name, dbName=db, owner="admin", createTime=0, lastAccessTime=0,
                    retention=0, sd=sd, partitionKeys=[], parameters={"k": "v", "EXTERNAL": "TRUE"},
                    tableType="EXTERNAL_TABLE")


def assert_relayed_unchanged(relay, mark, conn):
    """(i): exactly one upstream conversation carried `conn`'s bytes, unchanged both ways."""
    convs = relay.conversations_since(mark)
    assert len(convs) == 1, (
        f"expected the client's one conversation upstream, saw {len(convs)} with bytes: "
        f"{[(len(c.to_upstream), len(c.from_upstream)) for c in convs]}")
    up = convs[0]
    sent, got = bytes(conn.trans.written), bytes(conn.trans.read_bytes)
    assert bytes(up.to_upstream) == sent, first_difference(sent, bytes(up.to_upstream),
                                                           "client wrote", "metastore received")
    assert bytes(up.from_upstream) == got, first_difference(bytes(up.from_upstream), got,
                                                            "metastore sent", "client read")
    return up


def first_difference(a, b, an, bn):
    i = next((i for i in range(min(len(a), len(b))) if a[i] != b[i]), min(len(a), len(b)))
    return (f"{an} {len(a)} bytes, {bn} {len(b)} bytes; first difference at offset {i}:\n"
            f"{an}: {a[max(0, i - 16):i + 48].hex()}\n{bn}: {b[max(0, i - 16):i + 48].hex()}")


def test_hmsclient_through_hms_guard_is_byte_identical(lab, metastore, relayed):
    guard, relay = relayed
    mark = relay.mark()
    p = Pair(guard.port, metastore.port)
    db = "e2e_passthrough"
    loc = f"s3a://datalake/datawarehouse/{db}/t"
    Obj, Priv, Grant = tt.HiveObjectRef, tt.HiveObjectPrivilege, tt.PrivilegeGrantInfo
    USER, ROLE = tt.PrincipalType.USER, tt.PrincipalType.ROLE

    # Who we are: the first call of a real client's connection.
    assert p.read("set_ugi", lambda c: c.set_ugi("admin", ["staff"])) == ["staff"]
    assert p.read("getVersion", lambda c: c.getVersion())

    # Databases.
    p.write(lambda c: c.create_database(tt.Database(
        name=db, description="e2e", locationUri=f"s3a://datalake/datawarehouse/{db}",
        parameters={"team": "lab"}, ownerName="admin", ownerType=USER)))
    with pytest.raises(tt.AlreadyExistsException):
        p.write(lambda c: c.create_database(tt.Database(name=db, parameters={})))
    d = p.read("get_database", lambda c: c.get_database(db))
    assert (d.name, d.description, d.parameters) == (db, "e2e", {"team": "lab"})
    assert d.locationUri == f"s3a://datalake/datawarehouse/{db}"
    assert db in p.read("get_all_databases", lambda c: c.get_all_databases())
    assert p.read("get_databases", lambda c: c.get_databases("e2e_pass*")) == [db]
    # HMS 2.3 alters only a database's parameters and owner (a new description is ignored).
    d.parameters, d.ownerName = {"team": "lab", "tier": "gold"}, "dana"
    p.write(lambda c: c.alter_database(db, d))
    d2 = p.read("get_database", lambda c: c.get_database(db))
    assert (d2.parameters, d2.ownerName) == ({"team": "lab", "tier": "gold"}, "dana")

    # Tables.
    p.write(lambda c: c.create_table(table_object(db, "t", loc)))
    t = p.read("get_table", lambda c: c.get_table(db, "t"))
    assert (t.tableName, t.sd.location, t.parameters["k"], t.tableType) == (
        "t", loc, "v", "EXTERNAL_TABLE")
    assert p.read("get_tables", lambda c: c.get_tables(db, "*")) == ["t"]
    assert p.read("get_all_tables", lambda c: c.get_all_tables(db)) == ["t"]
    assert [f.name for f in p.read("get_fields", lambda c: c.get_fields(db, "t"))] == ["id", "name"]
    assert [f.name for f in p.read("get_schema", lambda c: c.get_schema(db, "t"))] == ["id", "name"]
    objs = p.read("get_table_objects_by_name", lambda c: c.get_table_objects_by_name(db, ["t"]))
    assert [o.tableName for o in objs] == ["t"]
    metas = p.read("get_table_meta", lambda c: c.get_table_meta(db, "*", ["EXTERNAL_TABLE"]))
    assert [(x.tableName, x.tableType) for x in metas] == [("t", "EXTERNAL_TABLE")]
    t.parameters["k"] = "v2"
    t.sd.location = loc + "_moved"
    p.write(lambda c: c.alter_table(db, "t", t))
    t2 = p.read("get_table", lambda c: c.get_table(db, "t"))
    assert (t2.parameters["k"], t2.sd.location) == ("v2", loc + "_moved")
    with pytest.raises(tt.NoSuchObjectException):
        p.read("get_table(missing)", lambda c: c.get_table(db, "missing"))

    # Roles.
    p.write(lambda c: c.create_role(tt.Role(roleName="e2e_role", ownerName="admin")))
    assert "e2e_role" in p.read("get_role_names", lambda c: c.get_role_names())
    assert p.write(lambda c: c.grant_role("e2e_role", "bob", USER, "admin", USER, False))
    roles = p.read("list_roles", lambda c: c.list_roles("bob", USER))
    assert sorted(r.roleName for r in roles) == ["e2e_role", "public"]  # everyone has public
    members = p.read("get_principals_in_role", lambda c: c.get_principals_in_role(
        tt.GetPrincipalsInRoleRequest("e2e_role")))
    assert [(m.principalName, m.principalType) for m in members.principalGrants] == [("bob", USER)]

    # Privileges: a role's, a user's, seen through get_privilege_set.
    obj = Obj(tt.HiveObjectType.TABLE, db, "t", None, None)
    role_grant = Priv(obj, "e2e_role", ROLE, Grant("SELECT", 0, "admin", USER, False))
    user_grant = Priv(obj, "carol", USER, Grant("INSERT", 0, "admin", USER, True))
    assert p.write(lambda c: c.grant_privileges(tt.PrivilegeBag([role_grant, user_grant])))
    # Granting it again: the metastore's own error (a TApplicationException, seen in this lab),
    # after which the connection goes on.
    with pytest.raises(TApplicationException):
        p.write(lambda c: c.grant_privileges(tt.PrivilegeBag([role_grant])))
    privs = p.read("list_privileges(role)", lambda c: c.list_privileges("e2e_role", ROLE, obj))
    assert [(x.principalName, x.grantInfo.privilege) for x in privs] == [("e2e_role", "SELECT")]
    privs = p.read("list_privileges(user)", lambda c: c.list_privileges("carol", USER, obj))
    assert [(x.grantInfo.privilege, x.grantInfo.grantOption) for x in privs] == [("INSERT", True)]
    ps = p.read("get_privilege_set(bob)", lambda c: c.get_privilege_set(obj, "bob", []))
    assert [g.privilege for g in ps.rolePrivileges["e2e_role"]] == ["SELECT"]
    ps = p.read("get_privilege_set(carol)", lambda c: c.get_privilege_set(obj, "carol", []))
    assert [g.privilege for g in ps.userPrivileges["carol"]] == ["INSERT"]
    assert p.write(lambda c: c.revoke_privileges(tt.PrivilegeBag([role_grant, user_grant])))
    assert p.read("list_privileges(role)", lambda c: c.list_privileges("e2e_role", ROLE, obj)) == []
    assert p.write(lambda c: c.revoke_role("e2e_role", "bob", USER))
    assert [r.roleName for r in p.read("list_roles", lambda c: c.list_roles("bob", USER))] == ["public"]
    assert p.write(lambda c: c.drop_role("e2e_role"))
    assert "e2e_role" not in p.read("get_role_names", lambda c: c.get_role_names())

    # Drops.
    p.write(lambda c: c.drop_table(db, "t", True))
    assert p.read("get_all_tables", lambda c: c.get_all_tables(db)) == []
    p.write(lambda c: c.drop_database(db, True, True))
    assert db not in p.read("get_all_databases", lambda c: c.get_all_databases())
    with pytest.raises(tt.NoSuchObjectException):
        p.read("get_database(dropped)", lambda c: c.get_database(db))

    # A closing client sends the oneway fb303 shutdown (never answered), as Spark does.
    p.proxied.client.shutdown()
    p.direct.client.shutdown()
    p.proxied.close()
    p.direct.close()

    # (i) The whole conversation crossed hms-guard unchanged, both ways.
    up = assert_relayed_unchanged(relay, mark, p.proxied)
    assert len(up.to_upstream) > 3000, len(up.to_upstream)
    assert len(p.compared) == 28, p.compared  # read replies compared byte for byte
    assert up.closed.is_set(), "hms-guard kept the upstream connection open after the client left"
    m = guard.metrics()
    assert hms.metric_series(m, "hms_guard_requests_total", method="get_table")


def raw_call(conn, name, seqid):
    """Writes a call to `name` with an empty argument struct; returns the reply's bytes and
    the TApplicationException it carries."""
    start = len(conn.trans.read_bytes)
    pr = conn.proto
    pr.writeMessageBegin(name, TMessageType.CALL, seqid)
    pr.writeStructBegin("args")
    pr.writeFieldStop()
    pr.writeStructEnd()
    pr.writeMessageEnd()
    conn.trans.flush()
    rname, rtype, rseqid = pr.readMessageBegin()
    assert (rname, rtype, rseqid) == (name, TMessageType.EXCEPTION, seqid)
    exc = TApplicationException()
    exc.read(pr)
    pr.readMessageEnd()
    return bytes(conn.trans.read_bytes[start:]), exc


def test_unknown_method_passes_through(metastore, relayed):
    guard, relay = relayed
    mark = relay.mark()
    direct, proxied = Conn(metastore.port), Conn(guard.port)
    want, exc = raw_call(direct, "no_such_method_xyz", 7)
    got, _ = raw_call(proxied, "no_such_method_xyz", 7)
    assert exc.type == TApplicationException.UNKNOWN_METHOD and "no_such_method_xyz" in exc.message
    assert got == want, first_difference(want, got, "direct reply", "reply through hms-guard")
    # The connection goes on after the metastore's exception.
    for c in (direct, proxied):
        c.client._seqid = 8
        assert c.client.getVersion()
        c.close()
    assert_relayed_unchanged(relay, mark, proxied)
