//! The identity stage: who is calling. Each connection owns an identity — pinned by the
//! configuration, or claimed with `set_ugi`, which the proxy answers itself (docs/AUTHORIZATION.md).

use std::fmt;

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

/// `set_ugi`, answered by the proxy: in `set_ugi` mode the claimed user becomes the
/// connection's identity (groups from the configuration, or those claimed when client groups
/// are trusted); pinned, nothing changes. Returns the connection's identity after the call and
/// the reply — what the metastore itself answers: the group names the client sent. A claimed
/// user or group that breaks the names rule of the metastore's database (`names::check`) is
/// refused and the identity stays as it was.
pub fn set_ugi(
    settings: &crate::settings::IdentitySettings,
    current: &Identity,
    transport: crate::transport::Transport,
    header: &crate::codec::MessageHeader,
    args: &crate::codec::value::Value,
) -> Result<(Identity, bytes::BytesMut), crate::names::NameRefusal> {
    use crate::codec::writer::Writer;
    use crate::codec::MessageType;
    use crate::codec::Ty;
    use crate::config::IdentityMode;
    use crate::policy::args::strings_at;
    let claimed = strings_at(args, &[1]).into_iter().next();
    let claimed_groups = strings_at(args, &[2, crate::router::EACH]);
    let identity = match (settings.mode, claimed) {
        (IdentityMode::SetUgi, Some(user)) if !user.is_empty() => {
            let groups = settings.groups_of(&user, &claimed_groups);
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
