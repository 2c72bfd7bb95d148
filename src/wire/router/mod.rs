//! Router: maps a call's method name to its entry in the method table.
//!
//! The table (`methods.rs`) is data, in one place; the transport never looks at it, and the
//! policy stages plug their rules into its entries.

mod methods;

pub use methods::METHODS;

/// Coarse operation class of a method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Table, partition, column-statistics and constraint metadata reads.
    TableRead,
    /// Table, partition, statistics and constraint mutations.
    TableMutation,
    /// Database and catalog calls.
    Database,
    /// Roles, grants and privilege reads.
    Authz,
    /// Delegation tokens and master keys.
    Tokens,
    /// Session-level calls (`set_ugi`, config values, version).
    Session,
    /// Transactions, locks, compaction, notifications, functions, WM, schema registry…
    Other,
    /// fb303 `FacebookService` calls.
    Fb303,
}

/// Where a value sits in a call's args struct: field ids from the args struct inward.
/// `EACH` steps into every element of a list.
pub type Path = &'static [i16];

/// Path step meaning "every element of this list".
pub const EACH: i16 = crate::wire::codec::splice::EACH_ELEMENT;

/// Whether a grant call grants or revokes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantKind {
    Grant,
    Revoke,
    /// The request says which: its `GrantRevokeType` (1 GRANT, 2 REVOKE) sits at this path.
    ByRequest(Path),
}

/// Where the list sits in a listing reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListShape {
    /// Result field 0 is `list<string>` of table names (database from the args).
    Names,
    /// Result field 0 is `list<TableMeta>` (1: dbName, 2: tableName).
    Metas,
    /// Result field 0 is `list<Table>` (2: dbName, 1: tableName, 3: owner).
    Tables,
    /// Result field 0 is a struct whose field 1 is `list<Table>` (`GetTablesResult`).
    TablesInResult,
    /// Result field 0 is `list<string>` of database names.
    DbNames,
    /// Result field 0 is a struct whose field 1 is `list<Database>` (1: name, 6: ownerName).
    Databases,
}

impl ListShape {
    /// The wire type of the list's elements.
    pub fn element(self) -> crate::wire::codec::Ty {
        match self {
            ListShape::Names | ListShape::DbNames => crate::wire::codec::Ty::String,
            _ => crate::wire::codec::Ty::Struct,
        }
    }

    /// Where the list sits inside result field 0.
    pub fn list_path(self) -> &'static [i16] {
        match self {
            ListShape::TablesInResult | ListShape::Databases => &[1],
            _ => &[],
        }
    }
}

/// How a method is authorized (docs/AUTHORIZATION.md, the privilege table). Paths locate the names the rule needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Session and harmless calls: allowed, audited only with `audit.all_calls`.
    Harmless,
    /// `set_ugi`: answered by the proxy, which owns identity.
    SetUgi,
    /// `hms_guard_authorize`: an engine's question, answered by the proxy and never forwarded.
    Question,
    /// SELECT on one table.
    ReadTable {
        db: Path,
        table: Path,
    },
    /// A listing of tables whose reply is filtered (`db`: where the args name the database).
    Listing {
        db: Option<Path>,
        shape: ListShape,
    },
    /// Reading one database's metadata: visible to admins, to holders of any privilege in it
    /// and to its owner; `default` to everyone.
    ReadDatabase {
        name: Path,
    },
    /// Create a table: the `Table` struct (2: dbName, 1: tableName, 7.2: location).
    CreateTable {
        table: Path,
    },
    /// Alter a table: diffed against the current table.
    AlterTable {
        db: Path,
        table: Path,
        new_table: Path,
    },
    DropTable {
        db: Path,
        table: Path,
    },
    TruncateTable {
        db: Path,
        table: Path,
    },
    /// Add or append partitions: INSERT (paths may use `EACH`). `locations`: where the
    /// partitions' own storage locations sit (checked when outside the table's location).
    /// `shared_sd`: where `PartitionSpecWithSharedSD` structs sit (empty: none); each of their
    /// partitions lies at the shared `sd.location` followed by its `relativePath`, joined as
    /// plain strings, as the metastore joins them.
    AddPartitions {
        db: Path,
        table: Path,
        locations: &'static [Path],
        shared_sd: Path,
    },
    /// Alter partitions or their column statistics: INSERT when only statistics change.
    AlterPartitions {
        db: Path,
        table: Path,
        stats_only: bool,
        locations: &'static [Path],
    },
    DropPartitions {
        db: Path,
        table: Path,
    },
    /// Owner of every table named (exchange partitions, constraints).
    OwnerOfTables {
        tables: &'static [(Path, Path)],
    },
    /// `Database` struct (1: name, 3: locationUri).
    CreateDatabase {
        database: Path,
    },
    AlterDatabase {
        name: Path,
        new_database: Path,
    },
    DropDatabase {
        name: Path,
    },
    /// grant_role / revoke_role style: the role name, and where the call names its grantor
    /// and the grantor's principal type (set to the caller before forwarding).
    GrantRole {
        role: Path,
        grantor: Option<(Path, Path)>,
    },
    /// grant_privileges / revoke_privileges style: a `PrivilegeBag`, and whether the call
    /// grants or revokes.
    GrantPrivileges {
        bag: Path,
        kind: GrantKind,
    },
    /// Hive 2 `add_index`: the `Index` (3 dbName, 4 origTableName, 7 indexTableName, 8 sd)
    /// and the index table the metastore creates with it (a `Table`).
    AddIndex {
        index: Path,
        table: Path,
    },
    /// Hive 2 `drop_index_by_name`: the base table and the index's name; the index table the
    /// metastore drops with it is read from the metastore.
    DropIndex {
        db: Path,
        table: Path,
        index: Path,
    },
    /// Reading grants of a principal (name, type paths; no type path: a user) and of the
    /// groups the call names (`groups`); one's own are allowed.
    ReadGrants {
        name: Path,
        kind: Option<Path>,
        groups: Option<Path>,
    },
    /// Transactions and their housekeeping (open, commit, abort, heartbeat, unlock, show):
    /// an identity is required; where the call names the user it acts for (`user`), that user
    /// must be the caller; every transaction (`txns`, and each id of the inclusive `range`)
    /// and lock (`locks`) the call names must be the caller's.
    Txn {
        user: Option<Path>,
        txns: &'static [Path],
        locks: &'static [Path],
        range: Option<(Path, Path)>,
    },
    /// `lock`: each component needs a privilege that fits its lock type; the request's user
    /// must be the caller, and so must the holder of the transaction it names (`txn`).
    Lock {
        components: Path,
        user: Path,
        txn: Path,
    },
    /// Admin only; the text says what the call does.
    AdminOnly(&'static str),
    /// Delegation tokens and master keys.
    Tokens,
}

/// One entry of the method table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Method {
    pub name: &'static str,
    /// The metastore versions this entry is for (bits of `schema::types`; `ALL_VERSIONS` for
    /// most; 0: the fallback for a proxy configured for several versions whose layouts differ).
    pub versions: u8,
    pub class: Class,
    /// Oneway: the server sends no reply.
    pub oneway: bool,
    pub rule: Rule,
    /// Result field id of the method's `MetaException` (`None`: the method declares none,
    /// denials are a `TApplicationException`).
    pub meta_exception: Option<i16>,
    /// Calls that change grants or roles: caches are invalidated after them.
    pub changes_grants: bool,
}

/// hms-guard's own method (`wire::schema::question`): no metastore has it.
pub static QUESTION: Method = Method {
    name: crate::wire::schema::question::METHOD,
    versions: crate::wire::schema::types::ALL_VERSIONS,
    class: Class::Authz,
    oneway: false,
    rule: Rule::Question,
    meta_exception: Some(1),
    changes_grants: false,
};

/// Finds a method's entry for a metastore of `versions` (`upstream.metastore_version`'s bits);
/// `None` for a method the table does not know.
pub fn route(name: &str, versions: u8) -> Option<&'static Method> {
    if name == QUESTION.name {
        return Some(&QUESTION);
    }
    let want = versions & !crate::wire::schema::types::FB303;
    let start = METHODS.partition_point(|m| m.name.as_bytes() < name.as_bytes());
    let entries = METHODS[start..].iter().take_while(|m| m.name == name);
    let mut fallback = None;
    for m in entries {
        if m.versions & want == want && m.versions != 0 {
            return Some(m);
        }
        fallback = Some(m);
    }
    fallback
}

/// The bounded metric label for a method name: the table's name, or `other`.
pub fn method_label(method: Option<&'static Method>) -> &'static str {
    method.map_or("other", |m| m.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FB303: [&str; 13] = [
        "getName",
        "getVersion",
        "getStatus",
        "getStatusDetails",
        "getCounters",
        "getCounter",
        "setOption",
        "getOption",
        "getOptions",
        "getCpuProfile",
        "aliveSince",
        "reinitialize",
        "shutdown",
    ];

    use crate::wire::schema::types::{ALL_VERSIONS, V2_3, V3_1, V4_0, V4_X};
    const FB: u8 = crate::wire::schema::types::FB303;

    #[test]
    fn table_is_sorted_and_one_entry_per_version() {
        for w in METHODS.windows(2) {
            assert!(
                w[0].name.as_bytes() <= w[1].name.as_bytes(),
                "{} !< {}",
                w[0].name,
                w[1].name
            );
        }
        // Per method: entries for disjoint versions, then the fallback (0) if there are two.
        let mut i = 0;
        while i < METHODS.len() {
            let name = METHODS[i].name;
            let same: Vec<_> = METHODS[i..].iter().take_while(|m| m.name == name).collect();
            if same.len() == 1 {
                assert_eq!(same[0].versions, ALL_VERSIONS, "{name}");
            } else {
                let (last, layouts) = same.split_last().unwrap();
                assert_eq!(last.versions, 0, "{name}: fallback last");
                assert!(matches!(last.rule, Rule::AdminOnly(_)), "{name}");
                let mut union = 0;
                for m in layouts {
                    assert_eq!(m.versions & union, 0, "{name}: overlapping versions");
                    union |= m.versions;
                }
            }
            i += same.len();
        }
    }

    #[test]
    fn entries_are_chosen_by_the_configured_version() {
        let db_path = |v: u8| match route("add_dynamic_partitions", v).unwrap().rule {
            Rule::AddPartitions { db, .. } => Some(db),
            _ => None,
        };
        // Hive 2.3 writes the database at id 2, Hive 3 and 4 at id 3 (after the write id).
        assert_eq!(db_path(V2_3 | FB), Some(&[1, 2][..]));
        for v in [V3_1, V4_0, V4_X] {
            assert_eq!(db_path(v | FB), Some(&[1, 3][..]));
        }
        // Several versions at once: no one reading fits all: admin only.
        assert_eq!(db_path(ALL_VERSIONS), None);
        assert_eq!(db_path(V3_1 | V4_X | FB), Some(&[1, 3][..]));
        assert_eq!(db_path(V2_3 | V4_X | FB), None);
        for v in [ALL_VERSIONS, V2_3 | FB] {
            assert_eq!(route("get_table", v).unwrap().name, "get_table");
        }
    }

    #[test]
    fn every_known_method_has_an_entry() {
        let tsv = include_str!("../../../idl/hms-methods.tsv");
        let mut missing = Vec::new();
        let names = tsv
            .lines()
            .filter(|l| !l.starts_with('#') && !l.starts_with("method\t") && !l.is_empty())
            .map(|l| l.split('\t').next().unwrap())
            .chain(FB303);
        let mut n = 0;
        for name in names {
            n += 1;
            if route(name, ALL_VERSIONS).is_none() {
                missing.push(name);
            }
        }
        assert!(missing.is_empty(), "methods without an entry: {missing:?}");
        let mut distinct: Vec<_> = METHODS.iter().map(|m| m.name).collect();
        distinct.dedup();
        assert_eq!(
            n,
            distinct.len(),
            "table has entries not in the method list"
        );
    }

    #[test]
    fn oneway_methods() {
        let oneway: Vec<_> = METHODS
            .iter()
            .filter(|m| m.oneway)
            .map(|m| m.name)
            .collect();
        assert_eq!(oneway, ["reinitialize", "shutdown"]);
        assert_eq!(route("no_such_method", ALL_VERSIONS), None);
        assert_eq!(method_label(route("no_such_method", ALL_VERSIONS)), "other");
        assert_eq!(method_label(route("get_table", ALL_VERSIONS)), "get_table");
    }
}
