//! Questions an engine asks hms-guard itself (`hms_guard_authorize`, answered by the proxy and
//! never forwarded): may this user write a table's data, create a table with data, or read or
//! write files by path? Engines that write files before they tell the metastore (Spark) ask
//! before they write (docs/SPARK.md). A question is decided like a metastore call — the same
//! grants, owners, storage checks, modes and audit — only its answer comes from the proxy.

use super::classify::{normalize_name, Classified, ClassifyError, StorageNeed};
use crate::decision::authz::{Object, Operation, Privilege};
use crate::wire::codec::path::strings_at;
use crate::wire::codec::value::Value;
use crate::wire::schema::question::args;

/// Longest path a question may name (bytes).
pub const MAX_PATH: usize = 4096;
/// Longest `client` text kept for the audit line (bytes).
pub const MAX_CLIENT: usize = 200;

/// Who asked and what it tried, for the record and the refusal's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asked {
    /// The engine's own description (`hms-guard-spark/0.1.0 spark/4.3.0`), printable ASCII.
    pub client: String,
    /// What the user tried, in the refusal's words ("INSERT into table demo.t").
    pub doing: String,
}

/// The bounded label of who asked (metrics): the extension this project ships, or `other`.
pub fn client_label(client: &str) -> &'static str {
    if client.starts_with("hms-guard-spark/") {
        "hms-guard-spark"
    } else {
        "other"
    }
}

/// The action of a question, as its `action` field names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    WriteTable,
    CreateTable,
    ReadPath,
    WritePath,
}

impl Action {
    fn parse(s: &str) -> Option<Action> {
        Some(match s {
            "write_table" => Action::WriteTable,
            "create_table" => Action::CreateTable,
            "read_path" => Action::ReadPath,
            "write_path" => Action::WritePath,
            _ => return None,
        })
    }
}

/// The string field `id` of the question (the schema reader has checked its type).
fn string(a: &Value, id: i16) -> Option<String> {
    strings_at(a, &[id]).into_iter().next()
}

fn required(a: &Value, id: i16, what: &'static str) -> Result<String, ClassifyError> {
    string(a, id)
        .filter(|s| !s.is_empty())
        .ok_or(ClassifyError::Missing(what))
}

fn client(a: &Value) -> Result<String, ClassifyError> {
    let c = string(a, args::CLIENT).unwrap_or_default();
    if c.len() > MAX_CLIENT || !c.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(ClassifyError::Args(format!(
            "the question's client must be printable ASCII of at most {MAX_CLIENT} bytes"
        )));
    }
    Ok(if c.is_empty() { "unnamed".into() } else { c })
}

/// The write privileges a `write_table` question names: INSERT, UPDATE, DELETE, each once,
/// at least one.
fn privileges(a: &Value) -> Result<Vec<Privilege>, ClassifyError> {
    let mut out = Vec::new();
    for name in strings_at(a, &[args::PRIVILEGES, crate::wire::router::EACH]) {
        let p = match name.as_str() {
            "INSERT" => Privilege::Insert,
            "UPDATE" => Privilege::Update,
            "DELETE" => Privilege::Delete,
            other => {
                return Err(ClassifyError::Args(format!(
                    "a write asks for INSERT, UPDATE or DELETE, not {other:?}"
                )))
            }
        };
        if !out.contains(&p) {
            out.push(p);
        }
    }
    if out.is_empty() {
        return Err(ClassifyError::Missing("write privilege"));
    }
    Ok(out)
}

fn path(a: &Value) -> Result<String, ClassifyError> {
    let p = required(a, args::PATH, "path")?;
    if p.len() > MAX_PATH {
        return Err(ClassifyError::Args(format!(
            "the path is longer than {MAX_PATH} bytes"
        )));
    }
    Ok(p)
}

/// What a question asks, as the rules see it.
pub fn classify(a: &Value) -> Result<Vec<Classified>, ClassifyError> {
    let action = required(a, args::ACTION, "action")?;
    let Some(action) = Action::parse(&action) else {
        return Err(ClassifyError::Args(format!(
            "unknown question {action:?} (write_table, create_table, read_path, write_path)"
        )));
    };
    let client = client(a)?;
    let c = match action {
        Action::WriteTable | Action::CreateTable => {
            let db = normalize_name(&required(a, args::DB, "database name")?)?;
            let table = normalize_name(&required(a, args::TABLE, "table name")?)?;
            let obj = Object::table(&db, &table);
            let (op, doing, storage) = if action == Action::WriteTable {
                let privileges = privileges(a)?;
                let names: Vec<&str> = privileges.iter().map(|p| p.as_str()).collect();
                let doing = format!("write ({}) into {obj}", names.join(", "));
                (
                    Operation::WriteData {
                        table: obj,
                        privileges,
                    },
                    doing,
                    Vec::new(),
                )
            } else {
                // The table's own place, when the statement names one, is written.
                let storage = match string(a, args::PATH) {
                    Some(p) if !p.is_empty() => vec![StorageNeed {
                        location: p,
                        write: true,
                    }],
                    _ => Vec::new(),
                };
                let doing = format!("create {obj} with data");
                (Operation::CreateTable { table: obj }, doing, storage)
            };
            Classified {
                db: Some(db),
                table: Some(table),
                location: storage.first().map(|s| s.location.clone()),
                storage,
                asked: Some(Asked { client, doing }),
                ..Classified::of(op)
            }
        }
        Action::ReadPath | Action::WritePath => {
            let write = action == Action::WritePath;
            let location = path(a)?;
            let doing = format!(
                "{} files at {location}",
                if write { "write" } else { "read" }
            );
            Classified {
                location: Some(location.clone()),
                storage: vec![StorageNeed { location, write }],
                asked: Some(Asked { client, doing }),
                ..Classified::of(Operation::DataPath { write })
            }
        }
    };
    Ok(vec![c])
}

#[cfg(test)]
mod tests {
    use super::*;
    fn s(v: &str) -> Value {
        Value::Bytes(v.as_bytes().to_vec())
    }

    fn question(fields: Vec<(i16, Value)>) -> Value {
        Value::Struct(fields)
    }

    #[test]
    fn a_write_names_its_table_and_privileges() {
        let q = question(vec![
            (1, s("write_table")),
            (2, s("Demo")),
            (3, s("T")),
            (5, Value::List(vec![s("INSERT"), s("DELETE"), s("INSERT")])),
            (6, s("hms-guard-spark/0.1.0 spark/4.3.0")),
        ]);
        let c = classify(&q).unwrap().remove(0);
        assert_eq!(
            c.op,
            Operation::WriteData {
                table: Object::table("demo", "t"),
                privileges: vec![Privilege::Insert, Privilege::Delete]
            }
        );
        assert_eq!(c.op.class(), "write_data");
        let asked = c.asked.unwrap();
        assert_eq!(asked.doing, "write (INSERT, DELETE) into table demo.t");
        assert_eq!(client_label(&asked.client), "hms-guard-spark");
    }

    #[test]
    fn paths_need_the_storage_check() {
        let q = question(vec![(1, s("write_path")), (4, s("s3a://b/p/"))]);
        let c = classify(&q).unwrap().remove(0);
        assert_eq!(c.op, Operation::DataPath { write: true });
        assert_eq!(c.storage.len(), 1);
        assert!(c.storage[0].write);
        assert_eq!(c.asked.unwrap().client, "unnamed");
    }

    #[test]
    fn malformed_questions_are_refused() {
        for q in [
            vec![(1, s("drop_everything")), (4, s("/x"))],
            vec![(1, s("write_table")), (2, s("d")), (3, s("t"))],
            vec![
                (1, s("write_table")),
                (2, s("d")),
                (3, s("t")),
                (5, Value::List(vec![s("SELECT")])),
            ],
            vec![(1, s("read_path"))],
            vec![(1, s("read_path")), (4, s(&"x".repeat(MAX_PATH + 1)))],
            vec![(1, s("read_path")), (4, s("/x")), (6, s("bad\nclient"))],
            vec![(1, Value::Int(1))],
        ] {
            assert!(classify(&question(q.clone())).is_err(), "{q:?}");
        }
    }
}
