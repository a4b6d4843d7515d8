//! The dispatcher's Prometheus metrics.

use prometheus_client::{
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

/// Label set: one `(name, value)` pair.
type Labels = Vec<(&'static str, String)>;

/// Counters and gauges of the dispatcher, registered under `fleet_`.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// Requests read from the requests stream (redeliveries included).
    pub received: Counter,
    /// Requests routed to a task, by the tier that decided (`explicit`, `patterns`, `llm`).
    pub classified: Family<Labels, Counter>,
    /// Requests rejected, by error kind.
    pub rejected: Family<Labels, Counter>,
    /// Requests whose id was already known (no second task).
    pub duplicates: Counter,
    /// Requests being handled now.
    pub in_flight: Gauge,
    /// LLM calls by outcome (`ok`, `error`, `invalid_answer`, `circuit_open`).
    pub llm_calls: Family<Labels, Counter>,
    /// LLM call latency.
    pub llm_duration: Histogram,
    /// LLM tokens by type (`input`, `output`).
    pub llm_tokens: Family<Labels, Counter>,
    /// Classifications answered from the cache.
    pub cache_hits: Counter,
    /// Classifications the cache did not have.
    pub cache_misses: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let metrics = Self {
            received: Counter::default(),
            classified: Family::default(),
            rejected: Family::default(),
            duplicates: Counter::default(),
            in_flight: Gauge::default(),
            llm_calls: Family::default(),
            llm_duration: Histogram::new([0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
            llm_tokens: Family::default(),
            cache_hits: Counter::default(),
            cache_misses: Counter::default(),
        };
        // Every method and LLM outcome is exported from the start, at 0: a series born at 1
        // has no `increase()`, so an alert on the first circuit_open would never fire.
        for method in ["explicit", "llm", "patterns"] {
            metrics
                .classified
                .get_or_create(&vec![("method", method.to_owned())])
                .inc_by(0);
        }
        for outcome in ["ok", "error", "invalid_answer", "circuit_open"] {
            metrics
                .llm_calls
                .get_or_create(&vec![("outcome", outcome.to_owned())])
                .inc_by(0);
        }
        metrics
    }
}

// === impl Metrics ===

impl Metrics {
    /// Registers every metric in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("fleet");
        r.register("requests_received", "Requests read", self.received.clone());
        r.register(
            "requests_classified",
            "Requests routed to a task, by method",
            self.classified.clone(),
        );
        r.register(
            "requests_rejected",
            "Requests rejected, by error kind",
            self.rejected.clone(),
        );
        r.register(
            "requests_duplicate",
            "Requests whose id was already known",
            self.duplicates.clone(),
        );
        r.register(
            "dispatcher_in_flight",
            "Requests being handled now",
            self.in_flight.clone(),
        );
        r.register("llm_calls", "LLM calls by outcome", self.llm_calls.clone());
        r.register(
            "llm_duration_seconds",
            "LLM call latency",
            self.llm_duration.clone(),
        );
        r.register("llm_tokens", "LLM tokens by type", self.llm_tokens.clone());
        r.register(
            "classify_cache_hits",
            "Classifications answered from the cache",
            self.cache_hits.clone(),
        );
        r.register(
            "classify_cache_misses",
            "Classifications the cache did not have",
            self.cache_misses.clone(),
        );
    }
}
