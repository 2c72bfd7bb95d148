"""A differential fuzzer against the real metastore: real calls of the decided methods (written by
hmsclient's generated code) are mutated along the classes an attacker uses to make hms-guard and
the metastore read one message differently — repeated field ids, wire-type and element-type
swaps at any depth, bool values, message types, truncation, trailing bytes, pipelined calls —
and sent through hms-guard as an unprivileged user, each on its own connection followed by a
sentinel call.

What must hold:
- the metastore's state (databases, tables, partitions, grants, roles, functions) is unchanged;
- every reply the client receives answers a call it sent (method name and sequence id);
- hms-guard never saw a metastore reply that answers another call
  (`hms_guard_mismatched_replies_total` stays 0: the metastore read what hms-guard read).

Seeded; `HMS_GUARD_SMUGGLE_CASES` (default 400) sets the number of mutated calls."""
import os
import random
import socket
import struct

import pytest
from hmsclient.genthrift.hive_metastore import ThriftHiveMetastore as T
from hmsclient.genthrift.hive_metastore import ttypes as tt
from thrift.protocol import TBinaryProtocol
from thrift.transport import TTransport

import hms
from test_grants_hmsclient import connect
from test_hostile_probes import snapshot

DB, OPEN, SECRET, USER = "smug_db", "open_t", "secret_t", "eve"
CASES = int(os.environ.get("HMS_GUARD_SMUGGLE_CASES", "400"))


def sd(name):
    return tt.StorageDescriptor(
        cols=[tt.FieldSchema("id", "int", "")], location=f"file:///tmp/{DB}/{name}",
        inputFormat="org.apache.hadoop.mapred.TextInputFormat",
        outputFormat="org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat",
        serdeInfo=tt.SerDeInfo(None, "org.apache.hadoop.hive.serde2.lazy.LazySimpleSerDe", {}),
        bucketCols=[], sortCols=[], parameters={})


def table(name, owner="admin"):
    return tt.Table(tableName=name, dbName=DB, owner=owner, sd=sd(name),
                    partitionKeys=[tt.FieldSchema("ds", "string", "")], parameters={},
                    tableType="EXTERNAL_TABLE")


def recorded(method, *args):
    """The bytes hmsclient's generated client writes for one call (sequence id 100)."""
    buf = TTransport.TMemoryBuffer()
    c = T.Client(TBinaryProtocol.TBinaryProtocol(buf))
    c._seqid = 100
    getattr(c, f"send_{method}")(*args)
    return method, buf.getvalue()


def calls():
    secret_obj = tt.HiveObjectRef(tt.HiveObjectType.TABLE, DB, SECRET, None, None)
    bag = tt.PrivilegeBag([tt.HiveObjectPrivilege(
        secret_obj, USER, tt.PrincipalType.USER,
        tt.PrivilegeGrantInfo("ALL", 0, USER, tt.PrincipalType.USER, False))])
    moved = table(SECRET, owner=USER)
    moved.sd.location = "file:///tmp/elsewhere"
    return [
        recorded("get_table", DB, OPEN),
        recorded("get_table", DB, SECRET),
        recorded("get_all_tables", DB),
        recorded("get_partition_names", DB, SECRET, -1),
        recorded("drop_table", DB, SECRET, True),
        recorded("alter_table", DB, SECRET, moved),
        recorded("create_table", table("planted", owner=USER)),
        recorded("add_partition", tt.Partition(values=["9"], dbName=DB, tableName=SECRET,
                                               sd=sd(SECRET), parameters={})),
        recorded("grant_privileges", bag),
        recorded("list_privileges", "admin", tt.PrincipalType.USER, secret_obj),
        recorded("drop_database", DB, True, True),
        recorded("abort_txns", tt.AbortTxnsRequest(txn_ids=[1, 2])),
    ]


TYPES = [1, 2, 3, 4, 6, 8, 10, 11, 12, 13, 14, 15, 16]


def mutate(rng, name, msg, all_calls):
    """One mutation of a recorded call (header: 4 + 4 + len(name) + 4 bytes)."""
    body = len(name) + 12
    m = bytearray(msg)
    kind = rng.randrange(9)
    if kind == 0:  # message type
        m[3] = rng.choice([2, 3, 4])
    elif kind == 1:  # a type byte somewhere in the args
        i = rng.randrange(body, len(m))
        m[i] = rng.choice(TYPES)
    elif kind == 2:  # a byte range of the args repeated (repeats fields, containers, ids)
        i = rng.randrange(body, len(m) - 1)
        j = rng.randrange(i + 1, min(len(m), i + 64))
        m[j:j] = m[i:j]
    elif kind == 3:  # a whole other call's args spliced in before the STOP
        other = rng.choice(all_calls)[1]
        o_name_len = struct.unpack(">i", other[4:8])[0]
        m[-1:-1] = other[12 + o_name_len:-1]
    elif kind == 4:  # a bool-looking byte
        i = rng.randrange(body, len(m))
        m[i] = rng.choice([2, 7, 255])
    elif kind == 5:  # truncated
        del m[rng.randrange(body, len(m)):]
    elif kind == 6:  # trailing bytes: another call pipelined in the same write
        m += rng.choice(all_calls)[1]
    elif kind == 7:  # a list/map size changed
        i = rng.randrange(body, len(m) - 4)
        m[i:i + 4] = struct.pack(">i", rng.choice([0, 1, 2, 3, 0x7fffffff, -1]))
    else:  # an element type of a container header
        i = rng.randrange(body, len(m))
        m[i] = rng.choice([8, 10, 11, 12])
    return bytes(m)


def sentinel():
    buf = TTransport.TMemoryBuffer()
    c = T.Client(TBinaryProtocol.TBinaryProtocol(buf))
    c._seqid = 200
    c.send_getVersion()
    return buf.getvalue()


def set_ugi_bytes():
    buf = TTransport.TMemoryBuffer()
    c = T.Client(TBinaryProtocol.TBinaryProtocol(buf))
    c.send_set_ugi(USER, [])
    return buf.getvalue()


def replies(sock, deadline_s=1.0):
    """Every message the proxy sends until it closes the connection or falls silent (a
    truncated call leaves the proxy waiting for the rest: silence ends the read):
    [(name, type, seqid)]."""
    sock.settimeout(deadline_s)
    data = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
            if b"getVersion" in data:
                # The sentinel's reply: give a smuggled extra reply a moment to follow.
                sock.settimeout(0.3)
    except OSError:  # a timeout, or a reset: the proxy closed with our bytes unread
        pass
    return messages(data)


@pytest.fixture(scope="module")
def smug_guard(lab, metastore):
    g = hms.Guard(lab, metastore.port, name="guard-smuggle",
                  extra='[authz]\nmode = "enforce"\n\n[storage]\nenabled = false\n')
    g.start()
    admin = connect(g.port, "admin")
    admin.create_database(tt.Database(name=DB, locationUri=f"file://{lab}/{DB}.db", parameters={}))
    for t in (OPEN, SECRET):
        admin.create_table(table(t))
        admin.add_partition(tt.Partition(values=["1"], dbName=DB, tableName=t, sd=sd(t),
                                         parameters={}))
    obj = tt.HiveObjectRef(tt.HiveObjectType.TABLE, DB, OPEN, None, None)
    assert admin.grant_privileges(tt.PrivilegeBag([tt.HiveObjectPrivilege(
        obj, USER, tt.PrincipalType.USER,
        tt.PrivilegeGrantInfo("SELECT", 0, "admin", tt.PrincipalType.USER, False))]))
    yield g
    g.stop()


def test_mutated_calls_change_nothing_and_get_only_their_own_answers(smug_guard, metastore):
    rng = random.Random(20261204)
    recorded_calls = calls()
    before = snapshot(metastore.port)
    ugi, tail = set_ugi_bytes(), sentinel()
    stray = []
    outcomes = {}
    for case in range(CASES):
        name, msg = recorded_calls[case % len(recorded_calls)]
        mutated = mutate(rng, name, msg, recorded_calls)
        with socket.create_connection(("127.0.0.1", smug_guard.port), timeout=10) as s:
            s.sendall(ugi)
            got = replies_until(s, 1)
            assert got and got[0][0] == "set_ugi", got
            try:
                s.sendall(mutated + tail)
            except OSError:  # closed while we wrote: what it answered is still to be read
                pass
            answers = replies(s)
        sent = {(name, 100), ("getVersion", 200)}
        if mutated[len(name) + 12:] != msg[len(name) + 12:] and len(mutated) > len(msg):
            # A pipelined second call may be answered too (its own seqid 100 and name).
            sent |= {(n, 100) for n, _ in recorded_calls}
        for a_name, _, a_seq in answers:
            if (a_name, a_seq) not in sent:
                stray.append((case, name, a_name, a_seq))
        outcomes[len(answers)] = outcomes.get(len(answers), 0) + 1
    assert not stray, f"replies that answer no call the client sent: {stray[:10]}"
    after = snapshot(metastore.port)
    changed = {k: (before.get(k), after.get(k)) for k in set(before) | set(after)
               if before.get(k) != after.get(k)}
    assert not changed, f"metastore state changed: {changed}"
    metrics = smug_guard.metrics()
    mismatched = sum(v for _, v in hms.metric_series(metrics, "hms_guard_mismatched_replies_total"))
    assert mismatched == 0, "the metastore answered a call hms-guard did not read"
    refused = sum(v for _, v in hms.metric_series(metrics, "hms_guard_rejected_requests_total"))
    assert refused > CASES // 4, f"only {refused} of {CASES} mutated calls refused: {outcomes}"
    # The user still works normally afterwards.
    c = connect(smug_guard.port, USER)
    assert c.get_table(DB, OPEN).tableName == OPEN


def replies_until(sock, n, timeout=10.0):
    """Reads until `n` whole messages arrived."""
    sock.settimeout(timeout)
    data = b""
    out = []
    while len(out) < n:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
        out = messages(data)
    return out


def messages(data):
    """The whole messages at the start of `data`: [(name, type, seqid)] (a cut one ends it)."""
    out = []
    t = TBinaryProtocol.TBinaryProtocol(TTransport.TMemoryBuffer(data))
    while t.trans._buffer.tell() < len(data):
        try:
            name, mtype, seq = t.readMessageBegin()
            t.skip(12)
            t.readMessageEnd()
        except Exception:  # a cut message (the connection was closed): stop reading
            break
        out.append((name, mtype, seq))
    return out
