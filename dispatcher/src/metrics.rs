//! The dispatcher's Prometheus metrics.

use prometheus_client::{
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

/// Label set: one `(name, value)` pair.
type Labels = Vec<(&'static str, String)>;

/// Counters and gauges of the dispatcher, registered under `fleet_`.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    /// Requests read from the requests stream (redeliveries included).
    pub received: Counter,
    /// Requests routed to a task, by method (`llm`, `rules`, `explicit`).
    pub classified: Family<Labels, Counter>,
    /// Requests rejected, by error kind.
    pub rejected: Family<Labels, Counter>,
    /// Requests whose id was already known (no second task).
    pub duplicates: Counter,
    /// Requests being handled now.
    pub in_flight: Gauge,
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
    }
}
