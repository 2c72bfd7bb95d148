#!/usr/bin/env bash
# benches/run.sh: the benchmark of docs/BENCHMARKS.md, in one command, on a fresh machine.
#
#   benches/run.sh            # ~7 minutes on 2 cores; results in target/bench-results.json
#
# 1. installs haproxy (apt) if missing, raises `ulimit -n`, builds hms-guard and the load
#    generator (release), sets up the lab (tests/lab/setup.sh) and starts a real Hive Metastore
#    (tests/lab/hms.py), with a database and a table for get_table, a view of that table (the
#    user `narrow` may SELECT it), a table of 3,000 partitions (`bench.parts`, partitioned by
#    a string `ds`) and a database of 3,000 tables (the user `lister` holds SELECT on each);
# 2. starts haproxy (mode tcp) and two hms-guard processes in front of the metastore: one with
#    hms-guard's defaults (authz.mode = enforce at the time of writing) and one with
#    authz.mode = off (pure pass-through);
# 3. `loadgen load`: getVersion and get_table at 1 and 8 connections, the targets (direct,
#    haproxy, hms-guard, and for get_table hms-guard-off, hms-guard-cache (the shared metadata
#    cache on, entries by TTL), hms-guard-tls: TLS with a client
#    certificate naming the caller, hms-guard-krb and hms-guard-krb-conf: Kerberos with QOP auth
#    and auth-conf, a KDC started on loopback) interleaved in rounds; `loadgen handshake`:
#    connection set-up time plain vs TLS vs Kerberos; `get_all_tables` of the 3,000 tables as
#    lister (direct, haproxy, hms-guard, and the baseline if given); `get_partitions_by_filter`
#    (most of the 3,000 partitions) and `get_partition_names` of bench.parts (direct, haproxy,
#    hms-guard, hms-guard-cache); in-process: `loadgen
#    decide` (a warm get_table decision), `loadgen narrow` (get_table read whole vs narrowed
#    to the view: decision and reply), `loadgen views` (a 10 KB view's analysis); then at 1
#    connection against a scripted upstream answering instantly (the relay's own overhead
#    without the metastore's noise);
# 4. peak RSS (VmHWM) of hms-guard, a fresh process for each measurement: 1,000 idle connections,
#    and a 256 MiB reply streamed from the scripted upstream `loadgen big-upstream` (fast reader
#    and slow reader), plus big-reply MiB/s direct / haproxy / hms-guard;
# 5. writes target/bench-results.json (and prints a summary with a verdict per target).
# Everything it started is stopped on exit.
#
# Knobs (environment): BENCH_SECONDS (measured seconds per target per round, 1.5),
# BENCH_ROUNDS (10), BENCH_SCRIPTED_ROUNDS (8), BENCH_CONNECTIONS ("1 8"),
# BENCH_WARMUP (seconds per target, 2), BENCH_IDLE_CONNECTIONS (1000), BENCH_BIG_MIB (256), BENCH_KEEP=1 keeps the work directory,
# BENCH_HMS_PORT=PORT uses an already running metastore on 127.0.0.1:PORT instead of the lab's,
# BENCH_BASELINE_BIN=PATH adds a target "hms-guard-base": that hms-guard binary (an earlier
# build) with the same default configuration, interleaved with the others in the get_table
# and listing rounds — a before/after comparison side by side in one run,
# BENCH_PARTS_SECONDS (measured seconds per target per round of the partition calls, 4: a
# direct call takes a good part of a second), BENCH_PARTS_ROUNDS (BENCH_ROUNDS),
# BENCH_PARTS_FILTER (`ds >= "2019-01-01"`: 2,635 of the 3,000 partitions),
# BENCH_ONLY=partitions: only the set-up and the partition rounds (and their verdicts).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

cache="${HMS_GUARD_CACHE:-$HOME/.cache/hms-guard}"
venv="$cache/venv"
secs="${BENCH_SECONDS:-1.5}"
rounds="${BENCH_ROUNDS:-10}"
scripted_rounds="${BENCH_SCRIPTED_ROUNDS:-8}"
conns_list="${BENCH_CONNECTIONS:-1 8}"
warmup="${BENCH_WARMUP:-2}"
idle_conns="${BENCH_IDLE_CONNECTIONS:-1000}"
big_mib="${BENCH_BIG_MIB:-256}"
parts_secs="${BENCH_PARTS_SECONDS:-4}"
parts_rounds="${BENCH_PARTS_ROUNDS:-$rounds}"
parts_filter="${BENCH_PARTS_FILTER:-ds >= \"2019-01-01\"}"
only="${BENCH_ONLY:-}"
case "$only" in
"" | partitions) ;;
*) echo "benches/run.sh: BENCH_ONLY=$only: the only part that runs alone is 'partitions'" >&2; exit 2 ;;
esac
target_dir="${CARGO_TARGET_DIR:-$root/target}"
out="$target_dir/bench-results.json"
loadavg_start=$(cut -d' ' -f1-3 /proc/loadavg)

log() { printf '== %s\n' "$*" >&2; }
die() { printf 'benches/run.sh: %s\n' "$*" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/hms-guard-bench.XXXXXX")
pids=()
hms_started=""
cleanup() {
    local rc=$?
    set +e
    for p in "${pids[@]}"; do
        kill "$p" 2>/dev/null
    done
    if [[ -f "$work/haproxy.pid" ]]; then
        kill "$(cat "$work/haproxy.pid")" 2>/dev/null
    fi
    if [[ -n "$hms_started" ]]; then
        stop_metastore
    fi
    for p in "${pids[@]}"; do
        wait "$p" 2>/dev/null
    done
    if [[ "${BENCH_KEEP:-0}" == 1 || $rc -ne 0 ]]; then
        echo "work directory kept: $work" >&2
    else
        rm -rf "$work"
    fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_port() { # host port seconds
    local i
    for ((i = 0; i < $3 * 10; i++)); do
        if (echo >"/dev/tcp/$1/$2") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    return 1
}

http_status() {
    python3 - "$1" <<'EOF'
import sys, urllib.request, urllib.error
try:
    print(urllib.request.urlopen(sys.argv[1], timeout=2).status)
except urllib.error.HTTPError as e:
    print(e.code)
except Exception:
    print(0)
EOF
}

# VmHWM / VmRSS of a process, in KiB.
vm() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }
# Peak RSS in KiB: VmHWM, or a larger VmRSS sampled earlier (the kernel updates VmHWM lazily).
# utime + stime of a process, in clock ticks (field 2, the name, has no spaces here).
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
peak() { local h; h=$(vm "$1" VmHWM); echo $((h > ${2:-0} ? h : ${2:-0})); }

# ---------------------------------------------------------------------------------------------
log "tools"
if ! command -v haproxy >/dev/null; then
    sudo=""
    [[ $(id -u) -eq 0 ]] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq haproxy >/dev/null
fi
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
nofile=$(ulimit -n)
need=$((idle_conns * 2 + 512))
[[ "$nofile" == unlimited || "$nofile" -ge "$need" ]] ||
    die "ulimit -n is $nofile; $need open files are needed (raise the hard limit)"

log "build (release)"
cargo build --release --locked --bin hms-guard
guard_bin="$target_dir/release/hms-guard"
lg=$(cargo bench --locked --bench loadgen --no-run --message-format=json |
    python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "loadgen" and m.get("executable"):
        print(m["executable"])')
[[ -x "$lg" ]] || die "could not build the load generator"

# ---------------------------------------------------------------------------------------------
hms_dir="$work/hms"
start_metastore() {
    "$venv/bin/python" tests/lab/hms.py start --dir "$hms_dir" --port "$hms_port"
}
stop_metastore() {
    "$venv/bin/python" tests/lab/hms.py stop --dir "$hms_dir" >/dev/null 2>&1
}
if [[ -n "${BENCH_HMS_PORT:-}" ]]; then
    # An already running metastore (not started, not stopped here); the venv must exist.
    hms_port=$BENCH_HMS_PORT
    log "metastore: using the one on port $hms_port"
else
    log "lab (tests/lab/setup.sh)"
    tests/lab/setup.sh
    log "metastore"
    hms_port=$(free_port)
    hms_started=1
    start_metastore
fi
wait_port 127.0.0.1 "$hms_port" 120 || die "metastore did not listen on $hms_port"

db=bench
table=t
"$venv/bin/python" - 127.0.0.1 "$hms_port" "$db" "$table" "$work/warehouse" "$only" <<'EOF'
# A database and a 20-column partitioned table, created as user `bench`.
import sys
from hmsclient import hmsclient
from hmsclient.genthrift.hive_metastore.ttypes import (
    AlreadyExistsException, Database, FieldSchema, SerDeInfo, StorageDescriptor, Table)
host, port, db, tbl, wh = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
only = sys.argv[6]
with hmsclient.HMSClient(host=host, port=port) as c:
    c.set_ugi("bench", [])
    try:
        c.create_database(Database(name=db, description="hms-guard benchmark",
                                   locationUri="file://%s/%s.db" % (wh, db), parameters={}))
    except AlreadyExistsException:
        pass
    cols = [FieldSchema(name="c%d" % i, type="string", comment="column %d" % i) for i in range(20)]
    sd = StorageDescriptor(
        cols=cols, location="file://%s/%s.db/%s" % (wh, db, tbl),
        inputFormat=hmsclient.INPUT_FORMAT, outputFormat=hmsclient.OUTPUT_FORMAT,
        compressed=False, numBuckets=-1,
        serdeInfo=SerDeInfo(name=tbl, serializationLib=hmsclient.SIMPLE_SERDE,
                            parameters={"field.delim": ","}),
        bucketCols=[], sortCols=[], parameters={})
    try:
        c.create_table(Table(tableName=tbl, dbName=db, owner="bench", sd=sd,
                             partitionKeys=[FieldSchema(name="dt", type="string", comment="")],
                             tableType="MANAGED_TABLE", parameters={"comment": "benchmark"}))
    except AlreadyExistsException:
        pass
    t = c.get_table(db, tbl)
    print("table %s.%s: %d columns; metastore getVersion = %s" % (t.dbName, t.tableName, len(t.sd.cols), c.getVersion()))
    # A view of its first ten columns (and the partition column), as Hive writes one, that the
    # user `narrow` may SELECT: `loadgen narrow` reads the table narrowed to it.
    from hmsclient.genthrift.hive_metastore.ttypes import (
        HiveObjectPrivilege, HiveObjectRef, HiveObjectType, PrincipalType, PrivilegeBag,
        PrivilegeGrantInfo)
    shown = ["c%d" % i for i in range(10)] + ["dt"]
    expanded = "SELECT %s FROM `%s`.`%s`" % (", ".join("`%s`.`%s`" % (tbl, c) for c in shown), db, tbl)
    view_sd = StorageDescriptor(cols=[FieldSchema(name=c, type="string", comment="") for c in shown],
                                location=None, inputFormat=None, outputFormat=None, compressed=False,
                                numBuckets=-1, serdeInfo=SerDeInfo(name=None, serializationLib=None,
                                                                   parameters={}),
                                bucketCols=[], sortCols=[], parameters={})
    try:
        c.create_table(Table(tableName="v", dbName=db, owner="bench", sd=view_sd, partitionKeys=[],
                             tableType="VIRTUAL_VIEW", parameters={},
                             viewOriginalText="SELECT %s FROM %s" % (", ".join(shown), tbl),
                             viewExpandedText=expanded))
    except AlreadyExistsException:
        pass
    # (A grant made by an earlier run on this metastore is not made again: the metastore
    # refuses a grant that exists.)
    vref = HiveObjectRef(HiveObjectType.TABLE, db, "v", None, None)
    if not c.list_privileges("narrow", PrincipalType.USER, vref):
        c.grant_privileges(PrivilegeBag([HiveObjectPrivilege(
            vref, "narrow", PrincipalType.USER,
            PrivilegeGrantInfo("SELECT", 0, "bench", PrincipalType.USER, False))]))
    # A table of 3,000 partitions, `bench.parts` (the columns of bench.t, partitioned by a
    # string `ds`, one partition a day from 2018-01-01): the partition calls read it. Added in
    # batches of 500 (those missing only); every partition shares the table's columns.
    import datetime
    from hmsclient.genthrift.hive_metastore.ttypes import Partition
    ptbl = "parts"
    psd = lambda loc: StorageDescriptor(
        cols=cols, location=loc, inputFormat=hmsclient.INPUT_FORMAT,
        outputFormat=hmsclient.OUTPUT_FORMAT, compressed=False, numBuckets=-1,
        serdeInfo=SerDeInfo(name=ptbl, serializationLib=hmsclient.SIMPLE_SERDE,
                            parameters={"field.delim": ","}),
        bucketCols=[], sortCols=[], parameters={})
    ploc = "file://%s/%s.db/%s" % (wh, db, ptbl)
    try:
        c.create_table(Table(tableName=ptbl, dbName=db, owner="bench", sd=psd(ploc),
                             partitionKeys=[FieldSchema(name="ds", type="string", comment="")],
                             tableType="MANAGED_TABLE", parameters={}))
    except AlreadyExistsException:
        pass
    days = [(datetime.date(2018, 1, 1) + datetime.timedelta(days=i)).isoformat() for i in range(3000)]
    have = set(c.get_partition_names(db, ptbl, -1))
    missing = [d for d in days if "ds=" + d not in have]
    for i in range(0, len(missing), 500):
        c.add_partitions([Partition(values=[d], dbName=db, tableName=ptbl, parameters={},
                                    sd=psd("%s/ds=%s" % (ploc, d)))
                          for d in missing[i:i + 500]])
    print("table %s.%s: %d partitions (%d added)" % (db, ptbl, len(c.get_partition_names(db, ptbl, -1)), len(missing)))
    if only == "partitions":
        sys.exit(0)
    # A database of 3,000 tables, each granted SELECT to the user `lister`: `get_all_tables`
    # of it as lister is the listing measure (filtered by grants, no owner lookups).
    ldb = db + "_list"
    try:
        c.create_database(Database(name=ldb, description="listing", parameters={},
                                   locationUri="file://%s/%s.db" % (wh, ldb)))
    except AlreadyExistsException:
        pass
    have = set(c.get_all_tables(ldb))
    names = ["t%04d" % i for i in range(3000) if "t%04d" % i not in have]
    for n in names:
        c.create_table(Table(tableName=n, dbName=ldb, owner="bench", partitionKeys=[],
                             tableType="MANAGED_TABLE", parameters={}, sd=StorageDescriptor(
                                 cols=cols[:2], location="file://%s/%s.db/%s" % (wh, ldb, n),
                                 inputFormat=hmsclient.INPUT_FORMAT,
                                 outputFormat=hmsclient.OUTPUT_FORMAT, compressed=False,
                                 numBuckets=-1, bucketCols=[], sortCols=[], parameters={},
                                 serdeInfo=SerDeInfo(name=n, parameters={},
                                                     serializationLib=hmsclient.SIMPLE_SERDE))))
    if names:  # the tables created now (those of an earlier run were granted then)
        c.grant_privileges(PrivilegeBag([HiveObjectPrivilege(
            HiveObjectRef(HiveObjectType.TABLE, ldb, n, None, None), "lister", PrincipalType.USER,
            PrivilegeGrantInfo("SELECT", 0, "bench", PrincipalType.USER, False)) for n in names]))
    print("database %s: %d tables, SELECT on each for lister" % (ldb, len(c.get_all_tables(ldb))))
EOF

# ---------------------------------------------------------------------------------------------
log "scripted upstream, haproxy, hms-guard"
big_port=$(free_port)
"$lg" big-upstream --listen "127.0.0.1:$big_port" --reply-mib "$big_mib" >"$work/big-upstream.log" 2>&1 &
pids+=($!)
wait_port 127.0.0.1 "$big_port" 20 || die "big-upstream did not start"

# The same scripted server with ~2 KiB replies (a get_table reply of the lab table is ~1.3 KiB):
# the proxy's overhead without the metastore's own noise.
small_port=$(free_port)
"$lg" big-upstream --listen "127.0.0.1:$small_port" --reply-mib 0.002 --string-kib 1 >"$work/small-upstream.log" 2>&1 &
pids+=($!)
wait_port 127.0.0.1 "$small_port" 20 || die "small scripted upstream did not start"

hap_port=$(free_port)
hap_big_port=$(free_port)
hap_small_port=$(free_port)
cat >"$work/haproxy.cfg" <<EOF
global
    maxconn 4096
defaults
    mode tcp
    timeout connect 5s
    timeout client 1h
    timeout server 1h
frontend metastore
    bind 127.0.0.1:$hap_port
    default_backend metastore
backend metastore
    server hms 127.0.0.1:$hms_port
frontend big
    bind 127.0.0.1:$hap_big_port
    default_backend big
backend big
    server big 127.0.0.1:$big_port
frontend small
    bind 127.0.0.1:$hap_small_port
    default_backend small
backend small
    server small 127.0.0.1:$small_port
EOF
haproxy -f "$work/haproxy.cfg" -D -p "$work/haproxy.pid"
wait_port 127.0.0.1 "$hap_port" 10 || die "haproxy did not start"

# start_guard NAME UPSTREAM_PORT [TOML]: a fresh hms-guard with the given config lines added to
# the listen/upstream/admin/logging ones (hms-guard's defaults otherwise); sets guard_pid,
# guard_port, guard_admin.
start_guard() {
    local name=$1 upstream=$2 extra=${3:-} bin=${4:-$guard_bin} i
    guard_port=$(free_port)
    guard_admin=$(free_port)
    cat >"$work/$name.toml" <<EOF
[server]
listen = "127.0.0.1:$guard_port"
max_connections = 4096
max_connections_per_client = 4096  # every load generator connects from 127.0.0.1
[upstream]
uris = ["thrift://127.0.0.1:$upstream"]
[admin]
listen = "127.0.0.1:$guard_admin"
[logging]
level = "warn"
$extra
EOF
    "$bin" check-config --config "$work/$name.toml" >/dev/null
    "$bin" serve --config "$work/$name.toml" >"$work/$name.out" 2>"$work/$name.log" &
    guard_pid=$!
    pids+=("$guard_pid")
    for ((i = 0; i < 100; i++)); do
        [[ $(http_status "http://127.0.0.1:$guard_admin/readyz") == 200 ]] && return 0
        sleep 0.1
    done
    die "hms-guard ($name) not ready; see $work/$name.log"
}
# Pass-through: no policy stage (the scripted upstream does not answer the metastore calls the
# policy stage makes for its facts; and it isolates the relay's own cost).
authz_off='[authz]
mode = "off"'

metrics() { # admin_port file
    python3 - "http://127.0.0.1:$1/metrics" >"$2" <<'EOF'
import sys, urllib.request
print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())
EOF
}

results="$work/results.jsonl"
scripted="$work/scripted.jsonl"
: >"$results"
: >"$scripted"

# The shared metadata cache on (the bench metastore has no notification log: entries live
# cache.ttl_ms); every call is still decided, the reply comes from the cache.
# The shared metadata cache on (the bench metastore has no notification log: entries live
# cache.ttl_ms).
cache_on='[cache]
enabled = true

[notifications]
enabled = false'

# get_partitions_by_filter (most of bench.parts's 3,000 partitions, pushed down to the
# metastore's database) and get_partition_names (all 3,000) as bench, the table's owner:
# direct, haproxy, hms-guard (enforcing, no cache), hms-guard-cache. A direct filter call
# takes most of a second on the lab's Derby: longer phases.
partition_rounds() {
    # The first calls (the metastore's JIT) take over a second: a warm-up of 5 s at least.
    local pw
    pw=$(python3 -c 'import sys; print(max(5.0, float(sys.argv[1])))' "$warmup")
    local targets=(--target "direct=127.0.0.1:$hms_port" --target "haproxy=127.0.0.1:$hap_port"
        --target "hms-guard=127.0.0.1:$g_port" --target "hms-guard-cache=127.0.0.1:$c_port")
    log "load: get_partitions_by_filter of $db.parts ($parts_filter), 1 connection"
    "$lg" load --method get_partitions_by_filter --db "$db" --table parts --filter "$parts_filter" \
        --connections 1 --seconds "$parts_secs" --rounds "$parts_rounds" --warmup-secs "$pw" \
        "${targets[@]}" --json-out "$results" | grep -v '^BENCH_JSON'
    log "load: get_partition_names of $db.parts, 1 connection"
    "$lg" load --method get_partition_names --db "$db" --table parts --connections 1 \
        --seconds "$secs" --rounds "$parts_rounds" --warmup-secs "$pw" \
        "${targets[@]}" --json-out "$results" | grep -v '^BENCH_JSON'
    metrics "$c_admin" "$work/guard-cache.metrics"
}

# ---------------------------------------------------------------------------------------------
# hms-guard as configured by default (authz.mode = enforce: get_table is decided, getVersion
# passes without a decision) and hms-guard with authz off (pure pass-through).
start_guard guard "$hms_port"
g_pid=$guard_pid g_port=$guard_port g_admin=$guard_admin
if [[ $only == partitions ]]; then
    start_guard guard-cache "$hms_port" "$cache_on"
    c_pid=$guard_pid c_port=$guard_port c_admin=$guard_admin
    partition_rounds
    kill "$g_pid" "$c_pid"
else # the full run (its sections are not indented)
start_guard guard-off "$hms_port" "$authz_off"
o_pid=$guard_pid o_port=$guard_port o_admin=$guard_admin
# TLS towards clients: the defaults plus [server.tls] with a client CA and identity.mode =
# "certificate" (the user is the certificate's CN, "bench"); certificates made here.
tls_dir="$work/tls"
mkdir -p "$tls_dir"
(
    cd "$tls_dir"
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=bench CA" -keyout ca.key -out ca.pem
    openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout server.key -out server.csr
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >server.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
        -extfile server.ext -out server.pem
    openssl req -newkey rsa:2048 -nodes -subj "/CN=bench" -keyout client.key -out client.csr
    printf 'extendedKeyUsage=clientAuth\n' >client.ext
    openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
        -extfile client.ext -out client.pem
) >"$work/openssl.log" 2>&1 || die "openssl could not make the TLS certificates; see $work/openssl.log"
export LOADGEN_TLS_CA="$tls_dir/ca.pem" LOADGEN_TLS_CERT="$tls_dir/client.pem" \
    LOADGEN_TLS_KEY="$tls_dir/client.key"
start_guard guard-tls "$hms_port" "[server.tls]
cert = \"$tls_dir/server.pem\"
key = \"$tls_dir/server.key\"
client_ca = \"$tls_dir/ca.pem\"
[identity]
mode = \"certificate\""
t_pid=$guard_pid t_port=$guard_port
# Kerberos towards clients: a KDC on loopback (tests/lab/kdc.py), hms-guard with identity.mode =
# "kerberos"; the load generator authenticates as bench@HMSGUARD.TEST (its tickets from kinit)
# and asks for the auth (krb://) or auth-conf (krb-conf://) security layer.
"$venv/bin/python" - "$work/kdc" >"$work/kdc.env" 2>"$work/kdc.log" <<'EOF' || die "the KDC did not start; see $work/kdc.log"
import sys
sys.path.insert(0, "tests/lab")
from pathlib import Path
from kdc import Kdc
k = Kdc(Path(sys.argv[1])).start(daemon=True)
k.add("hive/localhost", "bench")
k.keytab(k.dir / "service.keytab", "hive/localhost")
k.keytab(k.dir / "bench.keytab", "bench")
env = k.kinit("bench", k.dir / "bench.keytab", k.dir / "bench.cc")
print(f"kdc_pid={k.proc.pid}")
print(f"kdc_conf={k.conf}")
print(f"kdc_dir={k.dir}")
print(f"kdc_ccache={env['KRB5CCNAME']}")
print(f"kdc_realm={k.realm}")
EOF
# shellcheck disable=SC1091
source "$work/kdc.env"
pids+=("$kdc_pid")
export KRB5_CONFIG="$kdc_conf" KRB5CCNAME="$kdc_ccache" KRB5RCACHEDIR="$kdc_dir" \
    LOADGEN_KRB_PRINCIPAL="bench@$kdc_realm" LOADGEN_KRB_SERVICE="hive/localhost@$kdc_realm"
start_guard guard-krb "$hms_port" "[identity]
mode = \"kerberos\"
[identity.kerberos]
principal = \"hive/localhost@$kdc_realm\"
keytab = \"$kdc_dir/service.keytab\"
krb5_conf = \"$kdc_conf\""
k_pid=$guard_pid k_port=$guard_port
# The shared metadata cache on: get_table is still decided for each call, the reply comes from
# the cache.
start_guard guard-cache "$hms_port" "$cache_on"
c_pid=$guard_pid c_port=$guard_port c_admin=$guard_admin
if [[ -n "${BENCH_BASELINE_BIN:-}" ]]; then
    [[ -x "$BENCH_BASELINE_BIN" ]] || die "BENCH_BASELINE_BIN=$BENCH_BASELINE_BIN is not executable"
    start_guard guard-base "$hms_port" "" "$BENCH_BASELINE_BIN"
    b_port=$guard_port
fi

for method in getVersion get_table; do
    targets=(--target "direct=127.0.0.1:$hms_port" --target "haproxy=127.0.0.1:$hap_port"
        --target "hms-guard=127.0.0.1:$g_port")
    # getVersion takes no decision: both proxies run the same path; get_table shows the policy.
    [[ $method == get_table ]] && targets+=(--target "hms-guard-off=127.0.0.1:$o_port"
        --target "hms-guard-cache=127.0.0.1:$c_port")
    [[ $method == get_table && -n "${b_port:-}" ]] && targets+=(--target "hms-guard-base=127.0.0.1:$b_port")
    # The same decisions over TLS, the caller named by its client certificate.
    [[ $method == get_table ]] && targets+=(--target "hms-guard-tls=tls://127.0.0.1:$t_port")
    # And over Kerberos, the caller named by its ticket: QOP auth, and auth-conf (encrypted).
    [[ $method == get_table ]] && targets+=(--target "hms-guard-krb=krb://127.0.0.1:$k_port"
        --target "hms-guard-krb-conf=krb-conf://127.0.0.1:$k_port")
    # CPU of each proxy over the get_table runs (both serve the same kind and number of rounds).
    [[ $method == get_table ]] && { g_cpu0=$(cpu_ticks "$g_pid"); o_cpu0=$(cpu_ticks "$o_pid"); }
    for c in $conns_list; do
        log "load: $method, $c connection(s)"
        "$lg" load --method "$method" --db "$db" --table "$table" --connections "$c" \
            --seconds "$secs" --rounds "$rounds" --warmup-secs "$warmup" \
            "${targets[@]}" --json-out "$results" | grep -v '^BENCH_JSON'
    done
done
# Listing 3,000 tables (get_all_tables as `lister`, who holds SELECT on each): hms-guard filters
# the reply by the caller's grants.
targets=(--target "direct=127.0.0.1:$hms_port" --target "haproxy=127.0.0.1:$hap_port"
    --target "hms-guard=127.0.0.1:$g_port")
[[ -n "${b_port:-}" ]] && targets+=(--target "hms-guard-base=127.0.0.1:$b_port")
log "load: get_all_tables of 3,000 tables as lister, 1 connection"
"$lg" load --method get_all_tables --db "${db}_list" --user lister --connections 1 \
    --seconds "$secs" --rounds "$rounds" --warmup-secs "$warmup" \
    "${targets[@]}" --json-out "$results" | grep -v '^BENCH_JSON'
log "connection set-up: plain vs TLS vs Kerberos (connect, handshake, set_ugi, getVersion; sequential)"
"$lg" handshake --target "hms-guard=127.0.0.1:$g_port" \
    --target "hms-guard-tls=tls://127.0.0.1:$t_port" \
    --target "hms-guard-krb=krb://127.0.0.1:$k_port" --connections 100 --rounds 5 \
    --json-out "$results" | grep -v '^BENCH_JSON'
kill "$t_pid" "$k_pid"
g_cpu=$(($(cpu_ticks "$g_pid") - g_cpu0))
o_cpu=$(($(cpu_ticks "$o_pid") - o_cpu0))
partition_rounds
kill "$c_pid"
log "decide: warm-cache get_table decisions in-process (Guard::check), CPU per decision"
"$lg" decide --metastore "127.0.0.1:$hms_port" --db "$db" --table "$table" --user bench \
    --json-out "$results" | grep -v '^BENCH_JSON'
log "narrow: get_table read whole vs narrowed to a view (in-process, decision and reply)"
"$lg" narrow --metastore "127.0.0.1:$hms_port" --db "$db" --table "$table" --user bench \
    --narrowed-user narrow --json-out "$results" | grep -v '^BENCH_JSON'
log "views: the analysis of a view text of about 10 KB (decision::views)"
"$lg" views --json-out "$results" | grep -v '^BENCH_JSON'
metrics "$g_admin" "$work/guard.metrics"
metrics "$o_admin" "$work/guard-off.metrics"
g_hwm=$(vm "$g_pid" VmHWM)
o_hwm=$(vm "$o_pid" VmHWM)
kill "$g_pid" "$o_pid"

start_guard small "$small_port" "$authz_off"
for method in getVersion get_table; do
    log "load on the scripted upstream (instant replies: ~2 KiB; getVersion ~40 B): $method, 1 connection"
    "$lg" load --method "$method" --connections 1 \
        --seconds "$secs" --rounds "$scripted_rounds" --warmup-secs 1 \
        --target "direct=127.0.0.1:$small_port" \
        --target "haproxy=127.0.0.1:$hap_small_port" \
        --target "hms-guard-off=127.0.0.1:$guard_port" \
        --json-out "$scripted" | grep -v '^BENCH_JSON'
done
kill "$guard_pid"

# ---------------------------------------------------------------------------------------------
log "peak RSS: $idle_conns idle connections (hms-guard defaults; upstream: the scripted big-upstream)"
# The scripted upstream answers every method with its big reply: the location index's build and
# the notification log's follower would read those (bounded by authz.facts_max_reply_bytes) and
# measure that, not the connections. Both are off here; the index's own memory is measured by
# benches/index_build.sh against a real catalog.
start_guard idle "$big_port" "[index]
enabled = false

[notifications]
enabled = false"
idle_start_rss=$(vm "$guard_pid" VmRSS)
"$lg" idle --target "127.0.0.1:$guard_port" --connections "$idle_conns" --hold-secs 5 \
    --json-out "$results" >"$work/idle.out" 2>&1 &
idle_pid=$!
for ((i = 0; i < 600; i++)); do
    grep -q IDLE_READY "$work/idle.out" && break
    kill -0 "$idle_pid" 2>/dev/null || break
    sleep 0.1
done
sleep 2
idle_hold_rss=$(vm "$guard_pid" VmRSS)
idle_threads=$(vm "$guard_pid" Threads)
wait "$idle_pid" || { cat "$work/idle.out" >&2; die "idle run failed"; }
grep -v '^BENCH_JSON' "$work/idle.out"
idle_hwm=$(peak "$guard_pid" "$idle_hold_rss")
kill "$guard_pid"

log "peak RSS: one ${big_mib} MiB reply streamed from the scripted upstream (fast reader)"
start_guard big "$big_port" "$authz_off"
big_start_rss=$(vm "$guard_pid" VmRSS)
"$lg" big-call --target "127.0.0.1:$guard_port" --json-out "$results" | grep -v '^BENCH_JSON'
big_fast_hwm=$(vm "$guard_pid" VmHWM)
log "big-reply MiB/s, interleaved: direct, haproxy, hms-guard (3 rounds)"
for r in 1 2 3; do
    for t in "direct=127.0.0.1:$big_port" "haproxy=127.0.0.1:$hap_big_port" "hms-guard-off=127.0.0.1:$guard_port"; do
        "$lg" big-call --target "${t#*=}" --json-out "$results" | grep -v '^BENCH_JSON' | sed "s/^/${t%%=*} round $r: /"
    done
done
big_after4_hwm=$(vm "$guard_pid" VmHWM)
kill "$guard_pid"

log "peak RSS: one ${big_mib} MiB reply to a slow reader (64 MiB/s)"
start_guard slow "$big_port" "$authz_off"
"$lg" big-call --target "127.0.0.1:$guard_port" --rate-mib 64 --json-out "$results" >"$work/slow.out" &
slow_pid=$!
slow_max=0
while kill -0 "$slow_pid" 2>/dev/null; do # sample RSS while the reply streams
    r=$(vm "$guard_pid" VmRSS)
    ((r > slow_max)) && slow_max=$r
    sleep 0.2
done
wait "$slow_pid" || { cat "$work/slow.out" >&2; die "slow big-call failed"; }
grep -v '^BENCH_JSON' "$work/slow.out"
big_slow_hwm=$(peak "$guard_pid" "$slow_max")
kill "$guard_pid"
fi # the full run

# ---------------------------------------------------------------------------------------------
log "results"
export B_ONLY="$only" B_RESULTS="$results" B_SCRIPTED="$scripted" B_OUT="$out" B_WORK="$work" \
    B_BIG_PORT="$big_port" B_HAP_BIG_PORT="$hap_big_port" B_SECS="$secs" B_ROUNDS="$rounds" \
    B_SCRIPTED_ROUNDS="$scripted_rounds" B_WARMUP="$warmup" B_IDLE_CONNS="$idle_conns" \
    B_BIG_MIB="$big_mib" B_LOADAVG_START="$loadavg_start" B_PARTS_SECS="$parts_secs" \
    B_PARTS_ROUNDS="$parts_rounds" B_PARTS_FILTER="$parts_filter"
[[ -n $only ]] || export B_G_HWM="$g_hwm" B_O_HWM="$o_hwm" B_IDLE_START="$idle_start_rss" B_IDLE_HOLD="$idle_hold_rss" \
    B_IDLE_THREADS="$idle_threads" B_IDLE_HWM="$idle_hwm" B_BIG_START="$big_start_rss" \
    B_BIG_FAST="$big_fast_hwm" B_BIG_AFTER4="$big_after4_hwm" B_BIG_SLOW="$big_slow_hwm" \
    B_G_CPU="$g_cpu" B_O_CPU="$o_cpu" B_CLK_TCK="$(getconf CLK_TCK)"
python3 - <<'EOF'
import json, os, platform, re, subprocess, time
E = os.environ
def jl(path):
    return [json.loads(l) for l in open(path) if l.strip()]
rows, scripted = jl(E["B_RESULTS"]), jl(E["B_SCRIPTED"])
def sh(cmd):
    return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()
def mib(k):
    return round(int(E[k]) / 1024, 1) if k in E else None
def med(v):
    v = sorted(x for x in v if x is not None); n = len(v)
    return None if n == 0 else (v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2)
def prom(path):
    out = {}
    for line in open(path):
        m = re.match(r'^(hms_guard_\w+?)(\{[^}]*\})? (\S+)$', line.strip())
        if m and not m.group(1).endswith("_bucket"):
            out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out
def own_us(p, method):
    c = p.get('hms_guard_request_duration_seconds_count{method="%s"}' % method)
    if not c:
        return None
    s = p['hms_guard_request_duration_seconds_sum{method="%s"}' % method]
    u = p.get('hms_guard_upstream_duration_seconds_sum{method="%s"}' % method, 0.0)
    return round((s - u) / c * 1e6, 1)
full = not E["B_ONLY"]
PARTS = ("get_partitions_by_filter", "get_partition_names")
gm, om = (prom(os.path.join(E["B_WORK"], "guard.metrics")), prom(os.path.join(E["B_WORK"], "guard-off.metrics"))) if full else ({}, {})

load = [r for r in rows if r["kind"] == "load"]
bigs = [r for r in rows if r["kind"] == "big_call"]
idle = [r for r in rows if r["kind"] == "idle"]
bp, hbp = ":" + E["B_BIG_PORT"], ":" + E["B_HAP_BIG_PORT"]
fast = [b for b in bigs if b["rate_limit_mib_per_s"] == 0]
big_rate = {
    "direct": med([b["mib_per_s"] for b in fast if b["target"].endswith(bp)]),
    "haproxy": med([b["mib_per_s"] for b in fast if b["target"].endswith(hbp)]),
    # the first fast call through the proxy is the RSS measurement; the 3 interleaved follow
    "hms-guard-off": med([b["mib_per_s"] for b in [b for b in fast if not b["target"].endswith((bp, hbp))][1:]]),
}
gt = gm.get('hms_guard_requests_total{method="get_table",decision="pass"}', 0) + \
     gm.get('hms_guard_requests_total{method="get_table",decision="allow"}', 0)
facts_gt = gm.get('hms_guard_facts_calls_total{method="get_table",outcome="ok"}', 0)
decisions = {k.split("{", 1)[1].rstrip("}"): v for k, v in gm.items() if k.startswith("hms_guard_decisions_total")}
caches = {k.split("{", 1)[1].rstrip("}"): v for k, v in gm.items() if k.startswith("hms_guard_cache_lookups_total")}
facts = {k.split("{", 1)[1].rstrip("}"): v for k, v in gm.items() if k.startswith("hms_guard_facts_calls_total")}
doc = {
    "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    "command": "benches/run.sh",
    "git": sh("git describe --always --dirty"),
    "machine": {"cpus": os.cpu_count(), "cpu": sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"),
                "kernel": platform.release(),
                "mem_mib": int(sh("awk '/MemTotal/ {print int($2/1024)}' /proc/meminfo") or 0),
                "loadavg_at_start": E["B_LOADAVG_START"],
                "loadavg_at_end": sh("cut -d' ' -f1-3 /proc/loadavg")},
    "versions": {"haproxy": sh("haproxy -v | head -1"), "java": sh("java -version 2>&1 | head -1"),
                 "rustc": sh("rustc --version")},
    "settings": {"seconds_per_phase": float(E["B_SECS"]), "rounds": int(E["B_ROUNDS"]),
                 "scripted_rounds": int(E["B_SCRIPTED_ROUNDS"]),
                 "warmup_seconds_per_target": float(E["B_WARMUP"]),
                 "loadgen": "one call in flight per connection; unframed strict binary; set_ugi first",
                 "targets": {"hms-guard": "hms-guard defaults (authz.mode = enforce at the time of writing)",
                             "hms-guard-off": "hms-guard with authz.mode = off (pass-through)"}},
    "load": load,
    "connection_setup": [r for r in rows if r["kind"] == "handshake"],
    "load_scripted_upstream": scripted,
    "guard_metrics": {
        "get_table_calls": gt, "facts_get_table_calls": facts_gt,
        "decisions": decisions, "cache_lookups": caches, "facts_calls": facts,
        "own_time_mean_us": {"hms-guard": {m: own_us(gm, m) for m in ("getVersion", "get_table")},
                             "hms-guard-off": {m: own_us(om, m) for m in ("getVersion", "get_table")}},
        "note": "own time = mean of (request duration - upstream duration) from the proxy's metrics",
    },
    "rss": {
        "idle": {"connections": int(E["B_IDLE_CONNS"]), "upstream": "loadgen big-upstream (scripted)",
                 "config": "hms-guard defaults",
                 "rss_at_start_mib": mib("B_IDLE_START"), "rss_while_held_mib": mib("B_IDLE_HOLD"),
                 "threads": int(E.get("B_IDLE_THREADS", 0)), "peak_rss_mib": mib("B_IDLE_HWM"), "run": idle},
        "big_reply": {"reply_mib": int(E["B_BIG_MIB"]), "upstream": "loadgen big-upstream (scripted)",
                      "config": "authz.mode = off",
                      "rss_at_start_mib": mib("B_BIG_START"),
                      "peak_rss_fast_reader_mib": mib("B_BIG_FAST"),
                      "peak_rss_after_4_replies_mib": mib("B_BIG_AFTER4"),
                      "peak_rss_slow_reader_64mib_s_mib": mib("B_BIG_SLOW")},
        "load_peak_rss_mib": {"hms-guard": mib("B_G_HWM"), "hms-guard-off": mib("B_O_HWM")},
    },
    "big_reply_mib_per_s_median": big_rate,
    "big_calls": bigs,
}
doc["settings"]["partitions"] = {
    "table": "bench.parts: 3,000 partitions by a string ds, 20 columns", "filter": E["B_PARTS_FILTER"],
    "seconds_per_phase": float(E["B_PARTS_SECS"]), "rounds": int(E["B_PARTS_ROUNDS"]),
    "hms-guard-cache": "[cache] enabled = true, [notifications] enabled = false (entries live cache.ttl_ms)"}
cm_path = os.path.join(E["B_WORK"], "guard-cache.metrics")
if os.path.exists(cm_path):
    cm = prom(cm_path)
    doc["partitions_cache_metrics"] = {
        "own_time_mean_us": {m: own_us(cm, m) for m in PARTS},
        "reply_cache_lookups": {k.split("{", 1)[1].rstrip("}"): v for k, v in cm.items()
                                if k.startswith("hms_guard_cache_lookups_total") and 'cache="replies"' in k},
        "reply_cache_stores": {k.split("{", 1)[1].rstrip("}"): v for k, v in cm.items()
                               if k.startswith("hms_guard_reply_cache_stores_total")},
        "reply_cache_bytes": cm.get("hms_guard_reply_cache_bytes"),
        "note": "hms-guard-cache over all its rounds; own time = mean of (request duration - upstream duration)"}
if not full:
    doc["command"] = "BENCH_ONLY=%s benches/run.sh" % E["B_ONLY"]
    for k in ("connection_setup", "load_scripted_upstream", "guard_metrics", "rss",
              "big_reply_mib_per_s_median", "big_calls"):
        del doc[k]

def cmp(r, a, b):
    for c in r["comparisons"]:
        if c["target"] == a and c["vs"] == b:
            return c["median_of_rounds"]
    for c in r["comparisons"]:
        if c["target"] == b and c["vs"] == a:
            m = c["median_of_rounds"]
            return {"throughput_ratio": round(1 / m["throughput_ratio"], 3),
                    "p50_added_us": -m["p50_added_us"], "p99_added_us": -m["p99_added_us"]}
verdicts = []
def verdict(target, case, measured, ok, **extra):
    verdicts.append(dict(target=target, case=case, measured=measured, pass_=ok, **extra))
for r in [r for r in load if r["method"] == "get_all_tables"]:
    names = [t["name"] for t in r["targets"]]
    h = cmp(r, "hms-guard", "haproxy")
    verdict("listing 3,000 tables: hms-guard vs haproxy (recorded)", "get_all_tables x1 as lister",
            h["throughput_ratio"], True, p50_added_us=h["p50_added_us"])
    if "hms-guard-base" in names:
        b = cmp(r, "hms-guard", "hms-guard-base")
        verdict("listing 3,000 tables no slower than the build before (>= 0.95x)",
                "get_all_tables x1 vs hms-guard-base", b["throughput_ratio"], b["throughput_ratio"] >= 0.95)
nar = [r for r in rows if r["kind"] == "narrow"]
if nar:
    verdict("narrowed get_table <= 5 us over whole", "in-process decision and reply, median",
            round(nar[-1]["difference_us"], 2), nar[-1]["difference_us"] <= 5)
vw = [r for r in rows if r["kind"] == "views"]
if vw:
    verdict("first analysis of a 10 KB view <= 1 ms", "loadgen views, median", round(vw[-1]["median_us"], 1),
            vw[-1]["median_us"] <= 1000)
for r in [r for r in load if r["method"] in PARTS]:
    tag = "%s x%d" % (r["method"], r["connections"])
    items = {t["name"]: t.get("reply_items") for t in r["targets"]}
    same = len({json.dumps(v, sort_keys=True) for v in items.values()}) == 1 and None not in items.values()
    verdict("every target returns the same partitions", tag,
            "%s items from each" % items["direct"]["max"] if same else items, same)
    x = cmp(r, "hms-guard-cache", "direct")["throughput_ratio"]
    if r["method"] == "get_partitions_by_filter":
        verdict("get_partitions_by_filter from the cache >= 10x direct calls/s", tag + " hms-guard-cache", x, x >= 10)
    else:
        verdict("get_partition_names from the cache vs direct (recorded)", tag + " hms-guard-cache", x, True)
    for g in ("haproxy", "hms-guard"):
        verdict("partitions uncached: %s vs direct (recorded)" % g, tag + " " + g,
                cmp(r, g, "direct")["throughput_ratio"], True)
    errs = sum(t["errors"] + t["failed_connections"] for t in r["targets"])
    if errs:
        verdict("no errors", tag, errs, False)
for r in [r for r in load if r["method"] not in PARTS + ("get_all_tables",)]:
    tag = "%s x%d" % (r["method"], r["connections"])
    names = [t["name"] for t in r["targets"]]
    pt = "hms-guard-off" if "hms-guard-off" in names else "hms-guard"
    d, hd = cmp(r, pt, "direct"), cmp(r, "haproxy", "direct")
    verdict("pass-through added p50 <= 30 us", tag + " " + pt, d["p50_added_us"], d["p50_added_us"] <= 30, haproxy=hd["p50_added_us"])
    verdict("pass-through added p99 <= 100 us", tag + " " + pt, d["p99_added_us"], d["p99_added_us"] <= 100, haproxy=hd["p99_added_us"])
    for g in [n for n in names if n.startswith("hms-guard") and n != "hms-guard-cache"]:
        h = cmp(r, g, "haproxy")
        verdict("throughput vs haproxy >= 0.9x", tag + " " + g, h["throughput_ratio"], h["throughput_ratio"] >= 0.9)
    if "hms-guard-cache" in names:
        cached = next(t for t in r["targets"] if t["name"] == "hms-guard-cache")
        p50 = cached["median_of_rounds"]["p50_us"]
        verdict("get_table from the cache p50 <= 50 us", tag + " hms-guard-cache", p50, p50 <= 50)
        x = cmp(r, "hms-guard-cache", "direct")["throughput_ratio"]
        verdict("get_table from the cache >= 10x direct calls/s", tag + " hms-guard-cache", x, x >= 10)
    if "hms-guard-krb" in names:
        k = cmp(r, "hms-guard-krb", "hms-guard")
        verdict("Kerberos (QOP auth) calls vs unauthenticated >= 0.95x", tag + " hms-guard-krb",
                k["throughput_ratio"], k["throughput_ratio"] >= 0.95)
    errs = sum(t["errors"] + t["failed_connections"] for t in r["targets"])
    if errs:
        verdict("no errors", tag, errs, False)
for r in scripted:
    tag = "scripted %s x%d" % (r["method"], r["connections"])
    d, hd = cmp(r, "hms-guard-off", "direct"), cmp(r, "haproxy", "direct")
    verdict("pass-through added p50 <= 30 us", tag, d["p50_added_us"], d["p50_added_us"] <= 30, haproxy=hd["p50_added_us"])
    verdict("pass-through added p99 <= 100 us", tag, d["p99_added_us"], d["p99_added_us"] <= 100, haproxy=hd["p99_added_us"])
    verdict("throughput vs haproxy >= 0.9x", tag, cmp(r, "hms-guard-off", "haproxy")["throughput_ratio"],
            cmp(r, "hms-guard-off", "haproxy")["throughput_ratio"] >= 0.9)
if full:  # the full run's process, CPU and memory figures
    ot = om.get('hms_guard_requests_total{method="get_table",decision="pass"}', 0)
    tck = float(E["B_CLK_TCK"])
    g_cpu_us = int(E["B_G_CPU"]) / tck * 1e6 / gt if gt else None
    o_cpu_us = int(E["B_O_CPU"]) / tck * 1e6 / ot if ot else None
    doc["get_table_cpu_us_per_call"] = {"hms-guard": g_cpu_us, "hms-guard-off": o_cpu_us,
        "decision_own_us": {"hms-guard": own_us(gm, "get_table"), "hms-guard-off": own_us(om, "get_table")}}
    dec = [r for r in rows if r["kind"] == "decide"]
    if dec:
        verdict("warm-cache get_table decision <= 10 us CPU", "in-process Guard::check, median per round",
                round(dec[-1]["median_us"], 2), dec[-1]["median_us"] <= 10,
                process_cpu_us=round(dec[-1]["cpu_us"], 2), facts_calls=dec[-1]["facts_calls"])
    if g_cpu_us is not None and o_cpu_us is not None:
        # Not the target's measure: the whole proxy process, decision + audit line + the audit
        # thread's wake-ups, per call.
        doc["get_table_cpu_us_per_call"]["enforce_minus_off"] = round(g_cpu_us - o_cpu_us, 1)
    if gt:
        verdict("warm-cache get_table: no upstream call", "facts get_table calls per get_table",
                round(facts_gt / gt, 3), facts_gt / gt <= 0.01)
    for r in load:
        if r["method"] == "get_table" and r["connections"] == 1:
            c = cmp(r, "hms-guard", "hms-guard-off")
            verdict("warm-cache get_table decision <= 10 us", "added p50 vs authz off, x1", c["p50_added_us"], c["p50_added_us"] <= 10)
    verdict("1,000 idle connections <= 50 MiB RSS", "peak (VmHWM)", mib("B_IDLE_HWM"), mib("B_IDLE_HWM") <= 50)
    worst = max(mib("B_BIG_FAST"), mib("B_BIG_SLOW"))
    verdict("200 MiB reply: peak RSS <= 64 MiB", "%s MiB, fast and slow reader" % E["B_BIG_MIB"], worst, worst <= 64)
for v in verdicts:
    v["pass"] = v.pop("pass_")
doc["verdicts"] = verdicts
json.dump(doc, open(E["B_OUT"], "w"), indent=1)

print()
print("%d CPUs (%s); load average at start %s; medians over rounds" % (doc["machine"]["cpus"], doc["machine"]["cpu"], E["B_LOADAVG_START"]))
print("%-24s | %-13s %9s %9s %9s" % ("case", "target", "calls/s", "p50 us", "p99 us"))
for group, label in ((load, "metastore"), (scripted, "scripted")):
    for r in group:
        for t in r["targets"]:
            m = t["median_of_rounds"]
            print("%-24s | %-13s %9.0f %9.1f %9.1f%s" % ("%s %s x%d" % (label, r["method"], r["connections"]), t["name"], m["calls_per_s"], m["p50_us"], m["p99_us"],
                  "  (%s items, %s bytes a reply)" % (t["reply_items"]["max"], t["reply_bytes_mean"]) if t.get("reply_items") and r["method"] in PARTS else ""))
        for c in r["comparisons"]:
            m = c["median_of_rounds"]
            if c["vs"] in ("direct", "haproxy") or c["target"] == "hms-guard":
                print("%24s %s vs %s: %.3fx calls/s, p50 %+.1f us, p99 %+.1f us" % ("", c["target"], c["vs"], m["throughput_ratio"], m["p50_added_us"], m["p99_added_us"]))
if "partitions_cache_metrics" in doc:
    print("hms-guard-cache:", doc["partitions_cache_metrics"])
if full:
    print("proxy's own time per call (mean us):", doc["guard_metrics"]["own_time_mean_us"])
    print("process CPU per get_table (us; includes the audit line in enforce mode):", doc["get_table_cpu_us_per_call"])
    print("hms-guard (defaults): %d get_table calls, %d facts get_table calls; cache lookups %s" % (gt, facts_gt, caches))
    print("idle: %s connections, RSS at start %.1f MiB, while held %.1f MiB, peak %.1f MiB" % (E["B_IDLE_CONNS"], mib("B_IDLE_START"), mib("B_IDLE_HOLD"), mib("B_IDLE_HWM")))
    print("big reply %s MiB: peak RSS fast reader %.1f MiB, slow reader %.1f MiB; MiB/s medians %s" % (E["B_BIG_MIB"], mib("B_BIG_FAST"), mib("B_BIG_SLOW"), big_rate))
print()
for v in verdicts:
    extra = " (haproxy: %s)" % v["haproxy"] if "haproxy" in v else ""
    print("%-4s %-40s %-36s %s%s" % ("PASS" if v["pass"] else "MISS", v["target"], v["case"], v["measured"], extra))
print()
print("written: %s" % E["B_OUT"])
EOF
