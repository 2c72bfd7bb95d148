"""Fine-grained access through an enforcing hms-guard in front of the real metastore, read by
real Spark 4: SELECT on views only (Parquet, ORC, text and partitioned tables), column and
partition grants made through the API, and what a partial reader cannot do (name a hidden
column, read a view hms-guard cannot prove, change the real table, read hidden statistics).

fin holds SELECT on views only; col holds SELECT on two columns of one table (API column
grants); prt holds SELECT on one partition (an API partition grant); mixed holds a column
grant everywhere and a view of one region, which together would show more than each."""
from pathlib import Path

import pytest
from hmsclient.genthrift.hive_metastore import ttypes as tt

import hms
from hms import connect
from test_seed_spark import audit_lines, spark_as

DB = "fg_db"
DENIED = "hms-guard: permission denied"
JAR = Path(__file__).resolve().parents[2] / "target" / "hms-guard-spark.jar"
EXT = {"spark.jars": str(JAR), "spark.sql.extensions": "hmsguard.spark.GuardExtension"}
ROWS = [(1, "ann", "111-11-1111", "eu"), (2, "bob", "222-22-2222", "us"),
        (3, "cyd", "333-33-3333", "eu")]


def values(with_region=False):
    return ", ".join(f"({i}, '{n}', '{s}'" + (f", '{r}')" if with_region else ")")
                     for i, n, s, r in ROWS)


@pytest.fixture(scope="module")
def fine(lab, metastore):
    audit = lab / "audit-fine.jsonl"
    g = hms.Guard(lab, metastore.port, name="guard-fine",
                  extra=('[authz]\nmode = "enforce"\n\n'
                         f'[audit]\nsink = "file"\npath = "{audit}"\n\n'
                         '[storage]\nenabled = false\n'))
    try:
        g.start()
        ddl = [f"CREATE DATABASE {DB} LOCATION 's3a://datalake/defloc/{DB}.db'"]
        for t, fmt in (("c_pq", "PARQUET"), ("c_orc", "ORC"), ("c_txt", "TEXTFILE"),
                       ("c_txt2", "TEXTFILE"), ("c_agg", "PARQUET"), ("c_api", "ORC")):
            ddl += [f"CREATE TABLE {DB}.{t} (id INT, name STRING, ssn STRING) STORED AS {fmt}",
                    f"INSERT INTO {DB}.{t} VALUES {values()}"]
        ddl += [
            f"CREATE TABLE {DB}.c_part (id INT, name STRING, ssn STRING) "
            "PARTITIONED BY (region STRING) STORED AS PARQUET",
            f"INSERT INTO {DB}.c_part PARTITION (region) VALUES {values(True)}",
            f"CREATE VIEW {DB}.v_pq AS SELECT id, name FROM {DB}.c_pq",
            # Unqualified: Spark resolves it in the session's database, kept with the view.
            f"USE {DB}",
            "CREATE VIEW v_orc AS SELECT id, name FROM c_orc",
            "USE default",
            f"CREATE VIEW {DB}.v_txt AS SELECT id, name FROM {DB}.c_txt",
            f"CREATE VIEW {DB}.v_txt2 AS SELECT id, ssn FROM {DB}.c_txt2",
            f"CREATE VIEW {DB}.v_eu AS SELECT id, name, region FROM {DB}.c_part "
            "WHERE region = 'eu'",
            f"CREATE VIEW {DB}.v_agg AS SELECT count(*) AS n FROM {DB}.c_agg",
            f"CREATE VIEW {DB}.v_eu_ssn AS SELECT id, ssn, region FROM {DB}.c_part "
            "WHERE region = 'eu'",
            f"ANALYZE TABLE {DB}.c_pq COMPUTE STATISTICS FOR COLUMNS id, ssn",
        ]
        r = spark_as(lab, g.port, "admin", ddl)
        assert all(x["ok"] for x in r), [x for x in r if not x["ok"]]
        admin = connect(g.port, "admin")
        table = lambda t: tt.HiveObjectRef(tt.HiveObjectType.TABLE, DB, t, None, None)  # noqa: E731
        for v in ("v_pq", "v_orc", "v_txt", "v_txt2", "v_eu", "v_agg"):
            hms.grant(admin, table(v), "fin", "SELECT")
        hms.grant(admin, table("c_pq"), "fin", "INSERT")
        for c in ("id", "name"):
            hms.grant(admin, tt.HiveObjectRef(tt.HiveObjectType.COLUMN, DB, "c_api", None, c),
                      "col", "SELECT")
        hms.grant(admin, tt.HiveObjectRef(tt.HiveObjectType.COLUMN, DB, "c_part", None, "name"),
                  "mixed", "SELECT")
        hms.grant(admin, tt.HiveObjectRef(tt.HiveObjectType.PARTITION, DB, "c_part", ["us"],
                                          None), "prt", "SELECT")
        hms.grant(admin, table("v_eu_ssn"), "mixed", "SELECT")
        # Metastore column statistics of c_pq (Spark keeps its own in table parameters).
        desc = tt.ColumnStatisticsDesc(True, DB, "c_pq")
        string = lambda c: tt.ColumnStatisticsObj(c, "string", tt.ColumnStatisticsData(  # noqa: E731
            stringStats=tt.StringColumnStatsData(11, 11.0, 0, 3)))
        assert admin.update_table_column_statistics(tt.ColumnStatistics(
            desc, [string("name"), string("ssn")]))
        admin._transport.close()
        yield g, audit
    finally:
        g.stop()


def test_views_give_exactly_their_rows_and_columns(fine, lab):
    g, audit = fine
    r = spark_as(lab, g.port, "fin", [
        f"SELECT * FROM {DB}.v_pq ORDER BY id",
        f"SELECT * FROM {DB}.v_orc ORDER BY id",
        f"SELECT * FROM {DB}.v_txt ORDER BY id",
        f"SELECT * FROM {DB}.v_eu ORDER BY id",
        f"SELECT * FROM {DB}.c_pq ORDER BY id",
        f"SELECT * FROM {DB}.c_orc ORDER BY id",
        f"SELECT * FROM {DB}.c_txt ORDER BY id",
        f"SELECT * FROM {DB}.c_part ORDER BY id",
        f"SELECT ssn FROM {DB}.c_pq",
        f"SELECT ssn FROM {DB}.c_orc",
        f"SELECT ssn FROM {DB}.c_txt",
        f"SELECT id FROM {DB}.c_part WHERE region = 'us'",
    ])
    two = [[1, "ann"], [2, "bob"], [3, "cyd"]]
    for x in r[:3]:
        assert x["ok"] and x["rows"] == two, x
    assert r[3]["ok"] and r[3]["rows"] == [[1, "ann", "eu"], [3, "cyd", "eu"]], r[3]
    # The base tables, read whole: only the narrowed columns and partitions.
    for x in r[4:7]:
        assert x["ok"] and x["rows"] == two, x
    assert r[7]["ok"] and r[7]["rows"] == [[1, "ann", "eu"], [3, "cyd", "eu"]], r[7]
    # The hidden column cannot be named; the hidden partition shows nothing.
    for x in r[8:11]:
        assert not x["ok"] and "ssn" in x["error"], x
        assert "111-11-1111" not in x["error"], x
    assert r[11]["ok"] and r[11]["rows"] == [], r[11]
    narrowed = [e for e in audit_lines(audit) if e["user"] == "fin"
                and e["reason"] == "narrowed"]
    assert narrowed and all(e["decision"] == "allow" for e in narrowed), narrowed
    pq = [e for e in narrowed if e["table"] == "c_pq"]
    assert pq and pq[0]["given"] == "columns id, name of every partition", pq[0]
    assert "SELECT on view fg_db.v_pq" in pq[0]["matched"], pq[0]
    part = [e for e in narrowed if e["table"] == "c_part"]
    assert part and "partitions where region = 'eu'" in part[0]["given"], part[0]


def test_views_hms_guard_cannot_prove_fail_with_their_reason(fine, lab):
    g, _ = fine
    r = spark_as(lab, g.port, "fin", [
        f"SELECT * FROM {DB}.v_agg",
        f"SELECT * FROM {DB}.v_txt2",
    ])
    assert not r[0]["ok"] and DENIED in r[0]["error"], r[0]
    assert "view fg_db.v_agg does not qualify" in r[0]["error"], r[0]
    assert "count" in r[0]["error"], r[0]
    assert not r[1]["ok"] and "read by position" in r[1]["error"], r[1]


def test_hidden_parts_stay_hidden_from_metastore_calls(fine):
    g, _ = fine
    c = connect(g.port, "fin")
    try:
        t = c.get_table(DB, "c_pq")
        assert [f.name for f in t.sd.cols] == ["id", "name"]
        assert "ssn" not in repr(t).lower(), t
        assert [f.name for f in c.get_fields(DB, "c_pq")] == ["id", "name"]
        assert [f.name for f in c.get_schema(DB, "c_part")] == ["id", "name", "region"]
        assert c.get_partition_names(DB, "c_part", -1) == ["region=eu"]
        assert [p.values for p in c.get_partitions(DB, "c_part", -1)] == [["eu"]]
        hms.denied(lambda: c.get_partition(DB, "c_part", ["us"]), "user fin")
        stats = c.get_table_statistics_req(tt.TableStatsRequest(DB, "c_pq", ["name", "ssn"]))
        assert [o.colName for o in stats.tableStats] == ["name"], stats
        # Whole-table listings: narrowed tables narrowed, tables with no part given left out.
        listed = c.get_table_objects_by_name(DB, ["c_pq", "c_orc", "c_agg", "v_pq"])
        assert sorted(t.tableName for t in listed) == ["c_orc", "c_pq", "v_pq"], listed
        for t in listed:
            assert "ssn" not in repr(t).lower() or t.tableName == "v_pq", t
        # Partition counts count only the partitions the user may read.
        assert c.get_num_partitions_by_filter(DB, "c_part", "region = 'us'") == 0
        assert c.get_num_partitions_by_filter(DB, "c_part", "region <> 'x'") == 1
        # A read whose reply cannot be narrowed is refused, saying so.
        hms.denied(lambda: c.get_aggr_stats_for(tt.PartitionsStatsRequest(
            DB, "c_part", ["id"], ["region=eu"])), "cannot be narrowed")
    finally:
        c._transport.close()


def test_a_partial_reader_never_changes_the_real_table(fine, lab):
    # fin holds INSERT on c_pq and sees only id, name: the write lands (with the extension
    # asking first), its statistics are recorded on the real table, whose schema stays whole;
    # a schema change is refused, saying why.
    g, audit = fine
    assert JAR.is_file(), f"{JAR} missing: spark/build.sh builds it (tests/run.sh runs it)"
    r = spark_as(lab, g.port, "fin", [
        f"INSERT INTO {DB}.c_pq VALUES (9, 'zed')",
        f"SELECT * FROM {DB}.c_pq WHERE id = 9",
        f"ALTER TABLE {DB}.c_pq ADD COLUMNS (extra STRING)",
        f"ALTER TABLE {DB}.c_pq SET TBLPROPERTIES ('k' = 'v')",
    ], EXT)
    assert r[0]["ok"], r[0]
    assert r[1].get("rows") == [[9, "zed"]], r[1]
    for x in r[2:]:
        assert not x["ok"] and DENIED in x["error"], x
    assert "sees only part of table fg_db.c_pq" in r[3]["error"], r[3]
    admin = connect(g.port, "admin")
    try:
        t = admin.get_table(DB, "c_pq")
        assert [f.name for f in t.sd.cols] == ["id", "name", "ssn"], t.sd.cols
        assert "ssn" in t.parameters["spark.sql.sources.schema"], t.parameters
        assert "k" not in t.parameters
    finally:
        admin._transport.close()
    r = spark_as(lab, g.port, "admin", [f"SELECT * FROM {DB}.c_pq WHERE id = 9"])
    assert r[0].get("rows") == [[9, "zed", None]], r[0]["error"][:700]
    stats = [e for e in audit_lines(audit) if e["user"] == "fin"
             and e["method"].startswith("alter_table") and e["decision"] == "allow"]
    assert stats and "recorded on the real table" in stats[0]["matched"], stats


def test_column_and_partition_grants_through_the_api(fine, lab):
    g, audit = fine
    r = spark_as(lab, g.port, "col", [f"SELECT * FROM {DB}.c_api ORDER BY id",
                                      f"SELECT ssn FROM {DB}.c_api"])
    assert r[0]["ok"] and r[0]["rows"] == [[1, "ann"], [2, "bob"], [3, "cyd"]], r[0]
    assert not r[1]["ok"], r[1]
    r = spark_as(lab, g.port, "prt", [f"SELECT * FROM {DB}.c_part ORDER BY id"])
    assert r[0]["ok"] and r[0]["rows"] == [[2, "bob", "222-22-2222", "us"]], r[0]
    # A column grant everywhere and a view of one region: combined, they would show more.
    r = spark_as(lab, g.port, "mixed", [f"SELECT * FROM {DB}.c_part"])
    assert not r[0]["ok"] and DENIED in r[0]["error"], r[0]
    assert "do not make one narrowed table" in r[0]["error"], r[0]
    given = [e for e in audit_lines(audit) if e["user"] == "prt" and e.get("given")]
    assert given and given[0]["given"] == "columns id, name, ssn, region of partition [us]"


def test_a_view_gives_only_what_its_owner_may_give(fine):
    # fg_intruder may create tables in its own database. Through the raw API it makes a view of
    # c_pq (which it may not read) carrying SELECT on it for itself, as Hive's owner grants are
    # carried: the view reads with its owner's rights, and fg_intruder's give nothing of c_pq.
    g, _ = fine
    admin = connect(g.port, "admin")
    try:
        admin.create_database(tt.Database(name="fg_intr", parameters={},
                                          locationUri="s3a://datalake/defloc/fg_intr.db"))
        hms.grant(admin, tt.HiveObjectRef(tt.HiveObjectType.DATABASE, "fg_intr", None, None, None),
                  "fg_intruder", "CREATE")
    finally:
        admin._transport.close()
    fg_intruder = connect(g.port, "fg_intruder")
    try:
        cols = [tt.FieldSchema("id", "int", ""), tt.FieldSchema("ssn", "string", "")]
        sd = tt.StorageDescriptor(cols=cols, location=None, inputFormat=None, outputFormat=None,
                                  compressed=False, numBuckets=-1,
                                  serdeInfo=tt.SerDeInfo(None, None, {}), bucketCols=[],
                                  sortCols=[], parameters={})
        mine = tt.PrincipalPrivilegeSet(userPrivileges={"fg_intruder": [tt.PrivilegeGrantInfo(
            "SELECT", 0, "fg_intruder", tt.PrincipalType.USER, False)]})
        fg_intruder.create_table(tt.Table(
            tableName="peek", dbName="fg_intr", owner="fg_intruder", sd=sd, partitionKeys=[],
            parameters={}, tableType="VIRTUAL_VIEW", privileges=mine,
            viewOriginalText="SELECT id, ssn FROM fg_db.c_pq",
            viewExpandedText="SELECT `c_pq`.`id`, `c_pq`.`ssn` FROM `fg_db`.`c_pq`"))
        assert fg_intruder.get_table("fg_intr", "peek").tableType == "VIRTUAL_VIEW"
        msg = hms.denied(lambda: fg_intruder.get_table(DB, "c_pq"), "user fg_intruder")
        assert "owned by user fg_intruder, who may not give SELECT on table fg_db.c_pq" in msg, msg
    finally:
        fg_intruder._transport.close()
