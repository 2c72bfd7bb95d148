"""What the shared metadata cache ([cache], docs/OPERATIONS.md) does for a Spark workload: six
metadata-heavy statements over a 300-partition table, each run once per Spark session, from
Spark sessions started one after another (a new JVM each), against three targets in front of the
same real metastore (the lab's, recording its notification log):

    direct           Spark -> relay -> metastore
    hms-guard        Spark -> hms-guard (enforcing, no cache) -> relay -> metastore
    hms-guard-cache  Spark -> hms-guard (enforcing, [cache] enabled, [notifications] followed)
                            -> relay -> metastore

Each target has its own relay (tests/lab/relay.py), which counts the calls that reach the
metastore by method. Phase A (relays with no delay): SPARK_CACHE_SESSIONS sessions per target,
the targets taking turns; the calls each session made at the metastore. Phase B (relays adding
SPARK_CACHE_DELAY_MS per call, a slow metastore): SPARK_CACHE_ROUNDS rounds, one session per
timed target per round, the order rotating each round; the wall time of each statement, medians
over rounds. The cache is warm from the previous session in phase B (the realistic case: the
proxy outlives Spark sessions); one cold session (hms-guard-cache restarted just before it) is
measured too and reported apart.

    benches/spark_cache.sh            # builds what it needs, then runs this (docs/BENCHMARKS.md)

Each session also asks its relay (its control port) for the calls so far between statements:
the calls each statement made. Calls that reach the metastore with no client at all (hms-guard's
notification-log follower) are measured over an idle window first and counted apart.

Environment: SPARK_CACHE_SESSIONS (4), SPARK_CACHE_ROUNDS (4), SPARK_CACHE_DELAY_MS (20),
SPARK_CACHE_PARTITIONS (300), SPARK_CACHE_TIMED (the targets timed in phase B, default
"direct hms-guard-cache"; add hms-guard for the proxy without its cache), HMS_GUARD_BIN,
SPARK_CACHE_AUTHZ_TTL_MS (both proxies' authz.cache_ttl_ms; default: its default),
SPARK_CACHE_TTL_MS (the cache's ttl_ms; default: its default), SPARK_CACHE_JSON (where to write
the results). SPARK_CACHE_ROUNDS=0 skips phase B.

Usage (internal): spark_cache.py session LAB PORT NAME seed|workload — one Spark JVM that runs
the statements and prints one JSON line."""
import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "lab"))
import hms  # noqa: E402
from relay import RelayThread  # noqa: E402

DB = "cache_db"
USER = "analyst"  # holds SELECT on events and dims (granted by admin, the owner); not on secret
PARTITIONS = int(os.environ.get("SPARK_CACHE_PARTITIONS", "300"))
ROWS_PER_PARTITION = 10
QUERIES = [  # (name, statement, the rows it must return: a number or None)
    ("show_tables", f"SHOW TABLES IN {DB}", None),
    ("describe", f"DESCRIBE TABLE {DB}.events", 7),  # 4 columns, the partition block
    ("show_partitions", f"SHOW PARTITIONS {DB}.events", PARTITIONS),
    ("count_pruned", f"SELECT count(*) FROM {DB}.events WHERE day = 42", 1),
    ("count_all", f"SELECT count(*) FROM {DB}.events", 1),
    ("tblproperties", f"SHOW TBLPROPERTIES {DB}.events", None),
]
METADATA = ["show_tables", "describe", "show_partitions", "count_pruned"]  # target (b)
SEED = [
    f"CREATE DATABASE {DB}",
    f"CREATE TABLE {DB}.events (id BIGINT, v INT, name STRING, day INT) USING parquet "
    "PARTITIONED BY (day)",
    f"INSERT INTO {DB}.events SELECT id, CAST(id % 1000 AS INT), concat('n', id), "
    f"CAST(id % {PARTITIONS} AS INT) FROM range({PARTITIONS * ROWS_PER_PARTITION})",
    f"CREATE TABLE {DB}.dims (k INT, label STRING) STORED AS PARQUET",
    f"INSERT INTO {DB}.dims SELECT id, concat('d', id) FROM range(20)",
    f"CREATE TABLE {DB}.secret (k INT) STORED AS PARQUET",
]
TARGETS = ["direct", "hms-guard", "hms-guard-cache"]
AUTHZ_TTL_MS = os.environ.get("SPARK_CACHE_AUTHZ_TTL_MS")  # authz.cache_ttl_ms (default 30 s)
GUARD_CONF = ('[authz]\nmode = "enforce"\n'
              + (f"cache_ttl_ms = {int(AUTHZ_TTL_MS)}\n" if AUTHZ_TTL_MS else "")
              + '\n[storage]\nenabled = false\n')
CACHE_TTL_MS = os.environ.get("SPARK_CACHE_TTL_MS")  # cache.ttl_ms (default 300 s)
CACHE_CONF = ("\n[cache]\nenabled = true\n"
              + (f"ttl_ms = {int(CACHE_TTL_MS)}\n" if CACHE_TTL_MS else "")
              + "\n[notifications]\nenabled = true\n")


# ---------------------------------------------------------------------------------------------
# one Spark session (its own process and JVM)


def relay_methods():
    """{method: calls} so far at this session's relay (its control port), or {} without one."""
    cport = os.environ.get("SPARK_CACHE_CONTROL")
    if not cport:
        return {}
    with socket.create_connection(("127.0.0.1", int(cport)), timeout=10) as s:
        s.sendall(b"methods\n")
        return json.loads(s.makefile().readline())


def session(lab, port, name, mode):
    t0 = time.perf_counter()
    spark = hms.spark_session(lab, port, app=f"cache-{name}", name=name)
    spark.sparkContext.setLogLevel("ERROR")
    out = {"jvm_start": time.perf_counter() - t0, "seconds": {}, "rows": {}, "calls": {}}
    try:
        if mode == "seed":
            for s in SEED:
                spark.sql(s).collect()
            print(json.dumps({"seeded": True}), flush=True)
            return
        # The first metastore call of the JVM: Spark's Hive client starts (set_ugi, the
        # functions, the default database) and reads the workload's database.
        before = relay_methods()
        t = time.perf_counter()
        spark.sql(f"USE {DB}").collect()
        out["seconds"]["use_db"] = time.perf_counter() - t
        after = relay_methods()
        out["calls"]["use_db"], before = diff(after, before), after
        for q, sql, _ in QUERIES:
            t = time.perf_counter()
            rows = spark.sql(sql).collect()
            out["seconds"][q] = time.perf_counter() - t
            after = relay_methods()
            out["calls"][q], before = diff(after, before), after
            out["rows"][q] = len(rows)
            if q == "show_tables":
                out["tables"] = sorted(r.tableName for r in rows)
            elif q == "count_pruned":
                out["count_pruned"] = rows[0][0]
            elif q == "count_all":
                out["count_all"] = rows[0][0]
        print(json.dumps(out), flush=True)
    finally:
        hms.stop_spark(spark)


def run_session(lab, port, name, mode, user, control=None):
    env = dict(os.environ, HADOOP_USER_NAME=user)
    env.pop("SPARK_CACHE_CONTROL", None)
    if control:
        env["SPARK_CACHE_CONTROL"] = str(control)
    with open(Path(lab) / f"{name}.err", "a") as err:
        p = subprocess.run([sys.executable, __file__, "session", str(lab), str(port), name, mode],
                           stdout=subprocess.PIPE, stderr=err, text=True, env=env, timeout=600)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if p.returncode != 0 or not lines:
        raise RuntimeError(f"the {name} session failed ({p.returncode}); see {lab}/{name}.err "
                           f"and {lab}/{name}/spark.log")
    return json.loads(lines[-1])


def check(target, r):
    """The workload saw what it should: every row, and the listing filtered by hms-guard."""
    for q, _, want in QUERIES:
        if want is not None:
            assert r["rows"][q] == want, (target, q, r["rows"][q], want)
    assert r["count_all"] == PARTITIONS * ROWS_PER_PARTITION, (target, r["count_all"])
    assert r["count_pruned"] == ROWS_PER_PARTITION, (target, r["count_pruned"])
    want = ["dims", "events", "secret"] if target == "direct" else ["dims", "events"]
    assert r["tables"] == want, (target, r["tables"])


# ---------------------------------------------------------------------------------------------
# the bench


def diff(after, before):
    d = {k: v - before.get(k, 0) for k, v in after.items()}
    return {k: v for k, v in sorted(d.items()) if v}


def workload_only(per_statement, background):
    return {q: {k: v for k, v in m.items() if k not in background}
            for q, m in per_statement.items()}


def cache_metrics(guard):
    text = guard.metrics()
    out = {}
    for result in ("hit", "miss", "expired", "bypassed"):
        out[result] = sum(v for _, v in hms.metric_series(
            text, "hms_guard_cache_lookups_total", cache="replies", result=result))
    return out


def med(xs):
    return statistics.median(xs) if xs else None


def main():
    sessions = int(os.environ.get("SPARK_CACHE_SESSIONS", "4"))
    rounds = int(os.environ.get("SPARK_CACHE_ROUNDS", "4"))
    delay_ms = float(os.environ.get("SPARK_CACHE_DELAY_MS", "20"))
    timed = os.environ.get("SPARK_CACHE_TIMED", "direct hms-guard-cache").split()
    assert set(timed) <= set(TARGETS) and "direct" in timed and "hms-guard-cache" in timed, timed
    lab = ROOT / "target" / "spark-cache-lab"
    subprocess.run(["rm", "-rf", str(lab)], check=True)
    lab.mkdir(parents=True)
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        # The tables, owned by admin, written directly with the notification log off (the
        # lab's log keeps an event's message in a Derby column of 32,700 characters, which
        # the add_partitions of a seeding INSERT overflows); then the metastore restarted
        # with its log on. SELECT on two of the tables for the user.
        metastore = hms.Metastore(lab, notifications=False).start()
        stack.callback(metastore.stop)
        run_session(lab, metastore.port, "spark-seed", "seed", "admin")
        metastore.stop()
        metastore.notifications = True
        metastore.start()
        from hmsclient.genthrift.hive_metastore import ttypes as tt
        admin = hms.connect(metastore.port, "admin")
        for t in ("events", "dims"):
            hms.grant(admin, tt.HiveObjectRef(tt.HiveObjectType.TABLE, DB, t, None, None), USER,
                      "SELECT")
        admin._transport.close()
        relays = {t: stack.enter_context(RelayThread(metastore.port, delay_ms=0))
                  for t in TARGETS}
        controls = {}  # each relay's control port, asked by the session between statements
        for t, r in relays.items():
            controls[t] = hms.free_port()
            r.relay.control = asyncio.run_coroutine_threadsafe(asyncio.start_server(
                r.relay._control, "127.0.0.1", controls[t]), r.loop).result(10)
        guards = {
            "hms-guard": hms.Guard(lab, relays["hms-guard"].port, name="guard-plain",
                                   extra=GUARD_CONF),
            "hms-guard-cache": hms.Guard(lab, relays["hms-guard-cache"].port, name="guard-cache",
                                         extra=GUARD_CONF + CACHE_CONF),
        }
        for g in guards.values():
            g.start()
            stack.callback(g.stop)
        ports = {"direct": relays["direct"].port,
                 **{t: g.port for t, g in guards.items()}}

        # What reaches the metastore with no client at all (readiness, the log's follower).
        idle_s = 5.0
        before = {t: r.methods for t, r in relays.items()}
        time.sleep(idle_s)
        idle = {t: diff(relays[t].methods, before[t]) for t in TARGETS}
        background = {m for d in idle.values() for m in d}
        print(f"idle {idle_s:.0f} s, calls at the metastore: {idle}", flush=True)

        # Phase A: calls at the metastore per session.
        calls = {t: [] for t in TARGETS}
        for s in range(sessions):
            order = TARGETS[s % 3:] + TARGETS[:s % 3]
            for t in order:
                before = relays[t].methods
                t0 = time.monotonic()
                r = run_session(lab, ports[t], f"spark-{t}", "workload", USER, controls[t])
                took = time.monotonic() - t0
                check(t, r)
                m = diff(relays[t].methods, before)
                work = {k: v for k, v in m.items() if k not in background}
                calls[t].append({"methods": m, "workload": sum(work.values()),
                                 "per_statement": workload_only(r["calls"], background),
                                 "background": sum(m.values()) - sum(work.values()),
                                 "seconds": took})
                print(f"  calls session {s + 1} {t:<16} {sum(work.values()):5} "
                      f"(+{sum(m.values()) - sum(work.values())} background) in {took:.1f} s",
                      flush=True)
        cache_after_a = cache_metrics(guards["hms-guard-cache"])

        # Phase B: a slow metastore; wall time per statement.
        times = {t: [] for t in timed}
        cold = cache_after_b = None
        if rounds:
            cold, cache_after_b = phase_b(lab, relays, guards, ports, controls, background,
                                          timed, rounds, delay_ms, times)
        elapsed = time.monotonic() - started
    report(sessions, rounds, delay_ms, timed, idle, idle_s, calls, cache_after_a, cold,
           cache_after_b, times, background, elapsed)


def phase_b(lab, relays, guards, ports, controls, background, timed, rounds, delay_ms, times):
    for r in relays.values():
        r._call(lambda r=r: setattr(r.relay, "delay", delay_ms / 1000.0))
    g = guards["hms-guard-cache"]
    g.stop()
    g.start()  # an empty cache: one cold session first
    cold = run_session(lab, g.port, "spark-hms-guard-cache", "workload", USER,
                       controls["hms-guard-cache"])
    check("hms-guard-cache", cold)
    print(f"  cold hms-guard-cache session: {sum(cold['seconds'].values()):.2f} s", flush=True)
    for rnd in range(rounds):
        order = timed[rnd % len(timed):] + timed[:rnd % len(timed)]
        for t in order:
            r = run_session(lab, ports[t], f"spark-{t}", "workload", USER, controls[t])
            check(t, r)
            times[t].append(r)
            print(f"  round {rnd + 1} {t:<16} "
                  + " ".join(f"{q}={v * 1000:.0f}" for q, v in r["seconds"].items())
                  + " ms", flush=True)
    return cold, cache_metrics(g)


def report(sessions, rounds, delay_ms, timed, idle, idle_s, calls, cache_after_a, cold,
           cache_after_b, times, background, elapsed):
    steps = ["use_db"] + [q for q, _, _ in QUERIES]
    out = {
        "sessions": sessions, "rounds": rounds, "delay_ms": delay_ms, "partitions": PARTITIONS,
        "queries": {q: sql for q, sql, _ in QUERIES}, "user": USER,
        "idle_calls": idle, "idle_seconds": idle_s,
        "calls": calls,
        "calls_total": {t: sum(c["workload"] for c in calls[t]) for t in TARGETS},
        "calls_median_session": {t: med([c["workload"] for c in calls[t]]) for t in TARGETS},
        "background_total": {t: sum(c["background"] for c in calls[t]) for t in TARGETS},
        "methods_total": {t: diff(_sum_methods(calls[t]), {}) for t in TARGETS},
        "cache_lookups_after_phase_a": cache_after_a,
        "cache_lookups_after_phase_b": cache_after_b,
        "authz_cache_ttl_ms": int(AUTHZ_TTL_MS) if AUTHZ_TTL_MS else "default",
        "cache_ttl_ms": int(CACHE_TTL_MS) if CACHE_TTL_MS else "default",
        "elapsed_seconds": elapsed,
    }
    ct = out["calls_total"]
    warm = med([c["workload"] for c in calls["hms-guard-cache"][1:]])
    out["calls_ratio"] = {
        "direct_over_cache": ct["direct"] / max(ct["hms-guard-cache"], 1),
        "guard_over_cache": ct["hms-guard"] / max(ct["hms-guard-cache"], 1),
        "direct_over_cache_with_background": ct["direct"] / max(
            ct["hms-guard-cache"] + out["background_total"]["hms-guard-cache"], 1),
        "direct_median_over_cache_warm_median": (
            out["calls_median_session"]["direct"] / max(warm, 1) if warm is not None else None),
    }
    out["verdicts"] = {
        "calls_5x_fewer_than_direct": out["calls_ratio"]["direct_over_cache"] >= 5,
        "calls_5x_fewer_than_guard": out["calls_ratio"]["guard_over_cache"] >= 5,
    }
    if rounds:
        out.update({
            "cold_session_seconds": cold["seconds"],
            "cold_session_calls": workload_only(cold["calls"], background),
            "timed_calls": {t: [sum(sum(m.values()) for m in workload_only(
                r["calls"], background).values()) for r in times[t]] for t in timed},
            "timed_per_statement_calls": {t: [workload_only(r["calls"], background)
                                              for r in times[t]] for t in timed},
            "seconds": {t: [r["seconds"] for r in times[t]] for t in timed},
            "jvm_start": {t: med([r["jvm_start"] for r in times[t]]) for t in timed},
            "median_seconds": {t: {q: med([r["seconds"][q] for r in times[t]]) for q in steps}
                               for t in timed},
        })
        mc = out["median_seconds"]
        out["speedup_direct_over_cache"] = {q: mc["direct"][q] / mc["hms-guard-cache"][q]
                                            for q in steps}
        out["verdicts"]["metadata_2x_faster_than_direct"] = {
            q: out["speedup_direct_over_cache"][q] >= 2 for q in METADATA}
    uncached = out["methods_total"]["hms-guard-cache"]
    print(json.dumps(out, indent=1))
    print(f"calls at the metastore over {sessions} sessions: "
          + ", ".join(f"{t} {ct[t]}" for t in TARGETS)
          + f"; direct/cache {out['calls_ratio']['direct_over_cache']:.1f}x, "
          f"hms-guard/cache {out['calls_ratio']['guard_over_cache']:.1f}x")
    print(f"what still reached the metastore through the cache: {uncached}")
    for q in steps if rounds else ():
        mc = out["median_seconds"]
        line = " ".join(f"{t} {mc[t][q] * 1000:7.0f} ms" for t in timed)
        print(f"  {q:<16} {line}   direct/cache {out['speedup_direct_over_cache'][q]:.2f}x")
    print(f"verdicts: {out['verdicts']}; {elapsed:.0f} s in all")
    dest = os.environ.get("SPARK_CACHE_JSON")
    if dest:
        Path(dest).write_text(json.dumps(out, indent=1))


def _sum_methods(entries):
    total = {}
    for c in entries:
        for k, v in c["methods"].items():
            total[k] = total.get(k, 0) + v
    return total


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "session":
        session(Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5])
    else:
        main()
