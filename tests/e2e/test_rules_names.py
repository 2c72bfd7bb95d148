"""Names compared as the metastore's database compares them (docs/SECURITY.md, "Names"),
against the real metastore (Hive 2.3 on Derby, which ignores trailing spaces when it compares
names). Written as an attacker writes them: raw Thrift through hmsclient's generated client,
claiming names that differ from a real principal's only by white space or case; after every
refused call the metastore itself (asked directly, not through hms-guard) shows nothing
changed."""
import pytest
from hmsclient.genthrift.hive_metastore import ttypes as tt

import hms
from hms import connect

DB = "names_db"


def table_ref(name):
    return tt.HiveObjectRef(tt.HiveObjectType.TABLE, DB, name, None, None)


@pytest.fixture(scope="module")
def direct(metastore):
    """The metastore itself, as its administrator: set-up and the checks of its state."""
    return connect(metastore.port, "admin")


@pytest.fixture(scope="module")
def guard(lab, metastore, direct):
    g = hms.Guard(lab, metastore.port, name="guard-names",
                  extra=('[authz]\nmode = "enforce"\ncache_ttl_ms = 60000\n\n'
                         '[storage]\nenabled = false  # names only here\n'))
    g.start()
    direct.create_database(tt.Database(name=DB, locationUri=f"file://{lab}/{DB}.db",
                                       parameters={}))
    for name in ("shared", "bobs", "mixed", "secret"):
        direct.create_table(hms.external_table(DB, name, f"file://{lab}/{DB}.db/{name}"))
    hms.grant(direct, table_ref("shared"), "bob", "SELECT")
    hms.grant(direct, table_ref("bobs"), "bob", "SELECT", "DROP", "ALTER")
    hms.grant(direct, table_ref("mixed"), "Bob.Smith", "SELECT")
    # A role spelled ADMIN: another role than the metastore's admin role.
    direct.create_role(tt.Role(roleName="ADMIN", ownerName="admin"))
    assert direct.grant_role("ADMIN", "eve", tt.PrincipalType.USER, "admin",
                             tt.PrincipalType.USER, False)
    assert direct.grant_role("admin", "carol", tt.PrincipalType.USER, "admin",
                             tt.PrincipalType.USER, False)
    yield g
    g.stop()


def refused_set_ugi(port, user, rule):
    """set_ugi(user) through hms-guard is refused naming the rule; the connection stays
    anonymous (a decided call after it is denied as anonymous)."""
    c = connect(port)
    with pytest.raises(tt.MetaException) as e:
        c.set_ugi(user, [])
    msg = e.value.message
    assert "set_ugi refused" in msg and "names rule" in msg and rule in msg, msg
    assert "user name" in msg, msg
    return c


denied = hms.denied


def test_the_derby_metastore_gives_a_padded_name_the_real_principals_grants(guard, direct):
    """The premise, measured: asked directly, Derby's metastore answers `bob ` with bob's
    grants and `admin ` with admin's roles."""
    padded = direct.list_privileges("bob ", tt.PrincipalType.USER, tt.HiveObjectRef())
    assert any(p.hiveObject.objectName == "bobs" for p in padded), padded
    roles = direct.get_role_grants_for_principal(
        tt.GetRoleGrantsForPrincipalRequest("admin ", tt.PrincipalType.USER)).principalGrants
    assert any(r.roleName == "admin" for r in roles), roles


def test_a_claimed_user_with_a_trailing_space_does_not_get_the_users_grants(guard, direct):
    c = refused_set_ugi(guard.port, "bob ", "edge_white_space")
    denied(lambda: c.get_table(DB, "shared"), "anonymous")
    denied(lambda: c.drop_table(DB, "bobs", False))
    t = direct.get_table(DB, "bobs")
    t.parameters = dict(t.parameters or {}, owner_note="changed")
    denied(lambda: c.alter_table(DB, "bobs", t))
    kept = direct.get_table(DB, "bobs")
    assert "owner_note" not in (kept.parameters or {}), "nothing was altered"
    assert "bobs" in direct.get_all_tables(DB), "nothing was dropped"
    # bob himself keeps his grants.
    bob = connect(guard.port, "bob")
    assert bob.get_table(DB, "shared").tableName == "shared"


def test_every_padded_or_controlled_name_is_refused(guard, direct):
    for user, rule in [("bob\u00a0", "edge_white_space"), (" bob", "edge_white_space"),
                       ("bob\t", "control_character"), ("admin\n", "control_character"),
                       ("admin\u3000", "edge_white_space")]:
        c = refused_set_ugi(guard.port, user, rule)
        denied(lambda: c.create_database(tt.Database(name="padded_db", parameters={})))
        assert "padded_db" not in direct.get_all_databases()


def test_a_user_differing_from_the_admin_by_a_trailing_space_is_not_admin(guard, direct):
    c = refused_set_ugi(guard.port, "admin ", "edge_white_space")
    denied(lambda: c.create_database(tt.Database(name="evil_db", parameters={})))
    denied(lambda: c.drop_table(DB, "secret", False))
    denied(lambda: c.grant_role("admin", "mallory", tt.PrincipalType.USER, "admin",
                                tt.PrincipalType.USER, False))
    assert "evil_db" not in direct.get_all_databases()
    assert "secret" in direct.get_all_tables(DB)
    roles = direct.get_role_grants_for_principal(
        tt.GetRoleGrantsForPrincipalRequest("mallory", tt.PrincipalType.USER)).principalGrants
    assert all(r.roleName != "admin" for r in roles), roles


def test_a_role_spelled_ADMIN_is_not_the_admin_role(guard, direct, lab):
    eve = connect(guard.port, "eve")
    denied(lambda: eve.create_database(tt.Database(name="eve_db", parameters={})),
           "eve", "admin role")
    denied(lambda: eve.get_table(DB, "secret"), "eve", "SELECT")
    denied(lambda: eve.drop_table(DB, "secret", False), "eve")
    denied(lambda: eve.grant_role("admin", "eve", tt.PrincipalType.USER, "eve",
                                  tt.PrincipalType.USER, False), "admin role")
    assert "eve_db" not in direct.get_all_databases()
    assert "secret" in direct.get_all_tables(DB)
    roles = direct.get_role_grants_for_principal(
        tt.GetRoleGrantsForPrincipalRequest("eve", tt.PrincipalType.USER)).principalGrants
    assert sorted(r.roleName for r in roles) == ["ADMIN", "public"], roles
    # The admin role itself still makes its holders administrators.
    carol = connect(guard.port, "carol")
    assert carol.get_table(DB, "secret").tableName == "secret"
    carol.create_database(tt.Database(name="carol_db", locationUri=f"file://{lab}/carol_db",
                                      parameters={}))
    assert "carol_db" in direct.get_all_databases()
    direct.drop_database("carol_db", False, False)


def test_mixed_case_users_keep_working_and_compare_exactly(guard, direct):
    mixed = connect(guard.port, "Bob.Smith")
    assert mixed.get_table(DB, "mixed").tableName == "mixed"
    assert mixed.get_tables(DB, "*") == ["mixed"]
    lower = connect(guard.port, "bob.smith")
    denied(lambda: lower.get_table(DB, "mixed"), "bob.smith", "SELECT")
    assert lower.get_tables(DB, "*") == []


@pytest.fixture(scope="module")
def guard_exact(lab, metastore, guard):
    """hms-guard told (wrongly, here) that the metastore's database compares exactly: it then
    accepts `bob ` as a user of its own, and must still never hand it bob's grants."""
    g = hms.Guard(lab, metastore.port, name="guard-names-exact",
                  extra=('[authz]\nmode = "enforce"\ncache_ttl_ms = 60000\n\n'
                         '[storage]\nenabled = false\n'))
    g.config_text = (lambda text: lambda: text().replace(
        "[upstream]\n", '[upstream]\nmetastore_db = "postgres"\n', 1))(g.config_text)
    g.start()
    yield g
    g.stop()


def test_grant_rows_count_only_for_the_principal_they_name_exactly(guard_exact, direct):
    """The second line: the rows Derby returns for `bob ` name `bob`, and hms-guard keeps only
    rows naming the principal it asked about."""
    padded = connect(guard_exact.port, "bob ")
    denied(lambda: padded.get_table(DB, "shared"), "bob ", "SELECT")
    denied(lambda: padded.drop_table(DB, "bobs", False), "DROP")
    assert "bobs" in direct.get_all_tables(DB), "nothing was dropped"
    assert padded.get_tables(DB, "*") == []
    admin = connect(guard_exact.port, "admin ")
    denied(lambda: admin.create_database(tt.Database(name="evil_db", parameters={})),
           "admin role")
    assert "evil_db" not in direct.get_all_databases()
    # The real principals keep theirs.
    assert connect(guard_exact.port, "bob").get_table(DB, "shared").tableName == "shared"
