"""Transactions and locks through an enforcing hms-guard, against the real metastore with its
transaction tables: a user commits, aborts, heartbeats and unlocks only what they opened or
took; the metastore's own state (open transactions, held locks) is checked directly."""
import json
import time

import pytest
from hmsclient.genthrift.hive_metastore import ttypes as tt
from thrift.Thrift import TApplicationException

import hms
from hms import connect

DB = "txn_db"


@pytest.fixture(scope="module")
def tguard(lab, metastore):
    audit = lab / "audit-txn.jsonl"
    g = hms.Guard(lab, metastore.port, name="guard-txn", metastore_version="2.3",
                  extra=(f'[authz]\nmode = "enforce"\n\n[audit]\nsink = "file"\npath = "{audit}"\n\n'
                         '[storage]\nenabled = false\n'))
    g.start()
    g.audit = audit
    admin = connect(g.port, "admin")
    admin.create_database(tt.Database(name=DB, locationUri=f"file://{lab}/{DB}.db", parameters={}))
    sd = tt.StorageDescriptor(
        cols=[tt.FieldSchema("id", "int", "")], location=f"file://{lab}/{DB}.db/events",
        inputFormat="org.apache.hadoop.mapred.TextInputFormat",
        outputFormat="org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat",
        serdeInfo=tt.SerDeInfo(None, "org.apache.hadoop.hive.serde2.lazy.LazySimpleSerDe", {}),
        bucketCols=[], sortCols=[], parameters={})
    admin.create_table(tt.Table(tableName="events", dbName=DB, owner="admin", sd=sd,
                                partitionKeys=[tt.FieldSchema("ds", "string", "")],
                                parameters={}, tableType="EXTERNAL_TABLE"))
    obj = tt.HiveObjectRef(tt.HiveObjectType.TABLE, DB, "events", None, None)
    assert admin.grant_privileges(tt.PrivilegeBag([tt.HiveObjectPrivilege(
        obj, "mary", tt.PrincipalType.USER,
        tt.PrivilegeGrantInfo(p, 0, "admin", tt.PrincipalType.USER, False))
        for p in ("SELECT", "INSERT")]))
    yield g
    g.stop()


def open_txn(c, user):
    return c.open_txns(tt.OpenTxnRequest(1, user, "host")).txn_ids[0]


def open_txns(port):
    with hms.hms_client(port) as c:
        return {t.id: (t.user, t.state) for t in c.get_open_txns_info().open_txns}


def lock_ids(port):
    with hms.hms_client(port) as c:
        return {(lk.lockid, lk.user) for lk in c.show_locks(tt.ShowLocksRequest()).locks or []}


def denied(fn, *args):
    """The call is answered with hms-guard's denial (a MetaException where the method declares
    one, else a TApplicationException); returns the message."""
    with pytest.raises((tt.MetaException, TApplicationException)) as e:
        fn(*args)
    msg = str(e.value.message if hasattr(e.value, "message") else e.value)
    assert "hms-guard" in msg and "permission denied" in msg, msg
    return msg


def db_lock(user, txnid=None):
    comp = tt.LockComponent(tt.LockType.SHARED_READ, tt.LockLevel.DB, DB)
    return tt.LockRequest([comp], txnid, user, "host")


def test_transactions_are_their_openers_alone(tguard, metastore):
    mary, john = connect(tguard.port, "mary"), connect(tguard.port, "john")
    t_mary, t_john = open_txn(mary, "mary"), open_txn(john, "john")
    # Opened in another user's name: taken in the caller's (the user field is rewritten).
    t_named = mary.open_txns(tt.OpenTxnRequest(1, "john", "host")).txn_ids[0]
    assert open_txns(metastore.port)[t_named][0] == "mary"
    mary.abort_txn(tt.AbortTxnRequest(t_named))
    state = open_txns(metastore.port)
    assert state[t_mary][0] == "mary" and state[t_john][0] == "john"

    # Another user's transaction: commit, abort, heartbeat, batch abort, range heartbeat.
    msg = denied(mary.commit_txn, tt.CommitTxnRequest(t_john))
    assert f"transaction {t_john} belongs to another user" in msg and "mary" in msg, msg
    denied(mary.abort_txn, tt.AbortTxnRequest(t_john))
    denied(mary.heartbeat, tt.HeartbeatRequest(None, t_john))
    denied(mary.abort_txns, tt.AbortTxnsRequest([t_mary, t_john]))
    denied(mary.heartbeat_txn_range, tt.HeartbeatTxnRangeRequest(min(t_mary, t_john),
                                                                  max(t_mary, t_john)))
    # A transaction that does not exist yet (above the high-water mark).
    assert "does not exist" in denied(mary.commit_txn, tt.CommitTxnRequest(t_john + 1000))
    assert open_txns(metastore.port) == state, "nothing changed in the metastore"

    # One's own: heartbeat, commit; a finished one is answered by the metastore itself.
    mary.heartbeat(tt.HeartbeatRequest(None, t_mary))
    mary.commit_txn(tt.CommitTxnRequest(t_mary))
    assert t_mary not in open_txns(metastore.port)
    with pytest.raises(tt.NoSuchTxnException):
        mary.commit_txn(tt.CommitTxnRequest(t_mary))
    # The admin may abort anyone's.
    connect(tguard.port, "admin").abort_txn(tt.AbortTxnRequest(t_john))
    assert open_txns(metastore.port)[t_john][1] == tt.TxnState.ABORTED

    # The audit lines are written by their own thread: wait for them.
    deadline = time.monotonic() + 10
    while True:
        lines = [json.loads(ln) for ln in tguard.audit.read_text().splitlines()]
        holders = [ln for ln in lines if ln.get("reason") == "not_holder"]
        if len(holders) >= 6 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert len(holders) >= 6, holders
    assert all(ln["user"] == "mary" and ln["decision"] == "deny" for ln in holders), holders


def test_locks_are_their_takers_alone(tguard, metastore):
    mary, john = connect(tguard.port, "mary"), connect(tguard.port, "john")
    lk = mary.lock(db_lock("mary")).lockid
    assert (lk, "mary") in lock_ids(metastore.port)
    # A lock requested in another user's name (pyiceberg writes the OS user): the caller's.
    named = mary.lock(db_lock("root")).lockid
    assert (named, "mary") in lock_ids(metastore.port)
    mary.unlock(tt.UnlockRequest(named))
    assert f"lock {lk} belongs to another user" in denied(john.unlock, tt.UnlockRequest(lk))
    denied(john.check_lock, tt.CheckLockRequest(lk))
    denied(john.heartbeat, tt.HeartbeatRequest(lk, None))
    assert (lk, "mary") in lock_ids(metastore.port), "the lock is still held"
    # A lock inside another user's transaction.
    t_john = open_txn(john, "john")
    denied(mary.lock, db_lock("mary", t_john))
    assert not any(u == "mary" and i != lk for i, u in lock_ids(metastore.port))
    # A lock that is not held.
    assert "is not held" in denied(mary.unlock, tt.UnlockRequest(lk + 1000))
    # One's own.
    assert mary.check_lock(tt.CheckLockRequest(lk)).state == tt.LockState.ACQUIRED
    mary.heartbeat(tt.HeartbeatRequest(lk, None))
    mary.unlock(tt.UnlockRequest(lk))
    assert lk not in {i for i, _ in lock_ids(metastore.port)}
    john.abort_txn(tt.AbortTxnRequest(t_john))


def test_anonymous_callers_touch_no_transaction(tguard, metastore):
    john = connect(tguard.port, "john")
    t = open_txn(john, "john")
    from thrift.protocol import TBinaryProtocol
    from thrift.transport import TSocket, TTransport
    from hmsclient.genthrift.hive_metastore import ThriftHiveMetastore as T
    tr = TTransport.TBufferedTransport(TSocket.TSocket("127.0.0.1", tguard.port))
    tr.open()
    anon = T.Client(TBinaryProtocol.TBinaryProtocol(tr))
    msg = denied(anon.abort_txn, tt.AbortTxnRequest(t))
    # The denial names what to configure.
    assert "set_ugi" in msg and "HADOOP_USER_NAME" in msg and "pinned" in msg, msg
    tr.close()
    assert open_txns(metastore.port)[t][1] == tt.TxnState.OPEN
    john.abort_txn(tt.AbortTxnRequest(t))


def dynamic(txnid):
    return tt.AddDynamicPartitions(txnid, DB, "events", ["ds=1"], tt.DataOperationType.INSERT)


def test_dynamic_partitions_read_as_the_configured_metastore(tguard, metastore, lab):
    """add_dynamic_partitions reused field ids between Hive 2.3 and 3.1: configured for the
    2.3 metastore, hms-guard reads it as 2.3 does and decides INSERT on the table; configured
    for every version at once, no reading fits all and the call is refused in the protocol."""
    mary, john = connect(tguard.port, "mary"), connect(tguard.port, "john")
    t = open_txn(mary, "mary")
    write = tt.LockComponent(tt.LockType.SHARED_WRITE, tt.LockLevel.TABLE, DB, "events")
    assert mary.lock(tt.LockRequest([write], t, "mary", "host")).state == tt.LockState.ACQUIRED
    mary.add_dynamic_partitions(dynamic(t))
    mary.commit_txn(tt.CommitTxnRequest(t))
    # john holds nothing on the table.
    tj = open_txn(john, "john")
    msg = denied(john.add_dynamic_partitions, dynamic(tj))
    assert "INSERT" in msg and "txn_db.events" in msg, msg
    john.abort_txn(tt.AbortTxnRequest(tj))

    g = hms.Guard(lab, metastore.port, name="guard-txn-any",
                  extra='[authz]\nmode = "enforce"\n\n[storage]\nenabled = false\n')
    g.start()
    try:
        c = connect(g.port, "admin")
        ta = open_txn(c, "admin")
        with pytest.raises(TApplicationException) as e:
            c.add_dynamic_partitions(dynamic(ta))
        assert e.value.type == TApplicationException.PROTOCOL_ERROR
        assert "required field" in e.value.message and "Hive 3.1" in e.value.message, e.value
        connect(g.port, "admin").abort_txn(tt.AbortTxnRequest(ta))
    finally:
        g.stop()
