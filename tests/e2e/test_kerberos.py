"""Kerberos towards clients, end to end: a real MIT KDC on loopback (realm, principals and
keytabs made here), hms-guard with identity.mode = "kerberos" in front of the real metastore,
and real Kerberos clients: Python thrift's SASL transport (pure-sasl + kerberos, after kinit)
with each security layer, pyiceberg with hive.kerberos-authentication. Refusals: a plain client,
a principal no rule maps, a client without a ticket, an expired ticket, a stale service keytab
(and its replacement, picked up without a restart)."""
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

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
    k.add(SERVICE, "alice", "bob", "admin", "etl/batch1", "svc/batch1")
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
        'auth_to_local = ["RULE:[2:$1@$0](etl@HMSGUARD\\\\.TEST)s/@.*//", "DEFAULT"]\n'))
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


def table(lab, name, owner):
    sd = tt.StorageDescriptor(
        cols=[tt.FieldSchema("id", "int", "")], location=f"file://{lab}/{DB}.db/{name}",
        inputFormat="org.apache.hadoop.mapred.TextInputFormat",
        outputFormat="org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat",
        serdeInfo=tt.SerDeInfo(None, "org.apache.hadoop.hive.serde2.lazy.LazySimpleSerDe", {}),
        bucketCols=[], sortCols=[], parameters={})
    return tt.Table(tableName=name, dbName=DB, owner=owner, sd=sd, partitionKeys=[],
                    parameters={"EXTERNAL": "TRUE"}, tableType="EXTERNAL_TABLE")


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
            assert admin.grant_privileges(tt.PrivilegeBag([tt.HiveObjectPrivilege(
                obj, "alice", tt.PrincipalType.USER,
                tt.PrivilegeGrantInfo("SELECT", 0, "admin", tt.PrincipalType.USER, False))]))
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
    t.close()
    assert handshakes(krb_guard, "not_sasl") == before + 1


def test_a_principal_asking_to_act_as_another_is_refused(krb_guard, kdc, lab):
    with pytest.raises(TTransport.TTransportException) as e:
        sasl_client(krb_guard.port, user_env(kdc, lab, "alice"),
                    authzid=f"admin@{kdc.realm}")
    assert "does not let one principal act as another" in str(e.value), e.value
