#!/usr/bin/env bash
# The demo: a real Hive Metastore, hms-guard in front of it, and a Spark session through it
# creating a database and a table at s3a://datalake/datawarehouse/demo/, inserting, selecting
# and listing. Logs stay in target/demo-lab; everything started is stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
tests/lab/setup.sh
cargo build --release --locked --bin hms-guard
venv="${HMS_GUARD_CACHE:-$HOME/.cache/hms-guard}/venv"
lab="$PWD/target/demo-lab"
rm -rf "$lab" && mkdir -p "$lab"
HMS_GUARD_BIN="$PWD/target/release/hms-guard" "$venv/bin/python" - "$lab" <<'PY'
import sys
from pathlib import Path
sys.path.insert(0, "tests/lab")
import hms

lab = Path(sys.argv[1])
(lab / "hms").mkdir()
m = hms.Metastore(lab / "hms").start()
print(f"metastore    thrift://127.0.0.1:{m.port}")
g = hms.Guard(lab, m.port, extra='[authz]\nmode = "off"\n', name="hms-guard").start()
print(f"hms-guard    thrift://127.0.0.1:{g.port}  (admin http://127.0.0.1:{g.admin_port}/metrics)")
spark = None
try:
    spark = hms.spark_session(lab / "spark", g.port, app="hms-guard-demo")
    for stmt in [
        "CREATE DATABASE demo_database",
        "CREATE TABLE demo_database.customer (id INT, name STRING) USING parquet "
        "LOCATION 's3a://datalake/datawarehouse/demo/customer'",
        "INSERT INTO demo_database.customer VALUES (1, 'ada'), (2, 'grace')",
    ]:
        print(f"spark> {stmt}")
        spark.sql(stmt)
    print("spark> SELECT * FROM demo_database.customer ORDER BY id")
    spark.sql("SELECT * FROM demo_database.customer ORDER BY id").show()
    print("spark> SHOW TABLES IN demo_database")
    spark.sql("SHOW TABLES IN demo_database").show()
    calls = [l for l in g.metrics().splitlines() if l.startswith("hms_guard_requests_total")]
    print("calls that went through hms-guard:")
    print("\n".join("  " + l for l in calls))
finally:
    if spark is not None:
        spark.stop()
    g.stop()
    m.stop()
print(f"logs: {lab}/hms-guard.log (JSON), {lab}/hms/metastore.log")
PY
