//! The notification-log follower: reads the metastore's notification log
//! (`get_current_notificationEventId`, then `get_next_notification` every
//! `notifications.poll_ms`) and tells the shared metadata cache and the location index what
//! other clients changed on the metastore directly.
//!
//! - **The cache** drops the entries of every table and database an event names (a rename:
//!   the old name too, read from the event's message).
//! - **The index** reads each table an event names again (gone: forgotten), a dropped
//!   database's tables are forgotten; this runs on its own task (`IndexFeed`) so a slow
//!   metastore never holds the cache's invalidation back; a feed that overflows asks for a
//!   rebuild.
//! - A **gap** (the first event after the last one read has a larger id than the next: the
//!   metastore purged events before they were read) drops the whole cache and rebuilds the
//!   index.
//! - The cache is served only while the log was read to its end within
//!   `cache.max_staleness_ms` (`ReplyCache::caught_up`): a change made directly on the
//!   metastore is seen through hms-guard within that bound, and a follower that cannot read
//!   the log (the metastore down, restarted, slow) stops the cache from serving.
//! - A restarted metastore keeps its ids (they are rows of its database); a log whose end
//!   moved with no event left to read (all purged, or a new database whose ids went
//!   backwards) is a gap too.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::decision::facts::{FactsError, MetaClient};
use crate::decision::index::{IndexChange, IndexState, LocationIndex};
use crate::ops::metrics::{Metrics, OutcomeLabels};
use crate::wire::codec::reply::success;
use crate::wire::codec::value::{read_value, Value};
use crate::wire::codec::Ty;

use super::cache::{ReplyCache, Tag};

/// Events asked for at once.
const BATCH: i32 = 1_000;

/// Idle reads between two checks of the log's end (`get_current_notificationEventId`).
const END_CHECK_EVERY: u32 = 10;

/// Batches of index work waiting for the index's task; past it a rebuild is asked for.
const FEED_DEPTH: usize = 64;

/// Where a renamed table was before an `ALTER_TABLE` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Before {
    /// Not a rename (or not an `ALTER_TABLE`).
    Same,
    /// Renamed from this database and table.
    Named(String, String),
    /// The message could not be read (another encoding): it may have been a rename.
    Unknown,
}

/// One event of the log, as far as the cache and the index care.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub id: i64,
    pub kind: String,
    pub db: Option<String>,
    pub table: Option<String>,
    pub before: Before,
}

/// What an event does to the cache.
#[derive(Debug, PartialEq, Eq)]
pub enum CacheEffect {
    Tags(Vec<Tag>),
    /// Everything is dropped (a rename from an unknown place).
    All,
}

/// The names in an `ALTER_TABLE` message (Hive's JSON messages name the table as it was).
#[derive(serde::Deserialize)]
struct AlterMessage {
    db: Option<String>,
    table: Option<String>,
}

impl Event {
    fn from_value(v: &Value) -> Option<Event> {
        let text = |id| {
            v.field(id)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        let kind = text(3).unwrap_or_default();
        let (db, table) = (text(4), text(5));
        let before = if kind == "ALTER_TABLE" {
            before_of(text(6).as_deref(), db.as_deref(), table.as_deref())
        } else {
            Before::Same
        };
        Some(Event {
            id: v.field(1)?.as_int()?,
            kind,
            db,
            table,
            before,
        })
    }

    /// The cache entries the event touches (no tags: nothing cached reads what it changed).
    pub fn cache_effect(&self) -> CacheEffect {
        let mut tags = match (&self.db, &self.table) {
            (Some(db), Some(t)) => vec![Tag::table(db, t)],
            // A database's own event: the database, its tables, the list of databases.
            (Some(db), None) => vec![Tag::database(db), Tag::database("")],
            _ => Vec::new(),
        };
        match &self.before {
            Before::Same => {}
            Before::Named(db, t) => tags.push(Tag::table(db, t)),
            Before::Unknown => return CacheEffect::All,
        }
        CacheEffect::Tags(tags)
    }

    /// What the location index reads again for this event (each change reads the metastore
    /// as it is when applied, so the order of a batch's changes does not matter).
    pub fn index_changes(&self) -> Vec<IndexChange> {
        let table = |db: &str, t: &str, partitions| IndexChange::Table {
            db: db.to_ascii_lowercase(),
            table: t.to_ascii_lowercase(),
            partitions,
        };
        match (self.kind.as_str(), &self.db, &self.table) {
            // Neither moves a location the index holds.
            ("INSERT" | "CREATE_DATABASE" | "ALTER_DATABASE", _, _) => Vec::new(),
            ("DROP_DATABASE", Some(db), _) => vec![IndexChange::Database {
                db: db.to_ascii_lowercase(),
            }],
            ("ALTER_TABLE", Some(db), Some(t)) => match &self.before {
                Before::Same => vec![table(db, t, false)],
                Before::Named(odb, ot) => vec![table(odb, ot, true), table(db, t, true)],
                // A rename within the database is found by listing it; from another
                // database the old claim stays until the next rescan (it can only refuse).
                Before::Unknown => vec![
                    table(db, t, true),
                    IndexChange::Database {
                        db: db.to_ascii_lowercase(),
                    },
                ],
            },
            // Tables created or dropped, partitions added, altered or dropped, and events
            // this version does not know: the table read again with its partitions.
            (_, Some(db), Some(t)) => vec![table(db, t, true)],
            (_, Some(db), None) => vec![IndexChange::Database {
                db: db.to_ascii_lowercase(),
            }],
            _ => Vec::new(),
        }
    }
}

/// The table an `ALTER_TABLE` event's message names as it was, compared with the event's
/// own (new) names as the metastore compares them.
fn before_of(message: Option<&str>, db: Option<&str>, table: Option<&str>) -> Before {
    let Some(m) = message.filter(|m| m.trim_start().starts_with('{')) else {
        return Before::Unknown;
    };
    let Ok(AlterMessage {
        db: Some(odb),
        table: Some(ot),
    }) = serde_json::from_str::<AlterMessage>(m)
    else {
        return Before::Unknown;
    };
    let same = |a: &str, b: Option<&str>| b.is_some_and(|b| a.eq_ignore_ascii_case(b));
    if same(&odb, db) && same(&ot, table) {
        Before::Same
    } else {
        Before::Named(odb, ot)
    }
}

/// What one read of the log found.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Events after `last`, in order; `gap`: some were purged before they were read.
    Events { events: Vec<Event>, gap: bool },
}

/// The events after `last` in a reply to `get_next_notification`, and whether a gap lies
/// before them.
pub fn step(last: i64, events: Vec<Event>) -> Step {
    let gap = events.first().is_some_and(|e| e.id != last + 1);
    Step::Events { events, gap }
}

/// Work for the location index's task.
#[derive(Debug)]
enum IndexWork {
    Changes(Vec<IndexChange>),
    Rebuild,
}

/// The follower's side of the index's task: a bounded queue; when it overflows the index
/// is rebuilt rather than left missing changes.
struct IndexFeed {
    tx: mpsc::Sender<IndexWork>,
    /// Work was dropped: a rebuild is owed.
    owed: bool,
}

impl IndexFeed {
    fn start(index: Arc<LocationIndex>, metrics: Arc<Metrics>) -> IndexFeed {
        let (tx, mut rx) = mpsc::channel(FEED_DEPTH);
        tokio::spawn(async move {
            while let Some(work) = rx.recv().await {
                match work {
                    IndexWork::Changes(changes) => {
                        for c in &changes {
                            // A failure is counted and logged by apply; the rescan reads it.
                            let _ = index.apply(c).await;
                        }
                    }
                    IndexWork::Rebuild => {
                        metrics.index_rebuilds.inc();
                        if let Err(e) = index.rebuild().await {
                            tracing::warn!(error = %e, "location index: the rebuild after a notification-log gap failed; the next rescan tries again");
                        }
                    }
                }
            }
        });
        IndexFeed { tx, owed: false }
    }

    fn send(&mut self, work: IndexWork) {
        if self.owed && self.tx.try_send(IndexWork::Rebuild).is_ok() {
            self.owed = false;
        }
        if self.owed {
            return; // the owed rebuild reads everything anyway
        }
        if self.tx.try_send(work).is_err() {
            tracing::warn!("location index: notification work piles up faster than the metastore answers; a rebuild follows");
            self.owed = true;
        }
    }
}

pub struct Follower {
    client: MetaClient,
    cache: Option<Arc<ReplyCache>>,
    /// The index (to open its first build) and its feed.
    index: Option<(Arc<LocationIndex>, IndexFeed)>,
    metrics: Arc<Metrics>,
    poll: Duration,
    /// When the log was last read successfully.
    last_read: Option<Instant>,
    /// Idle reads since the log's end was last checked.
    quiet: u32,
}

/// What one read of the log asks of the cache and the index.
#[derive(Debug, Default)]
struct Read {
    /// The log was read to its end.
    done: bool,
    gap: bool,
    tags: Vec<Tag>,
    /// An event whose reach in the cache is unknown.
    flush: bool,
    changes: Vec<IndexChange>,
}

impl Follower {
    /// A follower for the cache, the index (when it is on), or both.
    pub fn new(
        client: MetaClient,
        poll: Duration,
        cache: Option<Arc<ReplyCache>>,
        index: Option<Arc<LocationIndex>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let index = index
            .filter(|i| i.reads_catalog() && i.state() != IndexState::Disabled)
            .map(|i| (i.clone(), IndexFeed::start(i, metrics.clone())));
        Follower {
            client,
            cache,
            index,
            metrics,
            poll,
            last_read: None,
            quiet: 0,
        }
    }

    /// Whether there is anything to follow the log for.
    pub fn needed(&self) -> bool {
        self.cache.is_some() || self.index.is_some()
    }

    async fn current_id(&self) -> Result<i64, FactsError> {
        const M: &str = "get_current_notificationEventId";
        let reply = self.client.call(M, |_| {}).await?;
        let v = value(M, &reply)?;
        Ok(v.field(1).and_then(Value::as_int).unwrap_or(0))
    }

    async fn next(&self, last: i64) -> Result<Vec<Event>, FactsError> {
        const M: &str = "get_next_notification";
        let reply = self
            .client
            .call(M, |w| {
                w.field(Ty::Struct, 1).struct_begin();
                w.field(Ty::I64, 1).i64(last);
                w.field(Ty::I32, 2).i32(BATCH);
                w.struct_end();
            })
            .await?;
        let v = value(M, &reply)?;
        Ok(v.field(1)
            .map(Value::as_list)
            .unwrap_or_default()
            .iter()
            .filter_map(Event::from_value)
            .collect())
    }

    fn polled(&self, ok: bool) {
        self.metrics
            .notification_polls
            .get_or_create(&OutcomeLabels {
                outcome: if ok { "ok" } else { "error" },
            })
            .inc();
    }

    /// Whether the metastore names an event listener (Hive's `DbNotificationListener`, or
    /// another, records the log): `None` when it cannot tell (an older metastore refusing
    /// the question, or unreachable now).
    async fn has_listener(&self) -> Option<bool> {
        const M: &str = "get_config_value";
        let mut any = false;
        for key in [
            "hive.metastore.transactional.event.listeners",
            "hive.metastore.event.listeners",
        ] {
            let reply = self
                .client
                .call(M, |w| {
                    w.field(Ty::String, 1).string(key.as_bytes());
                    w.field(Ty::String, 2).string(b"");
                })
                .await
                .ok()?;
            let v = value(M, &reply).ok()?;
            any |= v.as_str().is_some_and(|s| !s.trim().is_empty());
        }
        Some(any)
    }

    /// Follows the log until the process ends.
    pub async fn run(mut self) {
        let mut last: Option<i64> = None;
        // Where the log ends now, before the index's first build reads the catalog.
        let refused = loop {
            match self.read(&mut last).await {
                Ok(_) => break None,
                // Unreachable: the build could not read the catalog either; try again.
                Err(e @ FactsError::Upstream { .. }) => {
                    self.polled(false);
                    tracing::warn!(error = %e, "the notification log's end could not be read; the location index waits for it to start its build");
                    tokio::time::sleep(self.poll).await;
                }
                // The metastore answers but refuses the log (an authorization of its
                // notification API, a method it lacks): nothing to follow.
                Err(e) => break Some(e),
            }
        };
        self.polled(refused.is_none());
        if let Some((index, _)) = &self.index {
            index.log_followed();
        }
        if let Some(e) = refused {
            tracing::error!(error = %e, "the metastore refuses its notification log: it is not followed — the metadata cache does not serve (its bound cannot be kept) and the location index learns of changes made directly on the metastore only at its rescans; allow the service user the notification API, or set [notifications] enabled = false");
            return;
        }
        if self.has_listener().await == Some(false) {
            tracing::warn!("the metastore names no event listener (hive.metastore.transactional.event.listeners, hive.metastore.event.listeners): its notification log stays empty and changes made directly on it reach the metadata cache only within cache.ttl_ms and the location index at its next rescan; set [notifications] enabled = false to say so, or configure a listener at the metastore");
        }
        let mut caught_up = Instant::now();
        loop {
            let read = self.read(&mut last).await;
            self.polled(read.is_ok());
            let done = match read {
                Ok(r) => {
                    let done = r.done;
                    self.apply(r);
                    if done {
                        caught_up = Instant::now();
                        if let Some(c) = &self.cache {
                            c.caught_up(caught_up);
                        }
                    }
                    done
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the notification log could not be read; the metadata cache stops serving once it is cache.max_staleness_ms behind");
                    true
                }
            };
            self.metrics
                .notification_lag_ms
                .set(i64::try_from(caught_up.elapsed().as_millis()).unwrap_or(i64::MAX));
            if done {
                tokio::time::sleep(self.poll).await;
            }
        }
    }

    /// The cache first (before the log counts as read), then the index's task.
    fn apply(&mut self, r: Read) {
        if r.gap {
            self.metrics.notification_gaps.inc();
        }
        if let Some(c) = &self.cache {
            if r.gap || r.flush {
                c.flush();
            } else if !r.tags.is_empty() {
                c.invalidate(&r.tags);
            }
        }
        if let Some((_, feed)) = &mut self.index {
            if r.gap {
                feed.send(IndexWork::Rebuild);
            }
            if !r.changes.is_empty() {
                feed.send(IndexWork::Changes(r.changes));
            }
        }
    }

    /// One read of the log.
    async fn read(&mut self, last: &mut Option<i64>) -> Result<Read, FactsError> {
        let previous = self.last_read;
        let r = self.read_log(last, previous).await;
        if r.is_ok() {
            self.last_read = Some(Instant::now());
        }
        r
    }

    /// Whether an idle read checks the log's end: events created and purged between two
    /// reads a poll apart cannot be missed, so the end is checked after a pause (a failed
    /// or slow read, a restart) and every `END_CHECK_EVERY` idle reads.
    fn check_end(&mut self, previous: Option<Instant>) -> bool {
        self.quiet += 1;
        let paused = previous.is_none_or(|t| t.elapsed() > self.poll * 2);
        if paused || self.quiet >= END_CHECK_EVERY {
            self.quiet = 0;
            true
        } else {
            false
        }
    }

    async fn read_log(
        &mut self,
        last: &mut Option<i64>,
        previous: Option<Instant>,
    ) -> Result<Read, FactsError> {
        let Some(from) = *last else {
            // The start: nothing cached yet and the index built from now on; follow from
            // the current end.
            let id = self.current_id().await?;
            *last = Some(id);
            self.metrics.notification_last_event.set(id);
            return Ok(Read {
                done: true,
                ..Read::default()
            });
        };
        let events = self.next(from).await?;
        let full = events.len() >= BATCH as usize;
        let Step::Events { events, gap } = step(from, events);
        if gap {
            tracing::warn!(last = from, "a gap in the notification log (events purged before they were read): the metadata cache is dropped and the location index rebuilt");
        }
        if events.is_empty() {
            // Nothing after `from`: up to date — unless the log's end is elsewhere: past it
            // (every event since was purged) or before it (another metastore database).
            if !self.check_end(previous) {
                return Ok(Read {
                    done: true,
                    gap,
                    ..Read::default()
                });
            }
            let current = self.current_id().await?;
            let moved = current != from;
            if moved {
                tracing::warn!(last = from, current, "the notification log's end moved without events to read: the metadata cache is dropped and the location index rebuilt");
                *last = Some(current);
                self.metrics.notification_last_event.set(current);
            }
            return Ok(Read {
                done: true,
                gap: gap || moved,
                ..Read::default()
            });
        }
        let mut r = Read {
            done: !full,
            gap,
            ..Read::default()
        };
        let mut seen = HashSet::new();
        for e in &events {
            match e.cache_effect() {
                CacheEffect::Tags(t) => r.tags.extend(t),
                CacheEffect::All => r.flush = true,
            }
            if self.index.is_some() {
                for c in e.index_changes() {
                    if seen.insert(c.clone()) {
                        r.changes.push(c);
                    }
                }
            }
        }
        if let Some(e) = events.last() {
            *last = Some(e.id);
            self.metrics.notification_last_event.set(e.id);
        }
        Ok(r)
    }
}

fn value(method: &str, reply: &[u8]) -> Result<Value, FactsError> {
    match success(reply).map_err(|e| FactsError::from_reply(method, e))? {
        Some((mut r, ty)) => read_value(&mut r, ty, None).map_err(|e| FactsError::Invalid {
            method: method.into(),
            message: e.to_string(),
        }),
        None => Err(FactsError::Invalid {
            method: method.into(),
            message: "no result".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(id: i64, db: Option<&str>, table: Option<&str>) -> Event {
        Event {
            id,
            kind: "ALTER_TABLE".into(),
            db: db.map(str::to_string),
            table: table.map(str::to_string),
            before: Before::Same,
        }
    }

    #[test]
    fn a_gap_is_a_first_event_past_the_next_id() {
        let Step::Events { gap, .. } = step(5, vec![ev(6, None, None), ev(7, None, None)]);
        assert!(!gap);
        let Step::Events { gap, .. } = step(5, vec![ev(9, None, None)]);
        assert!(gap);
        let Step::Events { gap, .. } = step(5, vec![]);
        assert!(!gap);
    }

    #[test]
    fn events_tag_what_they_name_as_the_metastore_compares_names() {
        let tags = |e: Event| match e.cache_effect() {
            CacheEffect::Tags(t) => t,
            CacheEffect::All => panic!("everything dropped"),
        };
        assert_eq!(
            tags(ev(1, Some("DB"), Some("T"))),
            vec![Tag::table("db", "t")]
        );
        assert_eq!(
            tags(ev(1, Some("db"), None)),
            vec![Tag::database("db"), Tag::database("")]
        );
        assert!(tags(ev(1, None, None)).is_empty());
    }

    fn alter(message: &str) -> Event {
        Event {
            id: 1,
            kind: "ALTER_TABLE".into(),
            db: Some("d2".into()),
            table: Some("t2".into()),
            before: before_of(Some(message), Some("d2"), Some("t2")),
        }
    }

    #[test]
    fn a_rename_drops_the_old_name_too_and_an_unreadable_one_everything() {
        // Hive's JSON message names the table as it was.
        let renamed = alter(r#"{"server":"","db":"D1","table":"T1","tableObjBeforeJson":"{}"}"#);
        assert_eq!(renamed.before, Before::Named("D1".into(), "T1".into()));
        assert_eq!(
            renamed.cache_effect(),
            CacheEffect::Tags(vec![Tag::table("d2", "t2"), Tag::table("d1", "t1")])
        );
        let table = |db: &str, t: &str, partitions| IndexChange::Table {
            db: db.into(),
            table: t.into(),
            partitions,
        };
        assert_eq!(
            renamed.index_changes(),
            vec![table("d1", "t1", true), table("d2", "t2", true)]
        );
        // The same names in another case: no rename.
        let same = alter(r#"{"db":"D2","table":"T2"}"#);
        assert_eq!(same.before, Before::Same);
        assert_eq!(same.index_changes(), vec![table("d2", "t2", false)]);
        // Another encoding (gzip, base64) or a message without names: it may be a rename.
        for m in ["H4sIAAAAAAAA/6tWyk", "{\"db\":\"d2\"}", "{not json"] {
            let e = alter(m);
            assert_eq!(e.before, Before::Unknown, "{m}");
            assert_eq!(e.cache_effect(), CacheEffect::All);
            assert_eq!(
                e.index_changes(),
                vec![
                    table("d2", "t2", true),
                    IndexChange::Database { db: "d2".into() }
                ]
            );
        }
    }

    #[test]
    fn events_tell_the_index_what_to_read_again() {
        let e = |kind: &str, db: Option<&str>, table: Option<&str>| Event {
            kind: kind.into(),
            ..ev(1, db, table)
        };
        let t = |partitions| IndexChange::Table {
            db: "db".into(),
            table: "t".into(),
            partitions,
        };
        for kind in [
            "CREATE_TABLE",
            "DROP_TABLE",
            "ADD_PARTITION",
            "ALTER_PARTITION",
            "DROP_PARTITION",
            "SOMETHING_NEW",
        ] {
            assert_eq!(
                e(kind, Some("DB"), Some("T")).index_changes(),
                vec![t(true)],
                "{kind}"
            );
        }
        for kind in ["INSERT", "CREATE_DATABASE", "ALTER_DATABASE"] {
            assert!(
                e(kind, Some("db"), Some("t")).index_changes().is_empty(),
                "{kind}"
            );
        }
        assert_eq!(
            e("DROP_DATABASE", Some("DB"), None).index_changes(),
            vec![IndexChange::Database { db: "db".into() }]
        );
        assert!(e("CREATE_FUNCTION", None, None).index_changes().is_empty());
    }
}
