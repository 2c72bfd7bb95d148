"""A synthetic metastore for benchmarks and tests: D databases of T tables each, created through
the metastore's own Thrift API (hmsclient's generated client), as fast as the metastore takes
them.

The layout is deterministic (`Spec.table(i, j)` says what table j of database i is):

    database  {name}_db_{i}          at {prefix}/db_{i}
    table     t_{j}                  at {prefix}/db_{i}/t_{j}, EXTERNAL, four columns
    every `partitioned_every`-th table (j % partitioned_every == 0) is partitioned by `ds`
    with `partitions` partitions at {table location}/ds=2026-01-{k};
    every `outside_every`-th partitioned table has its LAST partition outside its table's
    location, at {outside_prefix}/db_{i}/t_{j}/ds=... (the location index records those).

Creating a table that exists already is not an error (it is counted as skipped and its
partitions are added if missing), so an interrupted run can be resumed with the same command.

CLI (the lab venv of tests/lab/setup.sh):

    python tests/lab/synth.py --metastore 127.0.0.1:9083 --databases 3 --tables 20
    python tests/lab/synth.py --lab /tmp/synth-lab --databases 100 --tables 1000 --connections auto

With --lab a metastore is started in that lab directory (tests/lab/hms.py; its Derby database
is DIR/hms/metastore_db and stays there) and stopped at the end. --connections auto first
measures create_table throughput with 1, 2 and 4 connections (--probe-connections) on the run's
own first tables, after a warm-up, and creates the rest with the best. The last line printed is
a JSON summary (tables/s, seconds, the probes' rates; with --lab the Derby database's size).
An unreachable metastore exits 2 with a message naming it."""
import argparse
import json
import queue
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import hms  # noqa: E402

OWNER = "synth"


class Unreachable(RuntimeError):
    """The metastore did not accept a connection or answer a first call."""


@dataclass(frozen=True)
class Spec:
    databases: int
    tables: int
    prefix: str = "s3a://datalake/synth"
    outside_prefix: str = "s3a://archive/synth"
    name: str = "synth"
    partitioned_every: int = 10
    partitions: int = 4
    outside_every: int = 3

    def db_name(self, i):
        return f"{self.name}_db_{i}"

    def db_location(self, i):
        return f"{self.prefix.rstrip('/')}/db_{i}"

    def table(self, i, j):
        """What table j of database i is: a dict with db, name, location, partitioned and
        partitions ([(ds value, location)], in order)."""
        loc = f"{self.db_location(i)}/t_{j}"
        partitioned = self.partitions > 0 and self.partitioned_every > 0 \
            and j % self.partitioned_every == 0
        parts = []
        if partitioned:
            nth = j // self.partitioned_every
            outside = self.outside_every > 0 and nth % self.outside_every == 0
            for k in range(self.partitions):
                ds = f"2026-01-{k + 1:02d}"
                base = loc
                if outside and k == self.partitions - 1:
                    base = f"{self.outside_prefix.rstrip('/')}/db_{i}/t_{j}"
                parts.append((ds, f"{base}/ds={ds}"))
        return {"db": self.db_name(i), "name": f"t_{j}", "location": loc,
                "partitioned": partitioned, "partitions": parts}

    def jobs(self):
        """(i, j) for every table, database by database."""
        return [(i, j) for i in range(self.databases) for j in range(self.tables)]


def _tt():
    from hmsclient.genthrift.hive_metastore import ttypes as tt
    return tt


def thrift_table(t):
    tt = _tt()
    cols = [tt.FieldSchema("id", "bigint", "row id"), tt.FieldSchema("name", "string", ""),
            tt.FieldSchema("amount", "decimal(12,2)", ""), tt.FieldSchema("ts", "timestamp", "")]
    sd = tt.StorageDescriptor(
        cols=cols, location=t["location"],
        inputFormat="org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat",
        outputFormat="org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat",
        serdeInfo=tt.SerDeInfo(None, "org.apache.hadoop.hive.ql.io.parquet.serde."
                               "ParquetHiveSerDe", {"serialization.format": "1"}),
        bucketCols=[], sortCols=[], parameters={}, numBuckets=-1)
    return tt.Table(tableName=t["name"], dbName=t["db"], owner=OWNER, sd=sd,
                    partitionKeys=[tt.FieldSchema("ds", "string", "")] if t["partitioned"]
                    else [],
                    parameters={"EXTERNAL": "TRUE", "synth": "1"}, tableType="EXTERNAL_TABLE")


def thrift_partitions(table, t):
    tt = _tt()
    out = []
    for ds, loc in t["partitions"]:
        sd = tt.StorageDescriptor(
            cols=table.sd.cols, location=loc, inputFormat=table.sd.inputFormat,
            outputFormat=table.sd.outputFormat, serdeInfo=table.sd.serdeInfo,
            bucketCols=[], sortCols=[], parameters={}, numBuckets=-1)
        out.append(tt.Partition(values=[ds], dbName=t["db"], tableName=t["name"], sd=sd,
                                parameters={}))
    return out


def parse_hostport(s):
    host, _, port = s.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{s!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def client(host, port, timeout=120):
    """An open hmsclient client of HOST:PORT; Unreachable if nothing listens there or it does
    not answer get_all_databases."""
    try:
        socket.create_connection((host, port), timeout=10).close()
    except OSError as e:
        raise Unreachable(f"metastore {host}:{port} unreachable: {e}") from None
    c = hms.hms_client(port, host=host, timeout=timeout)
    try:
        c.open()
        c.get_all_databases()
    except Exception as e:  # noqa: BLE001 - any failure of the first call: not a metastore
        try:
            c.close()
        except Exception:  # noqa: BLE001
            pass
        raise Unreachable(f"metastore {host}:{port} did not answer get_all_databases: "
                          f"{type(e).__name__}: {e}") from None
    return c


def create_databases(c, spec):
    tt = _tt()
    made = 0
    for i in range(spec.databases):
        try:
            c.create_database(tt.Database(name=spec.db_name(i), locationUri=spec.db_location(i),
                                          parameters={"synth": "1"}, ownerName=OWNER,
                                          ownerType=tt.PrincipalType.USER))
            made += 1
        except tt.AlreadyExistsException:
            pass
    return made


@dataclass
class Counts:
    created: int = 0
    skipped: int = 0
    partitions: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


def create_one(c, spec, i, j, counts):
    tt = _tt()
    t = spec.table(i, j)
    table = thrift_table(t)
    try:
        c.create_table(table)
        new = True
    except tt.AlreadyExistsException:
        new = False
    if t["partitions"]:
        c.add_partitions_req(tt.AddPartitionsRequest(
            dbName=t["db"], tblName=t["name"], parts=thrift_partitions(table, t),
            ifNotExists=not new, needResult=False))
    with counts.lock:
        if new:
            counts.created += 1
            counts.partitions += len(t["partitions"])
        else:
            counts.skipped += 1


def run_jobs(host, port, spec, jobs, connections, counts, progress=None):
    """Creates the tables of JOBS over CONNECTIONS parallel connections; the seconds it took.
    The first error of any worker is raised (after the others stopped)."""
    q = queue.Queue()
    for job in jobs:
        q.put(job)
    errors = []
    stop = threading.Event()
    clients = [client(host, port) for _ in range(connections)]

    def work(c):
        try:
            while not stop.is_set():
                try:
                    i, j = q.get_nowait()
                except queue.Empty:
                    return
                create_one(c, spec, i, j, counts)
        except Exception as e:  # noqa: BLE001 - reported by the caller
            errors.append(e)
            stop.set()
        finally:
            try:
                c.close()
            except Exception:  # noqa: BLE001
                pass

    t0 = time.monotonic()
    threads = [threading.Thread(target=work, args=(c,), daemon=True) for c in clients]
    for t in threads:
        t.start()
    while alive := [t for t in threads if t.is_alive()]:
        alive[0].join(timeout=1)  # returns at once when it ends: the time stays exact
        if progress:
            progress()
    if errors:
        e = errors[0]
        raise RuntimeError(f"creating tables failed: {type(e).__name__}: {e}") from e
    return time.monotonic() - t0


def generate(host, port, spec, connections=2, probe=300, log=None,
             probe_connections=(1, 2, 4)):
    """Generates SPEC on the metastore HOST:PORT over CONNECTIONS connections, or "auto":
    measures each of PROBE_CONNECTIONS on PROBE tables (after a warm-up of PROBE tables at two
    connections) and uses the best for the rest. Returns a summary dict (tables/s, seconds,
    per-probe rates)."""
    say = log or (lambda s: None)
    c = client(host, port)
    try:
        dbs = create_databases(c, spec)
    finally:
        c.close()
    jobs = spec.jobs()
    counts = Counts()
    t0 = time.monotonic()
    probes = {}
    pos = 0
    if connections == "auto":
        # The metastore's JIT warms up over the first few hundred calls: not measured.
        warm = probe
        run_jobs(host, port, spec, jobs[:warm], 2, counts)
        pos = warm
        for n in probe_connections:
            chunk = jobs[pos:pos + probe]
            pos += len(chunk)
            if not chunk:
                break
            secs = run_jobs(host, port, spec, chunk, n, counts)
            probes[n] = len(chunk) / secs
            say(f"probe: {n} connection(s): {len(chunk)} tables in {secs:.1f}s = "
                f"{probes[n]:.1f} tables/s")
        connections = max(probes, key=probes.get) if probes else 1
        say(f"using {connections} connection(s)")
    rest = jobs[pos:]
    last = [time.monotonic(), counts.created + counts.skipped]

    def progress():
        now = time.monotonic()
        if now - last[0] >= 60:
            done = counts.created + counts.skipped
            say(f"{done}/{len(jobs)} tables in {now - t0:.0f}s: {done / (now - t0):.1f} "
                f"tables/s overall, {(done - last[1]) / (now - last[0]):.1f} in the last minute")
            last[0], last[1] = now, done

    secs_rest = run_jobs(host, port, spec, rest, connections, counts, progress) if rest else 0.0
    total = time.monotonic() - t0
    return {"databases": spec.databases, "databases_created": dbs,
            "tables": len(jobs), "created": counts.created, "skipped": counts.skipped,
            "partitions": counts.partitions, "connections": connections,
            "seconds": round(total, 1),
            "tables_per_s": round(len(jobs) / total, 1) if total else None,
            "tables_per_s_main": round(len(rest) / secs_rest, 1) if secs_rest else None,
            "probe_tables_per_s": {str(k): round(v, 1) for k, v in probes.items()}}


def du(path):
    """Bytes under PATH (du -sb)."""
    out = subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--metastore", type=parse_hostport, metavar="HOST:PORT",
                       help="a running metastore")
    where.add_argument("--lab", metavar="DIR",
                       help="start a lab metastore in DIR (kept), stop it at the end")
    ap.add_argument("--databases", type=int, required=True)
    ap.add_argument("--tables", type=int, required=True, help="tables per database")
    ap.add_argument("--prefix", default=Spec.prefix)
    ap.add_argument("--outside-prefix", default=Spec.outside_prefix)
    ap.add_argument("--name", default=Spec.name, help="database name prefix")
    ap.add_argument("--partitioned-every", type=int, default=Spec.partitioned_every)
    ap.add_argument("--partitions", type=int, default=Spec.partitions)
    ap.add_argument("--outside-every", type=int, default=Spec.outside_every)
    ap.add_argument("--connections", default="auto", help="1, 2, 4, ... or auto")
    ap.add_argument("--probe", type=int, default=300, help="tables per probe with auto")
    ap.add_argument("--probe-connections", default="1,2,4",
                    help="connection counts measured with auto (default 1,2,4)")
    a = ap.parse_args(argv)
    conns = a.connections if a.connections == "auto" else int(a.connections)
    spec = Spec(a.databases, a.tables, a.prefix, a.outside_prefix, a.name,
                a.partitioned_every, a.partitions, a.outside_every)

    def say(s):
        print(f"synth.py: {s}", file=sys.stderr, flush=True)

    m = None
    try:
        if a.lab:
            lab = Path(a.lab).resolve()
            lab.mkdir(parents=True, exist_ok=True)
            m = hms.Metastore(lab).start()
            say(f"metastore {m.uri} started in {m.started_in:.1f}s, Derby at "
                f"{lab}/hms/metastore_db")
            host, port = "127.0.0.1", m.port
        else:
            host, port = a.metastore
        summary = generate(host, port, spec, conns, a.probe, log=say,
                           probe_connections=[int(n) for n in a.probe_connections.split(",")])
        if m is not None:
            m.stop()
            m = None
            summary["derby_bytes"] = du(lab / "hms" / "metastore_db")
            summary["lab"] = str(lab)
    except Unreachable as e:
        say(str(e))
        return 2
    except RuntimeError as e:
        say(str(e))
        return 1
    finally:
        if m is not None:
            m.stop()
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
