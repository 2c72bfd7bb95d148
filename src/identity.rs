//! Who is calling: the identity the proxy owns for each connection (docs/AUTHORIZATION.md, identity).

use std::fmt;

/// Where a connection's identity came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdentitySource {
    /// Fixed by the proxy's config (sidecar); the client's `set_ugi` is ignored.
    Pinned,
    /// Claimed by the client's `set_ugi` (trusted networks).
    SetUgi,
    /// No identity yet (no `set_ugi` received).
    Anonymous,
}

impl IdentitySource {
    pub fn as_str(&self) -> &'static str {
        match self {
            IdentitySource::Pinned => "pinned",
            IdentitySource::SetUgi => "set_ugi",
            IdentitySource::Anonymous => "anonymous",
        }
    }
}

/// The effective user of a connection.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    pub user: String,
    /// Sorted, without duplicates.
    pub groups: Vec<String>,
    pub source: IdentitySource,
}

impl Identity {
    pub const ANONYMOUS_USER: &'static str = "anonymous";

    pub fn anonymous() -> Self {
        Identity {
            user: Self::ANONYMOUS_USER.into(),
            groups: Vec::new(),
            source: IdentitySource::Anonymous,
        }
    }

    pub fn new(user: &str, groups: &[String], source: IdentitySource) -> Self {
        let mut groups: Vec<String> = groups.to_vec();
        groups.sort();
        groups.dedup();
        Identity {
            user: user.into(),
            groups,
            source,
        }
    }

    pub fn is_anonymous(&self) -> bool {
        self.source == IdentitySource::Anonymous
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.user)?;
        if !self.groups.is_empty() {
            write!(f, " (groups {})", self.groups.join(","))?;
        }
        Ok(())
    }
}
