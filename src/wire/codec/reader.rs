//! A bounded pull reader over one complete, already-scanned message: read just the fields
//! policy needs and skip the rest, with the byte range of every value so a reply can be spliced
//! (elements dropped) without re-encoding what is kept.

use std::ops::Range;

use super::header::{self, MessageHeader};
use super::wire::{read_varint, unzigzag64, Protocol, ScanError, Ty};

/// A field header read inside a struct.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    pub ty: Ty,
    pub id: i16,
    /// Compact only: a bool field's value travels in its header.
    pub compact_bool: Option<bool>,
    /// Byte offset where the field (its header) starts.
    pub start: usize,
}

/// Pull reader over a complete message. Every read is bounds-checked; truncation is an error.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    protocol: Protocol,
    buf: &'a [u8],
    pos: usize,
    depth: usize,
    max_depth: usize,
    /// Compact field-id deltas: last field id per open struct.
    last_ids: Vec<i16>,
}

fn truncated() -> ScanError {
    ScanError::Truncated
}

impl<'a> Reader<'a> {
    pub fn new(protocol: Protocol, buf: &'a [u8], max_depth: usize) -> Self {
        Reader {
            protocol,
            buf,
            pos: 0,
            depth: 0,
            max_depth,
            last_ids: Vec::new(),
        }
    }

    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    pub fn pos(&self) -> usize {
        self.pos
    }

    pub fn buf(&self) -> &'a [u8] {
        self.buf
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ScanError> {
        let end = self.pos.checked_add(n).ok_or_else(truncated)?;
        let s = self.buf.get(self.pos..end).ok_or_else(truncated)?;
        self.pos = end;
        Ok(s)
    }

    fn varint(&mut self, max: usize) -> Result<u64, ScanError> {
        match read_varint(&self.buf[self.pos..], max)? {
            Some((v, n)) => {
                self.pos += n;
                Ok(v)
            }
            None => Err(truncated()),
        }
    }

    pub fn message_begin(&mut self) -> Result<MessageHeader, ScanError> {
        let h = header::parse(self.protocol, &self.buf[self.pos..], 1024)?.ok_or_else(truncated)?;
        self.pos += h.len;
        Ok(h)
    }

    pub fn struct_begin(&mut self) -> Result<(), ScanError> {
        if self.depth >= self.max_depth {
            return Err(ScanError::TooDeep(self.max_depth));
        }
        self.depth += 1;
        self.last_ids.push(0);
        Ok(())
    }

    /// The next field, or `None` at the struct's STOP (which ends the struct).
    pub fn field(&mut self) -> Result<Option<Field>, ScanError> {
        let start = self.pos;
        let b = self.take(1)?[0];
        if b == 0 {
            self.depth -= 1;
            self.last_ids.pop();
            return Ok(None);
        }
        match self.protocol {
            Protocol::Binary => {
                let ty = Ty::from_binary(b)?;
                let id = self.take(2)?;
                Ok(Some(Field {
                    ty,
                    id: i16::from_be_bytes([id[0], id[1]]),
                    compact_bool: None,
                    start,
                }))
            }
            Protocol::Compact => {
                let nibble = b & 0x0f;
                let ty = Ty::from_compact(nibble)?;
                let last = self.last_ids.last().copied().unwrap_or(0);
                let id = if b >> 4 == 0 {
                    unzigzag64(self.varint(3)?) as i16
                } else {
                    last.wrapping_add(i16::from(b >> 4))
                };
                if let Some(l) = self.last_ids.last_mut() {
                    *l = id;
                }
                let compact_bool = (ty == Ty::Bool).then_some(nibble == 1);
                Ok(Some(Field {
                    ty,
                    id,
                    compact_bool,
                    start,
                }))
            }
        }
    }

    pub fn string(&mut self) -> Result<&'a [u8], ScanError> {
        let len = match self.protocol {
            Protocol::Binary => {
                let b = self.take(4)?;
                let n = i32::from_be_bytes([b[0], b[1], b[2], b[3]]);
                if n < 0 {
                    return Err(ScanError::NegativeLength(i64::from(n)));
                }
                n as usize
            }
            Protocol::Compact => self.varint(5)? as usize,
        };
        self.take(len)
    }

    /// A string field's value as UTF-8 (lossy).
    pub fn string_lossy(&mut self) -> Result<String, ScanError> {
        Ok(String::from_utf8_lossy(self.string()?).into_owned())
    }

    pub fn i32(&mut self) -> Result<i32, ScanError> {
        match self.protocol {
            Protocol::Binary => {
                let b = self.take(4)?;
                Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            }
            Protocol::Compact => Ok(unzigzag64(self.varint(5)?) as i32),
        }
    }

    /// An i16 or i32 value.
    pub fn i32_or_i16(&mut self, ty: Ty) -> Result<i32, ScanError> {
        if ty == Ty::I16 && self.protocol == Protocol::Binary {
            let b = self.take(2)?;
            return Ok(i32::from(i16::from_be_bytes([b[0], b[1]])));
        }
        self.i32()
    }

    /// Enters a container (depth-checked); pair with `leave`.
    pub fn enter(&mut self) -> Result<(), ScanError> {
        if self.depth >= self.max_depth {
            return Err(ScanError::TooDeep(self.max_depth));
        }
        self.depth += 1;
        Ok(())
    }

    pub fn leave(&mut self) {
        self.depth -= 1;
    }

    pub fn i64(&mut self) -> Result<i64, ScanError> {
        match self.protocol {
            Protocol::Binary => {
                let b = self.take(8)?;
                Ok(i64::from_be_bytes(b.try_into().expect("8 bytes")))
            }
            Protocol::Compact => Ok(unzigzag64(self.varint(10)?)),
        }
    }

    /// A bool value: for a compact struct field pass the field (its value is in the header).
    pub fn bool(&mut self, field: Option<&Field>) -> Result<bool, ScanError> {
        if let Some(v) = field.and_then(|f| f.compact_bool) {
            return Ok(v);
        }
        Ok(self.take(1)?[0] != 0)
    }

    /// List or set header: element type and count (checked against the bytes left).
    pub fn list_begin(&mut self) -> Result<(Ty, usize), ScanError> {
        let (ty, n) = match self.protocol {
            Protocol::Binary => {
                let b = self.take(5)?;
                let n = i32::from_be_bytes([b[1], b[2], b[3], b[4]]);
                if n < 0 {
                    return Err(ScanError::NegativeLength(i64::from(n)));
                }
                (Ty::from_binary(b[0])?, n as u64)
            }
            Protocol::Compact => {
                let b = self.take(1)?[0];
                let ty = Ty::from_compact(b & 0x0f)?;
                let n = if b >> 4 == 0x0f {
                    self.varint(5)?
                } else {
                    u64::from(b >> 4)
                };
                (ty, n)
            }
        };
        self.check_count(n)?;
        Ok((ty, n as usize))
    }

    /// Map header: key type, value type, entry count.
    pub fn map_begin(&mut self) -> Result<(Ty, Ty, usize), ScanError> {
        let (k, v, n) = match self.protocol {
            Protocol::Binary => {
                let b = self.take(6)?;
                let n = i32::from_be_bytes([b[2], b[3], b[4], b[5]]);
                if n < 0 {
                    return Err(ScanError::NegativeLength(i64::from(n)));
                }
                (Ty::from_binary(b[0])?, Ty::from_binary(b[1])?, n as u64)
            }
            Protocol::Compact => {
                let n = self.varint(5)?;
                if n == 0 {
                    return Ok((Ty::String, Ty::String, 0));
                }
                let kv = self.take(1)?[0];
                (Ty::from_compact(kv >> 4)?, Ty::from_compact(kv & 0x0f)?, n)
            }
        };
        self.check_count(n)?;
        Ok((k, v, n as usize))
    }

    fn check_count(&self, n: u64) -> Result<(), ScanError> {
        let left = (self.buf.len() - self.pos) as u64;
        if n > left {
            return Err(ScanError::CountTooLarge {
                what: "container size",
                count: n,
                remaining: left,
                limit: self.buf.len() as u64,
            });
        }
        Ok(())
    }

    /// Skips one value of type `ty` (for a struct field, pass it for compact bools); returns the
    /// byte range it occupied.
    pub fn skip(&mut self, ty: Ty, field: Option<&Field>) -> Result<Range<usize>, ScanError> {
        let start = self.pos;
        self.skip_inner(ty, field)?;
        Ok(start..self.pos)
    }

    fn skip_inner(&mut self, ty: Ty, field: Option<&Field>) -> Result<(), ScanError> {
        match ty {
            Ty::Bool => {
                self.bool(field)?;
            }
            Ty::Byte => {
                self.take(1)?;
            }
            Ty::Double => {
                self.take(8)?;
            }
            Ty::Uuid => {
                self.take(16)?;
            }
            Ty::I16 | Ty::I32 => {
                if self.protocol == Protocol::Binary {
                    self.take(if ty == Ty::I16 { 2 } else { 4 })?;
                } else {
                    self.varint(5)?;
                }
            }
            Ty::I64 => {
                self.i64()?;
            }
            Ty::String => {
                self.string()?;
            }
            Ty::Struct => {
                self.struct_begin()?;
                while let Some(f) = self.field()? {
                    self.skip_inner(f.ty, Some(&f))?;
                }
            }
            Ty::List | Ty::Set => {
                let (et, n) = self.list_begin()?;
                self.nest(|r| {
                    for _ in 0..n {
                        r.skip_inner(et, None)?;
                    }
                    Ok(())
                })?;
            }
            Ty::Map => {
                let (kt, vt, n) = self.map_begin()?;
                self.nest(|r| {
                    for _ in 0..n {
                        r.skip_inner(kt, None)?;
                        r.skip_inner(vt, None)?;
                    }
                    Ok(())
                })?;
            }
        }
        Ok(())
    }

    fn nest(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<(), ScanError>,
    ) -> Result<(), ScanError> {
        self.enter()?;
        let r = f(self);
        self.leave();
        r
    }
}
