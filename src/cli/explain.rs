//! `hms-guard explain`: the decision the proxy would make for one user, method and object, and
//! why — through the same code path as a live call.
//!
//! The arguments are turned into the call a client would send (the method table's field paths
//! say where the database, table and location go), and that call goes through
//! `Guard::check`, which classifies it, gathers facts from the configured metastore (grants,
//! owners, the current table for `alter_table*`) and runs `authorize()`.

use std::fmt::Write as _;
use std::sync::Arc;

use crate::config::IdentityMode;
use crate::decision::authz::{Object, Privilege};
use crate::decision::{Action, Call, Decision, Guard, Record, ReplyCheck};
use crate::listener::identity::{Identity, IdentitySource};
use crate::ops::metrics::Metrics;
use crate::settings::Settings;
use crate::upstream::Upstreams;
use crate::wire::codec::value::Value;
use crate::wire::codec::{MessageHeader, MessageType};
use crate::wire::router::{self, Path, Rule, EACH};

/// What to explain (README.md, command line).
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub user: String,
    /// Empty: the groups the proxy would use (`identity.groups`, or the pinned groups).
    pub groups: Vec<String>,
    pub method: String,
    pub db: String,
    pub table: Option<String>,
    pub location: Option<String>,
    /// Role of a role grant/revoke (`grant_role`, `create_role`…).
    pub role: Option<String>,
    /// Privilege(s) of a privilege grant/revoke, e.g. `SELECT` or `SELECT,INSERT`.
    pub privilege: Option<String>,
}

/// The outcome: `allowed` decides the exit code; `text` is printed.
#[derive(Debug)]
pub struct Explained {
    pub allowed: bool,
    pub text: String,
}

fn s(v: &str) -> Value {
    Value::Bytes(v.as_bytes().to_vec())
}

fn join(a: Path, b: &[i16]) -> Vec<i16> {
    a.iter().chain(b).copied().collect()
}

/// Sets `v` at `path` inside `root`, creating structs on the way; an `EACH` step makes (or
/// enters) a one-element list.
fn put(root: &mut Value, path: &[i16], v: Value) {
    let [id, rest @ ..] = path else {
        *root = v;
        return;
    };
    if *id == EACH {
        if !matches!(root, Value::List(items) if !items.is_empty()) {
            *root = Value::List(vec![Value::Struct(Vec::new())]);
        }
        if let Value::List(items) = root {
            put(&mut items[0], rest, v);
        }
        return;
    }
    if !matches!(root, Value::Struct(_)) {
        *root = Value::Struct(Vec::new());
    }
    if let Value::Struct(fields) = root {
        let pos = match fields.iter().position(|(i, _)| i == id) {
            Some(p) => p,
            None => {
                fields.push((*id, Value::Struct(Vec::new())));
                fields.len() - 1
            }
        };
        put(&mut fields[pos].1, rest, v);
    }
}

/// Builds the args struct of `method` from the request. Errors name the missing flag.
// Long: one short arm per rule of the method table (a closed set); longer arms are helpers.
async fn build_args(
    guard: &Guard,
    rule: &Rule,
    r: &Request,
) -> Result<(Value, Vec<String>), String> {
    let mut n = Value::Struct(Vec::new());
    let mut notes = Vec::new();
    let table = || required(&r.table, "--table", r);
    match *rule {
        Rule::Harmless | Rule::SetUgi | Rule::Question | Rule::Tokens | Rule::AdminOnly(_) => {}
        Rule::Txn { user, .. } => {
            if let Some(p) = user {
                put(&mut n, p, s(&r.user));
            }
        }
        Rule::Lock {
            components, user, ..
        } => {
            put(&mut n, components, Value::List(vec![lock_component(r)]));
            put(&mut n, user, s(&r.user));
        }
        Rule::ReadTable { db, table: t }
        | Rule::DropTable { db, table: t }
        | Rule::TruncateTable { db, table: t }
        | Rule::AddPartitions { db, table: t, .. }
        | Rule::AlterPartitions { db, table: t, .. }
        | Rule::DropPartitions { db, table: t } => {
            put(&mut n, db, s(&r.db));
            put(&mut n, t, s(&table()?));
        }
        Rule::Listing { db, .. } => {
            if let Some(p) = db {
                put(&mut n, p, s(&r.db));
            }
        }
        Rule::AddIndex { index, table: p } => {
            notes.push(put_index(&mut n, index, p, r, &table()?));
        }
        Rule::DropIndex {
            db,
            table: t,
            index,
        } => {
            let base = table()?;
            put(&mut n, db, s(&r.db));
            put(&mut n, t, s(&base));
            put(&mut n, index, s(&format!("{base}_index")));
            notes.push(format!(
                "explained as: dropping index {base}_index of {base}"
            ));
        }
        Rule::CreateTable { table: p } => {
            put(&mut n, &join(p, &[1]), s(&table()?));
            put(&mut n, &join(p, &[2]), s(&r.db));
            if let Some(l) = &r.location {
                put(&mut n, &join(p, &[7, 2]), s(l));
            }
        }
        Rule::AlterTable {
            db,
            table: t,
            new_table,
        } => {
            let name = table()?;
            put(&mut n, db, s(&r.db));
            put(&mut n, t, s(&name));
            let new = altered_table(guard, r, &name, &mut notes).await?;
            put(&mut n, new_table, new);
        }
        Rule::OwnerOfTables { tables } => {
            let name = table()?;
            for (db, t) in tables {
                put(&mut n, db, s(&r.db));
                put(&mut n, t, s(&name));
            }
        }
        Rule::CreateDatabase { database } => {
            put(&mut n, &join(database, &[1]), s(&r.db));
            if let Some(l) = &r.location {
                put(&mut n, &join(database, &[3]), s(l));
            }
        }
        Rule::AlterDatabase { name, new_database } => {
            put(&mut n, name, s(&r.db));
            put(&mut n, &join(new_database, &[1]), s(&r.db));
            if let Some(l) = &r.location {
                put(&mut n, &join(new_database, &[3]), s(l));
            }
        }
        Rule::DropDatabase { name } | Rule::ReadDatabase { name } => put(&mut n, name, s(&r.db)),
        Rule::GrantRole { role, .. } => {
            put(&mut n, role, s(&required(&r.role, "--role", r)?));
        }
        Rule::GrantPrivileges { bag, kind } => {
            if let crate::wire::router::GrantKind::ByRequest(p) = kind {
                put(&mut n, p, Value::Int(1));
            }
            put(&mut n, bag, privilege_bag(r)?);
            notes.push("explained as: granting to role public".into());
        }
        Rule::ReadGrants { name, kind, .. } => {
            put(&mut n, name, s(&r.user));
            if let Some(k) = kind {
                put(&mut n, k, Value::Int(1));
            }
        }
    }
    Ok((n, notes))
}

/// The value of an optional flag the method needs; an error naming the flag without it.
fn required(value: &Option<String>, flag: &str, r: &Request) -> Result<String, String> {
    value
        .clone()
        .ok_or_else(|| format!("{flag} is required for {}", r.method))
}

/// The one lock component: an exclusive table lock (a writer's), or a shared database lock.
fn lock_component(r: &Request) -> Value {
    match &r.table {
        Some(t) => Value::Struct(vec![
            (1, Value::Int(3)),
            (2, Value::Int(2)),
            (3, s(&r.db)),
            (4, s(t)),
        ]),
        None => Value::Struct(vec![(1, Value::Int(1)), (2, Value::Int(1)), (3, s(&r.db))]),
    }
}

/// Puts an index over table `base` whose index table is `<base>_index` (at --location) at
/// `index` and `table`; returns the note saying so.
fn put_index(n: &mut Value, index: Path, table: Path, r: &Request, base: &str) -> String {
    let idx_table = format!("{base}_index");
    put(n, &join(index, &[3]), s(&r.db));
    put(n, &join(index, &[4]), s(base));
    put(n, &join(index, &[7]), s(&idx_table));
    put(n, &join(table, &[1]), s(&idx_table));
    put(n, &join(table, &[2]), s(&r.db));
    if let Some(l) = &r.location {
        put(n, &join(table, &[7, 2]), s(l));
    }
    format!("explained as: an index on {base} kept in table {idx_table}")
}

/// The new table of an `alter_table*`: the current one (read from the metastore) with the
/// asked change — SET LOCATION with --location, else a property change.
async fn altered_table(
    guard: &Guard,
    r: &Request,
    name: &str,
    notes: &mut Vec<String>,
) -> Result<Value, String> {
    let current = guard
        .facts
        .table(&r.db, name)
        .await
        .map_err(|e| format!("cannot read the current table {}.{name}: {e}", r.db))?;
    let mut new = match current {
        Some(v) => v,
        None => {
            notes.push(format!("table {}.{name} does not exist", r.db));
            Value::Struct(vec![(1, s(name)), (2, s(&r.db))])
        }
    };
    match &r.location {
        Some(l) => {
            put(&mut new, &[7, 2], s(l));
            notes.push(format!("explained as: SET LOCATION '{l}'"));
        }
        None => {
            let mut params = new.field(9).cloned().unwrap_or(Value::Map(Vec::new()));
            if let Value::Map(m) = &mut params {
                m.push((s("hms-guard.explain"), s("a property change")));
            }
            put(&mut new, &[9], params);
            notes.push("explained as: a property change (give --location for SET LOCATION)".into());
        }
    }
    Ok(new)
}

/// The privilege bag of a grant/revoke: --privilege on the request's table (or database), to
/// role `public`. An error for a missing flag or an unknown privilege.
fn privilege_bag(r: &Request) -> Result<Value, String> {
    let p = required(&r.privilege, "--privilege", r)?;
    for part in p.split(',') {
        if Privilege::parse(part).is_none() {
            return Err(format!("unknown privilege {part:?}"));
        }
    }
    // PrivilegeBag 1: list<HiveObjectPrivilege>(1 HiveObjectRef(1 type, 2 db, 3 name),
    // 2 principalName, 3 principalType, 4 PrivilegeGrantInfo(1 privilege)).
    let (kind, name) = match &r.table {
        Some(t) => (3, t.clone()),
        None => (2, String::new()),
    };
    let mut obj = vec![(1, Value::Int(kind)), (2, s(&r.db))];
    if kind == 3 {
        obj.push((3, s(&name)));
    }
    let hop = Value::Struct(vec![
        (1, Value::Struct(obj)),
        (2, s("public")),
        (3, Value::Int(2)),
        (4, Value::Struct(vec![(1, s(&p))])),
    ]);
    Ok(Value::Struct(vec![(1, Value::List(vec![hop]))]))
}

/// The identity the proxy would give this user: the groups given, the pinned ones, or those
/// its `[identity.groups]` sources give (a source failing is an error, as it denies a live
/// call).
async fn identity_of(settings: &Settings, r: &Request) -> Result<Identity, String> {
    let groups = if !r.groups.is_empty() {
        r.groups.clone()
    } else {
        proxy_groups(settings, &r.user).await?
    };
    Ok(Identity::new(&r.user, &groups, IdentitySource::SetUgi))
}

/// The groups the proxy gives `user`: the pinned identity's when it is the pinned user, else
/// those its `[identity.groups]` sources give (a source failing is an error, as it denies a
/// live call). The one place the command line learns groups (`explain`, `access`).
pub async fn proxy_groups(settings: &Settings, user: &str) -> Result<Vec<String>, String> {
    let id = &settings.identity;
    if id.mode == IdentityMode::Pinned && id.pinned.user == user {
        return Ok(id.pinned.groups.clone());
    }
    let resolver = crate::auth::groups::GroupResolver::new(
        &id.groups,
        id.metastore_db,
        Arc::new(Metrics::new()),
    )?;
    Ok(resolver
        .groups(user)
        .await
        .map_err(|e| e.to_string())?
        .to_vec())
}

/// Explains one decision against the configured metastore.
pub async fn explain(settings: &Settings, r: &Request) -> Result<Explained, String> {
    let guard = guard_of(settings).await?;
    let method = router::route(&r.method, settings.upstream.versions);
    let identity = identity_of(settings, r).await?;
    // The names rule refuses such a user at set_ugi: there is no decision to explain.
    settings
        .identity
        .check(&identity)
        .map_err(|e| format!("hms-guard refuses this identity at set_ugi: {e}"))?;
    let (args, notes) = match method {
        Some(m) => build_args(&guard, &m.rule, r).await?,
        None => (Value::Struct(Vec::new()), Vec::new()),
    };
    let decided = decide(&guard, &identity, method, &r.method, &args).await;
    let mut out = String::new();
    let _ = writeln!(out, "user:      {identity}");
    let _ = writeln!(
        out,
        "method:    {}{}",
        r.method,
        match method {
            None => " (not in the method table)".to_string(),
            Some(m) => format!(" (class {:?})", m.class),
        }
    );
    for n in &notes {
        let _ = writeln!(out, "note:      {n}");
    }
    write_decision(&mut out, &decided, guard.mode);
    if !identity.groups.is_empty() || matches!(decided.record, Record::Decided(_)) {
        if let Ok(g) = guard.facts.grants(&identity).await {
            write_grants(&mut out, &g);
        }
    }
    let allowed = matches!(decided.action, Action::Forward(_));
    Ok(Explained { allowed, text: out })
}

/// The decision stage as the proxy builds it from `settings`, with its own metastore client.
async fn guard_of(settings: &Settings) -> Result<Guard, String> {
    let metrics = Arc::new(Metrics::new());
    let upstreams = upstreams_of(settings, &metrics)?;
    let storage =
        crate::decision::storage::StorageGuard::new(&settings.storage, metrics.clone()).await;
    // Its own index, built at once: no notification log is followed for one explanation.
    let mut authz = settings.authz.clone();
    authz.index.follow_log = false;
    Ok(Guard::new(
        &authz,
        settings.limits.request.max_depth,
        settings.storage.read_only_external,
        upstreams,
        metrics,
        storage,
    ))
}

/// The call as a client would send it (binary, unframed), decided on the one path every call
/// takes.
async fn decide(
    guard: &Guard,
    identity: &Identity,
    entry: Option<&'static crate::wire::router::Method>,
    method: &str,
    args: &Value,
) -> Decision {
    let header = MessageHeader {
        name: method.to_string(),
        kind: MessageType::Call,
        seqid: 1,
        len: 0,
    };
    let protocol = crate::wire::codec::Protocol::Binary;
    let mut w = crate::wire::codec::writer::Writer::new(protocol);
    w.message(method, MessageType::Call, 1).value(args);
    let call = Call {
        identity,
        entry,
        header: &header,
        args,
        bytes: w.finish(false).freeze(),
        transport: crate::wire::transport::Transport {
            protocol,
            framed: false,
        },
    };
    guard.decide(call, false).await
}

/// The decision's lines: outcome, reason, object, what was required and matched, the storage
/// check, and what the client sees.
fn write_decision(out: &mut String, decided: &Decision, mode: crate::config::AuthzMode) {
    match &decided.record {
        Record::Decided(d) => write_record(out, d),
        _ => {
            let why = if mode == crate::config::AuthzMode::Off {
                "authz.mode = \"off\""
            } else {
                "a harmless call, not a decision"
            };
            let _ = writeln!(out, "decision:  allow (pass-through: {why})");
        }
    }
    match &decided.action {
        Action::Forward(f) if matches!(f.reply, ReplyCheck::Filter(_)) => {
            let _ = writeln!(
                out,
                "listing:   filtered to the tables the user holds a privilege on (tables it may read part of, narrowed)"
            );
        }
        Action::Deny(msg) => {
            let _ = writeln!(out, "client sees: {msg}");
        }
        _ => {}
    }
}

fn write_record(out: &mut String, d: &crate::decision::DecisionRecord) {
    let _ = writeln!(out, "decision:  {}", d.outcome);
    let _ = writeln!(out, "reason:    {}", d.reason.as_str());
    let _ = writeln!(out, "operation: {}", d.operation);
    let object = match (&d.db, &d.table) {
        (Some(db), Some(t)) => Object::table(db, t).to_string(),
        (Some(db), None) => Object::database(db).to_string(),
        _ => "the metastore".into(),
    };
    let _ = writeln!(out, "object:    {object}");
    if let Some(l) = &d.location {
        let _ = writeln!(out, "location:  {l}");
    }
    let _ = writeln!(out, "required:  {}", d.required);
    let _ = writeln!(out, "matched:   {}", d.matched);
    if let Some(g) = &d.given {
        let _ = writeln!(out, "given:     {g} (the replies are narrowed to it)");
    }
    if let Some(st) = &d.storage {
        let via = if st.role_chain.is_empty() {
            "no role".to_string()
        } else {
            st.role_chain.join(" -> ")
        };
        let cached = if st.cached { " (cached)" } else { "" };
        let _ = writeln!(
            out,
            "storage:   {} check {} via {via}{cached}",
            st.action, st.outcome
        );
    }
}

/// The caller's roles and grants, sorted.
fn write_grants(out: &mut String, g: &crate::decision::authz::Grants) {
    let roles: Vec<&str> = g.roles.iter().map(String::as_str).collect();
    let _ = writeln!(out, "roles:     {}", roles.join(", "));
    let mut held: Vec<String> = g
        .objects
        .iter()
        .flat_map(|(o, hs)| {
            hs.iter().map(move |h| {
                let option = if h.grant_option {
                    " WITH GRANT OPTION"
                } else {
                    ""
                };
                format!("{} on {o} via {}{option}", h.privilege.as_str(), h.via)
            })
        })
        .collect();
    held.sort();
    let none = if held.is_empty() { "none" } else { "" };
    let _ = writeln!(out, "grants:    {none}");
    for h in held {
        let _ = writeln!(out, "  {h}");
    }
}

/// The configured metastores as the proxy reaches them (TLS included), for the command
/// line's own clients (`explain`, `access`).
pub(crate) fn upstreams_of(
    settings: &Settings,
    metrics: &Arc<Metrics>,
) -> Result<Upstreams, String> {
    let tls = match settings.upstream_tls.clone() {
        None => None,
        Some(t) => Some(Arc::new(crate::auth::tls::UpstreamTls::load(
            t,
            metrics.clone(),
        )?)),
    };
    Ok(Upstreams::from_settings(settings, metrics.clone(), tls))
}
