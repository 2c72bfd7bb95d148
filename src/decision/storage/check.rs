//! Stages 4 and 5: ask AWS whether the chain's last role may read or write the prefix (probe or
//! simulate), and remember the answer per (role chain, bucket, prefix, action) for a TTL.

use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

use super::aws::{with_retries, AwsError, Backend, SessionCreds, Simulated};
use super::config::StorageMethod;
use super::credentials::CredUnavailable;
use super::location::S3Location;
use super::roles::Hop;
use super::{random_u64, StorageAction};
use crate::decision::cache::TtlCache;
use crate::ops::metrics::{CacheLabels, Metrics, ProbeLabels};

/// Most decisions cached at once.
const MAX_ENTRIES: usize = 100_000;

/// Name of the object a write probe starts (and aborts) an upload of, under the prefix; the
/// leading `_` hides it from Hive and Spark should an abort ever fail.
pub const PROBE_OBJECT: &str = "_hms_guard_probe";

/// AWS's definitive answer to one probe or simulation: what it said, without the user (the
/// same for every user of the chain).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsAnswer {
    pub allow: bool,
    pub detail: String,
}

/// Why AWS gave no definitive answer (the check is then unavailable and denies). `Display` is
/// the text after "storage check unavailable: …: ".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unavailable {
    /// An AWS call failed other than by a denial, after `attempts`.
    Aws { error: AwsError, attempts: u32 },
    /// The simulation call itself was refused (the role may not simulate itself).
    SimulateRefused { message: String, attempts: u32 },
    /// The role chain's credentials could not be had (`CredError::Unavailable`).
    Credentials(CredUnavailable),
    /// The check's deadline (`storage.timeout_ms`) passed.
    Timeout { ms: u128 },
    /// The same check for another caller is still running at the deadline.
    StillRunning,
}

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = |attempts: &u32| if *attempts == 1 { "" } else { "s" };
        match self {
            Unavailable::Aws { error, attempts } => {
                write!(f, "{error} ({attempts} attempt{})", s(attempts))
            }
            Unavailable::SimulateRefused { message, attempts } => write!(
                f,
                "{message} ({attempts} attempt{}; in simulate mode each checked role needs iam:SimulatePrincipalPolicy on itself)",
                s(attempts)
            ),
            Unavailable::Credentials(e) => e.fmt(f),
            Unavailable::Timeout { ms } => {
                write!(f, "no answer within storage.timeout_ms = {ms} ms")
            }
            Unavailable::StillRunning => f.write_str(
                "no answer in time (the same check for another caller is still running)",
            ),
        }
    }
}

impl std::error::Error for Unavailable {}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DecisionKey {
    pub chain: Vec<Hop>,
    pub bucket: String,
    pub prefix: String,
    pub action: StorageAction,
}

/// The decisions: the crate's one bounded, single-flight TTL cache (`cache::TtlCache`), at most
/// `MAX_ENTRIES` entries.
pub struct DecisionCache {
    cache: TtlCache<DecisionKey, AwsAnswer>,
    ttl: Duration,
}

impl DecisionCache {
    pub fn new(ttl: Duration) -> Self {
        DecisionCache {
            cache: TtlCache::new(ttl, MAX_ENTRIES),
            ttl,
        }
    }

    /// The cached answer for `key`, or `compute`'s (one computation per key at a time; the
    /// others wait for it within `deadline`). `Ok((answer, cached))`; `Err` = unavailable,
    /// which is never cached.
    pub async fn get_or_compute<F, Fut>(
        &self,
        metrics: &Metrics,
        key: &DecisionKey,
        deadline: Instant,
        compute: F,
    ) -> Result<(AwsAnswer, bool), Unavailable>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<AwsAnswer, Unavailable>>,
    {
        let lookup = |hit: bool| {
            metrics
                .cache
                .get_or_create(&CacheLabels {
                    cache: "storage_decisions",
                    result: if hit { "hit" } else { "miss" },
                })
                .inc();
        };
        if self.ttl.is_zero() {
            lookup(false);
            return compute().await.map(|v| (v, false));
        }
        let load = self.cache.get_or_load(key, compute, |_| true);
        match tokio::time::timeout_at(deadline, load).await {
            Ok(Ok((answer, hit))) => {
                lookup(hit);
                Ok((answer, hit))
            }
            Ok(Err(e)) => {
                lookup(false);
                Err(e)
            }
            Err(_) => {
                lookup(false);
                Err(Unavailable::StillRunning)
            }
        }
    }
}

/// Who asks AWS, and within what: the chain's last role (`creds`, `role_arn`), the check's
/// method, retry budget and deadline.
pub struct Asker<'a> {
    pub backend: &'a dyn Backend,
    pub metrics: &'a Metrics,
    pub method: StorageMethod,
    pub max_attempts: u32,
    pub creds: &'a SessionCreds,
    pub role_arn: &'a str,
    pub deadline: Instant,
}

/// Asks AWS, as the chain's last role (`asker.creds`), whether it may do `action` on `loc`.
/// `Err` = unavailable.
pub async fn ask(
    asker: &Asker<'_>,
    loc: &S3Location,
    action: StorageAction,
) -> Result<AwsAnswer, Unavailable> {
    match (asker.method, action) {
        (StorageMethod::Probe, StorageAction::Read) => probe_read(asker, loc).await,
        (StorageMethod::Probe, StorageAction::Write) => probe_write(asker, loc).await,
        (StorageMethod::Simulate, _) => simulate(asker, loc, action).await,
    }
}

impl Asker<'_> {
    /// Counts one attempt of a probe or simulation by its outcome.
    fn count(&self, action: StorageAction, outcome: &'static str) {
        self.metrics
            .storage_probes
            .get_or_create(&ProbeLabels {
                action: action.as_str(),
                outcome,
            })
            .inc();
    }

    /// Counts one S3 probe attempt by its result.
    fn count_result(&self, action: StorageAction, e: Option<&AwsError>) {
        self.count(
            action,
            match e {
                None => "allow",
                Some(AwsError::Denied(_)) => "deny",
                Some(_) => "error",
            },
        )
    }
}

/// A failed probe: AWS's denial is an answer; anything else is unavailable.
fn failed((e, attempts): (AwsError, u32)) -> Result<AwsAnswer, Unavailable> {
    match e {
        AwsError::Denied(m) => Ok(AwsAnswer {
            allow: false,
            detail: m,
        }),
        error => Err(Unavailable::Aws { error, attempts }),
    }
}

/// The read probe: may the role list the prefix?
async fn probe_read(a: &Asker<'_>, loc: &S3Location) -> Result<AwsAnswer, Unavailable> {
    let listed = with_retries(
        a.deadline,
        a.max_attempts,
        || a.backend.list_prefix(a.creds, &loc.bucket, &loc.prefix),
        |r| a.count_result(StorageAction::Read, r.as_ref().err()),
    )
    .await;
    match listed {
        Ok(()) => Ok(AwsAnswer {
            allow: true,
            detail: "S3 ListObjectsV2 allowed".into(),
        }),
        Err(e) => failed(e),
    }
}

/// The write probe: may the role start an upload under the prefix? (The upload is aborted.)
async fn probe_write(a: &Asker<'_>, loc: &S3Location) -> Result<AwsAnswer, Unavailable> {
    let key = format!("{}{PROBE_OBJECT}_{:016x}", loc.prefix, random_u64());
    let upload = match with_retries(
        a.deadline,
        a.max_attempts,
        || a.backend.start_upload(a.creds, &loc.bucket, &key),
        |r| a.count_result(StorageAction::Write, r.as_ref().err()),
    )
    .await
    {
        Ok(id) => id,
        Err(e) => return failed(e),
    };
    // Allowed whatever happens next; a failed abort only leaves an empty upload
    // behind (a bucket lifecycle rule for incomplete uploads removes it).
    let aborted = with_retries(
        a.deadline,
        a.max_attempts,
        || a.backend.abort_upload(a.creds, &loc.bucket, &key, &upload),
        |_| {},
    )
    .await;
    if let Err((e, _)) = aborted {
        tracing::warn!(bucket = %loc.bucket, key = %key, error = %e,
            "storage write probe: could not abort its multipart upload");
    }
    Ok(AwsAnswer {
        allow: true,
        detail: "S3 CreateMultipartUpload allowed".into(),
    })
}

/// The IAM policy simulation of the S3 action `action` implies on `loc`.
async fn simulate(
    a: &Asker<'_>,
    loc: &S3Location,
    action: StorageAction,
) -> Result<AwsAnswer, Unavailable> {
    let partition = a.role_arn.split(':').nth(1).unwrap_or("aws");
    let (action_name, resource, prefix) = match action {
        StorageAction::Read => (
            "s3:ListBucket",
            format!("arn:{partition}:s3:::{}", loc.bucket),
            Some(loc.prefix.as_str()),
        ),
        StorageAction::Write => (
            "s3:PutObject",
            format!(
                "arn:{partition}:s3:::{}/{}{PROBE_OBJECT}",
                loc.bucket, loc.prefix
            ),
            None,
        ),
    };
    let result = with_retries(
        a.deadline,
        a.max_attempts,
        || {
            a.backend
                .simulate(a.creds, a.role_arn, action_name, &resource, prefix)
        },
        |r| {
            a.count(
                action,
                match r {
                    Ok(Simulated::Allowed) => "allow",
                    Ok(Simulated::Denied(_)) => "deny",
                    Err(_) => "error",
                },
            )
        },
    )
    .await;
    match result {
        Ok(Simulated::Allowed) => Ok(AwsAnswer {
            allow: true,
            detail: format!("IAM policy simulation allows {action_name} on {resource}"),
        }),
        Ok(Simulated::Denied(m)) => Ok(AwsAnswer {
            allow: false,
            detail: format!("IAM policy simulation: {m}"),
        }),
        // The simulation call itself refused (the role may not simulate itself):
        // that says nothing about S3, so it is unavailable, not a deny.
        Err((AwsError::Denied(message), attempts)) => {
            Err(Unavailable::SimulateRefused { message, attempts })
        }
        Err(e) => failed(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The texts after "storage check unavailable: …: " are the ones denials have always given.
    #[test]
    fn unavailable_texts() {
        let aws = Unavailable::Aws {
            error: AwsError::Transient("HTTP 503".into()),
            attempts: 1,
        };
        assert_eq!(aws.to_string(), "HTTP 503 (1 attempt)");
        let refused = Unavailable::SimulateRefused {
            message: "no".into(),
            attempts: 2,
        };
        assert_eq!(
            refused.to_string(),
            "no (2 attempts; in simulate mode each checked role needs iam:SimulatePrincipalPolicy on itself)"
        );
        assert_eq!(
            Unavailable::Timeout { ms: 50 }.to_string(),
            "no answer within storage.timeout_ms = 50 ms"
        );
        assert_eq!(
            Unavailable::StillRunning.to_string(),
            "no answer in time (the same check for another caller is still running)"
        );
        assert_eq!(
            Unavailable::Credentials(CredUnavailable::AssumeFailed {
                role_arn: "arn:aws:iam::123456789012:role/a".into(),
                attempts: 3,
                error: AwsError::Transient("timeout".into()),
            })
            .to_string(),
            "cannot assume arn:aws:iam::123456789012:role/a (3 attempts): timeout"
        );
        assert_eq!(
            Unavailable::Credentials(CredUnavailable::ShortLived {
                role_arn: "r".into(),
                valid_ms: 9,
            })
            .to_string(),
            "STS gave credentials for r valid for only 9 ms (is this host's clock right?)"
        );
    }
}
