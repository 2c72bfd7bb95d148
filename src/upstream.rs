//! Upstream metastore connections: URIs tried in order, failover on connect failure, bounded
//! connect time.

use std::fmt;
use std::io;
use std::time::Duration;

use tokio::net::TcpStream;

use crate::config::ThriftUri;

/// The configured metastores and how to reach them.
#[derive(Debug, Clone)]
pub struct Upstreams {
    uris: Vec<ThriftUri>,
    connect_timeout: Duration,
}

/// Every connect attempt failed.
#[derive(Debug)]
pub struct ConnectError {
    pub attempts: Vec<(String, String)>,
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("no metastore reachable")?;
        for (i, (uri, e)) in self.attempts.iter().enumerate() {
            let sep = if i == 0 { ": " } else { "; " };
            write!(f, "{sep}{uri}: {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConnectError {}

impl Upstreams {
    pub fn new(uris: Vec<ThriftUri>, connect_timeout: Duration) -> Self {
        Upstreams {
            uris,
            connect_timeout,
        }
    }

    pub fn uris(&self) -> &[ThriftUri] {
        &self.uris
    }

    /// Connects to the first reachable URI (every resolved address of each, in order).
    pub async fn connect(&self) -> Result<(TcpStream, &ThriftUri), ConnectError> {
        let mut attempts = Vec::new();
        for uri in &self.uris {
            match self.connect_one(uri).await {
                Ok(stream) => return Ok((stream, uri)),
                Err(e) => attempts.push((uri.to_string(), e.to_string())),
            }
        }
        Err(ConnectError { attempts })
    }

    async fn connect_one(&self, uri: &ThriftUri) -> io::Result<TcpStream> {
        let addrs = tokio::time::timeout(
            self.connect_timeout,
            tokio::net::lookup_host((uri.host.as_str(), uri.port)),
        )
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "name lookup timed out"))??;
        let mut last = io::Error::new(io::ErrorKind::NotFound, "name resolved to no address");
        for addr in addrs {
            match tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr)).await {
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
                            self.connect_timeout.as_millis()
                        ),
                    )
                }
            }
        }
        Err(last)
    }
}
