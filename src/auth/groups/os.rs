//! The `os` source: the system's group database through NSS, as Hadoop's shell mapping reads
//! it — `id -Gn -- USER` (the user's primary and supplementary groups; whatever
//! `/etc/nsswitch.conf` names: files, sssd, LDAP…). The program is killed when the lookup's
//! time is up; its output is bounded.

use std::path::PathBuf;
use std::process::Stdio;

use tokio::io::AsyncReadExt;

use super::{GroupSource, LookupFuture};

/// Most bytes of `id`'s output read.
const MAX_OUTPUT_BYTES: u64 = 1 << 20;

pub struct OsSource {
    id: PathBuf,
}

impl OsSource {
    pub fn new(id: PathBuf) -> OsSource {
        OsSource { id }
    }

    async fn run(&self, user: &str) -> super::Lookup {
        if user.contains('\0') {
            return Ok(None);
        }
        let mut child = tokio::process::Command::new(&self.id)
            .arg("-Gn")
            .arg("--")
            .arg(user)
            .env_clear()
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("{}: {e}", self.id.display()))?;
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut stdout = child.stdout.take().expect("piped").take(MAX_OUTPUT_BYTES);
        let mut stderr = child.stderr.take().expect("piped").take(4096);
        let (r1, r2) = tokio::join!(stdout.read_to_end(&mut out), stderr.read_to_end(&mut err),);
        r1.and(r2)
            .map_err(|e| format!("reading {}: {e}", self.id.display()))?;
        let status = child
            .wait()
            .await
            .map_err(|e| format!("{}: {e}", self.id.display()))?;
        let err = String::from_utf8_lossy(&err);
        if !status.success() {
            // GNU coreutils: "id: 'x': no such user".
            if status.code() == Some(1) && err.contains("no such user") {
                return Ok(None);
            }
            let first = err
                .lines()
                .next()
                .unwrap_or("")
                .chars()
                .take(200)
                .collect::<String>();
            return Err(format!(
                "{} exited with {status}: {first}",
                self.id.display()
            ));
        }
        if out.len() as u64 >= MAX_OUTPUT_BYTES {
            return Err(format!(
                "{} wrote more than {MAX_OUTPUT_BYTES} bytes",
                self.id.display()
            ));
        }
        let out = String::from_utf8(out).map_err(|_| "a group name is not UTF-8".to_string())?;
        Ok(Some(out.split_whitespace().map(str::to_string).collect()))
    }
}

impl GroupSource for OsSource {
    fn name(&self) -> &'static str {
        "os"
    }

    fn lookup<'a>(&'a self, user: &'a str) -> LookupFuture<'a> {
        Box::pin(self.run(user))
    }
}
