//! The transparent proxy, through sockets (authorization off): calls and replies byte for byte
//! in every transport, one-way calls, many connections, large replies, graceful shutdown, the
//! admin endpoints.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use hms_guard::wire::codec::{MessageHeader, MessageType, Protocol};
use tokio::io::AsyncWriteExt;

const B: Protocol = Protocol::Binary;

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
