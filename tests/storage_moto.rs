//! Storage checks against a real moto server (the AWS stand-in of tests/lab/moto_lab.py) over
//! HTTP, IAM enforcement on: STS AssumeRole (with trust policies and external ids), S3
//! multipart uploads and listings evaluated by moto against the seeded IAM policies.
//!
//! One moto serves the whole test binary: `bash tests/lab/setup.sh` (cached venv) then
//! `python tests/lab/moto_lab.py run --watch-stdin`, which prints the seeded facts as one JSON
//! line and exits when this process's pipe to it closes. If moto cannot be started the tests
//! fail; they never skip.

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::metric_of;
use hms_guard::decision::storage::config::StorageSettings;
use hms_guard::decision::storage::{
    BaseCredentials, BucketRole, StorageAction, StorageConfig, StorageGuard,
};
use hms_guard::ops::metrics::Metrics;
use serde_json::Value;

const W: StorageAction = StorageAction::Write;
const R: StorageAction = StorageAction::Read;
const START_TIMEOUT: Duration = Duration::from_secs(120);

struct Moto {
    facts: Value,
    // Kept for the life of the test process: moto exits when the pipe closes.
    _child: Mutex<Child>,
    _stdin: Mutex<ChildStdin>,
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn venv_python() -> PathBuf {
    let cache = std::env::var_os("HMS_GUARD_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/hms-guard")
        });
    cache.join("venv/bin/python")
}

fn start_moto() -> Result<Moto, String> {
    let setup = Command::new("bash")
        .arg(repo().join("tests/lab/setup.sh"))
        .status()
        .map_err(|e| format!("cannot run tests/lab/setup.sh: {e}"))?;
    if !setup.success() {
        return Err(format!("tests/lab/setup.sh failed ({setup})"));
    }
    let mut child = Command::new(venv_python())
        .arg(repo().join("tests/lab/moto_lab.py"))
        .args(["run", "--watch-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", venv_python().display()))?;
    let stdin = child.stdin.take().expect("piped stdin");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = match rx.recv_timeout(START_TIMEOUT) {
        Ok(l) if !l.trim().is_empty() => l,
        Ok(_) => {
            let _ = child.kill();
            return Err(format!(
                "moto exited before it was ready ({:?})",
                child.wait()
            ));
        }
        Err(_) => {
            let _ = child.kill();
            return Err(format!("moto not ready within {START_TIMEOUT:?}"));
        }
    };
    let facts: Value =
        serde_json::from_str(&line).map_err(|e| format!("bad facts line {line:?}: {e}"))?;
    if let Some(e) = facts.get("error") {
        let _ = child.kill();
        return Err(format!("moto lab failed to start: {e}"));
    }
    Ok(Moto {
        facts,
        _child: Mutex::new(child),
        _stdin: Mutex::new(stdin),
    })
}

fn moto() -> &'static Moto {
    static LAB: OnceLock<Result<Moto, String>> = OnceLock::new();
    match LAB.get_or_init(start_moto) {
        Ok(m) => m,
        Err(e) => panic!("moto is required for this test and could not be started: {e}"),
    }
}

fn s(v: &Value, path: &[&str]) -> String {
    let mut cur = v;
    for p in path {
        cur = &cur[*p];
    }
    cur.as_str()
        .unwrap_or_else(|| panic!("facts lack {path:?}"))
        .to_string()
}

fn config() -> StorageConfig {
    let f = &moto().facts;
    StorageConfig {
        endpoint_url: s(f, &["endpoint"]),
        region: s(f, &["region"]),
        default_role: s(f, &["roles", "account_default"]),
        user_roles: [("etl-bot".to_string(), s(f, &["roles", "etl"]))].into(),
        buckets: [(
            s(f, &["buckets", "partner"]),
            BucketRole {
                role_arn: s(f, &["roles", "subscriber"]),
                external_id: s(f, &["external_id"]),
            },
        )]
        .into(),
        ..Default::default()
    }
}

/// The proxy runs as the compute identity (the sidecar case: the pod's one broad role).
async fn guard(cfg: &StorageConfig) -> (StorageGuard, Arc<Metrics>) {
    let f = &moto().facts;
    let m = Arc::new(Metrics::new());
    let g = StorageGuard::with_credentials(
        &StorageSettings::resolve(cfg).unwrap(),
        m.clone(),
        Some(BaseCredentials {
            access_key_id: s(f, &["compute", "access_key_id"]),
            secret_access_key: s(f, &["compute", "secret_access_key"]),
            session_token: None,
        }),
    )
    .await;
    (g, m)
}

#[tokio::test]
async fn default_role_may_write_defloc_but_not_the_warehouse() {
    let (g, m) = guard(&config()).await;
    let default_role = s(&moto().facts, &["roles", "account_default"]);

    let d = g.check("mary", &[], "s3a://datalake/defloc/x", W).await;
    assert!(d.allow, "{d:?}");
    assert_eq!(
        d.outcome,
        hms_guard::decision::storage::StorageOutcome::Allow
    );
    assert_eq!(d.role_chain, vec![default_role.clone()]);
    assert!(
        g.check("mary", &[], "s3a://datalake/temp/t1/", W)
            .await
            .allow
    );

    let d = g
        .check("mary", &[], "s3a://datalake/datawarehouse/y", W)
        .await;
    assert!(!d.allow, "{d:?}");
    assert_eq!(
        d.outcome,
        hms_guard::decision::storage::StorageOutcome::Deny
    );
    for want in [
        "user mary",
        "may not write",
        "s3a://datalake/datawarehouse/y/",
        default_role.as_str(),
        "storage.default_role",
        "403",
    ] {
        assert!(d.reason.contains(want), "`{want}` not in: {}", d.reason);
    }
    // The proxy's own (compute) identity may write there: the check ran as the user's role.
    let d = g
        .check("etl-bot", &[], "s3a://datalake/datawarehouse/y", W)
        .await;
    assert!(d.allow, "the etl role may: {d:?}");
    assert_eq!(
        metric_of(
            &m,
            r#"hms_guard_storage_sts_calls_total{hop="user",outcome="ok"} "#
        ),
        2.0,
        "one AssumeRole per user session"
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
async fn reads_are_checked_with_list_objects() {
    let (g, _) = guard(&config()).await;
    assert!(
        g.check("mary", &[], "s3a://datalake/defloc/x", R)
            .await
            .allow
    );
    // The default role has no s3:ListBucket on the archive bucket.
    let d = g.check("mary", &[], "s3://archive/2020/", R).await;
    assert!(
        !d.allow && d.outcome == hms_guard::decision::storage::StorageOutcome::Deny,
        "{d:?}"
    );
    assert!(d.reason.contains("ListObjectsV2"), "{}", d.reason);
}

#[tokio::test]
async fn cross_account_bucket_role_needs_the_right_external_id() {
    let f = &moto().facts;
    let (g, m) = guard(&config()).await;
    let d = g.check("mary", &[], "s3a://partner-data/shared/x", W).await;
    assert!(d.allow, "{d:?}");
    assert_eq!(
        d.role_chain,
        vec![
            s(f, &["roles", "account_default"]),
            s(f, &["roles", "subscriber"])
        ]
    );
    assert!(
        g.check("mary", &[], "s3a://partner-data/shared/", R)
            .await
            .allow
    );
    assert_eq!(
        metric_of(
            &m,
            r#"hms_guard_storage_sts_calls_total{hop="bucket",outcome="ok"} "#
        ),
        1.0
    );

    let mut cfg = config();
    cfg.buckets.get_mut("partner-data").unwrap().external_id = "not-the-id".into();
    let (g, m) = guard(&cfg).await;
    let d = g.check("mary", &[], "s3a://partner-data/shared/x", W).await;
    assert!(
        !d.allow && d.outcome == hms_guard::decision::storage::StorageOutcome::Deny,
        "{d:?}"
    );
    assert!(
        d.reason.contains("STS refused") && d.reason.contains(&s(f, &["roles", "subscriber"])),
        "{}",
        d.reason
    );
    assert_eq!(
        metric_of(
            &m,
            r#"hms_guard_storage_sts_calls_total{hop="bucket",outcome="denied"} "#
        ),
        1.0
    );
    // Without the bucket mapping the user's own role has no access to the partner's bucket.
    let mut cfg = config();
    cfg.buckets.clear();
    let (g, _) = guard(&cfg).await;
    assert!(
        !g.check("mary", &[], "s3a://partner-data/shared/x", W)
            .await
            .allow
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assume_role_calls_follow_the_refresh_policy() {
    let cfg = StorageConfig {
        session_duration_ms: 2_000,
        refresh_before_ms: 800,
        decision_ttl_ms: 0, // every check probes S3 with the cached credentials
        ..config()
    };
    let (g, m) = guard(&cfg).await;
    // Concurrent first checks: one AssumeRole.
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let g = g.clone();
        tasks.push(tokio::spawn(async move {
            g.check("carol", &[], "s3a://datalake/defloc/c", W).await
        }));
    }
    for t in tasks {
        let d = t.await.unwrap();
        assert!(d.allow, "{d:?}");
    }
    let sts = |m: &Metrics| {
        metric_of(
            m,
            r#"hms_guard_storage_sts_calls_total{hop="user",outcome="ok"} "#,
        )
    };
    assert_eq!(sts(&m), 1.0, "16 concurrent checks, one AssumeRole");

    // A run of checks over 4.5 s: renewed every 2.0 - 0.8 (- up to 0.08 jitter) s.
    let start = Instant::now();
    let mut checks = 0;
    while start.elapsed() < Duration::from_millis(4_500) {
        let d = g.check("carol", &[], "s3a://datalake/defloc/c", W).await;
        assert!(d.allow, "{d:?}");
        checks += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let calls = sts(&m);
    assert!(
        (4.0..=5.0).contains(&calls),
        "{calls} AssumeRole calls over {checks} checks"
    );
    assert_eq!(
        metric_of(
            &m,
            r#"hms_guard_storage_credential_refreshes_total{outcome="ok"} "#
        ),
        calls
    );
}

#[tokio::test]
async fn endpoint_down_denies_quickly() {
    // First a working check through moto, then the same configuration pointed at a port
    // nothing listens on, and at a peer that accepts and never answers.
    let (g, _) = guard(&config()).await;
    assert!(
        g.check("mary", &[], "s3a://datalake/defloc/x", W)
            .await
            .allow
    );

    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let cfg = StorageConfig {
        endpoint_url: format!("http://{dead}"),
        timeout_ms: 2_000,
        ..config()
    };
    let (g, m) = guard(&cfg).await;
    let start = Instant::now();
    let d = g.check("mary", &[], "s3a://datalake/defloc/x", W).await;
    assert!(
        !d.allow && d.outcome == hms_guard::decision::storage::StorageOutcome::Unavailable,
        "{d:?}"
    );
    assert!(
        d.reason.starts_with("storage check unavailable: "),
        "{}",
        d.reason
    );
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(
        metric_of(
            &m,
            r#"hms_guard_storage_checks_total{action="write",outcome="unavailable",cached="false"} "#
        ),
        1.0
    );

    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((c, _)) = silent.accept().await {
            conns.push(c);
        }
    });
    let cfg = StorageConfig {
        endpoint_url: format!("http://{addr}"),
        timeout_ms: 1_500,
        ..config()
    };
    let (g, _) = guard(&cfg).await;
    let start = Instant::now();
    let d = g.check("mary", &[], "s3a://datalake/defloc/x", W).await;
    let took = start.elapsed();
    assert!(
        !d.allow && d.outcome == hms_guard::decision::storage::StorageOutcome::Unavailable,
        "{d:?}"
    );
    assert!(took < Duration::from_millis(2_000), "{took:?}");
    held.abort();
}

/// The added latency of a storage check, for the closing note: run with `--nocapture`.
#[tokio::test]
async fn latency_of_cached_and_uncached_checks() {
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    // Uncached, cold: a new user each time (AssumeRole + CreateMultipartUpload + Abort).
    let cfg = StorageConfig {
        decision_ttl_ms: 0,
        ..config()
    };
    let (g, _) = guard(&cfg).await;
    let mut cold = Vec::new();
    for i in 0..20 {
        let t = Instant::now();
        assert!(
            g.check(&format!("u{i}"), &[], "s3a://datalake/defloc/l", W)
                .await
                .allow
        );
        cold.push(t.elapsed());
    }
    // Uncached decision, warm credentials: the probe only.
    let mut warm = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        assert!(g.check("u0", &[], "s3a://datalake/defloc/l", W).await.allow);
        warm.push(t.elapsed());
    }
    // Cached decision.
    let (g, _) = guard(&config()).await;
    assert!(g.check("u0", &[], "s3a://datalake/defloc/l", W).await.allow);
    let mut cached = Vec::new();
    for _ in 0..1000 {
        let t = Instant::now();
        let d = g.check("u0", &[], "s3a://datalake/defloc/l", W).await;
        cached.push(t.elapsed());
        assert!(d.allow && d.cached);
    }
    let (cold, warm, cached) = (median(cold), median(warm), median(cached));
    eprintln!(
        "storage check latency (median, moto on loopback, this build): uncached with AssumeRole {cold:?}; uncached with cached credentials {warm:?}; cached decision {cached:?}"
    );
    assert!(
        cached < Duration::from_millis(1),
        "cached check took {cached:?}"
    );
}

/// An S3 client as the compute identity (full access to s3://datalake/datawarehouse/), to put
/// objects where a default place lies.
async fn compute_s3() -> aws_sdk_s3::Client {
    let f = &moto().facts;
    let creds = aws_sdk_s3::config::Credentials::new(
        s(f, &["compute", "access_key_id"]),
        s(f, &["compute", "secret_access_key"]),
        None,
        None,
        "test",
    );
    let conf = aws_sdk_s3::config::Builder::new()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new(s(f, &["region"])))
        .endpoint_url(s(f, &["endpoint"]))
        .credentials_provider(creds)
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

#[tokio::test]
async fn a_default_place_is_listed_with_the_proxys_own_identity() {
    use hms_guard::decision::storage::Occupancy;
    let (g, m) = guard(&config()).await;
    let base = format!("datawarehouse/occupancy-{}", std::process::id());
    compute_s3()
        .await
        .put_object()
        .bucket("datalake")
        .key(format!("{base}/sales.db/orders/part-00000"))
        .body(b"1\n".to_vec().into())
        .send()
        .await
        .expect("put as compute");
    let place = |t: &str| format!("s3a://datalake/{base}/sales.db/{t}");
    // Under the protected area, where the user's own role may not even list: the proxy's
    // identity lists it.
    assert_eq!(g.occupancy(&place("orders")).await, Occupancy::Occupied);
    assert_eq!(g.occupancy(&place("orders/")).await, Occupancy::Occupied);
    assert_eq!(g.occupancy(&place("fresh")).await, Occupancy::Empty);
    // A sibling whose name begins the same is another place.
    assert_eq!(g.occupancy(&place("order")).await, Occupancy::Empty);
    assert_eq!(
        metric_of(
            &m,
            r#"hms_guard_storage_listings_total{outcome="occupied"} "#
        ),
        2.0
    );
    assert_eq!(
        metric_of(
            &m,
            r#"hms_guard_storage_sts_calls_total{hop="user",outcome="ok"} "#
        ),
        0.0,
        "no role assumed: the proxy's own identity"
    );
    // A listing that fails (here a bucket the proxy may not list): unavailable, which the
    // caller turns into a denial, with the reason.
    match g.occupancy("s3a://no-such-bucket-here/x/t").await {
        Occupancy::Unavailable(why) => assert!(why.contains("403"), "{why}"),
        other => panic!("{other:?}"),
    }
    // What a create at a default place costs: one listing.
    let mut took = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        assert_eq!(g.occupancy(&place("fresh")).await, Occupancy::Empty);
        took.push(t.elapsed());
    }
    took.sort();
    eprintln!(
        "default place listing latency (median of 20, moto on loopback, this build): {:?}",
        took[10]
    );
}
