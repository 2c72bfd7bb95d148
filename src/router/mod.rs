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

/// One entry of the method table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Method {
    pub name: &'static str,
    pub class: Class,
    /// Oneway: the server sends no reply.
    pub oneway: bool,
}

/// Finds a method's entry; `None` for a method the table does not know.
pub fn route(name: &str) -> Option<&'static Method> {
    METHODS
        .binary_search_by(|m| m.name.as_bytes().cmp(name.as_bytes()))
        .ok()
        .map(|i| &METHODS[i])
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

    #[test]
    fn table_is_sorted_and_unique() {
        for w in METHODS.windows(2) {
            assert!(
                w[0].name.as_bytes() < w[1].name.as_bytes(),
                "{} !< {}",
                w[0].name,
                w[1].name
            );
        }
    }

    #[test]
    fn every_known_method_has_an_entry() {
        let tsv = include_str!("../../idl/hms-methods.tsv");
        let mut missing = Vec::new();
        let names = tsv
            .lines()
            .filter(|l| !l.starts_with('#') && !l.starts_with("method\t") && !l.is_empty())
            .map(|l| l.split('\t').next().unwrap())
            .chain(FB303);
        let mut n = 0;
        for name in names {
            n += 1;
            if route(name).is_none() {
                missing.push(name);
            }
        }
        assert!(missing.is_empty(), "methods without an entry: {missing:?}");
        assert_eq!(n, METHODS.len(), "table has entries not in the method list");
    }

    #[test]
    fn oneway_methods() {
        let oneway: Vec<_> = METHODS
            .iter()
            .filter(|m| m.oneway)
            .map(|m| m.name)
            .collect();
        assert_eq!(oneway, ["reinitialize", "shutdown"]);
        assert_eq!(route("no_such_method"), None);
        assert_eq!(method_label(route("no_such_method")), "other");
        assert_eq!(method_label(route("get_table")), "get_table");
    }
}
