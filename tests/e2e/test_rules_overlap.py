"""Locations are exclusive (docs/STORAGE.md "Locations are exclusive"), against the real
metastore, with hms-guard's storage checks answered by moto (tests/lab/moto_lab.py): alice and
mallory both have the account default role, which reaches s3://datalake/defloc/, so the storage
check passes for either of them anywhere under it. alice's tables live there; mallory holds
CREATE on the database and nothing on alice's tables.

For each way of reaching another table's files — a table at the same location, at its parent,
at a child, a partition outside its table there, a table moved there (set location), a managed
table renamed onto it, a table created at a default place another table claims — mallory is
refused (the metastore unchanged, alice's files in place), and allowed once she holds the
privilege the rule names: SELECT for an external table (`storage.read_only_external = true`:
external tables only read), DROP (or ownership) for a managed one, whose drop deletes files.
"""
import json

import pytest
from hmsclient.genthrift.hive_metastore import ttypes as tt

import hms
import moto_lab
from hms import connect

DB = "ov_db"
ROOT = "s3a://datalake/defloc"
SHARED = f"{ROOT}/ov_shared"
DB_DIR = f"{ROOT}/{DB}.db"


@pytest.fixture(scope="module")
def guard(lab, metastore):
    moto = moto_lab.MotoLab()
    facts = moto.start()
    audit = lab / "audit-overlap.jsonl"
    g = hms.Guard(lab, metastore.port, name="guard-rules-overlap",
                  env=moto_lab.guard_env(facts), metastore_version="2.3",
                  extra='[authz]\nmode = "enforce"\n\n'
                        f'[audit]\nsink = "file"\npath = "{audit}"\n\n'
                        '[index]\nenabled = true\nrescan_ms = 3600000\n'
                        f'shared_prefixes = ["{ROOT}/ov_staging"]\n\n'
                        + moto_lab.storage_toml(facts, read_only_external=True))
    try:
        g.start()
        yield g, facts, audit
    finally:
        g.stop()
        moto.stop()


def put_file(lab, key):
    """A file of alice's at s3a://datalake/KEY in the lab's emulated bucket (what the
    metastore and engines read)."""
    local = hms.bucket_dir(lab) / key
    local.parent.mkdir(parents=True, exist_ok=True)
    local.write_text("alice's secret\n")
    return local


def table_names(metastore):
    with hms.hms_client(metastore.port) as direct:
        return sorted(direct.get_all_tables(DB))


def direct_table(metastore, name):
    with hms.hms_client(metastore.port) as direct:
        return direct.get_table(DB, name)


def managed(name, location, owner):
    t = hms.external_table(DB, name, location, owner=owner, external=False)
    t.tableType = "MANAGED_TABLE"
    return t


def obj(name):
    return tt.HiveObjectRef(tt.HiveObjectType.TABLE, DB, name, None, None)


def partition(table, values, location):
    sd = hms.external_table(DB, table, location).sd
    return tt.Partition(values=values, dbName=DB, tableName=table, sd=sd, parameters={})


@pytest.fixture(scope="module")
def world(guard, lab, metastore):
    g, facts, _ = guard
    admin = connect(g.port, "admin")
    admin.create_database(tt.Database(name=DB, locationUri=DB_DIR, parameters={}))
    dbo = tt.HiveObjectRef(tt.HiveObjectType.DATABASE, DB, None, None, None)
    for user in ("alice", "mallory"):
        hms.grant(admin, dbo, user, "CREATE")
    alice = connect(g.port, "alice")
    # An external table with files; a partitioned table with one partition outside it; two
    # tables located where a default place will be asked for.
    alice.create_table(hms.external_table(DB, "a_ext", f"{SHARED}/a", owner="alice"))
    put_file(lab, "defloc/ov_shared/a/000000_0")
    alice.create_table(hms.external_table(DB, "a_part", f"{DB_DIR}/a_part", owner="alice",
                                          partitioned=True))
    alice.add_partition(partition("a_part", ["1"], f"{SHARED}/apart/ds=1"))
    alice.create_table(hms.external_table(DB, "a_claim", f"{DB_DIR}/claimed", owner="alice"))
    alice.create_table(managed("a_target", f"{DB_DIR}/target", "alice"))
    # mallory's own tables, where nobody else is.
    mallory = connect(g.port, "mallory")
    mallory.create_table(hms.external_table(DB, "m_ext", f"{ROOT}/ov_mallory/m_ext",
                                            owner="mallory"))
    mallory.create_table(hms.external_table(DB, "m_part", f"{ROOT}/ov_mallory/m_part",
                                            owner="mallory", partitioned=True))
    mallory.create_table(managed("m_managed", None, "mallory"))
    return g


# What mallory tries: (form, call on her client, the other table it needs, its privilege)
def attempts():
    return [
        ("same location",
         lambda m: m.create_table(hms.external_table(DB, "m_same", f"{SHARED}/a", "mallory")),
         "a_ext", "SELECT"),
        ("its parent",
         lambda m: m.create_table(hms.external_table(DB, "m_parent", f"{SHARED}/", "mallory")),
         "a_ext", "SELECT"),
        ("a child",
         lambda m: m.create_table(hms.external_table(DB, "m_child", f"{SHARED}/a/sub",
                                                     "mallory")),
         "a_ext", "SELECT"),
        ("another table's partition outside its table",
         lambda m: m.create_table(hms.external_table(DB, "m_onpart", f"{SHARED}/apart/ds=1",
                                                     "mallory")),
         "a_part", "SELECT"),
        ("a partition outside its table",
         lambda m: m.add_partition(partition("m_part", ["9"], f"{SHARED}/a/ds=9")),
         "a_ext", "SELECT"),
        ("set location",
         lambda m: m.alter_table(DB, "m_ext", _moved(m, "m_ext", f"{SHARED}/a")),
         "a_ext", "SELECT"),
        ("a default place another table claims",
         lambda m: m.create_table(managed("claimed", None, "mallory")),
         "a_claim", "DROP"),
        ("a rename of a managed table",
         lambda m: m.alter_table(DB, "m_managed", _renamed(m, "m_managed", "target")),
         "a_target", "DROP"),
    ]


def _moved(client, name, location):
    t = client.get_table(DB, name)
    t.sd.location = location
    return t


def _renamed(client, name, new):
    t = client.get_table(DB, name)
    t.tableName = new
    return t


def state(metastore):
    """What a refusal must leave unchanged: the tables, their locations, m_part's partitions."""
    with hms.hms_client(metastore.port) as direct:
        names = sorted(direct.get_all_tables(DB))
        locations = {n: direct.get_table(DB, n).sd.location for n in names}
        parts = sorted(direct.get_partition_names(DB, "m_part", -1))
    return names, locations, parts


def test_every_overlap_is_refused_without_the_other_tables_privilege(world, guard, metastore,
                                                                      lab):
    g, _, audit = guard
    mallory = connect(g.port, "mallory")
    secret = hms.bucket_dir(lab) / "defloc/ov_shared/a/000000_0"
    for form, call, other, privilege in attempts():
        before = state(metastore)
        msg = hms.denied(lambda: call(mallory), "user mallory", f"table {DB}.{other}",
                         privilege)
        assert "a location another table claims needs that table's privileges" in msg, \
            (form, msg)
        assert state(metastore) == before, form
        assert secret.read_text() == "alice's secret\n", form
    lines = [json.loads(x) for x in audit.read_text().splitlines() if x.strip()]
    overlaps = [e for e in lines if e["reason"] == "overlap" and e["user"] == "mallory"]
    assert len(overlaps) == len(attempts()), overlaps
    m = g.metrics()
    assert sum(v for _, v in hms.metric_series(m, "hms_guard_decisions_total",
                                               reason="overlap")) >= len(attempts())
    assert [v for _, v in hms.metric_series(m, "hms_guard_index_state", state="ready")] == [1]


def test_the_owner_and_the_shared_area_are_no_overlap(world, guard, metastore):
    g, _, _ = guard
    alice = connect(g.port, "alice")
    # alice's own table: hers to put another table over.
    alice.create_table(hms.external_table(DB, "a_again", f"{SHARED}/a", owner="alice"))
    # An alter that keeps its own location, a partition inside its own table.
    t = alice.get_table(DB, "a_ext")
    t.parameters["comment"] = "kept"
    alice.alter_table(DB, "a_ext", t)
    alice.add_partition(partition("a_part", ["2"], f"{DB_DIR}/a_part/ds=2"))
    # The shared area (index.shared_prefixes): overlap is expected there.
    alice.create_table(hms.external_table(DB, "a_stage", f"{ROOT}/ov_staging/x", owner="alice"))
    mallory = connect(g.port, "mallory")
    mallory.create_table(hms.external_table(DB, "m_stage", f"{ROOT}/ov_staging/x",
                                            owner="mallory"))
    assert {"a_again", "a_stage", "m_stage"} <= set(table_names(metastore))
    # Dropped through the proxy: the index forgets it (mallory's grants below are on a_ext).
    alice.drop_table(DB, "a_again", False)


def test_with_the_privilege_each_overlap_is_allowed(world, guard, metastore):
    g, _, _ = guard
    admin = connect(g.port, "admin")
    mallory = connect(g.port, "mallory")
    for other, privilege in sorted({(o, p) for _, _, o, p in attempts()}):
        hms.grant(admin, obj(other), "mallory", privilege)
    # A table mallory made meanwhile is learned from the call (no rescan): alice may not
    # now put a table over it.
    for form, call, other, privilege in attempts():
        if form == "a rename of a managed table":
            # hms-guard lets it through; the metastore itself refuses to move a directory
            # onto one that exists (alice's table's).
            with pytest.raises(tt.InvalidOperationException) as e:
                call(mallory)
            assert "already exists" in e.value.message, e.value.message
            continue
        call(mallory)
    names = table_names(metastore)
    for t in ("m_same", "m_parent", "m_child", "m_onpart", "claimed"):
        assert t in names, (t, names)
    assert direct_table(metastore, "m_ext").sd.location.rstrip("/") == f"{SHARED}/a"
    alice = connect(g.port, "alice")
    hms.denied(lambda: alice.create_table(
        hms.external_table(DB, "a_over", f"{SHARED}/a/sub", owner="alice")),
        "user alice", f"table {DB}.m_child")


def test_the_index_is_built_from_the_metastore_at_start(world, guard, lab, metastore):
    """A second hms-guard started now reads every table above from the metastore: its
    first location call waits for the build, then is judged against it."""
    _, facts, _ = guard
    g2 = hms.Guard(lab, metastore.port, name="guard-rules-overlap-2",
                   env=moto_lab.guard_env(facts), metastore_version="2.3",
                   extra='[authz]\nmode = "enforce"\n\n[index]\nenabled = true\n\n'
                         + moto_lab.storage_toml(facts, read_only_external=True))
    g2.start()
    try:
        status, body = g2.http("/readyz")
        assert status == 200 and "location index:" in body, body
        carl_db = tt.HiveObjectRef(tt.HiveObjectType.DATABASE, DB, None, None, None)
        hms.grant(connect(g2.port, "admin"), carl_db, "carl", "CREATE")
        carl = connect(g2.port, "carl")
        # The same place as a_part's partition outside its table (read with
        # get_partition_names + get_partitions_by_names), reported first (at, then above).
        hms.denied(lambda: carl.create_table(
            hms.external_table(DB, "c_over", f"{SHARED}/apart/ds=1", owner="carl")),
            "user carl", f"partition [1] of table {DB}.a_part")
        m = g2.metrics()
        assert [v for _, v in hms.metric_series(m, "hms_guard_index_state", state="ready")] \
            == [1]
        tables = [v for _, v in hms.metric_series(m, "hms_guard_index_build_tables")]
        assert tables and tables[0] >= 10, tables
    finally:
        g2.stop()


def test_a_drop_that_deletes_files_under_it_needs_the_other_tables_privilege(world, guard,
                                                                            metastore, lab):
    """mallory's managed table holds, under its location, a table of alice's (put there by the
    administrator): dropping it with its data would delete alice's files."""
    g, _, _ = guard
    mallory = connect(g.port, "mallory")
    mallory.create_table(managed("m_big", f"{ROOT}/ov_big", "mallory"))
    admin = connect(g.port, "admin")
    admin.create_table(hms.external_table(DB, "a_under", f"{ROOT}/ov_big/alice", owner="alice"))
    secret = put_file(lab, "defloc/ov_big/alice/000000_0")
    hms.denied(lambda: mallory.drop_table(DB, "m_big", True), "user mallory",
               f"ownership of table {DB}.a_under or DROP")
    assert "m_big" in table_names(metastore) and secret.exists()
    # alice's own drop of her external table deletes nothing and needs nothing more.
    connect(g.port, "alice").drop_table(DB, "a_under", False)
    mallory.drop_table(DB, "m_big", True)
    assert "m_big" not in table_names(metastore)
