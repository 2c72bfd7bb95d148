//! A forwarded call's reply, where the decision says to check it: a listing filtered to
//! what the caller may see (walked once; head and tail copied as bytes), or a read of a table
//! that was absent when decided, withheld if the metastore found it after all.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bytes::BytesMut;

use super::filter::{empty_list_reply, parse_list_reply, Listed, ListedReply};
use super::narrow::reply::narrow_table;
use super::outcome::ReplyCheck;
use super::Guard;
use crate::decision::authz::{readable, visible, Grants, Object, Policy};
use crate::decision::narrow::reply::NarrowError;
use crate::listener::identity::Identity;
use crate::wire::answer::denial;
use crate::wire::codec::value::Value;
use crate::wire::codec::{MessageHeader, ScanError};
use crate::wire::framing::{frame, unframed};
use crate::wire::router::{ListShape, Method};
use crate::wire::schema::fields::{database, table, table_meta};
use crate::wire::transport::Transport;

/// How to filter one listing reply.
#[derive(Debug, Clone)]
pub struct ListFilter {
    pub shape: ListShape,
    /// Database of a `Names` listing.
    pub db: String,
    pub identity: Identity,
    pub grants: Arc<Grants>,
}

/// What the client gets for a checked reply.
#[derive(Debug)]
pub struct Replied {
    pub bytes: BytesMut,
    /// The metastore's reply was replaced by the denial (`Decided::withheld`).
    pub withheld: bool,
}

impl Guard {
    /// What the client gets for a whole `reply` to a call forwarded with `check`: a listing
    /// filtered to what the caller may see; a read of a table that was absent when decided,
    /// withheld (replaced by the denial) if it found the table after all. `Err`: the reply
    /// could not be read.
    pub async fn reply(
        &self,
        check: &ReplyCheck,
        transport: Transport,
        entry: Option<&'static Method>,
        header: &MessageHeader,
        reply: BytesMut,
    ) -> Result<Replied, ScanError> {
        let passed = |bytes| Replied {
            bytes,
            withheld: false,
        };
        match check {
            ReplyCheck::Stream => Ok(passed(reply)),
            ReplyCheck::DenyIfFound(message) => {
                let found = crate::wire::codec::reply::carries_result(
                    transport.protocol,
                    unframed(transport, &reply),
                    self.max_depth,
                );
                if !found {
                    return Ok(passed(reply));
                }
                tracing::warn!(method = %header.name, "a table absent when decided exists: its reply is withheld");
                Ok(Replied {
                    bytes: denial(transport, entry, header, message),
                    withheld: true,
                })
            }
            ReplyCheck::Filter(f) => Ok(passed(self.filter(f, transport, header, reply).await?)),
            ReplyCheck::Narrow { narrowed, message } => {
                let narrowed = crate::decision::narrow::reply::narrow_reply(
                    transport.protocol,
                    unframed(transport, &reply),
                    &header.name,
                    narrowed,
                    self.max_depth,
                );
                match narrowed {
                    Ok(bytes) => Ok(passed(frame(transport, bytes))),
                    Err(NarrowError::Scan(e)) => Err(e),
                    Err(e) => {
                        tracing::warn!(method = %header.name, error = %e, "a narrowed reply is withheld");
                        Ok(Replied {
                            bytes: denial(transport, entry, header, &format!("{message} ({e})")),
                            withheld: true,
                        })
                    }
                }
            }
        }
    }

    /// A listing reply filtered to what the caller may see (walked once; head and tail copied
    /// as bytes).
    async fn filter(
        &self,
        f: &ListFilter,
        transport: Transport,
        header: &MessageHeader,
        reply: BytesMut,
    ) -> Result<BytesMut, ScanError> {
        let listed = parse_list_reply(
            transport.protocol,
            unframed(transport, &reply),
            f.shape.list_path(),
            self.max_depth,
        )?;
        let Some(listed) = listed else {
            // Not a list (an exception: "no such database"…). For a database the caller may
            // not see, the answer an existing one with nothing visible in it gives.
            if self.hides_database(f).await {
                tracing::debug!(method = %header.name, db = %f.db, "a listing of a database hidden from the caller failed: answered as empty");
                let empty = empty_list_reply(
                    transport.protocol,
                    &header.name,
                    header.seqid,
                    f.shape.list_path(),
                    f.shape.element(),
                );
                return Ok(frame(transport, empty));
            }
            return Ok(reply);
        };
        // Names without a grant may be the caller's own tables or databases: their owners are
        // looked up (cached, bounded) before the reply is filtered.
        let mut unseen = Vec::new();
        if !matches!(f.shape, ListShape::Tables | ListShape::TablesInResult) {
            unseen = listed
                .values()
                .filter_map(|v| listed_object(f, v))
                .filter(|o| !visible_by_grants(f, &self.policy, o))
                .take(MAX_LISTING_OWNER_LOOKUPS)
                .collect();
        }
        let owned = self.owned_among(f, unseen).await;
        let narrowed = self.narrowed_among(f, &listed, transport, &owned).await;
        let filtered = listed.rebuild(|i, v| match narrowed.get(&i) {
            Some(Some(bytes)) => Listed::Replace(bytes.clone()),
            Some(None) => Listed::Keep,
            None if keep_listed(f, &self.policy, v, &owned) => Listed::Keep,
            None => Listed::Drop,
        });
        tracing::debug!(
            kept = filtered.kept,
            dropped = filtered.dropped,
            "listing filtered"
        );
        Ok(frame(transport, filtered.reply))
    }

    /// Whether a listing names one database (not a pattern) that the caller may not see: not
    /// `default`, not an admin, holding nothing on or in it, not its owner (a failed lookup
    /// counts as not owning it). Its failures are then answered as an empty listing, so that
    /// a missing database and an existing one with nothing visible answer alike.
    pub async fn hides_database(&self, f: &ListFilter) -> bool {
        let named = !matches!(
            f.shape,
            ListShape::Metas | ListShape::DbNames | ListShape::Databases
        );
        if !named || f.db.is_empty() || f.db == "*" {
            return false;
        }
        if crate::decision::authz::database_visible(&f.identity, &f.grants, &self.policy, &f.db) {
            return false;
        }
        let owner = self.facts.object(&Object::database(&f.db)).await;
        !matches!(owner, Ok(Some(facts)) if facts.owner.as_ref()
            .is_some_and(|o| crate::decision::authz::owner_matches(&f.identity, &f.grants, o)))
    }

    /// Whole tables of a listing the caller may read only part of: by index, the narrowed
    /// table's bytes (`None`: nothing hidden, kept as it is). Tables it may not read, or whose
    /// parts give none, are not in the map (left out); at most `MAX_LISTING_OWNER_LOOKUPS`
    /// are looked at.
    async fn narrowed_among(
        &self,
        f: &ListFilter,
        listed: &ListedReply<'_>,
        transport: Transport,
        owned: &HashSet<Object>,
    ) -> HashMap<usize, Option<BytesMut>> {
        let mut out = HashMap::new();
        if !matches!(f.shape, ListShape::Tables | ListShape::TablesInResult)
            || self.policy.is_admin(&f.identity, &f.grants)
        {
            return out;
        }
        let viewed = self.viewed_tables(&f.identity, &f.grants).await;
        let partial = listed.values().enumerate().filter_map(|(i, v)| {
            let obj = listed_object(f, v)?;
            let whole = keep_listed(f, &self.policy, v, owned);
            (!whole && (f.grants.any_on(&obj) || viewed.contains(&obj))).then_some((i, obj))
        });
        for (i, obj) in partial.take(MAX_LISTING_OWNER_LOOKUPS).collect::<Vec<_>>() {
            let Ok(Some(n)) = self.narrowing(&f.identity, &f.grants, &obj).await else {
                continue;
            };
            if n.is_whole() {
                out.insert(i, None);
                continue;
            }
            match narrow_table(
                transport.protocol,
                listed.element_bytes(i),
                &n,
                self.max_depth,
            ) {
                Ok(bytes) => {
                    out.insert(i, Some(bytes));
                }
                Err(e) => {
                    tracing::warn!(table = %obj, error = %e, "a listed table could not be narrowed: left out");
                }
            }
        }
        out
    }

    /// The tables among `tables` the caller owns (owner facts, cached; a failed lookup counts
    /// as not owned: the table is left out).
    pub async fn owned_among(&self, f: &ListFilter, tables: Vec<Object>) -> HashSet<Object> {
        let mut owned = HashSet::new();
        for t in tables.into_iter().take(MAX_LISTING_OWNER_LOOKUPS) {
            if let Ok(Some(facts)) = self.facts.object(&t).await {
                if facts.owner.as_ref().is_some_and(|o| {
                    crate::decision::authz::owner_matches(&f.identity, &f.grants, o)
                }) {
                    owned.insert(t);
                }
            }
        }
        owned
    }
}

/// The object a listed element names: a table (`Names`: a table name in `f.db`; `Metas`,
/// `Tables`: a struct) or a database (`DbNames`: a name; `Databases`: a struct).
pub fn listed_object(f: &ListFilter, element: &Value) -> Option<Object> {
    let s = |id| element.field(id).and_then(Value::as_str);
    let (db, table) = match f.shape {
        ListShape::Names => (Some(f.db.as_str()), element.as_str()),
        ListShape::Metas => (s(table_meta::DB_NAME), s(table_meta::TABLE_NAME)),
        ListShape::Tables | ListShape::TablesInResult => (s(table::DB_NAME), s(table::TABLE_NAME)),
        ListShape::DbNames => return element.as_str().map(Object::database),
        ListShape::Databases => return s(database::NAME).map(Object::database),
    };
    Some(Object::table(db?, table?))
}

/// Whether a listed element is visible by grants alone (no ownership).
pub fn visible_by_grants(f: &ListFilter, policy: &Policy, obj: &Object) -> bool {
    match obj {
        Object::Database(db) => {
            crate::decision::authz::database_visible(&f.identity, &f.grants, policy, db)
        }
        _ => visible(&f.identity, &f.grants, policy, obj),
    }
}

/// Whether a listed element stays: whole tables for their owner or SELECT; names of tables
/// and databases for a privilege on (in) them or their ownership (`owned`: objects of the
/// listing the caller owns, looked up by `Guard::owned_among`).
pub fn keep_listed(
    f: &ListFilter,
    policy: &Policy,
    element: &Value,
    owned: &HashSet<Object>,
) -> bool {
    let Some(obj) = listed_object(f, element) else {
        return false;
    };
    match f.shape {
        // Whole tables: their owner, or SELECT (what reading the table alone needs).
        ListShape::Tables | ListShape::TablesInResult => {
            element.field(table::OWNER).and_then(Value::as_str) == Some(f.identity.user.as_str())
                || readable(&f.identity, &f.grants, policy, &obj)
        }
        _ => visible_by_grants(f, policy, &obj) || owned.contains(&obj),
    }
}

/// Owner lookups one listing may make (tables listed without a grant): beyond it, such tables
/// are left out of the reply.
pub const MAX_LISTING_OWNER_LOOKUPS: usize = 1000;
