//! Facts: what authorization needs to know, read from the metastore by the proxy itself and
//! cached with a TTL. Grants are cached per principal (user, group, role) and assembled per
//! identity; a grant/revoke/role call passing through the proxy invalidates at once. Objects
//! (owner, location of tables and databases) are cached per object.
//!
//! A warm-cache decision makes no upstream call. Assembling an identity's grants costs two
//! calls per principal reachable from it, never one per table.

pub mod client;
pub mod source;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::decision::authz::{
    assemble, GrantTarget, Grants, Holder, Object, Owner, Principal, PrincipalFacts, PrincipalKind,
    RecordedGrant, TxnRef,
};
use crate::decision::cache::TtlCache;
use crate::decision::narrow::{Narrowed, NotNarrowable, TableShape};
use crate::listener::identity::Identity;
use crate::ops::metrics::{CacheLabels, Metrics};
use crate::wire::codec::value::Value;
use crate::wire::schema::fields::{database, storage_descriptor, table};

pub use client::{ClientConfig, FactsError, MetaClient};
pub use source::{FactsSource, MetaSource};

/// Owner and location of a table or database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectFacts {
    pub owner: Option<Owner>,
    pub location: Option<String>,
    /// A database's `managedLocationUri` (Hive 4: where its managed tables go by default);
    /// `None` for tables.
    pub managed_location: Option<String>,
    /// A table whose drop deletes its data (and whose partitions' drops delete theirs), as
    /// the metastore judges it (`deletes_on_drop`); false for databases.
    pub deletes_data: bool,
}

/// Cached facts, shared by every connection.
pub struct FactsStore {
    source: Box<dyn FactsSource>,
    max_principals: usize,
    generation: AtomicU64,
    principals: TtlCache<Principal, Arc<PrincipalFacts>>,
    identities: TtlCache<Identity, Arc<Grants>>,
    objects: TtlCache<Object, Option<ObjectFacts>>,
    /// Who opened a transaction or took a lock (never changes; only users are cached).
    holders: TtlCache<TxnRef, Holder>,
    /// Tables' shapes (columns, format, a view's analysis), for narrowed reads.
    shapes: TtlCache<Object, Option<Arc<TableShape>>>,
    /// The narrowed table each identity gets of a table (grants, views and the table
    /// combined); dropped with the grants and with any changed object.
    narrowings: TtlCache<(Identity, Object), Narrowing>,
    /// The tables each identity's readable views show part of.
    viewed: TtlCache<Identity, Arc<HashSet<Object>>>,
    metrics: Arc<Metrics>,
}

/// Entries each facts cache holds at most.
const MAX_CACHED_IDENTITIES: usize = 65_536;
const MAX_CACHED_PRINCIPALS: usize = 65_536;
const MAX_CACHED_OBJECTS: usize = 262_144;
const MAX_CACHED_HOLDERS: usize = 65_536;
const MAX_CACHED_SHAPES: usize = 65_536;
const MAX_CACHED_NARROWINGS: usize = 65_536;

/// What one identity gets of one table: nothing narrowed (`None`: it may read no part of it,
/// or the whole), one narrowed table, or why its parts give none.
pub type Narrowing = Result<Option<Arc<Narrowed>>, NotNarrowable>;

impl FactsStore {
    pub fn new(
        source: Box<dyn FactsSource>,
        ttl: Duration,
        max_principals: usize,
        metrics: Arc<Metrics>,
    ) -> Self {
        FactsStore {
            source,
            max_principals,
            generation: AtomicU64::new(0),
            principals: TtlCache::new(ttl, MAX_CACHED_PRINCIPALS),
            identities: TtlCache::new(ttl, MAX_CACHED_IDENTITIES),
            objects: TtlCache::new(ttl, MAX_CACHED_OBJECTS),
            holders: TtlCache::new(ttl, MAX_CACHED_HOLDERS),
            shapes: TtlCache::new(ttl, MAX_CACHED_SHAPES),
            narrowings: TtlCache::new(ttl, MAX_CACHED_NARROWINGS),
            viewed: TtlCache::new(ttl, MAX_CACHED_IDENTITIES),
            metrics,
        }
    }

    fn count(&self, cache: &'static str, hit: bool) {
        self.metrics
            .cache
            .get_or_create(&CacheLabels {
                cache,
                result: if hit { "hit" } else { "miss" },
            })
            .inc();
    }

    /// Drops every cached grant (a grant, revoke or role change went through).
    pub fn invalidate_grants(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.principals.clear();
        self.identities.clear();
        self.narrowings.clear();
        self.viewed.clear();
    }

    /// Drops a cached object (it was created, altered or dropped through the proxy).
    /// `Object::Global` drops every cached object (a rename or a cascading drop changes
    /// objects the call does not name).
    pub fn invalidate_object(&self, obj: &Object) {
        match obj {
            Object::Global => {
                self.objects.clear();
                self.shapes.clear();
            }
            _ => {
                self.objects.remove(obj);
                self.shapes.remove(obj);
            }
        }
        // A narrowing may rest on any table or view: all go.
        self.narrowings.clear();
        self.viewed.clear();
    }

    /// The values of every partition of a table a metastore filter selects (uncached: a
    /// narrowed partition count is counted on the metastore's state now).
    pub async fn partition_values(
        &self,
        db: &str,
        table: &str,
        filter: &str,
    ) -> Result<Vec<Vec<String>>, FactsError> {
        self.source.partition_values(db, table, filter).await
    }

    /// A table's shape (`None`: no such table), cached.
    pub async fn shape(&self, obj: &Object) -> Result<Option<Arc<TableShape>>, FactsError> {
        let Object::Table(db, t) = obj else {
            return Ok(None);
        };
        let load = || async {
            Ok(self
                .source
                .table(db, t)
                .await?
                .map(|v| Arc::new(TableShape::of(&v))))
        };
        let (shape, hit) = self.shapes.get_or_load(obj, load, |_| true).await?;
        self.count("shapes", hit);
        Ok(shape)
    }

    /// The tables `identity`'s readable views show part of, cached; `load` works them out (an
    /// error: none, not cached — a listing then shows less, never more).
    pub async fn viewed<F, Fut>(&self, identity: &Identity, load: F) -> Arc<HashSet<Object>>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Arc<HashSet<Object>>, FactsError>>,
    {
        let generation = self.generation.load(Ordering::SeqCst);
        let keep = |_: &Arc<HashSet<Object>>| self.generation.load(Ordering::SeqCst) == generation;
        match self.viewed.get_or_load(identity, load, keep).await {
            Ok((v, hit)) => {
                self.count("viewed", hit);
                v
            }
            Err(e) => {
                tracing::warn!(user = %identity.user, error = %e, "the tables of the user's views could not be learned");
                Arc::new(HashSet::new())
            }
        }
    }

    /// What `identity` gets of `table`, cached; `load` works it out on a miss (kept only if
    /// no grant changed meanwhile).
    pub async fn narrowing<F, Fut>(&self, identity: &Identity, table: &Object, load: F) -> Narrowing
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Narrowing, FactsError>>,
    {
        let generation = self.generation.load(Ordering::SeqCst);
        let key = (identity.clone(), table.clone());
        let keep = |_: &Narrowing| self.generation.load(Ordering::SeqCst) == generation;
        match self.narrowings.get_or_load(&key, load, keep).await {
            Ok((n, hit)) => {
                self.count("narrowings", hit);
                n
            }
            Err(e) => Err(NotNarrowable(format!(
                "what the user may read of {table} could not be learned: {e}"
            ))),
        }
    }

    /// Everything granted to `identity`, through its groups and every reachable role.
    pub async fn grants(&self, identity: &Identity) -> Result<Arc<Grants>, FactsError> {
        let generation = self.generation.load(Ordering::SeqCst);
        let (grants, hit) = self
            .identities
            .get_or_load(
                identity,
                || self.assemble(identity),
                // Not kept if grants changed while they were read.
                |_| self.generation.load(Ordering::SeqCst) == generation,
            )
            .await?;
        self.count("grants", hit);
        Ok(grants)
    }

    async fn assemble(&self, identity: &Identity) -> Result<Arc<Grants>, FactsError> {
        let mut known: HashMap<Principal, PrincipalFacts> = HashMap::new();
        loop {
            match assemble(identity, &known) {
                Ok(g) => return Ok(Arc::new(g)),
                Err(missing) => {
                    if known.len() >= self.max_principals {
                        return Err(FactsError::Invalid {
                            method: "role graph".into(),
                            message: format!(
                                "more than {} principals reachable from user {}",
                                self.max_principals, identity.user
                            ),
                        });
                    }
                    let f = self.principal(&missing).await?;
                    known.insert(missing, (*f).clone());
                }
            }
        }
    }

    async fn principal(&self, p: &Principal) -> Result<Arc<PrincipalFacts>, FactsError> {
        let generation = self.generation.load(Ordering::SeqCst);
        let load = || async {
            let roles = self.source.role_grants(p).await?;
            let privileges = self.source.privileges(p).await?;
            Ok(Arc::new(PrincipalFacts {
                roles,
                privileges: privileges.objects,
                parts: privileges.parts,
            }))
        };
        let keep = |_: &Arc<PrincipalFacts>| self.generation.load(Ordering::SeqCst) == generation;
        Ok(self.principals.get_or_load(p, load, keep).await?.0)
    }

    /// Who holds a transaction or lock, as the metastore records it: the open transactions
    /// (`get_open_txns_info`: open and aborted ones, with the user who opened each, and the
    /// high-water mark) or the locks (`show_locks`: every lock component, with its user).
    /// Every holder a listing shows is cached; a miss lists again.
    pub async fn holder(&self, h: TxnRef) -> Result<Holder, FactsError> {
        let load = || async {
            let (listed, absent) = match h {
                TxnRef::Txn(id) => {
                    let (high_water_mark, txns) = self.source.open_txns().await?;
                    let absent = if id <= high_water_mark {
                        Holder::Finished
                    } else {
                        Holder::Absent
                    };
                    (
                        txns.into_iter()
                            .map(|(i, u)| (TxnRef::Txn(i), u))
                            .collect::<Vec<_>>(),
                        absent,
                    )
                }
                TxnRef::Lock(_) => (
                    self.source
                        .locks()
                        .await?
                        .into_iter()
                        .map(|(i, u)| (TxnRef::Lock(i), u))
                        .collect(),
                    Holder::Absent,
                ),
            };
            let mut found = absent;
            for (r, user) in listed {
                if r == h {
                    found = Holder::User(user.clone());
                } else {
                    self.holders.insert(r, Holder::User(user));
                }
            }
            Ok(found)
        };
        let keep = |v: &Holder| matches!(v, Holder::User(_));
        let (holder, hit) = self.holders.get_or_load(&h, load, keep).await?;
        self.count("holders", hit);
        Ok(holder)
    }

    /// Owner and location of a table or database (`None`: no such object).
    pub async fn object(&self, obj: &Object) -> Result<Option<ObjectFacts>, FactsError> {
        let load = || async {
            Ok(match obj {
                Object::Global => None,
                Object::Table(db, t) => self.source.table(db, t).await?.map(|v| table_facts(&v)),
                Object::Database(db) => self.source.database(db).await?.map(|v| database_facts(&v)),
            })
        };
        let (facts, hit) = self.objects.get_or_load(obj, load, |_| true).await?;
        self.count("objects", hit);
        Ok(facts)
    }

    /// The current table, fresh from the metastore (`None`: no such table); its facts are
    /// cached on the way.
    pub async fn table(&self, db: &str, table: &str) -> Result<Option<Value>, FactsError> {
        let t = self.source.table(db, table).await?;
        if let Some(v) = &t {
            self.objects
                .insert(Object::table(db, table), Some(table_facts(v)));
        }
        Ok(t)
    }

    /// An index, fresh from the metastore (`None`: no such index).
    pub async fn index(
        &self,
        db: &str,
        table: &str,
        index: &str,
    ) -> Result<Option<Value>, FactsError> {
        self.source.index(db, table, index).await
    }

    /// The grants recorded to `p` on `target`, fresh from the metastore (a revoke is decided
    /// on the metastore's state now, never on a cached one).
    pub async fn recorded_grants(
        &self,
        p: &Principal,
        target: &GrantTarget,
    ) -> Result<Vec<RecordedGrant>, FactsError> {
        self.source.recorded_grants(p, target).await
    }

    /// The current database, fresh from the metastore (`None`: no such database).
    pub async fn database(&self, db: &str) -> Result<Option<Value>, FactsError> {
        self.source.database(db).await
    }
}

/// An owner as a table or database records it (name, and principal type: USER when unset).
pub fn owner_of(name: Option<&Value>, kind: Option<&Value>) -> Option<Owner> {
    let name = name?.as_str()?.to_string();
    let kind = kind
        .and_then(Value::as_int)
        .and_then(PrincipalKind::from_wire)
        .unwrap_or(PrincipalKind::User);
    Some(Owner { name, kind })
}

/// A table's owner (with its principal type, Hive 3+), location and whether its drop deletes
/// its data.
pub fn table_facts(t: &Value) -> ObjectFacts {
    ObjectFacts {
        owner: owner_of(t.field(table::OWNER), t.field(table::OWNER_TYPE)),
        location: t
            .path(&[table::SD, storage_descriptor::LOCATION])
            .and_then(Value::as_str)
            .map(str::to_string),
        managed_location: None,
        deletes_data: deletes_on_drop(t),
    }
}

/// Whether dropping the table deletes its data, judged as the metastore judges it: by the
/// table parameter `EXTERNAL` (the table type does not count: the metastore stores an
/// `EXTERNAL_TABLE` without `EXTERNAL=TRUE` as a managed table and deletes its data on drop),
/// compared without case; and an external table with `external.table.purge=true` (Hive 3+)
/// has its data deleted too.
pub fn deletes_on_drop(t: &Value) -> bool {
    let param = |k: &str| {
        t.field(table::PARAMETERS)
            .and_then(|p| p.map_get(k))
            .and_then(Value::as_str)
            .map(str::trim)
    };
    let external = param("EXTERNAL").is_some_and(|v| v.eq_ignore_ascii_case("TRUE"));
    let purge = param("external.table.purge").is_some_and(|v| v.eq_ignore_ascii_case("true"));
    !external || purge
}

/// A database's owner (with its principal type), location and (Hive 4) managed-table location.
pub fn database_facts(d: &Value) -> ObjectFacts {
    let text = |id| {
        d.field(id)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    ObjectFacts {
        owner: owner_of(d.field(database::OWNER_NAME), d.field(database::OWNER_TYPE)),
        location: text(database::LOCATION_URI),
        managed_location: text(database::MANAGED_LOCATION_URI),
        deletes_data: false,
    }
}
