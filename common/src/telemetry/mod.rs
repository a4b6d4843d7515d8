//! Telemetry: logs, OpenTelemetry traces, and trace context carried in NATS headers.
//!
//! [`init`] sets up everything once per process: a `tracing` subscriber that prints logs (text
//! or JSON, with `trace_id` and `request_id` at the top level of each JSON line) and turns spans
//! into OpenTelemetry spans. Spans always get W3C trace ids, so results and status records carry
//! a `trace_id` even when nothing is exported; with an OTLP endpoint set they are exported as the
//! OTLP exporter specification says (gRPC or HTTP, TLS for `https://` collectors).
//!
//! Span names and attributes follow OpenTelemetry's messaging and gen_ai conventions; every
//! messaging span is made by [`messaging_span`] (producers) or [`process_span`] (consumers), so
//! the conventions are applied in one place.
//!
//! # Layout
//!
//! - `setup` - [`init`] and the [`TelemetryGuard`] that flushes spans on exit.
//! - `otlp` - which endpoint and protocol the exporter uses, and the exporter itself.
//! - `json` - JSON log lines with the request's `trace_id` and `request_id` at the top level.
//! - `messaging` - producer and consumer spans, `server.*`, `error.type`.
//! - `propagation` - `traceparent` / `tracestate` in NATS and HTTP headers.

mod json;
mod messaging;
mod otlp;
mod propagation;
mod setup;

pub use messaging::{
    Destination, messaging_span, process_span, record_error, record_failure, remember_server,
};
pub use propagation::{current_trace_id, extract, inject, inject_http, set_parent_from};
pub use setup::{TelemetryGuard, init};
