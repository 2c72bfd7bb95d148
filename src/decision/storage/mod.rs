//! Dual-IAM storage checks (docs/STORAGE.md): may this user's own storage role read or write the
//! location a DDL names?
//!
//! ```text
//! location ─► location::parse_location (s3/s3a/s3n → bucket + normalized prefix; others:
//!             storage.other_schemes)
//!   ─► roles (user_roles / group_roles / default_role → IAM-A; + the bucket's cross-account
//!             role from storage.buckets → the role chain; session name from the user)
//!   ─► check::DecisionCache (per role chain, bucket, prefix, action; TTL; one computation
//!             per key at a time)
//!       ─► credentials::CredentialCache (AssumeRole per hop, cached per session and chain,
//!             renewed before expiry, single flight, never expired)
//!       ─► check::ask (probe: ListObjectsV2 | CreateMultipartUpload + Abort; or simulate:
//!             IAM SimulatePrincipalPolicy), bounded retries inside the check's deadline
//! ```
//!
//! Everything fails closed: a check that cannot be completed denies with
//! "storage check unavailable: …".

pub mod aws;
pub mod check;
pub mod config;
pub mod credentials;
pub mod location;
pub mod roles;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

pub use self::aws::BaseCredentials;
pub use self::config::{BucketRole, OtherSchemes, StorageConfig, StorageMethod};
pub use self::location::{
    canonical_location, install_scheme_aliases, parse_location, BucketNameError, CanonicalLocation,
    Location, LocationError, S3Location, SchemeAliasError, SchemeAliases,
};

use self::aws::{Backend, SdkBackend};
use self::check::{AwsAnswer, DecisionCache, DecisionKey, Unavailable};
use self::credentials::{CredError, CredPolicy, CredentialCache};
use self::roles::{session_name, Hop, RoleMap, RoleSource};
use crate::ops::metrics::{Metrics, StorageCheckLabels};

/// What the DDL needs of the location.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StorageAction {
    Read,
    Write,
}

impl StorageAction {
    pub fn as_str(self) -> &'static str {
        match self {
            StorageAction::Read => "read",
            StorageAction::Write => "write",
        }
    }
}

impl fmt::Display for StorageAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The answer of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageDecision {
    pub allow: bool,
    /// A message for the client and the audit line: user, role(s), bucket/prefix, action and
    /// what AWS said.
    pub reason: String,
    /// The role ARNs assumed, in order (the user's role, then a bucket role); empty when the
    /// check stopped before choosing a role.
    pub role_chain: Vec<String>,
    /// `read` or `write`.
    pub action: &'static str,
    /// The answer came from the decision cache (no AWS call for it).
    pub cached: bool,
    pub outcome: StorageOutcome,
}

/// How a storage check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageOutcome {
    Allow,
    Deny,
    /// Could not be decided (AWS unreachable, credentials refused…): denied.
    Unavailable,
    /// Another scheme, let through by `storage.other_schemes = "allow"`.
    NotS3Allowed,
    /// `storage.enabled = false`: allowed without a check.
    Disabled,
}

impl StorageOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            StorageOutcome::Allow => "allow",
            StorageOutcome::Deny => "deny",
            StorageOutcome::Unavailable => "unavailable",
            StorageOutcome::NotS3Allowed => "not_s3_allowed",
            StorageOutcome::Disabled => "disabled",
        }
    }
}

impl fmt::Display for StorageOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What is stored at a default place (docs/STORAGE.md "Default places").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Occupancy {
    /// No object under the place: a new table there takes nothing that exists.
    Empty,
    /// At least one object under the place.
    Occupied,
    /// Not an S3 location: nothing is listed, the ordinary check applies.
    NotS3,
    /// The listing failed or the place is not a valid location: denied (fail closed).
    Unavailable(String),
}

impl Occupancy {
    fn label(&self) -> &'static str {
        match self {
            Occupancy::Empty => "empty",
            Occupancy::Occupied => "occupied",
            Occupancy::NotS3 | Occupancy::Unavailable(_) => "error",
        }
    }
}

/// Building a guard failed (the configuration).
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("storage configuration: {}", .0.join("; "))]
    Config(Vec<String>),
}

/// The storage checker: built once, shared by all connections (cheap to clone).
#[derive(Clone)]
pub struct StorageGuard {
    inner: Arc<Inner>,
}

struct Inner {
    enabled: bool,
    method: StorageMethod,
    other_schemes: OtherSchemes,
    roles: RoleMap,
    timeout: Duration,
    max_attempts: u32,
    creds: CredentialCache,
    decisions: DecisionCache,
    backend: Option<Arc<dyn Backend>>,
    metrics: Arc<Metrics>,
}

impl StorageGuard {
    /// Builds the guard; the proxy's own AWS identity comes from the default provider chain
    /// (env, profile, web identity/IRSA, container, instance metadata), resolved lazily at the
    /// first check that needs AWS.
    pub async fn new(settings: &config::StorageSettings, metrics: Arc<Metrics>) -> Self {
        Self::with_credentials(settings, metrics, None).await
    }

    /// As `new`, with fixed credentials for the proxy's own identity instead of the default
    /// chain (`None`: the default chain).
    pub async fn with_credentials(
        settings: &config::StorageSettings,
        metrics: Arc<Metrics>,
        base: Option<BaseCredentials>,
    ) -> Self {
        let backend: Option<Arc<dyn Backend>> = if settings.enabled {
            let s = settings;
            let timeout = s.timeout.max(Duration::from_millis(1));
            Some(Arc::new(
                SdkBackend::new(&s.endpoint_url, &s.region, timeout, base).await,
            ))
        } else {
            None
        };
        Self::build(settings, metrics, backend)
    }

    /// As `new`, with another implementation of the AWS calls (tests).
    pub fn with_backend(
        settings: &config::StorageSettings,
        metrics: Arc<Metrics>,
        backend: Arc<dyn Backend>,
    ) -> Self {
        Self::build(settings, metrics, Some(backend))
    }

    fn build(
        s: &config::StorageSettings,
        metrics: Arc<Metrics>,
        backend: Option<Arc<dyn Backend>>,
    ) -> Self {
        // Comparisons of locations follow the configured scheme families from now on.
        install_scheme_aliases(s.scheme_aliases.clone());
        // Never hand out credentials with less left than one whole check may take (capped so
        // short test sessions still work).
        let margin = s
            .timeout
            .min(s.refresh_before / 2)
            .min(s.session_duration / 4);
        let policy = CredPolicy {
            session_duration: s.session_duration,
            chained_session_duration: s.session_duration.min(config::CHAINED_SESSION_MAX),
            refresh_before: s.refresh_before,
            margin,
            max_attempts: s.max_attempts,
        };
        if s.enabled {
            zero_series(&metrics);
        }
        StorageGuard {
            inner: Arc::new(Inner {
                enabled: s.enabled,
                method: s.method,
                other_schemes: s.other_schemes,
                roles: s.roles.clone(),
                timeout: s.timeout,
                max_attempts: s.max_attempts,
                creds: CredentialCache::new(policy),
                decisions: DecisionCache::new(s.decision_ttl),
                backend,
                metrics,
            }),
        }
    }

    /// `storage.enabled`: when false, `check` allows everything without looking.
    pub fn enabled(&self) -> bool {
        self.inner.enabled
    }

    /// Is anything stored at `location` (a default place) yet? One `ListObjectsV2` (one key,
    /// prefix = the place with a trailing `/`) with the proxy's own identity, retried within
    /// `storage.timeout_ms`; never cached (a place fills up at any time).
    pub async fn occupancy(&self, location: &str) -> Occupancy {
        let inner = &self.inner;
        let loc = match parse_location(location) {
            Ok(Location::S3(loc)) => loc,
            Ok(Location::Other { .. }) => return Occupancy::NotS3,
            Err(why) => return Occupancy::Unavailable(format!("invalid location: {why}")),
        };
        let Some(backend) = inner.backend.clone() else {
            return Occupancy::Unavailable("no AWS client".into());
        };
        let deadline = Instant::now() + inner.timeout;
        let result = aws::with_retries(
            deadline,
            inner.max_attempts,
            || backend.any_object(&loc.bucket, &loc.prefix),
            |_| {},
        )
        .await;
        let occupancy = match result {
            Ok(true) => Occupancy::Occupied,
            Ok(false) => Occupancy::Empty,
            Err((e, attempts)) => Occupancy::Unavailable(format!(
                "listing {loc} with the proxy's own identity failed after {attempts} attempt(s): {e}"
            )),
        };
        inner
            .metrics
            .storage_listings
            .get_or_create(&crate::ops::metrics::OutcomeLabels {
                outcome: occupancy.label(),
            })
            .inc();
        occupancy
    }

    /// May `user` (with `groups`) do `action` on `location` (the raw location string of the
    /// DDL)? Never fails: anything that prevents an answer denies.
    pub async fn check(
        &self,
        user: &str,
        groups: &[String],
        location: &str,
        action: StorageAction,
    ) -> StorageDecision {
        let inner = &self.inner;
        if !inner.enabled {
            return StorageDecision {
                allow: true,
                reason: "storage checks are off (storage.enabled = false)".into(),
                role_chain: Vec::new(),
                action: action.as_str(),
                cached: false,
                outcome: StorageOutcome::Disabled,
            };
        }
        let start = Instant::now();
        let decision = self.decide(user, groups, location, action, start).await;
        // The metric counts what the call got: a scheme let through is allowed.
        let outcome = match decision.outcome {
            StorageOutcome::NotS3Allowed => StorageOutcome::Allow,
            o => o,
        }
        .as_str();
        inner
            .metrics
            .storage_checks
            .get_or_create(&StorageCheckLabels {
                action: action.as_str(),
                outcome,
                cached: if decision.cached { "true" } else { "false" },
            })
            .inc();
        inner
            .metrics
            .storage_check_duration
            .observe(start.elapsed().as_secs_f64());
        if !decision.allow {
            tracing::info!(user, location, action = action.as_str(), outcome = decision.outcome.as_str(),
                reason = %decision.reason, "storage check denied");
        }
        decision
    }

    /// One check, start to end: the location, the user's role chain, then AWS's answer (cached
    /// per chain, bucket, prefix and action).
    async fn decide(
        &self,
        user: &str,
        groups: &[String],
        location: &str,
        action: StorageAction,
        start: Instant,
    ) -> StorageDecision {
        let inner = &self.inner;
        let verb = action.as_str();
        let loc = match self.s3_location(user, location, action) {
            Ok(loc) => loc,
            Err(decision) => return decision,
        };
        let Some((user_role, source)) = inner.roles.user_role(user, groups) else {
            return no_role(user, groups, &loc, action);
        };
        let chain = inner.roles.chain(user_role, &loc.bucket);
        let Some(backend) = inner.backend.clone() else {
            return decided(
                false,
                StorageOutcome::Unavailable,
                format!("storage check unavailable: user {user}, {verb} {loc}: no AWS client"),
                &chain,
                action,
                false,
            );
        };
        let deadline = start + inner.timeout;
        let key = DecisionKey {
            chain: chain.clone(),
            bucket: loc.bucket.clone(),
            prefix: loc.prefix.clone(),
            action,
        };
        let session = session_name(user);
        let compute = || self.ask_aws(&*backend, &session, &chain, &loc, action, deadline);
        let result = tokio::time::timeout_at(
            deadline,
            inner
                .decisions
                .get_or_compute(&inner.metrics, &key, deadline, compute),
        )
        .await
        .unwrap_or_else(|_| {
            Err(Unavailable::Timeout {
                ms: inner.timeout.as_millis(),
            })
        });
        let as_roles = describe_chain(&chain, &source, &loc.bucket);
        concluded(user, &loc, action, &as_roles, result, &chain)
    }

    /// The S3 location a check is about, or the decision for any other: a scheme let through
    /// or refused by `storage.other_schemes`, an invalid location denied.
    fn s3_location(
        &self,
        user: &str,
        location: &str,
        action: StorageAction,
    ) -> Result<S3Location, StorageDecision> {
        let verb = action.as_str();
        let deny =
            |reason: String| decided(false, StorageOutcome::Deny, reason, &[], action, false);
        let scheme = match parse_location(location) {
            Ok(Location::S3(loc)) => return Ok(loc),
            Ok(Location::Other { scheme }) => scheme,
            Err(why) => {
                return Err(deny(format!(
                    "storage: user {user} may not {verb} `{location}`: invalid location: {why}"
                )))
            }
        };
        let what = if scheme.is_empty() {
            "has no scheme (it would resolve against the cluster's default filesystem)".to_string()
        } else {
            format!("is a {scheme}:// location")
        };
        Err(match self.inner.other_schemes {
            OtherSchemes::Allow => decided(
                true,
                StorageOutcome::NotS3Allowed,
                format!(
                    "storage: location `{location}` {what}, not S3; allowed unchecked by storage.other_schemes = \"allow\""
                ),
                &[],
                action,
                false,
            ),
            OtherSchemes::Deny => deny(format!(
                "storage: user {user} may not {verb} `{location}`: the location {what}, and only s3://, s3a:// and s3n:// locations can be checked (storage.other_schemes = \"allow\" lets other schemes through unchecked)"
            )),
        })
    }

    /// AWS's answer for the chain's last role, its credentials assumed hop by hop first (a
    /// refused AssumeRole is a denial). `Err` = unavailable.
    async fn ask_aws(
        &self,
        backend: &dyn Backend,
        session: &str,
        chain: &[Hop],
        loc: &S3Location,
        action: StorageAction,
        deadline: Instant,
    ) -> Result<AwsAnswer, Unavailable> {
        let inner = &self.inner;
        let creds = match inner
            .creds
            .chain_credentials(backend, &inner.metrics, session, chain, deadline)
            .await
        {
            Ok(c) => c,
            Err(CredError::Denied {
                hop,
                role_arn,
                message,
            }) => {
                let from = if hop == 0 {
                    "the proxy's own identity".to_string()
                } else {
                    chain[hop - 1].role_arn.clone()
                };
                return Ok(AwsAnswer {
                    allow: false,
                    detail: format!(
                        "STS refused {from} assuming {role_arn} (its trust policy, external id, or the caller's sts:AssumeRole permission): {message}"
                    ),
                });
            }
            Err(CredError::Unavailable(m)) => return Err(Unavailable::Credentials(m)),
        };
        let asker = check::Asker {
            backend,
            metrics: &inner.metrics,
            method: inner.method,
            max_attempts: inner.max_attempts,
            creds: &creds,
            role_arn: chain
                .last()
                .map(|h| h.role_arn.as_str())
                .unwrap_or_default(),
            deadline,
        };
        check::ask(&asker, loc, action).await
    }
}

/// A check's decision once AWS has answered (`Ok`: the answer and whether it was cached) or
/// could not (`Err`: unavailable); `as_roles` names the role chain (`describe_chain`).
fn concluded(
    user: &str,
    loc: &S3Location,
    action: StorageAction,
    as_roles: &str,
    result: Result<(AwsAnswer, bool), Unavailable>,
    chain: &[Hop],
) -> StorageDecision {
    let verb = action.as_str();
    let (allow, outcome, reason, cached) = match result {
        Ok((v, cached)) if v.allow => (
            true,
            StorageOutcome::Allow,
            format!(
                "storage: user {user} may {verb} {loc} as {as_roles}: {}",
                v.detail
            ),
            cached,
        ),
        Ok((v, cached)) => (
            false,
            StorageOutcome::Deny,
            format!(
                "storage: user {user} may not {verb} {loc}: denied for {as_roles}: {}",
                v.detail
            ),
            cached,
        ),
        Err(m) => (
            false,
            StorageOutcome::Unavailable,
            format!("storage check unavailable: user {user}, {verb} {loc} as {as_roles}: {m}"),
            false,
        ),
    };
    decided(allow, outcome, reason, chain, action, cached)
}

/// The denial of a user with no storage role.
fn no_role(
    user: &str,
    groups: &[String],
    loc: &S3Location,
    action: StorageAction,
) -> StorageDecision {
    let verb = action.as_str();
    let groups = if groups.is_empty() {
        "no groups".to_string()
    } else {
        format!("groups {}", groups.join(", "))
    };
    decided(
        false,
        StorageOutcome::Deny,
        format!(
            "no storage role for user {user} ({groups}): cannot {verb} {loc}; set storage.user_roles, storage.group_roles or storage.default_role"
        ),
        &[],
        action,
        false,
    )
}

/// A check's decision.
fn decided(
    allow: bool,
    outcome: StorageOutcome,
    reason: String,
    chain: &[Hop],
    action: StorageAction,
    cached: bool,
) -> StorageDecision {
    StorageDecision {
        allow,
        reason,
        role_chain: chain.iter().map(|h| h.role_arn.clone()).collect(),
        action: action.as_str(),
        cached,
        outcome,
    }
}

/// Creates every storage series at 0, so dashboards and alerts see them before the first check.
fn zero_series(m: &Metrics) {
    use crate::ops::metrics::{CacheLabels, OutcomeLabels, ProbeLabels, StsLabels};
    for hop in ["user", "bucket"] {
        for outcome in ["ok", "denied", "error"] {
            let _ = m
                .storage_sts_calls
                .get_or_create(&StsLabels { hop, outcome });
        }
    }
    for outcome in ["ok", "error"] {
        let _ = m
            .storage_credential_refreshes
            .get_or_create(&OutcomeLabels { outcome });
    }
    for outcome in ["empty", "occupied", "error"] {
        let _ = m.storage_listings.get_or_create(&OutcomeLabels { outcome });
    }
    for action in ["read", "write"] {
        for outcome in ["allow", "deny", "error"] {
            let _ = m
                .storage_probes
                .get_or_create(&ProbeLabels { action, outcome });
        }
        for outcome in ["allow", "deny", "unavailable"] {
            for cached in ["true", "false"] {
                let _ = m.storage_checks.get_or_create(&StorageCheckLabels {
                    action,
                    outcome,
                    cached,
                });
            }
        }
    }
    for cache in ["storage_credentials", "storage_decisions"] {
        for result in ["hit", "miss"] {
            let _ = m.cache.get_or_create(&CacheLabels { cache, result });
        }
    }
}

fn describe_chain(chain: &[Hop], source: &RoleSource, bucket: &str) -> String {
    let mut s = format!("role {} ({source})", chain[0].role_arn);
    for hop in &chain[1..] {
        s.push_str(&format!(
            " then bucket role {} (storage.buckets, bucket {bucket})",
            hop.role_arn
        ));
    }
    s
}

/// A random number (jitter, probe object names); not for secrets.
pub(crate) fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.finish()
}

/// True if `child` lies at or under `parent`, compared in their canonical forms (any scheme;
/// the families of `storage.scheme_aliases`). False when either does not canonicalise. (For
/// "a partition location outside the table's location", "a metadata file under the table".)
pub fn location_is_under(child: &str, parent: &str) -> bool {
    match (canonical_location(child), canonical_location(parent)) {
        (Ok(c), Ok(p)) => c.is_under(&p),
        _ => false,
    }
}

/// The key by which locations are compared: the canonical form, or — for a string that does
/// not canonicalise — the string itself marked so that it equals no canonical form (the very
/// same string is still the same place, whatever it names).
pub fn location_key(raw: &str) -> String {
    match canonical_location(raw) {
        Ok(c) => c.to_string(),
        Err(_) => format!("\u{0}{raw}"),
    }
}

/// The place where the metastore puts table `table` of a database at `db_location` when the
/// table names no location (the database's location plus the table's lower-cased name), in
/// canonical form; `None` when that cannot be known exactly (a name outside `[a-z0-9_]`, which
/// the metastore would encode, or a database location that does not canonicalise).
fn default_table_location(db_location: &str, table: &str) -> Option<CanonicalLocation> {
    let name = table.to_ascii_lowercase();
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return None;
    }
    canonical_location(db_location).ok().map(|d| d.child(&name))
}

/// True if `location` is exactly where the metastore puts table `table` of a database at
/// `db_location` by default, compared canonically. Anything else — deeper, elsewhere under the
/// database, another table's place, or a location that does not canonicalise — is an explicit
/// location.
pub fn is_default_table_location(location: &str, db_location: &str, table: &str) -> bool {
    match (
        canonical_location(location),
        default_table_location(db_location, table),
    ) {
        (Ok(t), Some(d)) => t == d,
        _ => false,
    }
}

#[cfg(test)]
mod tests;
