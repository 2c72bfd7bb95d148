"""`hms-guard sql` against the real metastore, through an enforcing hms-guard: the demo's page
of HiveQL (demo/grants.sql) gives exactly the grants the Python set-up gives, twice in a row
with --apply; a non-admin's GRANT is refused with hms-guard's message; SHOW output; --plan
after a manual change shows exactly that change; --export reads back; the interactive shell.

The session's metastore is shared with the other tests: the page runs with its database and
role names made this module's own (sq_*), and the Python reference set-up on a twin database.
"""
import os
import pty
import re
import select
import subprocess
import time
from pathlib import Path

import pytest
from hmsclient.genthrift.hive_metastore import ttypes as tt

import hms
from hms import connect

REPO = Path(__file__).resolve().parents[2]
PAGE = REPO / "demo" / "grants.sql"
SQL_DB, PY_DB = "sq_sql_db", "sq_py_db"
TABLES = ["customer", "store_sales", "promotion", "customer_public", "customer_eu"]
ROLES = ["sales", "marketing", "finance"]
# The Python set-up the demo used before the shell: role -> {table: privileges}.
REFERENCE = {
    "sales": {"customer": ["SELECT", "INSERT"], "store_sales": ["SELECT", "INSERT"],
              "promotion": ["SELECT"]},
    "marketing": {"customer": ["SELECT"], "store_sales": ["SELECT"],
                  "promotion": ["SELECT", "INSERT"]},
    "finance": {"customer_public": ["SELECT"], "customer_eu": ["SELECT"],
                "store_sales": ["SELECT"], "promotion": ["SELECT"]},
}
MEMBERS = {"david": "sales", "mary": "marketing", "john": "finance"}


def own(text, db, prefix):
    """The page with its database and roles renamed."""
    text = text.replace("demo_database", db)
    for r in ROLES:
        text = re.sub(rf"\b{r}\b", prefix + r, text)
    return text


@pytest.fixture(scope="module")
def guard(lab, metastore):
    g = hms.Guard(lab, metastore.port, extra=('[authz]\nmode = "enforce"\n\n'
                                              '[storage]\nenabled = false\n'),
                  name="guard-sql")
    g.start()
    admin = connect(g.port, "admin")
    for db in (SQL_DB, PY_DB):
        admin.create_database(tt.Database(name=db, locationUri=f"file://{lab}/{db}.db",
                                          parameters={}))
        for t in TABLES:
            admin.create_table(hms.external_table(db, t, f"file://{lab}/{db}.db/{t}",
                                                  external=False))
    # The reference: roles py_*, created and granted with Python Thrift calls.
    bag = []
    for role, grants in REFERENCE.items():
        admin.create_role(tt.Role(roleName="py_" + role, ownerName="admin"))
        for t, privs in grants.items():
            obj = tt.HiveObjectRef(tt.HiveObjectType.TABLE, PY_DB, t, None, None)
            bag += [tt.HiveObjectPrivilege(obj, "py_" + role, tt.PrincipalType.ROLE,
                                           tt.PrivilegeGrantInfo(p, 0, "admin",
                                                                 tt.PrincipalType.USER, False))
                    for p in privs]
    assert admin.grant_privileges(tt.PrivilegeBag(bag))
    for user, role in MEMBERS.items():
        assert admin.grant_role("py_" + role, user, tt.PrincipalType.USER, "admin",
                                tt.PrincipalType.USER, False)
    yield g
    g.stop()


def sql(guard, *args, user="admin", stdin=None):
    env = dict(os.environ, HMS_GUARD_SQL_HISTORY=str(guard.lab / "sql_history"))
    return subprocess.run([hms.guard_bin(), "sql", "--uri", f"thrift://127.0.0.1:{guard.port}",
                           "--user", user, *args], input=stdin, capture_output=True, text=True,
                          timeout=120, env=env)


def page(guard, tmp_path):
    p = tmp_path / "grants.sql"
    p.write_text(own(PAGE.read_text(), SQL_DB, "sq_"))
    return p


def rows(c, role, db):
    """A role's grants as comparable tuples (the database and the role's prefix left out)."""
    out = set()
    for h in c.list_privileges(role, tt.PrincipalType.ROLE, tt.HiveObjectRef()):
        o, g = h.hiveObject, h.grantInfo
        assert o.dbName == db, (role, o)
        out.add((o.objectType, o.objectName, tuple(o.partValues or ()), o.columnName,
                 h.principalType, g.privilege, g.grantor, g.grantorType, g.grantOption))
    return out


def members(c, role):
    r = c.get_principals_in_role(tt.GetPrincipalsInRoleRequest(role))
    return {(m.principalName, m.principalType, m.grantOption, m.grantorName)
            for m in r.principalGrants}


def test_the_page_applies_exactly_the_reference_grants_and_twice_changes_nothing(guard, tmp_path):
    p = page(guard, tmp_path)
    first = sql(guard, "--apply", str(p))
    assert first.returncode == 0, first.stderr
    assert "Plan: 16 to add, 0 to change, 0 to remove, 0 unchanged." in first.stdout, first.stdout
    assert "Applied 16 change(s)." in first.stdout
    admin = connect(guard.port, "admin")
    for role in ROLES:
        assert rows(admin, "sq_" + role, SQL_DB) == rows(admin, "py_" + role, PY_DB), role
        assert members(admin, "sq_" + role) == members(admin, "py_" + role), role
        assert rows(admin, "sq_" + role, SQL_DB)  # not vacuous
    second = sql(guard, "--apply", str(p))
    assert second.returncode == 0, second.stderr
    assert "Plan: 0 to add, 0 to change, 0 to remove, 16 unchanged." in second.stdout, second.stdout
    assert "Applied 0 change(s)." in second.stdout
    assert "= GRANT INSERT, SELECT ON TABLE sq_sql_db.customer TO ROLE sq_sales" in second.stdout
    # The page runs as it is with -f too, now refused where it would grant twice, as Hive is.
    again = sql(guard, "-f", str(p))
    assert again.returncode == 1
    assert "line 8: Create role sq_sales" in again.stderr, again.stderr


def test_a_non_admins_grant_is_refused_with_hms_guards_message(guard, tmp_path):
    sql(guard, "--apply", str(page(guard, tmp_path)))
    r = sql(guard, "-e", f"GRANT SELECT ON TABLE {SQL_DB}.customer TO USER david",
            user="david")
    assert r.returncode == 1
    assert "permission denied" in r.stderr and "david" in r.stderr, r.stderr
    assert f"-e: line 1: GRANT SELECT ON TABLE {SQL_DB}.customer TO USER david" in r.stderr
    r = sql(guard, "-e", "CREATE ROLE sq_rogue", user="david")
    assert r.returncode == 1 and "permission denied" in r.stderr, r.stderr
    admin = connect(guard.port, "admin")
    assert "sq_rogue" not in admin.get_role_names()
    assert not any(h.principalName == "david" for h in admin.list_privileges(
        None, None, tt.HiveObjectRef(tt.HiveObjectType.TABLE, SQL_DB, "customer", None, None)))


def test_show_statements(guard, tmp_path):
    sql(guard, "--apply", str(page(guard, tmp_path)))
    r = sql(guard, "-e", f"SHOW GRANT ROLE sq_sales ON TABLE {SQL_DB}.customer")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["database", "table", "partition", "column", "principal_name",
                                "principal_type", "privilege", "grant_option", "grant_time",
                                "grantor"]
    got = [l.split() for l in lines[1:]]
    # (the empty partition and column cells do not split out)
    assert [tuple(g[:6]) for g in got] == [
        (SQL_DB, "customer", "sq_sales", "ROLE", "INSERT", "false"),
        (SQL_DB, "customer", "sq_sales", "ROLE", "SELECT", "false"),
    ], r.stdout
    assert all(g[-1] == "admin" for g in got)
    # Every principal's grants on a table.
    r = sql(guard, "-e", f"use {SQL_DB}; show grant on store_sales")
    principals = {l.split()[2] for l in r.stdout.splitlines()[1:]}
    assert principals == {"sq_sales", "sq_marketing", "sq_finance"}, r.stdout
    r = sql(guard, "-e", "SHOW ROLE GRANT USER john; SHOW PRINCIPALS sq_finance; SHOW ROLES")
    assert r.returncode == 0, r.stderr
    assert re.search(r"^sq_finance\s+false\s+\d+\s+admin$", r.stdout, re.M), r.stdout
    assert re.search(r"^john\s+USER\s+false\s+admin\s+\d+$", r.stdout, re.M), r.stdout
    assert re.search(r"^sq_marketing$", r.stdout, re.M), r.stdout
    # SET ROLE and SHOW CURRENT ROLES: john holds sq_finance, not admin.
    r = sql(guard, "-e", "SHOW CURRENT ROLES", user="john")
    assert "sq_finance" in r.stdout.split() and "public" in r.stdout.split(), r.stdout
    r = sql(guard, "-e", "SET ROLE sq_finance; SHOW CURRENT ROLES", user="john")
    assert r.stdout.split() == ["sq_finance"], r.stdout
    r = sql(guard, "-e", "SET ROLE admin", user="john")
    assert r.returncode == 1 and "john does not belong to role admin" in r.stderr, r.stderr


def test_plan_after_a_manual_change_shows_exactly_that_change(guard, tmp_path):
    p = page(guard, tmp_path)
    assert sql(guard, "--apply", str(p)).returncode == 0
    admin = connect(guard.port, "admin")
    obj = lambda t: tt.HiveObjectRef(tt.HiveObjectType.TABLE, SQL_DB, t, None, None)
    info = lambda priv: tt.PrivilegeGrantInfo(priv, 0, "admin", tt.PrincipalType.USER, False)
    # By hand: one grant taken away, one added, one member added.
    admin.revoke_privileges(tt.PrivilegeBag([tt.HiveObjectPrivilege(
        obj("promotion"), "sq_marketing", tt.PrincipalType.ROLE, info("INSERT"))]))
    admin.grant_privileges(tt.PrivilegeBag([tt.HiveObjectPrivilege(
        obj("customer"), "sq_sales", tt.PrincipalType.ROLE, info("DELETE"))]))
    admin.grant_role("sq_sales", "eve", tt.PrincipalType.USER, "admin", tt.PrincipalType.USER,
                     False)
    try:
        r = sql(guard, "--plan", str(p))
        assert r.returncode == 0, r.stderr
        changes = [l for l in r.stdout.splitlines() if l[:2] in ("+ ", "- ", "~ ")]
        assert changes == [f"+ GRANT INSERT ON TABLE {SQL_DB}.promotion TO ROLE sq_marketing"], r.stdout
        r = sql(guard, "--plan", str(p), "--prune")
        changes = [l for l in r.stdout.splitlines() if l[:2] in ("+ ", "- ", "~ ")]
        assert sorted(changes) == sorted([
            f"- REVOKE DELETE ON TABLE {SQL_DB}.customer FROM ROLE sq_sales",
            "- REVOKE ROLE sq_sales FROM USER eve",
            f"+ GRANT INSERT ON TABLE {SQL_DB}.promotion TO ROLE sq_marketing",
        ]), r.stdout
        # Planning changed nothing; applying with prune puts the page back exactly.
        assert "eve" in {m[0] for m in members(admin, "sq_sales")}
        r = sql(guard, "--apply", str(p), "--prune")
        assert "Applied 3 change(s)." in r.stdout, r.stdout + r.stderr
        assert "eve" not in {m[0] for m in members(admin, "sq_sales")}
        r = sql(guard, "--plan", str(p), "--prune")
        assert "Plan: 0 to add, 0 to change, 0 to remove" in r.stdout, r.stdout
    finally:
        for m in members(admin, "sq_sales"):
            if m[0] == "eve":
                admin.revoke_role("sq_sales", "eve", tt.PrincipalType.USER)


def test_export_reads_back_as_no_change(guard, tmp_path):
    assert sql(guard, "--apply", str(page(guard, tmp_path))).returncode == 0
    r = sql(guard, "--export", "--db", SQL_DB)
    assert r.returncode == 0, r.stderr
    text = r.stdout
    assert "CREATE ROLE sq_sales;" in text
    assert "GRANT ROLE sq_finance TO USER john;" in text
    assert f"GRANT INSERT, SELECT ON TABLE {SQL_DB}.customer TO ROLE sq_sales;" in text, text
    exported = tmp_path / "exported.sql"
    exported.write_text(text)
    r = sql(guard, "--plan", str(exported), "--prune")
    assert r.returncode == 0, r.stderr
    assert re.search(r"Plan: 0 to add, 0 to change, 0 to remove, \d+ unchanged\.", r.stdout), r.stdout


def test_column_and_partition_grants_and_syntax_errors(guard, lab):
    admin = connect(guard.port, "admin")
    t = hms.external_table(SQL_DB, "parted", f"file://{lab}/{SQL_DB}.db/parted", partitioned=True,
                           external=False)
    admin.create_table(t)
    r = sql(guard, "-e", f"GRANT SELECT ON TABLE {SQL_DB}.parted PARTITION (ds = '2024') TO USER partu")
    assert r.returncode == 1 and "2024" in r.stderr, r.stderr  # no such partition yet
    admin.add_partition(tt.Partition(values=["2024"], dbName=SQL_DB, tableName="parted",
                                     sd=t.sd, parameters={}))
    r = sql(guard, "-e", f"GRANT SELECT (id) ON {SQL_DB}.parted TO USER colu; "
                         f"GRANT SELECT ON TABLE {SQL_DB}.parted PARTITION (ds = '2024') TO USER partu")
    assert r.returncode == 0, r.stderr
    got = {(h.hiveObject.objectType, h.hiveObject.columnName, tuple(h.hiveObject.partValues or ()))
           for u in ("colu", "partu")
           for h in admin.list_privileges(u, tt.PrincipalType.USER, tt.HiveObjectRef())}
    assert got == {(tt.HiveObjectType.COLUMN, "id", ()),
                   (tt.HiveObjectType.PARTITION, None, ("2024",))}, got
    r = sql(guard, "-e", f"GRANT SELECT (nope) ON {SQL_DB}.parted TO USER colu")
    assert r.returncode == 1 and "has no column nope" in r.stderr, r.stderr
    r = sql(guard, "-e", f"GRANT SELECT ON {SQL_DB}.parted PARTITION (x='1') TO USER colu")
    assert r.returncode == 1 and "no partition key x" in r.stderr, r.stderr
    r = sql(guard, "-e", "USE default;\nGRANT SELECT ON t TO sales")
    assert r.returncode == 2
    assert "line 2, column 22 (statement at line 2): unexpected `sales`" in r.stderr, r.stderr
    assert "USER, GROUP or ROLE" in r.stderr


def test_the_interactive_shell_edits_runs_and_keeps_history(guard, tmp_path):
    history = tmp_path / "history"
    pid, fd = pty.fork()
    if pid == 0:
        os.execv(hms.guard_bin(), [hms.guard_bin(), "sql", "--uri",
                                   f"thrift://127.0.0.1:{guard.port}", "--user", "admin",
                                   "--history", str(history)])
    out = b""

    def read_until(marker, limit=30):
        nonlocal out
        end = time.monotonic() + limit
        while marker not in out and time.monotonic() < end:
            r, _, _ = select.select([fd], [], [], 0.5)
            if r:
                try:
                    out += os.read(fd, 4096)
                except OSError:
                    break
        assert marker in out, out.decode(errors="replace")

    read_until(b"hms-guard> ")
    # A statement over two lines, then one with an error, then one more.
    os.write(fd, b"SHOW\r")
    read_until(b"         > ")
    os.write(fd, b"ROLES;\r")
    read_until(b"sq_finance")
    os.write(fd, b"GRANT SELECT ON x TO nobody;\r")
    read_until(b"unexpected `nobody`")
    os.write(fd, b"exit;\r")
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    # (rustyline's history file writes a statement's line break as \n)
    kept = history.read_text().splitlines()
    assert "SHOW\\nROLES;" in kept and "GRANT SELECT ON x TO nobody;" in kept, kept
