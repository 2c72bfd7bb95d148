//! Narrowing a parameters map (a table's, a partition's, a storage descriptor's, a serde's):
//! every copy of the schema it carries loses the hidden columns the same way the columns do.
//!
//! - Spark's schema (`spark.sql.sources.schema`, or its `numParts`/`part.N` pieces): the JSON
//!   struct loses the hidden fields and is written back whole as `spark.sql.sources.schema`.
//! - Avro's `avro.schema.literal`: the record loses the hidden fields.
//! - `COLUMN_STATS_ACCURATE`: the hidden columns leave its `COLUMN_STATS` map.
//! - Spark's column statistics (`spark.sql.statistics.colStats.<column>.*`) of hidden columns
//!   are dropped.
//! - Any other entry whose key or value names a hidden column (as a word) is dropped.
//!
//! A schema copy that cannot be read is an error: the reply is refused, never passed whole.

use std::borrow::Cow;
use std::collections::BTreeSet;

use serde_json::Value as Json;

const SPARK_SCHEMA: &str = "spark.sql.sources.schema";
const SPARK_COL_STATS: &str = "spark.sql.statistics.colStats.";
const AVRO_LITERAL: &str = "avro.schema.literal";
const STATS_ACCURATE: &str = "COLUMN_STATS_ACCURATE";

/// Why a parameters map could not be narrowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key} cannot be narrowed: {why}")]
pub struct ParamError {
    pub key: String,
    pub why: String,
}

fn err(key: &str, why: impl Into<String>) -> ParamError {
    ParamError {
        key: key.into(),
        why: why.into(),
    }
}

/// One parameter: borrowed when left as it was.
pub type Entry<'a> = (Cow<'a, str>, Cow<'a, str>);

/// The entries of a parameters map without what names a hidden column (order kept; Spark's
/// schema pieces become one entry where the first piece was). Entries left as they were are
/// borrowed.
pub fn narrow<'a, K, V>(
    entries: &'a [(K, V)],
    hidden: &BTreeSet<String>,
) -> Result<Vec<Entry<'a>>, ParamError>
where
    K: AsRef<str>,
    V: AsRef<str>,
{
    let borrowed = |k: &'a K, v: &'a V| (Cow::Borrowed(k.as_ref()), Cow::Borrowed(v.as_ref()));
    if hidden.is_empty() {
        return Ok(entries.iter().map(|(k, v)| borrowed(k, v)).collect());
    }
    let spark = spark_schema(entries)?;
    let mut out = Vec::with_capacity(entries.len());
    let mut spark_written = false;
    for (k, v) in entries {
        let (key, value) = (k.as_ref(), v.as_ref());
        if key == SPARK_SCHEMA
            || key.starts_with("spark.sql.sources.schema.part.")
            || key == "spark.sql.sources.schema.numParts"
        {
            if let (false, Some(schema)) = (spark_written, &spark) {
                out.push((
                    Cow::Borrowed(SPARK_SCHEMA),
                    Cow::Owned(without_fields(SPARK_SCHEMA, schema, hidden, false)?),
                ));
                spark_written = true;
            }
            continue;
        }
        if let Some(rest) = key.strip_prefix(SPARK_COL_STATS) {
            if hidden.iter().any(|h| stats_of(rest, h)) {
                continue;
            }
        }
        let value = match key {
            AVRO_LITERAL => Cow::Owned(without_fields(AVRO_LITERAL, value, hidden, true)?),
            STATS_ACCURATE => match narrow_stats_accurate(value, hidden) {
                Some(v) => Cow::Owned(v),
                None => continue,
            },
            _ if names_any(key, hidden) || names_any(value, hidden) => continue,
            _ => Cow::Borrowed(value),
        };
        out.push((Cow::Borrowed(key), value));
    }
    Ok(out)
}

/// Whether `spark.sql.statistics.colStats.<rest>` is a statistic of column `h`.
fn stats_of(rest: &str, h: &str) -> bool {
    rest.len() > h.len()
        && rest.as_bytes()[h.len()] == b'.'
        && rest[..h.len()].eq_ignore_ascii_case(h)
}

/// Whether `text` names any hidden column as a word (letters, digits, `_`), ignoring case.
pub fn names_any(text: &str, hidden: &BTreeSet<String>) -> bool {
    words(text).any(|w| is_hidden(w, hidden))
}

/// The words of a text: runs of letters, digits and `_` (how column and table names are
/// spotted in parameters and view texts).
pub fn words(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
}

/// Whether a column name is hidden (hidden names are lower case; no allocation unless the
/// name has upper-case letters).
pub fn is_hidden(name: &str, hidden: &BTreeSet<String>) -> bool {
    if name.is_empty() || hidden.is_empty() {
        return false;
    }
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        hidden.contains(&name.to_ascii_lowercase())
    } else {
        hidden.contains(name)
    }
}

/// Spark's schema as stored: one entry, or `numParts` pieces joined. `None`: not stored.
fn spark_schema<K: AsRef<str>, V: AsRef<str>>(
    entries: &[(K, V)],
) -> Result<Option<String>, ParamError> {
    let get = |key: &str| {
        entries
            .iter()
            .find(|(k, _)| k.as_ref() == key)
            .map(|(_, v)| v.as_ref())
    };
    if let Some(v) = get(SPARK_SCHEMA) {
        return Ok(Some(v.to_string()));
    }
    let Some(n) = get("spark.sql.sources.schema.numParts") else {
        return Ok(None);
    };
    let n: usize = n
        .parse()
        .ok()
        .filter(|n| *n <= 4096)
        .ok_or_else(|| err(SPARK_SCHEMA, "its numParts is not a number"))?;
    let mut whole = String::new();
    for i in 0..n {
        let piece = get(&format!("spark.sql.sources.schema.part.{i}"))
            .ok_or_else(|| err(SPARK_SCHEMA, format!("piece {i} is missing")))?;
        whole.push_str(piece);
    }
    Ok(Some(whole))
}

/// A JSON schema (Spark's struct; Avro's record, `record`: its type must say so — Avro
/// resolves fields by name) without the fields naming a hidden column; the text itself when
/// none does. A field without a name, or an alias (Avro) naming a hidden column on a field that
/// stays, is an error.
fn without_fields(
    key: &str,
    text: &str,
    hidden: &BTreeSet<String>,
    record: bool,
) -> Result<String, ParamError> {
    let mut json: Json = serde_json::from_str(text).map_err(|e| err(key, e.to_string()))?;
    if record && json.get("type").and_then(Json::as_str) != Some("record") {
        return Err(err(key, "it is not a record"));
    }
    let fields = json
        .get_mut("fields")
        .and_then(Json::as_array_mut)
        .ok_or_else(|| err(key, "it has no fields"))?;
    let before = fields.len();
    let mut bad = false;
    fields.retain(|f| match f.get("name").and_then(Json::as_str) {
        Some(n) => {
            let hide = is_hidden(n, hidden);
            let aliased = f.get("aliases").and_then(Json::as_array).is_some_and(|a| {
                a.iter()
                    .filter_map(Json::as_str)
                    .any(|a| is_hidden(a, hidden))
            });
            bad |= aliased && !hide;
            !hide
        }
        None => {
            bad = true;
            false
        }
    });
    if bad {
        return Err(err(
            key,
            "a field has no name, or an alias naming a hidden column",
        ));
    }
    Ok(if fields.len() == before {
        text.to_string()
    } else {
        json.to_string()
    })
}

/// `COLUMN_STATS_ACCURATE` without the hidden columns; `None`: drop it (unreadable).
fn narrow_stats_accurate(v: &str, hidden: &BTreeSet<String>) -> Option<String> {
    if !names_any(v, hidden) {
        return Some(v.to_string());
    }
    let mut json: Json = serde_json::from_str(v).ok()?;
    if let Some(cols) = json.get_mut("COLUMN_STATS").and_then(Json::as_object_mut) {
        cols.retain(|k, _| !hidden.contains(&k.to_ascii_lowercase()));
    }
    if names_any(&json.to_string(), hidden) {
        return None;
    }
    Some(json.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hidden() -> BTreeSet<String> {
        BTreeSet::from(["ssn".to_string()])
    }

    fn e(k: &str, v: &str) -> (String, String) {
        (k.into(), v.into())
    }

    #[test]
    fn spark_schema_in_pieces_is_joined_narrowed_and_written_once() {
        let schema = r#"{"type":"struct","fields":[{"name":"id","type":"long","nullable":true,"metadata":{}},{"name":"SSN","type":"string","nullable":true,"metadata":{}}]}"#;
        let (a, b) = schema.split_at(40);
        let entries = [
            e("EXTERNAL", "TRUE"),
            e("spark.sql.sources.schema.numParts", "2"),
            e("spark.sql.sources.schema.part.0", a),
            e("spark.sql.sources.schema.part.1", b),
            e("spark.sql.statistics.colStats.ssn.max", "999"),
            e("spark.sql.statistics.colStats.id.max", "7"),
            e("orc.bloom.filter.columns", "id,ssn"),
        ];
        let out = narrow(&entries, &hidden()).unwrap();
        let out: Vec<(String, String)> = out
            .into_iter()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        assert_eq!(out.len(), 3, "{out:?}");
        assert_eq!(out[0], e("EXTERNAL", "TRUE"));
        assert_eq!(out[1].0, SPARK_SCHEMA);
        assert!(out[1].1.contains("\"id\"") && !out[1].1.to_lowercase().contains("ssn"));
        assert_eq!(out[2], e("spark.sql.statistics.colStats.id.max", "7"));
    }

    #[test]
    fn an_unreadable_schema_copy_is_an_error() {
        assert!(narrow(&[e(SPARK_SCHEMA, "{not json")], &hidden()).is_err());
        assert!(narrow(
            &[
                e("spark.sql.sources.schema.numParts", "2"),
                e("spark.sql.sources.schema.part.0", "{")
            ],
            &hidden()
        )
        .is_err());
        assert!(narrow(&[e(AVRO_LITERAL, r#"{"type":"enum"}"#)], &hidden()).is_err());
    }

    #[test]
    fn avro_literal_and_stats_lose_the_hidden_column() {
        let avro = r#"{"type":"record","name":"c","fields":[{"name":"id","type":"long"},{"name":"ssn","type":"string"}]}"#;
        let stats = r#"{"BASIC_STATS":"true","COLUMN_STATS":{"id":"true","ssn":"true"}}"#;
        let entries = [e(AVRO_LITERAL, avro), e(STATS_ACCURATE, stats)];
        let out = narrow(&entries, &hidden()).unwrap();
        assert!(!out[0].1.contains("ssn") && out[0].1.contains("\"id\""));
        assert!(!out[1].1.contains("ssn") && out[1].1.contains("BASIC_STATS"));
        let aliased = r#"{"type":"record","name":"c","fields":[{"name":"x","aliases":["ssn"],"type":"long"}]}"#;
        assert!(narrow(&[e(AVRO_LITERAL, aliased)], &hidden()).is_err());
    }

    #[test]
    fn words_not_substrings_name_a_column() {
        assert!(names_any("a,SSN", &hidden()));
        assert!(!names_any("ssnx ssn_2", &hidden()));
        assert!(stats_of("SSN.max", "ssn"));
        assert!(!stats_of("ssn2.max", "ssn"));
    }
}
