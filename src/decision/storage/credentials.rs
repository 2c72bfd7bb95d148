//! Stage 3: credentials of a role chain, cached per (session name, chain prefix).
//!
//! Each hop of a chain is its own cache entry (the user's role session is shared by all of the
//! user's buckets). An entry is renewed `refresh_before` (minus up to a tenth of it, jitter)
//! before it expires: the first check to notice renews it while the others go on with the old
//! credentials, which are still good. Once fewer than `margin` are left (or nothing is cached)
//! checks wait for the single renewal in flight, bounded by their deadline. Credentials are
//! never handed out with less than `margin` left.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::aws::{with_retries, AwsError, Backend, SessionCreds};
use super::roles::Hop;
use crate::ops::metrics::{CacheLabels, Metrics, OutcomeLabels, StsLabels};

/// Cache entries kept before unused, expired ones are swept.
const MAX_ENTRIES: usize = 10_000;

/// Why a chain's credentials could not be had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredError {
    /// STS refused to let the previous hop assume `role_arn` (trust policy, external id, or
    /// the previous hop's own policy).
    Denied {
        hop: usize,
        role_arn: String,
        message: String,
    },
    /// STS could not be asked or did not answer (in time).
    Unavailable(CredUnavailable),
}

/// Why STS gave no credentials, and no refusal either. `Display` is the text a denial gives
/// after "storage check unavailable: …: ".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredUnavailable {
    EmptyChain,
    /// Another check's AssumeRole for the same chain is still running at the deadline.
    StillRunning,
    /// AssumeRole of `role_arn` failed other than by a refusal, after `attempts`.
    AssumeFailed {
        role_arn: String,
        attempts: u32,
        error: AwsError,
    },
    /// STS gave credentials for `role_arn` valid for no longer than the margin.
    ShortLived {
        role_arn: String,
        valid_ms: u128,
    },
}

impl fmt::Display for CredUnavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CredUnavailable::EmptyChain => f.write_str("empty role chain"),
            CredUnavailable::StillRunning => f.write_str(
                "no credentials in time (another check's AssumeRole for the same role chain is still running)",
            ),
            CredUnavailable::AssumeFailed {
                role_arn,
                attempts,
                error,
            } => write!(
                f,
                "cannot assume {role_arn} ({attempts} attempt{}): {error}",
                if *attempts == 1 { "" } else { "s" }
            ),
            CredUnavailable::ShortLived { role_arn, valid_ms } => write!(
                f,
                "STS gave credentials for {role_arn} valid for only {valid_ms} ms (is this host's clock right?)"
            ),
        }
    }
}

impl std::error::Error for CredUnavailable {}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct CredKey {
    session: String,
    chain: Vec<Hop>,
}

#[derive(Clone)]
struct Entry {
    creds: Arc<SessionCreds>,
    refresh_at: Instant,
    usable_until: Instant,
}

#[derive(Default)]
struct Slot {
    current: Mutex<Option<Entry>>,
    /// Held by the one task renewing this entry.
    refresh: tokio::sync::Mutex<()>,
}

impl Slot {
    fn get(&self) -> Option<Entry> {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set(&self, e: Option<Entry>) {
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = e;
    }
}

/// Timing policy of the cache.
#[derive(Debug, Clone, Copy)]
pub struct CredPolicy {
    /// Requested session lifetime of the first hop.
    pub session_duration: Duration,
    /// Requested lifetime of later (chained) hops; AWS caps them at 1 h.
    pub chained_session_duration: Duration,
    pub refresh_before: Duration,
    /// Credentials with less than this left are not handed out.
    pub margin: Duration,
    pub max_attempts: u32,
}

pub struct CredentialCache {
    slots: Mutex<HashMap<CredKey, Arc<Slot>>>,
    policy: CredPolicy,
}

impl CredentialCache {
    pub fn new(policy: CredPolicy) -> Self {
        CredentialCache {
            slots: Mutex::new(HashMap::new()),
            policy,
        }
    }

    /// Number of cached keys (tests, diagnostics).
    pub fn len(&self) -> usize {
        self.slots.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Credentials of the last hop of `chain`, each hop assumed from the one before (the first
    /// from the proxy's own identity) with session name `session`.
    pub async fn chain_credentials(
        &self,
        backend: &dyn Backend,
        metrics: &Metrics,
        session: &str,
        chain: &[Hop],
        deadline: Instant,
    ) -> Result<Arc<SessionCreds>, CredError> {
        let mut parent: Option<Arc<SessionCreds>> = None;
        for i in 0..chain.len() {
            let key = CredKey {
                session: session.to_string(),
                chain: chain[..=i].to_vec(),
            };
            let creds = self
                .hop(backend, metrics, &key, parent.as_deref(), deadline)
                .await?;
            parent = Some(creds);
        }
        parent.ok_or(CredError::Unavailable(CredUnavailable::EmptyChain))
    }

    fn slot(&self, key: &CredKey) -> Arc<Slot> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = slots.get(key) {
            return s.clone();
        }
        if slots.len() >= MAX_ENTRIES {
            let now = Instant::now();
            slots.retain(|_, s| {
                Arc::strong_count(s) > 1 || s.get().is_some_and(|e| now < e.usable_until)
            });
        }
        slots.entry(key.clone()).or_default().clone()
    }

    async fn hop(
        &self,
        backend: &dyn Backend,
        metrics: &Metrics,
        key: &CredKey,
        parent: Option<&SessionCreds>,
        deadline: Instant,
    ) -> Result<Arc<SessionCreds>, CredError> {
        let lookup = |result: &'static str| {
            metrics
                .cache
                .get_or_create(&CacheLabels {
                    cache: "storage_credentials",
                    result,
                })
                .inc();
        };
        let slot = self.slot(key);
        if let Some(e) = slot.get() {
            let now = Instant::now();
            if now < e.refresh_at {
                lookup("hit");
                return Ok(e.creds);
            }
            if now < e.usable_until {
                // Due for renewal but still good: one task renews, the others go on.
                let Ok(_renewing) = slot.refresh.try_lock() else {
                    lookup("hit");
                    return Ok(e.creds);
                };
                if slot
                    .get()
                    .is_some_and(|cur| Instant::now() < cur.refresh_at)
                {
                    // Renewed between our look and taking the lock.
                    lookup("hit");
                    return Ok(slot.get().map(|cur| cur.creds).unwrap_or(e.creds));
                }
                lookup("miss");
                return match self.fetch(backend, metrics, key, parent, deadline).await {
                    Ok(fresh) => {
                        let creds = fresh.creds.clone();
                        slot.set(Some(fresh));
                        Ok(creds)
                    }
                    Err(err @ CredError::Denied { .. }) => {
                        // Trust withdrawn: stop using the old session at once.
                        slot.set(None);
                        Err(err)
                    }
                    Err(err) if Instant::now() < e.usable_until => {
                        tracing::warn!(error = ?err, "storage credential renewal failed; using the current ones until they expire");
                        Ok(e.creds)
                    }
                    Err(err) => Err(err),
                };
            }
        }
        // Nothing usable: wait for the renewal in flight, or be it.
        let Ok(_renewing) = tokio::time::timeout_at(deadline, slot.refresh.lock()).await else {
            lookup("miss");
            return Err(CredError::Unavailable(CredUnavailable::StillRunning));
        };
        if let Some(e) = slot.get().filter(|e| Instant::now() < e.usable_until) {
            lookup("hit");
            return Ok(e.creds);
        }
        lookup("miss");
        let fresh = self.fetch(backend, metrics, key, parent, deadline).await?;
        let creds = fresh.creds.clone();
        slot.set(Some(fresh));
        Ok(creds)
    }

    /// One renewal: AssumeRole with retries, counted.
    async fn fetch(
        &self,
        backend: &dyn Backend,
        metrics: &Metrics,
        key: &CredKey,
        parent: Option<&SessionCreds>,
        deadline: Instant,
    ) -> Result<Entry, CredError> {
        let index = key.chain.len() - 1;
        let hop = &key.chain[index];
        let started = Instant::now();
        let result = self
            .assume_role(backend, metrics, key, parent, deadline)
            .await;
        let refreshed = |outcome: &'static str| {
            metrics
                .storage_credential_refreshes
                .get_or_create(&OutcomeLabels { outcome })
                .inc();
        };
        let creds = match result {
            Ok(c) => c,
            Err((AwsError::Denied(m), _)) => {
                refreshed("error");
                return Err(CredError::Denied {
                    hop: index,
                    role_arn: hop.role_arn.clone(),
                    message: m,
                });
            }
            Err((error, attempts)) => {
                refreshed("error");
                return Err(CredError::Unavailable(CredUnavailable::AssumeFailed {
                    role_arn: hop.role_arn.clone(),
                    attempts,
                    error,
                }));
            }
        };
        if creds.valid_for <= self.policy.margin {
            refreshed("error");
            return Err(CredError::Unavailable(CredUnavailable::ShortLived {
                role_arn: hop.role_arn.clone(),
                valid_ms: creds.valid_for.as_millis(),
            }));
        }
        refreshed("ok");
        Ok(self.entry(creds, started))
    }

    /// AssumeRole of the chain's last hop (from `parent`, or the proxy's own identity), with
    /// retries within `deadline`, each call counted.
    async fn assume_role(
        &self,
        backend: &dyn Backend,
        metrics: &Metrics,
        key: &CredKey,
        parent: Option<&SessionCreds>,
        deadline: Instant,
    ) -> Result<SessionCreds, (AwsError, u32)> {
        let index = key.chain.len() - 1;
        let hop = &key.chain[index];
        let hop_label = if index == 0 { "user" } else { "bucket" };
        let duration = if index == 0 {
            self.policy.session_duration
        } else {
            self.policy.chained_session_duration
        };
        with_retries(
            deadline,
            self.policy.max_attempts,
            || {
                backend.assume_role(
                    parent,
                    &hop.role_arn,
                    hop.external_id.as_deref(),
                    &key.session,
                    duration,
                )
            },
            |r| {
                let outcome = match r {
                    Ok(_) => "ok",
                    Err(AwsError::Denied(_)) => "denied",
                    Err(_) => "error",
                };
                metrics
                    .storage_sts_calls
                    .get_or_create(&StsLabels {
                        hop: hop_label,
                        outcome,
                    })
                    .inc();
            },
        )
        .await
    }

    /// The cache entry of credentials asked for at `started`: usable until `margin` before
    /// they expire, renewed `refresh_before` (with jitter) before.
    fn entry(&self, creds: SessionCreds, started: Instant) -> Entry {
        let expires_at = started + creds.valid_for;
        let usable_until = expires_at - self.policy.margin;
        let early = self.policy.refresh_before + jitter(self.policy.refresh_before / 10);
        let refresh_at = expires_at
            .checked_sub(early)
            .unwrap_or(started)
            .max(started)
            .min(usable_until);
        Entry {
            creds: Arc::new(creds),
            refresh_at,
            usable_until,
        }
    }
}

/// A random duration in `[0, max]`.
pub(crate) fn jitter(max: Duration) -> Duration {
    let nanos = max.as_nanos().min(u128::from(u64::MAX)) as u64;
    if nanos == 0 {
        return Duration::ZERO;
    }
    Duration::from_nanos(super::random_u64() % (nanos.saturating_add(1)).max(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::storage::aws::{BoxFut, Simulated};
    use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

    /// STS that counts calls and hands out credentials valid for `valid_for`.
    struct FakeSts {
        calls: AtomicUsize,
        valid_for: Duration,
        delay: Duration,
        /// Fail with this many transient errors first.
        transient_failures: AtomicU32,
        deny: bool,
    }

    impl FakeSts {
        fn new(valid_for: Duration) -> Self {
            FakeSts {
                calls: AtomicUsize::new(0),
                valid_for,
                delay: Duration::from_millis(10),
                transient_failures: AtomicU32::new(0),
                deny: false,
            }
        }
    }

    impl Backend for FakeSts {
        fn assume_role<'a>(
            &'a self,
            via: Option<&'a SessionCreds>,
            role_arn: &'a str,
            _external_id: Option<&'a str>,
            session_name: &'a str,
            _duration: Duration,
        ) -> BoxFut<'a, Result<SessionCreds, AwsError>> {
            Box::pin(async move {
                let n = self.calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(self.delay).await;
                if self
                    .transient_failures
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |f| f.checked_sub(1))
                    .is_ok()
                {
                    return Err(AwsError::Transient("HTTP 503".into()));
                }
                if self.deny {
                    return Err(AwsError::Denied("HTTP 403 AccessDenied".into()));
                }
                Ok(SessionCreds {
                    access_key_id: format!(
                        "{}|{role_arn}|{session_name}|{n}",
                        via.map(|v| v.access_key_id.as_str()).unwrap_or("proxy")
                    ),
                    secret_access_key: "s".into(),
                    session_token: "t".into(),
                    valid_for: self.valid_for,
                })
            })
        }
        fn list_prefix<'a>(
            &'a self,
            _: &'a SessionCreds,
            _: &'a str,
            _: &'a str,
        ) -> BoxFut<'a, Result<(), AwsError>> {
            unreachable!()
        }
        fn start_upload<'a>(
            &'a self,
            _: &'a SessionCreds,
            _: &'a str,
            _: &'a str,
        ) -> BoxFut<'a, Result<String, AwsError>> {
            unreachable!()
        }
        fn abort_upload<'a>(
            &'a self,
            _: &'a SessionCreds,
            _: &'a str,
            _: &'a str,
            _: &'a str,
        ) -> BoxFut<'a, Result<(), AwsError>> {
            unreachable!()
        }
        fn simulate<'a>(
            &'a self,
            _: &'a SessionCreds,
            _: &'a str,
            _: &'a str,
            _: &'a str,
            _: Option<&'a str>,
        ) -> BoxFut<'a, Result<Simulated, AwsError>> {
            unreachable!()
        }
    }

    // Real time, scaled down (no paused clock: tokio's test-util feature in dev-dependencies
    // would build every tokio dependant, the AWS SDK included, a second time for tests).
    /// A "minute" of these tests.
    const MIN: Duration = Duration::from_millis(100);

    fn policy() -> CredPolicy {
        CredPolicy {
            session_duration: 15 * MIN,
            chained_session_duration: 15 * MIN,
            refresh_before: 5 * MIN,
            margin: Duration::from_millis(50),
            max_attempts: 3,
        }
    }

    fn hop(arn: &str) -> Hop {
        Hop {
            role_arn: arn.into(),
            external_id: None,
        }
    }

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(30)
    }

    #[tokio::test]
    async fn refreshes_before_expiry_and_never_hands_out_expired() {
        let sts = FakeSts::new(15 * MIN);
        let cache = CredentialCache::new(policy());
        let m = Metrics::new();
        let chain = [hop("arn:aws:iam::123456789012:role/a")];
        let first = cache
            .chain_credentials(&sts, &m, "mary", &chain, far())
            .await
            .unwrap();
        assert_eq!(sts.calls.load(Ordering::SeqCst), 1);
        // Well before the refresh window (15 min - 5 min - ≤30 s jitter): cached.
        tokio::time::sleep(8 * MIN).await;
        let again = cache
            .chain_credentials(&sts, &m, "mary", &chain, far())
            .await
            .unwrap();
        assert_eq!(again.access_key_id, first.access_key_id);
        assert_eq!(sts.calls.load(Ordering::SeqCst), 1);
        // In the window: renewed.
        tokio::time::sleep(MIN * 7 / 2).await;
        let renewed = cache
            .chain_credentials(&sts, &m, "mary", &chain, far())
            .await
            .unwrap();
        assert_ne!(renewed.access_key_id, first.access_key_id);
        assert_eq!(sts.calls.load(Ordering::SeqCst), 2);
        // Past the expiry of both: a new fetch, never the old ones.
        tokio::time::sleep(16 * MIN).await;
        let newest = cache
            .chain_credentials(&sts, &m, "mary", &chain, far())
            .await
            .unwrap();
        assert_ne!(newest.access_key_id, renewed.access_key_id);
        assert_eq!(sts.calls.load(Ordering::SeqCst), 3);
        let text = m.encode();
        assert!(text.contains(r#"hms_guard_storage_sts_calls_total{hop="user",outcome="ok"} 3"#));
        assert!(text.contains(r#"hms_guard_storage_credential_refreshes_total{outcome="ok"} 3"#));
    }

    #[tokio::test]
    async fn renewal_failure_keeps_valid_credentials_but_not_expired_ones() {
        let sts = FakeSts::new(15 * MIN);
        let cache = CredentialCache::new(policy());
        let m = Metrics::new();
        let chain = [hop("arn:aws:iam::123456789012:role/a")];
        let first = cache
            .chain_credentials(&sts, &m, "mary", &chain, far())
            .await
            .unwrap();
        tokio::time::sleep(11 * MIN).await;
        sts.transient_failures.store(100, Ordering::SeqCst);
        let still = cache
            .chain_credentials(&sts, &m, "mary", &chain, far())
            .await
            .unwrap();
        assert_eq!(still.access_key_id, first.access_key_id);
        // 15 min minus the 5 s margin: no longer handed out.
        tokio::time::sleep(4 * MIN).await;
        let err = cache
            .chain_credentials(&sts, &m, "mary", &chain, far())
            .await
            .unwrap_err();
        assert!(
            matches!(err, CredError::Unavailable(ref m) if m.to_string().contains("3 attempts")),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn concurrent_checks_make_one_assume_role() {
        let sts = Arc::new(FakeSts {
            delay: Duration::from_millis(50),
            ..FakeSts::new(15 * MIN)
        });
        let cache = Arc::new(CredentialCache::new(policy()));
        let m = Arc::new(Metrics::new());
        let chain = vec![
            hop("arn:aws:iam::123456789012:role/a"),
            Hop {
                role_arn: "arn:aws:iam::210987654321:role/x".into(),
                external_id: Some("ext".into()),
            },
        ];
        let mut tasks = Vec::new();
        for _ in 0..32 {
            let (sts, cache, m, chain) = (sts.clone(), cache.clone(), m.clone(), chain.clone());
            tasks.push(tokio::spawn(async move {
                cache
                    .chain_credentials(&*sts, &m, "mary", &chain, far())
                    .await
                    .unwrap()
                    .access_key_id
                    .clone()
            }));
        }
        let mut keys = Vec::new();
        for t in tasks {
            keys.push(t.await.unwrap());
        }
        assert_eq!(sts.calls.load(Ordering::SeqCst), 2, "one per hop");
        assert!(keys.iter().all(|k| k == &keys[0]));
        assert!(keys[0].starts_with("proxy|arn:aws:iam::123456789012:role/a|mary|0|"));
        // Concurrent renewals in the window: still one call per hop.
        tokio::time::sleep(10 * MIN).await;
        let mut tasks = Vec::new();
        for _ in 0..32 {
            let (sts, cache, m, chain) = (sts.clone(), cache.clone(), m.clone(), chain.clone());
            tasks.push(tokio::spawn(async move {
                cache
                    .chain_credentials(&*sts, &m, "mary", &chain, far())
                    .await
                    .is_ok()
            }));
        }
        for t in tasks {
            assert!(t.await.unwrap());
        }
        assert_eq!(sts.calls.load(Ordering::SeqCst), 4);
        // Another user: its own sessions.
        cache
            .chain_credentials(&*sts, &m, "bob", &chain, far())
            .await
            .unwrap();
        assert_eq!(sts.calls.load(Ordering::SeqCst), 6);
        assert_eq!(cache.len(), 4);
    }

    #[tokio::test]
    async fn denial_and_bounded_waits() {
        let sts = FakeSts {
            deny: true,
            ..FakeSts::new(15 * MIN)
        };
        let cache = CredentialCache::new(policy());
        let m = Metrics::new();
        let chain = [hop("arn:aws:iam::123456789012:role/a")];
        let err = cache
            .chain_credentials(&sts, &m, "mary", &chain, far())
            .await
            .unwrap_err();
        assert!(matches!(err, CredError::Denied { hop: 0, .. }), "{err:?}");
        assert_eq!(
            sts.calls.load(Ordering::SeqCst),
            1,
            "a denial is not retried"
        );
        // A deadline shorter than the call: unavailable, no hang.
        let slow = FakeSts {
            delay: Duration::from_secs(10),
            ..FakeSts::new(15 * MIN)
        };
        let start = Instant::now();
        let err = cache
            .chain_credentials(&slow, &m, "bob", &chain, start + Duration::from_millis(600))
            .await
            .unwrap_err();
        assert!(matches!(err, CredError::Unavailable(_)), "{err:?}");
        let took = Instant::now() - start;
        assert!(took <= Duration::from_millis(700), "{took:?}");
    }

    #[tokio::test]
    async fn transient_errors_are_retried_within_the_deadline() {
        let sts = FakeSts::new(15 * MIN);
        sts.transient_failures.store(2, Ordering::SeqCst);
        let cache = CredentialCache::new(policy());
        let m = Metrics::new();
        let chain = [hop("arn:aws:iam::123456789012:role/a")];
        cache
            .chain_credentials(&sts, &m, "mary", &chain, far())
            .await
            .unwrap();
        assert_eq!(sts.calls.load(Ordering::SeqCst), 3);
        assert!(m
            .encode()
            .contains(r#"hms_guard_storage_sts_calls_total{hop="user",outcome="error"} 2"#));
    }

    #[test]
    fn jitter_is_bounded() {
        for _ in 0..1000 {
            assert!(jitter(Duration::from_millis(30)) <= Duration::from_millis(30));
        }
        assert_eq!(jitter(Duration::ZERO), Duration::ZERO);
    }
}
