"""`kustomize build DIR` for the deployment tests, without a kustomize binary.

No kustomize release binary can be fetched on this project's machines (only apt, PyPI, crates.io
and npm are reachable; Debian's kubectl is 1.20, whose built-in kustomize v2.0.3 predates most of
today's kustomization fields). PyPI `pykustomize` ships kustomize itself (the Go API,
sigs.k8s.io/kustomize/api v0.21.3 = kustomize v5) compiled into a C shared library;
tests/deploy/setup.sh unpacks that library into the cache and this module calls its C entry
points with ctypes:

    int  pykustomize_build(const char *path, const char *options_json, char **result);
    char *pykustomize_last_error(void);
    void pykustomize_free(void *ptr);
    char *pykustomize_version_string(void);

So the rendering is kustomize's own, with its default build options (load restrictions: root
only, as `kustomize build` does). CLI: `python kustomize.py DIR` prints the rendered YAML;
`python kustomize.py --version`."""
import ctypes
import json
import os
import sys
from pathlib import Path

VERSION = "0.1.4"  # PyPI pykustomize, pinned with its SHA-256 in setup.sh


def library_path():
    cache = Path(os.environ.get("HMS_GUARD_CACHE", Path.home() / ".cache" / "hms-guard"))
    return cache / "deploy-tools" / f"libpykustomize-{VERSION}.so"


_lib = None


def _load():
    global _lib
    if _lib is None:
        path = library_path()
        if not path.exists():
            raise RuntimeError(f"kustomize library {path} missing: run tests/deploy/setup.sh")
        lib = ctypes.CDLL(str(path))
        lib.pykustomize_build.argtypes = [ctypes.c_char_p, ctypes.c_char_p,
                                          ctypes.POINTER(ctypes.c_void_p)]
        lib.pykustomize_build.restype = ctypes.c_int
        lib.pykustomize_last_error.argtypes = []
        lib.pykustomize_last_error.restype = ctypes.c_void_p
        lib.pykustomize_version_string.argtypes = []
        lib.pykustomize_version_string.restype = ctypes.c_void_p
        lib.pykustomize_free.argtypes = [ctypes.c_void_p]
        lib.pykustomize_free.restype = None
        _lib = lib
    return _lib


def _take(ptr):
    """The C string at ptr, decoded; the library's memory is freed (Go's C.CString)."""
    if not ptr:
        return ""
    try:
        return ctypes.string_at(ptr).decode()
    finally:
        _load().pykustomize_free(ptr)


def version():
    return _take(_load().pykustomize_version_string())


class KustomizeError(RuntimeError):
    pass


def build(path):
    """The YAML stream `kustomize build path` renders; raises KustomizeError with kustomize's
    own message when the build fails."""
    lib = _load()
    options = json.dumps({"load_restrictions": 0, "reorder": "unspecified",
                          "add_managedby_label": False, "enable_plugins": False,
                          "enable_helm": False, "helm_command": ""}).encode()
    out = ctypes.c_void_p()
    rc = lib.pykustomize_build(str(Path(path).resolve()).encode(), options, ctypes.byref(out))
    if rc != 0:
        err = lib.pykustomize_last_error()
        # The error string belongs to the library's error slot: read it, do not free it.
        msg = ctypes.string_at(err).decode() if err else "unknown error"
        raise KustomizeError(f"kustomize build {path}: {msg}")
    return _take(out.value)


if __name__ == "__main__":
    if sys.argv[1:] == ["--version"]:
        print(version())
    elif len(sys.argv) == 2:
        sys.stdout.write(build(sys.argv[1]))
    else:
        raise SystemExit(__doc__)
