"""Real Spark through hms-guard (authorization off): the DDL/DML a Spark user runs, and the
metastore's state checked directly afterwards."""
import hms


def test_spark_statements_through_hms_guard(lab, metastore, passthrough_guard, spark):
    root = lab / "s3" / "datalake" / "datawarehouse"
    spark.sql("CREATE DATABASE e2e_spark")
    spark.sql("CREATE TABLE e2e_spark.sales (id INT, amount DOUBLE) USING parquet "
              "LOCATION 's3a://datalake/datawarehouse/e2e_sales'")
    spark.sql("INSERT INTO e2e_spark.sales VALUES (1, 10.5), (2, 20.0)")
    rows = spark.sql("SELECT id, amount FROM e2e_spark.sales ORDER BY id").collect()
    assert [(r.id, r.amount) for r in rows] == [(1, 10.5), (2, 20.0)]
    # Spark fails after the metastore call if the new location is missing: create it first.
    (root / "e2e_sales_moved").mkdir(parents=True, exist_ok=True)
    spark.sql("ALTER TABLE e2e_spark.sales SET LOCATION 's3a://datalake/datawarehouse/e2e_sales_moved'")
    tables = [r.tableName for r in spark.sql("SHOW TABLES IN e2e_spark").collect()]
    assert tables == ["sales"]
    with hms.hms_client(metastore.port) as c:
        t = c.get_table("e2e_spark", "sales")
        assert t.sd.location == "s3a://datalake/datawarehouse/e2e_sales_moved"
    spark.sql("DROP TABLE e2e_spark.sales")
    with hms.hms_client(metastore.port) as c:
        assert c.get_all_tables("e2e_spark") == []
    spark.sql("CREATE TABLE e2e_spark.tmp (x INT) USING parquet")
    spark.sql("DROP DATABASE e2e_spark CASCADE")
    with hms.hms_client(metastore.port) as c:
        assert "e2e_spark" not in c.get_all_databases()
    m = passthrough_guard.metrics()
    for method in ("get_table", "create_table_with_environment_context", "get_tables",
                   "alter_table_with_environment_context", "drop_table_with_environment_context",
                   "drop_database"):
        assert f'method="{method}",decision="pass"' in m, method
    assert 'hms_guard_upstream_errors_total' not in m or 'kind="mid_reply"' not in m
