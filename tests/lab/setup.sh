#!/usr/bin/env bash
# Installs the test lab, cached: the build's own needs (tests/lab/build-deps.sh), Debian's MIT
# KDC and Kerberos tools with faketime, OpenLDAP's slapd and ldap-utils, openssl and a JRE 17+ (apt-get, if missing; Java also if too old) and a
# Python venv with PyPI pyspark (its jars hold Hive Metastore 2.3 and Spark), hmsclient, thrift
# and pytest, at ${HMS_GUARD_CACHE:-$HOME/.cache/hms-guard}/venv.
# First run: ~460 MB download, a few minutes. Re-running when complete takes about a second
# (a stamp file holds the hash of the requirements). Exits non-zero with a message on failure.
set -euo pipefail

# Versions verified together (Python 3.11, Java 17): pyspark 4.3.0 ships hive-metastore 2.3.10,
# libthrift 0.16.0, hadoop-client 3.5.0 and pins py4j 0.10.9.9.
REQUIREMENTS="pyspark==4.3.0
hmsclient==0.1.1
thrift==0.25.0
pytest==9.2.0
moto[server]==5.2.5
boto3==1.44.8
pyiceberg[hive,pyarrow]==0.12.0
pure-sasl==0.6.2
kerberos==1.3.1"

cache="${HMS_GUARD_CACHE:-$HOME/.cache/hms-guard}"
venv="$cache/venv"
stamp="$venv/.hms-guard-lab"

die() { echo "lab setup: $*" >&2; exit 1; }
say() { echo "lab setup: $*" >&2; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo -n "$@"
  else return 1; fi
}

apt_install() {
  command -v apt-get >/dev/null 2>&1 || return 1
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -qq >/dev/null && as_root apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

java_major() {
  # `java -version` prints e.g.: openjdk version "17.0.15" 2025-04-15
  local v
  v=$("${JAVA_HOME:+$JAVA_HOME/bin/}java" -version 2>&1 | sed -n 's/.*version "\([0-9][0-9]*\).*/\1/p' | head -1)
  echo "${v:-0}"
}

hash_of() { if command -v sha256sum >/dev/null 2>&1; then sha256sum; else cksum; fi | cut -d' ' -f1; }

mkdir -p "$cache"
# One installer at a time (tests and the demo may start together).
if command -v flock >/dev/null 2>&1; then
  exec 9>"$cache/.setup.lock"
  flock 9
fi

# --- what building hms-guard needs (GSSAPI headers, libclang)
"$(dirname "$0")/build-deps.sh"

# --- a Kerberos realm for the Kerberos tests: Debian's MIT KDC and its tools (kdb5_util,
# kadmin.local, krb5kdc, kinit, kvno), and faketime (a client clock far off)
if ! command -v krb5kdc >/dev/null 2>&1 && [ ! -x /usr/sbin/krb5kdc ] \
   || ! command -v kinit >/dev/null 2>&1 || ! command -v faketime >/dev/null 2>&1 \
   || [ ! -x /usr/sbin/kadmin.local ]; then
  say "installing the MIT KDC and client tools (krb5-kdc krb5-admin-server krb5-user) and faketime with apt-get"
  apt_install krb5-kdc krb5-admin-server krb5-user faketime \
    || die "cannot install krb5-kdc krb5-admin-server krb5-user faketime (need root or sudo and apt-get)"
fi

# --- an OpenLDAP server for the group-source tests (tests/lab/ldap.py): Debian's slapd and
# ldap-utils (ldapadd, ldapdelete, ldapmodify). Told by debconf to make no directory of its
# own; the package's service is stopped: the tests start slapd from the config they write.
if [ ! -x /usr/sbin/slapd ] || ! command -v ldapadd >/dev/null 2>&1; then
  say "installing OpenLDAP (slapd ldap-utils) with apt-get"
  echo "slapd slapd/no_configuration boolean true" | as_root debconf-set-selections \
    || die "cannot preseed debconf for slapd (need root or sudo)"
  apt_install slapd ldap-utils || die "cannot install slapd ldap-utils (need root or sudo and apt-get)"
  as_root service slapd stop >/dev/null 2>&1 || true
fi

# --- openssl (the TLS end-to-end tests make their certificates with it)
if ! command -v openssl >/dev/null 2>&1; then
  say "no openssl found; installing it with apt-get"
  apt_install openssl || die "cannot install openssl (need root or sudo and apt-get); install it and retry"
fi

# --- Java (Spark 4 and this metastore need 17+)
if ! command -v "${JAVA_HOME:+$JAVA_HOME/bin/}java" >/dev/null 2>&1 || [ "$(java_major)" -lt 17 ]; then
  say "no Java 17+ found; installing a JRE with apt-get"
  apt_install openjdk-17-jre-headless || apt_install default-jre-headless \
    || die "cannot install a JRE (need root or sudo and apt-get); install Java 17+ and retry"
  hash -r
  [ "$(java_major)" -ge 17 ] \
    || die "Java 17+ still not on PATH after installing (found major $(java_major)); set JAVA_HOME"
fi

# --- javac (hms-guard-spark, the Spark extension, is compiled here: spark/build.sh)
if ! command -v "${JAVA_HOME:+$JAVA_HOME/bin/}javac" >/dev/null 2>&1; then
  say "no javac found; installing a JDK with apt-get"
  apt_install openjdk-17-jdk-headless || apt_install default-jdk-headless \
    || die "cannot install a JDK (need root or sudo and apt-get); install a JDK 17+ and retry"
  hash -r
fi

# --- hive-metastore-client's own venv: it pins thrift 0.13.0, which the main venv's clients
# (thrift 0.25) cannot share; its tests run it in a subprocess (tests/e2e/hmc_as.py).
hmc_venv="$cache/hmc-venv"
if ! "$hmc_venv/bin/python" -c 'import hive_metastore_client' >/dev/null 2>&1; then
  command -v python3 >/dev/null 2>&1 || apt_install python3 python3-venv || die "python3 is missing"
  rm -rf "$hmc_venv"
  if ! python3 -m venv "$hmc_venv" 2>/dev/null; then
    pyver=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    { apt_install "python$pyver-venv" || apt_install python3-venv; } \
      || die "python3 -m venv does not work and python3-venv cannot be installed"
    rm -rf "$hmc_venv"
    python3 -m venv "$hmc_venv" || die "python3 -m venv $hmc_venv failed"
  fi
  say "installing hive-metastore-client==1.0.9 into $hmc_venv"
  "$hmc_venv/bin/python" -m pip install -q --disable-pip-version-check "hive-metastore-client==1.0.9" \
    || die "pip install hive-metastore-client failed; PyPI must be reachable"
  "$hmc_venv/bin/python" -c 'import hive_metastore_client' || die "hive-metastore-client is incomplete"
fi

# --- Python venv
want="$(printf '%s\n%s\n' "$REQUIREMENTS" "$(python3 -c 'import sys; print(sys.version_info[:2])' 2>/dev/null)" | hash_of)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$venv/bin/python" ] \
   && [ -d "$("$venv/bin/python" -c 'import pyspark, os; print(os.path.dirname(pyspark.__file__))' 2>/dev/null)/jars" ]; then
  exit 0
fi

command -v python3 >/dev/null 2>&1 || apt_install python3 python3-venv || die "python3 is missing"
say "installing into $venv: $(echo $REQUIREMENTS) (first run: ~460 MB, a few minutes)"
rm -f "$stamp"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -m pip --version >/dev/null 2>&1; then
  rm -rf "$venv"
  if ! python3 -m venv "$venv" 2>/dev/null; then
    say "python3 -m venv failed; installing python3-venv with apt-get"
    rm -rf "$venv"
    pyver=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    { apt_install "python$pyver-venv" || apt_install python3-venv; } \
      || die "python3 -m venv does not work and python3-venv cannot be installed"
    python3 -m venv "$venv" || die "python3 -m venv $venv failed"
  fi
fi
req_file="$cache/requirements.txt"
printf '%s\n' "$REQUIREMENTS" > "$req_file"
"$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$req_file" \
  || die "pip install failed (see above); PyPI must be reachable"
"$venv/bin/python" - <<'PY' || die "the installed packages are incomplete"
import os, pyspark, hmsclient, thrift, pytest, pyiceberg.catalog.hive, pyarrow, puresasl, kerberos  # noqa: F401
from hmsclient.genthrift.hive_metastore import ThriftHiveMetastore  # noqa: F401
jars = os.path.join(os.path.dirname(pyspark.__file__), "jars")
need = ["hive-metastore-2.3", "hive-exec-2.3", "libthrift-", "derby-", "HikariCP-"]
have = os.listdir(jars)
missing = [n for n in need if not any(j.startswith(n) for j in have)]
if missing:
    raise SystemExit(f"pyspark/jars lacks {missing}")
PY
echo "$want" > "$stamp"
say "ready ($venv)"
