//! The shared metadata cache (`[cache]`, off by default): replies of reads that do not
//! depend on the caller, kept as the metastore's bytes, for every client of this proxy.
//!
//! - **Keyed by the call**: the transport (protocol, framing), the method and the arguments'
//!   bytes exactly as sent (and the session's user with `cache.per_user`); the reply is kept
//!   without its header and answered under the asking call's sequence id.
//! - **Every call is still decided**: the cache sits behind the decision, where the metastore
//!   would be; a denied call never reaches it, and filters and narrowing apply to a cached
//!   reply exactly as to a fresh one.
//! - **Tagged by what it reads** (database, table — lower case, as the metastore compares
//!   them) and dropped by the writes that touch a tag: a write through hms-guard drops its
//!   tags before it is sent and again before its reply reaches the writer; a write nobody
//!   can tag drops everything. A reply read while any write went on is not kept (an epoch
//!   counter), so no reply older than a write that passed is stored after it.
//! - **Bounded**: by bytes (least recently used entries evicted), by entry size, and by age
//!   (`cache.ttl_ms`); changes made on the metastore by others are followed through its
//!   notification log (`upstream::notifications`) — while the follower is behind by more
//!   than `cache.max_staleness_ms`, nothing is served from the cache.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::ops::metrics::Metrics;
use crate::wire::codec::header::write_message_begin;
use crate::wire::codec::{MessageHeader, MessageType};
use crate::wire::transport::Transport;

/// `[cache]` resolved.
#[derive(Debug, Clone)]
pub struct CacheSettings {
    pub max_bytes: usize,
    pub max_entry_bytes: usize,
    /// The longest an entry is served.
    pub ttl: Duration,
    /// The metastore's notification log is followed (else entries live `ttl`).
    pub notifications: bool,
    /// The follower behind by more than this: the cache is not served.
    pub max_staleness: Duration,
    /// The session's user in every key (a metastore that filters replies by user).
    pub per_user: bool,
}

/// What a table or database read is about: invalidation finds entries by it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag {
    pub db: String,
    /// `None`: the database itself and its listings.
    pub table: Option<String>,
}

/// A name as the metastore's database compares it: lower case, trailing spaces ignored
/// (Derby and MySQL's PAD SPACE collations compare `t` and `t ` equal) — wider than the exact
/// name, so a write reaches every entry that could read what it changed.
fn folded(name: &str) -> String {
    name.trim_end_matches(' ').to_lowercase()
}

impl Tag {
    pub fn table(db: &str, table: &str) -> Tag {
        Tag {
            db: folded(db),
            table: Some(folded(table)),
        }
    }

    pub fn database(db: &str) -> Tag {
        Tag {
            db: folded(db),
            table: None,
        }
    }
}

/// What a call does to the cache, decided with the call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum CacheUse {
    /// Not cached, changes nothing cached.
    #[default]
    None,
    /// A read the cache may answer.
    Read { key: Bytes, tags: Vec<Tag> },
    /// A write: entries with these tags are dropped.
    Write(Vec<Tag>),
    /// A write whose reach is unknown: everything is dropped.
    WriteAll,
}

struct Entry {
    /// The reply without its message header (and frame prefix).
    body: Bytes,
    tags: Vec<Tag>,
    stored: Instant,
    tick: u64,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<Bytes, Entry>,
    /// Least recently used first.
    order: BTreeMap<u64, Bytes>,
    by_tag: BTreeMap<Tag, BTreeSet<Bytes>>,
    bytes: usize,
    tick: u64,
}

/// The epoch a miss started in: its reply is kept only if no write went on since.
#[derive(Debug, Clone, Copy)]
pub struct Ticket(u64);

pub struct ReplyCache {
    settings: CacheSettings,
    inner: Mutex<Inner>,
    /// Bumped by every invalidation.
    epoch: AtomicU64,
    /// Whether entries may be served at all (`set_serving`).
    serving: AtomicBool,
    /// With notifications: entries are served until this many ms after `start` (the last
    /// time the log was read to its end, plus `max_staleness`).
    fresh_until: AtomicU64,
    start: Instant,
    metrics: Arc<Metrics>,
    /// `cache{cache="replies", result="hit"}`, resolved once (counted on every hit).
    hits: prometheus_client::metrics::counter::Counter,
}

/// What an entry costs beyond its bytes (key copies, maps).
const ENTRY_OVERHEAD: usize = 160;

impl ReplyCache {
    pub fn new(settings: CacheSettings, metrics: Arc<Metrics>) -> Self {
        let fresh_until = if settings.notifications { 0 } else { u64::MAX };
        metrics
            .cache_serving
            .set(i64::from(!settings.notifications));
        let hits = metrics
            .cache
            .get_or_create(&crate::ops::metrics::CacheLabels {
                cache: "replies",
                result: "hit",
            })
            .clone();
        ReplyCache {
            hits,
            settings,
            inner: Mutex::new(Inner::default()),
            epoch: AtomicU64::new(0),
            serving: AtomicBool::new(true),
            fresh_until: AtomicU64::new(fresh_until),
            start: Instant::now(),
            metrics,
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The notification log was read to its end at `at`: entries may be served until
    /// `max_staleness` after it.
    pub fn caught_up(&self, at: Instant) {
        let at = u64::try_from(at.saturating_duration_since(self.start).as_millis()).unwrap_or(0);
        let until = at.saturating_add(
            u64::try_from(self.settings.max_staleness.as_millis()).unwrap_or(u64::MAX),
        );
        self.fresh_until.store(until, Ordering::Release);
        self.metrics.cache_serving.set(1);
    }

    /// Whether entries may be served now.
    pub fn serving(&self) -> bool {
        let fresh = self.now_ms() < self.fresh_until.load(Ordering::Acquire);
        let on = fresh && self.serving.load(Ordering::Acquire);
        if !on {
            self.metrics.cache_serving.set(0);
        }
        on
    }

    pub fn settings(&self) -> &CacheSettings {
        &self.settings
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent maps (each step completes).
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached reply to `key`, as a whole message answering `header` (its sequence id).
    pub fn get(&self, key: &Bytes, transport: Transport, header: &MessageHeader) -> Option<Bytes> {
        if !self.serving() {
            self.metrics.cache_lookup("bypassed");
            return None;
        }
        let mut inner = self.lock();
        let ttl = self.settings.ttl;
        let expired = match inner.entries.get(key) {
            None => {
                drop(inner);
                self.metrics.cache_lookup("miss");
                return None;
            }
            Some(e) => e.stored.elapsed() > ttl,
        };
        if expired {
            inner.remove(key);
            self.update_gauges(&inner);
            drop(inner);
            self.metrics.cache_lookup("expired");
            return None;
        }
        inner.tick += 1;
        let tick = inner.tick;
        let entry = inner.entries.get_mut(key)?;
        let old = std::mem::replace(&mut entry.tick, tick);
        let body = entry.body.clone();
        inner.order.remove(&old);
        inner.order.insert(tick, key.clone());
        drop(inner);
        self.hits.inc();
        Some(message(transport, header, &body))
    }

    /// The epoch a miss starts in (before the call is sent).
    pub fn ticket(&self) -> Ticket {
        Ticket(self.epoch.load(Ordering::Acquire))
    }

    /// Keeps a successful reply (`reply`: the whole message as the metastore sent it) read
    /// under `ticket`: not if any write went on since, not if it is too large.
    pub fn put(
        &self,
        key: Bytes,
        tags: Vec<Tag>,
        transport: Transport,
        reply: &[u8],
        ticket: Ticket,
    ) {
        let Some(body) = body(transport, reply) else {
            return;
        };
        let size = body.len() + key.len() + ENTRY_OVERHEAD;
        if size > self.settings.max_entry_bytes {
            self.metrics.cache_store("too_large");
            return;
        }
        let mut inner = self.lock();
        // Checked under the lock: an invalidation takes it too.
        if self.epoch.load(Ordering::Acquire) != ticket.0 {
            drop(inner);
            self.metrics.cache_store("raced");
            return;
        }
        inner.remove(&key);
        inner.tick += 1;
        let tick = inner.tick;
        for t in &tags {
            inner
                .by_tag
                .entry(t.clone())
                .or_default()
                .insert(key.clone());
        }
        inner.order.insert(tick, key.clone());
        inner.bytes += size;
        inner.entries.insert(
            key,
            Entry {
                body,
                tags,
                stored: Instant::now(),
                tick,
            },
        );
        let mut evicted = 0u64;
        while inner.bytes > self.settings.max_bytes {
            let Some((_, oldest)) = inner.order.pop_first() else {
                break;
            };
            inner.remove(&oldest);
            evicted += 1;
        }
        self.update_gauges(&inner);
        drop(inner);
        self.metrics.cache_store("stored");
        self.metrics.cache_evictions.inc_by(evicted);
    }

    /// Drops the entries of each tag; a database tag drops every entry of the database; a
    /// table tag also drops its database's own entries (listings name the tables).
    pub fn invalidate(&self, tags: &[Tag]) {
        let mut inner = self.lock();
        self.epoch.fetch_add(1, Ordering::AcqRel);
        let mut doomed: BTreeSet<Bytes> = BTreeSet::new();
        for t in tags {
            let range: Vec<Tag> = match &t.table {
                Some(_) => vec![t.clone(), Tag::database(&t.db)],
                None => inner
                    .by_tag
                    .range(Tag::database(&t.db)..)
                    .take_while(|(k, _)| k.db == t.db)
                    .map(|(k, _)| k.clone())
                    .collect(),
            };
            for k in range {
                if let Some(keys) = inner.by_tag.get(&k) {
                    doomed.extend(keys.iter().cloned());
                }
            }
        }
        let n = doomed.len() as u64;
        for k in doomed {
            inner.remove(&k);
        }
        self.update_gauges(&inner);
        drop(inner);
        self.metrics.cache_invalidated.inc_by(n);
    }

    /// Drops everything (a write nobody can tag, a gap in the notification log).
    pub fn flush(&self) {
        let mut inner = self.lock();
        self.epoch.fetch_add(1, Ordering::AcqRel);
        let n = inner.entries.len() as u64;
        *inner = Inner::default();
        self.update_gauges(&inner);
        drop(inner);
        self.metrics.cache_invalidated.inc_by(n);
    }

    /// What a call does to the cache, carried out before it is sent and again before its
    /// reply reaches the client.
    pub fn apply_write(&self, use_: &CacheUse) {
        match use_ {
            CacheUse::Write(tags) => self.invalidate(tags),
            CacheUse::WriteAll => self.flush(),
            CacheUse::None | CacheUse::Read { .. } => {}
        }
    }

    /// Serving on or off (tests, and a follower that must start over). Turned off,
    /// everything is dropped.
    pub fn set_serving(&self, on: bool) {
        let was = self.serving.swap(on, Ordering::AcqRel);
        if was && !on {
            self.flush();
        }
    }

    fn update_gauges(&self, inner: &Inner) {
        self.metrics.cache_bytes.set(inner.bytes as i64);
        self.metrics.cache_entries.set(inner.entries.len() as i64);
    }
}

impl Inner {
    fn remove(&mut self, key: &Bytes) {
        if let Some(e) = self.entries.remove(key) {
            self.order.remove(&e.tick);
            self.bytes -= e.body.len() + key.len() + ENTRY_OVERHEAD;
            for t in &e.tags {
                if let Some(keys) = self.by_tag.get_mut(t) {
                    keys.remove(key);
                    if keys.is_empty() {
                        self.by_tag.remove(t);
                    }
                }
            }
        }
    }
}

/// A key: the transport, the method, the arguments' bytes (everything after the message
/// header), and the user when keys are per user.
pub fn key(
    transport: Transport,
    header: &MessageHeader,
    message: &[u8],
    user: Option<&str>,
) -> Bytes {
    let msg = crate::wire::framing::unframed(transport, message);
    let args = msg.get(header.len..).unwrap_or_default();
    let mut k = BytesMut::with_capacity(args.len() + header.name.len() + 8);
    k.extend_from_slice(&[u8::from(transport.framed), transport.protocol as u8]);
    k.extend_from_slice(header.name.as_bytes());
    k.extend_from_slice(&[0]);
    if let Some(u) = user {
        k.extend_from_slice(u.as_bytes());
        k.extend_from_slice(&[0]);
    }
    k.extend_from_slice(args);
    k.freeze()
}

/// The body of a successful reply (after its header), or `None` for anything else (an
/// exception, an unreadable header).
fn body(transport: Transport, reply: &[u8]) -> Option<Bytes> {
    let msg = crate::wire::framing::unframed(transport, reply);
    let mut r = crate::wire::codec::reader::Reader::new(transport.protocol, msg, 8);
    let h = r.message_begin().ok()?;
    if h.kind != MessageType::Reply {
        return None;
    }
    let body = msg.get(h.len..)?;
    // Only a success (field 0) is kept: a declared exception (no such table…), a void or
    // missing result, or anything unreadable is not.
    r.struct_begin().ok()?;
    match r.field() {
        Ok(Some(f)) if f.id == 0 => Some(Bytes::copy_from_slice(body)),
        _ => None,
    }
}

/// A whole reply message answering `header` with `body`.
fn message(transport: Transport, header: &MessageHeader, body: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(body.len() + header.name.len() + 16);
    write_message_begin(
        &mut out,
        transport.protocol,
        &header.name,
        MessageType::Reply,
        header.seqid,
    );
    out.extend_from_slice(body);
    if transport.framed {
        let mut framed = BytesMut::with_capacity(out.len() + 4);
        framed.extend_from_slice(&(out.len() as u32).to_be_bytes());
        framed.extend_from_slice(&out);
        return framed.freeze();
    }
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::codec::writer::Writer;
    use crate::wire::codec::{Protocol, Ty};

    const T: Transport = Transport {
        protocol: Protocol::Binary,
        framed: false,
    };

    fn settings(max_bytes: usize) -> CacheSettings {
        CacheSettings {
            max_bytes,
            max_entry_bytes: max_bytes,
            ttl: Duration::from_secs(60),
            notifications: false,
            max_staleness: Duration::from_secs(1),
            per_user: false,
        }
    }

    fn cache(max_bytes: usize) -> ReplyCache {
        ReplyCache::new(settings(max_bytes), Arc::new(Metrics::new()))
    }

    /// A reply to `get_table` carrying `text` as its result (field 0), sequence id `seqid`.
    fn reply(text: &str, seqid: i32) -> Vec<u8> {
        let mut w = Writer::new(Protocol::Binary);
        w.message("get_table", MessageType::Reply, seqid)
            .struct_begin();
        w.field(Ty::String, 0).string(text.as_bytes());
        w.struct_end();
        w.finish(false).to_vec()
    }

    fn header(seqid: i32) -> MessageHeader {
        let r = reply("", seqid);
        let mut rd = crate::wire::codec::reader::Reader::new(Protocol::Binary, &r, 8);
        let mut h = rd.message_begin().unwrap();
        h.kind = MessageType::Call;
        h
    }

    fn k(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn a_hit_answers_under_the_asking_calls_sequence_id() {
        let c = cache(1 << 20);
        c.put(
            k("a"),
            vec![Tag::table("d", "t")],
            T,
            &reply("x", 7),
            c.ticket(),
        );
        assert_eq!(c.get(&k("a"), T, &header(42)).unwrap(), reply("x", 42));
        assert!(c.get(&k("b"), T, &header(1)).is_none());
        // Framed: the length prefix is written for the new message.
        let framed = Transport { framed: true, ..T };
        let mut f = (reply("y", 3).len() as u32).to_be_bytes().to_vec();
        f.extend(reply("y", 3));
        c.put(k("f"), vec![], framed, &f, c.ticket());
        let mut want = (reply("y", 9).len() as u32).to_be_bytes().to_vec();
        want.extend(reply("y", 9));
        assert_eq!(c.get(&k("f"), framed, &header(9)).unwrap(), want);
    }

    #[test]
    fn only_successful_replies_are_kept() {
        let c = cache(1 << 20);
        let mut w = Writer::new(Protocol::Binary);
        w.message("get_table", MessageType::Reply, 1).struct_begin();
        w.field(Ty::Struct, 2).struct_begin();
        w.field(Ty::String, 1).string(b"no such table");
        w.struct_end();
        w.struct_end();
        c.put(k("e"), vec![], T, &w.finish(false), c.ticket());
        assert!(c.get(&k("e"), T, &header(1)).is_none());
        c.put(k("junk"), vec![], T, b"\x80\x01", c.ticket());
        assert!(c.get(&k("junk"), T, &header(1)).is_none());
    }

    #[test]
    fn writes_drop_their_tables_their_databases_listings_and_races() {
        let c = cache(1 << 20);
        let t = c.ticket();
        c.put(k("t1"), vec![Tag::table("d", "t1")], T, &reply("1", 1), t);
        c.put(k("t2"), vec![Tag::table("d", "t2")], T, &reply("2", 1), t);
        c.put(k("list"), vec![Tag::database("d")], T, &reply("l", 1), t);
        c.put(
            k("other"),
            vec![Tag::table("e", "t1")],
            T,
            &reply("o", 1),
            t,
        );
        // A table tag (folded as the metastore compares names) drops the table and the
        // database's own entries.
        c.invalidate(&[Tag::table("D", "T1 ")]);
        assert!(c.get(&k("t1"), T, &header(1)).is_none());
        assert!(c.get(&k("list"), T, &header(1)).is_none());
        assert!(c.get(&k("t2"), T, &header(1)).is_some());
        // A database tag drops every entry of the database.
        c.invalidate(&[Tag::database("d")]);
        assert!(c.get(&k("t2"), T, &header(1)).is_none());
        assert!(c.get(&k("other"), T, &header(1)).is_some());
        // A reply read while a write went on is not kept.
        let before = c.ticket();
        c.invalidate(&[Tag::table("x", "y")]);
        c.put(
            k("late"),
            vec![Tag::table("d", "t1")],
            T,
            &reply("old", 1),
            before,
        );
        assert!(c.get(&k("late"), T, &header(1)).is_none());
        c.flush();
        assert!(c.get(&k("other"), T, &header(1)).is_none());
    }

    #[test]
    fn bytes_are_bounded_least_recently_used_first() {
        let one = reply(&"x".repeat(100), 1);
        let size = one.len() - 20 + 2 + ENTRY_OVERHEAD; // about one entry
        let c = cache(size * 3);
        for n in ["a", "b", "c"] {
            c.put(k(n), vec![], T, &one, c.ticket());
        }
        assert!(c.get(&k("a"), T, &header(1)).is_some()); // a is now the most recent
        c.put(k("d"), vec![], T, &one, c.ticket());
        assert!(
            c.get(&k("b"), T, &header(1)).is_none(),
            "b, least recently used, evicted"
        );
        assert!(c.get(&k("a"), T, &header(1)).is_some());
        assert!(c.get(&k("d"), T, &header(1)).is_some());
        assert!(c.lock().bytes <= size * 3);
        // Larger than an entry may be: not kept.
        let c = ReplyCache::new(
            CacheSettings {
                max_entry_bytes: 64,
                ..settings(1 << 20)
            },
            Arc::new(Metrics::new()),
        );
        c.put(k("big"), vec![], T, &one, c.ticket());
        assert!(c.get(&k("big"), T, &header(1)).is_none());
    }

    #[test]
    fn with_notifications_nothing_is_served_beyond_the_staleness_bound() {
        let c = ReplyCache::new(
            CacheSettings {
                notifications: true,
                max_staleness: Duration::from_millis(50),
                ..settings(1 << 20)
            },
            Arc::new(Metrics::new()),
        );
        c.put(k("a"), vec![], T, &reply("x", 1), c.ticket());
        assert!(c.get(&k("a"), T, &header(1)).is_none(), "not caught up yet");
        c.caught_up(Instant::now());
        assert!(c.get(&k("a"), T, &header(1)).is_some());
        std::thread::sleep(Duration::from_millis(80));
        assert!(c.get(&k("a"), T, &header(1)).is_none(), "behind the bound");
        c.caught_up(Instant::now());
        assert!(c.get(&k("a"), T, &header(1)).is_some());
    }

    #[test]
    fn keys_hold_the_transport_the_method_the_arguments_and_the_user() {
        let mut w = Writer::new(Protocol::Binary);
        w.message("get_table", MessageType::Call, 5).struct_begin();
        w.field(Ty::String, 1).string(b"d");
        w.struct_end();
        let msg = w.finish(false);
        let mut rd = crate::wire::codec::reader::Reader::new(Protocol::Binary, &msg, 8);
        let h = rd.message_begin().unwrap();
        let mut w2 = Writer::new(Protocol::Binary);
        w2.message("get_table", MessageType::Call, 6).struct_begin();
        w2.field(Ty::String, 1).string(b"d");
        w2.struct_end();
        let msg2 = w2.finish(false);
        // The sequence id is not part of the key; the user is, when asked.
        assert_eq!(key(T, &h, &msg, None), key(T, &h, &msg2, None));
        assert_ne!(key(T, &h, &msg, Some("ann")), key(T, &h, &msg, Some("bob")));
        let compact = Transport {
            protocol: Protocol::Compact,
            framed: false,
        };
        assert_ne!(key(T, &h, &msg, None), key(compact, &h, &msg, None));
    }
}
