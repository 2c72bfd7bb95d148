//! Socket tests: the proxy in-process against scripted upstream metastores.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use hms_guard::codec::{MessageHeader, MessageType, Protocol};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const B: Protocol = Protocol::Binary;

async fn proxy_to(uris: &[String]) -> Proxy {
    Proxy::start(config(uris)).await
}

/// Reads until EOF (or 5 s); returns what arrived.
async fn read_to_eof(s: &mut tokio::net::TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    out
}

#[tokio::test]
async fn passes_calls_and_replies_byte_for_byte() {
    // The upstream answers with a reply full of fields no IDL of ours knows.
    let reply = {
        let mut w = W::binary();
        w.message("get_table", REPLY, 9)
            .begin_struct()
            .field(12, 0)
            .begin_struct();
        w.field(11, 1)
            .string(b"t")
            .field(11, 77)
            .string(b"field from the future");
        w.field(13, 200)
            .map(8, 12, 1)
            .i32(5)
            .begin_struct()
            .field(10, 3)
            .i64(1)
            .end_struct();
        w.end_struct().end_struct();
        w.bytes()
    };
    let r = reply.clone();
    let up = Upstream::start(
        B,
        false,
        Arc::new(move |_: &MessageHeader, _: &[u8]| Act::Send(r.clone())),
    )
    .await;
    let proxy = proxy_to(&[up.uri()]).await;
    let mut c = proxy.connect().await;
    let call = {
        let mut w = W::binary();
        w.message("get_table", CALL, 9).begin_struct();
        w.field(11, 1)
            .string(b"db")
            .field(11, 2)
            .string(b"t")
            .field(15, 99)
            .list(11, 1)
            .string(b"x");
        w.end_struct();
        w.bytes()
    };
    let (h, got) = roundtrip(&mut c, &call, B, false).await;
    assert_eq!(h.seqid, 9);
    assert_eq!(got, reply, "reply bytes unchanged");
    assert_eq!(
        up.received.lock().unwrap().as_slice(),
        &[call],
        "request bytes unchanged"
    );
}

#[tokio::test]
async fn unknown_methods_pass_and_are_labelled_other() {
    let up = Upstream::echo(B, false).await;
    let proxy = proxy_to(&[up.uri()]).await;
    let mut c = proxy.connect().await;
    let (h, msg) = roundtrip(
        &mut c,
        &call(B, "get_table_from_hive_9", 1, &["a"]),
        B,
        false,
    )
    .await;
    assert_eq!(h.name, "get_table_from_hive_9");
    assert_eq!(
        msg,
        string_reply(B, "get_table_from_hive_9", 1, "echo:get_table_from_hive_9")
    );
    let (_, _) = roundtrip(&mut c, &call(B, "getVersion", 2, &[]), B, false).await;
    let text = proxy.metrics_text();
    assert!(
        text.contains(r#"hms_guard_requests_total{method="other",decision="pass"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"hms_guard_requests_total{method="getVersion",decision="pass"} 1"#),
        "{text}"
    );
    assert!(
        !text.contains("get_table_from_hive_9"),
        "label values stay bounded"
    );
}

#[tokio::test]
async fn fails_over_to_the_second_uri() {
    let dead = dead_port().await;
    let up = Upstream::echo(B, false).await;
    let proxy = proxy_to(&[format!("thrift://{dead}"), up.uri()]).await;
    let mut c = proxy.connect().await;
    let (h, _) = roundtrip(&mut c, &call(B, "get_all_databases", 4, &[]), B, false).await;
    assert_eq!((h.kind, h.seqid), (MessageType::Reply, 4));
    assert_eq!(*up.connections.lock().unwrap(), 1);
}

#[tokio::test]
async fn no_upstream_reachable_is_an_exception_reply() {
    let (d1, d2) = (dead_port().await, dead_port().await);
    let proxy = proxy_to(&[format!("thrift://{d1}"), format!("thrift://{d2}")]).await;
    let mut c = proxy.connect().await;
    let (h, msg) = roundtrip(&mut c, &call(B, "get_database", 11, &["db"]), B, false).await;
    assert_eq!(
        (h.kind, h.seqid, h.name.as_str()),
        (MessageType::Exception, 11, "get_database")
    );
    let m = exception_message(B, &msg, &h);
    assert!(
        m.contains("no metastore reachable")
            && m.contains(&d1.to_string())
            && m.contains(&d2.to_string()),
        "{m}"
    );
    assert!(proxy
        .metrics_text()
        .contains(r#"hms_guard_upstream_errors_total{kind="connect"} 1"#));
}

#[tokio::test]
async fn upstream_closing_mid_reply_gives_an_exception_reply() {
    let up = Upstream::start(
        B,
        false,
        Arc::new(|h: &MessageHeader, _: &[u8]| {
            let full = string_reply(B, &h.name, h.seqid, "a value that will be cut");
            Act::SendThenClose(full[..full.len() - 5].to_vec())
        }),
    )
    .await;
    let proxy = proxy_to(&[up.uri()]).await;
    let mut c = proxy.connect().await;
    let (h, msg) = roundtrip(&mut c, &call(B, "get_table", 21, &["db", "t"]), B, false).await;
    assert_eq!((h.kind, h.seqid), (MessageType::Exception, 21));
    let m = exception_message(B, &msg, &h);
    assert!(
        m.contains("closed the connection before the reply to get_table was complete"),
        "{m}"
    );
    // Then the pair is closed.
    assert!(read_to_eof(&mut c).await.is_empty());
}

#[tokio::test]
async fn upstream_timeout_gives_an_exception_reply() {
    let up = Upstream::start(B, false, Arc::new(|_: &MessageHeader, _: &[u8]| Act::Hang)).await;
    let mut cfg = config(&[up.uri()]);
    cfg.upstream.read_timeout_ms = 300;
    let proxy = Proxy::start(cfg).await;
    let mut c = proxy.connect().await;
    let t = Instant::now();
    let (h, msg) = roundtrip(
        &mut c,
        &call(B, "get_partitions", 5, &["db", "t"]),
        B,
        false,
    )
    .await;
    assert!(t.elapsed() >= Duration::from_millis(300) && t.elapsed() < Duration::from_secs(5));
    assert_eq!((h.kind, h.seqid), (MessageType::Exception, 5));
    let m = exception_message(B, &msg, &h);
    assert!(
        m.contains("did not answer get_partitions within 300 ms"),
        "{m}"
    );
}

#[tokio::test]
async fn oneway_calls_get_no_reply_and_the_connection_goes_on() {
    let up = Upstream::echo(B, false).await;
    let proxy = proxy_to(&[up.uri()]).await;
    let mut c = proxy.connect().await;
    let mut w = W::binary();
    w.message("shutdown", ONEWAY, 1).begin_struct().end_struct();
    let oneway = w.bytes();
    c.write_all(&oneway).await.unwrap();
    // No reply to the oneway call: the next thing read is the reply to the next call.
    let (h, _) = roundtrip(&mut c, &call(B, "getVersion", 2, &[]), B, false).await;
    assert_eq!((h.name.as_str(), h.seqid), ("getVersion", 2));
    let rec = up.received.lock().unwrap();
    assert_eq!(rec[0], oneway);
    assert_eq!(rec.len(), 2);
}

#[tokio::test]
async fn many_concurrent_connections() {
    let up = Upstream::echo(B, false).await;
    let proxy = proxy_to(&[up.uri()]).await;
    let mut tasks = Vec::new();
    for conn in 0..200 {
        let addr = proxy.addr;
        tasks.push(tokio::spawn(async move {
            let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
            for i in 0..20 {
                let name = format!("m{}", (conn + i) % 7);
                let (h, msg) = roundtrip(&mut c, &call(B, &name, i, &["x"]), B, false).await;
                assert_eq!((h.name.as_str(), h.seqid), (name.as_str(), i));
                assert_eq!(msg, string_reply(B, &name, i, &format!("echo:{name}")));
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(up.received.lock().unwrap().len(), 200 * 20);
    assert_eq!(
        *up.connections.lock().unwrap(),
        200,
        "one upstream connection per client"
    );
}

#[tokio::test]
async fn compact_and_framed_transports_pass_through() {
    for (p, f) in [
        (Protocol::Compact, false),
        (B, true),
        (Protocol::Compact, true),
    ] {
        let up = Upstream::echo(p, f).await;
        let proxy = proxy_to(&[up.uri()]).await;
        let mut c = proxy.connect().await;
        for seq in 1..4 {
            let msg = call(p, "get_table", seq, &["db", "t"]);
            let msg = if f { framed(&msg) } else { msg };
            let (h, got) = roundtrip(&mut c, &msg, p, f).await;
            assert_eq!(h.seqid, seq);
            let want = string_reply(p, "get_table", seq, "echo:get_table");
            assert_eq!(got, if f { framed(&want) } else { want });
            assert_eq!(up.received.lock().unwrap().last().unwrap(), &msg);
        }
    }
}

#[tokio::test]
async fn rejected_transports_are_closed_and_counted() {
    let up = Upstream::echo(B, false).await;
    let proxy = proxy_to(&[up.uri()]).await;
    let starts: [(&[u8], &str); 4] = [
        (&[0x16, 0x03, 0x01, 0x00, 0xa5, 0x01, 0x00], "tls"),
        (b"\x01\x00\x00\x00\x05PLAIN", "sasl"),
        (b"GET / HTTP/1.1\r\n\r\n", "http"),
        (b"\x00\x00\x00\x07set_ugi\x01", "non_strict_binary"),
    ];
    for (bytes, label) in starts {
        let mut c = proxy.connect().await;
        c.write_all(bytes).await.unwrap();
        let got = read_to_eof(&mut c).await;
        if label == "sasl" {
            // A SASL client is told why, in its own negotiation format: BAD + the reason.
            assert_eq!(got[0], 3, "status BAD");
            let n = u32::from_be_bytes(got[1..5].try_into().unwrap()) as usize;
            let reason = String::from_utf8(got[5..].to_vec()).unwrap();
            assert_eq!(reason.len(), n);
            assert!(
                reason.contains("SASL (Kerberos) is not enabled"),
                "{reason}"
            );
        } else {
            assert!(got.is_empty(), "{label}: closed without bytes");
        }
        let text = proxy.metrics_text();
        assert!(
            text.contains(&format!(
                r#"hms_guard_rejected_transports_total{{transport="{label}"}} 1"#
            )),
            "{label}: {text}"
        );
    }
    assert_eq!(
        *up.connections.lock().unwrap(),
        0,
        "nothing reached the metastore"
    );
}

#[tokio::test]
async fn hostile_requests_get_a_protocol_error_and_the_proxy_keeps_serving() {
    let up = Upstream::echo(B, false).await;
    let proxy = proxy_to(&[up.uri()]).await;
    // A list claiming 2^31-1 elements.
    let mut w = W::binary();
    w.message("add_partitions", CALL, 3)
        .begin_struct()
        .field(15, 1)
        .list(12, i32::MAX);
    let mut c = proxy.connect().await;
    let (h, msg) = roundtrip(&mut c, &w.bytes(), B, false).await;
    assert_eq!((h.kind, h.seqid), (MessageType::Exception, 3));
    assert!(exception_message(B, &msg, &h).contains("cannot fit"));
    assert!(
        read_to_eof(&mut c).await.is_empty(),
        "connection closed after"
    );
    // 100-deep nesting.
    let mut w = W::binary();
    w.message("create_table", CALL, 4).begin_struct();
    for _ in 0..100 {
        w.field(12, 1).begin_struct();
    }
    let mut c = proxy.connect().await;
    let (h, msg) = roundtrip(&mut c, &w.bytes(), B, false).await;
    assert_eq!((h.kind, h.seqid), (MessageType::Exception, 4));
    assert!(exception_message(B, &msg, &h).contains("nesting deeper than 64"));
    // A request over the size limit.
    let mut cfg = config(&[up.uri()]);
    cfg.limits.max_request_bytes = 1024;
    let small = Proxy::start(cfg).await;
    let mut c = small.connect().await;
    let big = call(B, "alter_table", 5, &["db", "t", &"x".repeat(4096)]);
    c.write_all(&big).await.unwrap();
    let mut buf = Vec::new();
    let (h, msg) = read_message(&mut c, &mut buf, B, false).await.unwrap();
    assert_eq!((h.kind, h.seqid), (MessageType::Exception, 5));
    assert!(exception_message(B, &msg, &h).contains("1024"));
    assert!(small
        .metrics_text()
        .contains(r#"hms_guard_client_errors_total{kind="too_large"} 1"#));
    // Nothing hostile reached the metastore, and the proxy still serves.
    assert!(up.received.lock().unwrap().is_empty());
    let mut c = proxy.connect().await;
    let (h, _) = roundtrip(&mut c, &call(B, "getVersion", 1, &[]), B, false).await;
    assert_eq!(h.kind, MessageType::Reply);
}

#[tokio::test]
async fn slow_client_is_timed_out() {
    let up = Upstream::echo(B, false).await;
    let mut cfg = config(&[up.uri()]);
    cfg.server.read_timeout_ms = 300;
    let proxy = Proxy::start(cfg).await;
    let mut c = proxy.connect().await;
    let msg = call(B, "get_table", 8, &["db", "t"]);
    c.write_all(&msg[..msg.len() - 3]).await.unwrap();
    let t = Instant::now();
    let mut buf = Vec::new();
    let (h, reply) = tokio::time::timeout(
        Duration::from_secs(5),
        read_message(&mut c, &mut buf, B, false),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(t.elapsed() >= Duration::from_millis(250));
    assert_eq!((h.kind, h.seqid), (MessageType::Exception, 8));
    assert!(exception_message(B, &reply, &h).contains("not complete within 300 ms"));
    assert!(up.received.lock().unwrap().is_empty());
}

#[tokio::test]
async fn large_reply_streams_through() {
    // 64 MiB reply: a list of 64 KiB strings; the upstream writes it in one go.
    let mut w = W::binary();
    w.message("get_partitions", REPLY, 1)
        .begin_struct()
        .field(15, 0)
        .list(11, 1024);
    let chunk = vec![b'p'; 64 * 1024];
    for _ in 0..1024 {
        w.string(&chunk);
    }
    w.end_struct();
    let reply = w.bytes();
    let r = reply.clone();
    let up = Upstream::start(
        B,
        false,
        Arc::new(move |h: &MessageHeader, _: &[u8]| match h.name.as_str() {
            "get_partitions" => Act::Send(r.clone()),
            _ => Act::Send(string_reply(B, &h.name, h.seqid, "small")),
        }),
    )
    .await;
    let proxy = proxy_to(&[up.uri()]).await;
    let mut c = proxy.connect().await;
    let (h, got) = roundtrip(
        &mut c,
        &call(B, "get_partitions", 1, &["db", "t"]),
        B,
        false,
    )
    .await;
    assert_eq!(h.kind, MessageType::Reply);
    assert!(got == reply, "64 MiB reply identical");
    let (h, _) = roundtrip(&mut c, &call(B, "getVersion", 2, &[]), B, false).await;
    assert_eq!(h.seqid, 2);
}

#[tokio::test]
async fn an_idle_upstream_closed_is_opened_again_at_the_next_call() {
    // The upstream answers one call per connection and then closes it while idle (a
    // metastore restart): the client's connection stays, its next call gets a new upstream
    // connection.
    let up = Upstream::start(
        B,
        false,
        Arc::new(|h: &MessageHeader, _: &[u8]| {
            Act::SendThenClose(string_reply(B, &h.name, h.seqid, "bye"))
        }),
    )
    .await;
    let proxy = proxy_to(&[up.uri()]).await;
    let mut c = proxy.connect().await;
    for seqid in 1..=3 {
        let (h, _) = roundtrip(&mut c, &call(B, "getVersion", seqid, &[]), B, false).await;
        assert_eq!((h.kind, h.seqid), (MessageType::Reply, seqid));
        // Let the proxy see the close while the client is idle.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !proxy.metrics_text().contains(&format!(
            "hms_guard_upstream_errors_total{{kind=\"closed_idle\"}} {seqid}"
        )) {
            assert!(Instant::now() < deadline, "{}", proxy.metrics_text());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert_eq!(*up.connections.lock().unwrap(), 3);
}

#[tokio::test]
async fn an_idle_upstream_gone_fails_over_at_the_next_call() {
    // The first metastore goes away while the client is idle; the next call goes to the
    // second, on the same client connection.
    let first = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let first_addr = first.local_addr().unwrap();
    let second = Upstream::echo(B, false).await;
    let proxy = proxy_to(&[format!("thrift://{first_addr}"), second.uri()]).await;
    let mut c = proxy.connect().await;
    let serve_one = tokio::spawn(async move {
        let (mut s, _) = first.accept().await.unwrap();
        let mut buf = Vec::new();
        let (h, _) = read_message(&mut s, &mut buf, B, false).await.unwrap();
        s.write_all(&string_reply(B, &h.name, h.seqid, "first"))
            .await
            .unwrap();
        // Then the metastore dies: its connection and its listener are gone.
        drop(s);
        drop(first);
    });
    let (_, reply) = roundtrip(&mut c, &call(B, "getVersion", 1, &[]), B, false).await;
    assert!(String::from_utf8_lossy(&reply).contains("first"));
    serve_one.await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (h, reply) = roundtrip(&mut c, &call(B, "getVersion", 2, &[]), B, false).await;
    assert_eq!((h.kind, h.seqid), (MessageType::Reply, 2));
    assert!(String::from_utf8_lossy(&reply).contains("echo:getVersion"));
    assert_eq!(*second.connections.lock().unwrap(), 1);
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_calls() {
    // The upstream takes 500 ms to answer.
    let up = Upstream::start(
        B,
        false,
        Arc::new(|h: &MessageHeader, _: &[u8]| {
            std::thread::sleep(Duration::from_millis(500));
            Act::Send(string_reply(B, &h.name, h.seqid, "late"))
        }),
    )
    .await;
    let proxy = proxy_to(&[up.uri()]).await;
    let mut busy = proxy.connect().await;
    let mut idle = proxy.connect().await;
    let (h, _) = roundtrip(&mut idle, &call(B, "getVersion", 1, &[]), B, false).await;
    assert_eq!(h.kind, MessageType::Reply);
    busy.write_all(&call(B, "get_table", 2, &["db", "t"]))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    proxy.shutdown.send(true).unwrap();
    // The in-flight call still gets its reply; the idle connection is closed.
    let mut buf = Vec::new();
    let (h, _) = read_message(&mut busy, &mut buf, B, false)
        .await
        .expect("reply after shutdown began");
    assert_eq!((h.kind, h.seqid), (MessageType::Reply, 2));
    assert!(read_to_eof(&mut idle).await.is_empty());
    tokio::time::timeout(Duration::from_secs(5), proxy.done)
        .await
        .unwrap()
        .unwrap();
    assert!(
        tokio::net::TcpStream::connect(proxy.addr).await.is_err(),
        "listener closed"
    );
}

#[tokio::test]
async fn connection_limit_closes_extra_connections() {
    let up = Upstream::echo(B, false).await;
    let mut cfg = config(&[up.uri()]);
    cfg.server.max_connections = 2;
    let proxy = Proxy::start(cfg).await;
    let mut a = proxy.connect().await;
    let mut b = proxy.connect().await;
    roundtrip(&mut a, &call(B, "getVersion", 1, &[]), B, false).await;
    roundtrip(&mut b, &call(B, "getVersion", 1, &[]), B, false).await;
    let mut c = proxy.connect().await;
    let _ = c.write_all(&call(B, "getVersion", 1, &[])).await;
    assert!(read_to_eof(&mut c).await.is_empty());
    assert!(proxy
        .metrics_text()
        .contains(r#"hms_guard_connections_rejected_total{kind="limit"} 1"#));
    drop(a);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut d = proxy.connect().await;
    roundtrip(&mut d, &call(B, "getVersion", 1, &[]), B, false).await;
}

#[tokio::test]
async fn admin_endpoints() {
    let up = Upstream::echo(B, false).await;
    let proxy = proxy_to(&[up.uri()]).await;
    let mut c = proxy.connect().await;
    roundtrip(&mut c, &call(B, "get_table", 1, &["db", "t"]), B, false).await;
    let (status, body) = http_get(proxy.admin, "/metrics").await;
    assert_eq!(status, 200);
    for needle in [
        r#"hms_guard_requests_total{method="get_table",decision="pass"} 1"#,
        r#"hms_guard_request_duration_seconds_count{method="get_table"} 1"#,
        r#"hms_guard_upstream_duration_seconds_count{method="get_table"} 1"#,
        r#"hms_guard_connections_total{transport="binary"} 1"#,
        "hms_guard_connections_active 1",
        r#"hms_guard_proxied_bytes_total{direction="client_to_upstream"}"#,
        r#"hms_guard_proxied_bytes_total{direction="upstream_to_client"}"#,
        "hms_guard_upstream_connects_total 1",
    ] {
        assert!(body.contains(needle), "missing {needle} in\n{body}");
    }
    assert_eq!(http_get(proxy.admin, "/healthz").await.0, 200);
    let (status, body) = http_get(proxy.admin, "/readyz").await;
    assert_eq!(status, 200, "{body}");
    // With no metastore reachable, not ready.
    let dead = dead_port().await;
    let lonely = proxy_to(&[format!("thrift://{dead}")]).await;
    let (status, body) = http_get(lonely.admin, "/readyz").await;
    assert_eq!(status, 503);
    assert!(body.contains("no metastore reachable"), "{body}");
    assert!(lonely.metrics_text().contains("hms_guard_upstream_up 0"));
    assert_eq!(http_get(proxy.admin, "/nope").await.0, 404);
}

// ---------------------------------------------------------------------------------------------
// TLS towards the metastore: a TLS-terminating front (as stunnel or a load balancer) in front of
// a scripted metastore.

mod upstream_tls {
    use super::*;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    pub use common::certs::{ca, leaf, Ca};

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
        common::certs::dir("upstream-tls")
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

#[tokio::test]
async fn in_pass_through_the_clients_own_set_ugi_is_sent_again_on_a_new_upstream_connection() {
    // Authorization off: the proxy does not own identity, but a metastore connection replaced
    // while the client was idle must not lose the user the client named.
    let up = Upstream::start(
        B,
        false,
        Arc::new(|h: &MessageHeader, _: &[u8]| {
            let r = string_reply(B, &h.name, h.seqid, "ok");
            if h.name == "set_ugi" {
                Act::Send(r)
            } else {
                Act::SendThenClose(r)
            }
        }),
    )
    .await;
    let proxy = proxy_to(&[up.uri()]).await;
    let mut c = proxy.connect().await;
    roundtrip(&mut c, &call(B, "set_ugi", 1, &["mary"]), B, false).await;
    for seqid in [2, 3] {
        let (h, _) = roundtrip(&mut c, &call(B, "getVersion", seqid, &[]), B, false).await;
        assert_eq!((h.kind, h.seqid), (MessageType::Reply, seqid));
        let deadline = Instant::now() + Duration::from_secs(5);
        while !proxy.metrics_text().contains(&format!(
            "hms_guard_upstream_errors_total{{kind=\"closed_idle\"}} {}",
            seqid - 1
        )) {
            assert!(Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let names: Vec<String> = up
        .received
        .lock()
        .unwrap()
        .iter()
        .map(|m| {
            let mut r = hms_guard::codec::reader::Reader::new(B, m, 64);
            r.message_begin().unwrap().name
        })
        .collect();
    assert_eq!(
        names,
        ["set_ugi", "getVersion", "set_ugi", "getVersion"],
        "the client's set_ugi went again before its next call"
    );
    assert!(up.received.lock().unwrap()[2]
        .windows(4)
        .any(|w| w == b"mary"));
}
