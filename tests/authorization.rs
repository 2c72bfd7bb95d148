//! Socket tests of the enforce path: the proxy in-process, in front of a scripted metastore,
//! with authorization's facts (grants, owners) scripted through `FactsSource`
//! (tests/common/authz.rs): set_ugi, denials, filtered listings, cached facts, names compared
//! as the metastore's database compares them, revokes, and what the audit line says.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::authz::*;
use common::tls::client as tls;
use common::*;
use hms_guard::wire::codec::value::Value;
use hms_guard::wire::codec::writer::Writer;
use hms_guard::wire::codec::{MessageHeader, MessageType, Protocol, Ty};

const B: Protocol = Protocol::Binary;

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
        let cert = common::tls::leaf_dn(
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
    use hms_guard::wire::codec::reply::{application_exception, AppErrorKind};
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

/// Groups from a source that fails (`[identity.groups]`, `on_error = "deny"`): the user's
/// calls are refused with a `TApplicationException` naming the user and the source, nothing
/// reaches the metastore, `set_ugi` is still answered, and the same connection works again
/// once the source does — a failure is never "no groups".
#[tokio::test]
async fn a_failing_group_source_refuses_the_users_calls_naming_user_and_source() {
    let dir = std::env::temp_dir().join(format!("hms-guard-authz-groups-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("groups");
    std::fs::write(&path, "staff:mary\n").unwrap();
    let (up, facts) = (metastore().await, facts());
    let extra = format!(
        "[identity.groups]\nsources = [\"file\"]\nttl_ms = 100\n[identity.groups.file]\npath = \"{}\"\n",
        path.display()
    );
    let proxy = start(&up, &facts, &extra).await;
    let mut c = proxy.connect().await;
    roundtrip(&mut c, &set_ugi("mary", &[]), B, false).await;
    let get = call(B, "get_table", 2, &["db", "t"]);
    let (h, reply) = roundtrip(&mut c, &get, B, false).await;
    assert_eq!(h.kind, MessageType::Reply);
    assert!(declared(&result(&reply).1).is_none(), "mary reads db.t");
    let forwarded = methods(&up).len();
    std::fs::remove_file(&path).unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    let (h, reply) = roundtrip(&mut c, &get, B, false).await;
    assert_eq!(h.kind, MessageType::Exception);
    let message = exception_message(B, &reply, &h);
    assert!(
        message.contains("the groups of user mary could not be read from the file source"),
        "{message}"
    );
    assert_eq!(
        methods(&up).len(),
        forwarded,
        "nothing reached the metastore"
    );
    let (h, _) = roundtrip(&mut c, &set_ugi("mary", &[]), B, false).await;
    assert_eq!(h.kind, MessageType::Reply, "set_ugi is still answered");
    std::fs::write(&path, "staff:mary\n").unwrap();
    let (h, reply) = roundtrip(&mut c, &get, B, false).await;
    assert_eq!(h.kind, MessageType::Reply);
    assert!(declared(&result(&reply).1).is_none(), "readable again");
    let _ = std::fs::remove_dir_all(&dir);
}
