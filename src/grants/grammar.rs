//! The grammar of Hive's authorization statements, on winnow.
//!
//! A script is statements separated by `;`; keywords in any case; `--` line comments and
//! `/* */` block comments anywhere between tokens. Names are identifiers (`[A-Za-z0-9_]+`)
//! or backquoted (`` `any.name` ``, a backquote doubled inside); values of a partition spec
//! are string literals (`'eu'`, `"eu"`, backslash escapes) or numbers. The statements and
//! their forms follow Hive's grammar (HiveParser.g): privileges with their columns
//! (`SELECT (a, b) ON t`), an optional `TABLE`, `DATABASE`/`SCHEMA`, a partition spec, the
//! principal's kind always named (`USER`, `GROUP`, `ROLE`), `ROLE` optional in role grants.
//!
//! A parse error names the line and column, the statement's first line, the token found and
//! what was expected there.

use std::fmt;

use winnow::ascii::{multispace1, till_line_ending};
use winnow::combinator::{alt, cut_err, delimited, opt, preceded, repeat, separated};
use winnow::error::{ContextError, ErrMode, ModalResult, StrContext, StrContextValue};
use winnow::token::{any, take_until, take_while};
use winnow::Parser;

use super::statement::{Located, ObjectSpec, PrivilegeSpec, RoleChoice, Statement};
use crate::decision::authz::{Principal, PrincipalKind, Privilege};

/// At most this many statements in one script (`-f`, `--plan`).
pub const MAX_STATEMENTS: usize = 100_000;
/// At most this many names in one list (privileges, principals, roles, columns).
pub const MAX_LIST: usize = 1_000;

/// Why a script could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub line: usize,
    pub column: usize,
    /// Line of the statement's first token.
    pub statement_line: usize,
    /// The token where reading stopped (`end of input` at the end).
    pub found: String,
    /// What could have stood there.
    pub expected: Vec<String>,
    /// The source line, for the caret.
    pub source_line: String,
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "syntax error at line {}, column {} (statement at line {}): unexpected {}",
            self.line, self.column, self.statement_line, self.found
        )?;
        if !self.expected.is_empty() {
            write!(f, "; expected {}", self.expected.join(" or "))?;
        }
        let caret = " ".repeat(self.column.saturating_sub(1));
        write!(f, "\n  {}\n  {caret}^", self.source_line)
    }
}

impl std::error::Error for SyntaxError {}

/// Hive's reserved words among those the statements use (and `ROLE`, optional after
/// `GRANT`): a name spelled like one must be backquoted. Non-reserved words (`admin`,
/// `option`, `roles`, `lock`…) are names wherever a name stands.
const KEYWORDS: &[&str] = &[
    "ALL",
    "ALTER",
    "CREATE",
    "DATABASE",
    "DELETE",
    "DROP",
    "FOR",
    "FROM",
    "GRANT",
    "GROUP",
    "INSERT",
    "NONE",
    "ON",
    "PARTITION",
    "REVOKE",
    "ROLE",
    "SCHEMA",
    "SELECT",
    "SET",
    "TABLE",
    "TO",
    "UPDATE",
    "USER",
    "WITH",
];

/// Whether `word` is one of the keywords (any case).
pub fn is_keyword(word: &str) -> bool {
    KEYWORDS.iter().any(|k| k.eq_ignore_ascii_case(word))
}

type In<'a> = &'a str;

const STATEMENTS: &str = "SET ROLE, USE, CREATE ROLE, DROP ROLE, GRANT, REVOKE or SHOW";

/// Reads a whole script.
pub fn parse_script(source: &str) -> Result<Vec<Located>, SyntaxError> {
    let mut input: In<'_> = source;
    let mut out = Vec::new();
    loop {
        skip(&mut input);
        if input.is_empty() {
            return Ok(out);
        }
        if let Some(rest) = input.strip_prefix(';') {
            input = rest;
            continue;
        }
        if out.len() >= MAX_STATEMENTS {
            return Err(error_at(
                source,
                input,
                input,
                vec![format!("at most {MAX_STATEMENTS} statements")],
            ));
        }
        let start = input;
        match statement.parse_next(&mut input) {
            Ok(statement) => {
                let used = start.len() - input.len();
                let text = start[..used].trim().to_string();
                skip(&mut input);
                if !(input.is_empty() || input.starts_with(';')) {
                    return Err(error_at(source, start, input, vec!["`;`".into()]));
                }
                out.push(Located {
                    statement,
                    line: line_of(source, start),
                    text,
                });
            }
            Err(e) => {
                let e = match e {
                    ErrMode::Backtrack(e) | ErrMode::Cut(e) => e,
                    ErrMode::Incomplete(_) => ContextError::new(),
                };
                let mut expected = expected(&e);
                // At the first word: which statements there are; past it, what was expected
                // there says more.
                let mut here = input;
                skip(&mut here);
                if here.len() == start.len() {
                    expected = vec![STATEMENTS.to_string()];
                } else {
                    expected.retain(|s| s != STATEMENTS);
                }
                return Err(error_at(source, start, input, expected));
            }
        }
    }
}

/// Reads exactly one statement (a trailing `;` allowed).
pub fn parse_statement(source: &str) -> Result<Located, SyntaxError> {
    let mut all = parse_script(source)?;
    match all.len() {
        1 => Ok(all.remove(0)),
        n => Err(SyntaxError {
            line: 1,
            column: 1,
            statement_line: 1,
            found: format!("{n} statements"),
            expected: vec!["one statement".into()],
            source_line: source.lines().next().unwrap_or_default().to_string(),
        }),
    }
}

fn expected(e: &ContextError) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for c in e.context() {
        let s = match c {
            StrContext::Expected(StrContextValue::StringLiteral(s)) => format!("`{s}`"),
            StrContext::Expected(StrContextValue::CharLiteral(c)) => format!("`{c}`"),
            StrContext::Expected(StrContextValue::Description(d)) => d.to_string(),
            StrContext::Label(l) => l.to_string(),
            _ => continue,
        };
        if !out.contains(&s) {
            out.push(s);
        }
    }
    out
}

fn line_of(source: &str, at: In<'_>) -> usize {
    let offset = source.len() - at.len();
    source[..offset].matches('\n').count() + 1
}

fn error_at(source: &str, start: In<'_>, at: In<'_>, expected: Vec<String>) -> SyntaxError {
    let mut here = at;
    skip(&mut here);
    let offset = source.len() - here.len();
    let line_start = source[..offset].rfind('\n').map_or(0, |p| p + 1);
    let line_end = source[offset..]
        .find('\n')
        .map_or(source.len(), |p| offset + p);
    let found = match here.chars().next() {
        None => "end of input".to_string(),
        Some(c) if c.is_ascii_alphanumeric() || c == '_' => {
            let word: String = here
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .take(64)
                .collect();
            format!("`{word}`")
        }
        Some(c) => format!("`{c}`"),
    };
    SyntaxError {
        line: line_of(source, here),
        column: source[line_start..offset].chars().count() + 1,
        statement_line: line_of(source, start),
        found,
        expected,
        source_line: source[line_start..line_end].trim_end().to_string(),
    }
}

/// Whitespace and comments.
fn skip(input: &mut In<'_>) {
    let _: ModalResult<()> = repeat(
        0..,
        alt((
            multispace1.void(),
            ("--", till_line_ending).void(),
            ("/*", take_until(0.., "*/"), "*/").void(),
        )),
    )
    .parse_next(input);
}

fn ws<'a, O, P>(mut p: P) -> impl Parser<In<'a>, O, ErrMode<ContextError>>
where
    P: Parser<In<'a>, O, ErrMode<ContextError>>,
{
    move |input: &mut In<'a>| {
        skip(input);
        p.parse_next(input)
    }
}

fn word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// A keyword, any case, as a whole word.
fn kw<'a>(word: &'static str) -> impl Parser<In<'a>, (), ErrMode<ContextError>> {
    ws(take_while(1.., word_char)
        .verify(move |w: &str| w.eq_ignore_ascii_case(word))
        .void()
        .context(StrContext::Expected(StrContextValue::StringLiteral(word))))
}

fn sym<'a>(c: char) -> impl Parser<In<'a>, (), ErrMode<ContextError>> {
    ws(c.void()
        .context(StrContext::Expected(StrContextValue::CharLiteral(c))))
}

/// A bare identifier (not a keyword) or a backquoted name.
fn name(input: &mut In<'_>) -> ModalResult<String> {
    ws(alt((
        delimited(
            '`',
            repeat(
                0..,
                alt(("``".value('`'), any.verify(|c: &char| *c != '`'))),
            ),
            cut_err(
                '`'.context(StrContext::Expected(StrContextValue::Description(
                    "a closing backquote",
                ))),
            ),
        )
        .verify(|s: &String| !s.is_empty() && s.len() <= 1024),
        take_while(1..=1024, word_char)
            .verify(|w: &str| !is_keyword(w))
            .map(str::to_string),
    ))
    .context(StrContext::Expected(StrContextValue::Description("a name"))))
    .parse_next(input)
}

/// A name Hive folds to lower case (databases, tables, columns, roles).
fn folded(input: &mut In<'_>) -> ModalResult<String> {
    name.map(|n| n.to_lowercase()).parse_next(input)
}

fn list<'a, O, P>(p: P) -> impl Parser<In<'a>, Vec<O>, ErrMode<ContextError>>
where
    P: Parser<In<'a>, O, ErrMode<ContextError>>,
{
    separated(1..=MAX_LIST, p, sym(','))
}

fn string_literal(input: &mut In<'_>) -> ModalResult<String> {
    fn quoted<'a>(q: char) -> impl Parser<In<'a>, String, ErrMode<ContextError>> {
        delimited(
            q,
            repeat(
                0..,
                alt((
                    preceded('\\', any).map(|c: char| match c {
                        'n' => '\n',
                        't' => '\t',
                        'r' => '\r',
                        '0' => '\0',
                        c => c,
                    }),
                    any.verify(move |c: &char| *c != q && *c != '\\'),
                )),
            ),
            cut_err(q.context(StrContext::Expected(StrContextValue::Description(
                "the closing quote",
            )))),
        )
    }
    ws(
        alt((quoted('\''), quoted('"'))).context(StrContext::Expected(
            StrContextValue::Description("a string literal"),
        )),
    )
    .parse_next(input)
}

fn number(input: &mut In<'_>) -> ModalResult<String> {
    ws((opt('-'), take_while(1..=64, |c: char| c.is_ascii_digit()))
        .take()
        .map(str::to_string))
    .parse_next(input)
}

fn privilege(input: &mut In<'_>) -> ModalResult<Privilege> {
    ws(take_while(1.., word_char)
        .verify_map(|w: &str| {
            // Hive's privilege keywords that hms-guard's rules know.
            match w.to_ascii_uppercase().as_str() {
                "SELECT" | "INSERT" | "UPDATE" | "DELETE" | "CREATE" | "ALTER" | "DROP"
                | "INDEX" | "LOCK" | "ALL" => Privilege::parse(w),
                _ => None,
            }
        })
        .context(StrContext::Expected(StrContextValue::Description(
            "a privilege (ALL, SELECT, INSERT, UPDATE, DELETE, CREATE, ALTER, DROP, INDEX, LOCK)",
        ))))
    .parse_next(input)
}

fn columns(input: &mut In<'_>) -> ModalResult<Vec<String>> {
    delimited(sym('('), cut_err(list(folded)), cut_err(sym(')'))).parse_next(input)
}

fn privilege_spec(input: &mut In<'_>) -> ModalResult<PrivilegeSpec> {
    (privilege, opt(columns))
        .map(|(privilege, columns)| PrivilegeSpec {
            privilege,
            columns: columns.unwrap_or_default(),
        })
        .parse_next(input)
}

fn principal(input: &mut In<'_>) -> ModalResult<Principal> {
    alt((
        preceded(kw("USER"), cut_err(name)).map(|n| Principal {
            kind: PrincipalKind::User,
            name: n,
        }),
        preceded(kw("GROUP"), cut_err(name)).map(|n| Principal {
            kind: PrincipalKind::Group,
            name: n,
        }),
        preceded(kw("ROLE"), cut_err(folded)).map(|n| Principal {
            kind: PrincipalKind::Role,
            name: n,
        }),
    ))
    .context(StrContext::Expected(StrContextValue::Description(
        "USER, GROUP or ROLE and a name",
    )))
    .parse_next(input)
}

fn partition_spec(input: &mut In<'_>) -> ModalResult<Vec<(String, String)>> {
    preceded(
        kw("PARTITION"),
        cut_err(delimited(
            sym('('),
            list((folded, preceded(sym('='), alt((string_literal, number))))),
            sym(')'),
        )),
    )
    .parse_next(input)
}

/// `[TABLE] [db.]t [(cols)] [PARTITION (…)] [(cols)]` | `DATABASE d` | `SCHEMA d`.
fn object(input: &mut In<'_>) -> ModalResult<ObjectSpec> {
    alt((
        preceded(alt((kw("DATABASE"), kw("SCHEMA"))), cut_err(folded)).map(ObjectSpec::Database),
        preceded(
            opt(kw("TABLE")),
            (
                folded,
                opt(preceded(sym('.'), cut_err(folded))),
                opt(columns),
                opt(partition_spec),
                opt(columns),
            ),
        )
        .map(|(first, second, c1, partition, c2)| {
            let (db, table) = match second {
                Some(t) => (Some(first), t),
                None => (None, first),
            };
            let mut columns = c1.unwrap_or_default();
            columns.extend(c2.unwrap_or_default());
            ObjectSpec::Table {
                db,
                table,
                partition: partition.unwrap_or_default(),
                columns,
            }
        }),
    ))
    .context(StrContext::Expected(StrContextValue::Description(
        "TABLE, DATABASE or a table name",
    )))
    .parse_next(input)
}

fn grant_privileges(input: &mut In<'_>) -> ModalResult<Statement> {
    // Privilege names are keywords, never role names: after them this is a privilege grant.
    (
        list(privilege_spec),
        cut_err((
            opt(preceded(kw("ON"), cut_err(object))),
            preceded(kw("TO"), cut_err(list(principal))),
            opt((kw("WITH"), cut_err((kw("GRANT"), kw("OPTION"))))),
        )),
    )
        .map(
            |(privileges, (object, principals, option))| Statement::Grant {
                privileges,
                object: object.unwrap_or(ObjectSpec::Global),
                principals,
                grant_option: option.is_some(),
            },
        )
        .parse_next(input)
}

fn grant_roles(input: &mut In<'_>) -> ModalResult<Statement> {
    (
        preceded(opt(kw("ROLE")), list(folded)),
        preceded(cut_err(kw("TO")), cut_err(list(principal))),
        opt((kw("WITH"), cut_err((kw("ADMIN"), kw("OPTION"))))),
    )
        .map(|(roles, principals, option)| Statement::GrantRole {
            roles,
            principals,
            admin_option: option.is_some(),
        })
        .parse_next(input)
}

fn revoke_privileges(input: &mut In<'_>) -> ModalResult<Statement> {
    (
        opt((kw("GRANT"), cut_err((kw("OPTION"), kw("FOR"))))),
        list(privilege_spec),
        cut_err((
            opt(preceded(kw("ON"), cut_err(object))),
            preceded(kw("FROM"), cut_err(list(principal))),
        )),
    )
        .map(
            |(option, privileges, (object, principals))| Statement::Revoke {
                grant_option_for: option.is_some(),
                privileges,
                object: object.unwrap_or(ObjectSpec::Global),
                principals,
            },
        )
        .parse_next(input)
}

fn revoke_roles(input: &mut In<'_>) -> ModalResult<Statement> {
    (
        opt((kw("ADMIN"), cut_err((kw("OPTION"), kw("FOR"))))),
        preceded(opt(kw("ROLE")), list(folded)),
        preceded(cut_err(kw("FROM")), cut_err(list(principal))),
        // Hive also reads `… FROM p WITH ADMIN OPTION` as taking the admin option only.
        opt((kw("WITH"), cut_err((kw("ADMIN"), kw("OPTION"))))),
    )
        .map(|(before, roles, principals, after)| Statement::RevokeRole {
            admin_option_for: before.is_some() || after.is_some(),
            roles,
            principals,
        })
        .parse_next(input)
}

fn show(input: &mut In<'_>) -> ModalResult<Statement> {
    cut_err(alt((
        kw("ROLES").value(Statement::ShowRoles),
        (kw("CURRENT"), cut_err(kw("ROLES"))).value(Statement::ShowCurrentRoles),
        preceded((kw("ROLE"), cut_err(kw("GRANT"))), cut_err(principal))
            .map(Statement::ShowRoleGrant),
        preceded(kw("PRINCIPALS"), cut_err(folded)).map(Statement::ShowPrincipals),
        preceded(
            kw("GRANT"),
            (
                opt(principal),
                opt(preceded(
                    kw("ON"),
                    cut_err(alt((kw("ALL").value(None), object.map(Some)))),
                )),
            ),
        )
        .map(|(principal, object)| Statement::ShowGrant {
            principal,
            object: object.flatten(),
        }),
    )))
    .parse_next(input)
}

fn statement(input: &mut In<'_>) -> ModalResult<Statement> {
    alt((
        preceded(
            (kw("SET"), cut_err(kw("ROLE"))),
            cut_err(alt((
                kw("ALL").value(RoleChoice::All),
                kw("NONE").value(RoleChoice::None),
                folded.map(RoleChoice::Named),
            ))),
        )
        .map(Statement::SetRole),
        preceded(kw("USE"), cut_err(folded)).map(Statement::Use),
        preceded((kw("CREATE"), cut_err(kw("ROLE"))), cut_err(folded)).map(Statement::CreateRole),
        preceded((kw("DROP"), cut_err(kw("ROLE"))), cut_err(folded)).map(Statement::DropRole),
        preceded(kw("GRANT"), cut_err(alt((grant_privileges, grant_roles)))),
        preceded(
            kw("REVOKE"),
            cut_err(alt((revoke_privileges, revoke_roles))),
        ),
        preceded(kw("SHOW"), show),
    ))
    .context(StrContext::Expected(StrContextValue::Description(
        STATEMENTS,
    )))
    .parse_next(input)
}
