//! Socket tests of the enforce path: the proxy in-process, in front of a scripted metastore,
//! with authorization's facts (grants, owners) scripted through `FactsSource`.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use hms_guard::authz::{GrantTarget, Object, Principal, PrincipalKind, Privilege, RecordedGrant};
use hms_guard::codec::value::{read_value, Value};
use hms_guard::codec::writer::Writer;
use hms_guard::codec::{reader::Reader, Ty};
use hms_guard::codec::{MessageHeader, MessageType, Protocol};
use hms_guard::config::Config;
use hms_guard::facts::source::Fact;
use hms_guard::facts::FactsSource;

const B: Protocol = Protocol::Binary;

fn s(x: &str) -> Value {
    Value::Bytes(x.as_bytes().to_vec())
}

/// Grants and tables as the scripted metastore knows them; counts table lookups.
#[derive(Default)]
struct Scripted {
    /// user → (object, privilege)
    grants: HashMap<String, Vec<(Object, Privilege)>>,
    /// (db, table) → owner
    owners: Mutex<HashMap<(String, String), String>>,
    table_lookups: AtomicUsize,
    /// principal name → the grants the metastore records to it (any object), with grantors
    recorded: HashMap<String, Vec<RecordedGrant>>,
}

impl FactsSource for Scripted {
    fn role_grants<'a>(&'a self, _: &'a Principal) -> Fact<'a, Vec<(String, bool)>> {
        Box::pin(async { Ok(Vec::new()) })
    }
    fn privileges<'a>(&'a self, p: &'a Principal) -> Fact<'a, Vec<(Object, Privilege, bool)>> {
        let out = match p.kind {
            PrincipalKind::User => self.grants.get(&p.name).cloned().unwrap_or_default(),
            _ => Vec::new(),
        };
        Box::pin(async move { Ok(out.into_iter().map(|(o, p)| (o, p, false)).collect()) })
    }
    fn table<'a>(&'a self, db: &'a str, table: &'a str) -> Fact<'a, Option<Value>> {
        self.table_lookups.fetch_add(1, Ordering::SeqCst);
        let owner = self
            .owners
            .lock()
            .unwrap()
            .get(&(db.to_string(), table.to_string()))
            .cloned();
        Box::pin(async move {
            Ok(owner.map(|o| {
                Value::Struct(vec![
                    (1, s(table)),
                    (2, s(db)),
                    (3, s(&o)),
                    (
                        7,
                        Value::Struct(vec![(2, s(&format!("s3a://lake/{db}/{table}")))]),
                    ),
                ])
            }))
        })
    }
    fn database<'a>(&'a self, db: &'a str) -> Fact<'a, Option<Value>> {
        Box::pin(async move {
            Ok(Some(Value::Struct(vec![
                (1, s(db)),
                (3, s(&format!("s3a://lake/{db}"))),
                (6, s("admin")),
            ])))
        })
    }
    fn open_txns(&self) -> Fact<'_, (i64, Vec<(i64, String)>)> {
        Box::pin(async { Ok((0, Vec::new())) })
    }
    fn locks(&self) -> Fact<'_, Vec<(i64, String)>> {
        Box::pin(async { Ok(Vec::new()) })
    }
    fn recorded_grants<'a>(
        &'a self,
        p: &'a Principal,
        _: &'a GrantTarget,
    ) -> Fact<'a, Vec<RecordedGrant>> {
        let out = self.recorded.get(&p.name).cloned().unwrap_or_default();
        Box::pin(async move { Ok(out) })
    }
}

/// A reply whose result struct is `result`.
fn reply(name: &str, seqid: i32, result: Value) -> Vec<u8> {
    let mut w = Writer::new(B);
    w.message(name, MessageType::Reply, seqid).value(&result);
    w.finish(false).to_vec()
}

/// The scripted metastore: answers the calls these tests make.
async fn metastore() -> Upstream {
    Upstream::start(
        B,
        false,
        Arc::new(|h: &MessageHeader, _: &[u8]| {
            let result = match h.name.as_str() {
                "set_ugi" => Value::Struct(vec![(0, Value::List(vec![]))]),
                "get_table" => Value::Struct(vec![(
                    0,
                    Value::Struct(vec![(1, s("t")), (2, s("db")), (3, s("admin"))]),
                )]),
                "get_all_tables" => {
                    Value::Struct(vec![(0, Value::List(vec![s("t"), s("secret"), s("mine")]))])
                }
                "drop_table" => Value::Struct(vec![]),
                _ => Value::Struct(vec![(0, s("3.1.0"))]),
            };
            Act::Send(reply(&h.name, h.seqid, result))
        }),
    )
    .await
}

fn facts() -> Arc<Scripted> {
    let mut grants = HashMap::new();
    grants.insert(
        "mary".to_string(),
        vec![(Object::table("db", "t"), Privilege::Select)],
    );
    let owners = [("t", "admin"), ("secret", "admin"), ("mine", "mary")]
        .iter()
        .map(|(t, o)| (("db".to_string(), t.to_string()), o.to_string()))
        .collect();
    let by = |grantor: &str| RecordedGrant {
        privilege: "SELECT".into(),
        grantor: Some(grantor.into()),
        grantor_kind: Some(PrincipalKind::User),
    };
    let recorded = [("john", by("admin")), ("friend", by("mary"))]
        .into_iter()
        .map(|(p, g)| (p.to_string(), vec![g]))
        .collect();
    Arc::new(Scripted {
        grants,
        owners: Mutex::new(owners),
        table_lookups: AtomicUsize::new(0),
        recorded,
    })
}

/// Forwards the trait to a shared scripted source, so the test keeps a handle on it.
struct Shared(Arc<Scripted>);

impl FactsSource for Shared {
    fn role_grants<'a>(&'a self, p: &'a Principal) -> Fact<'a, Vec<(String, bool)>> {
        self.0.role_grants(p)
    }
    fn privileges<'a>(&'a self, p: &'a Principal) -> Fact<'a, Vec<(Object, Privilege, bool)>> {
        self.0.privileges(p)
    }
    fn table<'a>(&'a self, db: &'a str, table: &'a str) -> Fact<'a, Option<Value>> {
        self.0.table(db, table)
    }
    fn database<'a>(&'a self, db: &'a str) -> Fact<'a, Option<Value>> {
        self.0.database(db)
    }
    fn open_txns(&self) -> Fact<'_, (i64, Vec<(i64, String)>)> {
        self.0.open_txns()
    }
    fn locks(&self) -> Fact<'_, Vec<(i64, String)>> {
        self.0.locks()
    }
    fn recorded_grants<'a>(
        &'a self,
        p: &'a Principal,
        t: &'a GrantTarget,
    ) -> Fact<'a, Vec<RecordedGrant>> {
        self.0.recorded_grants(p, t)
    }
}

async fn start(up: &Upstream, facts: &Arc<Scripted>, extra: &str) -> Proxy {
    start_with_upstream(up, facts, "", extra).await
}

/// `start` with further `[upstream]` keys.
async fn start_with_upstream(
    up: &Upstream,
    facts: &Arc<Scripted>,
    upstream: &str,
    extra: &str,
) -> Proxy {
    // Audit lines to a file of their own unless the test says otherwise.
    static N: AtomicUsize = AtomicUsize::new(0);
    let audit = std::env::temp_dir().join(format!(
        "hms-guard-enforce-{}-{}.jsonl",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let extra = if extra.contains("[audit]") {
        extra.to_string()
    } else {
        format!(
            "{extra}[audit]\nsink = \"file\"\npath = \"{}\"\n",
            audit.display()
        )
    };
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[upstream]\nuris = [\"{}\"]\n{upstream}\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [authz]\nmode = \"enforce\"\nadmin_users = [\"admin\"]\n[storage]\nenabled = false\n{extra}",
        up.uri()
    );
    let config = Config::parse(&text).unwrap_or_else(|e| panic!("{e:?}\n{text}"));
    Proxy::start_with(config, Some(Box::new(Shared(facts.clone())))).await
}

fn set_ugi(user: &str, groups: &[&str]) -> Vec<u8> {
    let mut w = Writer::new(B);
    w.message("set_ugi", MessageType::Call, 1).struct_begin();
    w.field(Ty::String, 1).string(user.as_bytes());
    w.field(Ty::List, 2).list_begin(Ty::String, groups.len());
    for g in groups {
        w.string(g.as_bytes());
    }
    w.struct_end();
    w.finish(false).to_vec()
}

/// The result struct of a reply.
fn result(msg: &[u8]) -> (MessageHeader, Value) {
    let mut r = Reader::new(B, msg, 64);
    let h = r.message_begin().unwrap();
    (h, read_value(&mut r, Ty::Struct, None).unwrap())
}

/// The message of the declared exception a result carries, if any.
fn declared(v: &Value) -> Option<String> {
    match v {
        Value::Struct(fields) => fields
            .iter()
            .filter(|(id, _)| *id != 0)
            .find_map(|(_, e)| e.field(1).and_then(Value::as_str).map(str::to_string)),
        _ => None,
    }
}

fn names(v: &Value) -> Vec<String> {
    v.field(0)
        .map(Value::as_list)
        .unwrap_or_default()
        .iter()
        .filter_map(|x| x.as_str().map(str::to_string))
        .collect()
}

fn methods(up: &Upstream) -> Vec<String> {
    up.received
        .lock()
        .unwrap()
        .iter()
        .map(|m| {
            let mut r = Reader::new(B, m, 64);
            r.message_begin().unwrap().name
        })
        .collect()
}

#[tokio::test]
async fn set_ugi_is_answered_here_and_sent_upstream_before_the_first_call() {
    let (up, facts) = (metastore().await, facts());
    let proxy = start(&up, &facts, "").await;
    let mut c = proxy.connect().await;
    let (h, msg) = roundtrip(&mut c, &set_ugi("mary", &["g2", "g1"]), B, false).await;
    assert_eq!(h.kind, MessageType::Reply);
    assert_eq!(names(&result(&msg).1), ["g2", "g1"], "the groups sent");
    assert!(methods(&up).is_empty(), "nothing went upstream yet");
    let (h, _) = roundtrip(&mut c, &call(B, "get_table", 2, &["db", "t"]), B, false).await;
    assert_eq!((h.kind, h.seqid), (MessageType::Reply, 2));
    assert_eq!(methods(&up), ["set_ugi", "get_table"]);
    let first = up.received.lock().unwrap()[0].clone();
    assert!(
        first.windows(4).any(|w| w == b"mary"),
        "set_ugi names the caller"
    );
}

#[tokio::test]
async fn denials_answer_in_the_declared_exception_and_go_nowhere() {
    let (up, facts) = (metastore().await, facts());
    let proxy = start(&up, &facts, "").await;
    let mut c = proxy.connect().await;
    roundtrip(&mut c, &set_ugi("mary", &[]), B, false).await;
    // get_table declares MetaException at field 1: a REPLY carrying it.
    let (h, msg) = roundtrip(
        &mut c,
        &call(B, "get_table", 7, &["db", "secret"]),
        B,
        false,
    )
    .await;
    assert_eq!((h.kind, h.seqid), (MessageType::Reply, 7));
    let (_, v) = result(&msg);
    let message = declared(&v).unwrap();
    for part in ["permission denied", "mary", "SELECT", "db.secret"] {
        assert!(message.contains(part), "{message}");
    }
    // A method without a declared MetaException: a TApplicationException.
    let (h, msg) = roundtrip(&mut c, &call(B, "get_open_txns_info", 8, &[]), B, false).await;
    assert_eq!((h.kind, h.seqid), (MessageType::Exception, 8));
    assert!(exception_message(B, &msg, &h).contains("permission denied"));
    assert!(
        methods(&up).is_empty(),
        "denied calls never reach the metastore"
    );
    // The connection stays usable.
    let (h, _) = roundtrip(&mut c, &call(B, "get_table", 9, &["db", "t"]), B, false).await;
    assert_eq!(h.kind, MessageType::Reply);
}

#[tokio::test]
async fn listings_are_filtered_to_what_the_caller_holds_or_owns() {
    let (up, facts) = (metastore().await, facts());
    let proxy = start(&up, &facts, "").await;
    let mut c = proxy.connect().await;
    roundtrip(&mut c, &set_ugi("mary", &[]), B, false).await;
    let (_, msg) = roundtrip(&mut c, &call(B, "get_all_tables", 3, &["db"]), B, false).await;
    assert_eq!(names(&result(&msg).1), ["t", "mine"]);
    let mut admin = proxy.connect().await;
    roundtrip(&mut admin, &set_ugi("admin", &[]), B, false).await;
    let (_, msg) = roundtrip(&mut admin, &call(B, "get_all_tables", 3, &["db"]), B, false).await;
    assert_eq!(names(&result(&msg).1), ["t", "secret", "mine"]);
}

#[tokio::test]
async fn while_the_audit_log_cannot_be_written_decided_calls_are_refused() {
    let (up, facts) = (metastore().await, facts());
    let proxy = start(
        &up,
        &facts,
        "[audit]\nsink = \"file\"\npath = \"/dev/full\"\non_failure = \"deny\"\n",
    )
    .await;
    let mut c = proxy.connect().await;
    roundtrip(&mut c, &set_ugi("mary", &[]), B, false).await;
    let (h, _) = roundtrip(&mut c, &call(B, "get_table", 2, &["db", "t"]), B, false).await;
    assert_eq!(
        h.kind,
        MessageType::Reply,
        "allowed while the audit looked healthy"
    );
    // Its audit line failed: from now on decided calls are denied, harmless ones pass.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, msg) = roundtrip(&mut c, &call(B, "get_table", 3, &["db", "t"]), B, false).await;
        let (_, v) = result(&msg);
        if let Some(m) = declared(&v) {
            assert!(m.contains("the audit log cannot be written"), "{m}");
            break;
        }
        assert!(Instant::now() < deadline, "never denied");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (h, _) = roundtrip(&mut c, &call(B, "getVersion", 4, &[]), B, false).await;
    assert_eq!(h.kind, MessageType::Reply);
}

#[tokio::test]
async fn cached_facts_are_dropped_only_after_a_change_the_metastore_made() {
    let (up, facts) = (metastore().await, facts());
    let proxy = start(&up, &facts, "").await;
    let mut mary = proxy.connect().await;
    roundtrip(&mut mary, &set_ugi("mary", &[]), B, false).await;
    let lookups = || facts.table_lookups.load(Ordering::SeqCst);
    let drop_call = |seqid| {
        let mut w = W::binary();
        w.message("drop_table", CALL, seqid)
            .begin_struct()
            .field(11, 1)
            .string(b"db")
            .field(11, 2)
            .string(b"secret")
            .bool_field(3, false)
            .end_struct();
        w.bytes()
    };
    // A denied read looks the owner up once; the answer is cached.
    roundtrip(
        &mut mary,
        &call(B, "get_table", 2, &["db", "secret"]),
        B,
        false,
    )
    .await;
    let after_first = lookups();
    assert!(after_first >= 1);
    roundtrip(
        &mut mary,
        &call(B, "get_table", 3, &["db", "secret"]),
        B,
        false,
    )
    .await;
    assert_eq!(lookups(), after_first, "cached");
    // Mary's drop is denied: nothing is evicted.
    let (_, msg) = roundtrip(&mut mary, &drop_call(4), B, false).await;
    assert!(declared(&result(&msg).1).is_some(), "denied");
    roundtrip(
        &mut mary,
        &call(B, "get_table", 5, &["db", "secret"]),
        B,
        false,
    )
    .await;
    assert_eq!(lookups(), after_first, "a denied call evicts nothing");
    // The admin's drop succeeds upstream: the table's facts are read again next time.
    let mut admin = proxy.connect().await;
    roundtrip(&mut admin, &set_ugi("admin", &[]), B, false).await;
    let (h, msg) = roundtrip(&mut admin, &drop_call(6), B, false).await;
    assert_eq!(h.kind, MessageType::Reply);
    assert!(declared(&result(&msg).1).is_none(), "allowed");
    let before = lookups();
    roundtrip(
        &mut mary,
        &call(B, "get_table", 7, &["db", "secret"]),
        B,
        false,
    )
    .await;
    assert!(lookups() > before, "evicted after the drop");
}

#[tokio::test]
async fn a_new_upstream_connection_carries_the_callers_identity_again() {
    // The metastore closes each connection after one table read (a restart while idle).
    let up = Upstream::start(
        B,
        false,
        Arc::new(|h: &MessageHeader, _: &[u8]| {
            if h.name == "set_ugi" {
                return Act::Send(reply(
                    &h.name,
                    h.seqid,
                    Value::Struct(vec![(0, Value::List(vec![]))]),
                ));
            }
            let t = Value::Struct(vec![(1, s("t")), (2, s("db")), (3, s("admin"))]);
            Act::SendThenClose(reply(&h.name, h.seqid, Value::Struct(vec![(0, t)])))
        }),
    )
    .await;
    let facts = facts();
    let proxy = start(&up, &facts, "").await;
    let mut c = proxy.connect().await;
    roundtrip(&mut c, &set_ugi("mary", &[]), B, false).await;
    for seqid in [2, 3] {
        let (h, _) = roundtrip(&mut c, &call(B, "get_table", seqid, &["db", "t"]), B, false).await;
        assert_eq!((h.kind, h.seqid), (MessageType::Reply, seqid));
        let deadline = Instant::now() + Duration::from_secs(5);
        while !proxy.metrics_text().contains("kind=\"closed_idle\"") {
            assert!(Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert_eq!(
        methods(&up),
        ["set_ugi", "get_table", "set_ugi", "get_table"]
    );
    assert_eq!(*up.connections.lock().unwrap(), 2);
}

// ---------------------------------------------------------------------------------------------
// TLS towards clients: the certificate names the caller.

mod tls {
    use super::*;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use std::path::{Path, PathBuf};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    pub use common::certs::{leaf, Ca};

    pub fn ca() -> Ca {
        common::certs::ca("hms-guard test CA")
    }

    pub fn dir() -> PathBuf {
        common::certs::dir("tls")
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
            let mut scanner = hms_guard::codec::Scanner::new(B, Default::default());
            if let Ok(hms_guard::codec::Scan::Complete(n)) = scanner.advance(&buf) {
                return Some(buf[..n].to_vec());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, s.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                _ => return None,
            }
        }
    }

    pub fn metric(p: &Proxy, series: &str) -> u64 {
        p.metrics_text()
            .lines()
            .find(|l| l.starts_with(series))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

#[tokio::test]
async fn with_a_client_ca_the_certificate_names_the_caller_and_set_ugi_cannot_change_it() {
    let (up, facts) = (metastore().await, facts());
    let (ca, d) = (tls::ca(), tls::dir());
    tls::write_server(&d, &ca);
    let proxy = start(&up, &facts, &tls::tls_toml(&d, "")).await;
    let mary = tls::leaf(&ca, "mary", &[]);
    let mut c = tls::connect(proxy.addr, &ca, Some(&mary)).await.unwrap();
    let reply = tls::call_tls(&mut c, &set_ugi("admin", &[])).await.unwrap();
    assert_eq!(result(&reply).0.kind, MessageType::Reply);
    let reply = tls::call_tls(&mut c, &call(B, "get_table", 2, &["db", "secret"]))
        .await
        .unwrap();
    let message = declared(&result(&reply).1).expect("denied");
    assert!(message.contains("user mary"), "{message}");
    let reply = tls::call_tls(&mut c, &call(B, "get_table", 3, &["db", "t"]))
        .await
        .unwrap();
    assert!(
        declared(&result(&reply).1).is_none(),
        "mary holds SELECT on db.t"
    );
    // The metastore session carries mary, never the claimed admin.
    assert_eq!(methods(&up), ["set_ugi", "get_table"]);
    let first = up.received.lock().unwrap()[0].clone();
    assert!(first.windows(4).any(|w| w == b"mary"));
    assert!(!first.windows(5).any(|w| w == b"admin"));
}

#[tokio::test]
async fn without_a_certificate_or_without_tls_a_client_is_refused_before_any_call() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (up, facts) = (metastore().await, facts());
    let (ca, d) = (tls::ca(), tls::dir());
    tls::write_server(&d, &ca);
    let proxy = start(&up, &facts, &tls::tls_toml(&d, "")).await;
    // A TLS client without a certificate: the handshake (or the first read) fails.
    let refused = match tls::connect(proxy.addr, &ca, None).await {
        Err(_) => true,
        Ok(mut c) => tls::call_tls(&mut c, &call(B, "get_table", 1, &["db", "t"]))
            .await
            .is_none(),
    };
    assert!(refused);
    // A certificate from another CA.
    let other = tls::ca();
    let stranger = tls::leaf(&other, "mary", &[]);
    let refused = match tls::connect(proxy.addr, &ca, Some(&stranger)).await {
        Err(_) => true,
        Ok(mut c) => tls::call_tls(&mut c, &call(B, "get_table", 1, &["db", "t"]))
            .await
            .is_none(),
    };
    assert!(refused);
    // A plain client: no reply, the connection is closed.
    let mut plain = proxy.connect().await;
    plain
        .write_all(&call(B, "get_table", 1, &["db", "t"]))
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut buf)).await;
    assert!(
        buf.is_empty() || buf[0] == 0x15,
        "at most a TLS alert: {buf:?}"
    );
    assert!(methods(&up).is_empty(), "nothing reached the metastore");
    assert!(tls::metric(&proxy, "hms_guard_tls_handshakes_total{outcome=\"error\"}") >= 3);
}

#[tokio::test]
async fn changed_certificate_files_are_used_without_a_restart() {
    let (up, facts) = (metastore().await, facts());
    let (ca, d) = (tls::ca(), tls::dir());
    tls::write_server(&d, &ca);
    let proxy = start(&up, &facts, &tls::tls_toml(&d, "reload_interval_ms = 50")).await;
    let mary = tls::leaf(&ca, "mary", &[]);
    let served = |c: &tokio_rustls::client::TlsStream<tokio::net::TcpStream>| {
        c.get_ref().1.peer_certificates().unwrap()[0]
            .as_ref()
            .to_vec()
    };
    let before = served(&tls::connect(proxy.addr, &ca, Some(&mary)).await.unwrap());
    tls::write_server(&d, &ca);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = served(&tls::connect(proxy.addr, &ca, Some(&mary)).await.unwrap());
        if now != before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new certificate is never served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        tls::metric(&proxy, "hms_guard_tls_reloads_total{outcome=\"ok\"}"),
        1
    );
    // A broken file is refused; the previous certificate stays in use.
    std::fs::write(d.join("server.pem"), "not a certificate").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while tls::metric(&proxy, "hms_guard_tls_reloads_total{outcome=\"error\"}") == 0 {
        assert!(
            Instant::now() < deadline,
            "the broken file is never noticed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut c = tls::connect(proxy.addr, &ca, Some(&mary)).await.unwrap();
    let reply = tls::call_tls(&mut c, &call(B, "get_table", 1, &["db", "t"])).await;
    assert!(
        reply.is_some(),
        "still serving with the previous certificate"
    );
}

#[test]
fn a_certificate_names_its_user_by_cn_or_by_a_san_of_the_configured_kind() {
    use hms_guard::config::ClientIdentity;
    use rustls::pki_types::pem::PemObject;
    let ca = tls::ca();
    let (pem, _) = tls::leaf(&ca, "mary", &["mary.example.com"]);
    let der = rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
    assert_eq!(
        hms_guard::tls::identity_of(&der, ClientIdentity::Cn).unwrap(),
        "mary"
    );
    assert_eq!(
        hms_guard::tls::identity_of(&der, ClientIdentity::SanDns).unwrap(),
        "mary.example.com"
    );
    let err = hms_guard::tls::identity_of(&der, ClientIdentity::SanEmail).unwrap_err();
    assert!(err.contains("e-mail"), "{err}");
}

/// Certificates whose name is not exactly one readable name of the configured kind without
/// white space or control characters at its ends: every call is refused with the reason and
/// nothing reaches the metastore (before, `admin ` was trimmed to `admin`, and a BMPString CN
/// was skipped for the next one).
#[tokio::test]
async fn a_certificate_name_is_taken_exactly_and_refused_when_ambiguous_or_padded() {
    use rcgen::{BmpString, DnType, DnValue, Ia5String, SanType, TeletexString};
    let utf8 = |n: &str| DnValue::Utf8String(n.into());
    let ca = tls::ca();
    let cn = |values: Vec<DnValue>| {
        let dn = values
            .into_iter()
            .map(|v| (DnType::CommonName, v))
            .collect();
        common::certs::leaf_dn(&ca, dn, vec![])
    };
    let san = |san: SanType| {
        common::certs::leaf_dn(&ca, vec![(DnType::CommonName, utf8("mary"))], vec![san])
    };
    let ia5 = |n: &str| Ia5String::try_from(n).unwrap();
    let cases: Vec<(&str, &str, (String, String), &str)> = vec![
        ("cn", "CN `admin `", cn(vec![utf8("admin ")]), "names rule"),
        (
            "cn",
            "CN `admin` + NBSP",
            cn(vec![utf8("admin\u{a0}")]),
            "names rule",
        ),
        (
            "cn",
            "CN `admin` + tab",
            cn(vec![utf8("admin\t")]),
            "names rule",
        ),
        ("cn", "CN ` admin`", cn(vec![utf8(" admin")]), "names rule"),
        (
            "cn",
            "a BMPString CN, then a UTF8String CN",
            cn(vec![
                DnValue::BmpString(BmpString::try_from("mary").unwrap()),
                utf8("admin"),
            ]),
            "2 common names",
        ),
        (
            "cn",
            "two CNs",
            cn(vec![utf8("admin"), utf8("mary")]),
            "2 common names",
        ),
        (
            "cn",
            "one BMPString CN",
            cn(vec![DnValue::BmpString(
                BmpString::try_from("admin").unwrap(),
            )]),
            "BMPString",
        ),
        (
            "cn",
            "one T61String CN",
            cn(vec![DnValue::TeletexString(
                TeletexString::try_from("admin").unwrap(),
            )]),
            "does not read",
        ),
        (
            "san_dns",
            "SAN DNS `admin `",
            san(SanType::DnsName(ia5("admin "))),
            "names rule",
        ),
        (
            "san_dns",
            "SAN DNS `admin` + tab",
            san(SanType::DnsName(ia5("admin\t"))),
            "names rule",
        ),
        (
            "san_dns",
            "SAN DNS ` admin`",
            san(SanType::DnsName(ia5(" admin"))),
            "names rule",
        ),
        (
            "san_email",
            "SAN email `admin `",
            san(SanType::Rfc822Name(ia5("admin "))),
            "names rule",
        ),
        (
            "san_email",
            "SAN email ` admin`",
            san(SanType::Rfc822Name(ia5(" admin"))),
            "names rule",
        ),
    ];
    for (kind, what, cert, expected) in cases {
        let (up, facts) = (metastore().await, facts());
        let d = tls::dir();
        tls::write_server(&d, &ca);
        let extra = format!("client_identity = \"{kind}\"");
        let proxy = start(&up, &facts, &tls::tls_toml(&d, &extra)).await;
        let mut c = tls::connect(proxy.addr, &ca, Some(&cert)).await.unwrap();
        let reply = tls::call_tls(&mut c, &call(B, "get_table", 1, &["db", "secret"]))
            .await
            .unwrap_or_else(|| panic!("{what}: no answer"));
        let (h, v) = result(&reply);
        assert_eq!(h.kind, MessageType::Exception, "{what}: {v:?}");
        let message = v
            .field(1)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        assert!(
            message.contains("client certificate is refused"),
            "{what}: {message}"
        );
        assert!(message.contains(expected), "{what}: {message}");
        assert!(
            methods(&up).is_empty(),
            "{what}: nothing reached the metastore"
        );
    }
}

/// The names rule follows the configured database: PostgreSQL compares exactly, so a CN
/// `mary ` is another user there (and holds nothing); a mixed-case CN is its own user.
#[tokio::test]
async fn a_named_metastore_database_lets_its_own_comparison_decide() {
    use rcgen::{DnType, DnValue};
    let ca = tls::ca();
    let (up, facts) = (metastore().await, facts());
    let d = tls::dir();
    tls::write_server(&d, &ca);
    let upstream = "metastore_db = \"postgres\"";
    let proxy = start_with_upstream(&up, &facts, upstream, &tls::tls_toml(&d, "")).await;
    for (name, allowed) in [("mary", true), ("mary ", false), ("Mary", false)] {
        let cert = common::certs::leaf_dn(
            &ca,
            vec![(DnType::CommonName, DnValue::Utf8String(name.into()))],
            vec![],
        );
        let mut c = tls::connect(proxy.addr, &ca, Some(&cert)).await.unwrap();
        let reply = tls::call_tls(&mut c, &call(B, "get_table", 1, &["db", "t"]))
            .await
            .unwrap();
        let (h, v) = result(&reply);
        assert_eq!(h.kind, MessageType::Reply, "{name:?}");
        assert_eq!(declared(&v).is_none(), allowed, "{name:?}: {v:?}");
        if !allowed {
            let message = declared(&v).unwrap();
            assert!(message.contains(&format!("user {name} ")), "{message}");
        }
    }
}

/// A claimed user (or trusted claimed group) that breaks the names rule: `set_ugi` is answered
/// with its MetaException naming the rule, the connection stays anonymous, and nothing reaches
/// the metastore (before, `admin ` was accepted: the metastore's database would have given it
/// admin's grants).
#[tokio::test]
async fn set_ugi_refuses_a_name_the_metastores_database_would_compare_loosely() {
    let (up, facts) = (metastore().await, facts());
    let proxy = start(&up, &facts, "[identity]\ntrust_client_groups = true\n").await;
    for (user, groups, expected) in [
        ("admin ", vec![], "user name \"admin \""),
        ("admin\u{a0}", vec![], "names rule: edge_white_space"),
        ("\tadmin", vec![], "names rule: control_character"),
        ("mary", vec!["staff "], "group name \"staff \""),
    ] {
        let mut c = proxy.connect().await;
        let (h, reply) = roundtrip(&mut c, &set_ugi(user, &groups), B, false).await;
        assert_eq!(h.kind, MessageType::Reply, "{user:?}");
        let message = declared(&result(&reply).1).unwrap_or_else(|| panic!("{user:?}: accepted"));
        assert!(message.contains("set_ugi refused"), "{message}");
        assert!(message.contains(expected), "{message}");
        let get = call(B, "get_table", 2, &["db", "secret"]);
        let (_, reply) = roundtrip(&mut c, &get, B, false).await;
        let message = declared(&result(&reply).1).expect("denied");
        assert!(message.contains("anonymous"), "{message}");
    }
    // A name the rule accepts, mixed case included, still works.
    let mut c = proxy.connect().await;
    let (_, reply) = roundtrip(&mut c, &set_ugi("Mary.Smith", &["Staff"]), B, false).await;
    assert!(declared(&result(&reply).1).is_none());
    assert!(methods(&up).is_empty(), "nothing reached the metastore");
}

/// `revoke_privileges` of SELECT on db.t from the user `from`.
fn revoke(from: &str, seqid: i32) -> Vec<u8> {
    let mut w = Writer::new(B);
    w.message("revoke_privileges", MessageType::Call, seqid)
        .struct_begin();
    w.field(Ty::Struct, 1).struct_begin();
    w.field(Ty::List, 1)
        .list_begin(Ty::Struct, 1)
        .struct_begin();
    w.field(Ty::Struct, 1).struct_begin();
    w.field(Ty::I32, 1).i32(3);
    w.field(Ty::String, 2).string(b"db");
    w.field(Ty::String, 3).string(b"t");
    w.struct_end();
    w.field(Ty::String, 2).string(from.as_bytes());
    w.field(Ty::I32, 3).i32(1);
    w.field(Ty::Struct, 4).struct_begin();
    w.field(Ty::String, 1).string(b"SELECT");
    w.struct_end();
    w.struct_end().struct_end().struct_end();
    w.finish(false).to_vec()
}

#[tokio::test]
async fn a_revoke_is_forwarded_only_for_the_recorded_grantor() {
    let (up, facts) = (metastore().await, facts());
    let proxy = start(&up, &facts, "").await;
    let mut c = proxy.connect().await;
    roundtrip(&mut c, &set_ugi("mary", &[]), B, false).await;
    // The metastore records john's SELECT as the admin's: mary may not take it away.
    let (_, msg) = roundtrip(&mut c, &revoke("john", 2), B, false).await;
    let message = declared(&result(&msg).1).expect("denied");
    for part in [
        "permission denied",
        "mary",
        "SELECT on table db.t granted to user:john by user mary",
        "granted by user admin",
    ] {
        assert!(message.contains(part), "{message}");
    }
    assert!(methods(&up).is_empty(), "never forwarded");
    // friend's SELECT is recorded as mary's own grant: forwarded as written.
    let (h, _) = roundtrip(&mut c, &revoke("friend", 3), B, false).await;
    assert_eq!((h.kind, h.seqid), (MessageType::Reply, 3));
    assert_eq!(methods(&up), ["set_ugi", "revoke_privileges"]);
    assert_eq!(up.received.lock().unwrap()[1], revoke("friend", 3));
}

/// A metastore answering `get_table` by the table's name: a result, a declared exception, an
/// undeclared field, an empty result, a `TApplicationException`, or half a reply and a close.
async fn answering_metastore() -> Upstream {
    use hms_guard::codec::reply::{application_exception, AppErrorKind};
    Upstream::start(
        B,
        false,
        Arc::new(|h: &MessageHeader, msg: &[u8]| {
            let has = |x: &str| msg.windows(x.len()).any(|w| w == x.as_bytes());
            let exception =
                |id: i16, m: &str| Value::Struct(vec![(id, Value::Struct(vec![(1, s(m))]))]);
            let table = Value::Struct(vec![(0, Value::Struct(vec![(1, s("t")), (2, s("db"))]))]);
            let result = match h.name.as_str() {
                "set_ugi" => Value::Struct(vec![(0, Value::List(vec![]))]),
                "get_table" if has("gone") => exception(2, "db.gone table not found"),
                "get_table" if has("odd") => exception(9, "?"),
                "get_table" if has("empty") => Value::Struct(vec![]),
                "get_table" if has("crash") => {
                    return Act::Send(
                        application_exception(
                            B,
                            false,
                            &h.name,
                            h.seqid,
                            AppErrorKind::InternalError,
                            "boom",
                        )
                        .to_vec(),
                    )
                }
                "get_table" if has("cut") => {
                    let whole = reply(&h.name, h.seqid, table);
                    return Act::SendThenClose(whole[..whole.len() / 2].to_vec());
                }
                "get_table" => table,
                "drop_table" => Value::Struct(vec![]),
                "get_all_tables" if has("nodb") => exception(1, "no database nodb"),
                "get_all_tables" => {
                    Value::Struct(vec![(0, Value::List(vec![s("t"), s("secret")]))])
                }
                "get_table_objects_by_name" => exception(3, "Could not find database ghost"),
                _ => Value::Struct(vec![(0, s("3.1.0"))]),
            };
            Act::Send(reply(&h.name, h.seqid, result))
        }),
    )
    .await
}

/// The audit lines of a file, once it holds at least `n`.
async fn audit_lines(path: &std::path::Path, n: usize) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if lines.len() >= n || Instant::now() > deadline {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_audit_says_how_the_metastore_answered() {
    let (up, facts) = (answering_metastore().await, facts());
    let path =
        std::env::temp_dir().join(format!("hms-guard-outcomes-{}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let extra = format!("[audit]\nsink = \"file\"\npath = \"{}\"\n", path.display());
    let proxy = start(&up, &facts, &extra).await;
    let mut admin = proxy.connect().await;
    roundtrip(&mut admin, &set_ugi("admin", &[]), B, false).await;
    let cases: [(&str, [&str; 2], &str, Option<&str>); 8] = [
        ("get_table", ["db", "t"], "ok", None),
        (
            "get_table",
            ["db", "gone"],
            "exception",
            Some("NoSuchObjectException"),
        ),
        ("get_table", ["db", "odd"], "exception", Some("undeclared")),
        ("get_table", ["db", "empty"], "no_result", None),
        ("get_table", ["db", "crash"], "application_exception", None),
        ("drop_table", ["db", "t"], "ok", None),
        ("get_all_tables", ["db", ""], "ok", None),
        (
            "get_all_tables",
            ["nodb", ""],
            "exception",
            Some("MetaException"),
        ),
    ];
    for (seqid, (method, args, _, _)) in (10..).zip(&cases) {
        let (h, _) = roundtrip(&mut admin, &call(B, method, seqid, args), B, false).await;
        assert_eq!((h.name.as_str(), h.seqid), (*method, seqid));
    }
    // Half a reply, then the metastore is gone: the client gets the proxy's exception.
    let (h, _) = roundtrip(
        &mut admin,
        &call(B, "get_table", 90, &["db", "cut"]),
        B,
        false,
    )
    .await;
    assert_eq!(h.kind, MessageType::Exception);
    // Denied: never sent.
    let mut mary = proxy.connect().await;
    roundtrip(&mut mary, &set_ugi("mary", &[]), B, false).await;
    roundtrip(
        &mut mary,
        &call(B, "get_table", 91, &["db", "secret"]),
        B,
        false,
    )
    .await;

    let lines = audit_lines(&path, cases.len() + 2).await;
    let outcome = |l: &serde_json::Value| {
        (
            l["method"].as_str().unwrap().to_string(),
            l["upstream_outcome"].as_str().unwrap().to_string(),
            l["upstream_exception"].as_str().map(str::to_string),
        )
    };
    let got: Vec<_> = lines.iter().map(outcome).collect();
    let mut want: Vec<_> = cases
        .iter()
        .map(|(m, _, o, e)| (m.to_string(), o.to_string(), e.map(str::to_string)))
        .collect();
    want.push(("get_table".into(), "transport_error".into(), None));
    want.push(("get_table".into(), "not_sent".into(), None));
    assert_eq!(got, want);
    assert_eq!(lines.last().unwrap()["decision"], "deny");
}

#[tokio::test]
async fn a_listing_of_a_hidden_database_answers_alike_whether_it_exists_or_not() {
    let (up, facts) = (answering_metastore().await, facts());
    let proxy = start(&up, &facts, "").await;
    let objects_by_name = |db: &str| {
        let mut w = Writer::new(B);
        w.message("get_table_objects_by_name", MessageType::Call, 5)
            .struct_begin();
        w.field(Ty::String, 1).string(db.as_bytes());
        w.field(Ty::List, 2).list_begin(Ty::String, 1).string(b"t");
        w.struct_end();
        w.finish(false).to_vec()
    };
    let empty_strings = reply(
        "get_all_tables",
        4,
        Value::Struct(vec![(0, Value::List(vec![]))]),
    );
    let mut empty_tables = Writer::new(B);
    empty_tables
        .message("get_table_objects_by_name", MessageType::Reply, 5)
        .struct_begin();
    empty_tables.field(Ty::List, 0).list_begin(Ty::Struct, 0);
    empty_tables.struct_end();
    let empty_tables = empty_tables.finish(false).to_vec();
    // mary holds SELECT on db.t only: `nodb` and `ghost` are hidden from her, and their
    // metastore's "no such database" reaches her as the listing of a database with nothing
    // she may see.
    let mut mary = proxy.connect().await;
    roundtrip(&mut mary, &set_ugi("mary", &[]), B, false).await;
    let (_, msg) = roundtrip(
        &mut mary,
        &call(B, "get_all_tables", 4, &["nodb"]),
        B,
        false,
    )
    .await;
    assert_eq!(msg, empty_strings);
    let (_, msg) = roundtrip(&mut mary, &objects_by_name("ghost"), B, false).await;
    assert_eq!(msg, empty_tables);
    // Her own database's listing is filtered as before.
    let (_, msg) = roundtrip(&mut mary, &call(B, "get_all_tables", 6, &["db"]), B, false).await;
    assert_eq!(names(&result(&msg).1), ["t"]);
    // An admin sees the metastore's own answer.
    let mut admin = proxy.connect().await;
    roundtrip(&mut admin, &set_ugi("admin", &[]), B, false).await;
    let (_, msg) = roundtrip(
        &mut admin,
        &call(B, "get_all_tables", 4, &["nodb"]),
        B,
        false,
    )
    .await;
    assert_eq!(
        declared(&result(&msg).1).as_deref(),
        Some("no database nodb")
    );
}

#[tokio::test]
async fn a_withheld_reply_is_audited_as_the_denial_the_caller_got() {
    let (up, facts) = (answering_metastore().await, facts());
    let path =
        std::env::temp_dir().join(format!("hms-guard-withheld-{}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let extra = format!("[audit]\nsink = \"file\"\npath = \"{}\"\n", path.display());
    let proxy = start(&up, &facts, &extra).await;
    // mary holds SELECT on db.t: `db.newer` is absent by the facts, so her read is forwarded;
    // the metastore finds the table after all, and she gets the denial instead.
    let mut mary = proxy.connect().await;
    roundtrip(&mut mary, &set_ugi("mary", &[]), B, false).await;
    let (_, msg) = roundtrip(
        &mut mary,
        &call(B, "get_table", 2, &["db", "newer"]),
        B,
        false,
    )
    .await;
    let message = declared(&result(&msg).1).expect("the denial");
    assert!(message.contains("permission denied"), "{message}");
    let lines = audit_lines(&path, 1).await;
    let l = lines.last().unwrap();
    assert_eq!(
        (l["method"].as_str(), l["decision"].as_str()),
        (Some("get_table"), Some("deny"))
    );
    assert_eq!(
        l["upstream_outcome"], "ok",
        "the metastore answered with the table"
    );
    assert!(l["matched"].as_str().unwrap().contains("withheld"), "{l}");
}
