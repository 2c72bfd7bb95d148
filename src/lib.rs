//! hms-guard: an authorization proxy for the Apache Hive Metastore Thrift API.
//!
//! One folder per part of the pipeline; docs/ARCHITECTURE.md gives each stage's contract.
//! One call:
//!
//! ```text
//! settings (config resolved once) ─► listener::server (accept; connection limits; drain)
//!   ─► listener::connection (one task per client; one call at a time, one path per call)
//!       ─► auth (TLS, Kerberos over SASL, when configured: before the first byte is read)
//!       ─► wire::transport::detect (binary | compact, unframed | framed; others refused)
//!       ─► read: wire::framing::MessageWalker over wire::codec::Scanner (bounded: size,
//!          depth, counts, bytes held over all connections, time)
//!       ─► wire::router::route (the method's entry: class, rule, declared exception)
//!       ─► the identity's groups brought up to date (auth::groups: static, file, os, ldap;
//!          a TTL cache, a hit is a memory lookup; unreadable: the call is refused)
//!       ─► decision::Guard::begin ─► one Decision { action, record, invalidate }
//!            refused first: an unauthenticated connection; a request the metastore's Java
//!            reader could read differently (wire::schema); set_ugi (answered by the proxy);
//!            a caller whose groups could not be read
//!            then decide: classify (objects, locations, alter diffs) ─► gather (facts:
//!            grants, owners, holders; bounded single-flight TTL caches; other tables'
//!            claims on the call's locations from decision::index) ─► authz::authorize
//!            (pure) and storage (dual IAM) ─► existence ─► conclude in the configured mode
//!       ─► carry out the Action: Forward (a read the shared metadata cache holds answered
//!          from upstream::cache; else upstream::UpstreamConn: failover order, set_ugi
//!          in step; the reply streamed, or read whole and checked by Guard::reply:
//!          listings filtered, absent-table reads withheld — a cached reply checked alike;
//!          writes drop what they touch from the cache) | Deny (the method's declared
//!          exception, wire::answer) | Answer | Refuse  ─► an Exit
//!       ─► decision::Guard::finish (every call, once: metrics, audit line, cache
//!          invalidation only after a call the metastore executed; the location index reads
//!          back the tables a call that reached the metastore changed)
//!   ─► decision::index (background: built from the metastore at start, rescanned)
//!   ─► upstream::notifications (background): the metastore's notification log followed for
//!      the cache (entries dropped; served only within cache.max_staleness_ms of reading the
//!      log to its end) and the index (tables read again, a rebuild after a gap)
//!   ─► ops: audit (writer thread, JSON lines), metrics, admin (/metrics, /healthz, /readyz)
//! ```
//!
//! Failures are classified by who caused them (`error`) and answered in the protocol with
//! an exception reply carrying the call's sequence id (`wire::answer`).

#![forbid(unsafe_code)]

pub mod auth;
pub mod cli;
pub mod config;
pub mod decision;
pub mod error;
pub mod grants;
pub mod listener;
pub mod ops;
pub mod settings;
#[cfg(test)]
mod testutil;
pub mod upstream;
pub mod wire;

use std::sync::Arc;

use tokio::sync::watch;
use tracing::info;

use crate::auth::tls;
use crate::config::Config;
use crate::decision::{facts, storage};
use crate::listener::connection::Shared;
use crate::listener::server;
use crate::ops::admin;
use crate::ops::metrics::Metrics;

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
    let storage = storage::StorageGuard::new(&settings.storage, metrics.clone()).await;
    let admin_listen = settings.admin_listen;
    let invalid = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, e);
    let tls = match settings.tls.clone() {
        None => None,
        Some(t) => Some(Arc::new(
            tls::Tls::load(t, metrics.clone()).map_err(invalid)?,
        )),
    };
    let upstream_tls = match settings.upstream_tls.clone() {
        None => None,
        Some(t) => Some(Arc::new(
            tls::UpstreamTls::load(t, metrics.clone()).map_err(invalid)?,
        )),
    };
    let mut watched: Vec<Arc<dyn tls::Reload>> = Vec::new();
    let mut every = std::time::Duration::from_secs(10);
    if let Some(t) = &tls {
        every = t.reload_interval();
        watched.push(t.clone());
    }
    if let Some(t) = &upstream_tls {
        watched.push(t.clone());
    }
    if !watched.is_empty() {
        tokio::spawn(tls::watch(watched, every, shutdown.clone()));
    }
    let groups = Arc::new(
        crate::auth::groups::GroupResolver::new(
            &settings.identity.groups,
            settings.identity.metastore_db,
            metrics.clone(),
        )
        .map_err(invalid)?,
    );
    let shared = Arc::new(
        Shared::new(
            settings,
            metrics.clone(),
            storage,
            facts,
            tls,
            upstream_tls,
            groups,
        )
        .map_err(|e| std::io::Error::other(e.to_string()))?,
    );
    // The notification log, followed for the cache and the index (neither on: not read).
    if let Some(poll) = shared.settings.notifications {
        let a = &shared.settings.authz;
        let client = facts::MetaClient::new(
            shared.upstreams.clone(),
            facts::ClientConfig {
                service_user: a.service_user.clone(),
                timeout: a.facts_timeout,
                max_reply_bytes: a.facts_max_reply_bytes,
                max_idle: 1,
            },
        );
        let follower = upstream::notifications::Follower::new(
            client,
            poll,
            shared.replies.clone(),
            Some(shared.guard.index.clone()),
            metrics.clone(),
        );
        if follower.needed() {
            let mut stop = shutdown.clone();
            tokio::spawn(async move {
                tokio::select! {
                    () = follower.run() => {}
                    _ = stop.changed() => {}
                }
            });
        }
    }
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
