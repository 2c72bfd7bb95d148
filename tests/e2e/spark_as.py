"""Runs Spark SQL statements as one user (HADOOP_USER_NAME, which Spark sends with set_ugi) in
its own JVM, and prints one JSON object: per statement, the rows or the error message.
Usage: spark_as.py LAB_DIR METASTORE_PORT STATEMENTS_JSON
(SPARK_AS_CONF: more Spark settings as JSON, `metastore_uri` among them to name the metastore
by URI; SPARK_AS_JAVA_OPTS: more driver JVM options.)"""
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lab"))
import hms  # noqa: E402


def main():
    lab, port, stmts = Path(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3])
    user = os.environ.get("HADOOP_USER_NAME")
    # SPARK_AS_CONF (JSON) and SPARK_AS_JAVA_OPTS: more settings (e.g. Kerberos).
    extra = json.loads(os.environ.get("SPARK_AS_CONF", "{}"))
    uri = extra.pop("metastore_uri", port)
    spark = hms.spark_session(lab, uri, app=f"as-{user}", name=f"spark-{user}-{os.getpid()}",
                              extra_conf=extra, java_opts=os.environ.get("SPARK_AS_JAVA_OPTS", ""))
    spark.sparkContext.setLogLevel("ERROR")
    out = []
    try:
        for s in stmts:
            try:
                rows = [list(r) for r in spark.sql(s).collect()]
                out.append({"sql": s, "ok": True, "rows": rows})
            except Exception as e:  # noqa: BLE001 - reported to the test
                out.append({"sql": s, "ok": False, "error": str(e)[:2000]})
    finally:
        hms.stop_spark(spark)
    print("RESULT " + json.dumps(out, default=str))


if __name__ == "__main__":
    main()
