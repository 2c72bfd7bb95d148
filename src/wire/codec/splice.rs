//! Changing one field of a request in place, for the few calls the proxy must change before
//! they go upstream (the owner of an object a user creates). Every other byte of the message —
//! unknown fields of newer clients included — stays as the client wrote it.
//!
//! The field's value bytes are replaced where it is present; where it is absent it is added
//! as the last field of its struct, right before the STOP (in the compact protocol with a
//! long-form header, so no following field's id delta changes). The message must already have
//! been read schema-exact: well-formed, no repeated ids.

use bytes::{BufMut, BytesMut};

use super::reader::Reader;
use super::wire::{put_varint, zigzag32, Protocol, ScanError, Ty};
use super::writer::Writer;

/// A new value for a field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NewValue {
    String(Vec<u8>),
    I32(i32),
    /// A `list<struct>` whose structs hold only string fields (`FieldSchema`s: id, bytes).
    StringStructs(Vec<Vec<(i16, Vec<u8>)>>),
    /// A `map<string,string>`.
    StringMap(Vec<(String, String)>),
}

impl NewValue {
    fn ty(&self) -> Ty {
        match self {
            NewValue::String(_) => Ty::String,
            NewValue::I32(_) => Ty::I32,
            NewValue::StringStructs(_) => Ty::List,
            NewValue::StringMap(_) => Ty::Map,
        }
    }

    fn encode(&self, protocol: Protocol, out: &mut BytesMut) {
        let mut w = Writer::new(protocol);
        match self {
            NewValue::StringStructs(items) => {
                w.list_begin(Ty::Struct, items.len());
                for fields in items {
                    w.struct_begin();
                    for (id, s) in fields {
                        w.field(Ty::String, *id).string(s);
                    }
                    w.struct_end();
                }
                out.put_slice(&w.out);
                return;
            }
            NewValue::StringMap(entries) => {
                w.map_begin(Ty::String, Ty::String, entries.len());
                for (k, v) in entries {
                    w.string(k.as_bytes()).string(v.as_bytes());
                }
                out.put_slice(&w.out);
                return;
            }
            _ => {}
        }
        match (self, protocol) {
            (NewValue::String(s), Protocol::Binary) => {
                out.put_i32(s.len() as i32);
                out.put_slice(s);
            }
            (NewValue::String(s), Protocol::Compact) => {
                put_varint(out, s.len() as u64);
                out.put_slice(s);
            }
            (NewValue::I32(v), Protocol::Binary) => out.put_i32(*v),
            (NewValue::I32(v), Protocol::Compact) => put_varint(out, zigzag32(*v)),
            (NewValue::StringStructs(_) | NewValue::StringMap(_), _) => {
                unreachable!("written above")
            }
        }
    }
}

/// What to do with the field when it is absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfAbsent {
    Add,
    Leave,
}

/// Why a field could not be set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpliceError {
    #[error("the message cannot be walked: {0}")]
    Scan(#[from] ScanError),
    #[error("field {0} is not a struct")]
    NotAStruct(i16),
    #[error("field {0} is not a list")]
    NotAList(i16),
    #[error("field {id} has wire type {got:?}, not {want:?}")]
    WrongType { id: i16, got: Ty, want: Ty },
    #[error("the path is empty")]
    EmptyPath,
}

/// Path step meaning "in every element of this list" (the router's `EACH`).
pub const EACH_ELEMENT: i16 = i16::MIN;

/// `message` (a whole unframed request) with the field at `path` (field ids from the args
/// struct inward; `EACH_ELEMENT` steps into every struct of a list) set to `value`. An absent
/// intermediate struct leaves that part of the message unchanged, as does an absent field with
/// `IfAbsent::Leave`; `Ok(None)` when nothing changed.
pub fn set_field(
    protocol: Protocol,
    message: &[u8],
    path: &[i16],
    value: &NewValue,
    if_absent: IfAbsent,
    max_depth: usize,
) -> Result<Option<BytesMut>, SpliceError> {
    if path.is_empty() || path.last() == Some(&EACH_ELEMENT) {
        return Err(SpliceError::EmptyPath);
    }
    let mut r = Reader::new(protocol, message, max_depth);
    r.message_begin()?;
    r.struct_begin()?;
    let mut encoded = BytesMut::new();
    value.encode(protocol, &mut encoded);
    let target = Target {
        value,
        encoded: &encoded,
        if_absent,
    };
    let mut edits = Vec::new();
    edit_struct(&mut r, path, &target, &mut edits)?;
    if edits.is_empty() {
        return Ok(None);
    }
    let mut out = BytesMut::with_capacity(message.len() + edits.len() * (encoded.len() + 4));
    let mut at = 0;
    for e in edits {
        out.put_slice(&message[at..e.start]);
        out.put_slice(&e.bytes);
        at = e.end;
    }
    out.put_slice(&message[at..]);
    Ok(Some(out))
}

/// The value to write and how.
struct Target<'a> {
    value: &'a NewValue,
    encoded: &'a [u8],
    if_absent: IfAbsent,
}

/// Bytes `start..end` of the message replaced by `bytes` (an insertion when empty).
struct Edit {
    start: usize,
    end: usize,
    bytes: Vec<u8>,
}

/// Walks one struct (the reader just past its beginning) to its STOP, recording the edits that
/// set the field at `path` in it, in message order.
fn edit_struct(
    r: &mut Reader<'_>,
    path: &[i16],
    t: &Target<'_>,
    edits: &mut Vec<Edit>,
) -> Result<(), SpliceError> {
    let (&id, rest) = path.split_first().ok_or(SpliceError::EmptyPath)?;
    let mut found = false;
    while let Some(f) = r.field()? {
        if f.id != id {
            r.skip(f.ty, Some(&f))?;
            continue;
        }
        found = true;
        match rest {
            [] => {
                if f.ty != t.value.ty() {
                    return Err(SpliceError::WrongType {
                        id: f.id,
                        got: f.ty,
                        want: t.value.ty(),
                    });
                }
                let span = r.skip(f.ty, Some(&f))?;
                edits.push(Edit {
                    start: span.start,
                    end: span.end,
                    bytes: t.encoded.to_vec(),
                });
            }
            [EACH_ELEMENT, tail @ ..] => {
                if f.ty != Ty::List {
                    return Err(SpliceError::NotAList(id));
                }
                let (elem, n) = r.list_begin()?;
                if elem != Ty::Struct {
                    return Err(SpliceError::NotAStruct(id));
                }
                r.enter()?;
                for _ in 0..n {
                    r.struct_begin()?;
                    edit_struct(r, tail, t, edits)?;
                }
                r.leave();
            }
            _ => {
                if f.ty != Ty::Struct {
                    return Err(SpliceError::NotAStruct(id));
                }
                r.struct_begin()?;
                edit_struct(r, rest, t, edits)?;
            }
        }
    }
    if found || !rest.is_empty() || t.if_absent == IfAbsent::Leave {
        return Ok(());
    }
    // At the struct's STOP (the byte just read): the new field goes before it.
    let stop = r.pos() - 1;
    let mut bytes = BytesMut::new();
    match r.protocol() {
        Protocol::Binary => {
            bytes.put_u8(t.value.ty().to_binary());
            bytes.put_i16(id);
        }
        Protocol::Compact => {
            bytes.put_u8(t.value.ty().to_compact());
            put_varint(&mut bytes, zigzag32(i32::from(id)));
        }
    }
    bytes.put_slice(t.encoded);
    edits.push(Edit {
        start: stop,
        end: stop,
        bytes: bytes.to_vec(),
    });
    Ok(())
}
