//! Bounded, resumable scanner that finds where a Thrift message ends.
//!
//! Unframed Thrift carries no length prefix, so the only way to know where a message ends is to
//! walk its structure. The scanner does that incrementally over whatever bytes have arrived:
//! it consumes whole tokens (field headers, container headers, fixed-size values, length
//! prefixes) and skips string bodies piece by piece, so the caller can forward the walked bytes
//! and drop them. Memory is O(depth): nothing is allocated from a count read off the wire.
//!
//! Limits, all checked before any byte is trusted: message size (`Limits::max_message_bytes`),
//! nesting depth (`Limits::max_depth`), method-name length, and every declared container count
//! or string length against the bytes the message may still contain.

use super::header::{self, MessageHeader};
use super::wire::{read_varint, unzigzag64, Ty};
// `Protocol` and `ScanError` live in `wire`; re-exported so `codec::scanner::` paths still name them.
use super::wire::{Protocol, ScanError};

/// Hard limits for one message.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest message accepted (header and body), in bytes.
    pub max_message_bytes: u64,
    /// Deepest nesting of structs and containers; the message's top struct is depth 1.
    pub max_depth: usize,
    /// Longest method name, in bytes.
    pub max_name_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: 100 * 1024 * 1024,
            max_depth: 64,
            max_name_bytes: 1024,
        }
    }
}

/// Progress of one `Scanner::advance` call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan {
    /// The message continues; this many bytes of the input were walked (they belong to it).
    NeedMore(usize),
    /// The message ended after this many bytes of the input.
    Complete(usize),
}

/// The fewest bytes one value of type `t` can take.
fn min_size(t: Ty, protocol: Protocol) -> u64 {
    match (protocol, t) {
        (_, Ty::Bool | Ty::Byte | Ty::Struct) => 1,
        (_, Ty::Double) => 8,
        (_, Ty::Uuid) => 16,
        (Protocol::Binary, Ty::I16) => 2,
        (Protocol::Binary, Ty::I32 | Ty::String) => 4,
        (Protocol::Binary, Ty::I64) => 8,
        (Protocol::Binary, Ty::Map) => 6,
        (Protocol::Binary, Ty::Set | Ty::List) => 5,
        (Protocol::Compact, _) => 1,
    }
}

/// The first field header of a message's top struct, as it passed: for a reply, which field
/// of the result struct the metastore set (0 the result, 1 and up a declared exception).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopField {
    /// The struct is empty: a void method's result (or a result left unset).
    Stop,
    /// The first field's id.
    Id(i16),
}

#[derive(Debug, Clone, Copy)]
enum Frame {
    Struct,
    /// List or set: element type and elements still to walk.
    Seq {
        elem: Ty,
        left: u64,
    },
    /// Map: key and value types and items (keys plus values) still to walk.
    Map {
        key: Ty,
        value: Ty,
        left: u64,
    },
}

#[derive(Debug, Clone, Copy)]
enum State {
    Header,
    /// A value of this type starts here.
    Value(Ty),
    /// This many bytes of a string body remain.
    Skip(u64),
    /// Decide from the innermost frame what comes next.
    Next,
    Done,
}

/// Walks one Thrift message at a time. Reuse with `reset` between messages.
#[derive(Debug)]
pub struct Scanner {
    protocol: Protocol,
    limits: Limits,
    state: State,
    stack: Vec<Frame>,
    header: Option<MessageHeader>,
    /// The top struct's first field header, once walked.
    top: Option<TopField>,
    /// Bytes of the current message walked by earlier `advance` calls.
    consumed: u64,
}

impl Scanner {
    pub fn new(protocol: Protocol, limits: Limits) -> Self {
        Scanner {
            protocol,
            limits,
            state: State::Header,
            stack: Vec::with_capacity(8),
            header: None,
            top: None,
            consumed: 0,
        }
    }

    /// Forget the current message; the next byte starts a new one.
    pub fn reset(&mut self) {
        self.state = State::Header;
        self.stack.clear();
        self.header = None;
        self.top = None;
        self.consumed = 0;
    }

    /// Changes the size limit (e.g. to the exact length of a frame) before scanning.
    pub fn set_max_message_bytes(&mut self, max: u64) {
        self.limits.max_message_bytes = max;
    }

    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// The header of the current message, once it has been read.
    pub fn header(&self) -> Option<&MessageHeader> {
        self.header.as_ref()
    }

    /// The first field header of the current message's top struct, once walked (noted as it
    /// passes: no byte is read twice).
    pub fn top_field(&self) -> Option<TopField> {
        self.top
    }

    /// Bytes of the current message walked so far.
    pub fn consumed(&self) -> u64 {
        self.consumed
    }

    /// Walks as much of `buf` (the bytes that follow what earlier calls walked) as possible.
    pub fn advance(&mut self, buf: &[u8]) -> Result<Scan, ScanError> {
        let mut pos = 0usize;
        let result = self.walk(buf, &mut pos);
        self.consumed += pos as u64;
        result
    }

    fn remaining_budget(&self, pos: usize) -> u64 {
        self.limits
            .max_message_bytes
            .saturating_sub(self.consumed + pos as u64)
    }

    /// Checks that `n` more bytes fit in the message.
    fn take(&self, pos: usize, n: u64) -> Result<(), ScanError> {
        if n > self.remaining_budget(pos) {
            Err(ScanError::TooLarge {
                limit: self.limits.max_message_bytes,
            })
        } else {
            Ok(())
        }
    }

    fn push(&mut self, frame: Frame) -> Result<(), ScanError> {
        if self.stack.len() >= self.limits.max_depth {
            return Err(ScanError::TooDeep(self.limits.max_depth));
        }
        self.stack.push(frame);
        Ok(())
    }

    fn check_count(
        &self,
        pos: usize,
        what: &'static str,
        count: u64,
        min_each: u64,
    ) -> Result<(), ScanError> {
        let remaining = self.remaining_budget(pos);
        if count.saturating_mul(min_each) > remaining {
            return Err(ScanError::CountTooLarge {
                what,
                count,
                remaining,
                limit: self.limits.max_message_bytes,
            });
        }
        Ok(())
    }

    fn walk(&mut self, buf: &[u8], pos: &mut usize) -> Result<Scan, ScanError> {
        loop {
            let rest = &buf[*pos..];
            match self.state {
                State::Done => return Ok(Scan::Complete(*pos)),
                State::Header => {
                    match header::parse(self.protocol, rest, self.limits.max_name_bytes)? {
                        None => {
                            // The header alone may not exceed the budget either.
                            self.take(*pos, rest.len() as u64)?;
                            return Ok(Scan::NeedMore(*pos));
                        }
                        Some(h) => {
                            self.take(*pos, h.len as u64)?;
                            *pos += h.len;
                            self.header = Some(h);
                            self.state = State::Value(Ty::Struct);
                        }
                    }
                }
                State::Skip(left) => {
                    let n = (rest.len() as u64).min(left);
                    *pos += n as usize;
                    if n < left {
                        self.state = State::Skip(left - n);
                        return Ok(Scan::NeedMore(*pos));
                    }
                    self.state = State::Next;
                }
                State::Next => match self.stack.last_mut() {
                    None => {
                        self.state = State::Done;
                        return Ok(Scan::Complete(*pos));
                    }
                    Some(Frame::Seq { elem, left }) => {
                        if *left == 0 {
                            self.stack.pop();
                        } else {
                            *left -= 1;
                            self.state = State::Value(*elem);
                        }
                    }
                    Some(Frame::Map { key, value, left }) => {
                        if *left == 0 {
                            self.stack.pop();
                        } else {
                            let t = if *left % 2 == 0 { *key } else { *value };
                            *left -= 1;
                            self.state = State::Value(t);
                        }
                    }
                    Some(Frame::Struct) => {
                        let Some(used) = self.field_header(rest)? else {
                            return Ok(Scan::NeedMore(*pos));
                        };
                        self.take(*pos, used as u64)?;
                        *pos += used;
                    }
                },
                State::Value(t) => {
                    let Some(used) = self.value(t, rest, *pos)? else {
                        return Ok(Scan::NeedMore(*pos));
                    };
                    self.take(*pos, used as u64)?;
                    *pos += used;
                }
            }
        }
    }

    /// Reads a field header inside a struct; sets the next state. `None`: need more bytes.
    fn field_header(&mut self, rest: &[u8]) -> Result<Option<usize>, ScanError> {
        let Some(&b) = rest.first() else {
            return Ok(None);
        };
        let first_of_top = self.stack.len() == 1 && self.top.is_none();
        if b == 0 {
            if first_of_top {
                self.top = Some(TopField::Stop);
            }
            self.stack.pop();
            self.state = State::Next;
            return Ok(Some(1));
        }
        match self.protocol {
            Protocol::Binary => {
                let t = Ty::from_binary(b)?;
                if rest.len() < 3 {
                    return Ok(None);
                }
                if first_of_top {
                    self.top = Some(TopField::Id(i16::from_be_bytes([rest[1], rest[2]])));
                }
                self.state = State::Value(t);
                Ok(Some(3))
            }
            Protocol::Compact => {
                let nibble = b & 0x0f;
                let t = Ty::from_compact(nibble)?;
                let mut used = 1;
                // Short form: the id is a delta from the previous field's (0 at the start).
                let mut id = i16::from(b >> 4);
                if b >> 4 == 0 {
                    // Long form: the field id follows as a zigzag varint.
                    let Some((z, n)) = read_varint(&rest[1..], 3)? else {
                        return Ok(None);
                    };
                    used += n;
                    id = unzigzag64(z) as i16;
                }
                if first_of_top {
                    self.top = Some(TopField::Id(id));
                }
                // Compact bools in structs carry the value in the type nibble.
                self.state = if t == Ty::Bool {
                    State::Next
                } else {
                    State::Value(t)
                };
                Ok(Some(used))
            }
        }
    }

    /// Reads the fixed part of a value of type `t`; sets the next state.
    // Long: one match over (protocol, wire type), kept whole on the hot scan path.
    fn value(&mut self, t: Ty, rest: &[u8], pos: usize) -> Result<Option<usize>, ScanError> {
        let need = |n: usize| if rest.len() < n { None } else { Some(n) };
        match (self.protocol, t) {
            (_, Ty::Struct) => {
                self.push(Frame::Struct)?;
                self.state = State::Next;
                Ok(Some(0))
            }
            (_, Ty::Bool | Ty::Byte) => Ok(need(1).inspect(|_| self.state = State::Next)),
            (_, Ty::Double) => Ok(need(8).inspect(|_| self.state = State::Next)),
            (_, Ty::Uuid) => Ok(need(16).inspect(|_| self.state = State::Next)),
            (Protocol::Binary, Ty::I16) => Ok(need(2).inspect(|_| self.state = State::Next)),
            (Protocol::Binary, Ty::I32) => Ok(need(4).inspect(|_| self.state = State::Next)),
            (Protocol::Binary, Ty::I64) => Ok(need(8).inspect(|_| self.state = State::Next)),
            (Protocol::Compact, Ty::I16 | Ty::I32 | Ty::I64) => {
                let max = match t {
                    Ty::I16 => 3,
                    Ty::I32 => 5,
                    _ => 10,
                };
                let r = read_varint(rest, max)?.map(|(_, n)| n);
                if r.is_some() {
                    self.state = State::Next;
                }
                Ok(r)
            }
            (Protocol::Binary, Ty::String) => {
                let Some(n) = need(4) else { return Ok(None) };
                let len = i32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
                self.string_body(i64::from(len), pos + n)?;
                Ok(Some(n))
            }
            (Protocol::Compact, Ty::String) => {
                let Some((len, n)) = read_varint(rest, 5)? else {
                    return Ok(None);
                };
                self.string_body(len as i64, pos + n)?;
                Ok(Some(n))
            }
            (Protocol::Binary, Ty::List | Ty::Set) => {
                let Some(n) = need(5) else { return Ok(None) };
                let elem = Ty::from_binary(rest[0])?;
                let count = i32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]);
                self.seq(elem, i64::from(count), pos + n)?;
                Ok(Some(n))
            }
            (Protocol::Compact, Ty::List | Ty::Set) => {
                let Some(&b) = rest.first() else {
                    return Ok(None);
                };
                let elem = Ty::from_compact(b & 0x0f)?;
                let (count, n) = if b >> 4 == 0x0f {
                    let Some((c, n)) = read_varint(&rest[1..], 5)? else {
                        return Ok(None);
                    };
                    (c, n + 1)
                } else {
                    (u64::from(b >> 4), 1)
                };
                self.seq(elem, count as i64, pos + n)?;
                Ok(Some(n))
            }
            (Protocol::Binary, Ty::Map) => {
                let Some(n) = need(6) else { return Ok(None) };
                let key = Ty::from_binary(rest[0])?;
                let value = Ty::from_binary(rest[1])?;
                let count = i32::from_be_bytes([rest[2], rest[3], rest[4], rest[5]]);
                self.map(key, value, i64::from(count), pos + n)?;
                Ok(Some(n))
            }
            (Protocol::Compact, Ty::Map) => {
                let Some((count, n)) = read_varint(rest, 5)? else {
                    return Ok(None);
                };
                if count == 0 {
                    self.state = State::Next;
                    return Ok(Some(n));
                }
                let Some(&kv) = rest.get(n) else {
                    return Ok(None);
                };
                let key = Ty::from_compact(kv >> 4)?;
                let value = Ty::from_compact(kv & 0x0f)?;
                self.map(key, value, count as i64, pos + n + 1)?;
                Ok(Some(n + 1))
            }
        }
    }

    fn string_body(&mut self, len: i64, after: usize) -> Result<(), ScanError> {
        if len < 0 {
            return Err(ScanError::NegativeLength(len));
        }
        self.check_count(after, "string length", len as u64, 1)?;
        self.state = if len == 0 {
            State::Next
        } else {
            State::Skip(len as u64)
        };
        Ok(())
    }

    fn seq(&mut self, elem: Ty, count: i64, after: usize) -> Result<(), ScanError> {
        if count < 0 {
            return Err(ScanError::NegativeLength(count));
        }
        let count = count as u64;
        self.check_count(after, "list/set size", count, min_size(elem, self.protocol))?;
        self.push(Frame::Seq { elem, left: count })?;
        self.state = State::Next;
        Ok(())
    }

    fn map(&mut self, key: Ty, value: Ty, count: i64, after: usize) -> Result<(), ScanError> {
        if count < 0 {
            return Err(ScanError::NegativeLength(count));
        }
        let count = count as u64;
        let each = min_size(key, self.protocol) + min_size(value, self.protocol);
        self.check_count(after, "map size", count, each)?;
        self.push(Frame::Map {
            key,
            value,
            left: count * 2,
        })?;
        self.state = State::Next;
        Ok(())
    }
}
