//! Storage checks through the public API and the real AWS SDK, against a small fake AWS served
//! over HTTP on loopback by this test (STS AssumeRole, S3 ListObjectsV2 /
//! CreateMultipartUpload / AbortMultipartUpload, IAM SimulatePrincipalPolicy). The fake lets
//! the tests count calls, slow or break the endpoint, expire sessions on a short clock and
//! see whether an expired session is ever used.
//!
//! `simulate` is tested here only: moto (the AWS stand-in of tests/storage_moto.rs) does not
//! implement SimulatePrincipalPolicy (it answers HTTP 500). The IAM responses below are written
//! in the exact shape of AWS's documented SimulatePrincipalPolicy query-protocol XML replies
//! (not captured from a live account: this machine has no AWS access); the SDK's own generated
//! deserializer reading them is part of what is tested.

mod common;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

use common::metric_of;
use hms_guard::decision::storage::config::StorageSettings;
use hms_guard::decision::storage::{
    parse_location, BaseCredentials, BucketRole, Location, OtherSchemes, StorageAction,
    StorageConfig, StorageError, StorageGuard, StorageMethod,
};
use hms_guard::ops::metrics::Metrics;

const ACCOUNT: &str = "123456789012";
const DEFAULT: &str = "arn:aws:iam::123456789012:role/account-default";
const ETL: &str = "arn:aws:iam::123456789012:role/etl";
const PARTNER: &str = "arn:aws:iam::210987654321:role/subscriber";
const PROXY_KEY: &str = "AKIDPROXYEXAMPLE";

// ---------------------------------------------------------------------------------------------
// The fake AWS

#[derive(Default)]
struct State {
    /// (role ARN, external id, session name, caller's access key)
    assumes: Vec<(String, Option<String>, String, String)>,
    /// access key → (role ARN, expiry)
    sessions: HashMap<String, (String, Instant)>,
    /// (method, path and query, access key)
    s3_calls: Vec<(String, String, String)>,
    /// Requests signed with an expired session.
    expired_uses: usize,
    /// Form parameters of each SimulatePrincipalPolicy call.
    simulations: Vec<HashMap<String, String>>,
    next_key: u64,
    // behaviour
    sts_delay: Duration,
    s3_status: Option<u16>,
    /// role → external id its trust policy requires (None: none)
    trust: HashMap<String, Option<String>>,
    /// (role, "r"|"w", "bucket/prefix")
    grants: Vec<(String, &'static str, String)>,
    /// Objects stored ("bucket/key"), listed by the proxy's own identity.
    objects: Vec<String>,
}

#[derive(Clone)]
struct FakeAws {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

impl FakeAws {
    async fn start() -> FakeAws {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            trust: [
                (DEFAULT.to_string(), None),
                (ETL.to_string(), None),
                (PARTNER.to_string(), Some("right-id".to_string())),
            ]
            .into(),
            grants: vec![
                (DEFAULT.into(), "w", "datalake/defloc/".into()),
                (DEFAULT.into(), "w", "datalake/temp/".into()),
                (DEFAULT.into(), "r", "datalake/defloc/".into()),
                (ETL.into(), "w", "datalake/datawarehouse/".into()),
                (ETL.into(), "r", "datalake/".into()),
                (PARTNER.into(), "w", "partner-data/".into()),
                (PARTNER.into(), "r", "partner-data/".into()),
            ],
            ..Default::default()
        }));
        let st = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    return;
                };
                let st = st.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| handle(st.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(sock), svc)
                        .await;
                });
            }
        });
        FakeAws { addr, state }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut self.state.lock().unwrap())
    }

    fn assume_count(&self) -> usize {
        self.with(|s| s.assumes.len())
    }

    fn s3_count(&self) -> usize {
        self.with(|s| s.s3_calls.len())
    }
}

fn reply(status: u16, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "text/xml")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

fn access_key(req: &Request<Incoming>) -> String {
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    auth.split("Credential=")
        .nth(1)
        .and_then(|c| c.split('/').next())
        .unwrap_or_default()
        .to_string()
}

fn form(body: &[u8]) -> HashMap<String, String> {
    let decode = |s: &str| {
        let s = s.replace('+', " ");
        let b = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' && i + 2 < b.len() {
                if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                    out.push(v);
                    i += 3;
                    continue;
                }
            }
            out.push(b[i]);
            i += 1;
        }
        String::from_utf8(out).unwrap()
    };
    String::from_utf8_lossy(body)
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// RFC 3339 UTC time of `t`, with milliseconds (so short test sessions are not cut short).
fn rfc3339(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap();
    let secs = since.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

const STS_DENIED: &str = r#"<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <Error><Type>Sender</Type><Code>AccessDenied</Code><Message>Not authorized to perform sts:AssumeRole</Message></Error>
  <RequestId>c6104cbe-af31-11e0-8154-cbc7ccf896c7</RequestId>
</ErrorResponse>"#;

const S3_DENIED: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<Error><Code>AccessDenied</Code><Message>Access Denied</Message><RequestId>4442587FB7D0A2F9</RequestId></Error>"#;

/// A SimulatePrincipalPolicy reply in AWS's documented shape.
fn simulate_reply(action: &str, resource: &str, decision: &str) -> String {
    let matched = if decision == "allowed" {
        "<MatchedStatements><member><SourcePolicyId>defloc-temp</SourcePolicyId><SourcePolicyType>IAM Policy</SourcePolicyType>\
         <StartPosition><Line>1</Line><Column>38</Column></StartPosition><EndPosition><Line>1</Line><Column>230</Column></EndPosition></member></MatchedStatements>"
    } else {
        "<MatchedStatements/>"
    };
    format!(
        r#"<SimulatePrincipalPolicyResponse xmlns="https://iam.amazonaws.com/doc/2010-05-08/">
  <SimulatePrincipalPolicyResult>
    <IsTruncated>false</IsTruncated>
    <EvaluationResults>
      <member>
        {matched}
        <MissingContextValues/>
        <EvalResourceName>{resource}</EvalResourceName>
        <EvalDecision>{decision}</EvalDecision>
        <EvalDecisionDetails/>
        <EvalActionName>{action}</EvalActionName>
      </member>
    </EvaluationResults>
  </SimulatePrincipalPolicyResult>
  <ResponseMetadata>
    <RequestId>004d7059-4c14-11e5-b121-bd8c7EXAMPLE</RequestId>
  </ResponseMetadata>
</SimulatePrincipalPolicyResponse>"#
    )
}

/// The proxy's own identity may only list (the first object under the prefix, as S3 answers
/// `max-keys=1`).
fn proxy_listing(s: &State, path_q: &str) -> Response<Full<Bytes>> {
    let (path, query) = path_q.split_once('?').unwrap_or((path_q, ""));
    let q = form(query.as_bytes());
    if q.get("list-type").map(String::as_str) != Some("2") {
        return reply(403, S3_DENIED.into());
    }
    let bucket = path.trim_matches('/');
    let prefix = q.get("prefix").cloned().unwrap_or_default();
    let first = s
        .objects
        .iter()
        .filter_map(|o| o.strip_prefix(&format!("{bucket}/")))
        .find(|k| k.starts_with(&prefix));
    let (count, contents) = match first {
        Some(k) => (
            1,
            format!("<Contents><Key>{k}</Key><Size>7</Size><StorageClass>STANDARD</StorageClass></Contents>"),
        ),
        None => (0, String::new()),
    };
    reply(
        200,
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>{bucket}</Name><Prefix>{prefix}</Prefix><KeyCount>{count}</KeyCount><MaxKeys>1</MaxKeys><IsTruncated>false</IsTruncated>{contents}</ListBucketResult>"#
        ),
    )
}

async fn handle(
    st: Arc<Mutex<State>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let key = access_key(&req);
    let method = req.method().to_string();
    let path_q = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let body = req.into_body().collect().await.unwrap().to_bytes();
    if method == "POST" && path_q == "/" {
        let f = form(&body);
        return Ok(match f.get("Action").map(String::as_str) {
            Some("AssumeRole") => assume_role(&st, &key, &f).await,
            Some("SimulatePrincipalPolicy") => {
                let mut s = st.lock().unwrap();
                s.simulations.push(f.clone());
                let role = f.get("PolicySourceArn").cloned().unwrap_or_default();
                let action = f.get("ActionNames.member.1").cloned().unwrap_or_default();
                let resource = f.get("ResourceArns.member.1").cloned().unwrap_or_default();
                let path = resource.trim_start_matches("arn:aws:s3:::").to_string();
                let prefix = f
                    .get("ContextEntries.member.1.ContextKeyValues.member.1")
                    .cloned()
                    .unwrap_or_default();
                let (kind, target) = match action.as_str() {
                    "s3:ListBucket" => ("r", format!("{path}/{prefix}")),
                    _ => ("w", path),
                };
                let ok = s
                    .grants
                    .iter()
                    .any(|(r, k, p)| *r == role && *k == kind && target.starts_with(p.as_str()));
                reply(
                    200,
                    simulate_reply(
                        &action,
                        &resource,
                        if ok { "allowed" } else { "implicitDeny" },
                    ),
                )
            }
            _ => reply(400, "<ErrorResponse/>".into()),
        });
    }
    // S3, path style: /bucket[/key][?query]
    let mut s = st.lock().unwrap();
    s.s3_calls
        .push((method.clone(), path_q.clone(), key.clone()));
    if let Some(status) = s.s3_status {
        return Ok(reply(
            status,
            "<Error><Code>InternalError</Code></Error>".into(),
        ));
    }
    if key == PROXY_KEY {
        return Ok(proxy_listing(&s, &path_q));
    }
    let Some((role, expires)) = s.sessions.get(&key).cloned() else {
        return Ok(reply(403, S3_DENIED.into()));
    };
    if Instant::now() >= expires {
        s.expired_uses += 1;
        return Ok(reply(
            400,
            "<Error><Code>ExpiredToken</Code><Message>The provided token has expired.</Message></Error>".into(),
        ));
    }
    let (path, query) = path_q.split_once('?').unwrap_or((&path_q, ""));
    let q = form(query.as_bytes());
    let path = path.trim_start_matches('/');
    let (bucket, object) = path.split_once('/').unwrap_or((path, ""));
    let allowed = |kind: &str, target: &str| {
        s.grants
            .iter()
            .any(|(r, k, p)| *r == role && *k == kind && target.starts_with(p.as_str()))
    };
    Ok(match method.as_str() {
        "GET" if q.get("list-type").map(String::as_str) == Some("2") => {
            let prefix = q.get("prefix").cloned().unwrap_or_default();
            if allowed("r", &format!("{bucket}/{prefix}")) {
                reply(
                    200,
                    format!(
                        r#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>{bucket}</Name><Prefix>{prefix}</Prefix><KeyCount>0</KeyCount><MaxKeys>1</MaxKeys><IsTruncated>false</IsTruncated></ListBucketResult>"#
                    ),
                )
            } else {
                reply(403, S3_DENIED.into())
            }
        }
        "POST" if q.contains_key("uploads") => {
            if allowed("w", &format!("{bucket}/{object}")) {
                reply(
                    200,
                    format!(
                        r#"<?xml version="1.0" encoding="UTF-8"?>
<InitiateMultipartUploadResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Bucket>{bucket}</Bucket><Key>{object}</Key><UploadId>upload-1</UploadId></InitiateMultipartUploadResult>"#
                    ),
                )
            } else {
                reply(403, S3_DENIED.into())
            }
        }
        "DELETE" if q.contains_key("uploadId") => Response::builder()
            .status(204)
            .body(Full::new(Bytes::new()))
            .unwrap(),
        _ => reply(400, "<Error><Code>NotImplemented</Code></Error>".into()),
    })
}

async fn assume_role(
    st: &Arc<Mutex<State>>,
    caller: &str,
    f: &HashMap<String, String>,
) -> Response<Full<Bytes>> {
    let delay = st.lock().unwrap().sts_delay;
    tokio::time::sleep(delay).await;
    let mut s = st.lock().unwrap();
    let role = f.get("RoleArn").cloned().unwrap_or_default();
    let ext = f.get("ExternalId").cloned();
    let session = f.get("RoleSessionName").cloned().unwrap_or_default();
    s.assumes.push((
        role.clone(),
        ext.clone(),
        session.clone(),
        caller.to_string(),
    ));
    let caller_ok = caller == PROXY_KEY
        || s.sessions
            .get(caller)
            .is_some_and(|(_, exp)| Instant::now() < *exp);
    let trusted = match s.trust.get(&role) {
        Some(None) => true,
        Some(Some(want)) => ext.as_deref() == Some(want.as_str()),
        None => false,
    };
    if !caller_ok || !trusted {
        return reply(403, STS_DENIED.into());
    }
    let secs: u64 = f
        .get("DurationSeconds")
        .and_then(|d| d.parse().ok())
        .unwrap_or(3600);
    s.next_key += 1;
    let akid = format!("ASIAFAKE{:08}", s.next_key);
    s.sessions.insert(
        akid.clone(),
        (role.clone(), Instant::now() + Duration::from_secs(secs)),
    );
    let expiration = rfc3339(SystemTime::now() + Duration::from_secs(secs));
    let name = role.rsplit('/').next().unwrap_or_default();
    reply(
        200,
        format!(
            r#"<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleResult>
    <AssumedRoleUser>
      <Arn>arn:aws:sts::{ACCOUNT}:assumed-role/{name}/{session}</Arn>
      <AssumedRoleId>AROA3XFRBF535PLBIFPI4:{session}</AssumedRoleId>
    </AssumedRoleUser>
    <Credentials>
      <AccessKeyId>{akid}</AccessKeyId>
      <SecretAccessKey>secret-{akid}</SecretAccessKey>
      <SessionToken>token-{akid}</SessionToken>
      <Expiration>{expiration}</Expiration>
    </Credentials>
  </AssumeRoleResult>
  <ResponseMetadata><RequestId>c6104cbe-af31-11e0-8154-cbc7ccf896c7</RequestId></ResponseMetadata>
</AssumeRoleResponse>"#
        ),
    )
}

// ---------------------------------------------------------------------------------------------
// helpers

fn config(aws: &FakeAws) -> StorageConfig {
    StorageConfig {
        endpoint_url: aws.url(),
        region: "us-east-1".into(),
        user_roles: [("etl-bot".into(), ETL.into())].into(),
        group_roles: [("etl".into(), ETL.into())].into(),
        default_role: DEFAULT.into(),
        buckets: [(
            "partner-data".into(),
            BucketRole {
                role_arn: PARTNER.into(),
                external_id: "right-id".into(),
            },
        )]
        .into(),
        ..Default::default()
    }
}

async fn guard(cfg: &StorageConfig) -> (StorageGuard, Arc<Metrics>) {
    let m = Arc::new(Metrics::new());
    let g = StorageGuard::with_credentials(
        &StorageSettings::resolve(cfg).unwrap(),
        m.clone(),
        Some(BaseCredentials {
            access_key_id: PROXY_KEY.into(),
            secret_access_key: "proxy-secret".into(),
            session_token: None,
        }),
    )
    .await;
    (g, m)
}

const W: StorageAction = StorageAction::Write;
const R: StorageAction = StorageAction::Read;

// ---------------------------------------------------------------------------------------------
// tests

#[test]
fn location_parsing_and_normalization() {
    let s3 = |raw: &str| match parse_location(raw) {
        Ok(Location::S3(l)) => (l.scheme, l.bucket, l.prefix),
        other => panic!("{raw}: {other:?}"),
    };
    assert_eq!(
        s3("s3a://datalake/defloc/x"),
        ("s3a".into(), "datalake".into(), "defloc/x/".into())
    );
    assert_eq!(s3("s3://datalake/defloc/x/").2, "defloc/x/");
    assert_eq!(s3("s3n://datalake").2, "");
    for bad in [
        "s3a://datalake/defloc/../datawarehouse/y",
        "s3a://datalake/./defloc/x",
        "s3a://datalake/defloc//x",
        "s3a://datalake/defloc/%2e%2e/datawarehouse",
        "s3a://",
    ] {
        assert!(parse_location(bad).is_err(), "{bad}");
    }
    assert!(
        matches!(parse_location("hdfs://nn/x"), Ok(Location::Other { scheme }) if scheme == "hdfs")
    );
    assert!(matches!(
        parse_location("file:///tmp/x"),
        Ok(Location::Other { .. })
    ));
}

#[tokio::test]
async fn probe_allows_and_denies_by_role() {
    let aws = FakeAws::start().await;
    let (g, m) = guard(&config(&aws)).await;

    let d = g.check("mary", &[], "s3a://datalake/defloc/x", W).await;
    assert!(d.allow, "{d:?}");
    assert_eq!(d.role_chain, vec![DEFAULT.to_string()]);
    let d = g
        .check("mary", &[], "s3a://datalake/datawarehouse/y", W)
        .await;
    assert!(
        !d.allow && d.outcome == hms_guard::decision::storage::StorageOutcome::Deny,
        "{d:?}"
    );
    for want in [
        "user mary",
        "may not write",
        "s3a://datalake/datawarehouse/y/",
        DEFAULT,
        "AccessDenied",
    ] {
        assert!(d.reason.contains(want), "`{want}` not in: {}", d.reason);
    }
    // The same location for a user whose own role allows it.
    assert!(
        g.check("etl-bot", &[], "s3a://datalake/datawarehouse/y", W)
            .await
            .allow
    );
    assert!(
        g.check(
            "joe",
            &["staff".into(), "etl".into()],
            "s3a://datalake/datawarehouse/y",
            W
        )
        .await
        .allow
    );
    // Reads: ListObjectsV2 under the prefix.
    assert!(
        g.check("mary", &[], "s3a://datalake/defloc/x", R)
            .await
            .allow
    );
    assert!(
        !g.check("mary", &[], "s3a://datalake/datawarehouse/y", R)
            .await
            .allow
    );

    // The probe's requests: CreateMultipartUpload under the prefix, then its abort; the
    // session name is the user's.
    let calls = aws.with(|s| s.s3_calls.clone());
    assert!(calls.iter().any(|(m, p, _)| m == "POST"
        && p.starts_with("/datalake/defloc/x/_hms_guard_probe_")
        && p.ends_with("?uploads")));
    assert!(calls
        .iter()
        .any(|(m, p, _)| m == "DELETE" && p.contains("uploadId=upload-1")));
    assert!(calls.iter().any(|(m, p, _)| m == "GET"
        && p.contains("list-type=2")
        && p.contains("prefix=defloc%2Fx%2F")
        && p.contains("max-keys=1")));
    // (joe's check was answered by the decision cache filled by etl-bot's: same role chain,
    // bucket, prefix and action, so no AssumeRole as joe.)
    let sessions: Vec<String> = aws.with(|s| s.assumes.iter().map(|a| a.2.clone()).collect());
    assert_eq!(sessions, ["mary", "etl-bot"]);
    assert_eq!(
        metric_of(
            &m,
            r#"hms_guard_storage_probes_total{action="write",outcome="deny"} "#
        ),
        1.0
    );
}

#[tokio::test]
async fn no_role_and_other_schemes_make_no_aws_call() {
    let aws = FakeAws::start().await;
    let cfg = StorageConfig {
        endpoint_url: aws.url(),
        region: "us-east-1".into(),
        ..Default::default()
    };
    let (g, _) = guard(&cfg).await;
    let d = g
        .check("mary", &["bi".into()], "s3a://datalake/defloc/x", W)
        .await;
    assert!(!d.allow);
    assert!(
        d.reason.contains("no storage role for user mary"),
        "{}",
        d.reason
    );
    let d = g.check("mary", &[], "hdfs://nn/warehouse/x", W).await;
    assert!(
        !d.allow && d.reason.contains("storage.other_schemes"),
        "{}",
        d.reason
    );
    let (g, _) = guard(&StorageConfig {
        other_schemes: OtherSchemes::Allow,
        ..cfg
    })
    .await;
    let d = g.check("mary", &[], "hdfs://nn/warehouse/x", W).await;
    assert!(d.allow && d.outcome == hms_guard::decision::storage::StorageOutcome::NotS3Allowed);
    assert_eq!(aws.assume_count() + aws.s3_count(), 0);
}

#[tokio::test]
async fn cross_account_chain_with_external_id() {
    let aws = FakeAws::start().await;
    let (g, m) = guard(&config(&aws)).await;
    let d = g.check("mary", &[], "s3a://partner-data/shared/x", W).await;
    assert!(d.allow, "{d:?}");
    assert_eq!(d.role_chain, vec![DEFAULT.to_string(), PARTNER.to_string()]);
    let assumes = aws.with(|s| s.assumes.clone());
    assert_eq!(assumes.len(), 2);
    assert_eq!(assumes[0].3, PROXY_KEY, "hop 1 from the proxy's identity");
    assert_ne!(
        assumes[1].3, PROXY_KEY,
        "hop 2 from the user's role session"
    );
    assert_eq!(assumes[1].1.as_deref(), Some("right-id"));
    let req_duration = aws.with(|s| s.sessions.len());
    assert_eq!(req_duration, 2);

    let mut cfg = config(&aws);
    cfg.buckets.get_mut("partner-data").unwrap().external_id = "wrong-id".into();
    let (g, _) = guard(&cfg).await;
    let d = g.check("mary", &[], "s3a://partner-data/shared/x", W).await;
    assert!(
        !d.allow && d.outcome == hms_guard::decision::storage::StorageOutcome::Deny,
        "{d:?}"
    );
    assert!(
        d.reason.contains("STS refused") && d.reason.contains(PARTNER),
        "{}",
        d.reason
    );
    assert_eq!(
        metric_of(
            &m,
            r#"hms_guard_storage_sts_calls_total{hop="bucket",outcome="ok"} "#
        ),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_checks_for_one_key_make_one_assume_role() {
    let aws = FakeAws::start().await;
    aws.with(|s| s.sts_delay = Duration::from_millis(300));
    let (g, m) = guard(&config(&aws)).await;
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let g = g.clone();
        tasks.push(tokio::spawn(async move {
            g.check("mary", &[], "s3a://datalake/defloc/x", W).await
        }));
    }
    let mut cached = 0;
    for t in tasks {
        let d = t.await.unwrap();
        assert!(d.allow, "{d:?}");
        cached += usize::from(d.cached);
    }
    assert_eq!(aws.assume_count(), 1, "one AssumeRole");
    // And one probe: the others waited for the decision in flight.
    assert_eq!(aws.s3_count(), 2, "one CreateMultipartUpload + its abort");
    assert_eq!(cached, 31);
    assert_eq!(
        metric_of(
            &m,
            r#"hms_guard_cache_lookups_total{cache="storage_decisions",result="hit"} "#
        ),
        31.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_refreshed_before_expiry_and_never_used_expired() {
    let aws = FakeAws::start().await;
    let cfg = StorageConfig {
        session_duration_ms: 2_000,
        refresh_before_ms: 800,
        decision_ttl_ms: 0, // every check probes S3 with the cached credentials
        ..config(&aws)
    };
    let (g, m) = guard(&cfg).await;
    let start = Instant::now();
    let run = Duration::from_millis(4_500);
    let mut checks = 0;
    while start.elapsed() < run {
        let d = g.check("mary", &[], "s3a://datalake/defloc/x", W).await;
        assert!(d.allow, "{d:?}");
        checks += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Renewed every 2.0 - 0.8 (- up to 0.08 jitter) s: at about 0, 1.2, 2.4, 3.6 s.
    let assumes = aws.assume_count();
    assert!(
        (4..=5).contains(&assumes),
        "{assumes} AssumeRole calls in {checks} checks"
    );
    assert_eq!(
        aws.with(|s| s.expired_uses),
        0,
        "an expired session was used"
    );
    assert_eq!(
        metric_of(
            &m,
            r#"hms_guard_storage_credential_refreshes_total{outcome="ok"} "#
        ),
        assumes as f64
    );
    // Every check after the first hit the credential cache.
    let hits = metric_of(
        &m,
        r#"hms_guard_cache_lookups_total{cache="storage_credentials",result="hit"} "#,
    );
    assert_eq!(hits as usize + assumes, checks);
}

#[tokio::test]
async fn decision_cache_and_ttl() {
    let aws = FakeAws::start().await;
    let cfg = StorageConfig {
        decision_ttl_ms: 400,
        ..config(&aws)
    };
    let (g, _) = guard(&cfg).await;
    let a = g.check("mary", &[], "s3a://datalake/defloc/x", W).await;
    let b = g.check("bob", &[], "s3://datalake/defloc/x/", W).await;
    assert!(!a.cached && b.cached && b.allow);
    assert_eq!(aws.s3_count(), 2);
    // Denials are cached too.
    assert!(
        !g.check("mary", &[], "s3a://datalake/datawarehouse/y", W)
            .await
            .cached
    );
    assert!(
        g.check("mary", &[], "s3a://datalake/datawarehouse/y", W)
            .await
            .cached
    );
    assert_eq!(aws.s3_count(), 3);
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert!(
        !g.check("mary", &[], "s3a://datalake/defloc/x", W)
            .await
            .cached
    );
    assert_eq!(aws.s3_count(), 5);
}

#[tokio::test]
async fn endpoint_down_denies_quickly() {
    // A port nothing listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let cfg = StorageConfig {
        endpoint_url: format!("http://127.0.0.1:{port}"),
        region: "us-east-1".into(),
        default_role: DEFAULT.into(),
        timeout_ms: 3_000,
        max_attempts: 3,
        ..Default::default()
    };
    let (g, m) = guard(&cfg).await;
    let start = Instant::now();
    let d = g.check("mary", &[], "s3a://datalake/defloc/x", W).await;
    let took = start.elapsed();
    assert!(
        !d.allow && d.outcome == hms_guard::decision::storage::StorageOutcome::Unavailable,
        "{d:?}"
    );
    assert!(
        d.reason.starts_with("storage check unavailable: "),
        "{}",
        d.reason
    );
    assert!(d.reason.contains("3 attempts"), "{}", d.reason);
    assert!(took < Duration::from_secs(1), "took {took:?}");
    assert_eq!(
        metric_of(
            &m,
            r#"hms_guard_storage_sts_calls_total{hop="user",outcome="error"} "#
        ),
        3.0
    );
}

#[tokio::test]
async fn slow_sts_times_out_within_the_deadline() {
    let aws = FakeAws::start().await;
    aws.with(|s| s.sts_delay = Duration::from_secs(30));
    let cfg = StorageConfig {
        timeout_ms: 1_500,
        ..config(&aws)
    };
    let (g, _) = guard(&cfg).await;
    let start = Instant::now();
    let d = g.check("mary", &[], "s3a://datalake/defloc/x", W).await;
    let took = start.elapsed();
    assert!(
        !d.allow && d.outcome == hms_guard::decision::storage::StorageOutcome::Unavailable,
        "{d:?}"
    );
    assert!(
        took >= Duration::from_millis(1_000) && took < Duration::from_millis(2_000),
        "took {took:?}"
    );
}

#[tokio::test]
async fn s3_errors_are_retried_then_unavailable() {
    let aws = FakeAws::start().await;
    aws.with(|s| s.s3_status = Some(503));
    let cfg = StorageConfig {
        max_attempts: 3,
        ..config(&aws)
    };
    let (g, m) = guard(&cfg).await;
    let d = g.check("mary", &[], "s3a://datalake/defloc/x", W).await;
    assert!(
        !d.allow && d.outcome == hms_guard::decision::storage::StorageOutcome::Unavailable,
        "{d:?}"
    );
    assert!(d.reason.contains("503"), "{}", d.reason);
    assert_eq!(aws.s3_count(), 3);
    assert_eq!(
        metric_of(
            &m,
            r#"hms_guard_storage_probes_total{action="write",outcome="error"} "#
        ),
        3.0
    );
    // Not cached: once S3 is back, the next check allows.
    aws.with(|s| s.s3_status = None);
    assert!(
        g.check("mary", &[], "s3a://datalake/defloc/x", W)
            .await
            .allow
    );
    // A 4xx that is not a denial is not retried.
    aws.with(|s| s.s3_status = Some(404));
    let d = g.check("mary", &[], "s3a://datalake/defloc/other", W).await;
    assert!(
        d.outcome == hms_guard::decision::storage::StorageOutcome::Unavailable
            && d.reason.contains("1 attempt)"),
        "{d:?}"
    );
    assert_eq!(
        metric_of(
            &m,
            r#"hms_guard_storage_checks_total{action="write",outcome="unavailable",cached="false"} "#
        ),
        2.0
    );
}

/// `storage.method = "simulate"` against recorded-shape IAM replies (see the module comment:
/// moto does not implement SimulatePrincipalPolicy).
#[tokio::test]
async fn simulate_method() {
    let aws = FakeAws::start().await;
    let cfg = StorageConfig {
        method: StorageMethod::Simulate,
        ..config(&aws)
    };
    let (g, m) = guard(&cfg).await;
    let d = g.check("mary", &[], "s3a://datalake/defloc/x", W).await;
    assert!(d.allow, "{d:?}");
    assert!(
        d.reason
            .contains("IAM policy simulation allows s3:PutObject"),
        "{}",
        d.reason
    );
    let d = g
        .check("mary", &[], "s3a://datalake/datawarehouse/y", W)
        .await;
    assert!(
        !d.allow && d.outcome == hms_guard::decision::storage::StorageOutcome::Deny,
        "{d:?}"
    );
    assert!(d.reason.contains("implicitDeny for s3:PutObject on arn:aws:s3:::datalake/datawarehouse/y/_hms_guard_probe"), "{}", d.reason);
    let d = g.check("mary", &[], "s3a://datalake/defloc/x", R).await;
    assert!(d.allow, "{d:?}");
    let d = g.check("mary", &[], "s3a://partner-data/shared/", W).await;
    assert!(d.allow, "{d:?}");
    assert_eq!(aws.s3_count(), 0, "simulate makes no S3 call");

    let sims = aws.with(|s| s.simulations.clone());
    assert_eq!(sims.len(), 4);
    assert_eq!(sims[0]["PolicySourceArn"], DEFAULT);
    assert_eq!(sims[0]["ActionNames.member.1"], "s3:PutObject");
    assert_eq!(
        sims[0]["ResourceArns.member.1"],
        "arn:aws:s3:::datalake/defloc/x/_hms_guard_probe"
    );
    assert_eq!(sims[2]["ActionNames.member.1"], "s3:ListBucket");
    assert_eq!(sims[2]["ResourceArns.member.1"], "arn:aws:s3:::datalake");
    assert_eq!(
        sims[2]["ContextEntries.member.1.ContextKeyName"],
        "s3:prefix"
    );
    assert_eq!(
        sims[2]["ContextEntries.member.1.ContextKeyValues.member.1"],
        "defloc/x/"
    );
    assert_eq!(sims[2]["ContextEntries.member.1.ContextKeyType"], "string");
    assert_eq!(
        sims[3]["PolicySourceArn"], PARTNER,
        "the chain's last role is simulated"
    );
    assert_eq!(
        metric_of(
            &m,
            r#"hms_guard_storage_probes_total{action="write",outcome="deny"} "#
        ),
        1.0
    );
}

#[tokio::test]
async fn buckets_file_and_bad_config() {
    let aws = FakeAws::start().await;
    let dir = std::env::temp_dir().join(format!("hms-guard-storage-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("buckets.json");
    std::fs::write(
        &file,
        format!(r#"{{"partner-data": {{"role_arn": "{PARTNER}", "external_id": "right-id"}}}}"#),
    )
    .unwrap();
    let mut cfg = config(&aws);
    cfg.buckets.clear();
    cfg.buckets_file = file.display().to_string();
    let (g, _) = guard(&cfg).await;
    let d = g.check("mary", &[], "s3a://partner-data/shared/x", W).await;
    assert!(d.allow && d.role_chain.len() == 2, "{d:?}");

    std::fs::write(&file, r#"{"partner-data": {"role": "x"}}"#).unwrap();
    let err = StorageSettings::resolve(&cfg)
        .map_err(StorageError::from)
        .expect_err("bad file refused");
    assert!(err.to_string().contains("storage.buckets_file"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn config_from_toml() {
    let text = r#"
        [upstream]
        uris = ["thrift://127.0.0.1:9083"]
        [storage]
        method = "simulate"
        other_schemes = "allow"
        default_role = "arn:aws:iam::123456789012:role/account-default"
        session_duration_ms = 900000
        [storage.user_roles]
        mary = "arn:aws:iam::123456789012:role/etl"
        [storage.buckets.partner-data]
        role_arn = "arn:aws:iam::210987654321:role/subscriber"
        external_id = "right-id"
    "#;
    let c = hms_guard::config::Config::parse(text).unwrap();
    assert_eq!(c.storage.method, StorageMethod::Simulate);
    assert_eq!(c.storage.buckets["partner-data"].external_id, "right-id");
    assert!(c.storage.enabled);

    let bad = r#"
        [upstream]
        uris = ["thrift://127.0.0.1:9083"]
        [storage]
        default_role = "nope"
        refresh_before_ms = 99999999
        bogus = 1
    "#;
    let errors = hms_guard::config::Config::parse(bad).unwrap_err();
    let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
    assert!(keys.contains(&"storage.bogus"), "{keys:?}");
    assert!(keys.contains(&"storage.default_role"), "{keys:?}");
    assert!(keys.contains(&"storage.refresh_before_ms"), "{keys:?}");
}

#[tokio::test]
async fn a_default_place_is_listed_over_http_with_the_proxys_own_credentials() {
    use hms_guard::decision::storage::Occupancy;
    let aws = FakeAws::start().await;
    aws.state
        .lock()
        .unwrap()
        .objects
        .push("datalake/datawarehouse/sales.db/orders/part-0".into());
    let (g, m) = guard(&config(&aws)).await;
    assert_eq!(
        g.occupancy("s3a://datalake/datawarehouse/sales.db/orders")
            .await,
        Occupancy::Occupied
    );
    assert_eq!(
        g.occupancy("s3a://datalake/datawarehouse/sales.db/fresh")
            .await,
        Occupancy::Empty
    );
    let calls = aws.state.lock().unwrap().s3_calls.clone();
    assert_eq!(calls.len(), 2, "{calls:?}");
    for (method, path_q, key) in &calls {
        assert_eq!((method.as_str(), key.as_str()), ("GET", PROXY_KEY));
        assert!(
            path_q.contains("list-type=2") && path_q.contains("max-keys=1"),
            "{path_q}"
        );
    }
    assert!(
        calls[0]
            .1
            .contains("prefix=datawarehouse%2Fsales.db%2Forders%2F"),
        "{:?}",
        calls[0]
    );
    assert!(aws.state.lock().unwrap().assumes.is_empty());
    // S3 failing: unavailable after the bounded retries.
    aws.state.lock().unwrap().s3_status = Some(503);
    match g.occupancy("s3a://datalake/datawarehouse/sales.db/t").await {
        Occupancy::Unavailable(why) => assert!(why.contains("503"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        metric_of(&m, r#"hms_guard_storage_listings_total{outcome="error"} "#),
        1.0
    );
}
