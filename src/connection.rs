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

use crate::codec::reply::{application_exception, AppErrorKind};
use crate::codec::{Limits, MessageHeader, MessageType, Scan};
use crate::config::{ms, Config, ThriftUri};
use crate::error::{ClientError, UpstreamError};
use crate::framing::MessageWalker;
use crate::metrics::{DirectionLabels, MethodLabels, Metrics, RequestLabels, TransportLabels};
use crate::router::{self, method_label};
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
    request_limits: Limits,
    reply_limits: Limits,
}

impl Shared {
    pub fn new(config: Config, metrics: Arc<Metrics>) -> Self {
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
        Shared {
            config,
            metrics,
            upstreams,
            request_limits,
            reply_limits,
        }
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
        let mut conn = Conn {
            shared,
            client,
            cbuf: BytesMut::new(),
            upstream: None,
            shutdown,
            calls: 0,
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
            if !self.call(transport, request).await {
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
        if let (Some(h), ClientError::Protocol(_) | ClientError::Timeout(_)) = (header, &err) {
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
            let label = method_label(router::route(&h.name));
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

    /// Forwards one call and its reply. `false`: the connection must close.
    async fn call(&mut self, transport: Transport, request: Request) -> bool {
        let started = Instant::now();
        let entry = router::route(&request.header.name);
        let label = method_label(entry);
        let oneway = request.header.kind == MessageType::Oneway || entry.is_some_and(|m| m.oneway);
        let span = info_span!("call", method = %request.header.name, seqid = request.header.seqid);
        let result = self
            .forward(transport, &request, oneway)
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
    ) -> Result<Option<Duration>, CallError> {
        let method = &request.header.name;
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
            });
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
                    if let Some(h) = up.walker.header() {
                        if h.seqid != request.header.seqid || h.name != *method {
                            warn!(reply_method = %h.name, reply_seqid = h.seqid, "reply does not match the call");
                        }
                    }
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
}
