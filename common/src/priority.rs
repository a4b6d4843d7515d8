//! A request's priority (`high`, `normal`, `low`) and where each priority's tasks wait.
//!
//! JetStream hands a consumer's messages out in the order they were stored, so priority cannot
//! be a field that a single consumer sorts by. Each priority of a task has its own subject and
//! its own durable consumer instead (see [`crate::topology::Topology::task_subject_at`]), and a
//! worker decides which consumer's message gets its next free slot (the worker's `priority`
//! module). Normal work keeps the plain subject `<prefix>.tasks.<task>`, so a worker written
//! for the subject alone still gets it.

use serde::{Deserialize, Serialize};

/// How urgent a request is. A worker with tasks of several priorities waiting takes the higher
/// first, and still gives low work a share of its slots.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// Ahead of everything else waiting.
    High,
    /// The default.
    #[default]
    Normal,
    /// Behind everything else waiting, but never starved.
    Low,
}

// === impl Priority ===

impl Priority {
    /// Every priority, highest first.
    pub const ALL: [Priority; 3] = [Priority::High, Priority::Normal, Priority::Low];

    /// The wire label, as serde writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
        }
    }

    /// The priority a label names (`high`, `normal`, `low`, in any case).
    pub fn parse(label: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(label.trim()))
    }

    /// Whether this is the default, [`Priority::Normal`] (left out of messages).
    pub fn is_normal(&self) -> bool {
        *self == Priority::Normal
    }

    /// Its place in [`Priority::ALL`]: 0 for high, 2 for low.
    pub fn index(self) -> usize {
        match self {
            Priority::High => 0,
            Priority::Normal => 1,
            Priority::Low => 2,
        }
    }
}

/// The priority a task of `requested` priority waits at, given its task's catalog
/// `max_concurrency`: a task with a fleet-wide limit waits at `normal` whatever was asked, so
/// that its one normal consumer (whose `max_ack_pending` is the limit) holds the limit across
/// every priority. Nats-server 2.9 lets a consumer filter on one subject only, so one consumer
/// cannot read a task's three subjects; the request's priority is still in its status record.
pub fn lane(requested: Priority, max_concurrency: Option<u32>) -> Priority {
    if max_concurrency.is_some() {
        Priority::Normal
    } else {
        requested
    }
}

impl std::fmt::Display for Priority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Priority {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s).ok_or_else(|| format!("`{s}` is not a priority: use high, normal or low"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_serdes_and_parse_back() {
        for p in Priority::ALL {
            assert_eq!(serde_json::json!(p), p.as_str());
            assert_eq!(Priority::parse(p.as_str()), Some(p));
            assert_eq!(Priority::ALL[p.index()], p);
        }
        assert_eq!(Priority::parse(" HIGH "), Some(Priority::High));
        assert_eq!(Priority::parse("urgent"), None);
        assert!("urgent".parse::<Priority>().is_err());
        assert_eq!(Priority::default(), Priority::Normal);
        assert!(Priority::High < Priority::Normal && Priority::Normal < Priority::Low);
    }

    #[test]
    fn a_limited_task_waits_on_its_one_normal_consumer() {
        assert_eq!(lane(Priority::High, None), Priority::High);
        assert_eq!(lane(Priority::Low, None), Priority::Low);
        assert_eq!(lane(Priority::High, Some(2)), Priority::Normal);
        assert_eq!(lane(Priority::Low, Some(1)), Priority::Normal);
    }
}
