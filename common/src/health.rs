//! `/healthz`, `/readyz` and `/metrics` on every process.
//!
//! `/healthz` answers 200 while the process runs. `/readyz` answers 200 only when the NATS
//! connection is up, the fleet's streams exist and the process says it is ready (the dispatcher
//! once it has the catalog, a worker once its consumers are bound). `/metrics` is Prometheus text.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use prometheus_client::{encoding::text::encode, registry::Registry};
use tokio_util::sync::CancellationToken;

use crate::{Error, topology::Fleet};

/// What `/readyz` looks at.
#[derive(Clone, Debug)]
pub struct Readiness {
    /// The fleet, to check the connection and the streams.
    fleet: Fleet,
    /// Set by the process once its own start-up is done.
    ready: Arc<AtomicBool>,
}

// === impl Readiness ===

impl Readiness {
    /// Not ready until [`Readiness::set_ready`] is called.
    pub fn new(fleet: Fleet) -> Self {
        Self {
            fleet,
            ready: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Marks the process's own start-up as done (or undone, while draining).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    async fn check(&self) -> Result<(), &'static str> {
        if !self.ready.load(Ordering::SeqCst) {
            return Err("starting or draining");
        }
        if self.fleet.client.connection_state() != async_nats::connection::State::Connected {
            return Err("NATS is not connected");
        }
        if !self.fleet.streams_present().await {
            return Err("the fleet's streams are missing");
        }
        Ok(())
    }
}

/// Shared state of the health server.
#[derive(Clone)]
struct Shared {
    /// The process's metrics.
    registry: Arc<Registry>,
    /// What `/readyz` checks.
    readiness: Readiness,
}

/// Serves the health and metrics endpoints on `port` (0: a free port) until `stop` is cancelled.
/// Returns the bound address; the server runs on a spawned task.
///
/// # Errors
///
/// [`Error::Health`] when the port cannot be bound.
pub async fn serve(
    port: u16,
    registry: Arc<Registry>,
    readiness: Readiness,
    stop: CancellationToken,
) -> Result<SocketAddr, Error> {
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", port))
        .await
        .map_err(|source| Error::Health { port, source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| Error::Health { port, source })?;
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(Shared {
            registry,
            readiness,
        });
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::warn!(error = %e, "health server stopped");
        }
    });
    tracing::info!(%addr, "serving /healthz, /readyz and /metrics");
    Ok(addr)
}

async fn readyz(State(shared): State<Shared>) -> impl IntoResponse {
    match shared.readiness.check().await {
        Ok(()) => (StatusCode::OK, "ready\n".to_owned()),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

async fn metrics(State(shared): State<Shared>) -> impl IntoResponse {
    let mut body = String::new();
    match encode(&mut body, &shared.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                axum::http::header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(axum::http::header::CONTENT_TYPE, "text/plain")],
            e.to_string(),
        ),
    }
}
