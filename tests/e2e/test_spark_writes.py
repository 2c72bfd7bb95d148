"""Writes that never reach the metastore, refused inside Spark: real Spark 4 with
hms-guard-spark (target/hms-guard-spark.jar, `spark.sql.extensions =
hmsguard.spark.GuardExtension`) through an enforcing hms-guard in front of the real metastore,
with its storage checks against the moto lab (tests/lab/moto_lab.py: the account default role
reaches s3://datalake/defloc/ and temp/, not datawarehouse/, and reads nothing of the archive
bucket).

mary holds SELECT only: every kind of write is refused with hms-guard's message and the
tables' files stay as they were (listed before and after). david holds INSERT on one table and
CREATE in the database: his writes land. The administrator's DDL is unaffected. Files by path
follow the user's storage role. Without the extension, mary's INSERT into a Parquet table still
lands, as docs/SPARK.md says."""
from pathlib import Path

import pytest
from hmsclient.genthrift.hive_metastore import ttypes as tt

import hms
import moto_lab
from hms import connect
from test_seed_spark import audit_lines, spark_as

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
JAR = REPO / "target" / "hms-guard-spark.jar"
DB = "sw_db"
EXT = {"spark.jars": str(JAR), "spark.sql.extensions": "hmsguard.spark.GuardExtension"}
DENIED = "hms-guard: permission denied"


def files(lab):
    """Every data file under the database's directory, with its size."""
    root = hms.bucket_dir(lab) / "defloc" / f"{DB}.db"
    return {str(f.relative_to(root)): f.stat().st_size for f in root.rglob("*")
            if f.is_file() and not f.name.startswith((".", "_"))}


@pytest.fixture(scope="module")
def writes(lab, metastore):
    assert JAR.is_file(), f"{JAR} missing: spark/build.sh builds it (tests/run.sh runs it)"
    moto = moto_lab.MotoLab()
    facts = moto.start()
    audit = lab / "audit-writes.jsonl"
    g = hms.Guard(lab, metastore.port, name="guard-writes", env=moto_lab.guard_env(facts),
                  extra=('[authz]\nmode = "enforce"\n\n'
                         f'[audit]\nsink = "file"\npath = "{audit}"\n\n'
                         + moto_lab.storage_toml(facts)))
    try:
        g.start()
        src = lab / "load-src.txt"
        src.write_text("7\n")
        r = spark_as(lab, g.port, "admin", [
            f"CREATE DATABASE {DB} LOCATION 's3a://datalake/defloc/{DB}.db'",
            f"CREATE TABLE {DB}.pq (id INT) USING parquet",
            f"CREATE TABLE {DB}.hpq (id INT) STORED AS PARQUET",
            f"CREATE TABLE {DB}.part (id INT, p STRING) USING parquet PARTITIONED BY (p)",
            f"CREATE TABLE {DB}.txt (id INT) STORED AS TEXTFILE",
            f"INSERT INTO {DB}.pq VALUES (1)",
            f"INSERT INTO {DB}.hpq VALUES (1)",
            f"INSERT INTO {DB}.part PARTITION (p = 'a') VALUES (1)",
            f"INSERT INTO {DB}.txt VALUES (1)",
            "INSERT OVERWRITE DIRECTORY 's3a://datalake/defloc/shared' USING parquet SELECT 1 AS id",
            # The lab's archive bucket: no user's storage role may read it (moto_lab.py).
            "INSERT OVERWRITE DIRECTORY 's3a://archive/secret' USING parquet SELECT 1 AS id",
        ])
        assert all(x["ok"] for x in r), [x for x in r if not x["ok"]]
        admin = connect(g.port, "admin")
        bag = []

        def grant(obj, who, priv):
            bag.append(tt.HiveObjectPrivilege(obj, who, tt.PrincipalType.USER,
                                              tt.PrivilegeGrantInfo(priv, 0, "admin",
                                                                    tt.PrincipalType.USER, False)))
        for t in ("pq", "hpq", "part", "txt"):
            grant(tt.HiveObjectRef(tt.HiveObjectType.TABLE, DB, t, None, None), "mary", "SELECT")
            grant(tt.HiveObjectRef(tt.HiveObjectType.TABLE, DB, t, None, None), "david", "SELECT")
        grant(tt.HiveObjectRef(tt.HiveObjectType.TABLE, DB, "pq", None, None), "david", "INSERT")
        grant(tt.HiveObjectRef(tt.HiveObjectType.DATABASE, DB, None, None, None), "david",
              "CREATE")
        assert admin.grant_privileges(tt.PrivilegeBag(bag))
        yield g, audit, src
    finally:
        g.stop()
        moto.stop()


def test_a_select_only_users_writes_are_refused_before_any_file_is_written(writes, lab):
    g, audit, src = writes
    before = files(lab)
    assert before, "the tables have files"
    statements = [
        f"INSERT INTO {DB}.pq VALUES (2)",                               # data-source table
        f"INSERT INTO {DB}.hpq VALUES (2)",                              # Hive Parquet (converted)
        f"INSERT INTO {DB}.part PARTITION (p = 'a') VALUES (2)",         # existing partition
        f"INSERT INTO {DB}.part PARTITION (p = 'new') VALUES (2)",       # new partition
        f"INSERT INTO {DB}.part SELECT 2, 'dyn'",                        # dynamic partition
        f"INSERT INTO {DB}.txt VALUES (2)",                              # Hive text table
        f"INSERT OVERWRITE TABLE {DB}.pq SELECT 3",                      # overwrite
        f"TRUNCATE TABLE {DB}.pq",
        f"LOAD DATA LOCAL INPATH '{src}' INTO TABLE {DB}.txt",
        f"CREATE TABLE {DB}.ctas AS SELECT 1 AS id",                     # no CREATE in sw_db
        f"DELETE FROM {DB}.pq WHERE id = 1",
        f"UPDATE {DB}.pq SET id = 2",
        f"MERGE INTO {DB}.pq t USING (SELECT 1 AS id) s ON t.id = s.id "
        "WHEN MATCHED THEN DELETE",
        f"SELECT count(*) FROM {DB}.pq",
        f"SELECT count(*) FROM {DB}.txt",
    ]
    r = spark_as(lab, g.port, "mary", statements, EXT)
    for x in r[:-2]:
        assert not x["ok"], x
        assert DENIED in x["error"] and "user mary" in x["error"], x
    assert "write (INSERT) into table sw_db.pq" in r[0]["error"], r[0]
    assert "write (INSERT, DELETE) into table sw_db.pq" in r[6]["error"], r[6]
    assert "write (DELETE) into table sw_db.pq" in r[7]["error"], r[7]
    assert "create table sw_db.ctas with data" in r[9]["error"], r[9]
    assert "UPDATE" in r[11]["error"], r[11]
    # Reads still work and nothing changed, on disk or in the metastore.
    assert r[-2]["ok"] and r[-2]["rows"] == [[1]], r[-2]
    assert r[-1]["ok"] and r[-1]["rows"] == [[1]], r[-1]
    assert files(lab) == before
    with hms.hms_client(g.port) as c:
        c.set_ugi("admin", [])
        assert [p.values for p in c.get_partitions(DB, "part", -1)] == [["a"]]
        assert "ctas" not in c.get_all_tables(DB)

    asked = [e for e in audit_lines(audit)
             if e["method"] == "hms_guard_authorize" and e["user"] == "mary"]
    tables = {e["table"] for e in asked if e["operation"] == "write_data"}
    assert tables == {"pq", "hpq", "part", "txt"}, asked
    assert all(e["decision"] == "deny" for e in asked), asked
    assert all(e["client"].startswith("hms-guard-spark/") for e in asked), asked
    assert any(e["operation"] == "create_table" and e["table"] == "ctas" for e in asked)
    m = g.metrics()
    assert hms.metric_series(m, "hms_guard_questions_total", client="hms-guard-spark",
                             decision="deny"), m


def test_paths_follow_the_users_storage_role(writes, lab):
    g, audit, _ = writes
    # Files by path through temporary views (Spark's ``parquet.`path` `` form first asks the
    # metastore for a table named after the path in a database named `parquet`, which
    # hms-guard's existence rules refuse to a stranger: docs/SPARK.md).
    r = spark_as(lab, g.port, "mary", [
        "CREATE TEMPORARY VIEW shared USING parquet OPTIONS (path 's3a://datalake/defloc/shared')",
        "SELECT count(*) FROM shared",
        "CREATE TEMPORARY VIEW secret USING parquet OPTIONS (path 's3a://archive/secret')",
        "SELECT count(*) FROM secret",
        "INSERT OVERWRITE DIRECTORY 's3a://datalake/temp/mary-out' USING parquet SELECT 5 AS id",
        "INSERT OVERWRITE DIRECTORY 's3a://datalake/datawarehouse/mary-out' USING parquet "
        "SELECT 5 AS id",
    ], EXT)
    assert r[1]["ok"] and r[1]["rows"] == [[1]], r[1]
    assert not r[3]["ok"], r[3]
    err = r[3]["error"]
    assert DENIED in err and "read files at s3a://archive/secret" in err, err
    assert "read access" in err and "write" not in err.split("requires", 1)[1][:20], err
    assert "account-default" in err, err
    assert r[4]["ok"], r[4]
    assert not r[5]["ok"] and "s3a://datalake/datawarehouse/mary-out" in r[5]["error"], r[5]
    assert not (hms.bucket_dir(lab) / "datawarehouse" / "mary-out").exists()
    assert (hms.bucket_dir(lab) / "temp" / "mary-out").exists()
    ev = [e for e in audit_lines(audit) if e["method"] == "hms_guard_authorize"
          and e["operation"] in ("read_path", "write_path") and e["user"] == "mary"]
    assert {(e["operation"], e["decision"]) for e in ev} == {
        ("read_path", "allow"), ("read_path", "deny"), ("write_path", "allow"),
        ("write_path", "deny")}, ev
    assert all(e["storage"] for e in ev), ev


def test_holders_write_and_owners_ddl_is_unaffected(writes, lab):
    g, audit, _ = writes
    r = spark_as(lab, g.port, "david", [
        f"INSERT INTO {DB}.pq VALUES (5)",
        f"SELECT count(*) FROM {DB}.pq",
        f"INSERT INTO {DB}.hpq VALUES (5)",
        f"CREATE TABLE {DB}.david_ctas AS SELECT 1 AS id",
        f"SELECT count(*) FROM {DB}.david_ctas",
        f"INSERT INTO {DB}.david_ctas VALUES (2)",
        f"SELECT count(*) FROM {DB}.david_ctas",
    ], EXT)
    assert r[0]["ok"], r[0]
    assert r[1]["rows"] == [[2]], r[1]
    assert not r[2]["ok"] and DENIED in r[2]["error"], r[2]
    assert r[3]["ok"], r[3]
    assert r[4]["rows"] == [[1]], r[4]
    assert r[5]["ok"], r[5]          # the owner of the table he created
    assert r[6]["rows"] == [[2]], r[6]
    # One question per written table per statement; reads of tables ask nothing.
    asked = [e for e in audit_lines(audit)
             if e["method"] == "hms_guard_authorize" and e["user"] == "david"]
    per_table = {}
    for e in asked:
        per_table[e["table"]] = per_table.get(e["table"], 0) + 1
    assert per_table.get("pq") == 1 and per_table.get("hpq") == 1, per_table
    # The CTAS: CREATE in sw_db, then Spark's write of the new table's files (a plan of its own,
    # by path); the INSERT after it: a write into the table.
    assert per_table.get("david_ctas") == 2, per_table
    ops = [(e["operation"], e["table"]) for e in asked if e["table"] in ("david_ctas", None)]
    assert ops == [("create_table", "david_ctas"), ("write_path", None),
                   ("write_data", "david_ctas")], ops
    r = spark_as(lab, g.port, "admin", [
        f"CREATE TABLE {DB}.adm (id INT) USING parquet",
        f"INSERT INTO {DB}.adm VALUES (1)",
        f"ALTER TABLE {DB}.adm SET TBLPROPERTIES ('k' = 'v')",
        f"TRUNCATE TABLE {DB}.adm",
        f"DROP TABLE {DB}.adm",
    ], EXT)
    assert all(x["ok"] for x in r), r


def test_without_the_extension_spark_writes_as_before(writes, lab):
    """What the extension is for: without it, the metastore never sees this write."""
    g, _, _ = writes
    r = spark_as(lab, g.port, "mary", [
        f"SELECT count(*) FROM {DB}.hpq",
        f"INSERT INTO {DB}.hpq VALUES (9)",
        f"SELECT count(*) FROM {DB}.hpq",
    ])
    assert r[1]["ok"], r[1]
    assert r[2]["rows"][0][0] == r[0]["rows"][0][0] + 1, r


def test_a_jar_built_for_another_spark_refuses_to_load(writes, lab, tmp_path):
    g, _, _ = writes
    import zipfile
    bad = tmp_path / "hms-guard-spark-other.jar"
    with zipfile.ZipFile(JAR) as zin, zipfile.ZipFile(bad, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename.endswith("build.properties"):
                data = data.replace(b"spark.version=", b"spark.version=3.5.1\nold=")
            zout.writestr(item, data)
    r = spark_as(lab, g.port, "mary", [f"INSERT INTO {DB}.pq VALUES (2)"],
                 {**EXT, "spark.jars": str(bad)})
    assert not r[0]["ok"], r[0]
    assert "built against Spark 3.5.1" in r[0]["error"], r[0]
