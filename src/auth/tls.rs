//! TLS towards clients (`[server.tls]`): the listener's certificate and key, and optionally a
//! client CA. With a client CA every client must present a certificate it signed; with
//! `identity.mode = "certificate"` the caller is the name that certificate carries (its
//! subject CN, or a SAN of the configured kind) and `set_ugi` cannot change it.
//!
//! TLS towards the metastore (`[upstream.tls]`): the CA the metastore's certificate must chain
//! to, the name it must carry (default: the URI's host), and an optional client certificate.
//!
//! The files are read at start-up and watched: when one changes, the next handshakes use the
//! new certificate, key or CA (a file that does not load leaves the previous ones in place and
//! is logged and counted). Handshakes are bounded by `server.read_timeout_ms`.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use crate::config::ClientIdentity;
use crate::ops::metrics::{Metrics, OutcomeLabels};

/// Where the listener's TLS material is, and how a client certificate names its user.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Clients must present a certificate signed by this CA (PEM, one or more certificates).
    pub client_ca: Option<PathBuf>,
    pub client_identity: ClientIdentity,
    pub reload_interval: Duration,
}

/// Why a handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("TLS handshake failed: {0}")]
    Tls(std::io::Error),
    #[error("TLS handshake not complete within {0} ms")]
    Timeout(u64),
    #[error("the client certificate names no user: {0}")]
    NoIdentity(String),
}

/// What a verified client certificate says about its user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertUser {
    /// No client CA: certificates are not asked for.
    NotAsked,
    /// The one name of the configured kind, exactly as stated.
    User(String),
    /// The certificate names no user hms-guard accepts: why.
    Refused(String),
}

/// Accepts TLS connections with the current certificate, key and client CA.
pub struct Tls {
    settings: TlsSettings,
    config: Watched<ServerConfig>,
    metrics: Arc<Metrics>,
}

impl Tls {
    /// Loads the files; an error names the file and what is wrong with it.
    pub fn load(settings: TlsSettings, metrics: Arc<Metrics>) -> Result<Tls, String> {
        let mut files = vec![settings.cert.clone(), settings.key.clone()];
        files.extend(settings.client_ca.clone());
        let config = Watched::load(files, || build(&settings))?;
        Ok(Tls {
            settings,
            config,
            metrics,
        })
    }

    /// Completes the handshake within `limit`; returns the stream and, with a client CA, what
    /// the client certificate says about its user.
    pub async fn accept(
        &self,
        tcp: TcpStream,
        limit: Duration,
    ) -> Result<(TlsStream<TcpStream>, CertUser), HandshakeError> {
        let acceptor = tokio_rustls::TlsAcceptor::from(self.config.current());
        let outcome = |ok: bool| {
            self.metrics
                .tls_handshakes
                .get_or_create(&OutcomeLabels {
                    outcome: if ok { "ok" } else { "error" },
                })
                .inc();
        };
        let stream = match tokio::time::timeout(limit, acceptor.accept(tcp)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                outcome(false);
                return Err(HandshakeError::Tls(e));
            }
            Err(_) => {
                outcome(false);
                return Err(HandshakeError::Timeout(limit.as_millis() as u64));
            }
        };
        let user = match (
            &self.settings.client_ca,
            stream.get_ref().1.peer_certificates(),
        ) {
            (None, _) => CertUser::NotAsked,
            (Some(_), Some([leaf, ..])) => match identity_of(leaf, self.settings.client_identity) {
                Ok(u) => CertUser::User(u),
                Err(e) => {
                    // The connection is kept to tell the client why (in certificate mode).
                    outcome(false);
                    return Ok((stream, CertUser::Refused(e)));
                }
            },
            (Some(_), _) => {
                outcome(false);
                return Err(HandshakeError::NoIdentity(
                    "no certificate presented".into(),
                ));
            }
        };
        outcome(true);
        Ok((stream, user))
    }

    /// How often the files are checked.
    pub fn reload_interval(&self) -> Duration {
        self.settings.reload_interval
    }
}

/// TLS material that is reloaded when its files change.
pub trait Reload: Send + Sync {
    /// `Ok(true)`: reloaded; `Err`: the new files do not load (the previous ones stay).
    fn reload_if_changed(&self) -> Result<bool, String>;
    /// What it is, for the log.
    fn what(&self) -> &'static str;
}

impl Reload for Tls {
    fn reload_if_changed(&self) -> Result<bool, String> {
        self.config
            .reload_if_changed(|| build(&self.settings), &self.metrics)
    }
    fn what(&self) -> &'static str {
        "server.tls"
    }
}

/// Checks `items` every `every` until `shutdown`, reloading what changed.
pub async fn watch(
    items: Vec<Arc<dyn Reload>>,
    every: Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = crate::until_shutdown(&mut shutdown) => return,
        }
        for item in &items {
            match item.reload_if_changed() {
                Ok(true) => tracing::info!(what = item.what(), "TLS files reloaded"),
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(what = item.what(), error = %e, "TLS files changed but do not load; the previous ones stay in use")
                }
            }
        }
    }
}

/// TLS towards the metastore (`[upstream.tls]`): the CA its certificate must chain to, the
/// name it must carry, and an optional client certificate.
#[derive(Debug, Clone)]
pub struct UpstreamTlsSettings {
    pub ca: PathBuf,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// Default: each URI's host.
    pub server_name: Option<String>,
}

pub struct UpstreamTls {
    settings: UpstreamTlsSettings,
    config: Watched<rustls::ClientConfig>,
    metrics: Arc<Metrics>,
}

impl UpstreamTls {
    pub fn load(settings: UpstreamTlsSettings, metrics: Arc<Metrics>) -> Result<Self, String> {
        let mut files = vec![settings.ca.clone()];
        files.extend(settings.cert.clone());
        files.extend(settings.key.clone());
        let config = Watched::load(files, || build_client(&settings))?;
        Ok(UpstreamTls {
            settings,
            config,
            metrics,
        })
    }

    /// The TLS handshake with the metastore at `host`, within `limit`.
    pub async fn connect(
        &self,
        tcp: TcpStream,
        host: &str,
        limit: Duration,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
        let name = self.settings.server_name.as_deref().unwrap_or(host);
        let server_name = rustls::pki_types::ServerName::try_from(name.to_string())
            .map_err(|e| format!("`{name}` is not a valid server name: {e}"))?;
        let connector = tokio_rustls::TlsConnector::from(self.config.current());
        match tokio::time::timeout(limit, connector.connect(server_name, tcp)).await {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!(
                "handshake not complete within {} ms",
                limit.as_millis()
            )),
        }
    }
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Reload for UpstreamTls {
    fn reload_if_changed(&self) -> Result<bool, String> {
        self.config
            .reload_if_changed(|| build_client(&self.settings), &self.metrics)
    }
    fn what(&self) -> &'static str {
        "upstream.tls"
    }
}

/// A configuration built from files, rebuilt when one of them changes (modification time or
/// size); the files' state is remembered whatever the outcome, so a broken file is reported
/// once, not at every check.
struct Watched<T> {
    files: Vec<PathBuf>,
    stamps: Mutex<Vec<Option<(SystemTime, u64)>>>,
    current: RwLock<Arc<T>>,
}

impl<T> Watched<T> {
    fn load(
        files: Vec<PathBuf>,
        build: impl FnOnce() -> Result<T, String>,
    ) -> Result<Self, String> {
        let stamps = Mutex::new(stamps(&files));
        let current = RwLock::new(Arc::new(build()?));
        Ok(Watched {
            files,
            stamps,
            current,
        })
    }

    fn current(&self) -> Arc<T> {
        self.current
            .read()
            .map(|c| c.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    /// `Ok(true)`: rebuilt; `Err`: the changed files do not build (the previous configuration
    /// stays). Counted in `hms_guard_tls_reloads_total`.
    fn reload_if_changed(
        &self,
        build: impl FnOnce() -> Result<T, String>,
        metrics: &Metrics,
    ) -> Result<bool, String> {
        let now = stamps(&self.files);
        let mut seen = self.stamps.lock().unwrap_or_else(|e| e.into_inner());
        if *seen == now {
            return Ok(false);
        }
        *seen = now;
        let built = build();
        let outcome = if built.is_ok() { "ok" } else { "error" };
        metrics
            .tls_reloads
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(built?);
        Ok(true)
    }
}

fn stamps(files: &[PathBuf]) -> Vec<Option<(SystemTime, u64)>> {
    files
        .iter()
        .map(|p| {
            let m = std::fs::metadata(p).ok()?;
            Some((m.modified().ok()?, m.len()))
        })
        .collect()
}

/// A client configuration towards the metastore from the files.
fn build_client(s: &UpstreamTlsSettings) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let roots = roots(&s.ca, "upstream.tls.ca")?;
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots);
    match (&s.cert, &s.key) {
        (Some(cert), Some(key)) => {
            let chain = chain(cert, "upstream.tls.cert")?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| format!("upstream.tls.key {}: {e}", key.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("upstream.tls.cert/key: {e}"))
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}

/// The CA certificates of a PEM file as trust anchors (`key` names the setting in errors).
pub fn read_roots(path: &std::path::Path, key: &str) -> Result<RootCertStore, String> {
    roots(&path.to_path_buf(), key)
}

/// A client configuration towards a directory server (`[identity.groups.ldap]`): trusting
/// `ca`, presenting `client` (certificate, key) when set.
pub fn directory_client(
    ca: &std::path::Path,
    client: Option<(&std::path::Path, &std::path::Path)>,
) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let roots = read_roots(ca, "identity.groups.ldap.ca")?;
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots);
    match client {
        Some((cert, key)) => {
            let chain = chain(&cert.to_path_buf(), "identity.groups.ldap.client_cert")?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| format!("identity.groups.ldap.client_key {}: {e}", key.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("identity.groups.ldap.client_cert/key: {e}"))
        }
        None => Ok(builder.with_no_client_auth()),
    }
}

/// The certificates of a PEM file (at least one); `key` names the setting in errors.
fn chain(path: &PathBuf, key: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .and_then(|i| i.collect::<Result<_, _>>())
        .map_err(|e| format!("{key} {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{key} {}: no certificate in the file",
            path.display()
        ));
    }
    Ok(certs)
}

/// The CA certificates of a PEM file, as trust anchors.
fn roots(path: &PathBuf, key: &str) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for c in chain(path, key)? {
        roots
            .add(c)
            .map_err(|e| format!("{key} {}: {e}", path.display()))?;
    }
    Ok(roots)
}

/// A server configuration from the files.
fn build(s: &TlsSettings) -> Result<ServerConfig, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let certs = chain(&s.cert, "server.tls.cert")?;
    let key = PrivateKeyDer::from_pem_file(&s.key)
        .map_err(|e| format!("server.tls.key {}: {e}", s.key.display()))?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    let builder = match &s.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let roots = roots(ca, "server.tls.client_ca")?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| format!("server.tls.client_ca {}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("server.tls.cert/key: {e}"))
}

/// The user a (verified) client certificate names, exactly as the certificate states it (no
/// trimming): its subject's one CN, or its one SAN of the configured kind. A subject with more
/// than one CN, more than one SAN of the configured kind, or a CN in an encoding hms-guard does
/// not read (BMPString, T61String, UniversalString…) is refused: other readers (OpenSSL names
/// the first CN whatever its encoding) could name another user. Whether the name itself is
/// acceptable is the names rule's to say (`names::check`, applied by the connection).
pub fn identity_of(cert: &CertificateDer<'_>, kind: ClientIdentity) -> Result<String, String> {
    use x509_cert::der::Decode;
    let cert = x509_cert::Certificate::from_der(cert.as_ref()).map_err(|e| e.to_string())?;
    let tbs = &cert.tbs_certificate;
    let names = match kind {
        ClientIdentity::Cn => subject_cns(&tbs.subject)?,
        ClientIdentity::SanDns | ClientIdentity::SanEmail | ClientIdentity::SanUri => {
            san_names(tbs, kind)?
        }
    };
    match names.as_slice() {
        [] => Err(format!("no {} in the certificate", kind.as_str())),
        [one] if one.is_empty() => Err(format!("the certificate's {} is empty", kind.as_str())),
        [one] => Ok(one.clone()),
        many => Err(format!(
            "the certificate carries {} names of kind {} ({}); hms-guard takes the user only from a certificate with exactly one",
            many.len(),
            kind.as_str(),
            many.iter()
                .map(|n| format!("{n:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// Every CN of a subject, in order; one in an encoding hms-guard does not read is an error.
fn subject_cns(subject: &x509_cert::name::Name) -> Result<Vec<String>, String> {
    let cns: Vec<&x509_cert::der::Any> = subject
        .0
        .iter()
        .flat_map(|rdn| rdn.0.iter())
        .filter(|atv| atv.oid == x509_cert::der::oid::db::rfc4519::CN)
        .map(|atv| &atv.value)
        .collect();
    if cns.len() > 1 {
        return Err(format!(
            "the subject carries {} common names (CN); hms-guard takes the user only from a subject with exactly one",
            cns.len()
        ));
    }
    cns.into_iter().map(directory_string).collect()
}

/// Every SAN of the configured kind, in order.
fn san_names(tbs: &x509_cert::TbsCertificate, kind: ClientIdentity) -> Result<Vec<String>, String> {
    use x509_cert::der::Decode;
    use x509_cert::ext::pkix::name::GeneralName;
    use x509_cert::ext::pkix::SubjectAltName;
    let san = tbs
        .extensions
        .iter()
        .flatten()
        .find(|e| e.extn_id == x509_cert::der::oid::db::rfc5280::ID_CE_SUBJECT_ALT_NAME)
        .map(|e| SubjectAltName::from_der(e.extn_value.as_bytes()))
        .transpose()
        .map_err(|e| format!("subjectAltName: {e}"))?;
    Ok(san
        .iter()
        .flat_map(|s| s.0.iter())
        .filter_map(|g| match (kind, g) {
            (ClientIdentity::SanDns, GeneralName::DnsName(n)) => Some(n.to_string()),
            (ClientIdentity::SanEmail, GeneralName::Rfc822Name(n)) => Some(n.to_string()),
            (ClientIdentity::SanUri, GeneralName::UniformResourceIdentifier(n)) => {
                Some(n.to_string())
            }
            _ => None,
        })
        .collect())
}

/// A directory string hms-guard reads (UTF8String, PrintableString, IA5String) as text,
/// exactly; any other encoding is an error naming it.
fn directory_string(v: &x509_cert::der::Any) -> Result<String, String> {
    use x509_cert::der::asn1::{Ia5StringRef, PrintableStringRef, Utf8StringRef};
    use x509_cert::der::{Tag, Tagged};
    let text = match v.tag() {
        Tag::Utf8String => v.decode_as::<Utf8StringRef<'_>>().map(|s| s.to_string()),
        Tag::PrintableString => v
            .decode_as::<PrintableStringRef<'_>>()
            .map(|s| s.to_string()),
        Tag::Ia5String => v.decode_as::<Ia5StringRef<'_>>().map(|s| s.to_string()),
        other => {
            return Err(format!(
                "the subject CN is a {other}, an encoding hms-guard does not read (UTF8String, PrintableString and IA5String are read)"
            ))
        }
    };
    text.map_err(|e| format!("the subject CN cannot be read: {e}"))
}
