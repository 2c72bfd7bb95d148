//! Socket tests of the deadline before identity (`server.handshake_timeout_ms`): a connection
//! that has not sent a whole first call (after its TLS handshake, when the listener has TLS) by
//! then is closed and counted by the stage it was in; a connection that has sent one is held by
//! the idle timeout as before; slots held by silent sockets come free for legitimate clients.

mod common;

use std::time::{Duration, Instant};

use common::*;
use hms_guard::codec::{MessageType, Protocol};
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
    use common::certs::{ca, dir, leaf};
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
