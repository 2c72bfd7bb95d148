//! The SASL stage (`identity.mode = "kerberos"`): the metastore's SASL transport towards
//! clients. A connection opens with negotiation frames (a status byte, a 4-byte big-endian
//! length, a payload); the client names the mechanism (`GSSAPI` only), Kerberos tokens are
//! exchanged through the platform's GSSAPI library, then the security layer is agreed as
//! RFC 4752 describes (`auth`, `auth-int` or `auth-conf`, among those configured) and the
//! authenticated principal is mapped to a user. From then on every message travels in a frame
//! (a 4-byte length and the payload, wrapped by GSSAPI for `auth-int` and `auth-conf`):
//! `SaslStream` turns that back into the plain byte stream the connection stage reads, and
//! frames (and wraps) what it writes.
//!
//! Every refusal is a SASL BAD message with the reason (Java clients show "Peer indicated
//! failure: …"), logged and counted; nothing of an unauthenticated connection reaches the
//! metastore.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use libgssapi::context::{SecurityContext, ServerCtx};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::{timeout_at, Instant};

use crate::kerberos::{KerberosSettings, Principal, Qop};

/// Negotiation status bytes (`TSaslTransport.NegotiationStatus`).
pub const START: u8 = 1;
pub const OK: u8 = 2;
pub const BAD: u8 = 3;
pub const ERROR: u8 = 4;
pub const COMPLETE: u8 = 5;

/// Largest negotiation payload accepted (Kerberos tokens are a few KiB; a ticket with a large
/// authorization-data part stays well below this).
pub const MAX_NEGOTIATION_PAYLOAD: usize = 64 * 1024;
/// Most negotiation messages one handshake may take.
const MAX_ROUNDS: usize = 8;
/// Written bytes are framed (and wrapped) at most this many at a time.
const WRITE_CHUNK: usize = 64 * 1024;
/// The largest wrapped message a client may send, told to it in the security-layer offer.
const MAX_BUFFER_OFFERED: u32 = 0x00FF_FFFF;

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

/// One negotiation message.
fn message(status: u8, payload: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(5 + payload.len());
    m.push(status);
    m.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    m.extend_from_slice(payload);
    m
}

/// A SASL BAD message carrying `reason` (what the metastore sends for a refused negotiation).
pub fn bad(reason: &str) -> Vec<u8> {
    message(BAD, reason.as_bytes())
}

struct Negotiation<'a, S> {
    io: &'a mut S,
    buf: BytesMut,
    deadline: Instant,
    limit_ms: u64,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Negotiation<'_, S> {
    async fn fill(&mut self, n: usize) -> Result<(), Refusal> {
        while self.buf.len() < n {
            match timeout_at(self.deadline, self.io.read_buf(&mut self.buf)).await {
                Err(_) => return Err(Refusal::Timeout(self.limit_ms)),
                Ok(Err(e)) => return Err(Refusal::Io(e)),
                Ok(Ok(0)) => {
                    return Err(Refusal::Io(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the client closed the connection",
                    )))
                }
                Ok(Ok(_)) => {}
            }
        }
        Ok(())
    }

    /// Reads one whole negotiation message (bounded) and returns its status and payload.
    async fn read(&mut self) -> Result<(u8, Bytes), Refusal> {
        self.fill(5).await?;
        let status = self.buf[0];
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if !(START..=COMPLETE).contains(&status) {
            return Err(Refusal::Protocol(format!("invalid status byte {status}")));
        }
        if len > MAX_NEGOTIATION_PAYLOAD {
            return Err(Refusal::Protocol(format!(
                "a negotiation payload of {len} bytes (at most {MAX_NEGOTIATION_PAYLOAD})"
            )));
        }
        self.fill(5 + len).await?;
        self.buf.advance(5);
        let payload = self.buf.split_to(len).freeze();
        if status == BAD || status == ERROR {
            return Err(Refusal::ClientFailed(
                String::from_utf8_lossy(&payload).into_owned(),
            ));
        }
        Ok((status, payload))
    }

    /// Reads a message that continues the exchange (OK or COMPLETE).
    async fn read_response(&mut self) -> Result<Bytes, Refusal> {
        match self.read().await? {
            (OK | COMPLETE, payload) => Ok(payload),
            (s, _) => Err(Refusal::Protocol(format!(
                "expected OK or COMPLETE, got status {s}"
            ))),
        }
    }

    async fn send(&mut self, status: u8, payload: &[u8]) -> Result<(), Refusal> {
        let m = message(status, payload);
        let write = async {
            self.io.write_all(&m).await?;
            self.io.flush().await
        };
        match timeout_at(self.deadline, write).await {
            Err(_) => Err(Refusal::Timeout(self.limit_ms)),
            Ok(r) => r.map_err(Refusal::Io),
        }
    }
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
        return Handshake::Refused(r);
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
    offer[1..].copy_from_slice(&MAX_BUFFER_OFFERED.to_be_bytes()[1..]);
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
        Qop::AuthInt => Layer::Wrapped {
            ctx,
            encrypt: false,
        },
        Qop::AuthConf => Layer::Wrapped { ctx, encrypt: true },
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

/// The security layer after the handshake.
enum Layer {
    /// QOP `auth`: frames carry the messages as they are.
    Plain,
    /// QOP `auth-int` / `auth-conf`: each frame is one GSSAPI-wrapped payload.
    Wrapped { ctx: ServerCtx, encrypt: bool },
}

/// The byte stream inside an authenticated SASL connection.
pub struct SaslStream<S> {
    io: S,
    layer: Layer,
    max_frame: usize,
    /// Raw bytes read and not yet used.
    rbuf: BytesMut,
    /// `Plain`: payload bytes of the current frame still to be read.
    frame_left: usize,
    /// `Wrapped`: unwrapped bytes not yet read.
    plain: Bytes,
    /// Written, not yet framed.
    wbuf: BytesMut,
    /// Framed, not yet written.
    out: BytesMut,
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

impl<S> SaslStream<S> {
    /// The stream of a connection whose handshake chose QOP `auth` (frames, no wrapping).
    pub fn plain(io: S, max_frame: usize) -> Self {
        SaslStream::new(io, Layer::Plain, BytesMut::new(), max_frame)
    }

    fn new(io: S, layer: Layer, rest: BytesMut, max_frame: usize) -> Self {
        SaslStream {
            io,
            layer,
            max_frame,
            rbuf: rest,
            frame_left: 0,
            plain: Bytes::new(),
            wbuf: BytesMut::new(),
            out: BytesMut::new(),
        }
    }

    /// Moves what was written into a frame (wrapped when the layer wraps).
    fn seal(&mut self) -> io::Result<()> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        match &mut self.layer {
            Layer::Plain => {
                self.out.put_u32(self.wbuf.len() as u32);
                self.out.extend_from_slice(&self.wbuf);
            }
            Layer::Wrapped { ctx, encrypt } => {
                let w = ctx
                    .wrap(*encrypt, &self.wbuf)
                    .map_err(|e| io::Error::other(format!("SASL wrap failed: {e}")))?;
                self.out.put_u32(w.len() as u32);
                self.out.extend_from_slice(&w);
            }
        }
        self.wbuf.clear();
        Ok(())
    }
}

impl<S: AsyncWrite + Unpin> SaslStream<S> {
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.out.is_empty() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.out))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out.advance(n);
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> SaslStream<S> {
    /// The length of the frame whose header starts `rbuf`, checked against the bound.
    fn frame_len(&self) -> io::Result<Option<usize>> {
        if self.rbuf.len() < 4 {
            return Ok(None);
        }
        let len =
            u32::from_be_bytes([self.rbuf[0], self.rbuf[1], self.rbuf[2], self.rbuf[3]]) as usize;
        if len > self.max_frame {
            return Err(invalid(format!(
                "a SASL frame of {len} bytes (at most {})",
                self.max_frame
            )));
        }
        Ok(Some(len))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for SaslStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            if !this.plain.is_empty() {
                let n = this.plain.len().min(buf.remaining());
                buf.put_slice(&this.plain.split_to(n));
                return Poll::Ready(Ok(()));
            }
            let wrapped = matches!(this.layer, Layer::Wrapped { .. });
            if !wrapped && this.frame_left > 0 {
                if !this.rbuf.is_empty() {
                    let n = this.frame_left.min(this.rbuf.len()).min(buf.remaining());
                    buf.put_slice(&this.rbuf.split_to(n));
                    this.frame_left -= n;
                    return Poll::Ready(Ok(()));
                }
                // Straight into the caller's buffer: no copy for QOP auth.
                let k = this.frame_left.min(buf.remaining());
                let mut part = ReadBuf::new(buf.initialize_unfilled_to(k));
                ready!(Pin::new(&mut this.io).poll_read(cx, &mut part))?;
                let n = part.filled().len();
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
                }
                buf.advance(n);
                this.frame_left -= n;
                return Poll::Ready(Ok(()));
            }
            if let Some(len) = this.frame_len()? {
                if !wrapped {
                    this.rbuf.advance(4);
                    this.frame_left = len;
                    continue;
                }
                if this.rbuf.len() >= 4 + len {
                    this.rbuf.advance(4);
                    let frame = this.rbuf.split_to(len);
                    if let Layer::Wrapped { ctx, .. } = &mut this.layer {
                        let plain = ctx
                            .unwrap(&frame)
                            .map_err(|e| invalid(format!("SASL unwrap failed: {e}")))?;
                        this.plain = Bytes::copy_from_slice(&plain);
                    }
                    continue;
                }
                this.rbuf.reserve(4 + len - this.rbuf.len());
            }
            // More raw bytes are needed.
            let mut chunk = [0u8; 8192];
            let mut rb = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.io).poll_read(cx, &mut rb))?;
            if rb.filled().is_empty() {
                return if this.rbuf.is_empty() && this.frame_left == 0 {
                    Poll::Ready(Ok(()))
                } else {
                    Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()))
                };
            }
            this.rbuf.extend_from_slice(rb.filled());
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for SaslStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if !this.out.is_empty() {
            ready!(this.poll_drain(cx))?;
        }
        let n = (WRITE_CHUNK - this.wbuf.len()).min(data.len());
        this.wbuf.extend_from_slice(&data[..n]);
        if this.wbuf.len() >= WRITE_CHUNK {
            this.seal()?;
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.seal()?;
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.as_mut().poll_flush(cx))?;
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
