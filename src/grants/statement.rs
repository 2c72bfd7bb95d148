//! Hive's authorization statements as values: what `grammar` reads and `session`/`plan` run.
//!
//! Names are kept as Hive's SQL layer keeps them: database, table and column names and role
//! names in lower case (Hive folds them; SQL-standard authorization treats role names as
//! case-insensitive), user and group names exactly as written.

use std::fmt;

use crate::decision::authz::{Principal, PrincipalKind, Privilege};

/// One statement with where it stands in the script (for errors and plans).
#[derive(Debug, Clone, PartialEq)]
pub struct Located {
    pub statement: Statement,
    /// 1-based line of its first token.
    pub line: usize,
    /// Its text as written (without the `;`).
    pub text: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Statement {
    /// `SET ROLE r | ALL | NONE`.
    SetRole(RoleChoice),
    /// `USE db`.
    Use(String),
    CreateRole(String),
    DropRole(String),
    /// `GRANT privileges [ON object] TO principals [WITH GRANT OPTION]`.
    Grant {
        privileges: Vec<PrivilegeSpec>,
        object: ObjectSpec,
        principals: Vec<Principal>,
        grant_option: bool,
    },
    /// `REVOKE [GRANT OPTION FOR] privileges [ON object] FROM principals`.
    Revoke {
        grant_option_for: bool,
        privileges: Vec<PrivilegeSpec>,
        object: ObjectSpec,
        principals: Vec<Principal>,
    },
    /// `GRANT [ROLE] r, … TO principals [WITH ADMIN OPTION]`.
    GrantRole {
        roles: Vec<String>,
        principals: Vec<Principal>,
        admin_option: bool,
    },
    /// `REVOKE [ADMIN OPTION FOR] [ROLE] r, … FROM principals`.
    RevokeRole {
        admin_option_for: bool,
        roles: Vec<String>,
        principals: Vec<Principal>,
    },
    ShowRoles,
    ShowCurrentRoles,
    /// `SHOW ROLE GRANT USER|GROUP|ROLE p`.
    ShowRoleGrant(Principal),
    /// `SHOW PRINCIPALS r`.
    ShowPrincipals(String),
    /// `SHOW GRANT [principal] [ON object | ON ALL]`.
    ShowGrant {
        principal: Option<Principal>,
        object: Option<ObjectSpec>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoleChoice {
    All,
    None,
    Named(String),
}

/// A privilege and the columns it is limited to (`SELECT (a, b)`); none: the whole object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrivilegeSpec {
    pub privilege: Privilege,
    pub columns: Vec<String>,
}

/// What a grant is on, as written: the database of a table may be left to `USE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectSpec {
    /// No `ON`: the whole metastore (Hive's global grants).
    Global,
    Database(String),
    Table {
        db: Option<String>,
        table: String,
        /// `PARTITION (k = 'v', …)` in the order written.
        partition: Vec<(String, String)>,
        /// `(c, …)` after the table (SHOW GRANT's form; GRANT puts them after the privilege).
        columns: Vec<String>,
    },
}

impl fmt::Display for RoleChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RoleChoice::All => f.write_str("ALL"),
            RoleChoice::None => f.write_str("NONE"),
            RoleChoice::Named(r) => f.write_str(&quote(r)),
        }
    }
}

/// A name as the grammar reads it back: bare when it is a plain identifier, else in
/// backquotes (a backquote doubled).
pub fn quote(name: &str) -> String {
    let plain = !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !crate::grants::grammar::is_keyword(name);
    if plain {
        name.to_string()
    } else {
        format!("`{}`", name.replace('`', "``"))
    }
}

/// `USER u`, `GROUP g`, `ROLE r`.
pub fn principal_text(p: &Principal) -> String {
    let kind = match p.kind {
        PrincipalKind::User => "USER",
        PrincipalKind::Group => "GROUP",
        PrincipalKind::Role => "ROLE",
    };
    format!("{kind} {}", quote(&p.name))
}

/// A string literal as the grammar reads it back.
pub fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}
