//! The AWS calls a check makes (STS AssumeRole, the S3 probes, IAM SimulatePrincipalPolicy),
//! behind a small trait so the caches and the decision logic can be tested without a network,
//! and their errors sorted into denied / worth retrying / failed.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use aws_config::meta::region::RegionProviderChain;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_iam::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_iam::types::{ContextEntry, ContextKeyTypeEnum, PolicyEvaluationDecisionType};
use aws_sdk_s3::config::{RequestChecksumCalculation, ResponseChecksumValidation};

/// Credentials of an assumed-role session.
#[derive(Clone)]
pub struct SessionCreds {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: String,
    /// How long they are valid, counted from just before the request that obtained them.
    pub valid_for: Duration,
}

impl fmt::Debug for SessionCreds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionCreds")
            .field("access_key_id", &self.access_key_id)
            .field("valid_for", &self.valid_for)
            .finish_non_exhaustive()
    }
}

/// Static credentials for the proxy's own identity, instead of the default provider chain
/// (env, profile, web identity/IRSA, container, instance metadata).
#[derive(Clone)]
pub struct BaseCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl fmt::Debug for BaseCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BaseCredentials")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// How an AWS call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AwsError {
    /// A definitive no (HTTP 403 that is not about the caller's own credentials).
    Denied(String),
    /// Worth another attempt: network, timeout, throttling, 5xx.
    Transient(String),
    /// Neither: a 4xx other than 403, the proxy's own credentials rejected, a malformed reply.
    Failed(String),
}

impl fmt::Display for AwsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AwsError::Denied(m) | AwsError::Transient(m) | AwsError::Failed(m) => f.write_str(m),
        }
    }
}

/// What IAM's policy simulation said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Simulated {
    Allowed,
    /// `implicitDeny` / `explicitDeny`, with a description.
    Denied(String),
}

pub type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The AWS operations of a check. `via: None` means the proxy's own identity.
pub trait Backend: Send + Sync + 'static {
    fn assume_role<'a>(
        &'a self,
        via: Option<&'a SessionCreds>,
        role_arn: &'a str,
        external_id: Option<&'a str>,
        session_name: &'a str,
        duration: Duration,
    ) -> BoxFut<'a, Result<SessionCreds, AwsError>>;

    /// `ListObjectsV2(bucket, prefix, max-keys 1)`.
    fn list_prefix<'a>(
        &'a self,
        creds: &'a SessionCreds,
        bucket: &'a str,
        prefix: &'a str,
    ) -> BoxFut<'a, Result<(), AwsError>>;

    /// `ListObjectsV2(bucket, prefix, max-keys 1)` with the proxy's own identity: whether any
    /// object lies under `prefix` (a default place already in use). Backends that cannot
    /// list fail, which denies (fail closed).
    fn any_object<'a>(
        &'a self,
        bucket: &'a str,
        prefix: &'a str,
    ) -> BoxFut<'a, Result<bool, AwsError>> {
        let _ = (bucket, prefix);
        Box::pin(async {
            Err(AwsError::Failed(
                "this storage backend cannot list with the proxy's own identity".into(),
            ))
        })
    }

    /// `CreateMultipartUpload(bucket, key)`, returning the upload id.
    fn start_upload<'a>(
        &'a self,
        creds: &'a SessionCreds,
        bucket: &'a str,
        key: &'a str,
    ) -> BoxFut<'a, Result<String, AwsError>>;

    /// `AbortMultipartUpload`.
    fn abort_upload<'a>(
        &'a self,
        creds: &'a SessionCreds,
        bucket: &'a str,
        key: &'a str,
        upload_id: &'a str,
    ) -> BoxFut<'a, Result<(), AwsError>>;

    /// `SimulatePrincipalPolicy(role_arn, action, resource, s3:prefix context)` with `creds`.
    fn simulate<'a>(
        &'a self,
        creds: &'a SessionCreds,
        role_arn: &'a str,
        action: &'a str,
        resource_arn: &'a str,
        s3_prefix: Option<&'a str>,
    ) -> BoxFut<'a, Result<Simulated, AwsError>>;
}

/// The real thing: the AWS SDK over one shared HTTP client.
pub struct SdkBackend {
    base: SdkConfig,
    sts: aws_sdk_sts::Client,
    path_style: bool,
}

impl SdkBackend {
    /// `endpoint_url` empty: AWS. `region` empty: env / profile, else us-east-1 (instance
    /// metadata is deliberately not asked). `connect_timeout` bounds each TCP/TLS connect.
    pub async fn new(
        endpoint_url: &str,
        region: &str,
        connect_timeout: Duration,
        base: Option<BaseCredentials>,
    ) -> Self {
        let region_chain = if region.is_empty() {
            RegionProviderChain::first_try(
                aws_config::environment::EnvironmentVariableRegionProvider::new(),
            )
            .or_else(aws_config::profile::ProfileFileRegionProvider::new())
            .or_else(Region::new("us-east-1"))
        } else {
            RegionProviderChain::first_try(Region::new(region.to_string()))
        };
        // Retries and the overall deadline are the check's own (bounded, counted).
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(region_chain)
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(connect_timeout)
                    .build(),
            );
        if !endpoint_url.is_empty() {
            loader = loader.endpoint_url(endpoint_url);
        }
        if let Some(b) = base {
            loader = loader.credentials_provider(aws_sdk_sts::config::Credentials::new(
                b.access_key_id,
                b.secret_access_key,
                b.session_token,
                None,
                "hms-guard-static",
            ));
        }
        let base = loader.load().await;
        let sts = aws_sdk_sts::Client::new(&base);
        SdkBackend {
            base,
            sts,
            path_style: !endpoint_url.is_empty(),
        }
    }

    fn sdk_creds(c: &SessionCreds) -> aws_sdk_sts::config::Credentials {
        aws_sdk_sts::config::Credentials::new(
            c.access_key_id.clone(),
            c.secret_access_key.clone(),
            Some(c.session_token.clone()),
            None,
            "hms-guard-assumed-role",
        )
    }

    fn sts_as(&self, creds: &SessionCreds) -> aws_sdk_sts::Client {
        let conf = aws_sdk_sts::config::Builder::from(&self.base)
            .credentials_provider(Self::sdk_creds(creds))
            .build();
        aws_sdk_sts::Client::from_conf(conf)
    }

    fn s3_as(&self, creds: &SessionCreds) -> aws_sdk_s3::Client {
        let conf = aws_sdk_s3::config::Builder::from(&self.base)
            .credentials_provider(Self::sdk_creds(creds))
            .force_path_style(self.path_style)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .build();
        aws_sdk_s3::Client::from_conf(conf)
    }

    /// S3 as the proxy's own identity (the default chain, or the static base credentials).
    fn s3_own(&self) -> aws_sdk_s3::Client {
        let conf = aws_sdk_s3::config::Builder::from(&self.base)
            .force_path_style(self.path_style)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .build();
        aws_sdk_s3::Client::from_conf(conf)
    }

    fn iam_as(&self, creds: &SessionCreds) -> aws_sdk_iam::Client {
        let conf = aws_sdk_iam::config::Builder::from(&self.base)
            .credentials_provider(Self::sdk_creds(creds))
            .build();
        aws_sdk_iam::Client::from_conf(conf)
    }
}

impl Backend for SdkBackend {
    fn assume_role<'a>(
        &'a self,
        via: Option<&'a SessionCreds>,
        role_arn: &'a str,
        external_id: Option<&'a str>,
        session_name: &'a str,
        duration: Duration,
    ) -> BoxFut<'a, Result<SessionCreds, AwsError>> {
        Box::pin(async move {
            let client = match via {
                None => self.sts.clone(),
                Some(c) => self.sts_as(c),
            };
            let secs = i32::try_from(duration.as_secs().max(1)).unwrap_or(i32::MAX);
            let out = client
                .assume_role()
                .role_arn(role_arn)
                .role_session_name(session_name)
                .set_external_id(external_id.map(str::to_string))
                .duration_seconds(secs)
                .send()
                .await
                .map_err(|e| classify("STS AssumeRole", e))?;
            let c = out.credentials().ok_or_else(|| {
                AwsError::Failed("STS AssumeRole: no credentials in reply".into())
            })?;
            // The shorter of what was asked for and what the reply says is left; the cache
            // counts it from before the request, so it can only expire sooner here than there.
            let expires = SystemTime::try_from(*c.expiration()).map_err(|e| {
                AwsError::Failed(format!("STS AssumeRole: bad expiration in reply: {e}"))
            })?;
            let valid_for = expires
                .duration_since(SystemTime::now())
                .unwrap_or_default()
                .min(duration);
            Ok(SessionCreds {
                access_key_id: c.access_key_id().to_string(),
                secret_access_key: c.secret_access_key().to_string(),
                session_token: c.session_token().to_string(),
                valid_for,
            })
        })
    }

    fn list_prefix<'a>(
        &'a self,
        creds: &'a SessionCreds,
        bucket: &'a str,
        prefix: &'a str,
    ) -> BoxFut<'a, Result<(), AwsError>> {
        Box::pin(async move {
            list_one(&self.s3_as(creds), bucket, prefix)
                .await
                .map(|_| ())
        })
    }

    fn any_object<'a>(
        &'a self,
        bucket: &'a str,
        prefix: &'a str,
    ) -> BoxFut<'a, Result<bool, AwsError>> {
        Box::pin(async move {
            let out = list_one(&self.s3_own(), bucket, prefix).await?;
            Ok(out.key_count().unwrap_or(0) > 0 || !out.contents().is_empty())
        })
    }

    fn start_upload<'a>(
        &'a self,
        creds: &'a SessionCreds,
        bucket: &'a str,
        key: &'a str,
    ) -> BoxFut<'a, Result<String, AwsError>> {
        Box::pin(async move {
            let out = self
                .s3_as(creds)
                .create_multipart_upload()
                .bucket(bucket)
                .key(key)
                .send()
                .await
                .map_err(|e| classify("S3 CreateMultipartUpload", e))?;
            out.upload_id().map(str::to_string).ok_or_else(|| {
                AwsError::Failed("S3 CreateMultipartUpload: no upload id in reply".into())
            })
        })
    }

    fn abort_upload<'a>(
        &'a self,
        creds: &'a SessionCreds,
        bucket: &'a str,
        key: &'a str,
        upload_id: &'a str,
    ) -> BoxFut<'a, Result<(), AwsError>> {
        Box::pin(async move {
            self.s3_as(creds)
                .abort_multipart_upload()
                .bucket(bucket)
                .key(key)
                .upload_id(upload_id)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| classify("S3 AbortMultipartUpload", e))
        })
    }

    fn simulate<'a>(
        &'a self,
        creds: &'a SessionCreds,
        role_arn: &'a str,
        action: &'a str,
        resource_arn: &'a str,
        s3_prefix: Option<&'a str>,
    ) -> BoxFut<'a, Result<Simulated, AwsError>> {
        Box::pin(async move {
            let mut req = self
                .iam_as(creds)
                .simulate_principal_policy()
                .policy_source_arn(role_arn)
                .action_names(action)
                .resource_arns(resource_arn);
            if let Some(p) = s3_prefix {
                req = req.context_entries(
                    ContextEntry::builder()
                        .context_key_name("s3:prefix")
                        .context_key_values(p)
                        .context_key_type(ContextKeyTypeEnum::String)
                        .build(),
                );
            }
            let out = req
                .send()
                .await
                .map_err(|e| classify("IAM SimulatePrincipalPolicy", e))?;
            let results = out.evaluation_results();
            if results.is_empty() {
                return Err(AwsError::Failed(
                    "IAM SimulatePrincipalPolicy: no evaluation result".into(),
                ));
            }
            for r in results {
                let what = format!(
                    "{} on {}",
                    r.eval_action_name(),
                    r.eval_resource_name().unwrap_or(resource_arn)
                );
                let missing = if r.missing_context_values().is_empty() {
                    String::new()
                } else {
                    format!(
                        " (context keys the policy needs but the check cannot give: {})",
                        r.missing_context_values().join(", ")
                    )
                };
                match r.eval_decision() {
                    PolicyEvaluationDecisionType::Allowed => {}
                    PolicyEvaluationDecisionType::ExplicitDeny => {
                        return Ok(Simulated::Denied(format!(
                            "explicitDeny for {what}{missing}"
                        )))
                    }
                    PolicyEvaluationDecisionType::ImplicitDeny => {
                        return Ok(Simulated::Denied(format!(
                            "implicitDeny for {what}{missing}"
                        )))
                    }
                    other => {
                        return Err(AwsError::Failed(format!(
                            "IAM SimulatePrincipalPolicy: unknown decision `{}` for {what}",
                            other.as_str()
                        )))
                    }
                }
            }
            Ok(Simulated::Allowed)
        })
    }
}

/// Error codes that mean the caller's own credentials (not its permissions) are the problem.
const CREDENTIAL_CODES: [&str; 9] = [
    "InvalidClientTokenId",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "ExpiredTokenException",
    "InvalidToken",
    "TokenRefreshRequired",
    "RequestTimeTooSkewed",
    "MissingAuthenticationToken",
];

const THROTTLING_CODES: [&str; 6] = [
    "Throttling",
    "ThrottlingException",
    "SlowDown",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "RequestThrottled",
];

/// `outer: inner: innermost`, each message once (a source often repeats its cause's text).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur = Some(e);
    while let Some(err) = cur {
        let text = err.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = err.source();
    }
    parts.join(": ")
}

/// Sorts an SDK error. Decided by HTTP status where there is one (moto's STS error bodies do
/// not parse into a code), refined by the error code when the body parsed.
fn classify<E>(op: &str, e: SdkError<E, aws_sdk_iam::config::http::HttpResponse>) -> AwsError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let (status, code, message) = match &e {
        SdkError::ServiceError(se) => (
            Some(se.raw().status().as_u16()),
            se.err().code().map(str::to_string),
            se.err().message().map(str::to_string),
        ),
        SdkError::ResponseError(re) => (Some(re.raw().status().as_u16()), None, None),
        SdkError::TimeoutError(_) => return AwsError::Transient(format!("{op}: timed out")),
        SdkError::DispatchFailure(_) => {
            return AwsError::Transient(format!("{op}: {}", error_chain(&e)))
        }
        _ => return AwsError::Failed(format!("{op}: {}", error_chain(&e))),
    };
    let status_text = status.map(|s| s.to_string()).unwrap_or_default();
    let text = match (&code, &message) {
        (Some(c), Some(m)) => format!("{op}: HTTP {status_text} {c}: {m}"),
        (Some(c), None) => format!("{op}: HTTP {status_text} {c}"),
        _ => format!("{op}: HTTP {status_text}"),
    };
    let code = code.as_deref().unwrap_or("");
    if CREDENTIAL_CODES.contains(&code) {
        return AwsError::Failed(text);
    }
    if THROTTLING_CODES.contains(&code) {
        return AwsError::Transient(text);
    }
    match status {
        Some(403) => AwsError::Denied(text),
        Some(408 | 429) | Some(500..=599) => AwsError::Transient(text),
        _ => AwsError::Failed(text),
    }
}

/// Runs `call` up to `max_attempts` times while it fails with `Transient`, with jittered
/// exponential backoff (50 ms, 100 ms, …), every attempt and pause inside `deadline`. Each
/// attempt gets a fair share of the time left (at least 1 s, or what is left). `on_attempt`
/// sees every attempt's result. The error comes with the number of attempts made.
pub async fn with_retries<T, F, Fut>(
    deadline: tokio::time::Instant,
    max_attempts: u32,
    mut call: F,
    mut on_attempt: impl FnMut(&Result<T, AwsError>),
) -> Result<T, (AwsError, u32)>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, AwsError>>,
{
    let max_attempts = max_attempts.max(1);
    let mut backoff = Duration::from_millis(50);
    let mut attempt = 0u32;
    loop {
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Err((AwsError::Transient("no time left".into()), attempt));
        }
        attempt += 1;
        let left = deadline - now;
        let share = left / (max_attempts - attempt + 1);
        let limit = share.max(left.min(Duration::from_secs(1)));
        let result = match tokio::time::timeout(limit, call()).await {
            Ok(r) => r,
            Err(_) => Err(AwsError::Transient(format!(
                "no answer within {} ms",
                limit.as_millis()
            ))),
        };
        on_attempt(&result);
        match result {
            Ok(v) => return Ok(v),
            Err(AwsError::Transient(m)) if attempt < max_attempts => {
                let pause = backoff / 2 + super::credentials::jitter(backoff / 2);
                if tokio::time::Instant::now() + pause >= deadline {
                    return Err((AwsError::Transient(m), attempt));
                }
                tokio::time::sleep(pause).await;
                backoff *= 2;
            }
            Err(e) => return Err((e, attempt)),
        }
    }
}

/// One `ListObjectsV2` of at most one key under `prefix` (the whole bucket when empty): the
/// storage probe's read (as the user) and the default-place listing (as the proxy) alike.
async fn list_one(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
) -> Result<aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Output, AwsError> {
    s3.list_objects_v2()
        .bucket(bucket)
        .set_prefix(Some(prefix.to_string()).filter(|p| !p.is_empty()))
        .max_keys(1)
        .send()
        .await
        .map_err(|e| classify("S3 ListObjectsV2", e))
}
