//! The proxy's own metastore client: a small pool of binary connections (`UpstreamConn`),
//! each opened with `set_ugi(service user)`, used to read grants, roles, tables and databases.

use std::sync::Mutex;
use std::time::Duration;

use crate::error::{ConnectError, UpstreamError};
use crate::listener::identity::{Identity, IdentitySource};
use crate::upstream::{UpstreamConn, Upstreams};
use crate::wire::codec::reply::ReplyError;
use crate::wire::codec::writer::Writer;
use crate::wire::codec::{Limits, MessageType, Protocol};
use crate::wire::transport::Transport;

/// Why a facts call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FactsError {
    #[error("metastore unreachable for {method}: {message}")]
    Upstream { method: String, message: String },
    #[error("metastore answered {method} with {exception}: {message}")]
    Exception {
        method: String,
        /// Result field id of the exception (e.g. 1 MetaException, 2 NoSuchObjectException).
        field: i16,
        exception: String,
        message: String,
    },
    #[error("invalid reply to {method}: {message}")]
    Invalid { method: String, message: String },
}

impl FactsError {
    /// A reply to `method` that carries no success value (`codec::reply::success`).
    pub fn from_reply(method: &str, e: ReplyError) -> FactsError {
        let method = method.to_string();
        match e {
            ReplyError::Invalid(e) => FactsError::Invalid {
                method,
                message: e.to_string(),
            },
            ReplyError::Exception {
                field,
                exception,
                message,
            } => FactsError::Exception {
                method,
                field,
                exception,
                message,
            },
        }
    }
}

/// Why one exchange with the metastore failed (it becomes `FactsError::Upstream`'s message).
#[derive(Debug, thiserror::Error)]
enum LinkError {
    /// No connection in the service user's name: no metastore reached.
    #[error("{0}")]
    Connect(#[from] ConnectError),
    /// The connection failed: `set_ugi`, sending the call or reading its reply.
    #[error("{0}")]
    Upstream(#[from] UpstreamError),
    #[error("metastore sent bytes after the reply")]
    TrailingBytes,
    #[error("no reply within {ms} ms")]
    Timeout { ms: u128 },
}

/// Client settings.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub service_user: String,
    pub timeout: Duration,
    pub max_reply_bytes: u64,
    pub max_idle: usize,
}

/// A pooled metastore client for fact lookups.
pub struct MetaClient {
    upstreams: Upstreams,
    cfg: ClientConfig,
    service: Identity,
    idle: Mutex<Vec<UpstreamConn>>,
}

const BINARY: Transport = Transport {
    protocol: Protocol::Binary,
    framed: false,
};

/// The sequence id of every facts call (one call at a time per connection).
const SEQID: i32 = 1;

impl MetaClient {
    pub fn new(upstreams: Upstreams, cfg: ClientConfig) -> Self {
        let service = Identity::new(&cfg.service_user, &[], IdentitySource::Pinned);
        MetaClient {
            upstreams,
            cfg,
            service,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Calls `method` with arguments written by `args` (fields of the args struct) and returns
    /// the reply message bytes, a successful REPLY (its result struct may hold an exception).
    /// The whole call, connecting included, is bounded by the client's timeout.
    pub async fn call(
        &self,
        method: &str,
        args: impl FnOnce(&mut Writer),
    ) -> Result<Vec<u8>, FactsError> {
        let mut w = Writer::new(Protocol::Binary);
        w.message(method, MessageType::Call, SEQID).struct_begin();
        args(&mut w);
        w.struct_end();
        let request = w.finish(false);
        let up_err = |e: LinkError| FactsError::Upstream {
            method: method.to_string(),
            message: e.to_string(),
        };
        let pooled = self.idle.lock().map(|mut idle| idle.pop()).unwrap_or(None);
        let exchange = async {
            // Facts calls only read: one that failed on a pooled connection (closed by a
            // metastore restart or failover while idle) is made again on a new one.
            let retry = pooled.is_some();
            match self.exchange(pooled, &request, method).await {
                Err(e) if retry => {
                    tracing::debug!(error = %e, method, "pooled facts connection failed; retrying on a new one");
                    self.exchange(None, &request, method).await
                }
                r => r,
            }
        };
        let (conn, reply) = tokio::time::timeout(self.cfg.timeout, exchange)
            .await
            .map_err(|_| {
                up_err(LinkError::Timeout {
                    ms: self.cfg.timeout.as_millis(),
                })
            })?
            .map_err(up_err)?;
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < self.cfg.max_idle {
                idle.push(conn);
            }
        }
        Ok(reply.to_vec())
    }

    /// One call on `conn` (or a new connection).
    async fn exchange(
        &self,
        conn: Option<UpstreamConn>,
        request: &[u8],
        method: &str,
    ) -> Result<(UpstreamConn, bytes::BytesMut), LinkError> {
        let mut conn = match conn {
            Some(c) => c,
            None => self.open().await?,
        };
        conn.send(request, method).await?;
        let (reply, _) = conn
            .read_reply(method, SEQID, self.cfg.max_reply_bytes)
            .await?;
        if conn.has_unread() {
            return Err(LinkError::TrailingBytes);
        }
        Ok((conn, reply))
    }

    /// A new connection in the service user's name.
    async fn open(&self) -> Result<UpstreamConn, LinkError> {
        let limits = Limits {
            max_message_bytes: self.cfg.max_reply_bytes,
            ..Limits::default()
        };
        let mut conn = UpstreamConn::open(&self.upstreams, BINARY, limits).await?;
        conn.ensure_identity(&self.service, "facts").await?;
        Ok(conn)
    }
}
