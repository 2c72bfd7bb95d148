"""TLS towards clients, end to end: hms-guard with [server.tls] (certificate, key, client CA) and
identity.mode = "certificate" in front of the real metastore; Python thrift's TLS socket
(TSSLSocket) with and without a client certificate. Certificates are made with the
openssl command line (tests/lab/certs.py: a CA, the listener's certificate, one per user)."""
import pytest
from hmsclient.genthrift.hive_metastore import ThriftHiveMetastore as T
from hmsclient.genthrift.hive_metastore import ttypes as tt
from thrift.protocol import TBinaryProtocol
from thrift.transport import TSocket, TSSLSocket, TTransport

import hms
from certs import make_certs

DB = "tls_db"


@pytest.fixture(scope="module")
def tls_guard(lab, metastore):
    d = lab / "tls"
    make_certs(d)
    g = hms.Guard(lab, metastore.port, name="guard-tls", extra=(
        '[authz]\nmode = "enforce"\n\n'
        '[storage]\nenabled = false\n\n'
        f'[server.tls]\ncert = "{d}/server.pem"\nkey = "{d}/server.key"\n'
        f'client_ca = "{d}/ca.pem"\n\n'
        '[identity]\nmode = "certificate"\n'))
    g.start()
    yield g, d
    g.stop()


def tls_client(port, d, user=None):
    """A client over TLS, presenting USER's certificate if given."""
    kwargs = {"ca_certs": str(d / "ca.pem")}
    if user:
        kwargs.update(certfile=str(d / f"{user}.pem"), keyfile=str(d / f"{user}.key"))
    sock = TSSLSocket.TSSLSocket("localhost", port, **kwargs)
    sock.setTimeout(20_000)
    t = TTransport.TBufferedTransport(sock)
    t.open()
    return T.Client(TBinaryProtocol.TBinaryProtocol(t)), t


def table(lab, name):
    return hms.external_table(DB, name, f"file://{lab}/{DB}.db/{name}")


def test_the_certificate_names_the_user_and_set_ugi_cannot_change_it(tls_guard, lab, metastore):
    g, d = tls_guard
    admin, at = tls_client(g.port, d, "admin")
    admin.set_ugi("admin", [])
    admin.create_database(tt.Database(name=DB, locationUri=f"file://{lab}/{DB}.db",
                                      parameters={}))
    for name in ("open", "closed"):
        admin.create_table(table(lab, name))
    obj = tt.HiveObjectRef(tt.HiveObjectType.TABLE, DB, "open", None, None)
    hms.grant(admin, obj, "mary", "SELECT")
    mary, mt = tls_client(g.port, d, "mary")
    mary.set_ugi("admin", [])  # a claim the certificate overrules
    assert mary.get_table(DB, "open").tableName == "open"
    with pytest.raises(tt.MetaException) as e:
        mary.get_table(DB, "closed")
    assert "user mary" in e.value.message and f"{DB}.closed" in e.value.message, e.value.message
    with pytest.raises(tt.MetaException):
        mary.drop_table(DB, "open", False)
    with hms.hms_client(metastore.port) as direct:
        assert sorted(direct.get_all_tables(DB)) == ["closed", "open"], "nothing dropped"
    for name in ("open", "closed"):
        admin.drop_table(DB, name, False)
    admin.drop_database(DB, False, False)
    at.close()
    mt.close()


def test_clients_without_a_certificate_or_without_tls_are_refused(tls_guard):
    g, d = tls_guard
    before = sum(v for _, v in hms.metric_series(g.metrics(), "hms_guard_tls_handshakes_total",
                                                  outcome="error"))
    with pytest.raises(Exception):
        c, t = tls_client(g.port, d)  # trusts the server, presents nothing
        c.get_all_databases()
    with pytest.raises(Exception):
        sock = TSocket.TSocket("127.0.0.1", g.port)
        sock.setTimeout(10_000)
        t = TTransport.TBufferedTransport(sock)
        t.open()
        plain = T.Client(TBinaryProtocol.TBinaryProtocol(t))
        plain.set_ugi("admin", [])
        plain.get_all_databases()
    after = sum(v for _, v in hms.metric_series(g.metrics(), "hms_guard_tls_handshakes_total",
                                                 outcome="error"))
    assert after >= before + 2, (before, after)
    log = g.log.read_text()
    assert "TLS handshake refused" in log


def test_the_sql_shell_identifies_with_a_client_certificate(tls_guard):
    """`hms-guard sql` with a client certificate: the certificate names the user, whatever
    --user says; admin's statements run, mary's are refused in her name."""
    import subprocess
    g, d = tls_guard

    def sql(user, statements, claimed=None):
        args = [hms.guard_bin(), "sql", "--uri", f"thrift://localhost:{g.port}",
                "--tls-ca", str(d / "ca.pem"), "--tls-cert", str(d / f"{user}.pem"),
                "--tls-key", str(d / f"{user}.key"), "-e", statements]
        if claimed:
            args += ["--user", claimed]
        return subprocess.run(args, capture_output=True, text=True, timeout=60)

    r = sql("admin", "CREATE ROLE tls_sql_role; SHOW ROLES")
    assert r.returncode == 0, r.stderr
    assert "tls_sql_role" in r.stdout.split()
    r = sql("mary", "DROP ROLE tls_sql_role", claimed="admin")
    assert r.returncode == 1
    assert "permission denied" in r.stderr and "mary" in r.stderr, r.stderr
    r = sql("admin", "DROP ROLE tls_sql_role; SHOW ROLES")
    assert r.returncode == 0 and "tls_sql_role" not in r.stdout.split(), r.stderr
    # Without a certificate the listener refuses the shell as any client.
    r = subprocess.run([hms.guard_bin(), "sql", "--uri", f"thrift://localhost:{g.port}",
                        "--tls-ca", str(d / "ca.pem"), "--user", "admin", "-e", "SHOW ROLES"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0, r.stdout
