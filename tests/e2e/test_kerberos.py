"""Kerberos towards clients, end to end: a real MIT KDC on loopback (realm, principals and
keytabs made here), hms-guard with identity.mode = "kerberos" in front of the real metastore,
and real Kerberos clients: Python thrift's SASL transport (pure-sasl + kerberos, after kinit)
with each security layer, pyiceberg with hive.kerberos-authentication. Refusals: a plain client,
a principal no rule maps, a client without a ticket, an expired ticket, a stale service keytab
(and its replacement, picked up without a restart)."""
import json
import re
import os
import shutil
import subprocess
import sys
import time

import pytest
from hmsclient.genthrift.hive_metastore import ThriftHiveMetastore as T
from hmsclient.genthrift.hive_metastore import ttypes as tt
from thrift.protocol import TBinaryProtocol
from thrift.Thrift import TApplicationException
from thrift.transport import TSocket, TTransport

import hms
from kdc import Kdc

DB = "krb_db"
SERVICE = "hive/localhost"


@pytest.fixture(scope="module")
def kdc(lab):
    k = Kdc(lab / "kdc").start()
    k.add(SERVICE, "alice", "bob", "admin", "etl/batch1", "svc/batch1", "other")
    yield k
    k.stop()


def user_env(kdc, lab, name):
    """kinit NAME from its own keytab into its own cache; the environment a client needs."""
    d = lab / "kdc" / "users"
    d.mkdir(exist_ok=True)
    kt = d / (name.replace("/", "_") + ".keytab")
    if not kt.exists():
        kdc.keytab(kt, name)
    return kdc.kinit(name, kt, d / (name.replace("/", "_") + ".cc"))


@pytest.fixture(scope="module")
def krb_guard(lab, metastore, kdc):
    keytab = lab / "kdc" / "hms-guard.keytab"
    kdc.keytab(keytab, SERVICE)
    g = hms.Guard(lab, metastore.port, name="guard-kerberos", env={
        "KRB5RCACHEDIR": str(kdc.dir)}, extra=(
        '[authz]\nmode = "enforce"\n\n'
        '[storage]\nenabled = false\n\n'
        '[identity]\nmode = "kerberos"\n\n'
        '[identity.kerberos]\n'
        f'principal = "hive/_HOST@{kdc.realm}"\nhostname = "localhost"\n'
        f'keytab = "{keytab}"\nkrb5_conf = "{kdc.conf}"\n'
        'auth_to_local = ["RULE:[2:$1@$0](etl@HMSGUARD\\\\.TEST)s/@.*//",'
        ' "RULE:[1:$1@$0](.*@HMSGUARD\\\\.TEST)s/@.*//"]\n'))
    g.start()
    yield g
    g.stop()


def sasl_client(port, env, qop=None, authzid=None):
    """A Python thrift client over SASL/GSSAPI with the Kerberos cache of `env`."""
    for k in ("KRB5_CONFIG", "KRB5CCNAME"):
        os.environ[k] = env[k]
    sock = TSocket.TSocket("localhost", port)
    sock.setTimeout(20_000)
    kwargs = {}
    if qop:
        kwargs["qops"] = [qop.encode()]
    if authzid:
        kwargs["authorization_id"] = authzid
    t = TTransport.TSaslClientTransport(sock, host="localhost", service="hive",
                                        mechanism="GSSAPI", **kwargs)
    t.open()
    return T.Client(TBinaryProtocol.TBinaryProtocol(t)), t


def table(lab, name, owner, db=DB):
    return hms.external_table(db, name, f"file://{lab}/{db}.db/{name}", owner)


def handshakes(g, outcome):
    return sum(v for _, v in hms.metric_series(g.metrics(), "hms_guard_sasl_handshakes_total",
                                               outcome=outcome))


@pytest.mark.parametrize("qop", ["auth", "auth-int", "auth-conf"])
def test_the_ticket_names_the_user_under_each_security_layer(krb_guard, kdc, lab, metastore, qop):
    admin, at = sasl_client(krb_guard.port, user_env(kdc, lab, "admin"), qop)
    with hms.hms_client(metastore.port) as direct:
        if DB not in direct.get_all_databases():
            admin.create_database(tt.Database(name=DB, locationUri=f"file://{lab}/{DB}.db",
                                              parameters={}))
            for name in ("open", "closed"):
                admin.create_table(table(lab, name, "admin"))
            obj = tt.HiveObjectRef(tt.HiveObjectType.TABLE, DB, "open", None, None)
            hms.grant(admin, obj, "alice", "SELECT")
    alice, t = sasl_client(krb_guard.port, user_env(kdc, lab, "alice"), qop)
    alice.set_ugi("admin", [])  # changes nothing on an authenticated connection
    assert alice.get_table(DB, "open").tableName == "open"
    with pytest.raises(tt.MetaException) as e:
        alice.get_table(DB, "closed")
    assert "user alice" in e.value.message and f"{DB}.closed" in e.value.message
    with pytest.raises(tt.MetaException):
        alice.drop_table(DB, "open", False)
    # A large reply crosses many frames (and, wrapped, many GSSAPI tokens).
    assert len(admin.get_all_databases()) >= 2
    t.close()
    at.close()
    log = krb_guard.log.read_text()
    assert f'"qop":"{qop}"' in log and "alice@HMSGUARD.TEST" in log


def test_a_service_principal_is_mapped_by_the_rules(krb_guard, kdc, lab):
    etl, t = sasl_client(krb_guard.port, user_env(kdc, lab, "etl/batch1"))
    with pytest.raises(tt.MetaException) as e:
        etl.get_table(DB, "closed")
    assert "user etl" in e.value.message, e.value.message
    t.close()


def test_a_plain_client_is_told_kerberos_is_required(krb_guard, metastore):
    before = handshakes(krb_guard, "not_sasl")
    sock = TSocket.TSocket("127.0.0.1", krb_guard.port)
    sock.setTimeout(10_000)
    t = TTransport.TBufferedTransport(sock)
    t.open()
    c = T.Client(TBinaryProtocol.TBinaryProtocol(t))
    with pytest.raises(TApplicationException) as e:
        c.set_ugi("admin", [])
    assert "requires Kerberos" in str(e.value), e.value
    # Hive's client ignores a failed set_ugi: its next call is told the same.
    with pytest.raises(TApplicationException) as e:
        c.get_all_databases()
    assert "requires Kerberos" in str(e.value), e.value
    t.close()
    assert handshakes(krb_guard, "not_sasl") == before + 1


def test_a_principal_asking_to_act_as_another_is_refused(krb_guard, kdc, lab):
    with pytest.raises(TTransport.TTransportException) as e:
        sasl_client(krb_guard.port, user_env(kdc, lab, "alice"),
                    authzid=f"admin@{kdc.realm}")
    assert "does not let one principal act as another" in str(e.value), e.value


def test_a_principal_no_rule_maps_is_refused(krb_guard, kdc, lab):
    before = handshakes(krb_guard, "unmapped")
    with pytest.raises(TTransport.TTransportException) as e:
        sasl_client(krb_guard.port, user_env(kdc, lab, "svc/batch1"))
    assert "svc/batch1@HMSGUARD.TEST has no user here" in str(e.value), e.value
    assert handshakes(krb_guard, "unmapped") == before + 1
    assert "no auth_to_local rule maps it" in krb_guard.log.read_text()


def test_no_ticket_and_an_expired_ticket_never_reach_the_metastore(krb_guard, kdc, lab):
    env = kdc.client_env(lab / "kdc" / "users" / "nobody.cc")
    with pytest.raises(Exception) as e:
        sasl_client(krb_guard.port, env)
    assert "credentials" in str(e.value).lower() or "ccache" in str(e.value).lower(), e.value
    d = lab / "kdc" / "users"
    kt = d / "bob.keytab"
    if not kt.exists():
        kdc.keytab(kt, "bob")
    env = kdc.kinit("bob", kt, d / "bob-short.cc", lifetime="2s")
    time.sleep(3)
    with pytest.raises(Exception) as e:
        sasl_client(krb_guard.port, env)
    assert "expired" in str(e.value).lower(), e.value


SKEWED_CLIENT = """
import sys
from thrift.transport import TSocket, TTransport
sock = TSocket.TSocket("localhost", int(sys.argv[1]))
sock.setTimeout(20000)
t = TTransport.TSaslClientTransport(sock, host="localhost", service="hive", mechanism="GSSAPI")
try:
    t.open()
    print("OPENED")
except Exception as e:
    print("REFUSED", e)
"""


def test_a_client_clock_far_off_is_refused(krb_guard, kdc, lab):
    env = user_env(kdc, lab, "alice")
    # The service ticket is fetched now; the client then runs ten minutes in the future
    # (beyond the five minutes Kerberos tolerates) and needs no KDC for its authenticator.
    r = subprocess.run(["kvno", SERVICE], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    before = handshakes(krb_guard, "kerberos")
    r = subprocess.run(["faketime", "-f", "+600s", sys.executable, "-c", SKEWED_CLIENT,
                        str(krb_guard.port)], env=env, capture_output=True, text=True,
                       timeout=60)
    assert "REFUSED" in r.stdout, (r.stdout, r.stderr)
    assert "Clock skew too great" in r.stdout, r.stdout
    assert handshakes(krb_guard, "kerberos") == before + 1


def test_a_missing_service_key_stops_the_start(lab, metastore, kdc):
    other = lab / "kdc" / "other.keytab"
    kdc.keytab(other, "other")
    g = hms.Guard(lab, metastore.port, name="guard-kerberos-nokey", extra=(
        '[identity]\nmode = "kerberos"\n\n[identity.kerberos]\n'
        f'principal = "{SERVICE}@{kdc.realm}"\nkeytab = "{other}"\nkrb5_conf = "{kdc.conf}"\n'))
    with pytest.raises(RuntimeError) as e:
        g.start()
    assert f"no key for {SERVICE}@{kdc.realm}" in str(e.value), e.value


def spark_with_kerberos(lab, kdc, port, user, statements, login, extra=None):
    """Spark SQL in its own JVM pointed at hms-guard. login "keytab": Spark logs in from USER's
    keytab (spark.kerberos.principal/keytab); "ticket": from USER's ticket cache (kinit); both
    with the metastore client in SASL mode, as for a kerberized metastore. None: no Kerberos
    (the client claims USER with set_ugi). `extra`: more Spark settings."""
    from test_seed_spark import spark_as
    conf_dir = lab / "kdc" / "hadoop-conf"
    conf_dir.mkdir(exist_ok=True)
    # (Reading a Hive table in Kerberos mode asks for a token renewer: the resource manager's
    # principal, named here though no YARN runs.)
    (conf_dir / "core-site.xml").write_text(hms.site_xml({
        "hadoop.security.authentication": "kerberos",
        "yarn.resourcemanager.principal": f"yarn/localhost@{kdc.realm}"}))
    env = user_env(kdc, lab, user)
    conf = {"metastore_uri": f"thrift://localhost:{port}", **(extra or {})}
    saved = {k: os.environ.get(k) for k in ("KRB5CCNAME", "KRB5_CONFIG")}
    if login:
        conf.update({
            "spark.hadoop.hive.metastore.sasl.enabled": "true",
            "spark.hadoop.hive.metastore.kerberos.principal": f"{SERVICE}@{kdc.realm}",
        })
        os.environ.update(HADOOP_CONF_DIR=str(conf_dir), KRB5_CONFIG=env["KRB5_CONFIG"],
                          SPARK_AS_JAVA_OPTS=f"-Djava.security.krb5.conf={kdc.conf}")
    if login == "ticket":
        os.environ["KRB5CCNAME"] = env["KRB5CCNAME"]
    elif login == "keytab":
        # No ticket cache to fall back on: the keytab is the only way in.
        os.environ["KRB5CCNAME"] = f"FILE:{lab}/kdc/users/none.cc"
        conf.update({"spark.kerberos.principal": kdc.principal(user),
                     "spark.kerberos.keytab": str(lab / "kdc" / "users" / f"{user}.keytab")})
    os.environ["SPARK_AS_CONF"] = json.dumps(conf)
    try:
        return spark_as(lab, port, user, statements)
    finally:
        for k in ("HADOOP_CONF_DIR", "SPARK_AS_JAVA_OPTS", "SPARK_AS_CONF"):
            os.environ.pop(k, None)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_spark_with_kerberos_works_under_the_grants(krb_guard, kdc, lab):
    before = handshakes(krb_guard, "ok")
    res = spark_with_kerberos(lab, kdc, krb_guard.port, "alice", [
        f"SELECT count(*) FROM {DB}.open",
        f"SELECT count(*) FROM {DB}.closed",
    ], login="keytab")
    assert res[0]["ok"] and res[0]["rows"] == [[0]], res[0]
    assert not res[1]["ok"] and "user alice" in res[1]["error"], res[1]
    assert f"{DB}.closed" in res[1]["error"], res[1]
    assert handshakes(krb_guard, "ok") > before
    assert '"principal":"alice@HMSGUARD.TEST"' in krb_guard.log.read_text()
    # Another user, logged in from a ticket cache, holds no grant on the table.
    res = spark_with_kerberos(lab, kdc, krb_guard.port, "bob", [
        f"SELECT count(*) FROM {DB}.open"], login="ticket")
    assert not res[0]["ok"] and "user bob" in res[0]["error"], res[0]
    # Spark without Kerberos, claiming the administrator: told Kerberos is required.
    res = spark_with_kerberos(lab, kdc, krb_guard.port, "admin", [
        f"SELECT count(*) FROM {DB}.open"], login=None)
    assert not res[0]["ok"] and "requires Kerberos" in res[0]["error"], res[0]


def test_spark_writes_are_asked_as_the_ticket_holder(krb_guard, kdc, lab):
    """hms-guard-spark opens its own connection the way the session's metastore client does:
    SASL/GSSAPI as the logged-in principal (no set_ugi), so the question is alice's."""
    from test_spark_writes import EXT, JAR
    assert JAR.is_file(), f"{JAR} missing: spark/build.sh builds it"
    res = spark_with_kerberos(lab, kdc, krb_guard.port, "alice", [
        f"SELECT count(*) FROM {DB}.open",
        f"INSERT INTO {DB}.open VALUES (1)",
    ], login="keytab", extra=EXT)
    assert res[0]["ok"], res[0]
    assert not res[1]["ok"], res[1]
    err = res[1]["error"]
    assert ("hms-guard: permission denied: user alice may not write (INSERT) into table "
            f"{DB}.open") in err, err
    # The question arrived on a Kerberos connection (the extension sends no set_ugi over SASL,
    # so the user can only have come from the ticket) and was refused there.
    denied = [json.loads(ln) for ln in krb_guard.log.read_text().splitlines()
              if ln.startswith("{") and '"method":"hms_guard_authorize"' in ln]
    assert any(e.get("user") == "alice" and "write (INSERT)" in e.get("message", "")
               for e in denied), denied[-3:]


def test_pyiceberg_with_kerberos_creates_fills_and_reads_a_table(krb_guard, kdc, lab, metastore):
    import pyarrow as pa
    from pyiceberg.catalog.hive import HiveCatalog
    from pyiceberg.schema import Schema
    from pyiceberg.types import LongType, NestedField

    admin, at = sasl_client(krb_guard.port, user_env(kdc, lab, "admin"))
    ice_db = "krb_ice"
    def as_user(user):
        """pyiceberg opens a connection per operation, with the process's Kerberos cache."""
        env = user_env(kdc, lab, user)
        for k in ("KRB5_CONFIG", "KRB5CCNAME"):
            os.environ[k] = env[k]

    admin.create_database(tt.Database(name=ice_db, parameters={},
                                      locationUri=f"s3a://datalake/defloc/{ice_db}.db"))
    obj = tt.HiveObjectRef(tt.HiveObjectType.DATABASE, ice_db, None, None, None)
    hms.grant(admin, obj, "alice", "CREATE")
    at.close()

    def catalog(user):
        as_user(user)
        return HiveCatalog("krb", **{"uri": f"thrift://localhost:{krb_guard.port}",
                                     "hive.kerberos-authentication": "true",
                                     "py-io-impl": "lab_fileio.LabFileIO",
                                     "lab.s3-root": str(hms.bucket_dir(lab).parent)})

    alice = catalog("alice")
    schema = Schema(NestedField(1, "id", LongType(), required=False))
    t = alice.create_table(f"{ice_db}.events", schema)
    t.append(pa.table({"id": pa.array([1, 2, 3], pa.int64())}))
    got = alice.load_table(f"{ice_db}.events").scan().to_arrow()
    assert sorted(got["id"].to_pylist()) == [1, 2, 3]
    with hms.hms_client(metastore.port) as direct:
        assert direct.get_table(ice_db, "events").owner == "alice", "the ticket's user owns it"
    bob = catalog("bob")
    with pytest.raises(Exception) as e:
        bob.load_table(f"{ice_db}.events")
    assert "user bob" in str(e.value) + str(e.value.__cause__), e.value
    as_user("alice")
    alice.drop_table(f"{ice_db}.events")


def test_kerberos_inside_tls(lab, metastore, kdc):
    """Both configured: the TLS handshake first, then the SASL negotiation inside it."""
    from thrift.transport import TSSLSocket
    from certs import make_certs
    d = lab / "kdc-tls"
    make_certs(d)
    keytab = lab / "kdc" / "hms-guard.keytab"
    g = hms.Guard(lab, metastore.port, name="guard-kerberos-tls", env={
        "KRB5RCACHEDIR": str(kdc.dir)}, extra=(
        '[authz]\nmode = "enforce"\n\n[storage]\nenabled = false\n\n'
        f'[server.tls]\ncert = "{d}/server.pem"\nkey = "{d}/server.key"\n\n'
        '[identity]\nmode = "kerberos"\n\n[identity.kerberos]\n'
        f'principal = "{SERVICE}@{kdc.realm}"\nkeytab = "{keytab}"\nkrb5_conf = "{kdc.conf}"\n'))
    g.start()
    try:
        env = user_env(kdc, lab, "alice")
        for k in ("KRB5_CONFIG", "KRB5CCNAME"):
            os.environ[k] = env[k]
        sock = TSSLSocket.TSSLSocket("localhost", g.port, ca_certs=str(d / "ca.pem"))
        sock.setTimeout(20_000)
        t = TTransport.TSaslClientTransport(sock, host="localhost", service="hive",
                                            mechanism="GSSAPI")
        t.open()
        alice = T.Client(TBinaryProtocol.TBinaryProtocol(t))
        assert alice.get_table(DB, "open").tableName == "open"
        with pytest.raises(tt.MetaException):
            alice.get_table(DB, "closed")
        t.close()
        assert '"principal":"alice@HMSGUARD.TEST"' in g.log.read_text()
    finally:
        g.stop()


def test_a_replaced_service_keytab_is_used_without_a_restart(krb_guard, kdc, lab):
    """Last in the module: the service key changes. The keytab hms-guard reads holds the old
    key; tickets for the new key are refused until the new keytab replaces the file."""
    live = lab / "kdc" / "hms-guard.keytab"
    fresh = lab / "kdc" / "fresh.keytab"
    kdc.keytab(fresh, SERVICE)  # a new key version at the KDC
    with pytest.raises(TTransport.TTransportException) as e:
        sasl_client(krb_guard.port, user_env(kdc, lab, "alice"))
    assert "Kerberos authentication failed" in str(e.value), e.value
    shutil.copy(fresh, live.with_suffix(".new"))
    os.replace(live.with_suffix(".new"), live)
    alice, t = sasl_client(krb_guard.port, user_env(kdc, lab, "alice"))
    assert alice.get_table(DB, "open").tableName == "open"
    t.close()


def test_the_sql_shell_identifies_with_a_kerberos_ticket(krb_guard, kdc, lab):
    """`hms-guard sql --kerberos`: the ticket in the user's cache names the user (no set_ugi);
    the admin's statements run, bob's are refused in his name."""
    def sql(user, statements):
        env = dict(os.environ, **user_env(kdc, lab, user))
        return subprocess.run([hms.guard_bin(), "sql", "--uri", f"thrift://localhost:{krb_guard.port}",
                               "--kerberos", f"hive/_HOST@{kdc.realm}", "-e", statements],
                              capture_output=True, text=True, timeout=60, env=env)

    r = sql("admin", "CREATE ROLE krb_sql_role; GRANT ROLE krb_sql_role TO USER alice; "
                     "SHOW PRINCIPALS krb_sql_role")
    assert r.returncode == 0, r.stderr
    # The grantor is the ticket's user.
    assert re.search(r"^alice\s+USER\s+false\s+admin\s+\d+$", r.stdout, re.M), r.stdout
    r = sql("bob", "GRANT ROLE krb_sql_role TO USER bob")
    assert r.returncode == 1
    assert "permission denied" in r.stderr and "bob" in r.stderr, r.stderr
    r = sql("alice", "SHOW CURRENT ROLES")
    assert "krb_sql_role" in r.stdout.split(), r.stdout + r.stderr
    assert sql("admin", "DROP ROLE krb_sql_role").returncode == 0
