"""The lab's synthetic metastore generator (tests/lab/synth.py) against the real metastore: a
tiny metastore generated as its layout says (databases, tables, locations, partitions, some of
them outside their table's location), read back through get_all_tables, get_table and
get_partitions; a second run resumes without creating anything; the automatic choice of
connections measures 1, 2 and 4; the command line, and an unreachable metastore failing loudly."""
import json
import subprocess
import sys

import pytest

import hms
import synth
from hms import connect

SPEC = synth.Spec(3, 20, prefix="s3a://datalake/synthtest",
                  outside_prefix="s3a://archive/synthtest", name="synthtest",
                  partitioned_every=4, partitions=3, outside_every=2)


def test_tiny_metastore_as_specified(metastore):
    summary = synth.generate("127.0.0.1", metastore.port, SPEC, connections=2)
    assert summary["created"] == 60 and summary["skipped"] == 0
    assert summary["databases_created"] == 3
    # 5 partitioned tables (j = 0, 4, 8, 12, 16) per database, 3 partitions each
    assert summary["partitions"] == 3 * 5 * 3
    assert summary["tables_per_s"] > 0

    c = connect(metastore.port, "admin")
    outside = 0
    for i in range(3):
        db = c.get_database(f"synthtest_db_{i}")
        assert db.locationUri == f"s3a://datalake/synthtest/db_{i}"
        assert sorted(c.get_all_tables(db.name)) == sorted(f"t_{j}" for j in range(20))
        for j in range(20):
            want = SPEC.table(i, j)
            t = c.get_table(db.name, f"t_{j}")
            assert t.sd.location == f"s3a://datalake/synthtest/db_{i}/t_{j}"
            assert t.tableType == "EXTERNAL_TABLE" and t.parameters["EXTERNAL"] == "TRUE"
            assert [f.name for f in t.sd.cols] == ["id", "name", "amount", "ts"]
            assert [k.name for k in t.partitionKeys] == (["ds"] if j % 4 == 0 else [])
            parts = sorted(c.get_partitions(db.name, t.tableName, -1), key=lambda p: p.values)
            assert [(p.values[0], p.sd.location) for p in parts] == want["partitions"]
            for p in parts:
                if not p.sd.location.startswith(t.sd.location + "/"):
                    outside += 1
                    assert p.sd.location == (f"s3a://archive/synthtest/db_{i}/t_{j}/"
                                             f"ds={p.values[0]}")
    # every second partitioned table (j = 0, 8, 16) has its last partition outside
    assert outside == 3 * 3

    again = synth.generate("127.0.0.1", metastore.port, SPEC, connections=1)
    assert again["created"] == 0 and again["skipped"] == 60 and again["databases_created"] == 0
    assert len(c.get_partitions("synthtest_db_0", "t_0", -1)) == 3


def test_auto_measures_one_two_four(metastore):
    spec = synth.Spec(1, 40, prefix="s3a://datalake/synthauto", name="synthauto")
    summary = synth.generate("127.0.0.1", metastore.port, spec, connections="auto", probe=8)
    assert set(summary["probe_tables_per_s"]) == {"1", "2", "4"}
    best = max(summary["probe_tables_per_s"], key=summary["probe_tables_per_s"].get)
    assert summary["connections"] == int(best)
    assert summary["created"] == 40
    c = connect(metastore.port, "admin")
    assert len(c.get_all_tables("synthauto_db_0")) == 40


def _cli(*args):
    return subprocess.run([sys.executable, synth.__file__, *args], capture_output=True,
                          text=True, timeout=300)


def test_command_line(metastore):
    p = _cli("--metastore", f"127.0.0.1:{metastore.port}", "--databases", "2", "--tables", "3",
             "--name", "synthcli", "--connections", "1")
    assert p.returncode == 0, p.stderr
    summary = json.loads(p.stdout.strip().splitlines()[-1])
    assert summary["created"] == 6 and summary["connections"] == 1
    c = connect(metastore.port, "admin")
    assert c.get_table("synthcli_db_1", "t_2").sd.location == "s3a://datalake/synth/db_1/t_2"


def test_unreachable_metastore_fails_loudly():
    dead = hms.free_port()
    p = _cli("--metastore", f"127.0.0.1:{dead}", "--databases", "1", "--tables", "1")
    assert p.returncode == 2
    assert f"metastore 127.0.0.1:{dead} unreachable" in p.stderr
    assert p.stdout == ""
    with pytest.raises(synth.Unreachable, match="unreachable"):
        synth.generate("127.0.0.1", dead, SPEC)
