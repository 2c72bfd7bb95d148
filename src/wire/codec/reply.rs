//! Messages the proxy writes itself: `TApplicationException` replies and declared-exception
//! replies; the check whether a metastore reply carries a result, and the reader of its
//! success value.

use bytes::{BufMut, BytesMut};

use super::header::MessageType;
use super::reader::Reader;
use super::wire::{put_varint, zigzag32, Protocol, ScanError, Ty};
use super::writer::Writer;

/// Its home is `header`; re-exported here, where callers outside the codec find it.
use super::header::write_message_begin;

/// `TApplicationException` type codes (Thrift's `TApplicationExceptionType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum AppErrorKind {
    Unknown = 0,
    UnknownMethod = 1,
    InternalError = 6,
    ProtocolError = 7,
}

/// Encodes an EXCEPTION message carrying `TApplicationException { 1: message, 2: type }`,
/// framed (4-byte length prefix) when `framed` is set.
pub fn application_exception(
    protocol: Protocol,
    framed: bool,
    method: &str,
    seqid: i32,
    kind: AppErrorKind,
    message: &str,
) -> BytesMut {
    let mut out = BytesMut::with_capacity(32 + method.len() + message.len());
    if framed {
        out.put_u32(0);
    }
    write_message_begin(&mut out, protocol, method, MessageType::Exception, seqid);
    match protocol {
        Protocol::Binary => {
            out.put_u8(11);
            out.put_i16(1);
            out.put_i32(message.len() as i32);
            out.put_slice(message.as_bytes());
            out.put_u8(8);
            out.put_i16(2);
            out.put_i32(kind as i32);
            out.put_u8(0);
        }
        Protocol::Compact => {
            out.put_u8(0x18); // field delta 1, binary
            put_varint(&mut out, message.len() as u64);
            out.put_slice(message.as_bytes());
            out.put_u8(0x15); // field delta 1, i32
            put_varint(&mut out, zigzag32(kind as i32));
            out.put_u8(0);
        }
    }
    if framed {
        let len = (out.len() - 4) as u32;
        out[..4].copy_from_slice(&len.to_be_bytes());
    }
    out
}

/// Encodes a REPLY whose result struct carries a declared exception (Hive's `MetaException`
/// and friends: `{1: string message}`) at result field `field_id`.
pub fn declared_exception(
    protocol: Protocol,
    framed: bool,
    method: &str,
    seqid: i32,
    field_id: i16,
    message: &str,
) -> BytesMut {
    let mut w = Writer::new(protocol);
    w.message(method, MessageType::Reply, seqid).struct_begin();
    w.field(Ty::Struct, field_id).struct_begin();
    w.field(Ty::String, 1).string(message.as_bytes());
    w.struct_end();
    w.struct_end();
    w.finish(framed)
}

/// Whether a reply carries a result (its result struct's field 0) — or cannot be read, which
/// counts as carrying one (never passed on as "no result"). An exception reply or a declared
/// exception carries none.
pub fn carries_result(protocol: Protocol, reply: &[u8], max_depth: usize) -> bool {
    let mut r = Reader::new(protocol, reply, max_depth);
    match r.message_begin() {
        Ok(h) if h.kind == MessageType::Reply => {
            if r.struct_begin().is_err() {
                return true;
            }
            match r.field() {
                // The result, or a declared exception (its field id is not 0).
                Ok(Some(f)) => f.id == 0,
                // No field at all: the metastore's "no result".
                Ok(None) => false,
                Err(_) => true,
            }
        }
        Ok(_) => false,
        Err(_) => true,
    }
}

/// Why a metastore reply carries no success value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// The reply could not be read.
    #[error("{0}")]
    Invalid(ScanError),
    /// A `TApplicationException` (`field` 0) or a declared exception (its result field id).
    #[error("{exception}: {message}")]
    Exception {
        field: i16,
        exception: String,
        message: String,
    },
}

/// Positions a reader at the success value (field 0) of a binary-protocol reply, or turns a
/// declared exception / `TApplicationException` into an error. `Ok(None)`: void success.
pub fn success(reply: &[u8]) -> Result<Option<(Reader<'_>, Ty)>, ReplyError> {
    let mut r = Reader::new(Protocol::Binary, reply, 64);
    let h = r.message_begin().map_err(ReplyError::Invalid)?;
    r.struct_begin().map_err(ReplyError::Invalid)?;
    if h.kind == MessageType::Exception {
        return Err(ReplyError::Exception {
            field: 0,
            exception: "TApplicationException".into(),
            message: exception_message(&mut r)?,
        });
    }
    match r.field().map_err(ReplyError::Invalid)? {
        None => Ok(None),
        Some(f) if f.id == 0 => Ok(Some((r, f.ty))),
        Some(f) => {
            // A declared exception: every Hive exception struct has `1: string message`.
            let mut message = String::new();
            if f.ty == Ty::Struct {
                r.struct_begin().map_err(ReplyError::Invalid)?;
                message = exception_message(&mut r)?;
            }
            Err(ReplyError::Exception {
                field: f.id,
                exception: format!("exception field {}", f.id),
                message,
            })
        }
    }
}

/// The `1: string message` of the exception struct `r` is in (the rest skipped).
fn exception_message(r: &mut Reader<'_>) -> Result<String, ReplyError> {
    let mut message = String::new();
    while let Some(f) = r.field().map_err(ReplyError::Invalid)? {
        if f.id == 1 && f.ty == Ty::String {
            message = r.string_lossy().map_err(ReplyError::Invalid)?;
        } else {
            r.skip(f.ty, Some(&f)).map_err(ReplyError::Invalid)?;
        }
    }
    Ok(message)
}

/// Encodes a REPLY whose result struct carries a string result (field 0).
pub fn string_result(
    protocol: Protocol,
    framed: bool,
    method: &str,
    seqid: i32,
    result: &str,
) -> BytesMut {
    let mut w = Writer::new(protocol);
    w.message(method, MessageType::Reply, seqid).struct_begin();
    w.field(Ty::String, 0).string(result.as_bytes());
    w.struct_end();
    w.finish(framed)
}
