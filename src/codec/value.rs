//! A decoded Thrift value tree for the few structs policy must compare or inspect whole
//! (a table before and after `alter_table`). Bounded by the reader's limits; maps compare
//! without regard to entry order (Java `HashMap` order differs between calls).

use super::reader::{Reader, Ty};
use super::scanner::ScanError;

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
            (Map(a), Map(b)) => {
                a.len() == b.len()
                    && a.iter()
                        .all(|(k, v)| b.iter().any(|(k2, v2)| k == k2 && v == v2))
            }
            _ => false,
        }
    }
}

impl Value {
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

    /// A copy of this string map without the listed keys.
    pub fn map_without(&self, keys: &[&str]) -> Value {
        Value::Map(
            self.as_map()
                .iter()
                .filter(|(k, _)| !k.as_str().is_some_and(|k| keys.contains(&k)))
                .cloned()
                .collect(),
        )
    }
}

/// Reads one value of type `ty` (a struct field's header passed for compact bools).
pub fn read_value(
    r: &mut Reader<'_>,
    ty: Ty,
    field: Option<&super::reader::Field>,
) -> Result<Value, ScanError> {
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
                super::Protocol::Binary => f64::from_be_bytes(b),
                super::Protocol::Compact => f64::from_le_bytes(b),
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
