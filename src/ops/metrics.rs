//! Every metric the proxy exports, defined once. Prefix `hms_guard_`; label values are bounded
//! (method names from the method table or `other`, fixed enums elsewhere).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    pub method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: &'static str,
    /// `pass` (forwarded), `error` (answered by the proxy after a failure).
    pub decision: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransportLabels {
    pub transport: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabels {
    /// `client_to_upstream` or `upstream_to_client`.
    pub direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: &'static str,
}

type HistogramFamily = Family<MethodLabels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new([
        0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
        0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    ])
}

/// The proxy's metrics and the registry that exports them.
pub struct Metrics {
    registry: Registry,
    pub connections_active: Gauge,
    pub connections: Family<TransportLabels, Counter>,
    pub connections_rejected: Family<KindLabels, Counter>,
    pub rejected_transports: Family<TransportLabels, Counter>,
    pub requests: Family<RequestLabels, Counter>,
    pub request_duration: HistogramFamily,
    pub upstream_duration: HistogramFamily,
    pub bytes: Family<DirectionLabels, Counter>,
    pub upstream_errors: Family<KindLabels, Counter>,
    pub client_errors: Family<KindLabels, Counter>,
    /// Requests refused by the schema-exact reader (`schema::RejectKind::as_str`).
    pub rejected_requests: Family<KindLabels, Counter>,
    /// Metastore replies that did not answer the call in flight.
    pub mismatched_replies: Counter,
    pub upstream_connects: Counter,
    pub upstream_up: Gauge,
    pub decisions: Family<DecisionLabels, Counter>,
    /// Engines' questions (`hms_guard_authorize`), by who asked, what and the decision.
    pub questions: Family<QuestionLabels, Counter>,
    pub cache: Family<CacheLabels, Counter>,
    pub facts_calls: Family<FactsLabels, Counter>,
    pub audit_events: Counter,
    pub audit_failures: Family<KindLabels, Counter>,
    pub audit_queue_depth: Gauge,
    pub storage_sts_calls: Family<StsLabels, Counter>,
    pub storage_credential_refreshes: Family<OutcomeLabels, Counter>,
    /// TLS handshakes with clients (`ok`, `error`).
    pub tls_handshakes: Family<OutcomeLabels, Counter>,
    /// Kerberos (SASL/GSSAPI) handshakes with clients, by outcome.
    pub sasl_handshakes: Family<OutcomeLabels, Counter>,
    /// Connections closed because they had not finished their handshakes and first call in
    /// time (kind: `HandshakeStage`).
    pub handshake_timeouts: Family<KindLabels, Counter>,
    /// Delegation tokens asked of a kerberized metastore to act as a caller, by outcome.
    pub delegation_tokens: Family<OutcomeLabels, Counter>,
    /// Reloads of changed TLS files (`ok`, `error`: the previous files stay in use).
    pub tls_reloads: Family<OutcomeLabels, Counter>,
    pub storage_probes: Family<ProbeLabels, Counter>,
    /// Listings of a default place with the proxy's own identity (`empty`, `occupied`,
    /// `error`).
    pub storage_listings: Family<OutcomeLabels, Counter>,
    pub storage_checks: Family<StorageCheckLabels, Counter>,
    pub storage_check_duration: Histogram,
    /// The shared metadata cache (`[cache]`): stores by outcome, evictions, invalidated
    /// entries, size, whether it serves.
    pub cache_stores: Family<OutcomeLabels, Counter>,
    pub cache_evictions: Counter,
    pub cache_invalidated: Counter,
    pub cache_bytes: Gauge,
    pub cache_entries: Gauge,
    pub cache_serving: Gauge,
    /// The notification-log follower: polls by outcome, gaps, the last event seen, how long
    /// since it was last caught up.
    pub notification_polls: Family<OutcomeLabels, Counter>,
    pub notification_gaps: Counter,
    pub notification_last_event: Gauge,
    pub notification_lag_ms: Gauge,
    /// Group lookups by source (`cache`, `static`, `file`, `os`, `ldap`) and outcome (cache:
    /// `hit`, `miss`, `last_known`; sources: `found`, `unknown`, `error`, `timeout`).
    pub group_lookups: Family<GroupLookupLabels, Counter>,
    /// Group lookups that failed, by the source that failed (`any`: no lookup slot in time).
    pub group_lookup_failures: Family<SourceLabels, Counter>,
    /// Group names a source gave that the names rule refused (left out).
    pub group_names_refused: Family<SourceLabels, Counter>,
    /// Users whose groups are cached.
    pub group_cache_entries: Gauge,
    /// The location index's state: 1 for the current one (`disabled`, `building`, `ready`,
    /// `incomplete`), 0 for the others.
    pub index_state: Family<IndexStateLabels, Gauge>,
    /// Locations (tables' and outside partitions') the index holds.
    pub index_entries: Gauge,
    /// Tables with at least one location in the index.
    pub index_tables: Gauge,
    /// Tables read so far by the build that runs (or the last one): its progress.
    pub index_build_tables: Gauge,
    /// How long the last build took.
    pub index_build_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// Builds by outcome (`ok`, `error`).
    pub index_builds: Family<OutcomeLabels, Counter>,
    /// Rebuilds started by the periodic rescan.
    pub index_rebuilds: Counter,
    /// Tables read again after a call changed them (`ok`, `error`).
    pub index_refreshes: Family<OutcomeLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GroupLookupLabels {
    pub source: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    /// `static`, `file`, `os`, `ldap` (or `any`).
    pub source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IndexStateLabels {
    /// `disabled`, `building`, `ready`, `incomplete`.
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StsLabels {
    /// `user` (the user's role, from the proxy's identity) or `bucket` (a cross-account bucket
    /// role, chained from the user's role).
    pub hop: &'static str,
    /// `ok`, `denied` (HTTP 403), `error`.
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `ok`, `error`.
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProbeLabels {
    /// `read`, `write`.
    pub action: &'static str,
    /// `allow`, `deny`, `error`.
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StorageCheckLabels {
    /// `read`, `write`.
    pub action: &'static str,
    /// `allow`, `deny`, `unavailable`.
    pub outcome: &'static str,
    /// `true` when the decision cache answered.
    pub cached: &'static str,
}

fn storage_check_histogram() -> Histogram {
    Histogram::new([
        0.000_01, 0.000_05, 0.000_1, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
        0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ])
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QuestionLabels {
    /// `hms-guard-spark` or `other` (`decision::question::client_label`).
    pub client: &'static str,
    /// The operation class asked about.
    pub operation: &'static str,
    /// `allow`, `deny`, `shadow_deny`.
    pub decision: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    /// `allow`, `deny`, `shadow_deny`.
    pub decision: &'static str,
    /// A fixed reason code (see `authz::Reason`).
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    /// `grants`, `objects`, `storage_credentials`, `storage_decisions`.
    pub cache: &'static str,
    /// `hit`, `miss`.
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FactsLabels {
    /// The metastore method the proxy called for facts.
    pub method: &'static str,
    /// `ok`, `error`.
    pub outcome: &'static str,
}

/// Where a connection was when its handshake deadline (`server.handshake_timeout_ms`) passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeStage {
    /// The TLS handshake.
    Tls,
    /// The SASL (Kerberos) negotiation.
    Sasl,
    /// Handshakes done (or none configured); the first call had not arrived whole.
    FirstCall,
}

impl HandshakeStage {
    pub const ALL: [HandshakeStage; 3] = [
        HandshakeStage::Tls,
        HandshakeStage::Sasl,
        HandshakeStage::FirstCall,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            HandshakeStage::Tls => "tls",
            HandshakeStage::Sasl => "sasl",
            HandshakeStage::FirstCall => "first_call",
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("hms_guard");
        let m = Metrics::unregistered();
        Metrics::register_build_info(&mut registry);
        m.register_connections(&mut registry);
        m.register_calls(&mut registry);
        m.register_decisions(&mut registry);
        m.register_audit(&mut registry);
        m.register_storage_credentials(&mut registry);
        m.register_handshakes(&mut registry);
        m.register_storage_checks(&mut registry);
        m.register_reply_cache(&mut registry);
        m.register_groups(&mut registry);
        m.register_index(&mut registry);
        Metrics { registry, ..m }
    }

    /// Every metric at zero, none registered yet.
    fn unregistered() -> Self {
        Metrics {
            connections_active: Gauge::default(),
            connections: Family::default(),
            connections_rejected: Family::default(),
            rejected_transports: Family::default(),
            requests: Family::default(),
            request_duration: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            upstream_duration: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            bytes: Family::default(),
            upstream_errors: Family::default(),
            client_errors: Family::default(),
            rejected_requests: Family::default(),
            mismatched_replies: Counter::default(),
            upstream_connects: Counter::default(),
            upstream_up: Gauge::default(),
            decisions: Family::default(),
            questions: Family::default(),
            cache: Family::default(),
            facts_calls: Family::default(),
            audit_events: Counter::default(),
            audit_failures: Family::default(),
            audit_queue_depth: Gauge::default(),
            storage_sts_calls: Family::default(),
            storage_credential_refreshes: Family::default(),
            tls_handshakes: Family::default(),
            tls_reloads: Family::default(),
            sasl_handshakes: Family::default(),
            handshake_timeouts: Family::default(),
            delegation_tokens: Family::default(),
            storage_probes: Family::default(),
            storage_listings: Family::default(),
            index_state: Family::default(),
            index_entries: Gauge::default(),
            index_tables: Gauge::default(),
            index_build_tables: Gauge::default(),
            index_build_seconds: Gauge::default(),
            index_builds: Family::default(),
            index_rebuilds: Counter::default(),
            index_refreshes: Family::default(),
            storage_checks: Family::default(),
            storage_check_duration: storage_check_histogram(),
            cache_stores: Family::default(),
            cache_evictions: Counter::default(),
            cache_invalidated: Counter::default(),
            cache_bytes: Gauge::default(),
            cache_entries: Gauge::default(),
            cache_serving: Gauge::default(),
            notification_polls: Family::default(),
            notification_gaps: Counter::default(),
            notification_last_event: Gauge::default(),
            notification_lag_ms: Gauge::default(),
            group_lookups: Family::default(),
            group_lookup_failures: Family::default(),
            group_names_refused: Family::default(),
            group_cache_entries: Gauge::default(),
            registry: Registry::default(),
        }
    }

    fn register_groups(&self, registry: &mut Registry) {
        registry.register(
            "group_lookups",
            "Group lookups by source and outcome",
            self.group_lookups.clone(),
        );
        registry.register(
            "group_lookup_failures",
            "Group lookups that failed, by failing source",
            self.group_lookup_failures.clone(),
        );
        registry.register(
            "group_names_refused",
            "Group names from a source left out by the names rule",
            self.group_names_refused.clone(),
        );
        registry.register(
            "group_cache_entries",
            "Users whose groups are cached",
            self.group_cache_entries.clone(),
        );
    }

    /// `build_info`: 1, labelled with the version.
    fn register_build_info(registry: &mut Registry) {
        let info: Family<BuildLabels, Gauge> = Family::default();
        info.get_or_create(&BuildLabels {
            version: env!("CARGO_PKG_VERSION"),
        })
        .set(1);
        registry.register("build_info", "hms-guard build", info);
    }

    /// Client connections: open, accepted, refused.
    fn register_connections(&self, registry: &mut Registry) {
        registry.register(
            "connections_active",
            "Client connections open now",
            self.connections_active.clone(),
        );
        registry.register(
            "connections",
            "Client connections accepted, by detected transport",
            self.connections.clone(),
        );
        registry.register(
            "connections_rejected",
            "Client connections closed at accept (kind: limit, shutdown)",
            self.connections_rejected.clone(),
        );
        registry.register(
            "rejected_transports",
            "Client connections closed because their transport is not accepted",
            self.rejected_transports.clone(),
        );
    }

    /// Calls relayed: counts, durations, bytes, failures on either side, the upstream's state.
    fn register_calls(&self, registry: &mut Registry) {
        registry.register(
            "requests",
            "Client calls, by method and decision",
            self.requests.clone(),
        );
        registry.register_with_unit(
            "request_duration",
            "Time from a complete client call to the last reply byte written, by method",
            Unit::Seconds,
            self.request_duration.clone(),
        );
        registry.register_with_unit(
            "upstream_duration",
            "Time from the call written upstream to the last reply byte read, by method",
            Unit::Seconds,
            self.upstream_duration.clone(),
        );
        registry.register_with_unit(
            "proxied",
            "Message bytes relayed, by direction",
            Unit::Bytes,
            self.bytes.clone(),
        );
        registry.register(
            "upstream_errors",
            "Upstream failures (kind: connect, timeout, closed, protocol, mid_reply, write)",
            self.upstream_errors.clone(),
        );
        registry.register(
            "client_errors",
            "Client-caused failures (kind: protocol, too_large, timeout, closed_mid_message, sasl_frame — a wrapped frame refused: forged, repeated or out of order)",
            self.client_errors.clone(),
        );
        registry.register(
            "rejected_requests",
            "Requests refused because the metastore could read them differently (kind: field_type, duplicate_field, message_type, ...)",
            self.rejected_requests.clone(),
        );
        registry.register(
            "mismatched_replies",
            "Metastore replies whose method name or sequence id did not answer the call in flight",
            self.mismatched_replies.clone(),
        );
        registry.register(
            "upstream_connects",
            "Upstream connections opened",
            self.upstream_connects.clone(),
        );
        registry.register(
            "upstream_up",
            "1 if the last readiness probe reached a metastore, else 0",
            self.upstream_up.clone(),
        );
    }

    /// Authorization decisions and the facts and caches behind them.
    fn register_decisions(&self, registry: &mut Registry) {
        registry.register(
            "decisions",
            "Authorization decisions, by decision and reason",
            self.decisions.clone(),
        );
        registry.register(
            "questions",
            "Engines' questions answered by hms-guard itself (client: hms-guard-spark or other; operation: write_data, create_table, read_path, write_path)",
            self.questions.clone(),
        );
        registry.register(
            "cache_lookups",
            "Cache lookups (cache: grants, objects, holders, shapes, narrowings, viewed, storage_credentials, storage_decisions, replies; result: hit, miss; replies also expired, bypassed)",
            self.cache.clone(),
        );
        registry.register(
            "facts_calls",
            "Calls the proxy made to the metastore to gather facts, by method and outcome",
            self.facts_calls.clone(),
        );
    }

    /// The shared metadata cache and the notification-log follower.
    fn register_reply_cache(&self, registry: &mut Registry) {
        registry.register(
            "reply_cache_stores",
            "Replies offered to the shared metadata cache (outcome: stored, too_large, raced)",
            self.cache_stores.clone(),
        );
        registry.register(
            "reply_cache_evictions",
            "Entries evicted to stay within cache.max_bytes",
            self.cache_evictions.clone(),
        );
        registry.register(
            "reply_cache_invalidated",
            "Entries dropped by writes and notification-log events",
            self.cache_invalidated.clone(),
        );
        registry.register_with_unit(
            "reply_cache",
            "Bytes held by the shared metadata cache",
            Unit::Bytes,
            self.cache_bytes.clone(),
        );
        registry.register(
            "reply_cache_entries",
            "Entries in the shared metadata cache",
            self.cache_entries.clone(),
        );
        registry.register(
            "reply_cache_serving",
            "1 while the shared metadata cache answers calls (the notification log followed within cache.max_staleness_ms)",
            self.cache_serving.clone(),
        );
        registry.register(
            "notification_polls",
            "Reads of the metastore's notification log (outcome: ok, error)",
            self.notification_polls.clone(),
        );
        registry.register(
            "notification_gaps",
            "Gaps in the notification log (events purged before they were read): everything cached was dropped",
            self.notification_gaps.clone(),
        );
        registry.register(
            "notification_last_event",
            "The id of the last notification-log event followed",
            self.notification_last_event.clone(),
        );
        registry.register(
            "notification_lag_ms",
            "Milliseconds since the notification log was last read to its end",
            self.notification_lag_ms.clone(),
        );
    }

    /// The shared metadata cache's lookups.
    pub fn cache_lookup(&self, result: &'static str) {
        self.cache
            .get_or_create(&CacheLabels {
                cache: "replies",
                result,
            })
            .inc();
    }

    pub fn cache_store(&self, outcome: &'static str) {
        self.cache_stores
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// The audit trail's writes, failures and queue.
    fn register_audit(&self, registry: &mut Registry) {
        registry.register(
            "audit_events",
            "Audit lines written",
            self.audit_events.clone(),
        );
        registry.register(
            "audit_failures",
            "Audit write failures (kind: write, rotate, open)",
            self.audit_failures.clone(),
        );
        registry.register(
            "audit_queue_depth",
            "Audit events waiting to be written",
            self.audit_queue_depth.clone(),
        );
    }

    /// Storage credentials: STS calls and cache refreshes.
    fn register_storage_credentials(&self, registry: &mut Registry) {
        registry.register(
            "storage_sts_calls",
            "STS AssumeRole attempts of storage checks (hop: user, bucket; outcome: ok, denied, error)",
            self.storage_sts_calls.clone(),
        );
        registry.register(
            "storage_credential_refreshes",
            "Storage credential cache fills and renewals, one per key and renewal, retries included (outcome: ok, error)",
            self.storage_credential_refreshes.clone(),
        );
    }

    /// Handshakes and credentials: TLS, SASL, their deadline, delegation tokens, TLS reloads.
    fn register_handshakes(&self, registry: &mut Registry) {
        registry.register(
            "tls_handshakes",
            "TLS handshakes with clients (outcome: ok, error — a failed handshake, or a client certificate that names no user)",
            self.tls_handshakes.clone(),
        );
        registry.register(
            "sasl_handshakes",
            "Kerberos (SASL/GSSAPI) handshakes with clients (outcome: ok; not_sasl — a client without Kerberos, refused; mechanism, kerberos, credential, authzid, unmapped, qop, unprotected — the session lacks mutual authentication, an acceptor subkey or, for a wrapped layer, sequence detection, protocol, client_failed, timeout, io — refused)",
            self.sasl_handshakes.clone(),
        );
        registry.register(
            "handshake_timeouts",
            "Connections closed because they had not sent a whole first call within server.handshake_timeout_ms of being accepted, by the stage they were in (kind: tls, sasl, first_call)",
            self.handshake_timeouts.clone(),
        );
        for stage in HandshakeStage::ALL {
            self.handshake_timeouts
                .get_or_create(&KindLabels {
                    kind: stage.as_str(),
                })
                .inc_by(0);
        }
        registry.register(
            "delegation_tokens",
            "Delegation tokens asked of a kerberized metastore to act as a caller (outcome: ok — a new token, renewed — the caller's last token renewed, error — the caller's call is refused, the reason in its exception)",
            self.delegation_tokens.clone(),
        );
        registry.register(
            "tls_reloads",
            "Reloads of changed TLS files (outcome: ok, error — the previous certificate, key and CA stay in use)",
            self.tls_reloads.clone(),
        );
    }

    /// Storage checks and the AWS calls deciding them.
    fn register_storage_checks(&self, registry: &mut Registry) {
        registry.register(
            "storage_probes",
            "AWS calls deciding a storage check: S3 probes, or IAM simulations in simulate mode (action: read, write; outcome: allow, deny, error)",
            self.storage_probes.clone(),
        );
        registry.register(
            "storage_listings",
            "Listings (S3 ListObjectsV2, one key, the proxy's own identity) of the default place a table is created or renamed into (outcome: empty — exempt from the caller's check, occupied — the caller's check applies, error — denied)",
            self.storage_listings.clone(),
        );
        registry.register(
            "storage_checks",
            "Storage checks of location-bearing DDL (action; outcome: allow, deny, unavailable; cached: decision cache answered)",
            self.storage_checks.clone(),
        );
        registry.register_with_unit(
            "storage_check_duration",
            "Time of one storage check, cached or not",
            Unit::Seconds,
            self.storage_check_duration.clone(),
        );
    }

    /// The location index (decision/index).
    fn register_index(&self, registry: &mut Registry) {
        registry.register(
            "index_state",
            "The location index's state: 1 for the current one (state: disabled, building, ready, incomplete)",
            self.index_state.clone(),
        );
        registry.register(
            "index_entries",
            "Locations the location index holds (tables' and partitions' outside their table)",
            self.index_entries.clone(),
        );
        registry.register(
            "index_tables",
            "Tables with a location in the location index",
            self.index_tables.clone(),
        );
        registry.register(
            "index_build_tables",
            "Tables read by the location index's current (or last) build: its progress",
            self.index_build_tables.clone(),
        );
        registry.register_with_unit(
            "index_build_duration",
            "How long the location index's last build took",
            Unit::Seconds,
            self.index_build_seconds.clone(),
        );
        registry.register(
            "index_builds",
            "Builds of the location index, the first and every rescan (outcome: ok, error)",
            self.index_builds.clone(),
        );
        registry.register(
            "index_rebuilds",
            "Rebuilds of the location index started by its periodic rescan (index.rescan_ms) or a gap in the notification log",
            self.index_rebuilds.clone(),
        );
        registry.register(
            "index_refreshes",
            "Tables the location index read again after a call through the proxy changed them (outcome: ok, error — the next rescan reads them)",
            self.index_refreshes.clone(),
        );
    }

    /// Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }

    pub fn upstream_error(&self, kind: &'static str) {
        self.upstream_errors
            .get_or_create(&KindLabels { kind })
            .inc();
    }

    /// Counts a connection closed at its handshake deadline.
    pub fn handshake_timeout(&self, stage: HandshakeStage) {
        self.handshake_timeouts
            .get_or_create(&KindLabels {
                kind: stage.as_str(),
            })
            .inc();
    }

    pub fn client_error(&self, kind: &'static str) {
        self.client_errors.get_or_create(&KindLabels { kind }).inc();
    }

    /// Counts `n` bytes relayed in `direction` (`client_to_upstream`, `upstream_to_client`).
    pub fn count_bytes(&self, direction: &'static str, n: usize) {
        self.bytes
            .get_or_create(&DirectionLabels { direction })
            .inc_by(n as u64);
    }
}
