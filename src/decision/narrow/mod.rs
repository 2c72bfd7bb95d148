//! Fine-grained access: what a caller who may read only part of a table gets of it.
//!
//! A caller holding no SELECT on a table may still read part of it: SELECT on some of its
//! columns or partitions (the metastore's own `HiveObjectType.COLUMN` and `PARTITION`
//! privileges), or SELECT on a view of it that qualifies (`views.rs`: bare columns of one
//! table, filtered only on partition columns). Whatever led there, the caller gets one
//! narrowed table (`Narrowed`): a set of columns over a set of partitions. Several parts
//! combine only where their union is exactly such a table (`combine`); otherwise the read is
//! refused, naming the parts, never widened.
//!
//! A narrowed table is checked against the table's format (`TableShape::check`): formats whose
//! readers take the schema from their own files are refused; formats that read columns by
//! position lose only a trailing run of columns; partition columns are always shown. Replies
//! are narrowed by `reply.rs` (every copy of the schema, every partition), parameters by
//! `params.rs`. The gathering (grants, views, the table) is `gather.rs`. Pure apart from
//! `gather.rs`.

pub mod gather;
pub mod params;
pub mod reply;

use std::collections::BTreeSet;
use std::fmt;

use crate::decision::authz::{Object, PartGrant};
use crate::decision::views::{self, CmpOp, Literal, Pred, Refusal, Shape, ViewText};
use crate::wire::codec::path::strings_at;
use crate::wire::codec::splice::EACH_ELEMENT;
use crate::wire::codec::value::Value;
use crate::wire::schema::fields::{
    field_schema, order, serde_info, skewed_info, storage_descriptor as sd, table,
};

/// What hms-guard knows of a table's shape, read once from its metastore record (cached).
#[derive(Debug, Clone)]
pub struct TableShape {
    pub table: Object,
    /// Data columns, lower case, in order.
    pub columns: Vec<String>,
    /// Partition keys (name lower case, type), in order.
    pub keys: Vec<(String, String)>,
    pub format: Format,
    /// Columns named by bucketing, sorting or skew.
    pub layout_columns: Vec<String>,
    /// A view: what it shows of its base tables, or why it does not qualify.
    pub view: Option<Result<Shape, Refusal>>,
    /// The view's text, lower case (to say which refused views mention a table).
    pub view_text: String,
    /// The recorded owner (a view's owner is whose rights the view reads with).
    pub owner: Option<crate::decision::authz::Owner>,
}

/// How a table's files are read, as far as narrowing goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Format {
    /// Columns are read by name (Parquet, ORC, JSON, Avro with a literal or no schema).
    ByName,
    /// Columns are read by position (text, CSV, regex, RCFile…): the named serde.
    Positional(String),
    /// The reader takes the schema from the table format's own files (Iceberg, Delta, Hudi,
    /// Paimon): the named format.
    OwnFiles(String),
    /// Avro whose schema is read from a URL hms-guard cannot narrow.
    AvroUrl,
    /// A serde hms-guard does not know: the named serde.
    Unknown(String),
}

/// The rows of a narrowed table: every partition, or the partitions any rule allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rows {
    All,
    Where(Vec<RowRule>),
}

/// One rule allowing partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowRule {
    /// Exactly this partition (values in partition-key order): a partition grant.
    Values(Vec<String>),
    /// The partitions a view's filter keeps.
    Filter(Pred),
}

/// One part of a table a caller may read, and what gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// Data columns (lower case); `None`: all of them.
    pub columns: Option<BTreeSet<String>>,
    pub rows: Rows,
    /// What gave it ("SELECT on column id of table d.t", "view d.v").
    pub from: String,
}

/// The one narrowed table a caller gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Narrowed {
    pub table: Object,
    /// Data columns shown, in table order.
    pub shown: Vec<String>,
    /// Data columns hidden (lower case).
    pub hidden: BTreeSet<String>,
    /// Partition keys (name, type), always shown.
    pub keys: Vec<(String, String)>,
    pub rows: Rows,
    /// What gave it, for the record.
    pub from: Vec<String>,
    /// What was given (`given()`) and what gave it, written once.
    pub record: Given,
}

/// A narrowed table's record, written once when it is made: the columns and partitions given,
/// and the parts that gave them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Given {
    pub given: String,
    pub matched: String,
}

/// Why a caller who may read part of a table gets none of it: the message's reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotNarrowable(pub String);

impl fmt::Display for NotNarrowable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Serdes whose readers find columns by name.
const BY_NAME_SERDES: &[&str] = &[
    "org.apache.hadoop.hive.ql.io.parquet.serde.parquethiveserde",
    "org.apache.hadoop.hive.ql.io.orc.orcserde",
    "org.apache.hive.hcatalog.data.jsonserde",
    "org.apache.hadoop.hive.serde2.jsonserde",
    "org.openx.data.jsonserde.jsonserde",
];
/// Serdes whose readers find columns by position.
const POSITIONAL_SERDES: &[&str] = &[
    "org.apache.hadoop.hive.serde2.lazy.lazysimpleserde",
    "org.apache.hadoop.hive.serde2.regexserde",
    "org.apache.hadoop.hive.serde2.opencsvserde",
    "org.apache.hadoop.hive.serde2.multidelimitserde",
    "org.apache.hadoop.hive.contrib.serde2.multidelimitserde",
    "org.apache.hadoop.hive.serde2.columnar.columnarserde",
    "org.apache.hadoop.hive.serde2.columnar.lazybinarycolumnarserde",
    "org.apache.hadoop.hive.serde2.lazybinary.lazybinaryserde",
];
const AVRO_SERDE: &str = "org.apache.hadoop.hive.serde2.avro.avroserde";
/// Table formats whose readers take the schema from their own files.
const OWN_FILE_FORMATS: &[&str] = &["iceberg", "delta", "hudi", "paimon"];
/// Spark data source providers, by how they read columns.
const BY_NAME_PROVIDERS: &[&str] = &["parquet", "orc", "json", "avro"];
const POSITIONAL_PROVIDERS: &[&str] = &["csv", "text"];

/// The string field `id` of a struct, or "".
fn text(v: &Value, id: i16) -> &str {
    v.field(id).and_then(Value::as_str).unwrap_or_default()
}

/// The names of a list of `FieldSchema`s (lower case) with their types.
fn field_schemas(v: Option<&Value>) -> Vec<(String, String)> {
    v.map(Value::as_list)
        .unwrap_or_default()
        .iter()
        .map(|f| {
            (
                text(f, field_schema::NAME).to_ascii_lowercase(),
                text(f, field_schema::TYPE).to_string(),
            )
        })
        .collect()
}

impl TableShape {
    /// The shape of a table as the metastore returned it (`get_table`'s `Table`).
    pub fn of(t: &Value) -> TableShape {
        let obj = Object::table(text(t, table::DB_NAME), text(t, table::TABLE_NAME));
        let storage = t.field(table::SD);
        let serde = storage.and_then(|s| s.field(sd::SERDE_INFO));
        let lib = serde
            .map(|s| text(s, serde_info::SERIALIZATION_LIB))
            .unwrap_or_default();
        let input = storage
            .map(|s| text(s, sd::INPUT_FORMAT))
            .unwrap_or_default();
        let params = t.field(table::PARAMETERS);
        let serde_params = serde.and_then(|s| s.field(serde_info::PARAMETERS));
        let param = |k: &str| {
            params
                .and_then(|p| p.map_get(k))
                .or_else(|| serde_params.and_then(|p| p.map_get(k)))
                .and_then(Value::as_str)
        };
        let format = format_of(lib, input, &param);
        let mut layout_columns = Vec::new();
        if let Some(s) = storage {
            let lower = |path: &[i16]| {
                strings_at(s, path)
                    .into_iter()
                    .map(|c| c.to_ascii_lowercase())
            };
            layout_columns.extend(lower(&[sd::BUCKET_COLS, EACH_ELEMENT]));
            layout_columns.extend(lower(&[sd::SORT_COLS, EACH_ELEMENT, order::COL]));
            layout_columns.extend(lower(&[
                sd::SKEWED_INFO,
                skewed_info::SKEWED_COL_NAMES,
                EACH_ELEMENT,
            ]));
        }
        let is_view = text(t, table::TABLE_TYPE).eq_ignore_ascii_case("VIRTUAL_VIEW");
        let (view, view_text) = if is_view {
            let (analysed, text) = analyse_view(t, &obj, &param);
            (Some(analysed), text)
        } else {
            (None, String::new())
        };
        TableShape {
            table: obj,
            columns: field_schemas(storage.and_then(|s| s.field(sd::COLS)))
                .into_iter()
                .map(|(n, _)| n)
                .collect(),
            keys: field_schemas(t.field(table::PARTITION_KEYS)),
            format,
            layout_columns,
            view,
            view_text,
            owner: crate::decision::facts::owner_of(
                t.field(table::OWNER),
                t.field(table::OWNER_TYPE),
            ),
        }
    }

    fn is_key(&self, column: &str) -> bool {
        self.keys.iter().any(|(k, _)| k == column)
    }
}

/// How a table's files are read: from its serde, input format and parameters.
fn format_of<'a>(lib: &str, input: &str, param: &dyn Fn(&str) -> Option<&'a str>) -> Format {
    let lib_l = lib.to_ascii_lowercase();
    let input_l = input.to_ascii_lowercase();
    let provider = param("spark.sql.sources.provider").map(str::to_ascii_lowercase);
    let table_type = param("table_type").map(str::to_ascii_lowercase);
    for f in OWN_FILE_FORMATS {
        let named = |s: &str| s.contains(f);
        if named(&lib_l)
            || named(&input_l)
            || provider.as_deref().is_some_and(named)
            || table_type.as_deref() == Some(*f)
        {
            return Format::OwnFiles((*f).to_string());
        }
    }
    if param("metadata_location").is_some() {
        return Format::OwnFiles("iceberg".into());
    }
    if let Some(p) = provider.as_deref().filter(|p| *p != "hive") {
        let short = p.rsplit('.').next().unwrap_or(p);
        return if BY_NAME_PROVIDERS.contains(&short) || short == "parquetfileformat" {
            Format::ByName
        } else if POSITIONAL_PROVIDERS.contains(&short) {
            Format::Positional(format!("the {short} data source"))
        } else {
            Format::Unknown(format!("the {p} data source"))
        };
    }
    if lib_l == AVRO_SERDE {
        return if param("avro.schema.url").is_some() {
            Format::AvroUrl
        } else {
            Format::ByName
        };
    }
    if BY_NAME_SERDES.contains(&lib_l.as_str()) {
        Format::ByName
    } else if POSITIONAL_SERDES.contains(&lib_l.as_str()) {
        Format::Positional(lib.to_string())
    } else {
        Format::Unknown(if lib.is_empty() {
            "no serde".into()
        } else {
            lib.to_string()
        })
    }
}

/// A view's analysis and its text (lower case), from the form the metastore holds: Spark's
/// (with `view.catalogAndNamespace.*` and `view.query.out.*` parameters) or Hive's expanded
/// text.
fn analyse_view<'a>(
    t: &Value,
    obj: &Object,
    param: &dyn Fn(&str) -> Option<&'a str>,
) -> (Result<Shape, Refusal>, String) {
    let Object::Table(db, _) = obj else {
        unreachable!("TableShape::of makes tables")
    };
    let spark_parts = param("view.catalogAndNamespace.numParts")
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|n| (1..=16).contains(n));
    let original = text(t, table::VIEW_ORIGINAL_TEXT);
    let expanded = text(t, table::VIEW_EXPANDED_TEXT);
    if let Some(n) = spark_parts {
        let parts: Vec<&str> = (0..n)
            .filter_map(|i| param(&format!("view.catalogAndNamespace.part.{i}")))
            .collect();
        let columns: Vec<String> = param("view.query.out.numCols")
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|n| *n <= 4096)
            .map(|n| {
                (0..n)
                    .filter_map(|i| param(&format!("view.query.out.col.{i}")))
                    .map(str::to_ascii_lowercase)
                    .collect()
            })
            .unwrap_or_default();
        let (catalog, ns) = match parts.as_slice() {
            [catalog, ns] => (*catalog, *ns),
            _ => {
                return (
                    Err(Refusal {
                        construct: format!("a view namespace of {} parts", parts.len()),
                        why: "hms-guard resolves Spark views in a catalog and one database only",
                    }),
                    original.to_ascii_lowercase(),
                )
            }
        };
        let text = if original.is_empty() {
            expanded
        } else {
            original
        };
        let v = ViewText::Spark {
            text,
            catalog,
            db: ns,
            columns: &columns,
        };
        return (views::analyze(&v), text.to_ascii_lowercase());
    }
    let v = ViewText::HiveExpanded { text: expanded, db };
    (views::analyze(&v), expanded.to_ascii_lowercase())
}

impl Rows {
    /// Whether a partition (values in partition-key order) is shown. A filter that cannot
    /// tell (a value it cannot compare, a default partition) does not show it.
    pub fn allows(&self, keys: &[(String, String)], values: &[String]) -> bool {
        match self {
            Rows::All => true,
            Rows::Where(rules) => rules.iter().any(|r| match r {
                RowRule::Values(v) => v == values,
                RowRule::Filter(p) => eval(p, keys, values) == Some(true),
            }),
        }
    }

    pub(crate) fn describe(&self) -> String {
        match self {
            Rows::All => "every partition".into(),
            Rows::Where(rules) => rules
                .iter()
                .map(|r| match r {
                    RowRule::Values(v) => format!("partition [{}]", v.join("/")),
                    RowRule::Filter(p) => format!("partitions where {}", describe_pred(p)),
                })
                .collect::<Vec<_>>()
                .join(" or "),
        }
    }

    /// The same rules, in any order.
    fn same(&self, other: &Rows) -> bool {
        match (self, other) {
            (Rows::All, Rows::All) => true,
            (Rows::Where(a), Rows::Where(b)) => {
                a.iter().all(|r| b.contains(r)) && b.iter().all(|r| a.contains(r))
            }
            _ => false,
        }
    }

    fn union(parts: &[&Rows]) -> Rows {
        let mut rules: Vec<RowRule> = Vec::new();
        for r in parts {
            match r {
                Rows::All => return Rows::All,
                Rows::Where(v) => {
                    for rule in v {
                        if !rules.contains(rule) {
                            rules.push(rule.clone());
                        }
                    }
                }
            }
        }
        Rows::Where(rules)
    }
}

/// The value a partition key holds for NULL.
const DEFAULT_PARTITION: &str = "__HIVE_DEFAULT_PARTITION__";

/// A filter over one partition's values, in SQL's three-valued logic (`None`: unknown — a
/// NULL, or a comparison hms-guard cannot make exactly as the engine would).
fn eval(p: &Pred, keys: &[(String, String)], values: &[String]) -> Option<bool> {
    match p {
        Pred::Cmp { column, op, value } => {
            let ord = compare(keys, values, column, value)?;
            Some(match op {
                CmpOp::Eq => ord.is_eq(),
                CmpOp::NotEq => ord.is_ne(),
                CmpOp::Lt => ord.is_lt(),
                CmpOp::LtEq => ord.is_le(),
                CmpOp::Gt => ord.is_gt(),
                CmpOp::GtEq => ord.is_ge(),
            })
        }
        Pred::In {
            column,
            values: list,
            negated,
        } => {
            let mut unknown = false;
            for l in list {
                match compare(keys, values, column, l) {
                    Some(o) if o.is_eq() => return Some(!negated),
                    Some(_) => {}
                    None => unknown = true,
                }
            }
            (!unknown).then_some(*negated)
        }
        Pred::And(a, b) => match (eval(a, keys, values), eval(b, keys, values)) {
            (Some(false), _) | (_, Some(false)) => Some(false),
            (Some(true), Some(true)) => Some(true),
            _ => None,
        },
        Pred::Or(a, b) => match (eval(a, keys, values), eval(b, keys, values)) {
            (Some(true), _) | (_, Some(true)) => Some(true),
            (Some(false), Some(false)) => Some(false),
            _ => None,
        },
        Pred::Not(a) => eval(a, keys, values).map(|b| !b),
    }
}

/// A partition key's value against a literal: text keys (`string`, `varchar`) with text
/// literals, byte by byte as Spark and Hive compare strings; integer keys with integer
/// literals. Anything else (other types, NULL, an unparsable value) is unknown.
fn compare(
    keys: &[(String, String)],
    values: &[String],
    column: &str,
    lit: &Literal,
) -> Option<std::cmp::Ordering> {
    let i = keys.iter().position(|(k, _)| k == column)?;
    let value = values.get(i)?;
    if value == DEFAULT_PARTITION {
        return None;
    }
    let ty = keys[i].1.to_ascii_lowercase();
    let text_type = ty == "string" || ty.starts_with("varchar");
    let int_type = matches!(
        ty.as_str(),
        "tinyint" | "smallint" | "int" | "integer" | "bigint"
    );
    match lit {
        Literal::Text(t) if text_type => Some(value.as_bytes().cmp(t.as_bytes())),
        Literal::Number(n) if int_type => {
            let a: i128 = value.parse().ok()?;
            let b: i128 = n.parse().ok()?;
            Some(a.cmp(&b))
        }
        _ => None,
    }
}

fn describe_pred(p: &Pred) -> String {
    let lit = |l: &Literal| match l {
        Literal::Text(t) => format!("'{t}'"),
        Literal::Number(n) => n.clone(),
    };
    match p {
        Pred::Cmp { column, op, value } => {
            let op = match op {
                CmpOp::Eq => "=",
                CmpOp::NotEq => "<>",
                CmpOp::Lt => "<",
                CmpOp::LtEq => "<=",
                CmpOp::Gt => ">",
                CmpOp::GtEq => ">=",
            };
            format!("{column} {op} {}", lit(value))
        }
        Pred::In {
            column,
            values,
            negated,
        } => format!(
            "{column} {}IN ({})",
            if *negated { "NOT " } else { "" },
            values.iter().map(lit).collect::<Vec<_>>().join(", ")
        ),
        Pred::And(a, b) => format!("({} AND {})", describe_pred(a), describe_pred(b)),
        Pred::Or(a, b) => format!("({} OR {})", describe_pred(a), describe_pred(b)),
        Pred::Not(a) => format!("NOT {}", describe_pred(a)),
    }
}

/// The part a column or partition grant gives.
pub fn part_of_grant(g: &PartGrant) -> Part {
    Part {
        columns: g.column.as_ref().map(|c| BTreeSet::from([c.clone()])),
        rows: match &g.partition {
            None => Rows::All,
            Some(v) => Rows::Where(vec![RowRule::Values(v.clone())]),
        },
        from: g.to_string(),
    }
}

/// The part one branch of a view gives of `shape`, or why it cannot: a view must show every
/// partition column (their values are in every partition's name) and filter on partition
/// columns only.
pub fn part_of_view(
    view: &Object,
    branch: &views::Branch,
    shape: &TableShape,
) -> Result<Part, NotNarrowable> {
    let missing: Vec<&str> = shape
        .keys
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| !branch.columns.iter().any(|c| c == k))
        .collect();
    if !missing.is_empty() {
        return Err(NotNarrowable(format!(
            "{view} leaves out partition column {} of {}: a narrowed table shows every partition column (each partition's name carries its values)",
            missing.join(", "),
            shape.table
        )));
    }
    if let Some(f) = &branch.filter {
        if let Some(c) = f.columns().into_iter().find(|c| !shape.is_key(c)) {
            return Err(NotNarrowable(format!(
                "{view} filters {} on column {c}, which is not a partition column: hms-guard can narrow a table to whole partitions only",
                shape.table
            )));
        }
    }
    let unknown: Vec<&String> = branch
        .columns
        .iter()
        .filter(|c| !shape.is_key(c) && !shape.columns.contains(c))
        .collect();
    if let Some(c) = unknown.first() {
        return Err(NotNarrowable(format!(
            "{view} names column {c}, which {} does not have",
            shape.table
        )));
    }
    Ok(Part {
        columns: Some(
            branch
                .columns
                .iter()
                .filter(|c| !shape.is_key(c))
                .cloned()
                .collect(),
        ),
        rows: match &branch.filter {
            None => Rows::All,
            Some(p) => Rows::Where(vec![RowRule::Filter(p.clone())]),
        },
        from: format!("SELECT on view {}", view_name(view)),
    })
}

pub(super) fn view_name(o: &Object) -> String {
    match o {
        Object::Table(d, t) => format!("{d}.{t}"),
        other => other.to_string(),
    }
}

fn describe_part(p: &Part) -> String {
    let cols = match &p.columns {
        None => "every column".to_string(),
        Some(c) => format!(
            "column{} {}",
            if c.len() == 1 { "" } else { "s" },
            c.iter().cloned().collect::<Vec<_>>().join(", ")
        ),
    };
    format!("{} gives {cols} of {}", p.from, p.rows.describe())
}

/// The one narrowed table the parts make together, checked against the table's format; or
/// why there is none. `parts` is never empty.
pub fn combine(shape: &TableShape, parts: &[Part]) -> Result<Narrowed, NotNarrowable> {
    let all: BTreeSet<String> = shape.columns.iter().cloned().collect();
    let cols: Vec<BTreeSet<String>> = parts
        .iter()
        .map(|p| p.columns.clone().unwrap_or_else(|| all.clone()))
        .collect();
    let (columns, rows) = if cols.iter().all(|c| *c == cols[0]) {
        let rows: Vec<&Rows> = parts.iter().map(|p| &p.rows).collect();
        (cols[0].clone(), Rows::union(&rows))
    } else if parts.iter().all(|p| p.rows.same(&parts[0].rows)) {
        (
            cols.iter().flatten().cloned().collect(),
            parts[0].rows.clone(),
        )
    } else if let Some(k) = (0..parts.len()).find(|&k| {
        (0..parts.len()).all(|i| {
            cols[i].is_subset(&cols[k])
                && (parts[k].rows == Rows::All || parts[i].rows.same(&parts[k].rows))
        })
    }) {
        (cols[k].clone(), parts[k].rows.clone())
    } else {
        let each: Vec<String> = parts.iter().map(describe_part).collect();
        return Err(NotNarrowable(format!(
            "the parts of {} the user may read do not make one narrowed table (the same columns of every partition read): {}; together they would show more than each gives",
            shape.table,
            each.join("; ")
        )));
    };
    let hidden: BTreeSet<String> = all.difference(&columns).cloned().collect();
    let n = Narrowed {
        table: shape.table.clone(),
        shown: shape
            .columns
            .iter()
            .filter(|c| !hidden.contains(*c))
            .cloned()
            .collect(),
        hidden,
        keys: shape.keys.clone(),
        rows,
        from: parts.iter().map(|p| p.from.clone()).collect(),
        record: Given::default(),
    };
    shape.check(&n)?;
    Ok(n.recorded())
}

impl TableShape {
    /// Whether a narrowed table can be given in this table's format.
    fn check(&self, n: &Narrowed) -> Result<(), NotNarrowable> {
        let t = &self.table;
        if self.view.is_some() {
            return Err(NotNarrowable(format!(
                "{t} is a view: hms-guard narrows tables, not views of views; ask for SELECT on {t}"
            )));
        }
        if n.hidden.is_empty() {
            return Ok(());
        }
        let hidden_list = n.hidden.iter().cloned().collect::<Vec<_>>().join(", ");
        match &self.format {
            Format::ByName => {}
            Format::OwnFiles(f) => {
                return Err(NotNarrowable(format!(
                    "{t} is a {f} table, whose readers take the schema from its own files: hms-guard cannot hide its columns, so a user who may read only some of them is refused"
                )))
            }
            Format::AvroUrl => {
                return Err(NotNarrowable(format!(
                    "{t} is an Avro table whose schema is read from avro.schema.url: hms-guard cannot narrow it"
                )))
            }
            Format::Unknown(serde) => {
                return Err(NotNarrowable(format!(
                    "{t} is stored with {serde}, which hms-guard does not know to read columns by name or by position: it cannot hide columns of it"
                )))
            }
            Format::Positional(serde) => {
                let first_hidden = self.columns.iter().position(|c| n.hidden.contains(c));
                if let Some(i) = first_hidden {
                    if self.columns[i..].iter().any(|c| !n.hidden.contains(c)) {
                        return Err(NotNarrowable(format!(
                            "{t} is read by position ({serde}): hiding {hidden_list} would make the columns after them show the hidden values; only columns at the end can be hidden"
                        )));
                    }
                }
            }
        }
        if let Some(c) = self.layout_columns.iter().find(|c| n.hidden.contains(*c)) {
            return Err(NotNarrowable(format!(
                "{t} is bucketed, sorted or skewed by hidden column {c}: hms-guard cannot hide it"
            )));
        }
        Ok(())
    }
}

impl Narrowed {
    /// Whether nothing is hidden: the whole table.
    pub fn is_whole(&self) -> bool {
        self.hidden.is_empty() && self.rows == Rows::All
    }

    /// What was given, for the record: the columns and the partitions.
    pub fn given(&self) -> &str {
        &self.record.given
    }

    /// With its record written.
    fn recorded(mut self) -> Narrowed {
        let mut cols: Vec<&str> = self.shown.iter().map(String::as_str).collect();
        cols.extend(self.keys.iter().map(|(k, _)| k.as_str()));
        let given = format!("columns {} of {}", cols.join(", "), self.rows.describe());
        self.record = Given {
            matched: format!("{}: {given}", self.from.join(", ")),
            given,
        };
        self
    }
}

/// A `map<string,string>` value's entries (entries that are not strings are left out).
pub fn string_entries(m: Option<&Value>) -> Vec<(String, String)> {
    m.map(Value::as_map)
        .unwrap_or_default()
        .iter()
        .filter_map(|(k, v)| Some((k.as_str()?.to_string(), v.as_str()?.to_string())))
        .collect()
}

fn string_map(entries: Vec<(String, String)>) -> Value {
    Value::Map(
        entries
            .into_iter()
            .map(|(k, v)| (Value::Bytes(k.into_bytes()), Value::Bytes(v.into_bytes())))
            .collect(),
    )
}

/// A table as a narrowed caller is shown it (the value `reply.rs` writes): hidden columns out
/// of its storage descriptor, every parameters map narrowed. For comparing what such a caller
/// sends back (`alter_table` after a write) with what it was shown.
pub fn shown_table(t: &Value, n: &Narrowed) -> Result<Value, params::ParamError> {
    let narrow_map = |m: Option<&Value>| -> Result<Value, params::ParamError> {
        let entries = string_entries(m);
        let narrowed = params::narrow(&entries, &n.hidden)?;
        Ok(string_map(
            narrowed
                .into_iter()
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        ))
    };
    let Value::Struct(fields) = t else {
        return Ok(t.clone());
    };
    let mut out = Vec::with_capacity(fields.len());
    for (id, v) in fields {
        let v = match *id {
            table::PARAMETERS => narrow_map(Some(v))?,
            table::SD => {
                let Value::Struct(sdf) = v else {
                    out.push((*id, v.clone()));
                    continue;
                };
                let mut s = Vec::with_capacity(sdf.len());
                for (sid, sv) in sdf {
                    let sv = match *sid {
                        sd::COLS => Value::List(
                            sv.as_list()
                                .iter()
                                .filter(|f| {
                                    !n.hidden
                                        .contains(&text(f, field_schema::NAME).to_ascii_lowercase())
                                })
                                .cloned()
                                .collect(),
                        ),
                        sd::PARAMETERS => narrow_map(Some(sv))?,
                        sd::SERDE_INFO => match sv {
                            Value::Struct(si) => Value::Struct(
                                si.iter()
                                    .map(|(k, x)| {
                                        Ok((
                                            *k,
                                            if *k == serde_info::PARAMETERS {
                                                narrow_map(Some(x))?
                                            } else {
                                                x.clone()
                                            },
                                        ))
                                    })
                                    .collect::<Result<_, params::ParamError>>()?,
                            ),
                            other => other.clone(),
                        },
                        _ => sv.clone(),
                    };
                    s.push((*sid, sv));
                }
                Value::Struct(s)
            }
            _ => v.clone(),
        };
        out.push((*id, v));
    }
    Ok(Value::Struct(out))
}

#[cfg(test)]
mod tests;
