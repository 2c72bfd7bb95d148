//! Kerberos identity: the service principal hms-guard accepts tickets for, and the
//! `auth_to_local` rules that turn an authenticated principal into a metastore user.
//!
//! The Kerberos work itself is the platform's GSSAPI library (MIT krb5, through `libgssapi`):
//! hms-guard never parses a ticket. This module holds what is ours: principal names, `_HOST`
//! expansion, the mapping rules (pure, so they are tested without a KDC), and acquiring the
//! acceptor credential from the configured keytab.

use std::fmt;

use libgssapi::credential::{Cred, CredUsage};
use libgssapi::name::Name;
use libgssapi::oid::{OidSet, GSS_MECH_KRB5, GSS_NT_KRB5_PRINCIPAL};
use regex_lite::Regex;

/// The environment variable MIT krb5 reads the acceptor keytab from.
pub const KEYTAB_ENV: &str = "KRB5_KTNAME";
/// The environment variable MIT krb5 reads its configuration file from.
pub const CONFIG_ENV: &str = "KRB5_CONFIG";

/// A parsed principal name: `primary[/instance…]@REALM`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub components: Vec<String>,
    /// Empty when the name carried no realm.
    pub realm: String,
}

impl Principal {
    /// Parses `a/b@R` (backslash escapes as krb5 writes them: `\/`, `\@`). At most 16
    /// components; no empty component.
    pub fn parse(s: &str) -> Result<Principal, String> {
        let mut components = vec![String::new()];
        let mut realm = String::new();
        let mut in_realm = false;
        let mut chars = s.chars();
        while let Some(c) = chars.next() {
            let c = match c {
                '\\' => match chars.next() {
                    Some('n') => '\n',
                    Some('t') => '\t',
                    Some('b') => '\u{8}',
                    Some('0') => '\0',
                    Some(other) => other,
                    None => return Err(format!("principal {s:?} ends with a backslash")),
                },
                '/' if !in_realm => {
                    if components.len() >= 16 {
                        return Err(format!("principal {s:?} has too many components"));
                    }
                    components.push(String::new());
                    continue;
                }
                '@' if in_realm => return Err(format!("principal {s:?} has two realms")),
                '@' => {
                    in_realm = true;
                    continue;
                }
                c => c,
            };
            if in_realm {
                realm.push(c);
            } else {
                components.last_mut().expect("never empty").push(c);
            }
        }
        if components.iter().any(|c| c.is_empty()) {
            return Err(format!("principal {s:?} has an empty component"));
        }
        Ok(Principal { components, realm })
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.components.join("/"))?;
        if !self.realm.is_empty() {
            write!(f, "@{}", self.realm)?;
        }
        Ok(())
    }
}

/// Replaces the `_HOST` component of a service principal with `host` (lower case), as Hadoop
/// services do.
pub fn expand_host(principal: &str, host: &str) -> String {
    match principal.split_once('@') {
        Some((name, realm)) => {
            let name: Vec<String> = name
                .split('/')
                .map(|c| {
                    if c == "_HOST" {
                        host.to_ascii_lowercase()
                    } else {
                        c.to_string()
                    }
                })
                .collect();
            format!("{}@{realm}", name.join("/"))
        }
        None => principal.replace("/_HOST", &format!("/{}", host.to_ascii_lowercase())),
    }
}

/// This machine's host name (Linux: the kernel's), for `_HOST`.
pub fn local_hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// One `auth_to_local` rule, in Hadoop's syntax:
/// `RULE:[n:format](match)s/pattern/replacement/[g][/L]` or `DEFAULT`.
#[derive(Debug, Clone)]
pub enum Rule {
    /// A principal of the default realm maps to its first component.
    Default,
    Rule(Box<HadoopRule>),
}

/// `RULE:[n:format](match)s/pattern/replacement/[g][/L]`.
#[derive(Debug, Clone)]
pub struct HadoopRule {
    /// The number of components the principal must have.
    components: usize,
    /// `$0` is the realm, `$1`… the components.
    format: String,
    /// The formatted name must match this whole (none: any).
    matches: Option<Regex>,
    /// `s/pattern/replacement/`, every match with `g`.
    substitute: Option<(Regex, String, bool)>,
    /// `/L`: the result in lower case.
    lower: bool,
    /// The rule as written, for logs.
    pub text: String,
}

impl Rule {
    pub fn parse(text: &str) -> Result<Rule, String> {
        let t = text.trim();
        if t == "DEFAULT" {
            return Ok(Rule::Default);
        }
        let rest = t
            .strip_prefix("RULE:[")
            .ok_or_else(|| format!("{t:?}: a rule is DEFAULT or RULE:[n:format]…"))?;
        let (head, mut rest) = rest
            .split_once(']')
            .ok_or_else(|| format!("{t:?}: missing ']' after RULE:[n:format"))?;
        let (n, format) = head
            .split_once(':')
            .ok_or_else(|| format!("{t:?}: RULE:[n:format] needs n and a format"))?;
        let components: usize = n
            .parse()
            .ok()
            .filter(|n| (1..=16).contains(n))
            .ok_or_else(|| format!("{t:?}: {n:?} is not a component count from 1 to 16"))?;
        let mut matches = None;
        if let Some(r) = rest.strip_prefix('(') {
            let end = closing_paren(r).ok_or_else(|| format!("{t:?}: unbalanced '('"))?;
            let re = Regex::new(&format!("^(?:{})$", &r[..end]))
                .map_err(|e| format!("{t:?}: bad match expression: {e}"))?;
            matches = Some(re);
            rest = &r[end + 1..];
        }
        let mut substitute = None;
        let mut lower = false;
        if let Some(s) = rest.strip_prefix("s/") {
            let parts = split_unescaped(s, '/');
            if parts.len() < 3 {
                return Err(format!("{t:?}: s/pattern/replacement/ is not closed"));
            }
            let re =
                Regex::new(&parts[0]).map_err(|e| format!("{t:?}: bad pattern after s/: {e}"))?;
            // Java's replacement syntax ($1) is the regex crate's too; a literal '$' is '\$'.
            let replacement = parts[1].replace("\\$", "$$");
            // What follows the closing '/': an optional `g`, then an optional `L` or `/L`.
            let tail = parts[2..].join("/");
            let global = tail.starts_with('g');
            match &tail[usize::from(global)..] {
                "" => {}
                "L" | "/L" => lower = true,
                _ => return Err(format!("{t:?}: unknown flags after s/…/…/")),
            }
            substitute = Some((re, replacement, global));
        } else if rest == "/L" {
            lower = true;
        } else if !rest.is_empty() {
            return Err(format!("{t:?}: unexpected {rest:?} after the rule"));
        }
        Ok(Rule::Rule(Box::new(HadoopRule {
            components,
            format: format.to_string(),
            matches,
            substitute,
            lower,
            text: t.to_string(),
        })))
    }

    /// The short name this rule gives `p`, if it applies.
    fn apply(&self, p: &Principal, default_realm: &str) -> Option<String> {
        match self {
            Rule::Default => (p.realm == default_realm).then(|| p.components[0].clone()),
            Rule::Rule(r) => {
                let HadoopRule {
                    components,
                    format,
                    matches,
                    substitute,
                    lower,
                    ..
                } = r.as_ref();
                if p.components.len() != *components {
                    return None;
                }
                let formatted = format_name(format, p)?;
                if matches.as_ref().is_some_and(|m| !m.is_match(&formatted)) {
                    return None;
                }
                let mut out = match substitute {
                    None => formatted,
                    Some((re, rep, true)) => re.replace_all(&formatted, rep.as_str()).into_owned(),
                    Some((re, rep, false)) => re.replace(&formatted, rep.as_str()).into_owned(),
                };
                if *lower {
                    out = out.to_lowercase();
                }
                Some(out)
            }
        }
    }
}

fn closing_paren(s: &str) -> Option<usize> {
    let mut depth = 1usize;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

fn split_unescaped(s: &str, sep: char) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut escaped = false;
    for c in s.chars() {
        let last = parts.last_mut().expect("never empty");
        if escaped {
            if c != sep {
                last.push('\\');
            }
            last.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == sep {
            parts.push(String::new());
        } else {
            last.push(c);
        }
    }
    parts
}

/// `$0` → realm, `$n` → component n; `None` when the format names a missing component.
fn format_name(format: &str, p: &Principal) -> Option<String> {
    let mut out = String::new();
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '$' {
            out.push(c);
            continue;
        }
        let mut digits = String::new();
        while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
            digits.push(*d);
            chars.next();
        }
        let n: usize = digits.parse().ok()?;
        if n == 0 {
            out.push_str(&p.realm);
        } else {
            out.push_str(p.components.get(n - 1)?);
        }
    }
    Some(out)
}

/// The `auth_to_local` rules, tried in order; the first that applies names the user.
#[derive(Debug, Clone)]
pub struct NameMapping {
    pub rules: Vec<Rule>,
    pub default_realm: String,
}

/// Why a principal has no user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unmapped {
    NoRule,
    /// A rule gave a name that is not a simple user name.
    NotSimple(String),
}

impl fmt::Display for Unmapped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unmapped::NoRule => f.write_str("no auth_to_local rule maps it to a user"),
            Unmapped::NotSimple(n) => write!(
                f,
                "an auth_to_local rule mapped it to {n:?}, which is not a simple user name"
            ),
        }
    }
}

impl NameMapping {
    pub fn parse(rules: &[String], default_realm: &str) -> Result<NameMapping, Vec<String>> {
        let mut errors = Vec::new();
        let mut parsed = Vec::new();
        for r in rules {
            match Rule::parse(r) {
                Ok(r) => parsed.push(r),
                Err(e) => errors.push(e),
            }
        }
        if parsed.is_empty() && errors.is_empty() {
            errors.push("at least one rule (e.g. \"DEFAULT\") is needed".into());
        }
        if errors.is_empty() {
            Ok(NameMapping {
                rules: parsed,
                default_realm: default_realm.to_string(),
            })
        } else {
            Err(errors)
        }
    }

    /// The user `principal` maps to.
    pub fn map(&self, principal: &Principal) -> Result<String, Unmapped> {
        for rule in &self.rules {
            if let Some(name) = rule.apply(principal, &self.default_realm) {
                if name.is_empty()
                    || name.contains(['/', '@'])
                    || name.chars().any(char::is_control)
                {
                    return Err(Unmapped::NotSimple(name));
                }
                return Ok(name);
            }
        }
        Err(Unmapped::NoRule)
    }
}

/// The quality of protection a client may choose after the Kerberos handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize)]
pub enum Qop {
    /// Authentication only: messages travel as they are.
    #[serde(rename = "auth")]
    Auth,
    /// Every message carries an integrity check.
    #[serde(rename = "auth-int")]
    AuthInt,
    /// Every message is encrypted.
    #[serde(rename = "auth-conf")]
    AuthConf,
}

impl Qop {
    /// The RFC 4752 security-layer bit.
    pub fn bit(self) -> u8 {
        match self {
            Qop::Auth => 1,
            Qop::AuthInt => 2,
            Qop::AuthConf => 4,
        }
    }

    pub fn from_bit(b: u8) -> Option<Qop> {
        match b {
            1 => Some(Qop::Auth),
            2 => Some(Qop::AuthInt),
            4 => Some(Qop::AuthConf),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Qop::Auth => "auth",
            Qop::AuthInt => "auth-int",
            Qop::AuthConf => "auth-conf",
        }
    }
}

/// Kerberos towards clients, resolved.
#[derive(Debug, Clone)]
pub struct KerberosSettings {
    /// The service principal, `_HOST` expanded.
    pub principal: String,
    pub keytab: std::path::PathBuf,
    /// `KRB5_CONFIG`, when configured.
    pub krb5_conf: Option<std::path::PathBuf>,
    /// The security layers offered (RFC 4752 bits).
    pub offered: u8,
    pub mapping: NameMapping,
}

impl KerberosSettings {
    /// Points MIT krb5 at the configured keytab (and configuration file). Must run before any
    /// other thread starts: the process environment is how MIT krb5 is told.
    pub fn configure_process(&self) {
        std::env::set_var(KEYTAB_ENV, format!("FILE:{}", self.keytab.display()));
        if let Some(c) = &self.krb5_conf {
            std::env::set_var(CONFIG_ENV, c);
        }
    }

    /// The acceptor credential for the service principal, read from the keytab now (so a
    /// replaced keytab is used from the next connection on).
    pub fn acceptor(&self) -> Result<Cred, String> {
        let name = Name::new(self.principal.as_bytes(), Some(GSS_NT_KRB5_PRINCIPAL))
            .map_err(|e| format!("the service principal {:?}: {e}", self.principal))?;
        let mechs = OidSet::singleton(GSS_MECH_KRB5).map_err(|e| e.to_string())?;
        Cred::acquire(Some(&name), None, CredUsage::Accept, Some(&mechs)).map_err(|e| {
            format!(
                "no key for {} in the keytab {}: {e}",
                self.principal,
                self.keytab.display()
            )
        })
    }
}

/// Kerberos towards a kerberized metastore, resolved.
#[derive(Debug, Clone)]
pub struct UpstreamKerberosSettings {
    /// hms-guard's own principal, `_HOST` expanded.
    pub principal: String,
    pub keytab: std::path::PathBuf,
    /// The metastore's principal; `_HOST` is each URI's host.
    pub service_principal: String,
    pub krb5_conf: Option<std::path::PathBuf>,
    /// The security layers asked for, in order of preference.
    pub qop: Vec<Qop>,
    pub delegation_tokens: bool,
    pub token_renewer: String,
    pub token_refresh: std::time::Duration,
    pub max_tokens: usize,
    pub handshake_timeout: std::time::Duration,
}

/// The environment variable MIT krb5 reads an initiator's keytab from.
pub const CLIENT_KEYTAB_ENV: &str = "KRB5_CLIENT_KTNAME";
/// The environment variable naming the credential cache.
pub const CCACHE_ENV: &str = "KRB5CCNAME";

impl UpstreamKerberosSettings {
    /// The metastore principal at `host`.
    pub fn service_at(&self, host: &str) -> String {
        expand_host(&self.service_principal, host)
    }

    /// Points MIT krb5 at hms-guard's keytab for its own tickets, kept in this process's
    /// memory (never in a file): the library asks the KDC from the keytab when they are
    /// missing or near their end. Must run before any other thread starts.
    pub fn configure_process(&self) {
        std::env::set_var(CLIENT_KEYTAB_ENV, format!("FILE:{}", self.keytab.display()));
        std::env::set_var(CCACHE_ENV, "MEMORY:hms-guard");
        if let Some(c) = &self.krb5_conf {
            std::env::set_var(CONFIG_ENV, c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Principal {
        Principal::parse(s).unwrap()
    }

    fn mapping(rules: &[&str]) -> NameMapping {
        let rules: Vec<String> = rules.iter().map(|s| s.to_string()).collect();
        NameMapping::parse(&rules, "EXAMPLE.COM").unwrap()
    }

    #[test]
    fn principals_parse_with_escapes() {
        assert_eq!(p("alice@EXAMPLE.COM").components, vec!["alice"]);
        assert_eq!(
            p("hive/h1.example.com@EXAMPLE.COM").components,
            vec!["hive", "h1.example.com"]
        );
        assert_eq!(p("a\\/b@R").components, vec!["a/b"]);
        assert_eq!(p("a\\@b@R").realm, "R");
        assert!(Principal::parse("a//b@R").is_err());
        assert!(Principal::parse("a@R@S").is_err());
        assert!(Principal::parse("a\\").is_err());
    }

    #[test]
    fn host_is_expanded_in_lower_case() {
        assert_eq!(
            expand_host("hive/_HOST@R", "Node1.Example"),
            "hive/node1.example@R"
        );
        assert_eq!(expand_host("hive/x@R", "h"), "hive/x@R");
    }

    #[test]
    fn default_maps_only_the_default_realm_to_the_first_component() {
        let m = mapping(&["DEFAULT"]);
        assert_eq!(m.map(&p("alice@EXAMPLE.COM")), Ok("alice".into()));
        assert_eq!(m.map(&p("spark/h1@EXAMPLE.COM")), Ok("spark".into()));
        assert_eq!(m.map(&p("alice@OTHER.COM")), Err(Unmapped::NoRule));
    }

    #[test]
    fn hadoop_rules_apply_in_order() {
        let m = mapping(&[
            "RULE:[2:$1@$0](hive@EXAMPLE.COM)s/.*/hms-admin/",
            "RULE:[1:$1@$0](.*@PARTNER.ORG)s/@.*//L",
            "RULE:[2:$1](svc_.*)s/svc_//g",
        ]);
        assert_eq!(m.map(&p("hive/h@EXAMPLE.COM")), Ok("hms-admin".into()));
        assert_eq!(m.map(&p("Bob@PARTNER.ORG")), Ok("bob".into()));
        assert_eq!(m.map(&p("svc_etl/h@ANY")), Ok("etl".into()));
        assert_eq!(m.map(&p("bob@EXAMPLE.COM")), Err(Unmapped::NoRule));
    }

    #[test]
    fn a_rule_must_give_a_simple_name() {
        let m = mapping(&["RULE:[1:$1@$0]"]);
        assert_eq!(
            m.map(&p("alice@EXAMPLE.COM")),
            Err(Unmapped::NotSimple("alice@EXAMPLE.COM".into()))
        );
    }

    #[test]
    fn bad_rules_are_reported() {
        for bad in [
            "RULE:[0:$1]",
            "RULE:[1:$1](unclosed",
            "RULE:[1:$1]s/a/b",
            "RULE:[1:$1]s/(/b/",
            "RULE:1:$1",
            "SOMETHING",
        ] {
            assert!(Rule::parse(bad).is_err(), "{bad} should be refused");
        }
        assert!(NameMapping::parse(&[], "R").is_err());
    }

    #[test]
    fn a_missing_component_does_not_apply() {
        let m = mapping(&["RULE:[1:$2]"]);
        assert_eq!(m.map(&p("alice@EXAMPLE.COM")), Err(Unmapped::NoRule));
    }
}
