//! Socket tests of engines' questions (`hms_guard_authorize`): answered by the proxy with the
//! same rules, facts and audit as metastore calls, never forwarded, in every mode.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use common::authz::*;
use common::*;
use hms_guard::decision::authz::{Object, Privilege};
use hms_guard::wire::codec::value::Value;
use hms_guard::wire::codec::writer::Writer;
use hms_guard::wire::codec::{MessageType, Protocol, Ty};

const B: Protocol = Protocol::Binary;
const CLIENT: &str = "hms-guard-spark/0.1.0 spark/4.3.0";

/// mary: SELECT on db.t, INSERT on db.ins, owner of db.mine.
fn world() -> Arc<Scripted> {
    let mut grants = HashMap::new();
    grants.insert(
        "mary".to_string(),
        vec![
            (Object::table("db", "t"), Privilege::Select),
            (Object::table("db", "ins"), Privilege::Insert),
        ],
    );
    let owners = [("t", "admin"), ("ins", "admin"), ("mine", "mary")]
        .iter()
        .map(|(t, o)| (("db".to_string(), t.to_string()), o.to_string()))
        .collect();
    Arc::new(Scripted {
        grants,
        owners: std::sync::Mutex::new(owners),
        ..Scripted::default()
    })
}

/// A question: `fields` are (id, string) pairs, `privileges` the list at field 5.
fn ask(seqid: i32, fields: &[(i16, &str)], privileges: &[&str]) -> Vec<u8> {
    let mut w = Writer::new(B);
    w.message("hms_guard_authorize", MessageType::Call, seqid)
        .struct_begin();
    for (id, v) in fields {
        w.field(Ty::String, *id).string(v.as_bytes());
    }
    if !privileges.is_empty() {
        w.field(Ty::List, 5)
            .list_begin(Ty::String, privileges.len());
        for p in privileges {
            w.string(p.as_bytes());
        }
    }
    w.field(Ty::String, 6).string(CLIENT.as_bytes());
    w.struct_end();
    w.finish(false).to_vec()
}

fn write(seqid: i32, table: &str, privileges: &[&str]) -> Vec<u8> {
    ask(
        seqid,
        &[(1, "write_table"), (2, "db"), (3, table)],
        privileges,
    )
}

/// The answer: Ok(result text) or Err(the declared exception's message).
fn answer(msg: &[u8]) -> Result<String, String> {
    let (h, v) = result(msg);
    assert_eq!(h.kind, MessageType::Reply);
    if let Some(m) = declared(&v) {
        return Err(m);
    }
    let Value::Struct(fields) = v else {
        panic!("not a struct")
    };
    match fields.iter().find(|(id, _)| *id == 0) {
        Some((_, Value::Bytes(b))) => Ok(String::from_utf8(b.clone()).unwrap()),
        other => panic!("no result: {other:?}"),
    }
}

async fn asked(c: &mut tokio::net::TcpStream, msg: &[u8]) -> Result<String, String> {
    let (h, reply) = roundtrip(c, msg, B, false).await;
    assert_eq!(h.name, "hms_guard_authorize");
    answer(&reply)
}

#[tokio::test]
async fn writes_are_decided_by_the_grants_and_never_forwarded() {
    let (up, facts) = (metastore().await, world());
    let path = std::env::temp_dir().join(format!("hms-guard-q-{}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let extra = format!("[audit]\nsink = \"file\"\npath = \"{}\"\n", path.display());
    let proxy = start(&up, &facts, &extra).await;
    let mut c = proxy.connect().await;
    roundtrip(&mut c, &set_ugi("mary", &[]), B, false).await;

    // SELECT only: refused, naming user, privilege, table and what to ask for.
    let denied = asked(&mut c, &write(2, "t", &["INSERT"]))
        .await
        .unwrap_err();
    for part in [
        "permission denied",
        "user mary",
        "write (INSERT) into table db.t",
        "INSERT on table db.t",
    ] {
        assert!(denied.contains(part), "{denied}");
    }
    // INSERT held: allowed; an overwrite also needs DELETE: refused.
    let ok = asked(&mut c, &write(3, "ins", &["INSERT"])).await.unwrap();
    assert!(ok.starts_with("allow:"), "{ok}");
    let overwrite = asked(&mut c, &write(4, "ins", &["INSERT", "DELETE"]))
        .await
        .unwrap_err();
    assert!(overwrite.contains("DELETE on table db.ins"), "{overwrite}");
    // The owner may do anything to its table.
    asked(&mut c, &write(5, "mine", &["INSERT", "UPDATE", "DELETE"]))
        .await
        .unwrap();
    // CREATE in a database mary holds nothing in: refused.
    let ctas = asked(
        &mut c,
        &ask(6, &[(1, "create_table"), (2, "db"), (3, "new")], &[]),
    )
    .await
    .unwrap_err();
    assert!(ctas.contains("create table db.new with data"), "{ctas}");
    // Storage checks off: a path is not checked, and the answer says so.
    let path_ok = asked(&mut c, &ask(7, &[(1, "read_path"), (4, "/data/x")], &[]))
        .await
        .unwrap();
    assert!(path_ok.contains("storage checks are off"), "{path_ok}");
    // Malformed: refused with the reason, the connection stays usable.
    let bad = asked(&mut c, &write(8, "t", &["SELECT"]))
        .await
        .unwrap_err();
    assert!(bad.contains("INSERT, UPDATE or DELETE"), "{bad}");
    asked(&mut c, &write(9, "ins", &["INSERT"])).await.unwrap();

    assert!(
        !methods(&up).iter().any(|m| m == "hms_guard_authorize"),
        "questions never reach the metastore: {:?}",
        methods(&up)
    );
    let lines = audit_lines(&path, 8).await;
    let q: Vec<_> = lines
        .iter()
        .filter(|l| l["method"] == "hms_guard_authorize")
        .collect();
    assert_eq!(q.len(), 8, "{lines:?}");
    assert_eq!(q[0]["operation"], "write_data");
    assert_eq!(q[0]["decision"], "deny");
    assert_eq!(q[0]["table"], "t");
    assert_eq!(q[0]["client"], CLIENT);
    assert_eq!(q[0]["upstream_outcome"], "not_sent");
    assert_eq!(q[1]["decision"], "allow");
    assert_eq!(q[4]["operation"], "create_table");
    assert_eq!(q[5]["operation"], "read_path");
    assert_eq!(q[5]["location"], "/data/x");
    let metrics = proxy.metrics_text();
    for series in [
        "hms_guard_questions_total{client=\"hms-guard-spark\",operation=\"write_data\",decision=\"deny\"} 2",
        "hms_guard_questions_total{client=\"hms-guard-spark\",operation=\"write_data\",decision=\"allow\"} 3",
        "hms_guard_requests_total{method=\"hms_guard_authorize\",decision=\"deny\"} 4",
    ] {
        assert!(metrics.contains(series), "{series}\n{metrics}");
    }
}

#[tokio::test]
async fn without_an_identity_a_question_is_refused() {
    let (up, facts) = (metastore().await, world());
    let proxy = start(&up, &facts, "").await;
    let mut c = proxy.connect().await;
    let m = asked(&mut c, &write(1, "ins", &["INSERT"]))
        .await
        .unwrap_err();
    assert!(m.contains("set_ugi"), "{m}");
}

#[tokio::test]
async fn shadow_mode_answers_yes_and_records_the_denial() {
    let (up, facts) = (metastore().await, world());
    let proxy = start(&up, &facts, "").await;
    drop(proxy);
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[upstream]\nuris = [\"{}\"]\n[authz]\nmode = \"shadow\"\n[storage]\nenabled = false\n",
        up.uri()
    );
    let proxy = Proxy::start_with(
        hms_guard::config::Config::parse(&text).unwrap(),
        Some(Box::new(Shared(facts.clone()))),
    )
    .await;
    let mut c = proxy.connect().await;
    roundtrip(&mut c, &set_ugi("mary", &[]), B, false).await;
    let ok = asked(&mut c, &write(2, "t", &["INSERT"])).await.unwrap();
    assert!(ok.starts_with("shadow_deny:"), "{ok}");
}

#[tokio::test]
async fn with_authorization_off_questions_are_answered_here_too() {
    let up = metastore().await;
    let proxy = proxy_to(&[up.uri()]).await;
    let mut c = proxy.connect().await;
    let ok = asked(&mut c, &write(1, "t", &["INSERT"])).await.unwrap();
    assert!(ok.contains("authorization is off"), "{ok}");
    assert!(methods(&up).is_empty(), "{:?}", methods(&up));
}
