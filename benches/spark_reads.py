"""The cost of hms-guard-spark on reads: one read-only Spark workload run by two Spark JVMs side
by side, one with the extension (target/hms-guard-spark.jar) and one without, both through the
same enforcing hms-guard in front of a real metastore (the lab's), rounds interleaved (the order
alternates each round). Prints per-round times, the medians, their ratio, and how many questions
the workload asked (a read of tables asks none).

    benches/spark_reads.sh            # builds what it needs, then runs this (docs/BENCHMARKS.md)

Environment: SPARK_READS_ROUNDS (10), SPARK_READS_QUERIES (how often each query runs per round,
5), HMS_GUARD_BIN (the hms-guard binary), SPARK_READS_JSON (where to write the results).
Usage (internal): spark_reads.py worker LAB PORT ext|plain   — a JVM that runs the workload on
each "run" line of stdin and prints one JSON line per run."""
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "lab"))
import hms  # noqa: E402

JAR = ROOT / "target" / "hms-guard-spark.jar"
DB = "reads_db"
QUERIES = [
    f"SELECT count(*) FROM {DB}.facts",
    f"SELECT k, sum(v) FROM {DB}.facts GROUP BY k ORDER BY k",
    f"SELECT f.k, d.name, count(*) FROM {DB}.facts f JOIN {DB}.dims d ON f.k = d.k "
    "GROUP BY f.k, d.name",
    f"SELECT * FROM {DB}.facts WHERE v > 990 ORDER BY v LIMIT 5",
    f"SELECT count(DISTINCT k) FROM {DB}.facts WHERE k IN (SELECT k FROM {DB}.dims)",
]
SEED = [
    f"CREATE DATABASE IF NOT EXISTS {DB}",
    f"CREATE TABLE {DB}.facts (k INT, v INT) USING parquet",
    f"CREATE TABLE {DB}.dims (k INT, name STRING) STORED AS PARQUET",
    f"INSERT INTO {DB}.facts SELECT id % 20, id % 1000 FROM range(20000)",
    f"INSERT INTO {DB}.dims SELECT id, concat('d', id) FROM range(20)",
]


def worker(lab, port, mode):
    extra = {}
    if mode == "ext":
        extra = {"spark.jars": str(JAR), "spark.sql.extensions": "hmsguard.spark.GuardExtension"}
    spark = hms.spark_session(lab, port, app=f"reads-{mode}", name=f"spark-reads-{mode}",
                              extra_conf=extra)
    spark.sparkContext.setLogLevel("ERROR")
    repeat = int(os.environ.get("SPARK_READS_QUERIES", "5"))
    print("READY", flush=True)
    try:
        for line in sys.stdin:
            cmd = line.strip()
            if cmd == "quit":
                break
            if cmd == "seed":
                for s in SEED:
                    spark.sql(s).collect()
                print(json.dumps({"seeded": True}), flush=True)
                continue
            times = []
            for _ in range(repeat):
                for q in QUERIES:
                    t0 = time.perf_counter()
                    spark.sql(q).collect()
                    times.append(time.perf_counter() - t0)
            print(json.dumps({"seconds": sum(times), "queries": len(times)}), flush=True)
    finally:
        hms.stop_spark(spark)


class Worker:
    def __init__(self, lab, port, mode, user):
        env = dict(os.environ, HADOOP_USER_NAME=user)
        self.p = subprocess.Popen([sys.executable, __file__, "worker", str(lab), str(port), mode],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                  env=env, stderr=open(Path(lab) / f"reads-{mode}.err", "w"))
        self.wait_for("READY")

    def wait_for(self, prefix):
        for line in self.p.stdout:
            if line.startswith(prefix):
                return line
        raise RuntimeError(f"the worker ended before {prefix!r} (see reads-*.err in the lab)")

    def ask(self, cmd):
        self.p.stdin.write(cmd + "\n")
        self.p.stdin.flush()
        return json.loads(self.wait_for("{"))

    def stop(self):
        try:
            self.p.stdin.write("quit\n")
            self.p.stdin.close()
            self.p.wait(timeout=120)
        except Exception:  # noqa: BLE001 - best effort, then kill
            self.p.kill()


def questions(guard):
    return sum(v for _, v in hms.metric_series(guard.metrics(), "hms_guard_questions_total"))


def main():
    assert JAR.is_file(), f"{JAR} missing: run spark/build.sh"
    rounds = int(os.environ.get("SPARK_READS_ROUNDS", "10"))
    lab = ROOT / "target" / "spark-reads-lab"
    subprocess.run(["rm", "-rf", str(lab)], check=True)
    lab.mkdir(parents=True)
    metastore = guard = None
    workers = []
    try:
        metastore = hms.Metastore(lab).start()
        guard = hms.Guard(lab, metastore.port, name="guard-reads",
                          extra='[authz]\nmode = "enforce"\nadmin_users = ["reader"]\n\n'
                                '[storage]\nenabled = false\n').start()
        ext = Worker(lab, guard.port, "ext", "reader")
        plain = Worker(lab, guard.port, "plain", "reader")
        workers = [ext, plain]
        plain.ask("seed")
        for w in workers:  # warm-up: JIT, caches, file listings
            w.ask("run")
        asked_before = questions(guard)
        results = {"ext": [], "plain": []}
        for r in range(rounds):
            order = [("ext", ext), ("plain", plain)]
            if r % 2:
                order.reverse()
            for name, w in order:
                s = w.ask("run")["seconds"]
                results[name].append(s)
                print(f"  round {r + 1:2} {name:<5} {s:7.3f} s", flush=True)
        asked = questions(guard) - asked_before
        med = {k: statistics.median(v) for k, v in results.items()}
        ratios = [e / p for e, p in zip(results["ext"], results["plain"])]
        out = {"rounds": rounds, "queries_per_round": len(QUERIES) * int(
            os.environ.get("SPARK_READS_QUERIES", "5")), "seconds": results, "median": med,
            "ext_over_plain_median_of_rounds": statistics.median(ratios),
            "ext_over_plain_of_medians": med["ext"] / med["plain"],
            "questions_during_reads": asked}
        print(json.dumps(out, indent=1))
        print(f"with / without hms-guard-spark: {out['ext_over_plain_median_of_rounds']:.3f}x "
              f"(median of per-round ratios), medians {med['ext']:.3f} s / {med['plain']:.3f} s; "
              f"questions asked by the reads: {asked:g}")
        dest = os.environ.get("SPARK_READS_JSON")
        if dest:
            Path(dest).write_text(json.dumps(out, indent=1))
        assert asked == 0, "a read of tables asked hms-guard"
    finally:
        for w in workers:
            w.stop()
        for part in (guard, metastore):
            if part is not None:
                part.stop()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        worker(Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
    else:
        main()
