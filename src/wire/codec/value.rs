//! A decoded Thrift value tree for the few structs policy must compare or inspect whole
//! (a table before and after `alter_table`). Bounded by the reader's limits; maps compare
//! without regard to entry order (Java `HashMap` order differs between calls).

use super::reader::{Field, Reader};
use super::wire::{Protocol, ScanError, Ty};

#[derive(Debug, Clone)]
pub enum Value {
    Bool(bool),
    Int(i64),
    Double(f64),
    Bytes(Vec<u8>),
    Struct(Vec<(i16, Value)>),
    List(Vec<Value>),
    Map(Vec<(Value, Value)>),
}

impl PartialEq for Value {
    fn eq(&self, other: &Self) -> bool {
        use Value::*;
        match (self, other) {
            (Bool(a), Bool(b)) => a == b,
            (Int(a), Int(b)) => a == b,
            (Double(a), Double(b)) => a.to_bits() == b.to_bits(),
            (Bytes(a), Bytes(b)) => a == b,
            (List(a), List(b)) => a == b,
            (Struct(a), Struct(b)) => {
                a.len() == b.len()
                    && a.iter().all(|(id, v)| other.field(*id) == Some(v))
                    && b.iter().all(|(id, _)| self.field(*id).is_some())
            }
            // Linear in the entries: keyed by the canonical form of each key.
            (Map(a), Map(b)) => {
                if a.len() != b.len() {
                    return false;
                }
                let keyed: std::collections::HashMap<Vec<u8>, &Value> =
                    b.iter().map(|(k, v)| (k.canonical(), v)).collect();
                keyed.len() == b.len()
                    && a.iter()
                        .all(|(k, v)| keyed.get(&k.canonical()).is_some_and(|v2| *v2 == v))
            }
            _ => false,
        }
    }
}

impl Value {
    /// A byte form that is equal exactly when the values are (struct fields and map entries
    /// in any order; doubles by bits), for hashing keys.
    pub fn canonical(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.canonical_into(&mut out);
        out
    }

    fn canonical_into(&self, out: &mut Vec<u8>) {
        match self {
            Value::Bool(b) => out.extend([1, u8::from(*b)]),
            Value::Int(i) => {
                out.push(2);
                out.extend(i.to_be_bytes());
            }
            Value::Double(d) => {
                out.push(3);
                out.extend(d.to_bits().to_be_bytes());
            }
            Value::Bytes(b) => {
                out.push(4);
                out.extend((b.len() as u64).to_be_bytes());
                out.extend(b);
            }
            Value::Struct(fields) => {
                let mut sorted: Vec<_> = fields.iter().collect();
                sorted.sort_by_key(|(id, _)| *id);
                out.push(5);
                out.extend((sorted.len() as u64).to_be_bytes());
                for (id, v) in sorted {
                    out.extend(id.to_be_bytes());
                    v.canonical_into(out);
                }
            }
            Value::List(items) => {
                out.push(6);
                out.extend((items.len() as u64).to_be_bytes());
                for i in items {
                    i.canonical_into(out);
                }
            }
            Value::Map(entries) => {
                let mut parts: Vec<Vec<u8>> = entries
                    .iter()
                    .map(|(k, v)| {
                        let mut p = k.canonical();
                        v.canonical_into(&mut p);
                        p
                    })
                    .collect();
                parts.sort();
                out.push(7);
                out.extend((parts.len() as u64).to_be_bytes());
                for p in parts {
                    out.extend(p);
                }
            }
        }
    }

    /// A struct's field by id.
    pub fn field(&self, id: i16) -> Option<&Value> {
        match self {
            Value::Struct(fields) => fields.iter().find(|(i, _)| *i == id).map(|(_, v)| v),
            _ => None,
        }
    }

    /// Follows a path of struct field ids.
    pub fn path(&self, ids: &[i16]) -> Option<&Value> {
        ids.iter().try_fold(self, |v, id| v.field(*id))
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Bytes(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    pub fn as_list(&self) -> &[Value] {
        match self {
            Value::List(l) => l,
            _ => &[],
        }
    }

    pub fn as_map(&self) -> &[(Value, Value)] {
        match self {
            Value::Map(m) => m,
            _ => &[],
        }
    }

    /// A `map<string,string>` entry by key.
    pub fn map_get(&self, key: &str) -> Option<&Value> {
        self.as_map()
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v)
    }

    /// A copy of this struct without the listed field ids.
    pub fn without(&self, ids: &[i16]) -> Value {
        match self {
            Value::Struct(f) => Value::Struct(
                f.iter()
                    .filter(|(id, _)| !ids.contains(id))
                    .cloned()
                    .collect(),
            ),
            other => other.clone(),
        }
    }
}

/// Reads one value of type `ty` (a struct field's header passed for compact bools).
pub fn read_value(r: &mut Reader<'_>, ty: Ty, field: Option<&Field>) -> Result<Value, ScanError> {
    Ok(match ty {
        Ty::Bool => Value::Bool(r.bool(field)?),
        Ty::Byte => {
            let range = r.skip(Ty::Byte, None)?;
            Value::Int(i64::from(r.buf()[range.start] as i8))
        }
        Ty::I16 | Ty::I32 => Value::Int(i64::from(r.i32_or_i16(ty)?)),
        Ty::I64 => Value::Int(r.i64()?),
        Ty::Double => {
            let range = r.skip(Ty::Double, None)?;
            let b: [u8; 8] = r.buf()[range].try_into().expect("8 bytes");
            Value::Double(match r.protocol() {
                Protocol::Binary => f64::from_be_bytes(b),
                Protocol::Compact => f64::from_le_bytes(b),
            })
        }
        Ty::Uuid => {
            let range = r.skip(Ty::Uuid, None)?;
            Value::Bytes(r.buf()[range].to_vec())
        }
        Ty::String => Value::Bytes(r.string()?.to_vec()),
        Ty::Struct => {
            r.struct_begin()?;
            let mut fields = Vec::new();
            while let Some(f) = r.field()? {
                let v = read_value(r, f.ty, Some(&f))?;
                fields.push((f.id, v));
            }
            Value::Struct(fields)
        }
        Ty::List | Ty::Set => {
            let (et, n) = r.list_begin()?;
            r.enter()?;
            let mut items = Vec::with_capacity(n.min(1024));
            for _ in 0..n {
                items.push(read_value(r, et, None)?);
            }
            r.leave();
            Value::List(items)
        }
        Ty::Map => {
            let (kt, vt, n) = r.map_begin()?;
            r.enter()?;
            let mut items = Vec::with_capacity(n.min(1024));
            for _ in 0..n {
                let k = read_value(r, kt, None)?;
                let v = read_value(r, vt, None)?;
                items.push((k, v));
            }
            r.leave();
            Value::Map(items)
        }
    })
}
