//! The listener: accepts client connections up to a limit, hands each to `connection::serve`,
//! and on shutdown stops accepting and lets in-flight calls finish up to a grace deadline.

use std::net::{IpAddr, SocketAddr};

use dashmap::DashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tracing::{info, warn};

use crate::listener::connection::{self, Shared};
use crate::ops::metrics::KindLabels;

/// A bound Thrift listener, ready to run.
pub struct Server {
    listener: TcpListener,
    shared: Arc<Shared>,
}

impl Server {
    pub async fn bind(shared: Arc<Shared>) -> std::io::Result<Server> {
        let listener = TcpListener::bind(shared.settings.listen).await?;
        Ok(Server { listener, shared })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` turns true, then drains connections for up to
    /// `server.shutdown_grace_ms`.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let max = self.shared.settings.server.max_connections;
        let permits = Arc::new(Semaphore::new(max));
        let max_per_client = self.shared.settings.server.max_connections_per_client;
        let per_client: Arc<DashMap<IpAddr, usize>> = Arc::new(DashMap::new());
        let next_id = AtomicU64::new(1);
        let metrics = self.shared.metrics.clone();
        info!(listen = %self.local_addr().map(|a| a.to_string()).unwrap_or_default(), "hms-guard listening");
        loop {
            let accepted = tokio::select! {
                r = self.listener.accept() => r,
                _ = crate::until_shutdown(&mut shutdown) => break,
            };
            let (stream, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                warn!(peer = %peer, max_connections = max, "connection limit reached; closing new connection");
                metrics
                    .connections_rejected
                    .get_or_create(&KindLabels { kind: "limit" })
                    .inc();
                drop(stream);
                continue;
            };
            let Some(per_client) = PerClient::enter(&per_client, peer.ip(), max_per_client) else {
                warn!(peer = %peer, max_connections_per_client = max_per_client, "per-client connection limit reached; closing new connection");
                metrics
                    .connections_rejected
                    .get_or_create(&KindLabels {
                        kind: "per_client_limit",
                    })
                    .inc();
                drop(stream);
                continue;
            };
            let id = next_id.fetch_add(1, Ordering::Relaxed);
            let shared = self.shared.clone();
            let rx = shutdown.clone();
            let metrics = metrics.clone();
            tokio::spawn(async move {
                metrics.connections_active.inc();
                connection::serve(shared, stream, peer, id, rx).await;
                metrics.connections_active.dec();
                drop(per_client);
                drop(permit);
            });
        }
        drop(self.listener);
        drain(&self.shared, &permits, max).await;
    }
}

/// After the listener closed: waits up to `server.shutdown_grace_ms` for the connections
/// to end, then as long again for the audit writer to take every queued line (each call that
/// ended queued its line) before the process exits.
async fn drain(shared: &Shared, permits: &Semaphore, max: usize) {
    let grace = shared.settings.server.shutdown_grace;
    let active = max - permits.available_permits();
    info!(
        active,
        grace_ms = grace.as_millis() as u64,
        "shutting down: listener closed, draining connections"
    );
    let drained = tokio::time::timeout(grace, permits.acquire_many(max as u32))
        .await
        .is_ok();
    if drained {
        info!("all connections closed");
    } else {
        warn!(
            still_open = max - permits.available_permits(),
            "shutdown grace period over; closing remaining connections"
        );
    }
    if tokio::time::timeout(grace, shared.audit.flush())
        .await
        .is_err()
    {
        warn!(
            grace_ms = grace.as_millis() as u64,
            "audit lines still queued at exit: the audit sink did not take them in time"
        );
    }
}

/// One connection's place in the per-client-address count; leaving it gives the place back.
struct PerClient {
    counts: Arc<DashMap<IpAddr, usize>>,
    ip: IpAddr,
}

impl PerClient {
    /// Counts a new connection from `ip`; `None` when `ip` already has `max` open.
    fn enter(counts: &Arc<DashMap<IpAddr, usize>>, ip: IpAddr, max: usize) -> Option<PerClient> {
        let mut n = counts.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(PerClient {
            counts: counts.clone(),
            ip,
        })
    }
}

impl Drop for PerClient {
    fn drop(&mut self) {
        // The entry goes when its last connection does: the map holds open addresses only.
        self.counts.remove_if_mut(&self.ip, |_, n| {
            *n -= 1;
            *n == 0
        });
    }
}
