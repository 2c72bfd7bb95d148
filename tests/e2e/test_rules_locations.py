"""Locations decided by the metastore's own rules (docs/SECURITY.md "Locations of every scheme"
and "Default places"), against the real metastore, written as an attacker would write them.

Iceberg commits: a second user holding SELECT and INSERT appends after the owner's appends, on a
`file:` warehouse (the metastore's own, `file:/…/warehouse/DB.db`) and on an `s3a:` one (the
lab's emulated bucket); a user holding SELECT only cannot, and a writer cannot pass off as a
commit what is none (a metadata file outside the table, climbing out of it with `..`, or a table
that stops being an Iceberg table). After every refused call the metastore's table is unchanged.

Default places: with CREATE on a database inside the protected area (s3a://datalake/datawarehouse/,
which the account default role may not write; moto answers the storage checks, the lab's
emulated bucket holds what the metastore sees), a user creating a table with no location, or at
exactly its default place, over files that belong to someone else — another database's table
located under this database's directory; the files an external table left behind when it was
dropped — is refused and the metastore unchanged; a fresh default place still works without the
user's storage role reaching it; a rename into a place in use is refused; in a database whose
place is not S3 the ordinary check decides (`storage.other_schemes`).
"""
import pyarrow as pa
import pytest
from hmsclient.genthrift.hive_metastore import ttypes as tt

import hms
import moto_lab
from hms import connect
from test_pyiceberg import SCHEMA, catalog, rows

GUARD_EXTRA = '[authz]\nmode = "enforce"\n\n[storage]\nenabled = false\n'


@pytest.fixture(scope="module")
def guard(lab, metastore):
    g = hms.Guard(lab, metastore.port, name="guard-rules-locations", metastore_version="2.3",
                  extra=GUARD_EXTRA)
    g.start()
    yield g
    g.stop()


def direct_table(metastore, db, name):
    with hms.hms_client(metastore.port) as direct:
        return direct.get_table(db, name)


def _iceberg_db(guard, db, location):
    """A database (at `location`, or the metastore's default place in its file: warehouse)
    where ana may create tables; returns the metastore's location of it."""
    admin = connect(guard.port, "admin")
    admin.create_database(tt.Database(name=db, locationUri=location, parameters={}))
    hms.grant(admin, tt.HiveObjectRef(tt.HiveObjectType.DATABASE, db, None, None, None),
              "ana", "CREATE")
    return admin.get_database(db).locationUri


@pytest.mark.parametrize("scheme", ["file", "s3a"])
def test_a_writer_commits_after_the_owner_on_every_scheme(guard, metastore, lab, scheme):
    db = f"ice_rules_{scheme}"
    where = None if scheme == "file" else f"s3a://datalake/defloc/{db}.db"
    db_location = _iceberg_db(guard, db, where)
    assert db_location.startswith(f"{scheme}:"), db_location
    ana = catalog(guard.port, "ana", lab)
    t = ana.create_table(f"{db}.events", SCHEMA)
    t.append(rows(0, 3))
    t.append(rows(3, 2))
    table = direct_table(metastore, db, "events")
    assert table.parameters["metadata_location"].startswith(f"{scheme}:"), table.parameters

    admin = connect(guard.port, "admin")
    obj = tt.HiveObjectRef(tt.HiveObjectType.TABLE, db, "events", None, None)
    hms.grant(admin, obj, "bob", "SELECT", "INSERT")
    hms.grant(admin, obj, "carl", "SELECT")

    # bob holds INSERT: his append is a commit (a new metadata file under the table).
    bob = catalog(guard.port, "bob", lab)
    bob.load_table(f"{db}.events").append(rows(100, 1))
    bob.load_table(f"{db}.events").append(rows(101, 1))
    assert len(bob.load_table(f"{db}.events").scan().to_arrow()) == 7
    after_bob = direct_table(metastore, db, "events").parameters["metadata_location"]
    assert after_bob != table.parameters["metadata_location"]

    # carl holds SELECT only: refused, the metastore's pointer unchanged.
    carl = catalog(guard.port, "carl", lab)
    with pytest.raises(Exception) as e:
        carl.load_table(f"{db}.events").append(rows(200, 1))
    text = str(e.value) + str(getattr(e.value, "__cause__", ""))
    assert "hms-guard: permission denied: user carl" in text and "INSERT" in text, text
    assert direct_table(metastore, db, "events").parameters["metadata_location"] == after_bob


@pytest.mark.parametrize("scheme", ["file", "s3a"])
def test_a_writer_cannot_pass_off_a_move_as_a_commit(guard, metastore, lab, scheme):
    """Raw Thrift as bob (SELECT + INSERT): pointers outside the table, climbing out of it, or
    a retyped table are no commit; each is refused and the metastore's table unchanged."""
    db = f"ice_rules_{scheme}"
    bob = connect(guard.port, "bob")
    current = bob.get_table(db, "events")
    table_location = current.sd.location
    meta = current.parameters["metadata_location"]
    name = meta.rsplit("/", 1)[1]
    # The same file spelled another way (file:/x as file:///x, a trailing slash on the
    # table) is still under the table: a commit.
    same = bob.get_table(db, "events")
    if scheme == "file":
        same.parameters["metadata_location"] = meta.replace("file:/", "file:///", 1)
    same.sd.location = table_location + "/"
    bob.alter_table(db, "events", same)
    assert direct_table(metastore, db, "events").parameters["metadata_location"] == \
        same.parameters["metadata_location"]
    before = direct_table(metastore, db, "events")
    for what, change in [
        ("a metadata file outside the table",
         {"metadata_location": f"{table_location.rsplit('/', 1)[0]}/other/metadata/{name}"}),
        ("climbing out of the table",
         {"metadata_location": f"{table_location}/../other/metadata/{name}"}),
        ("a local file under an S3 table" if scheme == "s3a" else "another host's file",
         {"metadata_location": "file:/etc/passwd" if scheme == "s3a"
          else meta.replace("file:/", "file://elsewhere/", 1)}),
        ("no longer an Iceberg table", {"table_type": "HIVE_NATIVE"}),
    ]:
        t = bob.get_table(db, "events")
        t.parameters.update(change)
        with pytest.raises(tt.MetaException) as e:
            bob.alter_table(db, "events", t)
        assert "hms-guard: permission denied: user bob" in e.value.message, (what, e.value)
        now = direct_table(metastore, db, "events")
        assert now.parameters == before.parameters and now.sd.location == before.sd.location, what


# ---------------------------------------------------------------------------------------------
# default places

DP_DB = "dp_db"
DP_DIR = f"datawarehouse/{DP_DB}.db"


@pytest.fixture(scope="module")
def moto_guard(lab, metastore):
    """hms-guard with storage checks against moto; the administrator's role is `etl` (it may
    write the protected area), everyone else has the account default role (defloc/, temp/)."""
    moto = moto_lab.MotoLab()
    facts = moto.start()
    g = hms.Guard(lab, metastore.port, name="guard-rules-default-places",
                  env=moto_lab.guard_env(facts), metastore_version="2.3",
                  extra='[authz]\nmode = "enforce"\n\n'
                        + moto_lab.storage_toml(facts, user_roles={"admin": "etl"}))
    try:
        g.start()
        yield g, facts
    finally:
        g.stop()
        moto.stop()


def put_files(lab, facts, key):
    """Files at s3a://datalake/KEY: in moto (what hms-guard's listing sees) and in the lab's
    emulated bucket (what the metastore and engines read)."""
    import boto3
    s3 = boto3.client("s3", endpoint_url=facts["endpoint"], region_name=facts["region"],
                      aws_access_key_id=facts["compute"]["access_key_id"],
                      aws_secret_access_key=facts["compute"]["secret_access_key"])
    s3.put_object(Bucket="datalake", Key=key, Body=b"secret\n")
    local = hms.bucket_dir(lab) / key
    local.parent.mkdir(parents=True, exist_ok=True)
    local.write_text("secret\n")


def table_at(db, name, location, owner):
    t = hms.external_table(db, name, location, owner=owner, external=False)
    t.tableType = "MANAGED_TABLE"
    return t


def tables(metastore, db):
    with hms.hms_client(metastore.port) as direct:
        return sorted(direct.get_all_tables(db))


@pytest.fixture(scope="module")
def protected_db(moto_guard, lab, metastore):
    g, facts = moto_guard
    admin = connect(g.port, "admin")
    admin.create_database(tt.Database(name=DP_DB, locationUri=f"s3a://datalake/{DP_DIR}",
                                      parameters={}))
    admin.create_database(tt.Database(name="dp_other", parameters={},
                                      locationUri="s3a://datalake/datawarehouse/dp_other.db"))
    hms.grant(admin, tt.HiveObjectRef(tt.HiveObjectType.DATABASE, DP_DB, None, None, None),
              "mallory", "CREATE")
    # Another database's table, located under dp_db's directory, with its files.
    put_files(lab, facts, f"{DP_DIR}/loot/part-00000")
    admin.create_table(hms.external_table("dp_other", "secret",
                                          f"s3a://datalake/{DP_DIR}/loot"))
    # An external table at its default place, dropped: its files stay.
    admin.create_table(hms.external_table(DP_DB, "old", f"s3a://datalake/{DP_DIR}/old"))
    put_files(lab, facts, f"{DP_DIR}/old/000000_0")
    admin.drop_table(DP_DB, "old", True)
    return g, facts


@pytest.mark.parametrize("name", ["loot", "old"])
@pytest.mark.parametrize("where", ["no location", "exactly its default place"])
def test_a_default_place_in_use_is_checked(protected_db, metastore, name, where):
    g, _ = protected_db
    mallory = connect(g.port, "mallory")
    before = tables(metastore, DP_DB)
    location = None if where == "no location" else f"s3a://datalake/{DP_DIR}/{name}"
    with pytest.raises(tt.MetaException) as e:
        mallory.create_table(table_at(DP_DB, name, location, "mallory"))
    msg = e.value.message
    assert "hms-guard: permission denied: user mallory" in msg, msg
    assert f"s3a://datalake/{DP_DIR}/{name}" in msg and "account-default" in msg, msg
    assert tables(metastore, DP_DB) == before and name not in before


def test_a_fresh_default_place_needs_no_storage_role(protected_db, metastore):
    g, _ = protected_db
    mallory = connect(g.port, "mallory")
    m0 = g.metrics()
    mallory.create_table(table_at(DP_DB, "fresh", None, "mallory"))
    mallory.create_table(table_at(DP_DB, "fresh2", f"s3a://datalake/{DP_DIR}/fresh2/", "mallory"))
    assert {"fresh", "fresh2"} <= set(tables(metastore, DP_DB))
    with hms.hms_client(metastore.port) as direct:
        t = direct.get_table(DP_DB, "fresh")
    assert t.sd.location.rstrip("/") == f"s3a://datalake/{DP_DIR}/fresh", t.sd.location
    m1 = g.metrics()
    count = lambda m, **kw: sum(v for _, v in hms.metric_series(m, **kw))  # noqa: E731
    assert count(m1, name="hms_guard_storage_listings_total", outcome="empty") \
        - count(m0, name="hms_guard_storage_listings_total", outcome="empty") == 2
    # No role assumed, no probe: the listing is the proxy's own.
    for name in ("hms_guard_storage_sts_calls_total", "hms_guard_storage_probes_total"):
        assert count(m1, name=name) == count(m0, name=name), name


def test_a_rename_into_a_place_in_use_is_refused(protected_db, metastore):
    """mallory owns dp_db.fresh (managed, at its default place): renaming it moves its
    directory to dp_db.db/loot, where another table's files are."""
    g, _ = protected_db
    mallory = connect(g.port, "mallory")
    t = mallory.get_table(DP_DB, "fresh")
    t.tableName = "loot"
    with pytest.raises(tt.MetaException) as e:
        mallory.alter_table(DP_DB, "fresh", t)
    assert "hms-guard: permission denied: user mallory" in e.value.message, e.value.message
    assert f"s3a://datalake/{DP_DIR}/loot" in e.value.message, e.value.message
    assert "loot" not in tables(metastore, DP_DB) and "fresh" in tables(metastore, DP_DB)
    # Into a fresh place: allowed.
    t = mallory.get_table(DP_DB, "fresh")
    t.tableName = "renamed"
    mallory.alter_table(DP_DB, "fresh", t)
    assert "renamed" in tables(metastore, DP_DB)


def test_a_default_place_outside_s3_gets_the_ordinary_check(protected_db, metastore):
    """A database in the metastore's own file: warehouse: nothing can be listed, so the
    ordinary check applies — refused with storage.other_schemes = "deny"."""
    g, _ = protected_db
    admin = connect(g.port, "admin")
    admin.create_database(tt.Database(name="dp_local", parameters={}))
    assert admin.get_database("dp_local").locationUri.startswith("file:")
    hms.grant(admin, tt.HiveObjectRef(tt.HiveObjectType.DATABASE, "dp_local", None, None, None),
              "mallory", "CREATE")
    mallory = connect(g.port, "mallory")
    with pytest.raises(tt.MetaException) as e:
        mallory.create_table(table_at("dp_local", "t", None, "mallory"))
    assert "file://" in e.value.message and "other_schemes" in e.value.message, e.value.message
    assert tables(metastore, "dp_local") == []
