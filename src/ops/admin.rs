//! Admin HTTP port: `/metrics` (Prometheus text), `/healthz` (process up), `/readyz` (a
//! metastore accepts connections; the body also tells the location index's state, which does
//! not decide readiness: calls that name no location are served while it builds).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::ops::metrics::Metrics;
use crate::upstream::Upstreams;

/// The admin listener's shared state.
pub struct Admin {
    listener: TcpListener,
    metrics: Arc<Metrics>,
    upstreams: Upstreams,
}

impl Admin {
    pub async fn bind(
        addr: SocketAddr,
        metrics: Arc<Metrics>,
        upstreams: Upstreams,
    ) -> std::io::Result<Admin> {
        Ok(Admin {
            listener: TcpListener::bind(addr).await?,
            metrics,
            upstreams,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` turns true.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let state = Arc::new((self.metrics, self.upstreams));
        loop {
            let (stream, _) = tokio::select! {
                r = self.listener.accept() => match r {
                    Ok(a) => a,
                    Err(e) => {
                        warn!(error = %e, "admin accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = crate::until_shutdown(&mut shutdown) => return,
            };
            let state = state.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(handle(&state.0, &state.1, req).await) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service);
                let _ = tokio::time::timeout(std::time::Duration::from_secs(30), conn).await;
            });
        }
    }
}

/// The location index's state as its metrics tell it ("location index: ready, 1234
/// locations").
fn index_line(metrics: &Metrics) -> String {
    use crate::decision::index::STATE_LABELS;
    use crate::ops::metrics::IndexStateLabels;
    let state = STATE_LABELS
        .into_iter()
        .find(|&state| {
            metrics
                .index_state
                .get_or_create(&IndexStateLabels { state })
                .get()
                == 1
        })
        .unwrap_or("disabled");
    let detail = match state {
        "building" => format!(
            "{} tables read so far; calls that name a location wait, then are refused",
            metrics.index_build_tables.get()
        ),
        "incomplete" => "calls that name a location are refused".to_string(),
        "disabled" => "index.enabled = false: locations are not checked for overlap".to_string(),
        _ => format!("{} locations", metrics.index_entries.get()),
    };
    format!("location index: {state}, {detail}")
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("static response parts are valid")
}

async fn handle(
    metrics: &Metrics,
    upstreams: &Upstreams,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".into(),
        );
    }
    match req.uri().path() {
        "/metrics" => text(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.encode(),
        ),
        "/healthz" => text(StatusCode::OK, "text/plain", "ok\n".into()),
        "/readyz" => match upstreams.connect(None, 64 * 1024).await {
            Ok((_stream, uri, _)) => {
                metrics.upstream_up.set(1);
                text(
                    StatusCode::OK,
                    "text/plain",
                    format!("ready: {uri}\n{}\n", index_line(metrics)),
                )
            }
            Err(e) => {
                debug!(error = %e, "readiness probe failed");
                metrics.upstream_up.set(0);
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    format!("not ready: {e}\n{}\n", index_line(metrics)),
                )
            }
        },
        _ => text(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /metrics, /healthz, /readyz\n".into(),
        ),
    }
}
