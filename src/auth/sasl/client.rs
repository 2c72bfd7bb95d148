//! The client side of the SASL handshake: hms-guard authenticating to a kerberized metastore,
//! with GSSAPI as its own principal (its credentials from its keytab through the platform's
//! GSSAPI library, which renews them from the keytab before they expire), or with DIGEST-MD5
//! and a user's delegation token.

use std::fmt;
use std::time::Duration;

use bytes::BytesMut;
use libgssapi::context::{ClientCtx, CtxFlags, SecurityContext};
use libgssapi::credential::{Cred, CredUsage};
use libgssapi::name::Name;
use libgssapi::oid::{OidSet, GSS_MECH_KRB5, GSS_NT_KRB5_PRINCIPAL};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

use super::{
    digest, Gss, Layer, Negotiation, NegotiationError, SaslStream, COMPLETE, MAX_BUFFER,
    MAX_ROUNDS, OK, START,
};
use crate::auth::kerberos::Qop;

/// Why hms-guard could not authenticate to the metastore.
#[derive(Debug)]
pub enum ClientError {
    Negotiation(NegotiationError),
    /// hms-guard's own Kerberos credentials or the GSSAPI exchange failed.
    Kerberos(String),
    /// The metastore refused (a SASL BAD or ERROR message).
    Refused(String),
    /// The metastore wants what hms-guard does not speak.
    Unsupported(String),
}

impl From<NegotiationError> for ClientError {
    fn from(e: NegotiationError) -> Self {
        match e {
            NegotiationError::PeerFailed(m) => ClientError::Refused(m),
            e => ClientError::Negotiation(e),
        }
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Negotiation(NegotiationError::Timeout(ms)) => {
                write!(f, "SASL negotiation did not finish within {ms} ms")
            }
            ClientError::Negotiation(NegotiationError::Io(e)) => {
                write!(f, "SASL negotiation failed: {e}")
            }
            ClientError::Negotiation(NegotiationError::Protocol(m)) => {
                write!(f, "SASL negotiation: {m}")
            }
            ClientError::Negotiation(NegotiationError::PeerFailed(m)) | ClientError::Refused(m) => {
                write!(f, "the metastore refused authentication: {m}")
            }
            ClientError::Kerberos(m) => write!(f, "Kerberos: {m}"),
            ClientError::Unsupported(m) => f.write_str(m),
        }
    }
}

fn negotiation<S>(io: &mut S, limit: Duration) -> Negotiation<'_, S> {
    Negotiation {
        io,
        buf: BytesMut::with_capacity(1024),
        deadline: Instant::now() + limit,
        limit_ms: limit.as_millis() as u64,
    }
}

/// Reads the metastore's next message: its status and payload.
async fn next<S: AsyncRead + AsyncWrite + Unpin>(
    n: &mut Negotiation<'_, S>,
) -> Result<(u8, bytes::Bytes), ClientError> {
    match n.read().await? {
        (status @ (OK | COMPLETE), payload) => Ok((status, payload)),
        (s, _) => Err(ClientError::Negotiation(NegotiationError::Protocol(
            format!("expected OK or COMPLETE from the metastore, got status {s}"),
        ))),
    }
}

/// Authenticates as this process's own principal (`own`) to the metastore's service principal
/// `service` and agrees the first layer of `prefer` the metastore offers.
pub async fn connect_gssapi<S: AsyncRead + AsyncWrite + Unpin>(
    mut io: S,
    own: &str,
    service: &str,
    prefer: &[Qop],
    limit: Duration,
    max_frame: usize,
) -> Result<(SaslStream<S>, Qop), ClientError> {
    let own_name = own.to_string();
    let service_name = service.to_string();
    // Acquiring the credentials may ask the KDC for a ticket (from the keytab): off the async
    // threads, like each step.
    let (ctx, first) = tokio::task::spawn_blocking(move || initiate(&own_name, &service_name))
        .await
        .map_err(|e| ClientError::Kerberos(e.to_string()))??;
    let mut n = negotiation(&mut io, limit);
    n.send(START, b"GSSAPI").await?;
    n.send(OK, &first).await?;
    let mut ctx = establish(&mut n, ctx).await?;
    let qop = choose_layer(&mut n, &mut ctx, prefer).await?;
    let (status, _) = next(&mut n).await?;
    if status != COMPLETE {
        return Err(NegotiationError::Protocol("the metastore did not complete".into()).into());
    }
    let rest = std::mem::take(&mut n.buf);
    let layer = match qop {
        Qop::Auth => Layer::Plain,
        q => Layer::Wrapped {
            ctx: Gss::Client(ctx),
            encrypt: q == Qop::AuthConf,
        },
    };
    Ok((SaslStream::new(io, layer, rest, max_frame), qop))
}

/// The principal of the default credentials (the user's ticket cache). Blocking.
pub fn default_principal() -> Result<String, ClientError> {
    let kerberos = |what: &str, e: libgssapi::error::Error| {
        ClientError::Kerberos(format!("{what}: {}", e.to_string().trim()))
    };
    let mechs = OidSet::singleton(GSS_MECH_KRB5).map_err(|e| kerberos("mechanism", e))?;
    let cred = Cred::acquire(None, None, CredUsage::Initiate, Some(&mechs))
        .map_err(|e| kerberos("no Kerberos credentials (run kinit)", e))?;
    let name = cred
        .name()
        .map_err(|e| kerberos("the credentials' principal", e))?;
    Ok(name.to_string())
}

/// Acquires `own`'s credentials (from its keytab; empty: the default credentials) and makes the first GSSAPI token towards
/// `service`. Blocking.
fn initiate(own_name: &str, service_name: &str) -> Result<(ClientCtx, Vec<u8>), ClientError> {
    let kerberos = |what: &str, e: libgssapi::error::Error| {
        ClientError::Kerberos(format!("{what}: {}", e.to_string().trim()))
    };
    let mechs = OidSet::singleton(GSS_MECH_KRB5).map_err(|e| kerberos("mechanism", e))?;
    // No name: the default credentials (a user's ticket cache, for `hms-guard sql`).
    let cred = if own_name.is_empty() {
        Cred::acquire(None, None, CredUsage::Initiate, Some(&mechs))
            .map_err(|e| kerberos("no Kerberos credentials (run kinit)", e))?
    } else {
        let me = Name::new(own_name.as_bytes(), Some(GSS_NT_KRB5_PRINCIPAL))
            .map_err(|e| kerberos(&format!("the principal {own_name}"), e))?;
        Cred::acquire(Some(&me), None, CredUsage::Initiate, Some(&mechs))
            .map_err(|e| kerberos(&format!("no credentials for {own_name} (its keytab)"), e))?
    };
    let target = Name::new(service_name.as_bytes(), Some(GSS_NT_KRB5_PRINCIPAL))
        .map_err(|e| kerberos(&format!("the principal {service_name}"), e))?;
    let mut ctx = ClientCtx::new(
        Some(cred),
        target,
        CtxFlags::GSS_C_MUTUAL_FLAG
            | CtxFlags::GSS_C_SEQUENCE_FLAG
            | CtxFlags::GSS_C_INTEG_FLAG
            | CtxFlags::GSS_C_CONF_FLAG,
        Some(GSS_MECH_KRB5),
    );
    let first = ctx
        .step(None, None)
        .map_err(|e| kerberos(&format!("a ticket for {service_name}"), e))?
        .map(|b| b.to_vec())
        .unwrap_or_default();
    Ok((ctx, first))
}

/// Exchanges tokens until the context is established (the last one is the metastore's
/// mutual authentication); each step off the async threads.
async fn establish<S: AsyncRead + AsyncWrite + Unpin>(
    n: &mut Negotiation<'_, S>,
    mut ctx: ClientCtx,
) -> Result<ClientCtx, ClientError> {
    let mut rounds = 0;
    while !ctx.is_complete() {
        rounds += 1;
        if rounds > MAX_ROUNDS {
            return Err(NegotiationError::Protocol("too many negotiation rounds".into()).into());
        }
        let (_, token) = next(n).await?;
        let (c, out) = tokio::task::spawn_blocking(move || {
            let out = ctx.step(Some(&token), None).map(|o| o.map(|b| b.to_vec()));
            (ctx, out)
        })
        .await
        .map_err(|e| ClientError::Kerberos(e.to_string()))?;
        ctx = c;
        let out = out.map_err(|e| ClientError::Kerberos(e.to_string().trim().to_string()))?;
        n.send(OK, &out.unwrap_or_default()).await?;
    }
    Ok(ctx)
}

/// Reads the security-layer offer (RFC 4752 §3.1) and sends the choice: the first layer of
/// `prefer` offered.
async fn choose_layer<S: AsyncRead + AsyncWrite + Unpin>(
    n: &mut Negotiation<'_, S>,
    ctx: &mut ClientCtx,
    prefer: &[Qop],
) -> Result<Qop, ClientError> {
    let (_, offer) = next(n).await?;
    let offer = ctx
        .unwrap(&offer)
        .map_err(|e| ClientError::Kerberos(format!("reading the security-layer offer: {e}")))?;
    let offered = *offer.first().ok_or_else(|| {
        ClientError::Negotiation(NegotiationError::Protocol(
            "an empty security-layer offer".into(),
        ))
    })?;
    let qop = prefer
        .iter()
        .copied()
        .find(|q| offered & q.bit() != 0)
        .ok_or_else(|| {
            ClientError::Unsupported(format!(
                "the metastore offers security layers {offered:#04x}, none of upstream.kerberos.qop"
            ))
        })?;
    let mut choice = vec![qop.bit(), 0, 0, 0];
    choice[1..4].copy_from_slice(&MAX_BUFFER.to_be_bytes()[1..]);
    let choice = ctx
        .wrap(false, &choice)
        .map_err(|e| ClientError::Kerberos(format!("wrapping the security-layer choice: {e}")))?;
    n.send(COMPLETE, &choice).await?;
    Ok(qop)
}

/// Authenticates with DIGEST-MD5 as `username`/`password` (a delegation token's identifier
/// and secret, base64), QOP `auth`.
pub async fn connect_digest<S: AsyncRead + AsyncWrite + Unpin>(
    mut io: S,
    username: &str,
    password: &str,
    digest_uri: &str,
    limit: Duration,
    max_frame: usize,
) -> Result<SaslStream<S>, ClientError> {
    let mut n = negotiation(&mut io, limit);
    n.send(START, b"DIGEST-MD5").await?;
    // No initial response: the server speaks first.
    n.send(OK, &[]).await?;
    let (_, challenge) = next(&mut n).await?;
    let ch = digest::parse_challenge(&challenge).map_err(|e| {
        ClientError::Negotiation(NegotiationError::Protocol(format!(
            "DIGEST-MD5 challenge: {e}"
        )))
    })?;
    let mut nonce = [0u8; 16];
    rustls::crypto::aws_lc_rs::default_provider()
        .secure_random
        .fill(&mut nonce)
        .map_err(|_| ClientError::Unsupported("no random bytes for the client nonce".into()))?;
    use base64::Engine as _;
    let cnonce = base64::engine::general_purpose::STANDARD.encode(nonce);
    let response = digest::respond(&ch, username, password, digest_uri, &cnonce)
        .map_err(|e| ClientError::Unsupported(e.to_string()))?;
    n.send(OK, response.message.as_bytes()).await?;
    let (status, last) = next(&mut n).await?;
    digest::check_rspauth(&last, &response.rspauth)
        .map_err(|e| ClientError::Refused(e.to_string()))?;
    if status != COMPLETE {
        // The client has nothing more to say; the server completes.
        n.send(OK, &[]).await?;
        let (status, _) = next(&mut n).await?;
        if status != COMPLETE {
            return Err(NegotiationError::Protocol("the metastore did not complete".into()).into());
        }
    }
    let rest = std::mem::take(&mut n.buf);
    Ok(SaslStream::new(io, Layer::Plain, rest, max_frame))
}
