#!/usr/bin/env bash
# Builds hms-guard-spark (the Spark session extension) from source with javac and jar, against
# the Spark jars of the lab's pyspark (or SPARK_JARS=DIR), into target/hms-guard-spark.jar.
# The Spark version it is compiled against is recorded in the jar (build.properties) and
# checked when a session loads it.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${HMS_GUARD_CACHE:-$HOME/.cache/hms-guard}/venv"
jars="${SPARK_JARS:-}"
if [ -z "$jars" ]; then
  jars=$("$venv/bin/python" -c 'import pyspark, os; print(os.path.join(os.path.dirname(pyspark.__file__), "jars"))')
fi
[ -d "$jars" ] || { echo "spark/build.sh: no Spark jars at $jars (run tests/lab/setup.sh, or set SPARK_JARS)" >&2; exit 1; }
command -v javac >/dev/null || { echo "spark/build.sh: javac not found (a JDK 17+ is needed)" >&2; exit 1; }
core=$(ls "$jars"/spark-core_*.jar | head -1)
spark_version=$(basename "$core" .jar | sed 's/^spark-core_[0-9.]*-//')
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
out=target/hms-guard-spark
rm -rf "$out" && mkdir -p "$out/classes/hmsguard/spark"
printf 'version=%s\nspark.version=%s\n' "$version" "$spark_version" > "$out/classes/hmsguard/spark/build.properties"
javac -nowarn -Xlint:-options --release 17 -d "$out/classes" -cp "$jars/*" $(find spark/src -name '*.java')
jar --create --file target/hms-guard-spark.jar -C "$out/classes" .
echo "spark/build.sh: target/hms-guard-spark.jar (hms-guard-spark $version for Spark $spark_version)"
