//! Stages 4 and 5: ask AWS whether the chain's last role may read or write the prefix (probe or
//! simulate), and remember the answer per (role chain, bucket, prefix, action) for a TTL.

use std::time::Duration;

use tokio::time::Instant;

use super::aws::{with_retries, AwsError, Backend, SessionCreds, Simulated};
use super::config::StorageMethod;
use super::location::S3Location;
use super::roles::Hop;
use super::{random_u64, StorageAction};
use crate::cache::TtlCache;
use crate::metrics::{CacheLabels, Metrics, ProbeLabels};

/// Most decisions cached at once.
const MAX_ENTRIES: usize = 100_000;

/// Name of the object a write probe starts (and aborts) an upload of, under the prefix; the
/// leading `_` hides it from Hive and Spark should an abort ever fail.
pub const PROBE_OBJECT: &str = "_hms_guard_probe";

/// A definitive answer: what AWS said, without the user (the same for every user of the chain).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub allow: bool,
    pub detail: String,
}

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
    cache: TtlCache<DecisionKey, Verdict>,
    ttl: Duration,
}

impl DecisionCache {
    pub fn new(ttl: Duration) -> Self {
        DecisionCache {
            cache: TtlCache::new(ttl, MAX_ENTRIES),
            ttl,
        }
    }

    pub fn len(&self) -> usize {
        self.cache.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }

    /// The cached verdict for `key`, or `compute`'s (one computation per key at a time; the
    /// others wait for it within `deadline`). `Ok((verdict, cached))`; `Err` = unavailable,
    /// which is never cached.
    pub async fn get_or_compute<F, Fut>(
        &self,
        metrics: &Metrics,
        key: &DecisionKey,
        deadline: Instant,
        compute: F,
    ) -> Result<(Verdict, bool), String>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Verdict, String>>,
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
            Ok(Ok((verdict, hit))) => {
                lookup(hit);
                Ok((verdict, hit))
            }
            Ok(Err(e)) => {
                lookup(false);
                Err(e)
            }
            Err(_) => {
                lookup(false);
                Err("no answer in time (the same check for another caller is still running)".into())
            }
        }
    }
}

/// Asks AWS, as the chain's last role (`creds`), whether it may do `action` on `loc`.
/// `Err` = unavailable.
#[allow(clippy::too_many_arguments)]
pub async fn ask(
    backend: &dyn Backend,
    metrics: &Metrics,
    method: StorageMethod,
    max_attempts: u32,
    creds: &SessionCreds,
    role_arn: &str,
    loc: &S3Location,
    action: StorageAction,
    deadline: Instant,
) -> Result<Verdict, String> {
    let count = |outcome: &'static str| {
        metrics
            .storage_probes
            .get_or_create(&ProbeLabels {
                action: action.as_str(),
                outcome,
            })
            .inc();
    };
    let count_result = |e: Option<&AwsError>| {
        count(match e {
            None => "allow",
            Some(AwsError::Denied(_)) => "deny",
            Some(_) => "error",
        })
    };
    let fail = |(e, attempts): (AwsError, u32)| match e {
        AwsError::Denied(m) => Ok(Verdict {
            allow: false,
            detail: m,
        }),
        other => Err(format!(
            "{other} ({attempts} attempt{})",
            if attempts == 1 { "" } else { "s" }
        )),
    };
    match method {
        StorageMethod::Probe => match action {
            StorageAction::Read => {
                match with_retries(
                    deadline,
                    max_attempts,
                    || backend.list_prefix(creds, &loc.bucket, &loc.prefix),
                    |r| count_result(r.as_ref().err()),
                )
                .await
                {
                    Ok(()) => Ok(Verdict {
                        allow: true,
                        detail: "S3 ListObjectsV2 allowed".into(),
                    }),
                    Err(e) => fail(e),
                }
            }
            StorageAction::Write => {
                let key = format!("{}{PROBE_OBJECT}_{:016x}", loc.prefix, random_u64());
                let upload = match with_retries(
                    deadline,
                    max_attempts,
                    || backend.start_upload(creds, &loc.bucket, &key),
                    |r| count_result(r.as_ref().err()),
                )
                .await
                {
                    Ok(id) => id,
                    Err(e) => return fail(e),
                };
                // Allowed whatever happens next; a failed abort only leaves an empty upload
                // behind (a bucket lifecycle rule for incomplete uploads removes it).
                let aborted = with_retries(
                    deadline,
                    max_attempts,
                    || backend.abort_upload(creds, &loc.bucket, &key, &upload),
                    |_| {},
                )
                .await;
                if let Err((e, _)) = aborted {
                    tracing::warn!(bucket = %loc.bucket, key = %key, error = %e,
                        "storage write probe: could not abort its multipart upload");
                }
                Ok(Verdict {
                    allow: true,
                    detail: "S3 CreateMultipartUpload allowed".into(),
                })
            }
        },
        StorageMethod::Simulate => {
            let partition = role_arn.split(':').nth(1).unwrap_or("aws");
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
                deadline,
                max_attempts,
                || backend.simulate(creds, role_arn, action_name, &resource, prefix),
                |r| {
                    count(match r {
                        Ok(Simulated::Allowed) => "allow",
                        Ok(Simulated::Denied(_)) => "deny",
                        Err(_) => "error",
                    })
                },
            )
            .await;
            match result {
                Ok(Simulated::Allowed) => Ok(Verdict {
                    allow: true,
                    detail: format!("IAM policy simulation allows {action_name} on {resource}"),
                }),
                Ok(Simulated::Denied(m)) => Ok(Verdict {
                    allow: false,
                    detail: format!("IAM policy simulation: {m}"),
                }),
                // The simulation call itself refused (the role may not simulate itself):
                // that says nothing about S3, so it is unavailable, not a deny.
                Err((AwsError::Denied(m), attempts)) => Err(format!(
                    "{m} ({attempts} attempt{}; in simulate mode each checked role needs iam:SimulatePrincipalPolicy on itself)",
                    if attempts == 1 { "" } else { "s" }
                )),
                Err(e) => fail(e),
            }
        }
    }
}
