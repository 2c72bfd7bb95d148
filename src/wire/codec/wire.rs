//! The wire vocabulary every other codec file shares: the protocol choice, the one Thrift type
//! enum (`Ty`, in binary numbering, with the compact type-nibble conversions), the codec's error
//! type, and the varint and zigzag helpers of the compact protocol.
//!
//! This file imports nothing from the rest of the codec; everything else builds on it.

use std::fmt;

use bytes::{BufMut, BytesMut};

/// Thrift protocol (the encoding of values); framing is handled by the transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Binary,
    Compact,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Binary => "binary",
            Protocol::Compact => "compact",
        })
    }
}

/// Why a byte stream is not an acceptable Thrift message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScanError {
    #[error(
        "non-strict binary message header (old Thrift clients); only strict binary is accepted"
    )]
    NonStrictBinary,
    #[error("bad protocol version 0x{0:08x}")]
    BadVersion(u32),
    #[error("bad message type {0}")]
    BadMessageType(u8),
    #[error("the method name is not UTF-8")]
    MethodNameNotUtf8,
    #[error("bad method name length {0}")]
    BadNameLength(i64),
    #[error("invalid Thrift type id {0}")]
    InvalidType(u8),
    #[error("nesting deeper than {0}")]
    TooDeep(usize),
    #[error("message larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("negative length or count {0}")]
    NegativeLength(i64),
    #[error("declared {what} of {count} cannot fit in the {remaining} bytes the message may still hold (limit {limit} bytes)")]
    CountTooLarge {
        what: &'static str,
        count: u64,
        remaining: u64,
        limit: u64,
    },
    #[error("varint longer than {0} bytes")]
    VarintTooLong(usize),
    #[error("frame of {frame} bytes holds a message of {message} bytes")]
    FrameMismatch { frame: u64, message: u64 },
    #[error("frame of {frame} bytes ends inside its message")]
    FrameTruncated { frame: u64 },
    #[error("message ends in the middle of a value")]
    Truncated,
}

/// Thrift value types (binary numbering).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    Bool,
    Byte,
    Double,
    I16,
    I32,
    I64,
    String,
    Struct,
    Map,
    Set,
    List,
    Uuid,
}

impl Ty {
    /// A binary-protocol type id.
    pub fn from_binary(b: u8) -> Result<Ty, ScanError> {
        Ok(match b {
            2 => Ty::Bool,
            3 => Ty::Byte,
            4 => Ty::Double,
            6 => Ty::I16,
            8 => Ty::I32,
            10 => Ty::I64,
            11 => Ty::String,
            12 => Ty::Struct,
            13 => Ty::Map,
            14 => Ty::Set,
            15 => Ty::List,
            16 => Ty::Uuid,
            other => return Err(ScanError::InvalidType(other)),
        })
    }

    pub fn to_binary(self) -> u8 {
        match self {
            Ty::Bool => 2,
            Ty::Byte => 3,
            Ty::Double => 4,
            Ty::I16 => 6,
            Ty::I32 => 8,
            Ty::I64 => 10,
            Ty::String => 11,
            Ty::Struct => 12,
            Ty::Map => 13,
            Ty::Set => 14,
            Ty::List => 15,
            Ty::Uuid => 16,
        }
    }

    /// A compact type nibble; bools inside structs carry their value in the nibble (1 true,
    /// 2 false), so both read as `Bool`.
    pub fn from_compact(b: u8) -> Result<Ty, ScanError> {
        Ok(match b {
            1 | 2 => Ty::Bool,
            3 => Ty::Byte,
            4 => Ty::I16,
            5 => Ty::I32,
            6 => Ty::I64,
            7 => Ty::Double,
            8 => Ty::String,
            9 => Ty::List,
            10 => Ty::Set,
            11 => Ty::Map,
            12 => Ty::Struct,
            13 => Ty::Uuid,
            other => return Err(ScanError::InvalidType(other)),
        })
    }

    /// The compact type nibble (`Bool` as 1, the element type of a bool list or map).
    pub fn to_compact(self) -> u8 {
        match self {
            Ty::Bool => 1,
            Ty::Byte => 3,
            Ty::I16 => 4,
            Ty::I32 => 5,
            Ty::I64 => 6,
            Ty::Double => 7,
            Ty::String => 8,
            Ty::List => 9,
            Ty::Set => 10,
            Ty::Map => 11,
            Ty::Struct => 12,
            Ty::Uuid => 13,
        }
    }
}

/// Reads an unsigned LEB128 varint of at most `max` bytes. `Ok(None)`: need more bytes.
pub(crate) fn read_varint(buf: &[u8], max: usize) -> Result<Option<(u64, usize)>, ScanError> {
    let mut v: u64 = 0;
    for (i, &b) in buf.iter().enumerate().take(max) {
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(Some((v, i + 1)));
        }
    }
    if buf.len() >= max {
        Err(ScanError::VarintTooLong(max))
    } else {
        Ok(None)
    }
}

/// Writes an unsigned LEB128 varint.
pub(crate) fn put_varint(out: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        out.put_u8((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.put_u8(v as u8);
}

/// Zigzag encoding of an i32 (compact i16, i32 and field ids).
pub(crate) fn zigzag32(v: i32) -> u64 {
    u64::from(((v << 1) ^ (v >> 31)) as u32)
}

/// Zigzag encoding of an i64.
pub(crate) fn zigzag64(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// Zigzag decoding; narrower integers truncate the result (`as i32`, `as i16`).
pub(crate) fn unzigzag64(z: u64) -> i64 {
    (z >> 1) as i64 ^ -((z & 1) as i64)
}
