"""The demo's body (run by demo/run.sh with the lab's venv): a real Hive Metastore 2.3,
hms-guard in front of it, and a Spark session whose metastore is hms-guard.
Usage: demo.py LAB_DIR AUTHZ_MODE (enforce | off)"""
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "lab"))
import hms  # noqa: E402
import moto_lab  # noqa: E402

STATEMENTS = [
    # Spark sends a database location even without LOCATION (its warehouse dir): give one
    # in the bucket, which the storage check accepts for admin's role.
    "CREATE DATABASE demo_database LOCATION 's3a://datalake/datawarehouse/demo'",
    "CREATE TABLE demo_database.customer (id INT, name STRING) USING parquet "
    "LOCATION 's3a://datalake/datawarehouse/demo/customer'",
    "INSERT INTO demo_database.customer VALUES (1, 'ada'), (2, 'grace'), (3, 'edsger')",
    "SELECT * FROM demo_database.customer ORDER BY id",
    "SHOW TABLES IN demo_database",
]
# With enforcement on: a table pointed where the user's own storage role may not write.
DENIED_BY_STORAGE = ("CREATE TABLE demo_database.elsewhere (id INT) USING parquet "
                     "LOCATION 's3a://datalake/defloc/elsewhere'")


def step(msg):
    print(f"\n== {msg}", flush=True)


def main():
    lab, mode = Path(sys.argv[1]), sys.argv[2]
    t0 = time.monotonic()
    metastore = guard = spark = moto = None
    try:
        step("starting a Hive Metastore 2.3 (Derby; s3a://datalake emulated on local disk)")
        metastore = hms.Metastore(lab).start()
        print(f"metastore  {metastore.uri}  (ready in {metastore.started_in:.1f}s)")

        storage, env = '[storage]\nenabled = false\n', None
        if mode != "off":
            step("starting the AWS stand-in (moto server, IAM enforced) for the storage checks")
            moto = moto_lab.MotoLab()
            facts = moto.start()
            print(f"moto       {facts['endpoint']}  (admin's storage role: etl, "
                  "read/write s3://datalake/datawarehouse/ only)")
            storage = moto_lab.storage_toml(facts, user_roles={"admin": "etl"})
            env = moto_lab.guard_env(facts)

        step(f"starting hms-guard in front of it (authz.mode = {mode})")
        guard = hms.Guard(lab, metastore.port, name="hms-guard", env=env,
                          extra=f'[authz]\nmode = "{mode}"\n\n' + storage).start()
        print(f"hms-guard  {guard.uri}  admin http://127.0.0.1:{guard.admin_port}"
              "/metrics /readyz")
        print(f"config     {guard.config}")

        step("starting Spark (local[2]) with hive.metastore.uris = hms-guard")
        spark = hms.spark_session(lab, guard.uri, app="hms-guard-demo")
        for stmt in STATEMENTS:
            print(f"\nspark-sql> {stmt};")
            df = spark.sql(stmt)
            if stmt.startswith(("SELECT", "SHOW")):
                df.show(truncate=False)
        if mode != "off":
            print(f"\nspark-sql> {DENIED_BY_STORAGE};")
            try:
                spark.sql(DENIED_BY_STORAGE)
                print("allowed (unexpected)")
            except Exception as e:  # noqa: BLE001 - shown to the reader
                msg = str(e)
                at = msg.find("hms-guard:")
                print("Error: " + (msg[at:].splitlines()[0] if at >= 0 else msg[:500]))

        with hms.hms_client(metastore.port) as c:  # straight to the metastore
            t = c.get_table("demo_database", "customer")
        files = sorted(p.name for p in (hms.bucket_dir(lab) / "datawarehouse" / "demo" /
                                        "customer").glob("*.parquet"))
        step("what the metastore holds, asked directly")
        print(f"demo_database.customer  location={t.sd.location}  owner={t.owner}")
        print(f"its data files ({hms.bucket_dir(lab)}/datawarehouse/demo/customer): {files}")

        if mode != "off":
            step("a client calling as user 'guest' (no grants), through hms-guard")
            with hms.hms_client(guard.port) as c:
                c.set_ugi("guest", [])
                try:
                    c.get_table("demo_database", "customer")
                    print("get_table: allowed (unexpected)")
                except Exception as e:  # noqa: BLE001 - shown to the reader
                    print(f"get_table: {type(e).__name__}: {getattr(e, 'message', e)}")
                print(f"get_all_tables: {c.get_all_tables('demo_database')}  (filtered)")

        step("metastore calls that went through hms-guard (hms_guard_requests_total)")
        for labels, value in hms.metric_series(guard.metrics(), "hms_guard_requests_total"):
            print(f"  {int(value):4d}  {labels['method']:<45} {labels.get('decision', '')}")
    finally:
        step("stopping everything")
        if spark is not None:
            hms.stop_spark(spark)
        for part in (guard, metastore, moto):
            if part is not None:
                part.stop()
    print(f"done in {time.monotonic() - t0:.0f}s. Logs and configs in {lab}:")
    print(f"  hms-guard   {lab}/hms-guard.log (JSON), {lab}/hms-guard.out (audit), "
          f"{lab}/hms-guard.toml")
    print(f"  metastore   {lab}/hms/metastore.log, {lab}/hms/conf/")
    print(f"  spark       {lab}/spark/spark.log")
    print(f"  s3a bucket  {hms.bucket_dir(lab)}")


if __name__ == "__main__":
    main()
