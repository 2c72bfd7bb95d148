//! Names, compared as the metastore and the database behind it compare them.
//!
//! The metastore hands principal names (users, groups, roles) to its database as they come:
//! the database's own comparison decides which grants, role memberships and owners a name
//! finds. Derby, and SQL Server, Oracle and MySQL with the collations of Hive's schema scripts,
//! ignore trailing spaces; MySQL stores those columns in `latin1` (`latin1_bin`), so a
//! character outside Latin-1 cannot be stored as it was sent; PostgreSQL compares exactly.
//! Database and table names are normalised by the metastore itself before they reach the
//! database (Java's `trim()`, then lower case: Hive's `normalizeIdentifier`).
//!
//! hms-guard therefore (docs/SECURITY.md, "Names"):
//! - refuses identity names (set_ugi's user and groups, a certificate's or Kerberos principal's
//!   user, the pinned identity, configured names) that the configured database
//!   (`upstream.metastore_db`; `any`: every supported one) would compare differently from
//!   their exact spelling in a way that could widen access — see [`check`];
//! - compares every name it compares itself (admin users, the admin role, role names, owners,
//!   groups, the principals of the grants the metastore returns) exactly, never case-folded,
//!   so a database's looser comparison can only narrow what hms-guard allows;
//! - normalises database and table names exactly as the metastore does ([`object_name`]).

use std::fmt;

use serde::Deserialize;

/// The database behind the metastore (`upstream.metastore_db`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MetastoreDb {
    Derby,
    Mysql,
    Postgres,
    Oracle,
    Mssql,
    /// Not known: names any supported database would compare loosely are refused.
    #[default]
    Any,
}

impl MetastoreDb {
    pub fn as_str(&self) -> &'static str {
        match self {
            MetastoreDb::Derby => "derby",
            MetastoreDb::Mysql => "mysql",
            MetastoreDb::Postgres => "postgres",
            MetastoreDb::Oracle => "oracle",
            MetastoreDb::Mssql => "mssql",
            MetastoreDb::Any => "any",
        }
    }

    /// Whether `'bob '` equals `'bob'` in the name columns (PAD SPACE comparison). Derby pads
    /// the shorter VARCHAR with spaces; SQL Server ignores trailing spaces in `=`; MySQL's
    /// `latin1_bin` is a PAD SPACE collation. Oracle compares VARCHAR2 without padding, but
    /// whether a driver binds a value as CHAR is not something hms-guard can see, so it is
    /// treated as padding: refusing such a name only narrows.
    fn ignores_trailing_spaces(self) -> bool {
        !matches!(self, MetastoreDb::Postgres)
    }

    /// Whether the name columns hold Latin-1 only (Hive's MySQL schema: `CHARACTER SET
    /// latin1`): another character is not stored or compared as sent.
    fn latin1_only(self) -> bool {
        matches!(self, MetastoreDb::Mysql | MetastoreDb::Any)
    }

    /// Whether any leading or trailing Unicode white space is refused (`any`: the spelling a
    /// reader of the audit line sees must be the one every database compares).
    fn refuses_any_edge_space(self) -> bool {
        matches!(self, MetastoreDb::Any)
    }
}

/// The kinds of names the metastore knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    User,
    Group,
    Role,
    Database,
    Table,
    Column,
    Function,
}

impl NameKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            NameKind::User => "user",
            NameKind::Group => "group",
            NameKind::Role => "role",
            NameKind::Database => "database",
            NameKind::Table => "table",
            NameKind::Column => "column",
            NameKind::Function => "function",
        }
    }

    /// Names the metastore passes to its database as they come (principals), rather than
    /// normalising them first (objects: trimmed and lower-cased).
    pub fn is_principal(&self) -> bool {
        matches!(self, NameKind::User | NameKind::Group | NameKind::Role)
    }
}

/// Why a name is refused (a bounded set: usable as a label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRule {
    Empty,
    /// A trailing U+0020 the database ignores when it compares.
    TrailingSpace,
    /// Leading or trailing white space of any kind (`any`).
    EdgeWhiteSpace,
    /// A control character (C0, DEL, C1) anywhere.
    Control,
    /// A character outside Latin-1 (MySQL's `latin1` columns).
    NotLatin1,
    /// Not ASCII: Java's and hms-guard's lower-casing could differ (database, table names).
    NotAscii,
}

impl NameRule {
    pub fn as_str(&self) -> &'static str {
        match self {
            NameRule::Empty => "empty",
            NameRule::TrailingSpace => "trailing_space",
            NameRule::EdgeWhiteSpace => "edge_white_space",
            NameRule::Control => "control_character",
            NameRule::NotLatin1 => "not_latin1",
            NameRule::NotAscii => "not_ascii",
        }
    }
}

/// A refused name: which kind, the name as sent, the rule and the database it follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameRefusal {
    pub kind: NameKind,
    pub name: String,
    pub rule: NameRule,
    pub db: MetastoreDb,
}

impl NameRefusal {
    /// What is wrong with the name, in words (the message around it names the kind).
    pub fn why(&self) -> String {
        let kind = self.kind.as_str();
        match self.rule {
            NameRule::Empty => "is empty".to_string(),
            NameRule::TrailingSpace => format!(
                "ends in a space, which the metastore's database ({}) ignores when it compares names, so it would stand for another {kind}",
                self.db.as_str()
            ),
            NameRule::EdgeWhiteSpace => "begins or ends in white space, which some metastore databases ignore when they compare names (upstream.metastore_db names one database to follow its rules)".to_string(),
            NameRule::Control => "contains a control character".to_string(),
            NameRule::NotLatin1 => format!(
                "contains a character outside Latin-1, which the metastore's database ({}) does not store as sent",
                self.db.as_str()
            ),
            NameRule::NotAscii => "is not ASCII; hms-guard decides only on ASCII names".to_string(),
        }
    }
}

impl fmt::Display for NameRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the {} name {:?} {} (names rule: {})",
            self.kind.as_str(),
            self.name,
            self.why(),
            self.rule.as_str()
        )
    }
}

/// Checks a principal name (user, group, role) against the rules of `db`: refused when the
/// database would compare it differently from its exact spelling in a way that could widen
/// access. Mixed case is kept: hms-guard compares exactly, so a case-insensitive database
/// can only narrow what it allows.
pub fn check(db: MetastoreDb, kind: NameKind, name: &str) -> Result<(), NameRefusal> {
    let refuse = |rule| {
        Err(NameRefusal {
            kind,
            name: name.to_string(),
            rule,
            db,
        })
    };
    if name.is_empty() {
        return refuse(NameRule::Empty);
    }
    if name.chars().any(char::is_control) {
        return refuse(NameRule::Control);
    }
    let edge = |c: Option<char>| c.is_some_and(char::is_whitespace);
    if db.refuses_any_edge_space() && (edge(name.chars().next()) || edge(name.chars().last())) {
        return refuse(NameRule::EdgeWhiteSpace);
    }
    if db.ignores_trailing_spaces() && name.ends_with(' ') {
        return refuse(NameRule::TrailingSpace);
    }
    if db.latin1_only() && name.chars().any(|c| u32::from(c) > 0xFF) {
        return refuse(NameRule::NotLatin1);
    }
    Ok(())
}

/// A database or table name as the metastore normalises it before its database sees it
/// (Hive's `normalizeIdentifier`: Java's `trim()` — every character up to U+0020 off both
/// ends — then lower case). Names whose case mapping could differ between Java and Rust (not
/// ASCII) are refused, and so are control characters left inside.
pub fn object_name(kind: NameKind, raw: &str) -> Result<String, NameRefusal> {
    let refuse = |rule| NameRefusal {
        kind,
        name: raw.to_string(),
        rule,
        db: MetastoreDb::Any,
    };
    let trimmed = raw.trim_matches(|c: char| c <= ' ');
    if !trimmed.is_ascii() {
        return Err(refuse(NameRule::NotAscii));
    }
    if trimmed.chars().any(|c| c.is_ascii_control()) {
        return Err(refuse(NameRule::Control));
    }
    Ok(trimmed.to_ascii_lowercase())
}

/// Whether two principal names are the same principal for hms-guard: exactly the same
/// characters. (A database that compares more loosely finds more rows for a name; hms-guard
/// keeps only the rows that name the principal exactly.)
pub fn same_principal(a: &str, b: &str) -> bool {
    a == b
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [MetastoreDb; 6] = [
        MetastoreDb::Derby,
        MetastoreDb::Mysql,
        MetastoreDb::Postgres,
        MetastoreDb::Oracle,
        MetastoreDb::Mssql,
        MetastoreDb::Any,
    ];

    fn rule(db: MetastoreDb, name: &str) -> Option<NameRule> {
        check(db, NameKind::User, name).err().map(|e| e.rule)
    }

    #[test]
    fn ordinary_and_mixed_case_names_pass_everywhere() {
        for db in ALL {
            for n in ["bob", "Bob.Smith", "svc-etl_01", "a b", "ALICE@EXAMPLE.COM"] {
                assert_eq!(rule(db, n), None, "{n:?} on {db:?}");
            }
        }
    }

    #[test]
    fn trailing_space_refused_where_the_database_pads() {
        for db in [
            MetastoreDb::Derby,
            MetastoreDb::Mysql,
            MetastoreDb::Oracle,
            MetastoreDb::Mssql,
        ] {
            assert_eq!(rule(db, "bob "), Some(NameRule::TrailingSpace), "{db:?}");
            assert_eq!(rule(db, "admin  "), Some(NameRule::TrailingSpace), "{db:?}");
        }
        assert_eq!(
            rule(MetastoreDb::Any, "bob "),
            Some(NameRule::EdgeWhiteSpace)
        );
        // PostgreSQL compares exactly: `bob ` is another user there.
        assert_eq!(rule(MetastoreDb::Postgres, "bob "), None);
    }

    #[test]
    fn any_refuses_every_edge_white_space() {
        for n in [
            " bob",
            "bob\u{a0}",
            "\u{a0}bob",
            "bob\u{2003}",
            "\u{3000}bob",
            "bob\u{85}",
        ] {
            assert!(
                rule(MetastoreDb::Any, n).is_some(),
                "{n:?} must be refused by any"
            );
        }
        // A database named explicitly compares a leading space or a no-break space exactly.
        assert_eq!(rule(MetastoreDb::Derby, " bob"), None);
        assert_eq!(rule(MetastoreDb::Postgres, "bob\u{a0}"), None);
    }

    #[test]
    fn control_characters_refused_everywhere() {
        for db in ALL {
            for n in [
                "bob\t",
                "\tbob",
                "b\nob",
                "bob\u{0}",
                "bob\u{7f}",
                "bob\u{9b}",
            ] {
                assert_eq!(rule(db, n), Some(NameRule::Control), "{n:?} on {db:?}");
            }
        }
    }

    #[test]
    fn mysql_and_any_refuse_names_outside_latin1() {
        assert_eq!(
            rule(MetastoreDb::Mysql, "bob\u{2603}"),
            Some(NameRule::NotLatin1)
        );
        assert_eq!(
            rule(MetastoreDb::Any, "\u{5f20}\u{4f1f}"),
            Some(NameRule::NotLatin1)
        );
        assert_eq!(rule(MetastoreDb::Mysql, "b\u{e9}b"), None);
        for db in [
            MetastoreDb::Postgres,
            MetastoreDb::Derby,
            MetastoreDb::Mssql,
        ] {
            assert_eq!(rule(db, "\u{5f20}\u{4f1f}"), None, "{db:?}");
        }
    }

    #[test]
    fn empty_refused() {
        for db in ALL {
            assert_eq!(rule(db, ""), Some(NameRule::Empty));
        }
    }

    #[test]
    fn refusal_names_kind_name_rule_and_database() {
        let e = check(MetastoreDb::Derby, NameKind::Role, "admin ").unwrap_err();
        let m = e.to_string();
        assert!(m.contains("role name \"admin \""), "{m}");
        assert!(m.contains("derby"), "{m}");
        assert!(m.contains("names rule: trailing_space"), "{m}");
    }

    #[test]
    fn object_names_follow_normalize_identifier() {
        assert_eq!(object_name(NameKind::Table, " Sales\t").unwrap(), "sales");
        assert_eq!(
            object_name(NameKind::Database, "\u{1}db\u{1f}").unwrap(),
            "db"
        );
        assert_eq!(
            object_name(NameKind::Table, "t\u{a0}").unwrap_err().rule,
            NameRule::NotAscii
        );
        assert_eq!(
            object_name(NameKind::Table, "a\u{1}b").unwrap_err().rule,
            NameRule::Control
        );
        assert_eq!(
            object_name(NameKind::Table, "ab\u{7f}").unwrap_err().rule,
            NameRule::Control
        );
    }

    #[test]
    fn principals_compare_exactly() {
        assert!(same_principal("bob", "bob"));
        assert!(!same_principal("bob ", "bob"));
        assert!(!same_principal("ADMIN", "admin"));
    }

    #[test]
    fn kinds() {
        assert!(NameKind::Role.is_principal());
        assert!(!NameKind::Table.is_principal());
        assert_eq!(MetastoreDb::default(), MetastoreDb::Any);
    }
}
