//! The server side of the SASL/GSSAPI handshake (clients authenticating to hms-guard).

use std::fmt;
use std::io;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use libgssapi::context::{CtxFlags, SecurityContext, ServerCtx};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

use super::{
    Gss, Layer, Negotiation, NegotiationError, SaslStream, BAD, COMPLETE, MAX_BUFFER, MAX_ROUNDS,
    OK, START,
};
use crate::auth::kerberos::{KerberosSettings, Principal, Qop};

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
    /// The Kerberos session lacks a protection hms-guard requires (the principal is logged,
    /// not told to the peer: a replayer would learn whose negotiation it holds).
    Unprotected {
        principal: String,
        why: Unprotected,
    },
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
            Refusal::Unprotected { .. } => "unprotected",
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
            Refusal::Unprotected { why, .. } => write!(f, "{why}"),
            Refusal::Protocol(e) => write!(f, "SASL negotiation: {e}"),
            Refusal::ClientFailed(m) => write!(f, "the client gave up the negotiation: {m}"),
            Refusal::Timeout(ms) => write!(f, "the SASL negotiation did not finish within {ms} ms"),
            Refusal::Io(e) => write!(f, "connection failed during the SASL negotiation: {e}"),
        }
    }
}

impl Refusal {
    /// The authenticated principal the refusal concerns, when there is one (for the log).
    pub fn principal(&self) -> Option<&str> {
        match self {
            Refusal::Unprotected { principal, .. } => Some(principal),
            Refusal::Authzid { principal, .. } | Refusal::Unmapped { principal, .. } => {
                Some(principal)
            }
            _ => None,
        }
    }
}

/// A protection an established Kerberos context lacks. hms-guard replicas keep separate
/// replay caches, so the context itself must make a recorded session useless elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unprotected {
    /// The client did not ask for mutual authentication: the context then has no key of the
    /// acceptor's making, and a recorded negotiation (including its wrapped security-layer
    /// answer) completes again on a replica whose replay cache has not seen it.
    NoMutual,
    /// Mutual authentication without an acceptor subkey (an encryption type older than
    /// RFC 4121: the client's wrapped answer is under a key the recording already fixes).
    NoAcceptorSubkey,
    /// A wrapped security layer without sequence detection: wrapped frames could be replayed
    /// or reordered.
    NoSequence(Qop),
}

impl fmt::Display for Unprotected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unprotected::NoMutual => write!(
                f,
                "Kerberos session refused: the client did not ask for mutual authentication (GSS_C_MUTUAL_FLAG); hms-guard accepts only sessions the client verifies, because a negotiation without it can be replayed to another hms-guard replica (Java/Hadoop clients and pykerberos ask for it by default)"
            ),
            Unprotected::NoAcceptorSubkey => write!(
                f,
                "Kerberos session refused: the session has no acceptor subkey (an encryption type older than RFC 4121, such as rc4-hmac or des3); a recorded negotiation could be replayed to another hms-guard replica; use AES keys"
            ),
            Unprotected::NoSequence(q) => write!(
                f,
                "Kerberos session refused: the client chose security layer {} without sequence detection (GSS_C_SEQUENCE_FLAG); its wrapped frames could be replayed or reordered; ask for sequence detection or use QOP auth",
                q.as_str()
            ),
        }
    }
}

/// Mutual authentication, required of every context.
pub fn require_mutual(flags: CtxFlags) -> Result<(), Unprotected> {
    if flags.contains(CtxFlags::GSS_C_MUTUAL_FLAG) {
        Ok(())
    } else {
        Err(Unprotected::NoMutual)
    }
}

/// The wrapped security-layer offer must be an RFC 4121 wrap token (TOK_ID 05 04) sent under
/// an acceptor subkey (flags bit 0x04): a key this replica made for this session, which a
/// recorded answer cannot have been made with.
pub fn require_acceptor_subkey(offer_token: &[u8]) -> Result<(), Unprotected> {
    const ACCEPTOR_SUBKEY: u8 = 0x04;
    match offer_token {
        [0x05, 0x04, flags, ..] if flags & ACCEPTOR_SUBKEY != 0 => Ok(()),
        _ => Err(Unprotected::NoAcceptorSubkey),
    }
}

/// Sequence detection, required of a context whose frames are wrapped. (MIT's unwrap reports a
/// repeated, old, out-of-order or skipped token under sequence detection, and any such report
/// fails the read; replay detection alone lets reordered tokens through.)
pub fn require_sequence(flags: CtxFlags, qop: Qop) -> Result<(), Unprotected> {
    if qop == Qop::Auth || flags.contains(CtxFlags::GSS_C_SEQUENCE_FLAG) {
        Ok(())
    } else {
        Err(Unprotected::NoSequence(qop))
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

/// Reads the mechanism and runs the GSSAPI context to its establishment.
async fn establish<S: AsyncRead + AsyncWrite + Unpin>(
    n: &mut Negotiation<'_, S>,
    settings: &KerberosSettings,
) -> Result<ServerCtx, Refusal> {
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
                    return Ok(ctx);
                }
            }
            _ if done => return Ok(ctx),
            _ => {
                return Err(Refusal::Kerberos(
                    "no token to continue the exchange".into(),
                ))
            }
        }
    }
}

/// The authenticated client's principal name, as GSSAPI displays it, and parsed.
fn client_name(ctx: &ServerCtx) -> Result<(String, Principal), Refusal> {
    let name = ctx
        .source_name()
        .and_then(|n| n.display_name())
        .map_err(|e| Refusal::Kerberos(format!("no client name: {e}")))?;
    let name = std::str::from_utf8(&name)
        .map_err(|_| Refusal::Kerberos("the client's name is not UTF-8".into()))?
        .to_string();
    let principal = Principal::parse(&name).map_err(Refusal::Kerberos)?;
    Ok((name, principal))
}

/// The security-layer exchange (RFC 4752 §3.1): offers the configured layers and the largest
/// buffer; the client picks one and may name an authorization id. Returns the layer and the
/// authorization id. The context must have been mutually authenticated with an acceptor
/// subkey, and a wrapped layer needs sequence detection.
async fn choose_layer<S: AsyncRead + AsyncWrite + Unpin>(
    n: &mut Negotiation<'_, S>,
    ctx: &mut ServerCtx,
    settings: &KerberosSettings,
    principal: &str,
) -> Result<(Qop, String), Refusal> {
    let unprotected = |why| Refusal::Unprotected {
        principal: principal.to_string(),
        why,
    };
    let flags = ctx
        .flags()
        .map_err(|e| Refusal::Kerberos(format!("reading the context's flags: {e}")))?;
    require_mutual(flags).map_err(unprotected)?;
    let mut offer = [settings.offered, 0, 0, 0];
    offer[1..].copy_from_slice(&MAX_BUFFER.to_be_bytes()[1..]);
    let wrapped = ctx
        .wrap(false, &offer)
        .map_err(|e| Refusal::Kerberos(format!("wrapping the security-layer offer: {e}")))?;
    require_acceptor_subkey(&wrapped).map_err(unprotected)?;
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
    require_sequence(flags, qop).map_err(unprotected)?;
    Ok((qop, String::from_utf8_lossy(&answer[4..]).into_owned()))
}

async fn negotiate<S: AsyncRead + AsyncWrite + Unpin>(
    n: &mut Negotiation<'_, S>,
    settings: &KerberosSettings,
) -> Result<(Authenticated, Layer), Refusal> {
    let mut ctx = establish(n, settings).await?;
    let (principal_name, principal) = client_name(&ctx)?;
    let (qop, authzid) = choose_layer(n, &mut ctx, settings, &principal_name).await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    const MUTUAL: CtxFlags = CtxFlags::GSS_C_MUTUAL_FLAG;
    const SEQUENCE: CtxFlags = CtxFlags::GSS_C_SEQUENCE_FLAG;
    const REPLAY: CtxFlags = CtxFlags::GSS_C_REPLAY_FLAG;

    #[test]
    fn every_context_must_be_mutually_authenticated() {
        assert_eq!(require_mutual(MUTUAL | SEQUENCE), Ok(()));
        assert_eq!(require_mutual(MUTUAL), Ok(()));
        for flags in [CtxFlags::empty(), SEQUENCE, REPLAY | SEQUENCE] {
            assert_eq!(require_mutual(flags), Err(Unprotected::NoMutual));
        }
    }

    #[test]
    fn a_wrapped_layer_needs_sequence_detection_auth_does_not() {
        assert_eq!(require_sequence(MUTUAL, Qop::Auth), Ok(()));
        for q in [Qop::AuthInt, Qop::AuthConf] {
            assert_eq!(require_sequence(MUTUAL | SEQUENCE, q), Ok(()));
            assert_eq!(require_sequence(MUTUAL | REPLAY | SEQUENCE, q), Ok(()));
            // Replay detection alone lets reordered tokens through.
            assert_eq!(
                require_sequence(MUTUAL | REPLAY, q),
                Err(Unprotected::NoSequence(q))
            );
            assert_eq!(require_sequence(MUTUAL, q), Err(Unprotected::NoSequence(q)));
        }
    }

    #[test]
    fn the_offer_must_be_sealed_under_an_acceptor_subkey() {
        // RFC 4121 wrap token from the acceptor: SentByAcceptor | AcceptorSubkey.
        assert_eq!(
            require_acceptor_subkey(&[0x05, 0x04, 0x05, 0xff, 0, 0]),
            Ok(())
        );
        assert_eq!(require_acceptor_subkey(&[0x05, 0x04, 0x07, 0xff]), Ok(()));
        for token in [
            &[0x05, 0x04, 0x01, 0xff][..], // no acceptor subkey
            &[0x60, 0x2b, 0x06, 0x09][..], // RFC 1964 token (rc4, des3)
            &[0x04, 0x04, 0x05, 0xff][..], // a MIC token
            &[0x05, 0x04][..],
            &[][..],
        ] {
            assert_eq!(
                require_acceptor_subkey(token),
                Err(Unprotected::NoAcceptorSubkey)
            );
        }
    }

    #[test]
    fn a_refusal_names_the_missing_protection_not_the_principal() {
        let r = Refusal::Unprotected {
            principal: "alice@EXAMPLE.COM".into(),
            why: Unprotected::NoMutual,
        };
        assert_eq!(r.kind(), "unprotected");
        assert_eq!(r.principal(), Some("alice@EXAMPLE.COM"));
        let text = r.to_string();
        assert!(text.contains("mutual authentication"), "{text}");
        assert!(!text.contains("alice"), "{text}");
        let seq = Unprotected::NoSequence(Qop::AuthInt).to_string();
        assert!(
            seq.contains("auth-int") && seq.contains("GSS_C_SEQUENCE_FLAG"),
            "{seq}"
        );
    }
}
