//! Grants as code: what running a file of statements would change against the metastore's
//! current grants (`--plan`), making exactly those changes (`--apply`: a second apply of the
//! same file changes nothing), and the current grants written as such a file (`--export`).
//!
//! The file's statements are resolved (`Session::effects`) and played, in order, over the
//! current rows they touch, read from the metastore; the difference is the plan. With
//! `prune`, the file is the whole truth for what it names: every role it creates or grants
//! (its members and its privileges everywhere) and every object it grants on — rows there
//! that the file does not state are revoked. The built-in roles (`admin`, `public`) are
//! never pruned of members.

use std::collections::{BTreeMap, BTreeSet};

use crate::decision::authz::{Principal, PrincipalKind, PUBLIC_ROLE};

use super::client::Client;
use super::session::{Effect, RunError, Session, TableShape, ADMIN_ROLE};
use super::state::{
    grant_text, group, revoke_text, GrantKey, Membership, ObjectKind, ObjectRef, PrivilegeRow,
};
use super::statement::{quote, Located, Statement};

/// Bounds of what one plan or export reads.
pub const MAX_ROLES: usize = 10_000;
const MAX_PARTITIONS: i16 = 10_000;
const MAX_COLUMNS: usize = 2_000;

/// The rows a plan reads and changes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct State {
    pub roles: BTreeSet<String>,
    pub members: BTreeMap<(String, Principal), Membership>,
    pub grants: BTreeMap<GrantKey, PrivilegeRow>,
}

/// What the file names: where its rows are read, and (with prune) what it owns.
#[derive(Debug, Default)]
struct Scope {
    /// Roles whose members are read (and pruned).
    roles: BTreeSet<String>,
    /// Roles whose privileges are read (dropped roles; with prune, managed roles).
    role_grants: BTreeSet<String>,
    objects: BTreeMap<(ObjectKind, String, String, Vec<String>, String), ObjectRef>,
}

/// One change of a plan.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    CreateRole(String),
    DropRole {
        role: String,
        grants: usize,
        members: usize,
    },
    Grant(Vec<PrivilegeRow>),
    Revoke(Vec<PrivilegeRow>),
    /// The grant option taken from rows that stay.
    RevokeOption(Vec<PrivilegeRow>),
    GrantRole(Membership),
    RevokeRole(Membership),
    RevokeAdminOption(Membership),
}

impl Change {
    /// `+`, `-` or `~` and the statement that makes it.
    pub fn text(&self) -> String {
        match self {
            Change::CreateRole(r) => format!("+ CREATE ROLE {}", quote(r)),
            Change::DropRole {
                role,
                grants,
                members,
            } => format!(
                "- DROP ROLE {} (with its {grants} grant(s) and {members} member(s))",
                quote(role)
            ),
            Change::Grant(rows) => format!("+ {}", grant_text(&refs(rows))),
            Change::Revoke(rows) => format!("- {}", revoke_text(&refs(rows), false)),
            Change::RevokeOption(rows) => format!("~ {}", revoke_text(&refs(rows), true)),
            Change::GrantRole(m) => format!("+ {}", m.grant_text()),
            Change::RevokeRole(m) => format!("- {}", m.revoke_text(false)),
            Change::RevokeAdminOption(m) => format!("~ {}", m.revoke_text(true)),
        }
    }
}

/// A plan: the changes in the order `apply` makes them, and what the file states that is
/// already so.
#[derive(Debug, Default)]
pub struct Plan {
    pub changes: Vec<Change>,
    pub unchanged: Vec<String>,
}

impl Plan {
    pub fn render(&self) -> String {
        let mut out = String::new();
        for c in &self.changes {
            out.push_str(&c.text());
            out.push('\n');
        }
        for u in &self.unchanged {
            out.push_str(&format!("= {u}\n"));
        }
        let (mut add, mut remove, mut change) = (0, 0, 0);
        for c in &self.changes {
            match c {
                Change::CreateRole(_) | Change::Grant(_) | Change::GrantRole(_) => add += 1,
                Change::RevokeOption(_) | Change::RevokeAdminOption(_) => change += 1,
                _ => remove += 1,
            }
        }
        out.push_str(&format!(
            "Plan: {add} to add, {change} to change, {remove} to remove, {} unchanged.\n",
            self.unchanged.len()
        ));
        out
    }
}

/// Resolves a file's statements into effects, in order (`USE` and `SET ROLE` run as they
/// come; `SHOW` has no place in a file of changes).
pub async fn effects(
    session: &mut Session,
    statements: &[Located],
) -> Result<Vec<Effect>, (usize, RunError)> {
    let mut out = Vec::new();
    for s in statements {
        let at = |e| (s.line, e);
        match &s.statement {
            Statement::Use(_) | Statement::SetRole(_) => {
                session.run(s).await.map_err(at)?;
            }
            Statement::ShowRoles
            | Statement::ShowCurrentRoles
            | Statement::ShowRoleGrant(_)
            | Statement::ShowPrincipals(_)
            | Statement::ShowGrant { .. } => {
                return Err(at(RunError::Invalid(
                    "SHOW statements have no place in a file of changes".into(),
                )))
            }
            st => out.extend(session.effects(st).await.map_err(at)?),
        }
    }
    Ok(out)
}

/// Reads the current rows the effects touch and computes the plan.
pub async fn plan(client: &mut Client, effects: &[Effect], prune: bool) -> Result<Plan, RunError> {
    let scope = scope(effects, prune);
    let current = read(client, &scope).await?;
    Ok(diff(
        &current,
        &desired(&current, &scope, effects, prune),
        effects,
    ))
}

fn scope(effects: &[Effect], prune: bool) -> Scope {
    let mut s = Scope::default();
    let managed = |r: &str| r != ADMIN_ROLE && r != PUBLIC_ROLE;
    for e in effects {
        match e {
            Effect::CreateRole(r) => {
                s.roles.insert(r.clone());
                if prune {
                    s.role_grants.insert(r.clone());
                }
            }
            Effect::DropRole(r) => {
                s.roles.insert(r.clone());
                s.role_grants.insert(r.clone());
            }
            Effect::Grant(row) | Effect::Revoke { row, .. } => {
                let o = &row.object;
                s.objects.insert(o.key_owned(), o.clone());
            }
            Effect::GrantRole(m) | Effect::RevokeRole { member: m, .. } => {
                s.roles.insert(m.role.clone());
                if prune && managed(&m.role) {
                    s.role_grants.insert(m.role.clone());
                }
            }
        }
    }
    s
}

async fn read(client: &mut Client, scope: &Scope) -> Result<State, RunError> {
    let mut state = State {
        roles: client.get_role_names().await?.into_iter().collect(),
        ..State::default()
    };
    if state.roles.len() > MAX_ROLES {
        return Err(RunError::Invalid(format!(
            "the metastore has more than {MAX_ROLES} roles"
        )));
    }
    for r in &scope.roles {
        if state.roles.contains(r) {
            for m in client.principals_in_role(r).await? {
                state.members.insert(m.key(), m);
            }
        }
    }
    let mut add = |rows: Vec<PrivilegeRow>| {
        for r in rows {
            state.grants.insert(r.key(), r);
        }
    };
    for o in scope.objects.values() {
        add(client.list_privileges(None, Some(o)).await?);
    }
    for r in &scope.role_grants {
        let p = Principal {
            kind: PrincipalKind::Role,
            name: r.clone(),
        };
        add(client.list_privileges(Some(&p), None).await?);
    }
    Ok(state)
}

/// The rows after the file's effects (with prune: after clearing what the file owns).
fn desired(current: &State, scope: &Scope, effects: &[Effect], prune: bool) -> State {
    let mut s = current.clone();
    let role = |p: &Principal, roles: &BTreeSet<String>| {
        p.kind == PrincipalKind::Role && roles.contains(&p.name)
    };
    if prune {
        let owned_roles: BTreeSet<String> = scope
            .roles
            .iter()
            .filter(|r| *r != ADMIN_ROLE && *r != PUBLIC_ROLE)
            .cloned()
            .collect();
        s.members.retain(|(r, _), _| !owned_roles.contains(r));
        s.grants.retain(|k, _| {
            !scope.objects.contains_key(&k.object) && !role(&k.principal, &scope.role_grants)
        });
    }
    for e in effects {
        match e {
            Effect::CreateRole(r) => {
                s.roles.insert(r.clone());
            }
            Effect::DropRole(r) => {
                s.roles.remove(r);
                let dropped = BTreeSet::from([r.clone()]);
                s.members
                    .retain(|(role_name, p), _| role_name != r && !role(p, &dropped));
                s.grants.retain(|k, _| !role(&k.principal, &dropped));
            }
            Effect::Grant(row) => {
                let option = s
                    .grants
                    .get(&row.key())
                    .is_some_and(|r| r.grant_option && !prune);
                let mut row = row.clone();
                row.grant_option |= option;
                s.grants.insert(row.key(), row);
            }
            Effect::Revoke { row, option_only } => {
                if *option_only {
                    if let Some(r) = s.grants.get_mut(&row.key()) {
                        r.grant_option = false;
                    }
                } else {
                    s.grants.remove(&row.key());
                }
            }
            Effect::GrantRole(m) => {
                let option = s
                    .members
                    .get(&m.key())
                    .is_some_and(|x| x.admin_option && !prune);
                let mut m = m.clone();
                m.admin_option |= option;
                s.members.insert(m.key(), m);
            }
            Effect::RevokeRole {
                member,
                option_only,
            } => {
                if *option_only {
                    if let Some(m) = s.members.get_mut(&member.key()) {
                        m.admin_option = false;
                    }
                } else {
                    s.members.remove(&member.key());
                }
            }
        }
    }
    s
}

/// The changes from `current` to `desired`, in the order they are made: roles created,
/// removals (grant options first), additions, roles dropped (their rows go with them).
pub fn diff(current: &State, desired: &State, effects: &[Effect]) -> Plan {
    let dropped: BTreeSet<&String> = current.roles.difference(&desired.roles).collect();
    let by_dropped = |p: &Principal| p.kind == PrincipalKind::Role && dropped.contains(&p.name);
    let mut plan = Plan::default();
    for r in desired.roles.difference(&current.roles) {
        plan.changes.push(Change::CreateRole(r.clone()));
    }
    // Removals.
    for (k, m) in &current.members {
        if dropped.contains(&k.0) || by_dropped(&k.1) {
            continue;
        }
        match desired.members.get(k) {
            None => plan.changes.push(Change::RevokeRole(m.clone())),
            Some(d) if m.admin_option && !d.admin_option => {
                plan.changes.push(Change::RevokeAdminOption(m.clone()))
            }
            _ => {}
        }
    }
    let (mut revoked, mut options) = (Vec::new(), Vec::new());
    for (k, r) in &current.grants {
        if by_dropped(&k.principal) {
            continue;
        }
        match desired.grants.get(k) {
            None => revoked.push(r),
            Some(d) if r.grant_option && !d.grant_option => options.push(r),
            // Adding a grant option: revoked here, granted again below with it.
            Some(d) if !r.grant_option && d.grant_option => revoked.push(r),
            _ => {}
        }
    }
    for g in group(&options) {
        plan.changes
            .push(Change::RevokeOption(g.into_iter().cloned().collect()));
    }
    for g in group(&revoked) {
        plan.changes
            .push(Change::Revoke(g.into_iter().cloned().collect()));
    }
    // Additions.
    let mut granted = Vec::new();
    for (k, r) in &desired.grants {
        match current.grants.get(k) {
            Some(c) if c.grant_option || !r.grant_option => {}
            _ => granted.push(r),
        }
    }
    for g in group(&granted) {
        plan.changes
            .push(Change::Grant(g.into_iter().cloned().collect()));
    }
    for (k, m) in &desired.members {
        match current.members.get(k) {
            Some(c) if c.admin_option || !m.admin_option => {}
            Some(c) => {
                // The admin option added: revoke and grant again with it.
                plan.changes.push(Change::RevokeRole(c.clone()));
                plan.changes.push(Change::GrantRole(m.clone()));
            }
            None => plan.changes.push(Change::GrantRole(m.clone())),
        }
    }
    for r in dropped {
        let grants = current
            .grants
            .keys()
            .filter(|k| k.principal.kind == PrincipalKind::Role && &k.principal.name == r)
            .count();
        let members = current.members.keys().filter(|(role, _)| role == r).count();
        plan.changes.push(Change::DropRole {
            role: r.clone(),
            grants,
            members,
        });
    }
    // What the file states that already holds (grants grouped as the changes are).
    let mut roles = BTreeSet::new();
    let mut rows: BTreeMap<&GrantKey, &PrivilegeRow> = BTreeMap::new();
    let mut memberships = Vec::new();
    for e in effects {
        match e {
            Effect::CreateRole(r) if current.roles.contains(r) && desired.roles.contains(r) => {
                roles.insert(r);
            }
            Effect::Grant(row) => {
                let k = row.key();
                if let (Some(c), Some(d)) =
                    (current.grants.get_key_value(&k), desired.grants.get(&k))
                {
                    if c.1.grant_option == d.grant_option {
                        rows.insert(c.0, c.1);
                    }
                }
            }
            Effect::GrantRole(m) => {
                if let (Some(c), Some(d)) =
                    (current.members.get(&m.key()), desired.members.get(&m.key()))
                {
                    if c.admin_option == d.admin_option && !memberships.contains(&d.grant_text()) {
                        memberships.push(d.grant_text());
                    }
                }
            }
            _ => {}
        }
    }
    plan.unchanged.extend(
        roles
            .into_iter()
            .map(|r| format!("CREATE ROLE {}", quote(r))),
    );
    let rows: Vec<&PrivilegeRow> = rows.into_values().collect();
    plan.unchanged
        .extend(group(&rows).iter().map(|g| grant_text(g)));
    plan.unchanged.extend(memberships);
    plan
}

/// Makes the plan's changes, in order, through the client; stops at the first refusal
/// (returning how many were made).
pub async fn apply(client: &mut Client, plan: &Plan) -> Result<usize, (usize, RunError)> {
    for (i, c) in plan.changes.iter().enumerate() {
        let r = match c {
            Change::CreateRole(r) => client.create_role(r).await,
            Change::DropRole { role, .. } => client.drop_role(role).await,
            Change::Grant(rows) => client.grant_revoke_privileges(true, rows, false).await,
            Change::Revoke(rows) => client.grant_revoke_privileges(false, rows, false).await,
            Change::RevokeOption(rows) => client.grant_revoke_privileges(false, rows, true).await,
            Change::GrantRole(m) => client.grant_revoke_role(true, m, m.admin_option).await,
            Change::RevokeRole(m) => client.grant_revoke_role(false, m, false).await,
            Change::RevokeAdminOption(m) => client.grant_revoke_role(false, m, true).await,
        };
        r.map_err(|e| (i, RunError::from(e)))?;
    }
    Ok(plan.changes.len())
}

/// The current grants of one database (or of all) as a file of statements: roles, their
/// members, then every grant on the metastore, the databases, their tables, columns and
/// partitions.
pub async fn export(client: &mut Client, db: Option<&str>) -> Result<String, RunError> {
    let dbs = match db {
        Some(d) => {
            client.get_database(d).await?;
            vec![d.to_string()]
        }
        None => {
            let mut all = client.get_all_databases().await?;
            all.sort();
            all
        }
    };
    let mut rows: Vec<PrivilegeRow> = Vec::new();
    if db.is_none() {
        rows.extend(
            client
                .list_privileges(None, Some(&ObjectRef::global()))
                .await?,
        );
    }
    for d in &dbs {
        rows.extend(
            client
                .list_privileges(None, Some(&ObjectRef::database(d)))
                .await?,
        );
        let mut tables = client.get_all_tables(d).await?;
        tables.sort();
        for t in &tables {
            rows.extend(table_rows(client, d, t).await?);
        }
    }
    // Roles: every one (a whole export), or those the rows name and the roles they hold.
    let all_roles: BTreeSet<String> = client.get_role_names().await?.into_iter().collect();
    let mut roles: BTreeSet<String> = if db.is_none() {
        all_roles.clone()
    } else {
        rows.iter()
            .filter(|r| r.principal.kind == PrincipalKind::Role)
            .map(|r| r.principal.name.clone())
            .collect()
    };
    let mut members = Vec::new();
    let mut todo: Vec<String> = roles.iter().cloned().collect();
    let mut read = BTreeSet::new();
    while let Some(r) = todo.pop() {
        if !read.insert(r.clone()) || !all_roles.contains(&r) {
            continue;
        }
        if read.len() > MAX_ROLES {
            return Err(RunError::Invalid(format!("more than {MAX_ROLES} roles")));
        }
        for m in client.principals_in_role(&r).await? {
            members.push(m);
        }
        // Roles that hold this one are part of the picture too.
        for m in client
            .role_grants(&Principal {
                kind: PrincipalKind::Role,
                name: r.clone(),
            })
            .await?
        {
            if roles.insert(m.role.clone()) {
                todo.push(m.role.clone());
            }
        }
    }
    members.sort_by_key(Membership::key);
    members.dedup_by(|a, b| a.key() == b.key());
    let mut out = String::new();
    out.push_str(&format!(
        "-- Grants of {} as statements (hms-guard sql --export).\n",
        db.map_or_else(
            || "the whole metastore".to_string(),
            |d| format!("database {d}")
        )
    ));
    for r in &roles {
        if r != ADMIN_ROLE && r != PUBLIC_ROLE && all_roles.contains(r) {
            out.push_str(&format!("CREATE ROLE {};\n", quote(r)));
        }
    }
    for m in &members {
        out.push_str(&format!("{};\n", m.grant_text()));
    }
    let refs: Vec<&PrivilegeRow> = rows.iter().collect();
    for g in group(&refs) {
        out.push_str(&format!("{};\n", grant_text(&g)));
    }
    Ok(out)
}

/// Every grant on one table: the table, each column, each partition.
async fn table_rows(client: &mut Client, db: &str, t: &str) -> Result<Vec<PrivilegeRow>, RunError> {
    let shape = TableShape::of(&client.get_table(db, t).await?);
    let mut rows = client
        .list_privileges(None, Some(&ObjectRef::table(db, t)))
        .await?;
    if shape.columns.len() + shape.keys.len() > MAX_COLUMNS {
        return Err(RunError::Invalid(format!(
            "{db}.{t} has more than {MAX_COLUMNS} columns: not exported"
        )));
    }
    for c in shape.columns.iter().chain(&shape.keys) {
        let mut o = ObjectRef::table(db, t);
        o.kind = ObjectKind::Column;
        o.column = c.clone();
        rows.extend(client.list_privileges(None, Some(&o)).await?);
    }
    if !shape.keys.is_empty() {
        let names = client.get_partition_names(db, t, MAX_PARTITIONS).await?;
        if names.len() >= MAX_PARTITIONS as usize {
            return Err(RunError::Invalid(format!(
                "{db}.{t} has {MAX_PARTITIONS} or more partitions: its partition grants are not exported"
            )));
        }
        for n in names {
            let mut o = ObjectRef::table(db, t);
            o.kind = ObjectKind::Partition;
            o.partition = partition_name_values(&n);
            rows.extend(client.list_privileges(None, Some(&o)).await?);
        }
    }
    for r in &mut rows {
        r.object.keys = shape.keys.clone();
    }
    Ok(rows)
}

/// The values of a partition name (`k=v/k2=v2`, each part escaped as Hive writes paths:
/// `%XX`).
pub fn partition_name_values(name: &str) -> Vec<String> {
    name.split('/')
        .map(|part| unescape(part.split_once('=').map_or(part, |(_, v)| v)))
        .collect()
}

fn unescape(s: &str) -> String {
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn refs(rows: &[PrivilegeRow]) -> Vec<&PrivilegeRow> {
    rows.iter().collect()
}
