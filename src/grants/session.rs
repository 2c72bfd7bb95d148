//! Running statements: a session (current database, current roles) over a `Client`.
//! Each statement is resolved into effects — rows of grants and memberships, with the
//! names Hive's SQL layer would use (the current database for bare table names, partition
//! values in the table's key order, columns checked against the table) — then run as the
//! metastore calls Hive makes, or handed to `plan`.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use crate::decision::authz::{Principal, PrincipalKind, PUBLIC_ROLE};
use crate::wire::codec::value::Value;

use super::client::{CallError, Client};
use super::state::{Membership, ObjectKind, ObjectRef, PrivilegeRow};
use super::statement::{Located, ObjectSpec, PrivilegeSpec, RoleChoice, Statement};

/// Hive's admin role: `SET ROLE admin` makes it current.
pub const ADMIN_ROLE: &str = "admin";

/// What one statement changes, row by row.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    CreateRole(String),
    DropRole(String),
    Grant(PrivilegeRow),
    Revoke {
        row: PrivilegeRow,
        option_only: bool,
    },
    GrantRole(Membership),
    RevokeRole {
        member: Membership,
        option_only: bool,
    },
}

/// Why a statement failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// hms-guard or the metastore refused it, or an object is missing.
    #[error("{0}")]
    Call(#[from] CallError),
    /// The statement cannot be made into calls (an unknown column, a partial partition).
    #[error("{0}")]
    Invalid(String),
}

pub struct Session {
    pub client: Client,
    /// `USE`; Hive's default database at first.
    pub db: String,
    /// `SET ROLE`'s choice (`None`: every role held but admin, as Hive starts).
    current: RoleChoice,
}

impl Session {
    pub fn new(client: Client) -> Self {
        Session {
            client,
            db: "default".into(),
            current: RoleChoice::All,
        }
    }

    /// Runs one statement now; returns what to print.
    pub async fn run(&mut self, s: &Located) -> Result<String, RunError> {
        match &s.statement {
            Statement::SetRole(choice) => self.set_role(choice).await,
            Statement::Use(db) => {
                self.client.get_database(db).await?;
                self.db = db.clone();
                Ok(String::new())
            }
            Statement::ShowRoles => {
                let mut roles = self.client.get_role_names().await?;
                roles.sort();
                Ok(lines(&roles))
            }
            Statement::ShowCurrentRoles => Ok(lines(&self.current_roles().await?)),
            Statement::ShowRoleGrant(p) => {
                let mut grants = self.client.role_grants(p).await?;
                grants.sort_by(|a, b| a.role.cmp(&b.role));
                let rows: Vec<Vec<String>> = grants
                    .iter()
                    .map(|m| {
                        vec![
                            m.role.clone(),
                            m.admin_option.to_string(),
                            m.grant_time.to_string(),
                            m.grantor.clone(),
                        ]
                    })
                    .collect();
                Ok(table(
                    &["role", "grant_option", "grant_time", "grantor"],
                    &rows,
                ))
            }
            Statement::ShowPrincipals(role) => {
                let mut members = self.client.principals_in_role(role).await?;
                members.sort_by(|a, b| a.principal.cmp(&b.principal));
                let rows: Vec<Vec<String>> = members
                    .iter()
                    .map(|m| {
                        vec![
                            m.principal.name.clone(),
                            kind_text(m.principal.kind).into(),
                            m.admin_option.to_string(),
                            m.grantor.clone(),
                            m.grant_time.to_string(),
                        ]
                    })
                    .collect();
                Ok(table(
                    &[
                        "principal_name",
                        "principal_type",
                        "grant_option",
                        "grantor",
                        "grant_time",
                    ],
                    &rows,
                ))
            }
            Statement::ShowGrant { principal, object } => {
                self.show_grant(principal.as_ref(), object.as_ref()).await
            }
            _ => {
                let effects = self.effects(&s.statement).await?;
                self.execute(&s.statement, &effects).await?;
                Ok(String::new())
            }
        }
    }

    /// Runs a change statement's effects as Hive's client calls them: one
    /// `grant_revoke_privileges` per statement, one `grant_revoke_role` per role and
    /// principal.
    async fn execute(&mut self, s: &Statement, effects: &[Effect]) -> Result<(), RunError> {
        let rows: Vec<PrivilegeRow> = effects
            .iter()
            .filter_map(|e| match e {
                Effect::Grant(r) | Effect::Revoke { row: r, .. } => Some(r.clone()),
                _ => None,
            })
            .collect();
        match s {
            Statement::Grant { .. } => {
                self.client
                    .grant_revoke_privileges(true, &rows, false)
                    .await?
            }
            Statement::Revoke {
                grant_option_for, ..
            } => {
                self.client
                    .grant_revoke_privileges(false, &rows, *grant_option_for)
                    .await?
            }
            _ => {
                for e in effects {
                    match e {
                        Effect::CreateRole(r) => self.client.create_role(r).await?,
                        Effect::DropRole(r) => self.client.drop_role(r).await?,
                        Effect::GrantRole(m) => {
                            self.client
                                .grant_revoke_role(true, m, m.admin_option)
                                .await?
                        }
                        Effect::RevokeRole {
                            member,
                            option_only,
                        } => {
                            self.client
                                .grant_revoke_role(false, member, *option_only)
                                .await?
                        }
                        Effect::Grant(_) | Effect::Revoke { .. } => {}
                    }
                }
            }
        }
        Ok(())
    }

    /// The rows a change statement grants or revokes (session statements and SHOW: none).
    pub async fn effects(&mut self, s: &Statement) -> Result<Vec<Effect>, RunError> {
        let member = |role: &String, p: &Principal, admin_option: bool| Membership {
            role: role.clone(),
            principal: p.clone(),
            admin_option,
            grantor: String::new(),
            grant_time: 0,
        };
        Ok(match s {
            Statement::CreateRole(r) => vec![Effect::CreateRole(r.clone())],
            Statement::DropRole(r) => vec![Effect::DropRole(r.clone())],
            Statement::Grant {
                privileges,
                object,
                principals,
                grant_option,
            } => self
                .rows(privileges, object, principals, *grant_option)
                .await?
                .into_iter()
                .map(Effect::Grant)
                .collect(),
            Statement::Revoke {
                grant_option_for,
                privileges,
                object,
                principals,
            } => self
                .rows(privileges, object, principals, false)
                .await?
                .into_iter()
                .map(|row| Effect::Revoke {
                    row,
                    option_only: *grant_option_for,
                })
                .collect(),
            Statement::GrantRole {
                roles,
                principals,
                admin_option,
            } => roles
                .iter()
                .flat_map(|r| {
                    principals
                        .iter()
                        .map(move |p| Effect::GrantRole(member(r, p, *admin_option)))
                })
                .collect(),
            Statement::RevokeRole {
                admin_option_for,
                roles,
                principals,
            } => roles
                .iter()
                .flat_map(|r| {
                    principals.iter().map(move |p| Effect::RevokeRole {
                        member: member(r, p, false),
                        option_only: *admin_option_for,
                    })
                })
                .collect(),
            _ => Vec::new(),
        })
    }

    /// One row per principal, privilege and object (a column of a privilege, or the
    /// object's columns, make one object each).
    async fn rows(
        &mut self,
        privileges: &[PrivilegeSpec],
        object: &ObjectSpec,
        principals: &[Principal],
        grant_option: bool,
    ) -> Result<Vec<PrivilegeRow>, RunError> {
        let base = self.resolve(object).await?;
        let mut out = Vec::new();
        for spec in privileges {
            let mut columns: Vec<String> = spec.columns.clone();
            if let ObjectSpec::Table { columns: c, .. } = object {
                columns.extend(c.iter().cloned());
            }
            let objects: Vec<ObjectRef> = if columns.is_empty() {
                vec![base.object.clone()]
            } else {
                let Some(table) = &base.table else {
                    return Err(RunError::Invalid(
                        "columns can be named on a table only".into(),
                    ));
                };
                columns
                    .iter()
                    .map(|c| column_object(&base.object, table, c))
                    .collect::<Result<_, _>>()?
            };
            for o in objects {
                for p in principals {
                    out.push(PrivilegeRow {
                        object: o.clone(),
                        principal: p.clone(),
                        privilege: spec.privilege.as_str().to_string(),
                        grant_option,
                        grantor: self.client.user.clone(),
                        grantor_kind: Some(PrincipalKind::User),
                        create_time: 0,
                    });
                }
            }
        }
        Ok(out)
    }

    /// The object a statement names, checked at the metastore (through hms-guard): the
    /// database or table must exist; a partition spec must name every partition key.
    pub async fn resolve(&mut self, spec: &ObjectSpec) -> Result<Resolved, RunError> {
        match spec {
            ObjectSpec::Global => Ok(Resolved {
                object: ObjectRef::global(),
                table: None,
            }),
            ObjectSpec::Database(db) => {
                self.client.get_database(db).await?;
                Ok(Resolved {
                    object: ObjectRef::database(db),
                    table: None,
                })
            }
            ObjectSpec::Table {
                db,
                table,
                partition,
                ..
            } => {
                let db = db.clone().unwrap_or_else(|| self.db.clone());
                let t = self.client.get_table(&db, table).await?;
                let shape = TableShape::of(&t);
                let mut object = ObjectRef::table(&db, table);
                if !partition.is_empty() {
                    object.kind = ObjectKind::Partition;
                    object.keys = shape.keys.clone();
                    object.partition = partition_values(&shape.keys, partition)
                        .map_err(|e| RunError::Invalid(format!("{db}.{table}: {e}")))?;
                    // The metastore records a grant on a partition only if it exists (and
                    // says nothing otherwise): Hive's client checks first, so does this one.
                    self.client
                        .get_partition(&db, table, &object.partition)
                        .await
                        .map_err(|e| {
                            RunError::Invalid(format!(
                                "{db}.{table} has no partition ({}): {e}",
                                object.partition.join(", ")
                            ))
                        })?;
                }
                Ok(Resolved {
                    object,
                    table: Some(shape),
                })
            }
        }
    }

    async fn set_role(&mut self, choice: &RoleChoice) -> Result<String, RunError> {
        if let RoleChoice::Named(role) = choice {
            if role != PUBLIC_ROLE && !self.held_roles().await?.contains(role) {
                let hint = if role == ADMIN_ROLE {
                    " (administrators named by hms-guard's authz.admin_users hold no role: leave \
                     SET ROLE admin out)"
                } else {
                    ""
                };
                return Err(RunError::Invalid(format!(
                    "{} does not belong to role {role}{hint}",
                    self.client.user
                )));
            }
        }
        self.current = choice.clone();
        Ok(String::new())
    }

    /// Every role the user holds, directly or through other roles.
    async fn held_roles(&mut self) -> Result<BTreeSet<String>, RunError> {
        if self.client.user.is_empty() {
            return Err(RunError::Invalid(
                "the shell does not know the user's name: give --user".into(),
            ));
        }
        let mut held = BTreeSet::new();
        let mut todo = vec![Principal {
            kind: PrincipalKind::User,
            name: self.client.user.clone(),
        }];
        while let Some(p) = todo.pop() {
            if held.len() > super::plan::MAX_ROLES {
                return Err(RunError::Invalid("too many roles".into()));
            }
            for m in self.client.role_grants(&p).await? {
                if held.insert(m.role.clone()) {
                    todo.push(Principal {
                        kind: PrincipalKind::Role,
                        name: m.role,
                    });
                }
            }
        }
        Ok(held)
    }

    async fn current_roles(&mut self) -> Result<Vec<String>, RunError> {
        Ok(match &self.current {
            RoleChoice::None => Vec::new(),
            RoleChoice::Named(r) => vec![r.clone()],
            RoleChoice::All => {
                let mut roles: Vec<String> = self
                    .held_roles()
                    .await?
                    .into_iter()
                    .filter(|r| r != ADMIN_ROLE)
                    .collect();
                if !roles.iter().any(|r| r == PUBLIC_ROLE) {
                    roles.push(PUBLIC_ROLE.into());
                }
                roles.sort();
                roles
            }
        })
    }

    async fn show_grant(
        &mut self,
        principal: Option<&Principal>,
        object: Option<&ObjectSpec>,
    ) -> Result<String, RunError> {
        let objects: Vec<Option<ObjectRef>> = match object {
            None => {
                if principal.is_none() {
                    return Err(RunError::Invalid(
                        "SHOW GRANT needs a principal, an object or both".into(),
                    ));
                }
                vec![None]
            }
            Some(spec) => {
                let resolved = self.resolve(spec).await?;
                let columns = match spec {
                    ObjectSpec::Table { columns, .. } => columns.clone(),
                    _ => Vec::new(),
                };
                match (&resolved.table, columns.is_empty()) {
                    (Some(t), false) => columns
                        .iter()
                        .map(|c| column_object(&resolved.object, t, c).map(Some))
                        .collect::<Result<_, _>>()?,
                    _ => vec![Some(resolved.object)],
                }
            }
        };
        let mut rows = Vec::new();
        for o in &objects {
            rows.extend(self.client.list_privileges(principal, o.as_ref()).await?);
        }
        rows.sort_by(|a, b| {
            (a.object.key(), &a.principal, &a.privilege).cmp(&(
                b.object.key(),
                &b.principal,
                &b.privilege,
            ))
        });
        let cells: Vec<Vec<String>> = rows
            .iter()
            .map(|r| {
                vec![
                    r.object.db.clone(),
                    r.object.table.clone(),
                    r.object.partition.join("/"),
                    r.object.column.clone(),
                    r.principal.name.clone(),
                    kind_text(r.principal.kind).into(),
                    r.privilege.clone(),
                    r.grant_option.to_string(),
                    r.create_time.to_string(),
                    r.grantor.clone(),
                ]
            })
            .collect();
        Ok(table(
            &[
                "database",
                "table",
                "partition",
                "column",
                "principal_name",
                "principal_type",
                "privilege",
                "grant_option",
                "grant_time",
                "grantor",
            ],
            &cells,
        ))
    }
}

/// An object resolved, with the table's shape when it is (part of) a table.
pub struct Resolved {
    pub object: ObjectRef,
    pub table: Option<TableShape>,
}

/// A table's columns and partition keys (lower case, as the metastore keeps them).
#[derive(Debug, Clone, Default)]
pub struct TableShape {
    pub columns: Vec<String>,
    pub keys: Vec<String>,
}

impl TableShape {
    pub fn of(table: &Value) -> Self {
        let names = |v: Option<&Value>| -> Vec<String> {
            v.map(Value::as_list)
                .unwrap_or_default()
                .iter()
                .filter_map(|f| f.field(1).and_then(Value::as_str))
                .map(str::to_lowercase)
                .collect()
        };
        TableShape {
            // Table.sd.cols, Table.partitionKeys.
            columns: names(table.path(&[7, 1])),
            keys: names(table.field(8)),
        }
    }
}

/// A column of a table (or of one partition of it) as a grant object.
fn column_object(
    base: &ObjectRef,
    table: &TableShape,
    column: &str,
) -> Result<ObjectRef, RunError> {
    if !table.columns.iter().any(|c| c == column) && !table.keys.iter().any(|c| c == column) {
        return Err(RunError::Invalid(format!(
            "{}.{} has no column {column}",
            base.db, base.table
        )));
    }
    let mut o = base.clone();
    o.kind = ObjectKind::Column;
    o.column = column.to_string();
    Ok(o)
}

/// The values of a partition spec in the order of the table's keys; every key named once.
pub fn partition_values(keys: &[String], spec: &[(String, String)]) -> Result<Vec<String>, String> {
    if keys.is_empty() {
        return Err("the table is not partitioned".into());
    }
    for (k, _) in spec {
        if !keys.contains(k) {
            return Err(format!("no partition key {k} (keys: {})", keys.join(", ")));
        }
        if spec.iter().filter(|(k2, _)| k2 == k).count() > 1 {
            return Err(format!("partition key {k} named twice"));
        }
    }
    keys.iter()
        .map(|k| {
            spec.iter()
                .find(|(k2, _)| k2 == k)
                .map(|(_, v)| v.clone())
                .ok_or_else(|| format!("the partition spec lacks the key {k}: name every key"))
        })
        .collect()
}

fn kind_text(k: PrincipalKind) -> &'static str {
    match k {
        PrincipalKind::User => "USER",
        PrincipalKind::Group => "GROUP",
        PrincipalKind::Role => "ROLE",
    }
}

fn lines(items: &[String]) -> String {
    items.iter().map(|i| format!("{i}\n")).collect()
}

/// Rows under a header, columns aligned.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            let _ = write!(l, "{c:<w$}  ", w = widths[i]);
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
    out
}
