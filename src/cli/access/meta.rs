//! What `hms-guard access` reads from the metastore beyond the proxy's own facts: every
//! principal's grants on one object, the principals a role is granted to, and the names of
//! databases, tables and views. Each call is one bounded facts call (`MetaClient`: the
//! service user's pooled connection, `authz.facts_timeout_ms`, `authz.facts_max_reply_bytes`).
//!
//! How the metastore answers (Hive 2.3's `HMSHandler`, and the same in 3.x and 4.x):
//! `list_privileges` with no principal name lists every principal's grants on the object the
//! `HiveObjectRef` names — `TABLE` (db, table): `listTableGrantsAll`; `DATABASE` (db):
//! `listDBGrantsAll`; `GLOBAL`: `listGlobalGrantsAll`; `COLUMN` (db, table, column, no partition
//! values): `listTableColumnGrantsAll` for that one column. With no database name either,
//! `PARTITION` lists every partition grant of the metastore (`listPrincipalPartitionGrantsAll`
//! with no principal), and `COLUMN` with partition values every partition-column grant
//! (`listPrincipalPartitionColumnGrantsAll`); the caller keeps those of its table.
//! `get_principals_in_role` lists the role's `RolePrincipalGrant` rows (`listRoleMembers`):
//! the users, groups and roles it is granted to.

use crate::decision::authz::{GrantTarget, Principal, PrincipalKind, Privilege};
use crate::decision::facts::source::success_value;
use crate::decision::facts::{FactsError, MetaClient};
use crate::wire::codec::path::strings_at;
use crate::wire::codec::splice::EACH_ELEMENT;
use crate::wire::codec::value::Value;
use crate::wire::codec::Ty;
use crate::wire::schema::fields::{
    get_all_tables_args, get_principals_in_role_args, get_principals_in_role_request,
    get_principals_in_role_response, get_tables_by_type_args, hive_object_privilege,
    hive_object_ref, list_privileges_args, privilege_grant_info, role_principal_grant,
};

/// `HiveObjectType` values.
pub const GLOBAL: i64 = 1;
pub const DATABASE: i64 = 2;
pub const TABLE: i64 = 3;
pub const PARTITION: i64 = 4;
pub const COLUMN: i64 = 5;

/// One privilege granted to one principal on one object, as the metastore records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawGrant {
    pub principal: Principal,
    pub privilege: Privilege,
    pub grant_option: bool,
    pub target: GrantTarget,
}

/// The metastore, read with the proxy's own client.
pub struct Meta {
    pub client: MetaClient,
}

impl Meta {
    /// Every database name.
    pub async fn databases(&self) -> Result<Vec<String>, FactsError> {
        const M: &str = "get_all_databases";
        let reply = self.client.call(M, |_| {}).await?;
        Ok(strings(&success_value(M, &reply)?))
    }

    /// Every table (and view) name of a database.
    pub async fn tables(&self, db: &str) -> Result<Vec<String>, FactsError> {
        const M: &str = "get_all_tables";
        let reply = self
            .client
            .call(M, |w| {
                w.field(Ty::String, get_all_tables_args::DB_NAME)
                    .string(db.as_bytes());
            })
            .await?;
        Ok(strings(&success_value(M, &reply)?))
    }

    /// The views of a database.
    pub async fn views(&self, db: &str) -> Result<Vec<String>, FactsError> {
        const M: &str = "get_tables_by_type";
        let reply = self
            .client
            .call(M, |w| {
                w.field(Ty::String, get_tables_by_type_args::DB_NAME)
                    .string(db.as_bytes());
                w.field(Ty::String, get_tables_by_type_args::PATTERN)
                    .string(b"*");
                w.field(Ty::String, get_tables_by_type_args::TABLE_TYPE)
                    .string(b"VIRTUAL_VIEW");
            })
            .await?;
        Ok(strings(&success_value(M, &reply)?))
    }

    /// The principals a role is granted to directly (users, groups, roles).
    pub async fn members(&self, role: &str) -> Result<Vec<Principal>, FactsError> {
        const M: &str = "get_principals_in_role";
        let reply = self
            .client
            .call(M, |w| {
                w.field(Ty::Struct, get_principals_in_role_args::REQUEST)
                    .struct_begin();
                w.field(Ty::String, get_principals_in_role_request::ROLE_NAME)
                    .string(role.as_bytes());
                w.struct_end();
            })
            .await?;
        let value = success_value(M, &reply)?;
        let rows = value.field(get_principals_in_role_response::PRINCIPAL_GRANTS);
        let mut out = Vec::new();
        for g in rows.map(Value::as_list).unwrap_or_default() {
            // Rows of another role (a database comparing loosely) are not this role's.
            let of = g
                .field(role_principal_grant::ROLE_NAME)
                .and_then(Value::as_str);
            if !of.is_some_and(|r| crate::auth::names::same_principal(r, role)) {
                continue;
            }
            out.push(principal(
                M,
                g.field(role_principal_grant::PRINCIPAL_NAME),
                g.field(role_principal_grant::PRINCIPAL_TYPE),
            )?);
        }
        Ok(out)
    }

    /// Every principal's grants on `target` (see the module doc for what each kind lists).
    pub async fn grants_on(&self, target: &GrantTarget) -> Result<Vec<RawGrant>, FactsError> {
        const M: &str = "list_privileges";
        let reply = self
            .client
            .call(M, |w| {
                // No principal name or type: every principal's.
                w.field(Ty::Struct, list_privileges_args::HIVE_OBJECT)
                    .struct_begin();
                w.field(Ty::I32, hive_object_ref::OBJECT_TYPE)
                    .i32(target.kind as i32);
                for (id, v) in [
                    (hive_object_ref::DB_NAME, &target.db),
                    (hive_object_ref::OBJECT_NAME, &target.name),
                    (hive_object_ref::COLUMN_NAME, &target.column),
                ] {
                    if let Some(v) = v {
                        w.field(Ty::String, id).string(v.as_bytes());
                    }
                }
                if let Some(parts) = &target.part_values {
                    w.field(Ty::List, hive_object_ref::PART_VALUES)
                        .list_begin(Ty::String, parts.len());
                    for part in parts {
                        w.string(part.as_bytes());
                    }
                }
                w.struct_end();
            })
            .await?;
        let value = success_value(M, &reply)?;
        let mut out = Vec::new();
        for hop in value.as_list() {
            let who = principal(
                M,
                hop.field(hive_object_privilege::PRINCIPAL_NAME),
                hop.field(hive_object_privilege::PRINCIPAL_TYPE),
            )?;
            let obj = hop
                .field(hive_object_privilege::HIVE_OBJECT)
                .ok_or_else(|| invalid(M, "a grant without its object"))?;
            let text = |id| {
                obj.field(id)
                    .and_then(Value::as_str)
                    .map(str::to_ascii_lowercase)
            };
            let values = strings_at(obj, &[hive_object_ref::PART_VALUES, EACH_ELEMENT]);
            let on = GrantTarget {
                kind: obj
                    .field(hive_object_ref::OBJECT_TYPE)
                    .and_then(Value::as_int)
                    .ok_or_else(|| invalid(M, "a grant without its object type"))?,
                db: text(hive_object_ref::DB_NAME),
                name: text(hive_object_ref::OBJECT_NAME),
                part_values: (!values.is_empty()).then_some(values),
                column: text(hive_object_ref::COLUMN_NAME),
            };
            let info = hop
                .field(hive_object_privilege::GRANT_INFO)
                .ok_or_else(|| invalid(M, "a grant without its privilege"))?;
            let privilege = info
                .field(privilege_grant_info::PRIVILEGE)
                .and_then(Value::as_str)
                .unwrap_or_default();
            let grant_option = matches!(
                info.field(privilege_grant_info::GRANT_OPTION),
                Some(Value::Bool(true))
            );
            // One privilege per row; a comma list read as the proxy reads it. A privilege the
            // proxy does not know counts for nothing there, and is not listed.
            for p in privilege.split(',').filter_map(Privilege::parse) {
                out.push(RawGrant {
                    principal: who.clone(),
                    privilege: p,
                    grant_option,
                    target: on.clone(),
                });
            }
        }
        Ok(out)
    }
}

fn invalid(method: &str, message: &str) -> FactsError {
    FactsError::Invalid {
        method: method.into(),
        message: message.into(),
    }
}

/// A principal from a row's name and `PrincipalType`; an error for a row naming neither
/// (a review never leaves out a row it cannot read).
fn principal(
    method: &str,
    name: Option<&Value>,
    kind: Option<&Value>,
) -> Result<Principal, FactsError> {
    let name = name
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(method, "a row without a principal name"))?;
    let kind = kind
        .and_then(Value::as_int)
        .and_then(PrincipalKind::from_wire)
        .ok_or_else(|| invalid(method, &format!("principal {name:?} of an unknown type")))?;
    Ok(Principal {
        kind,
        name: name.to_string(),
    })
}

fn strings(v: &Value) -> Vec<String> {
    v.as_list()
        .iter()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect()
}
