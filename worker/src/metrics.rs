//! The worker's Prometheus metrics.

use prometheus_client::{
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

/// Label set: the task's name.
pub type TaskLabel = Vec<(&'static str, String)>;

fn duration_histogram() -> Histogram {
    Histogram::new([
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    ])
}

/// Buckets of a request's whole life: retries with backoff (up to `FLEET_BACKOFF_MAX`) and a
/// slow LLM make minutes possible, so the buckets go further than one task run's.
fn request_histogram() -> Histogram {
    Histogram::new([
        0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
    ])
}

/// Counters, gauges and histograms of a worker, registered under `fleet_`.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// Deliveries started, by task.
    pub started: Family<TaskLabel, Counter>,
    /// Tasks that succeeded, by task.
    pub succeeded: Family<TaskLabel, Counter>,
    /// Tasks that failed permanently, by task.
    pub failed: Family<TaskLabel, Counter>,
    /// Deliveries that failed and were scheduled again, by task.
    pub retried: Family<TaskLabel, Counter>,
    /// Tasks moved to the dead-letter queue, by task.
    pub dead: Family<TaskLabel, Counter>,
    /// Time one delivery's task ran, by task.
    pub duration: Family<TaskLabel, Histogram>,
    /// Time from the dispatcher's receipt of a request to its stored result, by task.
    pub end_to_end: Family<TaskLabel, Histogram>,
    /// Tasks running now.
    pub in_flight: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            started: Family::default(),
            succeeded: Family::default(),
            failed: Family::default(),
            retried: Family::default(),
            dead: Family::default(),
            duration: Family::new_with_constructor(duration_histogram),
            end_to_end: Family::new_with_constructor(request_histogram),
            in_flight: Gauge::default(),
        }
    }
}

// === impl Metrics ===

impl Metrics {
    /// The label set of `task`.
    pub fn label(task: &str) -> TaskLabel {
        vec![("task", task.to_owned())]
    }

    /// Records a request's end-to-end duration, from `received_at` (the task message's RFC 3339
    /// time of the dispatcher's receipt) to now; call it once the request's result is stored.
    /// A missing or unreadable time, or one in the future (clock skew), records nothing.
    pub fn observe_request(&self, task: &str, received_at: &str) {
        if let Some(seconds) = seconds_since(received_at, OffsetDateTime::now_utc()) {
            self.end_to_end
                .get_or_create(&Self::label(task))
                .observe(seconds);
        }
    }

    /// Registers every metric in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("fleet");
        r.register(
            "tasks_started",
            "Task deliveries started",
            self.started.clone(),
        );
        r.register(
            "tasks_succeeded",
            "Tasks that succeeded",
            self.succeeded.clone(),
        );
        r.register(
            "tasks_failed",
            "Tasks that failed permanently",
            self.failed.clone(),
        );
        r.register(
            "tasks_retried",
            "Task deliveries that failed and will be retried",
            self.retried.clone(),
        );
        r.register(
            "tasks_dead",
            "Tasks moved to the dead-letter queue",
            self.dead.clone(),
        );
        r.register(
            "task_duration_seconds",
            "Time one delivery's task ran",
            self.duration.clone(),
        );
        r.register(
            "request_duration_seconds",
            "Time from the dispatcher's receipt of a request to its stored result",
            self.end_to_end.clone(),
        );
        r.register(
            "worker_in_flight",
            "Tasks running now",
            self.in_flight.clone(),
        );
    }
}

/// Seconds from the RFC 3339 time `at` to `now`; `None` when `at` is unreadable or after `now`.
fn seconds_since(at: &str, now: OffsetDateTime) -> Option<f64> {
    let at = OffsetDateTime::parse(at, &Rfc3339).ok()?;
    let seconds = (now - at).as_seconds_f64();
    (seconds >= 0.0).then_some(seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_duration_is_measured_from_the_receipt() {
        let now = OffsetDateTime::parse("2025-05-01T12:00:02.5Z", &Rfc3339).expect("a time");
        assert_eq!(seconds_since("2025-05-01T12:00:00Z", now), Some(2.5));
        assert_eq!(seconds_since("2025-05-01T14:00:00+02:00", now), Some(2.5));
        assert_eq!(
            seconds_since("2025-05-01T12:00:03Z", now),
            None,
            "clock skew"
        );
        assert_eq!(seconds_since("yesterday", now), None);
        assert_eq!(seconds_since("", now), None);
    }

    #[test]
    fn observed_requests_are_exported_by_task() {
        let metrics = Metrics::default();
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        metrics.observe_request("text.transform", "2000-01-01T00:00:00Z");
        metrics.observe_request("text.transform", "not a time");
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encodes");
        assert!(
            text.contains("fleet_request_duration_seconds_count{task=\"text.transform\"} 1"),
            "{text}"
        );
    }
}
