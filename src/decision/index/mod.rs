//! The location index: every table's location, and every partition location outside its
//! table's, with the object that claims it (database, table, partition values) and what the
//! overlap rule judges by (external or managed, whether a drop deletes the files, owner).
//! Locations are keyed by their canonical form (`storage::canonical_location`, docs/STORAGE.md
//! "Canonical locations"), so one place written `s3a://b/t` or `s3://b/t/` is one key.
//!
//! ```text
//! start ─► build (background: get_all_databases, get_all_tables, get_table_objects_by_name
//!          in batches, get_partition_names + get_partitions_by_names in batches) ─► ready
//!   ─► kept current: Guard::finish applies the IndexChange of every table DDL the metastore
//!      executed (the table read again); the notification-log follower
//!      (upstream::notifications) applies the IndexChange of every event other clients
//!      caused, and rebuilds after a gap; a rescan every index.rescan_ms catches the rest
//!   ─► asked by gather (decision stage): what is AT, UNDER and ABOVE a location
//! ```
//!
//! Memory is bounded by `index.max_entries`: a build or change that would pass it marks the
//! index incomplete, and the rule fails closed for every call that names a location.

pub mod catalog;

use std::collections::{BTreeMap, HashSet};
use std::ops::Bound;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::decision::authz::Owner;
use crate::decision::classify::data_locations;
use crate::decision::facts::{deletes_on_drop, owner_of, FactsError};
use crate::decision::storage::{canonical_location, CanonicalLocation};
use crate::ops::metrics::{IndexStateLabels, Metrics, OutcomeLabels};
use crate::wire::codec::path::strings_at;
use crate::wire::codec::splice::EACH_ELEMENT;
use crate::wire::codec::value::Value;
use crate::wire::schema::fields::{partition, storage_descriptor, table};

pub use catalog::{Catalog, MetaCatalog};

/// `[index]` resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexSettings {
    pub enabled: bool,
    /// The notification log is followed: the first build waits until the follower knows
    /// where the log ends (`LocationIndex::log_followed`), so no change falls between the
    /// two.
    pub follow_log: bool,
    /// Between two full rescans (changes made directly on the metastore).
    pub rescan: Duration,
    /// Entries (table and outside-partition locations) the index holds at most.
    pub max_entries: usize,
    /// Tables per `get_table_objects_by_name`.
    pub table_batch: usize,
    /// Partitions per `get_partitions_by_names`.
    pub partition_batch: usize,
    /// How long a call that names a location waits for the first build before it is refused.
    pub build_wait: Duration,
    /// Prefixes (raw, as configured) under which overlapping locations are expected.
    pub shared_prefixes: Vec<String>,
}

impl Default for IndexSettings {
    fn default() -> Self {
        IndexSettings {
            enabled: true,
            follow_log: false,
            rescan: Duration::from_secs(600),
            max_entries: 1_000_000,
            table_batch: 100,
            partition_batch: 500,
            build_wait: Duration::from_secs(10),
            shared_prefixes: Vec::new(),
        }
    }
}

/// Objects one query reports at most (beyond: truncated, and the rule fails closed).
pub const MAX_FOUND: usize = 64;
/// Keys one UNDER scan reads at most (the caller's own entries included).
const MAX_SCANNED: usize = 100_000;

/// One object's claim on a location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub db: Arc<str>,
    pub table: Arc<str>,
    /// `None`: the table's own location; `Some(values)`: a partition located outside its
    /// table (values empty: added through the proxy, not read back yet).
    pub partition: Option<Box<[Box<str>]>>,
    /// The table is external (`EXTERNAL=TRUE`).
    pub external: bool,
    /// Dropping the table (or the partition) deletes its files.
    pub deletes_data: bool,
    /// Shared by every claim of the same owner (one allocation per owner, not per claim).
    pub owner: Option<Arc<Owner>>,
}

impl Claim {
    /// "table d.t" or "partition [a/b] of table d.t".
    pub fn describe(&self) -> String {
        match &self.partition {
            None => format!("table {}.{}", self.db, self.table),
            Some(v) if v.is_empty() => format!("a partition of table {}.{}", self.db, self.table),
            Some(v) => format!(
                "partition [{}] of table {}.{}",
                v.iter().map(|s| &**s).collect::<Vec<_>>().join("/"),
                self.db,
                self.table
            ),
        }
    }
}

/// How a claimed location lies relative to the location asked about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relation {
    /// The same place.
    At,
    /// Inside the location asked about.
    Under,
    /// An ancestor of the location asked about.
    Above,
}

impl Relation {
    pub fn as_str(self) -> &'static str {
        match self {
            Relation::At => "at",
            Relation::Under => "under",
            Relation::Above => "above",
        }
    }
}

/// One claim a query found: how it lies, its canonical location, and the claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub relation: Relation,
    pub location: Arc<str>,
    pub claim: Claim,
}

/// What a query found (at most `MAX_FOUND`; `truncated`: there was more).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overlapping {
    pub found: Vec<Found>,
    pub truncated: bool,
}

/// A table as the index records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableRecord {
    pub db: String,
    pub table: String,
    /// Its data locations (`sd.location`, Spark's serde `path`).
    pub locations: Vec<String>,
    pub external: bool,
    pub deletes_data: bool,
    pub owner: Option<Owner>,
    pub partitioned: bool,
}

impl TableRecord {
    /// The record of a metastore `Table` (`None`: no names).
    pub fn of(t: &Value) -> Option<TableRecord> {
        let text = |id| t.field(id).and_then(Value::as_str);
        let db = text(table::DB_NAME)?.to_ascii_lowercase();
        let name = text(table::TABLE_NAME)?.to_ascii_lowercase();
        let external = t
            .field(table::PARAMETERS)
            .and_then(|p| p.map_get("EXTERNAL"))
            .and_then(Value::as_str)
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("TRUE"));
        Some(TableRecord {
            db,
            table: name,
            locations: data_locations(t),
            external,
            deletes_data: deletes_on_drop(t),
            owner: owner_of(t.field(table::OWNER), t.field(table::OWNER_TYPE)),
            partitioned: !t
                .field(table::PARTITION_KEYS)
                .map(Value::as_list)
                .unwrap_or_default()
                .is_empty(),
        })
    }
}

/// A partition as the index records it: its values and its location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionRecord {
    pub values: Vec<String>,
    pub location: String,
}

impl PartitionRecord {
    /// The record of a metastore `Partition` (`None`: no location).
    pub fn of(p: &Value) -> Option<PartitionRecord> {
        let location = p
            .path(&[partition::SD, storage_descriptor::LOCATION])
            .and_then(Value::as_str)
            .filter(|l| !l.is_empty())?;
        Some(PartitionRecord {
            values: strings_at(p, &[partition::VALUES, EACH_ELEMENT]),
            location: location.to_string(),
        })
    }
}

/// The key of a location: its canonical form (`scheme-family://authority/seg/…/`, each segment
/// followed by `/`, so a prefix of keys is a prefix on segment boundaries), or, for a location
/// that does not canonicalise, the string itself after a NUL (equal only to itself).
fn key_of(raw: &str) -> (String, Option<CanonicalLocation>) {
    match canonical_location(raw) {
        Ok(c) => (c.to_string(), Some(c)),
        Err(_) => (format!("\u{0}{raw}"), None),
    }
}

/// (database, table).
type TableKey = (Arc<str>, Arc<str>);

/// The index's contents.
#[derive(Debug, Default)]
struct Inner {
    by_key: BTreeMap<Arc<str>, Vec<Claim>>,
    /// Every key each table claims (its own and its partitions').
    by_table: BTreeMap<TableKey, Vec<Arc<str>>>,
    /// Database names and owners, shared by the claims.
    dbs: HashSet<Arc<str>>,
    owners: HashSet<Arc<Owner>>,
    entries: usize,
    tables: usize,
}

/// A change would pass `index.max_entries`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Full;

impl Inner {
    fn db_name(&mut self, db: &str) -> Arc<str> {
        if let Some(d) = self.dbs.get(db) {
            return d.clone();
        }
        let d: Arc<str> = Arc::from(db);
        self.dbs.insert(d.clone());
        d
    }

    fn owner(&mut self, owner: &Option<Owner>) -> Option<Arc<Owner>> {
        let o = owner.as_ref()?;
        if let Some(a) = self.owners.get(o) {
            return Some(a.clone());
        }
        let a = Arc::new(o.clone());
        self.owners.insert(a.clone());
        Some(a)
    }

    /// Removes every claim of a table; returns its partitions' claims (with their keys).
    fn remove_table(&mut self, db: &str, table: &str) -> Vec<(Arc<str>, Claim)> {
        let k = (Arc::<str>::from(db), Arc::<str>::from(table));
        let Some(keys) = self.by_table.remove(&k) else {
            return Vec::new();
        };
        self.tables -= 1;
        let mut parts = Vec::new();
        for key in keys {
            if let Some(claims) = self.by_key.get_mut(&key) {
                let before = claims.len();
                let mut kept = Vec::with_capacity(claims.len());
                for c in claims.drain(..) {
                    if &*c.db == db && &*c.table == table {
                        if c.partition.is_some() {
                            parts.push((key.clone(), c));
                        }
                    } else {
                        kept.push(c);
                    }
                }
                self.entries -= before - kept.len();
                if kept.is_empty() {
                    self.by_key.remove(&key);
                } else {
                    *claims = kept;
                }
            }
        }
        parts
    }

    /// Claims each of `claims` in turn, stopping at the first that finds the index full.
    fn claim_all<K: AsRef<str>>(
        &mut self,
        claims: impl IntoIterator<Item = (K, Claim)>,
        max: usize,
    ) -> Result<(), Full> {
        for (key, c) in claims {
            self.claim(key.as_ref(), c, max)?;
        }
        Ok(())
    }

    fn claim(&mut self, key: &str, claim: Claim, max: usize) -> Result<(), Full> {
        if self.entries >= max {
            return Err(Full);
        }
        let key: Arc<str> = match self.by_key.get_key_value(key) {
            Some((k, _)) => k.clone(),
            None => Arc::from(key),
        };
        let tk = (claim.db.clone(), claim.table.clone());
        let claims = self.by_key.entry(key.clone()).or_default();
        if claims.contains(&claim) {
            return Ok(());
        }
        claims.push(claim);
        self.entries += 1;
        let keys = self.by_table.entry(tk).or_insert_with(|| {
            self.tables += 1;
            Vec::new()
        });
        if !keys.contains(&key) {
            keys.push(key);
        }
        Ok(())
    }

    /// Records a table (replacing what it claimed): its locations and those of its partitions
    /// that lie outside every location of the table.
    fn put(
        &mut self,
        rec: &TableRecord,
        parts: &[PartitionRecord],
        max: usize,
    ) -> Result<(), Full> {
        self.remove_table(&rec.db, &rec.table);
        let db = self.db_name(&rec.db);
        let name: Arc<str> = Arc::from(rec.table.as_str());
        let base = Claim {
            db,
            table: name,
            partition: None,
            external: rec.external,
            deletes_data: rec.deletes_data,
            owner: self.owner(&rec.owner),
        };
        let mut homes = Vec::new();
        for l in &rec.locations {
            let (key, canon) = key_of(l);
            self.claim(&key, base.clone(), max)?;
            homes.push(canon);
        }
        for p in parts {
            let (key, canon) = key_of(&p.location);
            let inside = canon
                .as_ref()
                .is_some_and(|c| homes.iter().flatten().any(|h| c.is_under(h)));
            if inside {
                continue;
            }
            let claim = Claim {
                partition: Some(p.values.iter().map(|v| Box::from(v.as_str())).collect()),
                ..base.clone()
            };
            self.claim(&key, claim, max)?;
        }
        Ok(())
    }

    fn tables_of(&self, db: &str) -> Vec<String> {
        let d: Arc<str> = Arc::from(db);
        self.by_table
            .range((d.clone(), Arc::from(""))..)
            .take_while(|((k, _), _)| *k == d)
            .map(|((_, t), _)| t.to_string())
            .collect()
    }

    /// Claims at, under and above `raw`, skipping those `skip` says are the caller's own and
    /// those under a shared prefix.
    fn query(&self, raw: &str, skip: &dyn Fn(&Claim) -> bool, shared: &[String]) -> Overlapping {
        let mut out = Overlapping::default();
        let (key, canon) = key_of(raw);
        let is_shared = |k: &str| shared.iter().any(|p| k.starts_with(p.as_str()));
        let push = |relation, k: &Arc<str>, claims: &Vec<Claim>, out: &mut Overlapping| {
            if is_shared(k) {
                return;
            }
            for c in claims.iter().filter(|c| !skip(c)) {
                if out.found.len() >= MAX_FOUND {
                    out.truncated = true;
                    return;
                }
                out.found.push(Found {
                    relation,
                    location: k.clone(),
                    claim: c.clone(),
                });
            }
        };
        if let Some((k, claims)) = self.by_key.get_key_value(key.as_str()) {
            push(Relation::At, k, claims, &mut out);
        }
        let Some(canon) = canon else {
            return out;
        };
        // Ancestors: each shorter prefix on segment boundaries.
        let mut parent = canon.clone();
        while parent.segments.pop().is_some() {
            let pk = parent.to_string();
            if let Some((k, claims)) = self.by_key.get_key_value(pk.as_str()) {
                push(Relation::Above, k, claims, &mut out);
            }
        }
        // Descendants: keys after this one that begin with it.
        let start: Arc<str> = Arc::from(key.as_str());
        let mut scanned = 0;
        for (k, claims) in self
            .by_key
            .range((Bound::Excluded(start), Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(key.as_str()))
        {
            scanned += 1;
            if scanned > MAX_SCANNED || out.truncated {
                out.truncated = true;
                break;
            }
            push(Relation::Under, k, claims, &mut out);
        }
        out
    }
}

/// The index's state (a metric label, and `/readyz`'s body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexState {
    /// `index.enabled = false`: the overlap rule does not run.
    Disabled,
    /// The first build runs: calls that name a location wait (`index.build_wait_ms`), then
    /// are refused.
    Building,
    Ready,
    /// Past `index.max_entries`, or the last build failed before the index was ever ready:
    /// calls that name a location are refused, saying why.
    Incomplete(String),
}

impl IndexState {
    pub fn label(&self) -> &'static str {
        match self {
            IndexState::Disabled => "disabled",
            IndexState::Building => "building",
            IndexState::Ready => "ready",
            IndexState::Incomplete(_) => "incomplete",
        }
    }
}

/// Every state label, for the metric's series.
pub const STATE_LABELS: [&str; 4] = ["disabled", "building", "ready", "incomplete"];

/// What a call's finish tells the index about a table DDL the metastore executed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum IndexChange {
    /// The table as the metastore has it now (read again; gone: removed). `partitions`: its
    /// partitions read again too (a rename), else the partitions' claims are kept.
    Table {
        db: String,
        table: String,
        partitions: bool,
    },
    /// Partition locations outside the table that a call added or moved the partitions to.
    Partitions {
        db: String,
        table: String,
        locations: Vec<String>,
    },
    /// A database's tables as the metastore lists them now: those it no longer lists are
    /// removed, those the index does not know are read (a database dropped, a table renamed
    /// into it).
    Database { db: String },
}

/// What the rule gets from the index for one location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The index is off: nothing is checked.
    Off,
    Found(Overlapping),
    /// The index cannot answer (building past the wait, incomplete): why.
    Unavailable(String),
}

/// The location index, shared by every connection.
pub struct LocationIndex {
    settings: IndexSettings,
    /// `shared_prefixes` in key form (canonical, ending in `/`).
    shared: Vec<String>,
    inner: RwLock<Inner>,
    state: watch::Sender<IndexState>,
    catalog: Option<Arc<dyn Catalog>>,
    metrics: Arc<Metrics>,
    /// While a build runs: the changes seen meanwhile, applied again once it is in place.
    pending: Mutex<Option<Vec<IndexChange>>>,
    /// One build at a time.
    building: tokio::sync::Mutex<()>,
    /// Opened once the notification log's follower knows its starting point (open from the
    /// start when the log is not followed).
    log_start: watch::Sender<bool>,
    /// Table DDL on its way through the proxy holds this shared until the index has read
    /// back what the metastore did; a lookup takes it exclusively for a moment, so it is
    /// answered only after every change in flight when it was asked (fair: a stream of new
    /// changes queues behind it).
    changes: Arc<tokio::sync::RwLock<()>>,
}

/// A table DDL in flight (`LocationIndex::changing`): lookups wait until it is dropped.
pub struct Changing(#[allow(dead_code)] tokio::sync::OwnedRwLockReadGuard<()>);

impl LocationIndex {
    fn new(
        settings: IndexSettings,
        catalog: Option<Arc<dyn Catalog>>,
        metrics: Arc<Metrics>,
        state: IndexState,
    ) -> Arc<LocationIndex> {
        let shared = settings
            .shared_prefixes
            .iter()
            .filter_map(|p| canonical_location(p).ok().map(|c| c.to_string()))
            .collect();
        let (tx, _) = watch::channel(state);
        let index = Arc::new(LocationIndex {
            settings,
            shared,
            inner: RwLock::new(Inner::default()),
            state: tx,
            catalog,
            metrics,
            pending: Mutex::new(None),
            building: tokio::sync::Mutex::new(()),
            log_start: watch::channel(false).0,
            changes: Arc::new(tokio::sync::RwLock::new(())),
        });
        index.publish();
        index
    }

    /// The index read from `catalog`: built in the background now, rescanned every
    /// `index.rescan_ms` (disabled: never built, the rule off).
    pub fn start(
        settings: IndexSettings,
        catalog: Arc<dyn Catalog>,
        metrics: Arc<Metrics>,
    ) -> Arc<LocationIndex> {
        if !settings.enabled {
            return LocationIndex::new(settings, None, metrics, IndexState::Disabled);
        }
        let index = LocationIndex::new(settings, Some(catalog), metrics, IndexState::Building);
        tokio::spawn(keep_current(Arc::downgrade(&index)));
        index
    }

    /// An index with no catalog to read: ready and empty, kept current only by the calls that
    /// pass (tests whose metastore is scripted facts).
    pub fn without_catalog(settings: IndexSettings, metrics: Arc<Metrics>) -> Arc<LocationIndex> {
        let state = if settings.enabled {
            IndexState::Ready
        } else {
            IndexState::Disabled
        };
        LocationIndex::new(settings, None, metrics, state)
    }

    /// The notification log's follower knows where the log ends: every change from now on
    /// reaches the index as an event, so the first build may start.
    pub fn log_followed(&self) {
        self.log_start.send_replace(true);
    }

    /// A table DDL about to be forwarded: lookups wait until the returned guard is dropped
    /// (after the index read back what the metastore did). Taken after the call's own
    /// decision, so a call never waits for itself.
    pub async fn changing(&self) -> Changing {
        Changing(self.changes.clone().read_owned().await)
    }

    /// Whether the index reads the metastore's catalog (else it knows only the calls that
    /// pass: nothing to follow the log for).
    pub fn reads_catalog(&self) -> bool {
        self.catalog.is_some()
    }

    pub fn state(&self) -> IndexState {
        self.state.borrow().clone()
    }

    pub fn entries(&self) -> usize {
        self.read().entries
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    fn set_state(&self, s: IndexState) {
        self.state.send_replace(s);
        self.publish();
    }

    /// The state and size metrics.
    fn publish(&self) {
        let state = self.state.borrow().label();
        for l in STATE_LABELS {
            self.metrics
                .index_state
                .get_or_create(&IndexStateLabels { state: l })
                .set(i64::from(l == state));
        }
        let (entries, tables) = {
            let i = self.read();
            (i.entries, i.tables)
        };
        self.metrics.index_entries.set(entries as i64);
        self.metrics.index_tables.set(tables as i64);
    }

    /// Claims at, under and above `location` that `skip` does not call the caller's own,
    /// leaving out locations under `index.shared_prefixes` (and nothing at all for a location
    /// under one). Waits up to `index.build_wait_ms` for the first build.
    pub async fn lookup(&self, location: &str, skip: &(dyn Fn(&Claim) -> bool + Sync)) -> Lookup {
        // A change the metastore made for another call (whose client may have its answer
        // already) is in the index before this is answered.
        let settled = tokio::time::timeout(self.settings.build_wait, self.changes.write()).await;
        if settled.is_err() && self.state() != IndexState::Disabled {
            return Lookup::Unavailable(format!(
                "table changes through the proxy were still being recorded in the location index after {} ms",
                self.settings.build_wait.as_millis()
            ));
        }
        drop(settled);
        if !self.wait_ready().await {
            return match self.state() {
                IndexState::Disabled => Lookup::Off,
                IndexState::Building => Lookup::Unavailable(format!(
                    "the location index of the metastore's tables is still being built ({} tables so far; waited {} ms)",
                    self.read().tables,
                    self.settings.build_wait.as_millis()
                )),
                IndexState::Incomplete(why) => Lookup::Unavailable(format!(
                    "the location index of the metastore's tables is incomplete: {why}"
                )),
                IndexState::Ready => Lookup::Found(self.find(location, skip)),
            };
        }
        Lookup::Found(self.find(location, skip))
    }

    /// Whether the index is ready now (or becomes so within `index.build_wait_ms`).
    async fn wait_ready(&self) -> bool {
        let mut rx = self.state.subscribe();
        let wait = async move {
            rx.wait_for(|s| !matches!(s, IndexState::Building))
                .await
                .map(|s| *s == IndexState::Ready)
                .unwrap_or(false)
        };
        tokio::time::timeout(self.settings.build_wait, wait)
            .await
            .unwrap_or(false)
    }

    /// The query itself, on the index as it is.
    pub fn find(&self, location: &str, skip: &dyn Fn(&Claim) -> bool) -> Overlapping {
        let (key, _) = key_of(location);
        if self.shared.iter().any(|p| key.starts_with(p.as_str())) {
            return Overlapping::default();
        }
        self.read().query(location, skip, &self.shared)
    }

    /// Whether `location` lies under one of `index.shared_prefixes`.
    pub fn is_shared(&self, location: &str) -> bool {
        let (key, _) = key_of(location);
        self.shared.iter().any(|p| key.starts_with(p.as_str()))
    }

    /// Records a table and its partitions (replacing what it claimed); past
    /// `index.max_entries` the index becomes incomplete.
    pub fn put(&self, rec: &TableRecord, parts: &[PartitionRecord]) {
        let full = self
            .write()
            .put(rec, parts, self.settings.max_entries)
            .is_err();
        if full {
            self.overflowed();
        }
        self.publish();
    }

    fn overflowed(&self) {
        tracing::warn!(
            max_entries = self.settings.max_entries,
            "location index full: calls that name a location are refused until it is rebuilt within index.max_entries"
        );
        self.set_state(IndexState::Incomplete(format!(
            "more than index.max_entries = {} locations",
            self.settings.max_entries
        )));
    }

    /// Forgets a table (the notification of its drop).
    pub fn drop_table(&self, db: &str, table: &str) {
        self.note(IndexChange::Table {
            db: db.to_ascii_lowercase(),
            table: table.to_ascii_lowercase(),
            partitions: true,
        });
        self.write()
            .remove_table(&db.to_ascii_lowercase(), &table.to_ascii_lowercase());
        self.publish();
    }

    /// Forgets every table of a database (the notification of its drop).
    pub fn drop_database(&self, db: &str) {
        let db = db.to_ascii_lowercase();
        self.note(IndexChange::Database { db: db.clone() });
        let mut inner = self.write();
        for t in inner.tables_of(&db) {
            inner.remove_table(&db, &t);
        }
        drop(inner);
        self.publish();
    }

    /// Reads one table and all its partitions again from the metastore (gone: forgotten).
    pub async fn refresh_table(&self, db: &str, table: &str) -> Result<(), FactsError> {
        self.apply(&IndexChange::Table {
            db: db.to_ascii_lowercase(),
            table: table.to_ascii_lowercase(),
            partitions: true,
        })
        .await
    }

    /// Records that a change happened while a build may be running (applied to the new index
    /// once in place).
    fn note(&self, change: IndexChange) {
        if let Ok(mut p) = self.pending.lock() {
            if let Some(list) = p.as_mut() {
                list.push(change);
            }
        }
    }

    /// Applies a change the proxy saw the metastore execute.
    pub async fn apply(&self, change: &IndexChange) -> Result<(), FactsError> {
        if self.state() == IndexState::Disabled {
            return Ok(());
        }
        self.note(change.clone());
        let r = self.apply_now(change).await;
        self.count("refreshes", r.is_ok());
        if let Err(e) = &r {
            tracing::warn!(error = %e, ?change, "location index: a change could not be read back; the next rescan will");
        }
        self.publish();
        r
    }

    async fn apply_now(&self, change: &IndexChange) -> Result<(), FactsError> {
        match change {
            IndexChange::Table {
                db,
                table,
                partitions,
            } => {
                let Some(catalog) = self.catalog.clone() else {
                    return Ok(());
                };
                let t = catalog.table(db, table).await?;
                let Some(rec) = t.as_ref().and_then(TableRecord::of) else {
                    self.write().remove_table(db, table);
                    return Ok(());
                };
                let parts = if *partitions && rec.partitioned {
                    read_partitions(&*catalog, &self.settings, db, table).await?
                } else {
                    Vec::new()
                };
                let max = self.settings.max_entries;
                let full = {
                    let mut inner = self.write();
                    let kept = if *partitions {
                        Vec::new()
                    } else {
                        inner.remove_table(db, table)
                    };
                    // The partitions' claims it had, kept as they were.
                    inner
                        .put(&rec, &parts, max)
                        .and_then(|()| inner.claim_all(kept, max))
                        .is_err()
                };
                if full {
                    self.overflowed();
                }
                Ok(())
            }
            IndexChange::Partitions {
                db,
                table,
                locations,
            } => {
                let max = self.settings.max_entries;
                let full = {
                    let mut inner = self.write();
                    let k = (
                        Arc::<str>::from(db.as_str()),
                        Arc::<str>::from(table.as_str()),
                    );
                    // The table's own claim (type, owner) for its new partitions.
                    let base = inner.by_table.get(&k).and_then(|keys| {
                        keys.iter().find_map(|key| {
                            inner
                                .by_key
                                .get(key)?
                                .iter()
                                .find(|c| &*c.db == db.as_str() && &*c.table == table.as_str())
                        })
                    });
                    let Some(base) = base.cloned() else {
                        return Ok(());
                    };
                    let claims = locations.iter().map(|l| {
                        let c = Claim {
                            partition: Some(Box::new([])),
                            ..base.clone()
                        };
                        (key_of(l).0, c)
                    });
                    inner.claim_all(claims, max).is_err()
                };
                if full {
                    self.overflowed();
                }
                Ok(())
            }
            IndexChange::Database { db } => {
                let Some(catalog) = self.catalog.clone() else {
                    self.write_drop_db(db);
                    return Ok(());
                };
                let listed: HashSet<String> = catalog
                    .table_names(db)
                    .await
                    .or_else(|e| match e {
                        // get_all_tables of a database that is gone.
                        FactsError::Exception { .. } => Ok(Vec::new()),
                        e => Err(e),
                    })?
                    .into_iter()
                    .map(|t| t.to_ascii_lowercase())
                    .collect();
                let known: HashSet<String> = {
                    let mut inner = self.write();
                    let known = inner.tables_of(db);
                    for t in &known {
                        if !listed.contains(t) {
                            inner.remove_table(db, t);
                        }
                    }
                    known.into_iter().collect()
                };
                // Tables it lists that the index does not know (a rename's new name).
                let mut new: Vec<String> = listed.difference(&known).cloned().collect();
                new.sort();
                for chunk in new.chunks(self.settings.table_batch.max(1)) {
                    for t in catalog.tables(db, chunk).await? {
                        let Some(rec) = TableRecord::of(&t) else {
                            continue;
                        };
                        let parts = if rec.partitioned {
                            read_partitions(&*catalog, &self.settings, &rec.db, &rec.table).await?
                        } else {
                            Vec::new()
                        };
                        let full = self
                            .write()
                            .put(&rec, &parts, self.settings.max_entries)
                            .is_err();
                        if full {
                            self.overflowed();
                            return Ok(());
                        }
                    }
                }
                Ok(())
            }
        }
    }

    fn write_drop_db(&self, db: &str) {
        let mut inner = self.write();
        for t in inner.tables_of(db) {
            inner.remove_table(db, &t);
        }
    }

    fn count(&self, what: &'static str, ok: bool) {
        let outcome = if ok { "ok" } else { "error" };
        let family = match what {
            "builds" => &self.metrics.index_builds,
            _ => &self.metrics.index_refreshes,
        };
        family.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    /// Reads the whole catalog again and swaps the new index in; changes seen meanwhile are
    /// applied again afterwards. A failed rebuild of a ready index keeps the old one (ready:
    /// it still holds every change made through the proxy); a failed first build leaves the
    /// index incomplete.
    pub async fn rebuild(&self) -> Result<(), String> {
        let Some(catalog) = self.catalog.clone() else {
            return Ok(());
        };
        let _one = self.building.lock().await;
        if let Ok(mut p) = self.pending.lock() {
            *p = Some(Vec::new());
        }
        let started = Instant::now();
        self.metrics.index_build_tables.set(0);
        let built = self.build(&*catalog).await;
        let pending = self
            .pending
            .lock()
            .map(|mut p| p.take())
            .unwrap_or_default()
            .unwrap_or_default();
        self.metrics
            .index_build_seconds
            .set(started.elapsed().as_secs_f64());
        let r = match built {
            Ok(inner) => {
                *self.write() = inner;
                self.set_state(IndexState::Ready);
                for change in &pending {
                    let _ = self.apply(change).await;
                }
                tracing::info!(
                    entries = self.entries(),
                    ms = started.elapsed().as_millis() as u64,
                    "location index built"
                );
                Ok(())
            }
            Err(BuildError::Full) => {
                // Memory stays bounded: what was read is let go.
                *self.write() = Inner::default();
                self.overflowed();
                Err(format!(
                    "more than index.max_entries = {} locations",
                    self.settings.max_entries
                ))
            }
            Err(BuildError::Facts(e)) => {
                tracing::warn!(error = %e, "location index build failed");
                if self.state() != IndexState::Ready {
                    self.set_state(IndexState::Incomplete(format!("its build failed: {e}")));
                }
                Err(e.to_string())
            }
        };
        self.count("builds", r.is_ok());
        self.publish();
        r
    }

    /// One full read of the catalog into a new index.
    async fn build(&self, catalog: &dyn Catalog) -> Result<Inner, BuildError> {
        let s = &self.settings;
        let mut inner = Inner::default();
        let mut done = 0i64;
        for db in catalog.databases().await? {
            let names = match catalog.table_names(&db).await {
                Ok(n) => n,
                // Dropped since it was listed.
                Err(FactsError::Exception { .. }) => continue,
                Err(e) => return Err(e.into()),
            };
            for chunk in names.chunks(s.table_batch.max(1)) {
                for t in catalog.tables(&db, chunk).await? {
                    let Some(rec) = TableRecord::of(&t) else {
                        continue;
                    };
                    let parts = if rec.partitioned {
                        read_partitions(catalog, s, &rec.db, &rec.table).await?
                    } else {
                        Vec::new()
                    };
                    inner
                        .put(&rec, &parts, s.max_entries)
                        .map_err(|Full| BuildError::Full)?;
                    done += 1;
                    self.metrics.index_build_tables.set(done);
                }
            }
        }
        Ok(inner)
    }
}

#[derive(Debug)]
enum BuildError {
    Full,
    Facts(FactsError),
}

impl From<FactsError> for BuildError {
    fn from(e: FactsError) -> Self {
        BuildError::Facts(e)
    }
}

/// A table's partitions, read in batches of `index.partition_batch` names.
async fn read_partitions(
    catalog: &dyn Catalog,
    s: &IndexSettings,
    db: &str,
    table: &str,
) -> Result<Vec<PartitionRecord>, FactsError> {
    let names = catalog.partition_names(db, table).await?;
    let mut out = Vec::new();
    for chunk in names.chunks(s.partition_batch.max(1)) {
        for p in catalog.partitions(db, table, chunk).await? {
            out.extend(PartitionRecord::of(&p));
        }
    }
    Ok(out)
}

/// The background task: the first build, then a rescan every `index.rescan_ms` (a failed
/// build is tried again sooner). Ends when the index is dropped.
async fn keep_current(index: Weak<LocationIndex>) {
    // A change between the build's reads and the follower's starting point would be lost.
    let gate = match index.upgrade() {
        Some(i) if i.settings.follow_log => Some(i.log_start.subscribe()),
        Some(_) => None,
        None => return,
    };
    if let Some(mut gate) = gate {
        if gate.wait_for(|open| *open).await.is_err() {
            return;
        }
    }
    let mut first = true;
    loop {
        let Some(i) = index.upgrade() else { return };
        if !first {
            i.metrics.index_rebuilds.inc();
        }
        first = false;
        let ok = i.rebuild().await.is_ok();
        let wait = if ok {
            i.settings.rescan
        } else {
            i.settings.rescan.min(Duration::from_secs(30))
        };
        drop(i);
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests;
