//! JSON log lines: one object per line, the event's fields at the top level beside
//! `timestamp`, `level`, `target` and `span` (the innermost span's name), and the `trace_id` and
//! `request_id` of the request the line is about, also at the top level.
//!
//! `request_id` is the nearest enclosing span's `request_id` field (kept by [`Correlate`] as
//! spans record it); `trace_id` is the W3C trace id of the nearest enclosing span that has an
//! OpenTelemetry span, read from the OpenTelemetry layer itself, so every line inside a traced
//! span carries it, whether or not the span recorded a `trace_id` field. A field of the event
//! itself with either name wins.

use std::fmt;
use std::sync::{Arc, OnceLock};

use opentelemetry::trace::TraceContextExt;
use serde_json::{Map, Value};
use tracing::{
    Dispatch, Event, Subscriber,
    dispatcher::WeakDispatch,
    field::{Field, Visit},
    span,
};
use tracing_subscriber::{
    Layer,
    fmt::{
        FmtContext, FormatEvent, FormatFields, MakeWriter,
        format::Writer,
        time::{FormatTime, SystemTime},
    },
    layer::Context,
    registry::LookupSpan,
};

/// The span field that names the request.
const REQUEST_ID: &str = "request_id";

/// The JSON log layer, writing lines to `writer`.
pub(super) fn layer<S, W>(writer: W) -> impl Layer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let dispatch = Arc::new(OnceLock::new());
    Correlate {
        dispatch: dispatch.clone(),
    }
    .and_then(
        tracing_subscriber::fmt::layer()
            .event_format(JsonLines { dispatch })
            .with_writer(writer),
    )
}

/// Keeps each span's `request_id`, and the dispatch the OpenTelemetry layer lives in.
struct Correlate {
    /// Shared with [`JsonLines`], which reads trace ids through it.
    dispatch: Arc<OnceLock<WeakDispatch>>,
}

/// A span's `request_id`, in its extensions.
struct RequestId(String);

/// Writes one JSON object per event.
struct JsonLines {
    /// The subscriber, to ask the OpenTelemetry layer for a span's trace id (weak: the
    /// subscriber owns this formatter).
    dispatch: Arc<OnceLock<WeakDispatch>>,
}

// === impl Correlate ===

impl<S> Layer<S> for Correlate
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_register_dispatch(&self, subscriber: &Dispatch) {
        let _ = self.dispatch.set(subscriber.downgrade());
    }

    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        let mut found = Find::default();
        attrs.record(&mut found);
        if let (Some(value), Some(span)) = (found.0, ctx.span(id)) {
            span.extensions_mut().insert(RequestId(value));
        }
    }

    fn on_record(&self, id: &span::Id, values: &span::Record<'_>, ctx: Context<'_, S>) {
        let mut found = Find::default();
        values.record(&mut found);
        if let (Some(value), Some(span)) = (found.0, ctx.span(id)) {
            span.extensions_mut().replace(RequestId(value));
        }
    }
}

// === impl JsonLines ===

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'w> FormatFields<'w> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut line = Map::new();
        let mut timestamp = String::new();
        SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
        line.insert("timestamp".into(), timestamp.into());
        line.insert("level".into(), meta.level().as_str().into());
        line.insert("target".into(), meta.target().into());
        event.record(&mut Fields(&mut line));
        if let Some(scope) = ctx.event_scope() {
            let spans: Vec<_> = scope.collect();
            if let Some(innermost) = spans.first() {
                line.entry("span")
                    .or_insert_with(|| innermost.name().into());
            }
            if !line.contains_key(REQUEST_ID) {
                let id = spans.iter().find_map(|span| {
                    let extensions = span.extensions();
                    extensions.get::<RequestId>().map(|r| r.0.clone())
                });
                if let Some(id) = id {
                    line.insert(REQUEST_ID.into(), id.into());
                }
            }
            if !line.contains_key("trace_id")
                && let Some(dispatch) = self.dispatch.get().and_then(WeakDispatch::upgrade)
            {
                // No span's extensions are held here: the OpenTelemetry layer locks them.
                let trace_id = spans
                    .iter()
                    .find_map(|span| trace_id(&span.id(), &dispatch));
                if let Some(trace_id) = trace_id {
                    line.insert("trace_id".into(), trace_id.into());
                }
            }
        }
        let text = serde_json::to_string(&line).map_err(|_| fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

/// The W3C trace id of span `id`, when the OpenTelemetry layer traces it.
fn trace_id(id: &span::Id, dispatch: &Dispatch) -> Option<String> {
    let cx = tracing_opentelemetry::get_otel_context(id, dispatch)?;
    let span = cx.span();
    let sc = span.span_context();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

/// Finds the value of the `request_id` field.
#[derive(Default)]
struct Find(Option<String>);

// === impl Find ===

impl Visit for Find {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == REQUEST_ID {
            self.0 = Some(value.to_owned());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == REQUEST_ID {
            self.0 = Some(format!("{value:?}"));
        }
    }
}

/// Puts an event's fields into the line.
struct Fields<'a>(&'a mut Map<String, Value>);

// === impl Fields ===

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0.insert(field.name().into(), value.to_string().into());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::Mutex;

    use async_nats::HeaderMap;
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tracing::field::Empty;
    use tracing_subscriber::{
        EnvFilter,
        filter::{self, FilterExt, LevelFilter},
        layer::SubscriberExt,
    };

    use super::*;

    /// Collects what the layer writes.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("buffer").extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buffer {
        type Writer = Buffer;

        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    /// The JSON lines logged while `f` runs, with `directives` as `RUST_LOG`, beside an
    /// OpenTelemetry layer as `init` sets them up.
    fn logged(directives: &str, f: impl FnOnce()) -> Vec<Value> {
        let provider = SdkTracerProvider::builder().build();
        let otel = tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("test"))
            .with_filter(LevelFilter::INFO);
        let buffer = Buffer::default();
        let log_filter = EnvFilter::new(directives).or(filter::filter_fn(|meta| {
            meta.is_span() && *meta.level() <= tracing::Level::INFO
        }));
        let subscriber = tracing_subscriber::registry()
            .with(otel)
            .with(layer(buffer.clone()).with_filter(log_filter));
        tracing::subscriber::with_default(subscriber, f);
        let bytes = buffer.0.lock().expect("buffer").clone();
        String::from_utf8(bytes)
            .expect("UTF-8")
            .lines()
            .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
            .collect()
    }

    const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

    fn caller() -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            "traceparent",
            format!("00-{CALLER_TRACE}-00f067aa0ba902b7-01").as_str(),
        );
        headers
    }

    #[test]
    fn trace_and_request_ids_are_top_level_fields() {
        let lines = logged("info", || {
            let span = tracing::info_span!("fleet.process", request_id = Empty, attempt = Empty);
            crate::telemetry::set_parent_from(&span, Some(&caller()));
            span.record("request_id", "r-1");
            let _entered = span.enter();
            tracing::info!(attempt = 2, "started");
            tracing::info_span!("fleet.publish")
                .in_scope(|| tracing::warn!(error = %"boom", "publish failed"));
        });
        assert_eq!(lines.len(), 2, "{lines:#?}");
        for line in &lines {
            assert_eq!(line["trace_id"], CALLER_TRACE, "{line}");
            assert_eq!(line["request_id"], "r-1", "{line}");
            assert!(line.get("spans").is_none(), "nothing nested: {line}");
            assert!(line["timestamp"].is_string(), "{line}");
        }
        assert_eq!(lines[0]["message"], "started");
        assert_eq!(lines[0]["attempt"], 2);
        assert_eq!(lines[0]["level"], "INFO");
        assert_eq!(lines[0]["span"], "fleet.process");
        assert_eq!(lines[1]["error"], "boom");
        assert_eq!(lines[1]["span"], "fleet.publish");
    }

    #[test]
    fn a_span_without_a_caller_has_its_own_trace_id() {
        let mut expected = None;
        let lines = logged("info", || {
            let span = tracing::info_span!("fleet.process", request_id = "r-2");
            let _entered = span.enter();
            expected = crate::telemetry::current_trace_id();
            tracing::info!("hello");
        });
        let expected = expected.expect("a traced span");
        assert_eq!(lines[0]["trace_id"], expected.as_str(), "{:?}", lines[0]);
        assert_eq!(lines[0]["request_id"], "r-2");
    }

    #[test]
    fn a_quiet_log_level_still_names_the_request() {
        let lines = logged("warn", || {
            let span = tracing::info_span!("fleet.process", request_id = "r-3");
            crate::telemetry::set_parent_from(&span, Some(&caller()));
            let _entered = span.enter();
            tracing::info!("not logged");
            tracing::warn!("logged");
        });
        assert_eq!(lines.len(), 1, "{lines:#?}");
        assert_eq!(lines[0]["message"], "logged");
        assert_eq!(lines[0]["request_id"], "r-3");
        assert_eq!(lines[0]["trace_id"], CALLER_TRACE);
    }

    #[test]
    fn lines_outside_a_request_have_neither_and_event_fields_win() {
        let lines = logged("info", || {
            tracing::info!("starting");
            let span = tracing::info_span!("fleet.process", request_id = "outer");
            span.in_scope(|| tracing::info!(request_id = "inner", "about another request"));
        });
        assert!(lines[0].get("trace_id").is_none(), "{:?}", lines[0]);
        assert!(lines[0].get("request_id").is_none(), "{:?}", lines[0]);
        assert!(lines[0].get("span").is_none(), "{:?}", lines[0]);
        assert_eq!(lines[1]["request_id"], "inner");
    }
}
