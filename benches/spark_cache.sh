#!/usr/bin/env bash
# benches/spark_cache.sh: what the shared metadata cache does for a Spark workload — six
# metadata-heavy statements over a 300-partition table from Spark sessions started one after
# another, direct / through hms-guard / through hms-guard with [cache], each target behind its own
# counting relay in front of the lab's real metastore (benches/spark_cache.py; docs/BENCHMARKS.md,
# "Spark workloads through the cache"). ~10 minutes on 2 cores.
# Knobs: SPARK_CACHE_SESSIONS (4), SPARK_CACHE_ROUNDS (4), SPARK_CACHE_DELAY_MS (20),
# SPARK_CACHE_PARTITIONS (300), SPARK_CACHE_TIMED ("direct hms-guard-cache").
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${HMS_GUARD_CACHE:-$HOME/.cache/hms-guard}/venv"
tests/lab/setup.sh
cargo build --release --locked --bin hms-guard
target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
export HMS_GUARD_BIN="$target_dir/release/hms-guard"
export SPARK_CACHE_JSON="$target_dir/spark-cache-results.json"
exec "$venv/bin/python" benches/spark_cache.py
