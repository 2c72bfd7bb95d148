//! The server side of the SASL/GSSAPI handshake (clients authenticating to hms-guard).

use std::fmt;
use std::io;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use libgssapi::context::{SecurityContext, ServerCtx};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

use super::{
    Gss, Layer, Negotiation, NegotiationError, SaslStream, BAD, COMPLETE, MAX_BUFFER, MAX_ROUNDS,
    OK, START,
};
use crate::kerberos::{KerberosSettings, Principal, Qop};

/// An authenticated client.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub principal: Principal,
    /// The user the principal maps to.
    pub user: String,
    pub qop: Qop,
}

/// Why a handshake ended without an authenticated client.
#[derive(Debug)]
pub enum Refusal {
    /// The client asked for another mechanism (PLAIN, DIGEST-MD5, …).
    Mechanism(String),
    /// The GSSAPI library refused the client's token (wrong key, expired ticket, clock skew,
    /// replay, unknown service principal …).
    Kerberos(String),
    /// The service credential could not be read (keytab missing or without the principal).
    Credential(String),
    /// The client asked to act as another principal.
    Authzid {
        principal: String,
        authzid: String,
    },
    /// No `auth_to_local` rule gives the principal a user.
    Unmapped {
        principal: String,
        reason: String,
    },
    /// The client chose a security layer that was not offered.
    Qop(u8),
    /// Not the SASL exchange (wrong status, a payload too large, too many rounds).
    Protocol(String),
    /// The client sent a SASL BAD or ERROR message.
    ClientFailed(String),
    Timeout(u64),
    Io(io::Error),
}

impl From<NegotiationError> for Refusal {
    fn from(e: NegotiationError) -> Self {
        match e {
            NegotiationError::Timeout(ms) => Refusal::Timeout(ms),
            NegotiationError::Io(e) => Refusal::Io(e),
            NegotiationError::Protocol(m) => Refusal::Protocol(m),
            NegotiationError::PeerFailed(m) => Refusal::ClientFailed(m),
        }
    }
}

impl Refusal {
    /// Metric label (bounded).
    pub fn kind(&self) -> &'static str {
        match self {
            Refusal::Mechanism(_) => "mechanism",
            Refusal::Kerberos(_) => "kerberos",
            Refusal::Credential(_) => "credential",
            Refusal::Authzid { .. } => "authzid",
            Refusal::Unmapped { .. } => "unmapped",
            Refusal::Qop(_) => "qop",
            Refusal::Protocol(_) => "protocol",
            Refusal::ClientFailed(_) => "client_failed",
            Refusal::Timeout(_) => "timeout",
            Refusal::Io(_) => "io",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Mechanism(m) if m == "DIGEST-MD5" => write!(
                f,
                "Unsupported mechanism type {m}: hms-guard does not accept delegation tokens; authenticate with Kerberos (kinit, or a keytab: Spark's --principal/--keytab with spark.security.credentials.hive.enabled=false)"
            ),
            Refusal::Mechanism(m) => write!(
                f,
                "Unsupported mechanism type {m}: hms-guard accepts Kerberos (GSSAPI) only"
            ),
            Refusal::Kerberos(e) => write!(f, "Kerberos authentication failed: {e}"),
            Refusal::Credential(e) => write!(
                f,
                "hms-guard cannot use its own Kerberos credential: {e}"
            ),
            Refusal::Authzid { principal, authzid } => write!(
                f,
                "{principal} asked to act as {authzid:?}: hms-guard does not let one principal act as another"
            ),
            Refusal::Unmapped { principal, reason } => write!(
                f,
                "principal {principal} has no user here: {reason}; ask the hms-guard operators to add an auth_to_local rule for it"
            ),
            Refusal::Qop(b) => write!(f, "security layer {b:#04x} was not offered"),
            Refusal::Protocol(e) => write!(f, "SASL negotiation: {e}"),
            Refusal::ClientFailed(m) => write!(f, "the client gave up the negotiation: {m}"),
            Refusal::Timeout(ms) => write!(f, "the SASL negotiation did not finish within {ms} ms"),
            Refusal::Io(e) => write!(f, "connection failed during the SASL negotiation: {e}"),
        }
    }
}

/// How a handshake ended.
pub enum Handshake<S> {
    Authenticated(Box<SaslStream<S>>, Authenticated),
    /// The client did not open with a SASL START message: the bytes it sent are handed back
    /// (a plain Thrift client on a Kerberos listener is answered in its own protocol).
    NotSasl(S, BytesMut),
    /// Refused; the client was told why when it could still read a message.
    Refused(Refusal),
}

/// Runs the server side of the SASL/GSSAPI handshake on a new connection, within `limit`.
/// `max_frame`: the largest message frame accepted afterwards.
pub async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
    mut io: S,
    settings: &KerberosSettings,
    limit: Duration,
    max_frame: usize,
) -> Handshake<S> {
    let mut n = Negotiation {
        io: &mut io,
        buf: BytesMut::with_capacity(4096),
        deadline: Instant::now() + limit,
        limit_ms: limit.as_millis() as u64,
    };
    // A SASL client opens with START; anything else is handed back whole.
    if let Err(r) = n.fill(1).await {
        return Handshake::Refused(r.into());
    }
    if n.buf[0] != START {
        let buf = std::mem::take(&mut n.buf);
        return Handshake::NotSasl(io, buf);
    }
    let result = negotiate(&mut n, settings).await;
    match result {
        Ok(auth) => {
            let rest = std::mem::take(&mut n.buf);
            let stream = SaslStream::new(io, auth.1, rest, max_frame);
            Handshake::Authenticated(Box::new(stream), auth.0)
        }
        Err(refusal) => {
            if !matches!(
                refusal,
                Refusal::Io(_) | Refusal::Timeout(_) | Refusal::ClientFailed(_)
            ) {
                // The client is told why (best effort: it may be gone).
                let _ = n.send(BAD, refusal.to_string().as_bytes()).await;
            }
            Handshake::Refused(refusal)
        }
    }
}

/// Runs `step` of the GSSAPI context off the async threads (it may read the keytab and the
/// replay cache).
async fn accept_step(
    mut ctx: ServerCtx,
    token: Bytes,
) -> Result<(ServerCtx, Option<Vec<u8>>), Refusal> {
    let joined = tokio::task::spawn_blocking(move || {
        let out = ctx.step(&token, None);
        (ctx, out)
    })
    .await;
    match joined {
        Ok((ctx, Ok(out))) => Ok((ctx, out.map(|b| b.to_vec()))),
        Ok((_, Err(e))) => Err(Refusal::Kerberos(e.to_string().trim().to_string())),
        Err(e) => Err(Refusal::Kerberos(format!("the GSSAPI step failed: {e}"))),
    }
}

async fn negotiate<S: AsyncRead + AsyncWrite + Unpin>(
    n: &mut Negotiation<'_, S>,
    settings: &KerberosSettings,
) -> Result<(Authenticated, Layer), Refusal> {
    let (_, mechanism) = n.read().await?;
    let mechanism = String::from_utf8_lossy(&mechanism).into_owned();
    if mechanism != "GSSAPI" {
        return Err(Refusal::Mechanism(mechanism));
    }
    // The client's first token comes with its opening (the initial response).
    let mut token = n.read_response().await?;
    let acceptor = settings.clone();
    let cred = tokio::task::spawn_blocking(move || acceptor.acceptor())
        .await
        .map_err(|e| Refusal::Credential(e.to_string()))?
        .map_err(Refusal::Credential)?;
    let mut ctx = ServerCtx::new(Some(cred));
    // The context: tokens back and forth until GSSAPI says it is established.
    let mut rounds = 0;
    loop {
        rounds += 1;
        if rounds > MAX_ROUNDS {
            return Err(Refusal::Protocol("too many negotiation rounds".into()));
        }
        let (c, out) = accept_step(ctx, token).await?;
        ctx = c;
        let done = ctx.is_complete();
        match out {
            Some(out) if !out.is_empty() => {
                n.send(OK, &out).await?;
                // After the last token (mutual authentication) the client answers with an
                // empty message.
                token = n.read_response().await?;
                if done {
                    break;
                }
            }
            _ if done => break,
            _ => {
                return Err(Refusal::Kerberos(
                    "no token to continue the exchange".into(),
                ))
            }
        }
    }
    let principal_name = ctx
        .source_name()
        .and_then(|n| n.display_name())
        .map_err(|e| Refusal::Kerberos(format!("no client name: {e}")))?;
    let principal_name = std::str::from_utf8(&principal_name)
        .map_err(|_| Refusal::Kerberos("the client's name is not UTF-8".into()))?
        .to_string();
    let principal = Principal::parse(&principal_name).map_err(Refusal::Kerberos)?;
    // The security layer (RFC 4752 §3.1): offer the configured layers and the largest
    // buffer; the client picks one and may name an authorization id.
    let mut offer = [settings.offered, 0, 0, 0];
    offer[1..].copy_from_slice(&MAX_BUFFER.to_be_bytes()[1..]);
    let wrapped = ctx
        .wrap(false, &offer)
        .map_err(|e| Refusal::Kerberos(format!("wrapping the security-layer offer: {e}")))?;
    n.send(OK, &wrapped).await?;
    let answer = n.read_response().await?;
    let answer = ctx
        .unwrap(&answer)
        .map_err(|e| Refusal::Kerberos(format!("reading the security-layer choice: {e}")))?;
    if answer.len() < 4 {
        return Err(Refusal::Protocol(format!(
            "a security-layer choice of {} bytes",
            answer.len()
        )));
    }
    let chosen = answer[0];
    let qop = Qop::from_bit(chosen)
        .filter(|q| settings.offered & q.bit() != 0)
        .ok_or(Refusal::Qop(chosen))?;
    let authzid = String::from_utf8_lossy(&answer[4..]).into_owned();
    if !authzid.is_empty() && authzid != principal_name {
        return Err(Refusal::Authzid {
            principal: principal_name,
            authzid,
        });
    }
    let user = settings
        .mapping
        .map(&principal)
        .map_err(|e| Refusal::Unmapped {
            principal: principal_name.clone(),
            reason: e.to_string(),
        })?;
    n.send(COMPLETE, &[]).await?;
    let layer = match qop {
        Qop::Auth => Layer::Plain,
        q => Layer::Wrapped {
            ctx: Gss::Server(ctx),
            encrypt: q == Qop::AuthConf,
        },
    };
    Ok((
        Authenticated {
            principal,
            user,
            qop,
        },
        layer,
    ))
}
