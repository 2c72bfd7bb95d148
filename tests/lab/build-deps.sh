#!/usr/bin/env bash
# Installs what building hms-guard needs beyond Rust: MIT Kerberos's GSSAPI headers and
# library (libkrb5-dev) and libclang (the GSSAPI binding is generated at build time), with
# pkg-config — through apt-get, only when missing. Run by .ci/run, tests/lab/setup.sh and so
# by tests/run.sh and demo/run.sh. Exits non-zero with a message when they cannot be installed.
set -euo pipefail

die() { echo "build deps: $*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo -n "$@"
  else return 1; fi
}

have_gssapi() { pkg-config --exists krb5-gssapi 2>/dev/null; }
have_libclang() {
  ls /usr/lib/llvm-*/lib/libclang*.so* /usr/lib/*/libclang*.so* >/dev/null 2>&1 \
    && ls /usr/lib/llvm-*/lib/clang/*/include/stddef.h >/dev/null 2>&1
}

if command -v pkg-config >/dev/null 2>&1 && have_gssapi && have_libclang; then
  exit 0
fi
command -v apt-get >/dev/null 2>&1 \
  || die "libkrb5-dev, libclang-dev and pkg-config are needed to build hms-guard; install them"
echo "build deps: installing libkrb5-dev libclang-dev pkg-config with apt-get" >&2
export DEBIAN_FRONTEND=noninteractive
{ as_root apt-get update -qq >/dev/null \
  && as_root apt-get install -y -qq --no-install-recommends libkrb5-dev libclang-dev pkg-config >/dev/null; } \
  || die "cannot install libkrb5-dev libclang-dev pkg-config (need root or sudo and apt-get)"
have_gssapi || die "libkrb5-dev installed but pkg-config does not find krb5-gssapi"
have_libclang || die "libclang-dev installed but libclang is not found"
