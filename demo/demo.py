"""The demo's body (run by demo/run.sh with the lab's venv): a real Hive Metastore 2.3,
hms-guard in front of it, the moto AWS stand-in for the storage checks, and Spark sessions —
one per user, each its own JVM — whose metastore is hms-guard.

The story: the admin creates demo_database with customer (partitioned by region, with an ssn
column), store_sales and promotion in the protected warehouse, two views of customer
(customer_public without ssn, customer_eu of the EU rows), the roles sales, marketing and
finance with their grants, and the users david (sales), mary (marketing) and john (finance).
Then each user works from Spark: what they may read and write goes through; a refused INSERT
and a refused location (the storage check) come back as hms-guard's errors — the INSERT refused
inside Spark by hms-guard-spark before a file is written, and a read by path outside mary's
storage role; john (finance) reads customer only through its views: the table narrowed to their
columns and partitions, ssn never named; the audit lines say what was decided.
Usage: demo.py LAB_DIR AUTHZ_MODE (enforce | shadow | off)"""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "lab"))
import hms  # noqa: E402
import moto_lab  # noqa: E402

DB = "demo_database"
TABLES = ["customer", "store_sales", "promotion"]
TEXT_TABLES = ["store_sales", "promotion"]
# The roles and grants: demo/grants.sql, run with `hms-guard sql -f` (as admin).
GRANTS_SQL = ROOT / "demo" / "grants.sql"
MEMBERS = {"david": "sales", "mary": "marketing", "john": "finance"}

ADMIN = [
    # The protected warehouse: admin's storage role (etl) may write there, the users' may not.
    f"CREATE DATABASE {DB} LOCATION 's3a://datalake/datawarehouse/demo'",
    f"CREATE TABLE {DB}.customer (id INT, name STRING, ssn STRING) PARTITIONED BY "
    f"(region STRING) STORED AS PARQUET LOCATION 's3a://datalake/datawarehouse/demo/customer'",
    f"INSERT INTO {DB}.customer PARTITION (region) VALUES (1, 'ann', '111-11-1111', 'eu'), "
    "(2, 'bob', '222-22-2222', 'us')",
    f"CREATE VIEW {DB}.customer_public AS SELECT id, name, region FROM {DB}.customer",
    f"CREATE VIEW {DB}.customer_eu AS SELECT id, name, region FROM {DB}.customer "
    "WHERE region = 'eu'",
    *[f"CREATE TABLE {DB}.{t} (id INT, v STRING) STORED AS TEXTFILE "
      f"LOCATION 's3a://datalake/datawarehouse/demo/{t}'" for t in TEXT_TABLES],
    *[f"INSERT INTO {DB}.{t} VALUES (1, '{t} 1')" for t in TEXT_TABLES],
    # Files in the archive bucket (admin's session has no extension: the compute role writes).
    "INSERT OVERWRITE DIRECTORY 's3a://archive/finance' USING parquet SELECT 1 AS id",
    # Allowed by the grants (admin), refused by the storage check: etl may not write there.
    f"CREATE TABLE {DB}.elsewhere (id INT) STORED AS TEXTFILE "
    "LOCATION 's3a://datalake/defloc/elsewhere'",
]
USERS = {
    "david": [f"SELECT count(*) FROM {DB}.customer",
              f"INSERT INTO {DB}.customer PARTITION (region = 'us') VALUES (3, 'by david', "
              "'333-33-3333')",
              f"INSERT INTO {DB}.promotion VALUES (2, 'by david')"],
    "mary": [f"INSERT INTO {DB}.promotion VALUES (3, 'by mary')",
             f"SELECT count(*) FROM {DB}.promotion",
             f"INSERT INTO {DB}.customer PARTITION (region = 'us') VALUES (4, 'by mary', "
             "'444-44-4444')",
             # Files by path, outside her storage role (the archive bucket): refused.
             "CREATE TEMPORARY VIEW raw USING parquet OPTIONS (path 's3a://archive/finance')",
             "SELECT count(*) FROM raw"],
    "john": [f"SELECT * FROM {DB}.customer_public ORDER BY id",
             f"SELECT * FROM {DB}.customer_eu",
             # The table itself: narrowed to what the views show (no ssn, no hidden rows).
             f"SELECT * FROM {DB}.customer ORDER BY id",
             f"SELECT ssn FROM {DB}.customer",
             f"SELECT count(*) FROM {DB}.store_sales",
             f"INSERT INTO {DB}.store_sales VALUES (4, 'by john')",
             f"DROP TABLE {DB}.customer"],
}


def step(msg):
    print(f"\n== {msg}", flush=True)


JAR = ROOT / "target" / "hms-guard-spark.jar"
# hms-guard-spark in every user's session (as a platform would put it in spark-defaults):
# writes and files by path are asked about inside Spark, before any file is written.
EXTENSION = {"spark.jars": str(JAR), "spark.sql.extensions": "hmsguard.spark.GuardExtension"}


def spark_as(lab, port, user, statements, conf=None):
    """The statements in a fresh Spark JVM as `user` (Spark sends it with set_ugi)."""
    env = dict(os.environ, HADOOP_USER_NAME=user, SPARK_AS_CONF=json.dumps(conf or {}))
    p = subprocess.run([sys.executable, str(ROOT / "tests" / "e2e" / "spark_as.py"), str(lab),
                        str(port), json.dumps(statements)], env=env, capture_output=True,
                       text=True, timeout=900)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
    if p.returncode != 0 or not lines:
        raise RuntimeError(f"Spark as {user} failed:\n{p.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def short_error(text):
    at = text.find("hms-guard:")
    return (text[at:] if at >= 0 else text).splitlines()[0][:400]


def show(user, results, summary):
    for r in results:
        print(f"\n{user}@spark-sql> {r['sql']};")
        if r["ok"]:
            if r["rows"]:
                print("  " + "\n  ".join(str(row) for row in r["rows"][:5]))
            else:
                print("  ok")
        else:
            print(f"  Error: {short_error(r['error'])}")
        summary.append((user, r["sql"], "ok" if r["ok"] else "refused"))


def admin_sql(port, *args):
    """`hms-guard sql` as admin through hms-guard (ARGS: -f FILE, -e STATEMENTS…); its output."""
    r = subprocess.run([hms.guard_bin(), "sql", "--uri", f"thrift://127.0.0.1:{port}",
                        "--user", "admin", *args], capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise RuntimeError(f"hms-guard sql {' '.join(args)} failed:\n{r.stderr}")
    return r.stdout


def main():
    lab, mode = Path(sys.argv[1]), sys.argv[2]
    t0 = time.monotonic()
    metastore = guard = moto = None
    audit = lab / "audit.jsonl"
    summary = []
    try:
        step("starting a Hive Metastore 2.3 (Derby; s3a://datalake emulated on local disk)")
        metastore = hms.Metastore(lab).start()
        print(f"metastore  {metastore.uri}  (ready in {metastore.started_in:.1f}s)")

        storage, env = '[storage]\nenabled = false\n', None
        if mode != "off":
            step("starting the AWS stand-in (moto server, IAM enforced) for the storage checks")
            moto = moto_lab.MotoLab()
            facts = moto.start()
            print(f"moto       {facts['endpoint']}  (admin's storage role: etl, read/write "
                  "s3://datalake/datawarehouse/ only; everyone else: defloc/ and temp/)")
            storage = moto_lab.storage_toml(facts, user_roles={"admin": "etl"})
            env = moto_lab.guard_env(facts)

        step(f"starting hms-guard in front of it (authz.mode = {mode})")
        guard = hms.Guard(lab, metastore.port, name="hms-guard", env=env,
                          extra=(f'[authz]\nmode = "{mode}"\n\n'
                                 f'[audit]\nsink = "file"\npath = "{audit}"\n\n' + storage)
                          ).start()
        print(f"hms-guard  {guard.uri}  admin http://127.0.0.1:{guard.admin_port}"
              "/metrics /readyz")
        print(f"config     {guard.config}")

        step("admin (Spark, its own JVM): the database, the tables, a row in each")
        show("admin", spark_as(lab, guard.port, "admin", ADMIN), summary)

        step("admin: roles sales, marketing, finance and their grants; david, mary, john "
             "(hms-guard sql -f demo/grants.sql)")
        admin_sql(guard.port, "-f", str(GRANTS_SQL))
        for line in GRANTS_SQL.read_text().splitlines():
            if line.strip() and not line.startswith("--"):
                print(f"  {line}")
        print("  " + admin_sql(guard.port, "--plan", str(GRANTS_SQL)).splitlines()[-1]
              + "  (hms-guard sql --plan: the page holds)")
        step("who can read customer, and through which role (hms-guard access --table)")
        r = subprocess.run([hms.guard_bin(), "access", "--config", str(guard.config),
                            "--table", f"{DB}.customer"], capture_output=True, text=True,
                           timeout=120)
        print(("  " + r.stdout.rstrip().replace("\n", "\n  ")) if r.returncode == 0
              else f"  hms-guard access failed: {r.stderr}")

        for user, statements in USERS.items():
            step(f"{user} ({MEMBERS[user]}) works from Spark (own JVM, set_ugi {user})")
            show(user, spark_as(lab, guard.port, user, statements, EXTENSION), summary)

        step("what the metastore holds, asked directly")
        with hms.hms_client(metastore.port) as c:
            for t in TABLES:
                loc = c.get_table(DB, t).sd.location
                d = hms.bucket_dir(lab) / loc.split("s3a://datalake/", 1)[1]
                data = [f for f in d.rglob("*") if f.is_file() and not f.name.startswith((".", "_"))]
                if t in TEXT_TABLES:
                    rows = sum(len(f.read_text().splitlines()) for f in data)
                    print(f"  {DB}.{t:<12} {loc}  rows: {rows}")
                else:
                    print(f"  {DB}.{t:<12} {loc}  Parquet files: {len(data)}, partitions: "
                          f"{c.get_partition_names(DB, t, -1)}")
            print(f"  tables: {sorted(c.get_all_tables(DB))}")
        print("  (mary's refused INSERT left no row: hms-guard-spark asked hms-guard before Spark\n"
              "  wrote a file. Without the extension Spark writes the files first and the\n"
              "  metastore hears of it afterwards, if at all: docs/SPARK.md.)")

        if audit.exists():
            step(f"hms-guard's audit: the users' denials ({audit})")
            for line in audit.read_text().splitlines():
                e = json.loads(line)
                if e.get("user") in MEMBERS and e.get("decision") == "deny":
                    print(f"  {e['user']:<6} {e['method']:<28} {e.get('database') or ''}."
                          f"{e.get('table') or '':<12} {e['decision']:<5} {e['reason']}: "
                          f"{(e.get('required_privilege') or '')[:70]}")

            step("hms-guard's audit: what john was given of customer (reason narrowed)")
            seen = set()
            for line in audit.read_text().splitlines():
                e = json.loads(line)
                key = (e.get("method"), e.get("given"))
                if e.get("reason") == "narrowed" and key not in seen:
                    seen.add(key)
                    print(f"  {e['user']:<6} {e['method']:<28} {e.get('table') or '':<10} "
                          f"given: {e['given']}")

        step("who did what, and what hms-guard decided")
        print(f"  {'user':<6} {'result':<8} statement")
        for user, sql, res in summary:
            print(f"  {user:<6} {res:<8} {sql[:90]}")
    finally:
        step("stopping everything")
        for part in (guard, metastore, moto):
            if part is not None:
                part.stop()
    print(f"done in {time.monotonic() - t0:.0f}s. Logs and configs in {lab}:")
    print(f"  hms-guard   {lab}/hms-guard.log (JSON), {audit} (audit), {lab}/hms-guard.toml")
    print(f"  metastore   {lab}/hms/metastore.log, {lab}/hms/conf/")
    print(f"  spark       {lab}/spark-<user>-<pid>/spark.log")
    print(f"  s3a bucket  {hms.bucket_dir(lab)}")


if __name__ == "__main__":
    main()
