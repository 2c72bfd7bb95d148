"""A real OpenLDAP server for the group-source tests: Debian's `slapd` (installed by
tests/lab/setup.sh), started from a slapd.conf written into the lab directory (core, cosine,
inetorgperson and nis schemas; back_mdb; one suffix), listening on loopback ports — plain LDAP
(StartTLS offered when certificates are given) and LDAPS — and seeded with `ldapadd`.

    d = Directory(lab / "ldap", certs=certs_dir)   # certs: ca.pem, server.pem, server.key
    d.start(); d.add(ldif); d.modify(ldif); d.stop(); d.start()   # same data again
"""
import shutil
import subprocess
import time
from pathlib import Path

import hms

SUFFIX = "dc=example,dc=org"
ROOT_DN = f"cn=admin,{SUFFIX}"
ROOT_PW = "lab-secret"
SLAPD = "/usr/sbin/slapd"
SCHEMAS = ("core", "cosine", "inetorgperson", "nis")


def tool(name):
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} not found: run tests/lab/setup.sh (it installs ldap-utils)")
    return found


class Directory:
    def __init__(self, d, certs=None):
        self.dir = Path(d)
        self.certs = Path(certs) if certs else None
        self.port = hms.free_port()
        self.tls_port = hms.free_port()
        self.proc = None
        self.log = self.dir / "slapd.log"

    @property
    def url(self):
        return f"ldap://127.0.0.1:{self.port}"

    @property
    def ldaps_url(self):
        return f"ldaps://localhost:{self.tls_port}"

    def config_text(self):
        lines = [f"include /etc/ldap/schema/{s}.schema" for s in SCHEMAS]
        lines += [f"pidfile {self.dir}/slapd.pid", f"argsfile {self.dir}/slapd.args",
                  "modulepath /usr/lib/ldap", "moduleload back_mdb"]
        if self.certs:
            lines += [f"TLSCACertificateFile {self.certs}/ca.pem",
                      f"TLSCertificateFile {self.certs}/server.pem",
                      f"TLSCertificateKeyFile {self.certs}/server.key",
                      # A client certificate is asked for (not required): SASL EXTERNAL.
                      "TLSVerifyClient try"]
        lines += ["database mdb", "maxsize 67108864", f'suffix "{SUFFIX}"',
                  f'rootdn "{ROOT_DN}"', f"rootpw {ROOT_PW}", f"directory {self.dir}/data",
                  "index objectClass eq", "index uid,memberUid,member eq",
                  # Anyone may read (the proxy binds anonymously or as the root DN).
                  "access to * by * read"]
        return "\n".join(lines) + "\n"

    def start(self, timeout=30):
        if not Path(SLAPD).exists():
            raise RuntimeError(f"{SLAPD} not found: run tests/lab/setup.sh (it installs slapd)")
        (self.dir / "data").mkdir(parents=True, exist_ok=True)
        conf = self.dir / "slapd.conf"
        conf.write_text(self.config_text())
        urls = self.url + "/" + (f" ldaps://127.0.0.1:{self.tls_port}/" if self.certs else "")
        # -d 0: stay in the foreground (the lab owns the process group), log nothing extra.
        self.proc = hms.spawn([SLAPD, "-d", "0", "-f", str(conf), "-h", urls], self.log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"slapd exited with {self.proc.returncode}:\n"
                                   f"{hms.tail(self.log)}")
            r = subprocess.run([tool("ldapsearch"), "-x", "-H", self.url, "-b", SUFFIX,
                                "-s", "base", "-LLL", "dn"], capture_output=True, text=True)
            if r.returncode in (0, 32):  # found, or the suffix entry not added yet
                if r.returncode == 32:
                    self.add(f"dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\n"
                             "dc: example\no: example\n")
                return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"slapd did not answer in {timeout}s:\n{hms.tail(self.log)}")

    def stop(self):
        hms.kill_group(self.proc, grace=10)
        self.proc = None

    def _tool(self, name, ldif, *args):
        r = subprocess.run([tool(name), "-x", "-H", self.url, "-D", ROOT_DN, "-w", ROOT_PW,
                            *args], input=ldif, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"{name} failed ({r.returncode}): {r.stderr}\n{ldif}")

    def add(self, ldif):
        self._tool("ldapadd", ldif)

    def modify(self, ldif):
        self._tool("ldapmodify", ldif)


def people_and_groups(users, groups, teams=None):
    """LDIF: ou=people (posixAccount users), ou=groups (posixGroup, memberUid) and ou=teams
    (groupOfNames, `member` DNs: users as `user:NAME`, teams as `team:NAME`)."""
    out = [f"dn: ou=people,{SUFFIX}\nobjectClass: organizationalUnit\nou: people\n",
           f"dn: ou=groups,{SUFFIX}\nobjectClass: organizationalUnit\nou: groups\n",
           f"dn: ou=teams,{SUFFIX}\nobjectClass: organizationalUnit\nou: teams\n"]
    for i, u in enumerate(users):
        out.append(f"dn: uid={u},ou=people,{SUFFIX}\nobjectClass: inetOrgPerson\n"
                   f"objectClass: posixAccount\nuid: {u}\ncn: {u}\nsn: {u}\n"
                   f"uidNumber: {20000 + i}\ngidNumber: 20000\nhomeDirectory: /nonexistent\n")
    for i, (g, members) in enumerate(groups.items()):
        out.append(f"dn: cn={g},ou=groups,{SUFFIX}\nobjectClass: posixGroup\ncn: {g}\n"
                   f"gidNumber: {30000 + i}\n" + "".join(f"memberUid: {m}\n" for m in members))
    for t, members in (teams or {}).items():
        dns = [f"uid={m[5:]},ou=people,{SUFFIX}" if m.startswith("user:")
               else f"cn={m[5:]},ou=teams,{SUFFIX}" for m in members]
        out.append(f"dn: cn={t},ou=teams,{SUFFIX}\nobjectClass: groupOfNames\ncn: {t}\n"
                   + "".join(f"member: {d}\n" for d in dns))
    return "\n".join(out)
