//! Filtering listing replies by splicing: the kept elements of the result list are copied as
//! their original bytes (unknown fields inside them preserved); only the list header changes.

use bytes::BytesMut;

use crate::codec::reader::{Reader, Ty};
use crate::codec::value::{read_value, Value};
use crate::codec::writer::Writer;
use crate::codec::{MessageType, Protocol, ScanError};

/// Outcome of filtering one reply.
#[derive(Debug)]
pub struct Filtered {
    /// The rebuilt reply (unframed).
    pub reply: BytesMut,
    pub kept: usize,
    pub dropped: usize,
}

/// Rebuilds a REPLY keeping only the elements of the list in result field 0 that `keep`
/// accepts (strings arrive as `Value::Bytes`, structs as `Value::Struct`). `Ok(None)`: the
/// reply is not a successful list result (an exception…) and goes through unchanged.
///
/// `list_path` names struct fields to descend through inside field 0 before the list (empty
/// when field 0 is the list itself; `[1]` for `GetTablesResult.tables`).
pub fn filter_list_reply(
    protocol: Protocol,
    reply: &[u8],
    list_path: &[i16],
    max_depth: usize,
    mut keep: impl FnMut(&Value) -> bool,
) -> Result<Option<Filtered>, ScanError> {
    let mut r = Reader::new(protocol, reply, max_depth);
    let h = r.message_begin()?;
    if h.kind != MessageType::Reply {
        return Ok(None);
    }
    r.struct_begin()?;
    let Some(f0) = r.field()? else {
        return Ok(None);
    };
    if f0.id != 0 {
        return Ok(None);
    }
    let mut w = Writer::new(protocol);
    w.message(&h.name, MessageType::Reply, h.seqid)
        .struct_begin();
    // Descend through the wrapper structs, copying their other fields as they come.
    let mut outer_ty = f0.ty;
    w.field(f0.ty, 0);
    let mut wrappers = 0;
    for step in list_path {
        if outer_ty != Ty::Struct {
            return Ok(None);
        }
        r.struct_begin()?;
        w.struct_begin();
        wrappers += 1;
        loop {
            let Some(f) = r.field()? else {
                return Ok(None);
            };
            if f.id == *step {
                w.field(f.ty, f.id);
                outer_ty = f.ty;
                break;
            }
            let range = r.skip(f.ty, Some(&f))?;
            w.field_raw(f, &reply[range]);
        }
    }
    if !matches!(outer_ty, Ty::List | Ty::Set) {
        return Ok(None);
    }
    let (ety, n) = r.list_begin()?;
    let mut kept_ranges = Vec::new();
    let mut dropped = 0;
    r.enter()?;
    for _ in 0..n {
        let start = r.pos();
        let v = read_value(&mut r, ety, None)?;
        if keep(&v) {
            kept_ranges.push(start..r.pos());
        } else {
            dropped += 1;
        }
    }
    r.leave();
    w.list_begin(ety, kept_ranges.len());
    for range in &kept_ranges {
        w.raw(&reply[range.clone()]);
    }
    // The rest of each wrapper struct and of the result struct, as it was.
    for _ in 0..=wrappers {
        while let Some(f) = r.field()? {
            let range = r.skip(f.ty, Some(&f))?;
            w.field_raw(f, &reply[range]);
        }
        w.struct_end();
    }
    Ok(Some(Filtered {
        reply: w.finish(false),
        kept: kept_ranges.len(),
        dropped,
    }))
}
