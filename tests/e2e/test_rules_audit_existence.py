"""The audit says what the metastore answered, and no reply tells a hidden object from a missing
one: both against the real metastore, written as an attacker would (hmsclient's generated
client, the reply's raw bytes recorded off the socket).

- Audit outcomes: calls hms-guard allows but the metastore refuses (a create_table of a table
  that exists, a drop of a partition that does not) are audited with `upstream_outcome`
  `exception` and the exception's type in `upstream_exception`; a call the metastore carries out
  is `ok`, a denied one `not_sent`.
- Existence: a caller who holds nothing asks, method by method, about an existing table in an
  existing database (hidden from them), a missing table in that database, and the same table
  name in a database that does not exist. The three replies must be byte-identical once the
  names the caller typed are swapped; the metastore's state is checked after the refused calls.
"""
import json
import time

import pytest
from hmsclient.genthrift.hive_metastore import ThriftHiveMetastore as T
from hmsclient.genthrift.hive_metastore import ttypes as tt
from thrift.protocol import TBinaryProtocol
from thrift.transport import TSocket, TTransport

import hms

DB = "hx_db_a"        # exists; the stranger holds nothing in it
GHOST = "hx_db_b"     # never exists (same length as DB: the replies' length prefixes agree)
TBL = "tbl_a"         # exists in DB, partitioned by ds, one partition ds=1
MISSING = "tbl_b"     # never exists
OTHER_DB = "hx_db_c"  # where the stranger holds something (a grant elsewhere changes nothing)
STRANGER = "stranger"


class RecordingSocket(TSocket.TSocket):
    """A TSocket that keeps every byte it reads: the raw reply of the last call."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.got = bytearray()

    def read(self, sz):
        b = super().read(sz)
        self.got += b
        return b


def session(port, user):
    sock = RecordingSocket("127.0.0.1", port)
    sock.setTimeout(30000)
    t = TTransport.TBufferedTransport(sock)
    t.open()
    c = T.Client(TBinaryProtocol.TBinaryProtocol(t))
    c.set_ugi(user, [])
    sock.got.clear()
    return c, sock, t


def raw_reply(port, user, method, args):
    """The bytes of the reply to one call (a fresh connection: nothing left from another)."""
    c, sock, t = session(port, user)
    try:
        getattr(c, method)(*args)
    except Exception:  # noqa: BLE001 — only the bytes matter here
        pass
    finally:
        t.close()
    return bytes(sock.got)


def connect(port, user):
    return session(port, user)[0]


def new_table(db, name):
    return hms.external_table(db, name, f"s3a://datalake/hx/{db}/{name}", partitioned=True)


def partition(db, name, ds="1"):
    t = new_table(db, name)
    sd = t.sd
    sd.location = f"{sd.location}/ds={ds}"
    return tt.Partition(values=[ds], dbName=db, tableName=name, sd=sd, parameters={})


@pytest.fixture(scope="module")
def audit_path(lab):
    return lab / "audit-rules-existence.jsonl"


@pytest.fixture(scope="module")
def guard(lab, metastore, audit_path):
    g = hms.Guard(lab, metastore.port, name="guard-audit-existence",
                  extra=('[authz]\nmode = "enforce"\ncache_ttl_ms = 60000\n\n'
                         f'[audit]\nsink = "file"\npath = "{audit_path}"\n\n'
                         '[storage]\nenabled = false  # GRANTs only here\n'))
    g.start()
    admin = connect(g.port, "admin")
    for db in (DB, OTHER_DB):
        admin.create_database(tt.Database(name=db, locationUri=f"file://{lab}/{db}.db",
                                          parameters={}))
    admin.create_table(new_table(DB, TBL))
    admin.add_partition(partition(DB, TBL))
    admin.create_table(new_table(OTHER_DB, TBL))
    hms.grant(admin, tt.HiveObjectRef(tt.HiveObjectType.TABLE, OTHER_DB, TBL, None, None),
              STRANGER, "SELECT")
    yield g
    g.stop()


def audit_lines(path, pred, timeout=5):
    deadline = time.monotonic() + timeout
    while True:
        lines = [json.loads(ln) for ln in path.read_text().splitlines()] if path.exists() else []
        hits = [e for e in lines if pred(e)]
        if hits or time.monotonic() > deadline:
            return hits
        time.sleep(0.1)


# ---------------------------------------------------------------------------------------------
# audit outcomes


def test_metastore_refusals_are_audited_as_exceptions(guard, audit_path, metastore):
    admin = connect(guard.port, "admin")
    with pytest.raises(tt.AlreadyExistsException):
        admin.create_table(new_table(DB, TBL))
    with pytest.raises(tt.NoSuchObjectException):
        admin.drop_partition(DB, TBL, ["404"], False)
    with pytest.raises(tt.NoSuchObjectException):
        admin.get_table(DB, MISSING)
    assert admin.get_table(DB, TBL).tableName == TBL
    # The metastore's state: the table as it was, its one partition still there.
    direct = connect(metastore.port, "admin")
    assert direct.get_partition_names(DB, TBL, -1) == ["ds=1"]

    def last(method, **kw):
        hits = audit_lines(audit_path, lambda e: e["user"] == "admin" and e["method"] == method
                           and all(e.get(k) == v for k, v in kw.items()))
        assert hits, f"no audit line for {method} {kw}"
        return hits[-1]

    e = last("create_table")
    assert e["decision"] == "allow", e
    assert (e["upstream_outcome"], e["upstream_exception"]) == ("exception", "AlreadyExistsException"), e
    e = last("drop_partition")
    assert (e["upstream_outcome"], e["upstream_exception"]) == ("exception", "NoSuchObjectException"), e
    e = last("get_table", table=MISSING)
    assert (e["upstream_outcome"], e["upstream_exception"]) == ("exception", "NoSuchObjectException"), e
    e = last("get_table", table=TBL)
    assert (e["upstream_outcome"], e["upstream_exception"]) == ("ok", None), e
    # A denied call never reached the metastore.
    stranger = connect(guard.port, STRANGER)
    with pytest.raises(tt.MetaException):
        stranger.drop_table(DB, TBL, False)
    e = audit_lines(audit_path, lambda e: e["user"] == STRANGER and e["method"] == "drop_table")[-1]
    assert (e["decision"], e["upstream_outcome"], e["upstream_exception"]) == ("deny", "not_sent", None), e
    assert direct.get_table(DB, TBL).tableName == TBL


# ---------------------------------------------------------------------------------------------
# existence


def table_ref(db, t):
    return tt.HiveObjectRef(tt.HiveObjectType.TABLE, db, t, None, None)


def stats_req(db, t):
    return tt.PartitionsStatsRequest(dbName=db, tblName=t, colNames=["id"], partNames=["ds=1"])


READS = {  # method -> args for (database, table)
    "get_table": lambda d, t: (d, t),
    "get_table_req": lambda d, t: (tt.GetTableRequest(dbName=d, tblName=t),),
    "get_fields": lambda d, t: (d, t),
    "get_fields_with_environment_context": lambda d, t: (d, t, None),
    "get_schema": lambda d, t: (d, t),
    "get_schema_with_environment_context": lambda d, t: (d, t, None),
    "get_partitions": lambda d, t: (d, t, -1),
    "get_partition_names": lambda d, t: (d, t, -1),
    "get_partition": lambda d, t: (d, t, ["1"]),
    "get_partition_by_name": lambda d, t: (d, t, "ds=1"),
    "get_partitions_by_names": lambda d, t: (d, t, ["ds=1"]),
    "get_partitions_by_filter": lambda d, t: (d, t, 'ds = "1"', -1),
    "get_num_partitions_by_filter": lambda d, t: (d, t, 'ds = "1"'),
    "get_part_specs_by_filter": lambda d, t: (d, t, 'ds = "1"', -1),
    "get_partitions_ps": lambda d, t: (d, t, ["1"], -1),
    "get_partition_names_ps": lambda d, t: (d, t, ["1"], -1),
    "get_partitions_with_auth": lambda d, t: (d, t, -1, STRANGER, []),
    "get_partition_with_auth": lambda d, t: (d, t, ["1"], STRANGER, []),
    "get_partitions_ps_with_auth": lambda d, t: (d, t, ["1"], -1, STRANGER, []),
    "get_partitions_pspec": lambda d, t: (d, t, -1),
    "get_table_column_statistics": lambda d, t: (d, t, "id"),
    "get_partition_column_statistics": lambda d, t: (d, t, "ds=1", "id"),
    "get_table_statistics_req": lambda d, t: (tt.TableStatsRequest(dbName=d, tblName=t, colNames=["id"]),),
    "get_partitions_statistics_req": lambda d, t: (stats_req(d, t),),
    "get_aggr_stats_for": lambda d, t: (stats_req(d, t),),
    "get_primary_keys": lambda d, t: (tt.PrimaryKeysRequest(db_name=d, tbl_name=t),),
    "get_foreign_keys": lambda d, t: (tt.ForeignKeysRequest(None, None, d, t),),
    "get_indexes": lambda d, t: (d, t, -1),
    "get_index_names": lambda d, t: (d, t, -1),
    "get_index_by_name": lambda d, t: (d, t, "ix"),
    "isPartitionMarkedForEvent": lambda d, t: (d, t, {"ds": "1"}, 1),
    "get_table_objects_by_name": lambda d, t: (d, [t]),
    "get_table_objects_by_name_req": lambda d, t: (tt.GetTablesRequest(dbName=d, tblNames=[t]),),
    "get_tables": lambda d, t: (d, "*"),
    "get_tables_by_type": lambda d, t: (d, "*", "EXTERNAL_TABLE"),
    "get_all_tables": lambda d, t: (d,),
    "get_table_names_by_filter": lambda d, t: (d, 'hive_filter_field_owner__ = "admin"', -1),
    "get_table_meta": lambda d, t: (d, t, []),
    "get_database": lambda d, t: (d,),
    "get_databases": lambda d, t: (d,),
    # Reading one's own grants is allowed: the metastore answers, for any object named.
    "get_privilege_set": lambda d, t: (table_ref(d, t), STRANGER, []),
    "list_privileges": lambda d, t: (STRANGER, tt.PrincipalType.USER, table_ref(d, t)),
}

WRITES = {  # refused to a stranger whatever exists: the refusal must not tell either
    "drop_table": lambda d, t: (d, t, False),
    "create_table": lambda d, t: (new_table(d, t),),
    "alter_table": lambda d, t: (d, t, new_table(d, t + "x")),
    "add_partition": lambda d, t: (partition(d, t, "2"),),
    "append_partition": lambda d, t: (d, t, ["3"]),
    "drop_partition": lambda d, t: (d, t, ["1"], False),
    "drop_partition_by_name": lambda d, t: (d, t, "ds=1", False),
    "alter_partition": lambda d, t: (d, t, partition(d, t)),
    "rename_partition": lambda d, t: (d, t, ["1"], partition(d, t, "4")),
    "delete_table_column_statistics": lambda d, t: (d, t, "id"),
    "update_table_column_statistics": lambda d, t: (tt.ColumnStatistics(
        tt.ColumnStatisticsDesc(True, d, t), [tt.ColumnStatisticsObj(
            "id", "int", tt.ColumnStatisticsData(longStats=tt.LongColumnStatsData(
                numNulls=0, numDVs=1)))]),),
    "drop_database": lambda d, t: (d, False, False),
    "alter_database": lambda d, t: (d, tt.Database(name=d, parameters={"x": "y"})),
    "create_database": lambda d, t: (tt.Database(name=d, parameters={}),),
    "drop_table_with_environment_context": lambda d, t: (d, t, False, None),
    "alter_table_with_environment_context": lambda d, t: (d, t, new_table(d, t), None),
    "alter_table_with_cascade": lambda d, t: (d, t, new_table(d, t + "x"), True),
    "add_partitions": lambda d, t: ([partition(d, t, "5")],),
    "drop_partitions_req": lambda d, t: (tt.DropPartitionsRequest(
        dbName=d, tblName=t, parts=tt.RequestPartsSpec(names=["ds=1"])),),
    "append_partition_by_name": lambda d, t: (d, t, "ds=6"),
    "alter_partitions": lambda d, t: (d, t, [partition(d, t)]),
    "exchange_partition": lambda d, t: ({"ds": "1"}, d, t, OTHER_DB, TBL),
    "markPartitionForEvent": lambda d, t: (d, t, {"ds": "1"}, 1),
    "delete_partition_column_statistics": lambda d, t: (d, t, "ds=1", "id"),
    "lock": lambda d, t: (tt.LockRequest(component=[tt.LockComponent(
        type=tt.LockType.SHARED_READ, level=tt.LockLevel.TABLE, dbname=d, tablename=t)],
        user=STRANGER, hostname="h"),),
    "grant_privileges": lambda d, t: (tt.PrivilegeBag([tt.HiveObjectPrivilege(
        table_ref(d, t), STRANGER, tt.PrincipalType.USER,
        tt.PrivilegeGrantInfo("SELECT", 0, STRANGER, tt.PrincipalType.USER, False))]),),
    "revoke_privileges": lambda d, t: (tt.PrivilegeBag([tt.HiveObjectPrivilege(
        table_ref(d, t), "admin", tt.PrincipalType.USER,
        tt.PrivilegeGrantInfo("SELECT", 0, "admin", tt.PrincipalType.USER, False))]),),
}


def as_hidden(reply):
    """The reply with the names the caller typed for the missing objects swapped back."""
    return reply.replace(GHOST.encode(), DB.encode()).replace(MISSING.encode(), TBL.encode())


def metastore_state(metastore):
    direct = connect(metastore.port, "admin")
    dbs = sorted(d for d in direct.get_all_databases() if d.startswith("hx_"))
    t = direct.get_table(DB, TBL)
    return (dbs, direct.get_all_tables(DB), direct.get_partition_names(DB, TBL, -1),
            t.sd.location, t.owner, sorted(t.parameters.items()))


@pytest.mark.parametrize("method", sorted(READS) + sorted(WRITES))
def test_no_existence_oracle(guard, metastore, method):
    args = {**READS, **WRITES}[method]
    before = metastore_state(metastore)
    hidden = raw_reply(guard.port, STRANGER, method, args(DB, TBL))
    assert hidden, f"{method}: no reply"
    for db, t in ((DB, MISSING), (GHOST, TBL), (GHOST, MISSING)):
        other = raw_reply(guard.port, STRANGER, method, args(db, t))
        assert as_hidden(other) == hidden, (
            f"{method}({db}, {t}) answers otherwise than for the hidden {DB}.{TBL}:\n"
            f"  hidden:  {hidden!r}\n  missing: {other!r}")
    assert metastore_state(metastore) == before
