"""A real MIT KDC (Debian's krb5-kdc) on loopback for the Kerberos tests.

`Kdc(dir).start()` makes a realm in DIR (configuration, database, stash: all files of the
test's own; nothing of the machine's /etc is used), starts `krb5kdc` on a free port, and offers
`add(principal)`, `keytab(path, *principals)`, `kinit(principal, keytab, ccache)` and `env(...)`
(the environment a Kerberos client needs: KRB5_CONFIG and a credential cache). Clients must ask
for `hive/localhost` (the host name is not canonicalised)."""
import os
import shutil
import subprocess
import time
from pathlib import Path

from hms import free_port, spawn, tail

REALM = "HMSGUARD.TEST"
TOOLS = ("krb5kdc", "kdb5_util", "kadmin.local", "kinit", "klist", "kdestroy")


def find(tool):
    for d in (os.environ.get("PATH", "").split(os.pathsep) + ["/usr/sbin", "/sbin"]):
        p = Path(d) / tool
        if p.is_file() and os.access(p, os.X_OK):
            return str(p)
    raise RuntimeError(f"{tool} not found: the Kerberos tests need Debian's krb5-kdc, "
                       "krb5-admin-server and krb5-user (tests/lab/setup.sh installs them)")


class Kdc:
    def __init__(self, directory, realm=REALM, max_life="10h"):
        self.dir = Path(directory)
        self.realm = realm
        self.port = free_port()
        self.max_life = max_life
        self.proc = None
        self.conf = self.dir / "krb5.conf"
        self.kdc_conf = self.dir / "kdc.conf"
        self.log = self.dir / "kdc.log"

    def base_env(self):
        env = dict(os.environ)
        env["KRB5_CONFIG"] = str(self.conf)
        env["KRB5_KDC_PROFILE"] = str(self.kdc_conf)
        env["KRB5RCACHEDIR"] = str(self.dir)
        env.pop("KRB5CCNAME", None)
        env.pop("KRB5_KTNAME", None)
        env.pop("KRB5_CLIENT_KTNAME", None)
        return env

    def run(self, *args, check=True):
        r = subprocess.run([find(args[0]), *args[1:]], env=self.base_env(),
                           capture_output=True, text=True, timeout=60)
        if check and r.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed ({r.returncode}): {r.stdout}{r.stderr}")
        return r

    def start(self, daemon=False):
        """Makes the realm and starts the KDC; `daemon`: it outlives this process (the caller
        stops it by its pid, `self.proc.pid`)."""
        for t in TOOLS:
            find(t)
        if self.dir.exists():
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True)
        self.conf.write_text(
            "[libdefaults]\n"
            f" default_realm = {self.realm}\n"
            " dns_canonicalize_hostname = false\n"
            " rdns = false\n"
            " dns_lookup_kdc = false\n"
            " dns_lookup_realm = false\n"
            " udp_preference_limit = 1\n"
            " forwardable = false\n"
            "[realms]\n"
            f" {self.realm} = {{\n  kdc = 127.0.0.1:{self.port}\n }}\n"
            "[domain_realm]\n"
            f" localhost = {self.realm}\n")
        self.kdc_conf.write_text(
            "[kdcdefaults]\n"
            f" kdc_ports = {self.port}\n"
            f" kdc_tcp_ports = {self.port}\n"
            "[realms]\n"
            f" {self.realm} = {{\n"
            f"  database_name = {self.dir}/principal\n"
            f"  key_stash_file = {self.dir}/stash\n"
            f"  acl_file = {self.dir}/kadm5.acl\n"
            f"  max_life = {self.max_life}\n"
            "  supported_enctypes = aes256-cts-hmac-sha1-96:normal aes128-cts-hmac-sha1-96:normal\n"
            " }\n"
            "[logging]\n"
            f" kdc = FILE:{self.log}\n")
        (self.dir / "kadm5.acl").write_text("")
        self.run("kdb5_util", "create", "-s", "-r", self.realm, "-P", "hms-guard-master")
        out = self.dir / "krb5kdc.out"
        self.proc = spawn([find("krb5kdc"), "-n", "-r", self.realm], out, out,
                          cwd=self.dir, env=self.base_env(), daemon=daemon)
        deadline = time.monotonic() + 20
        import socket
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"krb5kdc exited with {self.proc.returncode}:\n"
                                   f"{tail(out, self.log)}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"krb5kdc did not listen on {self.port}:\n{tail(out, self.log)}")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def principal(self, name):
        return name if "@" in name else f"{name}@{self.realm}"

    def add(self, *names):
        for n in names:
            self.run("kadmin.local", "-q", f"addprinc -randkey {self.principal(n)}")

    def keytab(self, path, *names):
        """Writes the keys of NAMES into the keytab PATH (each export makes a new key version)."""
        for n in names:
            self.run("kadmin.local", "-q", f"ktadd -k {path} {self.principal(n)}")
        return Path(path)

    def kinit(self, name, keytab, ccache, lifetime=None):
        args = ["kinit", "-kt", str(keytab)]
        if lifetime:
            args += ["-l", lifetime]
        env = self.client_env(ccache)
        r = subprocess.run([find("kinit"), *args[1:], self.principal(name)], env=env,
                           capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError(f"kinit {name} failed: {r.stdout}{r.stderr}")
        return env

    def client_env(self, ccache):
        env = self.base_env()
        env["KRB5CCNAME"] = f"FILE:{ccache}"
        return env
