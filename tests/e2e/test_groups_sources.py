"""Groups from where they live (docs/IDENTITY.md, "Groups"): a real OpenLDAP `slapd`
(tests/lab/ldap.py), the operating system's group database (users and groups made with
groupadd/useradd for the test) and a groups file, in front of the real metastore. A GRANT to
a GROUP principal reaches the members the source names, and only them; a removal reaches a
long-lived connection within the TTL; a directory that stops answering denies (or, with
`last_known`, keeps the last answer and nothing more); TLS to the directory is checked
against the configured CA."""
import os
import subprocess
import time
import uuid

import pytest
from hmsclient.genthrift.hive_metastore import ttypes as tt
from thrift.Thrift import TApplicationException

import certs
import hms
import ldap
from hms import connect

DB = "groups_src_db"
TTL_MS = 1500
denied = hms.denied

USERS = ["alice", "bob", "carol", "erin", "frank"]
GROUPS = {"analysts": ["alice", "erin"], "finance": ["bob"]}
# carol is in eng, eng is in platform: carol reaches platform through nesting.
TEAMS = {"eng": ["user:carol"], "platform": ["team:eng"]}


def table_ref(name):
    return tt.HiveObjectRef(tt.HiveObjectType.TABLE, DB, name, None, None)


def grant_group(client, table, group, priv="SELECT"):
    assert client.grant_privileges(tt.PrivilegeBag([tt.HiveObjectPrivilege(
        table_ref(table), group, tt.PrincipalType.GROUP,
        tt.PrivilegeGrantInfo(priv, 0, "admin", tt.PrincipalType.USER, False))]))


@pytest.fixture(scope="module")
def tls_dir(lab):
    return certs.make_certs(lab / "ldap-certs", users=("ldapclient",))


@pytest.fixture(scope="module")
def directory(lab, tls_dir):
    d = ldap.Directory(lab / "ldap", certs=tls_dir)
    d.start()
    d.add(ldap.people_and_groups(USERS, GROUPS, TEAMS))
    yield d
    d.stop()


def groups_config(sources, sections, on_error="deny", extra=""):
    return ('[authz]\nmode = "enforce"\ncache_ttl_ms = 60000\n\n'
            '[storage]\nenabled = false  # groups only here\n\n'
            f'[identity.groups]\nsources = {sources}\nttl_ms = {TTL_MS}\n'
            f'negative_ttl_ms = 500\ntimeout_ms = 3000\non_error = "{on_error}"\n{extra}\n'
            + sections)


def ldap_section(url, **kv):
    lines = [f'url = "{url}"', f'base = "{ldap.SUFFIX}"']
    for k, v in kv.items():
        lines.append(f"{k} = {v}" if isinstance(v, (int, bool)) and not isinstance(v, str)
                     else f'{k} = "{v}"')
    return "[identity.groups.ldap]\n" + "\n".join(lines).replace("= True", "= true") + "\n"


def start_guard(lab, metastore, name, extra):
    g = hms.Guard(lab, metastore.port, name=name, extra=extra)
    g.start()
    return g


@pytest.fixture(scope="module")
def guard(lab, metastore, directory):
    """posixGroup/memberUid over plain LDAP, bound as the directory's root DN (password
    file); the tables and their GROUP grants made through hms-guard as the admin."""
    pw = lab / "ldap-password"
    pw.write_text(ldap.ROOT_PW + "\n")
    g = start_guard(lab, metastore, "guard-groups-ldap", groups_config(
        '["ldap"]', ldap_section(directory.url, bind_dn=ldap.ROOT_DN,
                                 bind_password_file=str(pw))))
    admin = connect(g.port, "admin")
    admin.create_database(tt.Database(name=DB, locationUri=f"file://{lab}/{DB}.db",
                                      parameters={}))
    for t in ("analysts_t", "finance_t", "platform_t", "os_t", "file_t"):
        admin.create_table(hms.external_table(DB, t, f"file://{lab}/{DB}.db/{t}"))
    grant_group(admin, "analysts_t", "analysts")
    grant_group(admin, "finance_t", "finance")
    grant_group(admin, "platform_t", "platform")
    yield g
    g.stop()


def lookups(g, source, outcome):
    return sum(v for _, v in hms.metric_series(g.metrics(), "hms_guard_group_lookups_total",
                                               source=source, outcome=outcome))


def test_an_ldap_group_grant_reaches_its_members_only(guard):
    alice = connect(guard.port, "alice")
    assert alice.get_table(DB, "analysts_t").tableName == "analysts_t"
    denied(lambda: alice.get_table(DB, "finance_t"), "alice", "SELECT")
    bob = connect(guard.port, "bob")
    assert bob.get_table(DB, "finance_t").tableName == "finance_t"
    denied(lambda: bob.get_table(DB, "analysts_t"), "bob", "SELECT")
    # A user the directory does not know has no groups (and no failure).
    nobody = connect(guard.port, "nobody")
    denied(lambda: nobody.get_table(DB, "analysts_t"), "nobody")
    assert lookups(guard, "ldap", "found") >= 2
    assert lookups(guard, "ldap", "unknown") >= 1
    assert lookups(guard, "cache", "hit") >= 1


def test_a_user_name_cannot_inject_into_the_ldap_filter(guard):
    """`*` would match every memberUid if it reached the filter unescaped."""
    for name in ("*", "alice)(uid=*", "a*"):
        c = connect(guard.port, name)
        denied(lambda: c.get_table(DB, "analysts_t"))


def test_a_removal_reaches_a_long_lived_connection_within_the_ttl(guard, directory):
    erin = connect(guard.port, "erin")
    assert erin.get_table(DB, "analysts_t").tableName == "analysts_t"
    directory.modify(f"dn: cn=analysts,ou=groups,{ldap.SUFFIX}\nchangetype: modify\n"
                     "delete: memberUid\nmemberUid: erin\n")
    time.sleep(TTL_MS / 1000 + 0.5)
    denied(lambda: erin.get_table(DB, "analysts_t"), "erin", "SELECT")
    # And back: an addition is seen the same way.
    directory.modify(f"dn: cn=analysts,ou=groups,{ldap.SUFFIX}\nchangetype: modify\n"
                     "add: memberUid\nmemberUid: erin\n")
    time.sleep(TTL_MS / 1000 + 0.5)
    assert erin.get_table(DB, "analysts_t").tableName == "analysts_t"


def test_nested_groups_by_dn(lab, metastore, guard, directory):
    g = start_guard(lab, metastore, "guard-groups-nested", groups_config('["ldap"]', ldap_section(
        directory.url, group_filter="(objectClass=groupOfNames)", member_attribute="member",
        member_value="dn", nested_depth=2)))
    try:
        carol = connect(g.port, "carol")
        assert carol.get_table(DB, "platform_t").tableName == "platform_t"
        alice = connect(g.port, "alice")
        denied(lambda: alice.get_table(DB, "platform_t"), "alice")
    finally:
        g.stop()
    # One level only: carol is in eng, not (directly) in platform.
    g = start_guard(lab, metastore, "guard-groups-flat", groups_config('["ldap"]', ldap_section(
        directory.url, group_filter="(objectClass=groupOfNames)", member_attribute="member",
        member_value="dn")))
    try:
        carol = connect(g.port, "carol")
        denied(lambda: carol.get_table(DB, "platform_t"), "carol")
    finally:
        g.stop()


def test_ldaps_and_starttls_check_the_ca(lab, metastore, guard, directory, tls_dir):
    other = certs.make_certs(lab / "other-ca", users=())
    for name, url, kv in (("ldaps", f"ldaps://127.0.0.1:{directory.tls_port}", {}),
                          ("starttls", directory.url, {"start_tls": True})):
        g = start_guard(lab, metastore, f"guard-groups-{name}", groups_config(
            '["ldap"]', ldap_section(url, ca=str(tls_dir / "ca.pem"), **kv)))
        try:
            alice = connect(g.port, "alice")
            assert alice.get_table(DB, "analysts_t").tableName == "analysts_t"
        finally:
            g.stop()
        g = start_guard(lab, metastore, f"guard-groups-{name}-wrong-ca", groups_config(
            '["ldap"]', ldap_section(url, ca=str(other / "ca.pem"), **kv)))
        try:
            alice = connect(g.port, "alice")
            with pytest.raises(TApplicationException) as e:
                alice.get_table(DB, "analysts_t")
            msg = str(e.value.message)
            assert "groups of user alice could not be read from the ldap source" in msg, msg
        finally:
            g.stop()


def test_sasl_external_with_a_client_certificate(lab, metastore, guard, directory, tls_dir):
    """The TLS client certificate is the bind identity (no password anywhere)."""
    g = start_guard(lab, metastore, "guard-groups-external", groups_config(
        '["ldap"]', ldap_section(directory.url, start_tls=True, ca=str(tls_dir / "ca.pem"),
                                 client_cert=str(tls_dir / "ldapclient.pem"),
                                 client_key=str(tls_dir / "ldapclient.key"),
                                 sasl_external=True)))
    try:
        alice = connect(g.port, "alice")
        assert alice.get_table(DB, "analysts_t").tableName == "analysts_t"
        assert lookups(g, "ldap", "found") >= 1
    finally:
        g.stop()


def test_a_stopped_directory_denies_or_keeps_the_last_answer(lab, metastore, guard, directory):
    deny = start_guard(lab, metastore, "guard-groups-deny",
                       groups_config('["ldap"]', ldap_section(directory.url)))
    last = start_guard(lab, metastore, "guard-groups-last", groups_config(
        '["ldap"]', ldap_section(directory.url), on_error="last_known",
        extra="last_known_max_age_ms = 60000\n"))
    try:
        on_deny, on_last = connect(deny.port, "alice"), connect(last.port, "alice")
        bob_last = connect(last.port, "bob")
        for c in (on_deny, on_last):
            assert c.get_table(DB, "analysts_t").tableName == "analysts_t"
        denied(lambda: bob_last.get_table(DB, "analysts_t"), "bob")
        directory.stop()
        time.sleep(TTL_MS / 1000 + 0.5)
        with pytest.raises(TApplicationException) as e:
            on_deny.get_table(DB, "analysts_t")
        msg = str(e.value.message)
        assert "groups of user alice could not be read from the ldap source" in msg, msg
        # The refusal is per call: the connection stays usable once the directory is back.
        # last_known: the last answer, and nothing more.
        assert on_last.get_table(DB, "analysts_t").tableName == "analysts_t"
        denied(lambda: on_last.get_table(DB, "finance_t"), "alice")
        denied(lambda: bob_last.get_table(DB, "analysts_t"), "bob")
        # A user never read before has no last answer: refused.
        frank = connect(last.port, "frank")
        with pytest.raises(TApplicationException) as e:
            frank.get_table(DB, "analysts_t")
        assert "groups of user frank could not be read" in str(e.value.message)
        failures = sum(v for _, v in hms.metric_series(
            deny.metrics(), "hms_guard_group_lookup_failures_total", source="ldap"))
        assert failures >= 1
        directory.start()
        time.sleep(0.2)
        assert on_deny.get_table(DB, "analysts_t").tableName == "analysts_t"
    finally:
        if directory.proc is None:
            directory.start()
        deny.stop()
        last.stop()


@pytest.fixture
def os_users():
    """Two real OS users and one group (groupadd/useradd -M), removed afterwards."""
    tag = uuid.uuid4().hex[:8]
    group, member, outsider = f"hmsg{tag}", f"hmsgu{tag}", f"hmsgo{tag}"
    subprocess.run(["groupadd", group], check=True)
    made = []
    try:
        subprocess.run(["useradd", "-M", "-N", "-G", group, member], check=True)
        made.append(member)
        subprocess.run(["useradd", "-M", "-N", outsider], check=True)
        made.append(outsider)
        yield group, member, outsider
    finally:
        for u in made:
            subprocess.run(["userdel", u], check=False)
        subprocess.run(["groupdel", group], check=False)


def test_the_os_group_database(lab, metastore, guard, os_users):
    group, member, outsider = os_users
    admin = connect(guard.port, "admin")
    grant_group(admin, "os_t", group)
    g = start_guard(lab, metastore, "guard-groups-os",
                    groups_config('["os"]', "[identity.groups.os]\n"))
    try:
        m = connect(g.port, member)
        assert m.get_table(DB, "os_t").tableName == "os_t"
        o = connect(g.port, outsider)
        denied(lambda: o.get_table(DB, "os_t"), outsider)
        # Removed from the group in the system: seen after the TTL, same connection.
        subprocess.run(["gpasswd", "-d", member, group], check=True, capture_output=True)
        time.sleep(TTL_MS / 1000 + 0.5)
        denied(lambda: m.get_table(DB, "os_t"), member)
    finally:
        g.stop()


def test_the_groups_file_is_reloaded(lab, metastore, guard, directory):
    admin = connect(guard.port, "admin")
    grant_group(admin, "file_t", "filers")
    path = lab / "groups-file"
    path.write_text("# group:users\nfilers: gina, hal\nothers:ivan\n")
    g = start_guard(lab, metastore, "guard-groups-file", groups_config(
        '["file", "ldap"]', f'[identity.groups.file]\npath = "{path}"\n'
        + ldap_section(directory.url)))
    try:
        gina, ivan = connect(g.port, "gina"), connect(g.port, "ivan")
        assert gina.get_table(DB, "file_t").tableName == "file_t"
        denied(lambda: ivan.get_table(DB, "file_t"), "ivan")
        # Sources are united: alice's LDAP group still counts next to the file.
        alice = connect(g.port, "alice")
        assert alice.get_table(DB, "analysts_t").tableName == "analysts_t"
        path.write_text("filers: hal, ivan\n")
        os.utime(path)
        time.sleep(TTL_MS / 1000 + 0.5)
        denied(lambda: gina.get_table(DB, "file_t"), "gina")
        assert ivan.get_table(DB, "file_t").tableName == "file_t"
    finally:
        g.stop()


def test_explain_reads_groups_from_the_sources(guard):
    def explain(user):
        r = subprocess.run([hms.guard_bin(), "explain", "--config", str(guard.config),
                            "--user", user, "--method", "get_table", "--db", DB,
                            "--table", "analysts_t"], capture_output=True, text=True)
        return r.returncode, r.stdout + r.stderr
    rc, out = explain("alice")
    assert rc == 0 and "analysts" in out, out
    rc, out = explain("bob")
    assert rc == 1, out


def test_access_review_reads_groups_from_ldap(guard):
    """`hms-guard access`: the holders of a table name the LDAP group; a user's review gives
    the table through the group the directory names (and nothing to a non-member)."""
    def access(*args):
        r = subprocess.run([hms.guard_bin(), "access", "--config", str(guard.config), *args],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        return r.stdout
    holders = access("--table", f"{DB}.analysts_t")
    assert any(l.split()[:3] == ["group:analysts", "SELECT", "grant"]
               for l in holders.splitlines()), holders
    alice = access("--user", "alice", "--db", DB)
    assert "analysts" in alice.split("\n", 2)[1], alice  # groups: from the directory
    rows = [l.split() for l in alice.splitlines() if l.startswith(f"{DB}.")]
    assert [r[:2] for r in rows] == [[f"{DB}.analysts_t", "SELECT"]], alice
    assert "group:analysts" in alice or "analysts" in rows[0][-1], alice
    bob = access("--user", "bob", "--db", DB)
    assert [l.split()[:2] for l in bob.splitlines() if l.startswith(f"{DB}.")] == \
        [[f"{DB}.finance_t", "SELECT"]], bob


def tls_client(port, d, user):
    """A client over TLS presenting USER's certificate (signed by DIR's CA)."""
    from hmsclient.genthrift.hive_metastore import ThriftHiveMetastore as T
    from thrift.protocol import TBinaryProtocol
    from thrift.transport import TSSLSocket, TTransport
    sock = TSSLSocket.TSSLSocket("localhost", port, ca_certs=str(d / "ca.pem"),
                                 certfile=str(d / f"{user}.pem"), keyfile=str(d / f"{user}.key"))
    sock.setTimeout(20_000)
    t = TTransport.TBufferedTransport(sock)
    t.open()
    return T.Client(TBinaryProtocol.TBinaryProtocol(t))


def test_a_certificate_user_gets_its_groups_from_ldap(lab, metastore, guard, directory):
    """identity.mode = "certificate": the verified user's groups come from the directory too
    (not from set_ugi, which cannot change them)."""
    d = certs.make_certs(lab / "groups-client-certs", users=("alice", "bob"))
    g = start_guard(lab, metastore, "guard-groups-cert", (
        '[identity]\nmode = "certificate"\n\n'
        f'[server.tls]\ncert = "{d}/server.pem"\nkey = "{d}/server.key"\n'
        f'client_ca = "{d}/ca.pem"\n\n'
        + groups_config('["ldap"]', ldap_section(directory.url))))
    try:
        alice = tls_client(g.port, d, "alice")
        assert alice.get_table(DB, "analysts_t").tableName == "analysts_t"
        bob = tls_client(g.port, d, "bob")
        bob.set_ugi("bob", ["analysts"])  # a claimed group counts for nothing
        denied(lambda: bob.get_table(DB, "analysts_t"), "bob", "SELECT")
    finally:
        g.stop()
