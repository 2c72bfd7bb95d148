//! Where the location index reads the metastore's tables: the `Catalog` trait (so unit tests
//! can script a metastore of any size), and `MetaCatalog`, which asks the metastore through the
//! proxy's own pooled facts client (`facts::MetaClient`), in bounded batches, and counts each
//! call (`hms_guard_facts_calls_total`).

use std::sync::Arc;

use crate::decision::facts::source::{success_value, Fact};
use crate::decision::facts::{FactsError, MetaClient};
use crate::ops::metrics::{FactsLabels, Metrics};
use crate::wire::codec::value::Value;
use crate::wire::codec::Ty;

/// The metastore's catalog as the index reads it. Names are passed as the metastore returns
/// them.
pub trait Catalog: Send + Sync {
    /// Every database's name (`get_all_databases`).
    fn databases(&self) -> Fact<'_, Vec<String>>;
    /// Every table's name in a database (`get_all_tables`; a database that is gone: none).
    fn table_names<'a>(&'a self, db: &'a str) -> Fact<'a, Vec<String>>;
    /// The tables of a database named (`get_table_objects_by_name`): those that exist.
    fn tables<'a>(&'a self, db: &'a str, names: &'a [String]) -> Fact<'a, Vec<Value>>;
    /// One table (`get_table`; `None`: no such table).
    fn table<'a>(&'a self, db: &'a str, name: &'a str) -> Fact<'a, Option<Value>>;
    /// Every partition's name of a table (`get_partition_names`).
    fn partition_names<'a>(&'a self, db: &'a str, table: &'a str) -> Fact<'a, Vec<String>>;
    /// The partitions named (`get_partitions_by_names`).
    fn partitions<'a>(
        &'a self,
        db: &'a str,
        table: &'a str,
        names: &'a [String],
    ) -> Fact<'a, Vec<Value>>;
}

/// The catalog read from the metastore with the proxy's own identity.
pub struct MetaCatalog {
    client: MetaClient,
    metrics: Arc<Metrics>,
}

impl MetaCatalog {
    pub fn new(client: MetaClient, metrics: Arc<Metrics>) -> Self {
        MetaCatalog { client, metrics }
    }

    async fn call(
        &self,
        method: &'static str,
        args: impl FnOnce(&mut crate::wire::codec::writer::Writer),
    ) -> Result<Value, FactsError> {
        let r = match self.client.call(method, args).await {
            Ok(reply) => success_value(method, &reply),
            Err(e) => Err(e),
        };
        self.metrics
            .facts_calls
            .get_or_create(&FactsLabels {
                method,
                outcome: if r.is_ok() { "ok" } else { "error" },
            })
            .inc();
        r
    }

    fn strings(v: &Value) -> Vec<String> {
        v.as_list()
            .iter()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect()
    }

    async fn databases(&self) -> Result<Vec<String>, FactsError> {
        let v = self.call("get_all_databases", |_| {}).await?;
        Ok(Self::strings(&v))
    }

    async fn table_names(&self, db: &str) -> Result<Vec<String>, FactsError> {
        let v = self
            .call("get_all_tables", |w| {
                w.field(Ty::String, 1).string(db.as_bytes());
            })
            .await?;
        Ok(Self::strings(&v))
    }

    async fn tables(&self, db: &str, names: &[String]) -> Result<Vec<Value>, FactsError> {
        let r = self
            .call("get_table_objects_by_name", |w| {
                w.field(Ty::String, 1).string(db.as_bytes());
                w.field(Ty::List, 2).list_begin(Ty::String, names.len());
                for n in names {
                    w.string(n.as_bytes());
                }
            })
            .await;
        match r {
            Ok(v) => Ok(v.as_list().to_vec()),
            // A metastore without the method (Hive 4.x answers an application exception):
            // one `get_table` each.
            Err(FactsError::Invalid { .. }) => {
                let mut out = Vec::with_capacity(names.len());
                for n in names {
                    if let Some(t) = self.table(db, n).await? {
                        out.push(t);
                    }
                }
                Ok(out)
            }
            Err(e) => Err(e),
        }
    }

    async fn table(&self, db: &str, name: &str) -> Result<Option<Value>, FactsError> {
        let r = self
            .call("get_table", |w| {
                w.field(Ty::String, 1).string(db.as_bytes());
                w.field(Ty::String, 2).string(name.as_bytes());
            })
            .await;
        match r {
            Ok(v) => Ok(Some(v)),
            // get_table throws (1: MetaException, 2: NoSuchObjectException).
            Err(FactsError::Exception { field: 2, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn partition_names(&self, db: &str, table: &str) -> Result<Vec<String>, FactsError> {
        let v = self
            .call("get_partition_names", |w| {
                w.field(Ty::String, 1).string(db.as_bytes());
                w.field(Ty::String, 2).string(table.as_bytes());
                w.field(Ty::I16, 3).i16(-1);
            })
            .await?;
        Ok(Self::strings(&v))
    }

    async fn partitions(
        &self,
        db: &str,
        table: &str,
        names: &[String],
    ) -> Result<Vec<Value>, FactsError> {
        let v = self
            .call("get_partitions_by_names", |w| {
                w.field(Ty::String, 1).string(db.as_bytes());
                w.field(Ty::String, 2).string(table.as_bytes());
                w.field(Ty::List, 3).list_begin(Ty::String, names.len());
                for n in names {
                    w.string(n.as_bytes());
                }
            })
            .await?;
        Ok(v.as_list().to_vec())
    }
}

impl Catalog for MetaCatalog {
    fn databases(&self) -> Fact<'_, Vec<String>> {
        Box::pin(MetaCatalog::databases(self))
    }
    fn table_names<'a>(&'a self, db: &'a str) -> Fact<'a, Vec<String>> {
        Box::pin(MetaCatalog::table_names(self, db))
    }
    fn tables<'a>(&'a self, db: &'a str, names: &'a [String]) -> Fact<'a, Vec<Value>> {
        Box::pin(MetaCatalog::tables(self, db, names))
    }
    fn table<'a>(&'a self, db: &'a str, name: &'a str) -> Fact<'a, Option<Value>> {
        Box::pin(MetaCatalog::table(self, db, name))
    }
    fn partition_names<'a>(&'a self, db: &'a str, table: &'a str) -> Fact<'a, Vec<String>> {
        Box::pin(MetaCatalog::partition_names(self, db, table))
    }
    fn partitions<'a>(
        &'a self,
        db: &'a str,
        table: &'a str,
        names: &'a [String],
    ) -> Fact<'a, Vec<Value>> {
        Box::pin(MetaCatalog::partitions(self, db, table, names))
    }
}
