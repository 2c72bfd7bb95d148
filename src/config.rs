//! The configuration tree: one TOML document, unknown keys rejected, units in key names.
//!
//! `Config::parse` collects every error it can find (syntax aside) instead of stopping at the
//! first, so `hms-guard check-config` can list them all at once.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::error::config_error as err;
/// Its home is `error`, beside the other failures; re-exported for the documents' readers.
pub use crate::error::ConfigError;

/// Environment variable naming the config file.
pub const CONFIG_ENV: &str = "HMS_GUARD_CONFIG";

/// The whole configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The Thrift listener clients connect to.
    pub server: ServerConfig,
    /// The real metastore(s).
    pub upstream: UpstreamConfig,
    /// The admin HTTP listener (metrics, health).
    pub admin: AdminConfig,
    /// Hard bounds on what a peer can make the proxy hold.
    pub limits: LimitsConfig,
    /// Log output.
    pub logging: LoggingConfig,
    /// The audit trail: one JSON line per decided call.
    pub audit: AuditConfig,
    /// Who the caller is.
    pub identity: IdentityConfig,
    /// Grant enforcement.
    pub authz: AuthzConfig,
    /// The user's own storage access for location-bearing DDL (dual IAM).
    pub storage: crate::decision::storage::StorageConfig,
    /// The location index of the metastore's tables (locations are exclusive).
    pub index: IndexConfig,
    /// The shared metadata cache (off by default).
    pub cache: CacheConfig,
    /// The metastore's notification log, followed by the cache and the index.
    pub notifications: NotificationsConfig,
}

/// `[notifications]`: the metastore's notification log (`get_next_notification`), followed
/// while the shared metadata cache or the location index is on: each event drops the cache's
/// entries of what it names and reads the table into the index again.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotificationsConfig {
    /// Follow the log (the metastore needs a notification listener, e.g. Hive's
    /// DbNotificationListener); `false`: the cache's bound on others' changes is
    /// `cache.ttl_ms`, the index's `index.rescan_ms`.
    pub enabled: bool,
    /// How often the log is read.
    pub poll_ms: u64,
}

impl Default for NotificationsConfig {
    fn default() -> Self {
        NotificationsConfig {
            enabled: true,
            poll_ms: 500,
        }
    }
}

impl NotificationsConfig {
    pub fn validate(&self) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        if !(10..=600_000).contains(&self.poll_ms) {
            errors.push(err(
                "notifications.poll_ms",
                "must be between 10 and 600000",
            ));
        }
        errors
    }
}

/// `[cache]`: replies of reads that do not depend on the caller, kept for every client
/// (docs/OPERATIONS.md, "The shared metadata cache").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    pub enabled: bool,
    /// Bytes held in all (replies, keys and bookkeeping).
    pub max_bytes: u64,
    /// A larger reply is not kept.
    pub max_entry_bytes: u64,
    /// The longest an entry is served, whatever else happens.
    pub ttl_ms: u64,
    /// The follower further behind than this: nothing is served from the cache.
    pub max_staleness_ms: u64,
    /// Keep replies per user (for a metastore that filters its replies by user).
    pub per_user: bool,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            enabled: false,
            max_bytes: 256 * 1024 * 1024,
            max_entry_bytes: 16 * 1024 * 1024,
            ttl_ms: 300_000,
            max_staleness_ms: 5_000,
            per_user: false,
        }
    }
}

impl CacheConfig {
    pub fn validate(&self, notifications: &NotificationsConfig) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        for (key, v) in [
            ("cache.max_bytes", self.max_bytes),
            ("cache.max_entry_bytes", self.max_entry_bytes),
            ("cache.ttl_ms", self.ttl_ms),
            ("cache.max_staleness_ms", self.max_staleness_ms),
        ] {
            if v == 0 {
                errors.push(err(key, "must be greater than 0"));
            }
        }
        if self.max_entry_bytes > self.max_bytes {
            errors.push(err(
                "cache.max_entry_bytes",
                "must not exceed cache.max_bytes",
            ));
        }
        if notifications.enabled && self.max_staleness_ms <= notifications.poll_ms {
            errors.push(err(
                "cache.max_staleness_ms",
                "must be greater than notifications.poll_ms (the log is read every poll_ms)",
            ));
        }
        errors
    }
}

/// `[index]`: the location index of the metastore's tables, by which a location another
/// table claims needs that table's privileges (docs/STORAGE.md "Locations are exclusive").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IndexConfig {
    /// Build the index and apply the rule.
    pub enabled: bool,
    /// Between two full rescans of the metastore (changes made directly on it).
    pub rescan_ms: u64,
    /// Locations the index holds at most; past it the index is incomplete and calls that name
    /// a location are refused.
    pub max_entries: usize,
    /// Tables per `get_table_objects_by_name` call.
    pub table_batch: usize,
    /// Partitions per `get_partitions_by_names` call.
    pub partition_batch: usize,
    /// How long a call naming a location waits for the first build before it is refused.
    pub build_wait_ms: u64,
    /// Prefixes where locations are expected to overlap (a staging area): exempt.
    pub shared_prefixes: Vec<String>,
}

impl Default for IndexConfig {
    fn default() -> Self {
        let d = crate::decision::index::IndexSettings::default();
        IndexConfig {
            enabled: d.enabled,
            rescan_ms: d.rescan.as_millis() as u64,
            max_entries: d.max_entries,
            table_batch: d.table_batch,
            partition_batch: d.partition_batch,
            build_wait_ms: d.build_wait.as_millis() as u64,
            shared_prefixes: Vec::new(),
        }
    }
}

impl IndexConfig {
    /// Positive bounds (with upper limits) and shared prefixes that canonicalise.
    pub fn validate(&self) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        let bounded = [
            ("index.rescan_ms", self.rescan_ms, 1_000, 7 * 24 * 3_600_000),
            ("index.max_entries", self.max_entries as u64, 1, 100_000_000),
            ("index.table_batch", self.table_batch as u64, 1, 10_000),
            (
                "index.partition_batch",
                self.partition_batch as u64,
                1,
                10_000,
            ),
            ("index.build_wait_ms", self.build_wait_ms, 0, 600_000),
        ];
        for (key, v, lo, hi) in bounded {
            if v < lo || v > hi {
                errors.push(err(key, format!("must be between {lo} and {hi}, not {v}")));
            }
        }
        for (i, p) in self.shared_prefixes.iter().enumerate() {
            match crate::decision::storage::canonical_location(p) {
                Ok(c) if c.segments.is_empty() => errors.push(err(
                    &format!("index.shared_prefixes[{i}]"),
                    format!("`{p}` is a whole bucket or filesystem: name a folder under it"),
                )),
                Ok(_) => {}
                Err(e) => errors.push(err(
                    &format!("index.shared_prefixes[{i}]"),
                    format!("`{p}` is not a location: {e}"),
                )),
            }
        }
        errors
    }

    /// The resolved settings.
    /// `follow_log`: the notification log is followed (`[notifications] enabled`).
    pub fn settings(&self, follow_log: bool) -> crate::decision::index::IndexSettings {
        crate::decision::index::IndexSettings {
            enabled: self.enabled,
            follow_log,
            rescan: Duration::from_millis(self.rescan_ms),
            max_entries: self.max_entries,
            table_batch: self.table_batch,
            partition_batch: self.partition_batch,
            build_wait: Duration::from_millis(self.build_wait_ms),
            shared_prefixes: self.shared_prefixes.clone(),
        }
    }
}

/// `[identity]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentityConfig {
    /// `set_ugi`: trust the user the client claims with `set_ugi` (trusted networks only);
    /// `pinned`: every connection acts as `pinned_user` whatever the client claims (sidecar).
    pub mode: IdentityMode,
    /// The user of a pinned proxy. The environment variable `HMS_GUARD_PINNED_USER` overrides.
    pub pinned_user: String,
    /// The groups of a pinned proxy. `HMS_GUARD_PINNED_GROUPS` (comma-separated) overrides.
    pub pinned_groups: Vec<String>,
    /// In `set_ugi` mode, take the groups the client claims instead of `groups`.
    pub trust_client_groups: bool,
    /// Where users' groups come from (`set_ugi`, `certificate` and `kerberos` modes).
    pub groups: crate::auth::groups::config::GroupsConfig,
    /// `kerberos` mode: the service principal, its keytab and the name mapping.
    pub kerberos: KerberosConfig,
}

/// `[identity.kerberos]`: clients authenticate with Kerberos (SASL/GSSAPI), as to a metastore
/// with `hive.metastore.sasl.enabled`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KerberosConfig {
    /// The service principal clients ask a ticket for, e.g. `hive/_HOST@EXAMPLE.COM`
    /// (`_HOST`: `hostname`).
    pub principal: String,
    /// The keytab holding its keys; a replaced keytab is used from the next connection on.
    pub keytab: String,
    /// The host name `_HOST` stands for; default: this machine's.
    pub hostname: String,
    /// The Kerberos configuration file (`KRB5_CONFIG`); default: the system's.
    pub krb5_conf: String,
    /// The security layers offered to clients: `auth`, `auth-int`, `auth-conf`.
    pub qop: Vec<crate::auth::kerberos::Qop>,
    /// How an authenticated principal becomes a user: Hadoop `auth_to_local` rules, tried in
    /// order; a principal no rule maps is refused.
    pub auth_to_local: Vec<String>,
    /// The realm `DEFAULT` maps; default: the service principal's.
    pub default_realm: String,
}

impl Default for KerberosConfig {
    fn default() -> Self {
        use crate::auth::kerberos::Qop;
        KerberosConfig {
            principal: String::new(),
            keytab: String::new(),
            hostname: String::new(),
            krb5_conf: String::new(),
            qop: vec![Qop::Auth, Qop::AuthInt, Qop::AuthConf],
            auth_to_local: vec!["DEFAULT".into()],
            default_realm: String::new(),
        }
    }
}

impl Default for IdentityConfig {
    fn default() -> Self {
        IdentityConfig {
            mode: IdentityMode::SetUgi,
            pinned_user: String::new(),
            pinned_groups: Vec::new(),
            trust_client_groups: false,
            groups: Default::default(),
            kerberos: KerberosConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentityMode {
    SetUgi,
    Pinned,
    /// The name in the client's TLS certificate (`server.tls.client_ca` required).
    Certificate,
    /// The client's Kerberos principal (SASL/GSSAPI), mapped by `identity.kerberos.auth_to_local`.
    Kerberos,
}

/// Which name of a client certificate is the user (`server.tls.client_identity`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientIdentity {
    /// The subject's common name.
    Cn,
    /// The first DNS name among the subject alternative names.
    SanDns,
    /// The first e-mail address (rfc822Name) among the subject alternative names.
    SanEmail,
    /// The first URI among the subject alternative names.
    SanUri,
}

impl ClientIdentity {
    pub fn as_str(self) -> &'static str {
        match self {
            ClientIdentity::Cn => "subject common name",
            ClientIdentity::SanDns => "DNS subject alternative name",
            ClientIdentity::SanEmail => "e-mail subject alternative name",
            ClientIdentity::SanUri => "URI subject alternative name",
        }
    }
}

/// `[server.tls]`: TLS towards clients; empty `cert` disables it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerTlsConfig {
    /// The listener's certificate chain (PEM).
    pub cert: String,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: String,
    /// When set, every client must present a certificate signed by this CA (PEM).
    pub client_ca: String,
    /// Which name of the client certificate is the user (`identity.mode = "certificate"`).
    pub client_identity: ClientIdentity,
    /// How often the files are checked for changes (a changed file is loaded without a
    /// restart).
    pub reload_interval_ms: u64,
}

impl Default for ServerTlsConfig {
    fn default() -> Self {
        ServerTlsConfig {
            cert: String::new(),
            key: String::new(),
            client_ca: String::new(),
            client_identity: ClientIdentity::Cn,
            reload_interval_ms: 10_000,
        }
    }
}

/// `[authz]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthzConfig {
    /// `enforce` (deny), `shadow` (decide and audit, forward anyway) or `off` (pass-through).
    pub mode: AuthzMode,
    /// The metastore role whose holders are administrators.
    pub admin_role: String,
    /// Users treated as administrators whatever their grants (bootstrap).
    pub admin_users: Vec<String>,
    /// How long cached grants and object owners are trusted; also the longest delay before a
    /// grant change made directly on the metastore (not through this proxy) takes effect.
    pub cache_ttl_ms: u64,
    /// `deny` (default) or `allow` methods missing from the method table.
    pub unknown_methods: UnknownMethods,
    /// Filter table listings to the tables the user holds a privilege on.
    pub filter_listings: bool,
    /// Allow delegation-token and master-key calls (to admins).
    pub allow_tokens: bool,
    /// The user the proxy's own metastore connections `set_ugi` as.
    pub service_user: String,
    /// Bound on one facts call to the metastore.
    pub facts_timeout_ms: u64,
    /// Largest facts reply accepted, in bytes.
    pub facts_max_reply_bytes: u64,
    /// Most principals (user, groups, roles) reachable from one identity.
    pub max_principals: usize,
    /// Largest listing reply held for filtering, in bytes.
    pub max_filtered_reply_bytes: u64,
}

impl Default for AuthzConfig {
    fn default() -> Self {
        AuthzConfig {
            mode: AuthzMode::Enforce,
            admin_role: "admin".into(),
            admin_users: Vec::new(),
            cache_ttl_ms: 30_000,
            unknown_methods: UnknownMethods::Deny,
            filter_listings: true,
            allow_tokens: false,
            service_user: "hms-guard".into(),
            facts_timeout_ms: 10_000,
            facts_max_reply_bytes: 64 * 1024 * 1024,
            max_principals: 256,
            max_filtered_reply_bytes: 64 * 1024 * 1024,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthzMode {
    Enforce,
    Shadow,
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownMethods {
    Deny,
    Allow,
}

/// `[server]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address the Thrift listener binds, `host:port`.
    pub listen: String,
    /// Most client connections served at once; further connections are closed at accept.
    pub max_connections: usize,
    /// Most connections from one client address at once; further ones are closed at accept.
    pub max_connections_per_client: usize,
    /// A client connection with no call for this long is closed.
    pub idle_timeout_ms: u64,
    /// Once a client message has started, all of it must arrive within this time.
    pub read_timeout_ms: u64,
    /// Writing to a client must make progress within this time.
    pub write_timeout_ms: u64,
    /// A new connection must have finished its handshakes (TLS, SASL) and sent its first
    /// whole call within this time of being accepted; otherwise it is closed.
    pub handshake_timeout_ms: u64,
    /// On SIGTERM/SIGINT, in-flight calls get this long to finish before the process exits.
    pub shutdown_grace_ms: u64,
    /// TLS towards clients.
    pub tls: ServerTlsConfig,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "0.0.0.0:9083".into(),
            max_connections: 4096,
            max_connections_per_client: 512,
            idle_timeout_ms: 3_600_000,
            read_timeout_ms: 60_000,
            write_timeout_ms: 60_000,
            handshake_timeout_ms: 10_000,
            shutdown_grace_ms: 30_000,
            tls: ServerTlsConfig::default(),
        }
    }
}

/// `[upstream]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    /// Metastore URIs (`thrift://host:port`), tried in order on connect failure, like
    /// `hive.metastore.uris`.
    pub uris: Vec<String>,
    /// Bound on one TCP connect attempt (per resolved address).
    pub connect_timeout_ms: u64,
    /// Longest wait for the next reply byte from the metastore (a slow call's whole run time).
    pub read_timeout_ms: u64,
    /// Writing a request to the metastore must make progress within this time.
    pub write_timeout_ms: u64,
    /// Which metastore's Thrift schema requests are read by (`any`: every recorded version at
    /// once, the strictest).
    pub metastore_version: MetastoreVersion,
    /// The database behind the metastore (`derby`, `mysql`, `postgres`, `oracle`, `mssql`;
    /// `any`: every one of them, the strictest): how it compares principal names decides
    /// which identity names hms-guard refuses (`names.rs`).
    pub metastore_db: crate::auth::names::MetastoreDb,
    /// TLS towards the metastore.
    pub tls: UpstreamTlsConfig,
    /// Kerberos towards a kerberized metastore (`hive.metastore.sasl.enabled`).
    pub kerberos: UpstreamKerberosConfig,
}

/// `[upstream.kerberos]`: hms-guard authenticates to the metastore with its own keytab; empty
/// `principal` disables it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamKerberosConfig {
    /// hms-guard's own principal, e.g. `hms-guard/_HOST@EXAMPLE.COM` (`_HOST`: `hostname`).
    pub principal: String,
    /// The keytab holding its keys; tickets are obtained from it and renewed before they
    /// expire.
    pub keytab: String,
    /// The metastore's principal (`hive.metastore.kerberos.principal`); `_HOST` stands for
    /// each metastore URI's host. Default: `hive/_HOST@` the realm of `principal`.
    pub service_principal: String,
    /// The host name `_HOST` in `principal` stands for; default: this machine's.
    pub hostname: String,
    /// The Kerberos configuration file (`KRB5_CONFIG`); default: the system's.
    pub krb5_conf: String,
    /// The security layers hms-guard asks for, in order of preference.
    pub qop: Vec<crate::auth::kerberos::Qop>,
    /// Act as the caller at the metastore: as a proxy user there, hms-guard obtains a
    /// delegation token for each caller and opens that caller's connections with it
    /// (DIGEST-MD5). Off: every call runs as hms-guard's principal.
    pub delegation_tokens: bool,
    /// The renewer named in the tokens; default: the short name of `principal`.
    pub token_renewer: String,
    /// A caller's token is used this long, then renewed (or, when the metastore refuses to
    /// renew it, replaced by a new one).
    pub token_refresh_ms: u64,
    /// Most callers whose tokens are kept.
    pub max_tokens: usize,
    /// Bound on one SASL negotiation with the metastore (a KDC request included).
    pub handshake_timeout_ms: u64,
}

impl Default for UpstreamKerberosConfig {
    fn default() -> Self {
        use crate::auth::kerberos::Qop;
        UpstreamKerberosConfig {
            principal: String::new(),
            keytab: String::new(),
            service_principal: String::new(),
            hostname: String::new(),
            krb5_conf: String::new(),
            qop: vec![Qop::AuthConf, Qop::AuthInt, Qop::Auth],
            delegation_tokens: true,
            token_renewer: String::new(),
            token_refresh_ms: 3_600_000,
            max_tokens: 10_000,
            handshake_timeout_ms: 10_000,
        }
    }
}

/// `[upstream.tls]`: TLS towards the metastore; empty `ca` disables it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamTlsConfig {
    /// The CA (PEM) the metastore's certificate must chain to.
    pub ca: String,
    /// A client certificate chain (PEM) to present, with `key`; optional.
    pub cert: String,
    pub key: String,
    /// The name the metastore's certificate must carry; default: each URI's host.
    pub server_name: String,
}

/// The recorded metastore version a deployment's metastore reads requests as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum MetastoreVersion {
    #[serde(rename = "any")]
    Any,
    #[serde(rename = "2.3")]
    V2_3,
    #[serde(rename = "3.1")]
    V3_1,
    #[serde(rename = "4.0")]
    V4_0,
    #[serde(rename = "4.x")]
    V4X,
}

impl MetastoreVersion {
    /// The schema's version bits (fb303 is served by every version).
    pub fn bits(self) -> u8 {
        use crate::wire::schema::types::*;
        match self {
            MetastoreVersion::Any => ALL_VERSIONS,
            MetastoreVersion::V2_3 => V2_3 | FB303,
            MetastoreVersion::V3_1 => V3_1 | FB303,
            MetastoreVersion::V4_0 => V4_0 | FB303,
            MetastoreVersion::V4X => V4_X | FB303,
        }
    }
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            uris: Vec::new(),
            connect_timeout_ms: 5_000,
            read_timeout_ms: 600_000,
            write_timeout_ms: 60_000,
            metastore_version: MetastoreVersion::Any,
            metastore_db: crate::auth::names::MetastoreDb::Any,
            tls: UpstreamTlsConfig::default(),
            kerberos: UpstreamKerberosConfig::default(),
        }
    }
}

/// `[admin]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Address of the admin HTTP listener (`/metrics`, `/healthz`, `/readyz`); empty disables it.
    pub listen: String,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: "127.0.0.1:9464".into(),
        }
    }
}

/// `[limits]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest request message (a client call), in bytes; it is held whole while it is checked.
    pub max_request_bytes: u64,
    /// Request bytes held at once over all connections while calls are read and checked; a
    /// call that would go past it is refused ("busy") instead of growing memory.
    pub max_held_request_bytes: u64,
    /// Largest request of a connection that has no identity yet (before `set_ugi`).
    pub max_anonymous_request_bytes: u64,
    /// Largest reply message, in bytes; replies stream, so this bounds time, not memory.
    pub max_reply_bytes: u64,
    /// Deepest nesting of structs and containers in a message.
    pub max_depth: usize,
    /// Longest method name, in bytes.
    pub max_method_name_bytes: usize,
    /// Reply bytes held back before streaming starts: an upstream failure before this many
    /// bytes still gives the client a clean exception reply. Also the per-connection
    /// streaming buffer.
    pub reply_buffer_bytes: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_request_bytes: 100 * 1024 * 1024,
            max_held_request_bytes: 1024 * 1024 * 1024,
            max_anonymous_request_bytes: 1024 * 1024,
            max_reply_bytes: 16 * 1024 * 1024 * 1024,
            max_depth: 64,
            max_method_name_bytes: 1024,
            reply_buffer_bytes: 256 * 1024,
        }
    }
}

/// `[audit]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// `stdout` or `file`.
    pub sink: AuditSink,
    /// File path for `sink = "file"`; rotated files get `.1`, `.2`… suffixes.
    pub path: String,
    /// Rotate the file when it would grow past this size.
    pub max_file_bytes: u64,
    /// Rotated files kept (older ones are deleted).
    pub max_files: u32,
    /// Events waiting to be written; when full, calls wait (backpressure), nothing is dropped.
    pub queue_capacity: usize,
    /// Longest a call waits for room in a full queue before it fails closed.
    pub queue_wait_ms: u64,
    /// `deny` (default): while audit lines cannot be written, decided calls are denied.
    /// `allow`: they proceed and the failures are only counted.
    pub on_failure: AuditOnFailure,
    /// Also audit calls that need no decision (pass-through).
    pub all_calls: bool,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            sink: AuditSink::Stdout,
            path: String::new(),
            max_file_bytes: 100 * 1024 * 1024,
            max_files: 5,
            queue_capacity: 4096,
            queue_wait_ms: 5_000,
            on_failure: AuditOnFailure::Deny,
            all_calls: false,
        }
    }
}

impl AuditConfig {
    /// Semantic checks, every error at once (keys are `audit.*`).
    pub fn validate(&self) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        if self.sink == AuditSink::File && self.path.is_empty() {
            errors.push(err("audit.path", "required when audit.sink = \"file\""));
        }
        for (key, v) in [
            ("audit.max_file_bytes", self.max_file_bytes),
            ("audit.queue_capacity", self.queue_capacity as u64),
            ("audit.queue_wait_ms", self.queue_wait_ms),
        ] {
            if v == 0 {
                errors.push(err(key, "must be greater than 0"));
            }
        }
        errors
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditSink {
    Stdout,
    File,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditOnFailure {
    Deny,
    Allow,
}

/// `[logging]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingConfig {
    /// `json` (one object per line) or `text`.
    pub format: LogFormat,
    /// A `tracing` filter: `info`, `debug`, `hms_guard=debug,info`… `RUST_LOG` overrides it.
    pub level: String,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig {
            format: LogFormat::Json,
            level: "info".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Json,
    Text,
}

/// A parsed `thrift://host:port` URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThriftUri {
    pub host: String,
    pub port: u16,
}

impl fmt::Display for ThriftUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "thrift://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "thrift://{}:{}", self.host, self.port)
        }
    }
}

impl ThriftUri {
    pub fn parse(s: &str) -> Result<Self, String> {
        let rest = s
            .strip_prefix("thrift://")
            .ok_or_else(|| format!("`{s}` is not a thrift://host:port URI"))?;
        let rest = rest.trim_end_matches('/');
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (h, p) = v6
                .split_once("]:")
                .ok_or_else(|| format!("`{s}`: expected thrift://[v6addr]:port"))?;
            (h, p)
        } else {
            rest.rsplit_once(':')
                .ok_or_else(|| format!("`{s}`: missing :port"))?
        };
        if host.is_empty() {
            return Err(format!("`{s}`: empty host"));
        }
        let port: u16 = port
            .parse()
            .map_err(|_| format!("`{s}`: bad port `{port}`"))?;
        if port == 0 {
            return Err(format!("`{s}`: port 0"));
        }
        Ok(ThriftUri {
            host: host.into(),
            port,
        })
    }
}

impl Config {
    /// Parses and validates a TOML document, returning every error found.
    pub fn parse(text: &str) -> Result<Config, Vec<ConfigError>> {
        let config = Config::parse_unvalidated(text)?;
        let errors = config.validate();
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(errors)
        }
    }

    /// Parses a TOML document into the tree (types and unknown keys checked, every error
    /// reported) without the semantic checks of `validate`, so command-line overrides can be
    /// applied first.
    pub fn parse_unvalidated(text: &str) -> Result<Config, Vec<ConfigError>> {
        let mut table: toml::Table = match text.parse() {
            Ok(t) => t,
            Err(e) => return Err(vec![err("", format!("TOML syntax: {e}"))]),
        };
        let mut errors = Vec::new();
        // Each round reports one error at a path and drops that key, so the next round can
        // find the next one; bounded so a pathological document cannot loop for long.
        let mut config = None;
        for _ in 0..256 {
            let value = toml::Value::Table(table.clone());
            match serde_path_to_error::deserialize::<_, Config>(value) {
                Ok(c) => {
                    config = Some(c);
                    break;
                }
                Err(e) => {
                    let path = e.path().to_string();
                    let path = if path == "." { String::new() } else { path };
                    let inner = e.into_inner().to_string();
                    let first = inner.lines().next().unwrap_or_default();
                    errors.push(err(&path, first.replace("unknown field", "unknown key")));
                    if path.is_empty() || !remove_path(&mut table, &path) {
                        break;
                    }
                }
            }
        }
        match config {
            Some(c) if errors.is_empty() => Ok(c),
            other => {
                // Report the semantic problems of what did parse, too (not again for keys that
                // already failed to parse).
                let bad: Vec<String> = errors.iter().map(|e| e.key.clone()).collect();
                errors.extend(
                    other
                        .unwrap_or_default()
                        .validate()
                        .into_iter()
                        .filter(|v| !bad.iter().any(|b| v.key.starts_with(b.as_str()))),
                );
                Err(errors)
            }
        }
    }

    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, Vec<ConfigError>> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| vec![err("", format!("cannot read {}: {e}", path.display()))])?;
        Config::parse(&text)
    }

    /// Semantic checks that types alone cannot express.
    pub fn validate(&self) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        self.check_addresses(&mut errors);
        self.check_limits(&mut errors);
        self.check_tls(&mut errors);
        self.check_authz(&mut errors);
        errors.extend(self.audit.validate());
        errors.extend(self.storage.validate());
        errors.extend(self.identity.groups.validate());
        errors.extend(self.index.validate());
        errors.extend(self.cache.validate(&self.notifications));
        errors.extend(self.notifications.validate());
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.logging.level) {
            errors.push(err("logging.level", format!("bad filter: {e}")));
        }
        errors
    }

    /// The listeners' addresses and the metastore URIs.
    fn check_addresses(&self, errors: &mut Vec<ConfigError>) {
        if self.server.listen.parse::<SocketAddr>().is_err() {
            errors.push(err(
                "server.listen",
                format!("`{}` is not an ip:port address", self.server.listen),
            ));
        }
        if !self.admin.listen.is_empty() && self.admin.listen.parse::<SocketAddr>().is_err() {
            errors.push(err(
                "admin.listen",
                format!(
                    "`{}` is not an ip:port address (empty disables the admin port)",
                    self.admin.listen
                ),
            ));
        }
        if self.upstream.uris.is_empty() {
            errors.push(err(
                "upstream.uris",
                "at least one metastore URI is required (thrift://host:port)",
            ));
        }
        for (i, uri) in self.upstream.uris.iter().enumerate() {
            if let Err(e) = ThriftUri::parse(uri) {
                errors.push(err(&format!("upstream.uris[{i}]"), e));
            }
        }
    }

    /// Timeouts, counts and sizes that must be positive, and the limits' relations.
    fn check_limits(&self, errors: &mut Vec<ConfigError>) {
        let positive = [
            ("server.max_connections", self.server.max_connections as u64),
            (
                "server.max_connections_per_client",
                self.server.max_connections_per_client as u64,
            ),
            ("server.idle_timeout_ms", self.server.idle_timeout_ms),
            ("server.read_timeout_ms", self.server.read_timeout_ms),
            ("server.write_timeout_ms", self.server.write_timeout_ms),
            (
                "server.handshake_timeout_ms",
                self.server.handshake_timeout_ms,
            ),
            (
                "upstream.connect_timeout_ms",
                self.upstream.connect_timeout_ms,
            ),
            ("upstream.read_timeout_ms", self.upstream.read_timeout_ms),
            ("upstream.write_timeout_ms", self.upstream.write_timeout_ms),
            ("limits.max_request_bytes", self.limits.max_request_bytes),
            (
                "limits.max_held_request_bytes",
                self.limits.max_held_request_bytes,
            ),
            (
                "limits.max_anonymous_request_bytes",
                self.limits.max_anonymous_request_bytes,
            ),
            ("limits.max_reply_bytes", self.limits.max_reply_bytes),
            ("limits.max_depth", self.limits.max_depth as u64),
            (
                "limits.max_method_name_bytes",
                self.limits.max_method_name_bytes as u64,
            ),
            (
                "limits.reply_buffer_bytes",
                self.limits.reply_buffer_bytes as u64,
            ),
        ];
        for (key, v) in positive {
            if v == 0 {
                errors.push(err(key, "must be greater than 0"));
            }
        }
        if self.limits.max_held_request_bytes < self.limits.max_request_bytes {
            errors.push(err(
                "limits.max_held_request_bytes",
                "must be at least limits.max_request_bytes (one largest call must fit)",
            ));
        }
        if self.limits.max_depth > 1024 {
            errors.push(err("limits.max_depth", "must be at most 1024"));
        }
        if self.limits.max_request_bytes > u64::from(u32::MAX >> 1) {
            errors.push(err(
                "limits.max_request_bytes",
                "must be below 2 GiB (Thrift lengths are 32-bit)",
            ));
        }
    }

    /// TLS both ways: what goes together (and the certificate identity's CA).
    fn check_tls(&self, errors: &mut Vec<ConfigError>) {
        let tls = &self.server.tls;
        if tls.cert.is_empty() != tls.key.is_empty() {
            errors.push(err(
                "server.tls",
                "cert and key go together (both set enables TLS, both empty disables it)",
            ));
        }
        if !tls.client_ca.is_empty() && tls.cert.is_empty() {
            errors.push(err(
                "server.tls.client_ca",
                "needs server.tls.cert and server.tls.key",
            ));
        }
        if self.identity.mode == IdentityMode::Certificate && tls.client_ca.is_empty() {
            errors.push(err(
                "identity.mode",
                "\"certificate\" needs server.tls.client_ca (and cert, key): the user is the name in the client's certificate",
            ));
        }
        let up = &self.upstream.tls;
        if up.cert.is_empty() != up.key.is_empty() {
            errors.push(err("upstream.tls", "cert and key go together"));
        }
        if up.ca.is_empty() && (!up.cert.is_empty() || !up.server_name.is_empty()) {
            errors.push(err(
                "upstream.tls.ca",
                "required for TLS towards the metastore (cert, key and server_name need it)",
            ));
        }
        if !tls.cert.is_empty() && tls.reload_interval_ms == 0 {
            errors.push(err(
                "server.tls.reload_interval_ms",
                "must be greater than 0",
            ));
        }
    }

    /// `[authz]`.
    fn check_authz(&self, errors: &mut Vec<ConfigError>) {
        if self.authz.admin_role.is_empty() {
            errors.push(err("authz.admin_role", "must not be empty"));
        }
        for (key, v) in [
            ("authz.cache_ttl_ms", self.authz.cache_ttl_ms),
            ("authz.facts_timeout_ms", self.authz.facts_timeout_ms),
            (
                "authz.facts_max_reply_bytes",
                self.authz.facts_max_reply_bytes,
            ),
            ("authz.max_principals", self.authz.max_principals as u64),
            (
                "authz.max_filtered_reply_bytes",
                self.authz.max_filtered_reply_bytes,
            ),
        ] {
            if v == 0 {
                errors.push(err(key, "must be greater than 0"));
            }
        }
    }
}

/// Milliseconds to a `Duration`.
pub fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

/// Removes the value at a `serde_path_to_error` path (`a.b`, `a.list[2]`) from a table.
fn remove_path(table: &mut toml::Table, path: &str) -> bool {
    let segments: Vec<&str> = path.split('.').collect();
    let (last, parents) = segments.split_last().expect("split yields one segment");
    let mut cur = table;
    for seg in parents {
        let (name, _) = split_index(seg);
        match cur.get_mut(name) {
            Some(toml::Value::Table(t)) => cur = t,
            _ => return false,
        }
    }
    let (name, index) = split_index(last);
    match index {
        None => cur.remove(name).is_some(),
        Some(i) => match cur.get_mut(name) {
            Some(toml::Value::Array(a)) if i < a.len() => {
                // Drop the whole array: removing one element would shift the others' indices.
                cur.remove(name);
                true
            }
            _ => cur.remove(name).is_some(),
        },
    }
}

fn split_index(seg: &str) -> (&str, Option<usize>) {
    match seg.split_once('[') {
        Some((name, rest)) => (name, rest.trim_end_matches(']').parse().ok()),
        None => (seg, None),
    }
}
