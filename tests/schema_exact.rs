//! Socket tests of schema-exact reading and the bounds under attack: hostile requests are
//! answered with PROTOCOL_ERROR, never forwarded, and counted; replies that do not answer the
//! call in flight never reach the client.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use hms_guard::codec::{MessageHeader, MessageType, Protocol};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const B: Protocol = Protocol::Binary;

/// Enforcing, pinned to an ordinary user, in front of `up`.
fn enforcing(up: &Upstream) -> hms_guard::config::Config {
    let mut cfg = config(&[up.uri()]);
    cfg.authz.mode = hms_guard::config::AuthzMode::Enforce;
    cfg.identity.mode = hms_guard::config::IdentityMode::Pinned;
    cfg.identity.pinned_user = "mary".into();
    cfg
}

async fn read_to_eof(c: &mut tokio::net::TcpStream) -> Vec<u8> {
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut rest)).await;
    rest
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
