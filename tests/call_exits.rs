//! Every way a call can end goes through the one finish: each exit counts the call once in
//! `hms_guard_requests_total` (under the label that says how it ended) and writes its audit
//! line where the call is audited. Socket tests: the proxy in-process, enforcing, in front of
//! a scripted metastore, with the scripted facts of tests/common/authz.rs.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::authz::{audit_lines, facts, set_ugi, start};
use common::tls::client as tls;
use common::tls::leaf;
use common::*;
use hms_guard::wire::codec::writer::Writer;
use hms_guard::wire::codec::{MessageHeader, MessageType, Protocol, Ty};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const B: Protocol = Protocol::Binary;

/// A reply to `get_table`: a table struct padded to `pad` bytes (a large reply takes many
/// writes to reach the client).
fn table_reply(seqid: i32, pad: usize) -> Vec<u8> {
    let mut w = Writer::new(B);
    w.message("get_table", MessageType::Reply, seqid)
        .struct_begin();
    w.field(Ty::Struct, 0).struct_begin();
    w.field(Ty::String, 1).string(b"t");
    w.field(Ty::String, 2).string(b"db");
    w.field(Ty::String, 3).string(b"admin");
    w.field(Ty::String, 4).string(&vec![b'x'; pad]);
    w.struct_end();
    w.struct_end();
    w.finish(false).to_vec()
}

/// The scripted metastore: `get_table` of `db.cut` gets half a reply and the connection
/// closes; of `db.big`, a 16 MB reply after 300 ms; anything else a small reply.
async fn metastore() -> Upstream {
    Upstream::start(
        B,
        false,
        Arc::new(|h: &MessageHeader, msg: &[u8]| {
            let named = |t: &str| msg.windows(t.len()).any(|w| w == t.as_bytes());
            match h.name.as_str() {
                "set_ugi" => {
                    let mut w = Writer::new(B);
                    w.message("set_ugi", MessageType::Reply, h.seqid)
                        .struct_begin();
                    w.field(Ty::List, 0).list_begin(Ty::String, 0);
                    w.struct_end();
                    Act::Send(w.finish(false).to_vec())
                }
                "get_table" if named("cut") => {
                    let r = table_reply(h.seqid, 0);
                    Act::SendThenClose(r[..r.len() / 2].to_vec())
                }
                "get_table" if named("big") => {
                    std::thread::sleep(Duration::from_millis(300));
                    Act::Send(table_reply(h.seqid, 16 << 20))
                }
                _ => Act::Send(table_reply(h.seqid, 0)),
            }
        }),
    )
    .await
}

/// A proxy enforcing in front of `up` (`admin` is an admin user, `mary` holds SELECT on
/// `db.t` only), auditing to its own file (every call with `all_calls`); `extra` is more TOML.
async fn proxy(up: &Upstream, extra: &str, all_calls: bool) -> (Proxy, std::path::PathBuf) {
    let audit = common::tls::dir("exits").join("audit.jsonl");
    let extra = format!(
        "{extra}\n[audit]\nsink = \"file\"\npath = \"{}\"\nall_calls = {all_calls}\n",
        audit.display()
    );
    (start(up, &facts(), &extra).await, audit)
}

/// `hms_guard_requests_total` by `decision` label (all methods), and in all.
fn requests(p: &Proxy) -> (std::collections::BTreeMap<String, u64>, u64) {
    let mut by = std::collections::BTreeMap::new();
    for l in p.metrics_text().lines() {
        let Some(rest) = l.strip_prefix("hms_guard_requests_total{") else {
            continue;
        };
        let decision = rest.split("decision=\"").nth(1).unwrap_or("");
        let decision = decision.split('"').next().unwrap_or("").to_string();
        let n: u64 = l.rsplit(' ').next().unwrap().parse().unwrap();
        *by.entry(decision).or_insert(0) += n;
    }
    let all = by.values().sum();
    (by, all)
}

/// The audit lines once there are at least `n`, and 300 ms later (so that a line too many
/// would show).
async fn settled_audit(path: &std::path::Path, n: usize) -> Vec<serde_json::Value> {
    audit_lines(path, n).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    audit_lines(path, 0).await
}

/// Runs `exit` (which makes exactly one call after the set-up calls counted in `before`),
/// then checks that it added exactly one request under `label` and exactly `audited` audit
/// lines; returns the new audit lines.
async fn one_call(
    proxy: &Proxy,
    audit: &std::path::Path,
    before: (usize, u64),
    label: &str,
    audited: usize,
) -> Vec<serde_json::Value> {
    let (by, all) = requests(proxy);
    let deadline = Instant::now() + Duration::from_secs(5);
    let (mut by, mut all) = (by, all);
    while all < before.1 + 1 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        (by, all) = requests(proxy);
    }
    assert_eq!(all, before.1 + 1, "one request counted: {by:?}");
    assert!(by.get(label).copied().unwrap_or(0) >= 1, "{label}: {by:?}");
    let lines = settled_audit(audit, before.0 + audited).await;
    assert_eq!(lines.len(), before.0 + audited, "audit lines: {lines:#?}");
    lines[before.0..].to_vec()
}

/// The counts before the call under test: audit lines and requests.
async fn counts(proxy: &Proxy, audit: &std::path::Path, lines: usize) -> (usize, u64) {
    (settled_audit(audit, lines).await.len(), requests(proxy).1)
}

#[tokio::test]
async fn an_allowed_call_is_counted_and_audited_once() {
    let up = metastore().await;
    let (proxy, audit) = proxy(&up, "", true).await;
    let mut c = proxy.connect().await;
    roundtrip(&mut c, &set_ugi("admin", &[]), B, false).await;
    let before = counts(&proxy, &audit, 1).await;
    let (h, _) = roundtrip(&mut c, &call(B, "get_table", 2, &["db", "t"]), B, false).await;
    assert_eq!(h.kind, MessageType::Reply);
    let lines = one_call(&proxy, &audit, before, "pass", 1).await;
    assert_eq!(lines[0]["decision"], "allow");
    assert_eq!(lines[0]["upstream_outcome"], "ok");
}

#[tokio::test]
async fn a_denied_call_is_counted_and_audited_once() {
    let up = metastore().await;
    let (proxy, audit) = proxy(&up, "", true).await;
    let mut c = proxy.connect().await;
    roundtrip(&mut c, &set_ugi("mary", &[]), B, false).await;
    let before = counts(&proxy, &audit, 1).await;
    roundtrip(&mut c, &call(B, "drop_table", 2, &["db", "t"]), B, false).await;
    let lines = one_call(&proxy, &audit, before, "deny", 1).await;
    assert_eq!(lines[0]["decision"], "deny");
    assert_eq!(lines[0]["upstream_outcome"], "not_sent");
}

#[tokio::test]
async fn set_ugi_is_counted_as_local_and_audited_with_all_calls() {
    let up = metastore().await;
    for all_calls in [true, false] {
        let (proxy, audit) = proxy(&up, "", all_calls).await;
        let mut c = proxy.connect().await;
        let before = counts(&proxy, &audit, 0).await;
        roundtrip(&mut c, &set_ugi("mary", &[]), B, false).await;
        let lines = one_call(&proxy, &audit, before, "local", usize::from(all_calls)).await;
        if all_calls {
            assert_eq!(lines[0]["method"], "set_ugi");
            assert_eq!(lines[0]["decision"], "local");
            assert_eq!(lines[0]["user"], "mary");
        }
    }
}

#[tokio::test]
async fn a_request_the_metastore_could_read_differently_is_counted_and_audited_once() {
    let up = metastore().await;
    let (proxy, audit) = proxy(&up, "", true).await;
    let mut c = proxy.connect().await;
    roundtrip(&mut c, &set_ugi("mary", &[]), B, false).await;
    let before = counts(&proxy, &audit, 1).await;
    // Field 2 twice: Java keeps the last.
    let mut w = W::binary();
    w.message("get_table", CALL, 2).begin_struct();
    w.field(11, 1).string(b"db");
    w.field(11, 2).string(b"t");
    w.field(11, 2).string(b"secret");
    w.end_struct();
    let (h, _) = roundtrip(&mut c, &w.bytes(), B, false).await;
    assert_eq!(h.kind, MessageType::Exception);
    let lines = one_call(&proxy, &audit, before, "error", 1).await;
    assert_eq!(lines[0]["decision"], "deny");
    assert_eq!(lines[0]["reason"], "unreadable_request");
}

#[tokio::test]
async fn a_call_on_a_refused_transport_is_counted_and_audited_once() {
    let ca = tls::ca();
    let d = tls::dir();
    tls::write_server(&d, &ca);
    let up = metastore().await;
    let (proxy, audit) = proxy(&up, &tls::tls_toml(&d, ""), true).await;
    // A padded CN: the names rule refuses it, so every call on the connection is refused.
    let cert = leaf(&ca, "admin ", &[]);
    let mut c = tls::connect(proxy.addr, &ca, Some(&cert)).await.unwrap();
    let before = counts(&proxy, &audit, 0).await;
    let reply = tls::call_tls(&mut c, &call(B, "get_table", 1, &["db", "t"]))
        .await
        .expect("an answer");
    let h = hms_guard::wire::codec::reader::Reader::new(B, &reply, 64)
        .message_begin()
        .unwrap();
    assert_eq!(h.kind, MessageType::Exception);
    assert!(exception_message(B, &reply, &h).contains("client certificate is refused"));
    let lines = one_call(&proxy, &audit, before, "deny", 1).await;
    assert_eq!(lines[0]["decision"], "deny");
    assert_eq!(lines[0]["reason"], "unauthenticated");
    assert!(up.received.lock().unwrap().is_empty(), "nothing forwarded");
}

#[tokio::test]
async fn a_client_gone_mid_call_is_counted_and_audited_once() {
    let up = metastore().await;
    let (proxy, audit) = proxy(&up, "", true).await;
    let mut c = proxy.connect().await;
    roundtrip(&mut c, &set_ugi("admin", &[]), B, false).await;
    let before = counts(&proxy, &audit, 1).await;
    // The reply is large and late: the client has gone by the time it streams.
    c.write_all(&call(B, "get_table", 2, &["db", "big"]))
        .await
        .unwrap();
    drop(c);
    let lines = one_call(&proxy, &audit, before, "pass", 1).await;
    assert_eq!(lines[0]["decision"], "allow");
    assert_eq!(lines[0]["table"], "big");
}

#[tokio::test]
async fn a_metastore_gone_mid_call_is_counted_and_audited_once() {
    let up = metastore().await;
    let (proxy, audit) = proxy(&up, "", true).await;
    let mut c = proxy.connect().await;
    roundtrip(&mut c, &set_ugi("admin", &[]), B, false).await;
    let before = counts(&proxy, &audit, 1).await;
    let (h, _) = roundtrip(&mut c, &call(B, "get_table", 2, &["db", "cut"]), B, false).await;
    assert_eq!(h.kind, MessageType::Exception, "the proxy's own exception");
    let lines = one_call(&proxy, &audit, before, "error", 1).await;
    assert_eq!(lines[0]["decision"], "allow");
    assert_eq!(lines[0]["upstream_outcome"], "transport_error");
}

#[tokio::test]
async fn a_request_that_never_arrives_whole_is_counted_once() {
    let up = metastore().await;
    let (proxy, audit) = proxy(&up, "", true).await;
    let mut c = proxy.connect().await;
    roundtrip(&mut c, &set_ugi("admin", &[]), B, false).await;
    let before = counts(&proxy, &audit, 1).await;
    // The call's header, then the client is gone.
    let msg = call(B, "get_table", 2, &["db", "t"]);
    c.write_all(&msg[..msg.len() - 3]).await.unwrap();
    c.shutdown().await.unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut rest)).await;
    let lines = one_call(&proxy, &audit, before, "error", 1).await;
    assert_eq!(lines[0]["decision"], "error");
    assert_eq!(lines[0]["method"], "get_table");
}

#[tokio::test]
async fn the_audit_lines_of_calls_ended_before_shutdown_are_written_before_it_completes() {
    let up = metastore().await;
    let (proxy, audit) = proxy(&up, "", true).await;
    let mut c = proxy.connect().await;
    roundtrip(&mut c, &set_ugi("admin", &[]), B, false).await;
    for seqid in 2..50 {
        roundtrip(&mut c, &call(B, "get_table", seqid, &["db", "t"]), B, false).await;
    }
    drop(c);
    proxy.shutdown.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(30), proxy.done)
        .await
        .unwrap()
        .unwrap();
    // Read at once: shutdown completes only after the writer took every queued line.
    let text = std::fs::read_to_string(&audit).unwrap_or_default();
    assert_eq!(text.lines().count(), 49, "{text}");
}
