//! Stage 1: a location string → its one canonical form (`CanonicalLocation`), and for S3 the
//! bucket and normalized key prefix the storage check asks about (`S3Location`).
//!
//! Every comparison of locations ("the same place", "under that place", a default place, an
//! Iceberg commit, the storage check's key) goes through the canonical form, for every scheme.
//! The form follows what Hadoop's `Path` and the metastore (`Warehouse.getDnsPath`) do to a
//! location, and refuses whatever a filesystem client could resolve differently from the
//! literal text: the scheme is compared without case and through its family
//! (`storage.scheme_aliases`; by default `s3`, `s3a` and `s3n` are one family); the authority
//! as its store compares it (an S3 bucket exactly, under AWS's naming rules; a namenode's host
//! without case, its port as written; an Azure `container@account` with the container exact
//! and the account host without case; `file:` only with no authority or `localhost`; any
//! other scheme's authority exactly); one trailing `/` is dropped; a `%` is an ordinary
//! character of a name (Hadoop's `Path` quotes it) — but `.` and `..` segments (Hadoop's
//! `Path` resolves them, other readers do not), empty segments (`a//b`: Hadoop folds `//`
//! pairwise, object stores keep them), percent-escapes of `.`, `/` or `\`, query and fragment
//! markers, backslashes, user info, whitespace at either end and control characters are
//! refused. A location that does not canonicalise is never the same as, nor under, any other.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, RwLock};

/// A parsed location, for the storage check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    S3(S3Location),
    /// Not an S3 scheme; `scheme` is lowercased, empty for a scheme-less path.
    Other {
        scheme: String,
    },
}

/// An S3 location: `prefix` is empty (the whole bucket) or `seg/…/seg/` (always a trailing `/`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct S3Location {
    /// `s3`, `s3a` or `s3n` (lowercased).
    pub scheme: String,
    pub bucket: String,
    pub prefix: String,
}

impl fmt::Display for S3Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}/{}", self.scheme, self.bucket, self.prefix)
    }
}

/// Why a location has no canonical form (or no S3 bucket and prefix). `Display` is the text a
/// denial gives after "invalid location: ".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocationError {
    Empty,
    Whitespace,
    ControlCharacter(char),
    /// No `scheme:`: the path would resolve against the default filesystem.
    NoScheme,
    /// `?`, `#` or `\`.
    RefusedCharacter(char),
    /// `scheme:` not followed by `//authority` (and not a local `file:/path`).
    NoAuthority {
        scheme: String,
    },
    EscapedAuthority(String),
    /// `file://host/…` with a host other than `localhost`.
    RemoteLocalPath(String),
    MissingAuthority,
    NotHostPort(String),
    NotAzure(String),
    UserInfo(String),
    Bucket(BucketNameError),
    RelativePath(String),
    EmptySegment,
    DotSegment(String),
    EncodedSeparator(String),
}

impl fmt::Display for LocationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LocationError::Empty => f.write_str("empty location"),
            LocationError::Whitespace => f.write_str("leading or trailing whitespace"),
            LocationError::ControlCharacter(c) => {
                write!(f, "control character U+{:04X}", *c as u32)
            }
            LocationError::NoScheme => f.write_str(
                "no scheme (the path would resolve against the cluster's default filesystem)",
            ),
            LocationError::RefusedCharacter(c) => {
                write!(f, "`{c}` is not accepted in a location")
            }
            LocationError::NoAuthority { scheme } => {
                write!(f, "expected {scheme}://authority/path")
            }
            LocationError::EscapedAuthority(a) => {
                write!(f, "percent-escape in the authority `{a}`")
            }
            LocationError::RemoteLocalPath(a) => write!(
                f,
                "`file://{a}/…`: a local path names no host other than localhost"
            ),
            LocationError::MissingAuthority => f.write_str("missing authority"),
            LocationError::NotHostPort(a) => write!(f, "`{a}` is not host[:port]"),
            LocationError::NotAzure(a) => write!(f, "`{a}` is not container@account-host"),
            LocationError::UserInfo(a) => {
                write!(f, "`{a}`: user info in a location is not accepted")
            }
            LocationError::Bucket(e) => e.fmt(f),
            LocationError::RelativePath(p) => write!(f, "relative path `{p}`"),
            LocationError::EmptySegment => f.write_str("empty path segment (`//`)"),
            LocationError::DotSegment(s) => write!(f, "`{s}` path segment"),
            LocationError::EncodedSeparator(s) => {
                write!(f, "encoded separator in path segment `{s}`")
            }
        }
    }
}

impl std::error::Error for LocationError {}

impl From<BucketNameError> for LocationError {
    fn from(e: BucketNameError) -> Self {
        LocationError::Bucket(e)
    }
}

/// Why a name is not an S3 bucket's (`valid_bucket_name`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BucketNameError {
    Missing,
    /// `@` or `:` in it: user info or a port.
    UserInfoOrPort(String),
    /// Against AWS's naming rules.
    Invalid(String),
}

impl fmt::Display for BucketNameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BucketNameError::Missing => f.write_str("missing bucket name"),
            BucketNameError::UserInfoOrPort(b) => {
                write!(
                    f,
                    "`{b}`: user info or port in an S3 location is not accepted"
                )
            }
            BucketNameError::Invalid(b) => write!(
                f,
                "`{b}` is not a valid bucket name (3-63 characters of a-z, 0-9, '.', '-', \
                 starting and ending with a letter or digit)"
            ),
        }
    }
}

impl std::error::Error for BucketNameError {}

/// Why `storage.scheme_aliases` is not a set of scheme families (`SchemeAliases::new`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemeAliasError {
    EmptyFamily,
    NotAScheme(String),
    InTwoFamilies(String),
}

impl fmt::Display for SchemeAliasError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SchemeAliasError::EmptyFamily => f.write_str("an empty family of schemes"),
            SchemeAliasError::NotAScheme(s) => write!(f, "`{s}` is not a URI scheme"),
            SchemeAliasError::InTwoFamilies(s) => {
                write!(f, "scheme `{s}` is in more than one family")
            }
        }
    }
}

impl std::error::Error for SchemeAliasError {}

/// The schemes the storage check asks S3 about.
const S3_SCHEMES: [&str; 3] = ["s3", "s3a", "s3n"];

/// The families of schemes that name the same store (`storage.scheme_aliases`): a location
/// written with any scheme of a family is the same place as with any other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemeAliases {
    /// scheme (lower case) → its family's name (the family's first scheme).
    family: BTreeMap<String, String>,
}

impl Default for SchemeAliases {
    fn default() -> Self {
        SchemeAliases::new(&[S3_SCHEMES.iter().map(|s| s.to_string()).collect()])
            .expect("the default aliases are valid")
    }
}

impl SchemeAliases {
    /// Families from lists of schemes; every scheme valid and in one family at most.
    pub fn new(families: &[Vec<String>]) -> Result<SchemeAliases, SchemeAliasError> {
        let mut family = BTreeMap::new();
        for list in families {
            let Some(first) = list.first() else {
                return Err(SchemeAliasError::EmptyFamily);
            };
            let name = first.to_ascii_lowercase();
            for scheme in list {
                if split_scheme(&format!("{scheme}:")).is_none() {
                    return Err(SchemeAliasError::NotAScheme(scheme.clone()));
                }
                let scheme = scheme.to_ascii_lowercase();
                if family.insert(scheme.clone(), name.clone()).is_some() {
                    return Err(SchemeAliasError::InTwoFamilies(scheme));
                }
            }
        }
        Ok(SchemeAliases { family })
    }

    /// The family of a lower-case scheme (the scheme itself when it has none).
    pub fn family<'a>(&'a self, scheme: &'a str) -> &'a str {
        self.family
            .get(scheme)
            .map(String::as_str)
            .unwrap_or(scheme)
    }
}

static ALIASES: RwLock<Option<Arc<SchemeAliases>>> = RwLock::new(None);

/// Makes `aliases` the families every comparison in this process uses (set once from the
/// configuration when the storage stage is built; the default families until then).
pub fn install_scheme_aliases(aliases: SchemeAliases) {
    let mut slot = ALIASES.write().unwrap_or_else(|e| e.into_inner());
    *slot = Some(Arc::new(aliases));
}

fn installed_aliases() -> Arc<SchemeAliases> {
    let slot = ALIASES.read().unwrap_or_else(|e| e.into_inner());
    match slot.as_ref() {
        Some(a) => a.clone(),
        None => Arc::new(SchemeAliases::default()),
    }
}

/// A location in its canonical form: two locations are the same place exactly when their
/// canonical forms are equal, and one is under another when the family and authority are
/// equal and the other's segments begin this one's.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CanonicalLocation {
    /// The scheme's family (lower case).
    pub family: String,
    /// The authority as its store compares it (empty for `file:`).
    pub authority: String,
    /// The path's segments (none: the root).
    pub segments: Vec<String>,
}

impl fmt::Display for CanonicalLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}/", self.family, self.authority)?;
        for s in &self.segments {
            write!(f, "{s}/")?;
        }
        Ok(())
    }
}

impl CanonicalLocation {
    /// At or under `parent`.
    pub fn is_under(&self, parent: &CanonicalLocation) -> bool {
        self.family == parent.family
            && self.authority == parent.authority
            && self.segments.starts_with(&parent.segments)
    }

    /// The place `name` directly under this one.
    pub fn child(&self, name: &str) -> CanonicalLocation {
        let mut c = self.clone();
        c.segments.push(name.to_string());
        c
    }
}

/// How a scheme's store compares the authority of a location.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AuthorityRule {
    /// An S3 bucket: AWS's naming rules, compared exactly.
    S3Bucket,
    /// `host[:port]` of a namenode: the host without case, the port as written.
    Host,
    /// `container@account-host` (ABFS, WASB): the container exactly, the host without case.
    Azure,
    /// The local filesystem: no authority, or `localhost` (the metastore stores either as
    /// `file:/…`).
    Local,
    /// Any other store: exactly as written.
    Exact,
}

fn authority_rule(scheme: &str) -> AuthorityRule {
    match scheme {
        "s3" | "s3a" | "s3n" => AuthorityRule::S3Bucket,
        "hdfs" | "webhdfs" | "swebhdfs" => AuthorityRule::Host,
        "abfs" | "abfss" | "wasb" | "wasbs" => AuthorityRule::Azure,
        "file" => AuthorityRule::Local,
        _ => AuthorityRule::Exact,
    }
}

/// The canonical form of `raw` under the installed scheme families.
pub fn canonical_location(raw: &str) -> Result<CanonicalLocation, LocationError> {
    canonical_location_with(raw, &installed_aliases())
}

/// The canonical form of `raw` under `aliases`.
pub fn canonical_location_with(
    raw: &str,
    aliases: &SchemeAliases,
) -> Result<CanonicalLocation, LocationError> {
    check_text(raw)?;
    let Some((scheme, rest)) = split_scheme(raw) else {
        return Err(LocationError::NoScheme);
    };
    let scheme = scheme.to_ascii_lowercase();
    if let Some(c) = rest.chars().find(|c| matches!(c, '?' | '#' | '\\')) {
        return Err(LocationError::RefusedCharacter(c));
    }
    let rule = authority_rule(&scheme);
    let (authority, path) = match rest.strip_prefix("//") {
        Some(after) => after.split_at(after.find('/').unwrap_or(after.len())),
        // `file:/x`: Hadoop's form of a local path without authority.
        None if rule == AuthorityRule::Local && rest.starts_with('/') => ("", rest),
        None => return Err(LocationError::NoAuthority { scheme }),
    };
    let authority = canonical_authority(rule, authority)?;
    Ok(CanonicalLocation {
        family: aliases.family(&scheme).to_string(),
        authority,
        segments: segments(path)?,
    })
}

fn check_text(raw: &str) -> Result<(), LocationError> {
    if raw.is_empty() {
        return Err(LocationError::Empty);
    }
    if raw.trim() != raw {
        return Err(LocationError::Whitespace);
    }
    if let Some(c) = raw.chars().find(|c| c.is_control()) {
        return Err(LocationError::ControlCharacter(c));
    }
    Ok(())
}

fn canonical_authority(rule: AuthorityRule, authority: &str) -> Result<String, LocationError> {
    if authority.contains('%') {
        return Err(LocationError::EscapedAuthority(authority.to_string()));
    }
    match rule {
        AuthorityRule::S3Bucket => Ok(valid_bucket_name(authority).map(|_| authority.to_string())?),
        AuthorityRule::Local
            if authority.is_empty() || authority.eq_ignore_ascii_case("localhost") =>
        {
            Ok(String::new())
        }
        AuthorityRule::Local => Err(LocationError::RemoteLocalPath(authority.to_string())),
        _ if authority.is_empty() => Err(LocationError::MissingAuthority),
        AuthorityRule::Host => host_port(authority),
        AuthorityRule::Azure => match authority.split_once('@') {
            Some((container, host)) if !container.is_empty() && !host.contains('@') => {
                Ok(format!("{container}@{}", host_port(host)?))
            }
            _ => Err(LocationError::NotAzure(authority.to_string())),
        },
        AuthorityRule::Exact if authority.contains('@') => {
            Err(LocationError::UserInfo(authority.to_string()))
        }
        AuthorityRule::Exact => Ok(authority.to_string()),
    }
}

/// `host[:port]`: host lower-cased, port digits as written.
fn host_port(authority: &str) -> Result<String, LocationError> {
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (authority, None),
    };
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    if !host_ok || !port_ok {
        return Err(LocationError::NotHostPort(authority.to_string()));
    }
    Ok(authority.to_ascii_lowercase())
}

/// The segments of an absolute path (`""` and `"/"`: the root), one trailing `/` dropped.
fn segments(path: &str) -> Result<Vec<String>, LocationError> {
    if path.is_empty() || path == "/" {
        return Ok(Vec::new());
    }
    let inner = path
        .strip_prefix('/')
        .ok_or_else(|| LocationError::RelativePath(path.to_string()))?;
    let inner = inner.strip_suffix('/').unwrap_or(inner);
    inner
        .split('/')
        .map(|segment| check_segment(segment).map(|_| segment.to_string()))
        .collect()
}

/// Parses and normalizes `raw` for the storage check. `Err` explains what is wrong with an S3
/// location (or with the string as a whole); a location of another scheme is
/// `Ok(Location::Other)` (`storage.other_schemes` decides on it).
pub fn parse_location(raw: &str) -> Result<Location, LocationError> {
    check_text(raw)?;
    let Some((scheme, _)) = split_scheme(raw) else {
        return Ok(Location::Other {
            scheme: String::new(),
        });
    };
    let scheme = scheme.to_ascii_lowercase();
    if !S3_SCHEMES.contains(&scheme.as_str()) {
        return Ok(Location::Other { scheme });
    }
    // The storage check's key is the canonical form's bucket and segments.
    let c = canonical_location_with(raw, &SchemeAliases::default())?;
    let mut prefix = String::new();
    for s in &c.segments {
        prefix.push_str(s);
        prefix.push('/');
    }
    Ok(Location::S3(S3Location {
        scheme,
        bucket: c.authority,
        prefix,
    }))
}

/// `scheme:rest` where scheme is RFC 3986 (`ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )`).
fn split_scheme(raw: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = raw.split_once(':')?;
    let mut chars = scheme.chars();
    let first_alpha = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    (first_alpha && rest_ok).then_some((scheme, rest))
}

fn check_segment(segment: &str) -> Result<(), LocationError> {
    if segment.is_empty() {
        return Err(LocationError::EmptySegment);
    }
    let decoded = percent_decode(segment);
    if decoded == "." || decoded == ".." {
        return Err(LocationError::DotSegment(segment.to_string()));
    }
    if decoded.contains('/') || decoded.contains('\\') {
        return Err(LocationError::EncodedSeparator(segment.to_string()));
    }
    Ok(())
}

/// Decodes `%XX` escapes (invalid ones are kept literally); lossy for non-UTF-8 results.
fn percent_decode(s: &str) -> String {
    if !s.contains('%') {
        return s.to_string();
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// S3 bucket naming rules (current ones: 3–63 of `a-z0-9.-`, alphanumeric at both ends, no
/// `..`, not an IP address).
pub fn valid_bucket_name(bucket: &str) -> Result<(), BucketNameError> {
    if bucket.is_empty() {
        return Err(BucketNameError::Missing);
    }
    if bucket.contains(['@', ':']) {
        return Err(BucketNameError::UserInfoOrPort(bucket.to_string()));
    }
    let b = bucket.as_bytes();
    if !(3..=63).contains(&b.len())
        || !b
            .iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'-'))
        || !b[0].is_ascii_alphanumeric()
        || !b[b.len() - 1].is_ascii_alphanumeric()
        || bucket.contains("..")
        || bucket.parse::<std::net::Ipv4Addr>().is_ok()
    {
        return Err(BucketNameError::Invalid(bucket.to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s3(raw: &str) -> S3Location {
        match parse_location(raw) {
            Ok(Location::S3(l)) => l,
            other => panic!("{raw}: {other:?}"),
        }
    }

    #[test]
    fn schemes_bucket_and_prefix() {
        let l = s3("s3a://datalake/defloc/x");
        assert_eq!((l.scheme.as_str(), l.bucket.as_str()), ("s3a", "datalake"));
        assert_eq!(l.prefix, "defloc/x/");
        assert_eq!(s3("s3://datalake/defloc/x/").prefix, "defloc/x/");
        assert_eq!(s3("S3N://datalake/a").scheme, "s3n");
        assert_eq!(s3("s3a://datalake").prefix, "");
        assert_eq!(s3("s3a://datalake/").prefix, "");
        assert_eq!(
            s3("s3a://datalake/defloc/x").to_string(),
            "s3a://datalake/defloc/x/"
        );
        // Dots inside a segment are ordinary characters.
        assert_eq!(s3("s3a://d.lake/a.b/..c/").prefix, "a.b/..c/");
    }

    #[test]
    fn refuses_what_could_resolve_elsewhere() {
        for raw in [
            "s3a://datalake/defloc/../datawarehouse",
            "s3a://datalake/./x",
            "s3a://datalake/x/.",
            "s3a://datalake//x",
            "s3a://datalake/x//",
            "s3a://datalake/%2E%2E/x",
            "s3a://datalake/defloc/%2e%2e/datawarehouse",
            "s3a://datalake/a%2Fb",
            "s3a://datalake/a\\b",
            "s3a://datalake/a?b",
            "s3a://datalake/a#b",
            "s3a:/datalake/x",
            "s3a://",
            "s3a:///x",
            "s3a://user@datalake/x",
            "s3a://datalake:9000/x",
            "s3a://Datalake/x",
            "s3a://192.168.1.1/x",
            " s3a://datalake/x",
            "s3a://datalake/x\n",
            "",
        ] {
            assert!(parse_location(raw).is_err(), "{raw:?} accepted");
        }
    }

    #[test]
    fn other_schemes() {
        assert_eq!(
            parse_location("hdfs://nn:8020/warehouse/x"),
            Ok(Location::Other {
                scheme: "hdfs".into()
            })
        );
        assert_eq!(
            parse_location("/user/hive/warehouse/x"),
            Ok(Location::Other {
                scheme: String::new()
            })
        );
        assert_eq!(
            parse_location("ABFSS://c@acct.dfs.core.windows.net/x"),
            Ok(Location::Other {
                scheme: "abfss".into()
            })
        );
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%2Eb"), "a.b");
        assert_eq!(percent_decode("%"), "%");
        assert_eq!(percent_decode("%2"), "%2");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(percent_decode("x%2e"), "x.");
    }

    fn canon(raw: &str) -> Result<CanonicalLocation, LocationError> {
        canonical_location_with(raw, &SchemeAliases::default())
    }

    fn same(a: &str, b: &str) -> bool {
        matches!((canon(a), canon(b)), (Ok(x), Ok(y)) if x == y)
    }

    fn under(child: &str, parent: &str) -> bool {
        matches!((canon(child), canon(parent)), (Ok(c), Ok(p)) if c.is_under(&p))
    }

    #[test]
    fn the_same_place_in_every_scheme() {
        for (a, b) in [
            // S3: the family, one trailing slash, the scheme's case.
            ("s3a://lake/t", "s3://lake/t/"),
            ("S3N://lake/t", "s3a://lake/t"),
            ("s3a://lake", "s3a://lake/"),
            // Local files: Hadoop's `file:/x`, `file:///x` and `file://localhost/x`.
            ("file:/w/t", "file:///w/t"),
            ("file:///w/t/", "file://localhost/w/t"),
            ("FILE://LocalHost/w/t", "file:/w/t"),
            // A namenode's host without case, its port as written.
            (
                "hdfs://NN.example.com:8020/w/t",
                "hdfs://nn.example.com:8020/w/t/",
            ),
            ("HDFS://nn/w", "hdfs://nn/w"),
            // Azure: the account host without case.
            (
                "abfss://c@Acct.dfs.core.windows.net/t",
                "abfss://c@acct.dfs.core.windows.net/t",
            ),
            (
                "wasb://c@acct.blob.core.windows.net/t/",
                "wasb://c@acct.blob.core.windows.net/t",
            ),
            // Other stores: exactly.
            ("gs://bkt/t", "gs://bkt/t/"),
            ("oss://bkt/t", "OSS://bkt/t"),
            ("viewfs://cluster/t", "viewfs://cluster/t/"),
            // A `%` is a character of the name, as Hadoop's Path quotes it.
            ("s3a://lake/a%41", "s3a://lake/a%41/"),
        ] {
            assert!(same(a, b), "{a} = {b}");
            assert!(under(a, b) && under(b, a), "{a} ~ {b}");
        }
    }

    #[test]
    fn different_places_in_every_scheme() {
        for (a, b) in [
            ("s3a://lake/t", "s3a://lake/T"),
            ("s3a://lake/t", "s3a://other/t"),
            ("s3a://lake/t", "gs://lake/t"),
            ("file:/w/t", "file:/w/T"),
            ("hdfs://nn:8020/w", "hdfs://nn/w"),
            ("hdfs://nn1/w", "hdfs://nn2/w"),
            ("hdfs://nn/w", "webhdfs://nn/w"),
            (
                "abfs://c@acct.dfs.core.windows.net/t",
                "abfss://c@acct.dfs.core.windows.net/t",
            ),
            (
                "abfss://C@acct.dfs.core.windows.net/t",
                "abfss://c@acct.dfs.core.windows.net/t",
            ),
            ("gs://Bkt/t", "gs://bkt/t"),
            ("viewfs://Cluster/t", "viewfs://cluster/t"),
            ("s3a://lake/a%41", "s3a://lake/aA"),
            ("file:/w/t", "hdfs://nn/w/t"),
        ] {
            assert!(!same(a, b), "{a} != {b}");
            assert!(!under(a, b) && !under(b, a), "{a} !~ {b}");
        }
    }

    #[test]
    fn under_and_not_under_in_every_scheme() {
        for (child, parent) in [
            ("s3a://lake/t/p=1", "s3://lake/t"),
            ("s3a://lake/t/metadata/1.json", "s3a://lake/t/"),
            ("s3a://lake/t", "s3a://lake"),
            (
                "file:/w/db.db/t/metadata/00001.metadata.json",
                "file:///w/db.db/t",
            ),
            ("file://localhost/w/t/x", "file:/w"),
            ("file:/w", "file:/"),
            ("hdfs://NN:8020/w/t/x", "hdfs://nn:8020/w/t"),
            (
                "abfss://c@acct.dfs.core.windows.net/t/x",
                "abfss://c@ACCT.dfs.core.windows.net/t",
            ),
            ("gs://bkt/t/x", "gs://bkt/t"),
            ("viewfs://cluster/t/x", "viewfs://cluster/t"),
        ] {
            assert!(under(child, parent), "{child} under {parent}");
        }
        for (child, parent) in [
            ("s3a://lake/tx/p=1", "s3a://lake/t"),
            ("s3a://lake/t", "s3a://lake/t/p=1"),
            ("file:/w/tx", "file:/w/t"),
            ("file:/w/t/../u", "file:/w/t"),
            ("file://otherhost/w/t/x", "file:/w/t"),
            ("hdfs://nn/w/t/x", "hdfs://nn:8020/w/t"),
            ("hdfs:/w/t/x", "hdfs:/w/t"),
            ("/w/t/x", "/w/t"),
            ("gs://bkt/t2/x", "gs://bkt/t"),
            (
                "abfss://d@acct.dfs.core.windows.net/t/x",
                "abfss://c@acct.dfs.core.windows.net/t",
            ),
        ] {
            assert!(!under(child, parent), "{child} not under {parent}");
        }
    }

    #[test]
    fn refused_in_every_scheme() {
        for raw in [
            "file:/w/./t",
            "file:/w/../t",
            "file:/w//t",
            "file:///w/%2e%2e/t",
            "file:/w/a%2Fb",
            "file://host/w",
            "file:w/t",
            "hdfs://nn/w/../t",
            "hdfs://user@nn/w",
            "hdfs://nn:x/w",
            "hdfs:///w",
            "hdfs:/w",
            "gs://bkt/w?x",
            "gs://user@bkt/w",
            "abfss://acct.dfs.core.windows.net/w",
            "viewfs:///w",
            "/w/t",
            "w/t",
            " file:/w",
        ] {
            assert!(canon(raw).is_err(), "{raw:?} accepted");
        }
    }

    #[test]
    fn scheme_aliases() {
        let azure = SchemeAliases::new(&[
            vec!["s3".into(), "s3a".into()],
            vec!["abfs".into(), "ABFSS".into()],
        ])
        .unwrap();
        let c = |raw: &str| canonical_location_with(raw, &azure).unwrap();
        assert_eq!(
            c("abfs://c@acct.dfs.core.windows.net/t"),
            c("abfss://c@acct.dfs.core.windows.net/t")
        );
        // s3n left out of the family: another store.
        assert_ne!(c("s3n://lake/t"), c("s3a://lake/t"));
        assert_eq!(c("s3://lake/t"), c("s3a://lake/t"));
        assert!(SchemeAliases::new(&[vec!["s3".into()], vec!["S3".into()]]).is_err());
        assert!(SchemeAliases::new(&[vec![]]).is_err());
        assert!(SchemeAliases::new(&[vec!["s 3".into()]]).is_err());
    }

    /// A small deterministic generator (no property-testing crate): locations built from
    /// pieces that exercise case, slashes, escapes and dot segments.
    fn generated(n: usize) -> Vec<String> {
        const SCHEMES: [&str; 8] = ["s3", "S3A", "s3n", "file", "hdfs", "gs", "abfss", "viewfs"];
        const AUTH: [&str; 6] = ["lake", "", "localhost", "NN:8020", "c@Acct.dfs", "u@x"];
        const SEGS: [&str; 9] = ["a", "B", ".", "..", "", "%2e", "%41", "p=1", "x.y"];
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = |m: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % m as u64) as usize
        };
        (0..n)
            .map(|_| {
                let mut s = format!("{}://{}", SCHEMES[next(8)], AUTH[next(6)]);
                for _ in 0..next(4) {
                    s.push('/');
                    s.push_str(SEGS[next(9)]);
                }
                if next(2) == 0 {
                    s.push('/');
                }
                s
            })
            .collect()
    }

    #[test]
    fn canonical_form_is_idempotent_and_under_is_consistent() {
        let all = generated(3000);
        let parsed: Vec<CanonicalLocation> = all.iter().filter_map(|r| canon(r).ok()).collect();
        assert!(parsed.len() > 300, "too few valid cases: {}", parsed.len());
        for c in &parsed {
            // The canonical form, written out and read again, is itself.
            let again = canon(&c.to_string()).unwrap();
            assert_eq!(&again, c, "{c}");
            assert!(c.is_under(c));
            for seg in 0..=c.segments.len() {
                let mut parent = c.clone();
                parent.segments.truncate(seg);
                assert!(c.is_under(&parent), "{c} under {parent}");
                assert!(c.child("z").is_under(&parent));
            }
        }
        for a in parsed.iter().take(200) {
            for b in parsed.iter().take(200) {
                // Under both ways is the same place; under is antisymmetric otherwise.
                assert_eq!(a.is_under(b) && b.is_under(a), a == b, "{a} {b}");
            }
        }
    }

    /// The errors' texts are the ones denials have always given.
    #[test]
    fn error_texts() {
        let text = |raw: &str| {
            canonical_location_with(raw, &SchemeAliases::default())
                .unwrap_err()
                .to_string()
        };
        assert_eq!(text(""), "empty location");
        assert_eq!(text(" s3://b1c/x"), "leading or trailing whitespace");
        assert_eq!(text("s3://b1c/\u{7}"), "control character U+0007");
        assert_eq!(
            text("/x"),
            "no scheme (the path would resolve against the cluster's default filesystem)"
        );
        assert_eq!(text("s3://b1c/x?y"), "`?` is not accepted in a location");
        assert_eq!(text("HDFS:/x"), "expected hdfs://authority/path");
        assert_eq!(
            text("hdfs://n%41/x"),
            "percent-escape in the authority `n%41`"
        );
        assert_eq!(
            text("file://h/x"),
            "`file://h/…`: a local path names no host other than localhost"
        );
        assert_eq!(text("hdfs:///x"), "missing authority");
        assert_eq!(text("hdfs://a b/x"), "`a b` is not host[:port]");
        assert_eq!(
            text("abfs://acct/x"),
            "`acct` is not container@account-host"
        );
        assert_eq!(
            text("gs://u@b/x"),
            "`u@b`: user info in a location is not accepted"
        );
        assert_eq!(text("s3:///x"), "missing bucket name");
        assert_eq!(
            text("s3://u@b/x"),
            "`u@b`: user info or port in an S3 location is not accepted"
        );
        assert_eq!(
            text("s3://B/x"),
            "`B` is not a valid bucket name (3-63 characters of a-z, 0-9, '.', '-', starting and ending with a letter or digit)"
        );
        assert_eq!(text("s3://b1c/a//b"), "empty path segment (`//`)");
        assert_eq!(text("s3://b1c/a/%2e%2e/b"), "`%2e%2e` path segment");
        assert_eq!(
            text("s3://b1c/a%2Fb"),
            "encoded separator in path segment `a%2Fb`"
        );
        let aliases = |f: Vec<Vec<String>>| SchemeAliases::new(&f).unwrap_err().to_string();
        assert_eq!(aliases(vec![vec![]]), "an empty family of schemes");
        assert_eq!(
            aliases(vec![vec!["s 3".into()]]),
            "`s 3` is not a URI scheme"
        );
        assert_eq!(
            aliases(vec![vec!["s3".into()], vec!["S3".into()]]),
            "scheme `s3` is in more than one family"
        );
    }
}
