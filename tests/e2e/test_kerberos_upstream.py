"""hms-guard in front of a kerberized metastore, end to end: a real MIT KDC on loopback, the
real metastore 2.3 in SASL mode (hive.metastore.sasl.enabled, hms-guard's principal a proxy
user there), hms-guard with Kerberos both ways. Clients authenticate to hms-guard with their
tickets; hms-guard authenticates to the metastore with its own keytab, and acts as each caller
with a delegation token (DIGEST-MD5): the metastore runs and audits each call as the caller.
Also: hms-guard's own ticket expiring (renewed from its keytab), and a hms-guard the
metastore does not let impersonate anyone (a clear refusal)."""
import re
import time

import pytest
from hmsclient.genthrift.hive_metastore import ttypes as tt
from thrift.Thrift import TApplicationException

import hms
from kdc import Kdc
from test_kerberos import sasl_client, table

DB = "kup_db"
SERVICE = "hive/localhost"
GUARD = "hms-guard/localhost"


@pytest.fixture(scope="module")
def realm(lab):
    d = lab / "kup"
    k = Kdc(d / "kdc").start()
    k.add(SERVICE, GUARD, "intruder/localhost", "alice", "bob", "carol", "admin")
    # hms-guard's own tickets live 20 seconds: a test waits past that.
    k.run("kadmin.local", "-q", f"modprinc -maxlife \"20 seconds\" {k.principal(GUARD)}")
    service_kt = k.keytab(d / "service.keytab", SERVICE)
    guard_kt = k.keytab(d / "guard.keytab", GUARD)
    intruder_kt = k.keytab(d / "intruder.keytab", "intruder/localhost")
    yield {"kdc": k, "dir": d, "service_kt": service_kt, "guard_kt": guard_kt,
           "intruder_kt": intruder_kt}
    k.stop()


@pytest.fixture(scope="module")
def krb_metastore(lab, realm):
    k = realm["kdc"]
    m = hms.Metastore(lab, home=realm["dir"] / "hms", kerberos={
        "principal": f"{SERVICE}@{k.realm}", "keytab": realm["service_kt"],
        "krb5_conf": k.conf, "realm": k.realm, "proxy_users": ["hms-guard"]})
    m.start(txn_tables=False)
    yield m
    m.stop()


def guard_config(k, service_kt, own, own_kt):
    return ('[authz]\nmode = "enforce"\n\n[storage]\nenabled = false\n\n'
            '[identity]\nmode = "kerberos"\n\n'
            '[identity.kerberos]\n'
            f'principal = "{SERVICE}@{k.realm}"\nkeytab = "{service_kt}"\n'
            f'krb5_conf = "{k.conf}"\n\n'
            '[upstream.kerberos]\n'
            f'principal = "{own}@{k.realm}"\nkeytab = "{own_kt}"\n'
            f'service_principal = "{SERVICE}@{k.realm}"\n'
            # A caller's token is used 5 s, then renewed (test below).
            'token_refresh_ms = 5000\n')


@pytest.fixture(scope="module")
def kup_guard(lab, realm, krb_metastore):
    k = realm["kdc"]
    g = hms.Guard(lab, krb_metastore.port, name="guard-kerberos-upstream",
                  env={"KRB5RCACHEDIR": str(realm["dir"])},
                  extra=guard_config(k, realm["service_kt"], GUARD, realm["guard_kt"]))
    g.start()
    yield g
    g.stop()


def client(g, realm, lab, user):
    k = realm["kdc"]
    d = realm["dir"] / "users"
    d.mkdir(exist_ok=True)
    kt = d / f"{user}.keytab"
    if not kt.exists():
        k.keytab(kt, user)
    return sasl_client(g.port, k.kinit(user, kt, d / f"{user}.cc"))


def audited(m, user, cmd):
    """Metastore audit lines of USER's CMD calls."""
    pat = re.compile(rf"audit: ugi={re.escape(user)}\s.*cmd={re.escape(cmd)}")
    return [ln for ln in m.log.read_text(errors="replace").splitlines() if pat.search(ln)]


def test_calls_run_at_the_metastore_as_the_caller(kup_guard, realm, lab, krb_metastore):
    admin, at = client(kup_guard, realm, lab, "admin")
    admin.create_database(tt.Database(name=DB, locationUri=f"file://{lab}/{DB}.db",
                                      parameters={}))
    for name in ("open", "closed"):
        admin.create_table(table(lab, name, "admin", db=DB))
    obj = tt.HiveObjectRef(tt.HiveObjectType.TABLE, DB, "open", None, None)
    hms.grant(admin, obj, "alice", "SELECT")
    at.close()
    alice, t = client(kup_guard, realm, lab, "alice")
    assert alice.get_table(DB, "open").tableName == "open"
    with pytest.raises(tt.MetaException) as e:
        alice.get_table(DB, "closed")
    assert "user alice" in e.value.message, e.value.message
    t.close()
    # The metastore ran alice's call as alice (her delegation token), the admin's as admin.
    assert audited(krb_metastore, "alice", f"get_table : db={DB} tbl=open") or \
        audited(krb_metastore, "alice", "get_table"), "alice's call not audited as alice"
    assert audited(krb_metastore, "admin", "create_database")
    # hms-guard's own lookups (grants) ran as its principal.
    assert [ln for ln in krb_metastore.log.read_text(errors="replace").splitlines()
            if "audit: ugi=hms-guard" in ln], "no lookup as hms-guard"
    # Nothing ran as the metastore's own user or as an unauthenticated one.
    assert not audited(krb_metastore, "root", "get_table")


def test_a_callers_token_is_kept_between_connections(kup_guard, realm, lab):
    log = kup_guard.log
    before = len(re.findall(r'obtained a delegation token.*"user":"bob"', log.read_text()))
    for _ in range(3):
        bob, t = client(kup_guard, realm, lab, "bob")
        bob.get_all_databases()
        t.close()
    after = len(re.findall(r'obtained a delegation token.*"user":"bob"', log.read_text()))
    assert after - before == 1, (before, after)


def test_when_a_callers_token_time_is_up_it_is_renewed_or_replaced(kup_guard, realm, lab,
                                                                    krb_metastore):
    """Past token_refresh_ms hms-guard asks the metastore to renew the caller's token (it is
    the renewer). Hive 2.3 compares the renewer's short name with the caller's full principal
    and refuses ("non-matching renewer"): then a new token is obtained. Either way the caller's
    next connection works and still runs as the caller."""
    bob, t = client(kup_guard, realm, lab, "bob")
    bob.get_all_databases()
    t.close()
    obtained = r'obtained a delegation token.*"user":"bob"'
    tried = r'(renewed the caller.s delegation token|could not be renewed).*"user":"bob"'
    text = kup_guard.log.read_text()
    n_obtained, n_tried = len(re.findall(obtained, text)), len(re.findall(tried, text))
    time.sleep(6)  # past token_refresh_ms
    bob, t = client(kup_guard, realm, lab, "bob")
    assert "default" in bob.get_all_databases()
    t.close()
    text = kup_guard.log.read_text()
    assert len(re.findall(tried, text)) == n_tried + 1, "no renewal tried"
    renewed = re.search(r'renewed the caller.s delegation token.*"user":"bob"', text)
    assert len(re.findall(obtained, text)) == n_obtained + (0 if renewed else 1)
    assert [ln for ln in krb_metastore.log.read_text(errors="replace").splitlines()
            if "audit: ugi=hms-guard" in ln and "renew_delegation_token" in ln]
    assert len(audited(krb_metastore, "bob", "get_all_databases")) >= 2


def test_a_token_lost_by_a_metastore_restart_is_replaced_at_once(kup_guard, realm, lab,
                                                                 krb_metastore):
    """The metastore keeps tokens in memory: after its restart hms-guard's kept token for a
    caller is refused; the caller's next connection gets a new token, and no error."""
    alice, t = client(kup_guard, realm, lab, "alice")
    alice.get_table(DB, "open")
    t.close()
    tokens = r'obtained a delegation token.*"user":"alice"'
    before = len(re.findall(tokens, kup_guard.log.read_text()))
    krb_metastore.stop()
    krb_metastore.start(txn_tables=False)
    alice, t = client(kup_guard, realm, lab, "alice")
    assert alice.get_table(DB, "open").tableName == "open"
    t.close()
    assert len(re.findall(tokens, kup_guard.log.read_text())) == before + 1


def test_hms_guards_own_ticket_is_renewed_from_its_keytab(kup_guard, realm, lab, krb_metastore):
    """hms-guard's tickets live 20 s; past that, a caller it has no token for yet (a new
    lookup connection as hms-guard, then the token) still works."""
    carol, t = client(kup_guard, realm, lab, "carol")
    carol.get_all_databases()
    t.close()
    time.sleep(25)
    # A new caller needs a new token: asked for on a connection as hms-guard.
    kup_guard_user = "admin"
    admin, at = client(kup_guard, realm, lab, kup_guard_user)
    assert DB in admin.get_all_databases()
    at.close()
    kdc_log = realm["kdc"].log.read_text()
    grants = [ln for ln in kdc_log.splitlines()
              if "AS_REQ" in ln and "hms-guard/localhost" in ln and "ISSUE" in ln]
    assert len(grants) >= 2, "hms-guard asked the KDC once only: no renewal seen"


def test_a_metastore_that_refuses_the_impersonation_is_named(lab, realm, krb_metastore):
    k = realm["kdc"]
    g = hms.Guard(lab, krb_metastore.port, name="guard-kerberos-intruder",
                  env={"KRB5RCACHEDIR": str(realm["dir"])},
                  extra=guard_config(k, realm["service_kt"], "intruder/localhost",
                                     realm["intruder_kt"]))
    g.start()
    try:
        alice, t = client(g, realm, lab, "alice")
        with pytest.raises(TApplicationException) as e:
            alice.get_table(DB, "open")
        msg = str(e.value)
        assert "no delegation token for alice" in msg, msg
        assert "proxy user" in msg, msg
        t.close()
    finally:
        g.stop()


def test_kerberos_to_a_metastore_behind_tls(lab, realm, krb_metastore):
    """[upstream.tls] and [upstream.kerberos] together: SASL inside TLS towards the metastore
    (a TLS-terminating relay in front of the kerberized metastore, as a load balancer would
    be)."""
    import asyncio
    import ssl
    import threading
    from certs import make_certs
    d = make_certs(lab / "kup-tls", users=())
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(d / "server.pem", d / "server.key")
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    relayed = {"connections": 0}

    async def pipe(r, w):
        try:
            while data := await r.read(65536):
                w.write(data)
                await w.drain()
        finally:
            w.close()

    async def handle(cr, cw):
        relayed["connections"] += 1
        ur, uw = await asyncio.open_connection("127.0.0.1", krb_metastore.port)
        await asyncio.gather(pipe(cr, uw), pipe(ur, cw), return_exceptions=True)

    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ctx)
        relayed["port"] = server.sockets[0].getsockname()[1]
        relayed["server"] = server
        ready.set()

    def run():
        loop.create_task(main())
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(10)
    k = realm["kdc"]
    g = hms.Guard(lab, [f"thrift://localhost:{relayed['port']}"], name="guard-kerberos-tls-up",
                  env={"KRB5RCACHEDIR": str(realm["dir"])},
                  extra=guard_config(k, realm["service_kt"], GUARD, realm["guard_kt"])
                  + f'\n[upstream.tls]\nca = "{d}/ca.pem"\n')
    g.start()
    try:
        before = len(audited(krb_metastore, "alice", "get_all_databases"))
        alice, t = client(g, realm, lab, "alice")
        assert "default" in alice.get_all_databases()
        t.close()
        assert relayed["connections"] >= 2, relayed  # lookups and tokens as hms-guard, alice
        assert len(audited(krb_metastore, "alice", "get_all_databases")) == before + 1
    finally:
        g.stop()
        loop.call_soon_threadsafe(relayed["server"].close)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
