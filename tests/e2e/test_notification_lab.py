"""The lab's notification log: the real Hive Metastore 2.3 with the lab's listener
(tests/lab/notify, `hms.Metastore(..., notifications=True)`) serves its changes through its own
`get_current_notificationEventId` and `get_next_notification`, as a metastore with Hive's
DbNotificationListener does: ids in order, Hive's event type names, JSON messages carrying the
objects (and so their locations), ids kept across a restart, old events purged after their time
to live — a reader asking from an old id then sees a gap (the first event it gets has an id
above asked + 1; the metastore raises nothing).

These metastores are this module's own (their own port and Derby database); the session's
metastore, without the listener, serves as the baseline of the cost measurement.

Cost of the listener (test_create_table_cost: create_table of a one-column external table,
median of 30 calls alternating between a metastore without and one with the listener, Derby,
2 cores under a load average of 12; three runs): 171, 92 and 91 ms without, 148, 66 and
104 ms with. The listener's work (one insert and one sequence update in the
change's transaction, a listing of the table's directory) is below what this lab can measure:
a create_table costs the same, roughly 0.1-0.2 s, with or without it."""
import json
import shutil
import statistics
import time

import pytest
from hmsclient.genthrift.hive_metastore import ttypes as tt

import hms


@pytest.fixture(scope="module")
def notifying(lab):
    """A metastore recording the notification log (default time to live: a day)."""
    m = hms.Metastore(lab, home=lab / "hms-notify", notifications=True)
    try:
        m.start(txn_tables=False)
        yield m
    finally:
        m.stop()


def partition(table, value, location):
    sd = tt.StorageDescriptor(**{**table.sd.__dict__, "location": location})
    return tt.Partition(values=[value], dbName=table.dbName, tableName=table.tableName, sd=sd,
                        parameters={})


def test_the_listener_jar_is_built_once_and_rebuilt_when_its_source_changes(
        tmp_path, monkeypatch):
    src = tmp_path / "notify"
    shutil.copytree(hms.NOTIFY_SRC, src)
    monkeypatch.setattr(hms, "NOTIFY_SRC", src)
    monkeypatch.setenv("HMS_GUARD_CACHE", str(tmp_path / "cache"))
    first = hms.notify_jar()
    assert first.is_file() and first.parent == tmp_path / "cache" / "notify"
    built = first.stat().st_mtime_ns
    assert hms.notify_jar() == first and first.stat().st_mtime_ns == built  # cached
    java = next(src.rglob("NotificationLog.java"))
    java.write_text(java.read_text() + "\n// changed\n")
    second = hms.notify_jar()
    assert second != first and second.is_file()


def test_without_javac_the_lab_fails_with_a_message(tmp_path, monkeypatch):
    monkeypatch.setenv("HMS_GUARD_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "no-jdk"))
    with pytest.raises(RuntimeError, match="javac not found"):
        hms.notify_jar()


def test_changes_are_served_in_order_with_hive_names_and_json_messages(notifying):
    c = hms.connect(notifying.port, "admin")
    base = hms.current_event_id(c)
    started = int(time.time())
    c.create_database(tt.Database("notify_db", "", "s3a://datalake/notify_db", {}))
    t = hms.external_table("notify_db", "t1", "s3a://datalake/notify_db/t1", partitioned=True)
    c.create_table(t)
    c.add_partition(partition(t, "2024", "s3a://datalake/notify_db/t1/ds=2024"))
    moved = c.get_table("notify_db", "t1")
    moved.sd.location = "s3a://datalake/notify_db/t1-moved"
    c.alter_table("notify_db", "t1", moved)
    c.drop_table("notify_db", "t1", False)
    c.drop_database("notify_db", False, False)

    events = hms.next_events(c, base)
    assert [(e.eventType, e.dbName, e.tableName) for e in events] == [
        ("CREATE_DATABASE", "notify_db", None),
        ("CREATE_TABLE", "notify_db", "t1"),
        ("ADD_PARTITION", "notify_db", "t1"),
        ("ALTER_TABLE", "notify_db", "t1"),
        ("DROP_TABLE", "notify_db", "t1"),
        ("DROP_DATABASE", "notify_db", None),
    ]
    assert [e.eventId for e in events] == list(range(base + 1, base + 7))
    assert hms.current_event_id(c) == base + 6
    for e in events:
        assert e.messageFormat == "json-0.2"
        assert started - 5 <= e.eventTime <= time.time() + 5
    msgs = [json.loads(e.message) for e in events]
    assert all(m["db"] == "notify_db" for m in msgs)

    created = hms.thrift_from_json(tt.Table, msgs[1]["tableObjJson"])
    assert created.sd.location == "s3a://datalake/notify_db/t1"
    assert created.tableType == "EXTERNAL_TABLE" and created.partitionKeys[0].name == "ds"
    assert msgs[1]["files"] == []
    parts = [hms.thrift_from_json(tt.Partition, p) for p in msgs[2]["partitionListJson"]]
    assert [(p.values, p.sd.location) for p in parts] == [
        (["2024"], "s3a://datalake/notify_db/t1/ds=2024")]
    assert msgs[2]["partitions"] == [{"ds": "2024"}]
    before = hms.thrift_from_json(tt.Table, msgs[3]["tableObjBeforeJson"])
    after = hms.thrift_from_json(tt.Table, msgs[3]["tableObjAfterJson"])
    assert (before.sd.location, after.sd.location) == (
        "s3a://datalake/notify_db/t1", "s3a://datalake/notify_db/t1-moved")
    assert msgs[4]["table"] == "t1"

    # maxEvents bounds a page; a reader at the newest id gets nothing.
    assert [e.eventId for e in hms.next_events(c, base, 2)] == [base + 1, base + 2]
    assert [e.eventId for e in hms.next_events(c, base + 4, 1)] == [base + 5]
    assert hms.next_events(c, base + 6) == []


def test_functions_and_inserts_are_logged_and_a_failed_change_is_not(notifying):
    c = hms.connect(notifying.port, "admin")
    t = hms.external_table("default", "notify_ins", "s3a://datalake/notify_ins",
                           partitioned=True)
    c.create_table(t)
    base = hms.current_event_id(c)
    with pytest.raises(tt.AlreadyExistsException):
        c.create_table(t)
    assert hms.current_event_id(c) == base  # rolled back with the change
    c.fire_listener_event(tt.FireEventRequest(
        successful=True, dbName="default", tableName="notify_ins", partitionVals=["1"],
        data=tt.FireEventRequestData(insertData=tt.InsertEventRequestData(
            filesAdded=["s3a://datalake/notify_ins/ds=1/part-0"]))))
    c.create_function(tt.Function("notify_fn", "default", "lab.Fn", "admin",
                                  tt.PrincipalType.USER, 0, tt.FunctionType.JAVA, []))
    c.drop_function("default", "notify_fn")
    c.drop_table("default", "notify_ins", False)
    events = hms.next_events(c, base)
    assert [(e.eventId, e.eventType, e.tableName) for e in events] == [
        (base + 1, "INSERT", "notify_ins"), (base + 2, "CREATE_FUNCTION", None),
        (base + 3, "DROP_FUNCTION", None), (base + 4, "DROP_TABLE", "notify_ins")]
    insert = json.loads(events[0].message)
    assert insert["files"] == ["s3a://datalake/notify_ins/ds=1/part-0"]
    assert insert["partKeyVals"] == {"ds": "1"}
    fn = hms.thrift_from_json(tt.Function, json.loads(events[1].message)["functionObjJson"])
    assert (fn.functionName, fn.className) == ("notify_fn", "lab.Fn")
    assert json.loads(events[2].message)["functionName"] == "notify_fn"


def test_ids_keep_increasing_across_a_restart(notifying):
    with hms.hms_client(notifying.port) as c:
        c.create_database(tt.Database("notify_restart", "", "s3a://datalake/notify_restart", {}))
        last = hms.current_event_id(c)
    assert last > 0
    notifying.stop()
    notifying.start(txn_tables=False)
    with hms.hms_client(notifying.port) as c:
        assert hms.current_event_id(c) == last
        assert hms.next_events(c, last - 1)[0].eventType == "CREATE_DATABASE"
        c.drop_database("notify_restart", False, False)
        assert [(e.eventId, e.eventType) for e in hms.next_events(c, last)] == [
            (last + 1, "DROP_DATABASE")]


def test_purged_events_leave_a_gap_that_a_reader_sees(lab):
    m = hms.Metastore(lab, home=lab / "hms-notify-ttl", notifications=True,
                      notification_ttl_s=2, notification_clean_ms=300)
    try:
        m.start(txn_tables=False)
        c = hms.connect(m.port, "admin")
        # 2.3 takes the time to live from its configuration only.
        with pytest.raises(tt.MetaException, match="timetolive"):
            c.setMetaConf("hive.metastore.event.db.listener.timetolive", "1s")
        base = hms.current_event_id(c)
        for i in range(3):
            c.create_database(tt.Database(f"notify_ttl{i}", "", f"s3a://datalake/ttl{i}", {}))
        old = base + 3
        assert [e.eventId for e in hms.next_events(c, base)] == [base + 1, base + 2, old]
        deadline = time.monotonic() + 30
        while hms.next_events(c, base) and time.monotonic() < deadline:
            time.sleep(0.3)
        assert hms.next_events(c, base) == [], "events older than 2 s were not purged in 30 s"
        assert hms.current_event_id(c) == old  # the sequence is not reset
        c.drop_database("notify_ttl0", False, False)
        # A reader that had read up to base + 1 asks for what follows: the metastore answers
        # without error, and the first event's id says that base + 2 and base + 3 are gone.
        got = hms.next_events(c, base + 1)
        assert [(e.eventId, e.eventType) for e in got] == [(old + 1, "DROP_DATABASE")]
        assert got[0].eventId > (base + 1) + 1
    finally:
        m.stop()


def test_create_table_cost(notifying, metastore):
    """The listener's cost on create_table: prints the medians (off, on) of create_table calls
    alternating between the session's metastore (off) and this module's (on), so that the
    machine's load weighs on both alike; asserts one event per created table."""
    n, warmup = 30, 5
    with hms.hms_client(metastore.port) as off_c, hms.hms_client(notifying.port) as on_c:
        base = hms.current_event_id(on_c)
        spent = {"off": [], "on": []}
        for i in range(warmup + n):
            for kind, c in (("off", off_c), ("on", on_c)):
                t = hms.external_table("default", f"cost_{kind}_{i}",
                                       f"s3a://datalake/cost_{kind}_{i}")
                t0 = time.perf_counter()
                c.create_table(t)
                if i >= warmup:
                    spent[kind].append(time.perf_counter() - t0)
        for i in range(warmup + n):
            for kind, c in (("off", off_c), ("on", on_c)):
                c.drop_table("default", f"cost_{kind}_{i}", False)
        kinds = [e.eventType for e in hms.next_events(on_c, base)]
    assert kinds == ["CREATE_TABLE"] * (warmup + n) + ["DROP_TABLE"] * (warmup + n)
    off, on = (statistics.median(spent[k]) * 1000 for k in ("off", "on"))
    print(f"\ncreate_table median over {n}: listener off {off:.1f} ms, on {on:.1f} ms")
