//! Filtering listing replies by splicing: the kept elements of the result list are copied as
//! their original bytes (unknown fields inside them preserved); only the list header changes.

use bytes::BytesMut;

use crate::wire::codec::value::{read_value, Value};
use crate::wire::codec::writer::Writer;
use crate::wire::codec::{reader::Reader, Ty};
use crate::wire::codec::{MessageType, Protocol, ScanError};
use crate::wire::schema::fields::method_result::SUCCESS;

/// What becomes of one listed element.
#[derive(Debug)]
pub enum Listed {
    Keep,
    Drop,
    /// Replaced by these bytes (a narrowed table).
    Replace(BytesMut),
}

/// Outcome of filtering one reply.
#[derive(Debug)]
pub struct Filtered {
    /// The rebuilt reply (unframed).
    pub reply: BytesMut,
    pub kept: usize,
    pub dropped: usize,
}

/// A listing reply, walked once: the elements of the list in result field 0 (`success`; their
/// bytes and values), and the bytes around them.
pub struct ListedReply<'a> {
    reply: &'a [u8],
    protocol: Protocol,
    /// The reply up to the list header (message header, result struct, wrapper fields).
    head: std::ops::Range<usize>,
    elem: Ty,
    items: Vec<(std::ops::Range<usize>, Value)>,
    /// The reply after the list (the rest of each wrapper struct and of the result).
    tail: std::ops::Range<usize>,
}

/// Walks a REPLY whose result field 0 is (or holds, through `list_path`) a list. `Ok(None)`:
/// the reply is not a successful list result (an exception…) and goes through unchanged.
///
/// `list_path` names struct fields to descend through inside field 0 before the list (empty
/// when field 0 is the list itself; `[1]` for `GetTablesResult.tables`).
pub fn parse_list_reply<'a>(
    protocol: Protocol,
    reply: &'a [u8],
    list_path: &[i16],
    max_depth: usize,
) -> Result<Option<ListedReply<'a>>, ScanError> {
    let mut r = Reader::new(protocol, reply, max_depth);
    let h = r.message_begin()?;
    if h.kind != MessageType::Reply {
        return Ok(None);
    }
    r.struct_begin()?;
    let Some(f0) = r.field()? else {
        return Ok(None);
    };
    if f0.id != SUCCESS {
        return Ok(None);
    }
    // Descend through the wrapper structs (their fields before the list are kept as bytes).
    let mut outer_ty = f0.ty;
    let mut wrappers = 0;
    for step in list_path {
        if outer_ty != Ty::Struct {
            return Ok(None);
        }
        r.struct_begin()?;
        wrappers += 1;
        loop {
            let Some(f) = r.field()? else {
                return Ok(None);
            };
            if f.id == *step {
                outer_ty = f.ty;
                break;
            }
            r.skip(f.ty, Some(&f))?;
        }
    }
    if !matches!(outer_ty, Ty::List | Ty::Set) {
        return Ok(None);
    }
    let head = 0..r.pos();
    let (elem, n) = r.list_begin()?;
    let mut items = Vec::with_capacity(n.min(4096));
    r.enter()?;
    for _ in 0..n {
        let start = r.pos();
        let v = read_value(&mut r, elem, None)?;
        items.push((start..r.pos(), v));
    }
    r.leave();
    let after_list = r.pos();
    for _ in 0..=wrappers {
        while let Some(f) = r.field()? {
            r.skip(f.ty, Some(&f))?;
        }
    }
    Ok(Some(ListedReply {
        reply,
        protocol,
        head,
        elem,
        items,
        tail: after_list..r.pos(),
    }))
}

impl ListedReply<'_> {
    /// The listed elements (strings as `Value::Bytes`, structs as `Value::Struct`).
    pub fn values(&self) -> impl Iterator<Item = &Value> {
        self.items.iter().map(|(_, v)| v)
    }

    /// The reply with only the elements `keep` accepts: every other byte as it was, the list
    /// header rewritten for the new count.
    pub fn keep(&self, mut keep: impl FnMut(&Value) -> bool) -> Filtered {
        self.rebuild(|_, v| if keep(v) { Listed::Keep } else { Listed::Drop })
    }

    /// The bytes of element `i`, as the metastore wrote them.
    pub fn element_bytes(&self, i: usize) -> &[u8] {
        &self.reply[self.items[i].0.clone()]
    }

    /// The reply with each element kept, dropped or replaced as `f` says (by index and
    /// value): every other byte as it was, the list header rewritten for the new count.
    pub fn rebuild(&self, mut f: impl FnMut(usize, &Value) -> Listed) -> Filtered {
        let fates: Vec<Listed> = self
            .items
            .iter()
            .enumerate()
            .map(|(i, (_, v))| f(i, v))
            .collect();
        let kept = fates.iter().filter(|l| !matches!(l, Listed::Drop)).count();
        let mut w = Writer::with_capacity(self.protocol, self.reply.len());
        w.raw(&self.reply[self.head.clone()]);
        w.list_begin(self.elem, kept);
        for ((range, _), fate) in self.items.iter().zip(&fates) {
            match fate {
                Listed::Keep => {
                    w.raw(&self.reply[range.clone()]);
                }
                Listed::Replace(bytes) => {
                    w.raw(bytes);
                }
                Listed::Drop => {}
            }
        }
        w.raw(&self.reply[self.tail.clone()]);
        Filtered {
            reply: w.finish(false),
            kept,
            dropped: self.items.len() - kept,
        }
    }
}

/// The REPLY a listing gives when nothing in it may be shown: result field 0 holding (through
/// `list_path`'s wrapper structs) an empty list of `elem` — byte for byte what filtering every
/// element out of the metastore's own reply gives.
pub fn empty_list_reply(
    protocol: Protocol,
    method: &str,
    seqid: i32,
    list_path: &[i16],
    elem: Ty,
) -> BytesMut {
    let mut w = Writer::new(protocol);
    w.message(method, MessageType::Reply, seqid).struct_begin();
    let mut id = SUCCESS;
    for &step in list_path {
        w.field(Ty::Struct, id).struct_begin();
        id = step;
    }
    w.field(Ty::List, id).list_begin(elem, 0);
    for _ in list_path {
        w.struct_end();
    }
    w.struct_end();
    w.finish(false)
}

/// Rebuilds a REPLY keeping only the elements of its result list that `keep` accepts
/// (`parse_list_reply`, then `ListedReply::keep`).
pub fn filter_list_reply(
    protocol: Protocol,
    reply: &[u8],
    list_path: &[i16],
    max_depth: usize,
    keep: impl FnMut(&Value) -> bool,
) -> Result<Option<Filtered>, ScanError> {
    Ok(parse_list_reply(protocol, reply, list_path, max_depth)?.map(|l| l.keep(keep)))
}
