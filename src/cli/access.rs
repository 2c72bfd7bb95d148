//! `hms-guard access`: access review for administrators, read fresh from the configured
//! metastore (README.md, "Access review").
//!
//! - `--table DB.T`: every principal holding each privilege on the table — grants on it
//!   (followed through roles granted to roles, each with its chain), its owner, the owner of
//!   its database, administrators, database and global grants (and what they give under
//!   hms-guard's rules), and partial grants: columns, partitions and views showing part of it.
//! - `--user U`: what the user may do to each table (of one database or of all), decided by the
//!   proxy's own rules: `authz::authorize` over the user's grants and the objects' owners, and
//!   for SELECT the fine-grained narrowing (`Guard::narrowing`), exactly as a live call is.
//!
//! Every count is bounded; a review that would pass a bound fails naming it, never printing a
//! partial answer as if it were whole.

mod meta;
#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, HashMap};
use std::fmt::{self, Write as _};
use std::sync::Arc;

use serde::Serialize;

use crate::config::AuthzMode;
use crate::decision::authz::{
    authorize, AlterKind, Facts, GrantTarget, Grants, Object, Operation, Owner, Principal,
    PrincipalKind, Privilege, PUBLIC_ROLE,
};
use crate::decision::facts::{database_facts, table_facts, ClientConfig, MetaClient};
use crate::decision::narrow::{part_of_view, TableShape};
use crate::decision::Guard;
use crate::listener::identity::{Identity, IdentitySource};
use crate::ops::metrics::Metrics;
use crate::settings::Settings;

use meta::{Meta, RawGrant};

/// Roles whose members one review reads at most.
pub const MAX_ROLES: usize = 1_000;
/// Longest chain of roles granted to roles followed (a role granted to a user is depth 1).
pub const MAX_DEPTH: usize = 32;
/// Most rows one review lists.
pub const MAX_ROWS: usize = 100_000;
/// Most databases one review reads.
pub const MAX_DATABASES: usize = 10_000;
/// Most tables one user review decides on.
pub const MAX_TABLES: usize = 10_000;
/// Most columns whose grants are read for one table.
pub const MAX_COLUMNS: usize = 2_000;
/// Most views (in the whole metastore) a table review looks at.
pub const MAX_VIEWS: usize = 5_000;

/// The privileges a user review decides on for each table (CREATE is decided on the database).
pub const TABLE_PRIVILEGES: [Privilege; 6] = [
    Privilege::Select,
    Privilege::Insert,
    Privilege::Update,
    Privilege::Delete,
    Privilege::Alter,
    Privilege::Drop,
];

/// The command line of `hms-guard access`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["table", "user"])))]
pub struct Args {
    /// Config file (TOML): the metastore, the admin role and users, the groups of users.
    #[arg(long, env = crate::config::CONFIG_ENV)]
    pub config: std::path::PathBuf,
    /// List every principal holding each privilege on this table (DB.TABLE): grants through
    /// roles (with the chain of roles), owners, administrators, database and global grants,
    /// and partial access (column and partition grants, views showing part of it).
    #[arg(long, value_name = "DB.TABLE")]
    pub table: Option<String>,
    /// List what this user may do to each table, and why, decided by the proxy's own rules.
    #[arg(long)]
    pub user: Option<String>,
    /// A group of the user, repeatable (default: the groups the proxy's configuration gives
    /// the user).
    #[arg(long = "group", value_name = "GROUP", conflicts_with = "table")]
    pub groups: Vec<String>,
    /// With --user: only this database's tables (default: every database's).
    #[arg(long, conflicts_with = "table")]
    pub db: Option<String>,
    /// Print JSON (README.md, "Access review", gives its shape) instead of aligned text.
    #[arg(long)]
    pub json: bool,
}

impl Args {
    pub fn request(&self) -> Request {
        Request {
            table: self.table.clone(),
            user: self.user.clone(),
            groups: self.groups.clone(),
            db: self.db.clone(),
            json: self.json,
        }
    }
}

/// What to review (README.md, command line).
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// `--table DB.TABLE`.
    pub table: Option<String>,
    /// `--user USER`.
    pub user: Option<String>,
    /// `--group`, repeatable; empty: the groups the proxy gives the user (`proxy_groups`).
    pub groups: Vec<String>,
    /// `--db`: one database (user review); `None`: every database.
    pub db: Option<String>,
    pub json: bool,
}

pub use super::explain::proxy_groups;

/// Runs one review against the configured metastore; returns what to print.
pub async fn access(settings: &Settings, r: &Request) -> Result<String, String> {
    let (guard, meta) = connect(settings).await?;
    let mode_notes: Vec<String> = (settings.authz.mode != AuthzMode::Enforce)
        .then(|| mode_note(settings.authz.mode))
        .into_iter()
        .collect();
    match (&r.table, &r.user) {
        (Some(t), None) => {
            let (db, table) = split_table(t)?;
            let mut review = review_table(settings, &guard, &meta, &db, &table).await?;
            review.notes.extend(mode_notes);
            Ok(print(&review, r.json))
        }
        (None, Some(user)) => {
            let (groups, groups_from) = if r.groups.is_empty() {
                (
                    proxy_groups(settings, user).await?,
                    "the proxy's configuration ([identity.groups] sources)",
                )
            } else {
                (r.groups.clone(), "--group")
            };
            let identity = Identity::new(user, &groups, IdentitySource::SetUgi);
            settings
                .identity
                .check(&identity)
                .map_err(|e| format!("hms-guard refuses this identity at set_ugi: {e}"))?;
            let mut review =
                review_user(&guard, &meta, &identity, r.db.as_deref(), groups_from).await?;
            review.notes.extend(mode_notes);
            Ok(print(&review, r.json))
        }
        _ => Err("give either --table DB.TABLE or --user USER".into()),
    }
}

/// The review as text, or as JSON.
fn print<T: Serialize + fmt::Display>(review: &T, json: bool) -> String {
    if !json {
        return review.to_string();
    }
    // Plain structs of strings, booleans and lists: serializing cannot fail.
    let mut s = serde_json::to_string_pretty(review).unwrap_or_default();
    s.push('\n');
    s
}

fn mode_note(mode: AuthzMode) -> String {
    let m = match mode {
        AuthzMode::Off => "off",
        AuthzMode::Shadow => "shadow",
        AuthzMode::Enforce => "enforce",
    };
    format!("authz.mode = \"{m}\": the proxy does not enforce these decisions")
}

/// `db.table`, lower case (the metastore folds names); an error for anything else.
pub fn split_table(t: &str) -> Result<(String, String), String> {
    match t.split_once('.') {
        Some((db, table)) if !db.is_empty() && !table.is_empty() && !table.contains('.') => {
            Ok((db.to_ascii_lowercase(), table.to_ascii_lowercase()))
        }
        _ => Err(format!("--table {t:?}: expected DB.TABLE")),
    }
}

/// The decision stage as the proxy builds it (its facts client), and a second client on the
/// same metastores for the listings only the review needs.
async fn connect(settings: &Settings) -> Result<(Guard, Meta), String> {
    let metrics = Arc::new(Metrics::new());
    let upstreams = super::explain::upstreams_of(settings, &metrics)?;
    let a = &settings.authz;
    let client = MetaClient::new(
        upstreams.clone(),
        ClientConfig {
            service_user: a.service_user.clone(),
            timeout: a.facts_timeout,
            max_reply_bytes: a.facts_max_reply_bytes,
            max_idle: 2,
        },
    );
    // No storage checks: a review decides grants, not locations (no AWS call is made).
    let mut no_storage = settings.storage.clone();
    no_storage.enabled = false;
    let storage = crate::decision::storage::StorageGuard::new(&no_storage, metrics.clone()).await;
    // Nor the location index (nothing is built: a review names no location).
    let mut no_index = a.clone();
    no_index.index.enabled = false;
    let guard = Guard::new(
        &no_index,
        settings.limits.request.max_depth,
        settings.storage.read_only_external,
        upstreams,
        metrics,
        storage,
    );
    Ok((guard, Meta { client }))
}

// ---------------------------------------------------------------------------------------
// Principals and role chains (pure).

/// A principal as the review prints it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Who {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub name: String,
}

impl From<&Principal> for Who {
    fn from(p: &Principal) -> Self {
        Who {
            kind: p.kind.as_str(),
            name: p.name.clone(),
        }
    }
}

impl fmt::Display for Who {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind, self.name)
    }
}

/// The principals each role is granted to directly, by role name.
pub type Members = HashMap<String, Vec<Principal>>;

/// Every principal that holds what is granted to `start`: `start` itself, and (for a role)
/// every principal it is granted to, through roles granted to roles. Each comes with one
/// chain, `start` first and the principal last — the shortest (breadth first, members in name
/// order: stable). Cycles end where a principal was already reached. `public` is held by
/// every user and lists no members. An error when a chain would be longer than `max_depth`
/// or a role's members were not read.
pub fn reach(
    start: &Principal,
    members: &Members,
    max_depth: usize,
) -> Result<Vec<Vec<Principal>>, String> {
    let mut out = vec![vec![start.clone()]];
    let mut seen: BTreeSet<Principal> = BTreeSet::from([start.clone()]);
    let mut next = 0;
    while next < out.len() {
        let chain = out[next].clone();
        next += 1;
        let Some(p) = chain.last() else { continue };
        if p.kind != PrincipalKind::Role || p.name == PUBLIC_ROLE {
            continue;
        }
        let Some(direct) = members.get(&p.name) else {
            return Err(format!("the members of role {} were not read", p.name));
        };
        let mut direct: Vec<&Principal> = direct.iter().collect();
        direct.sort();
        for m in direct {
            if !seen.insert(m.clone()) {
                continue;
            }
            if chain.len() > max_depth {
                return Err(format!(
                    "{} {} is reached from {} only through more than {max_depth} roles granted to roles ({} …): not followed further",
                    m.kind.as_str(),
                    m.name,
                    start,
                    chain.iter().take(4).map(|p| p.to_string()).collect::<Vec<_>>().join(" <- ")
                ));
            }
            let mut longer = chain.clone();
            longer.push(m.clone());
            out.push(longer);
        }
    }
    Ok(out)
}

/// Reads the members of every role reachable from `roots` into `members` (at most
/// `MAX_ROLES` roles in all; `public` lists none).
async fn read_members(
    meta: &Meta,
    roots: impl IntoIterator<Item = String>,
    members: &mut Members,
) -> Result<(), String> {
    members.entry(PUBLIC_ROLE.to_string()).or_default();
    let mut queue: Vec<String> = roots.into_iter().collect();
    while let Some(role) = queue.pop() {
        if members.contains_key(&role) {
            continue;
        }
        if members.len() > MAX_ROLES {
            return Err(format!(
                "more than {MAX_ROLES} roles to follow: the review stops rather than list part of the holders"
            ));
        }
        let direct = meta
            .members(&role)
            .await
            .map_err(|e| format!("the members of role {role} could not be read: {e}"))?;
        for p in &direct {
            if p.kind == PrincipalKind::Role && !members.contains_key(&p.name) {
                queue.push(p.name.clone());
            }
        }
        members.insert(role, direct);
    }
    Ok(())
}

fn chain_text(chain: &[Who]) -> String {
    if chain.len() <= 1 {
        return "direct".into();
    }
    chain
        .iter()
        .map(Who::to_string)
        .collect::<Vec<_>>()
        .join(" <- ")
}

// ---------------------------------------------------------------------------------------
// The table review.

/// How a row's principal holds its privilege.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum How {
    /// An administrator (`authz.admin_users`, or the admin role): every privilege.
    Admin,
    /// Owner of the table (every table privilege) or of its database.
    Owner,
    /// A grant on the table itself.
    Grant,
    /// A grant on part of the table (columns, partitions) or on a view showing part of it.
    Partial,
    /// A grant on the table's database.
    Database,
    /// A grant hms-guard does not count for the table (global grants).
    NotCounted,
}

impl How {
    fn as_str(self) -> &'static str {
        match self {
            How::Admin => "admin",
            How::Owner => "owner",
            How::Grant => "grant",
            How::Partial => "partial",
            How::Database => "database",
            How::NotCounted => "not_counted",
        }
    }
}

/// One principal holding one privilege, and how.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Holding {
    pub principal: Who,
    /// SELECT, INSERT, …, ALL; OWNER for the database's owner.
    pub privilege: String,
    /// What the grant or ownership is on: `table d.t`, `database d`, `the metastore`,
    /// `column c of table d.t`, `partition [v] of table d.t`, `view d.v`.
    pub on: String,
    pub how: How,
    pub grant_option: bool,
    /// From the principal the grant (ownership, admin role) names to `principal`: roles
    /// granted to roles; one element when held directly.
    pub chain: Vec<Who>,
    /// What it gives under hms-guard's rules, when that is not simply the privilege on the
    /// table.
    pub gives: String,
}

/// Everything `review_table` needs, read from the metastore.
#[derive(Debug, Clone, Default)]
pub struct TableFacts {
    pub db: String,
    pub table: String,
    pub owner: Option<Owner>,
    pub db_owner: Option<Owner>,
    /// Grants on the table, its columns and partitions, its database and the metastore.
    pub grants: Vec<RawGrant>,
    /// Views showing part of the table.
    pub views: Vec<ViewPart>,
    pub admin_role: String,
    pub admin_users: Vec<String>,
    pub members: Members,
    /// Things the reader of the review must know (views that give nothing, and why).
    pub notes: Vec<String>,
}

/// A view that shows part of the table, what it shows, and the grants on the view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewPart {
    /// `db.view`.
    pub view: String,
    pub gives: String,
    pub grants: Vec<RawGrant>,
}

/// Who holds what on one table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableReview {
    /// `db.table`.
    pub table: String,
    pub owner: Option<Who>,
    pub database_owner: Option<Who>,
    pub holders: Vec<Holding>,
    pub notes: Vec<String>,
}

/// Rank of a principal kind in the listing: users, groups, roles.
fn kind_rank(kind: &str) -> u8 {
    match kind {
        "user" => 0,
        "group" => 1,
        _ => 2,
    }
}

/// Rank of a privilege in the listing: the table privileges in the usual order.
fn privilege_rank(p: &str) -> u8 {
    [
        "ALL", "SELECT", "INSERT", "UPDATE", "DELETE", "ALTER", "DROP", "CREATE", "INDEX", "LOCK",
        "OWNER",
    ]
    .iter()
    .position(|x| *x == p)
    .map_or(u8::MAX, |i| i as u8)
}

/// Sorts rows for stable output (principal, then privilege, how, object, chain) and drops
/// duplicates.
pub fn sort_holdings(rows: &mut Vec<Holding>) {
    rows.sort_by(|a, b| {
        (kind_rank(a.principal.kind), &a.principal.name)
            .cmp(&(kind_rank(b.principal.kind), &b.principal.name))
            .then(privilege_rank(&a.privilege).cmp(&privilege_rank(&b.privilege)))
            .then(a.how.cmp(&b.how))
            .then(a.on.cmp(&b.on))
            .then(a.chain.cmp(&b.chain))
            .then(a.grant_option.cmp(&b.grant_option))
    });
    rows.dedup();
}

/// What a grant is on, and what it gives under hms-guard's rules.
fn grant_effect(g: &RawGrant) -> (How, String, String) {
    let on = g.target.to_string();
    let select = matches!(g.privilege, Privilege::Select | Privilege::All);
    match g.target.kind {
        meta::TABLE => (How::Grant, on, String::new()),
        meta::DATABASE => {
            let gives = if matches!(g.privilege, Privilege::Create | Privilege::All) {
                format!("creating tables in {on}; shows the database (no privilege on its tables)")
            } else {
                format!("shows {on} (no privilege on its tables)")
            };
            (How::Database, on, gives)
        }
        meta::PARTITION | meta::COLUMN => {
            let gives = if select {
                "part of the table: reads of it are narrowed (fine-grained access)".to_string()
            } else {
                "nothing: only SELECT on part of a table counts (fine-grained access)".to_string()
            };
            (How::Partial, on, gives)
        }
        _ => (
            How::NotCounted,
            on,
            "nothing: hms-guard counts grants on the table and its database, not global grants"
                .into(),
        ),
    }
}

/// Who holds what on the table, from facts read beforehand. Pure.
pub fn table_holders(f: &TableFacts) -> Result<TableReview, String> {
    let mut rows: Vec<Holding> = Vec::new();
    let table = Object::table(&f.db, &f.table).to_string();
    let mut add = |start: &Principal,
                   privilege: &str,
                   on: &str,
                   how: How,
                   grant_option: bool,
                   gives: &str|
     -> Result<(), String> {
        // Every user holds `public`: its grants are everyone's (its members are not listed).
        let everyone = start.kind == PrincipalKind::Role && start.name == PUBLIC_ROLE;
        let gives = match (everyone, gives.is_empty()) {
            (false, _) => gives.to_string(),
            (true, true) => "every user holds role public".to_string(),
            (true, false) => format!("every user holds role public; {gives}"),
        };
        for chain in reach(start, &f.members, MAX_DEPTH)? {
            let holder = chain.last().map(Who::from).unwrap_or_else(|| start.into());
            rows.push(Holding {
                principal: holder,
                privilege: privilege.to_string(),
                on: on.to_string(),
                how,
                grant_option,
                chain: chain.iter().map(Who::from).collect(),
                gives: gives.clone(),
            });
            if rows.len() > MAX_ROWS {
                return Err(format!(
                    "more than {MAX_ROWS} rows: the review stops rather than list part of the holders"
                ));
            }
        }
        Ok(())
    };
    let mut notes = f.notes.clone();
    for u in &f.admin_users {
        let p = Principal {
            kind: PrincipalKind::User,
            name: u.clone(),
        };
        add(
            &p,
            "ALL",
            &table,
            How::Admin,
            false,
            "listed in authz.admin_users: every privilege",
        )?;
    }
    let admin_role = Principal {
        kind: PrincipalKind::Role,
        name: f.admin_role.clone(),
    };
    let gives = format!("the admin role ({}): every privilege", f.admin_role);
    add(&admin_role, "ALL", &table, How::Admin, false, &gives)?;
    let owned = [
        (&f.owner, table.clone(), "ALL", "owner of the table: every table privilege"),
        (
            &f.db_owner,
            Object::database(&f.db).to_string(),
            "OWNER",
            "owner of the database: creates tables in it, alters and drops it (no privilege on its tables)",
        ),
    ];
    for (owner, on, privilege, gives) in owned {
        let Some(o) = owner else { continue };
        if o.kind == PrincipalKind::Role && o.name == PUBLIC_ROLE {
            notes.push(format!(
                "{on} is owned by role public, which every user holds: that ownership counts for nobody"
            ));
            continue;
        }
        let p = Principal {
            kind: o.kind,
            name: o.name.clone(),
        };
        add(&p, privilege, &on, How::Owner, false, gives)?;
    }
    for g in &f.grants {
        let (how, on, gives) = grant_effect(g);
        add(
            &g.principal,
            g.privilege.as_str(),
            &on,
            how,
            g.grant_option,
            &gives,
        )?;
    }
    for v in &f.views {
        for g in &v.grants {
            add(
                &g.principal,
                g.privilege.as_str(),
                &format!("view {}", v.view),
                How::Partial,
                g.grant_option,
                &v.gives,
            )?;
        }
    }
    sort_holdings(&mut rows);
    let who = |o: &Option<Owner>| {
        o.as_ref().map(|o| Who {
            kind: o.kind.as_str(),
            name: o.name.clone(),
        })
    };
    Ok(TableReview {
        table: format!("{}.{}", f.db, f.table),
        owner: who(&f.owner),
        database_owner: who(&f.db_owner),
        holders: rows,
        notes,
    })
}

/// Reads the facts of one table and lists its holders.
async fn review_table(
    settings: &Settings,
    guard: &Guard,
    meta: &Meta,
    db: &str,
    table: &str,
) -> Result<TableReview, String> {
    let read = |what: String| {
        move |e: crate::decision::facts::FactsError| format!("{what} could not be read: {e}")
    };
    let t = guard
        .facts
        .table(db, table)
        .await
        .map_err(read(format!("table {db}.{table}")))?
        .ok_or_else(|| format!("table {db}.{table} does not exist"))?;
    let d = guard
        .facts
        .database(db)
        .await
        .map_err(read(format!("database {db}")))?
        .ok_or_else(|| format!("database {db} does not exist"))?;
    let shape = TableShape::of(&t);
    let mut f = TableFacts {
        db: db.to_string(),
        table: table.to_string(),
        owner: table_facts(&t).owner,
        db_owner: database_facts(&d).owner,
        admin_role: settings.authz.admin_role.clone(),
        admin_users: settings.authz.admin_users.clone(),
        ..TableFacts::default()
    };
    f.grants = read_grants(meta, db, table, &shape).await?;
    read_views(guard, meta, &shape, &mut f).await?;
    let mut roles: Vec<String> = f
        .grants
        .iter()
        .chain(f.views.iter().flat_map(|v| v.grants.iter()))
        .map(|g| &g.principal)
        .filter(|p| p.kind == PrincipalKind::Role)
        .map(|p| p.name.clone())
        .collect();
    roles.extend(
        [&f.owner, &f.db_owner]
            .into_iter()
            .flatten()
            .filter(|o| o.kind == PrincipalKind::Role)
            .map(|o| o.name.clone()),
    );
    roles.push(f.admin_role.clone());
    let mut members = Members::new();
    read_members(meta, roles, &mut members).await?;
    f.members = members;
    table_holders(&f)
}

/// Every principal's grants on the table, each of its columns, its partitions (and their
/// columns), its database and the metastore. Rows naming another object than asked (a
/// database comparing names loosely) are not this table's, and are left out.
async fn read_grants(
    meta: &Meta,
    db: &str,
    table: &str,
    shape: &TableShape,
) -> Result<Vec<RawGrant>, String> {
    let target = |kind, on_table: bool, column: Option<&str>| GrantTarget {
        kind,
        db: (kind != meta::GLOBAL).then(|| db.to_string()),
        name: on_table.then(|| table.to_string()),
        part_values: None,
        column: column.map(str::to_string),
    };
    let columns: Vec<&String> = shape
        .columns
        .iter()
        .chain(shape.keys.iter().map(|(k, _)| k))
        .collect();
    if columns.len() > MAX_COLUMNS {
        return Err(format!(
            "table {db}.{table} has more than {MAX_COLUMNS} columns: their grants are not read one by one"
        ));
    }
    let mut asks = vec![
        target(meta::TABLE, true, None),
        target(meta::DATABASE, false, None),
        target(meta::GLOBAL, false, None),
    ];
    asks.extend(
        columns
            .iter()
            .map(|c| target(meta::COLUMN, true, Some(c.as_str()))),
    );
    let mut out = Vec::new();
    for ask in &asks {
        let rows = meta
            .grants_on(ask)
            .await
            .map_err(|e| format!("the grants on {ask} could not be read: {e}"))?;
        out.extend(rows.into_iter().filter(|g| {
            g.target.kind == ask.kind
                && g.target.db == ask.db
                && g.target.name == ask.name
                && g.target.column == ask.column
        }));
    }
    // Partition grants (and partition-column grants) are listed for the whole metastore (no
    // database named) and kept for this table.
    let whole = |kind, part_values| GrantTarget {
        kind,
        db: None,
        name: None,
        part_values,
        column: None,
    };
    for ask in [
        whole(meta::PARTITION, None),
        whole(meta::COLUMN, Some(vec![String::new()])),
    ] {
        let rows = meta
            .grants_on(&ask)
            .await
            .map_err(|e| format!("the partition grants could not be read: {e}"))?;
        out.extend(rows.into_iter().filter(|g| {
            g.target.kind == ask.kind
                && g.target.part_values.is_some()
                && g.target.db.as_deref() == Some(db)
                && g.target.name.as_deref() == Some(table)
        }));
    }
    Ok(out)
}

/// The views that show part of the table, as the proxy's fine-grained rules count them (a view
/// qualifies, reads the table, and its owner may give it), with every principal's SELECT (or
/// ALL) on each; views that read the table but give nothing are noted with the reason.
async fn read_views(
    guard: &Guard,
    meta: &Meta,
    base: &TableShape,
    f: &mut TableFacts,
) -> Result<(), String> {
    let databases = meta
        .databases()
        .await
        .map_err(|e| format!("the databases could not be listed: {e}"))?;
    if databases.len() > MAX_DATABASES {
        return Err(format!("more than {MAX_DATABASES} databases"));
    }
    let mut views: Vec<Object> = Vec::new();
    for vdb in &databases {
        let names = meta
            .views(vdb)
            .await
            .map_err(|e| format!("the views of database {vdb} could not be listed: {e}"))?;
        views.extend(names.iter().map(|v| Object::table(vdb, v)));
        if views.len() > MAX_VIEWS {
            return Err(format!(
                "more than {MAX_VIEWS} views in the metastore: the views showing part of the table are not looked for"
            ));
        }
    }
    views.sort();
    for obj in views {
        let Object::Table(vdb, vname) = &obj else {
            continue;
        };
        let name = format!("{vdb}.{vname}");
        let shape = guard
            .facts
            .shape(&obj)
            .await
            .map_err(|e| format!("view {name} could not be read: {e}"))?;
        let Some(shape) = shape else { continue };
        let analysed = match &shape.view {
            Some(Ok(a)) => a,
            Some(Err(why)) => {
                if crate::decision::narrow::params::words(&shape.view_text).any(|w| w == f.table) {
                    f.notes.push(format!(
                        "view {name} names {} but gives nothing of it: {why}",
                        f.table
                    ));
                }
                continue;
            }
            None => continue,
        };
        let mut gives: Vec<String> = Vec::new();
        for b in &analysed.branches {
            if Object::table(&b.db, &b.table) != base.table {
                continue;
            }
            match guard.owner_may_give(&shape, base).await {
                Err(e) => return Err(format!("the owner of view {name} could not be read: {e}")),
                Ok(Err(why)) => {
                    f.notes.push(why);
                    continue;
                }
                Ok(Ok(())) => {}
            }
            match part_of_view(&obj, b, base) {
                Ok(part) => {
                    let cols = match &part.columns {
                        None => "every column".to_string(),
                        Some(c) => format!(
                            "columns {}",
                            c.iter()
                                .cloned()
                                .chain(base.keys.iter().map(|(k, _)| k.clone()))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    };
                    gives.push(format!("{cols} of {}", part.rows.describe()));
                }
                Err(why) => f.notes.push(format!(
                    "view {name} gives nothing of {}: {why}",
                    base.table
                )),
            }
        }
        if gives.is_empty() {
            continue;
        }
        let on_view = GrantTarget {
            kind: meta::TABLE,
            db: Some(vdb.clone()),
            name: Some(vname.clone()),
            part_values: None,
            column: None,
        };
        let grants = meta
            .grants_on(&on_view)
            .await
            .map_err(|e| format!("the grants on view {name} could not be read: {e}"))?
            .into_iter()
            .filter(|g| matches!(g.privilege, Privilege::Select | Privilege::All))
            .collect();
        f.views.push(ViewPart {
            view: name,
            gives: format!("part of the table through the view: {}", gives.join("; ")),
            grants,
        });
    }
    Ok(())
}

/// Aligned columns (the last one not padded), two spaces apart.
fn columns(rows: &[Vec<String>]) -> String {
    let n = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..n)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            if i + 1 == r.len() {
                line.push_str(c);
            } else {
                let _ = write!(line, "{c:<w$}  ", w = widths[i]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

impl fmt::Display for TableReview {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let none = || "none recorded".to_string();
        writeln!(f, "table:          {}", self.table)?;
        writeln!(
            f,
            "owner:          {}",
            self.owner.as_ref().map_or_else(none, Who::to_string)
        )?;
        writeln!(
            f,
            "database owner: {}",
            self.database_owner
                .as_ref()
                .map_or_else(none, Who::to_string)
        )?;
        writeln!(f)?;
        let mut rows = vec![vec![
            "PRINCIPAL".to_string(),
            "PRIVILEGE".into(),
            "HOW".into(),
            "ON".into(),
            "VIA".into(),
            "NOTE".into(),
        ]];
        for h in &self.holders {
            let mut note = Vec::new();
            if h.grant_option {
                note.push("WITH GRANT OPTION".to_string());
            }
            if !h.gives.is_empty() {
                note.push(h.gives.clone());
            }
            rows.push(vec![
                h.principal.to_string(),
                h.privilege.clone(),
                h.how.as_str().into(),
                h.on.clone(),
                chain_text(&h.chain),
                note.join("; "),
            ]);
        }
        if self.holders.is_empty() {
            writeln!(f, "nobody holds a privilege on the table")?;
        } else {
            f.write_str(&columns(&rows))?;
        }
        for n in &self.notes {
            writeln!(f, "note: {n}")?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// The user review.

/// One privilege the user holds on one object (or a part of a table it is refused).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Access {
    pub database: String,
    /// `None`: the database itself (CREATE).
    pub table: Option<String>,
    pub privilege: &'static str,
    /// True for every held privilege; false only for a part of a table the user may not
    /// read (reason `not_narrowable`).
    pub allowed: bool,
    /// The audit's `reason`: `admin`, `owner`, `grant`, `narrowed`, `not_narrowable`.
    pub reason: &'static str,
    /// The audit's `matched`: the grant, role, ownership or admin rule that decided.
    pub matched: String,
    /// A narrowed read: the columns and partitions given.
    pub given: Option<String>,
}

/// What one user may do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserReview {
    pub user: String,
    pub groups: Vec<String>,
    /// `--group`, or the proxy's configuration.
    pub groups_from: &'static str,
    /// Every role the user holds (through its groups and roles of roles), `public` included.
    pub roles: Vec<String>,
    pub admin: bool,
    /// The databases reviewed.
    pub databases: Vec<String>,
    pub access: Vec<Access>,
    pub notes: Vec<String>,
}

/// The operation whose rule decides privilege `p` on `table` — the rule a live call needing
/// that privilege is judged by (docs/AUTHORIZATION.md, the privilege table).
pub fn operation_for(p: Privilege, table: &Object) -> Operation {
    let table = table.clone();
    match p {
        Privilege::Select => Operation::ReadTables(vec![table]),
        Privilege::Alter => Operation::AlterTable {
            table,
            changes: vec![AlterKind::Other],
        },
        Privilege::Drop => Operation::DropTable { table },
        // INSERT, UPDATE, DELETE: a write of the table's data.
        p => Operation::WriteData {
            table,
            privileges: vec![p],
        },
    }
}

/// The owner of an object (`None`: none recorded, or no such object).
async fn owner(guard: &Guard, obj: &Object) -> Result<Option<Owner>, String> {
    guard
        .facts
        .object(obj)
        .await
        .map(|f| f.and_then(|f| f.owner))
        .map_err(|e| format!("the owner of {obj} could not be read: {e}"))
}

/// Decides each table privilege (and CREATE on the database) for `identity` the way the proxy
/// does; keeps what is held, and parts of tables refused.
async fn decide_database(
    guard: &Guard,
    identity: &Identity,
    grants: &Arc<Grants>,
    db: &str,
    tables: &[String],
) -> Result<Vec<Access>, String> {
    let mut out = Vec::new();
    let database = Object::database(db);
    let mut facts = Facts {
        grants: Some(grants),
        ..Facts::default()
    };
    if let Some(o) = owner(guard, &database).await? {
        facts.owners.insert(database.clone(), o);
    }
    let create = Operation::CreateTable {
        table: database.clone(),
    };
    let v = authorize(identity, &create, &facts, &guard.policy);
    if v.allow {
        out.push(Access {
            database: db.to_string(),
            table: None,
            privilege: Privilege::Create.as_str(),
            allowed: true,
            reason: v.reason.as_str(),
            matched: v.matched,
            given: None,
        });
    }
    for t in tables {
        let table = Object::table(db, t);
        let mut facts = Facts {
            grants: Some(grants),
            ..Facts::default()
        };
        if let Some(o) = owner(guard, &table).await? {
            facts.owners.insert(table.clone(), o);
        }
        for p in TABLE_PRIVILEGES {
            let v = authorize(identity, &operation_for(p, &table), &facts, &guard.policy);
            let row = |allowed, reason: &'static str, matched, given| Access {
                database: db.to_string(),
                table: Some(t.to_ascii_lowercase()),
                privilege: p.as_str(),
                allowed,
                reason,
                matched,
                given,
            };
            if v.allow {
                out.push(row(true, v.reason.as_str(), v.matched, None));
            } else if p == Privilege::Select {
                // A read the grants deny may be narrowed to part of the table, as the proxy
                // narrows it.
                match guard.narrowing(identity, grants, &table).await {
                    Ok(None) => {}
                    Ok(Some(n)) => out.push(row(
                        true,
                        "narrowed",
                        n.record.matched.clone(),
                        Some(n.given().to_string()),
                    )),
                    Err(why) => out.push(row(false, "not_narrowable", why.0, None)),
                }
            }
        }
    }
    Ok(out)
}

/// Reviews what `identity` may do in `db` (or every database).
async fn review_user(
    guard: &Guard,
    meta: &Meta,
    identity: &Identity,
    db: Option<&str>,
    groups_from: &'static str,
) -> Result<UserReview, String> {
    let grants = guard.facts.grants(identity).await.map_err(|e| {
        format!(
            "the grants of user {} could not be read: {e}",
            identity.user
        )
    })?;
    let databases = match db {
        Some(d) => {
            let d = d.to_ascii_lowercase();
            guard
                .facts
                .database(&d)
                .await
                .map_err(|e| format!("database {d} could not be read: {e}"))?
                .ok_or_else(|| format!("database {d} does not exist"))?;
            vec![d]
        }
        None => {
            let mut all = meta
                .databases()
                .await
                .map_err(|e| format!("the databases could not be listed: {e}"))?;
            if all.len() > MAX_DATABASES {
                return Err(format!("more than {MAX_DATABASES} databases"));
            }
            all.sort();
            all
        }
    };
    let mut access = Vec::new();
    let mut count = 0;
    for d in &databases {
        let mut tables = meta
            .tables(d)
            .await
            .map_err(|e| format!("the tables of database {d} could not be listed: {e}"))?;
        count += tables.len();
        if count > MAX_TABLES {
            return Err(format!(
                "more than {MAX_TABLES} tables to decide on: review one database at a time (--db)"
            ));
        }
        tables.sort();
        access.extend(decide_database(guard, identity, &grants, d, &tables).await?);
    }
    Ok(UserReview {
        user: identity.user.clone(),
        groups: identity.groups.clone(),
        groups_from,
        roles: grants.roles.iter().cloned().collect(),
        admin: guard.policy.is_admin(identity, &grants),
        databases,
        access,
        notes: Vec::new(),
    })
}

impl fmt::Display for UserReview {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let groups = if self.groups.is_empty() {
            "none".to_string()
        } else {
            self.groups.join(", ")
        };
        writeln!(f, "user:      {}", self.user)?;
        writeln!(f, "groups:    {groups} (from {})", self.groups_from)?;
        writeln!(f, "roles:     {}", self.roles.join(", "))?;
        writeln!(f, "admin:     {}", if self.admin { "yes" } else { "no" })?;
        writeln!(f, "databases: {}", self.databases.join(", "))?;
        writeln!(f)?;
        let mut rows = vec![vec![
            "OBJECT".to_string(),
            "PRIVILEGE".into(),
            "REASON".into(),
            "MATCHED".into(),
        ]];
        for a in &self.access {
            let object = match &a.table {
                Some(t) => format!("{}.{t}", a.database),
                None => format!("database {}", a.database),
            };
            // A narrowed read's `matched` names what gave it and what is given.
            let matched = a.matched.clone();
            let privilege = if a.allowed {
                a.privilege.to_string()
            } else {
                format!("{} refused", a.privilege)
            };
            rows.push(vec![object, privilege, a.reason.to_string(), matched]);
        }
        if self.access.is_empty() {
            writeln!(f, "nothing: user {} holds no privilege here", self.user)?;
        } else {
            f.write_str(&columns(&rows))?;
        }
        for n in &self.notes {
            writeln!(f, "note: {n}")?;
        }
        Ok(())
    }
}
