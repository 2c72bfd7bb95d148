//! The audit trail: JSON lines with every field, rotation, backpressure, write failures failing
//! closed, nothing lost under concurrency.

use std::collections::{BTreeSet, HashSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hms_guard::config::{AuditConfig, AuditOnFailure, AuditSink};
use hms_guard::ops::audit::{
    format_time, rfc3339_micros, Audit, AuditError, AuditEvent, AuditSettings, StorageAudit,
    MAX_ATTEMPTS, MAX_LINE_BYTES,
};
use hms_guard::ops::metrics::{KindLabels, Metrics};
use serde_json::Value;

const FIELDS: [&str; 22] = [
    "time",
    "event_id",
    "connection_id",
    "client_addr",
    "user",
    "groups",
    "identity_source",
    "method",
    "operation",
    "catalog",
    "database",
    "table",
    "location",
    "decision",
    "reason",
    "required_privilege",
    "matched",
    "storage",
    "upstream_outcome",
    "upstream_exception",
    "latency_us",
    "truncated",
];

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("hms-guard-audit-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn file_config(path: &Path) -> AuditConfig {
    AuditConfig {
        sink: AuditSink::File,
        path: path.display().to_string(),
        ..AuditConfig::default()
    }
}

/// `[audit]` resolved and the trail started (a section that does not resolve is
/// `AuditError::Config`).
fn start(cfg: &AuditConfig, metrics: Arc<Metrics>) -> Result<Audit, AuditError> {
    Audit::start(&AuditSettings::resolve(cfg)?, metrics)
}

fn failures(m: &Metrics, kind: &'static str) -> u64 {
    m.audit_failures.get_or_create(&KindLabels { kind }).get()
}

fn parse_lines(text: &str) -> Vec<Value> {
    assert!(text.is_empty() || text.ends_with('\n'), "a cut line");
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ`, exactly.
fn assert_time_format(t: &str) {
    let b = t.as_bytes();
    assert_eq!(b.len(), 27, "{t}");
    for (i, c) in b.iter().enumerate() {
        let want = match i {
            4 | 7 => b'-',
            10 => b'T',
            13 | 16 => b':',
            19 => b'.',
            26 => b'Z',
            _ => {
                assert!(c.is_ascii_digit(), "{t}");
                continue;
            }
        };
        assert_eq!(*c, want, "{t}");
    }
}

fn event(n: u64) -> AuditEvent {
    let mut ev = AuditEvent::now();
    ev.connection_id = n;
    ev.method = "get_table".into();
    ev.decision = "allow".into();
    ev
}

#[test]
fn time_format() {
    let cases = [
        (0, "1970-01-01T00:00:00.000000Z"),
        (1_795_356_494_123_456, "2026-11-22T14:08:14.123456Z"),
        (1_709_251_199_999_999, "2024-02-29T23:59:59.999999Z"),
        (951_782_400_000_001, "2000-02-29T00:00:00.000001Z"),
        (951_868_800_000_000, "2000-03-01T00:00:00.000000Z"),
        (946_684_799_500_000, "1999-12-31T23:59:59.500000Z"),
        (4_133_937_600_000_000, "2100-12-31T12:00:00.000000Z"),
    ];
    for (us, want) in cases {
        assert_eq!(rfc3339_micros(Duration::from_micros(us)), want);
    }
    // Sub-microsecond digits are cut, not rounded.
    assert_eq!(
        rfc3339_micros(Duration::new(0, 999_999_999)),
        "1970-01-01T00:00:00.999999Z"
    );
    assert_time_format(&format_time(std::time::SystemTime::now()));
}

#[tokio::test]
async fn lines_are_json_with_every_field() {
    let dir = tmpdir("fields");
    let path = dir.join("audit.log");
    let audit = start(&file_config(&path), Arc::new(Metrics::new())).unwrap();

    let mut full = AuditEvent::now().connection(42, "10.1.2.3:50514");
    full.user = "alice".into();
    full.groups = vec!["analysts".into(), "sales".into()];
    full.identity_source = "set_ugi".into();
    full.method = "create_table".into();
    full.operation = "create_table".into();
    full.catalog = Some("hive".into());
    full.database = Some("demo_database".into());
    full.table = Some("customer".into());
    full.location = Some("s3://bucket/demo/customer/".into());
    full.decision = "shadow_deny".into();
    full.reason = "no_grant".into();
    full.required_privilege = Some("CREATE on demo_database".into());
    full.matched = Some("role:sales SELECT on demo_database.customer".into());
    full.storage = Some(StorageAudit {
        role_chain: vec![
            "arn:aws:iam::1:role/a".into(),
            "arn:aws:iam::2:role/b".into(),
        ],
        action: "write".into(),
        cached: true,
        outcome: "allowed".into(),
    });
    full.upstream_outcome = Some("exception".into());
    full.upstream_exception = Some("AlreadyExistsException".into());
    full.latency_us = 1234;
    // Control characters and newlines stay inside one line.
    full.reason = "line\nbreak \"quoted\" \u{1}".into();
    audit.record(full.clone()).await.unwrap();
    audit.record(AuditEvent::now()).await.unwrap();
    audit.flush().await;

    let lines = parse_lines(&std::fs::read_to_string(&path).unwrap());
    assert_eq!(lines.len(), 2);
    for l in &lines {
        let keys: BTreeSet<&str> = l.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        assert_eq!(
            keys,
            FIELDS.into_iter().collect(),
            "exactly the documented fields"
        );
        assert_time_format(l["time"].as_str().unwrap());
    }
    let l = &lines[0];
    assert_eq!(l["time"], full.time.as_str());
    assert_eq!(l["event_id"], full.event_id.as_str());
    assert_eq!(l["connection_id"], 42);
    assert_eq!(l["client_addr"], "10.1.2.3:50514");
    assert_eq!(l["user"], "alice");
    assert_eq!(l["groups"], serde_json::json!(["analysts", "sales"]));
    assert_eq!(l["identity_source"], "set_ugi");
    assert_eq!(l["method"], "create_table");
    assert_eq!(l["operation"], "create_table");
    assert_eq!(l["catalog"], "hive");
    assert_eq!(l["database"], "demo_database");
    assert_eq!(l["table"], "customer");
    assert_eq!(l["location"], "s3://bucket/demo/customer/");
    assert_eq!(l["decision"], "shadow_deny");
    assert_eq!(l["reason"], "line\nbreak \"quoted\" \u{1}");
    assert_eq!(l["required_privilege"], "CREATE on demo_database");
    assert_eq!(l["matched"], "role:sales SELECT on demo_database.customer");
    assert_eq!(
        l["storage"],
        serde_json::json!({
            "role_chain": ["arn:aws:iam::1:role/a", "arn:aws:iam::2:role/b"],
            "action": "write",
            "cached": true,
            "outcome": "allowed",
        })
    );
    assert_eq!(l["upstream_outcome"], "exception");
    assert_eq!(l["upstream_exception"], "AlreadyExistsException");
    assert_eq!(l["latency_us"], 1234);
    assert!(l["truncated"].is_null(), "nothing was cut");

    // Defaults: absent values are null, identity anonymous.
    let d = &lines[1];
    for key in [
        "catalog",
        "database",
        "table",
        "location",
        "required_privilege",
        "matched",
        "storage",
        "upstream_outcome",
        "upstream_exception",
        "truncated",
    ] {
        assert!(d[key].is_null(), "{key}");
    }
    assert_eq!(d["identity_source"], "anonymous");
    assert_eq!(d["groups"], serde_json::json!([]));
    assert_ne!(d["event_id"], l["event_id"]);
}

#[tokio::test]
async fn oversized_events_are_truncated_not_dropped() {
    let dir = tmpdir("huge");
    let path = dir.join("audit.log");
    let audit = start(&file_config(&path), Arc::new(Metrics::new())).unwrap();
    let mut ev = event(7);
    ev.location = Some(format!("s3://b/{}", "é".repeat(200_000)));
    ev.groups = (0..10_000).map(|i| format!("group{i}")).collect();
    audit.record(ev).await.unwrap();
    audit.flush().await;
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.len() <= MAX_LINE_BYTES, "{}", text.len());
    let lines = parse_lines(&text);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["connection_id"], 7);
    assert!(lines[0]["location"]
        .as_str()
        .unwrap()
        .ends_with("…[truncated]"));
    // Each cut value is listed with its original length; nothing else is.
    let location_len = format!("s3://b/{}", "é".repeat(200_000)).len();
    assert_eq!(
        lines[0]["truncated"],
        serde_json::json!({"location": location_len, "groups": 10_000})
    );
    let groups = lines[0]["groups"].as_array().unwrap();
    assert_eq!(groups.last().unwrap(), "…[truncated]");
}

/// Rotated files, oldest first, then the live file.
fn files_in_order(path: &Path, max_files: u32) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = (1..=max_files)
        .rev()
        .map(|i| PathBuf::from(format!("{}.{i}", path.display())))
        .filter(|p| p.exists())
        .collect();
    v.push(path.to_path_buf());
    v
}

async fn write_rotating(name: &str, max_files: u32, events: u64) -> (PathBuf, Vec<Vec<u64>>) {
    let dir = tmpdir(name);
    let path = dir.join("audit.log");
    let cfg = AuditConfig {
        max_file_bytes: 2000,
        max_files,
        ..file_config(&path)
    };
    let metrics = Arc::new(Metrics::new());
    let audit = start(&cfg, metrics.clone()).unwrap();
    for i in 0..events {
        audit.record(event(i)).await.unwrap();
        if i % 7 == 0 {
            audit.flush().await; // vary the batch sizes
        }
    }
    audit.flush().await;
    assert_eq!(metrics.audit_events.get(), events);
    assert_eq!(failures(&metrics, "rotate"), 0);
    let entries = std::fs::read_dir(&dir).unwrap().count();
    let files = files_in_order(&path, max_files);
    assert_eq!(entries, files.len(), "no stray files");
    let mut ids = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        assert!(text.len() <= 2000, "{f:?} holds {} bytes", text.len());
        ids.push(
            parse_lines(&text)
                .iter()
                .map(|l| l["connection_id"].as_u64().unwrap())
                .collect(),
        );
    }
    (path, ids)
}

#[tokio::test]
async fn rotation_keeps_every_event_exactly_once_in_order() {
    let (_, ids) = write_rotating("rotate-all", 1000, 300).await;
    assert!(ids.len() > 10, "rotated {} times", ids.len() - 1);
    let all: Vec<u64> = ids.concat();
    assert_eq!(all, (0..300).collect::<Vec<_>>());
}

#[tokio::test]
async fn rotation_keeps_max_files_and_deletes_the_oldest() {
    let (path, ids) = write_rotating("rotate-cap", 3, 300).await;
    assert_eq!(ids.len(), 4, "the live file and 3 rotated ones");
    assert!(!PathBuf::from(format!("{}.4", path.display())).exists());
    let all: Vec<u64> = ids.concat();
    // A contiguous tail of the sequence, each event once, the newest last.
    let first = all[0];
    assert_eq!(all, (first..300).collect::<Vec<_>>());
    assert!(first > 0, "older files were deleted");

    // max_files = 0: the old file is deleted at rotation.
    let (path, ids) = write_rotating("rotate-none", 0, 50).await;
    assert_eq!(ids.len(), 1);
    assert!(!PathBuf::from(format!("{}.1", path.display())).exists());
    assert_eq!(*ids[0].last().unwrap(), 49);
}

#[tokio::test]
async fn start_errors_are_clear() {
    let metrics = Arc::new(Metrics::new());
    let dir = tmpdir("open");
    let missing = dir.join("no-such-dir").join("audit.log");
    let err = start(&file_config(&missing), metrics.clone()).unwrap_err();
    assert!(matches!(err, AuditError::Open { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("no-such-dir") && msg.contains("does not exist"),
        "{msg}"
    );
    assert_eq!(failures(&metrics, "open"), 1);

    let err = start(&file_config(Path::new("")), metrics.clone()).unwrap_err();
    assert!(matches!(err, AuditError::Config(_)), "{err:?}");
    let cfg = AuditConfig {
        queue_capacity: 0,
        ..file_config(&dir.join("a.log"))
    };
    let err = start(&cfg, metrics).unwrap_err();
    assert!(err.to_string().contains("queue_capacity"), "{err}");
}

#[tokio::test]
async fn write_failures_are_counted_and_fail_closed() {
    let metrics = Arc::new(Metrics::new());
    let cfg = AuditConfig {
        sink: AuditSink::File,
        path: "/dev/full".into(),
        ..AuditConfig::default()
    };
    let audit = start(&cfg, metrics.clone()).unwrap();
    assert!(audit.healthy() && !audit.failing_closed());
    audit.record(event(1)).await.unwrap();
    audit.flush().await;
    assert!(!audit.healthy());
    assert!(audit.failing_closed(), "on_failure = deny");
    assert_eq!(failures(&metrics, "write"), u64::from(MAX_ATTEMPTS));
    assert_eq!(
        failures(&metrics, "stderr_fallback"),
        1,
        "handed to stderr, counted"
    );
    assert_eq!(metrics.audit_events.get(), 0);
    assert_eq!(metrics.audit_queue_depth.get(), 0);

    // Still failing: one attempt per batch, straight to the fallback, no stall.
    let t = Instant::now();
    audit.record(event(2)).await.unwrap();
    audit.flush().await;
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(failures(&metrics, "write"), u64::from(MAX_ATTEMPTS) + 1);
    assert_eq!(failures(&metrics, "stderr_fallback"), 2);
    assert!(audit.failing_closed());

    let allow = AuditConfig {
        on_failure: AuditOnFailure::Allow,
        ..cfg
    };
    let metrics = Arc::new(Metrics::new());
    let audit = start(&allow, metrics.clone()).unwrap();
    audit.record(event(3)).await.unwrap();
    audit.flush().await;
    assert!(!audit.healthy());
    assert!(!audit.failing_closed(), "on_failure = allow");
    assert!(failures(&metrics, "write") > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_sink_applies_backpressure_then_times_out() {
    let dir = tmpdir("fifo");
    let fifo = dir.join("audit.fifo");
    let ok = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success();
    assert!(ok, "mkfifo");
    // Read-write, so the writer's open does not wait for a reader; nothing reads until later,
    // so the writer blocks once the pipe buffer is full.
    let reader = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&fifo)
        .unwrap();
    let cfg = AuditConfig {
        queue_capacity: 1,
        queue_wait_ms: 300,
        ..file_config(&fifo)
    };
    let metrics = Arc::new(Metrics::new());
    let audit = start(&cfg, metrics.clone()).unwrap();

    let mut queued = 0u64;
    let (err, waited) = loop {
        assert!(queued < 1000, "the writer never blocked");
        let mut ev = event(queued);
        ev.reason = "x".repeat(4000);
        let t = Instant::now();
        match audit.record(ev).await {
            Ok(()) => queued += 1,
            Err(e) => break (e, t.elapsed()),
        }
    };
    assert!(matches!(err, AuditError::QueueTimeout(300)), "{err:?}");
    assert!(waited >= Duration::from_millis(300), "{waited:?}");
    assert!(waited < Duration::from_secs(3), "{waited:?}");
    assert_eq!(failures(&metrics, "queue_timeout"), 1);
    assert!(metrics.audit_queue_depth.get() >= 1);
    assert!(
        !audit.healthy() && audit.failing_closed(),
        "a stalled sink fails closed"
    );

    // Unblock: every queued event arrives exactly once and the audit is healthy again.
    let want = queued;
    let drain = std::thread::spawn(move || {
        let mut ids = Vec::new();
        let mut lines = BufReader::new(reader).lines();
        while (ids.len() as u64) < want {
            let l = lines.next().unwrap().unwrap();
            let v: Value = serde_json::from_str(&l).unwrap();
            ids.push(v["connection_id"].as_u64().unwrap());
        }
        ids
    });
    tokio::time::timeout(Duration::from_secs(10), audit.flush())
        .await
        .expect("flush after the reader drains");
    let ids = drain.join().unwrap();
    assert_eq!(ids, (0..queued).collect::<Vec<_>>());
    assert!(audit.healthy() && !audit.failing_closed());
    assert_eq!(metrics.audit_queue_depth.get(), 0);
    assert_eq!(metrics.audit_events.get(), queued);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_events_are_all_written_exactly_once() {
    let dir = tmpdir("concurrent");
    let path = dir.join("audit.log");
    let cfg = AuditConfig {
        queue_capacity: 64,
        ..file_config(&path)
    };
    let metrics = Arc::new(Metrics::new());
    let audit = start(&cfg, metrics.clone()).unwrap();
    let mut tasks = Vec::new();
    for t in 0..8u64 {
        let a = audit.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..1250u64 {
                let mut ev = event(t * 1_000_000 + i);
                ev.user = format!("u{t}");
                a.record(ev).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    audit.flush().await;
    let lines = parse_lines(&std::fs::read_to_string(&path).unwrap());
    assert_eq!(lines.len(), 10_000);
    let ids: HashSet<u64> = lines
        .iter()
        .map(|l| l["connection_id"].as_u64().unwrap())
        .collect();
    let want: HashSet<u64> = (0..8u64)
        .flat_map(|t| (0..1250).map(move |i| t * 1_000_000 + i))
        .collect();
    assert_eq!(ids, want);
    let event_ids: HashSet<&str> = lines
        .iter()
        .map(|l| l["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(event_ids.len(), 10_000, "unique event ids");
    // Each task's events stay in order.
    for t in 0..8u64 {
        let seq: Vec<u64> = lines
            .iter()
            .map(|l| l["connection_id"].as_u64().unwrap())
            .filter(|id| id / 1_000_000 == t)
            .collect();
        assert!(seq.windows(2).all(|w| w[0] < w[1]), "task {t} out of order");
    }
    assert_eq!(metrics.audit_events.get(), 10_000);
    assert_eq!(metrics.audit_queue_depth.get(), 0);
    assert!(audit.healthy());
    assert!(metrics
        .encode()
        .contains("hms_guard_audit_events_total 10000"));
}
