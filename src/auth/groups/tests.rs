//! The resolver's cache and failure policy with scripted sources; filter escaping; the file
//! format; configuration errors.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::config::{GroupsConfig, GroupsSettings, OnError};
use super::ldap::{escape_filter_value, member_filter, user_filter};
use super::*;

/// A source answering what the test scripts, counting its calls.
#[derive(Clone)]
struct Scripted {
    answer: Arc<Mutex<Lookup>>,
    calls: Arc<AtomicUsize>,
    delay: Arc<Mutex<Duration>>,
}

impl Default for Scripted {
    fn default() -> Self {
        Scripted {
            answer: Arc::new(Mutex::new(Ok(None))),
            calls: Arc::default(),
            delay: Arc::default(),
        }
    }
}

impl Scripted {
    fn set(&self, a: Lookup) {
        *self.answer.lock().unwrap() = a;
    }
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl GroupSource for Scripted {
    fn name(&self) -> &'static str {
        "ldap"
    }
    fn lookup<'a>(&'a self, _user: &'a str) -> LookupFuture<'a> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let a = self.answer.lock().unwrap().clone();
        let d = *self.delay.lock().unwrap();
        Box::pin(async move {
            tokio::time::sleep(d).await;
            a
        })
    }
}

fn settings(on_error: OnError) -> GroupsSettings {
    GroupsSettings {
        sources: Vec::new(),
        ttl: Duration::from_millis(200),
        negative_ttl: Duration::from_millis(100),
        on_error,
        last_known_max_age: Duration::from_millis(600),
        max_entries: 3,
        timeout: Duration::from_millis(300),
        max_groups: 3,
        max_concurrent_lookups: 4,
    }
}

fn resolver(
    sources: Vec<Box<dyn GroupSource>>,
    s: GroupsSettings,
) -> (GroupResolver, Arc<Metrics>) {
    let m = Arc::new(Metrics::new());
    (
        GroupResolver::with_sources(sources, s, MetastoreDb::Postgres, m.clone()),
        m,
    )
}

fn g(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn cached_until_the_ttl_then_read_again() {
    let src = Scripted::default();
    src.set(Ok(Some(g(&["b", "a", "a"]))));
    let (r, m) = resolver(vec![Box::new(src.clone())], settings(OnError::Deny));
    assert_eq!(*r.groups("mary").await.unwrap(), g(&["a", "b"]));
    assert_eq!(*r.groups("mary").await.unwrap(), g(&["a", "b"]));
    assert_eq!(src.calls(), 1, "the second was a cache hit");
    src.set(Ok(Some(g(&["a"]))));
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(
        *r.groups("mary").await.unwrap(),
        g(&["a"]),
        "a removal is seen after the TTL"
    );
    assert_eq!(src.calls(), 2);
    let text = m.encode();
    assert!(
        text.contains("hms_guard_group_lookups_total{source=\"cache\",outcome=\"hit\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("hms_guard_group_lookups_total{source=\"ldap\",outcome=\"found\"} 2"),
        "{text}"
    );
}

#[tokio::test]
async fn unknown_is_cached_for_the_negative_ttl_and_is_not_a_failure() {
    let src = Scripted::default();
    src.set(Ok(None));
    let (r, _) = resolver(vec![Box::new(src.clone())], settings(OnError::Deny));
    assert!(r.groups("ghost").await.unwrap().is_empty());
    assert!(r.groups("ghost").await.unwrap().is_empty());
    assert_eq!(src.calls(), 1);
    tokio::time::sleep(Duration::from_millis(120)).await;
    src.set(Ok(Some(g(&["new"]))));
    assert_eq!(
        *r.groups("ghost").await.unwrap(),
        g(&["new"]),
        "the negative TTL is shorter"
    );
}

#[tokio::test]
async fn deny_fails_and_names_user_and_source() {
    let src = Scripted::default();
    src.set(Ok(Some(g(&["a"]))));
    let (r, m) = resolver(vec![Box::new(src.clone())], settings(OnError::Deny));
    r.groups("mary").await.unwrap();
    src.set(Err("connection refused".into()));
    tokio::time::sleep(Duration::from_millis(250)).await;
    let e = r.groups("mary").await.unwrap_err();
    assert_eq!(e.user, "mary");
    assert_eq!(e.source_name, "ldap");
    assert!(
        e.to_string()
            .contains("groups of user mary could not be read from the ldap source"),
        "{e}"
    );
    assert!(m
        .encode()
        .contains("hms_guard_group_lookup_failures_total{source=\"ldap\"} 1"));
    // A failure is never cached as "no groups": the next lookup asks again.
    src.set(Ok(Some(g(&["a"]))));
    assert_eq!(*r.groups("mary").await.unwrap(), g(&["a"]));
}

#[tokio::test]
async fn last_known_is_used_until_its_max_age() {
    let src = Scripted::default();
    src.set(Ok(Some(g(&["a"]))));
    let (r, _) = resolver(vec![Box::new(src.clone())], settings(OnError::LastKnown));
    r.groups("mary").await.unwrap();
    src.set(Err("down".into()));
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(
        *r.groups("mary").await.unwrap(),
        g(&["a"]),
        "the last answer"
    );
    // Never a user without one.
    assert!(r.groups("john").await.is_err());
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(r.groups("mary").await.is_err(), "too old to be used");
}

#[tokio::test]
async fn a_slow_source_times_out() {
    let src = Scripted::default();
    src.set(Ok(Some(g(&["a"]))));
    *src.delay.lock().unwrap() = Duration::from_secs(5);
    let (r, m) = resolver(vec![Box::new(src)], settings(OnError::Deny));
    let started = std::time::Instant::now();
    let e = r.groups("mary").await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(e.reason.contains("timeout_ms"), "{e}");
    assert!(m.encode().contains("outcome=\"timeout\""));
}

#[tokio::test]
async fn sources_are_united_and_one_failing_fails_all() {
    let (a, b) = (Scripted::default(), Scripted::default());
    a.set(Ok(Some(g(&["x"]))));
    b.set(Ok(Some(g(&["y"]))));
    let table = [("mary".to_string(), g(&["z"]))].into_iter().collect();
    let (r, _) = resolver(
        vec![
            Box::new(a.clone()),
            Box::new(StaticSource(table)),
            Box::new(b.clone()),
        ],
        settings(OnError::Deny),
    );
    assert_eq!(*r.groups("mary").await.unwrap(), g(&["x", "y", "z"]));
    b.set(Err("down".into()));
    assert!(r.groups("john").await.is_err());
}

#[tokio::test]
async fn bad_names_are_left_out_and_too_many_groups_fail() {
    let src = Scripted::default();
    src.set(Ok(Some(g(&["ok", "bad\n", "also\u{0}bad"]))));
    let (r, m) = resolver(vec![Box::new(src.clone())], settings(OnError::Deny));
    assert_eq!(*r.groups("mary").await.unwrap(), g(&["ok"]));
    assert!(m
        .encode()
        .contains("hms_guard_group_names_refused_total{source=\"ldap\"} 2"));
    src.set(Ok(Some(g(&["a", "b", "c", "d"]))));
    let e = r.groups("john").await.unwrap_err();
    assert!(e.reason.contains("max_groups"), "{e}");
}

#[tokio::test]
async fn the_cache_is_bounded() {
    let src = Scripted::default();
    src.set(Ok(Some(g(&["a"]))));
    let (r, m) = resolver(vec![Box::new(src.clone())], settings(OnError::Deny));
    for u in ["u1", "u2", "u3", "u4", "u5"] {
        r.groups(u).await.unwrap();
    }
    assert!(m.encode().contains("hms_guard_group_cache_entries 3"));
    // The oldest went first; the newest is still a hit.
    let before = src.calls();
    r.groups("u5").await.unwrap();
    assert_eq!(src.calls(), before);
    r.groups("u1").await.unwrap();
    assert_eq!(src.calls(), before + 1);
}

#[test]
fn filter_values_are_escaped() {
    assert_eq!(escape_filter_value("mary"), "mary");
    assert_eq!(escape_filter_value("*"), "\\2a");
    assert_eq!(escape_filter_value("a)(uid=*"), "a\\29\\28uid=\\2a");
    assert_eq!(escape_filter_value("x\\y\0"), "x\\5cy\\00");
    assert_eq!(escape_filter_value("é"), "\\c3\\a9");
    assert_eq!(
        user_filter("(&(objectClass=posixAccount)(uid={0}))", "*)(uid=admin"),
        "(&(objectClass=posixAccount)(uid=\\2a\\29\\28uid=admin))"
    );
    assert_eq!(
        member_filter(
            "(objectClass=groupOfNames)",
            "member",
            &g(&["cn=a\\,b,dc=x"])
        ),
        "(&(objectClass=groupOfNames)(member=cn=a\\5c,b,dc=x))"
    );
    assert_eq!(
        member_filter(
            "(objectClass=groupOfNames)",
            "member",
            &g(&["cn=a", "cn=(b)"])
        ),
        "(&(objectClass=groupOfNames)(|(member=cn=a)(member=cn=\\28b\\29)))"
    );
}

#[test]
fn the_groups_file_is_parsed() {
    let t = file::parse("# comment\n\nanalysts: mary, john\nfinance:john\nempty:\nanalysts:mary\n")
        .unwrap();
    assert_eq!(t["mary"], g(&["analysts"]));
    assert_eq!(t["john"], g(&["analysts", "finance"]));
    assert!(file::parse("no colon here").unwrap_err().contains("line 1"));
    assert!(file::parse("ok:a\n:b").unwrap_err().contains("line 2"));
    assert!(file::parse("g:x:1:a").is_err());
}

#[tokio::test]
async fn the_groups_file_is_reloaded_when_it_changes() {
    let dir = std::env::temp_dir().join(format!("hms-guard-groups-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("groups");
    std::fs::write(&path, "analysts:mary\n").unwrap();
    let src = file::FileSource::new(path.clone());
    assert_eq!(src.lookup("mary").await.unwrap(), Some(g(&["analysts"])));
    assert_eq!(src.lookup("john").await.unwrap(), None);
    std::fs::write(&path, "analysts:john\nfinance:mary,john\n").unwrap();
    assert_eq!(src.lookup("mary").await.unwrap(), Some(g(&["finance"])));
    std::fs::write(&path, "broken").unwrap();
    assert!(src.lookup("mary").await.unwrap_err().contains("line 1"));
    std::fs::remove_file(&path).unwrap();
    assert!(
        src.lookup("mary").await.is_err(),
        "a missing file is a failure, not \"unknown\""
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_os_source_reads_the_system_group_database() {
    let src = os::OsSource::new("/usr/bin/id".into());
    let root = src.lookup("root").await.unwrap().unwrap();
    assert!(root.contains(&"root".to_string()), "{root:?}");
    assert_eq!(src.lookup("no-such-user-hms-guard").await.unwrap(), None);
    assert_eq!(
        src.lookup("--help").await.unwrap(),
        None,
        "a name is never an option"
    );
    let missing = os::OsSource::new("/nonexistent/id".into());
    assert!(missing.lookup("root").await.is_err());
}

fn parse(toml: &str) -> GroupsConfig {
    let c = crate::config::Config::parse_unvalidated(toml).unwrap();
    c.identity.groups
}

fn keys(toml: &str) -> Vec<String> {
    parse(toml)
        .validate()
        .into_iter()
        .map(|e| format!("{}: {}", e.key, e.message))
        .collect()
}

#[test]
fn the_old_form_is_the_static_source() {
    let c = parse("[identity.groups]\nmary = [\"analysts\"]\nttl_ms = 1000\n");
    assert!(c.validate().is_empty());
    let s = c.resolve().unwrap();
    assert_eq!(s.ttl, Duration::from_millis(1000));
    match &s.sources[..] {
        [config::SourceSettings::Static(t)] => assert_eq!(t["mary"], g(&["analysts"])),
        other => panic!("{other:?}"),
    }
    // A user named like a setting is written under [identity.groups.static].
    let c = parse("[identity.groups]\nsources = [\"static\"]\n[identity.groups.static]\nsources = [\"x\"]\nldap = [\"y\"]\n");
    assert!(c.validate().is_empty(), "{:?}", c.validate());
    assert_eq!(c.static_users()["ldap"], g(&["y"]));
}

#[test]
fn config_errors_name_their_key() {
    let has = |toml: &str, want: &str| {
        let k = keys(toml);
        assert!(k.iter().any(|e| e.starts_with(want)), "{want} not in {k:?}");
    };
    has(
        "[identity.groups]\nsources = [\"nis\"]\n",
        "identity.groups.sources: unknown source \"nis\"",
    );
    has(
        "[identity.groups]\nsources = [\"ldap\"]\n",
        "identity.groups.sources: lists \"ldap\" but",
    );
    has(
        "[identity.groups]\nsources = [\"static\"]\nmary = [\"a\"]\n[identity.groups.static]\n",
        "identity.groups.mary: unknown key",
    );
    has(
        "[identity.groups.os]\n",
        "identity.groups.os: configured but not listed",
    );
    has("[identity.groups]\nttl_ms = 0\n", "identity.groups.ttl_ms");
    has(
        "[identity.groups]\nttl = 5\n",
        "identity.groups.ttl: unknown key",
    );
    has("[identity.groups]\nsources = [\"file\"]\n[identity.groups.file]\npath = \"/nonexistent/groups\"\n", "identity.groups.file.path");
    let ldap = |extra: &str| {
        format!("[identity.groups]\nsources = [\"ldap\"]\n[identity.groups.ldap]\nbase = \"dc=x\"\n{extra}")
    };
    has(&ldap("url = \"http://x\"\n"), "identity.groups.ldap.url");
    has(&ldap("url = \"ldap://\"\n"), "identity.groups.ldap.url");
    has(
        &ldap("url = \"ldaps://x:636\"\n"),
        "identity.groups.ldap.ca: required",
    );
    has(
        &ldap("url = \"ldaps://x:636\"\nca = \"/nonexistent/ca.pem\"\n"),
        "identity.groups.ldap.ca: /nonexistent/ca.pem",
    );
    has(
        &ldap("url = \"ldap://x\"\nbind_dn = \"cn=a\"\nbind_password_file = \"/nonexistent/pw\"\n"),
        "identity.groups.ldap.bind_password_file",
    );
    has(
        &ldap("url = \"ldap://x\"\nbind_dn = \"cn=a\"\n"),
        "identity.groups.ldap.bind_password_file",
    );
    has(
        "[identity.groups]\nsources = [\"ldap\"]\n[identity.groups.ldap]\nurl = \"ldap://x\"\n",
        "identity.groups.ldap.base",
    );
    has(
        &ldap("url = \"ldap://x\"\nuser_filter = \"(uid=mary)\"\n"),
        "identity.groups.ldap.user_filter",
    );
    has(
        &ldap("url = \"ldap://x\"\nnested_depth = 2\n"),
        "identity.groups.ldap.nested_depth",
    );
    has(
        &ldap("url = \"ldap://x\"\nmember_attribute = \"member)(x\"\n"),
        "identity.groups.ldap.member_attribute",
    );
    assert!(keys(&ldap("url = \"ldap://127.0.0.1:389\"\n")).is_empty());
    // Unknown keys inside a source's section are refused by the parser.
    assert!(crate::config::Config::parse_unvalidated(
        "[identity.groups.ldap]\nurl = \"ldap://x\"\nbogus = 1\n"
    )
    .is_err());
}
