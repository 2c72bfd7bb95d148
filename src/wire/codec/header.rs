//! Thrift message headers (binary strict and compact): parsed from a byte prefix, and written.

use bytes::{BufMut, BytesMut};

use super::wire::{put_varint, read_varint, Protocol, ScanError};

/// Thrift message types, as on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    Call,
    Reply,
    Exception,
    Oneway,
}

impl MessageType {
    pub fn from_wire(v: u8) -> Option<Self> {
        match v {
            1 => Some(Self::Call),
            2 => Some(Self::Reply),
            3 => Some(Self::Exception),
            4 => Some(Self::Oneway),
            _ => None,
        }
    }

    pub fn to_wire(self) -> u8 {
        match self {
            Self::Call => 1,
            Self::Reply => 2,
            Self::Exception => 3,
            Self::Oneway => 4,
        }
    }
}

/// The header of one Thrift message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageHeader {
    /// Method name (UTF-8: other names are refused).
    pub name: String,
    pub kind: MessageType,
    pub seqid: i32,
    /// Encoded length of the header in bytes.
    pub len: usize,
}

/// Writes a message header.
pub fn write_message_begin(
    out: &mut BytesMut,
    protocol: Protocol,
    method: &str,
    kind: MessageType,
    seqid: i32,
) {
    match protocol {
        Protocol::Binary => {
            out.put_u32(0x8001_0000 | u32::from(kind.to_wire()));
            out.put_i32(method.len() as i32);
            out.put_slice(method.as_bytes());
            out.put_i32(seqid);
        }
        Protocol::Compact => {
            out.put_u8(0x82);
            out.put_u8((kind.to_wire() << 5) | 1);
            put_varint(out, u64::from(seqid as u32));
            put_varint(out, method.len() as u64);
            out.put_slice(method.as_bytes());
        }
    }
}

/// Parses a message header from the start of `buf`.
/// `Ok(None)`: more bytes are needed. Never allocates more than `max_name` bytes.
pub fn parse(
    protocol: Protocol,
    buf: &[u8],
    max_name: usize,
) -> Result<Option<MessageHeader>, ScanError> {
    match protocol {
        Protocol::Binary => parse_binary(buf, max_name),
        Protocol::Compact => parse_compact(buf, max_name),
    }
}

fn parse_binary(buf: &[u8], max_name: usize) -> Result<Option<MessageHeader>, ScanError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let word = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if word & 0x8000_0000 == 0 {
        return Err(ScanError::NonStrictBinary);
    }
    if word & 0xffff_0000 != 0x8001_0000 {
        return Err(ScanError::BadVersion(word));
    }
    let kind = MessageType::from_wire((word & 0xff) as u8)
        .ok_or(ScanError::BadMessageType((word & 0xff) as u8))?;
    if buf.len() < 8 {
        return Ok(None);
    }
    let name_len = i32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
    if name_len < 0 || name_len as usize > max_name {
        return Err(ScanError::BadNameLength(i64::from(name_len)));
    }
    let name_len = name_len as usize;
    let end = 8 + name_len + 4;
    if buf.len() < end {
        return Ok(None);
    }
    let name = std::str::from_utf8(&buf[8..8 + name_len])
        .map_err(|_| ScanError::MethodNameNotUtf8)?
        .to_string();
    let s = 8 + name_len;
    let seqid = i32::from_be_bytes([buf[s], buf[s + 1], buf[s + 2], buf[s + 3]]);
    Ok(Some(MessageHeader {
        name,
        kind,
        seqid,
        len: end,
    }))
}

fn parse_compact(buf: &[u8], max_name: usize) -> Result<Option<MessageHeader>, ScanError> {
    if buf.is_empty() {
        return Ok(None);
    }
    if buf[0] != 0x82 {
        return Err(ScanError::BadVersion(u32::from(buf[0])));
    }
    if buf.len() < 2 {
        return Ok(None);
    }
    if buf[1] & 0x1f != 1 {
        return Err(ScanError::BadVersion(u32::from(buf[1])));
    }
    let kind = MessageType::from_wire(buf[1] >> 5).ok_or(ScanError::BadMessageType(buf[1] >> 5))?;
    let mut pos = 2;
    let Some((seqid, n)) = read_varint(&buf[pos..], 5)? else {
        return Ok(None);
    };
    pos += n;
    let Some((name_len, n)) = read_varint(&buf[pos..], 5)? else {
        return Ok(None);
    };
    pos += n;
    if name_len > max_name as u64 {
        return Err(ScanError::BadNameLength(name_len as i64));
    }
    let name_len = name_len as usize;
    if buf.len() < pos + name_len {
        return Ok(None);
    }
    let name = std::str::from_utf8(&buf[pos..pos + name_len])
        .map_err(|_| ScanError::MethodNameNotUtf8)?
        .to_string();
    Ok(Some(MessageHeader {
        name,
        kind,
        seqid: seqid as u32 as i32,
        len: pos + name_len,
    }))
}
