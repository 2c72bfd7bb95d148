//! The audit trail (docs/AUTHORIZATION.md, audit): one JSON object per line for every decided call (and every
//! pass-through call with `audit.all_calls`), written to stdout or to a size-rotated file.
//!
//! # Shape
//!
//! Callers build an [`AuditEvent`] (`AuditEvent::now` fills `time` and `event_id`) and hand it
//! to [`Audit::record`]. The event is serialized on the caller's task and queued on a bounded
//! channel (`audit.queue_capacity` lines). One dedicated writer thread drains the channel in
//! batches and writes each batch to the sink with as few `write(2)` calls as it can; while
//! lines keep coming faster than it writes them (a batch of more than one) it pauses
//! [`LINGER`] between batches rather than waiting on the queue, so that a busy proxy's callers
//! queue their lines without waking it for each one; a lone line sends it back to waiting. The
//! writer is an OS thread, not a runtime task, because file and pipe writes block: a stuck
//! sink (a full disk that hangs, a FIFO nobody reads) then stalls only the writer, never a
//! runtime worker.
//!
//! # Semantics ("never dropped silently")
//!
//! - `record` returns `Ok` once the line is **queued**, not once it is written. Whether the
//!   sink works is reported separately by [`Audit::healthy`]; the proxy consults
//!   [`Audit::failing_closed`] before allowing a decided call. [`Audit::flush`] waits until
//!   every line queued before it was called has been written (or handed to the stderr
//!   fallback below), for tests and shutdown.
//! - Full queue: `record` waits for room (backpressure) up to `audit.queue_wait_ms`, then
//!   returns [`AuditError::QueueTimeout`], counts `audit_failures{kind="queue_timeout"}`, logs
//!   the whole line at error level and marks the audit unhealthy (a stalled sink is a failing
//!   sink). The caller must treat the error like a failed write: deny the call when
//!   `on_failure = "deny"`.
//! - Write failure: counted (`kind = "write" | "open" | "rotate"`), logged, and the audit
//!   becomes unhealthy. The writer keeps the unwritten lines and retries them with backoff
//!   (byte-exact: a partially written batch resumes where it stopped, so no line is written
//!   twice), reopening the sink each time. While retrying it takes nothing new from the queue,
//!   so callers feel backpressure. After [`MAX_ATTEMPTS`] failed attempts the remaining lines
//!   are written raw to stderr (next to the process log), each counted as
//!   `audit_failures{kind="stderr_fallback"}` and summarized in an error log. From then on,
//!   until a write succeeds again, each batch gets one attempt before the fallback, so an
//!   outage does not stall every call for the whole retry schedule. The first successful
//!   write makes the audit healthy again.
//! - `healthy` starts true (the sink was opened by `start`), turns false on any write, open
//!   or rotate failure and on a queue timeout, and true again after the next successful write.
//! - Rotation (file sink, regular files only): before a line that would push the file past
//!   `max_file_bytes` (and the file is not empty), `path.{max_files}` is deleted,
//!   `path.{i}` renamed to `path.{i+1}`, `path` to `path.1`, and `path` reopened. With
//!   `max_files = 0` the old file is deleted. A line longer than `max_file_bytes` goes alone
//!   into a fresh file. A rotation failure is a write failure (the limit is never exceeded to
//!   keep writing).
//! - Bounds: the queue (`queue_capacity` lines), one batch (at most [`MAX_BATCH_LINES`] lines
//!   or about [`MAX_BATCH_BYTES`]), one line ([`MAX_LINE_BYTES`]: longer events are written
//!   with their strings truncated and marked `…[truncated]`, each cut value's original length
//!   listed in the event's `truncated` field), opening the sink in `start`
//!   ([`OPEN_TIMEOUT`]).
//! - Durability: a line is "written" once `write(2)` accepted it (no `fsync` per batch). Under
//!   load a line reaches the sink at most about [`LINGER`] after it was queued.
//! - If the writer thread is gone (it only ends when every handle is dropped, or by a bug),
//!   `record` fails with [`AuditError::Closed`], counted as `kind = "closed"`, logged in full.
//! - The stdout sink writes to a duplicate of file descriptor 1; nothing else in `serve` writes
//!   to stdout (logs go to stderr).

use std::collections::{BTreeMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};

use crate::config::{ms, AuditConfig, AuditOnFailure, AuditSink};
use crate::error::ConfigError;
use crate::listener::identity::{Identity, IdentitySource};
use crate::ops::metrics::{KindLabels, Metrics};

/// Failed attempts at writing one batch before its lines go to stderr.
pub const MAX_ATTEMPTS: u32 = 5;
/// First pause between attempts; doubles each time, at most [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_millis(50);
pub const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// Most lines taken from the queue for one batch.
pub const MAX_BATCH_LINES: usize = 1024;
/// A batch stops taking lines once it holds this many bytes.
pub const MAX_BATCH_BYTES: usize = 1024 * 1024;
/// Longest audit line; longer events are written with their strings truncated.
pub const MAX_LINE_BYTES: usize = 64 * 1024;
/// Longest string field kept in an event that exceeded [`MAX_LINE_BYTES`].
const TRUNCATED_FIELD_BYTES: usize = 1024;
/// Most groups kept in an event that exceeded [`MAX_LINE_BYTES`].
const TRUNCATED_GROUPS: usize = 64;
/// While lines keep coming, the writer pauses this long between batches instead of waiting
/// on the queue: a line is written at most this much later, and callers queue theirs without
/// waking the writer.
pub const LINGER: Duration = Duration::from_millis(1);
/// Longest `Audit::start` waits for the sink to open (opening a FIFO blocks until a reader).
pub const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// The buffer a line is serialized into starts this large.
const LINE_CAPACITY: usize = 1024;

const TRUNCATED_MARK: &str = "…[truncated]";

/// The storage check of a location-bearing call (docs/STORAGE.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StorageAudit {
    /// Roles assumed, in order (the user's role, then the bucket's role if any).
    pub role_chain: Vec<String>,
    /// `read` or `write`.
    pub action: String,
    /// The decision came from the storage decision cache.
    pub cached: bool,
    /// `allowed`, `denied`, `unavailable`…
    pub outcome: String,
}

/// One audit line. Build with [`AuditEvent::now`], then set what is known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditEvent {
    /// RFC 3339 UTC with microseconds: `2026-11-22T14:08:14.123456Z`.
    pub time: String,
    /// Unique: process start (ns, hex) and a per-process counter.
    pub event_id: String,
    pub connection_id: u64,
    pub client_addr: String,
    pub user: String,
    pub groups: Vec<String>,
    /// `pinned`, `set_ugi` or `anonymous` (`IdentitySource::as_str`).
    pub identity_source: String,
    pub method: String,
    /// The operation class (`authz::Operation::class`), empty for pass-through calls.
    pub operation: String,
    pub catalog: Option<String>,
    pub database: Option<String>,
    pub table: Option<String>,
    pub location: Option<String>,
    /// `allow`, `deny`, `shadow_deny`, or `pass` (not a decision: audited with
    /// `audit.all_calls`).
    pub decision: String,
    pub reason: String,
    pub required_privilege: Option<String>,
    /// The grant or rule that decided, e.g. `role:sales SELECT on demo_database.customer`.
    pub matched: Option<String>,
    pub storage: Option<StorageAudit>,
    /// Who asked, for an engine's question (`hms_guard_authorize`): the extension's own
    /// description, e.g. `hms-guard-spark/0.1.0 spark/4.3.0`. Absent on metastore calls.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// For a narrowed read (`reason: narrowed`): the columns and partitions given, e.g.
    /// `columns id, name, region of partitions where region = 'eu'`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub given: Option<String>,
    /// The metastore's answer (`policy::UpstreamOutcome::as_str`): `ok`, `exception` (a
    /// declared exception, named in `upstream_exception`), `application_exception`,
    /// `no_result`, `no_reply` (oneway), `transport_error` (the metastore went away or timed
    /// out) or `not_sent` (denied, or answered by the proxy).
    pub upstream_outcome: Option<String>,
    /// With `upstream_outcome = "exception"`: the exception's type (`MetaException`,
    /// `NoSuchObjectException`, `AlreadyExistsException`…; `undeclared` for a result field the
    /// method does not declare).
    pub upstream_exception: Option<String>,
    pub latency_us: u64,
    /// Set when the line was too long and values were cut: each cut value's field (`location`,
    /// `groups`, `groups[3]`, `storage.role_chain`…) and its original length (bytes of a
    /// string, elements of a list). Each cut string ends in `…[truncated]`.
    pub truncated: Option<BTreeMap<String, u64>>,
}

impl AuditEvent {
    /// An event stamped now with a fresh id; callers set what they know. Defaults: strings
    /// empty, `identity_source = "anonymous"`, `decision = "pass"`, options `None`, numbers 0.
    pub fn now() -> Self {
        AuditEvent {
            time: format_time(SystemTime::now()),
            event_id: next_event_id(),
            connection_id: 0,
            client_addr: String::new(),
            user: String::new(),
            groups: Vec::new(),
            identity_source: IdentitySource::Anonymous.as_str().into(),
            method: String::new(),
            operation: String::new(),
            catalog: None,
            database: None,
            table: None,
            location: None,
            decision: "pass".into(),
            reason: String::new(),
            required_privilege: None,
            matched: None,
            storage: None,
            client: None,
            given: None,
            upstream_outcome: None,
            upstream_exception: None,
            latency_us: 0,
            truncated: None,
        }
    }

    /// Sets the caller's identity.
    pub fn identity(mut self, identity: &Identity) -> Self {
        self.user = identity.user.clone();
        self.groups = identity.groups.clone();
        self.identity_source = identity.source.as_str().into();
        self
    }

    /// Sets the connection id and client address.
    pub fn connection(mut self, id: u64, client_addr: impl ToString) -> Self {
        self.connection_id = id;
        self.client_addr = client_addr.to_string();
        self
    }

    /// The JSON line (with its newline), at most [`MAX_LINE_BYTES`] long.
    pub fn to_line(&self) -> Vec<u8> {
        // Room for a typical line: serializing then grows the buffer rarely, if ever.
        let mut line = Vec::with_capacity(LINE_CAPACITY);
        serde_json::to_writer(&mut line, self).expect("an audit event always serializes");
        if line.len() >= MAX_LINE_BYTES {
            line = serde_json::to_vec(&self.truncated()).expect("an audit event always serializes");
        }
        line.push(b'\n');
        line
    }

    /// A copy with every string cut to `TRUNCATED_FIELD_BYTES` and at most `TRUNCATED_GROUPS`
    /// groups; each cut value is marked and its original length recorded in `truncated`.
    fn truncated(&self) -> AuditEvent {
        let mut e = self.clone();
        let mut cuts = Cuts::default();
        cuts.string("client_addr", &mut e.client_addr);
        cuts.string("user", &mut e.user);
        cuts.string("method", &mut e.method);
        cuts.string("operation", &mut e.operation);
        cuts.string("reason", &mut e.reason);
        cuts.option("catalog", &mut e.catalog);
        cuts.option("database", &mut e.database);
        cuts.option("table", &mut e.table);
        cuts.option("location", &mut e.location);
        cuts.option("required_privilege", &mut e.required_privilege);
        cuts.option("matched", &mut e.matched);
        cuts.option("upstream_exception", &mut e.upstream_exception);
        cuts.option("client", &mut e.client);
        cuts.option("given", &mut e.given);
        cuts.list(
            "groups",
            &mut e.groups,
            TRUNCATED_GROUPS,
            TRUNCATED_FIELD_BYTES / 4,
        );
        if let Some(s) = &mut e.storage {
            cuts.list(
                "storage.role_chain",
                &mut s.role_chain,
                TRUNCATED_GROUPS / 4,
                TRUNCATED_FIELD_BYTES,
            );
            cuts.string("storage.action", &mut s.action);
            cuts.string("storage.outcome", &mut s.outcome);
        }
        e.truncated = (!cuts.0.is_empty()).then_some(cuts.0);
        e
    }
}

/// The values cut from one event, with their original lengths.
#[derive(Default)]
struct Cuts(BTreeMap<String, u64>);

impl Cuts {
    fn string(&mut self, field: &str, s: &mut String) {
        let len = s.len() as u64;
        if truncate(s, TRUNCATED_FIELD_BYTES) {
            self.0.insert(field.to_string(), len);
        }
    }

    fn option(&mut self, field: &str, s: &mut Option<String>) {
        if let Some(s) = s {
            self.string(field, s);
        }
    }

    /// At most `max` elements (a last one marks the cut), each at most `each` bytes.
    fn list(&mut self, field: &str, v: &mut Vec<String>, max: usize, each: usize) {
        if v.len() > max {
            self.0.insert(field.to_string(), v.len() as u64);
            v.truncate(max);
            v.push(TRUNCATED_MARK.into());
        }
        for (i, g) in v.iter_mut().enumerate().take(max) {
            let len = g.len() as u64;
            if truncate(g, each) {
                self.0.insert(format!("{field}[{i}]"), len);
            }
        }
    }
}

/// Cuts `s` to at most `max` bytes (at a character boundary) and marks it; `true` if it was
/// cut.
fn truncate(s: &mut String, max: usize) -> bool {
    if s.len() <= max {
        return false;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s.push_str(TRUNCATED_MARK);
    true
}

/// `t` as RFC 3339 UTC with microseconds (`2026-11-22T14:08:14.123456Z`). Times before 1970
/// are written as the epoch.
pub fn format_time(t: SystemTime) -> String {
    rfc3339_micros(t.duration_since(UNIX_EPOCH).unwrap_or_default())
}

/// The instant `since_epoch` after 1970-01-01T00:00:00Z as RFC 3339 UTC with microseconds.
pub fn rfc3339_micros(since_epoch: Duration) -> String {
    let secs = since_epoch.as_secs();
    let micros = since_epoch.subsec_micros();
    let (year, month, day) = civil_from_days(secs / 86_400);
    let rem = secs % 86_400;
    // Digit by digit (once per audit line: no formatting machinery).
    let mut out = String::with_capacity(27);
    let mut digits = |n: u64, width: u32, then: char| {
        for i in (0..width).rev() {
            out.push(char::from(b'0' + (n / 10u64.pow(i) % 10) as u8));
        }
        out.push(then);
    };
    digits(year, year.checked_ilog10().unwrap_or(0).max(3) + 1, '-');
    digits(month, 2, '-');
    digits(day, 2, 'T');
    digits(rem / 3600, 2, ':');
    digits(rem / 60 % 60, 2, ':');
    digits(rem % 60, 2, '.');
    digits(u64::from(micros), 6, 'Z');
    out
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day). Works in 400-year eras
/// counted from 0000-03-01, so the leap day is the last day of each shifted year.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    const DAYS_PER_ERA: u64 = 146_097; // 400 years
    let z = days + 719_468; // days from 0000-03-01 to 1970-01-01
    let era = z / DAYS_PER_ERA;
    let doe = z % DAYS_PER_ERA; // day of era, 0..=146096
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // year of era, 0..=399
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of the March-based year
    let mp = (5 * doy + 2) / 153; // month, March = 0
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = era * 400 + yoe + u64::from(month <= 2);
    (year, month, day)
}

fn next_event_id() -> String {
    static START: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let start = *START.get_or_init(|| {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64;
        // Two processes started in the same nanosecond on one host still differ.
        nanos ^ (u64::from(std::process::id()) << 44)
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    // `{start:016x}-{n:x}`, without the formatting machinery (once per audit line).
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut id = String::with_capacity(33);
    for i in (0..16).rev() {
        id.push(char::from(HEX[(start >> (4 * i)) as usize & 15]));
    }
    id.push('-');
    let digits = (n.checked_ilog2().unwrap_or(0) / 4 + 1) as usize;
    for i in (0..digits).rev() {
        id.push(char::from(HEX[(n >> (4 * i)) as usize & 15]));
    }
    id
}

/// Why the audit trail could not start or take an event.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The `[audit]` section could not be resolved (every problem, by key).
    #[error("audit config: {}", joined(.0))]
    Config(Vec<ConfigError>),
    #[error("cannot open audit file {path}: {reason}")]
    Open { path: String, reason: String },
    #[error("cannot start the audit writer: {0}")]
    Spawn(io::Error),
    #[error("audit queue full: no room within {0} ms (the audit sink is slow or stuck)")]
    QueueTimeout(u64),
    #[error("the audit writer has stopped")]
    Closed,
}

impl From<Vec<ConfigError>> for AuditError {
    fn from(errors: Vec<ConfigError>) -> Self {
        AuditError::Config(errors)
    }
}

/// Every error's text, `; `-separated.
fn joined(errors: &[ConfigError]) -> String {
    let all: Vec<String> = errors.iter().map(ToString::to_string).collect();
    all.join("; ")
}

/// `[audit]` resolved: where the lines go and how a full queue or a failing sink is handled.
#[derive(Debug, Clone)]
pub struct AuditSettings {
    pub target: AuditTarget,
    /// Lines the queue holds (more than 0).
    pub queue_capacity: usize,
    /// Longest a call waits for room in a full queue (more than 0).
    pub queue_wait: Duration,
    pub on_failure: AuditOnFailure,
    /// Also audit calls that need no decision (pass-through).
    pub all_calls: bool,
}

impl AuditSettings {
    /// Checks `[audit]` (every error at once, keys `audit.*`) and resolves it.
    pub fn resolve(c: &AuditConfig) -> Result<AuditSettings, Vec<ConfigError>> {
        let errors = c.validate();
        if !errors.is_empty() {
            return Err(errors);
        }
        let target = match c.sink {
            AuditSink::Stdout => AuditTarget::Stdout,
            AuditSink::File => AuditTarget::File {
                path: PathBuf::from(&c.path),
                max_bytes: c.max_file_bytes,
                max_files: c.max_files,
            },
        };
        Ok(AuditSettings {
            target,
            queue_capacity: c.queue_capacity,
            queue_wait: ms(c.queue_wait_ms),
            on_failure: c.on_failure,
            all_calls: c.all_calls,
        })
    }
}

/// Where audit lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditTarget {
    Stdout,
    /// A file rotated past `max_bytes` (more than 0), keeping `max_files` old ones.
    File {
        path: PathBuf,
        max_bytes: u64,
        max_files: u32,
    },
}

impl AuditTarget {
    /// The configured sink.
    pub fn sink(&self) -> AuditSink {
        match self {
            AuditTarget::Stdout => AuditSink::Stdout,
            AuditTarget::File { .. } => AuditSink::File,
        }
    }

    /// The file's path; empty for stdout.
    fn path(&self) -> String {
        match self {
            AuditTarget::Stdout => String::new(),
            AuditTarget::File { path, .. } => path.display().to_string(),
        }
    }
}

/// Writer progress, for `flush`.
#[derive(Debug, Clone, Copy, Default)]
struct Progress {
    /// Lines taken off the queue and finished (written, or handed to stderr).
    done: u64,
    /// The writer thread has exited.
    stopped: bool,
}

/// State shared by the handles and the writer thread.
struct Shared {
    healthy: AtomicBool,
    /// Lines put on the queue (incremented just before the send, after room was reserved).
    queued: AtomicU64,
    progress: watch::Sender<Progress>,
    metrics: Arc<Metrics>,
}

impl Shared {
    fn failure(&self, kind: &'static str) {
        self.metrics
            .audit_failures
            .get_or_create(&KindLabels { kind })
            .inc();
    }
}

struct Inner {
    tx: mpsc::Sender<Vec<u8>>,
    shared: Arc<Shared>,
    queue_wait: Duration,
    on_failure: AuditOnFailure,
    all_calls: bool,
}

/// A handle on the audit trail; clones share one queue and writer. When the last handle is
/// dropped the writer writes what is queued and exits.
#[derive(Clone)]
pub struct Audit {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Audit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Audit")
            .field("healthy", &self.healthy())
            .field("on_failure", &self.inner.on_failure)
            .finish()
    }
}

impl Audit {
    /// Opens the sink and starts the writer thread. Fails on a file that cannot be opened
    /// (missing directory, permissions, a FIFO with no reader within [`OPEN_TIMEOUT`]) or a
    /// writer thread that cannot start.
    pub fn start(settings: &AuditSettings, metrics: Arc<Metrics>) -> Result<Audit, AuditError> {
        let (tx, rx) = mpsc::channel(settings.queue_capacity);
        let (progress, _) = watch::channel(Progress::default());
        let shared = Arc::new(Shared {
            healthy: AtomicBool::new(true),
            queued: AtomicU64::new(0),
            progress,
            metrics,
        });
        let target = &settings.target;
        let opened = Audit::spawn_writer(target.clone(), shared.clone(), rx)?;
        Audit::wait_opened(&opened, &shared, &target.path())?;
        info!(sink = ?target.sink(), path = %target.path(), "audit trail started");
        Ok(Audit {
            inner: Arc::new(Inner {
                tx,
                shared,
                queue_wait: settings.queue_wait,
                on_failure: settings.on_failure,
                all_calls: settings.all_calls,
            }),
        })
    }

    /// Starts the writer thread: it opens the sink, says how that went on the returned
    /// channel, then writes what arrives on `rx`.
    fn spawn_writer(
        target: AuditTarget,
        shared: Arc<Shared>,
        rx: mpsc::Receiver<Vec<u8>>,
    ) -> Result<std_mpsc::Receiver<Result<(), AuditError>>, AuditError> {
        let (opened_tx, opened_rx) = std_mpsc::sync_channel::<Result<(), AuditError>>(1);
        std::thread::Builder::new()
            .name("hms-guard-audit".into())
            .spawn(move || {
                let _stopped = StoppedGuard(shared.clone());
                let mut writer = Writer::new(target, shared);
                match writer.open() {
                    Ok(()) => {
                        if opened_tx.send(Ok(())).is_err() {
                            return; // `start` gave up waiting
                        }
                    }
                    Err(e) => {
                        let _ = opened_tx.send(Err(writer.open_error(&e)));
                        return;
                    }
                }
                writer.run(rx);
            })
            .map_err(AuditError::Spawn)?;
        Ok(opened_rx)
    }

    /// Waits up to [`OPEN_TIMEOUT`] for the writer to open the sink at `path`.
    fn wait_opened(
        opened: &std_mpsc::Receiver<Result<(), AuditError>>,
        shared: &Shared,
        path: &str,
    ) -> Result<(), AuditError> {
        match opened.recv_timeout(OPEN_TIMEOUT) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                shared.failure("open");
                Err(e)
            }
            Err(_) => {
                shared.failure("open");
                Err(AuditError::Open {
                    path: path.to_string(),
                    reason: format!(
                        "not opened within {} s (a FIFO with no reader?)",
                        OPEN_TIMEOUT.as_secs()
                    ),
                })
            }
        }
    }

    /// Queues one event. Waits for room up to `audit.queue_wait_ms` (backpressure), then
    /// fails with [`AuditError::QueueTimeout`]; `Ok` means queued, not yet written (see
    /// [`Audit::healthy`], [`Audit::flush`]). A failed event is logged in full, never lost
    /// without a trace; the caller fails closed as configured.
    pub async fn record(&self, ev: AuditEvent) -> Result<(), AuditError> {
        let line = ev.to_line();
        let inner = &*self.inner;
        let permit = match inner.tx.try_reserve() {
            Ok(p) => p,
            Err(mpsc::error::TrySendError::Closed(())) => return Err(self.closed(&line)),
            Err(mpsc::error::TrySendError::Full(())) => {
                match tokio::time::timeout(inner.queue_wait, inner.tx.reserve()).await {
                    Ok(Ok(p)) => p,
                    Ok(Err(_)) => return Err(self.closed(&line)),
                    Err(_) => {
                        inner.shared.failure("queue_timeout");
                        inner.shared.healthy.store(false, Ordering::SeqCst);
                        error!(
                            waited_ms = inner.queue_wait.as_millis() as u64,
                            audit_line = %String::from_utf8_lossy(line.trim_ascii_end()),
                            "audit queue full: event not queued"
                        );
                        return Err(AuditError::QueueTimeout(inner.queue_wait.as_millis() as u64));
                    }
                }
            }
        };
        // Count before sending, so `flush` never waits for less than what is in the queue.
        inner.shared.queued.fetch_add(1, Ordering::SeqCst);
        inner.shared.metrics.audit_queue_depth.inc();
        permit.send(line);
        Ok(())
    }

    fn closed(&self, line: &[u8]) -> AuditError {
        let shared = &self.inner.shared;
        shared.failure("closed");
        shared.healthy.store(false, Ordering::SeqCst);
        error!(
            audit_line = %String::from_utf8_lossy(line.trim_ascii_end()),
            "audit writer stopped: event not queued"
        );
        AuditError::Closed
    }

    /// True while the sink works: false after a failed write, open or rotation, or a queue
    /// timeout, until the next successful write.
    pub fn healthy(&self) -> bool {
        self.inner.shared.healthy.load(Ordering::SeqCst)
    }

    /// True while decided calls must be denied: the sink is failing and
    /// `audit.on_failure = "deny"`.
    pub fn failing_closed(&self) -> bool {
        !self.healthy() && self.inner.on_failure == AuditOnFailure::Deny
    }

    /// `audit.all_calls`: audit pass-through calls too.
    pub fn all_calls(&self) -> bool {
        self.inner.all_calls
    }

    /// Waits until every event queued before this call has been written (or, after repeated
    /// failures, handed to stderr). Unbounded while the sink blocks; wrap it in a timeout at
    /// shutdown.
    pub async fn flush(&self) {
        let shared = &self.inner.shared;
        let target = shared.queued.load(Ordering::SeqCst);
        let mut rx = shared.progress.subscribe();
        let _ = rx.wait_for(|p| p.done >= target || p.stopped).await;
    }
}

/// Marks the writer stopped when its thread ends, however it ends.
struct StoppedGuard(Arc<Shared>);

impl Drop for StoppedGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.healthy.store(false, Ordering::SeqCst);
            error!("audit writer panicked");
        }
        self.0.progress.send_modify(|p| p.stopped = true);
    }
}

/// A failed attempt: the metric kind and the error.
struct Failure {
    kind: &'static str,
    err: io::Error,
}

fn fail(kind: &'static str) -> impl FnOnce(io::Error) -> Failure {
    move |err| Failure { kind, err }
}

/// The writer thread's state. Unwritten lines live in `buf`; `ends` holds the end offset of
/// each unfinished line, `off` how much of `buf` has been written.
struct Writer {
    target: AuditTarget,
    shared: Arc<Shared>,
    file: Option<File>,
    /// Bytes in the open file (regular files only).
    size: u64,
    /// The open sink is a regular file (rotation applies).
    rotatable: bool,
    buf: Vec<u8>,
    ends: VecDeque<usize>,
    off: usize,
    /// Start of the first unfinished line.
    line_start: usize,
    /// Writes have been failing since the last stderr fallback: one attempt per batch.
    degraded: bool,
}

impl Writer {
    fn new(target: AuditTarget, shared: Arc<Shared>) -> Self {
        Writer {
            target,
            shared,
            file: None,
            size: 0,
            rotatable: false,
            buf: Vec::new(),
            ends: VecDeque::new(),
            off: 0,
            line_start: 0,
            degraded: false,
        }
    }

    fn path_display(&self) -> String {
        match &self.target {
            AuditTarget::Stdout => "stdout".into(),
            AuditTarget::File { path, .. } => path.display().to_string(),
        }
    }

    fn open_error(&self, e: &io::Error) -> AuditError {
        let path = self.path_display();
        let reason = match &self.target {
            AuditTarget::File { path: p, .. } if e.kind() == io::ErrorKind::NotFound => {
                match p.parent().filter(|d| !d.as_os_str().is_empty()) {
                    Some(dir) if !dir.exists() => {
                        format!("the directory {} does not exist", dir.display())
                    }
                    _ => e.to_string(),
                }
            }
            _ => e.to_string(),
        };
        AuditError::Open { path, reason }
    }

    /// (Re)opens the sink for appending.
    fn open(&mut self) -> io::Result<()> {
        let file = match &self.target {
            AuditTarget::Stdout => {
                use std::os::fd::AsFd;
                File::from(io::stdout().as_fd().try_clone_to_owned()?)
            }
            AuditTarget::File { path, .. } => {
                OpenOptions::new().create(true).append(true).open(path)?
            }
        };
        let meta = file.metadata()?;
        self.rotatable =
            matches!(self.target, AuditTarget::File { .. }) && meta.file_type().is_file();
        self.size = if self.rotatable { meta.len() } else { 0 };
        self.file = Some(file);
        Ok(())
    }

    fn run(&mut self, mut rx: mpsc::Receiver<Vec<u8>>) {
        loop {
            // Idle: block for the first line (its sender wakes this thread).
            let Some(line) = rx.blocking_recv() else {
                return; // every handle dropped and the queue is empty
            };
            self.push(line);
            // Busy: write what is waiting, pause, and go on while lines keep coming. A line
            // queued while this thread sleeps costs its sender no wake-up (a system call and
            // a context switch per line, on the caller's path, otherwise). A lone line (the
            // next one not yet there) goes back to waiting on the queue: pausing then would
            // add a wake-up per line instead of saving one.
            loop {
                let full = self.take_waiting(&mut rx);
                let lines = self.ends.len();
                self.write_batch();
                if !full {
                    if lines < 2 {
                        break;
                    }
                    std::thread::sleep(LINGER);
                }
                match rx.try_recv() {
                    Ok(line) => self.push(line),
                    Err(_) => break,
                }
            }
        }
    }

    /// Takes the lines waiting on the queue, up to one batch; `true`: the batch is full (more
    /// may be waiting).
    fn take_waiting(&mut self, rx: &mut mpsc::Receiver<Vec<u8>>) -> bool {
        while self.ends.len() < MAX_BATCH_LINES && self.buf.len() < MAX_BATCH_BYTES {
            match rx.try_recv() {
                Ok(line) => self.push(line),
                Err(_) => return false,
            }
        }
        true
    }

    fn push(&mut self, line: Vec<u8>) {
        self.buf.extend_from_slice(&line);
        self.ends.push_back(self.buf.len());
    }

    /// Writes the batch, retrying; after too many failures hands the rest to stderr.
    fn write_batch(&mut self) {
        let attempts = if self.degraded { 1 } else { MAX_ATTEMPTS };
        let mut backoff = FIRST_BACKOFF;
        for attempt in 1..=attempts {
            match self.write_pending() {
                Ok(()) => {
                    self.degraded = false;
                    self.reset();
                    return;
                }
                Err(f) => {
                    self.shared.failure(f.kind);
                    self.shared.healthy.store(false, Ordering::SeqCst);
                    self.file = None; // reopen on the next attempt
                    error!(
                        sink = %self.path_display(),
                        kind = f.kind,
                        attempt,
                        attempts,
                        pending = self.ends.len(),
                        error = %f.err,
                        "audit write failed"
                    );
                    if attempt < attempts {
                        std::thread::sleep(backoff);
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
            }
        }
        self.fallback();
    }

    /// Writes every unwritten line, rotating as needed.
    fn write_pending(&mut self) -> Result<(), Failure> {
        while let Some(&first_end) = self.ends.front() {
            if self.file.is_none() {
                self.open().map_err(fail("open"))?;
            }
            let mut end = self.buf.len();
            if let AuditTarget::File { max_bytes, .. } = self.target {
                if self.rotatable {
                    let at_line_start = self.off == self.line_start;
                    let first_len = (first_end - self.off) as u64;
                    if at_line_start && self.size > 0 && self.size + first_len > max_bytes {
                        self.rotate().map_err(fail("rotate"))?;
                        continue;
                    }
                    // Whole lines that fit; at least the first.
                    end = first_end;
                    for &e in self.ends.iter().skip(1) {
                        if self.size + (e - self.off) as u64 > max_bytes {
                            break;
                        }
                        end = e;
                    }
                }
            }
            self.write_range(end).map_err(fail("write"))?;
        }
        Ok(())
    }

    /// Writes `buf[off..end]`, accounting finished lines as it goes.
    fn write_range(&mut self, end: usize) -> io::Result<()> {
        let file = self.file.as_mut().expect("sink open");
        let mut result = Ok(());
        while self.off < end {
            match file.write(&self.buf[self.off..end]) {
                Ok(0) => {
                    result = Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "the sink accepted no bytes",
                    ));
                    break;
                }
                Ok(n) => {
                    self.off += n;
                    self.size += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        let mut finished = 0u64;
        while let Some(&e) = self.ends.front() {
            if e > self.off {
                break;
            }
            self.ends.pop_front();
            self.line_start = e;
            finished += 1;
        }
        if result.is_ok() && !self.shared.healthy.swap(true, Ordering::SeqCst) {
            // Before the progress update, so `flush` returning implies healthy again.
            info!(sink = %self.path_display(), "audit sink writable again");
        }
        if finished > 0 {
            self.shared.metrics.audit_events.inc_by(finished);
            self.finished(finished);
        }
        result
    }

    /// `n` more lines are off the queue for good.
    fn finished(&self, n: u64) {
        self.shared.metrics.audit_queue_depth.dec_by(n as i64);
        self.shared.progress.send_modify(|p| p.done += n);
    }

    /// `path.{max_files}` deleted, `path.{i}` → `path.{i+1}`, `path` → `path.1`, reopen.
    fn rotate(&mut self) -> io::Result<()> {
        let AuditTarget::File {
            path, max_files, ..
        } = &self.target
        else {
            return Ok(());
        };
        self.file = None;
        if *max_files == 0 {
            remove_if_exists(path)?;
        } else {
            remove_if_exists(&numbered(path, *max_files))?;
            for i in (1..*max_files).rev() {
                rename_if_exists(&numbered(path, i), &numbered(path, i + 1))?;
            }
            rename_if_exists(path, &numbered(path, 1))?;
        }
        self.open()
    }

    /// The sink failed [`MAX_ATTEMPTS`] times: the unwritten lines go to stderr, each counted.
    fn fallback(&mut self) {
        // A line cut by a failed write is repeated whole.
        let rest = &self.buf[self.line_start..];
        let n = self.ends.len() as u64;
        let written = {
            let mut err = io::stderr().lock();
            err.write_all(rest).and_then(|()| err.flush())
        };
        let shared = &self.shared;
        shared
            .metrics
            .audit_failures
            .get_or_create(&KindLabels {
                kind: "stderr_fallback",
            })
            .inc_by(n);
        match written {
            Ok(()) => error!(
                sink = %self.path_display(),
                events = n,
                "audit sink failing: events written to stderr instead"
            ),
            Err(e) => error!(
                sink = %self.path_display(),
                events = n,
                error = %e,
                "audit sink failing and stderr unwritable: events lost"
            ),
        }
        if !self.degraded {
            warn!("audit writes now get one attempt per batch until the sink recovers");
        }
        self.degraded = true;
        self.ends.clear();
        self.finished(n);
        self.reset();
    }

    fn reset(&mut self) {
        debug_assert!(self.ends.is_empty());
        self.buf.clear();
        if self.buf.capacity() > 2 * MAX_BATCH_BYTES {
            self.buf.shrink_to(MAX_BATCH_BYTES);
        }
        self.off = 0;
        self.line_start = 0;
    }
}

fn numbered(path: &Path, i: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{i}"));
    PathBuf::from(s)
}

fn remove_if_exists(p: &Path) -> io::Result<()> {
    match std::fs::remove_file(p) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn rename_if_exists(from: &Path, to: &Path) -> io::Result<()> {
    match std::fs::rename(from, to) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(59), (1970, 3, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
    }

    #[test]
    fn event_ids_are_hex_start_and_counter() {
        let (a, b) = (next_event_id(), next_event_id());
        let (start, n) = a.split_once('-').unwrap();
        assert_eq!(start.len(), 16);
        assert!(start.bytes().all(|c| c.is_ascii_hexdigit()));
        let m = u64::from_str_radix(n, 16).unwrap();
        assert_eq!(n, format!("{m:x}"));
        assert!(b.starts_with(start) && u64::from_str_radix(&b[17..], 16).unwrap() > m);
    }

    #[test]
    fn times_in_rfc3339_micros() {
        let t = Duration::new(1_795_010_894, 123_456_789);
        assert_eq!(rfc3339_micros(t), "2026-11-18T14:08:14.123456Z");
        assert_eq!(
            rfc3339_micros(Duration::ZERO),
            "1970-01-01T00:00:00.000000Z"
        );
        let leap = Duration::new(951_868_799, 999_999_000); // 2000-02-29 23:59:59.999999
        assert_eq!(rfc3339_micros(leap), "2000-02-29T23:59:59.999999Z");
    }

    #[test]
    fn truncates_at_char_boundary() {
        let mut s = "ééé".to_string();
        truncate(&mut s, 3);
        assert_eq!(s, format!("é{TRUNCATED_MARK}"));
    }
}
