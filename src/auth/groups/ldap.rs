//! The `ldap` source: LDAP or Active Directory. One connection per lookup (lookups are
//! cached): connect (ldaps, or StartTLS, against the configured CA), bind (simple, SASL
//! EXTERNAL or anonymous), find the user (`user_filter`; none: the user is unknown here; more
//! than one: an error), then its groups (`group_filter` and `member_attribute` = the user's
//! name or DN), then, with `dn` members, groups holding those groups (`nested_depth` levels).
//! Every value placed in a filter is escaped (RFC 4515): the user name may come from the
//! client.

use std::collections::BTreeSet;
use std::sync::Arc;

use ldap3::{LdapConnAsync, LdapConnSettings, Scope, SearchEntry, SearchOptions};

use super::config::{LdapBind, LdapSettings, LdapTls, MemberValue};
use super::{GroupSource, LookupFuture};

/// A value escaped for an LDAP filter (RFC 4515): `*`, `(`, `)`, `\`, NUL, and every byte
/// outside printable ASCII as `\XX`.
pub fn escape_filter_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for &b in value.as_bytes() {
        match b {
            b'*' | b'(' | b')' | b'\\' => out.push_str(&format!("\\{b:02x}")),
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\{b:02x}")),
        }
    }
    out
}

/// `user_filter` with `{0}` replaced by the escaped user name.
pub fn user_filter(template: &str, user: &str) -> String {
    template.replace("{0}", &escape_filter_value(user))
}

/// The groups whose `attr` is one of `values` (escaped).
pub fn member_filter(group_filter: &str, attr: &str, values: &[String]) -> String {
    let one = |v: &String| format!("({attr}={})", escape_filter_value(v));
    if values.len() == 1 {
        format!("(&{group_filter}{})", one(&values[0]))
    } else {
        let any: String = values.iter().map(one).collect();
        format!("(&{group_filter}(|{any}))")
    }
}

pub struct LdapSource {
    s: Arc<LdapSettings>,
    tls: Option<Arc<rustls::ClientConfig>>,
    max_groups: usize,
}

impl LdapSource {
    pub fn new(s: LdapSettings, max_groups: usize) -> Result<LdapSource, String> {
        let tls = match (&s.tls, &s.ca) {
            (LdapTls::None, _) => None,
            (_, Some(ca)) => {
                let client = s
                    .client_cert
                    .as_ref()
                    .map(|(c, k)| (c.as_path(), k.as_path()));
                Some(Arc::new(crate::auth::tls::directory_client(ca, client)?))
            }
            (_, None) => return Err("identity.groups.ldap.ca: required with TLS".into()),
        };
        Ok(LdapSource {
            s: Arc::new(s),
            tls,
            max_groups,
        })
    }
}

impl GroupSource for LdapSource {
    fn name(&self) -> &'static str {
        "ldap"
    }

    fn lookup<'a>(&'a self, user: &'a str) -> LookupFuture<'a> {
        let (s, tls, max, user) = (
            self.s.clone(),
            self.tls.clone(),
            self.max_groups,
            user.to_string(),
        );
        Box::pin(async move {
            // Its own task: a malformed reply that the client library cannot take apart
            // fails this lookup, nothing else. Dropped (timed out), the task is aborted.
            let task = tokio::spawn(async move { lookup(&s, tls, max, &user).await });
            let abort = task.abort_handle();
            let _guard = AbortOnDrop(abort);
            task.await
                .map_err(|e| format!("the LDAP lookup failed: {e}"))?
        })
    }
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn lookup(
    s: &LdapSettings,
    tls: Option<Arc<rustls::ClientConfig>>,
    max_groups: usize,
    user: &str,
) -> super::Lookup {
    let e = |what: &str| {
        let what = what.to_string();
        move |err: ldap3::LdapError| format!("{what}: {err}")
    };
    let mut conn = LdapConnSettings::new();
    if let Some(tls) = tls {
        conn = conn.set_config(tls);
        if s.tls == LdapTls::StartTls {
            conn = conn.set_starttls(true);
        }
    }
    let (driver, mut ldap) = LdapConnAsync::with_settings(conn, &s.url)
        .await
        .map_err(e(&format!("connecting to {}", s.url)))?;
    ldap3::drive!(driver);
    match &s.bind {
        LdapBind::Anonymous => {}
        LdapBind::Simple { dn, password_file } => {
            let pw = tokio::fs::read_to_string(password_file)
                .await
                .map_err(|err| format!("{}: {err}", password_file.display()))?;
            let pw = pw.trim_end_matches(['\n', '\r']);
            ldap.simple_bind(dn, pw)
                .await
                .and_then(|r| r.success())
                .map_err(e(&format!("binding as {dn}")))?;
        }
        LdapBind::External => {
            ldap.sasl_external_bind()
                .await
                .and_then(|r| r.success())
                .map_err(e("binding with SASL EXTERNAL"))?;
        }
    }
    // The user: exactly one entry, or unknown here.
    let filter = user_filter(&s.user_filter, user);
    let (users, _) = ldap
        .with_search_options(SearchOptions::new().sizelimit(2))
        .search(&s.base, Scope::Subtree, &filter, vec!["1.1"])
        .await
        .and_then(|r| r.success())
        .map_err(e(
            "searching the user (more than one entry matches, or the search failed)",
        ))?;
    let user_dn = match users.len() {
        0 => {
            let _ = ldap.unbind().await;
            return Ok(None);
        }
        1 => SearchEntry::construct(users.into_iter().next().expect("one")).dn,
        _ => return Err("more than one entry matches the user".into()),
    };
    let member = match s.member_value {
        MemberValue::Name => user.to_string(),
        MemberValue::Dn => user_dn,
    };
    let mut names = BTreeSet::new();
    let mut seen_dns = BTreeSet::new();
    let mut frontier = vec![member];
    // Level 0 is the user's own groups; then `nested_depth` levels of groups in groups.
    for _level in 0..=s.nested_depth {
        if frontier.is_empty() {
            break;
        }
        let filter = member_filter(&s.group_filter, &s.member_attribute, &frontier);
        let limit = i32::try_from(max_groups + 1).unwrap_or(i32::MAX);
        let (entries, _) = ldap
            .with_search_options(SearchOptions::new().sizelimit(limit))
            .search(
                &s.base,
                Scope::Subtree,
                &filter,
                vec![s.group_name_attribute.as_str()],
            )
            .await
            .and_then(|r| r.success())
            .map_err(|err| match &err {
                ldap3::LdapError::LdapResult { result } if result.rc == 4 => {
                    format!("more than {max_groups} groups (identity.groups.max_groups)")
                }
                _ => format!("searching the groups: {err}"),
            })?;
        frontier = Vec::new();
        for entry in entries {
            let entry = SearchEntry::construct(entry);
            // An attribute description's name matches case-insensitively.
            let name = entry
                .attrs
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(&s.group_name_attribute))
                .and_then(|(_, v)| v.first().cloned());
            if let Some(name) = name {
                names.insert(name);
            }
            if seen_dns.insert(entry.dn.clone()) {
                frontier.push(entry.dn);
            }
            if names.len() > max_groups || seen_dns.len() > max_groups {
                return Err(format!(
                    "more than {max_groups} groups (identity.groups.max_groups)"
                ));
            }
        }
    }
    let _ = ldap.unbind().await;
    Ok(Some(names.into_iter().collect()))
}
