//! Decision-level tests over a scripted AWS (no network); the real SDK path is covered by
//! tests/storage.rs (a local fake AWS over HTTP) and tests/storage_moto.rs (moto).

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use super::aws::{AwsError, BoxFut, SessionCreds, Simulated};
use super::config::StorageSettings;
use super::*;

const DEFAULT: &str = "arn:aws:iam::123456789012:role/account-default";
const ETL: &str = "arn:aws:iam::123456789012:role/etl";
const PARTNER: &str = "arn:aws:iam::210987654321:role/subscriber";

/// Scripted AWS: a role may assume a role if `trust` has (role, external id); a role may
/// read/write `bucket/prefix*` if `grants` has a matching (role, action, bucket/prefix).
#[derive(Default)]
struct Scripted {
    grants: Vec<(&'static str, StorageAction, &'static str)>,
    trust_external_id: Option<&'static str>,
    /// Every call fails like an unreachable endpoint.
    down: bool,
    /// Objects stored (`bucket/key`), for listings with the proxy's own identity.
    objects: Vec<&'static str>,
    list_calls: AtomicUsize,
    assume_calls: AtomicUsize,
    probe_calls: AtomicUsize,
    aborts: Mutex<HashSet<String>>,
}

impl Scripted {
    fn role_of(creds: &SessionCreds) -> &str {
        creds.access_key_id.split('|').next().unwrap_or_default()
    }

    fn allowed(&self, role: &str, action: StorageAction, bucket: &str, key: &str) -> bool {
        let path = format!("{bucket}/{key}");
        self.grants
            .iter()
            .any(|(r, a, p)| *r == role && *a == action && path.starts_with(p))
    }
}

impl Backend for Scripted {
    fn assume_role<'a>(
        &'a self,
        via: Option<&'a SessionCreds>,
        role_arn: &'a str,
        external_id: Option<&'a str>,
        session_name: &'a str,
        _duration: Duration,
    ) -> BoxFut<'a, Result<SessionCreds, AwsError>> {
        Box::pin(async move {
            self.assume_calls.fetch_add(1, Ordering::SeqCst);
            if self.down {
                return Err(AwsError::Transient("connection refused".into()));
            }
            if role_arn == PARTNER && (via.is_none() || external_id != self.trust_external_id) {
                return Err(AwsError::Denied(
                    "STS AssumeRole: HTTP 403 AccessDenied".into(),
                ));
            }
            Ok(SessionCreds {
                access_key_id: format!("{role_arn}|{session_name}"),
                secret_access_key: "s".into(),
                session_token: "t".into(),
                valid_for: Duration::from_secs(3600),
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
            self.probe_calls.fetch_add(1, Ordering::SeqCst);
            if self.down {
                return Err(AwsError::Transient("connection refused".into()));
            }
            if self.allowed(Self::role_of(creds), StorageAction::Read, bucket, prefix) {
                Ok(())
            } else {
                Err(AwsError::Denied(
                    "S3 ListObjectsV2: HTTP 403 AccessDenied".into(),
                ))
            }
        })
    }

    fn any_object<'a>(
        &'a self,
        bucket: &'a str,
        prefix: &'a str,
    ) -> BoxFut<'a, Result<bool, AwsError>> {
        Box::pin(async move {
            self.list_calls.fetch_add(1, Ordering::SeqCst);
            if self.down {
                return Err(AwsError::Transient("connection refused".into()));
            }
            let under = format!("{bucket}/{prefix}");
            Ok(self.objects.iter().any(|o| o.starts_with(&under)))
        })
    }

    fn start_upload<'a>(
        &'a self,
        creds: &'a SessionCreds,
        bucket: &'a str,
        key: &'a str,
    ) -> BoxFut<'a, Result<String, AwsError>> {
        Box::pin(async move {
            self.probe_calls.fetch_add(1, Ordering::SeqCst);
            if self.down {
                return Err(AwsError::Transient("connection refused".into()));
            }
            if self.allowed(Self::role_of(creds), StorageAction::Write, bucket, key) {
                Ok(format!("upload-of-{key}"))
            } else {
                Err(AwsError::Denied(
                    "S3 CreateMultipartUpload: HTTP 403 AccessDenied".into(),
                ))
            }
        })
    }

    fn abort_upload<'a>(
        &'a self,
        _creds: &'a SessionCreds,
        _bucket: &'a str,
        key: &'a str,
        upload_id: &'a str,
    ) -> BoxFut<'a, Result<(), AwsError>> {
        Box::pin(async move {
            assert_eq!(upload_id, format!("upload-of-{key}"));
            self.aborts.lock().unwrap().insert(key.to_string());
            Ok(())
        })
    }

    fn simulate<'a>(
        &'a self,
        _: &'a SessionCreds,
        _: &'a str,
        _: &'a str,
        _: &'a str,
        _: Option<&'a str>,
    ) -> BoxFut<'a, Result<Simulated, AwsError>> {
        Box::pin(async { Err(AwsError::Failed("not scripted".into())) })
    }
}

fn scripted() -> Scripted {
    Scripted {
        grants: vec![
            (DEFAULT, StorageAction::Write, "datalake/defloc/"),
            (DEFAULT, StorageAction::Read, "datalake/defloc/"),
            (DEFAULT, StorageAction::Write, "datalake/temp/"),
            (ETL, StorageAction::Write, "datalake/datawarehouse/"),
            (PARTNER, StorageAction::Write, "partner-data/"),
        ],
        trust_external_id: Some("right"),
        ..Default::default()
    }
}

fn config() -> StorageConfig {
    StorageConfig {
        user_roles: [("etl-bot".into(), ETL.into())].into(),
        group_roles: [("etl".into(), ETL.into())].into(),
        default_role: DEFAULT.into(),
        buckets: [(
            "partner-data".into(),
            BucketRole {
                role_arn: PARTNER.into(),
                external_id: "right".into(),
            },
        )]
        .into(),
        ..Default::default()
    }
}

fn guard(cfg: &StorageConfig, aws: Arc<Scripted>) -> (StorageGuard, Arc<Metrics>) {
    let m = Arc::new(Metrics::new());
    let settings = StorageSettings::resolve(cfg).unwrap();
    (StorageGuard::with_backend(&settings, m.clone(), aws), m)
}

#[tokio::test]
async fn default_role_allowed_and_denied_with_clear_messages() {
    let aws = Arc::new(scripted());
    let (g, m) = guard(&config(), aws.clone());
    let d = g
        .check("mary", &[], "s3a://datalake/defloc/x", StorageAction::Write)
        .await;
    assert!(d.allow, "{d:?}");
    assert_eq!(d.outcome, StorageOutcome::Allow);
    assert_eq!(d.role_chain, vec![DEFAULT.to_string()]);
    assert_eq!(d.action, "write");
    assert!(!d.cached);
    assert!(d.reason.contains("mary") && d.reason.contains("s3a://datalake/defloc/x/"));
    assert!(d.reason.contains("storage.default_role"), "{}", d.reason);
    assert_eq!(
        aws.aborts.lock().unwrap().len(),
        1,
        "the probe's upload is aborted"
    );
    assert!(aws
        .aborts
        .lock()
        .unwrap()
        .iter()
        .all(|k| k.starts_with("defloc/x/_hms_guard_probe_")));

    let d = g
        .check(
            "mary",
            &[],
            "s3a://datalake/datawarehouse/y",
            StorageAction::Write,
        )
        .await;
    assert!(!d.allow);
    assert_eq!(d.outcome, StorageOutcome::Deny);
    for want in [
        "mary",
        "may not write",
        "s3a://datalake/datawarehouse/y/",
        DEFAULT,
        "403",
    ] {
        assert!(d.reason.contains(want), "{want} not in {}", d.reason);
    }
    let text = m.encode();
    assert!(text.contains(
        r#"hms_guard_storage_checks_total{action="write",outcome="deny",cached="false"} 1"#
    ));
    assert!(text.contains(r#"hms_guard_storage_probes_total{action="write",outcome="allow"} 1"#));
    assert!(text.contains("hms_guard_storage_check_duration_seconds_count 2"));
}

#[tokio::test]
async fn user_and_group_roles_win_over_the_default() {
    let aws = Arc::new(scripted());
    let (g, _) = guard(&config(), aws);
    let loc = "s3://datalake/datawarehouse/sales";
    let d = g.check("etl-bot", &[], loc, StorageAction::Write).await;
    assert!(d.allow && d.reason.contains("storage.user_roles"), "{d:?}");
    let d = g
        .check(
            "joe",
            &["staff".into(), "etl".into()],
            loc,
            StorageAction::Write,
        )
        .await;
    assert!(d.allow && d.reason.contains("group etl"), "{d:?}");
    assert_eq!(d.role_chain, vec![ETL.to_string()]);
}

#[tokio::test]
async fn no_role_denies() {
    let aws = Arc::new(scripted());
    let (g, _) = guard(&StorageConfig::default(), aws.clone());
    assert!(g.enabled());
    let d = g
        .check(
            "mary",
            &["bi".into()],
            "s3a://datalake/defloc/x",
            StorageAction::Write,
        )
        .await;
    assert!(!d.allow);
    assert!(
        d.reason
            .starts_with("no storage role for user mary (groups bi)"),
        "{}",
        d.reason
    );
    assert_eq!(aws.assume_calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn other_schemes_and_bad_locations() {
    let aws = Arc::new(scripted());
    let (g, _) = guard(&config(), aws.clone());
    let d = g
        .check("mary", &[], "hdfs://nn/warehouse/x", StorageAction::Write)
        .await;
    assert!(!d.allow && d.outcome == StorageOutcome::Deny);
    assert!(
        d.reason.contains("storage.other_schemes = \"allow\""),
        "{}",
        d.reason
    );
    let d = g
        .check("mary", &[], "/warehouse/x", StorageAction::Write)
        .await;
    assert!(!d.allow && d.reason.contains("no scheme"), "{}", d.reason);
    let d = g
        .check(
            "mary",
            &[],
            "s3a://datalake/defloc/../datawarehouse/x",
            StorageAction::Write,
        )
        .await;
    assert!(
        !d.allow && d.reason.contains("invalid location"),
        "{}",
        d.reason
    );

    let cfg = StorageConfig {
        other_schemes: OtherSchemes::Allow,
        ..config()
    };
    let (g, m) = guard(&cfg, aws.clone());
    let d = g
        .check("mary", &[], "hdfs://nn/warehouse/x", StorageAction::Write)
        .await;
    assert!(
        d.allow && d.outcome == StorageOutcome::NotS3Allowed,
        "{d:?}"
    );
    assert_eq!(aws.assume_calls.load(Ordering::SeqCst), 0, "no AWS call");
    assert!(m.encode().contains(
        r#"hms_guard_storage_checks_total{action="write",outcome="allow",cached="false"} 1"#
    ));
}

#[tokio::test]
async fn cross_account_external_id() {
    let aws = Arc::new(scripted());
    let (g, _) = guard(&config(), aws.clone());
    let d = g
        .check(
            "mary",
            &[],
            "s3a://partner-data/shared/x",
            StorageAction::Write,
        )
        .await;
    assert!(d.allow, "{d:?}");
    assert_eq!(d.role_chain, vec![DEFAULT.to_string(), PARTNER.to_string()]);

    let mut cfg = config();
    cfg.buckets.get_mut("partner-data").unwrap().external_id = "wrong".into();
    let (g, _) = guard(&cfg, aws);
    let d = g
        .check(
            "mary",
            &[],
            "s3a://partner-data/shared/x",
            StorageAction::Write,
        )
        .await;
    assert!(!d.allow && d.outcome == StorageOutcome::Deny, "{d:?}");
    assert!(
        d.reason.contains(PARTNER) && d.reason.contains("STS refused"),
        "{}",
        d.reason
    );
}

#[tokio::test]
async fn decisions_are_cached_per_chain_bucket_prefix_action() {
    let aws = Arc::new(scripted());
    let (g, m) = guard(&config(), aws.clone());
    let w = StorageAction::Write;
    let first = g.check("mary", &[], "s3a://datalake/defloc/x", w).await;
    let again = g.check("mary", &[], "s3://datalake/defloc/x/", w).await;
    let other_user = g.check("bob", &[], "s3n://datalake/defloc/x", w).await;
    assert!(!first.cached && again.cached && other_user.cached);
    assert!(
        other_user.reason.contains("bob"),
        "the reason names the caller"
    );
    assert_eq!(aws.probe_calls.load(Ordering::SeqCst), 1);
    // Another action, prefix or chain: a new decision.
    g.check("mary", &[], "s3a://datalake/defloc/x", StorageAction::Read)
        .await;
    g.check("mary", &[], "s3a://datalake/defloc/y", w).await;
    g.check("etl-bot", &[], "s3a://datalake/defloc/x", w).await;
    assert_eq!(aws.probe_calls.load(Ordering::SeqCst), 4);
    let text = m.encode();
    assert!(
        text.contains(r#"hms_guard_cache_lookups_total{cache="storage_decisions",result="hit"} 2"#)
    );
    assert!(text.contains(
        r#"hms_guard_storage_checks_total{action="write",outcome="allow",cached="true"} 2"#
    ));

    let cfg = StorageConfig {
        decision_ttl_ms: 0,
        ..config()
    };
    let aws = Arc::new(scripted());
    let (g, _) = guard(&cfg, aws.clone());
    for _ in 0..3 {
        assert!(
            !g.check("mary", &[], "s3a://datalake/defloc/x", w)
                .await
                .cached
        );
    }
    assert_eq!(aws.probe_calls.load(Ordering::SeqCst), 3);
    assert_eq!(
        aws.assume_calls.load(Ordering::SeqCst),
        1,
        "credentials still cached"
    );
}

#[tokio::test]
async fn decision_ttl_expires() {
    let aws = Arc::new(scripted());
    let cfg = StorageConfig {
        decision_ttl_ms: 400,
        ..config()
    };
    let (g, _) = guard(&cfg, aws.clone());
    let w = StorageAction::Write;
    g.check("mary", &[], "s3a://datalake/defloc/x", w).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        g.check("mary", &[], "s3a://datalake/defloc/x", w)
            .await
            .cached
    );
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert!(
        !g.check("mary", &[], "s3a://datalake/defloc/x", w)
            .await
            .cached
    );
    assert_eq!(aws.probe_calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn down_fails_closed_with_bounded_retries() {
    let aws = Arc::new(Scripted {
        down: true,
        ..scripted()
    });
    let cfg = StorageConfig {
        timeout_ms: 2_000,
        max_attempts: 3,
        ..config()
    };
    let (g, m) = guard(&cfg, aws.clone());
    let start = Instant::now();
    let d = g
        .check("mary", &[], "s3a://datalake/defloc/x", StorageAction::Write)
        .await;
    assert!(
        !d.allow && d.outcome == StorageOutcome::Unavailable,
        "{d:?}"
    );
    assert!(
        d.reason.starts_with("storage check unavailable: "),
        "{}",
        d.reason
    );
    assert!(d.reason.contains("3 attempts"), "{}", d.reason);
    assert!(Instant::now() - start < Duration::from_secs(2));
    assert_eq!(aws.assume_calls.load(Ordering::SeqCst), 3);
    // Not cached: the next check asks again.
    let d = g
        .check("mary", &[], "s3a://datalake/defloc/x", StorageAction::Write)
        .await;
    assert!(!d.allow && !d.cached);
    assert_eq!(aws.assume_calls.load(Ordering::SeqCst), 6);
    assert!(m.encode().contains(
        r#"hms_guard_storage_checks_total{action="write",outcome="unavailable",cached="false"} 2"#
    ));
}

#[tokio::test]
async fn disabled_allows_without_looking() {
    let aws = Arc::new(scripted());
    let cfg = StorageConfig {
        enabled: false,
        ..StorageConfig::default()
    };
    let (g, _) = guard(&cfg, aws.clone());
    assert!(!g.enabled());
    let d = g
        .check("mary", &[], "hdfs://x/y", StorageAction::Write)
        .await;
    assert!(d.allow && d.outcome == StorageOutcome::Disabled);
    assert_eq!(aws.assume_calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_default_place_is_listed_with_the_proxys_identity() {
    let aws = Arc::new(Scripted {
        // Another table's files under this database's directory; an old table's leftovers.
        objects: vec![
            "datalake/datawarehouse/sales.db/orders/part-0",
            "datalake/datawarehouse/sales.db/gone/000000_0",
        ],
        ..scripted()
    });
    let (g, m) = guard(&config(), aws.clone());
    for (place, want) in [
        (
            "s3a://datalake/datawarehouse/sales.db/fresh",
            Occupancy::Empty,
        ),
        (
            "s3a://datalake/datawarehouse/sales.db/orders",
            Occupancy::Occupied,
        ),
        (
            "s3://datalake/datawarehouse/sales.db/gone/",
            Occupancy::Occupied,
        ),
        // A sibling whose name begins the same is not the place.
        (
            "s3a://datalake/datawarehouse/sales.db/order",
            Occupancy::Empty,
        ),
        ("hdfs://nn/warehouse/sales.db/orders", Occupancy::NotS3),
        ("file:/warehouse/sales.db/orders", Occupancy::NotS3),
    ] {
        assert_eq!(g.occupancy(place).await, want, "{place}");
    }
    // One listing per S3 place, no STS call (the proxy's own identity), nothing cached.
    assert_eq!(aws.list_calls.load(Ordering::SeqCst), 4);
    assert_eq!(aws.assume_calls.load(Ordering::SeqCst), 0);
    g.occupancy("s3a://datalake/datawarehouse/sales.db/fresh")
        .await;
    assert_eq!(aws.list_calls.load(Ordering::SeqCst), 5);
    assert!(matches!(
        g.occupancy("s3a://datalake/datawarehouse/../x").await,
        Occupancy::Unavailable(m) if m.contains("invalid location")
    ));
    let text = m.encode();
    assert!(
        text.contains(r#"hms_guard_storage_listings_total{outcome="occupied"} 2"#),
        "{text}"
    );
    assert!(text.contains(r#"hms_guard_storage_listings_total{outcome="empty"} 3"#));
}

#[tokio::test]
async fn a_failed_listing_is_unavailable() {
    let aws = Arc::new(Scripted {
        down: true,
        ..scripted()
    });
    let cfg = StorageConfig {
        timeout_ms: 300,
        ..config()
    };
    let (g, m) = guard(&cfg, aws.clone());
    match g.occupancy("s3a://datalake/datawarehouse/sales.db/t").await {
        Occupancy::Unavailable(why) => {
            assert!(
                why.contains("s3a://datalake/datawarehouse/sales.db/t/")
                    && why.contains("own identity")
                    && why.contains("connection refused"),
                "{why}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(aws.list_calls.load(Ordering::SeqCst) >= 1);
    assert!(m
        .encode()
        .contains(r#"hms_guard_storage_listings_total{outcome="error"} 1"#));
}

#[test]
fn under() {
    assert!(location_is_under("s3a://bk1/t/p=1", "s3://bk1/t"));
    assert!(location_is_under("s3a://bk1/t", "s3a://bk1/t/"));
    assert!(!location_is_under("s3a://bk1/tx/p=1", "s3a://bk1/t"));
    assert!(!location_is_under("s3a://bk2/t/p=1", "s3a://bk1/t"));
    assert!(!location_is_under("s3a://bk1/t/../u", "s3a://bk1/t"));
    // Every scheme, canonically (src/storage/location.rs has the table per scheme).
    assert!(location_is_under("hdfs://NN/t/p", "hdfs://nn/t"));
    assert!(location_is_under("file:///w/t/m.json", "file:/w/t"));
    assert!(!location_is_under("file:/w/t/../u", "file:/w/t"));
    assert!(!location_is_under("/w/t/p", "/w/t"));
}

#[test]
fn default_table_location_is_exact() {
    use super::is_default_table_location as default;
    let db = "s3a://lake/warehouse/sales.db";
    assert!(default(
        "s3a://lake/warehouse/sales.db/orders",
        db,
        "orders"
    ));
    assert!(default(
        "s3://lake/warehouse/sales.db/orders/",
        db,
        "Orders"
    ));
    assert!(default(
        "s3a://lake/warehouse/sales.db/orders",
        &format!("{db}/"),
        "orders"
    ));
    // Under the database, but not the table's own place.
    assert!(!default(
        "s3a://lake/warehouse/sales.db/other",
        db,
        "orders"
    ));
    assert!(!default(
        "s3a://lake/warehouse/sales.db/orders/x",
        db,
        "orders"
    ));
    assert!(!default("s3a://lake/warehouse/sales.db", db, "orders"));
    // A database at the bucket root does not make the bucket a default place.
    assert!(!default("s3a://lake/secret", "s3a://lake", "orders"));
    assert!(default("s3a://lake/orders", "s3a://lake", "orders"));
    // Climbing out, other buckets, other schemes.
    assert!(!default(
        "s3a://lake/warehouse/sales.db/../x/orders",
        db,
        "orders"
    ));
    assert!(!default(
        "s3a://other/warehouse/sales.db/orders",
        db,
        "orders"
    ));
    // Every scheme, canonically: Hadoop's `file:/x` is `file:///x`.
    assert!(default(
        "file:///warehouse/sales.db/orders",
        "file:/warehouse/sales.db",
        "orders"
    ));
    assert!(!default(
        "hdfs://nn:8020/warehouse/sales.db/orders",
        "hdfs://nn/warehouse/sales.db",
        "orders"
    ));
}
