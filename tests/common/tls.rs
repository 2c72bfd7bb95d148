//! TLS test helpers: certificates (rcgen) — a CA and the certificates it signs —, a TLS client
//! of the proxy's listener (`client`) and a TLS front for a scripted metastore (`upstream`).

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

pub struct Ca {
    pub cert: rcgen::Certificate,
    key: KeyPair,
}

pub fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    Ca {
        cert: p.self_signed(&key).unwrap(),
        key,
    }
}

/// A certificate signed by `ca`: (PEM certificate, PEM key).
pub fn leaf(ca: &Ca, cn: &str, sans: &[&str]) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
    let mut p = CertificateParams::new(sans).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    (
        p.signed_by(&key, &ca.cert, &ca.key).unwrap().pem(),
        key.serialize_pem(),
    )
}

/// A certificate signed by `ca` with the subject `dn` (attributes in order; a repeated
/// type is written as its own attribute) and the subject alternative names `sans`.
pub fn leaf_dn(
    ca: &Ca,
    dn: Vec<(DnType, rcgen::DnValue)>,
    sans: Vec<rcgen::SanType>,
) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.subject_alt_names = sans;
    let mut seen = std::collections::HashSet::new();
    for (ty, value) in dn {
        // rcgen keeps one value per type: a repeated one is written under its OID.
        let ty = if seen.insert(ty.clone()) {
            ty
        } else {
            DnType::CustomDnType(oid_of(&ty))
        };
        p.distinguished_name.push(ty, value);
    }
    (
        p.signed_by(&key, &ca.cert, &ca.key).unwrap().pem(),
        key.serialize_pem(),
    )
}

fn oid_of(ty: &DnType) -> Vec<u64> {
    match ty {
        DnType::CommonName => vec![2, 5, 4, 3],
        other => panic!("no OID written for {other:?}"),
    }
}

/// A fresh temporary directory.
pub fn dir(what: &str) -> std::path::PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = std::env::temp_dir().join(format!(
        "hms-guard-{what}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The proxy's listener with TLS: its files, its config, a client.
pub mod client {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use hms_guard::wire::codec::Protocol;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use std::path::{Path, PathBuf};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    pub use super::{leaf, Ca};

    const B: Protocol = Protocol::Binary;

    pub fn ca() -> Ca {
        super::ca("hms-guard test CA")
    }

    pub fn dir() -> PathBuf {
        super::dir("tls")
    }

    /// The listener's files in `d`: server.pem, server.key, ca.pem.
    pub fn write_server(d: &Path, ca: &Ca) {
        let (cert, key) = leaf(ca, "hms-guard", &["localhost"]);
        std::fs::write(d.join("server.pem"), cert).unwrap();
        std::fs::write(d.join("server.key"), key).unwrap();
        std::fs::write(d.join("ca.pem"), ca.cert.pem()).unwrap();
    }

    pub fn tls_toml(d: &Path, extra: &str) -> String {
        format!(
            "[server.tls]\ncert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{}\"\n{extra}\n[identity]\nmode = \"certificate\"\n",
            d.join("server.pem").display(),
            d.join("server.key").display(),
            d.join("ca.pem").display()
        )
    }

    /// A TLS client trusting `ca`, presenting `client` (PEM cert, PEM key) if given.
    pub async fn connect(
        addr: std::net::SocketAddr,
        ca: &Ca,
        client: Option<&(String, String)>,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(ca.cert.pem().as_bytes()).unwrap())
            .unwrap();
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let config = match client {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => builder
                .with_client_auth_cert(
                    vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
                    PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
                )
                .unwrap(),
        };
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
    }

    /// One call over a TLS stream; `None` if the connection ended without a reply.
    pub async fn call_tls<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
        s: &mut S,
        msg: &[u8],
    ) -> Option<Vec<u8>> {
        s.write_all(msg).await.ok()?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 65536];
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut scanner = hms_guard::wire::codec::Scanner::new(B, Default::default());
            if let Ok(hms_guard::wire::codec::Scan::Complete(n)) = scanner.advance(&buf) {
                return Some(buf[..n].to_vec());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, s.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                _ => return None,
            }
        }
    }
}

/// A metastore behind TLS.
pub mod upstream {
    use std::sync::Arc;

    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    #[allow(unused_imports)] // `ca` is for the tests (tests/tls.rs), not used here
    pub use super::{ca, leaf, Ca};

    /// A TLS front on an ephemeral port relaying to `backend`; with `client_ca`, it requires a
    /// client certificate signed by it.
    pub async fn front(
        ca: &Ca,
        backend: std::net::SocketAddr,
        client_ca: Option<&Ca>,
    ) -> std::net::SocketAddr {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let (cert, key) = leaf(ca, "metastore", &["localhost"]);
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = match client_ca {
            None => builder.with_no_client_auth(),
            Some(c) => {
                let mut roots = rustls::RootCertStore::empty();
                roots
                    .add(CertificateDer::from_pem_slice(c.cert.pem().as_bytes()).unwrap())
                    .unwrap();
                builder.with_client_cert_verifier(
                    rustls::server::WebPkiClientVerifier::builder_with_provider(
                        Arc::new(roots),
                        provider,
                    )
                    .build()
                    .unwrap(),
                )
            }
        };
        let config = builder
            .with_single_cert(
                vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let Ok(mut back) = tokio::net::TcpStream::connect(backend).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut back).await;
                });
            }
        });
        addr
    }

    pub fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    }

    pub fn dir() -> std::path::PathBuf {
        super::dir("upstream-tls")
    }
}
