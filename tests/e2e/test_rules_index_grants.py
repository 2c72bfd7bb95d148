"""Index tables and grants, decided by the metastore's own rules, against the real Hive 2.3
metastore, written as an attacker writes calls: raw Thrift through hmsclient's generated client,
naming whatever databases, locations, owners and grantors they like. After every refused call the
metastore's own state (read directly, not through hms-guard) shows that nothing happened.

- Index tables (Hive 2 `add_index`, `drop_index_by_name`): the metastore creates the table the
  call carries, wherever it says, and drops (with deleteData: deletes) the index's table.
- Grants: the metastore records whatever grantor a grant names, and its revoke takes every
  matching grant whoever made it."""
import pytest
from hmsclient.genthrift.hive_metastore import ttypes as tt

import hms

MINE = "idxg_mallory"     # mallory's own database (she owns it)
VICTIM = "idxg_victim"    # the admin's database: mallory holds nothing in it
GDB = "grg_db"            # grants
USER = tt.PrincipalType.USER


def as_user(port, user):
    """An open raw client of `port` that named `user` with set_ugi."""
    c = hms.hms_client(port)
    c.__enter__()
    c.set_ugi(user, [])
    return c


def sd(location=None):
    return tt.StorageDescriptor(
        cols=[tt.FieldSchema("id", "int", "")], location=location,
        inputFormat="org.apache.hadoop.mapred.TextInputFormat",
        outputFormat="org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat",
        serdeInfo=tt.SerDeInfo(None, "org.apache.hadoop.hive.serde2.lazy.LazySimpleSerDe", {}),
        bucketCols=[], sortCols=[], parameters={})


def managed(db, name, owner, location=None, table_type="MANAGED_TABLE"):
    return tt.Table(tableName=name, dbName=db, owner=owner, sd=sd(location), partitionKeys=[],
                    parameters={}, tableType=table_type)


def index(name, base_db, base, index_table, location=None):
    return tt.Index(indexName=name,
                    indexHandlerClass="org.apache.hadoop.hive.ql.index.compact.CompactIndexHandler",
                    dbName=base_db, origTableName=base, indexTableName=index_table,
                    sd=sd(location), parameters={}, deferredRebuild=True)


denied = hms.denied


def absent(direct, db, name):
    with pytest.raises(tt.NoSuchObjectException):
        direct.get_table(db, name)
    return True


@pytest.fixture(scope="module")
def guard(lab, metastore):
    """hms-guard enforcing GRANTs; storage checks on with no storage role configured, so every
    S3 location is outside every user's storage role (tests/storage_moto.rs and
    test_storage_spark.py test real roles). The lab's databases live on `file:`, which the
    storage check lets through here (`other_schemes = "allow"`: a `file:` default place cannot
    be listed, so it gets the ordinary check). The set-up is made at the metastore directly."""
    g = hms.Guard(lab, metastore.port,
                  extra='[authz]\nmode = "enforce"\ncache_ttl_ms = 60000\n\n'
                        '[storage]\nother_schemes = "allow"\n',
                  name="guard-index-grants")
    g.start()
    with hms.hms_client(metastore.port) as direct:
        for db, owner in ((MINE, "mallory"), (VICTIM, "admin"), (GDB, "admin")):
            direct.create_database(tt.Database(name=db, locationUri=f"file://{lab}/{db}.db",
                                               parameters={}, ownerName=owner,
                                               ownerType=USER))
        direct.create_table(managed(MINE, "base", "mallory"))
        direct.create_table(managed(GDB, "t", "admin"))
    yield g
    g.stop()


# --- index tables -----------------------------------------------------------------------------

def test_an_index_table_in_a_database_without_create_is_refused(guard, metastore):
    mallory = as_user(guard.port, "mallory")
    # The index names its table in the victim's database ("db.table"), and carries it.
    denied(lambda: mallory.add_index(index("i1", MINE, "base", f"{VICTIM}.planted"),
                                     managed(VICTIM, "planted", "mallory", table_type="INDEX_TABLE")),
           "mallory", "add_index", f"CREATE on database {VICTIM}")
    with hms.hms_client(metastore.port) as direct:
        assert absent(direct, VICTIM, "planted")
        assert direct.get_indexes(MINE, "base", -1) == []


def test_an_index_table_must_be_the_one_the_index_names(guard, metastore):
    mallory = as_user(guard.port, "mallory")
    msg = denied(lambda: mallory.add_index(index("i2", MINE, "base", "named"),
                                           managed(VICTIM, "carried", "mallory")),
                 "mallory", "add_index")
    assert f"{MINE}.named" in msg and f"{VICTIM}.carried" in msg, msg
    with hms.hms_client(metastore.port) as direct:
        assert absent(direct, VICTIM, "carried")
        assert absent(direct, MINE, "named")
        assert direct.get_indexes(MINE, "base", -1) == []


def test_an_index_table_outside_the_callers_storage_is_refused(guard, metastore, lab):
    mallory = as_user(guard.port, "mallory")
    elsewhere = "s3a://someone-elses-bucket/files"
    # At the index table's location ...
    denied(lambda: mallory.add_index(index("i3", MINE, "base", "at_location"),
                                     managed(MINE, "at_location", "mallory", elsewhere,
                                             table_type="INDEX_TABLE")),
           "mallory", "add_index", elsewhere)
    # ... or in the index's own storage descriptor.
    denied(lambda: mallory.add_index(index("i4", MINE, "base", "at_index_sd", elsewhere),
                                     managed(MINE, "at_index_sd", "mallory",
                                             table_type="INDEX_TABLE")),
           "mallory", "add_index", elsewhere)
    with hms.hms_client(metastore.port) as direct:
        assert absent(direct, MINE, "at_location")
        assert absent(direct, MINE, "at_index_sd")
        assert direct.get_indexes(MINE, "base", -1) == []


def test_an_owner_indexes_their_own_table_and_owns_the_index_table(guard, metastore):
    mallory = as_user(guard.port, "mallory")
    # The carried table names the admin as owner: the metastore records mallory.
    mallory.add_index(index("own", MINE, "base", "base_own_idx"),
                      managed(MINE, "base_own_idx", "admin", table_type="INDEX_TABLE"))
    with hms.hms_client(metastore.port) as direct:
        assert direct.get_index_by_name(MINE, "base", "own").indexTableName == "base_own_idx"
        assert direct.get_table(MINE, "base_own_idx").owner == "mallory"
    # Not the base table's owner: no index on it.
    eve = as_user(guard.port, "eve")
    denied(lambda: eve.add_index(index("eves", MINE, "base", "eves_idx"),
                                 managed(MINE, "eves_idx", "eve", table_type="INDEX_TABLE")),
           "eve", f"ownership of table {MINE}.base")
    with hms.hms_client(metastore.port) as direct:
        assert absent(direct, MINE, "eves_idx")
    # Her own index she drops, data and all.
    assert mallory.drop_index_by_name(MINE, "base", "own", True)
    with hms.hms_client(metastore.port) as direct:
        assert absent(direct, MINE, "base_own_idx")


def test_dropping_an_index_with_its_data_needs_the_index_table(guard, metastore, lab):
    """The admin indexed mallory's table, keeping the index in a table of the admin's with data
    files; mallory owns the base table, not the index table: the drop (deleteData) is refused
    and the files stay."""
    data = lab / "admins_index_data"
    data.mkdir()
    (data / "000000_0").write_text("1\n")
    with hms.hms_client(metastore.port) as direct:
        direct.add_index(index("admins", MINE, "base", "admins_idx", f"file://{data}"),
                         managed(MINE, "admins_idx", "admin", f"file://{data}",
                                 table_type="INDEX_TABLE"))
    mallory = as_user(guard.port, "mallory")
    denied(lambda: mallory.drop_index_by_name(MINE, "base", "admins", True),
           "mallory", "drop_index_by_name", f"DROP on table {MINE}.admins_idx")
    assert (data / "000000_0").read_text() == "1\n"
    with hms.hms_client(metastore.port) as direct:
        assert direct.get_index_by_name(MINE, "base", "admins").indexTableName == "admins_idx"
        assert direct.get_table(MINE, "admins_idx").owner == "admin"
    # A DROP grant on the index table is what a drop needs (the admin's own drop passes).
    admin = as_user(guard.port, "admin")
    assert admin.drop_index_by_name(MINE, "base", "admins", False)
    with hms.hms_client(metastore.port) as direct:
        assert absent(direct, MINE, "admins_idx")
    assert (data / "000000_0").exists(), "deleteData false keeps the files"


# --- grantors and revocation --------------------------------------------------------------------

T = tt.HiveObjectRef(tt.HiveObjectType.TABLE, GDB, "t", None, None)


def priv(to, privilege, grantor, grant_option=False, kind=USER):
    return tt.HiveObjectPrivilege(T, to, kind, tt.PrivilegeGrantInfo(privilege, 0, grantor, USER,
                                                                      grant_option))


def recorded(direct, principal, kind=USER):
    """(privilege, grantor, grantorType) of every grant the metastore records on GDB.t."""
    return sorted((p.grantInfo.privilege, p.grantInfo.grantor, p.grantInfo.grantorType)
                  for p in direct.list_privileges(principal, kind, T))


@pytest.fixture(scope="module")
def granted(guard, metastore):
    """holder: SELECT WITH GRANT OPTION from the admin; victim: SELECT from the admin."""
    with hms.hms_client(metastore.port) as direct:
        assert direct.grant_privileges(tt.PrivilegeBag([
            priv("holder", "SELECT", "admin", True), priv("victim", "SELECT", "admin")]))
    return guard


def test_a_grant_is_recorded_as_the_callers(granted, metastore):
    holder = as_user(granted.port, "holder")
    # The call names the admin as grantor (a ROLE even): the metastore records the holder.
    forged = tt.HiveObjectPrivilege(T, "friend", USER, tt.PrivilegeGrantInfo(
        "SELECT", 0, "admin", tt.PrincipalType.ROLE, False))
    assert holder.grant_privileges(tt.PrivilegeBag([forged]))
    req = tt.GrantRevokePrivilegeRequest(tt.GrantRevokeType.GRANT,
                                         tt.PrivilegeBag([priv("friend2", "SELECT", "admin")]))
    assert holder.grant_revoke_privileges(req).success
    with hms.hms_client(metastore.port) as direct:
        assert recorded(direct, "friend") == [("SELECT", "holder", USER)]
        assert recorded(direct, "friend2") == [("SELECT", "holder", USER)]


def test_a_grant_option_holder_cannot_revoke_the_admins_grant(granted, metastore):
    holder = as_user(granted.port, "holder")
    denied(lambda: holder.revoke_privileges(tt.PrivilegeBag([priv("victim", "SELECT", "holder")])),
           "holder", "revoke_privileges", "granted by user admin")
    req = tt.GrantRevokePrivilegeRequest(tt.GrantRevokeType.REVOKE,
                                         tt.PrivilegeBag([priv("victim", "SELECT", "holder")]),
                                         revokeGrantOption=False)
    denied(lambda: holder.grant_revoke_privileges(req), "holder", "granted by user admin")
    # GRANT OPTION FOR: the same rule (the admin granted the holder's own grant option).
    req = tt.GrantRevokePrivilegeRequest(tt.GrantRevokeType.REVOKE,
                                         tt.PrivilegeBag([priv("holder", "SELECT", "holder")]),
                                         revokeGrantOption=True)
    denied(lambda: holder.grant_revoke_privileges(req), "holder", "granted by user admin")
    with hms.hms_client(metastore.port) as direct:
        assert recorded(direct, "victim") == [("SELECT", "admin", USER)]
        assert [p.grantInfo.grantOption for p in direct.list_privileges("holder", USER, T)] == [True]


def test_a_grantor_revokes_their_own_grant_and_the_admin_any(granted, metastore):
    holder = as_user(granted.port, "holder")
    assert holder.grant_privileges(tt.PrivilegeBag([priv("friend3", "SELECT", "holder")]))
    assert holder.revoke_privileges(tt.PrivilegeBag([priv("friend3", "SELECT", "holder")]))
    admin = as_user(granted.port, "admin")
    assert admin.revoke_privileges(tt.PrivilegeBag([priv("victim", "SELECT", "admin")]))
    with hms.hms_client(metastore.port) as direct:
        assert recorded(direct, "friend3") == []
        assert recorded(direct, "victim") == []
    # A grant nobody recorded is nobody's to revoke (the metastore would refuse it too).
    denied(lambda: holder.revoke_privileges(tt.PrivilegeBag([priv("nobody", "SELECT", "holder")])),
           "holder", "records no grant")


def test_a_created_table_carries_only_its_creators_own_grants(guard, metastore):
    """create_table (and add_index's table) may carry grants, which the metastore records as
    written: mallory, creating in her own database, may not grant others through them nor name
    another grantor; Hive's automatic owner grants (to herself, by herself) pass."""
    mallory = as_user(guard.port, "mallory")

    def carrying(name, to, grantor):
        t = managed(MINE, name, "mallory")
        t.privileges = tt.PrincipalPrivilegeSet(userPrivileges={to: [tt.PrivilegeGrantInfo(
            "SELECT", 0, grantor, USER, True)]})
        return t

    denied(lambda: mallory.create_table(carrying("gives", "friend", "mallory")),
           "mallory", "grant of SELECT to user:friend")
    denied(lambda: mallory.create_table(carrying("forged", "mallory", "admin")),
           "mallory", "naming grantor user admin")
    denied(lambda: mallory.add_index(index("ig", MINE, "base", "gives_idx"),
                                     carrying("gives_idx", "friend", "mallory")),
           "mallory", "grant of SELECT to user:friend")
    with hms.hms_client(metastore.port) as direct:
        for name in ("gives", "forged", "gives_idx"):
            assert absent(direct, MINE, name)
        assert direct.get_indexes(MINE, "base", -1) == []
    mallory.create_table(carrying("own_grants", "mallory", "mallory"))
    with hms.hms_client(metastore.port) as direct:
        ref = tt.HiveObjectRef(tt.HiveObjectType.TABLE, MINE, "own_grants", None, None)
        assert [(p.grantInfo.privilege, p.grantInfo.grantor)
                for p in direct.list_privileges("mallory", USER, ref)] == [("SELECT", "mallory")]


def test_roles_are_revoked_as_hive_allows(guard, metastore):
    with hms.hms_client(metastore.port) as direct:
        direct.create_role(tt.Role(roleName="idxg_role", ownerName="admin"))
        assert direct.grant_role("idxg_role", "member", USER, "admin", USER, False)
        assert direct.grant_role("idxg_role", "role_admin", USER, "admin", USER, True)

    def members(direct):
        req = tt.GetPrincipalsInRoleRequest("idxg_role")
        return sorted((g.principalName, g.grantorName, g.grantorPrincipalType)
                      for g in direct.get_principals_in_role(req).principalGrants)

    # Without ADMIN OPTION on the role: no revoke, in either call.
    eve = as_user(guard.port, "eve")
    denied(lambda: eve.revoke_role("idxg_role", "member", USER), "eve", "ADMIN OPTION")
    req = tt.GrantRevokeRoleRequest(tt.GrantRevokeType.REVOKE, "idxg_role", "member", USER)
    denied(lambda: eve.grant_revoke_role(req), "eve", "ADMIN OPTION")
    with hms.hms_client(metastore.port) as direct:
        assert ("member", "admin", USER) in members(direct)
    # The ADMIN OPTION holder grants (recorded as the grantor, whatever the call names) ...
    ra = as_user(guard.port, "role_admin")
    assert ra.grant_role("idxg_role", "newcomer", USER, "admin", tt.PrincipalType.ROLE, False)
    req = tt.GrantRevokeRoleRequest(tt.GrantRevokeType.GRANT, "idxg_role", "newcomer2", USER,
                                    "admin", USER, False)
    assert ra.grant_revoke_role(req).success
    with hms.hms_client(metastore.port) as direct:
        m = members(direct)
        assert ("newcomer", "role_admin", USER) in m, m
        assert ("newcomer2", "role_admin", USER) in m, m
    # ... and revokes.
    assert ra.revoke_role("idxg_role", "member", USER)
    with hms.hms_client(metastore.port) as direct:
        assert "member" not in [p for p, _, _ in members(direct)]
