//! Authorization: `authorize(identity, operation, facts) -> Verdict`, a pure function
//! (no I/O) implementing the Hive SQL-standard table of docs/AUTHORIZATION.md, the privilege
//! table (its rules, one function per family of operations, in `judge`), then the storage
//! checks. The facts (grants, owners) are gathered beforehand by `facts`; the operation is
//! classified by `classify`.

use std::collections::{BTreeSet, HashMap};
use std::fmt;

use crate::auth::names::same_principal;
use crate::listener::identity::Identity;

mod judge;

/// The role every user holds (the metastore grants it implicitly).
pub const PUBLIC_ROLE: &str = "public";

/// Hive privileges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Privilege {
    Select,
    Insert,
    Update,
    Delete,
    Create,
    Alter,
    Drop,
    Index,
    Lock,
    All,
}

impl Privilege {
    pub fn parse(s: &str) -> Option<Privilege> {
        Some(match s.trim().to_ascii_uppercase().as_str() {
            "SELECT" => Privilege::Select,
            "INSERT" => Privilege::Insert,
            "UPDATE" => Privilege::Update,
            "DELETE" => Privilege::Delete,
            "CREATE" => Privilege::Create,
            "ALTER" => Privilege::Alter,
            "DROP" => Privilege::Drop,
            "INDEX" => Privilege::Index,
            "LOCK" => Privilege::Lock,
            "ALL" => Privilege::All,
            _ => return None,
        })
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Privilege::Select => "SELECT",
            Privilege::Insert => "INSERT",
            Privilege::Update => "UPDATE",
            Privilege::Delete => "DELETE",
            Privilege::Create => "CREATE",
            Privilege::Alter => "ALTER",
            Privilege::Drop => "DROP",
            Privilege::Index => "INDEX",
            Privilege::Lock => "LOCK",
            Privilege::All => "ALL",
        }
    }
}

/// Principal kinds, as in Hive's `PrincipalType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PrincipalKind {
    User,
    Role,
    Group,
}

impl PrincipalKind {
    /// Hive's enum value on the wire.
    pub fn wire(&self) -> i32 {
        match self {
            PrincipalKind::User => 1,
            PrincipalKind::Role => 2,
            PrincipalKind::Group => 3,
        }
    }

    pub fn from_wire(v: i64) -> Option<Self> {
        match v {
            1 => Some(PrincipalKind::User),
            2 => Some(PrincipalKind::Role),
            3 => Some(PrincipalKind::Group),
            _ => None,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            PrincipalKind::User => "user",
            PrincipalKind::Role => "role",
            PrincipalKind::Group => "group",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Principal {
    pub kind: PrincipalKind,
    pub name: String,
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind.as_str(), self.name)
    }
}

/// A metastore object grants are attached to. Names are lower case (Hive folds them).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Object {
    Global,
    Database(String),
    Table(String, String),
}

impl Object {
    pub fn table(db: &str, table: &str) -> Object {
        Object::Table(db.to_ascii_lowercase(), table.to_ascii_lowercase())
    }

    pub fn database(db: &str) -> Object {
        Object::Database(db.to_ascii_lowercase())
    }
}

impl fmt::Display for Object {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Object::Global => f.write_str("the metastore"),
            Object::Database(d) => write!(f, "database {d}"),
            Object::Table(d, t) => write!(f, "table {d}.{t}"),
        }
    }
}

/// One privilege held on an object, and through which principal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub privilege: Privilege,
    pub grant_option: bool,
    pub via: Principal,
}

/// Everything granted to one identity: its own, its groups' and every role reachable from them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    /// Every role reachable (lower case), `public` included.
    pub roles: BTreeSet<String>,
    /// Roles held WITH ADMIN OPTION.
    pub role_admin: BTreeSet<String>,
    pub objects: HashMap<Object, Vec<Held>>,
    /// Privileges on parts of tables (columns, partitions), by table, and through which
    /// principal.
    pub parts: HashMap<Object, Vec<(PartGrant, Principal)>>,
}

impl Grants {
    /// The grant giving `p` (or ALL) on `obj`, optionally requiring the grant option.
    pub fn find(&self, obj: &Object, p: Privilege, with_grant_option: bool) -> Option<&Held> {
        self.objects.get(obj)?.iter().find(|h| {
            (h.privilege == p || h.privilege == Privilege::All)
                && (!with_grant_option || h.grant_option)
        })
    }

    /// Whether any privilege is held on the database or on one of its tables.
    pub fn holds_in_database(&self, db: &str) -> bool {
        let on = |o: &Object| matches!(o, Object::Database(d) | Object::Table(d, _) if d == db);
        self.objects
            .iter()
            .any(|(o, held)| !held.is_empty() && on(o))
            || self.parts.iter().any(|(o, held)| !held.is_empty() && on(o))
    }

    /// Whether any privilege at all is held on a table.
    pub fn any_on(&self, obj: &Object) -> bool {
        self.objects.get(obj).is_some_and(|v| !v.is_empty())
            || self.parts.get(obj).is_some_and(|v| !v.is_empty())
    }

    /// The privileges `p` held on parts of a table (columns, partitions).
    pub fn parts_of(&self, table: &Object, p: Privilege) -> impl Iterator<Item = &PartGrant> {
        self.parts
            .get(table)
            .into_iter()
            .flatten()
            .map(|(g, _)| g)
            .filter(move |g| g.privilege == p || g.privilege == Privilege::All)
    }
}

/// The owner recorded on a table or database.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Owner {
    pub name: String,
    pub kind: PrincipalKind,
}

/// The object a grant is attached to, as a grant call names it (a `HiveObjectRef`:
/// `schema::fields::hive_object_ref`), kept as written: the metastore is asked
/// for the grants recorded on exactly that object, and matches them itself as its revoke does.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GrantTarget {
    /// `HiveObjectType`: 1 GLOBAL, 2 DATABASE, 3 TABLE, 4 PARTITION, 5 COLUMN.
    pub kind: i64,
    pub db: Option<String>,
    pub name: Option<String>,
    pub part_values: Option<Vec<String>>,
    pub column: Option<String>,
}

impl fmt::Display for GrantTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let db = self.db.as_deref().unwrap_or_default();
        let name = self.name.as_deref().unwrap_or_default();
        let column = self.column.as_deref().unwrap_or_default();
        let parts = self.part_values.as_deref().unwrap_or_default().join("/");
        match self.kind {
            1 => f.write_str("the metastore"),
            2 => write!(f, "database {db}"),
            3 => write!(f, "table {db}.{name}"),
            4 => write!(f, "partition [{parts}] of table {db}.{name}"),
            _ if parts.is_empty() => write!(f, "column {column} of table {db}.{name}"),
            _ => write!(
                f,
                "column {column} of partition [{parts}] of table {db}.{name}"
            ),
        }
    }
}

/// One privilege a revoke takes away: from whom, on what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokeItem {
    pub principal: Principal,
    pub target: GrantTarget,
    pub privilege: Privilege,
}

/// A grant as the metastore records it (`list_privileges`): the privilege as stored, and who
/// granted it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedGrant {
    pub privilege: String,
    pub grantor: Option<String>,
    pub grantor_kind: Option<PrincipalKind>,
}

impl RecordedGrant {
    /// Whether this record holds `p` (the metastore stores one privilege per record; a
    /// comma-separated list is read leniently, so a revoke is matched against more, never less).
    pub fn holds(&self, p: Privilege) -> bool {
        self.privilege
            .split(',')
            .any(|part| Privilege::parse(part) == Some(p))
    }
}

/// One way an `alter_table*` call changes the table (from diffing against the current table);
/// a call is judged on every change it makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlterKind {
    /// Only statistics parameters differ.
    StatsOnly,
    /// A table format's commit: only its metadata pointer moved, to a file under the table's
    /// own location (with statistics): a data write.
    Commit,
    /// A storage location changes.
    Location,
    /// The table is renamed (possibly into another database).
    Rename { new_db: String },
    /// The owner changes.
    Owner,
    /// Anything else (schema, properties, serde…).
    Other,
}

/// What a call does, in policy terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    /// Session and harmless calls.
    Harmless,
    /// Table metadata read: SELECT on each table.
    ReadTables(Vec<Object>),
    /// A listing of tables in a database, filtered to what the user holds.
    ListTables {
        db: String,
    },
    /// A listing of databases, filtered to what the user may see.
    ListDatabases,
    /// One database's metadata: admins, holders of any privilege in it, its owner; `default`
    /// for everyone.
    ReadDatabase {
        db: Object,
    },
    CreateTable {
        table: Object,
    },
    /// Every change the call makes (never empty).
    AlterTable {
        table: Object,
        changes: Vec<AlterKind>,
    },
    DropTable {
        table: Object,
    },
    TruncateTable {
        table: Object,
    },
    /// Writing a table's data outside the metastore (an engine's question): every privilege
    /// listed (INSERT, UPDATE, DELETE), or ownership.
    WriteData {
        table: Object,
        privileges: Vec<Privilege>,
    },
    /// Reading or writing files by path, outside any table (an engine's question): no grant
    /// governs a path; the user's own storage role must reach it (docs/STORAGE.md).
    DataPath {
        write: bool,
    },
    AddPartitions {
        table: Object,
    },
    AlterPartitions {
        table: Object,
        stats_only: bool,
    },
    DropPartitions {
        table: Object,
    },
    /// Exchange partitions, constraints: owner of every table.
    OwnerOfAll(Vec<Object>),
    CreateDatabase {
        db: Object,
    },
    AlterDatabase {
        db: Object,
        owner_change: bool,
    },
    DropDatabase {
        db: Object,
    },
    /// Granting or revoking a role: admin, or WITH ADMIN OPTION on that role.
    GrantRole {
        role: String,
    },
    /// Granting privileges: admin, or the grant option for each.
    GrantPrivileges(Vec<(Object, Privilege)>),
    /// Revoking privileges (or their grant option): admin, or the grantor recorded at the
    /// metastore for every grant the revoke takes away.
    RevokePrivileges(Vec<RevokeItem>),
    /// Grants a created table carries (the metastore records them with the table, grantor as
    /// written): admin, or only the caller's grants to itself (Hive's automatic owner grants).
    CarriedGrants {
        table: Object,
        grants: Vec<(Principal, RecordedGrant)>,
    },
    /// Reading grants: one's own (user, own groups, roles held) or admin; `groups`: further
    /// groups whose grants the reply carries (`get_privilege_set`), each must be the caller's.
    ReadGrants {
        principal: Option<Principal>,
        groups: Vec<String>,
    },
    /// Transaction housekeeping; `claimed_user`: the user the call says it acts for;
    /// `held`: the transactions and locks the call acts on (each must be the caller's).
    Txn {
        claimed_user: Option<String>,
        held: Vec<TxnRef>,
    },
    /// A metastore lock on each object, for the user the request names, inside the
    /// transactions `held` names.
    Lock {
        claimed_user: String,
        items: Vec<(Object, LockKind)>,
        held: Vec<TxnRef>,
    },
    /// Admin only (role DDL, functions, notifications log, WM, schema registry…).
    AdminOnly(&'static str),
    /// Delegation tokens and master keys.
    Tokens,
    /// A method the method table does not know.
    Unknown(String),
}

impl Operation {
    /// Stable operation class name (audit, explain).
    pub fn class(&self) -> &'static str {
        match self {
            Operation::Harmless => "harmless",
            Operation::ReadTables(_) => "read_table",
            Operation::ListTables { .. } => "list_tables",
            Operation::ListDatabases => "list_databases",
            Operation::ReadDatabase { .. } => "read_database",
            Operation::CreateTable { .. } => "create_table",
            Operation::AlterTable { .. } => "alter_table",
            Operation::DropTable { .. } => "drop_table",
            Operation::TruncateTable { .. } => "truncate_table",
            Operation::WriteData { .. } => "write_data",
            Operation::DataPath { write: false } => "read_path",
            Operation::DataPath { write: true } => "write_path",
            Operation::AddPartitions { .. } => "add_partition",
            Operation::AlterPartitions { .. } => "alter_partition",
            Operation::DropPartitions { .. } => "drop_partition",
            Operation::OwnerOfAll(_) => "owner_of_tables",
            Operation::CreateDatabase { .. } => "create_database",
            Operation::AlterDatabase { .. } => "alter_database",
            Operation::DropDatabase { .. } => "drop_database",
            Operation::GrantRole { .. } => "grant_role",
            Operation::GrantPrivileges(_) => "grant_privileges",
            Operation::RevokePrivileges(_) => "revoke_privileges",
            Operation::CarriedGrants { .. } => "create_table_grants",
            Operation::ReadGrants { .. } => "read_grants",
            Operation::Txn { .. } => "transaction",
            Operation::Lock { .. } => "lock",
            Operation::AdminOnly(_) => "admin_only",
            Operation::Tokens => "tokens",
            Operation::Unknown(_) => "unknown_method",
        }
    }
}

/// What a metastore lock lets its holder do to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockKind {
    /// `SHARED_READ`: readers.
    Read,
    /// `SHARED_WRITE`, `EXCLUSIVE`, `EXCL_WRITE`: writers (and DDL).
    Write,
}

impl LockKind {
    /// From the wire `LockType`; `None` for a value the schema does not know.
    pub fn from_wire(v: i64) -> Option<LockKind> {
        match v {
            1 => Some(LockKind::Read),
            2..=4 => Some(LockKind::Write),
            _ => None,
        }
    }
}

/// Policy settings authorize() reads.
#[derive(Debug, Clone)]
pub struct Policy {
    pub admin_role: String,
    /// Users treated as admin whatever the grants say (bootstrap).
    pub admin_users: Vec<String>,
    pub allow_tokens: bool,
    pub allow_unknown_methods: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            admin_role: "admin".into(),
            admin_users: Vec::new(),
            allow_tokens: false,
            allow_unknown_methods: false,
        }
    }
}

impl Policy {
    /// Admin: listed in `admin_users` or holding the admin role, both compared exactly
    /// (`names.rs`: `ADMIN` is another role at the metastore, `admin ` another user).
    pub fn is_admin(&self, identity: &Identity, grants: &Grants) -> bool {
        self.admin_users
            .iter()
            .any(|u| same_principal(u, &identity.user))
            || grants.roles.contains(&self.admin_role)
    }
}

/// Facts gathered for one decision.
/// A transaction or lock a call acts on, by id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TxnRef {
    Txn(i64),
    Lock(i64),
}

impl std::fmt::Display for TxnRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TxnRef::Txn(id) => write!(f, "transaction {id}"),
            TxnRef::Lock(id) => write!(f, "lock {id}"),
        }
    }
}

/// Who holds a transaction or lock, as the metastore records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    /// Opened (transaction, open or aborted) or taken (lock) by this user.
    User(String),
    /// A transaction that existed and is finished: the metastore answers the call itself
    /// (no such transaction, already aborted…), with nothing to take over.
    Finished,
    /// No such transaction yet (above the metastore's high-water mark), or no such lock held.
    Absent,
}

#[derive(Debug, Clone, Default)]
pub struct Facts<'a> {
    pub grants: Option<&'a Grants>,
    /// Holders of the transactions and locks the operation acts on.
    pub holders: HashMap<TxnRef, Holder>,
    /// Owners of the objects the operation names (absent: unknown or no such object).
    pub owners: HashMap<Object, Owner>,
    /// The grants recorded at the metastore for each principal and object a revoke names
    /// (absent: not read).
    pub recorded: HashMap<(Principal, GrantTarget), Vec<RecordedGrant>>,
    /// Storage checks of the locations the operation points at (gathered only once the grants
    /// allow it: a call denied by grants makes no AWS call).
    pub storage: Vec<StorageFact>,
    /// Other tables' and partitions' claims on the locations the operation points at (the
    /// location index; gathered only once the grants allow it).
    pub overlaps: Vec<OverlapFact>,
    /// The location index found more claims than it reports (`index::MAX_FOUND`).
    pub overlaps_truncated: bool,
    /// The location index could not answer for a location the call names: why.
    pub index_unavailable: Option<String>,
}

/// Another object's claim on a location a call points at (docs/STORAGE.md "Locations are
/// exclusive"), and what the call would do there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlapFact {
    /// The location the call points at, as written.
    pub location: String,
    /// How the other object's location lies: `at` (the same place), `under` (inside the
    /// call's location), `above` (a parent of it).
    pub relation: &'static str,
    /// The table whose privileges decide (the partition's table, for a partition).
    pub table: Object,
    /// "table d.t" or "partition [v] of table d.t".
    pub what: String,
    /// The other object's location (canonical form).
    pub other_location: String,
    pub owner: Option<Owner>,
    /// The call's object may write or delete files there (a managed table, a table whose drop
    /// deletes its files, a location the storage check wants writable, a drop): ownership of
    /// the other table or DROP on it; else (a read-only external table) SELECT on it.
    pub writes: bool,
}

/// What the user's own storage role may do at one location (docs/STORAGE.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageFact {
    pub location: String,
    /// `read` or `write`.
    pub action: &'static str,
    pub allow: bool,
    /// No answer could be had (STS/S3 down, timeout…): denied as unavailable.
    pub unavailable: bool,
    /// The checker's message: user, role(s), bucket/prefix, action, what AWS said.
    pub reason: String,
}

/// Why a decision went the way it did (bounded set: a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Harmless,
    Admin,
    Owner,
    Grant,
    GrantOption,
    AdminOption,
    OwnGrants,
    Filtered,
    Anonymous,
    MissingPrivilege,
    AdminRequired,
    TokensDisabled,
    UnknownMethod,
    FactsUnavailable,
    StorageDenied,
    StorageUnavailable,
    NotHolder,
    /// A revoke of grants the caller made (the grantor recorded at the metastore).
    Grantor,
    /// A revoke of a grant someone else made.
    NotGrantor,
    /// A read of a table that does not exist, forwarded so the metastore answers it.
    Absent,
    /// Files by path: no grant governs them; the storage check decides.
    Path,
    /// Part of a table (columns, partitions) by column or partition grants or views: the
    /// reply is narrowed.
    Narrowed,
    /// The caller may read part of the table, but this call cannot be narrowed to it (or the
    /// parts do not combine into one narrowed table).
    NotNarrowable,
    /// The call's location is at, under or above another table's or partition's location,
    /// and the caller lacks that table's privileges (locations are exclusive).
    Overlap,
    /// The location index cannot answer (building, incomplete): a call naming a location is
    /// refused.
    IndexUnavailable,
}

impl Reason {
    pub fn as_str(&self) -> &'static str {
        match self {
            Reason::Harmless => "harmless",
            Reason::Admin => "admin",
            Reason::Owner => "owner",
            Reason::Grant => "grant",
            Reason::GrantOption => "grant_option",
            Reason::AdminOption => "admin_option",
            Reason::OwnGrants => "own_grants",
            Reason::Filtered => "filtered_listing",
            Reason::Anonymous => "anonymous",
            Reason::MissingPrivilege => "missing_privilege",
            Reason::AdminRequired => "admin_required",
            Reason::TokensDisabled => "tokens_disabled",
            Reason::UnknownMethod => "unknown_method",
            Reason::FactsUnavailable => "facts_unavailable",
            Reason::StorageDenied => "storage_denied",
            Reason::StorageUnavailable => "storage_unavailable",
            Reason::NotHolder => "not_holder",
            Reason::Grantor => "grantor",
            Reason::NotGrantor => "not_grantor",
            Reason::Absent => "absent",
            Reason::Path => "path",
            Reason::Narrowed => "narrowed",
            Reason::NotNarrowable => "not_narrowable",
            Reason::Overlap => "overlap",
            Reason::IndexUnavailable => "index_unavailable",
        }
    }
}

/// The outcome of `authorize`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub allow: bool,
    pub reason: Reason,
    /// What was required, e.g. "SELECT on table demo.customer".
    pub required: String,
    /// The grant or rule that decided, e.g. "role:sales SELECT on table demo.customer".
    pub matched: String,
}

impl Verdict {
    pub fn allow(reason: Reason, required: impl Into<String>, matched: impl Into<String>) -> Self {
        Verdict {
            allow: true,
            reason,
            required: required.into(),
            matched: matched.into(),
        }
    }

    fn deny(reason: Reason, required: impl Into<String>, why: impl Into<String>) -> Self {
        Verdict {
            allow: false,
            reason,
            required: required.into(),
            matched: why.into(),
        }
    }

    /// The message a denied client sees: user, privilege, object and reason.
    pub fn message(&self, identity: &Identity, method: &str) -> String {
        self.message_for(identity, &format!("call {method}"))
    }

    /// The denial's message for what the user tried (`doing`: "call get_table", "INSERT INTO
    /// table demo.t").
    pub fn message_for(&self, identity: &Identity, doing: &str) -> String {
        format!(
            "hms-guard: permission denied: user {} may not {doing}: requires {}; {}",
            identity, self.required, self.matched
        )
    }
}

/// Whether `owner` is the caller: the user, one of its groups, or a role it holds (never
/// `public`). Names compare exactly (`names.rs`).
pub fn owner_matches(identity: &Identity, grants: &Grants, owner: &Owner) -> bool {
    match owner.kind {
        PrincipalKind::User => same_principal(&owner.name, &identity.user),
        PrincipalKind::Group => identity.groups.contains(&owner.name),
        // Every user holds `public`: an object it owns (the metastore's `default` database) is
        // nobody's to alter or drop through that.
        PrincipalKind::Role => owner.name != PUBLIC_ROLE && grants.roles.contains(&owner.name),
    }
}

/// Decides one operation. Pure: everything it needs is in its arguments.
pub fn authorize(
    identity: &Identity,
    op: &Operation,
    facts: &Facts<'_>,
    policy: &Policy,
) -> Verdict {
    let d = judge::authorize_grants(identity, op, facts, policy);
    if !d.allow {
        return d;
    }
    // Dual IAM: the grants allow; every location the call points at must also be reachable
    // by the user's own storage role.
    match facts.storage.iter().find(|f| !f.allow) {
        // Locations are exclusive: another table's location needs that table's privileges.
        None => overlap_verdict(identity, facts, policy).unwrap_or(d),
        Some(f) => Verdict {
            allow: false,
            reason: if f.unavailable {
                Reason::StorageUnavailable
            } else {
                Reason::StorageDenied
            },
            required: format!(
                "{} access to {} by the user's storage role",
                f.action, f.location
            ),
            matched: f.reason.clone(),
        },
    }
}

/// The overlap rule (docs/STORAGE.md "Locations are exclusive"): every other object claiming
/// a location at, under or above one the call points at needs the caller's privileges on its
/// table — SELECT where the call only reads there, ownership or DROP where it may write or
/// delete files. Admins hold every privilege. `None`: nothing to refuse.
fn overlap_verdict(identity: &Identity, facts: &Facts<'_>, policy: &Policy) -> Option<Verdict> {
    let nothing =
        facts.overlaps.is_empty() && !facts.overlaps_truncated && facts.index_unavailable.is_none();
    if nothing {
        return None;
    }
    let grants = facts.grants;
    if grants.is_some_and(|g| policy.is_admin(identity, g)) {
        return None;
    }
    if let Some(why) = &facts.index_unavailable {
        return Some(Verdict::deny(
            Reason::IndexUnavailable,
            "the privileges of every table whose location overlaps the call's (the location index)",
            format!("{why}; calls that name a location are refused until it is ready"),
        ));
    }
    for o in &facts.overlaps {
        let owner = grants.is_some_and(|g| {
            o.owner
                .as_ref()
                .is_some_and(|w| owner_matches(identity, g, w))
        });
        let (held, required) = if o.writes {
            (
                grants.and_then(|g| g.find(&o.table, Privilege::Drop, false)),
                format!("ownership of {} or DROP on it", o.table),
            )
        } else {
            (
                grants.and_then(|g| g.find(&o.table, Privilege::Select, false)),
                format!("SELECT on {} (or its ownership)", o.table),
            )
        };
        if owner || held.is_some() {
            continue;
        }
        let lies = match o.relation {
            "at" => "the same place as",
            "under" => "inside",
            _ => "a parent of",
        };
        return Some(Verdict::deny(
            Reason::Overlap,
            required,
            format!(
                "{} is located at {}, {lies} {} where the call puts data: a location another table claims needs that table's privileges (docs/STORAGE.md \"Locations are exclusive\")",
                o.what, o.other_location, o.location
            ),
        ));
    }
    if facts.overlaps_truncated {
        return Some(Verdict::deny(
            Reason::Overlap,
            "the privileges of every table whose location overlaps the call's",
            format!(
                "more than {} tables' or partitions' locations overlap the call's: only an admin may",
                facts.overlaps.len()
            ),
        ));
    }
    None
}

/// What the metastore says about one principal: roles granted to it directly (with the admin
/// option flag) and privileges granted to it directly.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrincipalFacts {
    pub roles: Vec<(String, bool)>,
    pub privileges: Vec<(Object, Privilege, bool)>,
    /// Privileges on part of a table (columns, partitions).
    pub parts: Vec<PartGrant>,
}

/// A privilege on part of a table, as the metastore records it: on columns
/// (`HiveObjectType.COLUMN`, with or without partition values), or on a partition
/// (`HiveObjectType.PARTITION`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartGrant {
    /// The table (`Object::Table`).
    pub table: Object,
    /// The partition's values, in partition-key order (`None`: every partition).
    pub partition: Option<Vec<String>>,
    /// The column, lower case (`None`: every column).
    pub column: Option<String>,
    pub privilege: Privilege,
}

impl fmt::Display for PartGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} on ", self.privilege.as_str())?;
        if let Some(c) = &self.column {
            write!(f, "column {c} of ")?;
        }
        if let Some(p) = &self.partition {
            write!(f, "partition [{}] of ", p.join("/"))?;
        }
        write!(f, "{}", self.table)
    }
}

/// Privileges granted directly to one principal, as `FactsSource::privileges` reads them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Privileges {
    /// On the metastore, databases and whole tables (with the grant option flag).
    pub objects: Vec<(Object, Privilege, bool)>,
    /// On columns and partitions.
    pub parts: Vec<PartGrant>,
}

impl From<Vec<(Object, Privilege, bool)>> for Privileges {
    fn from(objects: Vec<(Object, Privilege, bool)>) -> Self {
        Privileges {
            objects,
            parts: Vec::new(),
        }
    }
}

/// The principals an identity starts from: the user and its groups (and `public`).
fn root_principals(identity: &Identity) -> Vec<Principal> {
    let mut v = vec![Principal {
        kind: PrincipalKind::User,
        name: identity.user.clone(),
    }];
    v.extend(identity.groups.iter().map(|g| Principal {
        kind: PrincipalKind::Group,
        name: g.clone(),
    }));
    v.push(Principal {
        kind: PrincipalKind::Role,
        name: PUBLIC_ROLE.into(),
    });
    v
}

/// Unions the facts of every principal reachable from `identity` (user, groups, roles granted
/// to them, roles granted to those roles…). `facts` must hold every reachable principal; a
/// missing one is returned as the error (the gatherer fetches it and calls again).
pub fn assemble(
    identity: &Identity,
    facts: &HashMap<Principal, PrincipalFacts>,
) -> Result<Grants, Principal> {
    let mut grants = Grants::default();
    let mut queue = root_principals(identity);
    let mut seen: BTreeSet<Principal> = queue.iter().cloned().collect();
    while let Some(p) = queue.pop() {
        let Some(f) = facts.get(&p) else {
            return Err(p);
        };
        // Role names as the metastore returns them, never case-folded: `ADMIN` and `admin`
        // are two roles there.
        if p.kind == PrincipalKind::Role {
            grants.roles.insert(p.name.clone());
        }
        for (obj, privilege, grant_option) in &f.privileges {
            grants.objects.entry(obj.clone()).or_default().push(Held {
                privilege: *privilege,
                grant_option: *grant_option,
                via: p.clone(),
            });
        }
        for g in &f.parts {
            grants
                .parts
                .entry(g.table.clone())
                .or_default()
                .push((g.clone(), p.clone()));
        }
        for (role, admin_option) in &f.roles {
            // The admin option only counts when granted to the identity's own principals or
            // to a role it holds: all of them are reachable here.
            if *admin_option {
                grants.role_admin.insert(role.clone());
            }
            let r = Principal {
                kind: PrincipalKind::Role,
                name: role.clone(),
            };
            if seen.insert(r.clone()) {
                queue.push(r);
            }
        }
    }
    Ok(grants)
}

/// The database everyone may see: every engine reads it at start.
pub const DEFAULT_DATABASE: &str = "default";

/// Whether a database is visible without its ownership: admins see all, everyone sees
/// `default`, others the databases they hold any privilege in (on the database or on one of
/// its tables).
pub fn database_visible(identity: &Identity, grants: &Grants, policy: &Policy, db: &str) -> bool {
    db == DEFAULT_DATABASE || policy.is_admin(identity, grants) || grants.holds_in_database(db)
}

/// Whether a listed table name stays in a filtered listing: any privilege on it.
pub fn visible(identity: &Identity, grants: &Grants, policy: &Policy, table: &Object) -> bool {
    policy.is_admin(identity, grants) || grants.any_on(table)
}

/// Whether a whole listed table (columns, location, parameters) stays in a filtered reply:
/// SELECT on it, as reading that table alone needs.
pub fn readable(identity: &Identity, grants: &Grants, policy: &Policy, table: &Object) -> bool {
    policy.is_admin(identity, grants) || grants.find(table, Privilege::Select, false).is_some()
}

#[cfg(test)]
mod tests;
