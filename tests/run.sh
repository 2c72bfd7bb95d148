#!/usr/bin/env bash
# The project's test command (README.md): everything, on a fresh machine.
#  1. installs the lab (cached venv with pyspark's Hive Metastore jars, hmsclient, pytest; a JRE
#     via apt if missing) — tests/lab/setup.sh;
#     and builds hms-guard-spark (target/hms-guard-spark.jar) with javac — spark/build.sh;
#  2. Rust unit, codec and socket tests (scripted upstreams) — cargo test;
#  3. end-to-end tests against a real Hive Metastore and real Spark — pytest tests/e2e;
#  4. deployment tests: manifests (kustomize, Kubernetes schemas), the container build steps,
#     a real Prometheus scraping hms-guard with the alert rules and the dashboard's queries
#     (installs Debian's prometheus) — tests/deploy.
# A missing part (Java, the metastore, Spark) fails the run; nothing is skipped. Which file holds
# which feature, and how to run one: tests/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${HMS_GUARD_CACHE:-$HOME/.cache/hms-guard}/venv"

echo "== lab setup"
tests/lab/setup.sh

echo "== hms-guard-spark (the Spark extension, built from source)"
spark/build.sh

echo "== cargo test"
cargo build --locked --bins
cargo test --locked

echo "== end-to-end (real metastore, real Spark)"
export HMS_GUARD_BIN="$PWD/target/debug/hms-guard"
"$venv/bin/python" -m pytest -v -p no:cacheprovider tests/e2e

echo "== deployment and observability"
tests/deploy/setup.sh
"$venv/bin/python" -m pytest -v -p no:cacheprovider tests/deploy
