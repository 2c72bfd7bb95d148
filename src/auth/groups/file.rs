//! The `file` source: lines `group:user,user,…` (`#` starts a comment), re-read when the file
//! changes (its modification time, size or inode), checked at each lookup the cache misses.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use super::{GroupSource, LookupFuture};

/// Largest groups file read.
pub const MAX_FILE_BYTES: u64 = 64 << 20;

/// user → groups.
pub type Table = BTreeMap<String, Vec<String>>;

/// Reads and parses the file.
pub fn read_table(path: &Path) -> Result<Table, String> {
    let shown = path.display();
    let len = std::fs::metadata(path)
        .map_err(|e| format!("{shown}: {e}"))?
        .len();
    if len > MAX_FILE_BYTES {
        return Err(format!("{shown}: larger than {MAX_FILE_BYTES} bytes"));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("{shown}: {e}"))?;
    parse(&text).map_err(|e| format!("{shown}: {e}"))
}

/// Parses `group:user,user` lines into user → groups (sorted, without duplicates).
pub fn parse(text: &str) -> Result<Table, String> {
    let mut table = Table::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((group, users)) = line.split_once(':') else {
            return Err(format!("line {}: expected group:user,user,…", i + 1));
        };
        let group = group.trim();
        if group.is_empty() || users.contains(':') {
            return Err(format!("line {}: expected group:user,user,…", i + 1));
        }
        for user in users.split(',').map(str::trim).filter(|u| !u.is_empty()) {
            table
                .entry(user.to_string())
                .or_default()
                .push(group.to_string());
        }
    }
    for groups in table.values_mut() {
        groups.sort();
        groups.dedup();
    }
    Ok(table)
}

type Stamp = (Option<SystemTime>, u64, u64);

/// The table last read and the file's stamp then.
type Loaded = Mutex<Option<(Stamp, Arc<Table>)>>;

fn stamp(path: &Path) -> Result<Stamp, String> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((m.modified().ok(), m.len(), m.ino()))
}

pub struct FileSource {
    path: PathBuf,
    loaded: Arc<Loaded>,
}

impl FileSource {
    pub fn new(path: PathBuf) -> FileSource {
        FileSource {
            path,
            loaded: Arc::new(Mutex::new(None)),
        }
    }

    /// The table, re-read if the file changed. A file that cannot be read or parsed fails
    /// the lookup (the previous table is not used: what the file says now is unknown).
    fn current(path: &Path, loaded: &Loaded) -> Result<Arc<Table>, String> {
        let now = stamp(path)?;
        let mut slot = loaded.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, table)) = slot.as_ref() {
            if *at == now {
                return Ok(table.clone());
            }
        }
        let table = Arc::new(read_table(path)?);
        // Stamped as before the read: a change during the read is seen next time.
        *slot = Some((now, table.clone()));
        tracing::info!(path = %path.display(), users = table.len(), "groups file (re)loaded");
        Ok(table)
    }
}

impl GroupSource for FileSource {
    fn name(&self) -> &'static str {
        "file"
    }

    fn lookup<'a>(&'a self, user: &'a str) -> LookupFuture<'a> {
        let (path, loaded, user) = (self.path.clone(), self.loaded.clone(), user.to_string());
        Box::pin(async move {
            let table = tokio::task::spawn_blocking(move || Self::current(&path, &loaded))
                .await
                .map_err(|e| format!("reading the groups file: {e}"))??;
            Ok(table.get(&user).cloned())
        })
    }
}
