//! Where facts come from: the `FactsSource` trait (so tests can script the metastore's
//! answers), and `MetaSource`, which asks the metastore through the proxy's own pooled client
//! and counts each call (`hms_guard_facts_calls_total`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::decision::authz::{
    GrantTarget, Object, PartGrant, Principal, PrincipalKind, Privilege, Privileges, RecordedGrant,
};
use crate::ops::metrics::{FactsLabels, Metrics};
use crate::wire::codec::value::{read_value, Value};
use crate::wire::codec::Ty;
use crate::wire::schema::fields::{
    get_database_args, get_index_by_name_args, get_open_txns_info_response,
    get_role_grants_for_principal_args, get_role_grants_for_principal_request,
    get_role_grants_for_principal_response, get_table_args, hive_object_privilege, hive_object_ref,
    list_privileges_args, privilege_grant_info, role_principal_grant, show_locks_args,
    show_locks_response, show_locks_response_element, txn_info,
};

use super::client::{FactsError, MetaClient};
use crate::wire::codec::path::strings_at;
use crate::wire::codec::splice::EACH_ELEMENT;

/// A boxed future of a fact.
pub type Fact<'a, T> = Pin<Box<dyn Future<Output = Result<T, FactsError>> + Send + 'a>>;

/// The metastore's answers authorization needs, uncached (`FactsStore` caches them).
pub trait FactsSource: Send + Sync {
    /// Roles granted directly to a principal, with the admin option flag.
    fn role_grants<'a>(&'a self, p: &'a Principal) -> Fact<'a, Vec<(String, bool)>>;
    /// Privileges granted directly to a principal: global, database and table grants, and
    /// grants on columns and partitions.
    fn privileges<'a>(&'a self, p: &'a Principal) -> Fact<'a, Privileges>;
    /// The table (`None`: no such table).
    fn table<'a>(&'a self, db: &'a str, table: &'a str) -> Fact<'a, Option<Value>>;
    /// The database (`None`: no such database).
    fn database<'a>(&'a self, db: &'a str) -> Fact<'a, Option<Value>>;
    /// The transaction high-water mark and (id, user) of every open or aborted transaction.
    fn open_txns(&self) -> Fact<'_, (i64, Vec<(i64, String)>)>;
    /// (lock id, user) of every lock component held or waited on.
    fn locks(&self) -> Fact<'_, Vec<(i64, String)>>;
    /// An index of a table (Hive 2 `get_index_by_name`; `None`: no such index). A source
    /// that cannot tell fails, and the call that needed it is denied.
    fn index<'a>(&'a self, db: &'a str, table: &'a str, index: &'a str) -> Fact<'a, Option<Value>> {
        let _ = (db, table, index);
        Box::pin(async { Err(not_provided("get_index_by_name")) })
    }
    /// The values of every partition of a table a metastore filter selects
    /// (`get_partitions_by_filter`): what a narrowed partition count counts.
    fn partition_values<'a>(
        &'a self,
        db: &'a str,
        table: &'a str,
        filter: &'a str,
    ) -> Fact<'a, Vec<Vec<String>>> {
        let _ = (db, table, filter);
        Box::pin(async { Err(not_provided("get_partitions_by_filter")) })
    }
    /// The grants recorded to a principal on one object, with their grantors
    /// (`list_privileges` for that object, matched by the metastore as its revoke matches).
    fn recorded_grants<'a>(
        &'a self,
        p: &'a Principal,
        target: &'a GrantTarget,
    ) -> Fact<'a, Vec<RecordedGrant>> {
        let _ = (p, target);
        Box::pin(async { Err(not_provided("list_privileges")) })
    }
}

fn not_provided(method: &str) -> FactsError {
    FactsError::Invalid {
        method: method.into(),
        message: "not provided by this facts source".into(),
    }
}

/// HiveObjectType values.
const OBJ_GLOBAL: i64 = 1;
const OBJ_DATABASE: i64 = 2;
const OBJ_TABLE: i64 = 3;
const OBJ_PARTITION: i64 = 4;
const OBJ_COLUMN: i64 = 5;

/// A `HiveObjectRef`'s partition values (empty: none).
fn part_values(obj: &Value) -> Vec<String> {
    strings_at(obj, &[hive_object_ref::PART_VALUES, EACH_ELEMENT])
}

/// Facts read from the metastore.
pub struct MetaSource {
    client: MetaClient,
    metrics: Arc<Metrics>,
}

impl MetaSource {
    pub fn new(client: MetaClient, metrics: Arc<Metrics>) -> Self {
        MetaSource { client, metrics }
    }

    fn record(&self, method: &'static str, ok: bool) {
        self.metrics
            .facts_calls
            .get_or_create(&FactsLabels {
                method,
                outcome: if ok { "ok" } else { "error" },
            })
            .inc();
    }

    async fn call(
        &self,
        method: &'static str,
        args: impl FnOnce(&mut crate::wire::codec::writer::Writer),
    ) -> Result<Vec<u8>, FactsError> {
        let r = self.client.call(method, args).await;
        self.record(method, r.is_ok());
        r
    }

    /// Roles granted directly to a principal, with the admin option flag.
    async fn role_grants(&self, p: &Principal) -> Result<Vec<(String, bool)>, FactsError> {
        const M: &str = "get_role_grants_for_principal";
        let reply = self
            .call(M, |w| {
                w.field(Ty::Struct, get_role_grants_for_principal_args::REQUEST)
                    .struct_begin();
                w.field(
                    Ty::String,
                    get_role_grants_for_principal_request::PRINCIPAL_NAME,
                )
                .string(p.name.as_bytes());
                w.field(
                    Ty::I32,
                    get_role_grants_for_principal_request::PRINCIPAL_TYPE,
                )
                .i32(p.kind.wire());
                w.struct_end();
            })
            .await?;
        let value = success_value(M, &reply)?;
        let mut out = Vec::new();
        let grants = value.field(get_role_grants_for_principal_response::PRINCIPAL_GRANTS);
        for g in grants.map(Value::as_list).unwrap_or_default() {
            // RolePrincipalGrant.principalName as stored: only rows naming the principal
            // exactly count (the metastore's database may compare more loosely).
            if !names_principal(g.field(role_principal_grant::PRINCIPAL_NAME), p) {
                continue;
            }
            if let Some(role) = g
                .field(role_principal_grant::ROLE_NAME)
                .and_then(Value::as_str)
            {
                let admin = matches!(
                    g.field(role_principal_grant::GRANT_OPTION),
                    Some(Value::Bool(true))
                );
                out.push((role.to_string(), admin));
            }
        }
        Ok(out)
    }

    /// Privileges granted directly to a principal, on any object.
    async fn privileges(&self, p: &Principal) -> Result<Privileges, FactsError> {
        const M: &str = "list_privileges";
        let reply = self
            .call(M, |w| {
                w.field(Ty::String, list_privileges_args::PRINCIPAL_NAME)
                    .string(p.name.as_bytes());
                w.field(Ty::I32, list_privileges_args::PRINCIPAL_TYPE)
                    .i32(p.kind.wire());
                // An empty HiveObjectRef (no objectType): every grant of the principal.
                w.field(Ty::Struct, list_privileges_args::HIVE_OBJECT)
                    .struct_begin()
                    .struct_end();
            })
            .await?;
        let value = success_value(M, &reply)?;
        let mut out = Privileges::default();
        for hop in value.as_list() {
            // HiveObjectPrivilege.principalName as stored: exactly this principal's rows only.
            if !names_principal(hop.field(hive_object_privilege::PRINCIPAL_NAME), p) {
                continue;
            }
            let Some(obj) = hop.field(hive_object_privilege::HIVE_OBJECT) else {
                continue;
            };
            let text = |id| obj.field(id).and_then(Value::as_str).unwrap_or_default();
            let (db, name) = (
                text(hive_object_ref::DB_NAME),
                text(hive_object_ref::OBJECT_NAME),
            );
            let kind = obj
                .field(hive_object_ref::OBJECT_TYPE)
                .and_then(Value::as_int);
            let object = match kind {
                Some(OBJ_GLOBAL) => Object::Global,
                Some(OBJ_DATABASE) => Object::database(db),
                Some(OBJ_TABLE | OBJ_PARTITION | OBJ_COLUMN) => Object::table(db, name),
                _ => continue,
            };
            // Partition and column grants give part of a table (narrowed replies), never the
            // table.
            let part = match kind {
                Some(OBJ_PARTITION) => Some((Some(part_values(obj)), None)),
                Some(OBJ_COLUMN) => {
                    let column = text(hive_object_ref::COLUMN_NAME).to_ascii_lowercase();
                    let values = part_values(obj);
                    Some(((!values.is_empty()).then_some(values), Some(column)))
                }
                _ => None,
            };
            let Some(info) = hop.field(hive_object_privilege::GRANT_INFO) else {
                continue;
            };
            let privilege = info.field(privilege_grant_info::PRIVILEGE);
            let Some(privilege) = privilege.and_then(Value::as_str) else {
                continue;
            };
            let grant_option = matches!(
                info.field(privilege_grant_info::GRANT_OPTION),
                Some(Value::Bool(true))
            );
            // Hive stores one privilege per row; be lenient with comma lists.
            for privilege in privilege.split(',').filter_map(Privilege::parse) {
                match &part {
                    None => out.objects.push((object.clone(), privilege, grant_option)),
                    Some((partition, column)) => out.parts.push(PartGrant {
                        table: object.clone(),
                        partition: partition.clone(),
                        column: column.clone(),
                        privilege,
                    }),
                }
            }
        }
        Ok(out)
    }

    /// The high-water mark and (id, user) of every open or aborted transaction.
    async fn open_txns(&self) -> Result<(i64, Vec<(i64, String)>), FactsError> {
        const M: &str = "get_open_txns_info";
        let reply = self.call(M, |_| {}).await?;
        let value = success_value(M, &reply)?;
        let hwm = value
            .field(get_open_txns_info_response::TXN_HIGH_WATER_MARK)
            .and_then(Value::as_int)
            .ok_or_else(|| FactsError::Invalid {
                method: M.into(),
                message: "no txn_high_water_mark".into(),
            })?;
        let txns = value
            .field(get_open_txns_info_response::OPEN_TXNS)
            .map(Value::as_list)
            .unwrap_or_default()
            .iter()
            .filter_map(|t| {
                let id = t.field(txn_info::ID)?.as_int()?;
                Some((id, t.field(txn_info::USER)?.as_str()?.to_string()))
            })
            .collect();
        Ok((hwm, txns))
    }

    /// (lock id, user) of every lock component the metastore holds or is waiting on.
    async fn locks(&self) -> Result<Vec<(i64, String)>, FactsError> {
        const M: &str = "show_locks";
        let reply = self
            .call(M, |w| {
                w.field(Ty::Struct, show_locks_args::RQST)
                    .struct_begin()
                    .struct_end();
            })
            .await?;
        let value = success_value(M, &reply)?;
        Ok(value
            .field(show_locks_response::LOCKS)
            .map(Value::as_list)
            .unwrap_or_default()
            .iter()
            .filter_map(|l| {
                let id = l.field(show_locks_response_element::LOCKID)?.as_int()?;
                let user = l.field(show_locks_response_element::USER)?.as_str()?;
                Some((id, user.to_string()))
            })
            .collect())
    }

    /// An index (`None`: no such index).
    async fn index(&self, db: &str, table: &str, index: &str) -> Result<Option<Value>, FactsError> {
        const M: &str = "get_index_by_name";
        let reply = self
            .call(M, |w| {
                w.field(Ty::String, get_index_by_name_args::DB_NAME)
                    .string(db.as_bytes());
                w.field(Ty::String, get_index_by_name_args::TBL_NAME)
                    .string(table.as_bytes());
                w.field(Ty::String, get_index_by_name_args::INDEX_NAME)
                    .string(index.as_bytes());
            })
            .await?;
        match success_value(M, &reply) {
            Ok(v) => Ok(Some(v)),
            // get_index_by_name throws (1: MetaException, 2: NoSuchObjectException).
            Err(FactsError::Exception { field: 2, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The grants recorded to `p` on exactly `target`, with their grantors.
    async fn recorded_grants(
        &self,
        p: &Principal,
        target: &GrantTarget,
    ) -> Result<Vec<RecordedGrant>, FactsError> {
        const M: &str = "list_privileges";
        let reply = self
            .call(M, |w| {
                w.field(Ty::String, list_privileges_args::PRINCIPAL_NAME)
                    .string(p.name.as_bytes());
                w.field(Ty::I32, list_privileges_args::PRINCIPAL_TYPE)
                    .i32(p.kind.wire());
                w.field(Ty::Struct, list_privileges_args::HIVE_OBJECT)
                    .struct_begin();
                w.field(Ty::I32, hive_object_ref::OBJECT_TYPE)
                    .i32(target.kind as i32);
                let names = [
                    (hive_object_ref::DB_NAME, &target.db),
                    (hive_object_ref::OBJECT_NAME, &target.name),
                ];
                for (id, v) in names {
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
                if let Some(c) = &target.column {
                    w.field(Ty::String, hive_object_ref::COLUMN_NAME)
                        .string(c.as_bytes());
                }
                w.struct_end();
            })
            .await?;
        let value = success_value(M, &reply)?;
        Ok(value
            .as_list()
            .iter()
            .filter_map(|hop| {
                let info = hop.field(hive_object_privilege::GRANT_INFO)?;
                Some(RecordedGrant {
                    privilege: info
                        .field(privilege_grant_info::PRIVILEGE)?
                        .as_str()?
                        .to_string(),
                    grantor: info
                        .field(privilege_grant_info::GRANTOR)
                        .and_then(Value::as_str)
                        .map(str::to_string),
                    grantor_kind: info
                        .field(privilege_grant_info::GRANTOR_TYPE)
                        .and_then(Value::as_int)
                        .and_then(PrincipalKind::from_wire),
                })
            })
            .collect())
    }

    /// The current table (`None`: no such table).
    async fn table(&self, db: &str, table: &str) -> Result<Option<Value>, FactsError> {
        const M: &str = "get_table";
        let reply = self
            .call(M, |w| {
                w.field(Ty::String, get_table_args::DBNAME)
                    .string(db.as_bytes());
                w.field(Ty::String, get_table_args::TBL_NAME)
                    .string(table.as_bytes());
            })
            .await?;
        match success_value(M, &reply) {
            Ok(v) => Ok(Some(v)),
            // get_table throws (1: MetaException, 2: NoSuchObjectException).
            Err(FactsError::Exception { field: 2, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The values of every partition a filter selects (the metastore's own filter reading).
    async fn partition_values(
        &self,
        db: &str,
        table: &str,
        filter: &str,
    ) -> Result<Vec<Vec<String>>, FactsError> {
        const M: &str = "get_partitions_by_filter";
        let reply = self
            .call(M, |w| {
                // (4: max_parts is left out: the metastore reads -1, every partition.)
                w.field(Ty::String, 1).string(db.as_bytes());
                w.field(Ty::String, 2).string(table.as_bytes());
                w.field(Ty::String, 3).string(filter.as_bytes());
            })
            .await?;
        let value = success_value(M, &reply)?;
        Ok(value
            .as_list()
            .iter()
            .map(|p| {
                strings_at(
                    p,
                    &[crate::wire::schema::fields::partition::VALUES, EACH_ELEMENT],
                )
            })
            .collect())
    }

    /// The current database (`None`: no such database).
    async fn database(&self, db: &str) -> Result<Option<Value>, FactsError> {
        const M: &str = "get_database";
        let reply = self
            .call(M, |w| {
                w.field(Ty::String, get_database_args::NAME)
                    .string(db.as_bytes());
            })
            .await?;
        match success_value(M, &reply) {
            Ok(v) => Ok(Some(v)),
            // get_database throws (1: NoSuchObjectException, 2: MetaException).
            Err(FactsError::Exception { field: 1, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

impl FactsSource for MetaSource {
    fn role_grants<'a>(&'a self, p: &'a Principal) -> Fact<'a, Vec<(String, bool)>> {
        Box::pin(MetaSource::role_grants(self, p))
    }
    fn privileges<'a>(&'a self, p: &'a Principal) -> Fact<'a, Privileges> {
        Box::pin(MetaSource::privileges(self, p))
    }
    fn table<'a>(&'a self, db: &'a str, table: &'a str) -> Fact<'a, Option<Value>> {
        Box::pin(MetaSource::table(self, db, table))
    }
    fn database<'a>(&'a self, db: &'a str) -> Fact<'a, Option<Value>> {
        Box::pin(MetaSource::database(self, db))
    }
    fn open_txns(&self) -> Fact<'_, (i64, Vec<(i64, String)>)> {
        Box::pin(MetaSource::open_txns(self))
    }
    fn locks(&self) -> Fact<'_, Vec<(i64, String)>> {
        Box::pin(MetaSource::locks(self))
    }
    fn index<'a>(&'a self, db: &'a str, table: &'a str, index: &'a str) -> Fact<'a, Option<Value>> {
        Box::pin(MetaSource::index(self, db, table, index))
    }
    fn partition_values<'a>(
        &'a self,
        db: &'a str,
        table: &'a str,
        filter: &'a str,
    ) -> Fact<'a, Vec<Vec<String>>> {
        Box::pin(MetaSource::partition_values(self, db, table, filter))
    }
    fn recorded_grants<'a>(
        &'a self,
        p: &'a Principal,
        target: &'a GrantTarget,
    ) -> Fact<'a, Vec<RecordedGrant>> {
        Box::pin(MetaSource::recorded_grants(self, p, target))
    }
}

/// Whether a returned row's principal name is exactly `p`'s (`names::same_principal`): a
/// database that ignores trailing spaces or case returns `bob `'s rows for `bob`, and those are
/// another principal's.
fn names_principal(name: Option<&Value>, p: &Principal) -> bool {
    name.and_then(Value::as_str)
        .is_some_and(|n| crate::auth::names::same_principal(n, &p.name))
}

/// Decodes the success value of a reply.
pub(crate) fn success_value(method: &str, reply: &[u8]) -> Result<Value, FactsError> {
    match crate::wire::codec::reply::success(reply)
        .map_err(|e| FactsError::from_reply(method, e))?
    {
        None => Err(FactsError::Invalid {
            method: method.into(),
            message: "no result".into(),
        }),
        Some((mut r, ty)) => read_value(&mut r, ty, None).map_err(|e| FactsError::Invalid {
            method: method.into(),
            message: e.to_string(),
        }),
    }
}
