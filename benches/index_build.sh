#!/usr/bin/env bash
# benches/index_build.sh LAB_DIR: how long the location index's first build takes and how much
# memory it holds, against a lab metastore (a synthetic one from tests/lab/synth.py --lab DIR).
#
#   benches/index_build.sh /tmp/hms-guard-synth-100k     # prints a JSON summary last
#
# 1. builds hms-guard (release; HMS_GUARD_BIN=PATH uses that binary instead) and starts the
#    lab's metastore on DIR (tests/lab/hms.py; INDEX_HMS_PORT=PORT uses one already running
#    on 127.0.0.1:PORT instead, not started or stopped here);
# 2. baseline: hms-guard with authorization on, [storage] enabled = false and the index off,
#    its resident memory (VmRSS) once its admin port answers /readyz;
# 3. the same with [index] enabled = true (the rescan set to a week, so only the first build
#    runs): the time from its start to the end of the first build (hms_guard_index_builds_total
#    {outcome="ok"} counted, and the state `ready`; polled every 0.25 s on /metrics, with VmRSS
#    sampled each time), the metrics of the build
#    (index_build_duration_seconds, index_entries, index_tables, the metastore calls it made:
#    facts_calls_total by method), VmRSS when ready and 5 s later, VmHWM, and /readyz;
# 4. prints a JSON summary (and writes it to INDEX_OUT, target/index-build.json by default).
# Everything it started is stopped on exit. INDEX_TIMEOUT (3600 s) bounds the wait for ready.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

[[ $# -eq 1 && -d "$1" ]] || { echo "usage: benches/index_build.sh LAB_DIR (a tests/lab/synth.py --lab directory)" >&2; exit 2; }
lab=$(realpath "$1")
[[ -d "$lab/hms/metastore_db" ]] || { echo "benches/index_build.sh: no metastore database in $lab/hms/metastore_db" >&2; exit 2; }
venv="${HMS_GUARD_CACHE:-$HOME/.cache/hms-guard}/venv"
target_dir="${CARGO_TARGET_DIR:-$root/target}"
out="${INDEX_OUT:-$target_dir/index-build.json}"
timeout_s="${INDEX_TIMEOUT:-3600}"

log() { printf '== %s\n' "$*" >&2; }
die() { printf 'benches/index_build.sh: %s\n' "$*" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/hms-guard-index.XXXXXX")
pids=()
hms_started=""
cleanup() {
    local rc=$?
    set +e
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
    [[ -n "$hms_started" ]] && "$venv/bin/python" tests/lab/hms.py stop --dir "$lab" >/dev/null 2>&1
    if [[ $rc -ne 0 ]]; then echo "work directory kept: $work" >&2; else rm -rf "$work"; fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
vm() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; } # KiB
now() { date +%s.%N; }
get() { # URL -> the status on the first line (0: no answer), then the body
    python3 - "$1" <<'EOF'
import sys, urllib.request, urllib.error
try:
    r = urllib.request.urlopen(sys.argv[1], timeout=5)
    status, body = r.status, r.read().decode()
except urllib.error.HTTPError as e:
    status, body = e.code, e.read().decode()
except Exception:
    status, body = 0, ""
sys.stdout.write("%d\n%s\n" % (status, body))
EOF
}
# One metric's value from a /metrics text file: NAME with its labels as written, e.g.
# 'hms_guard_index_state{state="ready"}'.
metric() { awk -v k="$2" '$1 == k { print $2 }' "$1"; }

if [[ -z "${HMS_GUARD_BIN:-}" ]]; then
    log "build (release)"
    cargo build --release --locked --bin hms-guard
    bin="$target_dir/release/hms-guard"
else
    bin=$HMS_GUARD_BIN
fi
[[ -x "$bin" ]] || die "no hms-guard binary at $bin"

if [[ -n "${INDEX_HMS_PORT:-}" ]]; then
    hms_port=$INDEX_HMS_PORT
    log "metastore: using the one on port $hms_port"
else
    [[ -x "$venv/bin/python" ]] || tests/lab/setup.sh
    hms_port=$(free_port)
    log "metastore on $lab (port $hms_port)"
    hms_started=1
    t=$(now)
    "$venv/bin/python" tests/lab/hms.py start --dir "$lab" --port "$hms_port" >/dev/null
    log "metastore ready in $(python3 -c "import sys; print(round($(now) - $t, 1))") s"
fi

# start_guard NAME INDEX_ENABLED: sets guard_pid, guard_admin, guard_t0.
start_guard() {
    local port
    port=$(free_port)
    guard_admin=$(free_port)
    cat >"$work/$1.toml" <<EOF
[server]
listen = "127.0.0.1:$port"
[upstream]
uris = ["thrift://127.0.0.1:$hms_port"]
[admin]
listen = "127.0.0.1:$guard_admin"
[logging]
level = "info"
[storage]
enabled = false
[index]
enabled = $2
rescan_ms = 604800000
EOF
    "$bin" check-config --config "$work/$1.toml" >/dev/null
    guard_t0=$(now)
    "$bin" serve --config "$work/$1.toml" >"$work/$1.out" 2>"$work/$1.log" &
    guard_pid=$!
    pids+=("$guard_pid")
}
wait_admin() { # seconds until /readyz answers 200
    local i
    for ((i = 0; i < 600; i++)); do
        [[ $(get "http://127.0.0.1:$guard_admin/readyz" | sed -n 1p) == 200 ]] && return 0
        kill -0 "$guard_pid" 2>/dev/null || die "hms-guard exited; see $work/*.log"
        sleep 0.1
    done
    die "hms-guard not ready in 60 s; see $work/*.log"
}

log "baseline: hms-guard, index off"
start_guard base false
wait_admin
sleep 2
base_rss=$(vm "$guard_pid" VmRSS)
base_hwm=$(vm "$guard_pid" VmHWM)
kill "$guard_pid"
wait "$guard_pid" 2>/dev/null || true

log "hms-guard, index on: waiting for the first build"
start_guard index true
wait_admin
ready_admin_s=$(python3 -c "print(round($(now) - $guard_t0, 3))")
rss_at_admin=$(vm "$guard_pid" VmRSS)
rss_max=$rss_at_admin
deadline=$(($(date +%s) + timeout_s))
last_tables=-1
while true; do
    get "http://127.0.0.1:$guard_admin/metrics" | tail -n +2 >"$work/metrics.txt"
    r=$(vm "$guard_pid" VmRSS)
    ((r > rss_max)) && rss_max=$r
    # The first build's end: its outcome counted (the state gauge alone is not enough: at the
    # time of writing it reads `ready` from the start, see docs/BENCHMARKS.md).
    if [[ $(metric "$work/metrics.txt" 'hms_guard_index_builds_total{outcome="ok"}') == 1 ]]; then
        [[ $(metric "$work/metrics.txt" 'hms_guard_index_state{state="ready"}') == 1 ]] ||
            die "the first build ended but the index is not ready; see $work/index.log"
        break
    fi
    if [[ -n $(metric "$work/metrics.txt" 'hms_guard_index_builds_total{outcome="error"}') ||
        $(metric "$work/metrics.txt" 'hms_guard_index_state{state="incomplete"}') == 1 ]]; then
        die "the index's build failed or it is full; see $work/index.log"
    fi
    tables=$(metric "$work/metrics.txt" hms_guard_index_build_tables)
    if [[ "$tables" != "$last_tables" && $((${tables:-0} / 10000)) -ne $((${last_tables#-} / 10000)) ]]; then
        log "  $tables tables read, VmRSS $((r / 1024)) MiB, $(python3 -c "print(round($(now) - $guard_t0))") s"
    fi
    last_tables=${tables:-0}
    (($(date +%s) < deadline)) || die "the index was not ready within $timeout_s s"
    sleep 0.25
done
ready_s=$(python3 -c "print(round($(now) - $guard_t0, 2))")
rss_ready=$(vm "$guard_pid" VmRSS)
readyz=$(get "http://127.0.0.1:$guard_admin/readyz" | tr '\n' ' ')
sleep 5
rss_settled=$(vm "$guard_pid" VmRSS)
hwm=$(vm "$guard_pid" VmHWM)
get "http://127.0.0.1:$guard_admin/metrics" | tail -n +2 >"$work/metrics.txt"
log "ready in $ready_s s"

export I_METRICS="$work/metrics.txt" I_LAB="$lab" I_OUT="$out" I_BASE_RSS="$base_rss" \
    I_BASE_HWM="$base_hwm" I_ADMIN_S="$ready_admin_s" I_RSS_ADMIN="$rss_at_admin" \
    I_READY_S="$ready_s" I_RSS_READY="$rss_ready" I_RSS_SETTLED="$rss_settled" I_HWM="$hwm" \
    I_RSS_MAX="$rss_max" I_READYZ="$readyz" I_BIN="$bin"
python3 - <<'EOF'
import json, os, re, subprocess, time
E = os.environ
m = {}
for line in open(E["I_METRICS"]):
    g = re.match(r'^(hms_guard_\w+)(\{[^}]*\})? (\S+)$', line.strip())
    if g:
        m[g.group(1) + (g.group(2) or "")] = float(g.group(3))
def mib(k):
    return round(int(E[k]) / 1024, 1)
calls = {re.search(r'method="([^"]+)"', k).group(1) + ("" if 'outcome="ok"' in k else " (" + re.search(r'outcome="([^"]+)"', k).group(1) + ")"): int(v)
         for k, v in m.items() if k.startswith("hms_guard_facts_calls_total{") and v}
entries, tables = int(m.get("hms_guard_index_entries", 0)), int(m.get("hms_guard_index_tables", 0))
held_kib = int(E["I_RSS_SETTLED"]) - int(E["I_BASE_RSS"])
summary_path = os.path.join(E["I_LAB"], "summary.json")
doc = {
    "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    "command": "benches/index_build.sh " + E["I_LAB"],
    "git": subprocess.run("git describe --always --dirty", shell=True, capture_output=True, text=True).stdout.strip(),
    "machine": {"cpus": os.cpu_count(), "loadavg_at_end": open("/proc/loadavg").read().split()[:3]},
    "lab": json.load(open(summary_path)) if os.path.exists(summary_path) else None,
    "seconds_to_admin_ready": float(E["I_ADMIN_S"]),
    "seconds_to_index_ready": float(E["I_READY_S"]),
    "index_build_duration_seconds": m.get("hms_guard_index_build_duration_seconds"),
    "index_entries": entries, "index_tables": tables,
    "index_builds_ok": int(m.get('hms_guard_index_builds_total{outcome="ok"}', 0)),
    "metastore_calls": calls, "metastore_calls_total": sum(calls.values()),
    "readyz": E["I_READYZ"].strip(),
    "rss_mib": {"baseline_index_off": mib("I_BASE_RSS"), "baseline_index_off_hwm": mib("I_BASE_HWM"),
                "at_admin_ready": mib("I_RSS_ADMIN"), "at_index_ready": mib("I_RSS_READY"),
                "5s_after_ready": mib("I_RSS_SETTLED"), "max_sampled": mib("I_RSS_MAX"),
                "hwm": mib("I_HWM")},
    "index_held_mib": round(held_kib / 1024, 1),
    "bytes_per_entry": round(held_kib * 1024 / entries) if entries else None,
    "mib_per_100k_tables": round(held_kib / 1024 / tables * 100000, 1) if tables else None,
    "note": "index_held = VmRSS 5 s after ready minus VmRSS of the same process with the index off",
}
json.dump(doc, open(E["I_OUT"], "w"), indent=1)
print(json.dumps(doc))
EOF
