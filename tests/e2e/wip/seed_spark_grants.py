"""The seed use case, end to end, through real Spark (one JVM per user, HADOOP_USER_NAME) and
hms-guard enforcing the metastore's GRANTs: database demo_database, tables customer,
store_sales, promotion at s3a://datalake/datawarehouse/<table>/; roles sales, marketing,
finance; john→finance, david→sales, mary→marketing."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import hms

HERE = Path(__file__).resolve().parent
TABLES = ["customer", "store_sales", "promotion"]


def spark_as(lab, port, user, statements):
    env = dict(os.environ, HADOOP_USER_NAME=user)
    p = subprocess.run([sys.executable, str(HERE / "spark_as.py"), str(lab), str(port),
                        json.dumps(statements)], env=env, capture_output=True, text=True,
                       timeout=600)
    lines = [l for l in p.stdout.splitlines() if l.startswith("RESULT ")]
    assert p.returncode == 0 and lines, f"spark as {user} failed:\n{p.stderr[-4000:]}"
    return json.loads(lines[-1][len("RESULT "):])


@pytest.fixture(scope="module")
def seeded(lab, metastore):
    g = hms.Guard(lab, metastore.port, extra='[authz]\nmode = "enforce"\n', name="guard-spark")
    g.start()
    slab = lab  # one bucket (lab/s3/datalake); each user's Spark in lab/spark-USER
    setup = ["CREATE DATABASE demo_database"]
    for t in TABLES:
        setup.append(f"CREATE TABLE demo_database.{t} (id INT, v STRING) STORED AS PARQUET "
                     f"LOCATION 's3a://datalake/datawarehouse/{t}/'")
        setup.append(f"INSERT INTO demo_database.{t} VALUES (1, '{t}')")
    res = spark_as(slab, g.port, "admin", setup)
    assert all(r["ok"] for r in res), [r for r in res if not r["ok"]]
    # Roles and grants, as the administrator, through hms-guard.
    from hmsclient.genthrift.hive_metastore import ttypes as tt
    from test_grants_hmsclient import connect
    admin = connect(g.port, "admin")
    seed = {
        "sales": {"customer": ["SELECT", "INSERT"], "store_sales": ["SELECT", "INSERT"], "promotion": ["SELECT"]},
        "finance": {t: ["SELECT"] for t in TABLES},
        "marketing": {"customer": ["SELECT"], "store_sales": ["SELECT"], "promotion": ["SELECT", "INSERT"]},
    }
    bag = []
    for role, grants in seed.items():
        admin.create_role(tt.Role(roleName=role, ownerName="admin"))
        for t, privs in grants.items():
            obj = tt.HiveObjectRef(tt.HiveObjectType.TABLE, "demo_database", t, None, None)
            bag += [tt.HiveObjectPrivilege(obj, role, tt.PrincipalType.ROLE,
                                           tt.PrivilegeGrantInfo(p, 0, "admin", tt.PrincipalType.USER, False))
                    for p in privs]
    assert admin.grant_privileges(tt.PrivilegeBag(bag))
    for user, role in {"john": "finance", "david": "sales", "mary": "marketing"}.items():
        assert admin.grant_role(role, user, tt.PrincipalType.USER, "admin", tt.PrincipalType.USER, False)
    yield g, slab
    g.stop()


def test_seed_use_case_through_spark(seeded, metastore):
    g, slab = seeded
    mary = spark_as(slab, g.port, "mary", ["SET spark.sql.hive.convertMetastoreParquet=false",
        "SET spark.sql.hive.convertInsertingUnpartitionedTable=false",
        "SELECT v FROM demo_database.promotion",
        "INSERT INTO demo_database.promotion VALUES (2, 'by mary')",
        "SELECT count(*) FROM demo_database.promotion",
        "INSERT INTO demo_database.customer VALUES (9, 'by mary')",
    ])
    assert mary[2]["ok"] and mary[2]["rows"] == [["promotion"]], mary[2]
    assert mary[3]["ok"], mary[3]
    assert mary[4]["rows"] == [[2]], mary[4]
    assert not mary[5]["ok"] and "permission denied" in mary[5]["error"], mary[5]
    john = spark_as(slab, g.port, "john", [f"SELECT count(*) FROM demo_database.{t}" for t in TABLES]
                    + [f"INSERT INTO demo_database.{t} VALUES (7, 'by john')" for t in TABLES])
    assert all(r["ok"] for r in john[:3]), john[:3]
    for r in john[3:]:
        assert not r["ok"] and "permission denied" in r["error"], r
    nobody = spark_as(slab, g.port, "nobody", ["SHOW TABLES IN demo_database"]
                      + [f"SELECT * FROM demo_database.{t}" for t in TABLES]
                      + ["DROP TABLE demo_database.customer"])
    assert nobody[0]["ok"] and nobody[0]["rows"] == [], nobody[0]
    for r in nobody[1:]:
        assert not r["ok"] and "permission denied" in r["error"], r
    david = spark_as(slab, g.port, "david", ["DROP TABLE demo_database.customer",
                                             "GRANT SELECT ON TABLE demo_database.customer TO USER david"])
    assert not david[0]["ok"] and "permission denied" in david[0]["error"], david[0]
    assert not david[1]["ok"], david[1]
    with hms.hms_client(metastore.port) as c:
        assert sorted(c.get_all_tables("demo_database")) == sorted(TABLES), "nothing dropped"
    m = g.metrics()
    assert 'decision="deny"' in m
