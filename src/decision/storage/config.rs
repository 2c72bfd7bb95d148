//! `[storage]`: the dual-IAM storage check of location-bearing DDL (docs/STORAGE.md).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::error::{config_error as err, ConfigError};

use super::location::{valid_bucket_name, SchemeAliases};
use super::roles::{parse_role_arn, valid_external_id, RoleMap};
use super::StorageError;

/// `[storage]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Check the caller's own storage access for location-bearing DDL. Default `true`: with no
    /// role configured such DDL is denied ("no storage role for user …"), never let through
    /// unchecked. `false` turns the check off (locations then need only the metastore grants).
    pub enabled: bool,
    /// `probe` (default): ask S3 itself (read = ListObjectsV2, write = CreateMultipartUpload +
    /// AbortMultipartUpload under the prefix). `simulate`: IAM SimulatePrincipalPolicy.
    pub method: StorageMethod,
    /// Which access a location-bearing DDL needs. `false` (default): read and write — the
    /// compute role will write wherever a table points, so a user may only point a table at a
    /// place the user's own role could write. `true`: external tables and partitions need only
    /// read (read-only data shared with the user); managed tables and databases still need
    /// write.
    pub read_only_external: bool,
    /// Locations that are not `s3://`, `s3a://` or `s3n://` (including scheme-less paths, which
    /// resolve against the cluster's default filesystem): `deny` (default) or `allow` unchecked.
    pub other_schemes: OtherSchemes,
    /// Families of URI schemes that name the same store: a location written with one scheme
    /// of a family is the same place as with any other of it, wherever locations are compared
    /// (docs/STORAGE.md "Canonical locations"). Default `[["s3", "s3a", "s3n"]]`; a scheme in
    /// no family is a family of its own.
    pub scheme_aliases: Vec<Vec<String>>,
    /// User name → the ARN of the user's own role (IAM-A).
    pub user_roles: BTreeMap<String, String>,
    /// Group name → role ARN, for users without an entry in `user_roles`; the first of the
    /// user's groups (in the order the identity lists them) that has an entry wins.
    pub group_roles: BTreeMap<String, String>,
    /// The account default role, for users matched by neither map; empty: none (deny).
    pub default_role: String,
    /// Cross-account buckets: bucket → the role the bucket's owner created for this account,
    /// assumed from the user's role session (role chaining) with its external id.
    pub buckets: BTreeMap<String, BucketRole>,
    /// A JSON file `{"bucket": {"role_arn": "...", "external_id": "..."}}` merged into
    /// `buckets` (read once at start; a bucket may not appear in both).
    pub buckets_file: String,
    /// Endpoint for STS, S3 and IAM instead of AWS's (an S3-compatible store or a test
    /// stand-in); S3 is then addressed path-style. Empty: AWS.
    pub endpoint_url: String,
    /// AWS region for STS and S3 (and the buckets). Empty: `AWS_REGION` /
    /// `AWS_DEFAULT_REGION` / the profile's region, else `us-east-1`.
    pub region: String,
    /// Requested lifetime of assumed-role sessions. AWS accepts 900 s up to the role's maximum
    /// session duration (a chained, cross-account hop at most 1 h, which is applied to it).
    pub session_duration_ms: u64,
    /// Cached credentials are renewed this long before they expire (plus up to a tenth of it as
    /// jitter); one renewal per role chain at a time, other checks keep using the old ones.
    pub refresh_before_ms: u64,
    /// How long an allow or deny is reused for the same role chain, bucket, prefix and action;
    /// also the longest delay before an IAM policy change is seen. 0 disables the cache.
    pub decision_ttl_ms: u64,
    /// Deadline of one whole check (credentials, probe, retries); past it the check denies as
    /// unavailable.
    pub timeout_ms: u64,
    /// Attempts per AWS call for failures worth retrying (network, timeouts, 5xx, throttling),
    /// with backoff, all within `timeout_ms`.
    pub max_attempts: u32,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            enabled: true,
            method: StorageMethod::Probe,
            read_only_external: false,
            other_schemes: OtherSchemes::Deny,
            scheme_aliases: vec![vec!["s3".into(), "s3a".into(), "s3n".into()]],
            user_roles: BTreeMap::new(),
            group_roles: BTreeMap::new(),
            default_role: String::new(),
            buckets: BTreeMap::new(),
            buckets_file: String::new(),
            endpoint_url: String::new(),
            region: String::new(),
            session_duration_ms: 3_600_000,
            refresh_before_ms: 300_000,
            decision_ttl_ms: 60_000,
            timeout_ms: 5_000,
            max_attempts: 3,
        }
    }
}

/// One cross-account bucket's role.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BucketRole {
    /// The bucket owner's role for this account.
    pub role_arn: String,
    /// The external id its trust policy requires (empty: none sent).
    #[serde(default)]
    pub external_id: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StorageMethod {
    Probe,
    Simulate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OtherSchemes {
    Deny,
    Allow,
}

/// `[storage]` resolved: the scheme families parsed, the role maps with the buckets file
/// loaded, durations. What `StorageGuard::new` builds the checker from.
#[derive(Debug, Clone)]
pub struct StorageSettings {
    /// `storage.enabled`: when false, the guard allows everything without looking.
    pub enabled: bool,
    pub method: StorageMethod,
    pub read_only_external: bool,
    pub other_schemes: OtherSchemes,
    pub scheme_aliases: SchemeAliases,
    /// `user_roles`, `group_roles`, `default_role` and every cross-account bucket
    /// (`buckets` and `buckets_file` merged).
    pub roles: RoleMap,
    /// Empty: AWS.
    pub endpoint_url: String,
    /// Empty: the AWS default chain's region.
    pub region: String,
    pub session_duration: Duration,
    /// Less than `session_duration`.
    pub refresh_before: Duration,
    /// Zero: decisions are not cached.
    pub decision_ttl: Duration,
    /// More than zero.
    pub timeout: Duration,
    /// 1 to 10.
    pub max_attempts: u32,
}

impl StorageSettings {
    /// Checks `[storage]` (every error at once, keys `storage.*`) and resolves it; the
    /// `buckets_file` is read here.
    pub fn resolve(c: &StorageConfig) -> Result<StorageSettings, Vec<ConfigError>> {
        let errors = c.validate();
        if !errors.is_empty() {
            return Err(errors);
        }
        let at_file = |e| vec![err("storage.buckets_file", e)];
        let scheme_aliases = SchemeAliases::new(&c.scheme_aliases)
            .map_err(|e| vec![err("storage.scheme_aliases", e.to_string())])?;
        let buckets = c.all_buckets().map_err(at_file)?;
        let ms = Duration::from_millis;
        Ok(StorageSettings {
            enabled: c.enabled,
            method: c.method,
            read_only_external: c.read_only_external,
            other_schemes: c.other_schemes,
            scheme_aliases,
            roles: RoleMap::new(c, buckets),
            endpoint_url: c.endpoint_url.clone(),
            region: c.region.clone(),
            session_duration: ms(c.session_duration_ms),
            refresh_before: ms(c.refresh_before_ms),
            decision_ttl: ms(c.decision_ttl_ms),
            timeout: ms(c.timeout_ms),
            max_attempts: c.max_attempts,
        })
    }
}

impl From<Vec<ConfigError>> for StorageError {
    fn from(errors: Vec<ConfigError>) -> Self {
        StorageError::Config(errors.iter().map(ToString::to_string).collect())
    }
}

/// Longest session AWS grants a chained role session.
pub(crate) const CHAINED_SESSION_MAX: Duration = Duration::from_millis(3_600_000);
/// Longest session any role can have.
const SESSION_MAX_MS: u64 = 43_200_000;

/// Reads a `buckets_file` document.
fn load_buckets_file(path: &Path) -> Result<BTreeMap<String, BucketRole>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut de = serde_json::Deserializer::from_str(&text);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let at = e.path().to_string();
        format!("{}: at `{at}`: {}", path.display(), e.into_inner())
    })
}

impl StorageConfig {
    /// Semantic checks, every error at once (keys are `storage.*`).
    pub fn validate(&self) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        self.check_roles(&mut errors);
        if let Err(e) = SchemeAliases::new(&self.scheme_aliases) {
            errors.push(err("storage.scheme_aliases", e.to_string()));
        }
        self.check_buckets(&mut errors);
        self.check_endpoint(&mut errors);
        self.check_bounds(&mut errors);
        errors
    }

    /// The role ARNs of `user_roles`, `group_roles` and `default_role`.
    fn check_roles(&self, errors: &mut Vec<ConfigError>) {
        for (user, arn) in &self.user_roles {
            if let Err(e) = parse_role_arn(arn) {
                errors.push(err(&format!("storage.user_roles.{user}"), e.to_string()));
            }
        }
        for (group, arn) in &self.group_roles {
            if let Err(e) = parse_role_arn(arn) {
                errors.push(err(&format!("storage.group_roles.{group}"), e.to_string()));
            }
        }
        if !self.default_role.is_empty() {
            if let Err(e) = parse_role_arn(&self.default_role) {
                errors.push(err("storage.default_role", e.to_string()));
            }
        }
    }

    /// `buckets` and the `buckets_file` (read now), and that no bucket is in both.
    fn check_buckets(&self, errors: &mut Vec<ConfigError>) {
        check_buckets("storage.buckets", &self.buckets, errors);
        if !self.buckets_file.is_empty() {
            match load_buckets_file(Path::new(&self.buckets_file)) {
                Ok(file) => {
                    check_buckets("storage.buckets_file", &file, errors);
                    for bucket in file.keys().filter(|b| self.buckets.contains_key(*b)) {
                        errors.push(err(
                            "storage.buckets_file",
                            format!("bucket `{bucket}` is also in storage.buckets"),
                        ));
                    }
                }
                Err(e) => errors.push(err("storage.buckets_file", e)),
            }
        }
    }

    /// `endpoint_url` and `region`.
    fn check_endpoint(&self, errors: &mut Vec<ConfigError>) {
        if !self.endpoint_url.is_empty() {
            let ok = ["http://", "https://"].iter().any(|p| {
                self.endpoint_url
                    .strip_prefix(p)
                    .is_some_and(|rest| !rest.is_empty() && !rest.contains(char::is_whitespace))
            });
            if !ok {
                errors.push(err(
                    "storage.endpoint_url",
                    format!(
                        "`{}` is not an http:// or https:// URL (empty: AWS)",
                        self.endpoint_url
                    ),
                ));
            }
        }
        if !self.region.is_empty()
            && !self
                .region
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            errors.push(err(
                "storage.region",
                format!("`{}` is not a region name (like eu-west-1)", self.region),
            ));
        }
    }

    /// Session lifetimes, the timeout and the attempts.
    fn check_bounds(&self, errors: &mut Vec<ConfigError>) {
        if self.session_duration_ms < 1_000 || self.session_duration_ms > SESSION_MAX_MS {
            errors.push(err(
                "storage.session_duration_ms",
                "must be between 1000 and 43200000 (AWS accepts 900000 up to the role's maximum)",
            ));
        }
        if self.refresh_before_ms >= self.session_duration_ms {
            errors.push(err(
                "storage.refresh_before_ms",
                "must be less than storage.session_duration_ms",
            ));
        }
        if self.timeout_ms == 0 {
            errors.push(err("storage.timeout_ms", "must be greater than 0"));
        }
        if self.max_attempts == 0 || self.max_attempts > 10 {
            errors.push(err("storage.max_attempts", "must be between 1 and 10"));
        }
    }

    /// `buckets` and `buckets_file` merged (the file is read now).
    fn all_buckets(&self) -> Result<BTreeMap<String, BucketRole>, String> {
        let mut all = self.buckets.clone();
        if !self.buckets_file.is_empty() {
            for (bucket, role) in load_buckets_file(Path::new(&self.buckets_file))? {
                if all.contains_key(&bucket) {
                    return Err(format!(
                        "bucket `{bucket}` is in both storage.buckets and storage.buckets_file"
                    ));
                }
                all.insert(bucket, role);
            }
        }
        Ok(all)
    }
}

fn check_buckets(key: &str, buckets: &BTreeMap<String, BucketRole>, errors: &mut Vec<ConfigError>) {
    for (bucket, role) in buckets {
        let at = format!("{key}.{bucket}");
        if let Err(e) = valid_bucket_name(bucket) {
            errors.push(err(&at, e.to_string()));
        }
        if let Err(e) = parse_role_arn(&role.role_arn) {
            errors.push(err(&format!("{at}.role_arn"), e.to_string()));
        }
        if !role.external_id.is_empty() && !valid_external_id(&role.external_id) {
            errors.push(err(
                &format!("{at}.external_id"),
                "must be 2 to 1224 characters of letters, digits and +=,.@:/-",
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_safe() {
        let c = StorageConfig::default();
        assert!(c.enabled);
        assert_eq!(c.other_schemes, OtherSchemes::Deny);
        assert_eq!(c.method, StorageMethod::Probe);
        assert!(c.validate().is_empty(), "{:?}", c.validate());
    }

    #[test]
    fn scheme_aliases_from_toml() {
        assert_eq!(
            StorageConfig::default().scheme_aliases,
            vec![vec!["s3", "s3a", "s3n"]]
        );
        let c: StorageConfig =
            toml::from_str("scheme_aliases = [[\"s3\", \"s3a\"], [\"abfs\", \"abfss\"]]\n")
                .unwrap();
        assert!(c.validate().is_empty(), "{:?}", c.validate());
        let families = SchemeAliases::new(&c.scheme_aliases).unwrap();
        assert_eq!(families.family("abfss"), "abfs");
        assert_eq!(families.family("s3n"), "s3n");
    }

    #[test]
    fn every_error_at_once() {
        let c = StorageConfig {
            user_roles: [("mary".into(), "role/x".into())].into(),
            group_roles: [("etl".into(), "arn:aws:iam::12:role/x".into())].into(),
            default_role: "arn:aws:iam::123456789012:user/x".into(),
            buckets: [(
                "Bad_Bucket".into(),
                BucketRole {
                    role_arn: "nope".into(),
                    external_id: "x".into(),
                },
            )]
            .into(),
            buckets_file: "/nonexistent/buckets.json".into(),
            endpoint_url: "localhost:5000".into(),
            region: "EU WEST".into(),
            session_duration_ms: 10,
            refresh_before_ms: 10,
            timeout_ms: 0,
            max_attempts: 0,
            scheme_aliases: vec![vec!["s3".into(), "s3a".into()], vec!["S3A".into()]],
            ..Default::default()
        };
        let keys: Vec<String> = c.validate().into_iter().map(|e| e.key).collect();
        for want in [
            "storage.scheme_aliases",
            "storage.user_roles.mary",
            "storage.group_roles.etl",
            "storage.default_role",
            "storage.buckets.Bad_Bucket",
            "storage.buckets.Bad_Bucket.role_arn",
            "storage.buckets.Bad_Bucket.external_id",
            "storage.buckets_file",
            "storage.endpoint_url",
            "storage.region",
            "storage.session_duration_ms",
            "storage.refresh_before_ms",
            "storage.timeout_ms",
            "storage.max_attempts",
        ] {
            assert!(
                keys.iter().any(|k| k == want),
                "{want} missing from {keys:?}"
            );
        }
    }
}
