//! What a view shows of its base tables, read from the view's text with a maintained SQL
//! parser (`sqlparser`, Hive dialect): the groundwork of fine-grained access through views.
//!
//! A view qualifies only when hms-guard can show what it reveals: one table (or a `UNION ALL`
//! of such branches), bare column projections (renaming allowed), filtered only by comparisons
//! of a column with a literal, `IN` lists of literals, and `AND`/`OR`/`NOT`/parentheses of
//! those. Whether the filtered columns are partition columns is for the caller, who knows the
//! table. Everything else — joins, aggregates, `DISTINCT`, expressions over columns, functions,
//! subqueries, `WITH`, `LIMIT`, lateral views, sampling — is refused with a `Refusal` naming the
//! construct and why. Pure: no I/O; bounded (text size, the parser's recursion limit).
//!
//! Both forms the metastore holds: Hive's expanded text (every name qualified and quoted,
//! `*` already expanded) and Spark's stored text, whose unqualified names resolve in the view's
//! `view.catalogAndNamespace.*` and whose `*` means the columns recorded in
//! `view.query.out.col.*` when the view was made.

use sqlparser::ast::{
    BinaryOperator, Expr, GroupByExpr, InTarget, ObjectName, ObjectNamePart, Query, Select,
    SelectFlavor, SelectItem, SetExpr, SetOperator, SetQuantifier, Statement, TableFactor,
    TableWithJoins, UnaryOperator, Value,
};
use sqlparser::dialect::HiveDialect;
use sqlparser::parser::Parser;

/// Longest view text analysed (bytes); a longer one is refused.
pub const MAX_VIEW_TEXT: usize = 64 * 1024;
/// The parser's nesting limit (parentheses, expressions).
const RECURSION_LIMIT: usize = 40;
/// Most `UNION ALL` branches and filter terms looked at.
const MAX_BRANCHES: usize = 64;
const MAX_TERMS: usize = 1024;

/// A view's text and where its unqualified names resolve.
#[derive(Debug, Clone)]
pub enum ViewText<'a> {
    /// Hive's `viewExpandedText`: names qualified by Hive when the view was made.
    HiveExpanded { text: &'a str, db: &'a str },
    /// Spark's stored text: unqualified names resolve in `namespace` (its database, from
    /// `view.catalogAndNamespace.*`); `*` means `columns` (`view.query.out.col.*`).
    Spark {
        text: &'a str,
        catalog: &'a str,
        db: &'a str,
        columns: &'a [String],
    },
}

/// What a qualifying view shows: one branch per `UNION ALL` operand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape {
    pub branches: Vec<Branch>,
}

/// One table, some of its columns, the rows a filter keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Branch {
    pub db: String,
    pub table: String,
    /// The base columns shown (lowercase, each once, in order of first use).
    pub columns: Vec<String>,
    /// `None`: every row.
    pub filter: Option<Pred>,
}

/// A filter over columns and literals only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pred {
    Cmp {
        column: String,
        op: CmpOp,
        value: Literal,
    },
    In {
        column: String,
        values: Vec<Literal>,
        negated: bool,
    },
    And(Box<Pred>, Box<Pred>),
    Or(Box<Pred>, Box<Pred>),
    Not(Box<Pred>),
}

impl Pred {
    /// Every column the filter names (each once).
    pub fn columns(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.collect(&mut out);
        out
    }

    fn collect(&self, out: &mut Vec<String>) {
        match self {
            Pred::Cmp { column, .. } | Pred::In { column, .. } => {
                if !out.contains(column) {
                    out.push(column.clone());
                }
            }
            Pred::And(a, b) | Pred::Or(a, b) => {
                a.collect(out);
                b.collect(out);
            }
            Pred::Not(a) => a.collect(out),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    NotEq,
    Lt,
    LtEq,
    Gt,
    GtEq,
}

/// A literal as written: plain text or a plain number. Literals with quotes, backslashes or
/// other characters whose reading differs between SQL dialects are refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Literal {
    Text(String),
    Number(String),
}

/// Why a view does not qualify: the construct, and why it is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub construct: String,
    pub why: &'static str,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.construct, self.why)
    }
}

const NOT_SHOWN: &str = "hms-guard cannot show that a narrowed table reveals no more than the view";

fn refuse<T>(construct: impl Into<String>, why: &'static str) -> Result<T, Refusal> {
    Err(Refusal {
        construct: construct.into(),
        why,
    })
}

/// The shape of a view, or why it does not qualify.
pub fn analyze(view: &ViewText<'_>) -> Result<Shape, Refusal> {
    let text = match view {
        ViewText::HiveExpanded { text, .. } | ViewText::Spark { text, .. } => *text,
    };
    if text.len() > MAX_VIEW_TEXT {
        return refuse(
            format!("a view text of {} bytes", text.len()),
            "longer than hms-guard analyses (64 KiB)",
        );
    }
    if text.contains('\\') {
        return refuse(
            "a backslash in the view text",
            "Hive and Spark read escapes in literals and names in ways this parser may not",
        );
    }
    let dialect = HiveDialect {};
    let statements = Parser::new(&dialect)
        .with_recursion_limit(RECURSION_LIMIT)
        .try_with_sql(text)
        .and_then(|mut p| p.parse_statements())
        .or_else(|e| refuse(format!("the view text ({e})"), "it could not be parsed"))?;
    let [Statement::Query(query)] = statements.as_slice() else {
        return refuse("the view text", "it is not exactly one query");
    };
    let mut branches = Vec::new();
    query_branches(view, query, &mut branches)?;
    Ok(Shape { branches })
}

fn query_branches(view: &ViewText<'_>, q: &Query, out: &mut Vec<Branch>) -> Result<(), Refusal> {
    let Query {
        with,
        body,
        order_by: _, // ordering changes no row or column
        limit_clause,
        fetch,
        locks,
        for_clause,
        settings,
        format_clause,
        pipe_operators,
    } = q;
    if with.is_some() {
        return refuse("a WITH clause", NOT_SHOWN);
    }
    if limit_clause.is_some() || fetch.is_some() {
        return refuse(
            "LIMIT",
            "the view shows some rows, the table would show all",
        );
    }
    if !locks.is_empty()
        || for_clause.is_some()
        || settings.is_some()
        || format_clause.is_some()
        || !pipe_operators.is_empty()
    {
        return refuse("a query clause other than ORDER BY", NOT_SHOWN);
    }
    set_branches(view, body, out)
}

fn set_branches(view: &ViewText<'_>, s: &SetExpr, out: &mut Vec<Branch>) -> Result<(), Refusal> {
    if out.len() >= MAX_BRANCHES {
        return refuse("more than 64 UNION ALL branches", NOT_SHOWN);
    }
    match s {
        SetExpr::Select(select) => {
            out.push(select_branch(view, select)?);
            Ok(())
        }
        SetExpr::Query(q) => query_branches(view, q, out),
        SetExpr::SetOperation {
            left,
            op: SetOperator::Union,
            set_quantifier: SetQuantifier::All,
            right,
        } => {
            set_branches(view, left, out)?;
            set_branches(view, right, out)
        }
        SetExpr::SetOperation { op, .. } => refuse(
            format!("{op} without ALL"),
            "it removes or combines rows; only UNION ALL keeps every row",
        ),
        _ => refuse("a query body that is not a SELECT", NOT_SHOWN),
    }
}

fn select_branch(view: &ViewText<'_>, s: &Select) -> Result<Branch, Refusal> {
    let Select {
        select_token: _,
        optimizer_hints,
        distinct,
        select_modifiers,
        top,
        top_before_distinct: _,
        projection,
        exclude,
        into,
        from,
        lateral_views,
        prewhere,
        selection,
        connect_by,
        group_by,
        cluster_by: _,    // placement of rows, not which rows
        distribute_by: _, // placement of rows
        sort_by: _,       // ordering
        having,
        named_window,
        qualify,
        window_before_qualify: _,
        value_table_mode,
        flavor,
    } = s;
    if distinct.is_some() {
        return refuse("DISTINCT", "the view hides how often a row occurs");
    }
    if !matches!(group_by, GroupByExpr::Expressions(e, m) if e.is_empty() && m.is_empty())
        || having.is_some()
    {
        return refuse(
            "GROUP BY or HAVING",
            "an aggregate shows less than its rows",
        );
    }
    if !lateral_views.is_empty() {
        return refuse("LATERAL VIEW", NOT_SHOWN);
    }
    if top.is_some() {
        return refuse("TOP", "the view shows some rows, the table would show all");
    }
    if !optimizer_hints.is_empty()
        || select_modifiers.is_some()
        || exclude.is_some()
        || into.is_some()
        || prewhere.is_some()
        || !connect_by.is_empty()
        || !named_window.is_empty()
        || qualify.is_some()
        || value_table_mode.is_some()
        || *flavor != SelectFlavor::Standard
    {
        return refuse("a SELECT clause hms-guard does not analyse", NOT_SHOWN);
    }
    let [TableWithJoins { relation, joins }] = from.as_slice() else {
        return refuse(
            if from.is_empty() {
                "a SELECT without FROM"
            } else {
                "a FROM of several tables"
            },
            NOT_SHOWN,
        );
    };
    if !joins.is_empty() {
        return refuse("a JOIN", "a join shows rows of several tables together");
    }
    let base = base_table(view, relation)?;
    let mut columns = Vec::new();
    for item in projection {
        match item {
            SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => {
                let c = base.column(e)?;
                if !columns.contains(&c) {
                    columns.push(c);
                }
            }
            SelectItem::Wildcard(opts) | SelectItem::QualifiedWildcard(_, opts) => {
                if opts.opt_ilike.is_some()
                    || opts.opt_exclude.is_some()
                    || opts.opt_except.is_some()
                    || opts.opt_replace.is_some()
                    || opts.opt_rename.is_some()
                {
                    return refuse("a * with modifiers", NOT_SHOWN);
                }
                if let SelectItem::QualifiedWildcard(kind, _) = item {
                    base.check_qualifier_of_wildcard(kind)?;
                }
                match view {
                    ViewText::Spark { columns: out, .. } if !out.is_empty() => {
                        for c in out.iter() {
                            let c = c.to_lowercase();
                            if !columns.contains(&c) {
                                columns.push(c);
                            }
                        }
                    }
                    _ => {
                        return refuse(
                            "SELECT *",
                            "the columns it meant when the view was made are not recorded",
                        )
                    }
                }
            }
            SelectItem::ExprWithAliases { .. } => {
                return refuse("a projection with several aliases", NOT_SHOWN)
            }
        }
    }
    let mut terms = 0;
    let filter = match selection {
        None => None,
        Some(e) => Some(base.pred(e, &mut terms)?),
    };
    Ok(Branch {
        db: base.db,
        table: base.table,
        columns,
        filter,
    })
}

/// The table a branch reads and the names that refer to it.
struct Base {
    db: String,
    table: String,
    /// How columns may be qualified: the alias, else the table name (and db.table).
    alias: Option<String>,
}

fn ident_parts(name: &ObjectName) -> Result<Vec<String>, Refusal> {
    name.0
        .iter()
        .map(|p| match p {
            ObjectNamePart::Identifier(i) => Ok(i.value.to_lowercase()),
            _ => refuse(format!("the name {name}"), NOT_SHOWN),
        })
        .collect()
}

fn base_table(view: &ViewText<'_>, t: &TableFactor) -> Result<Base, Refusal> {
    let TableFactor::Table {
        name,
        alias,
        args,
        with_hints,
        version,
        with_ordinality,
        partitions,
        json_path,
        sample,
        index_directives,
        inheritance,
    } = t
    else {
        return refuse(
            "a FROM that is not a table (a subquery or a function)",
            NOT_SHOWN,
        );
    };
    if sample.is_some() {
        return refuse("TABLESAMPLE", NOT_SHOWN);
    }
    if args.is_some()
        || !with_hints.is_empty()
        || version.is_some()
        || *with_ordinality
        || !partitions.is_empty()
        || json_path.is_some()
        || !index_directives.is_empty()
        || inheritance.is_some()
    {
        return refuse(format!("the table {name} with options"), NOT_SHOWN);
    }
    let parts = ident_parts(name)?;
    let (db, table) = match (view, parts.as_slice()) {
        (_, [db, table]) => (db.clone(), table.clone()),
        (ViewText::HiveExpanded { db, .. }, [table]) => (db.to_lowercase(), table.clone()),
        (ViewText::Spark { db, .. }, [table]) => (db.to_lowercase(), table.clone()),
        (ViewText::Spark { catalog, .. }, [c, db, table])
            if c.eq_ignore_ascii_case(catalog) || c == "spark_catalog" =>
        {
            (db.clone(), table.clone())
        }
        _ => return refuse(format!("the table name {name}"), NOT_SHOWN),
    };
    if alias.as_ref().is_some_and(|a| !a.columns.is_empty()) {
        return refuse("a table alias with column names", NOT_SHOWN);
    }
    Ok(Base {
        db,
        table,
        alias: alias.as_ref().map(|a| a.name.value.to_lowercase()),
    })
}

impl Base {
    /// Whether `qualifier` (lowercase parts) names this table.
    fn names_me(&self, qualifier: &[String]) -> bool {
        match (qualifier, &self.alias) {
            ([q], Some(a)) => q == a,
            ([q], None) => q == &self.table,
            ([d, t], None) => d == &self.db && t == &self.table,
            _ => false,
        }
    }

    fn check_qualifier_of_wildcard(
        &self,
        kind: &sqlparser::ast::SelectItemQualifiedWildcardKind,
    ) -> Result<(), Refusal> {
        match kind {
            sqlparser::ast::SelectItemQualifiedWildcardKind::ObjectName(n)
                if self.names_me(&ident_parts(n)?) =>
            {
                Ok(())
            }
            _ => refuse("a qualified * of another table", NOT_SHOWN),
        }
    }

    /// A bare column of this table.
    fn column(&self, e: &Expr) -> Result<String, Refusal> {
        match e {
            Expr::Identifier(i) => Ok(i.value.to_lowercase()),
            Expr::CompoundIdentifier(parts) => {
                let lower: Vec<String> = parts.iter().map(|p| p.value.to_lowercase()).collect();
                let (col, qualifier) = lower.split_last().expect("a compound name has parts");
                if self.names_me(qualifier) {
                    Ok(col.clone())
                } else {
                    refuse(format!("the column {e}"), "it names another table")
                }
            }
            Expr::Nested(inner) => self.column(inner),
            other => refuse(
                format!("the expression {other}"),
                "an expression over columns shows values the table does not hold as they are",
            ),
        }
    }

    fn pred(&self, e: &Expr, terms: &mut usize) -> Result<Pred, Refusal> {
        *terms += 1;
        if *terms > MAX_TERMS {
            return refuse("a filter of more than 1024 terms", NOT_SHOWN);
        }
        match e {
            Expr::Nested(inner) => self.pred(inner, terms),
            Expr::UnaryOp {
                op: UnaryOperator::Not,
                expr,
            } => Ok(Pred::Not(Box::new(self.pred(expr, terms)?))),
            Expr::BinaryOp { left, op, right } => match op {
                BinaryOperator::And => Ok(Pred::And(
                    Box::new(self.pred(left, terms)?),
                    Box::new(self.pred(right, terms)?),
                )),
                BinaryOperator::Or => Ok(Pred::Or(
                    Box::new(self.pred(left, terms)?),
                    Box::new(self.pred(right, terms)?),
                )),
                _ => {
                    let Some(op) = cmp_op(op) else {
                        return refuse(format!("the filter {e}"), "only comparisons are analysed");
                    };
                    // column op literal, or literal op column (the comparison turned round)
                    match (self.column(left), literal(right), literal(left)) {
                        (Ok(column), Some(value), _) => Ok(Pred::Cmp { column, op, value }),
                        (_, _, Some(value)) => Ok(Pred::Cmp {
                            column: self
                                .column(right)
                                .or_else(|_| refuse(format!("the filter {e}"), COMPARE))?,
                            op: flipped(op),
                            value,
                        }),
                        _ => refuse(format!("the filter {e}"), COMPARE),
                    }
                }
            },
            Expr::In {
                expr,
                target: InTarget::List(list),
                negated,
                global: false,
            } => {
                let column = self.column(expr)?;
                let mut values = Vec::new();
                for v in list {
                    values.push(
                        literal(v)
                            .map_or_else(|| refuse(format!("the filter {e}"), COMPARE), Ok)?,
                    );
                }
                Ok(Pred::In {
                    column,
                    values,
                    negated: *negated,
                })
            }
            other => refuse(format!("the filter {other}"), COMPARE),
        }
    }
}

const COMPARE: &str =
    "only comparisons of a column with a plain literal (and IN lists of them) are analysed";

fn cmp_op(op: &BinaryOperator) -> Option<CmpOp> {
    Some(match op {
        BinaryOperator::Eq => CmpOp::Eq,
        BinaryOperator::NotEq => CmpOp::NotEq,
        BinaryOperator::Lt => CmpOp::Lt,
        BinaryOperator::LtEq => CmpOp::LtEq,
        BinaryOperator::Gt => CmpOp::Gt,
        BinaryOperator::GtEq => CmpOp::GtEq,
        _ => return None,
    })
}

fn flipped(op: CmpOp) -> CmpOp {
    match op {
        CmpOp::Lt => CmpOp::Gt,
        CmpOp::LtEq => CmpOp::GtEq,
        CmpOp::Gt => CmpOp::Lt,
        CmpOp::GtEq => CmpOp::LtEq,
        same => same,
    }
}

/// A plain literal: a single-quoted string of letters, digits and `_ - . : /` and spaces, or a
/// number of digits with an optional sign and point. Anything else (escapes, quotes inside,
/// exponents, typed literals) may be read differently by Hive, Spark and this parser.
fn literal(e: &Expr) -> Option<Literal> {
    let plain = |s: &str| {
        s.chars()
            .all(|c| c.is_ascii_alphanumeric() || " _-.:/".contains(c))
    };
    match e {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) if plain(s) => {
                Some(Literal::Text(s.clone()))
            }
            Value::Number(n, false)
                if !n.is_empty()
                    && n.chars().all(|c| c.is_ascii_digit() || c == '.')
                    && n.chars().filter(|&c| c == '.').count() <= 1 =>
            {
                Some(Literal::Number(n.clone()))
            }
            _ => None,
        },
        Expr::UnaryOp {
            op: UnaryOperator::Minus,
            expr,
        } => match literal(expr)? {
            Literal::Number(n) => Some(Literal::Number(format!("-{n}"))),
            Literal::Text(_) => None,
        },
        Expr::Nested(inner) => literal(inner),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
