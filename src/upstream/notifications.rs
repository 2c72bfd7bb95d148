//! The notification-log follower: reads the metastore's notification log
//! (`get_current_notificationEventId`, then `get_next_notification` every `cache.poll_ms`)
//! and drops the shared metadata cache's entries of every table and database an event
//! names — the changes other clients made on the metastore directly.
//!
//! - A **gap** (the first event after the last one read has a larger id than the next: the
//!   metastore purged events before they were read) drops everything.
//! - The cache is served only while the log was read to its end within
//!   `cache.max_staleness_ms` (`ReplyCache::caught_up`): a change made directly on the
//!   metastore is seen through hms-guard within that bound, and a follower that cannot read
//!   the log (the metastore down, restarted, slow) stops the cache from serving.
//! - A restarted metastore keeps its ids (they are rows of its database); a log whose end
//!   moved with no event left to read (all purged, or a new database whose ids went
//!   backwards) is a gap too.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::decision::facts::{FactsError, MetaClient};
use crate::ops::metrics::{Metrics, OutcomeLabels};
use crate::wire::codec::reply::success;
use crate::wire::codec::value::{read_value, Value};
use crate::wire::codec::Ty;

use super::cache::{ReplyCache, Tag};

/// Events asked for at once.
const BATCH: i32 = 1_000;

/// One event of the log, as far as the cache cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub id: i64,
    pub kind: String,
    pub db: Option<String>,
    pub table: Option<String>,
}

impl Event {
    fn from_value(v: &Value) -> Option<Event> {
        let text = |id| {
            v.field(id)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        Some(Event {
            id: v.field(1)?.as_int()?,
            kind: text(3).unwrap_or_default(),
            db: text(4),
            table: text(5),
        })
    }

    /// The cache tags the event touches (none: nothing cached reads what it changed).
    pub fn tags(&self) -> Vec<Tag> {
        match (&self.db, &self.table) {
            (Some(db), Some(t)) => vec![Tag::table(db, t)],
            // A database's own event: the database, its tables, the list of databases.
            (Some(db), None) => vec![Tag::database(db), Tag::database("")],
            _ => Vec::new(),
        }
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

pub struct Follower {
    client: MetaClient,
    cache: Arc<ReplyCache>,
    metrics: Arc<Metrics>,
    poll: Duration,
}

impl Follower {
    pub fn new(client: MetaClient, cache: Arc<ReplyCache>, metrics: Arc<Metrics>) -> Self {
        let poll = cache.settings().poll;
        Follower {
            client,
            cache,
            metrics,
            poll,
        }
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

    /// Follows the log until the process ends.
    pub async fn run(self) {
        let mut last: Option<i64> = None;
        let mut caught_up = Instant::now();
        loop {
            let read = self.read(&mut last).await;
            self.polled(read.is_ok());
            match read {
                Ok(true) => {
                    caught_up = Instant::now();
                    self.cache.caught_up(caught_up);
                }
                Ok(false) => continue, // more to read at once
                Err(e) => {
                    tracing::warn!(error = %e, "the notification log could not be read; the metadata cache stops serving once it is cache.max_staleness_ms behind");
                }
            }
            self.metrics
                .notification_lag_ms
                .set(i64::try_from(caught_up.elapsed().as_millis()).unwrap_or(i64::MAX));
            tokio::time::sleep(self.poll).await;
        }
    }

    /// One read: `Ok(true)` when the log was read to its end.
    async fn read(&self, last: &mut Option<i64>) -> Result<bool, FactsError> {
        let Some(from) = *last else {
            // The start: nothing cached yet, follow from the current end.
            let id = self.current_id().await?;
            *last = Some(id);
            self.metrics.notification_last_event.set(id);
            return Ok(true);
        };
        let events = self.next(from).await?;
        let full = events.len() >= BATCH as usize;
        let Step::Events { events, gap } = step(from, events);
        if gap {
            self.metrics.notification_gaps.inc();
            tracing::warn!(last = from, "a gap in the notification log (events purged before they were read): the metadata cache is dropped");
            self.cache.flush();
        }
        if events.is_empty() {
            // Nothing after `from`: up to date — unless the log's end is elsewhere: past it
            // (every event since was purged) or before it (another metastore database).
            let current = self.current_id().await?;
            if current != from {
                self.metrics.notification_gaps.inc();
                tracing::warn!(last = from, current, "the notification log's end moved without events to read: the metadata cache is dropped");
                self.cache.flush();
                *last = Some(current);
                self.metrics.notification_last_event.set(current);
            }
            return Ok(true);
        }
        let tags: Vec<Tag> = events.iter().flat_map(Event::tags).collect();
        if !tags.is_empty() {
            self.cache.invalidate(&tags);
        }
        if let Some(e) = events.last() {
            *last = Some(e.id);
            self.metrics.notification_last_event.set(e.id);
        }
        Ok(!full)
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
        assert_eq!(
            ev(1, Some("DB"), Some("T")).tags(),
            vec![Tag::table("db", "t")]
        );
        assert_eq!(
            ev(1, Some("db"), None).tags(),
            vec![Tag::database("db"), Tag::database("")]
        );
        assert!(ev(1, None, None).tags().is_empty());
    }
}
