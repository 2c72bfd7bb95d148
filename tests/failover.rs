//! The metastore side, through sockets: failover between the configured metastores, a
//! connection closed while idle opened again (and the caller's identity sent again on it), a
//! metastore that is unreachable, closes mid-reply or does not answer in time. The same against
//! real metastores: tests/e2e/test_failover.py.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::authz::*;
use common::*;
use hms_guard::wire::codec::value::Value;
use hms_guard::wire::codec::{MessageHeader, MessageType, Protocol};
use tokio::io::AsyncWriteExt;

const B: Protocol = Protocol::Binary;

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
            let mut r = hms_guard::wire::codec::reader::Reader::new(B, m, 64);
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
