//! The command-line contract (README.md, command line): `check-config` and `serve`.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_hms-guard");

fn write_config(text: &str) -> tempfile_path::TempPath {
    tempfile_path::TempPath::new(text)
}

/// `hms-guard check-config` on `text`: its exit code and its stderr.
fn check_config(text: &str) -> (Option<i32>, String) {
    let cfg = write_config(text);
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&cfg.0)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `check_config` of a configuration that must be refused (exit 2): its stderr.
fn config_errors(text: &str) -> String {
    let (code, err) = check_config(text);
    assert_eq!(code, Some(2), "{err}");
    err
}

/// A minimal temp file helper (no extra crates).
mod tempfile_path {
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicU32, Ordering};

    pub struct TempPath(pub PathBuf);

    static N: AtomicU32 = AtomicU32::new(0);

    impl TempPath {
        pub fn new(text: &str) -> Self {
            let p = std::env::temp_dir().join(format!(
                "hms-guard-cli-{}-{}.toml",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::write(&p, text).unwrap();
            TempPath(p)
        }
    }

    impl Drop for TempPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

#[test]
fn check_config_accepts_a_valid_file() {
    let (code, err) = check_config(
        r#"
[server]
listen = "127.0.0.1:9083"
max_connections = 100
[upstream]
uris = ["thrift://hms-a:9083", "thrift://hms-b:9083"]
connect_timeout_ms = 2000
metastore_version = "2.3"
[admin]
listen = "0.0.0.0:9464"
[limits]
max_request_bytes = 1048576
[logging]
format = "text"
level = "hms_guard=debug,info"
"#,
    );
    assert_eq!(code, Some(0), "{err}");
}

#[test]
fn check_config_reports_every_error_at_once() {
    let err = config_errors(
        r#"
[server]
listen = "not an address"
max_conections = 10
idle_timeout_ms = "soon"
[upstream]
uris = ["http://wrong-scheme:9083", "thrift://ok:9083", "thrift://noport"]
metastore_version = "3"
[admin]
listen = "nope"
[limits]
max_depth = 0
[logging]
format = "xml"
[bogus_section]
x = 1
"#,
    );
    for needle in [
        "server.listen",
        "max_conections",
        "server.idle_timeout_ms",
        "upstream.uris[0]",
        "upstream.uris[2]",
        "upstream.metastore_version",
        "admin.listen",
        "limits.max_depth",
        "logging.format",
        "bogus_section",
    ] {
        assert!(err.contains(needle), "missing `{needle}` in:\n{err}");
    }
    assert!(
        !err.contains("uris[1]"),
        "valid entries are not reported:\n{err}"
    );
}

#[test]
fn check_config_reads_the_env_variable_and_reports_syntax_errors() {
    let cfg = write_config("[server\nlisten = 1");
    let out = Command::new(BIN)
        .arg("check-config")
        .env("HMS_GUARD_CONFIG", &cfg.0)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("TOML syntax"));
}

#[test]
fn serve_refuses_an_invalid_config_and_flags_override_the_file() {
    // Missing upstream: refused with exit 2.
    let cfg = write_config("[server]\nlisten = \"127.0.0.1:0\"\n");
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&cfg.0)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("upstream.uris"));

    // --upstream, --listen and --admin-listen complete it; SIGTERM stops it cleanly.
    let admin = free_port();
    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&cfg.0)
        .args([
            "--upstream",
            "thrift://127.0.0.1:1",
            "--listen",
            "127.0.0.1:0",
        ])
        .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let body = loop {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", admin)) {
            s.write_all(b"GET /healthz HTTP/1.0\r\n\r\n").unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            break out;
        }
        assert!(Instant::now() < deadline, "admin port never came up");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        body.starts_with("HTTP/1.0 200") || body.starts_with("HTTP/1.1 200"),
        "{body}"
    );
    let status = Command::new("kill")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let code = child.wait().unwrap();
    assert!(code.success(), "clean exit on SIGTERM: {code:?}");
    let mut logs = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .unwrap();
    let first = logs.lines().next().unwrap_or_default();
    assert!(first.starts_with('{'), "JSON logs by default: {first}");
    assert!(logs.contains("shutdown signal received"), "{logs}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn check_config_reports_group_source_errors_by_key() {
    let err = config_errors(
        r#"
[upstream]
uris = ["thrift://127.0.0.1:9083"]
[identity.groups]
sources = ["ldap", "file", "nis"]
ttl_ms = 0
[identity.groups.ldap]
url = "ldapz://directory.example.com"
ca = "/nonexistent/ldap-ca.pem"
bind_dn = "cn=reader,dc=example,dc=com"
bind_password_file = "/nonexistent/ldap-password"
base = ""
"#,
    );
    for needle in [
        "identity.groups.ldap.url",
        "identity.groups.ldap.ca: /nonexistent/ldap-ca.pem",
        "identity.groups.ldap.bind_password_file: /nonexistent/ldap-password",
        "identity.groups.ldap.base",
        "identity.groups.sources: unknown source \"nis\"",
        "identity.groups.sources: lists \"file\" but [identity.groups.file] is not configured",
        "identity.groups.ttl_ms",
    ] {
        assert!(err.contains(needle), "missing `{needle}` in:\n{err}");
    }
}

#[test]
fn check_config_reports_bad_index_settings() {
    let err = config_errors(
        r#"
[upstream]
uris = ["thrift://hms:9083"]
[index]
max_entries = 0
table_batch = 0
rescan_ms = 10
shared_prefixes = ["s3a://lake", "no-scheme/staging", "s3a://lake/staging"]
[notifications]
poll_ms = 0
[cache]
enabled = true
max_staleness_ms = 400
"#,
    );
    for needle in [
        "index.max_entries",
        "index.table_batch",
        "index.rescan_ms",
        "index.shared_prefixes[0]",
        "index.shared_prefixes[1]",
        "notifications.poll_ms",
    ] {
        assert!(err.contains(needle), "missing `{needle}` in:\n{err}");
    }
    assert!(!err.contains("index.shared_prefixes[2]"), "{err}");
    // The cache's bound is checked against the log's polling (0 < 400: no error here).
    assert!(!err.contains("cache.max_staleness_ms"), "{err}");
}

#[test]
fn check_config_reports_a_staleness_bound_below_the_polling() {
    let err = config_errors(
        r#"
[upstream]
uris = ["thrift://hms:9083"]
[notifications]
poll_ms = 1000
[cache]
enabled = true
max_staleness_ms = 500
"#,
    );
    assert!(
        err.contains("cache.max_staleness_ms") && err.contains("notifications.poll_ms"),
        "{err}"
    );
}
