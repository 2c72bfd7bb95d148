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
//!
//! The whole protocol is here: the calls and their replies, the renew-or-ask order
//! (`UpstreamAuth::token_for`, on a connection the upstream stage opens), and the DIGEST-MD5
//! negotiation as the caller (`UpstreamAuth::connect_as`).

use std::future::Future;
use std::sync::Arc;

use base64::Engine as _;
use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::auth::kerberos::UpstreamKerberosSettings;
use crate::auth::sasl::{self, SaslStream};
use crate::decision::cache::TtlCache;
use crate::error::{ConnectError, UpstreamError};
use crate::wire::codec::reply::{success, ReplyError};
use crate::wire::codec::writer::Writer;
use crate::wire::codec::{MessageType, Protocol, ScanError, Ty};

/// The DIGEST-MD5 digest URI a metastore expects from token clients (its SASL server has no
/// protocol and the server name `default`).
const DIGEST_URI: &str = "null/default";
/// Largest `get_delegation_token` / `renew_delegation_token` reply taken.
pub const TOKEN_REPLY_LIMIT: u64 = 1024 * 1024;

/// Why no token was had: the token itself, the connection it was asked on, or the reply.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("the token ends early")]
    EndsEarly,
    #[error("the token ends inside a number")]
    EndsInsideNumber,
    #[error("a token part of length {0}")]
    PartLength(i64),
    #[error("the token ends inside a part")]
    EndsInsidePart,
    #[error("the token is not URL-safe base64: {0}")]
    NotBase64(base64::DecodeError),
    #[error("a token of kind {0:?}, not HIVE_DELEGATION_TOKEN")]
    Kind(String),
    /// No connection as hms-guard to ask on.
    #[error("{0}")]
    Connect(ConnectError),
    /// That connection failed.
    #[error("{0}")]
    Upstream(UpstreamError),
    /// The metastore refused (an exception), or its reply could not be read.
    #[error("{}", reply_text(.method, .err))]
    Reply {
        method: &'static str,
        err: ReplyError,
    },
    /// The success value could not be read.
    #[error("{0}")]
    Value(ScanError),
    #[error("the reply carries no token")]
    NoToken,
    #[error("the reply carries no expiry")]
    NoExpiry,
}

/// A reply without a success value, as the facts client words it.
fn reply_text(method: &str, err: &ReplyError) -> String {
    match err {
        ReplyError::Invalid(e) => format!("invalid reply to {method}: {e}"),
        ReplyError::Exception {
            exception, message, ..
        } => format!("metastore answered {method} with {exception}: {message}"),
    }
}

/// A connection to the metastore as hms-guard itself, on which tokens are asked for.
pub trait TokenChannel: Send {
    /// Sends `call` (`method`, sequence id 1) and reads its whole reply, at most
    /// `TOKEN_REPLY_LIMIT` bytes.
    fn call(
        &mut self,
        call: &[u8],
        method: &'static str,
    ) -> impl Future<Output = Result<BytesMut, UpstreamError>> + Send;
}

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
fn read_vint(b: &[u8], at: &mut usize) -> Result<i64, TokenError> {
    let first = *b.get(*at).ok_or(TokenError::EndsEarly)? as i8;
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
    let bytes = b.get(*at..*at + n).ok_or(TokenError::EndsInsideNumber)?;
    *at += n;
    let v = bytes.iter().fold(0i64, |v, x| (v << 8) | i64::from(*x));
    Ok(if negative { !v } else { v })
}

fn read_part<'a>(b: &'a [u8], at: &mut usize) -> Result<&'a [u8], TokenError> {
    let len = read_vint(b, at)?;
    let len = usize::try_from(len)
        .ok()
        .filter(|l| *l <= MAX_TOKEN_PART)
        .ok_or(TokenError::PartLength(len))?;
    let part = b.get(*at..*at + len).ok_or(TokenError::EndsInsidePart)?;
    *at += len;
    Ok(part)
}

/// Decodes the string `get_delegation_token` returns: URL-safe base64 (without padding) of a
/// Hadoop `Token` (identifier, password, kind, service, each length-prefixed).
pub fn decode(token: &str) -> Result<TokenSecret, TokenError> {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.trim_end_matches('='))
        .map_err(TokenError::NotBase64)?;
    let mut at = 0;
    let identifier = read_part(&raw, &mut at)?;
    let password = read_part(&raw, &mut at)?;
    let kind = read_part(&raw, &mut at)?;
    if kind != b"HIVE_DELEGATION_TOKEN" {
        return Err(TokenError::Kind(String::from_utf8_lossy(kind).into_owned()));
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    Ok(TokenSecret {
        username: b64.encode(identifier),
        password: b64.encode(password),
        token: token.to_string(),
    })
}

/// The `get_delegation_token(owner, renewer)` call (binary protocol, unframed).
fn token_call(owner: &str, renewer: &str, seqid: i32) -> BytesMut {
    let mut w = Writer::new(Protocol::Binary);
    w.message("get_delegation_token", MessageType::Call, seqid)
        .struct_begin();
    w.field(Ty::String, 1).string(owner.as_bytes());
    w.field(Ty::String, 2).string(renewer.as_bytes());
    w.struct_end();
    w.finish(false)
}

/// The `renew_delegation_token(token)` call (binary protocol, unframed).
fn renew_call(token: &str, seqid: i32) -> BytesMut {
    let mut w = Writer::new(Protocol::Binary);
    w.message("renew_delegation_token", MessageType::Call, seqid)
        .struct_begin();
    w.field(Ty::String, 1).string(token.as_bytes());
    w.struct_end();
    w.finish(false)
}

/// The new expiry (ms since the epoch) in a `renew_delegation_token` reply, or the refusal.
fn renewed_from_reply(reply: &[u8]) -> Result<i64, TokenError> {
    let method = "renew_delegation_token";
    match success(reply) {
        Ok(Some((mut r, Ty::I64))) => r.i64().map_err(TokenError::Value),
        Ok(_) => Err(TokenError::NoExpiry),
        Err(err) => Err(TokenError::Reply { method, err }),
    }
}

/// The token string in a `get_delegation_token` reply, or the metastore's refusal.
fn token_from_reply(reply: &[u8]) -> Result<String, TokenError> {
    let method = "get_delegation_token";
    match success(reply) {
        Ok(Some((mut r, Ty::String))) => r.string_lossy().map_err(TokenError::Value),
        Ok(_) => Err(TokenError::NoToken),
        Err(err) => Err(TokenError::Reply { method, err }),
    }
}

/// Renews the caller's last `token` (hms-guard is the renewer of the tokens it asks for):
/// `Ok(Err(..))` when the metastore refuses the renewal, `Err` when the connection fails.
async fn renew(
    conn: &mut impl TokenChannel,
    token: &str,
) -> Result<Result<i64, TokenError>, TokenError> {
    let reply = conn
        .call(&renew_call(token, 1), "renew_delegation_token")
        .await
        .map_err(TokenError::Upstream)?;
    Ok(renewed_from_reply(&reply))
}

/// A new token for `user`, renewed by `renewer`.
async fn ask(
    conn: &mut impl TokenChannel,
    user: &str,
    renewer: &str,
) -> Result<String, TokenError> {
    let reply = conn
        .call(&token_call(user, renewer, 1), "get_delegation_token")
        .await
        .map_err(TokenError::Upstream)?;
    token_from_reply(&reply)
}

/// Kerberos towards the metastore: the settings and the callers' tokens.
pub struct UpstreamAuth {
    pub settings: Arc<UpstreamKerberosSettings>,
    tokens: TtlCache<String, Arc<TokenSecret>>,
    /// Each caller's last token, renewed rather than replaced when its time in `tokens` is up
    /// (bounded by `max_tokens` too).
    last: std::sync::Mutex<std::collections::HashMap<String, String>>,
    metrics: Arc<crate::ops::metrics::Metrics>,
}

/// What a token request gave: the token's string form, and whether it is the caller's last
/// token renewed.
struct Fetched {
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
        metrics: Arc<crate::ops::metrics::Metrics>,
    ) -> Self {
        let tokens = TtlCache::new(settings.token_refresh, settings.max_tokens);
        UpstreamAuth {
            settings,
            tokens,
            last: Default::default(),
            metrics,
        }
    }

    /// `user`'s token: kept, or asked for on the connection as hms-guard that `open` gives —
    /// the caller's last token renewed, else a new one (one fetch per caller at a time).
    pub async fn token_for<C, Fut>(
        &self,
        user: &str,
        open: impl FnOnce() -> Fut,
    ) -> Result<Arc<TokenSecret>, TokenError>
    where
        C: TokenChannel,
        Fut: Future<Output = Result<C, ConnectError>>,
    {
        let renewer = &self.settings.token_renewer;
        self.token(user, |previous| async move {
            let mut conn = open().await.map_err(TokenError::Connect)?;
            if let Some(token) = previous {
                match renew(&mut conn, &token).await? {
                    Ok(until_ms) => {
                        tracing::info!(user, until_ms, "renewed the caller's delegation token");
                        return Ok(Fetched {
                            token,
                            renewed: true,
                        });
                    }
                    Err(e) => {
                        tracing::info!(user, error = %e, "the caller's delegation token could not be renewed; asking for a new one")
                    }
                }
            }
            let token = ask(&mut conn, user, renewer).await?;
            tracing::info!(user, "obtained a delegation token to act as the caller at the metastore");
            Ok(Fetched {
                token,
                renewed: false,
            })
        })
        .await
    }

    /// DIGEST-MD5 on `stream` as `user` with the user's `token`. A token the metastore no
    /// longer knows is forgotten: the next connection gets a new one.
    pub async fn connect_as<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        stream: S,
        user: &str,
        token: &TokenSecret,
        max_frame: usize,
    ) -> Result<SaslStream<S>, sasl::ClientError> {
        let connected = sasl::connect_digest(
            stream,
            &token.username,
            &token.password,
            DIGEST_URI,
            self.settings.handshake_timeout,
            max_frame,
        )
        .await;
        if connected.is_err() {
            self.forget(user);
        }
        connected
    }

    /// The caller's token: kept, or obtained with `fetch` (one fetch per caller at a time),
    /// which is given the caller's last token to renew, if any.
    async fn token<F, Fut>(&self, user: &str, fetch: F) -> Result<Arc<TokenSecret>, TokenError>
    where
        F: FnOnce(Option<String>) -> Fut,
        Fut: Future<Output = Result<Fetched, TokenError>>,
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
                        .get_or_create(&crate::ops::metrics::OutcomeLabels { outcome })
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
    fn forget(&self, user: &str) {
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
            .to_string()
            .contains("not HIVE_DELEGATION_TOKEN"));
    }
}
