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

/// A new value for a field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NewValue {
    String(Vec<u8>),
    I32(i32),
}

impl NewValue {
    fn ty(&self) -> Ty {
        match self {
            NewValue::String(_) => Ty::String,
            NewValue::I32(_) => Ty::I32,
        }
    }

    fn encode(&self, protocol: Protocol, out: &mut BytesMut) {
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
    #[error("field {id} has wire type {got:?}, not {want:?}")]
    WrongType { id: i16, got: Ty, want: Ty },
    #[error("the path is empty")]
    EmptyPath,
}

/// `message` (a whole unframed request) with the field at `path` (field ids from the args
/// struct inward) set to `value`. An absent intermediate struct leaves the message unchanged
/// (`Ok(None)`), as does an absent field with `IfAbsent::Leave`.
pub fn set_field(
    protocol: Protocol,
    message: &[u8],
    path: &[i16],
    value: &NewValue,
    if_absent: IfAbsent,
    max_depth: usize,
) -> Result<Option<BytesMut>, SpliceError> {
    let (&last, parents) = path.split_last().ok_or(SpliceError::EmptyPath)?;
    let mut r = Reader::new(protocol, message, max_depth);
    r.message_begin()?;
    r.struct_begin()?;
    'steps: for &id in parents {
        while let Some(f) = r.field()? {
            if f.id == id {
                if f.ty != Ty::Struct {
                    return Err(SpliceError::NotAStruct(id));
                }
                r.struct_begin()?;
                continue 'steps;
            }
            r.skip(f.ty, Some(&f))?;
        }
        return Ok(None);
    }
    let mut encoded = BytesMut::new();
    value.encode(protocol, &mut encoded);
    let mut out = BytesMut::with_capacity(message.len() + encoded.len() + 4);
    while let Some(f) = r.field()? {
        if f.id == last {
            if f.ty != value.ty() {
                return Err(SpliceError::WrongType {
                    id: f.id,
                    got: f.ty,
                    want: value.ty(),
                });
            }
            let span = r.skip(f.ty, Some(&f))?;
            out.put_slice(&message[..span.start]);
            out.put_slice(&encoded);
            out.put_slice(&message[span.end..]);
            return Ok(Some(out));
        }
        r.skip(f.ty, Some(&f))?;
    }
    if if_absent == IfAbsent::Leave {
        return Ok(None);
    }
    // At the struct's STOP (the byte just read): the new field goes before it.
    let stop = r.pos() - 1;
    out.put_slice(&message[..stop]);
    match protocol {
        Protocol::Binary => {
            out.put_u8(value.ty().to_binary());
            out.put_i16(last);
        }
        Protocol::Compact => {
            out.put_u8(value.ty().to_compact());
            put_varint(&mut out, zigzag32(i32::from(last)));
        }
    }
    out.put_slice(&encoded);
    out.put_slice(&message[stop..]);
    Ok(Some(out))
}
