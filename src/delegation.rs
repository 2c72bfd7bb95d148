//! Acting as the caller at a kerberized metastore (`[upstream.kerberos]`).
//!
//! A kerberized metastore takes the user of a connection from its SASL authentication;
//! `set_ugi` changes nothing there, and the SASL authorization id cannot name another user. So
//! hms-guard, configured at the metastore as a proxy user, asks for a delegation token in the
//! caller's name (`get_delegation_token(user, renewer)`) on its own Kerberos connection and
//! opens the caller's connections with DIGEST-MD5 on that token: the metastore then runs
//! (and audits) each call as the caller. Tokens are kept per caller for
//! `upstream.kerberos.token_refresh_ms` (bounded), well inside the metastore's renewal
//! interval (a day by default), then renewed — or replaced by a new one when the metastore
//! refuses the renewal.

use std::sync::Arc;

use base64::Engine as _;

use crate::cache::TtlCache;
use crate::codec::writer::Writer;
use crate::codec::{MessageType, Protocol, Ty};
use crate::kerberos::UpstreamKerberosSettings;

/// A delegation token as DIGEST-MD5 presents it: its identifier and secret, base64; and the
/// string form the metastore renews.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSecret {
    pub username: String,
    pub password: String,
    pub token: String,
}

/// Largest part of a token taken.
const MAX_TOKEN_PART: usize = 64 * 1024;

/// A Hadoop variable-length integer (`WritableUtils.readVInt`).
fn read_vint(b: &[u8], at: &mut usize) -> Result<i64, String> {
    let first = *b.get(*at).ok_or("the token ends early")? as i8;
    *at += 1;
    if first >= -112 {
        return Ok(i64::from(first));
    }
    let negative = first < -120;
    let n = if negative {
        -(i32::from(first) + 120)
    } else {
        -(i32::from(first) + 112)
    } as usize;
    let bytes = b
        .get(*at..*at + n)
        .ok_or("the token ends inside a number")?;
    *at += n;
    let v = bytes.iter().fold(0i64, |v, x| (v << 8) | i64::from(*x));
    Ok(if negative { !v } else { v })
}

fn read_part<'a>(b: &'a [u8], at: &mut usize) -> Result<&'a [u8], String> {
    let len = read_vint(b, at)?;
    let len = usize::try_from(len)
        .ok()
        .filter(|l| *l <= MAX_TOKEN_PART)
        .ok_or_else(|| format!("a token part of length {len}"))?;
    let part = b
        .get(*at..*at + len)
        .ok_or("the token ends inside a part")?;
    *at += len;
    Ok(part)
}

/// Decodes the string `get_delegation_token` returns: URL-safe base64 (without padding) of a
/// Hadoop `Token` (identifier, password, kind, service, each length-prefixed).
pub fn decode(token: &str) -> Result<TokenSecret, String> {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.trim_end_matches('='))
        .map_err(|e| format!("the token is not URL-safe base64: {e}"))?;
    let mut at = 0;
    let identifier = read_part(&raw, &mut at)?;
    let password = read_part(&raw, &mut at)?;
    let kind = read_part(&raw, &mut at)?;
    if kind != b"HIVE_DELEGATION_TOKEN" {
        return Err(format!(
            "a token of kind {:?}, not HIVE_DELEGATION_TOKEN",
            String::from_utf8_lossy(kind)
        ));
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    Ok(TokenSecret {
        username: b64.encode(identifier),
        password: b64.encode(password),
        token: token.to_string(),
    })
}

/// The `get_delegation_token(owner, renewer)` call (binary protocol, unframed).
pub fn token_call(owner: &str, renewer: &str, seqid: i32) -> bytes::BytesMut {
    let mut w = Writer::new(Protocol::Binary);
    w.message("get_delegation_token", MessageType::Call, seqid)
        .struct_begin();
    w.field(Ty::String, 1).string(owner.as_bytes());
    w.field(Ty::String, 2).string(renewer.as_bytes());
    w.struct_end();
    w.finish(false)
}

/// The `renew_delegation_token(token)` call (binary protocol, unframed).
pub fn renew_call(token: &str, seqid: i32) -> bytes::BytesMut {
    let mut w = Writer::new(Protocol::Binary);
    w.message("renew_delegation_token", MessageType::Call, seqid)
        .struct_begin();
    w.field(Ty::String, 1).string(token.as_bytes());
    w.struct_end();
    w.finish(false)
}

/// The new expiry (ms since the epoch) in a `renew_delegation_token` reply, or the refusal.
pub fn renewed_from_reply(reply: &[u8]) -> Result<i64, String> {
    match crate::facts::client::success("renew_delegation_token", reply) {
        Ok(Some((mut r, Ty::I64))) => r.i64().map_err(|e| e.to_string()),
        Ok(_) => Err("the reply carries no expiry".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// The token string in a `get_delegation_token` reply, or the metastore's refusal.
pub fn token_from_reply(reply: &[u8]) -> Result<String, String> {
    match crate::facts::client::success("get_delegation_token", reply) {
        Ok(Some((mut r, Ty::String))) => r.string_lossy().map_err(|e| e.to_string()),
        Ok(_) => Err("the reply carries no token".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// Kerberos towards the metastore: the settings and the callers' tokens.
pub struct UpstreamAuth {
    pub settings: Arc<UpstreamKerberosSettings>,
    tokens: TtlCache<String, Arc<TokenSecret>>,
    /// Each caller's last token, renewed rather than replaced when its time in `tokens` is up
    /// (bounded by `max_tokens` too).
    last: std::sync::Mutex<std::collections::HashMap<String, String>>,
    metrics: Arc<crate::metrics::Metrics>,
}

/// What a token request gave: the token's string form, and whether it is the caller's last
/// token renewed.
pub struct Fetched {
    pub token: String,
    pub renewed: bool,
}

impl std::fmt::Debug for UpstreamAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamAuth")
            .field("principal", &self.settings.principal)
            .field("tokens", &self.tokens.len())
            .finish()
    }
}

impl UpstreamAuth {
    pub fn new(
        settings: Arc<UpstreamKerberosSettings>,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Self {
        let tokens = TtlCache::new(settings.token_refresh, settings.max_tokens);
        UpstreamAuth {
            settings,
            tokens,
            last: Default::default(),
            metrics,
        }
    }

    /// The caller's token: kept, or obtained with `fetch` (one fetch per caller at a time),
    /// which is given the caller's last token to renew, if any.
    pub async fn token<F, Fut>(&self, user: &str, fetch: F) -> Result<Arc<TokenSecret>, String>
    where
        F: FnOnce(Option<String>) -> Fut,
        Fut: std::future::Future<Output = Result<Fetched, String>>,
    {
        let metrics = &self.metrics;
        let previous = self.last.lock().ok().and_then(|l| l.get(user).cloned());
        let (t, _) = self
            .tokens
            .get_or_load(
                &user.to_string(),
                || async {
                    let fetched = fetch(previous).await;
                    let renewed = fetched.as_ref().is_ok_and(|f| f.renewed);
                    let t = fetched.and_then(|f| decode(&f.token)).map(Arc::new);
                    let outcome = match (&t, renewed) {
                        (Err(_), _) => "error",
                        (Ok(_), true) => "renewed",
                        (Ok(_), false) => "ok",
                    };
                    metrics
                        .delegation_tokens
                        .get_or_create(&crate::metrics::OutcomeLabels { outcome })
                        .inc();
                    t
                },
                |_| true,
            )
            .await?;
        if let Ok(mut last) = self.last.lock() {
            if last.len() >= self.settings.max_tokens && !last.contains_key(user) {
                if let Some(k) = last.keys().next().cloned() {
                    last.remove(&k);
                }
            }
            last.insert(user.to_string(), t.token.clone());
        }
        Ok(t)
    }

    /// Forgets the caller's token (the metastore refused it: it is not renewed either).
    pub fn forget(&self, user: &str) {
        self.tokens.remove(&user.to_string());
        if let Ok(mut last) = self.last.lock() {
            last.remove(user);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A token the metastore 2.3 of the lab returned for `alice` (renewer hms-guard).
    const TOKEN: &str = "QwAFYWxpY2UJaG1zLWd1YXJkIWhtcy1ndWFyZC9sb2NhbGhvc3RASE1TR1VBUkQuVEVTVIoBokPPvfyKAaJn3EH8AQEUGH07IJ1Kt-y4X01XvTxmr74nMEgVSElWRV9ERUxFR0FUSU9OX1RPS0VOAA";

    #[test]
    fn a_metastore_token_decodes_to_its_identifier_and_secret() {
        let t = decode(TOKEN).unwrap();
        let b64 = base64::engine::general_purpose::STANDARD;
        let id = b64.decode(&t.username).unwrap();
        assert_eq!(id.len(), 67);
        assert_eq!(&id[1..7], b"\x05alice");
        assert_eq!(b64.decode(&t.password).unwrap().len(), 20);
    }

    #[test]
    fn vints_decode_like_hadoop() {
        for (bytes, want) in [
            (&[0x05u8][..], 5i64),
            (&[0x90][..], -112),
            (&[0x8f, 0x80][..], 128),
            (&[0x8e, 0x01, 0x00][..], 256),
            (&[0x87, 0x80][..], -129),
        ] {
            let mut at = 0;
            assert_eq!(read_vint(bytes, &mut at).unwrap(), want, "{bytes:?}");
            assert_eq!(at, bytes.len());
        }
        let mut at = 0;
        assert!(read_vint(&[0x8e, 0x01], &mut at).is_err());
    }

    #[test]
    fn damaged_tokens_are_refused() {
        assert!(decode("!!!").is_err());
        assert!(decode(&TOKEN[..40]).is_err());
        // Another kind of token (the kind's text changed).
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(TOKEN)
            .unwrap();
        let mut other = raw.clone();
        let at = raw.windows(4).position(|w| w == b"HIVE").unwrap();
        other[at] = b'X';
        let s = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(other);
        assert!(decode(&s)
            .unwrap_err()
            .contains("not HIVE_DELEGATION_TOKEN"));
    }
}
