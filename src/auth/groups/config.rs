//! `[identity.groups]`: where a user's groups come from (the TOML shape, its validation, and
//! the typed settings it resolves to).
//!
//! Keys of `[identity.groups]` that are settings (`RESERVED`) are always settings. Any other
//! key is a user of the `static` source written the old way (`mary = ["analysts"]`), accepted
//! only while `sources` is not set; once `sources` is set, users go under
//! `[identity.groups.static]` and any other key is an error. A user named like a setting
//! (`sources`, `ldap`, …) is therefore only ever written under `[identity.groups.static]`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::error::{config_error as err, ConfigError};

/// The keys of `[identity.groups]` that are settings, never user names.
pub const RESERVED: &[&str] = &[
    "sources",
    "ttl_ms",
    "negative_ttl_ms",
    "on_error",
    "last_known_max_age_ms",
    "max_entries",
    "timeout_ms",
    "max_groups",
    "max_concurrent_lookups",
    "static",
    "file",
    "os",
    "ldap",
];

/// `[identity.groups]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct GroupsConfig {
    /// The sources asked, in this order; their answers are united. Default: `["static"]`.
    pub sources: Option<Vec<String>>,
    /// How long a user's groups are used before they are read again.
    pub ttl_ms: u64,
    /// How long "no source knows this user" is used before it is asked again.
    pub negative_ttl_ms: u64,
    /// When a source fails: `deny` the user's calls, or use the `last_known` answer.
    pub on_error: OnError,
    /// `last_known`: the oldest answer that may still be used while the sources fail.
    pub last_known_max_age_ms: u64,
    /// Most users whose groups are held in the cache.
    pub max_entries: usize,
    /// Bound on one user's whole lookup (every source).
    pub timeout_ms: u64,
    /// Most groups one user may have; a source answering more fails.
    pub max_groups: usize,
    /// Most lookups in flight at once (the others wait, within `timeout_ms`).
    pub max_concurrent_lookups: usize,
    /// `[identity.groups.static]`: user = ["group", …].
    #[serde(rename = "static")]
    pub static_: Option<BTreeMap<String, Vec<String>>>,
    pub file: Option<FileSourceConfig>,
    pub os: Option<OsSourceConfig>,
    pub ldap: Option<LdapSourceConfig>,
    /// The old form: `user = ["group", …]` directly in `[identity.groups]` (any other key;
    /// read as a value so that `validate` can name a misspelt setting by its key).
    #[serde(flatten)]
    pub users: BTreeMap<String, toml::Value>,
}

impl Default for GroupsConfig {
    fn default() -> Self {
        GroupsConfig {
            sources: None,
            ttl_ms: 300_000,
            negative_ttl_ms: 30_000,
            on_error: OnError::Deny,
            last_known_max_age_ms: 3_600_000,
            max_entries: 100_000,
            timeout_ms: 5_000,
            max_groups: 1_000,
            max_concurrent_lookups: 16,
            static_: None,
            file: None,
            os: None,
            ldap: None,
            users: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// The user's calls are refused while its groups cannot be read.
    Deny,
    /// The last answer read (no older than `last_known_max_age_ms`) is used; without one, deny.
    LastKnown,
}

/// `[identity.groups.file]`: lines `group:user,user,…`; re-read when the file changes.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileSourceConfig {
    pub path: String,
}

/// `[identity.groups.os]`: the system's group database (NSS), through `id -Gn -- USER`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OsSourceConfig {
    /// The `id` program (absolute path).
    pub id_command: String,
}

impl Default for OsSourceConfig {
    fn default() -> Self {
        OsSourceConfig {
            id_command: "/usr/bin/id".into(),
        }
    }
}

/// `[identity.groups.ldap]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LdapSourceConfig {
    /// `ldap://host:port` or `ldaps://host:port`.
    pub url: String,
    /// `ldap://` upgraded with StartTLS before anything is sent.
    pub start_tls: bool,
    /// The CA certificates (PEM) that sign the server's certificate (TLS: ldaps or start_tls).
    pub ca: String,
    /// A client certificate and key (PEM), for servers that ask for one, and for
    /// `sasl_external`.
    pub client_cert: String,
    pub client_key: String,
    /// Bind with SASL EXTERNAL (the TLS client certificate is the identity).
    pub sasl_external: bool,
    /// Simple bind: the DN and the file holding its password (read at each connection).
    /// Neither set and no `sasl_external`: anonymous.
    pub bind_dn: String,
    pub bind_password_file: String,
    /// Where users and groups are searched (subtree).
    pub base: String,
    /// Finds the user; `{0}` is the user name, escaped.
    pub user_filter: String,
    /// Which entries are groups.
    pub group_filter: String,
    /// The group attribute that names its members.
    pub member_attribute: String,
    /// What `member_attribute` holds: `name` (the user name, as posixGroup's memberUid) or
    /// `dn` (the member's DN, as groupOfNames' or Active Directory's `member`).
    pub member_value: MemberValue,
    /// The group attribute that is the group's name.
    pub group_name_attribute: String,
    /// `dn` members: how many levels of groups within groups are followed (0: none).
    pub nested_depth: u32,
}

impl Default for LdapSourceConfig {
    fn default() -> Self {
        LdapSourceConfig {
            url: String::new(),
            start_tls: false,
            ca: String::new(),
            client_cert: String::new(),
            client_key: String::new(),
            sasl_external: false,
            bind_dn: String::new(),
            bind_password_file: String::new(),
            base: String::new(),
            user_filter: "(&(objectClass=posixAccount)(uid={0}))".into(),
            group_filter: "(objectClass=posixGroup)".into(),
            member_attribute: "memberUid".into(),
            member_value: MemberValue::Name,
            group_name_attribute: "cn".into(),
            nested_depth: 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberValue {
    Name,
    Dn,
}

/// Most levels of nested groups followed.
pub const MAX_NESTED_DEPTH: u32 = 10;

/// One source, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceKind {
    Static,
    File,
    Os,
    Ldap,
}

impl SourceKind {
    pub const ALL: [SourceKind; 4] = [
        SourceKind::Static,
        SourceKind::File,
        SourceKind::Os,
        SourceKind::Ldap,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Static => "static",
            SourceKind::File => "file",
            SourceKind::Os => "os",
            SourceKind::Ldap => "ldap",
        }
    }

    fn parse(s: &str) -> Option<SourceKind> {
        SourceKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// `[identity.groups]` resolved.
#[derive(Debug, Clone)]
pub struct GroupsSettings {
    pub sources: Vec<SourceSettings>,
    pub ttl: Duration,
    pub negative_ttl: Duration,
    pub on_error: OnError,
    pub last_known_max_age: Duration,
    pub max_entries: usize,
    pub timeout: Duration,
    pub max_groups: usize,
    pub max_concurrent_lookups: usize,
}

impl Default for GroupsSettings {
    fn default() -> Self {
        GroupsConfig::default()
            .resolve()
            .expect("the default groups configuration resolves")
    }
}

#[derive(Debug, Clone)]
pub enum SourceSettings {
    Static(BTreeMap<String, Vec<String>>),
    File(PathBuf),
    Os(PathBuf),
    Ldap(Box<LdapSettings>),
}

impl SourceSettings {
    pub fn kind(&self) -> SourceKind {
        match self {
            SourceSettings::Static(_) => SourceKind::Static,
            SourceSettings::File(_) => SourceKind::File,
            SourceSettings::Os(_) => SourceKind::Os,
            SourceSettings::Ldap(_) => SourceKind::Ldap,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LdapTls {
    None,
    Ldaps,
    StartTls,
}

#[derive(Debug, Clone)]
pub enum LdapBind {
    Anonymous,
    Simple { dn: String, password_file: PathBuf },
    External,
}

/// `[identity.groups.ldap]` resolved.
#[derive(Debug, Clone)]
pub struct LdapSettings {
    /// `ldap://…` or `ldaps://…`, as configured.
    pub url: String,
    pub tls: LdapTls,
    pub ca: Option<PathBuf>,
    pub client_cert: Option<(PathBuf, PathBuf)>,
    pub bind: LdapBind,
    pub base: String,
    pub user_filter: String,
    pub group_filter: String,
    pub member_attribute: String,
    pub member_value: MemberValue,
    pub group_name_attribute: String,
    pub nested_depth: u32,
}

impl GroupsConfig {
    /// The sources in order (`["static"]` when not set).
    fn source_names(&self) -> Vec<String> {
        self.sources
            .clone()
            .unwrap_or_else(|| vec!["static".into()])
    }

    /// The old-form entries that are lists of names (`validate` reports the others).
    pub fn legacy_users(&self) -> BTreeMap<String, Vec<String>> {
        self.users
            .iter()
            .filter_map(|(u, v)| Some((u.clone(), names_of(v)?)))
            .collect()
    }

    /// The static source's table: `[identity.groups.static]` and the old-form entries.
    pub fn static_users(&self) -> BTreeMap<String, Vec<String>> {
        let mut all = self.static_.clone().unwrap_or_default();
        for (u, g) in self.legacy_users() {
            all.entry(u).or_insert(g);
        }
        all
    }

    pub fn validate(&self) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        let key = |k: &str| format!("identity.groups.{k}");
        for (k, v) in [
            ("ttl_ms", self.ttl_ms),
            ("negative_ttl_ms", self.negative_ttl_ms),
            ("timeout_ms", self.timeout_ms),
            ("max_entries", self.max_entries as u64),
            ("max_groups", self.max_groups as u64),
            ("max_concurrent_lookups", self.max_concurrent_lookups as u64),
        ] {
            if v == 0 {
                errors.push(err(&key(k), "must be greater than 0"));
            }
        }
        if self.on_error == OnError::LastKnown && self.last_known_max_age_ms < self.ttl_ms {
            errors.push(err(
                &key("last_known_max_age_ms"),
                "must be at least identity.groups.ttl_ms",
            ));
        }
        for (u, v) in &self.users {
            if self.sources.is_some() {
                errors.push(err(
                    &key(u),
                    "unknown key: with identity.groups.sources set, users' groups go under [identity.groups.static]",
                ));
            } else if names_of(v).is_none() {
                errors.push(err(
                    &key(u),
                    "unknown key: not a setting, and as a user (the old form) its groups must be a list of names",
                ));
            }
        }
        if let Some(st) = &self.static_ {
            for u in self.users.keys().filter(|u| st.contains_key(*u)) {
                errors.push(err(
                    &key(u),
                    "the user is also listed in [identity.groups.static]",
                ));
            }
        }
        let names = self.source_names();
        if names.is_empty() {
            errors.push(err(&key("sources"), "must name at least one source"));
        }
        let mut seen = Vec::new();
        for n in &names {
            match SourceKind::parse(n) {
                None => errors.push(err(
                    &key("sources"),
                    format!("unknown source \"{n}\" (known: static, file, os, ldap)"),
                )),
                Some(k) if seen.contains(&k) => {
                    errors.push(err(&key("sources"), format!("\"{n}\" is listed twice")))
                }
                Some(k) => {
                    seen.push(k);
                    let present = match k {
                        // Without `sources`, the static source is the old form's entries.
                        SourceKind::Static => self.static_.is_some() || self.sources.is_none(),
                        SourceKind::File => self.file.is_some(),
                        SourceKind::Os => self.os.is_some(),
                        SourceKind::Ldap => self.ldap.is_some(),
                    };
                    if !present {
                        errors.push(err(
                            &key("sources"),
                            format!("lists \"{n}\" but [identity.groups.{n}] is not configured"),
                        ));
                    }
                }
            }
        }
        for (k, present) in [
            (SourceKind::Static, self.static_.is_some()),
            (SourceKind::File, self.file.is_some()),
            (SourceKind::Os, self.os.is_some()),
            (SourceKind::Ldap, self.ldap.is_some()),
        ] {
            if present && !seen.contains(&k) {
                errors.push(err(
                    &key(k.as_str()),
                    "configured but not listed in identity.groups.sources",
                ));
            }
        }
        if let Some(f) = self
            .file
            .as_ref()
            .filter(|_| seen.contains(&SourceKind::File))
        {
            if f.path.is_empty() {
                errors.push(err(&key("file.path"), "required"));
            } else if let Err(e) = super::file::read_table(std::path::Path::new(&f.path)) {
                errors.push(err(&key("file.path"), e));
            }
        }
        if let Some(o) = self.os.as_ref().filter(|_| seen.contains(&SourceKind::Os)) {
            let p = std::path::Path::new(&o.id_command);
            if !p.is_absolute() || !p.is_file() {
                errors.push(err(
                    &key("os.id_command"),
                    format!("{}: not an absolute path to a program", o.id_command),
                ));
            }
        }
        if let Some(l) = self
            .ldap
            .as_ref()
            .filter(|_| seen.contains(&SourceKind::Ldap))
        {
            errors.extend(l.validate());
        }
        errors
    }

    /// Validates and resolves.
    pub fn resolve(&self) -> Result<GroupsSettings, Vec<ConfigError>> {
        let errors = self.validate();
        if !errors.is_empty() {
            return Err(errors);
        }
        let sources = self
            .source_names()
            .iter()
            .filter_map(|n| SourceKind::parse(n))
            .map(|k| match k {
                SourceKind::Static => SourceSettings::Static(self.static_users()),
                SourceKind::File => SourceSettings::File(PathBuf::from(
                    &self.file.as_ref().expect("validated").path,
                )),
                SourceKind::Os => SourceSettings::Os(PathBuf::from(
                    &self.os.as_ref().expect("validated").id_command,
                )),
                SourceKind::Ldap => {
                    SourceSettings::Ldap(Box::new(self.ldap.as_ref().expect("validated").resolve()))
                }
            })
            .collect();
        let ms = Duration::from_millis;
        Ok(GroupsSettings {
            sources,
            ttl: ms(self.ttl_ms),
            negative_ttl: ms(self.negative_ttl_ms),
            on_error: self.on_error,
            last_known_max_age: ms(self.last_known_max_age_ms),
            max_entries: self.max_entries,
            timeout: ms(self.timeout_ms),
            max_groups: self.max_groups,
            max_concurrent_lookups: self.max_concurrent_lookups,
        })
    }
}

/// A TOML list of strings.
fn names_of(v: &toml::Value) -> Option<Vec<String>> {
    v.as_array()?
        .iter()
        .map(|x| x.as_str().map(str::to_string))
        .collect()
}

impl LdapSourceConfig {
    fn tls(&self) -> Option<LdapTls> {
        if self.url.starts_with("ldaps://") {
            Some(LdapTls::Ldaps)
        } else if self.url.starts_with("ldap://") {
            Some(if self.start_tls {
                LdapTls::StartTls
            } else {
                LdapTls::None
            })
        } else {
            None
        }
    }

    fn validate(&self) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        let key = |k: &str| format!("identity.groups.ldap.{k}");
        let readable = |k: &str, path: &str, errors: &mut Vec<ConfigError>| {
            if let Err(e) = std::fs::metadata(path).and_then(|m| {
                if m.is_file() {
                    std::fs::File::open(path).map(|_| ())
                } else {
                    Err(std::io::Error::other("not a file"))
                }
            }) {
                errors.push(err(&key(k), format!("{path}: {e}")));
            }
        };
        let tls = self.tls();
        match tls {
            None => errors.push(err(
                &key("url"),
                format!(
                    "\"{}\": must start with ldap:// or ldaps:// (and name a host)",
                    self.url
                ),
            )),
            Some(t) => {
                let rest = self.url.split_once("://").map(|x| x.1).unwrap_or("");
                let host = rest.split('/').next().unwrap_or("");
                if host.is_empty() || rest.trim_end_matches('/').contains('/') || rest.contains('?')
                {
                    errors.push(err(
                        &key("url"),
                        format!(
                            "\"{}\": must be ldap[s]://host[:port] (nothing after the host)",
                            self.url
                        ),
                    ));
                }
                if t == LdapTls::Ldaps && self.start_tls {
                    errors.push(err(&key("start_tls"), "not with ldaps:// (already TLS)"));
                }
                if t != LdapTls::None && self.ca.is_empty() {
                    errors.push(err(&key("ca"), "required with ldaps:// or start_tls"));
                }
                if t == LdapTls::None
                    && (!self.ca.is_empty() || !self.client_cert.is_empty() || self.sasl_external)
                {
                    errors.push(err(
                        &key("url"),
                        "ca, client_cert and sasl_external need TLS: ldaps:// or start_tls = true",
                    ));
                }
            }
        }
        if !self.ca.is_empty() {
            readable("ca", &self.ca, &mut errors);
            if errors.is_empty() {
                if let Err(e) =
                    crate::auth::tls::read_roots(std::path::Path::new(&self.ca), &key("ca"))
                {
                    errors.push(err(&key("ca"), e));
                }
            }
        }
        if self.client_cert.is_empty() != self.client_key.is_empty() {
            errors.push(err(
                &key("client_cert"),
                "client_cert and client_key go together",
            ));
        } else if !self.client_cert.is_empty() {
            readable("client_cert", &self.client_cert, &mut errors);
            readable("client_key", &self.client_key, &mut errors);
        }
        if self.sasl_external {
            if self.client_cert.is_empty() {
                errors.push(err(
                    &key("sasl_external"),
                    "needs client_cert and client_key",
                ));
            }
            if !self.bind_dn.is_empty() {
                errors.push(err(&key("bind_dn"), "not with sasl_external"));
            }
        }
        if self.bind_dn.is_empty() != self.bind_password_file.is_empty() {
            errors.push(err(
                &key("bind_password_file"),
                "bind_dn and bind_password_file go together",
            ));
        } else if !self.bind_password_file.is_empty() {
            match std::fs::read_to_string(&self.bind_password_file) {
                Ok(p) if p.trim_end_matches(['\n', '\r']).is_empty() => errors.push(err(
                    &key("bind_password_file"),
                    format!("{}: empty", self.bind_password_file),
                )),
                Ok(_) => {}
                Err(e) => errors.push(err(
                    &key("bind_password_file"),
                    format!("{}: {e}", self.bind_password_file),
                )),
            }
        }
        if self.base.trim().is_empty() {
            errors.push(err(&key("base"), "required (the DN searches start from)"));
        }
        if !self.user_filter.contains("{0}") {
            errors.push(err(&key("user_filter"), "must contain {0} (the user name)"));
        }
        for (k, f) in [
            ("user_filter", &self.user_filter),
            ("group_filter", &self.group_filter),
        ] {
            if !(f.starts_with('(') && f.ends_with(')')) {
                errors.push(err(&key(k), "must be a parenthesised LDAP filter"));
            }
        }
        for (k, a) in [
            ("member_attribute", &self.member_attribute),
            ("group_name_attribute", &self.group_name_attribute),
        ] {
            let ok = !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | ':' | ';'));
            if !ok {
                errors.push(err(
                    &key(k),
                    "must be an attribute description (letters, digits, - . : ;)",
                ));
            }
        }
        if self.nested_depth > MAX_NESTED_DEPTH {
            errors.push(err(
                &key("nested_depth"),
                format!("must be at most {MAX_NESTED_DEPTH}"),
            ));
        }
        if self.nested_depth > 0 && self.member_value != MemberValue::Dn {
            errors.push(err(
                &key("nested_depth"),
                "needs member_value = \"dn\" (groups are members by DN)",
            ));
        }
        errors
    }

    fn resolve(&self) -> LdapSettings {
        let opt = |s: &str| (!s.is_empty()).then(|| PathBuf::from(s));
        LdapSettings {
            url: self.url.clone(),
            tls: self.tls().expect("validated"),
            ca: opt(&self.ca),
            client_cert: opt(&self.client_cert).zip(opt(&self.client_key)),
            bind: if self.sasl_external {
                LdapBind::External
            } else if !self.bind_dn.is_empty() {
                LdapBind::Simple {
                    dn: self.bind_dn.clone(),
                    password_file: PathBuf::from(&self.bind_password_file),
                }
            } else {
                LdapBind::Anonymous
            },
            base: self.base.clone(),
            user_filter: self.user_filter.clone(),
            group_filter: self.group_filter.clone(),
            member_attribute: self.member_attribute.clone(),
            member_value: self.member_value,
            group_name_attribute: self.group_name_attribute.clone(),
            nested_depth: self.nested_depth,
        }
    }
}
