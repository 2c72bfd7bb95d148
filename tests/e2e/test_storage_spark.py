"""Dual-IAM storage checks end to end: real Spark (as the administrator, so the GRANTs allow
everything) through hms-guard in front of the real metastore, with hms-guard's storage checks
going over HTTP to a real moto server with IAM enforcement on (tests/lab/moto_lab.py: the
account default role may use only s3://datalake/defloc/ and s3://datalake/temp/; the compute
identity, which is hms-guard's own, reaches everything).

The data itself lives in the lab's emulated s3a bucket (local disk), as for every Spark test
here; moto answers the questions of the storage check (STS AssumeRole, S3 probes)."""
import json
import time

import pytest

import hms
import moto_lab
from test_seed_spark import spark_as

DB = "st_db"


def audit_lines(path):
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]


def counter(text, name, **labels):
    return sum(v for _, v in hms.metric_series(text, name, **labels))


@pytest.fixture(scope="module")
def storage(lab, metastore):
    moto = moto_lab.MotoLab()
    facts = moto.start()
    audit = lab / "audit-storage.jsonl"
    g = hms.Guard(lab, metastore.port, name="guard-storage", env=moto_lab.guard_env(facts),
                  extra=('[authz]\nmode = "enforce"\n\n'
                         f'[audit]\nsink = "file"\npath = "{audit}"\n\n'
                         + moto_lab.storage_toml(facts)))
    try:
        g.start()
        yield g, facts, audit
    finally:
        g.stop()
        moto.stop()


def test_locations_follow_the_users_role(storage, lab):
    g, facts, audit = storage
    r = spark_as(lab, g.port, "admin", [
        # A database at a place the default role may write: allowed.
        f"CREATE DATABASE {DB} LOCATION 's3a://datalake/defloc/{DB}.db'",
        # External tables: allowed under defloc/, denied under datawarehouse/.
        f"CREATE TABLE {DB}.x (id INT) STORED AS TEXTFILE LOCATION 's3a://datalake/defloc/x'",
        f"CREATE TABLE {DB}.y (id INT) STORED AS TEXTFILE "
        "LOCATION 's3a://datalake/datawarehouse/y'",
        # Moving a table: to temp/ allowed, to datawarehouse/ denied.
        f"ALTER TABLE {DB}.x SET LOCATION 's3a://datalake/temp/x2'",
        f"ALTER TABLE {DB}.x SET LOCATION 's3a://datalake/datawarehouse/x3'",
        f"SHOW TABLES IN {DB}",
        # A Spark data-source table keeps its location in the serde `path` (after a
        # Hive-compatible attempt is refused, Spark retries with a placeholder location).
        f"CREATE TABLE {DB}.ds (id INT) USING parquet LOCATION 's3a://datalake/datawarehouse/ds'",
        f"CREATE TABLE {DB}.ds_ok (id INT) USING parquet LOCATION 's3a://datalake/defloc/ds_ok'",
    ])
    assert r[0]["ok"], r[0]
    assert r[1]["ok"], r[1]
    assert not r[2]["ok"], r[2]
    err = r[2]["error"]
    assert "hms-guard: permission denied: user admin" in err, err
    assert "s3a://datalake/datawarehouse/y" in err and "account-default" in err, err
    assert r[3]["ok"], r[3]
    assert not r[4]["ok"] and "s3a://datalake/datawarehouse/x3" in r[4]["error"], r[4]
    assert sorted(row[1] for row in r[5]["rows"]) == ["x"], r[5]
    assert not r[6]["ok"] and "s3a://datalake/datawarehouse/ds" in r[6]["error"], r[6]
    assert r[7]["ok"], r[7]
    with hms.hms_client(g.port) as c:
        c.set_ugi("admin", [])
        assert c.get_table(DB, "x").sd.location.rstrip("/") == "s3a://datalake/temp/x2"

    ev = [e for e in audit_lines(audit) if e["database"] == DB and e["storage"]]
    denied = [e for e in ev if e["decision"] == "deny"]
    assert denied and all(e["reason"] == "storage_denied" for e in denied), denied
    assert {e["location"] for e in denied} == {"s3a://datalake/datawarehouse/y",
                                               "s3a://datalake/datawarehouse/x3",
                                               "s3a://datalake/datawarehouse/ds"}
    assert all(facts["roles"]["account_default"] in e["storage"]["role_chain"] for e in ev)
    assert any(e["decision"] == "allow" and e["storage"]["outcome"] == "allow" for e in ev)


def test_managed_table_without_location_makes_no_aws_call(storage, lab):
    g, facts, audit = storage
    before = g.metrics()
    r = spark_as(lab, g.port, "admin", [
        f"CREATE DATABASE IF NOT EXISTS {DB} LOCATION 's3a://datalake/defloc/{DB}.db'",
        f"CREATE TABLE {DB}.managed (id INT) STORED AS TEXTFILE",
        f"INSERT INTO {DB}.managed VALUES (1)",
        f"SELECT count(*) FROM {DB}.managed",
    ])
    assert all(x["ok"] for x in r), r
    assert r[3]["rows"] == [[1]]
    after = g.metrics()
    # No AWS call (the database statement's checks, if Spark sends it, come from the cache).
    for name in ("hms_guard_storage_sts_calls_total", "hms_guard_storage_probes_total"):
        assert counter(after, name) == counter(before, name), name
    assert (counter(after, "hms_guard_storage_checks_total", cached="false")
            == counter(before, "hms_guard_storage_checks_total", cached="false"))
    created = [e for e in audit_lines(audit)
               if e["table"] == "managed" and e["operation"] == "create_table"]
    assert created and created[-1]["decision"] == "allow" and created[-1]["storage"] is None


def test_checks_are_cached_and_counted(storage, lab):
    g, facts, audit = storage
    m = g.metrics()
    assert counter(m, "hms_guard_storage_sts_calls_total", hop="user", outcome="ok") >= 1
    assert counter(m, "hms_guard_storage_probes_total", outcome="deny") >= 1
    assert counter(m, "hms_guard_storage_checks_total", outcome="deny") >= 2
    # The same denied location again: decided from the cache, no new probe.
    probes = counter(m, "hms_guard_storage_probes_total")
    with hms.hms_client(g.port) as c:
        c.set_ugi("admin", [])
        t = c.get_table(DB, "x")
        t.sd.location = "s3a://datalake/datawarehouse/x3"
        with pytest.raises(Exception, match="permission denied"):
            c.alter_table(DB, "x", t)
    m2 = g.metrics()
    assert counter(m2, "hms_guard_storage_probes_total") == probes
    assert counter(m2, "hms_guard_storage_checks_total", cached="true") >= 1


def test_storage_endpoint_down_denies_and_the_proxy_keeps_serving(lab, metastore):
    """No AWS endpoint answers: location DDL is denied as unavailable, quickly, and every other
    call still works."""
    dead = hms.free_port()
    g = hms.Guard(lab, metastore.port, name="guard-storage-down",
                  env={"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "x",
                       "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"},
                  extra=('[authz]\nmode = "enforce"\n\n[storage]\n'
                         f'endpoint_url = "http://127.0.0.1:{dead}"\nregion = "us-east-1"\n'
                         'default_role = "arn:aws:iam::123456789012:role/account-default"\n'
                         'timeout_ms = 2000\n'))
    g.start()
    try:
        import time
        from hmsclient.genthrift.hive_metastore import ttypes as tt
        from hms import connect
        c = connect(g.port, "admin")
        sd = tt.StorageDescriptor(
            cols=[tt.FieldSchema("id", "int", "")], location="s3a://datalake/defloc/down",
            inputFormat="org.apache.hadoop.mapred.TextInputFormat",
            outputFormat="org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat",
            serdeInfo=tt.SerDeInfo(None, "org.apache.hadoop.hive.serde2.lazy.LazySimpleSerDe", {}),
            bucketCols=[], sortCols=[], parameters={})
        t0 = time.monotonic()
        with pytest.raises(tt.MetaException) as e:
            c.create_table(tt.Table(tableName="down", dbName="default", owner="admin", sd=sd,
                                    partitionKeys=[], parameters={},
                                    tableType="EXTERNAL_TABLE"))
        took = time.monotonic() - t0
        assert "storage check unavailable" in e.value.message, e.value.message
        assert took < 10, took
        # The same connection and the proxy keep serving.
        assert c.get_all_databases()
        assert "default" in connect(g.port, "admin").get_all_databases()
        m = g.metrics()
        assert counter(m, "hms_guard_storage_checks_total", outcome="unavailable") >= 1
    finally:
        g.stop()


def test_what_a_drop_deletes_is_judged_as_the_metastore_judges_it(storage, lab, metastore):
    """With `read_only_external`, an external table needs only read access to its location.
    The metastore calls a table external by its parameter EXTERNAL=TRUE, not by its type: a
    table typed EXTERNAL_TABLE without it is stored as managed and a drop deletes its files, so
    it needs write access; so does turning an external table into a managed one."""
    from hmsclient.genthrift.hive_metastore import ttypes as tt
    from hms import connect
    _, facts, _ = storage  # the module's moto server
    g = hms.Guard(lab, metastore.port, name="guard-storage-ro", env=moto_lab.guard_env(facts),
                  extra=('[authz]\nmode = "enforce"\n\n'
                         + moto_lab.storage_toml(facts, read_only_external=True)))
    try:
        g.start()
        admin = connect(g.port, "admin")
        db = "drop_db"
        admin.create_database(tt.Database(name=db, locationUri="s3a://datalake/defloc/drop_db.db",
                                          parameters={}))

        def tbl(name, external):
            # The default role reads the whole bucket but writes only defloc/ and temp/.
            return hms.external_table(db, name, f"s3a://datalake/datawarehouse/protected_{name}",
                                      external=external)

        admin.create_table(tbl("ext", True))  # read suffices
        with pytest.raises(tt.MetaException) as e:
            admin.create_table(tbl("typed_only", False))  # stored as managed: write needed
        assert "write" in e.value.message, e.value.message
        current = admin.get_table(db, "ext")
        current.parameters["EXTERNAL"] = "FALSE"
        with pytest.raises(tt.MetaException) as e:
            admin.alter_table(db, "ext", current)
        assert "write" in e.value.message, e.value.message
        with hms.hms_client(metastore.port) as direct:
            assert direct.get_table(db, "ext").parameters["EXTERNAL"] == "TRUE"
            assert "typed_only" not in direct.get_all_tables(db)
        admin.drop_table(db, "ext", False)
        admin.drop_database(db, False, False)
    finally:
        g.stop()


def test_a_table_at_its_default_place_needs_no_storage_check(storage, lab):
    """pyiceberg (and Spark) send a table's default place explicitly: external or not, a table
    at exactly its database's location plus its name is checked with the database, not again;
    one level elsewhere under the database is an explicit location and is checked."""
    from hmsclient.genthrift.hive_metastore import ttypes as tt
    from hms import connect
    g, facts, audit = storage
    admin = connect(g.port, "admin")
    db = "default_place_db"
    admin.create_database(tt.Database(name=db, locationUri=f"s3a://datalake/defloc/{db}.db",
                                      parameters={}))

    defloc = f"s3a://datalake/defloc/{db}.db"
    admin.create_table(hms.external_table(db, "at_home", f"{defloc}/at_home"))
    admin.create_table(hms.external_table(db, "nested", f"{defloc}/sub/nested"))
    # The audit line is written by its own thread: wait for both.
    deadline = time.monotonic() + 10
    while True:
        lines = {e["table"]: e for e in audit_lines(audit)
                 if e.get("database") == db and e["operation"] == "create_table"}
        if {"at_home", "nested"} <= set(lines) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert lines["at_home"]["decision"] == "allow" and lines["at_home"]["storage"] is None
    assert lines["nested"]["storage"] is not None, lines["nested"]
    for t in ("at_home", "nested"):
        admin.drop_table(db, t, False)
    admin.drop_database(db, False, False)


def carrier_table(key):
    return "p_" + key.replace(".", "_").replace("-", "_")


def test_every_location_carrier_is_checked(storage, lab, metastore):
    """Every place a call can name a location, against moto: the caller's role (the account
    default: read/write defloc/ and temp/ only) must reach it. Allowed where it may, refused
    (and nothing changed in the metastore) where it may not."""
    from hmsclient.genthrift.hive_metastore import ttypes as tt
    from hms import connect
    g, facts, audit = storage
    admin = connect(g.port, "admin")
    db = "carriers_db"
    home = f"s3a://datalake/defloc/{db}.db"
    protected = "s3a://datalake/datawarehouse/secret"
    admin.create_database(tt.Database(name=db, locationUri=home, parameters={}))
    meta = "metadata/00001.metadata.json"
    # Table-format parameters, at creation: allowed at home, refused pointing at the warehouse.
    for key, good, bad in [
        ("metadata_location", f"{home}/ice/{meta}", f"{protected}/{meta}"),
        ("paimon_location", f"{home}/pai", f"{protected}/pai"),
        ("flink.path", f"{home}/fl", f"{protected}/fl"),
        ("path", f"{home}/hudi", f"{protected}/hudi"),  # Hudi's Flink catalog
        ("flink.table-path", f"{home}/delta", f"{protected}/delta"),  # Delta's, via Flink
    ]:
        name = carrier_table(key)
        with pytest.raises(tt.MetaException, match="storage"):
            admin.create_table(hms.external_table(db, name, f"{home}/{name}", params={key: bad}))
        admin.create_table(hms.external_table(db, name, f"{home}/{name}", params={key: good}))
        # The same pointer moved to the warehouse by an alter: refused.
        t = admin.get_table(db, name)
        t.parameters[key] = bad
        with pytest.raises(tt.MetaException, match="storage"):
            admin.alter_table(db, name, t)
    # Partitions outside their table: each form.
    admin.create_table(hms.external_table(db, "parts", f"{home}/parts", partitioned=True))

    def part(value, location):
        sd = admin.get_table(db, "parts").sd
        sd.location = location
        return tt.Partition(values=[value], dbName=db, tableName="parts", sd=sd, parameters={})

    admin.add_partition(part("1", f"{home}/parts/ds=1"))
    admin.add_partition(part("2", f"s3a://datalake/temp/{db}/elsewhere"))  # reachable
    with pytest.raises(tt.MetaException, match="storage"):
        admin.add_partition(part("3", f"{protected}/p3"))
    with pytest.raises(tt.MetaException, match="storage"):
        admin.add_partitions([part("4", f"{home}/parts/ds=4"), part("5", f"{protected}/p5")])
    moved = admin.get_partition(db, "parts", ["1"])
    moved.sd.location = f"{protected}/p1"
    with pytest.raises(tt.MetaException, match="storage"):
        admin.alter_partition(db, "parts", moved)
    renamed = admin.get_partition(db, "parts", ["2"])
    renamed.values = ["2b"]
    renamed.sd.location = f"{protected}/p2b"
    with pytest.raises(tt.MetaException, match="storage"):
        admin.rename_partition(db, "parts", ["2"], renamed)

    # A spec with a shared storage descriptor: each partition lies at the shared location
    # followed by its relative path, joined as plain strings by the metastore.
    def shared_spec(root, rels):
        sd = admin.get_table(db, "parts").sd
        sd.location = root
        return tt.PartitionSpec(
            dbName=db, tableName="parts", rootPath=root,
            sharedSDPartitionSpec=tt.PartitionSpecWithSharedSD(
                sd=sd, partitions=[tt.PartitionWithoutSD(values=[v], relativePath=r,
                                                         parameters={})
                                   for v, r in rels]))

    assert admin.add_partitions_pspec([shared_spec(f"{home}/parts", [("6", "/ds=6")])]) == 1
    for root, rel in [("s3a://datalake/temp", "orary/p7"),  # temp + orary: a sibling
                      ("s3a://datalake/temp", "/../datawarehouse/secret/p7")]:
        with pytest.raises(tt.MetaException, match="storage|location"):
            admin.add_partitions_pspec([shared_spec(root, [("7", rel)])])
    keys = ["metadata_location", "paimon_location", "flink.path", "path", "flink.table-path"]
    with hms.hms_client(metastore.port) as c:
        assert sorted(c.get_partition_names(db, "parts", -1)) == ["ds=1", "ds=2", "ds=6"]
        assert c.get_partition(db, "parts", ["6"]).sd.location == f"{home}/parts/ds=6"
        for key in keys:
            assert protected not in c.get_table(db, carrier_table(key)).parameters[key]
        assert c.get_partition(db, "parts", ["1"]).sd.location == f"{home}/parts/ds=1"
    for t in [carrier_table(k) for k in keys] + ["parts"]:
        admin.drop_table(db, t, False)
    admin.drop_database(db, False, False)
