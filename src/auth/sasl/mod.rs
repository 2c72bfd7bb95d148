//! The SASL stage: the metastore's SASL transport (`TSaslTransport`), both ways. A connection
//! opens with negotiation messages (a status byte, a 4-byte big-endian length, a payload);
//! then every message travels in a frame (a 4-byte length and the payload, wrapped by GSSAPI
//! for the `auth-int` and `auth-conf` security layers). `SaslStream` turns the frames back into
//! the plain byte stream the other stages read, and frames (and wraps) what they write.
//!
//! - `server`: clients authenticating to hms-guard with Kerberos (`identity.mode =
//!   "kerberos"`): the GSSAPI mechanism (RFC 4752) through the platform's GSSAPI library, the
//!   principal mapped to a user. Every refusal is a SASL BAD message with the reason (Java
//!   clients show "Peer indicated failure: …"), logged and counted; nothing of an
//!   unauthenticated connection reaches the metastore.
//! - `client`: hms-guard authenticating to a kerberized metastore (`[upstream.kerberos]`):
//!   GSSAPI as its own principal, or DIGEST-MD5 (`digest`) with a delegation token of the user
//!   it acts for.

mod client;
pub mod digest;
mod server;

pub use client::{connect_digest, connect_gssapi, default_principal, ClientError};
pub use server::{accept, Authenticated, Handshake, Refusal, Unprotected};

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use libgssapi::context::{ClientCtx, SecurityContext, ServerCtx};
use libgssapi::util::Buf as GssBuf;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::{timeout_at, Instant};

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
/// The largest wrapped message the peer may send, told to it in the security-layer exchange.
const MAX_BUFFER: u32 = 0x00FF_FFFF;

/// Why a negotiation message could not be read or sent.
#[derive(Debug)]
pub enum NegotiationError {
    Timeout(u64),
    Io(io::Error),
    /// Not the SASL exchange: a wrong status, an oversized payload.
    Protocol(String),
    /// The peer sent BAD or ERROR with this text.
    PeerFailed(String),
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

pub(crate) struct Negotiation<'a, S> {
    pub(crate) io: &'a mut S,
    pub(crate) buf: BytesMut,
    pub(crate) deadline: Instant,
    pub(crate) limit_ms: u64,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Negotiation<'_, S> {
    pub(crate) async fn fill(&mut self, n: usize) -> Result<(), NegotiationError> {
        while self.buf.len() < n {
            match timeout_at(self.deadline, self.io.read_buf(&mut self.buf)).await {
                Err(_) => return Err(NegotiationError::Timeout(self.limit_ms)),
                Ok(Err(e)) => return Err(NegotiationError::Io(e)),
                Ok(Ok(0)) => {
                    return Err(NegotiationError::Io(io::Error::new(
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
    pub(crate) async fn read(&mut self) -> Result<(u8, Bytes), NegotiationError> {
        self.fill(5).await?;
        let status = self.buf[0];
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if !(START..=COMPLETE).contains(&status) {
            return Err(NegotiationError::Protocol(format!(
                "invalid status byte {status}"
            )));
        }
        if len > MAX_NEGOTIATION_PAYLOAD {
            return Err(NegotiationError::Protocol(format!(
                "a negotiation payload of {len} bytes (at most {MAX_NEGOTIATION_PAYLOAD})"
            )));
        }
        self.fill(5 + len).await?;
        self.buf.advance(5);
        let payload = self.buf.split_to(len).freeze();
        if status == BAD || status == ERROR {
            return Err(NegotiationError::PeerFailed(
                String::from_utf8_lossy(&payload).into_owned(),
            ));
        }
        Ok((status, payload))
    }

    /// Reads a message that continues the exchange (OK or COMPLETE).
    pub(crate) async fn read_response(&mut self) -> Result<Bytes, NegotiationError> {
        match self.read().await? {
            (OK | COMPLETE, payload) => Ok(payload),
            (s, _) => Err(NegotiationError::Protocol(format!(
                "expected OK or COMPLETE, got status {s}"
            ))),
        }
    }

    pub(crate) async fn send(
        &mut self,
        status: u8,
        payload: &[u8],
    ) -> Result<(), NegotiationError> {
        let m = message(status, payload);
        let write = async {
            self.io.write_all(&m).await?;
            self.io.flush().await
        };
        match timeout_at(self.deadline, write).await {
            Err(_) => Err(NegotiationError::Timeout(self.limit_ms)),
            Ok(r) => r.map_err(NegotiationError::Io),
        }
    }
}

/// A GSSAPI context of either side.
pub(crate) enum Gss {
    Server(ServerCtx),
    Client(ClientCtx),
}

impl Gss {
    fn wrap(&mut self, encrypt: bool, msg: &[u8]) -> Result<GssBuf, libgssapi::error::Error> {
        match self {
            Gss::Server(c) => c.wrap(encrypt, msg),
            Gss::Client(c) => c.wrap(encrypt, msg),
        }
    }

    fn unwrap(&mut self, msg: &[u8]) -> Result<GssBuf, libgssapi::error::Error> {
        match self {
            Gss::Server(c) => c.unwrap(msg),
            Gss::Client(c) => c.unwrap(msg),
        }
    }
}

/// The security layer after the handshake.
pub(crate) enum Layer {
    /// QOP `auth`: frames carry the messages as they are.
    Plain,
    /// QOP `auth-int` / `auth-conf`: each frame is one GSSAPI-wrapped payload.
    Wrapped { ctx: Gss, encrypt: bool },
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
    /// The global budget the bytes held here (a frame being gathered, unwrapped bytes not yet
    /// read) are taken from, and how much of it this stream holds.
    budget: Option<std::sync::Arc<crate::listener::budget::HeldBytes>>,
    taken: u64,
    /// A frame whose first byte has arrived must be whole within this (`None`: unbounded).
    frame_timeout: Option<Duration>,
    /// When the frame in progress must be whole.
    frame_deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> Drop for SaslStream<S> {
    fn drop(&mut self) {
        if let Some(b) = &self.budget {
            b.give(std::mem::take(&mut self.taken));
        }
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

impl<S> SaslStream<S> {
    /// The stream of a connection whose handshake chose QOP `auth` (frames, no wrapping).
    pub fn plain(io: S, max_frame: usize) -> Self {
        SaslStream::new(io, Layer::Plain, BytesMut::new(), max_frame)
    }

    pub(crate) fn new(io: S, layer: Layer, rest: BytesMut, max_frame: usize) -> Self {
        SaslStream {
            io,
            layer,
            max_frame,
            rbuf: rest,
            frame_left: 0,
            plain: Bytes::new(),
            wbuf: BytesMut::new(),
            out: BytesMut::new(),
            budget: None,
            taken: 0,
            frame_timeout: None,
            frame_deadline: None,
        }
    }

    /// Bounds each frame, from its first byte to its last, by `limit`: a frame that does not
    /// arrive whole in time fails the read (`io::ErrorKind::TimedOut`).
    pub fn with_frame_timeout(mut self, limit: Duration) -> Self {
        self.frame_timeout = Some(limit);
        self
    }

    /// Whether part of a frame has been read and the rest is due.
    fn in_frame(&self) -> bool {
        !self.rbuf.is_empty() || self.frame_left > 0
    }

    /// Called when the peer has no byte ready: a timed-out error when a frame is in progress
    /// and its time is up (otherwise the waker is registered with its deadline).
    fn frame_overdue(&mut self, cx: &mut Context<'_>) -> Option<io::Error> {
        let limit = self.frame_timeout?;
        if !self.in_frame() {
            self.frame_deadline = None;
            return None;
        }
        let deadline = self
            .frame_deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Some(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "a SASL frame did not arrive whole within {} ms",
                    limit.as_millis()
                ),
            )),
            Poll::Pending => None,
        }
    }

    /// The peer has nothing ready: pending, unless the frame in progress is overdue.
    fn pending<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        match self.frame_overdue(cx) {
            Some(e) => Poll::Ready(Err(e)),
            None => Poll::Pending,
        }
    }

    /// Counts the bytes this stream holds against `budget` (reads fail when it is spent).
    pub fn with_budget(
        mut self,
        budget: std::sync::Arc<crate::listener::budget::HeldBytes>,
    ) -> Self {
        self.budget = Some(budget);
        self
    }

    /// Makes the budget taken cover the bytes held now plus `more` about to be held, giving
    /// back what is no longer held; an error when the budget cannot cover them.
    fn account(&mut self, more: usize) -> io::Result<()> {
        let Some(b) = &self.budget else {
            return Ok(());
        };
        let want = (self.rbuf.len() + self.plain.len() + more) as u64;
        if want > self.taken {
            if !b.try_take(want - self.taken) {
                return Err(io::Error::other(format!(
                    "the request bytes held over all connections are at their limit ({} bytes)",
                    b.max()
                )));
            }
        } else {
            b.give(self.taken - want);
        }
        self.taken = want;
        Ok(())
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

    /// Gives the caller what it has room for of the unwrapped plaintext.
    fn give_plain(&mut self, buf: &mut ReadBuf<'_>) -> io::Result<()> {
        let n = self.plain.len().min(buf.remaining());
        buf.put_slice(&self.plain.split_to(n));
        self.account(0)
    }

    /// Gives the caller the next bytes of the unwrapped frame in progress: from `rbuf`, else
    /// read straight into the caller's buffer.
    fn poll_frame_body(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.rbuf.is_empty() {
            let n = self.frame_left.min(self.rbuf.len()).min(buf.remaining());
            buf.put_slice(&self.rbuf.split_to(n));
            self.frame_left -= n;
            if self.frame_left == 0 {
                self.frame_deadline = None;
            }
            return Poll::Ready(Ok(()));
        }
        // Straight into the caller's buffer: no copy for QOP auth.
        let k = self.frame_left.min(buf.remaining());
        let mut part = ReadBuf::new(buf.initialize_unfilled_to(k));
        if Pin::new(&mut self.io)
            .poll_read(cx, &mut part)?
            .is_pending()
        {
            return self.pending(cx);
        }
        let n = part.filled().len();
        if n == 0 {
            return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
        }
        buf.advance(n);
        self.frame_left -= n;
        if self.frame_left == 0 {
            self.frame_deadline = None;
        }
        Poll::Ready(Ok(()))
    }

    /// Takes the frame of `len` bytes whose header starts `rbuf`: an unwrapped frame's header
    /// is consumed (its body follows); a wrapped frame, once whole, is unwrapped into `plain`.
    /// False when a wrapped frame is not whole yet.
    fn take_frame(&mut self, len: usize, wrapped: bool) -> io::Result<bool> {
        if !wrapped {
            self.rbuf.advance(4);
            self.frame_left = len;
            if len == 0 && self.rbuf.is_empty() {
                self.frame_deadline = None;
            }
            return Ok(true);
        }
        if self.rbuf.len() < 4 + len {
            return Ok(false);
        }
        self.rbuf.advance(4);
        let frame = self.rbuf.split_to(len);
        if let Layer::Wrapped { ctx, .. } = &mut self.layer {
            let plain = ctx
                .unwrap(&frame)
                .map_err(|e| invalid(format!("SASL unwrap failed: {e}")))?;
            self.plain = Bytes::copy_from_slice(&plain);
        }
        self.frame_deadline = None;
        self.account(0)?;
        Ok(true)
    }

    /// Reads more raw bytes into `rbuf`: true when some arrived, false at the end of the
    /// stream between frames (an error inside one).
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        let mut chunk = [0u8; 8192];
        let mut rb = ReadBuf::new(&mut chunk);
        if Pin::new(&mut self.io).poll_read(cx, &mut rb)?.is_pending() {
            return self.pending(cx);
        }
        if rb.filled().is_empty() {
            return if self.rbuf.is_empty() && self.frame_left == 0 {
                Poll::Ready(Ok(false))
            } else {
                Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()))
            };
        }
        let got = rb.filled().len();
        self.account(got)?;
        self.rbuf.extend_from_slice(rb.filled());
        Poll::Ready(Ok(true))
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
                return Poll::Ready(this.give_plain(buf));
            }
            let wrapped = matches!(this.layer, Layer::Wrapped { .. });
            if !wrapped && this.frame_left > 0 {
                return this.poll_frame_body(cx, buf);
            }
            if let Some(len) = this.frame_len()? {
                if this.take_frame(len, wrapped)? {
                    continue;
                }
            }
            // More raw bytes are needed.
            if !ready!(this.poll_fill(cx))? {
                return Poll::Ready(Ok(()));
            }
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
