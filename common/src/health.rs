//! `/healthz`, `/readyz` and `/metrics` on every process.
//!
//! `/healthz` answers 200 while the process runs. `/readyz` answers 200 only when the NATS
//! connection is up, the fleet's streams exist and the process says it is ready (the dispatcher
//! once it has the catalog, a worker once its consumers are bound). `/metrics` is OpenMetrics
//! text: the process's own registry, and what every process adds here (one place for all
//! binaries): `fleet_build_info{version, service}`, the standard `process_*` metrics
//! ([`process`]) and the fleet's queues as JetStream reports them ([`jetstream`]).
//!
//! # Layout
//!
//! - [`process`] - `process_cpu_seconds_total`, `process_resident_memory_bytes`, ... from
//!   `/proc/self`.
//! - [`jetstream`] - `fleet_consumer_pending`, `fleet_consumer_ack_pending`,
//!   `fleet_dlq_messages`, read when Prometheus scrapes.

mod jetstream;
mod process;

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use prometheus_client::{
    encoding::text::{encode_eof, encode_registry},
    metrics::info::Info,
    registry::Registry,
};
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
    /// What every process reports: build info, process metrics, the queues.
    common: Arc<Registry>,
    /// The queue gauges in `common`, refreshed before each scrape.
    queues: jetstream::QueueGauges,
    /// What `/readyz` checks.
    readiness: Readiness,
}

/// The metrics every process serves besides its own: `fleet_build_info`, the process metrics
/// and the queue gauges (registered here, refreshed by [`metrics`]).
fn common_registry(queues: &jetstream::QueueGauges) -> Registry {
    let mut registry = Registry::default();
    registry.sub_registry_with_prefix("fleet").register(
        "build",
        "The fleet's version and which of its programs this is (always 1)",
        Info::new(vec![
            ("version", env!("CARGO_PKG_VERSION").to_owned()),
            ("service", service_name()),
        ]),
    );
    registry.register_collector(Box::new(process::ProcessCollector::new()));
    registry.register_collector(Box::new(queues.clone()));
    registry
}

/// `fleet-<program>` (`fleet-dispatcher`, `fleet-worker`), from the running executable's name;
/// the same as the default `OTEL_SERVICE_NAME` and the pods' `app.kubernetes.io/name`.
fn service_name() -> String {
    let program = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "unknown".to_owned());
    if program.starts_with("fleet") {
        program
    } else {
        format!("fleet-{program}")
    }
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
        .with_state({
            let queues = jetstream::QueueGauges::default();
            Shared {
                registry,
                common: Arc::new(common_registry(&queues)),
                queues,
                readiness,
            }
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
    shared.queues.refresh(&shared.readiness.fleet).await;
    let mut body = String::new();
    let encoded = encode_registry(&mut body, &shared.registry)
        .and_then(|()| encode_registry(&mut body, &shared.common))
        .and_then(|()| encode_eof(&mut body));
    match encoded {
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
