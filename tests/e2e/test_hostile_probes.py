"""Hostile probes: an unprivileged user (who holds SELECT on one table) calls every mutating
method of hms-guard's method table through a raw Thrift client, with arguments aimed at real
objects of the metastore. Every call must be answered by hms-guard with a denial in the
protocol (a denial on a connection that stays usable, or — for a call the schema-exact reader
refuses — a PROTOCOL_ERROR and a closed connection), and the metastore's state must be
unchanged.

Arguments are built from the Thrift specs of PyPI hmsclient (Hive 2.x methods; struct fields
filled recursively, names pointing at the probe database and table); methods hmsclient does not
know (Hive 3/4) are built from the metastore IDL in idl/thrift/ (every field filled, newest
version's types, names aimed the same way); hms-guard must deny or refuse them without
forwarding."""
import re
import sys
from pathlib import Path

import pytest
from hmsclient.genthrift.hive_metastore import ThriftHiveMetastore as T
from hmsclient.genthrift.hive_metastore import ttypes as tt
from thrift.protocol import TBinaryProtocol
from thrift.Thrift import TApplicationException, TMessageType, TType
from thrift.transport import TSocket, TTransport

import hms
from hms import connect

REPO = Path(__file__).resolve().parents[2]
DB, TABLE, ROLE, USER = "probe_db", "probe_t", "probe_role", "eve"
# Rules whose calls change nothing or are allowed by design (docs/AUTHORIZATION.md): reads,
# listings, reading one's own grants, session calls, set_ugi, and transaction housekeeping
# (allowed to identified callers acting as themselves; locks are probed: they need privileges).
NOT_MUTATING = {"Harmless", "SetUgi", "ReadTable", "Listing", "ReadGrants", "Txn"}


def method_table():
    """(name, rule, oneway) for every entry of src/wire/router/methods.rs."""
    text = (REPO / "src/wire/router/methods.rs").read_text()
    rows = re.findall(r'Method \{ name: "([^"]+)", versions: [^,]+, class: Class::\w+, '
                      r'oneway: (true|false), rule: Rule::(\w+)', text)
    assert len(rows) > 300, "method table not parsed"
    # One row per method (a method with per-version entries: its first).
    seen = {}
    for n, o, r in rows:
        seen.setdefault(n, (n, r, o == "true"))
    return list(seen.values())


def mutating_methods():
    return [n for n, r, oneway in method_table() if r not in NOT_MUTATING and not oneway]


def idl_schema():
    """(structs, args) of the metastore IDL in idl/thrift/, merged over versions."""
    sys.path.insert(0, str(REPO / "idl"))
    import gen_schema
    _versions, _enums, structs, args, _results, _methods = gen_schema.load_all()
    return structs, args


def name_for(field):
    f = field.lower()
    if "db" in f or "database" in f or f in ("catname",):
        return DB if "cat" not in f else "hive"
    if "tbl" in f or "table" in f:
        return TABLE
    if "role" in f:
        return ROLE
    if "principal" in f or "user" in f or "owner" in f or "grantor" in f:
        return USER
    if "part" in f and "name" in f:
        return "ds=1"
    if "location" in f or "uri" in f:
        return "s3a://datalake/datawarehouse/probe_elsewhere"
    if "priv" in f:
        return "ALL"
    return TABLE


def fill(ttype, spec, field, depth=0):
    """A value of Thrift type `ttype` (hmsclient spec) aimed at the probe objects."""
    if ttype == TType.STRING:
        return name_for(field).encode() if spec == "BINARY" else name_for(field)
    if ttype == TType.BOOL:
        return True
    if ttype in (TType.I16, TType.I32, TType.BYTE):
        return 3 if "type" in field.lower() else 1
    if ttype == TType.I64:
        return 1
    if ttype == TType.DOUBLE:
        return 1.0
    if ttype == TType.STRUCT:
        cls = spec[0]
        obj = cls()
        if depth < 6:
            for f in cls.thrift_spec or ():
                if f is None:
                    continue
                _, ft, fname, fspec, _ = f
                setattr(obj, fname, fill(ft, fspec, fname, depth + 1))
        return obj
    if ttype in (TType.LIST, TType.SET):
        et, espec = spec[0], spec[1]
        v = [fill(et, espec, field, depth + 1)] if depth < 6 else []
        return v  # a set is written by iterating: a list serves
    if ttype == TType.MAP:
        kt, kspec, vt, vspec = spec[0], spec[1], spec[2], spec[3]
        k = fill(kt, kspec, field, depth + 1)
        if depth >= 6 or not isinstance(k, (str, int, float, bool)):
            return {}  # keys of container or struct type: an empty map
        return {k: fill(vt, vspec, field, depth + 1)}
    return None


def read_any(p, ttype, strings):
    """Reads one value of `ttype`, collecting every string (exception messages)."""
    if ttype == TType.STRUCT:
        p.readStructBegin()
        while True:
            _, ft, _ = p.readFieldBegin()
            if ft == TType.STOP:
                break
            read_any(p, ft, strings)
            p.readFieldEnd()
        p.readStructEnd()
    elif ttype == TType.STRING:
        strings.append(p.readBinary().decode("utf-8", "replace"))
    elif ttype in (TType.LIST, TType.SET):
        et, n = p.readListBegin() if ttype == TType.LIST else p.readSetBegin()
        for _ in range(n):
            read_any(p, et, strings)
    elif ttype == TType.MAP:
        kt, vt, n = p.readMapBegin()
        for _ in range(n):
            read_any(p, kt, strings)
            read_any(p, vt, strings)
    else:
        p.skip(ttype)


INTS = {"byte": (TType.BYTE, "writeByte"), "i16": (TType.I16, "writeI16"),
        "i32": (TType.I32, "writeI32"), "i64": (TType.I64, "writeI64")}
TTYPE = {"bool": TType.BOOL, "double": TType.DOUBLE, "string": TType.STRING,
         "binary": TType.STRING, **{k: t for k, (t, _) in INTS.items()}}


def ttype_of(ty):
    k = ty[0]
    if k == "base":
        return TTYPE[ty[1]]
    return {"enum": TType.I32, "struct": TType.STRUCT, "list": TType.LIST, "set": TType.SET,
            "map": TType.MAP}[k]


def write_idl_value(p, structs, ty, name, depth=0):
    """A value of IDL type `ty` (idl/gen_schema.py's form), names aimed at the probe objects,
    every field of a struct filled (newest version's type), containers with one element."""
    k = ty[0]
    if k == "base":
        b = ty[1]
        if b in ("string", "binary"):
            p.writeString(name_for(name))
        elif b == "bool":
            p.writeBool(True)
        elif b == "double":
            p.writeDouble(1.0)
        else:
            getattr(p, INTS[b][1])(3 if "type" in name.lower() else 1)
    elif k == "enum":
        p.writeI32(1)
    elif k == "struct":
        p.writeStructBegin(ty[1])
        if depth < 6:
            for fid, f in sorted(structs[ty[1]].fields.items()):
                if structs[ty[1]].kind == "union" and fid != min(structs[ty[1]].fields):
                    continue
                write_idl_field(p, structs, fid, f.name, f.types[-1], depth + 1)
        p.writeFieldStop()
        p.writeStructEnd()
    elif k in ("list", "set"):
        n = 1 if depth < 6 else 0
        (p.writeListBegin if k == "list" else p.writeSetBegin)(ttype_of(ty[1]), n)
        for _ in range(n):
            write_idl_value(p, structs, ty[1], name, depth + 1)
        (p.writeListEnd if k == "list" else p.writeSetEnd)()
    else:
        simple = ty[1][0] in ("base", "enum") and depth < 6
        p.writeMapBegin(ttype_of(ty[1]), ttype_of(ty[2]), 1 if simple else 0)
        if simple:
            write_idl_value(p, structs, ty[1], name, depth + 1)
            write_idl_value(p, structs, ty[2], name, depth + 1)
        p.writeMapEnd()


def write_idl_field(p, structs, fid, name, ty, depth=0):
    p.writeFieldBegin(name, ttype_of(ty), fid)
    write_idl_value(p, structs, ty, name, depth)
    p.writeFieldEnd()


class Raw:
    """A raw binary-protocol connection as USER."""

    def __init__(self, port):
        self.sock = TSocket.TSocket("127.0.0.1", port)
        self.sock.setTimeout(30_000)
        self.t = TTransport.TBufferedTransport(self.sock)
        self.t.open()
        self.p = TBinaryProtocol.TBinaryProtocol(self.t)
        self.seq = 0
        c = T.Client(self.p)
        c.set_ugi(USER, [])

    def call(self, method, schema):
        self.seq += 1
        p = self.p
        p.writeMessageBegin(method, TMessageType.CALL, self.seq)
        args_cls = getattr(T, f"{method}_args", None)
        if args_cls is not None:
            args = args_cls()
            for f in args_cls.thrift_spec or ():
                if f is not None:
                    setattr(args, f[2], fill(f[1], f[3], f[2]))
            args.write(p)
        else:
            structs, args = schema
            p.writeStructBegin(f"{method}_args")
            for fid, f in sorted(args[method].fields.items()):
                write_idl_field(p, structs, fid, f.name, f.types[-1])
            p.writeFieldStop()
            p.writeStructEnd()
        p.writeMessageEnd()
        self.t.flush()
        name, mtype, seq = p.readMessageBegin()
        assert (name, seq) == (method, self.seq), (method, name, seq)
        if mtype == TMessageType.EXCEPTION:
            x = TApplicationException()
            x.read(p)
            p.readMessageEnd()
            return [x.message or ""]
        strings = []
        read_any(p, TType.STRUCT, strings)
        p.readMessageEnd()
        return strings

    def close(self):
        self.t.close()


def snapshot(port):
    """Everything an attacker could change, read directly from the metastore."""
    s = {}
    with hms.hms_client(port) as c:
        for db in sorted(c.get_all_databases()):
            s[f"db {db}"] = repr(c.get_database(db))
            for t in sorted(c.get_all_tables(db)):
                tab = c.get_table(db, t)
                tab.parameters = {k: v for k, v in (tab.parameters or {}).items()
                                  if k != "transient_lastDdlTime"}
                s[f"table {db}.{t}"] = repr(tab)
                s[f"partitions {db}.{t}"] = repr(sorted(c.get_partition_names(db, t, -1)))
            s[f"functions {db}"] = repr(sorted(c.get_functions(db, "*")))
        roles = sorted(c.get_role_names())
        s["roles"] = repr(roles)
        principals = [(r, tt.PrincipalType.ROLE) for r in roles] + [
            (u, tt.PrincipalType.USER) for u in (USER, "admin", "hms-guard")]
        for name, kind in principals:
            s[f"grants {name}"] = repr(sorted(repr(p) for p in c.list_privileges(
                name, kind, tt.HiveObjectRef(None, None, None, None, None)) or []))
            s[f"roles of {name}"] = repr(sorted(r.roleName for r in c.list_roles(name, kind)))
        s["tokens"] = repr(sorted(c.get_all_token_identifiers()))
        s["master keys"] = repr(sorted(c.get_master_keys()))
    return s


@pytest.fixture(scope="module")
def probe_guard(lab, metastore):
    g = hms.Guard(lab, metastore.port, name="guard-probe",
                  extra='[authz]\nmode = "enforce"\n\n[storage]\nenabled = false\n')
    g.start()
    admin = connect(g.port, "admin")
    admin.create_database(tt.Database(name=DB, locationUri=f"file://{lab}/{DB}.db", parameters={}))
    sd = tt.StorageDescriptor(
        cols=[tt.FieldSchema("id", "int", "")], location=f"file://{lab}/{DB}.db/{TABLE}",
        inputFormat="org.apache.hadoop.mapred.TextInputFormat",
        outputFormat="org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat",
        serdeInfo=tt.SerDeInfo(None, "org.apache.hadoop.hive.serde2.lazy.LazySimpleSerDe", {}),
        bucketCols=[], sortCols=[], parameters={})
    admin.create_table(tt.Table(tableName=TABLE, dbName=DB, owner="admin", sd=sd,
                                partitionKeys=[tt.FieldSchema("ds", "string", "")],
                                parameters={}, tableType="EXTERNAL_TABLE"))
    admin.add_partition(tt.Partition(values=["1"], dbName=DB, tableName=TABLE, sd=sd,
                                     parameters={}))
    admin.create_role(tt.Role(roleName=ROLE, ownerName="admin"))
    obj = tt.HiveObjectRef(tt.HiveObjectType.TABLE, DB, TABLE, None, None)
    assert admin.grant_privileges(tt.PrivilegeBag([tt.HiveObjectPrivilege(
        obj, USER, tt.PrincipalType.USER,
        tt.PrivilegeGrantInfo("SELECT", 0, "admin", tt.PrincipalType.USER, False))]))
    yield g
    g.stop()


def test_every_mutating_method_is_refused_and_changes_nothing(probe_guard, metastore):
    methods = mutating_methods()
    assert len(methods) > 150, len(methods)
    schema = idl_schema()
    before = snapshot(metastore.port)
    m0 = probe_guard.metrics()
    raw = Raw(probe_guard.port)
    not_refused = {}
    try:
        for m in methods:
            try:
                msgs = raw.call(m, schema)
            except (TTransport.TTransportException, OSError, EOFError) as e:
                not_refused[m] = f"connection failed: {e!r}"
                raw.close()
                raw = Raw(probe_guard.port)
                continue
            text = " | ".join(msgs)
            if "hms-guard: refused" in text:
                # Read schema-exact and refused (e.g. a required field the probe left empty):
                # answered in the protocol, then the connection is closed.
                raw.close()
                raw = Raw(probe_guard.port)
                continue
            if "hms-guard" not in text or not ("permission denied" in text
                                               or "could not decide" in text):
                not_refused[m] = text[:300]
    finally:
        raw.close()
    assert not not_refused, f"{len(not_refused)} methods not refused by hms-guard: {not_refused}"
    after = snapshot(metastore.port)
    changed = {k: (before.get(k), after.get(k)) for k in set(before) | set(after)
               if before.get(k) != after.get(k)}
    assert not changed, f"metastore state changed: {changed}"
    # Nothing reached the metastore: every probe was denied by the proxy.
    denied = sum(v for lb, v in hms.metric_series(probe_guard.metrics(), "hms_guard_requests_total",
                                                    decision="deny"))
    denied0 = sum(v for lb, v in hms.metric_series(m0, "hms_guard_requests_total",
                                                     decision="deny"))
    refused = sum(v for lb, v in hms.metric_series(probe_guard.metrics(),
                                                     "hms_guard_rejected_requests_total"))
    refused0 = sum(v for lb, v in hms.metric_series(m0, "hms_guard_rejected_requests_total"))
    assert (denied - denied0) + (refused - refused0) == len(methods)
    # The user still reads what was granted (the connection and the grants are intact).
    c = connect(probe_guard.port, USER)
    assert c.get_table(DB, TABLE).tableName == TABLE
