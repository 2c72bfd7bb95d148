//! hms-guard: an authorization proxy for the Apache Hive Metastore Thrift API.
//!
//! Data flow, one module per stage:
//!
//! ```text
//! client socket ─► server (accept, connection limit, shutdown)
//!   ─► connection (one per client; one upstream connection each)
//!       ─► transport::detect (binary | compact, unframed | framed; TLS/SASL/HTTP refused)
//!       ─► framing::MessageWalker ─► codec::Scanner (bounded: size, depth, counts;
//!          request bytes held over all connections bounded)
//!       ─► schema::read (the request read once, as the metastore's Java reader reads it,
//!          or refused with PROTOCOL_ERROR) ─► router (method table entry)
//!       ─► identity (pinned / set_ugi) ─► policy: classify (on the read values) ─► facts
//!          (grants, owners; bounded single-flight caches) ─► authz::authorize (pure)
//!          ─► storage checks (dual IAM) ─► verdict: forward, filter or deny
//!       ─► upstream (original bytes; failover over upstream.uris)
//!       ─► reply streamed back through the same bounded walker, after its header is checked
//!          to answer the call in flight
//!       ─► audit line, cache invalidation (only after a call the metastore executed)
//!   ─► metrics (admin: /metrics, /healthz, /readyz) and tracing logs
//! ```
//!
//! Failures are classified by who caused them (`error`) and answered in the protocol with
//! an exception reply carrying the call's sequence id (`codec::reply`).

#![forbid(unsafe_code)]

pub mod admin;
pub mod audit;
pub mod authz;
pub mod cache;
pub mod cli;
pub mod codec;
pub mod config;
pub mod connection;
pub mod error;
pub mod explain;
pub mod facts;
pub mod framing;
pub mod identity;
pub mod metrics;
pub mod policy;
pub mod router;
pub mod schema;
pub mod server;
pub mod settings;
pub mod storage;
pub mod telemetry;
pub mod transport;
pub mod upstream;

use std::sync::Arc;

use tokio::sync::watch;
use tracing::info;

use crate::config::Config;
use crate::connection::Shared;
use crate::metrics::Metrics;

/// Binds the listeners of `config` and serves until SIGTERM/SIGINT, then drains.
pub async fn run(config: Config) -> std::io::Result<()> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        info!("shutdown signal received");
        let _ = tx.send(true);
    });
    let running = start(config, rx).await?;
    running.wait().await;
    Ok(())
}

/// A started proxy: its bound addresses and the tasks serving them.
pub struct Running {
    pub listen: std::net::SocketAddr,
    pub admin: Option<std::net::SocketAddr>,
    pub metrics: Arc<Metrics>,
    server: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Waits until the Thrift listener has shut down and drained.
    pub async fn wait(self) {
        let _ = self.server.await;
    }
}

/// Binds the Thrift and admin listeners and starts serving; shuts down when `shutdown` turns
/// true. Used by `run` and by tests. The configuration is resolved here, once.
pub async fn start(config: Config, shutdown: watch::Receiver<bool>) -> std::io::Result<Running> {
    start_with(config, None, shutdown).await
}

/// `start`, with authorization's facts from `facts` instead of the metastore (tests script
/// them).
pub async fn start_with(
    config: Config,
    facts: Option<Box<dyn facts::FactsSource>>,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<Running> {
    let settings = settings::Settings::resolve(config).map_err(|errors| {
        let all: Vec<String> = errors.iter().map(ToString::to_string).collect();
        std::io::Error::new(std::io::ErrorKind::InvalidInput, all.join("; "))
    })?;
    let metrics = Arc::new(Metrics::new());
    let storage = storage::StorageGuard::new(&settings.config.storage, metrics.clone())
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let admin_listen = settings.admin_listen;
    let shared = Arc::new(
        Shared::new(settings, metrics.clone(), storage, facts)
            .map_err(|e| std::io::Error::other(e.to_string()))?,
    );
    let server = server::Server::bind(shared.clone()).await?;
    let listen = server.local_addr()?;
    let admin = match admin_listen {
        None => None,
        Some(addr) => {
            let admin = admin::Admin::bind(addr, metrics.clone(), shared.upstreams.clone()).await?;
            let addr = admin.local_addr()?;
            info!(admin = %addr, "admin listening");
            tokio::spawn(admin.run(shutdown.clone()));
            Some(addr)
        }
    };
    let server = tokio::spawn(server.run(shutdown));
    Ok(Running {
        listen,
        admin,
        metrics,
        server,
    })
}

/// Resolves once the shutdown flag is (or becomes) true; never if the sender is gone first.
pub(crate) async fn until_shutdown(rx: &mut watch::Receiver<bool>) {
    if rx.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
