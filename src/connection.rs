//! The connection stage: one client connection, served call by call.
//!
//! Each call takes one path: read (the whole request, bounded) → decide (the policy stage's
//! `begin`) → forward or answer → finish (the policy stage's `finish`: audit line, cache
//! invalidation). `set_ugi` is answered by the identity stage. All metastore I/O goes through
//! one `UpstreamConn` per client connection (HMS sessions are stateful), opened at the first
//! call that needs it and opened again, in failover order with the identity re-sent, when the
//! metastore closed it while the client was idle.
//!
//! A failure is answered in the protocol when the client can still take a message (an
//! EXCEPTION reply with the call's sequence id); then the connection is closed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{timeout, timeout_at};
use tracing::{debug, info, info_span, warn, Instrument};

use crate::audit::{Audit, AuditError};
use crate::budget::HeldBytes;
use crate::codec::reply::{application_exception, AppErrorKind};
use crate::codec::value::Value;
use crate::codec::{MessageHeader, MessageType, Scan, ScanError};
use crate::config::{AuthzMode, IdentityMode};
use crate::error::{ClientError, UpstreamError};
use crate::facts::FactsSource;
use crate::framing::MessageWalker;
use crate::identity::{Identity, IdentitySource};
use crate::metrics::{
    DirectionLabels, HandshakeStage, KindLabels, MethodLabels, Metrics, RequestLabels,
    TransportLabels,
};
use crate::policy::stage::{denial, unframed};
use crate::policy::{Action, Call, Caller, Guard, ReplyCheck, UpstreamOutcome};
use crate::router::{self, method_label, Method, Rule};
use crate::schema::{self, Reject};
use crate::settings::Settings;
use crate::tls::{CertUser, Tls};
use crate::transport::{self, Detect, Transport};
use crate::upstream::{Answer, StreamError, UpstreamConn, Upstreams};

const READ_CHUNK: usize = 16 * 1024;
/// Buffers above this capacity are released when a connection goes idle.
const IDLE_BUFFER_KEEP: usize = 64 * 1024;

/// State shared by every connection.
pub struct Shared {
    pub settings: Settings,
    /// TLS towards clients, when configured.
    pub tls: Option<Arc<Tls>>,
    pub metrics: Arc<Metrics>,
    pub upstreams: Upstreams,
    pub guard: Guard,
    pub audit: Audit,
    /// Request bytes held over all connections.
    held: Arc<HeldBytes>,
}

impl Shared {
    /// Builds the shared state; starts the audit writer (needs a Tokio runtime).
    /// `facts`: where authorization's facts come from (default: the metastore itself).
    pub fn new(
        settings: Settings,
        metrics: Arc<Metrics>,
        storage: crate::storage::StorageGuard,
        facts: Option<Box<dyn FactsSource>>,
        tls: Option<Arc<Tls>>,
        upstream_tls: Option<Arc<crate::tls::UpstreamTls>>,
    ) -> Result<Self, AuditError> {
        let upstreams = Upstreams::from_settings(&settings, metrics.clone(), upstream_tls);
        let (a, depth) = (&settings.authz, settings.limits.request.max_depth);
        let read_only_external = settings.storage.read_only_external;
        let guard = match facts {
            None => Guard::new(
                a,
                depth,
                read_only_external,
                upstreams.clone(),
                metrics.clone(),
                storage,
            ),
            Some(f) => {
                Guard::with_source(a, depth, read_only_external, f, metrics.clone(), storage)
            }
        };
        let audit = Audit::start(&settings.audit, metrics.clone())?;
        let max = settings.limits.max_held_request_bytes;
        Ok(Shared {
            settings,
            tls,
            metrics,
            upstreams,
            guard,
            audit,
            held: Arc::new(HeldBytes::new(max)),
        })
    }
}

/// A complete client call: its original bytes and its header.
struct Request {
    bytes: Bytes,
    header: MessageHeader,
}

/// Why a call ended the connection.
enum CallError {
    Upstream {
        err: UpstreamError,
        /// Part of the reply already reached the client: no clean reply is possible.
        flushed: bool,
    },
    /// Writing to the client failed: nobody to answer.
    ClientGone,
}

impl From<StreamError> for CallError {
    fn from(e: StreamError) -> Self {
        match e {
            StreamError::Upstream { err, flushed } => CallError::Upstream { err, flushed },
            StreamError::ClientGone => CallError::ClientGone,
        }
    }
}

impl From<UpstreamError> for CallError {
    fn from(err: UpstreamError) -> Self {
        CallError::Upstream {
            err,
            flushed: false,
        }
    }
}

/// Serves one accepted client connection to its end: the TLS handshake first when the
/// listener has TLS (a client certificate then may name the caller). Handshakes and the first
/// whole call must be done within `server.handshake_timeout_ms` of now.
pub async fn serve(
    shared: Arc<Shared>,
    client: TcpStream,
    peer: SocketAddr,
    id: u64,
    shutdown: watch::Receiver<bool>,
) {
    let span = info_span!("conn", id, peer = %peer);
    async move {
        let _ = client.set_nodelay(true);
        let identity = shared.settings.identity.initial();
        let accepted = Accepted {
            id,
            peer,
            shutdown,
            first_call_by: tokio::time::Instant::now() + shared.settings.server.handshake_timeout,
        };
        match (
            shared.tls.clone(),
            shared.settings.identity.kerberos.clone(),
        ) {
            (None, None) => Conn::new(shared, client, identity, accepted).run().await,
            // Boxed: a TLS session's or a Kerberos context's state is large, and a plain
            // connection's task should not carry room for it.
            (None, Some(kerberos)) => {
                Box::pin(serve_sasl(kerberos, shared, client, accepted)).await
            }
            (Some(tls), _) => Box::pin(serve_tls(tls, shared, client, identity, accepted)).await,
        }
    }
    .instrument(span)
    .await
}

/// What a connection's stages need to know about it from its accept.
struct Accepted {
    id: u64,
    peer: SocketAddr,
    shutdown: watch::Receiver<bool>,
    /// The handshake deadline: handshakes done and the first call whole by then.
    first_call_by: tokio::time::Instant,
}

/// Logs and counts a connection closed at its handshake deadline.
fn handshake_expired(shared: &Shared, stage: HandshakeStage) {
    shared.metrics.handshake_timeout(stage);
    info!(
        stage = stage.as_str(),
        handshake_timeout_ms = shared.settings.server.handshake_timeout.as_millis() as u64,
        "closing connection: no whole first call within the handshake timeout"
    );
}

/// Logs a failed read outside a call: a SASL frame that did not arrive whole within the read
/// timeout is counted as a client timeout, one that could not be taken (a wrapped token
/// refused: forged, repeated, out of order; a frame over the bound) as `sasl_frame`.
fn read_failed(shared: &Shared, e: &std::io::Error) {
    match e.kind() {
        std::io::ErrorKind::TimedOut => {
            shared.metrics.client_error("timeout");
            info!(error = %e, "closing connection: a frame did not arrive whole in time");
        }
        std::io::ErrorKind::InvalidData => {
            shared.metrics.client_error("sasl_frame");
            warn!(error = %e, "closing connection: a SASL frame was refused");
        }
        _ => debug!(error = %e, "client read failed"),
    }
}

/// The TLS handshake, then the connection; a client certificate may name the caller.
async fn serve_tls(
    tls: Arc<Tls>,
    shared: Arc<Shared>,
    client: TcpStream,
    identity: Identity,
    accepted: Accepted,
) {
    let handshake = tls.accept(client, shared.settings.server.read_timeout);
    let (stream, user) = match timeout_at(accepted.first_call_by, handshake).await {
        Ok(Ok(done)) => done,
        Ok(Err(e)) => {
            warn!(error = %e, "closing connection: TLS handshake refused");
            return;
        }
        Err(_) => return handshake_expired(&shared, HandshakeStage::Tls),
    };
    let id_settings = &shared.settings.identity;
    let (identity, refusal) = match (id_settings.mode, user) {
        (IdentityMode::Certificate, CertUser::User(user)) => {
            match id_settings.verified(&user, IdentitySource::Certificate) {
                Ok(identity) => {
                    debug!(user = %identity, "identity from the client certificate");
                    (identity, None)
                }
                Err(refused) => (Identity::anonymous(), Some(refused.to_string())),
            }
        }
        (IdentityMode::Certificate, CertUser::Refused(why)) => (Identity::anonymous(), Some(why)),
        (_, CertUser::Refused(why)) => {
            warn!(error = %why, "closing connection: TLS handshake refused: the client certificate names no user");
            return;
        }
        _ => (identity, None),
    };
    if let Some(why) = refusal {
        warn!(error = %why, "the client certificate names no user hms-guard accepts: each call is refused, none reaches the metastore");
        let mut conn = Conn::new(shared, stream, identity, accepted);
        conn.refusal = Some(format!(
            "hms-guard: the client certificate is refused: {why}"
        ));
        return conn.run().await;
    }
    match shared.settings.identity.kerberos.clone() {
        // Kerberos inside TLS: the SASL negotiation follows the TLS handshake.
        Some(kerberos) => serve_sasl(kerberos, shared, stream, accepted).await,
        None => Conn::new(shared, stream, identity, accepted).run().await,
    }
}

/// What a plain Thrift client on a Kerberos listener is told (in its own protocol).
const KERBEROS_REQUIRED: &str = "hms-guard: this metastore requires Kerberos: connect with SASL/GSSAPI (Spark/Hive: hive.metastore.sasl.enabled=true and hive.metastore.kerberos.principal; pyiceberg: hive.kerberos-authentication=true) after kinit";

/// The SASL/GSSAPI handshake, then the connection as the authenticated principal's user.
async fn serve_sasl<S: AsyncRead + AsyncWrite + Unpin>(
    kerberos: Arc<crate::kerberos::KerberosSettings>,
    shared: Arc<Shared>,
    stream: S,
    accepted: Accepted,
) {
    use crate::metrics::OutcomeLabels;
    use crate::sasl::Handshake;
    let started = Instant::now();
    let limit = shared.settings.server.read_timeout;
    // A wrapped frame carries a whole request and the GSSAPI token around it.
    let max_frame = shared.settings.limits.request.max_message_bytes as usize + 64 * 1024;
    let outcome = |o: &'static str| {
        shared
            .metrics
            .sasl_handshakes
            .get_or_create(&OutcomeLabels { outcome: o })
            .inc();
    };
    let handshake = crate::sasl::accept(stream, &kerberos, limit, max_frame);
    let Ok(handshake) = timeout_at(accepted.first_call_by, handshake).await else {
        outcome("timeout");
        return handshake_expired(&shared, HandshakeStage::Sasl);
    };
    match handshake {
        Handshake::Authenticated(stream, auth) => {
            outcome("ok");
            // Frames held to be unwrapped count against the global budget of held requests;
            // a frame that has started must arrive whole within the read timeout.
            let stream = Box::new(
                (*stream)
                    .with_budget(shared.held.clone())
                    .with_frame_timeout(limit),
            );
            let identity = match shared
                .settings
                .identity
                .verified(&auth.user, IdentitySource::Kerberos)
            {
                Ok(identity) => identity,
                Err(refused) => {
                    warn!(principal = %auth.principal, error = %refused, "the Kerberos principal's user is refused: each call is refused, none reaches the metastore");
                    let mut conn = Conn::new(shared, stream, Identity::anonymous(), accepted);
                    conn.refusal = Some(format!(
                        "hms-guard: the Kerberos principal's user is refused: {refused}"
                    ));
                    return conn.run().await;
                }
            };
            info!(
                principal = %auth.principal,
                user = %identity,
                qop = auth.qop.as_str(),
                handshake_ms = started.elapsed().as_millis() as u64,
                "authenticated with Kerberos"
            );
            Conn::new(shared, stream, identity, accepted).run().await
        }
        Handshake::NotSasl(stream, buffered) => {
            outcome("not_sasl");
            warn!("a client without Kerberos on the Kerberos listener: each of its calls is refused, none reaches the metastore");
            let mut conn = Conn::new(shared, stream, Identity::anonymous(), accepted);
            conn.cbuf = buffered;
            conn.refusal = Some(KERBEROS_REQUIRED.to_string());
            conn.run().await
        }
        Handshake::Refused(refusal) => {
            outcome(refusal.kind());
            warn!(
                kind = refusal.kind(),
                principal = refusal.principal().unwrap_or_default(),
                "closing connection: Kerberos authentication refused: {refusal}"
            );
        }
    }
}

struct Conn<S> {
    shared: Arc<Shared>,
    client: S,
    cbuf: BytesMut,
    upstream: Option<UpstreamConn>,
    shutdown: watch::Receiver<bool>,
    calls: u64,
    identity: Identity,
    id: u64,
    peer: SocketAddr,
    /// Bytes of the global request budget this connection holds.
    held: u64,
    /// With authorization off: the client's own last `set_ugi` call, sent again on a new
    /// upstream connection so the metastore session keeps the client's identity.
    client_ugi: Option<(Bytes, MessageHeader)>,
    /// Set: the client did not authenticate as the listener requires; each of its calls is
    /// answered with this (a `TApplicationException`), none is forwarded.
    refusal: Option<String>,
    /// Until the first call has arrived whole: when it must have (`server.handshake_timeout_ms`
    /// from the accept).
    first_call_by: Option<tokio::time::Instant>,
    /// How the metastore answered the call in flight (set by `forward`).
    answer: Option<Answer>,
    /// The call in flight's reply was withheld and the caller got the denial.
    withheld: bool,
}

impl<S> Drop for Conn<S> {
    fn drop(&mut self) {
        self.shared.held.give(std::mem::take(&mut self.held));
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    fn new(shared: Arc<Shared>, client: S, identity: Identity, accepted: Accepted) -> Self {
        Conn {
            shared,
            client,
            cbuf: BytesMut::new(),
            upstream: None,
            shutdown: accepted.shutdown,
            calls: 0,
            identity,
            id: accepted.id,
            peer: accepted.peer,
            held: 0,
            client_ugi: None,
            refusal: None,
            first_call_by: Some(accepted.first_call_by),
            answer: None,
            withheld: false,
        }
    }

    /// `deadline`, or the handshake deadline when the first call is still due and that comes
    /// first (then `true`).
    fn bounded(&self, deadline: tokio::time::Instant) -> (tokio::time::Instant, bool) {
        match self.first_call_by {
            Some(first) if first <= deadline => (first, true),
            _ => (deadline, false),
        }
    }

    fn settings(&self) -> &Settings {
        &self.shared.settings
    }

    /// Gives back this connection's share of the global request budget.
    fn release_held(&mut self) {
        self.shared.held.give(std::mem::take(&mut self.held));
    }

    async fn run(mut self) {
        self.serve_calls().await;
        debug!(calls = self.calls, "connection closed");
    }

    async fn serve_calls(&mut self) {
        let Some(transport) = self.detect().await else {
            return;
        };
        debug!(transport = transport.label(), "transport detected");
        self.shared
            .metrics
            .connections
            .get_or_create(&TransportLabels {
                transport: transport.label(),
            })
            .inc();
        let mut walker = MessageWalker::new(transport, self.settings().limits.request);
        loop {
            if self.cbuf.is_empty() && !self.wait_for_call().await {
                return;
            }
            walker.reset();
            let request = match self.read_request(&mut walker).await {
                Ok(r) => r,
                Err(err) => {
                    self.client_failed(transport, walker.header().cloned(), err)
                        .await;
                    return;
                }
            };
            self.calls += 1;
            self.first_call_by = None;
            let keep_going = self.serve_call(transport, request).await;
            self.release_held();
            if !keep_going {
                return;
            }
        }
    }

    /// Reads until the transport is known; `None` closes the connection.
    async fn detect(&mut self) -> Option<Transport> {
        let first_byte = Instant::now() + self.settings().server.idle_timeout;
        let read_timeout = self.settings().server.read_timeout;
        loop {
            match transport::detect(&self.cbuf) {
                Detect::Accept(t) => return Some(t),
                Detect::Reject(r) => {
                    warn!(
                        transport = r.label(),
                        reason = r.reason(),
                        "closing connection: transport not accepted"
                    );
                    self.shared
                        .metrics
                        .rejected_transports
                        .get_or_create(&TransportLabels {
                            transport: r.label(),
                        })
                        .inc();
                    if r == transport::Rejected::Sasl {
                        let _ = self
                            .write_client(&crate::sasl::bad(transport::SASL_REFUSAL))
                            .await;
                    }
                    return None;
                }
                Detect::NeedMore => {}
            }
            let (deadline, first_call) = self.bounded(if self.cbuf.is_empty() {
                first_byte.into()
            } else {
                tokio::time::Instant::now() + read_timeout
            });
            let mut shutdown = self.shutdown.clone();
            tokio::select! {
                r = timeout_at(deadline, self.client.read_buf(&mut self.cbuf)) => match r {
                    Err(_) if first_call => {
                        handshake_expired(&self.shared, HandshakeStage::FirstCall);
                        return None;
                    }
                    Ok(Err(e)) => {
                        read_failed(&self.shared, &e);
                        return None;
                    }
                    Ok(Ok(0)) | Err(_) => return None,
                    Ok(Ok(_)) => {}
                },
                _ = crate::until_shutdown(&mut shutdown) => return None,
            }
        }
    }

    /// Waits, idle, for the first byte of the next call. `false`: close (client gone, idle
    /// timeout, shutdown). When the metastore closes the idle upstream connection (a restart,
    /// a failover), it is let go and the next call opens a new one.
    async fn wait_for_call(&mut self) -> bool {
        if self.cbuf.capacity() > IDLE_BUFFER_KEEP {
            self.cbuf = BytesMut::new();
        }
        let idle = self.settings().server.idle_timeout;
        let (deadline, first_call) = self.bounded(tokio::time::Instant::now() + idle);
        loop {
            let mut shutdown = self.shutdown.clone();
            let Conn {
                client,
                cbuf,
                upstream,
                shared,
                ..
            } = self;
            let upstream_closed = async {
                match upstream.as_mut() {
                    Some(up) => up.closed().await,
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                r = timeout_at(deadline, client.read_buf(cbuf)) => return match r {
                    Ok(Ok(0)) => false,
                    Ok(Ok(_)) => true,
                    Ok(Err(e)) => {
                        read_failed(shared, &e);
                        false
                    }
                    Err(_) if first_call => {
                        handshake_expired(shared, HandshakeStage::FirstCall);
                        false
                    }
                    Err(_) => {
                        info!(idle_ms = idle.as_millis() as u64, "closing idle connection");
                        false
                    }
                },
                _ = crate::until_shutdown(&mut shutdown) => {
                    info!("closing idle connection: shutting down");
                    return false;
                }
                _ = upstream_closed => {}
            }
            let uri = self.upstream.take().map(|u| u.uri().to_string());
            info!(
                upstream = uri.as_deref().unwrap_or_default(),
                "the metastore closed the idle upstream connection; the next call opens a new one"
            );
            self.shared.metrics.upstream_error("closed_idle");
        }
    }

    /// Reads one complete request, bounded in size and time.
    async fn read_request(&mut self, walker: &mut MessageWalker) -> Result<Request, ClientError> {
        let read_timeout = self.settings().server.read_timeout;
        let anonymous_limit = self.settings().limits.max_anonymous_request_bytes;
        let max_request = self.settings().limits.request.max_message_bytes;
        let (deadline, first_call) = self.bounded(tokio::time::Instant::now() + read_timeout);
        let mut walked = 0usize;
        loop {
            if walked < self.cbuf.len() {
                match walker
                    .advance(&self.cbuf[walked..])
                    .map_err(ClientError::Protocol)?
                {
                    Scan::Complete(n) => {
                        let header = walker
                            .header()
                            .cloned()
                            .ok_or(ClientError::Protocol(ScanError::Truncated))?;
                        let bytes = self.cbuf.split_to(walked + n).freeze();
                        return Ok(Request { bytes, header });
                    }
                    Scan::NeedMore(n) => walked += n,
                }
            }
            // Before an identity, calls are small (`limits.max_anonymous_request_bytes`).
            if self.identity.is_anonymous()
                && self.shared.guard.mode != AuthzMode::Off
                && walked as u64 > anonymous_limit
            {
                return Err(ClientError::Protocol(ScanError::TooLarge {
                    limit: anonymous_limit,
                }));
            }
            // Every byte held counts against the global budget.
            // (Read-ahead stops at one largest call, so one such call always fits the budget.)
            let held_now = self.cbuf.len() as u64;
            let want = (held_now + READ_CHUNK as u64).min(max_request.max(held_now));
            if want > self.held {
                if !self.shared.held.try_take(want - self.held) {
                    return Err(ClientError::Busy(self.shared.held.max()));
                }
                self.held = want;
            }
            if self.cbuf.capacity() - self.cbuf.len() < READ_CHUNK / 4 {
                self.cbuf.reserve(READ_CHUNK);
            }
            match timeout_at(deadline, self.client.read_buf(&mut self.cbuf)).await {
                Ok(Ok(0)) => return Err(ClientError::ClosedMidMessage),
                Ok(Ok(_)) => {}
                // A SASL frame that did not arrive whole within the read timeout.
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::TimedOut => {
                    return Err(ClientError::Timeout(read_timeout.as_millis() as u64))
                }
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::InvalidData => {
                    return Err(ClientError::Frame(e))
                }
                Ok(Err(e)) => return Err(ClientError::Io(e)),
                Err(_) if first_call => {
                    handshake_expired(&self.shared, HandshakeStage::FirstCall);
                    let limit = self.settings().server.handshake_timeout;
                    return Err(ClientError::Timeout(limit.as_millis() as u64));
                }
                Err(_) => return Err(ClientError::Timeout(read_timeout.as_millis() as u64)),
            }
        }
    }

    /// Logs and counts a client failure, answering in the protocol when the call is known.
    async fn client_failed(
        &mut self,
        transport: Transport,
        header: Option<MessageHeader>,
        err: ClientError,
    ) {
        let metrics = self.shared.metrics.clone();
        metrics.client_error(err.kind());
        if matches!(err, ClientError::Io(_)) {
            debug!(error = %err, "client connection failed");
            return;
        }
        warn!(kind = err.kind(), error = %err, method = header.as_ref().map(|h| h.name.as_str()), "client error; closing connection");
        if let (
            Some(h),
            ClientError::Protocol(_) | ClientError::Timeout(_) | ClientError::Busy(_),
        ) = (header, &err)
        {
            let kind = if matches!(err, ClientError::Protocol(_)) {
                AppErrorKind::ProtocolError
            } else {
                AppErrorKind::Unknown
            };
            let msg = format!("hms-guard: rejected {}: {err}", h.name);
            let reply = application_exception(
                transport.protocol,
                transport.framed,
                &h.name,
                h.seqid,
                kind,
                &msg,
            );
            let entry = router::route(&h.name, self.settings().upstream.versions);
            self.count(entry, "error");
            let _ = self.write_client(&reply).await;
        }
    }

    fn count(&self, entry: Option<&'static Method>, decision: &'static str) {
        self.shared
            .metrics
            .requests
            .get_or_create(&RequestLabels {
                method: method_label(entry),
                decision,
            })
            .inc();
    }

    /// One call, from its whole request to its end. `false`: the connection must close.
    async fn serve_call(&mut self, transport: Transport, request: Request) -> bool {
        let shared = self.shared.clone();
        if let Some(message) = self.refusal.clone() {
            let h = &request.header;
            self.count(
                router::route(&h.name, shared.settings.upstream.versions),
                "deny",
            );
            let reply = application_exception(
                transport.protocol,
                transport.framed,
                &h.name,
                h.seqid,
                AppErrorKind::Unknown,
                &message,
            );
            // Every call gets the same answer (a client that ignores a failed set_ugi, as
            // Hive's does, then shows it on its next call); nothing reaches the metastore.
            return self.write_client(&reply).await.is_ok();
        }
        let entry = router::route(&request.header.name, shared.settings.upstream.versions);
        let authz_off = shared.guard.mode == AuthzMode::Off;
        // Read once, as the metastore will read it; with authorization off the proxy is a
        // pure pass-through and decides nothing.
        let args = if authz_off {
            Value::Struct(Vec::new())
        } else {
            let build = entry.is_none_or(|m| m.rule != Rule::Harmless);
            let msg = unframed(transport, &request.bytes);
            match schema::read_request(transport.protocol, msg, shared.settings.limits.read, build)
            {
                Ok(call) => call.args,
                Err(rejected) => {
                    self.refuse(transport, entry, &request.header, rejected)
                        .await;
                    return false;
                }
            }
        };
        if !authz_off && entry.is_some_and(|m| m.rule == Rule::SetUgi) {
            let answered = crate::identity::set_ugi(
                &shared.settings.identity,
                &self.identity,
                transport,
                &request.header,
                &args,
            );
            return match answered {
                Ok((identity, reply)) => {
                    self.identity = identity;
                    self.count(entry, "local");
                    self.write_client(&reply).await.is_ok()
                }
                Err(refused) => {
                    let message = format!("hms-guard: set_ugi refused: {refused}");
                    self.deny(transport, entry, &request.header, &message).await
                }
            };
        }
        // Decide.
        let header = request.header;
        let mut decided = shared
            .guard
            .begin(
                Call {
                    identity: &self.identity,
                    entry,
                    header: &header,
                    args: &args,
                    bytes: request.bytes,
                    transport,
                },
                shared.audit.failing_closed(),
            )
            .await;
        // Forward or answer.
        let (keep_going, outcome) = match &decided.action {
            Action::Deny(message) => (
                self.deny(transport, entry, &header, message).await,
                UpstreamOutcome::NotSent,
            ),
            Action::Forward { bytes, check } => {
                self.withheld = false;
                let (ok, outcome) = self.call(transport, entry, &header, bytes, check).await;
                if ok && authz_off && header.name == "set_ugi" {
                    self.client_ugi = Some((bytes.clone(), header.clone()));
                }
                (ok, outcome)
            }
        };
        if std::mem::take(&mut self.withheld) {
            decided.withheld();
        }
        // Finish.
        let caller = Caller {
            method: &header.name,
            connection_id: self.id,
            peer: self.peer,
            identity: &self.identity,
        };
        shared
            .guard
            .finish(decided, outcome, &caller, &shared.audit)
            .await;
        keep_going
    }

    /// Answers a request the schema-exact reader refused (PROTOCOL_ERROR) and counts it; the
    /// connection then closes: nothing of it is forwarded.
    async fn refuse(
        &mut self,
        transport: Transport,
        entry: Option<&'static Method>,
        header: &MessageHeader,
        rejected: Reject,
    ) {
        self.shared
            .metrics
            .rejected_requests
            .get_or_create(&KindLabels {
                kind: rejected.kind.as_str(),
            })
            .inc();
        self.count(entry, "error");
        warn!(method = %header.name, user = %self.identity.user, kind = rejected.kind.as_str(), "refused a request the metastore could read differently: {rejected}");
        let reply = application_exception(
            transport.protocol,
            transport.framed,
            &header.name,
            header.seqid,
            AppErrorKind::ProtocolError,
            &format!(
                "hms-guard: refused {}: {rejected}; the connection is closed",
                header.name
            ),
        );
        let _ = self.write_client(&reply).await;
    }

    /// Answers a denied call in the protocol: the method's declared `MetaException` at its
    /// field id, else a `TApplicationException`; a oneway call gets nothing. The connection
    /// stays usable.
    async fn deny(
        &mut self,
        transport: Transport,
        entry: Option<&'static Method>,
        header: &MessageHeader,
        message: &str,
    ) -> bool {
        self.count(entry, "deny");
        info!(method = %header.name, user = %self.identity.user, "denied: {message}");
        if header.kind == MessageType::Oneway || entry.is_some_and(|m| m.oneway) {
            return true;
        }
        let reply = denial(transport, entry, header, message);
        self.write_client(&reply).await.is_ok()
    }

    /// Forwards a call and brings its reply back, counting it; an upstream failure is
    /// answered with a `TApplicationException` when nothing of the reply reached the client
    /// yet. Returns whether the connection stays open (`false`: it must close), and how the
    /// metastore answered.
    async fn call(
        &mut self,
        transport: Transport,
        entry: Option<&'static Method>,
        header: &MessageHeader,
        bytes: &Bytes,
        check: &ReplyCheck,
    ) -> (bool, UpstreamOutcome) {
        let started = Instant::now();
        let label = method_label(entry);
        let oneway = header.kind == MessageType::Oneway || entry.is_some_and(|m| m.oneway);
        let span = info_span!("call", method = %header.name, seqid = header.seqid);
        self.answer = None;
        let result = self
            .forward(transport, entry, header, bytes, oneway, check)
            .instrument(span.clone())
            .await;
        // The metastore's own answer, read off the reply's first bytes as they passed.
        let versions = self.settings().upstream.versions;
        let answered = self
            .answer
            .take()
            .map(|a| UpstreamOutcome::of_answer(a, &header.name, versions));
        let metrics = self.shared.metrics.clone();
        let _enter = span.enter();
        match result {
            Ok(upstream_time) => {
                self.count(entry, "pass");
                let mlabel = MethodLabels { method: label };
                metrics
                    .request_duration
                    .get_or_create(&mlabel)
                    .observe(started.elapsed().as_secs_f64());
                if let Some(t) = upstream_time {
                    metrics
                        .upstream_duration
                        .get_or_create(&mlabel)
                        .observe(t.as_secs_f64());
                }
                debug!(oneway, "call forwarded");
                let outcome = match answered {
                    Some(o) => o,
                    None if oneway => UpstreamOutcome::NoReply,
                    None => UpstreamOutcome::TransportError,
                };
                (true, outcome)
            }
            Err(CallError::ClientGone) => {
                debug!("client went away during the call");
                (false, answered.unwrap_or(UpstreamOutcome::TransportError))
            }
            Err(CallError::Upstream { err, flushed }) => {
                if matches!(err, UpstreamError::Mismatch { .. }) {
                    metrics.mismatched_replies.inc();
                }
                metrics.upstream_error(if flushed { "mid_reply" } else { err.kind() });
                self.count(entry, "error");
                self.upstream = None;
                if flushed {
                    warn!(error = %err, "upstream failed after part of the reply was sent; closing the connection");
                } else if oneway {
                    warn!(error = %err, "upstream failed on a oneway call; closing the connection");
                } else {
                    warn!(error = %err, "upstream failed; answering the client with an exception");
                    let reply = application_exception(
                        transport.protocol,
                        transport.framed,
                        &header.name,
                        header.seqid,
                        AppErrorKind::InternalError,
                        &format!("hms-guard: {err}"),
                    );
                    drop(_enter);
                    let _ = self.write_client(&reply).await;
                }
                (false, UpstreamOutcome::TransportError)
            }
        }
    }

    async fn write_client(&mut self, bytes: &[u8]) -> Result<(), CallError> {
        let t = self.settings().server.write_timeout;
        let client = &mut self.client;
        let write = async {
            client.write_all(bytes).await?;
            client.flush().await
        };
        match timeout(t, write).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(CallError::ClientGone),
        }
    }

    /// The upstream connection for the caller's identity, taken out of the connection for the
    /// call (put back when the call succeeds): the open one, or a new one (in failover order)
    /// when there is none or it carries another identity — the metastore refuses a second
    /// `set_ugi` on a connection (Hive 2.3 closes it).
    async fn take_upstream(&mut self, transport: Transport) -> Result<UpstreamConn, CallError> {
        let authz_on = self.shared.guard.mode != AuthzMode::Off;
        if let Some(up) = self.upstream.take() {
            // With authorization off the client's own set_ugi keeps a plain session in step.
            let kerberized = self.shared.upstreams.kerberos().is_some();
            if up.serves(&self.identity) || !(authz_on || kerberized) {
                return Ok(up);
            }
            debug!(user = %self.identity.user, "identity changed: a new upstream connection");
        }
        let mut up = UpstreamConn::open_as(
            &self.shared.upstreams,
            transport,
            self.shared.settings.limits.reply,
            Some(&self.identity),
        )
        .await
        .map_err(UpstreamError::Connect)?;
        self.shared.metrics.upstream_connects.inc();
        debug!(upstream = %up.uri(), "upstream connected");
        if let (false, Some((call, header))) = (authz_on, &self.client_ugi) {
            // Pass-through: the client named itself on the connection that is gone.
            up.replay(call, header).await?;
        }
        Ok(up)
    }

    /// Sends the call upstream and brings the reply to the client: streamed, or read whole and
    /// checked by the policy stage. Returns the upstream time (none for a oneway call).
    async fn forward(
        &mut self,
        transport: Transport,
        entry: Option<&'static Method>,
        header: &MessageHeader,
        bytes: &Bytes,
        oneway: bool,
        check: &ReplyCheck,
    ) -> Result<Option<Duration>, CallError> {
        let shared = self.shared.clone();
        let method = header.name.as_str();
        let mut up = self.take_upstream(transport).await?;
        if shared.guard.mode != AuthzMode::Off {
            // With authorization off the client's own set_ugi passes through untouched.
            up.ensure_identity(&self.identity, method).await?;
        }
        let sent = Instant::now();
        up.send(bytes, method).await?;
        shared
            .metrics
            .bytes
            .get_or_create(&DirectionLabels {
                direction: "client_to_upstream",
            })
            .inc_by(bytes.len() as u64);
        if oneway {
            self.upstream = Some(up);
            return Ok(None);
        }
        let limits = &shared.settings.limits;
        let (upstream_time, out_bytes) = match check {
            ReplyCheck::None => {
                let streamed = up
                    .stream_reply(
                        &mut self.client,
                        shared.settings.server.write_timeout,
                        method,
                        header.seqid,
                        limits.reply_buffer_bytes,
                        sent,
                    )
                    .await;
                // Known once the reply was checked to answer this call: kept even when the
                // client went away afterwards.
                if !matches!(streamed, Err(StreamError::Upstream { .. })) {
                    self.answer = up.answer();
                }
                let s = streamed?;
                (s.upstream_time, s.bytes)
            }
            check => {
                let (reply, _) = up
                    .read_reply(method, header.seqid, limits.max_checked_reply_bytes)
                    .await?;
                self.answer = up.answer();
                let upstream_time = sent.elapsed();
                let out = shared
                    .guard
                    .reply(check, transport, entry, header, reply)
                    .await
                    .map_err(|err| UpstreamError::Protocol {
                        uri: up.uri().to_string(),
                        method: method.to_string(),
                        err,
                    })?;
                self.withheld = out.withheld;
                self.write_client(&out.bytes).await?;
                (upstream_time, out.bytes.len() as u64)
            }
        };
        self.upstream = Some(up);
        shared
            .metrics
            .bytes
            .get_or_create(&DirectionLabels {
                direction: "upstream_to_client",
            })
            .inc_by(out_bytes);
        Ok(Some(upstream_time))
    }
}
