//! Writes whole messages: the proxy's own calls to the metastore and its replies to clients.

use bytes::{BufMut, BytesMut};

use super::header::{write_message_begin, MessageType};
use super::value::Value;
use super::wire::{put_varint, zigzag32, zigzag64, Protocol, Ty};

fn ty_of(v: &Value) -> Ty {
    match v {
        Value::Bool(_) => Ty::Bool,
        Value::Int(_) => Ty::I64,
        Value::Double(_) => Ty::Double,
        Value::Bytes(_) => Ty::String,
        Value::Struct(_) => Ty::Struct,
        Value::List(_) => Ty::List,
        Value::Map(_) => Ty::Map,
    }
}

/// Message writer (binary or compact) into a growable buffer.
pub struct Writer {
    protocol: Protocol,
    pub out: BytesMut,
    last_ids: Vec<i16>,
}

impl Writer {
    pub fn new(protocol: Protocol) -> Self {
        Writer::with_capacity(protocol, 256)
    }

    /// A writer whose buffer holds `bytes` before it grows.
    pub fn with_capacity(protocol: Protocol, bytes: usize) -> Self {
        Writer {
            protocol,
            out: BytesMut::with_capacity(bytes),
            last_ids: vec![0],
        }
    }

    pub fn message(&mut self, name: &str, kind: MessageType, seqid: i32) -> &mut Self {
        write_message_begin(&mut self.out, self.protocol, name, kind, seqid);
        self
    }

    pub fn struct_begin(&mut self) -> &mut Self {
        self.last_ids.push(0);
        self
    }

    pub fn struct_end(&mut self) -> &mut Self {
        self.out.put_u8(0);
        self.last_ids.pop();
        self
    }

    fn field_header(&mut self, compact_ty: u8, ty: Ty, id: i16) {
        match self.protocol {
            Protocol::Binary => {
                self.out.put_u8(ty.to_binary());
                self.out.put_i16(id);
            }
            Protocol::Compact => {
                let last = self.last_ids.last().copied().unwrap_or(0);
                let delta = i32::from(id) - i32::from(last);
                if (1..=15).contains(&delta) {
                    self.out.put_u8(((delta as u8) << 4) | compact_ty);
                } else {
                    self.out.put_u8(compact_ty);
                    put_varint(&mut self.out, zigzag32(i32::from(id)));
                }
                if let Some(l) = self.last_ids.last_mut() {
                    *l = id;
                }
            }
        }
    }

    pub fn field(&mut self, ty: Ty, id: i16) -> &mut Self {
        self.field_header(ty.to_compact(), ty, id);
        self
    }

    pub fn field_bool(&mut self, id: i16, v: bool) -> &mut Self {
        match self.protocol {
            Protocol::Binary => {
                self.field_header(0, Ty::Bool, id);
                self.out.put_u8(u8::from(v));
            }
            Protocol::Compact => self.field_header(if v { 1 } else { 2 }, Ty::Bool, id),
        }
        self
    }

    pub fn string(&mut self, s: &[u8]) -> &mut Self {
        match self.protocol {
            Protocol::Binary => self.out.put_i32(s.len() as i32),
            Protocol::Compact => put_varint(&mut self.out, s.len() as u64),
        }
        self.out.put_slice(s);
        self
    }

    pub fn i16(&mut self, v: i16) -> &mut Self {
        match self.protocol {
            Protocol::Binary => self.out.put_i16(v),
            Protocol::Compact => put_varint(&mut self.out, zigzag32(i32::from(v))),
        }
        self
    }

    pub fn i64(&mut self, v: i64) -> &mut Self {
        match self.protocol {
            Protocol::Binary => self.out.put_i64(v),
            Protocol::Compact => put_varint(&mut self.out, zigzag64(v)),
        }
        self
    }

    pub fn i32(&mut self, v: i32) -> &mut Self {
        match self.protocol {
            Protocol::Binary => self.out.put_i32(v),
            Protocol::Compact => put_varint(&mut self.out, zigzag32(v)),
        }
        self
    }

    pub fn list_begin(&mut self, elem: Ty, n: usize) -> &mut Self {
        match self.protocol {
            Protocol::Binary => {
                self.out.put_u8(elem.to_binary());
                self.out.put_i32(n as i32);
            }
            Protocol::Compact => {
                if n < 15 {
                    self.out.put_u8(((n as u8) << 4) | elem.to_compact());
                } else {
                    self.out.put_u8(0xf0 | elem.to_compact());
                    put_varint(&mut self.out, n as u64);
                }
            }
        }
        self
    }

    /// A map header: key and value types, entry count.
    pub fn map_begin(&mut self, k: Ty, v: Ty, n: usize) -> &mut Self {
        match self.protocol {
            Protocol::Binary => {
                self.out.put_u8(k.to_binary());
                self.out.put_u8(v.to_binary());
                self.out.put_i32(n as i32);
            }
            Protocol::Compact => {
                put_varint(&mut self.out, n as u64);
                if n != 0 {
                    self.out.put_u8((k.to_compact() << 4) | v.to_compact());
                }
            }
        }
        self
    }

    /// Raw bytes (an already-encoded value copied from another message of the same protocol).
    pub fn raw(&mut self, bytes: &[u8]) -> &mut Self {
        self.out.put_slice(bytes);
        self
    }

    /// A whole decoded value (integers as i64: a value tree does not keep the width; for the
    /// proxy's own synthetic calls, never for bytes sent upstream on a client's behalf).
    pub fn value(&mut self, v: &Value) -> &mut Self {
        match v {
            // Outside a field header: binary 0/1, compact 1 (true) / 2 (false).
            Value::Bool(b) => match self.protocol {
                Protocol::Binary => self.out.put_u8(u8::from(*b)),
                Protocol::Compact => self.out.put_u8(if *b { 1 } else { 2 }),
            },
            Value::Int(i) => match self.protocol {
                Protocol::Binary => self.out.put_i64(*i),
                Protocol::Compact => put_varint(&mut self.out, zigzag64(*i)),
            },
            Value::Double(d) => match self.protocol {
                Protocol::Binary => self.out.put_f64(*d),
                Protocol::Compact => self.out.put_f64_le(*d),
            },
            Value::Bytes(b) => {
                self.string(b);
            }
            Value::Struct(fields) => {
                self.struct_begin();
                for (id, f) in fields {
                    match (self.protocol, f) {
                        (Protocol::Compact, Value::Bool(b)) => {
                            self.field_bool(*id, *b);
                        }
                        _ => {
                            self.field(ty_of(f), *id).value(f);
                        }
                    }
                }
                self.struct_end();
            }
            Value::List(items) => {
                let elem = items.first().map_or(Ty::String, ty_of);
                self.list_begin(elem, items.len());
                for i in items {
                    self.value(i);
                }
            }
            Value::Map(entries) => {
                let (k, v) = entries
                    .first()
                    .map_or((Ty::String, Ty::String), |(k, v)| (ty_of(k), ty_of(v)));
                self.map_begin(k, v, entries.len());
                for (a, b) in entries {
                    self.value(a).value(b);
                }
            }
        }
        self
    }

    /// The message, framed with a 4-byte length prefix if asked.
    pub fn finish(self, framed: bool) -> BytesMut {
        if !framed {
            return self.out;
        }
        let mut f = BytesMut::with_capacity(self.out.len() + 4);
        f.put_u32(self.out.len() as u32);
        f.put_slice(&self.out);
        f
    }
}
