//! TLS on both sides, through sockets: towards clients (the certificate names the caller, a
//! client without one is refused, certificate files reloaded, names taken exactly) and towards
//! the metastore (its certificate checked, a client certificate presented). The SASL transport
//! is in tests/sasl.rs; a TLS handshake that never starts in tests/hostile_clients.rs.

mod common;

use std::time::{Duration, Instant};

use common::authz::*;
use common::tls::client as tls;
use common::tls::upstream as upstream_tls;
use common::*;
use hms_guard::wire::codec::value::Value;
use hms_guard::wire::codec::{MessageType, Protocol};

const B: Protocol = Protocol::Binary;

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
    assert!(metric(&proxy, "hms_guard_tls_handshakes_total{outcome=\"error\"}") >= 3);
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
        metric(&proxy, "hms_guard_tls_reloads_total{outcome=\"ok\"}"),
        1
    );
    // A broken file is refused; the previous certificate stays in use.
    std::fs::write(d.join("server.pem"), "not a certificate").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&proxy, "hms_guard_tls_reloads_total{outcome=\"error\"}") == 0 {
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
        hms_guard::auth::tls::identity_of(&der, ClientIdentity::Cn).unwrap(),
        "mary"
    );
    assert_eq!(
        hms_guard::auth::tls::identity_of(&der, ClientIdentity::SanDns).unwrap(),
        "mary.example.com"
    );
    let err = hms_guard::auth::tls::identity_of(&der, ClientIdentity::SanEmail).unwrap_err();
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
        common::tls::leaf_dn(&ca, dn, vec![])
    };
    let san = |san: SanType| {
        common::tls::leaf_dn(&ca, vec![(DnType::CommonName, utf8("mary"))], vec![san])
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

#[tokio::test]
async fn calls_reach_a_tls_metastore_and_a_wrong_one_is_refused() {
    use upstream_tls::*;
    let up = Upstream::echo(B, false).await;
    let (ca, d) = (ca("metastore CA"), dir());
    let front = front(&ca, up.addr, None).await;
    let mut cfg = config(&[format!("thrift://{front}")]);
    cfg.upstream.tls.ca = write(&d, "ca.pem", &ca.cert.pem());
    cfg.upstream.tls.server_name = "localhost".into();
    let proxy = Proxy::start(cfg).await;
    let mut c = proxy.connect().await;
    let (h, reply) = roundtrip(&mut c, &call(B, "getVersion", 1, &[]), B, false).await;
    assert_eq!((h.kind, h.seqid), (MessageType::Reply, 1));
    assert!(String::from_utf8_lossy(&reply).contains("echo:getVersion"));
    // Idle over TLS (the front's session tickets arrive meanwhile): the connection stays.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (h, _) = roundtrip(&mut c, &call(B, "getVersion", 2, &[]), B, false).await;
    assert_eq!((h.kind, h.seqid), (MessageType::Reply, 2));
    assert!(!proxy.metrics_text().contains("kind=\"closed_idle\""));
    // A metastore whose certificate another CA signed: refused, in the protocol.
    let other = upstream_tls::ca("someone else");
    let impostor = upstream_tls::front(&other, up.addr, None).await;
    let mut cfg = config(&[format!("thrift://{impostor}")]);
    cfg.upstream.tls.ca = write(&d, "ca.pem", &ca.cert.pem());
    cfg.upstream.tls.server_name = "localhost".into();
    let proxy = Proxy::start(cfg).await;
    let mut c = proxy.connect().await;
    let (h, msg) = roundtrip(&mut c, &call(B, "getVersion", 2, &[]), B, false).await;
    assert_eq!(h.kind, MessageType::Exception);
    let text = exception_message(B, &msg, &h);
    assert!(text.contains("TLS"), "{text}");
    assert_eq!(
        *up.connections.lock().unwrap(),
        1,
        "only the genuine front reached it"
    );
}

#[tokio::test]
async fn a_client_certificate_is_presented_to_a_metastore_that_asks() {
    use upstream_tls::*;
    let up = Upstream::echo(B, false).await;
    let (ca, clients, d) = (ca("metastore CA"), ca("client CA"), dir());
    let front = front(&ca, up.addr, Some(&clients)).await;
    let (cert, key) = leaf(&clients, "hms-guard", &[]);
    let mut cfg = config(&[format!("thrift://{front}")]);
    cfg.upstream.tls.ca = write(&d, "ca.pem", &ca.cert.pem());
    cfg.upstream.tls.server_name = "localhost".into();
    cfg.upstream.tls.cert = write(&d, "client.pem", &cert);
    cfg.upstream.tls.key = write(&d, "client.key", &key);
    let proxy = Proxy::start(cfg).await;
    let mut c = proxy.connect().await;
    let (h, _) = roundtrip(&mut c, &call(B, "getVersion", 1, &[]), B, false).await;
    assert_eq!(h.kind, MessageType::Reply);
}
