//! Grants and role memberships as the metastore keeps them (one row each), and their text
//! as statements — what plans compare and exports write.

use std::collections::BTreeMap;

use crate::decision::authz::{Principal, PrincipalKind};
use crate::wire::codec::value::Value;

use super::statement::{literal, principal_text, quote};

/// Hive's `HiveObjectType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectKind {
    Global,
    Database,
    Table,
    Partition,
    Column,
}

impl ObjectKind {
    pub fn wire(self) -> i32 {
        match self {
            ObjectKind::Global => 1,
            ObjectKind::Database => 2,
            ObjectKind::Table => 3,
            ObjectKind::Partition => 4,
            ObjectKind::Column => 5,
        }
    }

    fn from_wire(v: i64) -> Option<Self> {
        Some(match v {
            1 => ObjectKind::Global,
            2 => ObjectKind::Database,
            3 => ObjectKind::Table,
            4 => ObjectKind::Partition,
            5 => ObjectKind::Column,
            _ => return None,
        })
    }
}

/// Hive's `HiveObjectRef`: what a grant is on. A column grant may also name a partition.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectRef {
    pub kind: ObjectKind,
    pub db: String,
    pub table: String,
    /// Partition values in the order of the table's partition keys.
    pub partition: Vec<String>,
    pub column: String,
    /// The partition keys, for writing the partition spec back (not compared: derived).
    pub keys: Vec<String>,
}

impl ObjectRef {
    pub fn global() -> Self {
        ObjectRef::of(ObjectKind::Global, "", "")
    }

    pub fn database(db: &str) -> Self {
        ObjectRef::of(ObjectKind::Database, db, "")
    }

    pub fn table(db: &str, table: &str) -> Self {
        ObjectRef::of(ObjectKind::Table, db, table)
    }

    fn of(kind: ObjectKind, db: &str, table: &str) -> Self {
        ObjectRef {
            kind,
            db: db.into(),
            table: table.into(),
            partition: Vec::new(),
            column: String::new(),
            keys: Vec::new(),
        }
    }

    /// The identity compared in plans: everything but the derived keys.
    pub fn key(&self) -> (ObjectKind, &str, &str, &[String], &str) {
        (
            self.kind,
            &self.db,
            &self.table,
            &self.partition,
            &self.column,
        )
    }

    /// `key`, owned (the object part of a `GrantKey`).
    pub fn key_owned(&self) -> (ObjectKind, String, String, Vec<String>, String) {
        (
            self.kind,
            self.db.clone(),
            self.table.clone(),
            self.partition.clone(),
            self.column.clone(),
        )
    }

    fn from_value(v: &Value) -> Option<Self> {
        let text = |id| {
            v.field(id)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        Some(ObjectRef {
            kind: ObjectKind::from_wire(v.field(1)?.as_int()?)?,
            db: text(2),
            table: text(3),
            partition: v
                .field(4)
                .map(Value::as_list)
                .unwrap_or_default()
                .iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect(),
            column: text(5),
            keys: Vec::new(),
        })
    }

    /// `ON …` as the grammar reads it (nothing for global grants); a privilege's columns
    /// are written by the caller.
    pub fn on_text(&self) -> String {
        match self.kind {
            ObjectKind::Global => String::new(),
            ObjectKind::Database => format!(" ON DATABASE {}", quote(&self.db)),
            ObjectKind::Table | ObjectKind::Partition | ObjectKind::Column => {
                let mut s = format!(" ON TABLE {}.{}", quote(&self.db), quote(&self.table));
                if !self.partition.is_empty() {
                    let spec: Vec<String> = self
                        .partition
                        .iter()
                        .enumerate()
                        .map(|(i, v)| {
                            let k = self.keys.get(i).map_or("?", String::as_str);
                            format!("{} = {}", quote(k), literal(v))
                        })
                        .collect();
                    s.push_str(&format!(" PARTITION ({})", spec.join(", ")));
                }
                s
            }
        }
    }

    /// A short name for listings: `db.t`, `db.t (c)`, `db.t PARTITION (…)`, `DATABASE db`.
    pub fn describe(&self) -> String {
        let mut s = self.on_text().trim_start_matches(" ON ").to_string();
        if s.is_empty() {
            s = "the whole metastore".into();
        }
        if !self.column.is_empty() {
            s.push_str(&format!(" ({})", quote(&self.column)));
        }
        s
    }
}

/// One granted privilege, as `list_privileges` returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrivilegeRow {
    pub object: ObjectRef,
    pub principal: Principal,
    /// Upper case, as Hive stores it (`SELECT`, `ALL`…).
    pub privilege: String,
    pub grant_option: bool,
    pub grantor: String,
    pub grantor_kind: Option<PrincipalKind>,
    pub create_time: i64,
}

impl PrivilegeRow {
    pub fn from_value(v: &Value) -> Option<Self> {
        let info = v.field(4)?;
        Some(PrivilegeRow {
            object: ObjectRef::from_value(v.field(1)?)?,
            principal: Principal {
                name: v.field(2)?.as_str()?.to_string(),
                kind: PrincipalKind::from_wire(v.field(3)?.as_int()?)?,
            },
            privilege: info.field(1)?.as_str()?.to_ascii_uppercase(),
            create_time: info.field(2).and_then(Value::as_int).unwrap_or(0),
            grantor: info
                .field(3)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            grantor_kind: info
                .field(4)
                .and_then(Value::as_int)
                .and_then(PrincipalKind::from_wire),
            grant_option: matches!(info.field(5), Some(Value::Bool(true))),
        })
    }

    /// What plans compare: the object, the principal and the privilege (the grant option is
    /// the value).
    pub fn key(&self) -> GrantKey {
        GrantKey {
            object: self.object.key_owned(),
            principal: self.principal.clone(),
            privilege: self.privilege.clone(),
        }
    }
}

/// The identity of a privilege row.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GrantKey {
    pub object: (ObjectKind, String, String, Vec<String>, String),
    pub principal: Principal,
    pub privilege: String,
}

/// One role granted to one principal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    pub role: String,
    pub principal: Principal,
    pub admin_option: bool,
    pub grantor: String,
    pub grant_time: i64,
}

impl Membership {
    /// A `RolePrincipalGrant`.
    pub fn from_value(v: &Value) -> Option<Self> {
        Some(Membership {
            role: v.field(1)?.as_str()?.to_string(),
            principal: Principal {
                name: v.field(2)?.as_str()?.to_string(),
                kind: PrincipalKind::from_wire(v.field(3)?.as_int()?)?,
            },
            admin_option: matches!(v.field(4), Some(Value::Bool(true))),
            grant_time: v.field(5).and_then(Value::as_int).unwrap_or(0),
            grantor: v
                .field(6)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        })
    }

    pub fn key(&self) -> (String, Principal) {
        (self.role.clone(), self.principal.clone())
    }

    pub fn grant_text(&self) -> String {
        format!(
            "GRANT ROLE {} TO {}{}",
            quote(&self.role),
            principal_text(&self.principal),
            if self.admin_option {
                " WITH ADMIN OPTION"
            } else {
                ""
            }
        )
    }

    pub fn revoke_text(&self, option_only: bool) -> String {
        format!(
            "REVOKE {}ROLE {} FROM {}",
            if option_only { "ADMIN OPTION FOR " } else { "" },
            quote(&self.role),
            principal_text(&self.principal)
        )
    }
}

/// `GRANT privs ON object TO principal [WITH GRANT OPTION]` for rows of one object,
/// principal and grant option (column rows: their columns after each privilege).
pub fn grant_text(rows: &[&PrivilegeRow]) -> String {
    let Some(first) = rows.first() else {
        return String::new();
    };
    format!(
        "GRANT {}{} TO {}{}",
        privileges_text(rows),
        first.object.on_text(),
        principal_text(&first.principal),
        if first.grant_option {
            " WITH GRANT OPTION"
        } else {
            ""
        }
    )
}

/// `REVOKE [GRANT OPTION FOR] privs ON object FROM principal`.
pub fn revoke_text(rows: &[&PrivilegeRow], option_only: bool) -> String {
    let Some(first) = rows.first() else {
        return String::new();
    };
    format!(
        "REVOKE {}{}{} FROM {}",
        if option_only { "GRANT OPTION FOR " } else { "" },
        privileges_text(rows),
        first.object.on_text(),
        principal_text(&first.principal)
    )
}

/// `SELECT, INSERT` or, for column rows, `SELECT (a, b), INSERT (a)`.
fn privileges_text(rows: &[&PrivilegeRow]) -> String {
    let mut by: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for r in rows {
        let cols = by.entry(r.privilege.as_str()).or_default();
        if !r.object.column.is_empty() {
            cols.push(quote(&r.object.column));
        }
    }
    by.into_iter()
        .map(|(p, cols)| {
            if cols.is_empty() {
                p.to_string()
            } else {
                format!("{p} ({})", cols.join(", "))
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Rows grouped into statements: one per object (columns of one table and partition
/// together), principal and grant option, in a stable order.
pub fn group<'a>(rows: &[&'a PrivilegeRow]) -> Vec<Vec<&'a PrivilegeRow>> {
    let mut groups: BTreeMap<_, Vec<&PrivilegeRow>> = BTreeMap::new();
    for r in rows {
        let o = &r.object;
        // Column rows of one table (and partition) go together: one statement names them.
        groups
            .entry((
                o.db.clone(),
                o.table.clone(),
                o.kind,
                o.partition.clone(),
                r.principal.clone(),
                r.grant_option,
            ))
            .or_default()
            .push(*r);
    }
    groups.into_values().collect()
}
