//! Reading the values a rule names out of a call's args, by field-id path, without decoding
//! the rest of the message.

use crate::codec::reader::{Field, Reader, Ty};
use crate::codec::value::{read_value, Value};
use crate::codec::{Protocol, ScanError};
use crate::router::EACH;

/// Every value at `path` in the args struct of `message` (a whole unframed message). `EACH`
/// steps fan out over list elements; absent fields yield nothing.
pub fn values_at(
    protocol: Protocol,
    message: &[u8],
    path: &[i16],
    max_depth: usize,
) -> Result<Vec<Value>, ScanError> {
    let mut r = Reader::new(protocol, message, max_depth);
    r.message_begin()?;
    let mut out = Vec::new();
    collect(&mut r, Ty::Struct, None, path, &mut out)?;
    Ok(out)
}

fn collect(
    r: &mut Reader<'_>,
    ty: Ty,
    field: Option<&Field>,
    path: &[i16],
    out: &mut Vec<Value>,
) -> Result<(), ScanError> {
    let Some((&step, rest)) = path.split_first() else {
        out.push(read_value(r, ty, field)?);
        return Ok(());
    };
    if step == EACH {
        if !matches!(ty, Ty::List | Ty::Set) {
            r.skip(ty, field)?;
            return Ok(());
        }
        let (et, n) = r.list_begin()?;
        r.enter()?;
        for _ in 0..n {
            collect(r, et, None, rest, out)?;
        }
        r.leave();
        return Ok(());
    }
    if ty != Ty::Struct {
        r.skip(ty, field)?;
        return Ok(());
    }
    r.struct_begin()?;
    while let Some(f) = r.field()? {
        if f.id == step {
            collect(r, f.ty, Some(&f), rest, out)?;
        } else {
            r.skip(f.ty, Some(&f))?;
        }
    }
    Ok(())
}

/// The strings at `path` (non-string values are ignored).
pub fn strings_at(
    protocol: Protocol,
    message: &[u8],
    path: &[i16],
    max_depth: usize,
) -> Result<Vec<String>, ScanError> {
    Ok(values_at(protocol, message, path, max_depth)?
        .iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect())
}
