//! A narrowed reply: the metastore's reply to a read of a narrowed table, walked by the
//! method's declared result type and rewritten so that it shows the narrowed table only.
//!
//! Walking by the schema finds every copy wherever the reply keeps it: every `FieldSchema`
//! naming a hidden column is dropped (a storage descriptor's columns, `get_fields`,
//! `get_schema`), as is every column statistic (`ColumnStatisticsObj`) and constraint of one;
//! every partition (`Partition`, `PartitionWithoutSD`, a row of partition values, a partition
//! name) the caller may not read leaves its list; every `parameters` map is narrowed
//! (`params.rs`). A single object the caller may not read (`get_partition` of a hidden
//! partition) withholds the whole reply. A field the schema does not know is an error: the
//! reply is refused rather than passed on unread. Only the methods `narrowable` names are
//! walked; every other read of a narrowed table is refused before it is sent.

use bytes::BytesMut;

use super::params::{self, is_hidden, ParamError};
use super::Narrowed;
use crate::wire::codec::path::strings_at;
use crate::wire::codec::reader::{Field, Reader};
use crate::wire::codec::splice::EACH_ELEMENT;
use crate::wire::codec::value::read_value;
use crate::wire::codec::writer::Writer;
use crate::wire::codec::{MessageType, Protocol, ScanError, Ty};
use crate::wire::schema::read::wire_of;
use crate::wire::schema::types::ALL_VERSIONS;
use crate::wire::schema::{StructDef, T};

/// The reads of a table whose replies hms-guard can narrow. Every other read of a narrowed
/// table (counts, aggregates, statistics keyed by partition name, indexes…) is refused.
pub const NARROWABLE: &[&str] = &[
    "fetch_partition_names_req",
    "get_all_table_constraints",
    "get_check_constraints",
    "get_default_constraints",
    "get_fields",
    "get_fields_req",
    "get_fields_with_environment_context",
    "get_foreign_keys",
    "get_not_null_constraints",
    // A count of every partition, when every partition is given (otherwise counted by the
    // proxy: decision/narrowing.rs).
    "get_num_partitions_by_filter",
    "get_partition",
    "get_partition_by_name",
    "get_partition_column_statistics",
    "get_partition_names",
    "get_partition_names_ps",
    "get_partition_names_ps_req",
    "get_partition_names_req",
    "get_partition_req",
    "get_partition_values",
    "get_partition_with_auth",
    "get_partitions",
    "get_partitions_by_expr",
    "get_partitions_by_filter",
    "get_partitions_by_filter_req",
    "get_partitions_by_names",
    "get_partitions_by_names_req",
    "get_partitions_ps",
    "get_partitions_ps_with_auth",
    "get_partitions_ps_with_auth_req",
    "get_partitions_pspec",
    "get_partitions_req",
    "get_partitions_with_auth",
    "get_partitions_with_specs",
    "get_primary_keys",
    "get_schema",
    "get_schema_req",
    "get_schema_with_environment_context",
    "get_table",
    "get_table_column_statistics",
    "get_table_req",
    "get_table_statistics_req",
    "get_unique_constraints",
];

/// Whether a read's reply can be narrowed.
pub fn narrowable(method: &str) -> bool {
    NARROWABLE.binary_search(&method).is_ok()
}

/// Why a reply could not be narrowed.
#[derive(Debug, thiserror::Error)]
pub enum NarrowError {
    #[error("the reply cannot be read: {0}")]
    Scan(#[from] ScanError),
    #[error("{0}")]
    Param(#[from] ParamError),
    #[error("the reply carries {0}, which hms-guard does not know how to narrow")]
    Unknown(String),
    /// The reply is one object the caller may not read: the whole reply is withheld.
    #[error("the reply is a partition the user may not read")]
    Withheld,
}

/// The reply (unframed) to `method`, narrowed to `n`. Exceptions and other non-results pass
/// unchanged.
pub fn narrow_reply(
    protocol: Protocol,
    reply: &[u8],
    method: &str,
    n: &Narrowed,
    max_depth: usize,
) -> Result<BytesMut, NarrowError> {
    let def = crate::wire::schema::method(method)
        .ok_or_else(|| NarrowError::Unknown(format!("a reply to unknown method {method}")))?;
    let mut r = Reader::new(protocol, reply, max_depth);
    let h = r.message_begin()?;
    let mut w = Writer::with_capacity(protocol, reply.len());
    w.raw(&reply[..r.pos()]);
    if h.kind != MessageType::Reply {
        return Ok(BytesMut::from(reply));
    }
    let walk = Walk {
        n,
        protocol,
        names: method.contains("partition_names"),
    };
    walk.structure(&mut r, &mut w, def.result)?;
    Ok(w.finish(false))
}

/// One `Table` struct (the bytes of a listed element), narrowed to `n`.
pub fn narrow_table(
    protocol: Protocol,
    bytes: &[u8],
    n: &Narrowed,
    max_depth: usize,
) -> Result<BytesMut, NarrowError> {
    let def = match crate::wire::schema::method("get_table")
        .and_then(|m| m.result.field(0))
        .and_then(|f| f.ty.first())
    {
        Some(T::Struct(def)) => *def,
        _ => return Err(NarrowError::Unknown("the Table struct".into())),
    };
    let mut r = Reader::new(protocol, bytes, max_depth);
    let mut w = Writer::with_capacity(protocol, bytes.len());
    let walk = Walk {
        n,
        protocol,
        names: false,
    };
    walk.structure(&mut r, &mut w, def)?;
    Ok(w.finish(false))
}

struct Walk<'n> {
    n: &'n Narrowed,
    protocol: Protocol,
    /// The reply's strings in lists are partition names (`get_partition_names*`).
    names: bool,
}

/// The declared alternative of a field that travels as wire type `ty`.
fn declared(def: &StructDef, f: &Field) -> Result<&'static T, NarrowError> {
    let fd = def
        .field(f.id)
        .ok_or_else(|| NarrowError::Unknown(format!("field {} of {}", f.id, def.name)))?;
    fd.types_in(ALL_VERSIONS)
        .map(|(t, _)| t)
        .find(|t| wire_of(t) == f.ty.to_binary())
        .ok_or_else(|| {
            NarrowError::Unknown(format!("field {} of {} as {:?}", fd.name, def.name, f.ty))
        })
}

impl Walk<'_> {
    /// One struct (the reader at its beginning), written to `w`.
    fn structure(
        &self,
        r: &mut Reader<'_>,
        w: &mut Writer,
        def: &'static StructDef,
    ) -> Result<(), NarrowError> {
        r.struct_begin()?;
        w.struct_begin();
        while let Some(f) = r.field()? {
            let t = declared(def, &f)?;
            if f.ty == Ty::Bool {
                let b = r.bool(Some(&f))?;
                w.field_bool(f.id, b);
                continue;
            }
            if matches!(t, T::Struct(_)) && !self.keeps(r, t)? {
                return Err(NarrowError::Withheld);
            }
            w.field(f.ty, f.id);
            let is_params = def.field(f.id).is_some_and(|d| d.name == "parameters")
                && matches!(t, T::Map(T::String, T::String));
            if is_params {
                self.parameters(r, w)?;
            } else {
                self.value(r, w, t, Some(&f))?;
            }
        }
        w.struct_end();
        Ok(())
    }

    /// One value of declared type `t`, written to `w`: copied as it is when nothing inside it
    /// can be narrowed.
    fn value(
        &self,
        r: &mut Reader<'_>,
        w: &mut Writer,
        t: &'static T,
        f: Option<&Field>,
    ) -> Result<(), NarrowError> {
        match t {
            T::Struct(def) if !walked_inside(def) => {
                let span = r.skip(Ty::Struct, None)?;
                w.raw(&r.buf()[span]);
                Ok(())
            }
            T::Struct(def) => self.structure(r, w, def),
            T::List(e) | T::Set(e) => self.list(r, w, e),
            T::Map(k, v) => self.map(r, w, k, v),
            _ => {
                let ty = Ty::from_binary(wire_of(t))?;
                let span = r.skip(ty, f)?;
                w.raw(&r.buf()[span]);
                Ok(())
            }
        }
    }

    fn list(&self, r: &mut Reader<'_>, w: &mut Writer, e: &'static T) -> Result<(), NarrowError> {
        let (et, count) = r.list_begin()?;
        if et.to_binary() != wire_of(e) && count > 0 {
            return Err(NarrowError::Unknown(format!("a list of {et:?} for {e:?}")));
        }
        r.enter()?;
        if !self.droppable(e) {
            // Nothing in it can leave: the count stands, the elements are written in place.
            w.list_begin(et, count);
            for _ in 0..count {
                self.value(r, w, e, None)?;
            }
            r.leave();
            return Ok(());
        }
        let mut items = Writer::new(self.protocol);
        let mut kept = 0;
        for _ in 0..count {
            if self.keeps(r, e)? {
                self.value(r, &mut items, e, None)?;
                kept += 1;
            } else {
                r.skip(et, None)?;
            }
        }
        r.leave();
        w.list_begin(et, kept);
        w.raw(&items.out);
        Ok(())
    }

    fn map(
        &self,
        r: &mut Reader<'_>,
        w: &mut Writer,
        k: &'static T,
        v: &'static T,
    ) -> Result<(), NarrowError> {
        let (kt, vt, count) = r.map_begin()?;
        r.enter()?;
        w.map_begin(kt, vt, count);
        for _ in 0..count {
            self.value(r, w, k, None)?;
            self.value(r, w, v, None)?;
        }
        r.leave();
        Ok(())
    }

    /// A `parameters` map, narrowed.
    fn parameters(&self, r: &mut Reader<'_>, w: &mut Writer) -> Result<(), NarrowError> {
        let (_, _, count) = r.map_begin()?;
        r.enter()?;
        let mut entries: Vec<(&str, &str)> = Vec::with_capacity(count.min(1024));
        let text = |b| {
            std::str::from_utf8(b)
                .map_err(|_| NarrowError::Unknown("a parameter that is not UTF-8".into()))
        };
        for _ in 0..count {
            let k = text(r.string()?)?;
            let v = text(r.string()?)?;
            entries.push((k, v));
        }
        r.leave();
        let narrowed = params::narrow(&entries, &self.n.hidden)?;
        w.map_begin(Ty::String, Ty::String, narrowed.len());
        for (k, v) in &narrowed {
            w.string(k.as_bytes()).string(v.as_bytes());
        }
        Ok(())
    }

    /// Whether values of type `t` may be left out of a list (`keeps` may say no).
    fn droppable(&self, t: &'static T) -> bool {
        match t {
            T::String => self.names,
            T::Struct(def) => {
                matches!(
                    def.name,
                    "Partition"
                        | "PartitionWithoutSD"
                        | "PartitionValuesRow"
                        | "FieldSchema"
                        | "ColumnStatisticsObj"
                ) || def.name.starts_with("SQL")
            }
            _ => false,
        }
    }

    /// Whether the value at the reader (of declared type `t`) is shown: a partition the
    /// caller may read, a column not hidden, a constraint or statistic of one. Looks ahead
    /// without moving the reader.
    fn keeps(&self, r: &Reader<'_>, t: &'static T) -> Result<bool, NarrowError> {
        let n = self.n;
        match t {
            T::String if self.names => {
                let mut peek = r.clone();
                let name = peek.string_lossy()?;
                Ok(partition_values(&name, &n.keys).is_some_and(|v| n.rows.allows(&n.keys, &v)))
            }
            T::Struct(def) => {
                // Partition.values, PartitionWithoutSD.values, PartitionValuesRow.row: field 1.
                let by_values = |v: &crate::wire::codec::value::Value| {
                    n.rows.allows(&n.keys, &strings_at(v, &[1, EACH_ELEMENT]))
                };
                let hidden = |s: Option<&str>| s.is_some_and(|s| is_hidden(s, &n.hidden));
                let look = || -> Result<crate::wire::codec::value::Value, NarrowError> {
                    let mut peek = r.clone();
                    Ok(read_value(&mut peek, Ty::Struct, None)?)
                };
                Ok(match def.name {
                    "Partition" | "PartitionWithoutSD" | "PartitionValuesRow" => {
                        by_values(&look()?)
                    }
                    // FieldSchema.name, ColumnStatisticsObj.colName: read in place.
                    "FieldSchema" | "ColumnStatisticsObj" => {
                        let name = first_string(r)?;
                        !hidden(name.and_then(|b| std::str::from_utf8(b).ok()))
                    }
                    name if name.starts_with("SQL") => {
                        let v = look()?;
                        !def.fields.iter().any(|fd| {
                            fd.name.ends_with("column_name")
                                && hidden(v.field(fd.id).and_then(|v| v.as_str()))
                        })
                    }
                    _ => true,
                })
            }
            _ => Ok(true),
        }
    }
}

/// Structs whose values may be dropped or changed.
fn hooked(def: &StructDef) -> bool {
    matches!(
        def.name,
        "Table"
            | "Partition"
            | "PartitionWithoutSD"
            | "PartitionValuesRow"
            | "StorageDescriptor"
            | "SerDeInfo"
            | "FieldSchema"
            | "ColumnStatisticsObj"
    ) || def.name.starts_with("SQL")
}

/// Whether a struct must be walked field by field: it holds (at any depth) a struct that may
/// be dropped or changed, or a `parameters` map. Memoised per struct; a struct met again while
/// it is being decided (the schema is cyclic) counts as walked.
fn walked_inside(def: &'static StructDef) -> bool {
    use std::cell::RefCell;
    // The common leaves, without the memo: columns, sort orders, statistics objects.
    if matches!(
        def.name,
        "FieldSchema" | "Order" | "ColumnStatisticsObj" | "SkewedInfo" | "PrincipalPrivilegeSet"
    ) {
        return false;
    }
    use std::collections::HashMap;
    thread_local! {
        static MEMO: RefCell<HashMap<usize, bool>> = RefCell::new(HashMap::new());
    }
    fn mentions(t: &'static T, seen: &mut Vec<usize>) -> bool {
        match t {
            T::Struct(d) => hooked(d) || inside(d, seen),
            T::List(e) | T::Set(e) => mentions(e, seen),
            T::Map(k, v) => mentions(k, seen) || mentions(v, seen),
            _ => false,
        }
    }
    fn inside(def: &'static StructDef, seen: &mut Vec<usize>) -> bool {
        let key = def as *const StructDef as usize;
        if let Some(b) = MEMO.with(|m| m.borrow().get(&key).copied()) {
            return b;
        }
        if seen.contains(&key) {
            return true;
        }
        seen.push(key);
        let b = def.fields.iter().any(|f| {
            (f.name == "parameters" && f.ty.iter().any(|t| matches!(t, T::Map(..))))
                || f.ty.iter().any(|t| mentions(t, seen))
        });
        seen.pop();
        MEMO.with(|m| m.borrow_mut().insert(key, b));
        b
    }
    inside(def, &mut Vec::new())
}

/// Field 1 of the struct at the reader, if it is a string; the reader does not move. Java
/// writes fields in id order, so field 1 is read straight off the bytes when it comes first;
/// otherwise the struct is walked.
fn first_string<'a>(r: &Reader<'a>) -> Result<Option<&'a [u8]>, NarrowError> {
    let b = &r.buf()[r.pos()..];
    let direct = match r.protocol() {
        // T_STRING (11), id 1, i32 length.
        Protocol::Binary if b.len() >= 7 && b[..3] == [11, 0, 1] => {
            let n = i32::from_be_bytes([b[3], b[4], b[5], b[6]]);
            usize::try_from(n).ok().and_then(|n| b.get(7..7 + n))
        }
        // Delta 1, BINARY (8), then a one-byte varint length.
        Protocol::Compact if b.len() >= 2 && b[0] == 0x18 && b[1] < 0x80 => {
            b.get(2..2 + usize::from(b[1]))
        }
        _ => None,
    };
    if direct.is_some() {
        return Ok(direct);
    }
    let mut peek = r.clone();
    peek.struct_begin()?;
    while let Some(f) = peek.field()? {
        if f.id == 1 && f.ty == Ty::String {
            return Ok(Some(peek.string()?));
        }
        peek.skip(f.ty, Some(&f))?;
    }
    Ok(None)
}

/// A partition name's values (`k1=v1/k2=v2`, each part escaped as the metastore escapes
/// path names: `%XX`), in key order; `None` if it does not name exactly these keys.
pub fn partition_values(name: &str, keys: &[(String, String)]) -> Option<Vec<String>> {
    let parts: Vec<&str> = name.split('/').collect();
    if parts.len() != keys.len() {
        return None;
    }
    parts
        .iter()
        .zip(keys)
        .map(|(p, (k, _))| {
            let (key, value) = p.split_once('=')?;
            (unescape(key)?.eq_ignore_ascii_case(k)).then_some(())?;
            unescape(value)
        })
        .collect()
}

/// `%XX` escapes undone; `None` for a malformed escape or bytes that are not UTF-8.
fn unescape(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}
