"""pyiceberg (PyPI, its HiveCatalog) as an ordinary non-admin user through an enforcing
hms-guard in front of the real metastore: create an Iceberg table, append, read, and let a
writer holding INSERT append too; a reader holding only SELECT cannot commit.

pyiceberg names the user with `ugi` (set_ugi) but writes the OS user into its lock requests
and the table owner; hms-guard takes both in the caller's name."""
import getpass

import pyarrow as pa
import pytest
from hmsclient.genthrift.hive_metastore import ttypes as tt
from pyiceberg.catalog.hive import HiveCatalog
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.schema import Schema
from pyiceberg.types import LongType, NestedField, StringType

import hms
from hms import connect

DB = "ice_db"
SCHEMA = Schema(NestedField(1, "id", LongType(), required=False),
                NestedField(2, "name", StringType(), required=False))


def catalog(port, user, lab):
    return HiveCatalog("lab", **{"uri": f"thrift://127.0.0.1:{port}", "ugi": f"{user}:",
                                 "py-io-impl": "lab_fileio.LabFileIO",
                                 "lab.s3-root": str(hms.bucket_dir(lab).parent)})


def rows(n0, n):
    return pa.table({"id": pa.array(range(n0, n0 + n), pa.int64()),
                     "name": pa.array([f"r{i}" for i in range(n0, n0 + n)], pa.string())})


@pytest.fixture(scope="module")
def iceguard(lab, metastore):
    g = hms.Guard(lab, metastore.port, name="guard-iceberg", metastore_version="2.3",
                  extra='[authz]\nmode = "enforce"\n\n[storage]\nenabled = false\n')
    g.start()
    admin = connect(g.port, "admin")
    # In the lab's emulated bucket: table locations are s3a://, as in a deployment (a commit
    # is recognised under the table's own S3 location).
    admin.create_database(tt.Database(name=DB, locationUri=f"s3a://datalake/defloc/{DB}.db",
                                      parameters={}))
    hms.grant(admin, tt.HiveObjectRef(tt.HiveObjectType.DATABASE, DB, None, None, None),
              "ana", "CREATE")
    yield g
    g.stop()


def test_a_user_creates_fills_and_reads_her_iceberg_table(iceguard, metastore, lab):
    ana = catalog(iceguard.port, "ana", lab)
    t = ana.create_table(f"{DB}.events", SCHEMA)
    with hms.hms_client(metastore.port) as direct:
        ht = direct.get_table(DB, "events")
    assert ht.owner == "ana", f"owned by its creator, not the OS user {getpass.getuser()}"
    assert ht.parameters["table_type"].upper() == "ICEBERG"
    t.append(rows(0, 3))
    t.append(rows(3, 2))
    got = ana.load_table(f"{DB}.events").scan().to_arrow()
    assert sorted(got["id"].to_pylist()) == [0, 1, 2, 3, 4]
    assert "events" in [n for _, n in ana.list_tables(DB)]


def test_a_writer_commits_a_reader_does_not(iceguard, metastore, lab):
    admin = connect(iceguard.port, "admin")
    obj = tt.HiveObjectRef(tt.HiveObjectType.TABLE, DB, "events", None, None)
    hms.grant(admin, obj, "bob", "SELECT", "INSERT")
    hms.grant(admin, obj, "carl", "SELECT")
    bob = catalog(iceguard.port, "bob", lab)
    before = len(bob.load_table(f"{DB}.events").scan().to_arrow())
    # An Iceberg commit moves metadata_location within the table's own location: INSERT.
    bob.load_table(f"{DB}.events").append(rows(100, 1))
    assert len(bob.load_table(f"{DB}.events").scan().to_arrow()) == before + 1
    carl = catalog(iceguard.port, "carl", lab)
    t = carl.load_table(f"{DB}.events")
    assert len(t.scan().to_arrow()) == before + 1
    with pytest.raises((CommitFailedException, tt.MetaException, Exception)) as e:
        t.append(rows(200, 1))
    text = str(e.value) + str(getattr(e.value, "__cause__", ""))
    assert "hms-guard" in text and "INSERT" in text, text
    assert len(bob.load_table(f"{DB}.events").scan().to_arrow()) == before + 1


def test_exists_rename_and_drop_as_the_owner(iceguard, metastore, lab):
    ana = catalog(iceguard.port, "ana", lab)
    assert not ana.table_exists(f"{DB}.scratch")  # the metastore's "not found", not a denial
    ana.create_table(f"{DB}.scratch", SCHEMA)
    assert ana.table_exists(f"{DB}.scratch")
    ana.rename_table(f"{DB}.scratch", f"{DB}.scratch2")
    assert not ana.table_exists(f"{DB}.scratch") and ana.table_exists(f"{DB}.scratch2")
    ana.drop_table(f"{DB}.scratch2")
    with hms.hms_client(metastore.port) as direct:
        assert "scratch2" not in direct.get_all_tables(DB)
    # A stranger to the database learns nothing: existing or not, the answer is a denial.
    zed = catalog(iceguard.port, "zed", lab)
    for name in ("events", "nothing_here"):
        with pytest.raises(Exception) as e:
            zed.table_exists(f"{DB}.{name}")
        assert "permission denied" in str(e.value), e.value


def test_a_partial_reader_of_an_iceberg_table_is_refused_saying_why(iceguard, lab):
    # Iceberg's readers take the schema from the table's own metadata files: hms-guard cannot
    # hide a column of it, so a user granted only some columns is refused, with the reason.
    ana = catalog(iceguard.port, "ana", lab)
    ana.create_table(f"{DB}.people", SCHEMA)
    admin = connect(iceguard.port, "admin")
    hms.grant(admin, tt.HiveObjectRef(tt.HiveObjectType.COLUMN, DB, "people", None, "id"),
              "dora", "SELECT")
    dora = catalog(iceguard.port, "dora", lab)
    with pytest.raises(Exception) as e:
        dora.load_table(f"{DB}.people")
    msg = str(e.value)
    assert "permission denied" in msg and "user dora" in msg, msg
    assert "iceberg table" in msg and "own files" in msg, msg
    # Granted every column, she reads it (nothing to hide).
    hms.grant(admin, tt.HiveObjectRef(tt.HiveObjectType.COLUMN, DB, "people", None, "name"),
              "dora", "SELECT")
    assert dora.load_table(f"{DB}.people").scan().to_arrow().num_rows == 0
