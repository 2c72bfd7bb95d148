//! The proxy's own metastore client: a small pool of binary connections, each opened with
//! `set_ugi(service user)`, used to read grants, roles, tables and databases.

use std::sync::Mutex;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::codec::reader::{Reader, Ty};
use crate::codec::writer::Writer;
use crate::codec::{Limits, MessageType, Protocol, Scan};
use crate::framing::MessageWalker;
use crate::transport::Transport;
use crate::upstream::Upstreams;

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
    idle: Mutex<Vec<TcpStream>>,
}

const BINARY: Transport = Transport {
    protocol: Protocol::Binary,
    framed: false,
};

impl MetaClient {
    pub fn new(upstreams: Upstreams, cfg: ClientConfig) -> Self {
        MetaClient {
            upstreams,
            cfg,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Calls `method` with arguments written by `args` (fields of the args struct) and returns
    /// the reply message bytes, a successful REPLY (its result struct may hold an exception).
    pub async fn call(
        &self,
        method: &str,
        args: impl FnOnce(&mut Writer),
    ) -> Result<Vec<u8>, FactsError> {
        let mut w = Writer::new(Protocol::Binary);
        w.message(method, MessageType::Call, 1).struct_begin();
        args(&mut w);
        w.struct_end();
        let request = w.finish(false);
        let up_err = |message: String| FactsError::Upstream {
            method: method.to_string(),
            message,
        };
        let pooled = self.idle.lock().expect("pool lock").pop();
        let mut stream = match pooled {
            Some(s) => s,
            None => self.open().await.map_err(up_err)?,
        };
        let reply = tokio::time::timeout(self.cfg.timeout, self.exchange(&mut stream, &request))
            .await
            .map_err(|_| {
                up_err(format!(
                    "no reply within {} ms",
                    self.cfg.timeout.as_millis()
                ))
            })?
            .map_err(up_err)?;
        let mut idle = self.idle.lock().expect("pool lock");
        if idle.len() < self.cfg.max_idle {
            idle.push(stream);
        }
        drop(idle);
        Ok(reply)
    }

    async fn open(&self) -> Result<TcpStream, String> {
        let (mut stream, _) = tokio::time::timeout(self.cfg.timeout, self.upstreams.connect())
            .await
            .map_err(|_| "connect timed out".to_string())?
            .map_err(|e| e.to_string())?;
        let mut w = Writer::new(Protocol::Binary);
        w.message("set_ugi", MessageType::Call, 0).struct_begin();
        w.field(Ty::String, 1)
            .string(self.cfg.service_user.as_bytes());
        w.field(Ty::List, 2).list_begin(Ty::String, 0);
        w.struct_end();
        let msg = w.finish(false);
        tokio::time::timeout(self.cfg.timeout, self.exchange(&mut stream, &msg))
            .await
            .map_err(|_| "set_ugi timed out".to_string())??;
        Ok(stream)
    }

    async fn exchange(&self, stream: &mut TcpStream, request: &[u8]) -> Result<Vec<u8>, String> {
        stream
            .write_all(request)
            .await
            .map_err(|e| format!("write: {e}"))?;
        let limits = Limits {
            max_message_bytes: self.cfg.max_reply_bytes,
            ..Limits::default()
        };
        let mut walker = MessageWalker::new(BINARY, limits);
        let mut buf = BytesMut::with_capacity(4096);
        let mut walked = 0;
        loop {
            if walked < buf.len() {
                match walker.advance(&buf[walked..]).map_err(|e| e.to_string())? {
                    Scan::Complete(n) => {
                        if walked + n != buf.len() {
                            return Err("metastore sent bytes after the reply".into());
                        }
                        return Ok(buf.to_vec());
                    }
                    Scan::NeedMore(n) => walked += n,
                }
            }
            buf.reserve(16 * 1024);
            let n = stream
                .read_buf(&mut buf)
                .await
                .map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err("connection closed before the reply was complete".into());
            }
        }
    }
}

/// Positions a reader at the success value (field 0) of a reply, or turns a declared
/// exception / `TApplicationException` into an error. `Ok(None)`: void success.
pub fn success<'a>(method: &str, reply: &'a [u8]) -> Result<Option<(Reader<'a>, Ty)>, FactsError> {
    let invalid = |message: String| FactsError::Invalid {
        method: method.to_string(),
        message,
    };
    let mut r = Reader::new(Protocol::Binary, reply, 64);
    let h = r.message_begin().map_err(|e| invalid(e.to_string()))?;
    r.struct_begin().map_err(|e| invalid(e.to_string()))?;
    if h.kind == MessageType::Exception {
        let mut message = String::new();
        while let Some(f) = r.field().map_err(|e| invalid(e.to_string()))? {
            if f.id == 1 && f.ty == Ty::String {
                message = r.string_lossy().map_err(|e| invalid(e.to_string()))?;
            } else {
                r.skip(f.ty, Some(&f)).map_err(|e| invalid(e.to_string()))?;
            }
        }
        return Err(FactsError::Exception {
            method: method.to_string(),
            field: 0,
            exception: "TApplicationException".into(),
            message,
        });
    }
    match r.field().map_err(|e| invalid(e.to_string()))? {
        None => Ok(None),
        Some(f) if f.id == 0 => Ok(Some((r, f.ty))),
        Some(f) => {
            // A declared exception: every Hive exception struct has `1: string message`.
            let mut message = String::new();
            if f.ty == Ty::Struct {
                r.struct_begin().map_err(|e| invalid(e.to_string()))?;
                while let Some(g) = r.field().map_err(|e| invalid(e.to_string()))? {
                    if g.id == 1 && g.ty == Ty::String {
                        message = r.string_lossy().map_err(|e| invalid(e.to_string()))?;
                    } else {
                        r.skip(g.ty, Some(&g)).map_err(|e| invalid(e.to_string()))?;
                    }
                }
            }
            Err(FactsError::Exception {
                method: method.to_string(),
                field: f.id,
                exception: format!("exception field {}", f.id),
                message,
            })
        }
    }
}
