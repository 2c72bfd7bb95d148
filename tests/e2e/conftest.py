"""Session fixtures for the end-to-end tests: one lab directory, a real Hive Metastore 2.3,
hms-guard in front of it (authorization off: the transparent proxy) and one Spark session
through hms-guard. A part that cannot start makes the tests that need it error: nothing is
skipped. Run: ~/.cache/hms-guard/venv/bin/python -m pytest tests/e2e (after tests/lab/setup.sh
and cargo build; HMS_GUARD_BIN overrides target/debug/hms-guard)."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lab"))
import hms  # noqa: E402
import pytest_hooks  # noqa: E402

_lab_dir = None


@pytest.fixture(scope="session")
def lab(tmp_path_factory):
    """The session's lab directory (pytest keeps the last three: logs survive a failed run)."""
    global _lab_dir
    _lab_dir = tmp_path_factory.mktemp("lab")
    return _lab_dir


@pytest.fixture(scope="session")
def metastore(lab):
    m = hms.Metastore(lab)
    try:
        m.start()
        yield m
    finally:
        m.stop()


@pytest.fixture(scope="session")
def passthrough_guard(lab, metastore):
    """hms-guard with authorization off: every call is forwarded unchanged."""
    g = hms.Guard(lab, metastore.port, extra='[authz]\nmode = "off"\n', name="guard-passthrough")
    try:
        g.start()
        yield g
    finally:
        g.stop()


@pytest.fixture(scope="session")
def spark(lab, passthrough_guard):
    """One Spark session (local[2], Hive support) whose metastore is hms-guard."""
    s = None
    try:
        s = hms.spark_session(lab, passthrough_guard.uri, app="hms-guard-e2e")
        yield s
    finally:
        if s is not None:
            hms.stop_spark(s)


# A failing test's report carries the tails of the lab's logs (tests/lab/pytest_hooks.py).
pytest_runtest_makereport, pytest_terminal_summary = pytest_hooks.lab_hooks(
    lambda: _lab_dir, ["hms/metastore.log", "spark/spark.log"], "lab (logs, configs)", n=25)
