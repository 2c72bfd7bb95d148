#!/usr/bin/env bash
# One command for a newcomer: installs the lab (cached), builds hms-guard, starts a real Hive
# Metastore 2.3, hms-guard in front of it and a Spark session through it that creates a
# database and a table at s3a://datalake/datawarehouse/demo/, inserts, selects and lists;
# prints what happened and where the logs are, then stops everything.
#   demo/run.sh              hms-guard enforcing the metastore's grants (the default);
#                            Spark runs as the metastore admin (HADOOP_USER_NAME=admin)
#   DEMO_AUTHZ=off demo/run.sh   hms-guard as a pure pass-through
# The lab (logs, configs, the emulated bucket) stays in target/demo-lab until the next run.
set -euo pipefail
cd "$(dirname "$0")/.."

mode="${DEMO_AUTHZ:-enforce}"
case "$mode" in enforce|shadow|off) ;; *) echo "DEMO_AUTHZ must be enforce, shadow or off" >&2; exit 2 ;; esac

echo "== lab setup (first run: ~500 MB into ${HMS_GUARD_CACHE:-$HOME/.cache/hms-guard})"
tests/lab/setup.sh
echo "== cargo build --release"
cargo build --release --locked --bin hms-guard

target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
lab="$target_dir/demo-lab"
rm -rf "$lab"
mkdir -p "$lab"
export HMS_GUARD_BIN="$target_dir/release/hms-guard"
export HADOOP_USER_NAME=admin  # Spark's set_ugi user: the metastore's admin
exec "${HMS_GUARD_CACHE:-$HOME/.cache/hms-guard}/venv/bin/python" demo/demo.py "$lab" "$mode"
