#!/usr/bin/env bash
# Installs the test lab, cached: a JRE (apt, if `java` is missing) and a Python venv with
# PyPI pyspark (its jars hold Hive Metastore 2.3 and Spark), hmsclient, thrift and pytest.
# Re-running when complete takes about a second. Exits non-zero with a clear message on failure.
set -euo pipefail
cache="${HMS_GUARD_CACHE:-$HOME/.cache/hms-guard}"
venv="$cache/venv"
reqs="pyspark==4.3.0 hmsclient==0.1.1 thrift==0.25.0 pytest==9.2.0"
stamp="$venv/.hms-guard-lab"

if ! command -v java >/dev/null 2>&1; then
  echo "lab: java not found; installing openjdk-17-jre-headless"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq openjdk-17-jre-headless >/dev/null \
    || { echo "lab: cannot install a JRE (apt-get failed)" >&2; exit 1; }
fi
java -version >/dev/null 2>&1 || { echo "lab: java does not run" >&2; exit 1; }

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$reqs" ] && "$venv/bin/python" -c "import pyspark, hmsclient, thrift, pytest" 2>/dev/null; then
  exit 0
fi
echo "lab: installing $reqs into $venv (first run: ~460 MB, a few minutes)"
mkdir -p "$cache"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q --upgrade pip >/dev/null
# shellcheck disable=SC2086
"$venv/bin/pip" install -q $reqs || { echo "lab: pip install failed" >&2; exit 1; }
"$venv/bin/python" -c "import pyspark, hmsclient, thrift, pytest" \
  || { echo "lab: installed packages do not import" >&2; exit 1; }
echo "$reqs" > "$stamp"
echo "lab: ready"
