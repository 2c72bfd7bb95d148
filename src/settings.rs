//! Settings: the configuration resolved once, at start-up, into the typed values the stages
//! use — socket addresses, parsed metastore URIs, durations, the pinned identity (its
//! environment overrides read here and nowhere else), codec limits. Nothing re-parses a string
//! or reads the environment after this.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::auth::names::{self, NameKind};
use crate::config::{
    ms, AuthzConfig, AuthzMode, Config, IdentityMode, ServerConfig, ServerTlsConfig, ThriftUri,
    UnknownMethods, UpstreamTlsConfig,
};
use crate::decision::storage::config::StorageSettings;
use crate::error::{config_error as err, ConfigError};
use crate::listener::identity::{Identity, IdentitySettings, IdentitySource};
use crate::ops::audit::AuditSettings;
use crate::wire::codec::Limits;
use crate::wire::schema::ReadLimits;

/// Environment variables that override the pinned identity (read once, by `resolve`).
pub const PINNED_USER_ENV: &str = "HMS_GUARD_PINNED_USER";
pub const PINNED_GROUPS_ENV: &str = "HMS_GUARD_PINNED_GROUPS";

/// Everything resolved, `[audit]` and `[storage]` included (`Audit::start` and
/// `StorageGuard::new` take their settings). `[logging]` is read before this, by the command
/// line.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    /// `None`: the admin listener is disabled.
    pub admin_listen: Option<SocketAddr>,
    pub server: ServerSettings,
    pub upstream: UpstreamSettings,
    pub identity: IdentitySettings,
    pub limits: LimitSettings,
    /// TLS towards clients (`[server.tls]`), when a certificate is configured.
    pub tls: Option<crate::auth::tls::TlsSettings>,
    /// TLS towards the metastore (`[upstream.tls]`), when a CA is configured.
    pub upstream_tls: Option<crate::auth::tls::UpstreamTlsSettings>,
    /// Kerberos towards the metastore (`[upstream.kerberos]`), when a principal is configured.
    pub upstream_kerberos: Option<std::sync::Arc<crate::auth::kerberos::UpstreamKerberosSettings>>,
    pub authz: AuthzSettings,
    pub audit: AuditSettings,
    pub storage: StorageSettings,
    /// The shared metadata cache, when `[cache] enabled`.
    pub cache: Option<crate::upstream::cache::CacheSettings>,
    /// How often the metastore's notification log is read (`None`: not followed).
    pub notifications: Option<Duration>,
}

/// `[authz]` resolved: what the policy stage decides by.
#[derive(Debug, Clone)]
pub struct AuthzSettings {
    /// `enforce`, `shadow` or `off`.
    pub mode: AuthzMode,
    /// The metastore role whose holders are administrators.
    pub admin_role: String,
    /// Users treated as administrators whatever their grants.
    pub admin_users: Vec<String>,
    /// How long cached grants and object owners are trusted.
    pub cache_ttl: Duration,
    /// Methods missing from the method table are allowed (`unknown_methods = "allow"`).
    pub allow_unknown_methods: bool,
    /// Table listings are filtered to the tables the user holds a privilege on.
    pub filter_listings: bool,
    /// Delegation-token and master-key calls are allowed (to admins).
    pub allow_tokens: bool,
    /// The user the proxy's own metastore connections `set_ugi` as.
    pub service_user: String,
    /// Bound on one facts call to the metastore.
    pub facts_timeout: Duration,
    /// Largest facts reply accepted, in bytes.
    pub facts_max_reply_bytes: u64,
    /// Most principals (user, groups, roles) reachable from one identity.
    pub max_principals: usize,
    /// `[index]`: the location index, and whether locations are exclusive.
    pub index: crate::decision::index::IndexSettings,
}

impl AuthzSettings {
    fn resolve(
        a: &AuthzConfig,
        index: &crate::config::IndexConfig,
        notifications: &crate::config::NotificationsConfig,
    ) -> AuthzSettings {
        AuthzSettings {
            mode: a.mode,
            admin_role: a.admin_role.clone(),
            admin_users: a.admin_users.clone(),
            cache_ttl: ms(a.cache_ttl_ms),
            allow_unknown_methods: a.unknown_methods == UnknownMethods::Allow,
            filter_listings: a.filter_listings,
            allow_tokens: a.allow_tokens,
            service_user: a.service_user.clone(),
            facts_timeout: ms(a.facts_timeout_ms),
            facts_max_reply_bytes: a.facts_max_reply_bytes,
            max_principals: a.max_principals,
            index: index.settings(notifications.enabled),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub max_connections: usize,
    pub max_connections_per_client: usize,
    pub idle_timeout: Duration,
    pub read_timeout: Duration,
    pub write_timeout: Duration,
    /// From accept to the first whole call, handshakes included.
    pub handshake_timeout: Duration,
    pub shutdown_grace: Duration,
}

#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    /// In failover order.
    pub uris: Vec<ThriftUri>,
    pub timeouts: Timeouts,
    /// The schema version bits requests are read by (`upstream.metastore_version`).
    pub versions: u8,
}

/// How long the metastore gets: to connect (per resolved address), to take a request, and to
/// send the next byte of a reply.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    pub write: Duration,
    pub read: Duration,
}

#[derive(Debug, Clone)]
pub struct LimitSettings {
    /// How client requests are walked.
    pub request: Limits,
    /// How metastore replies are walked.
    pub reply: Limits,
    /// How requests are read (schema-exact).
    pub read: ReadLimits,
    pub max_held_request_bytes: u64,
    pub max_anonymous_request_bytes: u64,
    pub reply_buffer_bytes: usize,
    /// Largest reply read whole to be filtered or checked (`authz.max_filtered_reply_bytes`).
    pub max_checked_reply_bytes: u64,
}

impl Settings {
    /// Validates `config` (every error at once) and resolves it. The pinned identity's
    /// environment overrides are read here.
    pub fn resolve(config: Config) -> Result<Settings, Vec<ConfigError>> {
        let env = |k: &str| std::env::var(k).ok();
        Settings::resolve_with(config, env)
    }

    /// `resolve` with the environment given (tests).
    pub fn resolve_with(
        config: Config,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Settings, Vec<ConfigError>> {
        let pinned = pinned_identity(&config, &env);
        let mut errors = config.validate();
        if config.identity.mode == IdentityMode::Pinned && pinned.is_anonymous() {
            errors.push(err(
                "identity.pinned_user",
                format!("required when identity.mode = \"pinned\" (or set {PINNED_USER_ENV})"),
            ));
        }
        errors.extend(name_errors(&config, &pinned));
        let (kerberos, upstream_kerberos) = both_kerberos(&config, &mut errors);
        let listen = config.server.listen.parse::<SocketAddr>();
        let admin_listen = match config.admin.listen.as_str() {
            "" => Ok(None),
            a => a.parse::<SocketAddr>().map(Some),
        };
        let uris: Vec<Result<ThriftUri, String>> = config
            .upstream
            .uris
            .iter()
            .map(|u| ThriftUri::parse(u))
            .collect();
        // `validate` reports every malformed address and URI by its key.
        let (Ok(listen), Ok(admin_listen), true) = (
            listen,
            admin_listen,
            errors.is_empty() && uris.iter().all(Result::is_ok),
        ) else {
            if errors.is_empty() {
                errors.push(err("", "the configuration could not be resolved"));
            }
            return Err(errors);
        };
        // `validate` above reported these sections' errors; resolving still fails if the
        // buckets file changed in between (read here for the last time, never after start-up).
        let audit = AuditSettings::resolve(&config.audit)?;
        let storage = StorageSettings::resolve(&config.storage)?;
        let groups = config.identity.groups.resolve()?;
        let u = &config.upstream;
        Ok(Settings {
            listen,
            admin_listen,
            server: server_settings(&config.server),
            upstream: UpstreamSettings {
                uris: uris.into_iter().filter_map(Result::ok).collect(),
                timeouts: Timeouts {
                    connect: ms(u.connect_timeout_ms),
                    write: ms(u.write_timeout_ms),
                    read: ms(u.read_timeout_ms),
                },
                versions: u.metastore_version.bits(),
            },
            identity: IdentitySettings {
                mode: config.identity.mode,
                pinned,
                trust_client_groups: config.identity.trust_client_groups,
                groups,
                kerberos,
                metastore_db: u.metastore_db,
            },
            limits: limit_settings(&config),
            tls: tls_settings(&config.server.tls),
            upstream_tls: upstream_tls_settings(&config.upstream.tls),
            upstream_kerberos,
            authz: AuthzSettings::resolve(&config.authz, &config.index, &config.notifications),
            audit,
            storage,
            cache: cache_settings(&config.cache, &config.notifications),
            notifications: config
                .notifications
                .enabled
                .then(|| ms(config.notifications.poll_ms)),
        })
    }
}

/// `[cache]` resolved (`None`: off).
fn cache_settings(
    c: &crate::config::CacheConfig,
    n: &crate::config::NotificationsConfig,
) -> Option<crate::upstream::cache::CacheSettings> {
    c.enabled.then(|| crate::upstream::cache::CacheSettings {
        max_bytes: usize::try_from(c.max_bytes).unwrap_or(usize::MAX),
        max_entry_bytes: usize::try_from(c.max_entry_bytes).unwrap_or(usize::MAX),
        ttl: ms(c.ttl_ms),
        notifications: n.enabled,
        max_staleness: ms(c.max_staleness_ms),
        per_user: c.per_user,
    })
}

/// The Kerberos sections in use resolved: `[identity.kerberos]` in `kerberos` mode,
/// `[upstream.kerberos]` when it names a principal. Their errors go to `errors`.
#[allow(clippy::type_complexity)] // a pair of the two optional settings, each shared
fn both_kerberos(
    config: &Config,
    errors: &mut Vec<ConfigError>,
) -> (
    Option<Arc<crate::auth::kerberos::KerberosSettings>>,
    Option<Arc<crate::auth::kerberos::UpstreamKerberosSettings>>,
) {
    let kerberos = match config.identity.mode {
        IdentityMode::Kerberos => kept(kerberos_settings(config), errors),
        _ => None,
    };
    let upstream_kerberos = if config.upstream.kerberos.principal.is_empty() {
        None
    } else {
        kept(upstream_kerberos_settings(config), errors)
    };
    (kerberos, upstream_kerberos)
}

/// The settings resolved, shared; else their errors added to `errors`.
fn kept<T>(r: Result<T, Vec<ConfigError>>, errors: &mut Vec<ConfigError>) -> Option<Arc<T>> {
    match r {
        Ok(k) => Some(Arc::new(k)),
        Err(mut e) => {
            errors.append(&mut e);
            None
        }
    }
}

fn server_settings(s: &ServerConfig) -> ServerSettings {
    ServerSettings {
        max_connections: s.max_connections,
        max_connections_per_client: s.max_connections_per_client,
        idle_timeout: ms(s.idle_timeout_ms),
        read_timeout: ms(s.read_timeout_ms),
        write_timeout: ms(s.write_timeout_ms),
        handshake_timeout: ms(s.handshake_timeout_ms),
        shutdown_grace: ms(s.shutdown_grace_ms),
    }
}

/// `[limits]` (with the schema versions of `[upstream]` and the checked-reply bound of
/// `[authz]`).
fn limit_settings(config: &Config) -> LimitSettings {
    let l = &config.limits;
    let request = Limits {
        max_message_bytes: l.max_request_bytes,
        max_depth: l.max_depth,
        max_name_bytes: l.max_method_name_bytes,
    };
    LimitSettings {
        request,
        reply: Limits {
            max_message_bytes: l.max_reply_bytes,
            ..request
        },
        read: ReadLimits {
            max_depth: l.max_depth,
            max_name_bytes: l.max_method_name_bytes,
            versions: config.upstream.metastore_version.bits(),
        },
        max_held_request_bytes: l.max_held_request_bytes,
        max_anonymous_request_bytes: l.max_anonymous_request_bytes,
        reply_buffer_bytes: l.reply_buffer_bytes,
        max_checked_reply_bytes: config.authz.max_filtered_reply_bytes,
    }
}

/// An optional path: empty is none.
fn path(p: &str) -> Option<PathBuf> {
    (!p.is_empty()).then(|| PathBuf::from(p))
}

/// `[server.tls]`, when a certificate is configured.
fn tls_settings(t: &ServerTlsConfig) -> Option<crate::auth::tls::TlsSettings> {
    path(&t.cert).map(|cert| crate::auth::tls::TlsSettings {
        cert,
        key: PathBuf::from(&t.key),
        client_ca: path(&t.client_ca),
        client_identity: t.client_identity,
        reload_interval: ms(t.reload_interval_ms),
    })
}

/// `[upstream.tls]`, when a CA is configured.
fn upstream_tls_settings(t: &UpstreamTlsConfig) -> Option<crate::auth::tls::UpstreamTlsSettings> {
    path(&t.ca).map(|ca| crate::auth::tls::UpstreamTlsSettings {
        ca,
        cert: path(&t.cert),
        key: path(&t.key),
        server_name: (!t.server_name.is_empty()).then(|| t.server_name.clone()),
    })
}

/// What both Kerberos sections share: the principal (`_HOST` expanded, realm required), the
/// keytab and at least one security layer. Returns the expanded principal and its parse.
fn kerberos_identity(
    section: &str,
    principal: &str,
    hostname: &str,
    keytab: &str,
    no_qop: bool,
    errors: &mut Vec<ConfigError>,
) -> (String, Option<crate::auth::kerberos::Principal>) {
    use crate::auth::kerberos::{expand_host, local_hostname, Principal};
    let key = |k: &str| format!("{section}.{k}");
    if keytab.is_empty() {
        errors.push(err(&key("keytab"), "required with a Kerberos principal"));
    }
    if no_qop {
        errors.push(err(
            &key("qop"),
            "name at least one of auth, auth-int, auth-conf",
        ));
    }
    let host = if hostname.is_empty() {
        local_hostname().unwrap_or_else(|| "localhost".into())
    } else {
        hostname.to_string()
    };
    let expanded = expand_host(principal, &host);
    let parsed = match Principal::parse(&expanded) {
        _ if principal.is_empty() => {
            errors.push(err(
                &key("principal"),
                "required (e.g. hive/_HOST@EXAMPLE.COM)",
            ));
            None
        }
        Ok(p) if !p.realm.is_empty() => Some(p),
        Ok(_) => {
            errors.push(err(&key("principal"), "must name its realm (…@REALM)"));
            None
        }
        Err(e) => {
            errors.push(err(&key("principal"), e));
            None
        }
    };
    (expanded, parsed)
}

/// `[identity.kerberos]` resolved: `_HOST` expanded, the rules parsed, the offered layers.
fn kerberos_settings(
    config: &Config,
) -> Result<crate::auth::kerberos::KerberosSettings, Vec<ConfigError>> {
    use crate::auth::kerberos::{KerberosSettings, NameMapping};
    let k = &config.identity.kerberos;
    let mut errors = Vec::new();
    let key = |k: &str| format!("identity.kerberos.{k}");
    let (principal, parsed) = kerberos_identity(
        "identity.kerberos",
        &k.principal,
        &k.hostname,
        &k.keytab,
        k.qop.is_empty(),
        &mut errors,
    );
    let realm = parsed.map(|p| p.realm).unwrap_or_default();
    let default_realm = if k.default_realm.is_empty() {
        realm
    } else {
        k.default_realm.clone()
    };
    let mapping = match NameMapping::parse(&k.auth_to_local, &default_realm) {
        Ok(m) => Some(m),
        Err(e) => {
            errors.extend(e.into_iter().map(|e| err(&key("auth_to_local"), e)));
            None
        }
    };
    match mapping {
        Some(mapping) if errors.is_empty() => Ok(KerberosSettings {
            principal,
            keytab: std::path::PathBuf::from(&k.keytab),
            krb5_conf: (!k.krb5_conf.is_empty()).then(|| std::path::PathBuf::from(&k.krb5_conf)),
            offered: k.qop.iter().fold(0, |b, q| b | q.bit()),
            mapping,
        }),
        _ => Err(errors),
    }
}

/// `[upstream.kerberos]` resolved.
fn upstream_kerberos_settings(
    config: &Config,
) -> Result<crate::auth::kerberos::UpstreamKerberosSettings, Vec<ConfigError>> {
    use crate::auth::kerberos::{Principal, UpstreamKerberosSettings};
    let k = &config.upstream.kerberos;
    let key = |k: &str| format!("upstream.kerberos.{k}");
    let mut errors = Vec::new();
    let (principal, own) = kerberos_identity(
        "upstream.kerberos",
        &k.principal,
        &k.hostname,
        &k.keytab,
        k.qop.is_empty(),
        &mut errors,
    );
    for (name, v) in [
        ("token_refresh_ms", k.token_refresh_ms),
        ("max_tokens", k.max_tokens as u64),
        ("handshake_timeout_ms", k.handshake_timeout_ms),
    ] {
        if v == 0 {
            errors.push(err(&key(name), "must be greater than 0"));
        }
    }
    let ik = &config.identity.kerberos;
    if config.identity.mode == IdentityMode::Kerberos
        && !ik.krb5_conf.is_empty()
        && !k.krb5_conf.is_empty()
        && ik.krb5_conf != k.krb5_conf
    {
        errors.push(err(
            &key("krb5_conf"),
            "differs from identity.kerberos.krb5_conf: one process reads one Kerberos configuration",
        ));
    }
    let Some(own) = own.filter(|_| errors.is_empty()) else {
        return Err(errors);
    };
    let service_principal = if k.service_principal.is_empty() {
        format!("hive/_HOST@{}", own.realm)
    } else {
        k.service_principal.clone()
    };
    if let Err(e) = Principal::parse(&service_principal) {
        return Err(vec![err(&key("service_principal"), e)]);
    }
    let token_renewer = if k.token_renewer.is_empty() {
        own.components[0].clone()
    } else {
        k.token_renewer.clone()
    };
    let krb5_conf = [&k.krb5_conf, &ik.krb5_conf]
        .into_iter()
        .find(|c| !c.is_empty())
        .map(std::path::PathBuf::from);
    Ok(UpstreamKerberosSettings {
        principal,
        keytab: std::path::PathBuf::from(&k.keytab),
        service_principal,
        krb5_conf,
        qop: k.qop.clone(),
        delegation_tokens: k.delegation_tokens,
        token_renewer,
        token_refresh: ms(k.token_refresh_ms),
        max_tokens: k.max_tokens,
        handshake_timeout: ms(k.handshake_timeout_ms),
    })
}

/// Every configured principal name (the pinned identity, the `groups` map, admin users, the
/// service user, the admin role) checked by the names rule of `upstream.metastore_db`.
fn name_errors(config: &Config, pinned: &Identity) -> Vec<ConfigError> {
    let db = config.upstream.metastore_db;
    let mut names: Vec<(String, NameKind, &str)> = Vec::new();
    if !pinned.is_anonymous() {
        names.push(("identity.pinned_user".into(), NameKind::User, &pinned.user));
        for g in &pinned.groups {
            names.push(("identity.pinned_groups".into(), NameKind::Group, g));
        }
    }
    let g = &config.identity.groups;
    let legacy = g.legacy_users();
    let tables = [("identity.groups", &legacy)]
        .into_iter()
        .chain(g.static_.iter().map(|t| ("identity.groups.static", t)));
    for (at, table) in tables {
        for (user, groups) in table {
            names.push((at.into(), NameKind::User, user));
            for group in groups {
                names.push((format!("{at}.{user}"), NameKind::Group, group));
            }
        }
    }
    for u in &config.authz.admin_users {
        names.push(("authz.admin_users".into(), NameKind::User, u));
    }
    if !config.authz.service_user.is_empty() {
        names.push((
            "authz.service_user".into(),
            NameKind::User,
            &config.authz.service_user,
        ));
    }
    if !config.authz.admin_role.is_empty() {
        names.push((
            "authz.admin_role".into(),
            NameKind::Role,
            &config.authz.admin_role,
        ));
    }
    names
        .into_iter()
        .filter_map(|(key, kind, name)| {
            let e = names::check(db, kind, name).err()?;
            Some(err(&key, e.to_string()))
        })
        .collect()
}

/// The pinned user and groups, environment overrides applied (`HMS_GUARD_PINNED_USER`,
/// `HMS_GUARD_PINNED_GROUPS` comma-separated).
fn pinned_identity(config: &Config, env: &impl Fn(&str) -> Option<String>) -> Identity {
    let user = env(PINNED_USER_ENV)
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| config.identity.pinned_user.clone());
    let groups: Vec<String> = match env(PINNED_GROUPS_ENV) {
        Some(g) => g
            .split(',')
            .map(str::trim)
            .filter(|g| !g.is_empty())
            .map(str::to_string)
            .collect(),
        None => config.identity.pinned_groups.clone(),
    };
    if user.is_empty() {
        return Identity::anonymous();
    }
    Identity::new(&user, &groups, IdentitySource::Pinned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Config {
        let mut c = Config::default();
        c.upstream.uris = vec!["thrift://127.0.0.1:9083".into()];
        c
    }

    #[test]
    fn metastore_db_is_resolved_and_configured_names_follow_its_rule() {
        use crate::auth::names::MetastoreDb;
        let c = Config::parse_unvalidated(
            "[upstream]\nuris = [\"thrift://127.0.0.1:9083\"]\nmetastore_db = \"postgres\"\n",
        )
        .unwrap();
        let s = Settings::resolve_with(c, |_| None).unwrap();
        assert_eq!(s.identity.metastore_db, MetastoreDb::Postgres);
        assert_eq!(
            Settings::resolve_with(base(), |_| None)
                .unwrap()
                .identity
                .metastore_db,
            MetastoreDb::Any
        );
        assert!(Config::parse_unvalidated("[upstream]\nmetastore_db = \"sqlite\"\n").is_err());
        let mut c = base();
        c.identity.mode = IdentityMode::Pinned;
        c.identity.pinned_user = "svc ".into();
        c.authz.admin_users = vec!["root\u{a0}".into()];
        c.authz.admin_role = "admin\t".into();
        c.identity
            .groups
            .users
            .insert("mary".into(), toml::Value::from(vec![" staff"]));
        let errors = Settings::resolve_with(c.clone(), |_| None).unwrap_err();
        for key in [
            "identity.pinned_user",
            "authz.admin_users",
            "authz.admin_role",
            "identity.groups.mary",
        ] {
            assert!(errors.iter().any(|e| e.key == key), "{key}: {errors:?}");
        }
        // PostgreSQL compares exactly: only the control character stays refused.
        c.upstream.metastore_db = MetastoreDb::Postgres;
        let errors = Settings::resolve_with(c, |_| None).unwrap_err();
        let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["authz.admin_role"], "{errors:?}");
    }

    #[test]
    fn a_verified_name_is_refused_by_the_names_rule() {
        let s = Settings::resolve_with(base(), |_| None).unwrap();
        assert!(s
            .identity
            .verified("Mary.Smith", IdentitySource::Certificate)
            .is_ok());
        for bad in ["admin ", "admin\u{a0}", "\tadmin", " admin", "ad\nmin"] {
            let e = s
                .identity
                .verified(bad, IdentitySource::Certificate)
                .unwrap_err();
            assert!(e.to_string().contains("names rule"), "{e}");
        }
    }

    #[test]
    fn resolves_addresses_uris_and_durations() {
        let s = Settings::resolve_with(base(), |_| None).unwrap();
        assert_eq!(s.listen.port(), 9083);
        assert_eq!(s.admin_listen.map(|a| a.port()), Some(9464));
        assert_eq!(s.upstream.uris[0].port, 9083);
        assert_eq!(s.server.idle_timeout, Duration::from_secs(3600));
        assert_eq!(s.server.handshake_timeout, Duration::from_secs(10));
        assert!(s.identity.initial().is_anonymous());
    }

    #[test]
    fn kerberos_mode_resolves_the_principal_and_reports_every_missing_part() {
        let mut c = base();
        c.identity.mode = IdentityMode::Kerberos;
        let errors = Settings::resolve_with(c.clone(), |_| None).unwrap_err();
        let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
        assert!(keys.contains(&"identity.kerberos.principal"), "{keys:?}");
        assert!(keys.contains(&"identity.kerberos.keytab"), "{keys:?}");
        c.identity.kerberos.principal = "hive/_HOST".into();
        c.identity.kerberos.keytab = "/k.keytab".into();
        c.identity.kerberos.auth_to_local = vec!["RULE:[1:$1](".into(), "DEFAULT".into()];
        let errors = Settings::resolve_with(c.clone(), |_| None).unwrap_err();
        let text: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        assert!(
            text.iter().any(|e| e.contains("must name its realm")),
            "{text:?}"
        );
        assert!(
            text.iter().any(|e| e.contains("unbalanced '('")),
            "{text:?}"
        );
        c.identity.kerberos.principal = "hive/_HOST@EXAMPLE.COM".into();
        c.identity.kerberos.hostname = "Node1.example.com".into();
        c.identity.kerberos.auth_to_local = vec!["DEFAULT".into()];
        c.identity.kerberos.qop = vec![crate::auth::kerberos::Qop::AuthConf];
        let s = Settings::resolve_with(c, |_| None).unwrap();
        let k = s.identity.kerberos.unwrap();
        assert_eq!(k.principal, "hive/node1.example.com@EXAMPLE.COM");
        assert_eq!(k.offered, 4);
        assert_eq!(k.mapping.default_realm, "EXAMPLE.COM");
    }

    #[test]
    fn every_error_is_reported_and_nothing_is_dropped() {
        let mut c = base();
        c.server.listen = "nowhere".into();
        c.upstream.uris.push("http://x:1".into());
        let errors = Settings::resolve_with(c, |_| None).unwrap_err();
        let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
        assert!(keys.contains(&"server.listen"), "{keys:?}");
        assert!(keys.contains(&"upstream.uris[1]"), "{keys:?}");
    }

    #[test]
    fn audit_and_storage_are_resolved_into_typed_settings() {
        use crate::ops::audit::AuditTarget;
        let dir = std::env::temp_dir().join(format!("hms-guard-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("buckets.json");
        let partner = "arn:aws:iam::210987654321:role/subscriber";
        std::fs::write(
            &file,
            format!(r#"{{"partner-data": {{"role_arn": "{partner}"}}}}"#),
        )
        .unwrap();
        let mut c = base();
        c.audit.sink = crate::config::AuditSink::File;
        c.audit.path = dir.join("audit.log").display().to_string();
        c.audit.queue_wait_ms = 250;
        c.storage.buckets_file = file.display().to_string();
        c.storage.timeout_ms = 1_500;
        let s = Settings::resolve_with(c, |_| None).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(matches!(
            &s.audit.target,
            AuditTarget::File { path, max_files: 5, .. } if path.ends_with("audit.log")
        ));
        assert_eq!(s.audit.queue_wait, Duration::from_millis(250));
        assert_eq!(s.storage.timeout, Duration::from_millis(1_500));
        assert_eq!(s.storage.session_duration, Duration::from_secs(3600));
        let chain = s
            .storage
            .roles
            .chain("arn:aws:iam::123456789012:role/a", "partner-data");
        assert_eq!(chain.len(), 2, "the buckets file is loaded: {chain:?}");
        assert_eq!(chain[1].role_arn, partner);
        assert_eq!(s.storage.scheme_aliases.family("s3n"), "s3");
    }

    #[test]
    fn audit_and_storage_errors_are_reported_with_the_others() {
        let mut c = base();
        c.server.listen = "nowhere".into();
        c.audit.queue_capacity = 0;
        c.storage.timeout_ms = 0;
        let errors = Settings::resolve_with(c, |_| None).unwrap_err();
        let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
        for key in [
            "server.listen",
            "audit.queue_capacity",
            "storage.timeout_ms",
        ] {
            assert!(keys.contains(&key), "{key}: {keys:?}");
        }
    }

    #[test]
    fn the_pinned_identity_is_read_once_with_its_overrides() {
        let mut c = base();
        c.identity.mode = IdentityMode::Pinned;
        c.identity.pinned_user = "svc".into();
        let env = |k: &str| match k {
            PINNED_USER_ENV => Some("alice".to_string()),
            PINNED_GROUPS_ENV => Some("a, b,".to_string()),
            _ => None,
        };
        let s = Settings::resolve_with(c.clone(), env).unwrap();
        assert_eq!(s.identity.initial().user, "alice");
        assert_eq!(s.identity.initial().groups, ["a", "b"]);
        c.identity.pinned_user = String::new();
        let errors = Settings::resolve_with(c, |_| None).unwrap_err();
        assert!(errors.iter().any(|e| e.key == "identity.pinned_user"));
    }
}
