"""A Python HMS client (PyPI hmsclient's generated code + thrift) through hms-guard with
authorization off: create/get/alter/drop of databases and tables, roles and grants. Every byte
is checked twice: (i) a recording relay between hms-guard and the metastore sees exactly the
bytes the client wrote and sends exactly the bytes the client read; (ii) each read call's reply
through hms-guard is byte-identical to the same call made directly."""
import socket
import threading

import pytest
from hmsclient.genthrift.hive_metastore import ThriftHiveMetastore as T
from hmsclient.genthrift.hive_metastore import ttypes as tt
from thrift.protocol import TBinaryProtocol
from thrift.transport import TSocket, TTransport

import hms


class Recorder(TTransport.TTransportBase):
    """Delegates to a buffered socket and records every byte written and read."""

    def __init__(self, port):
        self.inner = TTransport.TBufferedTransport(TSocket.TSocket("127.0.0.1", port))
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


def client(port):
    rec = Recorder(port)
    rec.open()
    return T.Client(TBinaryProtocol.TBinaryProtocol(rec)), rec


class Relay:
    """A TCP relay recording both directions."""

    def __init__(self, target_port):
        self.target = target_port
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.to_upstream = bytearray()
        self.from_upstream = bytearray()
        self.lock = threading.Lock()
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            u = socket.create_connection(("127.0.0.1", self.target))
            threading.Thread(target=self.pump, args=(c, u, self.to_upstream), daemon=True).start()
            threading.Thread(target=self.pump, args=(u, c, self.from_upstream), daemon=True).start()

    def pump(self, src, dst, record):
        while True:
            try:
                b = src.recv(65536)
            except OSError:
                b = b""
            if not b:
                try:
                    dst.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                return
            with self.lock:
                record += b
            dst.sendall(b)


@pytest.fixture(scope="module")
def relayed(lab, metastore):
    relay = Relay(metastore.port)
    g = hms.Guard(lab, None, extra='[authz]\nmode = "off"\n', name="guard-relay",
                  upstream_uris=[f"thrift://127.0.0.1:{relay.port}"])
    g.start()
    yield g, relay
    g.stop()
    relay.sock.close()


def same_reply(direct, proxied, call):
    """Runs `call` on both clients; asserts identical reply bytes; returns the result."""
    cd, rd = direct
    cp, rp = proxied
    d0, p0 = len(rd.read_bytes), len(rp.read_bytes)
    want = call(cd)
    got = call(cp)
    assert bytes(rp.read_bytes[p0:]) == bytes(rd.read_bytes[d0:]), "reply bytes differ"
    assert got == want
    return got


def test_hmsclient_through_hms_guard_is_byte_identical(lab, metastore, relayed):
    guard, relay = relayed
    direct = client(metastore.port)
    proxied = client(guard.port)
    cp = proxied[0]
    db = "e2e_passthrough"
    loc = f"s3a://datalake/datawarehouse/{db}_t"
    cp.create_database(tt.Database(name=db, description="e2e", locationUri=f"file://{lab}/{db}.db",
                                   parameters={}, ownerName="admin", ownerType=tt.PrincipalType.USER))
    got = same_reply(direct, proxied, lambda c: c.get_database(db))
    assert got.name == db
    assert db in same_reply(direct, proxied, lambda c: c.get_all_databases())
    cols = [tt.FieldSchema("id", "int", ""), tt.FieldSchema("name", "string", "")]
    sd = tt.StorageDescriptor(
        cols=cols, location=loc,
        inputFormat="org.apache.hadoop.mapred.TextInputFormat",
        outputFormat="org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat",
        compressed=False, numBuckets=-1,
        serdeInfo=tt.SerDeInfo(None, "org.apache.hadoop.hive.serde2.lazy.LazySimpleSerDe", {}),
        bucketCols=[], sortCols=[], parameters={})
    table = tt.Table(tableName="t", dbName=db, owner="admin", createTime=0, lastAccessTime=0,
                     retention=0, sd=sd, partitionKeys=[], parameters={"k": "v"},
                     tableType="EXTERNAL_TABLE")
    cp.create_table(table)
    t = same_reply(direct, proxied, lambda c: c.get_table(db, "t"))
    assert t.sd.location == loc and t.parameters["k"] == "v"
    assert same_reply(direct, proxied, lambda c: c.get_tables(db, "*")) == ["t"]
    assert same_reply(direct, proxied, lambda c: c.get_all_tables(db)) == ["t"]
    assert [f.name for f in same_reply(direct, proxied, lambda c: c.get_fields(db, "t"))] == ["id", "name"]
    t.parameters["k"] = "v2"
    cp.alter_table(db, "t", t)
    assert same_reply(direct, proxied, lambda c: c.get_table(db, "t")).parameters["k"] == "v2"
    # Roles and grants.
    cp.create_role(tt.Role(roleName="e2e_role", createTime=0, ownerName="admin"))
    assert "e2e_role" in same_reply(direct, proxied, lambda c: c.get_role_names())
    cp.grant_role("e2e_role", "bob", tt.PrincipalType.USER, "admin", tt.PrincipalType.USER, False)
    roles = same_reply(direct, proxied, lambda c: c.list_roles("bob", tt.PrincipalType.USER))
    assert "e2e_role" in [r.roleName for r in roles]
    obj = tt.HiveObjectRef(tt.HiveObjectType.TABLE, db, "t", None, None)
    grant = tt.HiveObjectPrivilege(obj, "e2e_role", tt.PrincipalType.ROLE,
                                   tt.PrivilegeGrantInfo("SELECT", 0, "admin", tt.PrincipalType.USER, False))
    assert cp.grant_privileges(tt.PrivilegeBag([grant]))
    privs = same_reply(direct, proxied,
                       lambda c: c.list_privileges("e2e_role", tt.PrincipalType.ROLE, obj))
    assert [p.grantInfo.privilege for p in privs] == ["SELECT"]
    ps = same_reply(direct, proxied, lambda c: c.get_privilege_set(obj, "bob", []))
    assert "e2e_role" in ps.rolePrivileges
    assert cp.revoke_privileges(tt.PrivilegeBag([grant]))
    assert cp.revoke_role("e2e_role", "bob", tt.PrincipalType.USER)
    assert cp.drop_role("e2e_role")
    # Errors come back identical too (a NoSuchObjectException).
    for c in (direct[0], proxied[0]):
        with pytest.raises(tt.NoSuchObjectException):
            c.get_table(db, "missing")
    cp.drop_table(db, "t", True)
    cp.drop_database(db, True, True)
    assert db not in same_reply(direct, proxied, lambda c: c.get_all_databases())
    proxied[1].close()
    direct[1].close()
    # (i) The whole conversation crossed hms-guard unchanged, both ways.
    assert bytes(relay.to_upstream) == bytes(proxied[1].written)
    assert bytes(relay.from_upstream) == bytes(proxied[1].read_bytes)
    assert len(relay.to_upstream) > 2000
    assert 'method="get_table",decision="pass"' in guard.metrics()


def raw_call(port, name, seqid=5):
    """A call with an empty args struct over a raw socket; returns the raw reply."""
    name_b = name.encode()
    msg = b"\x80\x01\x00\x01" + len(name_b).to_bytes(4, "big") + name_b + seqid.to_bytes(4, "big") + b"\x00"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(msg)
        out = b""
        while True:
            b = s.recv(65536)
            if not b:
                break
            out += b
            # TApplicationException reply ends with the struct's STOP after the i32 type field.
            if out.endswith(b"\x00") and len(out) > 20:
                s.settimeout(0.5)
                try:
                    more = s.recv(65536)
                except socket.timeout:
                    break
                if not more:
                    break
                out += more
        return out


def test_unknown_method_passes_through(metastore, passthrough_guard):
    direct = raw_call(metastore.port, "no_such_method_xyz")
    proxied = raw_call(passthrough_guard.port, "no_such_method_xyz")
    assert direct[:4] == b"\x80\x01\x00\x03", "the metastore answers with an EXCEPTION message"
    assert b"no_such_method_xyz" in direct
    assert proxied == direct
    assert 'method="other"' in passthrough_guard.metrics()
