#!/usr/bin/env bash
# benches/spark_reads.sh: what hms-guard-spark costs a read-only Spark workload — two Spark JVMs,
# with and without the extension, side by side through the same enforcing hms-guard in front of
# the lab's real metastore, rounds interleaved (benches/spark_reads.py; docs/BENCHMARKS.md).
# ~5 minutes on 2 cores. Knobs: SPARK_READS_ROUNDS (10), SPARK_READS_QUERIES (5).
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${HMS_GUARD_CACHE:-$HOME/.cache/hms-guard}/venv"
tests/lab/setup.sh
cargo build --release --locked --bin hms-guard
spark/build.sh
target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
export HMS_GUARD_BIN="$target_dir/release/hms-guard"
export SPARK_READS_JSON="$target_dir/spark-reads-results.json"
exec "$venv/bin/python" benches/spark_reads.py
