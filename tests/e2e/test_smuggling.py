"""A differential fuzzer against the real metastore: real calls of the decided methods (written by
hmsclient's generated code) are mutated along the classes an attacker uses to make hms-guard and
the metastore read one message differently — repeated field ids, wire-type and element-type
swaps at any depth, bool values, message types, truncation, trailing bytes, pipelined calls —
and sent through hms-guard as an unprivileged user, each on its own connection followed by a
sentinel call.

What must hold:
- the metastore's state (databases, tables, partitions, grants, roles, functions) is unchanged;
- no reply's result reveals the table the user holds nothing on;
- every reply the client receives answers a call it sent (method name and sequence id);
- hms-guard never saw a metastore reply that answers another call
  (`hms_guard_mismatched_replies_total` stays 0: the metastore read what hms-guard read).

Mutations are made on the structure of the recorded call (every field, container and bool it
holds, at every depth), alternately through a proxy configured for the metastore's version
(2.3) and one configured for every version at once. Seeded; `HMS_GUARD_SMUGGLE_CASES`
(default 400) sets the number of mutated calls."""
import os
import random
import socket
import struct

import pytest
from hmsclient.genthrift.hive_metastore import ThriftHiveMetastore as T
from hmsclient.genthrift.hive_metastore import ttypes as tt
from thrift.protocol import TBinaryProtocol
from thrift.Thrift import TMessageType, TType
from thrift.transport import TTransport

import hms
from hms import connect
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
    return hms.external_table(DB, name, f"file:///tmp/{DB}/{name}", owner=owner,
                              partitioned=True, external=False)


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
FIXED = {2: 1, 3: 1, 4: 8, 6: 2, 8: 4, 10: 8}


class Sites:
    """Where things sit in a well-formed binary-protocol message: every field (header start,
    value start, value end, wire type, depth), every container header (position of its element
    type bytes, count position) and every bool value, at every depth."""

    def __init__(self, msg):
        self.msg = msg
        self.fields, self.containers, self.bools = [], [], []
        name_len = struct.unpack(">i", msg[4:8])[0]
        self.args = 12 + name_len
        end = self.struct(self.args, 0)
        assert end == len(msg), (end, len(msg))

    def value(self, t, pos, depth):
        m = self.msg
        if t in FIXED:
            if t == 2:
                self.bools.append(pos)
            return pos + FIXED[t]
        if t == 11:
            return pos + 4 + struct.unpack(">i", m[pos:pos + 4])[0]
        if t == 12:
            return self.struct(pos, depth + 1)
        if t in (14, 15):
            et, n = m[pos], struct.unpack(">i", m[pos + 1:pos + 5])[0]
            self.containers.append((pos, 1, pos + 1))
            pos += 5
            for _ in range(n):
                pos = self.value(et, pos, depth + 1)
            return pos
        if t == 13:
            kt, vt, n = m[pos], m[pos + 1], struct.unpack(">i", m[pos + 2:pos + 6])[0]
            self.containers.append((pos, 2, pos + 2))
            pos += 6
            for _ in range(n):
                pos = self.value(kt, pos, depth + 1)
                pos = self.value(vt, pos, depth + 1)
            return pos
        raise AssertionError(f"wire type {t}")

    def struct(self, pos, depth):
        m = self.msg
        while m[pos] != 0:
            t = m[pos]
            start = pos
            pos = self.value(t, pos + 3, depth)
            self.fields.append((start, start + 3, pos, t, depth))
        return pos + 1


def mutate(rng, name, msg, all_calls):
    """One mutation of a recorded call, chosen among the classes of parser differentials, at a
    random depth. Returns (class, bytes)."""
    sites = Sites(msg)
    m = bytearray(msg)
    kind = rng.choice(["message_type", "duplicate_field", "duplicate_field", "field_type",
                       "field_type", "element_type", "bool", "truncated", "pipelined",
                       "count", "spliced_args", "type_byte"])
    if kind == "message_type":
        m[3] = rng.choice([2, 3, 4])
    elif kind == "duplicate_field":
        # The same field id again, with another value of its type: a donor field of that type
        # from any recorded call (e.g. a table name the user holds nothing on).
        start, vstart, end, t, _ = rng.choice(sites.fields)
        donors = [(c, f) for _, c in all_calls for f in Sites(c).fields if f[3] == t]
        c, (_, dv, de, _, _) = rng.choice(donors)
        where = rng.choice([end, start])  # after it (last wins in Java) or before it
        m[where:where] = m[start:vstart] + c[dv:de]
    elif kind == "field_type":
        start = rng.choice(sites.fields)[0]
        m[start] = rng.choice([t for t in TYPES if t != m[start]])
    elif kind == "element_type" and sites.containers:
        pos, n, _ = rng.choice(sites.containers)
        i = pos + rng.randrange(n)
        m[i] = rng.choice([t for t in TYPES if t != m[i]])
    elif kind == "bool" and sites.bools:
        m[rng.choice(sites.bools)] = rng.choice([2, 7, 255])
    elif kind == "truncated":
        cuts = [f[rng.randrange(3)] for f in sites.fields] + [rng.randrange(sites.args, len(m))]
        del m[rng.choice(cuts):]
    elif kind == "pipelined":  # another call in the same write
        m += rng.choice(all_calls)[1]
    elif kind == "count" and sites.containers:
        _, _, cpos = rng.choice(sites.containers)
        m[cpos:cpos + 4] = struct.pack(">i", rng.choice([0, 1, 2, 3, 0x7fffffff, -1]))
    elif kind == "spliced_args":  # a whole other call's args before the STOP
        other = rng.choice(all_calls)[1]
        o_name_len = struct.unpack(">i", other[4:8])[0]
        m[-1:-1] = other[12 + o_name_len:-1]
    else:  # a type-looking byte anywhere in the args
        kind = "type_byte"
        m[rng.randrange(sites.args, len(m))] = rng.choice(TYPES)
    return kind, bytes(m)


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
def smug_guards(lab, metastore):
    """Two enforcing proxies in front of the (Hive 2.3) metastore: one configured for it
    (`metastore_version = "2.3"`), one for every version at once (the default)."""
    extra = '[authz]\nmode = "enforce"\n\n[storage]\nenabled = false\n'
    guards = [hms.Guard(lab, metastore.port, name="guard-smuggle-2.3", extra=extra,
                        metastore_version="2.3"),
              hms.Guard(lab, metastore.port, name="guard-smuggle-any", extra=extra)]
    for g in guards:
        g.start()
    admin = connect(guards[0].port, "admin")
    admin.create_database(tt.Database(name=DB, locationUri=f"file://{lab}/{DB}.db", parameters={}))
    for t in (OPEN, SECRET):
        admin.create_table(table(t))
        # The secret table's partition value names it: any reply revealing it says "secret".
        value = "1" if t == OPEN else "secret1"
        admin.add_partition(tt.Partition(values=[value], dbName=DB, tableName=t, sd=sd(t),
                                         parameters={}))
    obj = tt.HiveObjectRef(tt.HiveObjectType.TABLE, DB, OPEN, None, None)
    assert admin.grant_privileges(tt.PrivilegeBag([tt.HiveObjectPrivilege(
        obj, USER, tt.PrincipalType.USER,
        tt.PrivilegeGrantInfo("SELECT", 0, "admin", tt.PrincipalType.USER, False))]))
    yield guards
    for g in guards:
        g.stop()


def test_mutated_calls_change_nothing_and_get_only_their_own_answers(smug_guards, metastore):
    rng = random.Random(20261204)
    recorded_calls = calls()
    before = snapshot(metastore.port)
    ugi, tail = set_ugi_bytes(), sentinel()
    stray = []
    outcomes = {}
    kinds = {}
    for case in range(CASES):
        name, msg = recorded_calls[case % len(recorded_calls)]
        kind, mutated = mutate(rng, name, msg, recorded_calls)
        kinds[kind] = kinds.get(kind, 0) + 1
        guard = smug_guards[case % 2]
        with socket.create_connection(("127.0.0.1", guard.port), timeout=10) as s:
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
    assert not LEAKS, f"replies that revealed the secret table: {LEAKS[:5]}"
    after = snapshot(metastore.port)
    changed = {k: (before.get(k), after.get(k)) for k in set(before) | set(after)
               if before.get(k) != after.get(k)}
    assert not changed, f"metastore state changed: {changed}"
    mismatched = refused = 0
    for g in smug_guards:
        metrics = g.metrics()
        mismatched += sum(v for _, v in hms.metric_series(
            metrics, "hms_guard_mismatched_replies_total"))
        refused += sum(v for _, v in hms.metric_series(
            metrics, "hms_guard_rejected_requests_total"))
    assert mismatched == 0, "the metastore answered a call hms-guard did not read"
    print(f"{CASES} cases by class: {kinds}; replies per case: {outcomes}; refused: {refused}")
    assert refused > CASES // 3, f"only {refused} of {CASES} mutated calls refused: {outcomes}"
    # The user still works normally afterwards.
    for g in smug_guards:
        c = connect(g.port, USER)
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
    """The whole messages at the start of `data`: [(name, type, seqid)] (a cut one ends it).
    A REPLY whose success value (field 0) mentions the secret table is a leak: recorded in
    LEAKS."""
    out = []
    buf = TTransport.TMemoryBuffer(data)
    t = TBinaryProtocol.TBinaryProtocol(buf)
    while buf._buffer.tell() < len(data):
        try:
            name, mtype, seq = t.readMessageBegin()
            t.readStructBegin()
            while True:
                _, ftype, fid = t.readFieldBegin()
                if ftype == TType.STOP:
                    break
                at = buf._buffer.tell()
                t.skip(ftype)
                if mtype == TMessageType.REPLY and fid == 0 and b"secret" in data[at:buf._buffer.tell()]:
                    LEAKS.append((name, seq, data[at:buf._buffer.tell()][:200]))
            t.readStructEnd()
            t.readMessageEnd()
        except Exception:  # a cut message (the connection was closed): stop reading
            break
        out.append((name, mtype, seq))
    return out


LEAKS = []
