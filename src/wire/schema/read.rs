//! Schema-exact reading of a request: the values the metastore's generated Java code will read
//! from the same bytes, or a refusal naming why the two could differ.
//!
//! The Java reader (libthrift `TBinaryProtocol`/`TCompactProtocol` and the generated
//! `*_args` classes) reads every known field by its *declared* type, keeps the last of a
//! repeated field id, reads container elements by the declared element type whatever the
//! container header says, reads a bool as `byte == 1`, keeps the last of repeated map keys,
//! reads one field of a union and then one more field header, and fails part-way on a missing
//! required field or a wire type it does not know — leaving the rest of the bytes to be read as
//! a new call. Each of those is a place where a second reader could see another call than the
//! metastore does. This reader accepts a message only where that cannot happen:
//!
//! - every known field carries one of its declared wire types, at every depth (list/set element
//!   types, map key and value types);
//! - no field id appears twice in a struct, no key twice in a map;
//! - bools are 0 or 1 (binary) or 1 or 2 (compact containers);
//! - `string` values are valid UTF-8, enum values are values of the enum;
//! - unions hold exactly one field; required fields are present;
//! - only wire types the metastore's Thrift knows (no UUID), varints within their width;
//! - the message ends exactly where its args struct ends.
//!
//! Unknown field ids (newer clients) are skipped by their wire type, as Java skips them, and
//! stay in the forwarded bytes untouched. Reading is linear in the size of the message and
//! allocates only for values it keeps (`build`), never from a count read off the wire.

use std::collections::HashSet;
use std::fmt;

use crate::wire::codec::header::{self, MessageHeader, MessageType};
use crate::wire::codec::value::Value;
use crate::wire::codec::Protocol;

use super::types::{version_label, Kind, StructDef, T};

/// Why a request is refused: the metastore could read it differently from hms-guard, or would
/// fail part-way through it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    pub kind: RejectKind,
    /// Where in the call (`get_table_args.dbname`, `Table.sd.cols[2].name`), innermost last.
    pub at: Vec<String>,
}

/// The class of a refusal (the metric label is `as_str`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RejectKind {
    /// The message ends inside a value.
    Truncated,
    /// Bytes follow the end of the args struct inside the message.
    TrailingBytes(usize),
    /// A wire type id the metastore's Thrift does not know (or UUID).
    UnknownWireType(u8),
    /// A known field, element, key or value with another wire type than declared.
    WrongType {
        expected: &'static str,
        got: &'static str,
    },
    DuplicateField(i16),
    DuplicateKey,
    /// A set element twice (Java's `HashSet` keeps one).
    DuplicateElement,
    BadBool(u8),
    BadUtf8,
    /// A field that a version reading the call requires is absent (or of a type that
    /// version skips): (field, version).
    MissingRequired(&'static str, &'static str),
    UnknownEnum(i32),
    /// A union with other than exactly one field.
    UnionFields(usize),
    /// A negative size, or a varint wider than its type.
    BadNumber(&'static str),
    /// A declared count larger than the bytes left.
    CountTooLarge(u64),
    TooDeep(usize),
    /// The method name is not UTF-8.
    MethodName,
    /// CALL for a two-way method, ONEWAY only for a oneway one.
    MessageType {
        got: MessageType,
        expected: MessageType,
    },
    /// A header the codec refuses.
    Header(String),
}

impl RejectKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            RejectKind::Truncated => "truncated",
            RejectKind::TrailingBytes(_) => "trailing_bytes",
            RejectKind::UnknownWireType(_) => "wire_type",
            RejectKind::WrongType { .. } => "field_type",
            RejectKind::DuplicateField(_) => "duplicate_field",
            RejectKind::DuplicateKey => "duplicate_key",
            RejectKind::DuplicateElement => "duplicate_element",
            RejectKind::BadBool(_) => "bool",
            RejectKind::BadUtf8 => "utf8",
            RejectKind::MissingRequired(..) => "required_field",
            RejectKind::UnknownEnum(_) => "enum",
            RejectKind::UnionFields(_) => "union",
            RejectKind::BadNumber(_) => "number",
            RejectKind::CountTooLarge(_) => "count",
            RejectKind::TooDeep(_) => "depth",
            RejectKind::MethodName => "method_name",
            RejectKind::MessageType { .. } => "message_type",
            RejectKind::Header(_) => "header",
        }
    }
}

impl fmt::Display for Reject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            RejectKind::Truncated => write!(f, "the message ends in the middle of a value")?,
            RejectKind::TrailingBytes(n) => {
                write!(f, "{n} bytes follow the end of the call's arguments")?
            }
            RejectKind::UnknownWireType(t) => write!(f, "unknown Thrift wire type {t}")?,
            RejectKind::WrongType { expected, got } => {
                write!(f, "wire type {got} where the schema declares {expected}")?
            }
            RejectKind::DuplicateField(id) => write!(f, "field id {id} appears twice")?,
            RejectKind::DuplicateKey => write!(f, "a map key appears twice")?,
            RejectKind::DuplicateElement => write!(f, "a set element appears twice")?,
            RejectKind::BadBool(b) => write!(f, "bool encoded as {b}")?,
            RejectKind::BadUtf8 => write!(f, "a string is not valid UTF-8")?,
            RejectKind::MissingRequired(name, version) => write!(
                f,
                "required field {name} is missing (or not of the type Hive {version} requires)"
            )?,
            RejectKind::UnknownEnum(v) => write!(f, "{v} is not a value of the enum")?,
            RejectKind::UnionFields(n) => {
                write!(f, "a union must hold exactly one field, this one holds {n}")?
            }
            RejectKind::BadNumber(what) => write!(f, "{what}")?,
            RejectKind::CountTooLarge(n) => {
                write!(f, "a declared count of {n} exceeds the bytes left")?
            }
            RejectKind::TooDeep(d) => write!(f, "nesting deeper than {d}")?,
            RejectKind::MethodName => write!(f, "the method name is not UTF-8")?,
            RejectKind::MessageType { got, expected } => write!(
                f,
                "message type {got:?} for a method that takes {expected:?}"
            )?,
            RejectKind::Header(e) => write!(f, "{e}")?,
        }
        if !self.at.is_empty() {
            write!(f, " (at {})", self.at.join("."))?;
        }
        Ok(())
    }
}

impl std::error::Error for Reject {}

impl Reject {
    fn new(kind: RejectKind) -> Reject {
        Reject {
            kind,
            at: Vec::new(),
        }
    }

    /// Adds an outer step to the location (errors travel outward).
    fn within(mut self, step: impl FnOnce() -> String) -> Reject {
        self.at.insert(0, step());
        self
    }
}

fn reject<V>(kind: RejectKind) -> Result<V, Reject> {
    Err(Reject::new(kind))
}

/// Wire types, binary numbering.
const BOOL: u8 = 2;
const BYTE: u8 = 3;
const DOUBLE: u8 = 4;
const I16: u8 = 6;
const I32: u8 = 8;
const I64: u8 = 10;
const STRING: u8 = 11;
const STRUCT: u8 = 12;
const MAP: u8 = 13;
const SET: u8 = 14;
const LIST: u8 = 15;

fn wire_name(t: u8) -> &'static str {
    match t {
        BOOL => "bool",
        BYTE => "byte",
        DOUBLE => "double",
        I16 => "i16",
        I32 => "i32",
        I64 => "i64",
        STRING => "string",
        STRUCT => "struct",
        MAP => "map",
        SET => "set",
        LIST => "list",
        _ => "unknown",
    }
}

/// The wire type a declared type travels as.
pub(crate) fn wire_of(t: &T) -> u8 {
    match t {
        T::Bool => BOOL,
        T::Byte => BYTE,
        T::I16 => I16,
        T::I32 | T::Enum(_) => I32,
        T::I64 => I64,
        T::Double => DOUBLE,
        T::String | T::Binary => STRING,
        T::Struct(_) => STRUCT,
        T::List(_) => LIST,
        T::Set(_) => SET,
        T::Map(..) => MAP,
    }
}

/// Limits of one read.
#[derive(Debug, Clone, Copy)]
pub struct ReadLimits {
    pub max_depth: usize,
    pub max_name_bytes: usize,
    /// The metastore versions the request must be read exactly as (bits of `types`): one
    /// version reads it as that version's generated code does; several (`ALL_VERSIONS`) accept
    /// only what every one of them reads to its end without failing.
    pub versions: u8,
}

/// A request read as the metastore will read it.
#[derive(Debug, Clone)]
pub struct Call {
    pub header: MessageHeader,
    /// The args struct's fields (known fields only; empty unless built).
    pub args: Value,
}

/// A field header: its wire type (binary numbering) and id; compact bools carry their value.
struct FieldHead {
    wire: u8,
    id: i16,
    compact_bool: Option<bool>,
}

struct Rd<'a> {
    protocol: Protocol,
    buf: &'a [u8],
    pos: usize,
    depth: usize,
    max_depth: usize,
    versions: u8,
}

impl<'a> Rd<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Reject> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| Reject::new(RejectKind::Truncated))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn byte(&mut self) -> Result<u8, Reject> {
        Ok(self.take(1)?[0])
    }

    fn left(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// An unsigned varint of at most `bits` bits (Java reads wider ones with bits lost).
    fn varint(&mut self, bits: u32) -> Result<u64, Reject> {
        let mut v: u64 = 0;
        let mut shift = 0u32;
        loop {
            let b = self.byte()?;
            let part = u64::from(b & 0x7f);
            if shift >= bits || (bits - shift < 7 && part >> (bits - shift) != 0) {
                return reject(RejectKind::BadNumber("a varint wider than its type"));
            }
            v |= part << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
            shift += 7;
        }
    }

    fn zigzag32(&mut self) -> Result<i32, Reject> {
        let z = self.varint(32)? as u32;
        Ok((z >> 1) as i32 ^ -((z & 1) as i32))
    }

    fn zigzag64(&mut self) -> Result<i64, Reject> {
        let z = self.varint(64)?;
        Ok((z >> 1) as i64 ^ -((z & 1) as i64))
    }

    fn i16(&mut self) -> Result<i16, Reject> {
        match self.protocol {
            Protocol::Binary => {
                let b = self.take(2)?;
                Ok(i16::from_be_bytes([b[0], b[1]]))
            }
            Protocol::Compact => i16::try_from(self.zigzag32()?)
                .or_else(|_| reject(RejectKind::BadNumber("an i16 out of range"))),
        }
    }

    fn i32(&mut self) -> Result<i32, Reject> {
        match self.protocol {
            Protocol::Binary => {
                let b = self.take(4)?;
                Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            }
            Protocol::Compact => self.zigzag32(),
        }
    }

    fn i64(&mut self) -> Result<i64, Reject> {
        match self.protocol {
            Protocol::Binary => {
                let b = self.take(8)?;
                Ok(i64::from_be_bytes([
                    b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7],
                ]))
            }
            Protocol::Compact => self.zigzag64(),
        }
    }

    /// A size or length: non-negative i32, and no more than the bytes left.
    fn size(&mut self) -> Result<usize, Reject> {
        let n = match self.protocol {
            Protocol::Binary => i64::from(self.i32()?),
            Protocol::Compact => self.varint(32)? as u32 as i32 as i64,
        };
        self.check_size(n)
    }

    fn check_size(&self, n: i64) -> Result<usize, Reject> {
        if n < 0 {
            return reject(RejectKind::BadNumber("a negative size"));
        }
        if n as u64 > self.left() as u64 {
            return reject(RejectKind::CountTooLarge(n as u64));
        }
        Ok(n as usize)
    }

    fn bytes(&mut self) -> Result<&'a [u8], Reject> {
        let n = self.size()?;
        self.take(n)
    }

    /// A compact type nibble, as binary numbering (bool for both 1 and 2).
    fn compact_type(n: u8) -> Result<u8, Reject> {
        Ok(match n {
            1 | 2 => BOOL,
            3 => BYTE,
            4 => I16,
            5 => I32,
            6 => I64,
            7 => DOUBLE,
            8 => STRING,
            9 => LIST,
            10 => SET,
            11 => MAP,
            12 => STRUCT,
            other => return reject(RejectKind::UnknownWireType(other)),
        })
    }

    fn binary_type(b: u8) -> Result<u8, Reject> {
        match b {
            BOOL | BYTE | DOUBLE | I16 | I32 | I64 | STRING | STRUCT | MAP | SET | LIST => Ok(b),
            other => reject(RejectKind::UnknownWireType(other)),
        }
    }

    /// The next field header, `None` at STOP. `last` is the previous field id (compact deltas).
    fn field(&mut self, last: i16) -> Result<Option<FieldHead>, Reject> {
        let b = self.byte()?;
        if b == 0 {
            return Ok(None);
        }
        match self.protocol {
            Protocol::Binary => {
                let wire = Self::binary_type(b)?;
                let id = self.i16()?;
                Ok(Some(FieldHead {
                    wire,
                    id,
                    compact_bool: None,
                }))
            }
            Protocol::Compact => {
                let nibble = b & 0x0f;
                let wire = Self::compact_type(nibble)?;
                let delta = b >> 4;
                let id = if delta == 0 {
                    self.i16()?
                } else {
                    last.checked_add(i16::from(delta)).ok_or_else(|| {
                        Reject::new(RejectKind::BadNumber("a field id delta past i16"))
                    })?
                };
                Ok(Some(FieldHead {
                    wire,
                    id,
                    compact_bool: (wire == BOOL).then_some(nibble == 1),
                }))
            }
        }
    }

    /// List or set header: element wire type and count.
    fn list_head(&mut self) -> Result<(u8, usize), Reject> {
        match self.protocol {
            Protocol::Binary => {
                let et = Self::binary_type(self.byte()?)?;
                Ok((et, self.size()?))
            }
            Protocol::Compact => {
                let b = self.byte()?;
                let et = Self::compact_type(b & 0x0f)?;
                let n = if b >> 4 == 0x0f {
                    self.size()?
                } else {
                    self.check_size(i64::from(b >> 4))?
                };
                Ok((et, n))
            }
        }
    }

    /// Map header: key and value wire types (`None` for an empty compact map, which carries
    /// none) and count.
    fn map_head(&mut self) -> Result<(Option<(u8, u8)>, usize), Reject> {
        match self.protocol {
            Protocol::Binary => {
                let k = Self::binary_type(self.byte()?)?;
                let v = Self::binary_type(self.byte()?)?;
                Ok((Some((k, v)), self.size()?))
            }
            Protocol::Compact => {
                let n = self.size()?;
                if n == 0 {
                    return Ok((None, 0));
                }
                let kv = self.byte()?;
                let k = Self::compact_type(kv >> 4)?;
                let v = Self::compact_type(kv & 0x0f)?;
                Ok((Some((k, v)), n))
            }
        }
    }

    fn enter(&mut self) -> Result<(), Reject> {
        if self.depth >= self.max_depth {
            return reject(RejectKind::TooDeep(self.max_depth));
        }
        self.depth += 1;
        Ok(())
    }

    fn leave(&mut self) {
        self.depth -= 1;
    }

    /// A bool value: a compact field's is in its header; elsewhere one byte.
    fn bool(&mut self, head: Option<&FieldHead>) -> Result<bool, Reject> {
        if let Some(v) = head.and_then(|h| h.compact_bool) {
            return Ok(v);
        }
        let b = self.byte()?;
        match (self.protocol, b) {
            (Protocol::Binary, 0) | (Protocol::Compact, 2) => Ok(false),
            (Protocol::Binary, 1) | (Protocol::Compact, 1) => Ok(true),
            _ => reject(RejectKind::BadBool(b)),
        }
    }

    /// Skips a value of an unknown field by its wire type, as Java's `TProtocolUtil.skip`
    /// does (every wire type and bool still checked).
    fn skip(&mut self, wire: u8, head: Option<&FieldHead>) -> Result<(), Reject> {
        match wire {
            BOOL => {
                self.bool(head)?;
            }
            BYTE => {
                self.take(1)?;
            }
            DOUBLE => {
                self.take(8)?;
            }
            I16 => {
                self.i16()?;
            }
            I32 => {
                self.i32()?;
            }
            I64 => {
                self.i64()?;
            }
            STRING => {
                self.bytes()?;
            }
            STRUCT => {
                self.enter()?;
                let mut last = 0;
                let mut seen = Seen::default();
                while let Some(f) = self.field(last)? {
                    last = f.id;
                    if !seen.insert(f.id) {
                        return reject(RejectKind::DuplicateField(f.id));
                    }
                    self.skip(f.wire, Some(&f))?;
                }
                self.leave();
            }
            LIST | SET => {
                let (et, n) = self.list_head()?;
                self.enter()?;
                for _ in 0..n {
                    self.skip(et, None)?;
                }
                self.leave();
            }
            MAP => {
                let (kv, n) = self.map_head()?;
                self.enter()?;
                if let Some((k, v)) = kv {
                    for _ in 0..n {
                        self.skip(k, None)?;
                        self.skip(v, None)?;
                    }
                }
                self.leave();
            }
            other => return reject(RejectKind::UnknownWireType(other)),
        }
        Ok(())
    }

    /// Reads a value of declared type `t` (its wire type already matched).
    // Long: one match over the declared types, kept whole on the hot decode path.
    fn value(
        &mut self,
        t: &'static T,
        head: Option<&FieldHead>,
        build: bool,
    ) -> Result<Value, Reject> {
        let placeholder = || Value::Struct(Vec::new());
        Ok(match t {
            T::Bool => Value::Bool(self.bool(head)?),
            T::Byte => Value::Int(i64::from(self.byte()? as i8)),
            T::I16 => Value::Int(i64::from(self.i16()?)),
            T::I32 => Value::Int(i64::from(self.i32()?)),
            T::Enum(e) => {
                let v = self.i32()?;
                if !e.contains(v) {
                    return reject(RejectKind::UnknownEnum(v))
                        .map_err(|r: Reject| r.within(|| e.name.to_string()));
                }
                Value::Int(i64::from(v))
            }
            T::I64 => Value::Int(self.i64()?),
            T::Double => {
                let b: [u8; 8] = self.take(8)?.try_into().expect("8 bytes");
                Value::Double(match self.protocol {
                    Protocol::Binary => f64::from_be_bytes(b),
                    Protocol::Compact => f64::from_le_bytes(b),
                })
            }
            T::String => {
                let s = self.bytes()?;
                if std::str::from_utf8(s).is_err() {
                    return reject(RejectKind::BadUtf8);
                }
                if build {
                    Value::Bytes(s.to_vec())
                } else {
                    placeholder()
                }
            }
            T::Binary => {
                let s = self.bytes()?;
                if build {
                    Value::Bytes(s.to_vec())
                } else {
                    placeholder()
                }
            }
            T::Struct(def) => self.structure(def, build)?,
            T::List(et) | T::Set(et) => {
                let (wire, n) = self.list_head()?;
                let expected = wire_of(et);
                if wire != expected {
                    return reject(RejectKind::WrongType {
                        expected: wire_name(expected),
                        got: wire_name(wire),
                    })
                    .map_err(|r: Reject| r.within(|| "[elements]".to_string()));
                }
                self.enter()?;
                let set = matches!(t, T::Set(_));
                let mut items = Vec::with_capacity(if build || set { n.min(1024) } else { 0 });
                let mut seen: HashSet<Vec<u8>> = HashSet::new();
                for i in 0..n {
                    // Set elements are always decoded: Java's `HashSet` keeps one of repeats.
                    let v = self
                        .value(et, None, build || set)
                        .map_err(|r| r.within(|| format!("[{i}]")))?;
                    if set && !seen.insert(v.canonical()) {
                        return reject(RejectKind::DuplicateElement)
                            .map_err(|r: Reject| r.within(|| format!("[{i}]")));
                    }
                    if build {
                        items.push(v);
                    }
                }
                self.leave();
                Value::List(items)
            }
            T::Map(kt, vt) => {
                let (kv, n) = self.map_head()?;
                let (ek, ev) = (wire_of(kt), wire_of(vt));
                if let Some((k, v)) = kv {
                    for (got, expected, what) in [(k, ek, "[keys]"), (v, ev, "[values]")] {
                        if got != expected {
                            return reject(RejectKind::WrongType {
                                expected: wire_name(expected),
                                got: wire_name(got),
                            })
                            .map_err(|r: Reject| r.within(|| what.to_string()));
                        }
                    }
                }
                self.enter()?;
                let mut keys: HashSet<Vec<u8>> = HashSet::with_capacity(n.min(1024));
                let mut items = Vec::with_capacity(if build { n.min(1024) } else { 0 });
                for i in 0..n {
                    // Keys are always decoded: Java keeps the last of repeated keys.
                    let k = self
                        .value(kt, None, true)
                        .map_err(|r| r.within(|| format!("[key {i}]")))?;
                    if !keys.insert(k.canonical()) {
                        let shown = k.as_str().map(|s| format!("[{s:?}]"));
                        return reject(RejectKind::DuplicateKey).map_err(|r: Reject| {
                            r.within(|| shown.unwrap_or_else(|| format!("[key {i}]")))
                        });
                    }
                    let v = self
                        .value(vt, None, build)
                        .map_err(|r| r.within(|| format!("[value {i}]")))?;
                    if build {
                        items.push((k, v));
                    }
                }
                self.leave();
                Value::Map(items)
            }
        })
    }

    /// Reads a struct, union or exception of definition `def`.
    fn structure(&mut self, def: &'static StructDef, build: bool) -> Result<Value, Reject> {
        self.enter()?;
        let mut fields = Vec::new();
        let mut seen = Seen::default();
        let mut known = KnownSeen::new(def.fields.len());
        let mut count = 0usize;
        let mut last = 0i16;
        while let Some(f) = self.field(last)? {
            last = f.id;
            count += 1;
            if !seen.insert(f.id) {
                return reject(RejectKind::DuplicateField(f.id))
                    .map_err(|r: Reject| r.within(|| def.name.to_string()));
            }
            if def.kind == Kind::Union && count > 1 {
                return reject(RejectKind::UnionFields(count))
                    .map_err(|r: Reject| r.within(|| def.name.to_string()));
            }
            let Ok(idx) = def.fields.binary_search_by_key(&f.id, |fd| fd.id) else {
                // Unknown field id: skipped by wire type, as Java skips it.
                self.skip(f.wire, Some(&f))
                    .map_err(|r| r.within(|| format!("{}.<field {}>", def.name, f.id)))?;
                continue;
            };
            let fd = &def.fields[idx];
            let step = || format!("{}.{}", def.name, fd.name);
            // Only the alternatives the versions read declare; a field none of them declares
            // is unknown to them, and skipped as Java skips it.
            let Some((first, _)) = fd.types_in(self.versions).next() else {
                self.skip(f.wire, Some(&f)).map_err(|r| r.within(step))?;
                continue;
            };
            // Where versions declare `string` and `binary` for one field, any bytes are
            // accepted (`binary` first).
            let matching = || {
                fd.types_in(self.versions)
                    .filter(|(t, _)| wire_of(t) == f.wire)
            };
            let read_by: u8 = matching().fold(0, |acc, (_, v)| acc | v);
            let Some((t, _)) = matching()
                .find(|(t, _)| matches!(t, T::Binary))
                .or_else(|| matching().next())
            else {
                return reject(RejectKind::WrongType {
                    expected: wire_name(wire_of(first)),
                    got: wire_name(f.wire),
                })
                .map_err(|r: Reject| r.within(step));
            };
            known.set(idx, read_by);
            let v = self.value(t, Some(&f), build).map_err(|r| r.within(step))?;
            if build {
                fields.push((f.id, v));
            }
        }
        self.leave();
        if def.kind == Kind::Union && count != 1 {
            return reject(RejectKind::UnionFields(count))
                .map_err(|r: Reject| r.within(|| def.name.to_string()));
        }
        for (i, fd) in def.fields.iter().enumerate() {
            // Each version that requires the field must have read it with its own type.
            let unread = fd.required_in & self.versions & !known.get(i);
            if unread != 0 {
                let version = version_label(1 << unread.trailing_zeros());
                return reject(RejectKind::MissingRequired(fd.name, version))
                    .map_err(|r: Reject| r.within(|| def.name.to_string()));
            }
        }
        Ok(Value::Struct(fields))
    }
}

/// Field ids seen in one struct: linear time whatever the count.
#[derive(Default)]
struct Seen {
    small: Vec<i16>,
    large: Option<HashSet<i16>>,
}

impl Seen {
    /// `false` if `id` was already seen.
    fn insert(&mut self, id: i16) -> bool {
        if let Some(set) = &mut self.large {
            return set.insert(id);
        }
        if self.small.contains(&id) {
            return false;
        }
        self.small.push(id);
        if self.small.len() > 16 {
            self.large = Some(self.small.drain(..).collect());
        }
        true
    }
}

/// Which of a definition's fields were read, and by which versions (bits).
struct KnownSeen {
    first: [u8; 32],
    more: Vec<u8>,
}

impl KnownSeen {
    fn new(n: usize) -> KnownSeen {
        KnownSeen {
            first: [0; 32],
            more: vec![0; n.saturating_sub(32)],
        }
    }

    fn set(&mut self, i: usize, versions: u8) {
        match self.first.get_mut(i) {
            Some(b) => *b = versions,
            None => self.more[i - 32] = versions,
        }
    }

    /// The versions that read field `i` (0: none).
    fn get(&self, i: usize) -> u8 {
        match self.first.get(i) {
            Some(b) => *b,
            None => self.more[i - 32],
        }
    }
}

/// Reads a whole request message (unframed) of a method the schema knows, checking its
/// message type. With `build`, the args' values are kept (for calls the policy decides).
pub fn read_call(
    protocol: Protocol,
    message: &[u8],
    method: &'static super::MethodDef,
    limits: ReadLimits,
    build: bool,
) -> Result<Call, Reject> {
    let header = read_header(protocol, message, limits)?;
    let expected = if method.oneway {
        MessageType::Oneway
    } else {
        MessageType::Call
    };
    if header.kind != expected {
        return reject(RejectKind::MessageType {
            got: header.kind,
            expected,
        });
    }
    let mut r = Rd {
        protocol,
        buf: message,
        pos: header.len,
        depth: 0,
        max_depth: limits.max_depth,
        versions: limits.versions,
    };
    let args = r.structure(method.args, build)?;
    if r.pos != message.len() {
        return reject(RejectKind::TrailingBytes(message.len() - r.pos));
    }
    Ok(Call { header, args })
}

/// Reads and checks a request's header (strict, with a UTF-8 method name).
pub fn read_header(
    protocol: Protocol,
    message: &[u8],
    limits: ReadLimits,
) -> Result<MessageHeader, Reject> {
    match header::parse(protocol, message, limits.max_name_bytes) {
        Ok(Some(h)) => Ok(h),
        Ok(None) => reject(RejectKind::Truncated),
        Err(crate::wire::codec::ScanError::MethodNameNotUtf8) => reject(RejectKind::MethodName),
        Err(e) => reject(RejectKind::Header(e.to_string())),
    }
}

/// Checks a request of a method the schema does not know: the metastore skips its args by wire
/// type (and answers "unknown method"), so only wire types, bools, sizes and the end are checked.
pub fn read_unknown(
    protocol: Protocol,
    message: &[u8],
    limits: ReadLimits,
) -> Result<MessageHeader, Reject> {
    let header = read_header(protocol, message, limits)?;
    // The metastore answers an unknown method whatever the message type: only a CALL waits
    // for that answer.
    if header.kind != MessageType::Call {
        return reject(RejectKind::MessageType {
            got: header.kind,
            expected: MessageType::Call,
        });
    }
    let mut r = Rd {
        protocol,
        buf: message,
        pos: header.len,
        depth: 0,
        max_depth: limits.max_depth,
        versions: limits.versions,
    };
    r.skip(STRUCT, None)?;
    if r.pos != message.len() {
        return reject(RejectKind::TrailingBytes(message.len() - r.pos));
    }
    Ok(header)
}
