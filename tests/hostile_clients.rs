//! What a hostile or broken client cannot make the proxy do, through sockets: hold a slot past
//! the handshake deadline, pass a transport or a request the proxy refuses, smuggle a call the
//! metastore would read differently (schema-exact reading; the differential fuzzer of the
//! reader itself is tests/schema.rs), or hold more than its share of connections and bytes.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use hms_guard::wire::codec::{MessageHeader, MessageType, Protocol};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const B: Protocol = Protocol::Binary;

/// A proxy whose connections must send a whole first call within `ms`.
async fn proxy(up: &Upstream, ms: u64) -> Proxy {
    let mut cfg = config(&[up.uri()]);
    cfg.server.handshake_timeout_ms = ms;
    Proxy::start(cfg).await
}

/// Waits for the proxy to close `s` (up to 5 s); returns how long that took and what arrived.
async fn closed_after(s: &mut TcpStream) -> (Duration, Vec<u8>) {
    let t = Instant::now();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .expect("the proxy closes the connection")
        .ok();
    (t.elapsed(), out)
}

/// `hms_guard_handshake_timeouts_total{kind}` now (`None`: no such series).
fn timeouts(p: &Proxy, kind: &str) -> Option<u64> {
    let series = format!(r#"hms_guard_handshake_timeouts_total{{kind="{kind}"}} "#);
    p.metrics_text()
        .lines()
        .find_map(|l| l.strip_prefix(&series).map(|v| v.parse().unwrap()))
}

/// Enforcing, pinned to an ordinary user, in front of `up`.
fn enforcing(up: &Upstream) -> hms_guard::config::Config {
    let mut cfg = config(&[up.uri()]);
    cfg.authz.mode = hms_guard::config::AuthzMode::Enforce;
    cfg.identity.mode = hms_guard::config::IdentityMode::Pinned;
    cfg.identity.pinned_user = "mary".into();
    // The location index's own reads of the catalog would reach this upstream too.
    cfg.index.enabled = false;
    cfg
}

/// Sends `msg`, expects a PROTOCOL_ERROR exception naming `needle`, then EOF.
async fn refused(proxy: &Proxy, msg: &[u8], needle: &str) {
    let mut c = proxy.connect().await;
    let (h, reply) = roundtrip(&mut c, msg, B, false).await;
    assert_eq!(h.kind, MessageType::Exception, "refused with an exception");
    let text = exception_message(B, &reply, &h);
    assert!(text.contains(needle), "{text:?} should name {needle:?}");
    // TApplicationException type 7 (PROTOCOL_ERROR) ends the message.
    assert_eq!(&reply[reply.len() - 8..], &[8, 0, 2, 0, 0, 0, 7, 0]);
    assert!(read_to_eof(&mut c).await.is_empty(), "connection closed");
}

fn rejected(proxy: &Proxy, kind: &str) -> bool {
    proxy.metrics_text().contains(&format!(
        "hms_guard_rejected_requests_total{{kind=\"{kind}\"}} 1"
    ))
}

// ---------------------------------------------------------------------------------------------
// the deadline before identity (`server.handshake_timeout_ms`): a connection that has not sent a
// whole first call (after its TLS handshake, when the listener has TLS) by then is closed and
// counted by the stage it was in; one that has is held by the idle timeout; slots held by silent
// sockets come free for legitimate clients.

#[tokio::test]
async fn a_silent_connection_is_closed_at_the_handshake_deadline_and_counted() {
    let up = Upstream::echo(B, false).await;
    let p = proxy(&up, 300).await;
    assert_eq!(timeouts(&p, "first_call"), Some(0));
    let mut silent = p.connect().await;
    let (took, got) = closed_after(&mut silent).await;
    assert!(got.is_empty());
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert_eq!(timeouts(&p, "first_call"), Some(1));
    assert_eq!(timeouts(&p, "tls"), Some(0));
    assert!(up.received.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_first_call_cut_short_is_answered_at_the_handshake_deadline_not_the_read_timeout() {
    let up = Upstream::echo(B, false).await;
    let p = proxy(&up, 300).await; // read_timeout_ms stays 60 s
    let mut c = p.connect().await;
    let msg = call(B, "get_table", 4, &["db", "t"]);
    c.write_all(&msg[..msg.len() - 3]).await.unwrap();
    let t = Instant::now();
    let mut buf = Vec::new();
    let (h, reply) = tokio::time::timeout(
        Duration::from_secs(5),
        read_message(&mut c, &mut buf, B, false),
    )
    .await
    .expect("answered before the read timeout")
    .unwrap();
    assert!(t.elapsed() < Duration::from_secs(3));
    assert_eq!((h.kind, h.seqid), (MessageType::Exception, 4));
    assert!(exception_message(B, &reply, &h).contains("not complete within 300 ms"));
    assert_eq!(timeouts(&p, "first_call"), Some(1));
    assert!(up.received.lock().unwrap().is_empty());
}

#[tokio::test]
async fn after_its_first_call_a_connection_is_held_by_the_idle_timeout() {
    let up = Upstream::echo(B, false).await;
    let p = proxy(&up, 300).await;
    let mut c = p.connect().await;
    roundtrip(&mut c, &call(B, "getVersion", 1, &[]), B, false).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (h, _) = roundtrip(&mut c, &call(B, "getVersion", 2, &[]), B, false).await;
    assert_eq!((h.kind, h.seqid), (MessageType::Reply, 2));
    assert_eq!(timeouts(&p, "first_call"), Some(0));
}

#[tokio::test]
async fn slots_held_by_silent_sockets_come_free_for_a_legitimate_client() {
    let up = Upstream::echo(B, false).await;
    let mut cfg = config(&[up.uri()]);
    cfg.server.handshake_timeout_ms = 400;
    cfg.server.max_connections_per_client = 3;
    let p = Proxy::start(cfg).await;
    let mut silent = Vec::new();
    for _ in 0..3 {
        silent.push(p.connect().await);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Every slot of this address is held: a fourth connection is closed at accept.
    let mut refused = p.connect().await;
    let _ = refused.write_all(&call(B, "getVersion", 1, &[])).await;
    let (_, got) = closed_after(&mut refused).await;
    assert!(got.is_empty());
    assert!(p
        .metrics_text()
        .contains(r#"hms_guard_connections_rejected_total{kind="per_client_limit"} 1"#));
    // Within the handshake timeout the silent ones are gone and the client is served.
    let t = Instant::now();
    loop {
        let mut c = p.connect().await;
        let _ = c.write_all(&call(B, "getVersion", 7, &[])).await;
        let mut buf = Vec::new();
        if let Ok(Some((h, _))) = tokio::time::timeout(
            Duration::from_secs(2),
            read_message(&mut c, &mut buf, B, false),
        )
        .await
        {
            assert_eq!((h.kind, h.seqid), (MessageType::Reply, 7));
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(3), "never served");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for s in &mut silent {
        let (_, got) = closed_after(s).await;
        assert!(got.is_empty());
    }
    assert_eq!(timeouts(&p, "first_call"), Some(3));
}

#[tokio::test]
async fn a_tls_handshake_that_never_starts_is_counted_as_tls() {
    use common::tls::{ca, dir, leaf};
    let up = Upstream::echo(B, false).await;
    let d = dir("handshake-tls");
    let ca = ca("test CA");
    let (cert, key) = leaf(&ca, "hms-guard", &["localhost"]);
    std::fs::write(d.join("server.pem"), cert).unwrap();
    std::fs::write(d.join("server.key"), key).unwrap();
    let mut cfg = config(&[up.uri()]);
    cfg.server.handshake_timeout_ms = 300;
    cfg.server.tls.cert = d.join("server.pem").display().to_string();
    cfg.server.tls.key = d.join("server.key").display().to_string();
    let p = Proxy::start(cfg).await;
    let mut silent = p.connect().await;
    // Half a ClientHello record header, then nothing.
    silent.write_all(&[0x16, 0x03]).await.unwrap();
    let (took, _) = closed_after(&mut silent).await;
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert_eq!(timeouts(&p, "tls"), Some(1));
    assert_eq!(timeouts(&p, "first_call"), Some(0));
}

// ---------------------------------------------------------------------------------------------
// transports and requests the proxy refuses

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

// ---------------------------------------------------------------------------------------------
// schema-exact reading: hostile requests are answered with PROTOCOL_ERROR, never forwarded, and
// counted; replies that do not answer the call in flight never reach the client.

#[tokio::test]
async fn differential_requests_are_refused_and_never_forwarded() {
    let up = Upstream::echo(B, false).await;
    let proxy = Proxy::start(enforcing(&up)).await;

    // get_table naming one table, then another: Java keeps the last.
    let mut w = W::binary();
    w.message("get_table", CALL, 1).begin_struct();
    w.field(11, 1).string(b"public_db");
    w.field(11, 2).string(b"open");
    w.field(11, 2).string(b"secret");
    w.end_struct();
    refused(&proxy, &w.bytes(), "field id 2 appears twice").await;
    assert!(rejected(&proxy, "duplicate_field"));

    // abort_txns (passed without a decision): a list<i64> whose header claims strings, so
    // that the rest of the bytes would be read as a second call.
    let mut w = W::binary();
    w.message("abort_txns", CALL, 2).begin_struct();
    w.field(12, 1).begin_struct();
    w.field(15, 1).list(11, 1).string(b"xxxx");
    w.end_struct();
    w.end_struct();
    refused(&proxy, &w.bytes(), "where the schema declares i64").await;
    assert!(rejected(&proxy, "field_type"));

    // A listing sent as ONEWAY: the metastore would answer it, unfiltered, out of turn.
    let mut w = W::binary();
    w.message("get_all_tables", ONEWAY, 3)
        .begin_struct()
        .field(11, 1)
        .string(b"db")
        .end_struct();
    refused(&proxy, &w.bytes(), "message type Oneway").await;
    assert!(rejected(&proxy, "message_type"));

    // A bool that is neither 0 nor 1 (drop_table's deleteData).
    let mut w = W::binary();
    w.message("drop_table", CALL, 4).begin_struct();
    w.field(11, 1).string(b"db").field(11, 2).string(b"t");
    w.b.extend([2, 0, 3, 7]);
    w.end_struct();
    refused(&proxy, &w.bytes(), "bool encoded as 7").await;

    // An unknown method sent as ONEWAY: its "unknown method" answer would come out of turn.
    let mut w = W::binary();
    w.message("no_such_method", ONEWAY, 5)
        .begin_struct()
        .end_struct();
    refused(&proxy, &w.bytes(), "message type Oneway").await;

    assert!(
        up.received.lock().unwrap().is_empty(),
        "nothing refused reached the metastore"
    );
    // And the proxy serves the next client.
    let mut c = proxy.connect().await;
    let (h, _) = roundtrip(&mut c, &call(B, "getVersion", 9, &[]), B, false).await;
    assert_eq!(h.kind, MessageType::Reply);
}

#[tokio::test]
async fn a_reply_that_answers_another_call_never_reaches_the_client() {
    // The metastore answers with the wrong sequence id.
    let up = Upstream::start(
        B,
        false,
        Arc::new(|h: &MessageHeader, _: &[u8]| {
            let seqid = if h.name == "set_ugi" {
                h.seqid
            } else {
                h.seqid + 1
            };
            Act::Send(string_reply(B, &h.name, seqid, "stale"))
        }),
    )
    .await;
    let proxy = Proxy::start(enforcing(&up)).await;
    let mut c = proxy.connect().await;
    let (h, reply) = roundtrip(&mut c, &call(B, "getVersion", 4, &[]), B, false).await;
    assert_eq!((h.kind, h.seqid), (MessageType::Exception, 4));
    let text = exception_message(B, &reply, &h);
    assert!(text.contains("sequence id 5"), "{text}");
    assert!(!String::from_utf8_lossy(&reply).contains("stale"));
    assert!(read_to_eof(&mut c).await.is_empty(), "connection closed");
    assert!(proxy
        .metrics_text()
        .contains("hms_guard_mismatched_replies_total 1"));
}

// ---------------------------------------------------------------------------------------------
// bounds: slow clients, connections, bytes held

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
async fn connections_per_client_address_are_bounded() {
    let up = Upstream::echo(B, false).await;
    let mut cfg = config(&[up.uri()]);
    cfg.server.max_connections_per_client = 2;
    let proxy = Proxy::start(cfg).await;
    let mut a = proxy.connect().await;
    let mut b = proxy.connect().await;
    for c in [&mut a, &mut b] {
        let (h, _) = roundtrip(c, &call(B, "getVersion", 1, &[]), B, false).await;
        assert_eq!(h.kind, MessageType::Reply);
    }
    let mut third = proxy.connect().await;
    let _ = third.write_all(&call(B, "getVersion", 1, &[])).await;
    assert!(read_to_eof(&mut third).await.is_empty(), "third closed");
    assert!(proxy
        .metrics_text()
        .contains(r#"hms_guard_connections_rejected_total{kind="per_client_limit"} 1"#));
    // A place frees when a connection closes.
    drop(a);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut again = proxy.connect().await;
    let (h, _) = roundtrip(&mut again, &call(B, "getVersion", 1, &[]), B, false).await;
    assert_eq!(h.kind, MessageType::Reply);
}

#[tokio::test]
async fn anonymous_connections_send_small_calls_only() {
    let up = Upstream::echo(B, false).await;
    let mut cfg = config(&[up.uri()]);
    cfg.authz.mode = hms_guard::config::AuthzMode::Enforce;
    // The location index's own reads of the catalog would reach this upstream too.
    cfg.index.enabled = false;
    cfg.limits.max_anonymous_request_bytes = 1024;
    let proxy = Proxy::start(cfg).await;
    let mut c = proxy.connect().await;
    let big = call(B, "get_table", 3, &["db", &"t".repeat(64 * 1024)]);
    c.write_all(&big).await.unwrap();
    let mut buf = Vec::new();
    let (h, reply) = read_message(&mut c, &mut buf, B, false).await.unwrap();
    assert_eq!((h.kind, h.seqid), (MessageType::Exception, 3));
    assert!(exception_message(B, &reply, &h).contains("1024"));
    assert!(up.received.lock().unwrap().is_empty());
}

#[tokio::test]
async fn request_bytes_held_over_all_connections_are_bounded() {
    let up = Upstream::echo(B, false).await;
    let mut cfg = config(&[up.uri()]);
    cfg.authz.mode = hms_guard::config::AuthzMode::Enforce;
    cfg.identity.mode = hms_guard::config::IdentityMode::Pinned;
    cfg.identity.pinned_user = "mary".into();
    cfg.limits.max_request_bytes = 32 * 1024;
    cfg.limits.max_held_request_bytes = 32 * 1024;
    let proxy = Proxy::start(cfg).await;
    // A holds most of the budget with a call that has not finished arriving.
    let big = call(B, "getMetaConf", 1, &[&"k".repeat(20_000)]);
    let mut a = proxy.connect().await;
    a.write_all(&big[..big.len() - 10]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // B's call does not fit: refused as busy, not queued without bound.
    let mut b = proxy.connect().await;
    let small = call(B, "getMetaConf", 2, &["k"]);
    b.write_all(&small[..small.len() - 2]).await.unwrap();
    let mut buf = Vec::new();
    let (h, reply) = tokio::time::timeout(
        Duration::from_secs(10),
        read_message(&mut b, &mut buf, B, false),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!((h.kind, h.seqid), (MessageType::Exception, 2));
    assert!(exception_message(B, &reply, &h).contains("request bytes"));
    // A finishes and is served; then the budget is free again.
    let (h, _) = roundtrip(&mut a, &big[big.len() - 10..], B, false).await;
    assert_eq!((h.kind, h.seqid), (MessageType::Reply, 1));
    let mut c = proxy.connect().await;
    let (h, _) = roundtrip(&mut c, &small, B, false).await;
    assert_eq!(h.kind, MessageType::Reply);
    assert!(proxy
        .metrics_text()
        .contains(r#"hms_guard_client_errors_total{kind="busy"} 1"#));
}
