//! One client connection: detect its transport, then for each call read the whole request
//! (bounded), route it, forward the original bytes upstream and stream the reply back.
//!
//! One upstream connection per client connection (HMS sessions are stateful), opened lazily at
//! the first call. A failure is answered in the protocol when the client can still take a
//! message (an EXCEPTION reply with the call's sequence id); then the pair is closed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{timeout, timeout_at};
use tracing::{debug, info, info_span, warn, Instrument};

use crate::audit::{Audit, AuditError, AuditEvent};
use crate::codec::reader::Ty;
use crate::codec::reply::{application_exception, declared_exception, AppErrorKind};
use crate::codec::value::Value;
use crate::codec::writer::Writer;
use crate::codec::{Limits, MessageHeader, MessageType, Scan, ScanError};
use crate::config::{ms, Config, IdentityMode, ThriftUri};
use crate::error::{ClientError, UpstreamError};
use crate::framing::MessageWalker;
use crate::identity::{Identity, IdentitySource};
use crate::metrics::{
    DirectionLabels, KindLabels, MethodLabels, Metrics, RequestLabels, TransportLabels,
};
use crate::policy::args::strings_at;
use crate::policy::filter::parse_list_reply;
use crate::policy::{
    keep_listed, listed_object, visible_by_grants, Checked, Guard, ListFilter, ReplyCheck, Verdict,
    MAX_LISTING_OWNER_LOOKUPS,
};
use crate::router::{self, method_label};
use crate::router::{ListShape, Method};
use crate::schema::{self, ReadLimits, Reject};
use crate::transport::{self, Detect, Transport};
use crate::upstream::Upstreams;

const READ_CHUNK: usize = 16 * 1024;
/// Buffers above this capacity are released when a connection goes idle.
const IDLE_BUFFER_KEEP: usize = 64 * 1024;

/// State shared by every connection.
pub struct Shared {
    pub config: Config,
    pub metrics: Arc<Metrics>,
    pub upstreams: Upstreams,
    pub guard: Guard,
    pub audit: Audit,
    request_limits: Limits,
    reply_limits: Limits,
    /// Request bytes held over all connections.
    held: HeldBytes,
}

/// The global budget of request bytes held while calls are read and checked
/// (`limits.max_held_request_bytes`).
struct HeldBytes {
    used: std::sync::atomic::AtomicU64,
    max: u64,
}

impl HeldBytes {
    /// Takes `n` bytes of the budget; `false` (nothing taken) if that would exceed it.
    fn try_take(&self, n: u64) -> bool {
        use std::sync::atomic::Ordering::{AcqRel, Acquire};
        self.used
            .fetch_update(AcqRel, Acquire, |u| {
                u.checked_add(n).filter(|&t| t <= self.max)
            })
            .is_ok()
    }

    fn give(&self, n: u64) {
        self.used.fetch_sub(n, std::sync::atomic::Ordering::AcqRel);
    }
}

impl Shared {
    /// Builds the shared state; starts the audit writer (needs a Tokio runtime).
    pub fn new(
        config: Config,
        metrics: Arc<Metrics>,
        storage: crate::storage::StorageGuard,
    ) -> Result<Self, AuditError> {
        let upstreams = Upstreams::new(
            config.upstream_uris(),
            ms(config.upstream.connect_timeout_ms),
        );
        let l = &config.limits;
        let request_limits = Limits {
            max_message_bytes: l.max_request_bytes,
            max_depth: l.max_depth,
            max_name_bytes: l.max_method_name_bytes,
        };
        let reply_limits = Limits {
            max_message_bytes: l.max_reply_bytes,
            ..request_limits
        };
        let max_held = l.max_held_request_bytes;
        let guard = Guard::new(&config, upstreams.clone(), metrics.clone(), storage);
        let audit = Audit::start(&config.audit, metrics.clone())?;
        Ok(Shared {
            config,
            metrics,
            upstreams,
            guard,
            audit,
            request_limits,
            reply_limits,
            held: HeldBytes {
                used: 0.into(),
                max: max_held,
            },
        })
    }
}

/// A complete client call: its original bytes and its header.
struct Request {
    bytes: Bytes,
    header: MessageHeader,
}

/// The live upstream half of a connection pair.
struct Upstream {
    stream: TcpStream,
    uri: ThriftUri,
    buf: BytesMut,
    walker: MessageWalker,
    /// The identity last sent with `set_ugi` on this connection.
    ugi: Option<Identity>,
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

/// Serves one accepted client connection to its end.
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
        let identity = initial_identity(&shared.config);
        let mut conn = Conn {
            shared,
            client,
            cbuf: BytesMut::new(),
            upstream: None,
            shutdown,
            calls: 0,
            identity,
            id,
            peer,
            held: 0,
        };
        conn.run().await;
        debug!(calls = conn.calls, "connection closed");
    }
    .instrument(span)
    .await
}

struct Conn {
    shared: Arc<Shared>,
    client: TcpStream,
    cbuf: BytesMut,
    upstream: Option<Upstream>,
    shutdown: watch::Receiver<bool>,
    calls: u64,
    identity: Identity,
    id: u64,
    peer: SocketAddr,
    /// Bytes of the global request budget this connection holds.
    held: u64,
}

impl Conn {
    /// Gives back this connection's share of the global request budget.
    fn release_held(&mut self) {
        self.shared.held.give(std::mem::take(&mut self.held));
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.release_held();
    }
}

/// The identity a new connection starts with: the pinned one, or anonymous until `set_ugi`.
fn initial_identity(config: &Config) -> Identity {
    match config.identity.mode {
        IdentityMode::Pinned => {
            let (user, groups) = config.pinned_identity();
            Identity::new(&user, &groups, IdentitySource::Pinned)
        }
        IdentityMode::SetUgi => Identity::anonymous(),
    }
}

/// A reply header that does not answer the call in flight (method name, sequence id, a REPLY
/// or EXCEPTION), as an error; the connection pair is then closed and nothing reaches the
/// client.
fn mismatch(uri: &ThriftUri, method: &str, seqid: i32, h: &MessageHeader) -> Option<UpstreamError> {
    let answers = h.name == method
        && h.seqid == seqid
        && matches!(h.kind, MessageType::Reply | MessageType::Exception);
    (!answers).then(|| UpstreamError::Mismatch {
        uri: uri.to_string(),
        method: method.to_string(),
        seqid,
        got_method: h.name.clone(),
        got_seqid: h.seqid,
        got_kind: format!("{:?}", h.kind),
    })
}

/// The message without its frame prefix.
/// A denial in the protocol: the method's declared `MetaException` at its field id, else a
/// `TApplicationException`.
fn denial(
    transport: Transport,
    entry: Option<&'static Method>,
    method: &str,
    seqid: i32,
    message: &str,
) -> BytesMut {
    match entry.and_then(|m| m.meta_exception) {
        Some(field) => declared_exception(
            transport.protocol,
            transport.framed,
            method,
            seqid,
            field,
            message,
        ),
        None => application_exception(
            transport.protocol,
            transport.framed,
            method,
            seqid,
            AppErrorKind::Unknown,
            message,
        ),
    }
}

/// A whole message, with the 4-byte length prefix when the transport is framed.
fn frame(transport: Transport, message: BytesMut) -> BytesMut {
    if !transport.framed {
        return message;
    }
    let mut framed = BytesMut::with_capacity(message.len() + 4);
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(&message);
    framed
}

fn unframed(transport: Transport, bytes: &[u8]) -> &[u8] {
    if transport.framed {
        &bytes[4..]
    } else {
        bytes
    }
}

impl Conn {
    async fn run(&mut self) {
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
        let mut walker = MessageWalker::new(transport, self.shared.request_limits);
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
            let keep_going = self.dispatch(transport, request).await;
            self.release_held();
            if !keep_going {
                return;
            }
        }
    }

    fn config(&self) -> &Config {
        &self.shared.config
    }

    /// Reads until the transport is known; `None` closes the connection.
    async fn detect(&mut self) -> Option<Transport> {
        let first_byte = Instant::now() + ms(self.config().server.idle_timeout_ms);
        let read_timeout = ms(self.config().server.read_timeout_ms);
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
                    return None;
                }
                Detect::NeedMore => {}
            }
            let deadline = if self.cbuf.is_empty() {
                first_byte.into()
            } else {
                tokio::time::Instant::now() + read_timeout
            };
            let mut shutdown = self.shutdown.clone();
            tokio::select! {
                r = timeout_at(deadline, self.client.read_buf(&mut self.cbuf)) => match r {
                    Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return None,
                    Ok(Ok(_)) => {}
                },
                _ = crate::until_shutdown(&mut shutdown) => return None,
            }
        }
    }

    /// Waits, idle, for the first byte of the next call. `false`: close (client gone, idle
    /// timeout, shutdown, or the metastore closed our upstream connection).
    async fn wait_for_call(&mut self) -> bool {
        if self.cbuf.capacity() > IDLE_BUFFER_KEEP {
            self.cbuf = BytesMut::new();
        }
        let idle = ms(self.config().server.idle_timeout_ms);
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
                Some(up) => {
                    if up.buf.is_empty() && up.buf.capacity() > IDLE_BUFFER_KEEP {
                        up.buf = BytesMut::new();
                    }
                    let mut probe = [0u8; 1];
                    // A metastore sends nothing between calls: readable means closed or broken.
                    let _ = up.stream.peek(&mut probe).await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            r = timeout(idle, client.read_buf(cbuf)) => match r {
                Ok(Ok(0)) => false,
                Ok(Ok(_)) => true,
                Ok(Err(e)) => {
                    debug!(error = %e, "client read failed");
                    false
                }
                Err(_) => {
                    info!(idle_ms = idle.as_millis() as u64, "closing idle connection");
                    false
                }
            },
            _ = crate::until_shutdown(&mut shutdown) => {
                info!("closing idle connection: shutting down");
                false
            }
            _ = upstream_closed => {
                info!("metastore closed the idle upstream connection; closing the client connection");
                shared.metrics.upstream_error("closed_idle");
                false
            }
        }
    }

    /// Reads one complete request, bounded in size and time.
    async fn read_request(&mut self, walker: &mut MessageWalker) -> Result<Request, ClientError> {
        let read_timeout_ms = self.config().server.read_timeout_ms;
        let anonymous_limit = self.config().limits.max_anonymous_request_bytes;
        let deadline = tokio::time::Instant::now() + ms(read_timeout_ms);
        let mut walked = 0usize;
        loop {
            if walked < self.cbuf.len() {
                match walker
                    .advance(&self.cbuf[walked..])
                    .map_err(ClientError::Protocol)?
                {
                    Scan::Complete(n) => {
                        let bytes = self.cbuf.split_to(walked + n).freeze();
                        let header = walker
                            .header()
                            .cloned()
                            .expect("complete message has a header");
                        return Ok(Request { bytes, header });
                    }
                    Scan::NeedMore(n) => walked += n,
                }
            }
            // Before an identity, calls are small (`limits.max_anonymous_request_bytes`).
            if self.identity.is_anonymous()
                && self.shared.guard.mode != crate::config::AuthzMode::Off
                && walked as u64 > anonymous_limit
            {
                return Err(ClientError::Protocol(ScanError::TooLarge {
                    limit: anonymous_limit,
                }));
            }
            // Every byte held counts against the global budget.
            // (Read-ahead stops at one largest call, so one such call always fits the budget.)
            let max_request = self.config().limits.max_request_bytes;
            let held_now = self.cbuf.len() as u64;
            let want = (held_now + READ_CHUNK as u64).min(max_request.max(held_now));
            if want > self.held {
                if !self.shared.held.try_take(want - self.held) {
                    return Err(ClientError::Busy(self.shared.held.max));
                }
                self.held = want;
            }
            if self.cbuf.capacity() - self.cbuf.len() < READ_CHUNK / 4 {
                self.cbuf.reserve(READ_CHUNK);
            }
            match timeout_at(deadline, self.client.read_buf(&mut self.cbuf)).await {
                Ok(Ok(0)) => return Err(ClientError::ClosedMidMessage),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(ClientError::Io(e)),
                Err(_) => return Err(ClientError::Timeout(read_timeout_ms)),
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
        let metrics = &self.shared.metrics;
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
            let label = method_label(router::route(
                &h.name,
                self.config().upstream.metastore_version.bits(),
            ));
            metrics
                .requests
                .get_or_create(&RequestLabels {
                    method: label,
                    decision: "error",
                })
                .inc();
            let _ = self.write_client(&reply).await;
        }
    }

    /// Identity, policy and then the call itself. `false`: the connection must close.
    async fn dispatch(&mut self, transport: Transport, request: Request) -> bool {
        let entry = router::route(
            &request.header.name,
            self.config().upstream.metastore_version.bits(),
        );
        let authz_off = self.shared.guard.mode == crate::config::AuthzMode::Off;
        // Read once, as the metastore will read it; with authorization off the proxy is a
        // pure pass-through and decides nothing.
        let args = if authz_off {
            Value::Struct(Vec::new())
        } else {
            let build = entry.is_none_or(|m| m.rule != crate::router::Rule::Harmless);
            let limits = ReadLimits {
                max_depth: self.config().limits.max_depth,
                max_name_bytes: self.config().limits.max_method_name_bytes,
                versions: self.config().upstream.metastore_version.bits(),
            };
            let msg = unframed(transport, &request.bytes);
            match schema::read_request(transport.protocol, msg, limits, build) {
                Ok(call) => call.args,
                Err(rejected) => {
                    self.refuse(transport, &request.header, rejected).await;
                    return false;
                }
            }
        };
        if entry.is_some_and(|m| m.rule == crate::router::Rule::SetUgi) && !authz_off {
            return self.set_ugi(transport, &request, &args).await;
        }
        let started = Instant::now();
        let mut checked = self
            .shared
            .guard
            .check(&self.identity, entry, &request.header, &args)
            .await;
        if let Some(d) = checked.decision.as_mut() {
            if self.shared.audit.failing_closed() && d.outcome != "deny" {
                d.outcome = "deny";
                d.matched = "the audit log cannot be written (audit.on_failure = \"deny\")".into();
                checked.verdict = Verdict::Deny(format!(
                    "hms-guard: permission denied: user {} may not call {}: the audit log cannot be written, so decided calls are refused",
                    self.identity, request.header.name
                ));
            }
        }
        // The header outlives `request` only for the audit line.
        let header = (checked.decision.is_some() || self.shared.audit.all_calls())
            .then(|| request.header.clone());
        let (keep_going, outcome) = match std::mem::replace(&mut checked.verdict, Verdict::Forward)
        {
            Verdict::Deny(message) => (
                self.deny(transport, entry, &request, &message).await,
                "not_sent",
            ),
            Verdict::Forward => match checked.rewrite.take() {
                None => {
                    let ok = self.call(transport, request, ReplyCheck::None).await;
                    (ok, if ok { "ok" } else { "error" })
                }
                Some(rw) => match self.rewritten(transport, &request, &rw) {
                    Ok(bytes) => {
                        let request = Request {
                            bytes,
                            header: request.header,
                        };
                        let ok = self.call(transport, request, ReplyCheck::None).await;
                        (ok, if ok { "ok" } else { "error" })
                    }
                    Err(e) => {
                        // Fail closed: the call does not go upstream with another owner.
                        let message = format!(
                            "hms-guard: permission denied: user {} may not call {}: the call could not be set to act for the caller ({e})",
                            self.identity, request.header.name
                        );
                        if let Some(d) = checked.decision.as_mut() {
                            d.outcome = "deny";
                            d.matched = message.clone();
                        }
                        (
                            self.deny(transport, entry, &request, &message).await,
                            "not_sent",
                        )
                    }
                },
            },
            Verdict::ForwardIfAbsent(message) => {
                let ok = self
                    .call(transport, request, ReplyCheck::DenyIfFound(message))
                    .await;
                (ok, if ok { "ok" } else { "error" })
            }
            Verdict::Filter(f) => {
                let ok = self.call(transport, request, ReplyCheck::Filter(f)).await;
                (ok, if ok { "ok" } else { "error" })
            }
        };
        if let Some(header) = &header {
            self.audit(header, &checked, outcome, started).await;
        }
        // Only a call the metastore executed can have changed what the caches hold: a denied
        // call never evicts anything.
        if outcome == "ok" {
            let facts = &self.shared.guard.facts;
            if checked.invalidate_grants {
                facts.invalidate_grants();
            }
            for obj in &checked.invalidate_objects {
                facts.invalidate_object(obj);
            }
        }
        keep_going
    }

    /// The request with the rewrite's fields set (every other byte as the client wrote it),
    /// framed as it came.
    fn rewritten(
        &self,
        transport: Transport,
        request: &Request,
        rw: &crate::policy::Rewrite,
    ) -> Result<Bytes, crate::codec::splice::SpliceError> {
        use crate::codec::splice::set_field;
        let depth = self.config().limits.max_depth;
        let mut out = BytesMut::from(unframed(transport, &request.bytes));
        for f in &rw.fields {
            if let Some(b) = set_field(
                transport.protocol,
                &out,
                &f.path,
                &f.value,
                f.if_absent,
                depth,
            )? {
                out = b;
            }
        }
        Ok(frame(transport, out).freeze())
    }

    /// Writes the audit line of a decided call (and of every call with `audit.all_calls`).
    async fn audit(
        &self,
        header: &MessageHeader,
        checked: &Checked,
        outcome: &str,
        started: Instant,
    ) {
        let audit = &self.shared.audit;
        let mut ev = AuditEvent::now();
        ev.connection_id = self.id;
        ev.client_addr = self.peer.to_string();
        ev.user = self.identity.user.clone();
        ev.groups = self.identity.groups.clone();
        ev.identity_source = self.identity.source.as_str().into();
        ev.method = header.name.clone();
        ev.upstream_outcome = Some(outcome.into());
        ev.latency_us = started.elapsed().as_micros() as u64;
        match &checked.decision {
            Some(d) => {
                ev.operation = d.operation.into();
                ev.database = d.db.clone();
                ev.table = d.table.clone();
                ev.location = d.location.clone();
                ev.decision = d.outcome.into();
                ev.reason = d.reason.as_str().into();
                ev.required_privilege = Some(d.required.clone());
                ev.matched = Some(d.matched.clone());
                ev.storage = d.storage.clone();
            }
            None => {
                ev.operation = "pass_through".into();
                ev.decision = "pass".into();
                ev.reason = "harmless".into();
            }
        }
        if let Err(e) = audit.record(ev).await {
            warn!(error = %e, "audit event not queued");
        }
    }

    /// Answers a denied call in the protocol: the method's declared `MetaException` at its
    /// field id, else a `TApplicationException`; a oneway call gets nothing. The connection
    /// stays usable.
    /// Answers a request the schema-exact reader refused (PROTOCOL_ERROR) and counts it; the
    /// connection then closes: nothing of it is forwarded.
    async fn refuse(&mut self, transport: Transport, header: &MessageHeader, rejected: Reject) {
        let metrics = &self.shared.metrics;
        metrics
            .rejected_requests
            .get_or_create(&KindLabels {
                kind: rejected.kind.as_str(),
            })
            .inc();
        metrics
            .requests
            .get_or_create(&RequestLabels {
                method: method_label(router::route(
                    &header.name,
                    self.config().upstream.metastore_version.bits(),
                )),
                decision: "error",
            })
            .inc();
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

    async fn deny(
        &mut self,
        transport: Transport,
        entry: Option<&'static Method>,
        request: &Request,
        message: &str,
    ) -> bool {
        let label = method_label(entry);
        self.shared
            .metrics
            .requests
            .get_or_create(&RequestLabels {
                method: label,
                decision: "deny",
            })
            .inc();
        info!(method = %request.header.name, user = %self.identity.user, "denied: {message}");
        let h = &request.header;
        if h.kind == MessageType::Oneway || entry.is_some_and(|m| m.oneway) {
            return true;
        }
        let reply = denial(transport, entry, &h.name, h.seqid, message);
        self.write_client(&reply).await.is_ok()
    }

    /// `set_ugi` is answered by the proxy: in `set_ugi` mode the claimed user becomes the
    /// connection's identity (groups from config unless trusted); pinned, nothing changes.
    /// The reply is what the metastore answers: the group names the client sent.
    async fn set_ugi(&mut self, transport: Transport, request: &Request, args: &Value) -> bool {
        let claimed = strings_at(args, &[1]).into_iter().next();
        let claimed_groups = strings_at(args, &[2, crate::router::EACH]);
        let cfg = &self.shared.config.identity;
        match (cfg.mode, claimed) {
            (IdentityMode::SetUgi, Some(user)) if !user.is_empty() => {
                let groups = if cfg.trust_client_groups {
                    claimed_groups.clone()
                } else {
                    cfg.groups.get(&user).cloned().unwrap_or_default()
                };
                self.identity = Identity::new(&user, &groups, IdentitySource::SetUgi);
                info!(user = %self.identity.user, groups = ?self.identity.groups, "identity from set_ugi");
            }
            (IdentityMode::Pinned, claimed)
                if claimed.as_deref() != Some(self.identity.user.as_str()) =>
            {
                debug!(claimed = ?claimed, pinned = %self.identity.user, "set_ugi ignored: identity is pinned");
            }
            _ => {}
        }
        self.shared
            .metrics
            .requests
            .get_or_create(&RequestLabels {
                method: "set_ugi",
                decision: "local",
            })
            .inc();
        // Answered as the metastore answers it: the group names the client sent.
        let h = &request.header;
        let mut w = Writer::new(transport.protocol);
        w.message(&h.name, MessageType::Reply, h.seqid)
            .struct_begin();
        let names = claimed_groups;
        w.field(Ty::List, 0).list_begin(Ty::String, names.len());
        for n in &names {
            w.string(n.as_bytes());
        }
        w.struct_end();
        let reply = w.finish(transport.framed);
        self.write_client(&reply).await.is_ok()
    }

    async fn call(&mut self, transport: Transport, request: Request, check: ReplyCheck) -> bool {
        let started = Instant::now();
        let entry = router::route(
            &request.header.name,
            self.config().upstream.metastore_version.bits(),
        );
        let label = method_label(entry);
        let oneway = request.header.kind == MessageType::Oneway || entry.is_some_and(|m| m.oneway);
        let span = info_span!("call", method = %request.header.name, seqid = request.header.seqid);
        let result = self
            .forward(transport, &request, oneway, check)
            .instrument(span.clone())
            .await;
        let metrics = self.shared.metrics.clone();
        let _enter = span.enter();
        match result {
            Ok(upstream_time) => {
                metrics
                    .requests
                    .get_or_create(&RequestLabels {
                        method: label,
                        decision: "pass",
                    })
                    .inc();
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
                true
            }
            Err(CallError::ClientGone) => {
                debug!("client went away during the call");
                false
            }
            Err(CallError::Upstream { err, flushed }) => {
                metrics.upstream_error(if flushed { "mid_reply" } else { err.kind() });
                metrics
                    .requests
                    .get_or_create(&RequestLabels {
                        method: label,
                        decision: "error",
                    })
                    .inc();
                self.upstream = None;
                if flushed {
                    warn!(error = %err, "upstream failed after part of the reply was sent; closing the connection");
                } else if oneway {
                    warn!(error = %err, "upstream failed on a oneway call; closing the connection");
                } else {
                    warn!(error = %err, "upstream failed; answering the client with an exception");
                    let h = &request.header;
                    let reply = application_exception(
                        transport.protocol,
                        transport.framed,
                        &h.name,
                        h.seqid,
                        AppErrorKind::InternalError,
                        &format!("hms-guard: {err}"),
                    );
                    drop(_enter);
                    let _ = self.write_client(&reply).await;
                }
                false
            }
        }
    }

    async fn write_client(&mut self, bytes: &[u8]) -> Result<(), CallError> {
        let t = ms(self.config().server.write_timeout_ms);
        match timeout(t, self.client.write_all(bytes)).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(CallError::ClientGone),
        }
    }

    /// Sends the request upstream and streams the reply back. Returns the upstream time.
    async fn forward(
        &mut self,
        transport: Transport,
        request: &Request,
        oneway: bool,
        check: ReplyCheck,
    ) -> Result<Option<Duration>, CallError> {
        let method = &request.header.name;
        // A second set_ugi with another user: the metastore refuses a second one on a
        // connection (Hive 2.3 closes it), so the new identity gets a new upstream session.
        if self.shared.guard.mode != crate::config::AuthzMode::Off
            && self
                .upstream
                .as_ref()
                .is_some_and(|up| up.ugi.as_ref().is_some_and(|u| *u != self.identity))
        {
            debug!(user = %self.identity.user, "identity changed: a new upstream connection");
            self.upstream = None;
        }
        if self.upstream.is_none() {
            let (stream, uri) =
                self.shared
                    .upstreams
                    .connect()
                    .await
                    .map_err(|e| CallError::Upstream {
                        err: UpstreamError::Connect(e),
                        flushed: false,
                    })?;
            self.shared.metrics.upstream_connects.inc();
            debug!(upstream = %uri, "upstream connected");
            self.upstream = Some(Upstream {
                stream,
                uri: uri.clone(),
                buf: BytesMut::new(),
                walker: MessageWalker::new(transport, self.shared.reply_limits),
                ugi: None,
            });
        }
        if self.shared.guard.mode != crate::config::AuthzMode::Off {
            // With authorization off the client's own set_ugi passes through untouched.
            self.send_ugi(transport, method).await?;
        }
        let cfg = &self.shared.config;
        let write_timeout = ms(cfg.upstream.write_timeout_ms);
        let read_timeout_ms = cfg.upstream.read_timeout_ms;
        let flush_at = cfg.limits.reply_buffer_bytes;
        let metrics = &self.shared.metrics;
        let up = self.upstream.as_mut().expect("connected above");
        let sent = Instant::now();
        let write = timeout(write_timeout, up.stream.write_all(&request.bytes)).await;
        let write_err = match write {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e),
            Err(_) => Some(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no progress within {} ms", write_timeout.as_millis()),
            )),
        };
        if let Some(err) = write_err {
            return Err(CallError::Upstream {
                err: UpstreamError::Write {
                    uri: up.uri.to_string(),
                    method: method.clone(),
                    err,
                },
                flushed: false,
            });
        }
        metrics
            .bytes
            .get_or_create(&DirectionLabels {
                direction: "client_to_upstream",
            })
            .inc_by(request.bytes.len() as u64);
        if oneway {
            return Ok(None);
        }

        match check {
            ReplyCheck::None => {}
            ReplyCheck::Filter(f) => {
                return self
                    .filtered_reply(transport, method, request.header.seqid, sent, &f)
                    .await;
            }
            ReplyCheck::DenyIfFound(message) => {
                return self
                    .absent_reply(transport, method, request.header.seqid, sent, &message)
                    .await;
            }
        }
        // Stream the reply: walk it as it arrives, hold back up to `flush_at` bytes so an early
        // failure can still be answered cleanly, then forward walked bytes as they come.
        up.walker.reset();
        let mut walked = 0usize;
        let mut flushed = false;
        let mut upstream_time = None;
        let to_client = DirectionLabels {
            direction: "upstream_to_client",
        };
        loop {
            let mut complete = false;
            if walked < up.buf.len() {
                match up.walker.advance(&up.buf[walked..]) {
                    Ok(Scan::Complete(n)) => {
                        walked += n;
                        complete = true;
                    }
                    Ok(Scan::NeedMore(n)) => walked += n,
                    Err(err) => {
                        return Err(CallError::Upstream {
                            err: UpstreamError::Protocol {
                                uri: up.uri.to_string(),
                                method: method.clone(),
                                err,
                            },
                            flushed,
                        })
                    }
                }
            }
            if complete || walked >= flush_at {
                // Nothing reaches the client before the reply is known to answer this call.
                let wrong = match up.walker.header() {
                    Some(h) => mismatch(&up.uri, method, request.header.seqid, h),
                    None => Some(UpstreamError::Protocol {
                        uri: up.uri.to_string(),
                        method: method.clone(),
                        err: crate::codec::ScanError::Truncated,
                    }),
                };
                if let Some(err) = wrong {
                    metrics.mismatched_replies.inc();
                    return Err(CallError::Upstream { err, flushed });
                }
                if complete {
                    upstream_time = Some(sent.elapsed());
                }
                let t = ms(self.shared.config.server.write_timeout_ms);
                match timeout(t, self.client.write_all(&up.buf[..walked])).await {
                    Ok(Ok(())) => {}
                    _ => return Err(CallError::ClientGone),
                }
                metrics
                    .bytes
                    .get_or_create(&to_client)
                    .inc_by(walked as u64);
                up.buf.advance(walked);
                walked = 0;
                flushed = true;
                if complete {
                    return Ok(upstream_time);
                }
            }
            if up.buf.capacity() - up.buf.len() < READ_CHUNK / 4 {
                up.buf.reserve(READ_CHUNK);
            }
            let read = timeout(ms(read_timeout_ms), up.stream.read_buf(&mut up.buf)).await;
            let err = match read {
                Ok(Ok(0)) => UpstreamError::Closed {
                    uri: up.uri.to_string(),
                    method: method.clone(),
                },
                Ok(Ok(_)) => continue,
                Ok(Err(err)) => UpstreamError::Read {
                    uri: up.uri.to_string(),
                    method: method.clone(),
                    err,
                },
                Err(_) => UpstreamError::Timeout {
                    uri: up.uri.to_string(),
                    method: method.clone(),
                    ms: read_timeout_ms,
                },
            };
            return Err(CallError::Upstream { err, flushed });
        }
    }

    /// Reads one whole reply from the upstream into its buffer (bounded by `limit`); returns
    /// the message length.
    async fn read_reply(
        &mut self,
        method: &str,
        seqid: i32,
        limit: u64,
    ) -> Result<usize, CallError> {
        let read_timeout_ms = self.shared.config.upstream.read_timeout_ms;
        let up = self.upstream.as_mut().expect("connected");
        up.walker.reset();
        let mut walked = 0usize;
        loop {
            if walked < up.buf.len() {
                match up.walker.advance(&up.buf[walked..]) {
                    Ok(Scan::Complete(n)) => {
                        let h = up.walker.header().expect("complete message has a header");
                        if let Some(err) = mismatch(&up.uri, method, seqid, h) {
                            self.shared.metrics.mismatched_replies.inc();
                            return Err(CallError::Upstream {
                                err,
                                flushed: false,
                            });
                        }
                        return Ok(walked + n);
                    }
                    Ok(Scan::NeedMore(n)) => walked += n,
                    Err(err) => {
                        return Err(CallError::Upstream {
                            err: UpstreamError::Protocol {
                                uri: up.uri.to_string(),
                                method: method.to_string(),
                                err,
                            },
                            flushed: false,
                        })
                    }
                }
            }
            if walked as u64 > limit {
                return Err(CallError::Upstream {
                    err: UpstreamError::Protocol {
                        uri: up.uri.to_string(),
                        method: method.to_string(),
                        err: crate::codec::ScanError::TooLarge { limit },
                    },
                    flushed: false,
                });
            }
            if up.buf.capacity() - up.buf.len() < READ_CHUNK / 4 {
                up.buf.reserve(READ_CHUNK);
            }
            let read = timeout(ms(read_timeout_ms), up.stream.read_buf(&mut up.buf)).await;
            let err = match read {
                Ok(Ok(0)) => UpstreamError::Closed {
                    uri: up.uri.to_string(),
                    method: method.to_string(),
                },
                Ok(Ok(_)) => continue,
                Ok(Err(err)) => UpstreamError::Read {
                    uri: up.uri.to_string(),
                    method: method.to_string(),
                    err,
                },
                Err(_) => UpstreamError::Timeout {
                    uri: up.uri.to_string(),
                    method: method.to_string(),
                    ms: read_timeout_ms,
                },
            };
            return Err(CallError::Upstream {
                err,
                flushed: false,
            });
        }
    }

    /// Sends `set_ugi(identity)` upstream when the upstream connection does not carry the
    /// connection's identity yet, so the metastore records the right owner.
    async fn send_ugi(&mut self, transport: Transport, method: &str) -> Result<(), CallError> {
        let identity = self.identity.clone();
        let up = self.upstream.as_mut().expect("connected");
        if identity.is_anonymous() || up.ugi.as_ref() == Some(&identity) {
            return Ok(());
        }
        let mut w = Writer::new(transport.protocol);
        w.message("set_ugi", MessageType::Call, 0).struct_begin();
        w.field(Ty::String, 1).string(identity.user.as_bytes());
        w.field(Ty::List, 2)
            .list_begin(Ty::String, identity.groups.len());
        for g in &identity.groups {
            w.string(g.as_bytes());
        }
        w.struct_end();
        let msg = w.finish(transport.framed);
        let write_timeout = ms(self.shared.config.upstream.write_timeout_ms);
        if let Err(e) = timeout(write_timeout, up.stream.write_all(&msg))
            .await
            .unwrap_or_else(|_| {
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "write timed out",
                ))
            })
        {
            return Err(CallError::Upstream {
                err: UpstreamError::Write {
                    uri: up.uri.to_string(),
                    method: format!("set_ugi (before {method})"),
                    err: e,
                },
                flushed: false,
            });
        }
        let len = self.read_reply("set_ugi", 0, 1024 * 1024).await?;
        let up = self.upstream.as_mut().expect("connected");
        let reply = up.buf.split_to(len);
        let kind = up.walker.header().map(|h| h.kind);
        if kind != Some(MessageType::Reply) {
            return Err(CallError::Upstream {
                err: UpstreamError::Closed {
                    uri: format!("{} (set_ugi refused: {} bytes)", up.uri, reply.len()),
                    method: method.to_string(),
                },
                flushed: false,
            });
        }
        up.ugi = Some(identity);
        Ok(())
    }

    /// Reads a whole reply to a read of a table that did not exist when it was decided: passed
    /// on when it carries no result (the metastore's "not found"), replaced by `message` (a
    /// denial in the method's declared exception) when the table exists after all.
    async fn absent_reply(
        &mut self,
        transport: Transport,
        method: &str,
        seqid: i32,
        sent: Instant,
        message: &str,
    ) -> Result<Option<Duration>, CallError> {
        let limit = self.shared.config.authz.max_filtered_reply_bytes;
        let len = self.read_reply(method, seqid, limit).await?;
        let upstream_time = sent.elapsed();
        let up = self.upstream.as_mut().expect("connected");
        let reply = up.buf.split_to(len);
        let found = crate::codec::reply::carries_result(
            transport.protocol,
            unframed(transport, &reply),
            self.shared.config.limits.max_depth,
        );
        let out = if found {
            let entry = router::route(method, self.config().upstream.metastore_version.bits());
            warn!(method, user = %self.identity.user, "a table absent when decided exists: its reply is withheld");
            denial(transport, entry, method, seqid, message)
        } else {
            reply
        };
        self.write_client(&out).await?;
        self.shared
            .metrics
            .bytes
            .get_or_create(&DirectionLabels {
                direction: "upstream_to_client",
            })
            .inc_by(out.len() as u64);
        Ok(Some(upstream_time))
    }

    /// Reads a whole listing reply, filters it to what the user may see, writes it.
    async fn filtered_reply(
        &mut self,
        transport: Transport,
        method: &str,
        seqid: i32,
        sent: Instant,
        f: &ListFilter,
    ) -> Result<Option<Duration>, CallError> {
        let limit = self.shared.config.authz.max_filtered_reply_bytes;
        let len = self.read_reply(method, seqid, limit).await?;
        let upstream_time = sent.elapsed();
        let up = self.upstream.as_mut().expect("connected");
        let reply = up.buf.split_to(len);
        let uri = up.uri.to_string();
        let guard = &self.shared.guard;
        let depth = self.shared.config.limits.max_depth;
        let listed = parse_list_reply(
            transport.protocol,
            unframed(transport, &reply),
            f.shape.list_path(),
            depth,
        )
        .map_err(|err| CallError::Upstream {
            err: UpstreamError::Protocol {
                uri,
                method: method.to_string(),
                err,
            },
            flushed: false,
        })?;
        let out = match listed {
            None => reply,
            Some(listed) => {
                // Names without a grant may be the caller's own tables or databases: their
                // owners are looked up (cached, bounded) before the reply is filtered.
                let mut unseen = Vec::new();
                if !matches!(f.shape, ListShape::Tables | ListShape::TablesInResult) {
                    unseen = listed
                        .values()
                        .filter_map(|v| listed_object(f, v))
                        .filter(|o| !visible_by_grants(f, &guard.policy, o))
                        .take(MAX_LISTING_OWNER_LOOKUPS)
                        .collect();
                }
                let owned = guard.owned_among(f, unseen).await;
                let filtered = listed.keep(|v| keep_listed(f, &guard.policy, v, &owned));
                debug!(
                    kept = filtered.kept,
                    dropped = filtered.dropped,
                    "listing filtered"
                );
                frame(transport, filtered.reply)
            }
        };
        self.write_client(&out).await?;
        self.shared
            .metrics
            .bytes
            .get_or_create(&DirectionLabels {
                direction: "upstream_to_client",
            })
            .inc_by(out.len() as u64);
        Ok(Some(upstream_time))
    }
}
