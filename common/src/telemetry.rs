//! Telemetry: logs, OpenTelemetry traces, and trace context carried in NATS headers.
//!
//! [`init`] sets up everything once per process: a `tracing` subscriber that prints logs (text
//! or JSON) and turns spans into OpenTelemetry spans. Spans always get W3C trace ids, so results
//! and status records carry a `trace_id` even when nothing is exported; with
//! `OTEL_EXPORTER_OTLP_ENDPOINT` set they are exported over OTLP (gRPC or HTTP).

use async_nats::HeaderMap;
use opentelemetry::{
    Context,
    propagation::{Extractor, Injector, TextMapPropagator},
    trace::{TraceContextExt, TracerProvider as _},
};
use opentelemetry_sdk::{Resource, propagation::TraceContextPropagator, trace::SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{
    EnvFilter, Layer, filter::LevelFilter, layer::SubscriberExt, util::SubscriberInitExt,
};

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

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Err(e) = self.provider.force_flush() {
            eprintln!("flushing spans failed: {e}");
        }
        let _ = self.provider.shutdown();
    }
}

/// Sets up logs and traces for a process named `default_service` (unless `OTEL_SERVICE_NAME`
/// says otherwise), logging at `info` unless `RUST_LOG` says otherwise. Call it once, early in
/// `main`, inside the Tokio runtime; keep the guard.
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
    if let Some(endpoint) = args.otlp_endpoint.as_deref().filter(|e| !e.is_empty()) {
        builder = builder.with_batch_exporter(exporter(endpoint, &args.otlp_protocol)?);
    }
    let provider = builder.build();
    let tracer = provider.tracer(service);
    opentelemetry::global::set_tracer_provider(provider.clone());

    // RUST_LOG filters the log lines only: spans (and so trace ids) stay on at `info` whatever
    // the log level, and quieter logs cost less per request.
    let log_filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let otel = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(LevelFilter::INFO);
    let registry = tracing_subscriber::registry().with(otel);
    let result = match log_format {
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_filter(log_filter),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_span_list(true)
                    .with_writer(std::io::stderr)
                    .with_filter(log_filter),
            )
            .try_init(),
    };
    result.map_err(|e| Error::Telemetry(e.to_string()))?;
    Ok(TelemetryGuard { provider })
}

#[cfg(feature = "otlp")]
fn exporter(endpoint: &str, protocol: &str) -> Result<opentelemetry_otlp::SpanExporter, Error> {
    use opentelemetry_otlp::{SpanExporter, WithExportConfig};
    let built = match protocol {
        "http/protobuf" | "http" => SpanExporter::builder()
            .with_http()
            .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
            .build(),
        "grpc" | "" => SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .build(),
        other => {
            return Err(Error::Telemetry(format!(
                "OTEL_EXPORTER_OTLP_PROTOCOL `{other}` is not supported: use grpc or http/protobuf"
            )));
        }
    };
    built.map_err(|e| Error::Telemetry(e.to_string()))
}

#[cfg(not(feature = "otlp"))]
fn exporter(
    _endpoint: &str,
    _protocol: &str,
) -> Result<opentelemetry_sdk::trace::InMemorySpanExporter, Error> {
    Err(Error::Telemetry(
        "this build has no OTLP exporter (feature `otlp` is off)".into(),
    ))
}

/// The W3C trace id of the current span, as 32 hex digits, when it has one.
pub fn current_trace_id() -> Option<String> {
    let cx = tracing::Span::current().context();
    let span = cx.span();
    let sc = span.span_context();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

/// A PRODUCER span for publishing to `subject`, with the messaging attributes applied once.
///
/// `messaging.message.id`, `messaging.message.body.size` and `fleet.outcome` are declared empty
/// for the caller to record.
pub fn messaging_span(operation: &str, subject: &str) -> tracing::Span {
    tracing::info_span!(
        "fleet.publish",
        otel.name = format!("{subject} {operation}"),
        otel.kind = "producer",
        messaging.system = "nats",
        messaging.operation.type = operation,
        messaging.destination.name = subject,
        messaging.message.id = tracing::field::Empty,
        messaging.message.body.size = tracing::field::Empty,
        fleet.outcome = tracing::field::Empty,
        fleet.attempts = tracing::field::Empty,
    )
}

/// Writes the current span's `traceparent` and `tracestate` into NATS headers.
pub fn inject(headers: &mut HeaderMap) {
    let cx = tracing::Span::current().context();
    TraceContextPropagator::new().inject_context(&cx, &mut HeaderInjector(headers));
}

/// Writes the current span's `traceparent` and `tracestate` into outbound HTTP headers.
pub fn inject_http(headers: &mut reqwest::header::HeaderMap) {
    let cx = tracing::Span::current().context();
    TraceContextPropagator::new().inject_context(&cx, &mut HttpInjector(headers));
}

/// Marks the current span as failed with `message` (OpenTelemetry status `ERROR`).
pub fn record_error(message: &str) {
    let span = tracing::Span::current();
    span.set_status(opentelemetry::trace::Status::error(message.to_owned()));
    span.add_event(
        "exception",
        vec![opentelemetry::KeyValue::new(
            "exception.message",
            message.to_owned(),
        )],
    );
}

/// Reads `traceparent` and `tracestate` from NATS headers; an empty context when absent.
pub fn extract(headers: Option<&HeaderMap>) -> Context {
    match headers {
        Some(h) => TraceContextPropagator::new().extract(&HeaderExtractor(h)),
        None => Context::new(),
    }
}

/// Makes `span` a child of the trace context in `headers`, when there is one.
pub fn set_parent_from(span: &tracing::Span, headers: Option<&HeaderMap>) {
    let cx = extract(headers);
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
}

/// Lets the propagator write NATS headers.
struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key, value.as_str());
    }
}

/// Lets the propagator write HTTP headers.
struct HttpInjector<'a>(&'a mut reqwest::header::HeaderMap);

impl Injector for HttpInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            reqwest::header::HeaderName::from_bytes(key.as_bytes()),
            reqwest::header::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// Lets the propagator read NATS headers.
struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|v| v.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k.as_ref()).collect()
    }
}
