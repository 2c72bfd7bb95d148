//! What a forwarded call does to the shared metadata cache (`upstream::cache`): a read it
//! may answer (tagged by the database and table it reads), a write that drops the entries
//! of what it touches, or a write whose reach is unknown (everything dropped).
//!
//! Decided from the method table's rule and the arguments as the metastore reads them (the
//! tags fold names as the metastore's database compares them: `upstream::cache::Tag`). A
//! catalog-qualified name (`@cat#db`, Hive 3 and later) is not cached, and a write naming one
//! drops everything.

use bytes::Bytes;

use crate::upstream::cache::{CacheUse, Tag};
use crate::wire::codec::path::strings_at;
use crate::wire::codec::value::Value;
use crate::wire::router::{Class, Method, Path, Rule};

/// A name the cache follows (the tags fold it as the metastore compares names); `None`
/// for a catalog-qualified one.
fn name(raw: &str) -> Option<String> {
    (!raw.starts_with('@')).then(|| raw.to_string())
}

fn one(args: &Value, path: &[i16]) -> Option<String> {
    match strings_at(args, path).as_slice() {
        [v] => name(v),
        _ => None,
    }
}

fn table_tag(args: &Value, db: Path, table: Path) -> Option<Tag> {
    Some(Tag::table(&one(args, db)?, &one(args, table)?))
}

/// `Table` struct fields: `tableName` 1, `dbName` 2.
fn table_struct_tag(args: &Value, table: Path) -> Option<Tag> {
    let path = |id: i16| -> Vec<i16> { table.iter().copied().chain([id]).collect() };
    Some(Tag::table(&one(args, &path(2))?, &one(args, &path(1))?))
}

/// What the call does to the cache. `key` makes the read's key (only asked for reads).
pub fn cache_use(entry: Option<&Method>, args: &Value, key: impl FnOnce() -> Bytes) -> CacheUse {
    let Some(m) = entry else {
        // A method the table does not know (forwarded only with unknown_methods = "allow").
        return CacheUse::WriteAll;
    };
    let read = |tags: Option<Vec<Tag>>| match tags {
        Some(tags) => CacheUse::Read { key: key(), tags },
        None => CacheUse::None,
    };
    let write = |tags: Option<Vec<Tag>>| match tags {
        Some(tags) => CacheUse::Write(tags),
        None => CacheUse::WriteAll,
    };
    match m.rule {
        Rule::Harmless
        | Rule::SetUgi
        | Rule::Question
        | Rule::Tokens
        | Rule::ReadGrants { .. }
        | Rule::Txn { .. }
        | Rule::Lock { .. } => CacheUse::None,
        Rule::ReadTable { db, table } => read(table_tag(args, db, table).map(|t| vec![t])),
        Rule::ReadDatabase { name: n } => read(one(args, n).map(|d| vec![Tag::database(&d)])),
        // Listings of one database; those across databases (patterns) are not cached.
        Rule::Listing { db: Some(db), .. } => read(one(args, db).map(|d| vec![Tag::database(&d)])),
        Rule::Listing { db: None, .. } => CacheUse::None,
        Rule::CreateTable { table } => write(table_struct_tag(args, table).map(|t| vec![t])),
        Rule::AlterTable {
            db,
            table,
            new_table,
        } => write(
            // A rename changes the new name too.
            table_tag(args, db, table)
                .zip(table_struct_tag(args, new_table))
                .map(|(a, b)| vec![a, b]),
        ),
        Rule::DropTable { db, table }
        | Rule::TruncateTable { db, table }
        | Rule::AddPartitions { db, table, .. }
        | Rule::AlterPartitions { db, table, .. }
        | Rule::DropPartitions { db, table } => write(table_tag(args, db, table).map(|t| vec![t])),
        Rule::OwnerOfTables { tables } => write(
            tables
                .iter()
                .map(|(db, t)| table_tag(args, db, t))
                .collect::<Option<Vec<_>>>(),
        ),
        // The database, its tables, and the list of databases.
        Rule::CreateDatabase { database } => {
            let path: Vec<i16> = database.iter().copied().chain([1]).collect();
            write(one(args, &path).map(|d| vec![Tag::database(&d), Tag::database("")]))
        }
        Rule::AlterDatabase { name: n, .. } | Rule::DropDatabase { name: n } => {
            write(one(args, n).map(|d| vec![Tag::database(&d), Tag::database("")]))
        }
        // An index is a table of its own in the database: the whole database.
        Rule::DropIndex { db, .. } => write(one(args, db).map(|d| vec![Tag::database(&d)])),
        // Grants show in partitions read "with auth"; rare: everything.
        Rule::AddIndex { .. } | Rule::GrantRole { .. } | Rule::GrantPrivileges { .. } => {
            CacheUse::WriteAll
        }
        Rule::AdminOnly(_) => match m.class {
            Class::TableMutation | Class::Database => CacheUse::WriteAll,
            // Reads among the admin-only calls (notification log, locks, compactions…).
            Class::Other if reads(m.name) => CacheUse::None,
            Class::Other => CacheUse::WriteAll,
            _ => CacheUse::None,
        },
    }
}

/// A method that only reads, by Hive's naming.
fn reads(method: &str) -> bool {
    ["get_", "show_", "list_", "check_"]
        .iter()
        .any(|p| method.starts_with(p))
}
