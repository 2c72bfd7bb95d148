"""`hms-guard access` against the real metastore: grants set up through hms-guard by an
administrator (roles of roles, a group grant, owners of the table and of the database, an
admin role granted through a role, a column grant, a database and a global grant), then the
review of the table and of each user, in text and JSON, and a revoke seen at once.

Every name is this file's own (the session's metastore is shared by every e2e test)."""
import json
import subprocess

import pytest
from hmsclient.genthrift.hive_metastore import ttypes as tt

import hms
from hms import connect

DB = "acc_review_db"
T = "customer"
TABLE = f"{DB}.{T}"
VIEW = "customer_names"
EVENTS = "events"
ADMIN_ROLE = "acc_admins"
ROLE = tt.PrincipalType.ROLE
USER = tt.PrincipalType.USER
GROUP = tt.PrincipalType.GROUP


def parquet_table(db, name, owner, location, keys=()):
    """A Parquet table (columns read by name: any column can be hidden) owned by OWNER,
    partitioned by KEYS (string columns)."""
    sd = tt.StorageDescriptor(
        cols=[tt.FieldSchema(c, "string", "") for c in ("id", "name", "ssn")],
        location=location,
        inputFormat="org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat",
        outputFormat="org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat",
        serdeInfo=tt.SerDeInfo(None, "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe", {}),
        bucketCols=[], sortCols=[], parameters={})
    return tt.Table(tableName=name, dbName=db, owner=owner, sd=sd,
                    partitionKeys=[tt.FieldSchema(k, "string", "") for k in keys],
                    parameters={"EXTERNAL": "TRUE"}, tableType="EXTERNAL_TABLE")


def grant(admin, obj, principal, kind, privilege, grant_option=False):
    assert admin.grant_privileges(tt.PrivilegeBag([tt.HiveObjectPrivilege(
        obj, principal, kind, tt.PrivilegeGrantInfo(privilege, 0, "admin", USER, grant_option))]))


ON_TABLE = tt.HiveObjectRef(tt.HiveObjectType.TABLE, DB, T, None, None)


def seed(admin, lab):
    """As ADMIN (an administrator's client through hms-guard), the grants the review reads."""
    admin.create_database(tt.Database(name=DB, locationUri=f"file://{lab}/{DB}.db", parameters={},
                                      ownerName="acc_dbowner", ownerType=USER))
    admin.create_table(parquet_table(DB, T, "acc_owner", f"file://{lab}/{DB}.db/{T}"))
    for r in (ADMIN_ROLE, "acc_adm", "acc_r1", "acc_r2"):
        admin.create_role(tt.Role(roleName=r, ownerName="admin"))
    # role acc_r1 granted to role acc_r2 granted to user acc_u; acc_r1 holds SELECT WITH GRANT
    # OPTION on the table.
    assert admin.grant_role("acc_r1", "acc_r2", ROLE, "admin", USER, False)
    assert admin.grant_role("acc_r2", "acc_u", USER, "admin", USER, False)
    grant(admin, ON_TABLE, "acc_r1", ROLE, "SELECT", grant_option=True)
    # The admin role through a role.
    assert admin.grant_role(ADMIN_ROLE, "acc_adm", ROLE, "admin", USER, False)
    assert admin.grant_role("acc_adm", "acc_boss", USER, "admin", USER, False)
    grant(admin, ON_TABLE, "acc_grp", GROUP, "INSERT")
    grant(admin, tt.HiveObjectRef(tt.HiveObjectType.COLUMN, DB, T, None, "name"), "acc_col", USER, "SELECT")
    grant(admin, tt.HiveObjectRef(tt.HiveObjectType.DATABASE, DB, None, None, None), "acc_creator", USER, "CREATE")
    grant(admin, tt.HiveObjectRef(tt.HiveObjectType.GLOBAL, None, None, None, None), "acc_glob", USER, "SELECT")
    # A view showing columns id and name (owned by an administrator: it may give them), read
    # by acc_viewer.
    view = parquet_table(DB, VIEW, "admin", None)
    view.sd.cols = [tt.FieldSchema(c, "string", "") for c in ("id", "name")]
    view.tableType, view.parameters = "VIRTUAL_VIEW", {}
    view.viewOriginalText = f"SELECT id, name FROM {TABLE}"
    view.viewExpandedText = f"SELECT `{T}`.`id`, `{T}`.`name` FROM `{DB}`.`{T}`"
    admin.create_table(view)
    grant(admin, tt.HiveObjectRef(tt.HiveObjectType.TABLE, DB, VIEW, None, None), "acc_viewer", USER, "SELECT")
    # A partitioned table, one partition of which acc_part may read.
    admin.create_table(parquet_table(DB, EVENTS, "acc_owner", f"file://{lab}/{DB}.db/{EVENTS}", keys=["region"]))
    part = admin.get_table(DB, EVENTS).sd
    part.location = f"file://{lab}/{DB}.db/{EVENTS}/region=eu"
    admin.add_partition(tt.Partition(values=["eu"], dbName=DB, tableName=EVENTS, sd=part, parameters={}))
    grant(admin, tt.HiveObjectRef(tt.HiveObjectType.PARTITION, DB, EVENTS, ["eu"], None), "acc_part", USER, "SELECT")
    grant(admin, tt.HiveObjectRef(tt.HiveObjectType.COLUMN, DB, EVENTS, ["eu"], "name"), "acc_pcol", USER, "SELECT")


@pytest.fixture(scope="module")
def guard(lab, metastore):
    extra = (f'[authz]\nmode = "enforce"\nadmin_role = "{ADMIN_ROLE}"\nadmin_users = ["admin"]\n\n'
             '[identity.groups]\nacc_gu = ["acc_grp"]\n\n'
             '[storage]\nenabled = false  # GRANTs only here\n')
    g = hms.Guard(lab, metastore.port, extra=extra, name="guard-access")
    g.start()
    seed(connect(g.port, "admin"), lab)
    yield g
    g.stop()


def access(guard, *args):
    p = subprocess.run([hms.guard_bin(), "access", "--config", str(guard.config), *args],
                       capture_output=True, text=True, timeout=120)
    return p.returncode, p.stdout, p.stderr


def review(guard, *args):
    """The --json review; asserts exit 0."""
    rc, out, err = access(guard, *args, "--json")
    assert rc == 0, out + err
    return json.loads(out)


def chain(h):
    return " <- ".join(f"{w['type']}:{w['name']}" for w in h["chain"])


def rows(doc):
    """(principal, privilege, how, on, chain, grant option) of every holder but global grants
    (the shared metastore carries other tests' global grants)."""
    return {(f"{h['principal']['type']}:{h['principal']['name']}", h["privilege"], h["how"], h["on"],
             chain(h), h["grant_option"]) for h in doc["holders"] if h["how"] != "not_counted"}


TABLE_ON = f"table {TABLE}"
EXPECTED = {
    ("user:admin", "ALL", "admin", TABLE_ON, "user:admin", False),
    (f"role:{ADMIN_ROLE}", "ALL", "admin", TABLE_ON, f"role:{ADMIN_ROLE}", False),
    ("role:acc_adm", "ALL", "admin", TABLE_ON, f"role:{ADMIN_ROLE} <- role:acc_adm", False),
    ("user:acc_boss", "ALL", "admin", TABLE_ON, f"role:{ADMIN_ROLE} <- role:acc_adm <- user:acc_boss", False),
    ("user:acc_owner", "ALL", "owner", TABLE_ON, "user:acc_owner", False),
    ("user:acc_dbowner", "OWNER", "owner", f"database {DB}", "user:acc_dbowner", False),
    ("role:acc_r1", "SELECT", "grant", TABLE_ON, "role:acc_r1", True),
    ("role:acc_r2", "SELECT", "grant", TABLE_ON, "role:acc_r1 <- role:acc_r2", True),
    ("user:acc_u", "SELECT", "grant", TABLE_ON, "role:acc_r1 <- role:acc_r2 <- user:acc_u", True),
    ("group:acc_grp", "INSERT", "grant", TABLE_ON, "group:acc_grp", False),
    ("user:acc_col", "SELECT", "partial", f"column name of {TABLE_ON}", "user:acc_col", False),
    ("user:acc_creator", "CREATE", "database", f"database {DB}", "user:acc_creator", False),
    ("user:acc_viewer", "SELECT", "partial", f"view {DB}.{VIEW}", "user:acc_viewer", False),
}


def test_table_review_lists_every_holder_and_how(guard):
    doc = review(guard, "--table", TABLE)
    assert doc["table"] == TABLE
    assert doc["owner"] == {"type": "user", "name": "acc_owner"}
    assert doc["database_owner"] == {"type": "user", "name": "acc_dbowner"}
    assert rows(doc) == EXPECTED, sorted(rows(doc) ^ EXPECTED)
    glob = [h for h in doc["holders"] if h["principal"]["name"] == "acc_glob"]
    assert [(h["privilege"], h["how"], h["on"]) for h in glob] == [("SELECT", "not_counted", "the metastore")]
    partial = next(h for h in doc["holders"] if h["how"] == "partial")
    assert "narrowed" in partial["gives"], partial
    creator = next(h for h in doc["holders"] if h["how"] == "database")
    assert "creating tables" in creator["gives"], creator
    viewer = next(h for h in doc["holders"] if h["principal"]["name"] == "acc_viewer")
    assert viewer["gives"] == "part of the table through the view: columns id, name of every partition", viewer
    # Text: one aligned line per holder, the chain written out, the grant option marked.
    rc, out, err = access(guard, "--table", TABLE)
    assert rc == 0, out + err
    line = next(l for l in out.splitlines() if l.startswith("user:acc_u "))
    assert line.split()[:4] == ["user:acc_u", "SELECT", "grant", "table"], line
    assert "role:acc_r1 <- role:acc_r2 <- user:acc_u" in line and "WITH GRANT OPTION" in line, line
    assert f"owner:          user:acc_owner" in out and "database owner: user:acc_dbowner" in out, out
    lines = [l for l in out.splitlines() if l.startswith(("user:", "group:", "role:"))]
    assert len(lines) == len(doc["holders"]), out
    # Stable: the same review prints the same text.
    assert access(guard, "--table", TABLE)[1] == out


def test_partition_grants_are_partial(guard):
    doc = review(guard, "--table", f"{DB}.{EVENTS}")
    part = [h for h in doc["holders"] if h["principal"]["name"] == "acc_part"]
    assert [(h["privilege"], h["how"], h["on"], chain(h)) for h in part] == [
        ("SELECT", "partial", f"partition [eu] of table {DB}.{EVENTS}", "user:acc_part")], doc
    pcol = [h for h in doc["holders"] if h["principal"]["name"] == "acc_pcol"]
    assert [(h["privilege"], h["how"], h["on"]) for h in pcol] == [
        ("SELECT", "partial", f"column name of partition [eu] of table {DB}.{EVENTS}")], doc
    # The view of customer gives nothing of events: not listed there.
    assert not [h for h in doc["holders"] if h["principal"]["name"] == "acc_viewer"], doc
    a = review(guard, "--user", "acc_part", "--db", DB)["access"]
    assert [(x["table"], x["privilege"], x["reason"], x["given"]) for x in a] == [
        (EVENTS, "SELECT", "narrowed", "columns id, name, ssn, region of partition [eu]")], a


def test_user_review_uses_the_proxys_decisions(guard):
    def held(user, *extra):
        doc = review(guard, "--user", user, "--db", DB, *extra)
        return doc, {(a["table"], a["privilege"]): (a["reason"], a["matched"], a["given"])
                     for a in doc["access"] if a["table"] in (T, None)}

    doc, u = held("acc_u")
    assert u == {(T, "SELECT"): ("grant", f"role:acc_r1 SELECT on {TABLE_ON}", None)}, u
    assert doc["roles"] == ["acc_r1", "acc_r2", "public"] and doc["admin"] is False, doc
    doc, owner = held("acc_owner")
    assert owner == {(T, p): ("owner", f"owner of {TABLE_ON}", None)
                     for p in ("SELECT", "INSERT", "UPDATE", "DELETE", "ALTER", "DROP")}, owner
    doc, boss = held("acc_boss")
    assert doc["admin"] is True
    assert set(boss) == {(None, "CREATE")} | {(T, p) for p in ("SELECT", "INSERT", "UPDATE", "DELETE", "ALTER", "DROP")}
    assert {v[:2] for v in boss.values()} == {("admin", f"role:{ADMIN_ROLE} (admin role)")}, boss
    # Groups from the proxy's configuration ([identity.groups]), or from --group.
    doc, gu = held("acc_gu")
    assert doc["groups"] == ["acc_grp"] and gu == {(T, "INSERT"): ("grant", f"group:acc_grp INSERT on {TABLE_ON}", None)}, doc
    doc, other = held("acc_other", "--group", "acc_grp")
    assert doc["groups_from"] == "--group" and set(other) == {(T, "INSERT")}, doc
    # A column grant: a narrowed read, saying what is given.
    doc, col = held("acc_col")
    reason, matched, given = col[(T, "SELECT")]
    assert (reason, set(col)) == ("narrowed", {(T, "SELECT")}), col
    assert "SELECT on column name of" in matched and given == "columns name of every partition", col
    # A view: SELECT on the view itself, and part of the table it shows.
    doc, viewer = held("acc_viewer")
    assert viewer[(T, "SELECT")][0] == "narrowed" and viewer[(T, "SELECT")][2] == "columns id, name of every partition", viewer
    assert [(a["table"], a["reason"]) for a in doc["access"] if a["table"] == VIEW] == [(VIEW, "grant")], doc
    doc, creator = held("acc_creator")
    assert creator == {(None, "CREATE"): ("grant", f"user:acc_creator CREATE on database {DB}", None)}, creator
    doc, dbowner = held("acc_dbowner")
    assert dbowner == {(None, "CREATE"): ("owner", f"owner of database {DB}", None)}, dbowner
    # The text form.
    rc, out, err = access(guard, "--user", "acc_col", "--db", DB)
    assert rc == 0, out + err
    line = next(l for l in out.splitlines() if l.startswith(f"{TABLE} "))
    assert line.split()[:3] == [TABLE, "SELECT", "narrowed"] and line.endswith(": columns name of every partition"), out


def test_a_user_without_grants_holds_nothing(guard):
    doc = review(guard, "--user", "acc_nobody", "--db", DB)
    assert doc["access"] == [] and doc["roles"] == ["public"] and doc["groups"] == [], doc
    rc, out, err = access(guard, "--user", "acc_nobody", "--db", DB)
    assert rc == 0 and "nothing: user acc_nobody holds no privilege here" in out, out + err
    # Nor is such a user among the table's holders.
    assert "acc_nobody" not in access(guard, "--table", TABLE)[1]


def test_a_revoke_shows_at_once(guard):
    admin = connect(guard.port, "admin")
    grant(admin, ON_TABLE, "acc_late", USER, "DELETE")
    assert ("user:acc_late", "DELETE", "grant", TABLE_ON, "user:acc_late", False) in rows(review(guard, "--table", TABLE))
    assert {a["privilege"] for a in review(guard, "--user", "acc_late", "--db", DB)["access"]} == {"DELETE"}
    assert admin.revoke_privileges(tt.PrivilegeBag([tt.HiveObjectPrivilege(
        ON_TABLE, "acc_late", USER, tt.PrivilegeGrantInfo("DELETE", 0, "admin", USER, False))]))
    assert review(guard, "--user", "acc_late", "--db", DB)["access"] == []
    assert rows(review(guard, "--table", TABLE)) == EXPECTED
    # A role taken away: acc_u no longer reaches acc_r1.
    assert admin.revoke_role("acc_r2", "acc_u", USER)
    try:
        assert review(guard, "--user", "acc_u", "--db", DB)["access"] == []
        assert rows(review(guard, "--table", TABLE)) == {r for r in EXPECTED if r[0] != "user:acc_u"}
    finally:
        assert admin.grant_role("acc_r2", "acc_u", USER, "admin", USER, False)


def test_errors_exit_2_naming_the_problem(guard):
    rc, out, err = access(guard, "--table", f"{DB}.missing")
    assert rc == 2 and f"table {DB}.missing does not exist" in err, out + err
    rc, out, err = access(guard, "--table", "nodot")
    assert rc == 2 and "expected DB.TABLE" in err, err
    rc, out, err = access(guard, "--user", "acc_u", "--db", "acc_no_such_db")
    assert rc == 2 and "database acc_no_such_db does not exist" in err, err
    rc, out, err = access(guard)
    assert rc == 2 and "--table" in err and "--user" in err, err
    rc, out, err = access(guard, "--table", TABLE, "--group", "g")
    assert rc == 2 and "--table" in err and "--group" in err, err
    # A metastore that does not answer: exit 2, naming it.
    cfg = guard.lab / "access-unreachable.toml"
    cfg.write_text(f'[upstream]\nuris = ["thrift://127.0.0.1:{hms.free_port()}"]\n'
                   '[authz]\nfacts_timeout_ms = 3000\n')
    p = subprocess.run([hms.guard_bin(), "access", "--config", str(cfg), "--table", TABLE],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "could not be read" in p.stderr, p.stderr
    rc, out, err = access(guard, "--help")
    assert rc == 0 and "--table" in out and "--json" in out and "--group" in out, out
