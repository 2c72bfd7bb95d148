"""Certificates for the TLS tests, made with the openssl command line: a CA, the listener's
certificate (localhost, 127.0.0.1) and one client certificate per user (CN = the user)."""
import subprocess


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certs(d, users=("admin", "mary")):
    """DIR/ca.pem and ca.key, server.pem and server.key, USER.pem and USER.key per user."""
    d.mkdir(parents=True, exist_ok=True)
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
            "/CN=hms-guard test CA", "-keyout", "ca.key", "-out", "ca.pem", cwd=d)

    def leaf(name, cn, ext):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={cn}",
                "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=d)
        (d / f"{name}.ext").write_text(ext)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext",
                "-out", f"{name}.pem", cwd=d)

    leaf("server", "localhost", "subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for user in users:
        leaf(user, user, "extendedKeyUsage=clientAuth\n")
    return d
