"""GRANT enforcement against the real metastore, through a raw Python client (set_ugi names
the user): the seed's roles and grants, reads, listings, DDL and grant administration."""
import pytest
from hmsclient.genthrift.hive_metastore import ttypes as tt
from thrift.Thrift import TApplicationException

import hms
from hms import connect

DB = "grants_db"
TABLES = ["customer", "store_sales", "promotion"]
SEED = {  # role -> {table: privileges}
    "sales": {"customer": ["SELECT", "INSERT"], "store_sales": ["SELECT", "INSERT"], "promotion": ["SELECT"]},
    "finance": {"customer": ["SELECT"], "store_sales": ["SELECT"], "promotion": ["SELECT"]},
    "marketing": {"customer": ["SELECT"], "store_sales": ["SELECT"], "promotion": ["SELECT", "INSERT"]},
}
MEMBERS = {"john": "finance", "david": "sales", "mary": "marketing"}


def table(name):
    return hms.external_table(DB, name, f"s3a://datalake/datawarehouse/{DB}/{name}",
                              external=False)


@pytest.fixture(scope="module")
def guard(lab, metastore):
    g = hms.Guard(lab, metastore.port, extra=('[authz]\nmode = "enforce"\ncache_ttl_ms = 60000\n\n'
                         '[storage]\nenabled = false  # GRANTs only here (tests/storage_moto.rs)\n'),
                  name="guard-grants")
    g.start()
    admin = connect(g.port, "admin")
    admin.create_database(tt.Database(name=DB, locationUri=f"file://{lab}/{DB}.db", parameters={}))
    for t in TABLES:
        admin.create_table(table(t))
    bag = []
    for role, grants in SEED.items():
        admin.create_role(tt.Role(roleName=role, ownerName="admin"))
        for t, privs in grants.items():
            obj = tt.HiveObjectRef(tt.HiveObjectType.TABLE, DB, t, None, None)
            for p in privs:
                bag.append(tt.HiveObjectPrivilege(obj, role, tt.PrincipalType.ROLE,
                                                  tt.PrivilegeGrantInfo(p, 0, "admin", tt.PrincipalType.USER, False)))
    assert admin.grant_privileges(tt.PrivilegeBag(bag))
    for user, role in MEMBERS.items():
        assert admin.grant_role(role, user, tt.PrincipalType.USER, "admin", tt.PrincipalType.USER, False)
    yield g
    g.stop()


denied = hms.denied


def test_reads_follow_grants(guard):
    for user in MEMBERS:
        c = connect(guard.port, user)
        for t in TABLES:
            assert c.get_table(DB, t).tableName == t
    nobody = connect(guard.port, "nobody")
    for t in TABLES:
        denied(lambda: nobody.get_table(DB, t), "nobody", "SELECT", f"{DB}.{t}")
    # The connection stays usable after a denial.
    assert nobody.getVersion()


def test_listings_are_filtered(guard):
    assert sorted(connect(guard.port, "mary").get_tables(DB, "*")) == sorted(TABLES)
    assert connect(guard.port, "nobody").get_tables(DB, "*") == []
    assert connect(guard.port, "nobody").get_all_tables(DB) == []
    assert sorted(connect(guard.port, "admin").get_all_tables(DB)) == sorted(TABLES)


def test_only_admin_drops_and_grants(guard):
    for user in list(MEMBERS) + ["nobody"]:
        c = connect(guard.port, user)
        denied(lambda: c.drop_table(DB, "customer", False), user, "DROP")
        denied(lambda: c.grant_role("admin", user, tt.PrincipalType.USER, user, tt.PrincipalType.USER, False),
               "admin role")
        obj = tt.HiveObjectRef(tt.HiveObjectType.TABLE, DB, "customer", None, None)
        grant = tt.HiveObjectPrivilege(obj, user, tt.PrincipalType.USER,
                                       tt.PrivilegeGrantInfo("ALL", 0, user, tt.PrincipalType.USER, False))
        denied(lambda: c.grant_privileges(tt.PrivilegeBag([grant])), "GRANT OPTION")
        denied(lambda: c.create_role(tt.Role(roleName=f"{user}_own", ownerName=user)), "admin role")
    admin = connect(guard.port, "admin")
    assert sorted(admin.get_all_tables(DB)) == sorted(TABLES), "nothing was dropped"
    assert "mary_own" not in admin.get_role_names()
    m = guard.metrics()
    assert 'hms_guard_decisions_total{decision="deny",reason="missing_privilege"}' in m
    assert 'hms_guard_requests_total{method="drop_table",decision="deny"}' in m


def test_insert_rule_via_stats_only_alter(guard):
    mary = connect(guard.port, "mary")
    t = mary.get_table(DB, "promotion")
    t.parameters = dict(t.parameters or {}, numRows="3", totalSize="42")
    mary.alter_table(DB, "promotion", t)  # INSERT on promotion: allowed
    c = mary.get_table(DB, "customer")
    c.parameters = dict(c.parameters or {}, numRows="3")
    denied(lambda: mary.alter_table(DB, "customer", c), "INSERT")
    john = connect(guard.port, "john")
    p = john.get_table(DB, "promotion")
    p.parameters = dict(p.parameters or {}, numRows="4")
    denied(lambda: john.alter_table(DB, "promotion", p), "john")
    # A schema change needs ALTER or ownership, not INSERT.
    t2 = mary.get_table(DB, "promotion")
    t2.sd.cols.append(tt.FieldSchema("extra", "string", ""))
    denied(lambda: mary.alter_table(DB, "promotion", t2), "ALTER")


def test_shadow_mode_decides_audits_and_forwards(guard, lab, metastore):
    """authz.mode = "shadow": a call that enforce mode denies is forwarded, counted and audited
    as shadow_deny."""
    audit = lab / "audit-shadow.jsonl"
    g = hms.Guard(lab, metastore.port, name="guard-shadow",
                  extra=(f'[authz]\nmode = "shadow"\n\n[audit]\nsink = "file"\npath = "{audit}"\n\n'
                         '[storage]\nenabled = false\n'))
    g.start()
    try:
        nobody = connect(g.port, "nobody")
        assert nobody.get_table(DB, "customer").tableName == "customer"
        m = g.metrics()
    finally:
        g.stop()
    assert 'hms_guard_decisions_total{decision="shadow_deny",reason="missing_privilege"}' in m
    import json
    lines = [json.loads(ln) for ln in audit.read_text().splitlines()]
    hit = [e for e in lines if e["user"] == "nobody" and e["method"] == "get_table"]
    assert hit and hit[-1]["decision"] == "shadow_deny" and hit[-1]["upstream_outcome"] == "ok", hit


def explain(guard, *args):
    import subprocess
    p = subprocess.run([hms.guard_bin(), "explain", "--config", str(guard.config), *args],
                       capture_output=True, text=True, timeout=60)
    return p.returncode, p.stdout + p.stderr


def test_explain_uses_the_proxy_decision(guard):
    rc, out = explain(guard, "--user", "mary", "--method", "get_table", "--db", DB,
                      "--table", "promotion")
    assert rc == 0, out
    assert "decision:  allow" in out and "role:marketing" in out, out
    rc, out = explain(guard, "--user", "nobody", "--method", "get_table", "--db", DB,
                      "--table", "promotion")
    assert rc == 1 and "decision:  deny" in out and "SELECT" in out, out
    assert "permission denied: user nobody" in out, out
    # alter_table is diffed against the real current table: a location change needs ALTER.
    rc, out = explain(guard, "--user", "mary", "--method", "alter_table", "--db", DB,
                      "--table", "promotion", "--location", "s3a://datalake/elsewhere/")
    assert rc == 1 and "alter_table" in out and "ALTER" in out, out
    rc, out = explain(guard, "--user", "admin", "--method", "drop_table", "--db", DB,
                      "--table", "customer")
    assert rc == 0 and "reason:    admin" in out, out
    rc, out = explain(guard, "--user", "david", "--method", "grant_privileges", "--db", DB,
                      "--table", "customer", "--privilege", "SELECT")
    assert rc == 1 and "GRANT OPTION" in out, out
    rc, out = explain(guard, "--user", "mary", "--method", "create_table", "--db", DB)
    assert rc == 2 and "--table is required" in out, out


def grant_create(admin, user):
    """Grants CREATE on the database to `user`; returns the grant (to revoke it)."""
    db_obj = tt.HiveObjectRef(tt.HiveObjectType.DATABASE, DB, None, None, None)
    grant = tt.HiveObjectPrivilege(db_obj, user, tt.PrincipalType.USER,
                                   tt.PrivilegeGrantInfo("CREATE", 0, "admin",
                                                         tt.PrincipalType.USER, False))
    assert admin.grant_privileges(tt.PrivilegeBag([grant]))
    return grant


def test_a_created_table_is_owned_by_its_creator(guard, metastore):
    """Whatever owner the client writes (or none), a table a user creates through hms-guard is
    theirs; only an admin may create a table for someone else."""
    admin = connect(guard.port, "admin")
    grant = grant_create(admin, "david")
    david = connect(guard.port, "david")
    planted = table("owned_by_admin")
    planted.owner = "admin"  # a user cannot give the table to someone else
    david.create_table(planted)
    unset = table("owner_unset")
    unset.owner = None
    david.create_table(unset)
    gift = table("gift")
    gift.owner = "mary"
    admin.create_table(gift)
    with hms.hms_client(metastore.port) as direct:
        assert direct.get_table(DB, "owned_by_admin").owner == "david"
        assert direct.get_table(DB, "owner_unset").owner == "david"
        assert direct.get_table(DB, "gift").owner == "mary", "an admin's choice stands"
    # As the owner, david drops his own tables; he cannot drop mary's.
    david.drop_table(DB, "owned_by_admin", False)
    david.drop_table(DB, "owner_unset", False)
    with pytest.raises(tt.MetaException):
        david.drop_table(DB, "gift", False)
    admin.drop_table(DB, "gift", False)
    assert admin.revoke_privileges(tt.PrivilegeBag([grant]))


def test_exchanging_partitions_needs_both_tables_owned(guard, metastore):
    """exchange_partition moves a partition's files from one table to another: the caller
    must own both (an admin may do it for anyone)."""
    admin = connect(guard.port, "admin")
    grant = grant_create(admin, "david")
    david = connect(guard.port, "david")

    def partitioned(name, creator):
        t = table(name)
        t.partitionKeys = [tt.FieldSchema("ds", "string", "")]
        creator.create_table(t)

    partitioned("ex_src", david)
    partitioned("ex_dst", david)
    partitioned("ex_admins", admin)
    sd = david.get_table(DB, "ex_src").sd
    for v in ("1", "2"):
        sd.location = f"{sd.location.split('/ds=')[0]}/ds={v}"
        david.add_partition(tt.Partition(values=[v], dbName=DB, tableName="ex_src", sd=sd,
                                         parameters={}))
    mary = connect(guard.port, "mary")
    denied(lambda: mary.exchange_partition({"ds": "1"}, DB, "ex_src", DB, "ex_dst"),
           "mary", "ownership")
    denied(lambda: david.exchange_partition({"ds": "1"}, DB, "ex_src", DB, "ex_admins"),
           "david", "ownership", f"{DB}.ex_admins")
    david.exchange_partition({"ds": "1"}, DB, "ex_src", DB, "ex_dst")
    with hms.hms_client(metastore.port) as direct:
        assert direct.get_partition_names(DB, "ex_src", -1) == ["ds=2"]
        assert direct.get_partition_names(DB, "ex_dst", -1) == ["ds=1"]
        assert direct.get_partition_names(DB, "ex_admins", -1) == []
    for t in ("ex_src", "ex_dst"):
        david.drop_table(DB, t, False)
    admin.drop_table(DB, "ex_admins", False)
    assert admin.revoke_privileges(tt.PrivilegeBag([grant]))


def test_replies_reveal_only_what_the_caller_may_see(guard):
    """Whole tables need SELECT (a writer holding only INSERT sees names, not columns or
    locations); grant reads name only the caller's own groups."""
    admin = connect(guard.port, "admin")
    obj = tt.HiveObjectRef(tt.HiveObjectType.TABLE, DB, "customer", None, None)
    insert_only = tt.HiveObjectPrivilege(obj, "ingest", tt.PrincipalType.USER,
                                         tt.PrivilegeGrantInfo("INSERT", 0, "admin",
                                                               tt.PrincipalType.USER, False))
    assert admin.grant_privileges(tt.PrivilegeBag([insert_only]))
    try:
        ingest = connect(guard.port, "ingest")
        assert "customer" in ingest.get_all_tables(DB), "the name is visible"
        assert ingest.get_table_objects_by_name(DB, ["customer", "store_sales"]) == []
        with pytest.raises(tt.MetaException):
            ingest.get_table(DB, "customer")
        john = connect(guard.port, "john")  # finance: SELECT on every seed table
        got = sorted(t.tableName for t in john.get_table_objects_by_name(DB, TABLES))
        assert got == sorted(TABLES)
        # get_privilege_set: one's own user and no foreign group.
        assert john.get_privilege_set(obj, "john", []) is not None
        with pytest.raises(tt.MetaException) as e:
            john.get_privilege_set(obj, "john", ["finance"])
        assert "group finance" in e.value.message, e.value.message
        with pytest.raises(tt.MetaException):
            john.get_privilege_set(obj, "david", [])
    finally:
        assert admin.revoke_privileges(tt.PrivilegeBag([insert_only]))


def test_databases_are_visible_to_those_with_a_privilege_in_them(guard, lab):
    admin = connect(guard.port, "admin")
    admin.create_database(tt.Database(name="hidden_db", locationUri=f"file://{lab}/hidden_db.db",
                                      parameters={}))
    try:
        assert "hidden_db" in admin.get_all_databases()
        john = connect(guard.port, "john")  # SELECT on tables of grants_db only
        for listed in (john.get_all_databases(), john.get_databases("*")):
            assert {"default", DB} <= set(listed), listed
            assert "hidden_db" not in listed, listed
        assert john.get_database(DB).name == DB
        assert john.get_database("default").name == "default"
        with pytest.raises(tt.MetaException) as e:
            john.get_database("hidden_db")
        assert "hidden_db" in e.value.message and "hms-guard" in e.value.message
    finally:
        admin.drop_database("hidden_db", False, False)


# Every read that returns a table's columns, location or contents, as (name, call): a user
# holding SELECT reads it; a user holding nothing is denied by hms-guard.
SINGLE_READS = [
    ("get_table", lambda c: c.get_table(DB, "customer")),
    ("get_fields", lambda c: c.get_fields(DB, "customer")),
    ("get_schema", lambda c: c.get_schema(DB, "customer")),
    ("get_partitions", lambda c: c.get_partitions(DB, "customer", -1)),
    ("get_partition_names", lambda c: c.get_partition_names(DB, "customer", -1)),
    ("get_partitions_by_names", lambda c: c.get_partitions_by_names(DB, "customer", ["x=1"])),
    ("get_table_column_statistics",
     lambda c: c.get_table_column_statistics(DB, "customer", "id")),
    ("get_table_statistics_req", lambda c: c.get_table_statistics_req(
        tt.TableStatsRequest(DB, "customer", ["id"]))),
    ("get_indexes", lambda c: c.get_indexes(DB, "customer", -1)),
]
# Listings: filtered, never denied (a user holding nothing gets nothing of the table).
LISTINGS = [
    ("get_all_tables", lambda c: c.get_all_tables(DB)),
    ("get_tables", lambda c: c.get_tables(DB, "*")),
    ("get_table_meta", lambda c: [m.tableName for m in c.get_table_meta(DB, "*", [])]),
    ("get_table_objects_by_name",
     lambda c: [t.tableName for t in c.get_table_objects_by_name(DB, ["customer"])]),
]


def outcome(call, client):
    try:
        return ("ok", call(client))
    except (tt.MetaException, tt.NoSuchObjectException, tt.InvalidObjectException,
            TApplicationException) as e:
        # (The metastore answers a statistics read of a table without statistics with no
        # result at all: hmsclient raises MISSING_RESULT.)
        msg = getattr(e, "message", str(e)) or ""
        return ("denied" if "hms-guard" in msg else "metastore error", msg)


@pytest.mark.parametrize("name,call", SINGLE_READS, ids=[n for n, _ in SINGLE_READS])
def test_each_table_read_needs_select(guard, name, call):
    john, nobody = connect(guard.port, "john"), connect(guard.port, "nobody")
    got, detail = outcome(call, john)
    assert got in ("ok", "metastore error"), (name, detail)  # e.g. no statistics yet
    got, detail = outcome(call, nobody)
    assert got == "denied" and "SELECT" in detail and "nobody" in detail, (name, detail)


@pytest.mark.parametrize("name,call", LISTINGS, ids=[n for n, _ in LISTINGS])
def test_each_listing_shows_only_what_the_user_holds(guard, name, call):
    john, nobody = connect(guard.port, "john"), connect(guard.port, "nobody")
    assert "customer" in call(john), name
    assert "customer" not in call(nobody), name


def test_missing_tables_are_not_found_for_those_who_may_act_in_the_database(guard):
    """A user who may act in a database (here: holds CREATE on it) gets the metastore's own
    "no such table" for a name that does not exist — what engines check before CREATE TABLE —
    while a stranger gets "permission denied" for any name, existing or not."""
    admin = connect(guard.port, "admin")
    db_obj = tt.HiveObjectRef(tt.HiveObjectType.DATABASE, DB, None, None, None)
    grant = tt.HiveObjectPrivilege(db_obj, "eva", tt.PrincipalType.USER,
                                   tt.PrivilegeGrantInfo("CREATE", 0, "admin",
                                                         tt.PrincipalType.USER, False))
    assert admin.grant_privileges(tt.PrivilegeBag([grant]))
    try:
        eva, nobody = connect(guard.port, "eva"), connect(guard.port, "nobody")
        with pytest.raises(tt.NoSuchObjectException):
            eva.get_table(DB, "not_there_yet")
        for name in ("not_there_yet", "customer"):
            with pytest.raises(tt.MetaException, match="permission denied"):
                nobody.get_table(DB, name)
        # An existing table still needs SELECT.
        with pytest.raises(tt.MetaException, match="permission denied"):
            eva.get_table(DB, "customer")
    finally:
        assert admin.revoke_privileges(tt.PrivilegeBag([grant]))


def test_set_ugi_again_switches_the_user_on_a_live_connection(guard):
    """set_ugi is answered as the metastore answers it (the group names sent); a second one with
    another user takes effect for the next calls instead of breaking the connection (the
    metastore itself closes a connection on a second set_ugi)."""
    c = connect(guard.port, "john")
    assert c.set_ugi("john", ["g1", "g2"]) == ["g1", "g2"]
    assert c.get_table(DB, "customer").tableName == "customer"
    assert c.set_ugi("nobody", []) == []
    with pytest.raises(tt.MetaException, match="nobody"):
        c.get_table(DB, "customer")
    c.set_ugi("john", [])
    assert c.get_table(DB, "customer").tableName == "customer"
