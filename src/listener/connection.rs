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

use crate::auth::tls::{CertUser, Tls};
use crate::config::IdentityMode;
use crate::decision::facts::FactsSource;
use crate::decision::{
    self, Action, CallEnd, Caller, Decision, Exit, Forward, Guard, Invalidation, Record,
    ReplyCheck, Session, UpstreamOutcome,
};
use crate::error::{ClientError, UpstreamError};
use crate::listener::budget::HeldBytes;
use crate::listener::identity::{Identity, IdentitySource};
use crate::ops::audit::{Audit, AuditError};
use crate::ops::metrics::{HandshakeStage, Metrics, TransportLabels};
use crate::settings::Settings;
use crate::upstream::cache::{CacheUse, ReplyCache};
use crate::upstream::Tap;
use crate::upstream::{Answer, StreamError, UpstreamConn, Upstreams};
use crate::wire::answer;
use crate::wire::codec::reply::AppErrorKind;
use crate::wire::codec::{MessageHeader, MessageType, Scan, ScanError};
use crate::wire::framing::MessageWalker;
use crate::wire::router::{self, Method};
use crate::wire::transport::{self, Detect, Transport};

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
    /// The shared metadata cache (`[cache]`), when enabled.
    pub replies: Option<Arc<ReplyCache>>,
    /// Request bytes held over all connections.
    held: Arc<HeldBytes>,
    /// Users' groups (`[identity.groups]`), cached.
    pub groups: Arc<crate::auth::groups::GroupResolver>,
}

impl Shared {
    /// Builds the shared state; starts the audit writer (needs a Tokio runtime).
    /// `facts`: where authorization's facts come from (default: the metastore itself).
    pub fn new(
        settings: Settings,
        metrics: Arc<Metrics>,
        storage: crate::decision::storage::StorageGuard,
        facts: Option<Box<dyn FactsSource>>,
        tls: Option<Arc<Tls>>,
        upstream_tls: Option<Arc<crate::auth::tls::UpstreamTls>>,
        groups: Arc<crate::auth::groups::GroupResolver>,
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
            Some(f) => Guard::with_source(
                a,
                depth,
                read_only_external,
                f,
                metrics.clone(),
                storage,
                None,
            ),
        };
        let audit = Audit::start(&settings.audit, metrics.clone())?;
        let max = settings.limits.max_held_request_bytes;
        // With authorization off the proxy is a pure pass-through: nothing is cached.
        let replies = settings
            .cache
            .clone()
            .filter(|_| settings.authz.mode != crate::config::AuthzMode::Off)
            .map(|c| Arc::new(ReplyCache::new(c, metrics.clone())));
        Ok(Shared {
            settings,
            tls,
            metrics,
            upstreams,
            guard,
            audit,
            replies,
            held: Arc::new(HeldBytes::new(max)),
            groups,
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
    kerberos: Arc<crate::auth::kerberos::KerberosSettings>,
    shared: Arc<Shared>,
    stream: S,
    accepted: Accepted,
) {
    use crate::auth::sasl::Handshake;
    use crate::ops::metrics::OutcomeLabels;
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
    let handshake = crate::auth::sasl::accept(stream, &kerberos, limit, max_frame);
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
                            .write_client(&crate::auth::sasl::bad(transport::SASL_REFUSAL))
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
        // Before an identity, calls are small (`limits.max_anonymous_request_bytes`) while the
        // policy decides on identities.
        let anonymous_limit = self
            .shared
            .guard
            .anonymous_request_limit(self.settings().limits.max_anonymous_request_bytes);
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
            if let Some(limit) = anonymous_limit.filter(|_| self.identity.is_anonymous()) {
                if walked as u64 > limit {
                    return Err(ClientError::Protocol(ScanError::TooLarge { limit }));
                }
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

    /// Logs and counts a client failure; when the call is known (its header was read), answers
    /// it in the protocol where the client can take a message, and ends it with the finish.
    async fn client_failed(
        &mut self,
        transport: Transport,
        header: Option<MessageHeader>,
        err: ClientError,
    ) {
        self.shared.metrics.client_error(err.kind());
        if matches!(err, ClientError::Io(_)) {
            debug!(error = %err, "client connection failed");
        } else {
            warn!(kind = err.kind(), error = %err, method = header.as_ref().map(|h| h.name.as_str()), "client error; closing connection");
        }
        let Some(header) = header else {
            return;
        };
        let started = Instant::now();
        let answer = match &err {
            ClientError::Protocol(_) => Some(AppErrorKind::ProtocolError),
            ClientError::Timeout(_) | ClientError::Busy(_) => Some(AppErrorKind::Unknown),
            _ => None,
        };
        if let Some(kind) = answer {
            let msg = format!("hms-guard: rejected {}: {err}", header.name);
            let _ = self
                .write_client(&answer::failure(transport, &header, kind, &msg))
                .await;
        }
        let record = Record::Unread { kind: err.kind() };
        let done = Done::ended(Exit::ClientFailed);
        let shared = self.shared.clone();
        let entry = router::route(&header.name, self.settings().upstream.versions);
        let end = self.ended(
            &header,
            entry,
            record,
            Invalidation::default(),
            started,
            done,
        );
        shared.guard.finish(&shared.audit, end).await;
    }

    /// One call, from its whole request to its end: decide, then forward or answer, then
    /// finish. `false`: the connection must close.
    async fn serve_call(&mut self, transport: Transport, request: Request) -> bool {
        let shared = self.shared.clone();
        let started = Instant::now();
        let header = request.header;
        let entry = router::route(&header.name, shared.settings.upstream.versions);
        // set_ugi is answered whatever the current identity's groups (it may change them).
        let groups_refusal = if entry.is_some_and(|m| m.rule == router::Rule::SetUgi) {
            None
        } else {
            self.refresh_groups().await
        };
        let Decision {
            action,
            record,
            invalidate,
        } = shared
            .guard
            .begin(
                decision::Request {
                    identity: &self.identity,
                    refusal: self.refusal.as_deref(),
                    groups_refusal: groups_refusal.as_deref(),
                    entry,
                    header: &header,
                    bytes: request.bytes,
                    transport,
                },
                &shared.settings,
                shared.audit.failing_closed(),
            )
            .await;
        // A table DDL: other calls' location lookups wait until the index has it.
        let changing = if invalidate.index.is_empty() {
            None
        } else {
            Some(shared.guard.index.changing().await)
        };
        let done = self.carry_out(transport, entry, &header, action).await;
        let keep_open = done.keep_open;
        let end = self.ended(&header, entry, record, invalidate, started, done);
        shared.guard.finish(&shared.audit, end).await;
        drop(changing);
        keep_open
    }

    /// Brings the identity's groups up to date before a call is decided (a cache hit is a
    /// memory lookup; an expired answer is read again, so a change in the sources reaches
    /// long connections within the TTL). `Some`: the groups could not be read and must not be
    /// guessed — the message the call is refused with.
    async fn refresh_groups(&mut self) -> Option<String> {
        let shared = self.shared.clone();
        let s = &shared.settings;
        if s.authz.mode == crate::config::AuthzMode::Off
            || !s.identity.resolves_groups(&self.identity)
        {
            return None;
        }
        match shared.groups.groups(&self.identity.user).await {
            Ok(groups) => {
                if *groups != self.identity.groups {
                    debug!(user = %self.identity.user, groups = ?groups, "groups read");
                    self.identity.groups = groups.to_vec();
                }
                None
            }
            // Shadow mode forwards what it would deny: it forwards this too (logged above).
            Err(_) if s.authz.mode == crate::config::AuthzMode::Shadow => None,
            Err(e) => Some(format!("hms-guard: refused: {e}")),
        }
    }

    /// Does what the decision says: forward, deny, answer, or refuse.
    async fn carry_out(
        &mut self,
        transport: Transport,
        entry: Option<&'static Method>,
        header: &MessageHeader,
        action: Action,
    ) -> Done {
        let answered = |exit, ok: Result<(), CallError>| Done {
            exit,
            keep_open: ok.is_ok(),
            upstream_time: None,
        };
        match action {
            Action::Forward(forward) => self.call(transport, entry, header, forward).await,
            Action::Deny(message) => {
                info!(method = %header.name, user = %self.identity.user, "denied: {message}");
                if header.kind == MessageType::Oneway || entry.is_some_and(|m| m.oneway) {
                    return answered(Exit::Denied, Ok(()));
                }
                let reply = answer::denial(transport, entry, header, &message);
                answered(Exit::Denied, self.write_client(&reply).await)
            }
            Action::Answer { reply, identity } => {
                self.identity = identity;
                answered(Exit::Answered, self.write_client(&reply).await)
            }
            Action::Reply(reply) => answered(Exit::Answered, self.write_client(&reply).await),
            Action::Refuse {
                kind,
                message,
                close,
            } => {
                let reply = answer::failure(transport, header, kind, &message);
                let written = self.write_client(&reply).await;
                let mut done = answered(Exit::Denied, written);
                done.keep_open &= !close;
                done
            }
        }
    }

    /// Forwards a call and brings its reply back; an upstream failure is answered with a
    /// `TApplicationException` when nothing of the reply reached the client yet (the
    /// connection then closes).
    async fn call(
        &mut self,
        transport: Transport,
        entry: Option<&'static Method>,
        header: &MessageHeader,
        forward: Forward,
    ) -> Done {
        let oneway = header.kind == MessageType::Oneway || entry.is_some_and(|m| m.oneway);
        let span = info_span!("call", method = %header.name, seqid = header.seqid);
        self.answer = None;
        let result = self
            .forward(transport, entry, header, &forward, oneway)
            .instrument(span.clone())
            .await;
        // The metastore's own answer, read off the reply's first bytes as they passed.
        let versions = self.settings().upstream.versions;
        let outcome =
            UpstreamOutcome::of_answer(self.answer.take(), &header.name, versions, oneway);
        let _enter = span.enter();
        match result {
            Ok(forwarded) => {
                debug!(oneway, "call forwarded");
                if forward.session == Session::ClientNamesItself {
                    self.client_ugi = Some((forward.bytes, header.clone()));
                }
                Done {
                    exit: Exit::Forwarded {
                        outcome,
                        withheld: forwarded.withheld,
                    },
                    keep_open: true,
                    upstream_time: forwarded.upstream_time,
                }
            }
            Err(CallError::ClientGone) => {
                debug!("client went away during the call");
                Done::ended(Exit::ClientGone { outcome })
            }
            Err(CallError::Upstream { err, flushed }) => {
                drop(_enter);
                self.upstream_failed(transport, header, err, flushed, oneway)
                    .instrument(span)
                    .await;
                Done::ended(Exit::UpstreamFailed)
            }
        }
    }

    /// Counts and logs an upstream failure; answers the client with a `TApplicationException`
    /// when it can still take a message.
    async fn upstream_failed(
        &mut self,
        transport: Transport,
        header: &MessageHeader,
        err: UpstreamError,
        flushed: bool,
        oneway: bool,
    ) {
        let metrics = &self.shared.metrics;
        if matches!(err, UpstreamError::Mismatch { .. }) {
            metrics.mismatched_replies.inc();
        }
        metrics.upstream_error(if flushed { "mid_reply" } else { err.kind() });
        self.upstream = None;
        if flushed {
            warn!(error = %err, "upstream failed after part of the reply was sent; closing the connection");
        } else if oneway {
            warn!(error = %err, "upstream failed on a oneway call; closing the connection");
        } else {
            warn!(error = %err, "upstream failed; answering the client with an exception");
            let message = format!("hms-guard: {err}");
            let reply = answer::failure(transport, header, AppErrorKind::InternalError, &message);
            let _ = self.write_client(&reply).await;
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

    /// The upstream connection for the call's session, taken out of the connection for the
    /// call (put back when the call succeeds): the open one, or a new one (in failover order)
    /// when there is none or it carries another identity — the metastore refuses a second
    /// `set_ugi` on a connection (Hive 2.3 closes it).
    async fn take_upstream(
        &mut self,
        transport: Transport,
        session: Session,
    ) -> Result<UpstreamConn, CallError> {
        let as_caller = session == Session::Caller;
        if let Some(up) = self.upstream.take() {
            // The client's own session (its set_ugi kept in step) serves any call, unless a
            // delegation token names the caller.
            let kerberized = self.shared.upstreams.kerberos().is_some();
            if up.serves(&self.identity) || !(as_caller || kerberized) {
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
        if let (false, Some((call, header))) = (as_caller, &self.client_ugi) {
            // The client named itself on the connection that is gone.
            up.replay(call, header).await?;
        }
        Ok(up)
    }

    /// Sends the call upstream and brings the reply to the client: streamed, or read whole and
    /// checked by the policy stage.
    async fn forward(
        &mut self,
        transport: Transport,
        entry: Option<&'static Method>,
        header: &MessageHeader,
        forward: &Forward,
        oneway: bool,
    ) -> Result<Forwarded, CallError> {
        let shared = self.shared.clone();
        let method = header.name.as_str();
        let cache = shared.replies.as_deref();
        if let (Some(c), CacheUse::Read { key, .. }) = (cache, &forward.cache) {
            if let Some(reply) = c.get(key, transport, header) {
                return self
                    .cached(transport, entry, header, &forward.reply, reply)
                    .await;
            }
        }
        // A miss keeps its reply only if no write went on meanwhile; a write drops what it
        // touches now, and again once the metastore answered (before the writer hears).
        let ticket = cache.map(|c| c.ticket());
        if let Some(c) = cache {
            c.apply_write(&forward.cache);
        }
        let mut up = self.take_upstream(transport, forward.session).await?;
        if forward.session == Session::Caller {
            up.ensure_identity(&self.identity, method).await?;
        }
        let sent = Instant::now();
        up.send(&forward.bytes, method).await?;
        shared
            .metrics
            .count_bytes("client_to_upstream", forward.bytes.len());
        if oneway {
            self.upstream = Some(up);
            return Ok(Forwarded::default());
        }
        let (replied, out_bytes) = match &forward.reply {
            ReplyCheck::Stream => {
                let limits = &shared.settings.limits;
                let mut tap = Tap::default();
                if let Some(c) = cache {
                    match &forward.cache {
                        CacheUse::Read { .. } => {
                            tap.capture = Some(Default::default());
                            tap.limit = c.settings().max_entry_bytes;
                        }
                        CacheUse::Write(_) | CacheUse::WriteAll => {
                            let what = forward.cache.clone();
                            tap.before_client = Some(Box::new(move || c.apply_write(&what)));
                        }
                        CacheUse::None => {}
                    }
                }
                let streamed = up
                    .stream_reply(
                        &mut self.client,
                        shared.settings.server.write_timeout,
                        method,
                        header.seqid,
                        limits.reply_buffer_bytes,
                        sent,
                        &mut tap,
                    )
                    .await;
                if let (Some(c), Some(reply), CacheUse::Read { key, tags }, Some(t), Ok(_)) =
                    (cache, tap.capture.take(), &forward.cache, ticket, &streamed)
                {
                    c.put(key.clone(), tags.clone(), transport, &reply, t);
                }
                // Known once the reply was checked to answer this call: kept even when the
                // client went away afterwards.
                if !matches!(streamed, Err(StreamError::Upstream { .. })) {
                    self.answer = up.answer();
                }
                let s = streamed?;
                let replied = Forwarded {
                    upstream_time: Some(s.upstream_time),
                    withheld: false,
                };
                (replied, s.bytes)
            }
            check => {
                let keep = cache.zip(ticket).map(|(c, t)| (c, &forward.cache, t));
                self.checked_reply(&mut up, transport, entry, header, check, sent, keep)
                    .await?
            }
        };
        self.upstream = Some(up);
        shared
            .metrics
            .count_bytes("upstream_to_client", out_bytes as usize);
        Ok(replied)
    }

    /// A reply read whole, turned by the policy stage into what the client gets (a listing
    /// filtered, a reply withheld), and written.
    #[allow(clippy::too_many_arguments)] // one call's whole context, passed once
    async fn checked_reply(
        &mut self,
        up: &mut UpstreamConn,
        transport: Transport,
        entry: Option<&'static Method>,
        header: &MessageHeader,
        check: &ReplyCheck,
        sent: Instant,
        keep: Option<(&ReplyCache, &CacheUse, crate::upstream::cache::Ticket)>,
    ) -> Result<(Forwarded, u64), CallError> {
        let shared = self.shared.clone();
        let method = header.name.as_str();
        let max = shared.settings.limits.max_checked_reply_bytes;
        let (reply, _) = up.read_reply(method, header.seqid, max).await?;
        self.answer = up.answer();
        let upstream_time = sent.elapsed();
        // The metastore's reply as it came, before the policy turns it into the client's.
        match keep {
            Some((c, CacheUse::Read { key, tags }, t)) => {
                c.put(key.clone(), tags.clone(), transport, &reply, t);
            }
            Some((c, w, _)) => c.apply_write(w),
            None => {}
        }
        let out = shared
            .guard
            .reply(check, transport, entry, header, reply)
            .await
            .map_err(|err| UpstreamError::Protocol {
                uri: up.uri().to_string(),
                method: method.to_string(),
                err,
            })?;
        self.write_client(&out.bytes).await?;
        let forwarded = Forwarded {
            upstream_time: Some(upstream_time),
            withheld: out.withheld,
        };
        Ok((forwarded, out.bytes.len() as u64))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    /// A read answered from the shared metadata cache: the same reply check as a fresh reply
    /// (filters, narrowing), no metastore call.
    async fn cached(
        &mut self,
        transport: Transport,
        entry: Option<&'static Method>,
        header: &MessageHeader,
        check: &ReplyCheck,
        reply: Bytes,
    ) -> Result<Forwarded, CallError> {
        let shared = self.shared.clone();
        // Only successful replies are kept.
        self.answer = Some(crate::upstream::Answer {
            kind: MessageType::Reply,
            first: Some(crate::wire::codec::TopField::Id(0)),
        });
        let out = match check {
            ReplyCheck::Stream => reply,
            check => {
                let checked = shared
                    .guard
                    .reply(check, transport, entry, header, BytesMut::from(&reply[..]))
                    .await
                    .map_err(|err| CallError::Upstream {
                        err: UpstreamError::Protocol {
                            uri: "(cache)".into(),
                            method: header.name.clone(),
                            err,
                        },
                        flushed: false,
                    })?;
                if checked.withheld {
                    self.write_client(&checked.bytes).await?;
                    return Ok(Forwarded {
                        upstream_time: None,
                        withheld: true,
                    });
                }
                Bytes::from(checked.bytes.to_vec())
            }
        };
        self.write_client(&out).await?;
        shared.metrics.count_bytes("upstream_to_client", out.len());
        Ok(Forwarded::default())
    }
}

impl<S> Conn<S> {
    /// A call at its end, for the policy stage's finish (metrics, audit line, invalidation).
    /// Borrows only the identity, so that the finish may await without holding the stream.
    fn ended<'a>(
        &'a self,
        header: &'a MessageHeader,
        entry: Option<&'static Method>,
        record: Record,
        invalidate: Invalidation,
        started: Instant,
        done: Done,
    ) -> CallEnd<'a> {
        CallEnd {
            caller: Caller {
                method: &header.name,
                connection_id: self.id,
                peer: self.peer,
                identity: &self.identity,
            },
            entry,
            record,
            invalidate,
            exit: done.exit,
            started,
            upstream_time: done.upstream_time,
        }
    }
}

/// How a forwarded call went, for its finish.
#[derive(Default)]
struct Forwarded {
    /// The metastore's time (none for a oneway call).
    upstream_time: Option<Duration>,
    /// The reply was replaced by the denial.
    withheld: bool,
}

/// How the connection carried out a decision.
struct Done {
    exit: Exit,
    /// `false`: the connection must close.
    keep_open: bool,
    upstream_time: Option<Duration>,
}

impl Done {
    /// A call after which the connection closes.
    fn ended(exit: Exit) -> Done {
        Done {
            exit,
            keep_open: false,
            upstream_time: None,
        }
    }
}
