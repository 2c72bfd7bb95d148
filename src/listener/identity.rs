//! The identity stage: who is calling. Each connection owns an identity — pinned by the
//! configuration, or claimed with `set_ugi`, which the proxy answers itself (docs/AUTHORIZATION.md).

use std::fmt;

use crate::auth::names::{self, MetastoreDb, NameKind, NameRefusal};
use crate::config::IdentityMode;

/// Where a connection's identity came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdentitySource {
    /// Fixed by the proxy's config (sidecar); the client's `set_ugi` is ignored.
    Pinned,
    /// Claimed by the client's `set_ugi` (trusted networks).
    SetUgi,
    /// The name in the client's verified TLS certificate; `set_ugi` is ignored.
    Certificate,
    /// The client's Kerberos principal, mapped to a user; `set_ugi` is ignored.
    Kerberos,
    /// No identity yet (no `set_ugi` received).
    Anonymous,
}

impl IdentitySource {
    pub fn as_str(&self) -> &'static str {
        match self {
            IdentitySource::Pinned => "pinned",
            IdentitySource::SetUgi => "set_ugi",
            IdentitySource::Certificate => "certificate",
            IdentitySource::Kerberos => "kerberos",
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

/// How callers are identified (`[identity]` resolved, with the names rule of the metastore's
/// database): part of `Settings`, used by every connection.
#[derive(Debug, Clone)]
pub struct IdentitySettings {
    pub mode: IdentityMode,
    /// The identity of every connection of a pinned proxy (anonymous in `set_ugi` mode).
    pub pinned: Identity,
    pub trust_client_groups: bool,
    /// Where users' groups come from (`[identity.groups]`); read by the connection's
    /// `GroupResolver` before each call (`resolves_groups`).
    pub groups: crate::auth::groups::config::GroupsSettings,
    /// `kerberos` mode: the acceptor and the name mapping.
    pub kerberos: Option<std::sync::Arc<crate::auth::kerberos::KerberosSettings>>,
    /// The database behind the metastore (`upstream.metastore_db`): which identity names are
    /// refused (`names::check`).
    pub metastore_db: MetastoreDb,
}

impl IdentitySettings {
    /// The identity a new connection starts with: the pinned one, or anonymous until
    /// `set_ugi`.
    /// (In `certificate` mode the identity comes from the TLS handshake.)
    pub fn initial(&self) -> Identity {
        match self.mode {
            IdentityMode::Pinned => self.pinned.clone(),
            IdentityMode::SetUgi | IdentityMode::Certificate | IdentityMode::Kerberos => {
                Identity::anonymous()
            }
        }
    }

    /// The identity of a user the proxy verified (a client certificate's name, a Kerberos
    /// principal's user), its groups still to be read from the sources (`resolves_groups`:
    /// the connection reads them before each call). Refused when the name breaks the names
    /// rule of the metastore's database.
    pub fn verified(&self, user: &str, source: IdentitySource) -> Result<Identity, NameRefusal> {
        let identity = Identity::new(user, &[], source);
        self.check(&identity)?;
        Ok(identity)
    }

    /// Whether `identity`'s groups come from `[identity.groups]` (read before each call):
    /// a `set_ugi` user unless client groups are trusted, a certificate's or Kerberos
    /// principal's user. A pinned identity keeps its pinned groups.
    pub fn resolves_groups(&self, identity: &Identity) -> bool {
        match identity.source {
            IdentitySource::SetUgi => !self.trust_client_groups,
            IdentitySource::Certificate | IdentitySource::Kerberos => true,
            IdentitySource::Pinned | IdentitySource::Anonymous => false,
        }
    }

    /// The names rule (`names::check`) applied to an identity's user and groups.
    pub fn check(&self, identity: &Identity) -> Result<(), NameRefusal> {
        names::check(self.metastore_db, NameKind::User, &identity.user)?;
        for g in &identity.groups {
            names::check(self.metastore_db, NameKind::Group, g)?;
        }
        Ok(())
    }

    /// The groups of a user who named itself with `set_ugi`: those it claimed, when client
    /// groups are trusted; else none yet — the connection reads them from the sources before
    /// the next call (`resolves_groups`).
    pub fn groups_of(&self, claimed: &[String]) -> Vec<String> {
        if self.trust_client_groups {
            claimed.to_vec()
        } else {
            Vec::new()
        }
    }
}

/// `set_ugi`, answered by the proxy: in `set_ugi` mode the claimed user becomes the
/// connection's identity (groups from `[identity.groups]`, read before its next call, or those
/// claimed when client groups are trusted); pinned, nothing changes. Returns the connection's identity after the call and
/// the reply — what the metastore itself answers: the group names the client sent. A claimed
/// user or group that breaks the names rule of the metastore's database (`names::check`) is
/// refused and the identity stays as it was.
pub fn set_ugi(
    settings: &IdentitySettings,
    current: &Identity,
    transport: crate::wire::transport::Transport,
    header: &crate::wire::codec::MessageHeader,
    args: &crate::wire::codec::value::Value,
) -> Result<(Identity, bytes::BytesMut), crate::auth::names::NameRefusal> {
    use crate::wire::codec::path::strings_at;
    use crate::wire::codec::writer::Writer;
    use crate::wire::codec::MessageType;
    use crate::wire::codec::Ty;
    let claimed = strings_at(args, &[1]).into_iter().next();
    let claimed_groups = strings_at(args, &[2, crate::wire::router::EACH]);
    let identity = match (settings.mode, claimed) {
        (IdentityMode::SetUgi, Some(user)) if !user.is_empty() => {
            let groups = settings.groups_of(&claimed_groups);
            let id = Identity::new(&user, &groups, IdentitySource::SetUgi);
            settings.check(&id)?;
            tracing::info!(user = %id.user, groups = ?id.groups, "identity from set_ugi");
            id
        }
        (IdentityMode::Pinned | IdentityMode::Certificate | IdentityMode::Kerberos, claimed)
            if claimed.as_deref() != Some(current.user.as_str()) =>
        {
            tracing::debug!(claimed = ?claimed, user = %current.user, source = current.source.as_str(), "set_ugi ignored: the identity is fixed");
            current.clone()
        }
        _ => current.clone(),
    };
    let mut w = Writer::new(transport.protocol);
    w.message(&header.name, MessageType::Reply, header.seqid)
        .struct_begin();
    w.field(Ty::List, 0)
        .list_begin(Ty::String, claimed_groups.len());
    for n in &claimed_groups {
        w.string(n.as_bytes());
    }
    w.struct_end();
    Ok((identity, w.finish(transport.framed)))
}
