//! Classification: from a method's rule and its args to a policy `Operation`, with the names
//! the audit line needs. The only I/O here is reading the current table for `alter_table*`
//! (to diff) and the current database for `alter_database*` (owner change).

use crate::decision::authz::{
    AlterKind, GrantTarget, LockKind, Object, Operation, Principal, PrincipalKind, Privilege,
    RevokeItem, TxnRef,
};
use crate::decision::facts::{FactsError, FactsStore};
use crate::decision::storage::{
    canonical_location, is_default_table_location, location_is_under, location_key,
};
use crate::wire::codec::value::Value;
use crate::wire::router::{GrantKind, ListShape, Path, Rule};
use crate::wire::schema::fields;

use crate::wire::codec::path::{strings_at, values_at};

/// A classified call.
#[derive(Debug, Clone, PartialEq)]
pub struct Classified {
    pub op: Operation,
    pub db: Option<String>,
    pub table: Option<String>,
    pub location: Option<String>,
    /// Storage locations the user's own role must reach (docs/STORAGE.md): an explicit table
    /// location on create, a changed one on alter, partition locations outside their table's,
    /// database locations.
    pub storage: Vec<StorageNeed>,
    /// Default places the call puts a table into (created with no location or exactly its
    /// default place, or renamed with its directory): exempt from the caller's storage check
    /// only while nothing is stored there yet; otherwise checked like `storage`
    /// (docs/STORAGE.md "Default places").
    pub default_places: Vec<StorageNeed>,
    /// An engine's question (`question.rs`): who asked, and what the user tried.
    pub asked: Option<super::question::Asked>,
}

/// One location a call points metadata at, and the access it implies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageNeed {
    pub location: String,
    /// Data will be written there (managed tables, databases); else read (external tables,
    /// partitions registered over existing data).
    pub write: bool,
}

/// Spark's placeholder for a data-source table's `sd.location` (the data is at the serde
/// `path`): never a data location.
const SPARK_PLACEHOLDER: &str = "-__PLACEHOLDER__";

/// Where a table's data lives: `sd.location`, and the serde parameter `path` in which Spark
/// keeps a data-source table's location (Spark's placeholder location left out; engines read
/// that key in any case, so every casing counts).
pub fn data_locations(t: &Value) -> Vec<String> {
    let sd_loc = t
        .path(&[fields::table::SD, fields::storage_descriptor::LOCATION])
        .and_then(Value::as_str);
    let serde_paths = t
        .path(&[
            fields::table::SD,
            fields::storage_descriptor::SERDE_INFO,
            fields::serde_info::PARAMETERS,
        ])
        .map(Value::as_map)
        .unwrap_or_default()
        .iter()
        .filter(|(k, _)| k.as_str().is_some_and(|k| k.eq_ignore_ascii_case("path")))
        .filter_map(|(_, v)| v.as_str());
    let mut out: Vec<String> = Vec::new();
    for l in sd_loc.into_iter().chain(serde_paths) {
        let l = l.trim();
        if !l.is_empty() && !l.ends_with(SPARK_PLACEHOLDER) && !out.iter().any(|o| same_place(o, l))
        {
            out.push(l.to_string());
        }
    }
    out
}

/// Table parameters that point engines at a place of their own: Iceberg's current and
/// previous metadata files and the places its writers put data and metadata files (table
/// properties the Iceberg catalogs copy into the metastore's parameters); Paimon's table
/// location when kept in the properties (`paimon_location`); Hudi's table path as its Flink
/// catalog stores it (`path`, which Flink reads before `sd.location`) and its base-path
/// setting (`hoodie.base.path`); Delta's Flink connector path (`table-path`); and any Flink
/// connector option stored by Flink's Hive catalog under its `flink.` prefix (`flink.path`,
/// `flink.table-path`). Keys are compared without case: a check too many costs nothing, a
/// check missed because one engine folds case would be a hole.
const FORMAT_LOCATION_PARAMS: [&str; 12] = [
    "metadata_location",
    "previous_metadata_location",
    "write.data.path",
    "write.metadata.path",
    "write.object-storage.path",
    "write.folder-storage.path",
    "paimon_location",
    "path",
    "hoodie.base.path",
    "table-path",
    "flink.path",
    "flink.table-path",
];

/// The partitions of `PartitionSpecWithSharedSD` structs lie at the shared `sd.location`
/// followed by each partition's (`PartitionWithoutSD`) `relativePath`,
/// joined as plain strings — `s3://b/t` and `x/p=1` make `s3://b/tx/p=1`, a sibling of the
/// table — and an absent string joins as Java's `null`, as the metastore joins them.
pub fn shared_sd_locations(specs: &[Value]) -> Vec<String> {
    let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or("null").to_string();
    let mut out = Vec::new();
    for spec in specs {
        use fields::partition_spec_with_shared_sd as shared;
        let base = text(spec.path(&[shared::SD, fields::storage_descriptor::LOCATION]));
        let parts = spec.field(shared::PARTITIONS).map(Value::as_list);
        for p in parts.unwrap_or_default() {
            let relative = p.field(fields::partition_without_sd::RELATIVE_PATH);
            let l = format!("{base}{}", text(relative));
            if !out.contains(&l) {
                out.push(l);
            }
        }
    }
    out
}

/// The parameters a table format's commit rewrites: Iceberg's metadata pointers and the
/// mirrors of its metadata file that Iceberg's Hive catalogs write on every commit (Java's
/// `HMSTablePropertyHelper`: the table's `uuid`, `current-schema`, the current snapshot's id,
/// timestamp and summary, `snapshot-count`, `default-partition-spec`, `default-sort-order`,
/// `metadata_hash`; `format-version`). The metadata file is what engines read: whoever may
/// write a new one may say anything in it, so its mirrors carry nothing more. A change of only
/// these (and statistics), with the pointers within the table's location, is a write of data
/// (INSERT); any other carried location that changes is ALTER (and a storage check when it
/// leaves the table). `table_type`, `EXTERNAL` and `storage_handler` are not among them: they
/// change how engines and a drop treat the table.
const COMMIT_PARAMS: [&str; 12] = [
    "metadata_location",
    "previous_metadata_location",
    "uuid",
    "current-schema",
    "current-snapshot-id",
    "current-snapshot-timestamp-ms",
    "current-snapshot-summary",
    "snapshot-count",
    "default-partition-spec",
    "default-sort-order",
    "metadata_hash",
    "format-version",
];

/// A database's locations (`Database` or `CreateDatabaseRequest`: locationUri and, Hive 4,
/// managedLocationUri), non-empty and distinct.
pub fn database_locations(d: &Value) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for id in [
        fields::database::LOCATION_URI,
        fields::database::MANAGED_LOCATION_URI,
    ] {
        if let Some(l) = d.field(id).and_then(Value::as_str).map(str::trim) {
            if !l.is_empty() && !out.iter().any(|o| same_place(o, l)) {
                out.push(l.to_string());
            }
        }
    }
    out
}

/// Two location strings name the same place (their canonical forms are equal).
fn same_place(a: &str, b: &str) -> bool {
    a == b || location_key(a) == location_key(b)
}

/// Every location a table makes engines read or write: its data locations, and the
/// table-format metadata locations that lie outside them (one under the table's own,
/// checked, location needs no check of its own).
pub fn table_locations(t: &Value) -> Vec<String> {
    let roots = data_locations(t);
    let mut out = roots.clone();
    let params = t.field(fields::table::PARAMETERS).map(Value::as_map);
    let params = params.unwrap_or_default();
    let carried = FORMAT_LOCATION_PARAMS.iter().flat_map(|key| {
        params
            .iter()
            .filter(|(k, _)| k.as_str().is_some_and(|k| k.eq_ignore_ascii_case(key)))
    });
    for (_, v) in carried {
        let Some(l) = v.as_str() else { continue };
        let l = l.trim();
        let inside = roots.iter().any(|root| location_is_under(l, root));
        if !l.is_empty() && !inside && !out.iter().any(|o| same_place(o, l)) {
            out.push(l.to_string());
        }
    }
    out
}

/// The metastore's rule for whether a drop deletes a table's data lives with the facts, which
/// record it per table; classification uses the same rule.
pub use crate::decision::facts::deletes_on_drop;

/// Why a call could not be classified (it is denied, fail closed).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ClassifyError {
    #[error("the call's arguments cannot be read: {0}")]
    Args(String),
    #[error("the call names no {0}")]
    Missing(&'static str),
    #[error("{0}")]
    Facts(FactsError),
}

/// Table parameters that only carry statistics (Hive's and Spark's).
const STATS_PARAMS: [&str; 9] = [
    "numFiles",
    "numRows",
    "rawDataSize",
    "totalSize",
    "numFilesErasureCoded",
    "COLUMN_STATS_ACCURATE",
    "transient_lastDdlTime",
    "last_modified_by",
    "last_modified_time",
];
const STATS_PARAM_PREFIXES: [&str; 1] = ["spark.sql.statistics."];

/// `Table` fields that clients do not round-trip and that carry no policy meaning here:
/// createTime, lastAccessTime, privileges, and the Hive 3+/4 bookkeeping fields (ownerType
/// among them — owner changes are judged on their own).
const TABLE_BOOKKEEPING: [i16; 16] = {
    use fields::table::*;
    [
        CREATE_TIME,
        LAST_ACCESS_TIME,
        PRIVILEGES,
        CREATION_METADATA,
        CAT_NAME,
        OWNER_TYPE,
        WRITE_ID,
        IS_STATS_COMPLIANT,
        COL_STATS,
        ACCESS_TYPE,
        REQUIRED_READ_CAPABILITIES,
        REQUIRED_WRITE_CAPABILITIES,
        ID,
        FILE_METADATA,
        DICTIONARY,
        TXN_ID,
    ]
};

struct Ctx<'a> {
    /// The call's args as the metastore reads them (`schema::read`).
    args: &'a Value,
}

impl Ctx<'_> {
    fn strings(&self, path: Path) -> Result<Vec<String>, ClassifyError> {
        Ok(strings_at(self.args, path))
    }

    fn string(&self, path: Path, what: &'static str) -> Result<String, ClassifyError> {
        self.strings(path)?
            .into_iter()
            .next()
            .ok_or(ClassifyError::Missing(what))
    }

    /// A database or table name, normalised as the metastore normalises it.
    fn name(&self, path: Path, what: &'static str) -> Result<String, ClassifyError> {
        normalize_name(&self.string(path, what)?)
    }

    fn values(&self, path: Path) -> Result<Vec<Value>, ClassifyError> {
        Ok(values_at(self.args, path).into_iter().cloned().collect())
    }

    fn value(&self, path: Path, what: &'static str) -> Result<Value, ClassifyError> {
        values_at(self.args, path)
            .into_iter()
            .next()
            .cloned()
            .ok_or(ClassifyError::Missing(what))
    }

    /// The integers at `path` (transaction and lock ids).
    fn ids(&self, path: Path) -> Vec<i64> {
        values_at(self.args, path)
            .into_iter()
            .filter_map(Value::as_int)
            .collect()
    }

    fn id(&self, path: Path, what: &'static str) -> Result<i64, ClassifyError> {
        self.ids(path)
            .into_iter()
            .next()
            .ok_or(ClassifyError::Missing(what))
    }

    /// Distinct tables named by parallel db/table paths (with `EACH` fan-out).
    fn tables(&self, db: Path, table: Path) -> Result<Vec<Object>, ClassifyError> {
        let dbs = self.strings(db)?;
        let tables = self.strings(table)?;
        if dbs.is_empty() || tables.is_empty() {
            return Err(ClassifyError::Missing("table"));
        }
        let mut out: Vec<Object> = Vec::new();
        for (i, t) in tables.iter().enumerate() {
            let d = dbs.get(i).or(dbs.last()).expect("non-empty");
            let o = Object::table(&normalize_name(d)?, &normalize_name(t)?);
            if !out.contains(&o) {
                out.push(o);
            }
        }
        Ok(out)
    }
}

/// Transactions and locks one call may act on: each is looked up (cached) before the call
/// is forwarded.
pub const MAX_HELD: usize = 1000;

fn dedup_held(held: &mut Vec<TxnRef>) -> Result<(), ClassifyError> {
    let mut seen = std::collections::HashSet::new();
    held.retain(|h| seen.insert(*h));
    if held.len() > MAX_HELD {
        return Err(ClassifyError::Args(format!(
            "more than {MAX_HELD} transactions and locks in one call"
        )));
    }
    Ok(())
}

/// The metastore's catalog (Hive 3+): database names may carry it as `@catalog#db`.
const DEFAULT_CATALOG: &str = "hive";

/// Normalises a database or table name as the metastore does (`names::object_name`: Java's
/// `trim()` — every character up to U+0020 off both ends — then lower case). Names whose case
/// mapping could differ between Java and Rust (anything not ASCII) or that keep a control
/// character are refused, and so are database names carrying a catalog other than the
/// default one (`@catalog#db`).
pub fn normalize_name(raw: &str) -> Result<String, ClassifyError> {
    let mut name = crate::auth::names::object_name(crate::auth::names::NameKind::Table, raw)
        .map_err(|e| {
            ClassifyError::Args(format!(
                "the database or table name {raw:?} {} (names rule: {})",
                e.why(),
                e.rule.as_str()
            ))
        })?;
    if let Some(rest) = name.strip_prefix('@') {
        let (catalog, db) = rest.split_once('#').unwrap_or((rest, ""));
        if catalog != DEFAULT_CATALOG {
            return Err(ClassifyError::Args(format!(
                "the name {raw:?} names catalog {catalog:?}; hms-guard serves the {DEFAULT_CATALOG:?} catalog only"
            )));
        }
        // `!` is the metastore's marker for an empty database name.
        let db = if db == "!" { "" } else { db };
        name = db.trim_matches(|c: char| c <= ' ').to_string();
    }
    if name.is_empty() {
        return Err(ClassifyError::Missing("name"));
    }
    Ok(name)
}

fn names(obj: &Object) -> (Option<String>, Option<String>) {
    match obj {
        Object::Table(d, t) => (Some(d.clone()), Some(t.clone())),
        Object::Database(d) => (Some(d.clone()), None),
        Object::Global => (None, None),
    }
}

impl Classified {
    /// An operation that names no database, table or location.
    pub fn of(op: Operation) -> Classified {
        Classified {
            op,
            db: None,
            table: None,
            location: None,
            storage: Vec::new(),
            default_places: Vec::new(),
            asked: None,
        }
    }
}

fn one(op: Operation, obj: &Object) -> Classified {
    let (db, table) = names(obj);
    Classified {
        db,
        table,
        ..Classified::of(op)
    }
}

impl Ctx<'_> {
    /// Partition locations of a call that lie outside their table's location.
    async fn partition_needs(
        &self,
        paths: &[Path],
        joined: &[String],
        table: &Object,
        facts: &FactsStore,
    ) -> Result<Vec<StorageNeed>, ClassifyError> {
        let mut locs = Vec::new();
        for p in paths {
            for l in self.strings(p)?.into_iter().chain(joined.iter().cloned()) {
                if !l.is_empty() && !locs.contains(&l) {
                    locs.push(l);
                }
            }
        }
        if locs.is_empty() {
            return Ok(Vec::new());
        }
        let table_facts = facts.object(table).await.map_err(ClassifyError::Facts)?;
        let base = table_facts
            .as_ref()
            .and_then(|f| f.location.clone())
            .unwrap_or_default();
        // A partition of a table whose drops delete data has its own data deleted with it.
        let write = table_facts.is_some_and(|f| f.deletes_data);
        Ok(locs
            .into_iter()
            .filter(|l| !location_is_under(l, &base))
            .map(|location| StorageNeed { location, write })
            .collect())
    }
}

/// Where the metastore puts table `name` of a database at `db_location` when the table names
/// no location: the database's location and the table's (lower-case) name, joined as Hadoop's
/// `Path` joins them.
fn default_place(db_location: &str, name: &str) -> String {
    format!(
        "{}/{}",
        db_location.trim_end_matches('/'),
        name.to_ascii_lowercase()
    )
}

/// The default place a rename moves a table's directory into, if it does: the metastore
/// (`HiveAlterHandler.alterTable`) moves the directory of a table that is not external
/// (`EXTERNAL` is not `TRUE`), whose new location is unset or unchanged, and whose location is
/// its database's location plus its name (compared without case), to the new database's
/// location plus the new name. Locations that do not canonicalise are taken to move (the
/// place is then listed and, if in use, checked).
async fn renamed_into(
    db: &str,
    name: &str,
    current: &Value,
    new: &Value,
    facts: &FactsStore,
) -> Result<Option<String>, ClassifyError> {
    let text = |v: &Value, path: &[i16]| v.path(path).and_then(Value::as_str).map(str::to_string);
    let new_db = text(new, &[fields::table::DB_NAME]);
    let new_db = new_db.map(|n| normalize_name(&n)).transpose()?;
    let new_name = text(new, &[fields::table::TABLE_NAME]);
    let new_name = new_name.map(|n| normalize_name(&n)).transpose()?;
    let (new_db, new_name) = (
        new_db.unwrap_or_else(|| db.to_string()),
        new_name.unwrap_or_else(|| name.to_string()),
    );
    if new_db == db && new_name == name {
        return Ok(None);
    }
    let external = current
        .field(fields::table::PARAMETERS)
        .and_then(|p| p.map_get("EXTERNAL"))
        .and_then(Value::as_str)
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("TRUE"));
    let location = [fields::table::SD, fields::storage_descriptor::LOCATION];
    let old_location = text(current, &location).unwrap_or_default();
    let new_location = text(new, &location).unwrap_or_default();
    if external || !(new_location.is_empty() || new_location == old_location) {
        return Ok(None);
    }
    let location_of = |f: Option<crate::decision::facts::ObjectFacts>| f.and_then(|f| f.location);
    let old_db = location_of(
        facts
            .object(&Object::database(db))
            .await
            .map_err(ClassifyError::Facts)?,
    );
    let at_default = match (
        old_db.as_deref().map(canonical_location),
        canonical_location(&old_location),
    ) {
        (Some(Ok(d)), Ok(t)) => {
            t.is_under(&d)
                && t.segments.len() == d.segments.len() + 1
                && t.segments
                    .last()
                    .is_some_and(|s| s.eq_ignore_ascii_case(name))
        }
        _ => true,
    };
    if !at_default {
        return Ok(None);
    }
    let target_db = location_of(
        facts
            .object(&Object::database(&new_db))
            .await
            .map_err(ClassifyError::Facts)?,
    );
    Ok(target_db.map(|d| default_place(&d, &new_name)))
}

/// Classifies a call whose method has `rule`, from its args as the metastore reads them.
pub async fn classify(
    rule: &Rule,
    args: &Value,
    facts: &FactsStore,
) -> Result<Vec<Classified>, ClassifyError> {
    let c = Ctx { args };
    match *rule {
        Rule::Harmless | Rule::SetUgi => Ok(vec![Classified::of(Operation::Harmless)]),
        Rule::Question => super::question::classify(args),
        Rule::Tokens => Ok(vec![one(Operation::Tokens, &Object::Global)]),
        Rule::AdminOnly(what) => Ok(vec![one(Operation::AdminOnly(what), &Object::Global)]),
        Rule::Txn {
            user,
            txns,
            locks,
            range,
        } => c.txn(user, txns, locks, range),
        Rule::Lock {
            components,
            user,
            txn,
        } => c.lock(components, user, txn),
        Rule::ReadTable { .. } | Rule::ReadDatabase { .. } | Rule::Listing { .. } => c.read(rule),
        Rule::CreateTable { table } | Rule::AddIndex { table, .. } => {
            c.create_table(rule, table, facts).await
        }
        Rule::DropIndex { db, table, index } => drop_index(&c, db, table, index, facts).await,
        Rule::AlterTable {
            db,
            table,
            new_table,
        } => c.alter_table(db, table, new_table, facts).await,
        Rule::DropTable { .. }
        | Rule::TruncateTable { .. }
        | Rule::AddPartitions { .. }
        | Rule::AlterPartitions { .. }
        | Rule::DropPartitions { .. }
        | Rule::OwnerOfTables { .. } => c.table_data(rule, facts).await,
        Rule::CreateDatabase { database } => c.create_database(database),
        Rule::AlterDatabase { name, new_database } => {
            c.alter_database(name, new_database, facts).await
        }
        Rule::DropDatabase { name } => {
            let obj = Object::database(&c.name(name, "database name")?);
            Ok(vec![one(Operation::DropDatabase { db: obj.clone() }, &obj)])
        }
        Rule::GrantRole { role, .. } => {
            let role = c.string(role, "role")?;
            Ok(vec![Classified::of(Operation::GrantRole { role })])
        }
        Rule::GrantPrivileges { bag, kind } => c.grant_privileges(bag, kind),
        Rule::ReadGrants { name, kind, groups } => c.read_grants(name, kind, groups),
    }
}

/// The rule families, one classification each.
impl Ctx<'_> {
    /// Transaction calls: the user they claim, and every transaction and lock they act on.
    fn txn(
        &self,
        user: Option<Path>,
        txns: &[Path],
        locks: &[Path],
        range: Option<(Path, Path)>,
    ) -> Result<Vec<Classified>, ClassifyError> {
        let claimed_user = match user {
            Some(p) => Some(self.string(p, "user")?),
            None => None,
        };
        let mut held = Vec::new();
        for &p in txns {
            held.extend(self.ids(p).into_iter().map(TxnRef::Txn));
        }
        for &p in locks {
            held.extend(self.ids(p).into_iter().map(TxnRef::Lock));
        }
        if let Some((min, max)) = range {
            let (min, max) = (
                self.id(min, "first transaction")?,
                self.id(max, "last transaction")?,
            );
            // Each transaction of the range is checked: bounded like any other list.
            if max.checked_sub(min).is_none_or(|n| n >= MAX_HELD as i64) {
                return Err(ClassifyError::Args(format!(
                    "a transaction range of more than {MAX_HELD} ids ({min}..={max})"
                )));
            }
            held.extend((min..=max).map(TxnRef::Txn));
        }
        dedup_held(&mut held)?;
        Ok(vec![Classified::of(Operation::Txn { claimed_user, held })])
    }

    /// `lock`: the objects locked (a `LockComponent` each) and the transaction it runs in.
    fn lock(
        &self,
        components: Path,
        user: Path,
        txn: Path,
    ) -> Result<Vec<Classified>, ClassifyError> {
        let claimed_user = self.string(user, "user")?;
        let mut held: Vec<TxnRef> = self.ids(txn).into_iter().map(TxnRef::Txn).collect();
        dedup_held(&mut held)?;
        let mut items = Vec::new();
        for comp in values_at(self.args, components)
            .into_iter()
            .flat_map(Value::as_list)
        {
            let item = lock_item(comp)?;
            if !items.contains(&item) {
                items.push(item);
            }
        }
        let first = items
            .first()
            .map(|(o, _)| o.clone())
            .unwrap_or(Object::Global);
        Ok(vec![one(
            Operation::Lock {
                claimed_user,
                items,
                held,
            },
            &first,
        )])
    }

    /// Reads of tables and databases, and listings (filtered on the way back).
    fn read(&self, rule: &Rule) -> Result<Vec<Classified>, ClassifyError> {
        match *rule {
            Rule::ReadTable { db, table } => {
                let tables = self.tables(db, table)?;
                let first = tables[0].clone();
                Ok(vec![one(Operation::ReadTables(tables), &first)])
            }
            Rule::Listing {
                shape: ListShape::DbNames | ListShape::Databases,
                ..
            } => Ok(vec![one(Operation::ListDatabases, &Object::Global)]),
            Rule::ReadDatabase { name } => {
                let obj = Object::database(&self.name(name, "database name")?);
                Ok(vec![one(Operation::ReadDatabase { db: obj.clone() }, &obj)])
            }
            Rule::Listing { db, .. } => {
                let db = match db {
                    Some(p) => self.name(p, "database")?,
                    None => "*".to_string(),
                };
                let obj = Object::database(&db);
                Ok(vec![one(Operation::ListTables { db }, &obj)])
            }
            _ => unreachable!("classify passes only reads"),
        }
    }

    /// `create_table` (and `add_index`'s index table): the database it goes in, its locations
    /// (explicit ones checked, default places exempt while empty), and the grants it carries.
    async fn create_table(
        &self,
        rule: &Rule,
        table: Path,
        facts: &FactsStore,
    ) -> Result<Vec<Classified>, ClassifyError> {
        let t = self.value(table, "table")?;
        let text = |id, what| {
            t.field(id)
                .and_then(Value::as_str)
                .ok_or(ClassifyError::Missing(what))
        };
        let db = normalize_name(text(fields::table::DB_NAME, "database")?)?;
        let name = normalize_name(text(fields::table::TABLE_NAME, "table name")?)?;
        let obj = Object::table(&db, &name);
        let mut cl = one(Operation::CreateTable { table: obj.clone() }, &obj);
        created_table_places(&mut cl, &t, &db, &name, facts).await?;
        let mut out = match *rule {
            Rule::AddIndex { index, .. } => index_with_table(self, index, &t, cl)?,
            _ => vec![cl],
        };
        // Grants the new table carries are decided before its create (which the audit
        // line then names).
        if let Some(g) = carried_grants(&t)? {
            out.insert(out.len() - 1, g);
        }
        Ok(out)
    }

    /// `alter_table*`: every way the new table differs from the current one, and the
    /// locations it newly points at (a rename may move its directory into a default place).
    async fn alter_table(
        &self,
        db: Path,
        table: Path,
        new_table: Path,
        facts: &FactsStore,
    ) -> Result<Vec<Classified>, ClassifyError> {
        let db = self.name(db, "database")?;
        let name = self.name(table, "table name")?;
        let new = self.value(new_table, "new table")?;
        let current = facts
            .table(&db, &name)
            .await
            .map_err(ClassifyError::Facts)?;
        let changes = match &current {
            Some(cur) => alter_changes(&db, &name, cur, &new),
            None => vec![AlterKind::Other],
        };
        tracing::debug!(table = %format!("{db}.{name}"), ?changes, "alter_table judged");
        let obj = Object::table(&db, &name);
        let mut cl = one(
            Operation::AlterTable {
                table: obj.clone(),
                changes,
            },
            &obj,
        );
        // Every new location is checked whatever else the call changes (a rename that
        // also relocates is both).
        cl.storage = alter_storage_needs(current.as_ref(), &new);
        cl.location = cl.storage.first().map(|n| n.location.clone());
        if let Some(cur) = &current {
            if let Some(place) = renamed_into(&db, &name, cur, &new, facts).await? {
                cl.location.get_or_insert_with(|| place.clone());
                cl.default_places.push(StorageNeed {
                    location: place,
                    write: true,
                });
            }
        }
        Ok(vec![cl])
    }

    /// Calls on a table's data and partitions: drop, truncate, partitions added, altered or
    /// dropped, and calls that need ownership of every table they name.
    async fn table_data(
        &self,
        rule: &Rule,
        facts: &FactsStore,
    ) -> Result<Vec<Classified>, ClassifyError> {
        match *rule {
            Rule::DropTable { db, table } => {
                let obj = self.tables(db, table)?.remove(0);
                Ok(vec![one(Operation::DropTable { table: obj.clone() }, &obj)])
            }
            Rule::TruncateTable { db, table } => {
                let obj = self.tables(db, table)?.remove(0);
                Ok(vec![one(
                    Operation::TruncateTable { table: obj.clone() },
                    &obj,
                )])
            }
            Rule::AddPartitions {
                db,
                table,
                locations,
                shared_sd,
            } => {
                let joined = shared_sd_locations(&self.values(shared_sd)?);
                let mut out = Vec::new();
                for t in self.tables(db, table)? {
                    let mut cl = one(Operation::AddPartitions { table: t.clone() }, &t);
                    cl.storage = self.partition_needs(locations, &joined, &t, facts).await?;
                    cl.location = cl.storage.first().map(|n| n.location.clone());
                    out.push(cl);
                }
                Ok(out)
            }
            Rule::AlterPartitions {
                db,
                table,
                stats_only,
                locations,
            } => {
                let mut out = Vec::new();
                for t in self.tables(db, table)? {
                    let op = Operation::AlterPartitions {
                        table: t.clone(),
                        stats_only,
                    };
                    let mut cl = one(op, &t);
                    cl.storage = self.partition_needs(locations, &[], &t, facts).await?;
                    cl.location = cl.storage.first().map(|n| n.location.clone());
                    out.push(cl);
                }
                Ok(out)
            }
            Rule::DropPartitions { db, table } => Ok(self
                .tables(db, table)?
                .iter()
                .map(|t| one(Operation::DropPartitions { table: t.clone() }, t))
                .collect()),
            Rule::OwnerOfTables { tables } => {
                let mut all = Vec::new();
                for (db, t) in tables {
                    for o in self.tables(db, t)? {
                        if !all.contains(&o) {
                            all.push(o);
                        }
                    }
                }
                let first = all[0].clone();
                Ok(vec![one(Operation::OwnerOfAll(all), &first)])
            }
            _ => unreachable!("classify passes only calls on a table's data"),
        }
    }

    /// `create_database`: its locations, each written to.
    fn create_database(&self, database: Path) -> Result<Vec<Classified>, ClassifyError> {
        let d = self.value(database, "database")?;
        let name = normalize_name(
            d.field(fields::database::NAME)
                .and_then(Value::as_str)
                .ok_or(ClassifyError::Missing("database name"))?,
        )?;
        let obj = Object::database(&name);
        let mut cl = one(Operation::CreateDatabase { db: obj.clone() }, &obj);
        for l in database_locations(&d) {
            cl.location.get_or_insert_with(|| l.clone());
            cl.storage.push(StorageNeed {
                location: l,
                write: true,
            });
        }
        Ok(vec![cl])
    }

    /// `alter_database`: an owner change, and the locations the database newly names.
    async fn alter_database(
        &self,
        name: Path,
        new_database: Path,
        facts: &FactsStore,
    ) -> Result<Vec<Classified>, ClassifyError> {
        let name = self.name(name, "database name")?;
        let new = self.value(new_database, "new database")?;
        let obj = Object::database(&name);
        let current = facts.object(&obj).await.map_err(ClassifyError::Facts)?;
        let new_owner = new
            .field(fields::database::OWNER_NAME)
            .and_then(Value::as_str);
        let owner_change = match (new_owner, current.as_ref().and_then(|f| f.owner.as_ref())) {
            (Some(n), Some(cur)) => n != cur.name,
            (Some(_), None) => true,
            (None, _) => false,
        };
        let mut cl = one(
            Operation::AlterDatabase {
                db: obj.clone(),
                owner_change,
            },
            &obj,
        );
        // Every location the new database names that the current one does not have (its
        // location and, Hive 4, its managed-table location).
        let before = match facts.database(&name).await.map_err(ClassifyError::Facts)? {
            Some(cur) => database_locations(&cur),
            None => Vec::new(),
        };
        for l in database_locations(&new) {
            if !before.iter().any(|b| same_place(b, &l)) {
                cl.location.get_or_insert_with(|| l.clone());
                cl.storage.push(StorageNeed {
                    location: l,
                    write: true,
                });
            }
        }
        Ok(vec![cl])
    }

    /// `grant_privileges` (or a revoke, by method or request type): each privilege on each
    /// object of the bag.
    fn grant_privileges(
        &self,
        bag: Path,
        kind: GrantKind,
    ) -> Result<Vec<Classified>, ClassifyError> {
        let bag = self.value(bag, "privilege bag")?;
        if is_revoke(kind, self.args)? {
            return revoke_items(&bag);
        }
        let mut items = Vec::new();
        let privileges = bag.field(fields::privilege_bag::PRIVILEGES);
        for hop in privileges.map(Value::as_list).unwrap_or_default() {
            let object = granted_object(hop)?;
            for privilege in granted_privileges(hop)? {
                items.push((object.clone(), privilege));
            }
        }
        if items.is_empty() {
            return Err(ClassifyError::Missing("privilege"));
        }
        let first = items[0].0.clone();
        Ok(vec![one(Operation::GrantPrivileges(items), &first)])
    }

    /// Reads of a principal's grants (and of groups' grants).
    fn read_grants(
        &self,
        name: Path,
        kind: Option<Path>,
        groups: Option<Path>,
    ) -> Result<Vec<Classified>, ClassifyError> {
        let groups = match groups {
            Some(p) => values_at(self.args, p)
                .into_iter()
                .flat_map(Value::as_list)
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            None => Vec::new(),
        };
        let who = self.strings(name)?.into_iter().next();
        let kind = match kind {
            None => Some(PrincipalKind::User),
            Some(p) => self
                .values(p)?
                .first()
                .and_then(Value::as_int)
                .and_then(PrincipalKind::from_wire),
        };
        let principal = match (who, kind) {
            (Some(name), Some(kind)) => Some(Principal { kind, name }),
            _ => None,
        };
        Ok(vec![Classified::of(Operation::ReadGrants {
            principal,
            groups,
        })])
    }
}

/// One `LockComponent`: the object it locks and how.
fn lock_item(comp: &Value) -> Result<(Object, LockKind), ClassifyError> {
    use fields::lock_component as lc;
    let kind = comp
        .field(lc::TYPE)
        .and_then(Value::as_int)
        .and_then(LockKind::from_wire)
        .ok_or(ClassifyError::Missing("lock type"))?;
    let text = |id, what| {
        comp.field(id)
            .and_then(Value::as_str)
            .ok_or(ClassifyError::Missing(what))
    };
    let db = normalize_name(text(lc::DBNAME, "database")?)?;
    // LockLevel: 1 DB, 2 TABLE, 3 PARTITION (a partition's table decides).
    let obj = match comp.field(lc::LEVEL).and_then(Value::as_int) {
        Some(1) => Object::database(&db),
        Some(2 | 3) => Object::table(&db, &normalize_name(text(lc::TABLENAME, "table")?)?),
        _ => return Err(ClassifyError::Missing("lock level")),
    };
    Ok((obj, kind))
}

/// The places a created table puts its data: `cl.location`, the explicit locations checked
/// (`cl.storage`), and the default places (`cl.default_places`) — where the metastore puts a
/// table with no location, or a location exactly there.
async fn created_table_places(
    cl: &mut Classified,
    t: &Value,
    db: &str,
    name: &str,
    facts: &FactsStore,
) -> Result<(), ClassifyError> {
    let locations = table_locations(t);
    cl.location = locations.first().cloned();
    let write = deletes_on_drop(t);
    // A view has no place: the metastore gives a `VIRTUAL_VIEW` (exactly so spelled)
    // no location and makes no directory.
    let view = t.field(fields::table::TABLE_TYPE).and_then(Value::as_str) == Some("VIRTUAL_VIEW");
    let no_location = data_locations(t).is_empty() && !view;
    // The database's location is needed only for a table at its default place: no
    // location, or one ending in the table's name.
    let named = |l: &String| {
        let last = l.trim_end_matches('/').rsplit('/').next();
        last.is_some_and(|last| last.eq_ignore_ascii_case(name))
    };
    // The database's places: its location and (Hive 4) the place of its managed
    // tables; a table with no location goes under one of them.
    let db_places: Vec<String> = if no_location || locations.iter().any(named) {
        let f = facts
            .object(&Object::database(db))
            .await
            .map_err(ClassifyError::Facts)?;
        f.map(|f| f.location.into_iter().chain(f.managed_location).collect())
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    // No location: the metastore puts the table at its default place.
    if no_location {
        for place in db_places.iter().map(|d| default_place(d, name)) {
            cl.location.get_or_insert_with(|| place.clone());
            if !cl
                .default_places
                .iter()
                .any(|n| same_place(&n.location, &place))
            {
                cl.default_places.push(StorageNeed {
                    location: place,
                    write,
                });
            }
        }
    }
    for l in locations {
        // Exactly its default place (where Spark and pyiceberg put a table
        // explicitly): a default place. Anywhere else under the database is an explicit
        // location (a database can sit at the warehouse root).
        let at_default = db_places
            .iter()
            .any(|base| is_default_table_location(&l, base, name));
        let need = StorageNeed { location: l, write };
        if at_default {
            cl.default_places.push(need);
        } else {
            cl.storage.push(need);
        }
    }
    Ok(())
}

/// The object a granted `HiveObjectPrivilege` is on (partition and column grants: their
/// table's grant option decides).
fn granted_object(hop: &Value) -> Result<Object, ClassifyError> {
    use fields::hive_object_ref as r;
    let obj = hop
        .field(fields::hive_object_privilege::HIVE_OBJECT)
        .ok_or(ClassifyError::Missing("object"))?;
    let db = obj
        .field(r::DB_NAME)
        .and_then(Value::as_str)
        .unwrap_or_default();
    let name = obj
        .field(r::OBJECT_NAME)
        .and_then(Value::as_str)
        .unwrap_or_default();
    Ok(match obj.field(r::OBJECT_TYPE).and_then(Value::as_int) {
        Some(1) => Object::Global,
        Some(2) => Object::database(&normalize_name(db)?),
        // Table, partition and column grants: the table's grant option decides.
        Some(3..=5) => Object::table(&normalize_name(db)?, &normalize_name(name)?),
        _ => return Err(ClassifyError::Missing("object type")),
    })
}

/// The privileges of a `HiveObjectPrivilege` (its grant info's privilege, possibly a comma
/// list).
fn granted_privileges(hop: &Value) -> Result<Vec<Privilege>, ClassifyError> {
    let p = hop
        .path(&[
            fields::hive_object_privilege::GRANT_INFO,
            fields::privilege_grant_info::PRIVILEGE,
        ])
        .and_then(Value::as_str)
        .ok_or(ClassifyError::Missing("privilege"))?;
    p.split(',')
        .map(|part| {
            Privilege::parse(part)
                .ok_or_else(|| ClassifyError::Args(format!("unknown privilege {part:?}")))
        })
        .collect()
}

/// Whether a grant call revokes: by its method, or by its request's `GrantRevokeType`
/// (1 GRANT, 2 REVOKE; the metastore refuses any other value, and so does the proxy).
pub fn is_revoke(kind: GrantKind, args: &Value) -> Result<bool, ClassifyError> {
    match kind {
        GrantKind::Grant => Ok(false),
        GrantKind::Revoke => Ok(true),
        GrantKind::ByRequest(p) => match values_at(args, p).first().and_then(|v| v.as_int()) {
            Some(1) => Ok(false),
            Some(2) => Ok(true),
            _ => Err(ClassifyError::Missing("grant or revoke request type")),
        },
    }
}

/// Principal and object pairs one revoke may name: each is looked up at the metastore.
pub const MAX_REVOKE_LOOKUPS: usize = 100;

/// The privileges a revoke takes away (each `HiveObjectPrivilege` of the bag), each with the
/// principal and the object as the call names them.
fn revoke_items(bag: &Value) -> Result<Vec<Classified>, ClassifyError> {
    use fields::hive_object_privilege as hop_f;
    let mut items: Vec<RevokeItem> = Vec::new();
    let mut pairs = std::collections::HashSet::new();
    let privileges = bag.field(fields::privilege_bag::PRIVILEGES);
    for hop in privileges.map(Value::as_list).unwrap_or_default() {
        let target = revoke_target(hop)?;
        let principal = Principal {
            name: hop
                .field(hop_f::PRINCIPAL_NAME)
                .and_then(Value::as_str)
                .ok_or(ClassifyError::Missing("principal"))?
                .to_string(),
            kind: hop
                .field(hop_f::PRINCIPAL_TYPE)
                .and_then(Value::as_int)
                .and_then(PrincipalKind::from_wire)
                .ok_or(ClassifyError::Missing("principal type"))?,
        };
        let p = hop
            .path(&[hop_f::GRANT_INFO, fields::privilege_grant_info::PRIVILEGE])
            .and_then(Value::as_str)
            .ok_or(ClassifyError::Missing("privilege"))?;
        for part in p.split(',') {
            let privilege = Privilege::parse(part)
                .ok_or_else(|| ClassifyError::Args(format!("unknown privilege {part:?}")))?;
            pairs.insert((principal.clone(), target.clone()));
            items.push(RevokeItem {
                principal: principal.clone(),
                target: target.clone(),
                privilege,
            });
        }
    }
    if pairs.len() > MAX_REVOKE_LOOKUPS {
        return Err(ClassifyError::Args(format!(
            "more than {MAX_REVOKE_LOOKUPS} principal and object pairs in one revoke"
        )));
    }
    let first = items.first().ok_or(ClassifyError::Missing("privilege"))?;
    let obj = grant_object(&first.target)?;
    let (db, table) = names(&obj);
    Ok(vec![Classified {
        db,
        table,
        ..Classified::of(Operation::RevokePrivileges(items))
    }])
}

/// The object a revoked `HiveObjectPrivilege` names (its `HiveObjectRef`), as written.
fn revoke_target(hop: &Value) -> Result<GrantTarget, ClassifyError> {
    use fields::hive_object_ref as r;
    let obj = hop
        .field(fields::hive_object_privilege::HIVE_OBJECT)
        .ok_or(ClassifyError::Missing("object"))?;
    let text = |id| obj.field(id).and_then(Value::as_str).map(str::to_string);
    // Hive 3+ `catName`: the recorded grants are asked for in the default catalog,
    // so a revoke in another one is refused rather than judged on the wrong grants.
    let catalog = text(r::CAT_NAME);
    if let Some(cat) = catalog.filter(|c| !c.trim().eq_ignore_ascii_case(DEFAULT_CATALOG)) {
        return Err(ClassifyError::Args(format!(
            "the revoke names catalog {cat:?}; hms-guard serves the {DEFAULT_CATALOG:?} catalog only"
        )));
    }
    Ok(GrantTarget {
        kind: obj
            .field(r::OBJECT_TYPE)
            .and_then(Value::as_int)
            .filter(|k| (1..=5).contains(k))
            .ok_or(ClassifyError::Missing("object type"))?,
        db: text(r::DB_NAME),
        name: text(r::OBJECT_NAME),
        part_values: obj.field(r::PART_VALUES).map(|l| {
            l.as_list()
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        }),
        column: text(r::COLUMN_NAME),
    })
}

/// The database or table a grant target lies in (for the audit line).
fn grant_object(t: &GrantTarget) -> Result<Object, ClassifyError> {
    let name = |v: &Option<String>| normalize_name(v.as_deref().unwrap_or_default());
    Ok(match t.kind {
        1 => Object::Global,
        2 => Object::database(&name(&t.db)?),
        _ => Object::table(&name(&t.db)?, &name(&t.name)?),
    })
}

/// The grants a created table carries (`Table.privileges`, a `PrincipalPrivilegeSet`: user,
/// group and role privileges, each a map from the grantee to its `PrivilegeGrantInfo`s),
/// which the metastore records as they are written; `None` when it carries none.
fn carried_grants(t: &Value) -> Result<Option<Classified>, ClassifyError> {
    use fields::principal_privilege_set as set;
    use fields::privilege_grant_info as info_f;
    let mut grants = Vec::new();
    for (id, kind) in [
        (set::USER_PRIVILEGES, PrincipalKind::User),
        (set::GROUP_PRIVILEGES, PrincipalKind::Group),
        (set::ROLE_PRIVILEGES, PrincipalKind::Role),
    ] {
        let granted = t.path(&[fields::table::PRIVILEGES, id]).map(Value::as_map);
        for (to, infos) in granted.unwrap_or_default() {
            let name = to.as_str().ok_or(ClassifyError::Missing("grantee"))?;
            for info in infos.as_list() {
                let grant = crate::decision::authz::RecordedGrant {
                    privilege: info
                        .field(info_f::PRIVILEGE)
                        .and_then(Value::as_str)
                        .ok_or(ClassifyError::Missing("privilege"))?
                        .to_string(),
                    grantor: info
                        .field(info_f::GRANTOR)
                        .and_then(Value::as_str)
                        .map(str::to_string),
                    grantor_kind: info
                        .field(info_f::GRANTOR_TYPE)
                        .and_then(Value::as_int)
                        .and_then(PrincipalKind::from_wire),
                };
                let to = Principal {
                    kind,
                    name: name.to_string(),
                };
                grants.push((to, grant));
            }
        }
    }
    if grants.is_empty() {
        return Ok(None);
    }
    let text = |id| t.field(id).and_then(Value::as_str).unwrap_or_default();
    let (db, name) = (
        text(fields::table::DB_NAME),
        text(fields::table::TABLE_NAME),
    );
    let table = Object::table(&normalize_name(db)?, &normalize_name(name)?);
    Ok(Some(one(
        Operation::CarriedGrants {
            table: table.clone(),
            grants,
        },
        &table,
    )))
}

/// The database and table a name of an index table means, as the metastore resolves it
/// (`MetaStoreUtils.getQualifiedName`): `db.table` names another database, a name without a
/// dot lies in the index's database (Java's `split`, which drops trailing empty parts).
pub fn qualified_index_table(index_db: &str, name: &str) -> (String, String) {
    let mut parts: Vec<&str> = name.split('.').collect();
    while parts.len() > 1 && parts.last() == Some(&"") {
        parts.pop();
    }
    match parts.as_slice() {
        [_] => (index_db.to_string(), name.to_string()),
        [db, table, ..] => (db.to_string(), table.to_string()),
        [] => (index_db.to_string(), String::new()),
    }
}

/// `add_index`: ownership of the base table (the index's dbName, origTableName), then the
/// create of the index table the call carries (`create`, classified as `create_table`), which
/// must be the table the index names (indexTableName) — the metastore records the index over
/// that name — plus the index's own storage descriptor location where it is not one of the
/// index table's locations.
fn index_with_table(
    c: &Ctx<'_>,
    index: Path,
    table: &Value,
    mut create: Classified,
) -> Result<Vec<Classified>, ClassifyError> {
    let idx = c.value(index, "index")?;
    let text = |id| idx.field(id).and_then(Value::as_str);
    use fields::index as i;
    let raw_db = text(i::DB_NAME).ok_or(ClassifyError::Missing("index database"))?;
    let base = Object::table(
        &normalize_name(raw_db)?,
        &normalize_name(text(i::ORIG_TABLE_NAME).ok_or(ClassifyError::Missing("base table"))?)?,
    );
    let named = text(i::INDEX_TABLE_NAME).ok_or(ClassifyError::Missing("index table name"))?;
    let (qdb, qtable) = qualified_index_table(raw_db, named);
    let named = Object::table(&normalize_name(&qdb)?, &normalize_name(&qtable)?);
    if create.op
        != (Operation::CreateTable {
            table: named.clone(),
        })
    {
        let carried = create.table.as_deref().unwrap_or_default();
        return Err(ClassifyError::Args(format!(
            "the index names {named} as its index table, but the call creates {}.{carried}",
            create.db.as_deref().unwrap_or_default()
        )));
    }
    let location = idx.path(&[i::SD, fields::storage_descriptor::LOCATION]);
    if let Some(l) = location.and_then(Value::as_str).map(str::trim) {
        if !l.is_empty() && !table_locations(table).iter().any(|t| t == l) {
            create.location.get_or_insert_with(|| l.to_string());
            create.storage.push(StorageNeed {
                location: l.to_string(),
                write: true,
            });
        }
    }
    Ok(vec![
        one(Operation::OwnerOfAll(vec![base.clone()]), &base),
        create,
    ])
}

/// `drop_index_by_name`: ownership of the base table, and the drop of the index table the
/// metastore drops with the index (and whose files it deletes with `deleteData`), as the
/// metastore names it: the recorded index's table (`get_index_by_name`).
async fn drop_index(
    c: &Ctx<'_>,
    db: Path,
    table: Path,
    index: Path,
    facts: &FactsStore,
) -> Result<Vec<Classified>, ClassifyError> {
    let (db, table) = (c.name(db, "database")?, c.name(table, "table name")?);
    let base = Object::table(&db, &table);
    let index = c.string(index, "index name")?;
    let mut out = vec![one(Operation::OwnerOfAll(vec![base.clone()]), &base)];
    let recorded = facts
        .index(&db, &table, index.trim())
        .await
        .map_err(ClassifyError::Facts)?;
    // No such index: the metastore answers that itself.
    let Some(idx) = recorded else {
        return Ok(out);
    };
    let index_table = idx.field(fields::index::INDEX_TABLE_NAME);
    if let Some(name) = index_table.and_then(Value::as_str) {
        let idx_db = idx.field(fields::index::DB_NAME);
        let idx_db = idx_db.and_then(Value::as_str).unwrap_or(&db);
        let (qdb, qtable) = qualified_index_table(idx_db, name);
        let obj = Object::table(&normalize_name(&qdb)?, &normalize_name(&qtable)?);
        out.push(one(Operation::DropTable { table: obj.clone() }, &obj));
    }
    Ok(out)
}

/// The locations an `alter_table` points the table at that it did not have (`current`: the
/// table now, `None` if it does not exist), with the access each implies.
pub fn alter_storage_needs(current: Option<&Value>, new: &Value) -> Vec<StorageNeed> {
    let before = current.map(table_locations).unwrap_or_default();
    let write = deletes_on_drop(new);
    // A table that becomes one whose drop deletes data: every location it keeps is now one
    // a later drop deletes (the caller must be able to write there), not only new ones.
    let now_deletes = write && current.is_some_and(|c| !deletes_on_drop(c));
    table_locations(new)
        .into_iter()
        .filter(|l| now_deletes || !before.iter().any(|b| same_place(b, l)))
        .map(|location| StorageNeed { location, write })
        .collect()
}

pub(crate) fn is_stats_param(k: &str) -> bool {
    STATS_PARAMS.contains(&k) || STATS_PARAM_PREFIXES.iter().any(|p| k.starts_with(p))
}

/// Table parameters without statistics (and, with `format_params`, without the table
/// format's metadata pointers).
fn without_stats(params: Option<&Value>, format_params: bool) -> Value {
    Value::Map(
        params
            .map(Value::as_map)
            .unwrap_or_default()
            .iter()
            .filter(|(k, _)| {
                !k.as_str().is_some_and(|k| {
                    is_stats_param(k)
                        || (format_params
                            && COMMIT_PARAMS.iter().any(|c| c.eq_ignore_ascii_case(k)))
                })
            })
            .cloned()
            .collect(),
    )
}

/// Every way `new` changes `current` (a `Table` each): a rename, an owner change, a location
/// change, a table format's commit, anything else — or, when only statistics differ,
/// `[StatsOnly]`. Never empty.
pub fn alter_changes(db: &str, name: &str, current: &Value, new: &Value) -> Vec<AlterKind> {
    let mut changes = Vec::new();
    // A name the metastore could not normalise the same way counts as a rename (checked
    // as one, and refused by the create rule on an unknown database).
    let s = |v: &Value, id| {
        v.field(id)
            .and_then(Value::as_str)
            .map(|n| normalize_name(n).unwrap_or_else(|_| format!("\u{0}{n}")))
    };
    let new_db = s(new, fields::table::DB_NAME).unwrap_or_else(|| db.to_ascii_lowercase());
    let new_name = s(new, fields::table::TABLE_NAME).unwrap_or_else(|| name.to_ascii_lowercase());
    if new_db != db.to_ascii_lowercase() || new_name != name.to_ascii_lowercase() {
        changes.push(AlterKind::Rename { new_db });
    }
    // The owner and its principal type (Hive 3+; unset means USER), removed or replaced.
    let owner = |v: &Value| {
        v.field(fields::table::OWNER)
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let owner_type = |v: &Value| {
        v.field(fields::table::OWNER_TYPE)
            .and_then(Value::as_int)
            .unwrap_or(1)
    };
    if owner(new) != owner(current) || owner_type(new) != owner_type(current) {
        changes.push(AlterKind::Owner);
    }
    // A location changes — or what a later drop deletes there (external to managed).
    let sorted = |v: &Value| {
        let mut l: Vec<String> = table_locations(v).iter().map(|l| location_key(l)).collect();
        l.sort_unstable();
        l
    };
    if sorted(new) != sorted(current) || deletes_on_drop(new) != deletes_on_drop(current) {
        changes.push(AlterKind::Location);
    }
    // Everything else: names, owner and locations are judged above; statistics and a table
    // format's metadata pointers (checked as locations when they leave the table) are not
    // changes of their own.
    let strip = comparable;
    if strip(new, false) != strip(current, false) {
        let (a, b) = (strip(new, true), strip(current, true));
        if a == b {
            // Only the format's metadata pointers moved: under the table's own location a
            // commit of data; elsewhere the location change above says it all.
            if !changes.contains(&AlterKind::Location) {
                changes.push(AlterKind::Commit);
            }
        } else {
            if tracing::enabled!(tracing::Level::DEBUG) {
                let differ = differing_fields(&a, &b);
                tracing::debug!(table = %format!("{db}.{name}"), fields = ?differ, "alter_table changes more than statistics");
            }
            changes.push(AlterKind::Other);
        }
    }
    if changes.is_empty() {
        changes.push(AlterKind::StatsOnly);
    }
    changes
}

/// A `Table` as `alter_changes` compares it for changes other than names, owner and
/// locations: without those, bookkeeping fields, statistics (and, with `format_params`, the
/// table format's metadata pointers) and empty values.
fn comparable(v: &Value, format_params: bool) -> Value {
    use fields::table::{DB_NAME, OWNER, PARAMETERS, SD, TABLE_NAME};
    let mut t = v
        .without(&TABLE_BOOKKEEPING)
        .without(&[TABLE_NAME, DB_NAME, OWNER]);
    if let Value::Struct(kept) = &mut t {
        // (Unset and empty fields — temporary = false… — are equated below.)
        kept.retain(|(id, _)| *id != PARAMETERS);
        kept.push((
            PARAMETERS,
            without_stats(v.field(PARAMETERS), format_params),
        ));
        // Locations are compared above (sd.location and the serde `path`).
        if let Some(i) = kept.iter().position(|(id, _)| *id == SD) {
            kept[i].1 = without_locations(&kept[i].1);
        }
    }
    without_defaults(&t)
}

/// The ids of the fields in which two structs differ (for the debug log).
fn differing_fields(a: &Value, b: &Value) -> Vec<i16> {
    let ids = |x: &Value, y: &Value| match x {
        Value::Struct(f) => f
            .iter()
            .filter(|(id, v)| y.field(*id) != Some(v))
            .map(|(id, _)| *id)
            .collect(),
        _ => Vec::new(),
    };
    let mut differ: Vec<i16> = ids(a, b);
    differ.extend(ids(b, a));
    differ.sort_unstable();
    differ.dedup();
    differ
}

/// A value with every struct field that holds its type's empty value left out (false, 0, "",
/// empty lists and maps, structs left empty), at every depth: the metastore stores an unset
/// field as that value, and clients that rebuild a table (pyiceberg's commits) send them unset.
fn without_defaults(v: &Value) -> Value {
    match v {
        Value::Struct(fields) => Value::Struct(
            fields
                .iter()
                .map(|(id, f)| (*id, without_defaults(f)))
                .filter(|(_, f)| !is_empty_value(f))
                .collect(),
        ),
        Value::List(items) => Value::List(items.iter().map(without_defaults).collect()),
        Value::Map(entries) => Value::Map(
            entries
                .iter()
                .map(|(k, v)| (k.clone(), without_defaults(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn is_empty_value(v: &Value) -> bool {
    match v {
        Value::Bool(b) => !b,
        Value::Int(i) => *i == 0,
        Value::Bytes(b) => b.is_empty(),
        Value::Struct(f) => f.is_empty(),
        Value::List(l) => l.is_empty(),
        Value::Map(m) => m.is_empty(),
        Value::Double(d) => *d == 0.0,
    }
}

/// A storage descriptor without its location and the serde `path` (compared as locations).
fn without_locations(sd: &Value) -> Value {
    let mut sd = sd.without(&[fields::storage_descriptor::LOCATION]);
    if let Value::Struct(sd_fields) = &mut sd {
        for (id, serde) in sd_fields.iter_mut() {
            if *id != fields::storage_descriptor::SERDE_INFO {
                continue;
            }
            if let Value::Struct(sf) = serde {
                for (sid, params) in sf.iter_mut() {
                    if *sid == fields::serde_info::PARAMETERS {
                        if let Value::Map(entries) = params {
                            entries.retain(|(k, _)| {
                                !k.as_str().is_some_and(|k| k.eq_ignore_ascii_case("path"))
                            });
                        }
                    }
                }
            }
        }
    }
    sd
}
