"""The seed use case of the GRANT issue, end to end: a real Hive Metastore, hms-guard enforcing
its GRANTs, and real Spark as the client, one JVM per user (`HADOOP_USER_NAME` is the user Spark
sends with set_ugi). Every decision is checked in hms-guard's audit log.

Tables are Hive text tables: Spark's INSERT into them commits through the metastore
(`alter_table` with new statistics), which is where a metastore proxy can enforce INSERT. See
docs/AUTHORIZATION.md, "What INSERT enforcement covers", for what a catalog-side check cannot
stop (files written with the compute role before the commit)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hmsclient.genthrift.hive_metastore import ttypes as tt

import hms
from hms import connect

HERE = Path(__file__).resolve().parent
DB = "demo_database"
TABLES = ["customer", "store_sales", "promotion"]
SEED = {  # role -> {table: privileges}, as in the issue
    "sales": {"customer": ["SELECT", "INSERT"], "store_sales": ["SELECT", "INSERT"],
              "promotion": ["SELECT"]},
    "finance": {t: ["SELECT"] for t in TABLES},
    "marketing": {"customer": ["SELECT"], "store_sales": ["SELECT"],
                  "promotion": ["SELECT", "INSERT"]},
}
MEMBERS = {"john": "finance", "david": "sales", "mary": "marketing"}
DENIED = "hms-guard: permission denied"


def spark_as(lab, port, user, statements, conf=None):
    """Runs statements in a fresh Spark JVM as `user` (`conf`: more Spark settings); per
    statement {ok, rows | error}."""
    env = dict(os.environ, HADOOP_USER_NAME=user)
    if conf is not None:
        env["SPARK_AS_CONF"] = json.dumps(conf)
    p = subprocess.run([sys.executable, str(HERE / "spark_as.py"), str(lab), str(port),
                        json.dumps(statements)], env=env, capture_output=True, text=True,
                       timeout=900)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
    assert p.returncode == 0 and lines, f"Spark as {user} failed:\n{p.stderr[-4000:]}"
    return json.loads(lines[-1][len("RESULT "):])


def audit_lines(path):
    return [json.loads(ln) for ln in Path(path).read_text().splitlines() if ln.strip()]


def find(events, **want):
    return [e for e in events if all(e.get(k) == v for k, v in want.items())]


@pytest.fixture(scope="module")
def seed(lab):
    """Its own metastore (roles are global) and an enforcing hms-guard auditing to a file;
    tables, roles and grants created by the administrator through hms-guard."""
    slab = lab / "seed"
    slab.mkdir()
    m = hms.Metastore(slab)
    g = None
    try:
        m.start()
        audit = slab / "audit.jsonl"
        g = hms.Guard(slab, m.port, name="guard-seed",
                      extra=('[authz]\nmode = "enforce"\n\n'
                             f'[audit]\nsink = "file"\npath = "{audit}"\n\n'
                             '[storage]\nenabled = false  # the storage checks: tests/e2e/test_storage_spark.py\n'))
        g.start()
        create = ["CREATE DATABASE demo_database"] + [
            f"CREATE TABLE {DB}.{t} (id INT, v STRING) STORED AS TEXTFILE "
            f"LOCATION 's3a://datalake/datawarehouse/{t}/'" for t in TABLES] + [
            f"INSERT INTO {DB}.{t} VALUES (1, '{t}')" for t in TABLES]
        res = spark_as(slab, g.port, "admin", create)
        assert all(r["ok"] for r in res), [r for r in res if not r["ok"]]
        admin = connect(g.port, "admin")
        bag = []
        for role, grants in SEED.items():
            admin.create_role(tt.Role(roleName=role, ownerName="admin"))
            for t, privs in grants.items():
                obj = tt.HiveObjectRef(tt.HiveObjectType.TABLE, DB, t, None, None)
                bag += [tt.HiveObjectPrivilege(obj, role, tt.PrincipalType.ROLE,
                                               tt.PrivilegeGrantInfo(p, 0, "admin",
                                                                     tt.PrincipalType.USER, False))
                        for p in privs]
        assert admin.grant_privileges(tt.PrivilegeBag(bag))
        for user, role in MEMBERS.items():
            assert admin.grant_role(role, user, tt.PrincipalType.USER, "admin",
                                    tt.PrincipalType.USER, False)
        yield slab, m, g, audit
    finally:
        if g is not None:
            g.stop()
        m.stop()


def count(slab, m, t):
    """Rows of a table, read directly from the metastore's location (not through the proxy)."""
    with hms.hms_client(m.port) as c:
        loc = c.get_table(DB, t).sd.location
    d = hms.bucket_dir(slab) / loc.split("s3a://datalake/", 1)[1]
    return sum(len(f.read_text().splitlines()) for f in d.rglob("*")
               if f.is_file() and not f.name.startswith((".", "_")) and ".hive-staging" not in str(f))


def test_mary_reads_and_inserts_promotion_but_not_customer(seed):
    slab, m, g, audit = seed
    before = count(slab, m, "promotion")
    r = spark_as(slab, g.port, "mary", [
        f"SELECT v FROM {DB}.promotion",
        f"INSERT INTO {DB}.promotion VALUES (2, 'by mary')",
        f"SELECT count(*) FROM {DB}.promotion",
        f"INSERT INTO {DB}.customer VALUES (9, 'by mary')",
    ])
    assert r[0]["ok"] and ["promotion"] in r[0]["rows"], r[0]
    assert r[1]["ok"], r[1]
    assert r[2]["ok"] and r[2]["rows"] == [[before + 1]], r[2]
    assert not r[3]["ok"], r[3]
    err = r[3]["error"]
    assert DENIED in err and "mary" in err and "INSERT" in err and "customer" in err, err

    ev = audit_lines(audit)
    mine = find(ev, user="mary", identity_source="set_ugi")
    assert find(mine, method="get_table", table="promotion", decision="allow",
                operation="read_table"), "mary's SELECT of promotion is audited"
    ins = [e for e in find(mine, table="promotion", decision="allow")
           if e["operation"] == "alter_table" and "INSERT" in (e["required_privilege"] or "")]
    assert ins and "role:marketing" in ins[-1]["matched"], ins
    deny = [e for e in find(mine, table="customer", decision="deny")
            if "INSERT" in (e["required_privilege"] or "")]
    assert deny, "mary's INSERT into customer is audited as a denial"
    e = deny[-1]
    assert e["database"] == DB and e["upstream_outcome"] == "not_sent"
    assert e["reason"] and e["event_id"] and e["time"].endswith("Z") and e["connection_id"] > 0
    assert e["client_addr"].startswith("127.0.0.1:")


def test_john_reads_everything_and_inserts_nothing(seed):
    slab, m, g, audit = seed
    r = spark_as(slab, g.port, "john",
                 [f"SELECT count(*) FROM {DB}.{t}" for t in TABLES]
                 + [f"INSERT INTO {DB}.{t} VALUES (7, 'by john')" for t in TABLES])
    for x in r[:3]:
        assert x["ok"] and x["rows"][0][0] >= 1, x
    for x, t in zip(r[3:], TABLES):
        assert not x["ok"] and DENIED in x["error"] and "john" in x["error"], x
    ev = audit_lines(audit)
    for t in TABLES:
        assert find(ev, user="john", table=t, decision="allow", operation="read_table"), t
        assert [e for e in find(ev, user="john", table=t, decision="deny")
                if "INSERT" in (e["required_privilege"] or "")], t


def test_user_without_role_sees_and_reads_nothing(seed):
    slab, m, g, audit = seed
    r = spark_as(slab, g.port, "nobody", [f"SHOW TABLES IN {DB}"]
                 + [f"SELECT * FROM {DB}.{t}" for t in TABLES])
    # The database itself is not visible to a user holding nothing in it.
    assert not r[0]["ok"] and DENIED in r[0]["error"] and DB in r[0]["error"], r[0]
    for x in r[1:]:
        assert not x["ok"] and DENIED in x["error"] and "nobody" in x["error"], x
        assert "SELECT" in x["error"], x
    # The admin's listing of the same database is complete (the filter is per user).
    with hms.hms_client(g.port) as c:
        c.set_ugi("admin", [])
        assert sorted(c.get_all_tables(DB)) == sorted(TABLES)
    ev = audit_lines(audit)
    for t in TABLES:
        assert find(ev, user="nobody", method="get_table", table=t, decision="deny"), t
    assert find(ev, user="nobody", method="get_database", decision="deny"), "audited"


def test_only_the_admin_drops_or_grants(seed):
    slab, m, g, audit = seed
    r = spark_as(slab, g.port, "david", [f"DROP TABLE {DB}.{t}" for t in TABLES])
    for x in r:
        assert not x["ok"] and DENIED in x["error"] and "david" in x["error"], x
    # Spark SQL has no GRANT statement for Hive tables: grants go through a raw Thrift client,
    # as do the other users' drops (one JVM per user is slow).
    for user in ("david", "mary", "john", "nobody"):
        c = connect(g.port, user)
        for t in TABLES:
            with pytest.raises(tt.MetaException, match="permission denied"):
                c.drop_table(DB, t, False)
        obj = tt.HiveObjectRef(tt.HiveObjectType.TABLE, DB, "customer", None, None)
        bag = tt.PrivilegeBag([tt.HiveObjectPrivilege(
            obj, user, tt.PrincipalType.USER,
            tt.PrivilegeGrantInfo("INSERT", 0, user, tt.PrincipalType.USER, False))])
        with pytest.raises(tt.MetaException, match="permission denied"):
            c.grant_privileges(bag)
        with pytest.raises(tt.MetaException, match="permission denied"):
            c.grant_role("sales", user, tt.PrincipalType.USER, user, tt.PrincipalType.USER, True)
    with hms.hms_client(m.port) as c:
        assert sorted(c.get_all_tables(DB)) == sorted(TABLES), "nothing was dropped"
        privs = c.list_privileges("mary", tt.PrincipalType.USER,
                                  tt.HiveObjectRef(tt.HiveObjectType.TABLE, DB, "customer",
                                                   None, None))
        assert privs == [], "mary granted herself nothing"
        roles = [r.roleName for r in c.list_roles("mary", tt.PrincipalType.USER)]
        assert "sales" not in roles
    ev = audit_lines(audit)
    assert find(ev, user="david", method="drop_table", table="customer", decision="deny")
    assert find(ev, user="mary", method="grant_privileges", decision="deny")
    assert find(ev, user="john", method="grant_role", decision="deny")


def test_pinned_identity_ignores_the_claimed_user(seed):
    """A sidecar pinned to john: a Spark session claiming mary (HADOOP_USER_NAME) still acts as
    john — it may read, but not INSERT into promotion as mary could."""
    slab, m, g, audit = seed
    pa = slab / "audit-pinned.jsonl"
    p = hms.Guard(slab, m.port, name="guard-pinned",
                  extra=('[identity]\nmode = "pinned"\npinned_user = "john"\n\n'
                         '[authz]\nmode = "enforce"\n\n'
                         f'[audit]\nsink = "file"\npath = "{pa}"\n\n[storage]\nenabled = false\n'))
    p.start()
    try:
        r = spark_as(slab, p.port, "mary", [
            f"SELECT count(*) FROM {DB}.promotion",
            f"INSERT INTO {DB}.promotion VALUES (3, 'claimed mary')",
        ])
    finally:
        p.stop()
    assert r[0]["ok"], r[0]
    assert not r[1]["ok"] and DENIED in r[1]["error"] and "user john" in r[1]["error"], r[1]
    ev = audit_lines(pa)
    assert ev and all(e["user"] == "john" and e["identity_source"] == "pinned" for e in ev), \
        {(e["user"], e["identity_source"]) for e in ev}
    assert not find(ev, user="mary")


ERIN = [
    f"CREATE TABLE {DB}.erin_t (id INT, v STRING) STORED AS TEXTFILE",
    f"CREATE TABLE IF NOT EXISTS {DB}.erin_t (id INT, v STRING) STORED AS TEXTFILE",
    f"INSERT INTO {DB}.erin_t VALUES (1, 'a'), (2, 'b')",
    f"INSERT OVERWRITE TABLE {DB}.erin_t VALUES (1, 'a'), (2, 'b'), (3, 'c')",
    f"SELECT count(*) FROM {DB}.erin_t",
    f"CREATE TABLE {DB}.erin_pq USING parquet AS SELECT * FROM {DB}.erin_t",
    f"SELECT count(*) FROM {DB}.erin_pq",
    f"ALTER TABLE {DB}.erin_t ADD COLUMNS (w STRING)",
    f"ALTER TABLE {DB}.erin_t SET TBLPROPERTIES ('team' = 'erin')",
    f"CREATE TABLE {DB}.erin_p (id INT) PARTITIONED BY (ds STRING) STORED AS TEXTFILE",
    f"INSERT INTO {DB}.erin_p PARTITION (ds = '1') VALUES (1)",
    f"ALTER TABLE {DB}.erin_p ADD PARTITION (ds = '2')",
    f"MSCK REPAIR TABLE {DB}.erin_p",
    f"SHOW TABLES IN {DB}",
    f"DESCRIBE {DB}.erin_t",
    f"SELECT * FROM {DB}.customer",
    f"DROP TABLE IF EXISTS {DB}.erin_pq",
    f"DROP TABLE IF EXISTS {DB}.never_created",
    f"DROP TABLE {DB}.erin_t",
]


def test_a_user_with_create_does_her_everyday_work_from_spark(seed):
    """A non-admin user holding CREATE on the database: Spark's everyday DDL and DML on her
    own tables all work (she owns what she creates); others' tables follow the grants."""
    slab, m, g, audit = seed
    admin = connect(g.port, "admin")
    db_obj = tt.HiveObjectRef(tt.HiveObjectType.DATABASE, DB, None, None, None)
    assert admin.grant_privileges(tt.PrivilegeBag([tt.HiveObjectPrivilege(
        db_obj, "erin", tt.PrincipalType.USER,
        tt.PrivilegeGrantInfo("CREATE", 0, "admin", tt.PrincipalType.USER, False))]))
    r = {x["sql"]: x for x in spark_as(slab, g.port, "erin", ERIN)}
    denied = f"SELECT * FROM {DB}.customer"
    failed = {s: x["error"][:300] for s, x in r.items() if not x["ok"] and s != denied}
    assert not failed, failed
    assert not r[denied]["ok"] and DENIED in r[denied]["error"] and "SELECT" in r[denied]["error"]
    assert r[f"SELECT count(*) FROM {DB}.erin_t"]["rows"] == [[3]]
    assert r[f"SELECT count(*) FROM {DB}.erin_pq"]["rows"] == [[3]]
    listed = {row[1] for row in r[f"SHOW TABLES IN {DB}"]["rows"]}
    assert {"erin_t", "erin_pq", "erin_p"} <= listed and not listed & set(TABLES), listed
    with hms.hms_client(m.port) as c:
        assert c.get_table(DB, "erin_p").owner == "erin"
        assert sorted(c.get_partition_names(DB, "erin_p", -1)) == ["ds=1", "ds=2"]
        assert "erin_t" not in c.get_all_tables(DB)
