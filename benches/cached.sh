#!/usr/bin/env bash
# benches/cached.sh: get_table answered from the shared metadata cache, side by side
# (docs/BENCHMARKS.md, run M2). A shorter, focused companion of benches/run.sh.
#
#   benches/cached.sh        # ~3 minutes on 2 cores once built
#
# Targets, interleaved in rounds by `loadgen load` at 1 and 8 connections:
#   direct            the lab metastore (tests/lab/hms.py) itself
#   floor             `loadgen big-upstream`: a Tokio server answering each call at once with a
#                     ~2 KiB reply (what a loopback round trip costs on this machine)
#   hms-guard         hms-guard's defaults (every get_table decided and sent to the metastore)
#   hms-guard-cache   the same with `[cache] enabled = true` and `[notifications] enabled = false` (every call
#                     still decided, the reply from the cache)
#   hms-guard-base-cache   with BENCH_BASELINE_BIN=PATH: that binary (an earlier build), cache on (BENCH_BASELINE_CACHE: its [cache] text, for builds with another config shape)
# After each load run it prints the CPU time each hms-guard process spent per call it served
# (utime + stime over its request counter): less noisy than latency on a shared machine.
#
# Knobs: BENCH_SECONDS (1.5), BENCH_ROUNDS (8), BENCH_CONNECTIONS ("1 8"), BENCH_WARMUP (2),
# BENCH_HMS_PORT=PORT (an already running metastore instead of the lab's), BENCH_BASELINE_BIN,
# BENCH_LOADGEN=PATH (a load generator already built: `cargo bench --bench loadgen --no-run`).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
venv="${HMS_GUARD_CACHE:-$HOME/.cache/hms-guard}/venv"
secs="${BENCH_SECONDS:-1.5}"
rounds="${BENCH_ROUNDS:-8}"
conns_list="${BENCH_CONNECTIONS:-1 8}"
warmup="${BENCH_WARMUP:-2}"
target_dir="${CARGO_TARGET_DIR:-$root/target}"

log() { printf '== %s\n' "$*" >&2; }
die() { printf 'benches/cached.sh: %s\n' "$*" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/hms-guard-cached.XXXXXX")
pids=()
hms_started=""
cleanup() {
    local rc=$?
    set +e
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
    [[ -n "$hms_started" ]] && "$venv/bin/python" tests/lab/hms.py stop --dir "$work/hms" >/dev/null 2>&1
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
    if [[ $rc -ne 0 ]]; then echo "work directory kept: $work" >&2; else rm -rf "$work"; fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
wait_port() { # port seconds
    local i
    for ((i = 0; i < $2 * 10; i++)); do
        if (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    return 1
}

log "build (release)"
cargo build --release --locked --bin hms-guard
guard_bin="$target_dir/release/hms-guard"
lg=${BENCH_LOADGEN:-}
[[ -n "$lg" ]] || lg=$(cargo bench --locked --bench loadgen --no-run --message-format=json |
    python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "loadgen" and m.get("executable"):
        print(m["executable"])')
[[ -x "$lg" ]] || die "could not build the load generator"

if [[ -n "${BENCH_HMS_PORT:-}" ]]; then
    hms_port=$BENCH_HMS_PORT
else
    log "lab (tests/lab/setup.sh) and metastore"
    tests/lab/setup.sh
    hms_port=$(free_port)
    hms_started=1
    "$venv/bin/python" tests/lab/hms.py start --dir "$work/hms" --port "$hms_port"
fi
wait_port "$hms_port" 120 || die "metastore did not listen on $hms_port"
"$venv/bin/python" - "$hms_port" "$work/warehouse" <<'EOF'
# The table of benches/run.sh: bench.t, 20 columns and a partition key, owned by `bench`.
import sys
from hmsclient import hmsclient
from hmsclient.genthrift.hive_metastore.ttypes import (
    AlreadyExistsException, Database, FieldSchema, SerDeInfo, StorageDescriptor, Table)
port, wh = int(sys.argv[1]), sys.argv[2]
with hmsclient.HMSClient(host="127.0.0.1", port=port) as c:
    c.set_ugi("bench", [])
    try:
        c.create_database(Database(name="bench", description="hms-guard benchmark",
                                   locationUri="file://%s/bench.db" % wh, parameters={}))
    except AlreadyExistsException:
        pass
    cols = [FieldSchema(name="c%d" % i, type="string", comment="column %d" % i) for i in range(20)]
    sd = StorageDescriptor(
        cols=cols, location="file://%s/bench.db/t" % wh,
        inputFormat=hmsclient.INPUT_FORMAT, outputFormat=hmsclient.OUTPUT_FORMAT,
        compressed=False, numBuckets=-1,
        serdeInfo=SerDeInfo(name="t", serializationLib=hmsclient.SIMPLE_SERDE,
                            parameters={"field.delim": ","}),
        bucketCols=[], sortCols=[], parameters={})
    try:
        c.create_table(Table(tableName="t", dbName="bench", owner="bench", sd=sd,
                             partitionKeys=[FieldSchema(name="dt", type="string", comment="")],
                             tableType="MANAGED_TABLE", parameters={"comment": "benchmark"}))
    except AlreadyExistsException:
        pass
EOF

floor_port=$(free_port)
"$lg" big-upstream --listen "127.0.0.1:$floor_port" --reply-mib 0.002 --string-kib 1 >"$work/floor.log" 2>&1 &
pids+=($!)
wait_port "$floor_port" 20 || die "the scripted upstream did not start"

targets=(--target "direct=127.0.0.1:$hms_port" --target "floor=127.0.0.1:$floor_port")
names=() gpids=() admins=()
start_guard() { # NAME BIN [TOML]
    local name=$1 bin=$2 extra=${3:-} port admin
    port=$(free_port)
    admin=$(free_port)
    cat >"$work/$name.toml" <<EOF
[server]
listen = "127.0.0.1:$port"
max_connections = 4096
max_connections_per_client = 4096
[upstream]
uris = ["thrift://127.0.0.1:$hms_port"]
[admin]
listen = "127.0.0.1:$admin"
[logging]
level = "warn"
$extra
EOF
    "$bin" check-config --config "$work/$name.toml" >/dev/null
    "$bin" serve --config "$work/$name.toml" >"$work/$name.out" 2>"$work/$name.log" &
    pids+=($!)
    names+=("$name") gpids+=($!) admins+=("$admin")
    wait_port "$port" 30 || die "hms-guard ($name) did not start; see $work/$name.log"
    targets+=(--target "$name=127.0.0.1:$port")
}
cache='[cache]
enabled = true

[notifications]
enabled = false'
# A build from before [notifications] (the log's switch was cache.notifications then) takes
# BENCH_BASELINE_CACHE instead.
base_cache=${BENCH_BASELINE_CACHE:-$cache}
start_guard hms-guard "$guard_bin"
start_guard hms-guard-cache "$guard_bin" "$cache"
if [[ -n "${BENCH_BASELINE_BIN:-}" ]]; then
    [[ -x "$BENCH_BASELINE_BIN" ]] || die "BENCH_BASELINE_BIN=$BENCH_BASELINE_BIN is not executable"
    start_guard hms-guard-base-cache "$BENCH_BASELINE_BIN" "$base_cache"
fi

# "NAME CPU_TICKS CALLS" for each hms-guard process.
snapshot() {
    local i
    for i in "${!names[@]}"; do
        printf '%s %s %s\n' "${names[$i]}" "$(awk '{ print $14 + $15 }' "/proc/${gpids[$i]}/stat")" \
            "$(python3 - "${admins[$i]}" <<'EOF'
import sys, urllib.request
text = urllib.request.urlopen("http://127.0.0.1:%s/metrics" % sys.argv[1], timeout=5).read().decode()
print(int(sum(float(l.split()[-1]) for l in text.splitlines() if l.startswith("hms_guard_requests_total"))))
EOF
)"
    done
}
hz=$(getconf CLK_TCK)
for c in $conns_list; do
    log "get_table, $c connection(s)"
    snapshot >"$work/before"
    "$lg" load --method get_table --db bench --table t --connections "$c" --seconds "$secs" \
        --rounds "$rounds" --warmup-secs "$warmup" "${targets[@]}" | grep -v '^BENCH_JSON'
    snapshot >"$work/after"
    paste "$work/before" "$work/after" | awk -v c="$c" -v hz="$hz" '{
        printf "cpu: %-22s %d connection(s): %5.1f us of hms-guard CPU per call (%d calls)\n",
            $1, c, ($5 - $2) * 1e6 / hz / ($6 - $3), $6 - $3 }'
done
