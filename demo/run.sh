#!/usr/bin/env bash
# One command for a newcomer: installs the lab (cached), builds hms-guard, starts a real Hive
# Metastore 2.3, the moto AWS stand-in and hms-guard in front of the metastore; the admin
# creates demo_database (customer, store_sales, promotion in the protected warehouse, and two
# views of customer: customer_public without ssn, customer_eu of the EU rows), the
# roles sales, marketing and finance with their grants and the users david, mary and john
# (hms-guard sql -f demo/grants.sql; then hms-guard access shows who can read customer);
# then each user works from their own Spark session: allowed reads and writes, a refused
# INSERT (refused inside Spark by hms-guard-spark, before a file is written), a refused read
# by path and a refused location (storage checks), john reading customer only through its
# views (the table narrowed to them), the audit lines and a summary of who did what.
# Prints where the logs are, then stops everything (~3 minutes).
#   demo/run.sh              hms-guard enforcing the grants and storage checks (the default)
#   DEMO_AUTHZ=off demo/run.sh   hms-guard as a pure pass-through (everything goes through)
# The lab (logs, configs, the emulated bucket) stays in target/demo-lab until the next run.
set -euo pipefail
cd "$(dirname "$0")/.."

mode="${DEMO_AUTHZ:-enforce}"
case "$mode" in enforce|shadow|off) ;; *) echo "DEMO_AUTHZ must be enforce, shadow or off" >&2; exit 2 ;; esac

echo "== lab setup (first run: ~500 MB into ${HMS_GUARD_CACHE:-$HOME/.cache/hms-guard})"
tests/lab/setup.sh
echo "== cargo build --release"
cargo build --release --locked --bin hms-guard
echo "== hms-guard-spark (the Spark extension)"
spark/build.sh

target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
lab="$target_dir/demo-lab"
rm -rf "$lab"
mkdir -p "$lab"
export HMS_GUARD_BIN="$target_dir/release/hms-guard"
exec "${HMS_GUARD_CACHE:-$HOME/.cache/hms-guard}/venv/bin/python" demo/demo.py "$lab" "$mode"
