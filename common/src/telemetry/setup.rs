//! [`init`]: the process's one `tracing` subscriber, its log output and its span export.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::{Resource, propagation::TraceContextPropagator, trace::SdkTracerProvider};
use tracing_subscriber::{
    EnvFilter, Layer,
    filter::{self, FilterExt, LevelFilter},
    layer::SubscriberExt,
    util::SubscriberInitExt,
};

use super::{json, otlp};
use crate::{
    Error,
    config::{LogFormat, OtlpArgs},
};

/// Flushes and shuts the trace pipeline down when dropped: spans are not lost on exit.
#[derive(Debug)]
pub struct TelemetryGuard {
    /// The provider every span goes through.
    provider: SdkTracerProvider,
}

// === impl TelemetryGuard ===

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Err(e) = self.provider.force_flush() {
            eprintln!("flushing spans failed: {e}");
        }
        let _ = self.provider.shutdown();
    }
}

/// Sets up logs and traces for a process named `default_service` (unless `OTEL_SERVICE_NAME`
/// says otherwise), logging at `info` unless `RUST_LOG` says otherwise. Spans are exported over
/// OTLP when `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT` is set (see
/// the `otlp` module for how the exporter's settings are read). Call it once, early in `main`,
/// inside the Tokio runtime; keep the guard.
///
/// # Errors
///
/// [`Error::Telemetry`] when the OTLP exporter cannot be built or a subscriber is already set.
///
/// ```no_run
/// # async fn f(args: fleet_common::config::TelemetryArgs) -> Result<(), fleet_common::Error> {
/// let _guard = fleet_common::telemetry::init("fleet-worker", &args.otlp, args.log_format, "info")?;
/// # Ok(()) }
/// ```
pub fn init(
    default_service: &str,
    args: &OtlpArgs,
    log_format: LogFormat,
    default_filter: &str,
) -> Result<TelemetryGuard, Error> {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let service = args
        .service_name
        .clone()
        .unwrap_or_else(|| default_service.to_owned());
    let resource = Resource::builder()
        .with_service_name(service.clone())
        .build();
    let mut builder = SdkTracerProvider::builder().with_resource(resource);
    if let Some(target) = otlp::resolve(args, otlp::from_env)? {
        builder = builder.with_batch_exporter(exporter(&target)?);
    }
    let provider = builder.build();
    let tracer = provider.tracer(service);
    opentelemetry::global::set_tracer_provider(provider.clone());

    // RUST_LOG filters the log lines only: spans (and so trace ids) stay on at `info` whatever
    // the log level, and quieter logs cost less per request. The log output sees those spans
    // too, so a warning still names the request it is about.
    let log_filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(default_filter))
        .or(filter::filter_fn(|meta| {
            meta.is_span() && *meta.level() <= tracing::Level::INFO
        }));
    // Text lines do without the spans' fields: formatting every span's fields on every record
    // cost more per request than the request's own work (measured with fleet-bench: p50 at 1
    // in flight 1.52x relay-min without, 2.35x with). JSON lines keep `request_id` from spans.
    let text_filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(default_filter))
        .and(filter::filter_fn(|meta| !meta.is_span()));
    // Source locations, thread names and busy/idle timings on every span cost more per
    // request than the rest of the span (measured with fleet-bench); the spans do without.
    let otel = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_location(false)
        .with_threads(false)
        .with_tracked_inactivity(false)
        .with_filter(LevelFilter::INFO);
    let registry = tracing_subscriber::registry().with(otel);
    let result = match log_format {
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_filter(text_filter),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(json::layer(std::io::stderr).with_filter(log_filter))
            .try_init(),
    };
    result.map_err(|e| Error::Telemetry(e.to_string()))?;
    Ok(TelemetryGuard { provider })
}

#[cfg(feature = "otlp")]
fn exporter(target: &otlp::Target) -> Result<opentelemetry_otlp::SpanExporter, Error> {
    otlp::exporter(target)
}

#[cfg(not(feature = "otlp"))]
fn exporter(
    _target: &otlp::Target,
) -> Result<opentelemetry_sdk::trace::InMemorySpanExporter, Error> {
    Err(Error::Telemetry(
        "this build has no OTLP exporter (feature `otlp` is off)".into(),
    ))
}
