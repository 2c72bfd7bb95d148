//! Stage 2: which role chain a user's check runs as, and the STS session name for the user.
//!
//! The chain's first hop is the user's own role (IAM-A): `storage.user_roles`, else the first
//! of the user's groups with an entry in `storage.group_roles`, else `storage.default_role`.
//! If the bucket is a cross-account bucket (`storage.buckets`), the bucket owner's role is the
//! second hop, assumed from the first hop's session with its external id.

use std::collections::BTreeMap;
use std::fmt;

use super::config::{BucketRole, StorageConfig};

/// One AssumeRole step.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Hop {
    pub role_arn: String,
    pub external_id: Option<String>,
}

/// Where a user's role came from (for messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoleSource {
    User,
    Group(String),
    Default,
}

impl fmt::Display for RoleSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RoleSource::User => f.write_str("storage.user_roles"),
            RoleSource::Group(g) => write!(f, "storage.group_roles, group {g}"),
            RoleSource::Default => f.write_str("storage.default_role"),
        }
    }
}

/// The role maps of `[storage]`, buckets file merged.
#[derive(Debug, Clone, Default)]
pub struct RoleMap {
    user_roles: BTreeMap<String, String>,
    group_roles: BTreeMap<String, String>,
    default_role: Option<String>,
    buckets: BTreeMap<String, BucketRole>,
}

impl RoleMap {
    pub fn new(cfg: &StorageConfig, buckets: BTreeMap<String, BucketRole>) -> Self {
        RoleMap {
            user_roles: cfg.user_roles.clone(),
            group_roles: cfg.group_roles.clone(),
            default_role: Some(cfg.default_role.clone()).filter(|r| !r.is_empty()),
            buckets,
        }
    }

    /// True if no user could ever get a role (every check would deny).
    pub fn is_empty(&self) -> bool {
        self.user_roles.is_empty() && self.group_roles.is_empty() && self.default_role.is_none()
    }

    /// The user's own role and where it came from; `None`: the user has no storage role.
    pub fn user_role(&self, user: &str, groups: &[String]) -> Option<(&str, RoleSource)> {
        if let Some(r) = self.user_roles.get(user) {
            return Some((r, RoleSource::User));
        }
        for g in groups {
            if let Some(r) = self.group_roles.get(g) {
                return Some((r, RoleSource::Group(g.clone())));
            }
        }
        self.default_role
            .as_deref()
            .map(|r| (r, RoleSource::Default))
    }

    /// The hops to run as for `bucket`, starting from the user's role.
    pub fn chain(&self, user_role: &str, bucket: &str) -> Vec<Hop> {
        let mut chain = vec![Hop {
            role_arn: user_role.to_string(),
            external_id: None,
        }];
        if let Some(b) = self.buckets.get(bucket) {
            chain.push(Hop {
                role_arn: b.role_arn.clone(),
                external_id: Some(b.external_id.clone()).filter(|e| !e.is_empty()),
            });
        }
        chain
    }
}

/// Why a string is not an IAM role ARN (`parse_role_arn`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleArnError {
    pub arn: String,
    pub fault: RoleArnFault,
}

/// Which part of a role ARN is wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleArnFault {
    Fields,
    Partition,
    Service,
    Account,
    Resource,
    Name,
}

impl fmt::Display for RoleArnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let why = match self.fault {
            RoleArnFault::Fields => "expected 6 `:`-separated fields starting with arn",
            RoleArnFault::Partition => "bad partition",
            RoleArnFault::Service => "service must be iam with an empty region",
            RoleArnFault::Account => "account must be 12 digits",
            RoleArnFault::Resource => "resource must be role/NAME",
            RoleArnFault::Name => "bad role name",
        };
        write!(
            f,
            "`{}` is not an IAM role ARN (arn:aws:iam::123456789012:role/NAME): {why}",
            self.arn
        )
    }
}

impl std::error::Error for RoleArnError {}

/// Checks `arn:PARTITION:iam::ACCOUNT:role/[PATH/]NAME`.
pub fn parse_role_arn(arn: &str) -> Result<(), RoleArnError> {
    let bad = |fault: RoleArnFault| {
        Err(RoleArnError {
            arn: arn.to_string(),
            fault,
        })
    };
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    if parts.len() != 6 || parts[0] != "arn" {
        return bad(RoleArnFault::Fields);
    }
    if parts[1].is_empty() || !parts[1].chars().all(|c| c.is_ascii_lowercase() || c == '-') {
        return bad(RoleArnFault::Partition);
    }
    if parts[2] != "iam" || !parts[3].is_empty() {
        return bad(RoleArnFault::Service);
    }
    if parts[4].len() != 12 || !parts[4].bytes().all(|b| b.is_ascii_digit()) {
        return bad(RoleArnFault::Account);
    }
    let Some(path_name) = parts[5].strip_prefix("role/") else {
        return bad(RoleArnFault::Resource);
    };
    let name = path_name.rsplit('/').next().unwrap_or_default();
    let name_ok = (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c));
    if !name_ok || path_name.len() > 512 {
        return bad(RoleArnFault::Name);
    }
    Ok(())
}

/// AWS's rule for `ExternalId`: 2–1224 characters of `[\w+=,.@:/-]`.
pub fn valid_external_id(id: &str) -> bool {
    (2..=1224).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_+=,.@:/-".contains(c))
}

/// The STS session name for `user`: AWS allows 2–64 characters of `[\w+=,.@-]`. Other
/// characters become `-`; a name longer than 64 is cut and ends with a stable hash of the whole
/// user name, so distinct long names stay distinct. Shows up in CloudTrail as the session.
pub fn session_name(user: &str) -> String {
    let mut name: String = user
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_+=,.@-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    if user.is_empty() {
        name = "anonymous".into();
    } else if name.len() < 2 {
        name = format!("user-{name}");
    }
    if name.len() > 64 {
        // Only ASCII is left, so byte slicing is on character boundaries.
        name.truncate(55);
        name.push('-');
        name.push_str(&format!("{:08x}", fnv1a(user.as_bytes())));
    }
    name
}

fn fnv1a(bytes: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in bytes {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "arn:aws:iam::123456789012:role/a";
    const B: &str = "arn:aws:iam::123456789012:role/b";
    const D: &str = "arn:aws:iam::123456789012:role/default";
    const X: &str = "arn:aws:iam::210987654321:role/subscriber";

    fn map() -> RoleMap {
        let cfg = StorageConfig {
            user_roles: [("mary".into(), A.into())].into(),
            group_roles: [("etl".into(), B.into()), ("bi".into(), A.into())].into(),
            default_role: D.into(),
            ..Default::default()
        };
        let buckets = [(
            "partner-data".to_string(),
            BucketRole {
                role_arn: X.into(),
                external_id: "ext-1".into(),
            },
        )]
        .into();
        RoleMap::new(&cfg, buckets)
    }

    #[test]
    fn resolution_order() {
        let m = map();
        let g = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            m.user_role("mary", &g(&["etl"])),
            Some((A, RoleSource::User))
        );
        assert_eq!(
            m.user_role("bob", &g(&["x", "etl", "bi"])),
            Some((B, RoleSource::Group("etl".into())))
        );
        assert_eq!(
            m.user_role("bob", &g(&["bi", "etl"])),
            Some((A, RoleSource::Group("bi".into())))
        );
        assert_eq!(m.user_role("bob", &[]), Some((D, RoleSource::Default)));
        let none = RoleMap::new(&StorageConfig::default(), Default::default());
        assert!(none.is_empty());
        assert_eq!(none.user_role("bob", &g(&["etl"])), None);
    }

    #[test]
    fn chains() {
        let m = map();
        assert_eq!(
            m.chain(A, "datalake"),
            vec![Hop {
                role_arn: A.into(),
                external_id: None
            }]
        );
        let c = m.chain(A, "partner-data");
        assert_eq!(c.len(), 2);
        assert_eq!(c[1].role_arn, X);
        assert_eq!(c[1].external_id.as_deref(), Some("ext-1"));
    }

    #[test]
    fn arns() {
        for ok in [A, "arn:aws-cn:iam::123456789012:role/path/to/r-1", X] {
            assert!(parse_role_arn(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "role/a",
            "arn:aws:iam::123456789012:user/a",
            "arn:aws:iam:us-east-1:123456789012:role/a",
            "arn:aws:sts::123456789012:role/a",
            "arn:aws:iam::1234:role/a",
            "arn:aws:iam::123456789012:role/",
            "arn:aws:iam::123456789012:role/a b",
        ] {
            assert!(parse_role_arn(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn session_names() {
        assert_eq!(session_name("mary"), "mary");
        assert_eq!(
            session_name("mary.smith@corp.example"),
            "mary.smith@corp.example"
        );
        assert_eq!(session_name("DOMAIN\\mary smith"), "DOMAIN-mary-smith");
        assert_eq!(session_name("x"), "user-x");
        assert_eq!(session_name(""), "anonymous");
        assert_eq!(session_name("é"), "user--");
        let long = "a".repeat(100);
        let n = session_name(&long);
        assert_eq!(n.len(), 64);
        assert_ne!(n, session_name(&"a".repeat(101)));
        assert_eq!(n, session_name(&long), "stable");
        let allowed = |c: char| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c);
        for u in ["a/b:c", "ü€😀 x", "\u{0}\u{7f}"] {
            let n = session_name(u);
            assert!(
                (2..=64).contains(&n.len()) && n.chars().all(allowed),
                "{u:?} -> {n}"
            );
        }
    }

    #[test]
    fn external_ids() {
        assert!(valid_external_id("partner-7f3a9c"));
        assert!(valid_external_id("a:b/c=d"));
        assert!(!valid_external_id("x"));
        assert!(!valid_external_id("has space"));
    }
}
