//! The worker's Prometheus metrics.

use prometheus_client::{
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

/// Label set: the task's name.
pub type TaskLabel = Vec<(&'static str, String)>;

fn duration_histogram() -> Histogram {
    Histogram::new([
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
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
            end_to_end: Family::new_with_constructor(duration_histogram),
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
            "worker_in_flight",
            "Tasks running now",
            self.in_flight.clone(),
        );
    }
}
