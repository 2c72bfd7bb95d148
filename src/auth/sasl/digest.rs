//! DIGEST-MD5 (RFC 2831) as a SASL client, the way a Hadoop delegation token is presented to
//! a kerberized metastore: the user name is the token's identifier and the password its secret
//! (both base64), the realm `default`. Only the `auth` quality of protection is spoken (no
//! integrity or privacy layer): a metastore that insists on more is refused with that reason.
//! Pure functions: parsing the challenge, computing the response, checking the server's
//! `rspauth`.

use std::fmt;

use md5::{Digest, Md5};

/// Why a DIGEST-MD5 exchange cannot go on: the server's message does not parse, or asks for
/// what hms-guard does not speak, or does not prove the server knows the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DigestError {
    /// `key` without `=value`.
    NoValue {
        key: String,
    },
    TrailingBackslash,
    /// A quoted value of `key` without its closing `"`.
    Unclosed {
        key: String,
    },
    TooManyDirectives,
    /// A challenge longer than RFC 2831 allows (its length in bytes).
    ChallengeTooLong(usize),
    ChallengeNotUtf8,
    TwoNonces,
    /// An algorithm other than `md5-sess` (empty: none named).
    Algorithm(String),
    NoNonce,
    /// The qualities of protection offered, none of them `auth`.
    NoAuthQop(Vec<String>),
    RspauthNotUtf8,
    NoRspauth,
    RspauthMismatch,
}

impl fmt::Display for DigestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DigestError::NoValue { key } => write!(f, "directive {key:?} has no value"),
            DigestError::TrailingBackslash => f.write_str("a quoted value ends with a backslash"),
            DigestError::Unclosed { key } => write!(f, "the value of {key:?} is not closed"),
            DigestError::TooManyDirectives => f.write_str("too many directives"),
            DigestError::ChallengeTooLong(n) => write!(f, "a challenge of {n} bytes"),
            DigestError::ChallengeNotUtf8 => f.write_str("the challenge is not UTF-8"),
            DigestError::TwoNonces => f.write_str("two nonces"),
            DigestError::Algorithm(a) => {
                write!(f, "algorithm {a:?} (DIGEST-MD5 needs md5-sess)")
            }
            DigestError::NoNonce => f.write_str("the challenge has no nonce"),
            DigestError::NoAuthQop(qop) => write!(
                f,
                "the metastore offers DIGEST-MD5 with {} only; hms-guard speaks it with \"auth\" (the metastore's hadoop.rpc.protection = authentication)",
                qop.join(", ")
            ),
            DigestError::RspauthNotUtf8 => f.write_str("rspauth is not UTF-8"),
            DigestError::NoRspauth => f.write_str("the server's last message carries no rspauth"),
            DigestError::RspauthMismatch => {
                f.write_str("the server's rspauth does not match: it does not know the token")
            }
        }
    }
}

impl std::error::Error for DigestError {}

/// The server's challenge, as far as the response needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub realm: Option<String>,
    pub nonce: String,
    /// The qualities of protection offered (default `auth`).
    pub qop: Vec<String>,
    pub utf8: bool,
}

/// Largest challenge accepted (RFC 2831 limits it to 2048 bytes).
const MAX_CHALLENGE: usize = 2048;

/// Splits `key=value,key="quoted value",…` into pairs (quoted values unescaped).
pub fn directives(s: &str) -> Result<Vec<(String, String)>, DigestError> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(out);
        }
        let mut key = String::new();
        while let Some(c) = chars.peek().copied() {
            if c == '=' {
                break;
            }
            key.push(c);
            chars.next();
        }
        if chars.next() != Some('=') {
            return Err(DigestError::NoValue { key });
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('\\') => match chars.next() {
                        Some(c) => value.push(c),
                        None => return Err(DigestError::TrailingBackslash),
                    },
                    Some('"') => break,
                    Some(c) => value.push(c),
                    None => return Err(DigestError::Unclosed { key }),
                }
            }
        } else {
            while let Some(c) = chars.peek().copied() {
                if c == ',' {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        out.push((key.trim().to_ascii_lowercase(), value.trim().to_string()));
        if out.len() > 64 {
            return Err(DigestError::TooManyDirectives);
        }
    }
}

/// Reads the server's first challenge.
pub fn parse_challenge(bytes: &[u8]) -> Result<Challenge, DigestError> {
    if bytes.len() > MAX_CHALLENGE {
        return Err(DigestError::ChallengeTooLong(bytes.len()));
    }
    let text = std::str::from_utf8(bytes).map_err(|_| DigestError::ChallengeNotUtf8)?;
    let mut realm = None;
    let mut nonce = None;
    let mut qop = Vec::new();
    let mut utf8 = false;
    let mut algorithm = None;
    for (k, v) in directives(text)? {
        match k.as_str() {
            "realm" if realm.is_none() => realm = Some(v),
            "nonce" if nonce.is_some() => return Err(DigestError::TwoNonces),
            "nonce" => nonce = Some(v),
            "qop" => qop.extend(v.split(',').map(|q| q.trim().to_string())),
            "charset" => utf8 = v.eq_ignore_ascii_case("utf-8"),
            "algorithm" => algorithm = Some(v),
            _ => {}
        }
    }
    if algorithm.as_deref() != Some("md5-sess") {
        return Err(DigestError::Algorithm(algorithm.unwrap_or_default()));
    }
    if qop.is_empty() {
        qop.push("auth".into());
    }
    Ok(Challenge {
        realm,
        nonce: nonce.ok_or(DigestError::NoNonce)?,
        qop,
        utf8,
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn md5(parts: &[&[u8]]) -> [u8; 16] {
    let mut h = Md5::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// The response to a challenge, and the `rspauth` the server must then prove it knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub message: String,
    pub rspauth: String,
}

fn quote(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Computes the response (QOP `auth`, first use of the nonce).
pub fn respond(
    ch: &Challenge,
    username: &str,
    password: &str,
    digest_uri: &str,
    cnonce: &str,
) -> Result<Response, DigestError> {
    if !ch.qop.iter().any(|q| q == "auth") {
        return Err(DigestError::NoAuthQop(ch.qop.clone()));
    }
    let realm = ch.realm.clone().unwrap_or_default();
    let nc = "00000001";
    let inner = md5(&[
        username.as_bytes(),
        b":",
        realm.as_bytes(),
        b":",
        password.as_bytes(),
    ]);
    let a1 = md5(&[&inner, b":", ch.nonce.as_bytes(), b":", cnonce.as_bytes()]);
    let kd = |a2: &[u8]| {
        hex(&md5(&[
            hex(&a1).as_bytes(),
            b":",
            ch.nonce.as_bytes(),
            b":",
            nc.as_bytes(),
            b":",
            cnonce.as_bytes(),
            b":auth:",
            hex(&md5(&[a2])).as_bytes(),
        ]))
    };
    let response = kd(format!("AUTHENTICATE:{digest_uri}").as_bytes());
    let rspauth = kd(format!(":{digest_uri}").as_bytes());
    let mut message = String::new();
    if ch.utf8 {
        message.push_str("charset=utf-8,");
    }
    message.push_str(&format!(
        "username=\"{}\",realm=\"{}\",nonce=\"{}\",nc={nc},cnonce=\"{}\",digest-uri=\"{}\",maxbuf=65536,response={response},qop=auth",
        quote(username),
        quote(&realm),
        quote(&ch.nonce),
        quote(cnonce),
        quote(digest_uri)
    ));
    Ok(Response { message, rspauth })
}

/// Checks the server's last message (`rspauth=…`): it proves the server knows the secret.
pub fn check_rspauth(bytes: &[u8], expected: &str) -> Result<(), DigestError> {
    let text = std::str::from_utf8(bytes).map_err(|_| DigestError::RspauthNotUtf8)?;
    let got = directives(text)?
        .into_iter()
        .find(|(k, _)| k == "rspauth")
        .map(|(_, v)| v)
        .ok_or(DigestError::NoRspauth)?;
    if got.eq_ignore_ascii_case(expected) {
        Ok(())
    } else {
        Err(DigestError::RspauthMismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 2831 section 4, the IMAP example.
    #[test]
    fn the_rfc_example_gives_its_response_and_rspauth() {
        let ch = parse_challenge(
            b"realm=\"elwood.innosoft.com\",nonce=\"OA6MG9tEQGm2hh\",qop=\"auth\",algorithm=md5-sess,charset=utf-8",
        )
        .unwrap();
        let r = respond(
            &ch,
            "chris",
            "secret",
            "imap/elwood.innosoft.com",
            "OA6MHXh6VqTrRk",
        )
        .unwrap();
        assert!(
            r.message
                .contains("response=d388dad90d4bbd760a152321f2143af7"),
            "{}",
            r.message
        );
        assert_eq!(r.rspauth, "ea40f60335c427b5527b84dbabcdfffd");
        assert!(check_rspauth(b"rspauth=ea40f60335c427b5527b84dbabcdfffd", &r.rspauth).is_ok());
        assert!(check_rspauth(b"rspauth=00", &r.rspauth).is_err());
    }

    #[test]
    fn only_auth_is_spoken_and_md5_sess_required() {
        let ch = parse_challenge(b"nonce=\"n\",qop=\"auth-conf\",algorithm=md5-sess").unwrap();
        assert!(respond(&ch, "u", "p", "null/default", "c")
            .unwrap_err()
            .to_string()
            .contains("hadoop.rpc.protection"));
        assert!(parse_challenge(b"nonce=\"n\"").is_err());
        assert!(parse_challenge(b"qop=auth,algorithm=md5-sess").is_err());
    }

    #[test]
    fn quoted_values_and_lists_parse() {
        let d = directives("a=1, b=\"x,\\\"y\\\"\",qop=\"auth,auth-int\"").unwrap();
        assert_eq!(d[1], ("b".into(), "x,\"y\"".into()));
        assert_eq!(d[2].1, "auth,auth-int");
        assert!(directives("a=\"open").is_err());
        assert!(directives("novalue").is_err());
    }

    /// The errors' texts are the ones the SASL client has always reported.
    #[test]
    fn error_texts() {
        let ch = |b: &[u8]| parse_challenge(b).unwrap_err().to_string();
        assert_eq!(
            ch(b"nonce=\"n\""),
            "algorithm \"\" (DIGEST-MD5 needs md5-sess)"
        );
        assert_eq!(ch(b"algorithm=md5-sess"), "the challenge has no nonce");
        assert_eq!(ch(b"nonce=a,nonce=b"), "two nonces");
        assert_eq!(ch(&[0xff]), "the challenge is not UTF-8");
        assert_eq!(ch(&[b' '; 2049]), "a challenge of 2049 bytes");
        let d = |t: &str| directives(t).unwrap_err().to_string();
        assert_eq!(d("novalue"), "directive \"novalue\" has no value");
        assert_eq!(d("a=\"open"), "the value of \"a\" is not closed");
        assert_eq!(d("a=\"x\\"), "a quoted value ends with a backslash");
        assert_eq!(d(&"a=1,".repeat(65)), "too many directives");
        let r = |b: &[u8]| check_rspauth(b, "ab").unwrap_err().to_string();
        assert_eq!(r(b"x=1"), "the server's last message carries no rspauth");
        assert_eq!(
            r(b"rspauth=00"),
            "the server's rspauth does not match: it does not know the token"
        );
        assert_eq!(r(&[0xff]), "rspauth is not UTF-8");
        let ch = parse_challenge(b"nonce=n,qop=\"auth-int,auth-conf\",algorithm=md5-sess").unwrap();
        assert_eq!(
            respond(&ch, "u", "p", "null/default", "c").unwrap_err().to_string(),
            "the metastore offers DIGEST-MD5 with auth-int, auth-conf only; hms-guard speaks it with \"auth\" (the metastore's hadoop.rpc.protection = authentication)"
        );
    }
}
