//! The upstream stage: connections to the real metastore.
//!
//! `Upstreams` is the configured list of metastores (built once from the settings:
//! `Upstreams::from_settings`), tried in failover order with a bounded connect time; a new
//! connection is TCP, then TLS, then SASL when so configured (the delegation-token protocol
//! itself is in `delegation`). `UpstreamConn` is one open connection: it sends a message, reads one whole
//! reply within a limit, or streams a reply to the client, and keeps the metastore session's
//! identity (`set_ugi`) in step with the caller's. Client connections and the facts client
//! both talk to the metastore only through it.

pub mod cache;
pub mod delegation;
pub mod notifications;

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::auth::sasl::{self, SaslStream};
use crate::auth::tls::UpstreamTls;
use crate::config::ThriftUri;
use crate::error::{Attempt, ConnectError, RefusedCall, UpstreamError};
use crate::listener::identity::Identity;
use crate::ops::metrics::Metrics;
use crate::settings::Settings;
/// Its home is `settings`; re-exported here, beside the connections it bounds.
pub use crate::settings::Timeouts;
use crate::upstream::delegation::TokenError;
use crate::upstream::delegation::{TokenChannel, TokenSecret, UpstreamAuth, TOKEN_REPLY_LIMIT};
use crate::wire::codec::writer::Writer;
use crate::wire::codec::Ty;
use crate::wire::codec::{Limits, MessageType, Scan, ScanError, TopField};
use crate::wire::framing::MessageWalker;
use crate::wire::transport::Transport;

/// The configured metastores and how to reach them.
#[derive(Debug, Clone)]
pub struct Upstreams {
    uris: Vec<ThriftUri>,
    timeouts: Timeouts,
    /// TLS towards the metastore (`[upstream.tls]`).
    tls: Option<Arc<UpstreamTls>>,
    /// Kerberos towards the metastore (`[upstream.kerberos]`).
    auth: Option<Arc<UpstreamAuth>>,
}

/// A connection made: its stream, the metastore it reached, and the caller it is
/// authenticated as (kerberized, with delegation tokens).
pub type Connected<'a> = (Stream, &'a ThriftUri, Option<String>);

/// Why one metastore address could not be reached.
#[derive(Debug, thiserror::Error)]
enum ReachError {
    #[error("{0}")]
    Tcp(io::Error),
    #[error("TLS: {0}")]
    Tls(String),
}

/// Why a reached metastore did not accept hms-guard's SASL authentication.
#[derive(Debug, thiserror::Error)]
enum AuthError {
    #[error("Kerberos as {principal} to {service}: {err}")]
    Kerberos {
        principal: String,
        service: String,
        err: sasl::ClientError,
    },
    #[error("acting as {user} with a delegation token: {err}")]
    Token {
        user: String,
        err: sasl::ClientError,
    },
}

/// The acting caller's delegation token could not be had.
#[derive(Debug, thiserror::Error)]
#[error("no delegation token for {user} (hms-guard must be a proxy user at the metastore): {err}")]
struct NoToken {
    user: String,
    err: TokenError,
}

/// A framed-transport client at a kerberized metastore.
#[derive(Debug, thiserror::Error)]
#[error("a framed-transport client cannot be forwarded to a kerberized metastore (its SASL transport frames messages itself): use the unframed transport")]
struct FramedToKerberized;

impl Upstreams {
    /// Plain metastores: no TLS, no Kerberos (tests and benches).
    pub fn new(uris: Vec<ThriftUri>, timeouts: Timeouts) -> Self {
        Upstreams {
            uris,
            timeouts,
            tls: None,
            auth: None,
        }
    }

    /// The metastores of `settings` (their URIs and timeouts), over `tls` when given (loaded by
    /// the caller, who may watch it for reloads), kerberized when `[upstream.kerberos]` is
    /// configured: hms-guard authenticates with its own keytab, and acts as each caller with
    /// a delegation token when so configured. The one place `Upstreams` is assembled.
    pub fn from_settings(
        settings: &Settings,
        metrics: Arc<Metrics>,
        tls: Option<Arc<UpstreamTls>>,
    ) -> Self {
        let u = &settings.upstream;
        let auth = settings
            .upstream_kerberos
            .as_ref()
            .map(|k| Arc::new(UpstreamAuth::new(k.clone(), metrics)));
        Upstreams {
            uris: u.uris.clone(),
            timeouts: u.timeouts,
            tls,
            auth,
        }
    }

    /// A client's metastores (`hms-guard sql`): `uris` over `tls`, authenticated with
    /// Kerberos by `auth` when given.
    pub fn for_client(
        uris: Vec<ThriftUri>,
        timeouts: Timeouts,
        tls: Option<Arc<UpstreamTls>>,
        auth: Option<Arc<UpstreamAuth>>,
    ) -> Self {
        Upstreams {
            uris,
            timeouts,
            tls,
            auth,
        }
    }

    pub fn kerberos(&self) -> Option<&Arc<UpstreamAuth>> {
        self.auth.as_ref()
    }

    /// Connects to the first reachable URI (every resolved address of each, in order; with
    /// TLS, the first whose handshake also succeeds; kerberized, the first that also accepts
    /// hms-guard's authentication — as `caller` when given and tokens are on).
    pub async fn connect(
        &self,
        caller: Option<&str>,
        max_frame: usize,
    ) -> Result<Connected<'_>, ConnectError> {
        let acting = self.acting_as(caller);
        let token = self.caller_token(acting).await?;
        let as_caller = acting.zip(token.as_deref());
        let mut attempts = Vec::new();
        let mut refused = false;
        for uri in &self.uris {
            let stream = match self.reach(uri).await {
                Ok(stream) => stream,
                Err(e) => {
                    attempts.push(Attempt::new(uri.to_string(), e));
                    continue;
                }
            };
            let Some(auth) = &self.auth else {
                return Ok((stream, uri, None));
            };
            match authenticate(auth, stream, &uri.host, as_caller, max_frame).await {
                Ok(s) => return Ok((Stream::Sasl(Box::new(s)), uri, acting.map(str::to_string))),
                Err(e) => {
                    refused = true;
                    attempts.push(Attempt::new(uri.to_string(), e));
                }
            }
        }
        Err(ConnectError { attempts, refused })
    }

    /// The caller a new connection authenticates as: `caller`, at a kerberized metastore with
    /// delegation tokens on.
    fn acting_as<'c>(&self, caller: Option<&'c str>) -> Option<&'c str> {
        self.auth
            .as_ref()
            .filter(|a| a.settings.delegation_tokens)
            .and(caller)
    }

    /// The acting caller's delegation token (one for all URIs: a metastore pair shares its
    /// tokens), kept or asked for on a connection of its own as hms-guard.
    async fn caller_token(
        &self,
        acting: Option<&str>,
    ) -> Result<Option<Arc<TokenSecret>>, ConnectError> {
        let (Some(auth), Some(user)) = (&self.auth, acting) else {
            return Ok(None);
        };
        let limits = Limits {
            max_message_bytes: TOKEN_REPLY_LIMIT,
            ..Limits::default()
        };
        let transport = Transport {
            protocol: crate::wire::codec::Protocol::Binary,
            framed: false,
        };
        // Boxed: opening that connection is itself a `connect`.
        let open = || Box::pin(UpstreamConn::open_as(self, transport, limits, None));
        match auth.token_for(user, open).await {
            Ok(t) => Ok(Some(t)),
            Err(err) => Err(ConnectError {
                attempts: vec![Attempt::new(
                    "get_delegation_token",
                    NoToken {
                        user: user.to_string(),
                        err,
                    },
                )],
                refused: true,
            }),
        }
    }

    /// A byte stream to `uri`: TCP (the first resolved address that answers), inside TLS when
    /// configured.
    async fn reach(&self, uri: &ThriftUri) -> Result<Stream, ReachError> {
        let tcp = self.connect_one(uri).await.map_err(ReachError::Tcp)?;
        match &self.tls {
            None => Ok(Stream::Plain(tcp)),
            Some(tls) => match tls.connect(tcp, &uri.host, self.timeouts.connect).await {
                Ok(s) => Ok(Stream::Tls(Box::new(s))),
                Err(e) => Err(ReachError::Tls(e)),
            },
        }
    }

    async fn connect_one(&self, uri: &ThriftUri) -> io::Result<TcpStream> {
        let addrs = tokio::time::timeout(
            self.timeouts.connect,
            tokio::net::lookup_host((uri.host.as_str(), uri.port)),
        )
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "name lookup timed out"))??;
        let mut last = io::Error::new(io::ErrorKind::NotFound, "name resolved to no address");
        for addr in addrs {
            match tokio::time::timeout(self.timeouts.connect, TcpStream::connect(addr)).await {
                Ok(Ok(s)) => {
                    s.set_nodelay(true)?;
                    return Ok(s);
                }
                Ok(Err(e)) => last = e,
                Err(_) => {
                    last = io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "connect to {addr} timed out after {} ms",
                            self.timeouts.connect.as_millis()
                        ),
                    )
                }
            }
        }
        Err(last)
    }
}

/// The SASL negotiation on a new metastore connection: as the caller with its token
/// (DIGEST-MD5), else as hms-guard itself (GSSAPI to the metastore's principal at `host`).
async fn authenticate(
    auth: &UpstreamAuth,
    stream: Stream,
    host: &str,
    as_caller: Option<(&str, &TokenSecret)>,
    max_frame: usize,
) -> Result<SaslStream<Stream>, AuthError> {
    let k = &auth.settings;
    match as_caller {
        None => {
            let service = k.service_at(host);
            sasl::connect_gssapi(
                stream,
                &k.principal,
                &service,
                &k.qop,
                k.handshake_timeout,
                max_frame,
            )
            .await
            .map(|(s, _)| s)
            .map_err(|err| AuthError::Kerberos {
                principal: k.principal.clone(),
                service,
                err,
            })
        }
        Some((user, token)) => auth
            .connect_as(stream, user, token, max_frame)
            .await
            .map_err(|err| AuthError::Token {
                user: user.to_string(),
                err,
            }),
    }
}

/// Bytes a connection keeps allocated while idle; a larger buffer is released.
const IDLE_BUFFER_KEEP: usize = 64 * 1024;
const READ_CHUNK: usize = 16 * 1024;

/// A reply streamed to the client failed.
#[derive(Debug)]
pub enum StreamError {
    /// The metastore failed; `flushed`: part of the reply already reached the client, so no
    /// clean answer is possible.
    Upstream { err: UpstreamError, flushed: bool },
    /// Writing to the client failed: nobody to answer.
    ClientGone,
}

/// What a streamed reply is shown to on its way (the shared metadata cache).
#[derive(Default)]
pub struct Tap<'a> {
    /// Called once, after the metastore answered and before any byte reaches the client.
    pub before_client: Option<Box<dyn FnOnce() + Send + 'a>>,
    /// A copy of the reply, while it stays within `limit` bytes.
    pub capture: Option<BytesMut>,
    pub limit: usize,
}

impl Tap<'_> {
    fn keep(&mut self, bytes: &[u8]) {
        if let Some(c) = &mut self.capture {
            if c.len() + bytes.len() > self.limit {
                self.capture = None;
            } else {
                c.extend_from_slice(bytes);
            }
        }
    }
}

/// A reply streamed through: when it was complete and how many bytes went to the client.
#[derive(Debug, Clone, Copy)]
pub struct Streamed {
    pub upstream_time: Duration,
    pub bytes: u64,
}

/// One open connection to a metastore: its socket, its read buffer and the bounded walker
/// that finds where each reply ends, and the identity last sent on it with `set_ugi`.
/// Used by the client connections and by the facts client alike.
pub struct UpstreamConn {
    stream: Stream,
    uri: ThriftUri,
    transport: Transport,
    buf: BytesMut,
    walker: MessageWalker,
    timeouts: Timeouts,
    ugi: Option<Identity>,
    /// Authenticated with SASL (a kerberized metastore): the session's user is fixed by the
    /// authentication and `set_ugi` is not sent.
    sasl: bool,
    /// Kerberized with delegation tokens: callers' calls go on connections authenticated as
    /// them.
    delegation: bool,
}

impl UpstreamConn {
    /// Connects to the first reachable metastore (failover order), speaking `transport`,
    /// reading replies within `limits`; kerberized, as hms-guard itself.
    pub async fn open(
        upstreams: &Upstreams,
        transport: Transport,
        limits: Limits,
    ) -> Result<UpstreamConn, ConnectError> {
        UpstreamConn::open_as(upstreams, transport, limits, None).await
    }

    /// `open`, for `caller`: at a kerberized metastore with delegation tokens, the connection
    /// authenticates as the caller.
    pub async fn open_as(
        upstreams: &Upstreams,
        transport: Transport,
        limits: Limits,
        caller: Option<&Identity>,
    ) -> Result<UpstreamConn, ConnectError> {
        if upstreams.auth.is_some() && transport.framed {
            return Err(ConnectError {
                refused: true,
                attempts: vec![Attempt::new("(all)", FramedToKerberized)],
            });
        }
        let user = caller
            .filter(|c| !c.is_anonymous())
            .map(|c| c.user.as_str());
        let max_frame = limits.max_message_bytes as usize + 64 * 1024;
        let (stream, uri, acting) = match upstreams.connect(user, max_frame).await {
            // A kept token the metastore no longer knows (restarted, or another metastore of
            // the pair) was forgotten: once more, with a new token.
            Err(e) if e.refused && user.is_some() && upstreams.auth.is_some() => {
                tracing::debug!(error = %e, "authenticating as the caller failed; once more with a new token");
                upstreams.connect(user, max_frame).await?
            }
            r => r?,
        };
        let sasl = matches!(stream, Stream::Sasl(_));
        Ok(UpstreamConn {
            stream,
            uri: uri.clone(),
            transport,
            buf: BytesMut::new(),
            walker: MessageWalker::new(transport, limits),
            timeouts: upstreams.timeouts,
            // Authenticated as the caller: the session already carries the caller's identity.
            ugi: acting.and(caller.cloned()),
            sasl,
            delegation: upstreams
                .auth
                .as_ref()
                .is_some_and(|a| a.settings.delegation_tokens),
        })
    }

    pub fn uri(&self) -> &ThriftUri {
        &self.uri
    }

    /// Whether this connection can carry `identity`'s calls: it already does, or it can still
    /// be given it (`set_ugi` not sent yet). A kerberized session's user is fixed by its
    /// authentication: one opened as hms-guard serves the anonymous, or everyone when calls
    /// run as hms-guard (no delegation tokens).
    pub fn serves(&self, identity: &Identity) -> bool {
        match (&self.ugi, self.sasl) {
            (Some(u), _) => u == identity,
            (None, false) => true,
            (None, true) => identity.is_anonymous() || !self.delegation,
        }
    }

    /// Bytes received beyond the last whole reply (a metastore sends none between calls).
    pub fn has_unread(&self) -> bool {
        !self.buf.is_empty()
    }

    /// Sends one whole message (`method` names it in errors).
    pub async fn send(&mut self, bytes: &[u8], method: &str) -> Result<(), UpstreamError> {
        let stream = &mut self.stream;
        let write = timeout(self.timeouts.write, async {
            stream.write_all(bytes).await?;
            stream.flush().await
        })
        .await;
        let err = match write {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => e,
            Err(_) => io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no progress within {} ms", self.timeouts.write.as_millis()),
            ),
        };
        Err(UpstreamError::Write {
            uri: self.uri.to_string(),
            method: method.to_string(),
            err,
        })
    }

    /// Reads more reply bytes, within the read timeout; an error names what ended it.
    async fn fill(&mut self, method: &str) -> Result<(), UpstreamError> {
        if self.buf.capacity() - self.buf.len() < READ_CHUNK / 4 {
            self.buf.reserve(READ_CHUNK);
        }
        let read = timeout(self.timeouts.read, self.stream.read_buf(&mut self.buf)).await;
        Err(match read {
            Ok(Ok(0)) => UpstreamError::Closed {
                uri: self.uri.to_string(),
                method: method.to_string(),
            },
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(err)) => UpstreamError::Read {
                uri: self.uri.to_string(),
                method: method.to_string(),
                err,
            },
            Err(_) => UpstreamError::Timeout {
                uri: self.uri.to_string(),
                method: method.to_string(),
                ms: self.timeouts.read.as_millis() as u64,
            },
        })
    }

    /// Walks the buffered bytes from `walked` on (advancing it); `true` when a whole message
    /// of `walked` bytes is buffered.
    fn walk(&mut self, walked: &mut usize, method: &str) -> Result<bool, UpstreamError> {
        if *walked >= self.buf.len() {
            return Ok(false);
        }
        match self.walker.advance(&self.buf[*walked..]) {
            Ok(Scan::Complete(n)) => {
                *walked += n;
                Ok(true)
            }
            Ok(Scan::NeedMore(n)) => {
                *walked += n;
                Ok(false)
            }
            Err(err) => Err(UpstreamError::Protocol {
                uri: self.uri.to_string(),
                method: method.to_string(),
                err,
            }),
        }
    }

    /// The walked header, as an error unless it answers `method`/`seqid` (a REPLY or an
    /// EXCEPTION to that call).
    fn check_answers(&self, method: &str, seqid: i32) -> Result<(), UpstreamError> {
        let Some(h) = self.walker.header() else {
            return Err(UpstreamError::Protocol {
                uri: self.uri.to_string(),
                method: method.to_string(),
                err: ScanError::Truncated,
            });
        };
        let answers = h.name == method
            && h.seqid == seqid
            && matches!(h.kind, MessageType::Reply | MessageType::Exception);
        if answers {
            return Ok(());
        }
        Err(UpstreamError::Mismatch {
            uri: self.uri.to_string(),
            method: method.to_string(),
            seqid,
            got_method: h.name.clone(),
            got_seqid: h.seqid,
            got_kind: format!("{:?}", h.kind),
        })
    }

    /// How the metastore answered the last call whose reply was read or streamed (its header
    /// checked to answer that call): the message type, and the result struct's first field
    /// header as it passed. `None` before a reply's header was walked.
    pub fn answer(&self) -> Option<Answer> {
        let h = self.walker.header()?;
        Some(Answer {
            kind: h.kind,
            first: self.walker.top_field(),
        })
    }

    /// Reads one whole reply to `method`/`seqid`, at most `limit` bytes, and takes it out of
    /// the buffer. A reply that does not answer that call is an error.
    pub async fn read_reply(
        &mut self,
        method: &str,
        seqid: i32,
        limit: u64,
    ) -> Result<(BytesMut, MessageType), UpstreamError> {
        self.walker.reset();
        let mut walked = 0usize;
        loop {
            if self.walk(&mut walked, method)? {
                self.check_answers(method, seqid)?;
                let kind = self.walker.header().map_or(MessageType::Reply, |h| h.kind);
                return Ok((self.buf.split_to(walked), kind));
            }
            if walked as u64 > limit {
                return Err(UpstreamError::Protocol {
                    uri: self.uri.to_string(),
                    method: method.to_string(),
                    err: ScanError::TooLarge { limit },
                });
            }
            self.fill(method).await?;
        }
    }

    /// Streams the reply to `method`/`seqid` to `client` as it arrives: up to `hold` bytes
    /// are held back, so that a failure early in the reply can still be answered cleanly;
    /// nothing reaches the client before the reply is known to answer this call.
    /// `tap`: sees the reply's first bytes before any reaches the client (`before_client`),
    /// and keeps a copy of the whole reply when it fits (`Tap::capture`).
    #[allow(clippy::too_many_arguments)] // one call's whole context, passed once
    pub async fn stream_reply<W: AsyncWrite + Unpin>(
        &mut self,
        client: &mut W,
        client_write_timeout: Duration,
        method: &str,
        seqid: i32,
        hold: usize,
        sent: Instant,
        tap: &mut Tap<'_>,
    ) -> Result<Streamed, StreamError> {
        self.walker.reset();
        let mut walked = 0usize;
        let mut flushed = false;
        let mut bytes = 0u64;
        let up = |err, flushed| StreamError::Upstream { err, flushed };
        loop {
            let complete = self.walk(&mut walked, method).map_err(|e| up(e, flushed))?;
            if complete || walked >= hold {
                self.check_answers(method, seqid)
                    .map_err(|e| up(e, flushed))?;
                let upstream_time = sent.elapsed();
                if !flushed {
                    if let Some(f) = tap.before_client.take() {
                        f();
                    }
                }
                let out = &self.buf[..walked];
                tap.keep(out);
                let write = async {
                    client.write_all(out).await?;
                    client.flush().await
                };
                match timeout(client_write_timeout, write).await {
                    Ok(Ok(())) => {}
                    _ => return Err(StreamError::ClientGone),
                }
                bytes += walked as u64;
                self.buf.advance(walked);
                walked = 0;
                flushed = true;
                if complete {
                    return Ok(Streamed {
                        upstream_time,
                        bytes,
                    });
                }
            }
            self.fill(method).await.map_err(|e| up(e, flushed))?;
        }
    }

    /// Makes this connection's metastore session carry `identity`: sends `set_ugi` unless it
    /// already does (`before` names the call it precedes, for errors). An anonymous identity
    /// sends nothing.
    pub async fn ensure_identity(
        &mut self,
        identity: &Identity,
        before: &str,
    ) -> Result<(), UpstreamError> {
        if identity.is_anonymous() || self.ugi.as_ref() == Some(identity) || self.sasl {
            return Ok(());
        }
        let call = format!("set_ugi (before {before})");
        let msg = set_ugi_call(self.transport, &identity.user, &identity.groups);
        self.send(&msg, &call).await?;
        let (reply, kind) = self.read_reply("set_ugi", 0, SET_UGI_REPLY_LIMIT).await?;
        if kind != MessageType::Reply {
            return Err(UpstreamError::Refused {
                uri: self.uri.to_string(),
                call: RefusedCall::SetUgi,
                bytes: reply.len(),
                method: before.to_string(),
            });
        }
        self.ugi = Some(identity.clone());
        Ok(())
    }

    /// Sends a call the client made on an earlier connection (its own `set_ugi`, with
    /// authorization off) and takes its reply, which the client already had.
    pub async fn replay(
        &mut self,
        call: &[u8],
        header: &crate::wire::codec::MessageHeader,
    ) -> Result<(), UpstreamError> {
        self.send(call, &header.name).await?;
        let (reply, kind) = self
            .read_reply(&header.name, header.seqid, SET_UGI_REPLY_LIMIT)
            .await?;
        if kind != MessageType::Reply {
            return Err(UpstreamError::Refused {
                uri: self.uri.to_string(),
                call: RefusedCall::Replayed(header.name.clone()),
                bytes: reply.len(),
                method: header.name.clone(),
            });
        }
        Ok(())
    }

    /// Resolves when the metastore closes (or breaks) this idle connection: a metastore sends
    /// nothing between calls, so any readable state means it is gone. Releases a large idle
    /// buffer first.
    pub async fn closed(&mut self) {
        if self.buf.is_empty() && self.buf.capacity() > IDLE_BUFFER_KEEP {
            self.buf = BytesMut::new();
        }
        match &mut self.stream {
            Stream::Plain(tcp) => {
                let mut probe = [0u8; 1];
                let _ = tcp.peek(&mut probe).await;
            }
            // TLS records the metastore may send after the handshake (session tickets) are
            // taken by the TLS layer; a read returns only at the end, on an error, or on
            // bytes a metastore never sends between calls.
            Stream::Tls(tls) => {
                let _ = tls.read_buf(&mut self.buf).await;
            }
            Stream::Sasl(s) => {
                let _ = s.read_buf(&mut self.buf).await;
            }
        }
    }
}

/// Delegation tokens are asked for on a connection as hms-guard itself.
impl TokenChannel for UpstreamConn {
    async fn call(&mut self, call: &[u8], method: &'static str) -> Result<BytesMut, UpstreamError> {
        self.send(call, method).await?;
        Ok(self.read_reply(method, 1, TOKEN_REPLY_LIMIT).await?.0)
    }
}

/// The beginning of a metastore reply: enough to tell a result from an exception.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    /// REPLY, or EXCEPTION (a `TApplicationException`).
    pub kind: MessageType,
    /// The result struct's first field header (`None`: not walked yet).
    pub first: Option<TopField>,
}

/// Largest `set_ugi` reply taken (a list of group names).
const SET_UGI_REPLY_LIMIT: u64 = 1024 * 1024;

/// A `set_ugi(user, groups)` call message (sequence id 0), framed as `transport` frames.
fn set_ugi_call(transport: Transport, user: &str, groups: &[String]) -> BytesMut {
    let mut w = Writer::new(transport.protocol);
    w.message("set_ugi", MessageType::Call, 0).struct_begin();
    w.field(Ty::String, 1).string(user.as_bytes());
    w.field(Ty::List, 2).list_begin(Ty::String, groups.len());
    for g in groups {
        w.string(g.as_bytes());
    }
    w.struct_end();
    w.finish(transport.framed)
}

/// A metastore connection's byte stream: plain TCP, or TLS (`[upstream.tls]`), and either
/// inside SASL (`[upstream.kerberos]`).
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    Sasl(Box<SaslStream<Stream>>),
}

impl tokio::io::AsyncRead for Stream {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::Sasl(s) => std::pin::Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::Sasl(s) => std::pin::Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => std::pin::Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_flush(cx),
            Stream::Sasl(s) => std::pin::Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => std::pin::Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::Sasl(s) => std::pin::Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_failures_read_as_before_they_were_typed() {
        let e = ConnectError {
            attempts: vec![Attempt::new(
                "get_delegation_token",
                NoToken {
                    user: "alice".into(),
                    err: TokenError::NoToken,
                },
            )],
            refused: true,
        };
        assert_eq!(
            e.to_string(),
            "the metastore could not be used: get_delegation_token: no delegation token for alice (hms-guard must be a proxy user at the metastore): the reply carries no token"
        );
        let e = ConnectError {
            attempts: vec![
                Attempt::new("m1:9083", ReachError::Tls("bad certificate".into())),
                Attempt::new("(all)", FramedToKerberized),
            ],
            refused: false,
        };
        assert_eq!(
            e.to_string(),
            "no metastore reachable: m1:9083: TLS: bad certificate; (all): a framed-transport client cannot be forwarded to a kerberized metastore (its SASL transport frames messages itself): use the unframed transport"
        );
    }
}
