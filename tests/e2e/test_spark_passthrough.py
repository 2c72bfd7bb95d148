"""Real Spark (local[2], Hive support) whose metastore is hms-guard (authorization off): the DDL
and DML a Spark user runs on s3a:// tables, the metastore's state checked directly afterwards,
and hms-guard's metrics proving the calls went through it."""
import hms

DB = "e2e_spark"
WAREHOUSE = "s3a://datalake/datawarehouse"


def direct(metastore):
    return hms.hms_client(metastore.port)


def test_spark_statements_through_hms_guard(lab, metastore, passthrough_guard, spark):
    bucket = hms.bucket_dir(lab)
    sql = spark.sql
    sql(f"CREATE DATABASE {DB}")
    sql(f"CREATE TABLE {DB}.sales (id INT, amount DOUBLE) USING parquet "
        f"LOCATION '{WAREHOUSE}/e2e/sales'")
    with direct(metastore) as c:
        t = c.get_table(DB, "sales")
        assert t.sd.location == f"{WAREHOUSE}/e2e/sales"
        assert [f.name for f in c.get_schema(DB, "sales")] == ["id", "amount"]

    sql(f"INSERT INTO {DB}.sales VALUES (1, 10.5), (2, 20.0)")
    rows = sql(f"SELECT id, amount FROM {DB}.sales ORDER BY id").collect()
    assert [(r.id, r.amount) for r in rows] == [(1, 10.5), (2, 20.0)]
    files = [p.name for p in (bucket / "datawarehouse" / "e2e" / "sales").iterdir()]
    assert any(f.endswith(".parquet") for f in files), files  # the data is in the bucket

    # Spark fails after the metastore call if the new location is missing: create it first.
    (bucket / "datawarehouse" / "e2e" / "sales_moved").mkdir(parents=True)
    sql(f"ALTER TABLE {DB}.sales SET LOCATION '{WAREHOUSE}/e2e/sales_moved'")
    with direct(metastore) as c:
        assert c.get_table(DB, "sales").sd.location == f"{WAREHOUSE}/e2e/sales_moved"
    assert sql(f"SELECT * FROM {DB}.sales").count() == 0  # the new location is empty

    assert [r.tableName for r in sql(f"SHOW TABLES IN {DB}").collect()] == ["sales"]
    sql(f"DROP TABLE {DB}.sales")
    with direct(metastore) as c:
        assert c.get_all_tables(DB) == []
    sql(f"CREATE TABLE {DB}.tmp (x INT) USING parquet LOCATION '{WAREHOUSE}/e2e/tmp'")
    sql(f"DROP DATABASE {DB} CASCADE")
    with direct(metastore) as c:
        assert DB not in c.get_all_databases()

    m = passthrough_guard.metrics()
    calls = {lb["method"]: v for lb, v in hms.metric_series(m, "hms_guard_requests_total")}
    assert calls.get("get_table", 0) > 0, f"get_table never went through hms-guard: {calls}"
    for method in ("set_ugi", "get_database", "create_table_with_environment_context",
                   "alter_table_with_environment_context", "get_tables",
                   "drop_table_with_environment_context", "drop_database"):
        assert calls.get(method, 0) > 0, f"{method} not seen by hms-guard: {calls}"
    # Spark's Hive client reconnects and retries on a broken connection, which would hide a
    # proxy fault: none may have happened.
    errors = hms.metric_series(m, "hms_guard_upstream_errors_total")
    assert sum(v for _, v in errors) == 0, errors
    failed = hms.metric_series(m, "hms_guard_requests_total", decision="error")
    assert sum(v for _, v in failed) == 0, failed
