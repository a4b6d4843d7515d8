//! Messaging spans, named and attributed as OpenTelemetry's messaging conventions say.
//!
//! A span is named `{operation} {destination}`: `publish fleet.tasks.github.repo_info`,
//! `process fleet.tasks.github.repo_info`. A subject with a per-request part is named by its
//! template (`publish fleet.results.{request_id}`) and the real subject goes to
//! `messaging.destination.name` only, so a trace viewer lists one span name per kind of message,
//! never one per request. Producer spans come from [`messaging_span`], consumer spans from
//! [`process_span`]; both carry `server.address` and `server.port` of the NATS server the
//! process is connected to (see [`remember_server`]).

use std::sync::RwLock;

use opentelemetry::trace::Status;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::{Error, messages::MSG_ID_HEADER};

/// `messaging.system` of every messaging span.
const SYSTEM: &str = "nats";

/// The NATS server this process talks to, as `server.address` and `server.port`: set once the
/// connection is made, read by every messaging span.
static SERVER: RwLock<Option<(String, u16)>> = RwLock::new(None);

/// Where a message is published: its subject and, when part of the subject is per request, the
/// template it was made from, which then names the span.
#[derive(Debug, Clone, Copy)]
pub struct Destination<'a> {
    /// The real subject, for `messaging.destination.name`.
    subject: &'a str,
    /// `messaging.destination.template`, such as `fleet.results.{request_id}`.
    template: Option<&'a str>,
}

// === impl Destination ===

impl<'a> Destination<'a> {
    /// A subject with no per-request part (`fleet.requests`, `fleet.tasks.<task>`): it names
    /// the span itself.
    pub fn subject(subject: &'a str) -> Self {
        Self {
            subject,
            template: None,
        }
    }

    /// A subject made from `template` with a per-request part, such as
    /// `fleet.results.r123` from `fleet.results.{request_id}`: the template names the span.
    pub fn templated(subject: &'a str, template: &'a str) -> Self {
        Self {
            subject,
            template: Some(template),
        }
    }

    /// What the span name says: the template when there is one.
    fn label(&self) -> &'a str {
        self.template.unwrap_or(self.subject)
    }
}

impl<'a> From<&'a str> for Destination<'a> {
    fn from(subject: &'a str) -> Self {
        Self::subject(subject)
    }
}

impl<'a> From<&'a String> for Destination<'a> {
    fn from(subject: &'a String) -> Self {
        Self::subject(subject)
    }
}

/// A PRODUCER span for `operation` (the NATS operation, `publish`) to `destination`, named
/// `publish <subject or template>`.
///
/// `messaging.message.id`, `messaging.message.body.size`, `fleet.outcome` and `fleet.attempts`
/// are declared empty for the caller to record.
///
/// ```no_run
/// use fleet_common::telemetry::{Destination, messaging_span};
/// let span = messaging_span("publish", "fleet.tasks.text.transform");
/// let span = messaging_span(
///     "publish",
///     Destination::templated("fleet.results.r1", "fleet.results.{request_id}"),
/// );
/// ```
pub fn messaging_span<'a>(
    operation: &str,
    destination: impl Into<Destination<'a>>,
) -> tracing::Span {
    let destination = destination.into();
    let (address, port) = server();
    tracing::info_span!(
        "fleet.publish",
        otel.name = format!("{operation} {}", destination.label()),
        otel.kind = "producer",
        messaging.system = SYSTEM,
        messaging.operation.name = operation,
        messaging.operation.type = "send",
        messaging.destination.name = destination.subject,
        messaging.destination.template = destination.template,
        messaging.message.id = Empty,
        messaging.message.body.size = Empty,
        server.address = address,
        server.port = port,
        fleet.outcome = Empty,
        fleet.attempts = Empty,
    )
}

/// The CONSUMER span of processing a JetStream `message`, named `process <subject>`, made a
/// child of the `traceparent` the message carries.
///
/// The durable consumer that delivered it (`messaging.consumer.group.name`), the message's id
/// (`Nats-Msg-Id`) and its body size are recorded; the fleet's own fields (`request_id`,
/// `task`, `task_id`, `attempt`, `delivery`, `worker`, `classified_by`, `routing_reason`,
/// `trace_id`, `outcome`)
/// are declared empty for the handler to record.
///
/// ```no_run
/// # fn f(message: &async_nats::jetstream::Message) {
/// let span = fleet_common::telemetry::process_span(message);
/// # }
/// ```
pub fn process_span(message: &async_nats::jetstream::Message) -> tracing::Span {
    let (address, port) = server();
    let consumer = message.info().ok().map(|info| info.consumer);
    let id = message
        .headers
        .as_ref()
        .and_then(|h| h.get(MSG_ID_HEADER))
        .map(|v| v.as_str());
    let span = tracing::info_span!(
        "fleet.process",
        otel.name = format!("process {}", message.subject),
        otel.kind = "consumer",
        messaging.system = SYSTEM,
        messaging.operation.name = "process",
        messaging.operation.type = "process",
        messaging.destination.name = message.subject.as_str(),
        messaging.consumer.group.name = consumer,
        messaging.message.id = id,
        messaging.message.body.size = i64::try_from(message.payload.len()).unwrap_or(i64::MAX),
        server.address = address,
        server.port = port,
        request_id = Empty,
        task = Empty,
        task_id = Empty,
        attempt = Empty,
        delivery = Empty,
        worker = Empty,
        classified_by = Empty,
        routing_reason = Empty,
        trace_id = Empty,
        outcome = Empty,
    );
    super::set_parent_from(&span, message.headers.as_ref());
    span
}

/// Notes which server `client` is connected to, for the `server.*` attributes of messaging
/// spans. Call it once the connection is made; the latest call wins.
pub async fn remember_server(client: &async_nats::Client) {
    let Ok(pool) = client.server_pool().await else {
        return;
    };
    let connected = pool
        .iter()
        .find(|s| s.did_connect && s.failed_attempts == 0)
        .or_else(|| pool.iter().find(|s| s.did_connect));
    if let Some(server) = connected {
        let entry = (server.addr.host().to_owned(), server.addr.port());
        match SERVER.write() {
            Ok(mut slot) => *slot = Some(entry),
            Err(poisoned) => *poisoned.into_inner() = Some(entry),
        }
    }
}

/// `server.address` and `server.port`, when known.
fn server() -> (Option<String>, Option<i64>) {
    let slot = match SERVER.read() {
        Ok(slot) => slot,
        Err(poisoned) => poisoned.into_inner(),
    };
    match slot.as_ref() {
        Some((address, port)) => (Some(address.clone()), Some(i64::from(*port))),
        None => (None, None),
    }
}

/// Marks the current span as failed: OpenTelemetry status `ERROR`, `error.type` (a short,
/// stable class of the failure such as `task_error`, `timeout` or `503`) and an `exception`
/// event with `message`.
pub fn record_error(error_type: &str, message: &str) {
    mark_failed(&tracing::Span::current(), error_type, message);
}

/// Marks `span` as failed with `error`, as [`record_error`] does, its class as `error.type`.
pub fn record_failure(span: &tracing::Span, error: &Error) {
    mark_failed(span, error_type(error), &error.to_string());
}

/// Status, `error.type` and the `exception` event.
fn mark_failed(span: &tracing::Span, error_type: &str, message: &str) {
    span.set_status(Status::error(message.to_owned()));
    span.set_attribute("error.type", error_type.to_owned());
    span.add_event(
        "exception",
        vec![
            opentelemetry::KeyValue::new("exception.type", error_type.to_owned()),
            opentelemetry::KeyValue::new("exception.message", message.to_owned()),
        ],
    );
}

/// The `error.type` of a fleet error.
fn error_type(error: &Error) -> &'static str {
    match error {
        Error::Connect { .. } => "connect",
        Error::Credentials { .. } => "credentials",
        Error::JetStream { .. } => "jetstream",
        Error::Decode { .. } => "decode",
        Error::Config(_) => "config",
        Error::Telemetry(_) => "telemetry",
        Error::Health { .. } => "health",
        // A variant added later: OpenTelemetry's fallback class until it is named here.
        #[allow(unreachable_patterns)]
        _ => "_OTHER",
    }
}
