//! Stage 1: a DDL location string → S3 bucket + normalized key prefix.
//!
//! The check must cover exactly the objects Hadoop will touch, so anything a filesystem client
//! could resolve differently from the literal text is refused rather than guessed at: `.` and
//! `..` segments (Hadoop's `Path` normalizes them away, `defloc/../datawarehouse` *is*
//! `datawarehouse`), empty segments (`a//b`), percent-escapes of `.` or `/`, query and fragment
//! markers, backslashes, whitespace and control characters.

use std::fmt;

/// A parsed location.
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

const S3_SCHEMES: [&str; 3] = ["s3", "s3a", "s3n"];

/// Parses and normalizes `raw`. `Err` explains what is wrong with an S3 location (or with the
/// string as a whole); a well-formed location of another scheme is `Ok(Location::Other)`.
pub fn parse_location(raw: &str) -> Result<Location, String> {
    if raw.is_empty() {
        return Err("empty location".into());
    }
    if raw.trim() != raw {
        return Err("leading or trailing whitespace".into());
    }
    if let Some(c) = raw.chars().find(|c| c.is_control()) {
        return Err(format!("control character U+{:04X}", c as u32));
    }
    let Some((scheme, rest)) = split_scheme(raw) else {
        return Ok(Location::Other {
            scheme: String::new(),
        });
    };
    let scheme = scheme.to_ascii_lowercase();
    if !S3_SCHEMES.contains(&scheme.as_str()) {
        return Ok(Location::Other { scheme });
    }
    let rest = rest
        .strip_prefix("//")
        .ok_or_else(|| format!("expected {scheme}://bucket/prefix"))?;
    if let Some(c) = rest.chars().find(|c| matches!(c, '?' | '#' | '\\')) {
        return Err(format!("`{c}` is not accepted in an S3 location"));
    }
    let (bucket, path) = rest.split_once('/').unwrap_or((rest, ""));
    valid_bucket_name(bucket)?;
    let mut prefix = String::with_capacity(path.len() + 1);
    if !path.is_empty() {
        let path = path.strip_suffix('/').unwrap_or(path);
        for segment in path.split('/') {
            check_segment(segment)?;
            prefix.push_str(segment);
            prefix.push('/');
        }
    }
    Ok(Location::S3(S3Location {
        scheme,
        bucket: bucket.to_string(),
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

fn check_segment(segment: &str) -> Result<(), String> {
    if segment.is_empty() {
        return Err("empty path segment (`//`)".into());
    }
    let decoded = percent_decode(segment);
    if decoded == "." || decoded == ".." {
        return Err(format!("`{segment}` path segment"));
    }
    if decoded.contains('/') || decoded.contains('\\') {
        return Err(format!("encoded separator in path segment `{segment}`"));
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
pub fn valid_bucket_name(bucket: &str) -> Result<(), String> {
    let bad = || {
        Err(format!(
            "`{bucket}` is not a valid bucket name (3-63 characters of a-z, 0-9, '.', '-', \
             starting and ending with a letter or digit)"
        ))
    };
    if bucket.is_empty() {
        return Err("missing bucket name".into());
    }
    if bucket.contains(['@', ':']) {
        return Err(format!(
            "`{bucket}`: user info or port in an S3 location is not accepted"
        ));
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
        return bad();
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
}
