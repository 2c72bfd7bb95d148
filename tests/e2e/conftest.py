"""Session fixtures: a real metastore, hms-guard in front of it, one Spark session.
A part that cannot start makes the tests error (fail), never skip."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lab"))
import hms  # noqa: E402


@pytest.fixture(scope="session")
def lab(tmp_path_factory):
    return tmp_path_factory.mktemp("lab")


@pytest.fixture(scope="session")
def metastore(lab):
    m = hms.Metastore(lab / "hms")
    (lab / "hms").mkdir(exist_ok=True)
    try:
        m.start()
        yield m
    finally:
        m.stop()


@pytest.fixture(scope="session")
def passthrough_guard(lab, metastore):
    """hms-guard with authorization off: the transparent proxy of the first issue."""
    g = hms.Guard(lab, metastore.port, extra='[authz]\nmode = "off"\n', name="guard-passthrough")
    try:
        g.start()
        yield g
    finally:
        g.stop()


@pytest.fixture(scope="session")
def spark(lab, passthrough_guard):
    s = hms.spark_session(lab / "spark", passthrough_guard.port)
    try:
        yield s
    finally:
        s.stop()
