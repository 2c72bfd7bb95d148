"""Locations decided by the metastore's own rules (docs/SECURITY.md "Locations of every scheme"
and "Default places"), against the real metastore, written as an attacker would write them.

Iceberg commits: a second user holding SELECT and INSERT appends after the owner's appends, on a
`file:` warehouse (the metastore's own, `file:/…/warehouse/DB.db`) and on an `s3a:` one (the
lab's emulated bucket); a user holding SELECT only cannot, and a writer cannot pass off as a
commit what is none (a metadata file outside the table, climbing out of it with `..`, or a table
that stops being an Iceberg table). After every refused call the metastore's table is unchanged.
"""
import pyarrow as pa
import pytest
from hmsclient.genthrift.hive_metastore import ttypes as tt

import hms
from test_grants_hmsclient import connect
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
