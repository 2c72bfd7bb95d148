//! A user's groups, from where they live: the configuration (`static`), a file (`file`), the
//! operating system's group database (`os`), LDAP or Active Directory (`ldap`)
//! (docs/IDENTITY.md, "Groups").
//!
//! The sources are asked in their configured order and their answers are **united** (as
//! Hadoop's composite mapping does): a user's groups are every group any source gives it. A
//! failing source fails the whole lookup — a partial union could drop a group the user was
//! meant to have or keep one it lost, and which of those is safe is not for the proxy to
//! guess. No source knowing the user is an answer (no groups), cached for the negative TTL;
//! a failure is never such an answer.
//!
//! Answers are cached per user (`ttl`, `negative_ttl`, at most `max_entries` users); a hit is
//! a memory lookup. When the sources fail, `on_error` decides: `deny` (the lookup fails, the
//! user's calls are refused), or `last_known` (the last answer, if not older than
//! `last_known_max_age`). Group names a source gives that break the names rule of the
//! metastore's database are left out (counted and logged): leaving a group out can only take
//! privileges away.

pub mod config;
pub mod file;
pub mod ldap;
pub mod os;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::auth::names::{self, MetastoreDb, NameKind};
use crate::ops::metrics::{GroupLookupLabels, Metrics, SourceLabels};
use config::{GroupsSettings, OnError, SourceSettings};

/// What a source answers: `Some(groups)` (it knows the user), `None` (it does not), or why it
/// could not tell.
pub type Lookup = Result<Option<Vec<String>>, String>;

/// A source's lookup in flight.
pub type LookupFuture<'a> = Pin<Box<dyn Future<Output = Lookup> + Send + 'a>>;

/// Where groups come from.
pub trait GroupSource: Send + Sync {
    /// Its name, a metric label (`static`, `file`, `os`, `ldap`).
    fn name(&self) -> &'static str;
    fn lookup<'a>(&'a self, user: &'a str) -> LookupFuture<'a>;
}

/// The `static` source: `[identity.groups.static]` (and the old-form entries).
pub struct StaticSource(pub std::collections::BTreeMap<String, Vec<String>>);

impl GroupSource for StaticSource {
    fn name(&self) -> &'static str {
        "static"
    }
    fn lookup<'a>(&'a self, user: &'a str) -> LookupFuture<'a> {
        let found = self.0.get(user).cloned();
        Box::pin(async move { Ok(found) })
    }
}

/// A lookup that failed with `on_error = "deny"` (or with no last answer to use).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the groups of user {user} could not be read from the {source_name} source: {reason}")]
pub struct GroupsUnavailable {
    pub user: String,
    pub source_name: &'static str,
    pub reason: String,
}

struct Entry {
    groups: Arc<Vec<String>>,
    /// Some source knew the user (else: the negative answer).
    known: bool,
    at: Instant,
}

/// The sources and the cache in front of them; one per process.
pub struct GroupResolver {
    sources: Vec<Box<dyn GroupSource>>,
    settings: GroupsSettings,
    db: MetastoreDb,
    cache: Mutex<HashMap<String, Entry>>,
    permits: tokio::sync::Semaphore,
    metrics: Arc<Metrics>,
    /// `group_lookups{source="cache", outcome="hit"}`, resolved once: every decided call
    /// counts one.
    hits: prometheus_client::metrics::counter::Counter,
}

impl std::fmt::Debug for GroupResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.sources.iter().map(|s| s.name()).collect();
        f.debug_struct("GroupResolver")
            .field("sources", &names)
            .finish_non_exhaustive()
    }
}

impl GroupResolver {
    /// The configured sources (reads the TLS files of an LDAP source).
    pub fn new(
        settings: &GroupsSettings,
        db: MetastoreDb,
        metrics: Arc<Metrics>,
    ) -> Result<GroupResolver, String> {
        let mut sources: Vec<Box<dyn GroupSource>> = Vec::new();
        for s in &settings.sources {
            sources.push(match s {
                SourceSettings::Static(table) => Box::new(StaticSource(table.clone())),
                SourceSettings::File(path) => Box::new(file::FileSource::new(path.clone())),
                SourceSettings::Os(id) => Box::new(os::OsSource::new(id.clone())),
                SourceSettings::Ldap(l) => {
                    Box::new(ldap::LdapSource::new((**l).clone(), settings.max_groups)?)
                }
            });
        }
        Ok(Self::with_sources(sources, settings.clone(), db, metrics))
    }

    /// Given sources (tests script theirs).
    pub fn with_sources(
        sources: Vec<Box<dyn GroupSource>>,
        settings: GroupsSettings,
        db: MetastoreDb,
        metrics: Arc<Metrics>,
    ) -> GroupResolver {
        // Every configured source's failure and refused-name series exist from the start
        // (at 0), so that rates and alerts see them before the first failure.
        for source in sources.iter().map(|s| s.name()).chain(["any"]) {
            let labels = SourceLabels { source };
            let _ = metrics.group_lookup_failures.get_or_create(&labels);
            let _ = metrics.group_names_refused.get_or_create(&labels);
        }
        let hits = metrics
            .group_lookups
            .get_or_create(&GroupLookupLabels {
                source: "cache",
                outcome: "hit",
            })
            .clone();
        GroupResolver {
            hits,
            sources,
            permits: tokio::sync::Semaphore::new(settings.max_concurrent_lookups),
            settings,
            db,
            cache: Mutex::new(HashMap::new()),
            metrics,
        }
    }

    fn count(&self, source: &'static str, outcome: &'static str) {
        self.metrics
            .group_lookups
            .get_or_create(&GroupLookupLabels { source, outcome })
            .inc();
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // A panic while holding the lock leaves plain data: keep using it.
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A fresh cached answer.
    fn fresh(&self, user: &str) -> Option<Arc<Vec<String>>> {
        let cache = self.cache();
        let e = cache.get(user)?;
        let ttl = if e.known {
            self.settings.ttl
        } else {
            self.settings.negative_ttl
        };
        (e.at.elapsed() < ttl).then(|| e.groups.clone())
    }

    /// `user`'s groups (sorted, without duplicates): from the cache while fresh, else from the
    /// sources (bounded by `timeout`).
    pub async fn groups(&self, user: &str) -> Result<Arc<Vec<String>>, GroupsUnavailable> {
        if let Some(g) = self.fresh(user) {
            self.hits.inc();
            return Ok(g);
        }
        self.count("cache", "miss");
        let deadline = tokio::time::Instant::now() + self.settings.timeout;
        let fail = |source_name: &'static str, reason: String| GroupsUnavailable {
            user: user.to_string(),
            source_name,
            reason,
        };
        let looked = match tokio::time::timeout_at(deadline, self.permits.acquire()).await {
            Ok(Ok(_permit)) => match self.fresh(user) {
                // Another lookup of the same user finished while this one waited.
                Some(g) => return Ok(g),
                None => self.ask_sources(user, deadline).await,
            },
            _ => Err(fail(
                "any",
                format!(
                    "no lookup slot within {} ms (identity.groups.max_concurrent_lookups)",
                    self.settings.timeout.as_millis()
                ),
            )),
        };
        match looked {
            Ok((groups, known)) => {
                let groups = Arc::new(groups);
                self.store(user, groups.clone(), known);
                Ok(groups)
            }
            Err(e) => {
                tracing::warn!(user, source = e.source_name, error = %e.reason, "group lookup failed");
                self.metrics
                    .group_lookup_failures
                    .get_or_create(&SourceLabels {
                        source: e.source_name,
                    })
                    .inc();
                if self.settings.on_error == OnError::LastKnown {
                    let cache = self.cache();
                    if let Some(last) = cache
                        .get(user)
                        .filter(|l| l.at.elapsed() < self.settings.last_known_max_age)
                    {
                        self.count("cache", "last_known");
                        tracing::info!(user, "using the last known groups");
                        return Ok(last.groups.clone());
                    }
                }
                Err(e)
            }
        }
    }

    /// Every source in order, united; `known`: some source knew the user.
    async fn ask_sources(
        &self,
        user: &str,
        deadline: tokio::time::Instant,
    ) -> Result<(Vec<String>, bool), GroupsUnavailable> {
        let mut all: Vec<String> = Vec::new();
        let mut known = false;
        for source in &self.sources {
            let name = source.name();
            let fail = |reason: String| GroupsUnavailable {
                user: user.to_string(),
                source_name: name,
                reason,
            };
            let answer = match tokio::time::timeout_at(deadline, source.lookup(user)).await {
                Err(_) => {
                    self.count(name, "timeout");
                    return Err(fail(format!(
                        "no answer within {} ms (identity.groups.timeout_ms)",
                        self.settings.timeout.as_millis()
                    )));
                }
                Ok(Err(e)) => {
                    self.count(name, "error");
                    return Err(fail(e));
                }
                Ok(Ok(a)) => a,
            };
            let Some(groups) = answer else {
                self.count(name, "unknown");
                continue;
            };
            self.count(name, "found");
            known = true;
            for g in groups {
                match names::check(self.db, NameKind::Group, &g) {
                    Ok(()) => all.push(g),
                    Err(refused) => {
                        self.metrics
                            .group_names_refused
                            .get_or_create(&SourceLabels { source: name })
                            .inc();
                        tracing::warn!(user, source = name, error = %refused, "a group name is left out");
                    }
                }
            }
            all.sort();
            all.dedup();
            if all.len() > self.settings.max_groups {
                return Err(fail(format!(
                    "more than {} groups (identity.groups.max_groups)",
                    self.settings.max_groups
                )));
            }
        }
        Ok((all, known))
    }

    /// Caches an answer; a full cache first drops what is too old to be used, then the
    /// oldest entry.
    fn store(&self, user: &str, groups: Arc<Vec<String>>, known: bool) {
        let s = &self.settings;
        let mut cache = self.cache();
        if !cache.contains_key(user) && cache.len() >= s.max_entries {
            let keep = if s.on_error == OnError::LastKnown {
                s.last_known_max_age.max(s.ttl)
            } else {
                s.ttl.max(s.negative_ttl)
            };
            cache.retain(|_, e| e.at.elapsed() < keep);
            if cache.len() >= s.max_entries {
                if let Some(oldest) = cache
                    .iter()
                    .min_by_key(|(_, e)| e.at)
                    .map(|(k, _)| k.clone())
                {
                    cache.remove(&oldest);
                }
            }
        }
        cache.insert(
            user.to_string(),
            Entry {
                groups,
                known,
                at: Instant::now(),
            },
        );
        self.metrics.group_cache_entries.set(cache.len() as i64);
    }
}

#[cfg(test)]
mod tests;
