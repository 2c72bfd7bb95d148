//! The enforce path's scripted world: a metastore that answers the calls the socket tests make,
//! authorization's facts (grants, owners, recorded grantors) scripted through `FactsSource`, and
//! an enforcing proxy in front of both.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hms_guard::config::Config;
use hms_guard::decision::authz::{
    GrantTarget, Object, Principal, PrincipalKind, Privilege, Privileges, RecordedGrant,
};
use hms_guard::decision::facts::source::Fact;
use hms_guard::decision::facts::FactsSource;
use hms_guard::wire::codec::reader::Reader;
use hms_guard::wire::codec::value::{read_value, Value};
use hms_guard::wire::codec::writer::Writer;
use hms_guard::wire::codec::{MessageHeader, MessageType, Protocol, Ty};

use super::{Act, Proxy, Upstream};

const B: Protocol = Protocol::Binary;

pub fn s(x: &str) -> Value {
    Value::Bytes(x.as_bytes().to_vec())
}

/// Grants and tables as the scripted metastore knows them; counts table lookups.
#[derive(Default)]
pub struct Scripted {
    /// user → (object, privilege)
    pub grants: HashMap<String, Vec<(Object, Privilege)>>,
    /// (db, table) → owner
    pub owners: Mutex<HashMap<(String, String), String>>,
    pub table_lookups: AtomicUsize,
    /// principal name → the grants the metastore records to it (any object), with grantors
    pub recorded: HashMap<String, Vec<RecordedGrant>>,
}

impl FactsSource for Scripted {
    fn role_grants<'a>(&'a self, _: &'a Principal) -> Fact<'a, Vec<(String, bool)>> {
        Box::pin(async { Ok(Vec::new()) })
    }
    fn privileges<'a>(&'a self, p: &'a Principal) -> Fact<'a, Privileges> {
        let out = match p.kind {
            PrincipalKind::User => self.grants.get(&p.name).cloned().unwrap_or_default(),
            _ => Vec::new(),
        };
        Box::pin(async move {
            let objects: Vec<_> = out.into_iter().map(|(o, p)| (o, p, false)).collect();
            Ok(objects.into())
        })
    }
    fn table<'a>(&'a self, db: &'a str, table: &'a str) -> Fact<'a, Option<Value>> {
        self.table_lookups.fetch_add(1, Ordering::SeqCst);
        let owner = self
            .owners
            .lock()
            .unwrap()
            .get(&(db.to_string(), table.to_string()))
            .cloned();
        Box::pin(async move {
            Ok(owner.map(|o| {
                Value::Struct(vec![
                    (1, s(table)),
                    (2, s(db)),
                    (3, s(&o)),
                    (
                        7,
                        Value::Struct(vec![(2, s(&format!("s3a://lake/{db}/{table}")))]),
                    ),
                ])
            }))
        })
    }
    fn database<'a>(&'a self, db: &'a str) -> Fact<'a, Option<Value>> {
        Box::pin(async move {
            Ok(Some(Value::Struct(vec![
                (1, s(db)),
                (3, s(&format!("s3a://lake/{db}"))),
                (6, s("admin")),
            ])))
        })
    }
    fn open_txns(&self) -> Fact<'_, (i64, Vec<(i64, String)>)> {
        Box::pin(async { Ok((0, Vec::new())) })
    }
    fn locks(&self) -> Fact<'_, Vec<(i64, String)>> {
        Box::pin(async { Ok(Vec::new()) })
    }
    fn recorded_grants<'a>(
        &'a self,
        p: &'a Principal,
        _: &'a GrantTarget,
    ) -> Fact<'a, Vec<RecordedGrant>> {
        let out = self.recorded.get(&p.name).cloned().unwrap_or_default();
        Box::pin(async move { Ok(out) })
    }
}

/// A reply whose result struct is `result`.
pub fn reply(name: &str, seqid: i32, result: Value) -> Vec<u8> {
    let mut w = Writer::new(B);
    w.message(name, MessageType::Reply, seqid).value(&result);
    w.finish(false).to_vec()
}

/// The scripted metastore: answers the calls these tests make.
pub async fn metastore() -> Upstream {
    Upstream::start(
        B,
        false,
        Arc::new(|h: &MessageHeader, _: &[u8]| {
            let result = match h.name.as_str() {
                "set_ugi" => Value::Struct(vec![(0, Value::List(vec![]))]),
                "get_table" => Value::Struct(vec![(
                    0,
                    Value::Struct(vec![(1, s("t")), (2, s("db")), (3, s("admin"))]),
                )]),
                "get_all_tables" => {
                    Value::Struct(vec![(0, Value::List(vec![s("t"), s("secret"), s("mine")]))])
                }
                "drop_table" => Value::Struct(vec![]),
                _ => Value::Struct(vec![(0, s("3.1.0"))]),
            };
            Act::Send(reply(&h.name, h.seqid, result))
        }),
    )
    .await
}

pub fn facts() -> Arc<Scripted> {
    let mut grants = HashMap::new();
    grants.insert(
        "mary".to_string(),
        vec![(Object::table("db", "t"), Privilege::Select)],
    );
    let owners = [("t", "admin"), ("secret", "admin"), ("mine", "mary")]
        .iter()
        .map(|(t, o)| (("db".to_string(), t.to_string()), o.to_string()))
        .collect();
    let by = |grantor: &str| RecordedGrant {
        privilege: "SELECT".into(),
        grantor: Some(grantor.into()),
        grantor_kind: Some(PrincipalKind::User),
    };
    let recorded = [("john", by("admin")), ("friend", by("mary"))]
        .into_iter()
        .map(|(p, g)| (p.to_string(), vec![g]))
        .collect();
    Arc::new(Scripted {
        grants,
        owners: Mutex::new(owners),
        table_lookups: AtomicUsize::new(0),
        recorded,
    })
}

/// Forwards the trait to a shared scripted source, so the test keeps a handle on it.
pub struct Shared(pub Arc<Scripted>);

impl FactsSource for Shared {
    fn role_grants<'a>(&'a self, p: &'a Principal) -> Fact<'a, Vec<(String, bool)>> {
        self.0.role_grants(p)
    }
    fn privileges<'a>(&'a self, p: &'a Principal) -> Fact<'a, Privileges> {
        self.0.privileges(p)
    }
    fn table<'a>(&'a self, db: &'a str, table: &'a str) -> Fact<'a, Option<Value>> {
        self.0.table(db, table)
    }
    fn database<'a>(&'a self, db: &'a str) -> Fact<'a, Option<Value>> {
        self.0.database(db)
    }
    fn open_txns(&self) -> Fact<'_, (i64, Vec<(i64, String)>)> {
        self.0.open_txns()
    }
    fn locks(&self) -> Fact<'_, Vec<(i64, String)>> {
        self.0.locks()
    }
    fn recorded_grants<'a>(
        &'a self,
        p: &'a Principal,
        t: &'a GrantTarget,
    ) -> Fact<'a, Vec<RecordedGrant>> {
        self.0.recorded_grants(p, t)
    }
}

pub async fn start(up: &Upstream, facts: &Arc<Scripted>, extra: &str) -> Proxy {
    start_with_upstream(up, facts, "", extra).await
}

/// `start` with further `[upstream]` keys.
pub async fn start_with_upstream(
    up: &Upstream,
    facts: &Arc<Scripted>,
    upstream: &str,
    extra: &str,
) -> Proxy {
    // Audit lines to a file of their own unless the test says otherwise.
    static N: AtomicUsize = AtomicUsize::new(0);
    let audit = std::env::temp_dir().join(format!(
        "hms-guard-enforce-{}-{}.jsonl",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let extra = if extra.contains("[audit]") {
        extra.to_string()
    } else {
        format!(
            "{extra}[audit]\nsink = \"file\"\npath = \"{}\"\n",
            audit.display()
        )
    };
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[upstream]\nuris = [\"{}\"]\n{upstream}\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [authz]\nmode = \"enforce\"\nadmin_users = [\"admin\"]\n[storage]\nenabled = false\n{extra}",
        up.uri()
    );
    let config = Config::parse(&text).unwrap_or_else(|e| panic!("{e:?}\n{text}"));
    Proxy::start_with(config, Some(Box::new(Shared(facts.clone())))).await
}

pub fn set_ugi(user: &str, groups: &[&str]) -> Vec<u8> {
    let mut w = Writer::new(B);
    w.message("set_ugi", MessageType::Call, 1).struct_begin();
    w.field(Ty::String, 1).string(user.as_bytes());
    w.field(Ty::List, 2).list_begin(Ty::String, groups.len());
    for g in groups {
        w.string(g.as_bytes());
    }
    w.struct_end();
    w.finish(false).to_vec()
}

/// The result struct of a reply.
pub fn result(msg: &[u8]) -> (MessageHeader, Value) {
    let mut r = Reader::new(B, msg, 64);
    let h = r.message_begin().unwrap();
    (h, read_value(&mut r, Ty::Struct, None).unwrap())
}

/// The message of the declared exception a result carries, if any.
pub fn declared(v: &Value) -> Option<String> {
    match v {
        Value::Struct(fields) => fields
            .iter()
            .filter(|(id, _)| *id != 0)
            .find_map(|(_, e)| e.field(1).and_then(Value::as_str).map(str::to_string)),
        _ => None,
    }
}

pub fn names(v: &Value) -> Vec<String> {
    v.field(0)
        .map(Value::as_list)
        .unwrap_or_default()
        .iter()
        .filter_map(|x| x.as_str().map(str::to_string))
        .collect()
}

pub fn methods(up: &Upstream) -> Vec<String> {
    up.received
        .lock()
        .unwrap()
        .iter()
        .map(|m| {
            let mut r = Reader::new(B, m, 64);
            r.message_begin().unwrap().name
        })
        .collect()
}

/// The audit lines of a file, once it holds at least `n`.
pub async fn audit_lines(path: &std::path::Path, n: usize) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if lines.len() >= n || Instant::now() > deadline {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
