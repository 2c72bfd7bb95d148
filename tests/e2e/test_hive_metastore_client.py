"""PyPI hive-metastore-client through hms-guard against the real metastore. The client never
calls set_ugi, so each proxy pins its identity (identity.mode = "pinned", the sidecar set-up):
an admin creates a database, a partitioned table and partitions; a user holding INSERT adds
partitions; a user holding only SELECT cannot."""
import json
import os
import subprocess
from pathlib import Path

import pytest
from hmsclient.genthrift.hive_metastore import ttypes as tt

import hms
from hms import connect

HERE = Path(__file__).resolve().parent
DB, TABLE = "hmc_db", "events"
HMC_PYTHON = Path(os.environ.get("HMS_GUARD_CACHE", Path.home() / ".cache/hms-guard")) \
    / "hmc-venv" / "bin" / "python"


def hmc(port, actions):
    assert HMC_PYTHON.exists(), f"{HMC_PYTHON} missing: run tests/lab/setup.sh"
    p = subprocess.run([str(HMC_PYTHON), str(HERE / "hmc_as.py"), str(port), json.dumps(actions)],
                       capture_output=True, text=True, timeout=120)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
    assert p.returncode == 0 and lines, p.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT "):])


def pinned(lab, metastore, user):
    return hms.Guard(lab, metastore.port, name=f"guard-pinned-{user}",
                     extra=(f'[identity]\nmode = "pinned"\npinned_user = "{user}"\n\n'
                            '[authz]\nmode = "enforce"\n\n[storage]\nenabled = false\n'))


@pytest.fixture(scope="module")
def guards(lab, metastore):
    gs = {u: pinned(lab, metastore, u) for u in ("admin", "ingest", "viewer")}
    for g in gs.values():
        g.start()
    yield gs
    for g in gs.values():
        g.stop()


def test_admin_sets_up_and_a_writer_adds_partitions(guards, metastore, lab):
    base = f"file://{lab}/{DB}.db"
    r = hmc(guards["admin"].port, [
        ["create_database", DB, base],
        ["create_table", DB, TABLE, f"{base}/{TABLE}", "ds"],
        ["add_partitions", DB, TABLE, ["2026-01-01"], f"{base}/{TABLE}"],
    ])
    assert all(x["ok"] for x in r), json.dumps(r, indent=1)
    admin = connect(guards["admin"].port, "admin")  # (pinned: set_ugi is ignored)
    obj = tt.HiveObjectRef(tt.HiveObjectType.TABLE, DB, TABLE, None, None)
    bag = [tt.HiveObjectPrivilege(obj, user, tt.PrincipalType.USER,
                                  tt.PrivilegeGrantInfo(p, 0, "admin", tt.PrincipalType.USER,
                                                        False))
           for user, p in (("ingest", "INSERT"), ("ingest", "SELECT"), ("viewer", "SELECT"))]
    assert admin.grant_privileges(tt.PrivilegeBag(bag))
    r = hmc(guards["ingest"].port, [["add_partitions", DB, TABLE, ["2026-01-02"],
                                     f"{base}/{TABLE}"]])
    assert r[0]["ok"], r
    r = hmc(guards["viewer"].port, [["add_partitions", DB, TABLE, ["2026-01-03"],
                                     f"{base}/{TABLE}"]])
    assert not r[0]["ok"] and "hms-guard" in r[0]["error"] and "INSERT" in r[0]["error"], r
    assert "viewer" in r[0]["error"], r
    with hms.hms_client(metastore.port) as c:
        assert sorted(c.get_partition_names(DB, TABLE, -1)) == ["ds=2026-01-01", "ds=2026-01-02"]
        # hive-metastore-client leaves the owner unset; an admin's choice stands (a
        # non-admin's table would be owned by its creator).
        assert c.get_table(DB, TABLE).owner is None
