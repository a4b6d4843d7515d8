//! An OTLP trace receiver inside the test process, on `127.0.0.1:0`: OTLP/gRPC (`TraceService`,
//! [`OtlpReceiver::start`]), the same over TLS ([`OtlpReceiver::start_tls`]), or OTLP/HTTP with
//! protobuf bodies ([`OtlpReceiver::start_http`], any path, the paths recorded).
//!
//! Give its [`OtlpReceiver::endpoint`] to the fleet as `OTEL_EXPORTER_OTLP_ENDPOINT` (with
//! `OTEL_EXPORTER_OTLP_PROTOCOL=grpc` or `http/protobuf`) and every span the processes export
//! lands in [`OtlpReceiver::spans`], flattened into [`CollectedSpan`]s with their resource's
//! `service.name`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message as _;
use serde_json::Value;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Identity, ServerTlsConfig};

/// OTLP `Span.kind` values.
const KINDS: [&str; 6] = [
    "unspecified",
    "internal",
    "server",
    "client",
    "producer",
    "consumer",
];

/// One exported span, flattened.
#[derive(Debug, Clone)]
pub struct CollectedSpan {
    /// `service.name` of the resource that exported it.
    pub service: String,
    /// The span's name as a trace viewer lists it (`process fleet.requests`, `GET`, ...).
    pub name: String,
    /// The trace id, 32 hex digits.
    pub trace_id: String,
    /// The span id, 16 hex digits.
    pub span_id: String,
    /// The parent's span id (None for a root span).
    pub parent_span_id: Option<String>,
    /// `unspecified`, `internal`, `server`, `client`, `producer` or `consumer`.
    pub kind: &'static str,
    /// `unset`, `ok` or `error`.
    pub status: &'static str,
    /// The status message.
    pub status_message: String,
    /// Attributes as JSON values.
    pub attributes: BTreeMap<String, Value>,
    /// The names of the span's events (e.g. `exception`).
    pub events: Vec<String>,
    /// Start time, ns since the epoch.
    pub start: u64,
}

// === impl CollectedSpan ===

impl CollectedSpan {
    /// The attribute `key`, or `Value::Null`.
    pub fn attr(&self, key: &str) -> &Value {
        self.attributes.get(key).unwrap_or(&Value::Null)
    }

    /// Is this a root span?
    pub fn is_root(&self) -> bool {
        self.parent_span_id.is_none()
    }
}

/// Receives spans; stops on drop.
#[derive(Debug)]
pub struct OtlpReceiver {
    /// `http://127.0.0.1:<port>` (`https://` over TLS).
    endpoint: String,
    /// Everything received.
    spans: Arc<Mutex<Vec<CollectedSpan>>>,
    /// The paths OTLP/HTTP exports were posted to, in order.
    paths: Arc<Mutex<Vec<String>>>,
    /// The server task.
    task: tokio::task::JoinHandle<()>,
}

/// The gRPC service.
#[derive(Debug)]
struct Collector {
    /// Where the spans go.
    spans: Arc<Mutex<Vec<CollectedSpan>>>,
}

// === impl OtlpReceiver ===

impl OtlpReceiver {
    /// Binds `127.0.0.1:0` and serves OTLP/gRPC traces in the background.
    ///
    /// # Panics
    ///
    /// When the listener cannot be bound.
    pub async fn start() -> Self {
        Self::start_grpc(None).await
    }

    /// Binds `127.0.0.1:0` and serves OTLP/gRPC traces over TLS with the certificate
    /// `cert_pem` (which must name `127.0.0.1`) and its key; the endpoint is `https://`.
    ///
    /// # Panics
    ///
    /// When the listener cannot be bound or the certificate is refused.
    pub async fn start_tls(cert_pem: &[u8], key_pem: &[u8]) -> Self {
        // tonic's TLS server builds on rustls' process-wide provider: aws-lc-rs, as the fleet's
        // processes use; a provider installed earlier stays.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        Self::start_grpc(Some(Identity::from_pem(cert_pem, key_pem))).await
    }

    async fn start_grpc(tls: Option<Identity>) -> Self {
        let incoming = TcpIncoming::bind("127.0.0.1:0".parse().expect("an address"))
            .expect("bind the OTLP receiver");
        let addr = incoming.local_addr().expect("OTLP receiver address");
        let spans = Arc::new(Mutex::new(Vec::new()));
        let service = TraceServiceServer::new(Collector {
            spans: spans.clone(),
        });
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut server = tonic::transport::Server::builder();
        if let Some(identity) = tls {
            server = server
                .tls_config(ServerTlsConfig::new().identity(identity))
                .expect("the OTLP receiver's certificate");
        }
        let task = tokio::spawn(async move {
            if let Err(e) = server
                .add_service(service)
                .serve_with_incoming(incoming)
                .await
            {
                eprintln!("OTLP receiver stopped: {e}");
            }
        });
        Self {
            endpoint: format!("{scheme}://{addr}"),
            spans,
            paths: Arc::default(),
            task,
        }
    }

    /// Binds `127.0.0.1:0` and serves OTLP/HTTP (protobuf) on every path, recording the paths
    /// ([`OtlpReceiver::paths`]); the endpoint is the base URL, with no path.
    ///
    /// # Panics
    ///
    /// When the listener cannot be bound.
    pub async fn start_http() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the OTLP/HTTP receiver");
        let addr = listener.local_addr().expect("OTLP/HTTP receiver address");
        let spans: Arc<Mutex<Vec<CollectedSpan>>> = Arc::default();
        let paths: Arc<Mutex<Vec<String>>> = Arc::default();
        let state = (spans.clone(), paths.clone());
        let app = axum::Router::new()
            .fallback(axum::routing::post(export_http))
            .with_state(state);
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("OTLP/HTTP receiver stopped: {e}");
            }
        });
        Self {
            endpoint: format!("http://{addr}"),
            spans,
            paths,
            task,
        }
    }

    /// The paths OTLP/HTTP exports were posted to, in order (empty for gRPC).
    pub fn paths(&self) -> Vec<String> {
        self.paths.lock().expect("OTLP receiver state").clone()
    }

    /// The value for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        self.endpoint.clone()
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<CollectedSpan> {
        self.spans.lock().expect("OTLP receiver state").clone()
    }

    /// The spans of trace `trace_id`.
    pub fn trace(&self, trace_id: &str) -> Vec<CollectedSpan> {
        self.spans()
            .into_iter()
            .filter(|s| s.trace_id == trace_id)
            .collect()
    }

    /// Waits up to `timeout` until the spans of `trace_id` satisfy `done`; returns them either
    /// way (the caller's assertions then say what is missing).
    pub async fn wait_trace(
        &self,
        trace_id: &str,
        timeout: Duration,
        done: impl Fn(&[CollectedSpan]) -> bool,
    ) -> Vec<CollectedSpan> {
        let found = crate::poll_until(timeout, || {
            let spans = self.trace(trace_id);
            let ok = done(&spans);
            async move { ok.then_some(spans) }
        })
        .await;
        found.unwrap_or_else(|| self.trace(trace_id))
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// === impl Collector ===

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let collected = collect(request.into_inner());
        self.spans
            .lock()
            .expect("OTLP receiver state")
            .extend(collected);
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// What the OTLP/HTTP receiver fills: the spans and the paths posted to.
type HttpState = (Arc<Mutex<Vec<CollectedSpan>>>, Arc<Mutex<Vec<String>>>);

/// `POST <any path>` with an OTLP/HTTP protobuf body.
async fn export_http(
    axum::extract::State((spans, paths)): axum::extract::State<HttpState>,
    uri: axum::http::Uri,
    body: bytes::Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    paths
        .lock()
        .expect("OTLP receiver state")
        .push(uri.path().to_string());
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return (
            axum::http::StatusCode::BAD_REQUEST,
            "not an OTLP protobuf body",
        )
            .into_response();
    };
    spans
        .lock()
        .expect("OTLP receiver state")
        .extend(collect(request));
    let answer = ExportTraceServiceResponse {
        partial_success: None,
    };
    (
        [(axum::http::header::CONTENT_TYPE, "application/x-protobuf")],
        answer.encode_to_vec(),
    )
        .into_response()
}

/// The spans of one export, flattened.
fn collect(request: ExportTraceServiceRequest) -> Vec<CollectedSpan> {
    let mut collected = Vec::new();
    for resource_spans in request.resource_spans {
        let service = resource_spans
            .resource
            .as_ref()
            .and_then(|r| {
                r.attributes
                    .iter()
                    .find(|kv| kv.key == "service.name")
                    .map(|kv| json_of(kv.value.as_ref()))
            })
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                let status = span.status.as_ref();
                collected.push(CollectedSpan {
                    service: service.clone(),
                    name: span.name,
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: (!span.parent_span_id.is_empty()
                        && span.parent_span_id.iter().any(|b| *b != 0))
                    .then(|| hex(&span.parent_span_id)),
                    kind: usize::try_from(span.kind)
                        .ok()
                        .and_then(|k| KINDS.get(k).copied())
                        .unwrap_or("unspecified"),
                    status: match status.map(|s| s.code) {
                        Some(1) => "ok",
                        Some(2) => "error",
                        _ => "unset",
                    },
                    status_message: status.map(|s| s.message.clone()).unwrap_or_default(),
                    attributes: attributes(&span.attributes),
                    events: span.events.into_iter().map(|e| e.name).collect(),
                    start: span.start_time_unix_nano,
                });
            }
        }
    }
    collected
}

/// Lower-case hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Attributes as a map of JSON values.
fn attributes(kvs: &[KeyValue]) -> BTreeMap<String, Value> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), json_of(kv.value.as_ref())))
        .collect()
}

/// An OTLP value as JSON.
fn json_of(value: Option<&AnyValue>) -> Value {
    match value.and_then(|v| v.value.as_ref()) {
        None => Value::Null,
        Some(any_value::Value::StringValue(s)) => Value::from(s.clone()),
        Some(any_value::Value::BoolValue(b)) => Value::from(*b),
        Some(any_value::Value::IntValue(i)) => Value::from(*i),
        Some(any_value::Value::DoubleValue(d)) => Value::from(*d),
        Some(any_value::Value::ArrayValue(a)) => {
            Value::Array(a.values.iter().map(|v| json_of(Some(v))).collect())
        }
        Some(any_value::Value::KvlistValue(l)) => Value::Object(
            l.values
                .iter()
                .map(|kv| (kv.key.clone(), json_of(kv.value.as_ref())))
                .collect(),
        ),
        Some(any_value::Value::BytesValue(b)) => Value::from(hex(b)),
        Some(_) => Value::Null,
    }
}
