//! When a request may run and until when: `delay` / `not_before` and `deadline`, as pure
//! functions (no NATS, no clock of their own), so each rule is unit-tested.
//!
//! A duration counts from the request's *receipt*, which is the request message's timestamp in
//! the requests stream: every redelivery of the message (after a restart of the dispatcher or
//! of nats-server) carries the same one, so a request's time never moves, and nothing has to be
//! written to remember it.

use std::time::Duration;

use time::{OffsetDateTime, format_description::well_known::Rfc3339};

/// The longest one hand-back of a waiting request message lasts. The message comes back at its
/// time, or after this long to be handed back again: a bound on how long a lost timer (a
/// server restart) can make a request late, and on how long a NAK delay has to be kept by the
/// server.
pub const MAX_PARK: Duration = Duration::from_secs(3600);

/// A point in time as a request gives it: a duration from receipt, or a wall-clock time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// This long after receipt (`30s`, `5m`).
    After(Duration),
    /// At this time.
    At(OffsetDateTime),
}

// === impl When ===

impl When {
    /// Reads `30s`-style durations (humantime) and RFC 3339 times.
    ///
    /// # Errors
    ///
    /// A sentence naming `field` when `text` is neither.
    pub fn parse(field: &str, text: &str) -> Result<Self, String> {
        let text = text.trim();
        if let Ok(at) = OffsetDateTime::parse(text, &Rfc3339) {
            return Ok(When::At(at));
        }
        humantime::parse_duration(text).map(When::After).map_err(|_| {
            format!(
                "`{field}` is `{}`, which is neither a duration such as `30s` or `5m` nor an RFC 3339 time such as `2030-01-01T09:00:00Z`",
                text.chars().take(60).collect::<String>()
            )
        })
    }

    /// The time this stands for, for a request received at `received`.
    pub fn resolve(self, received: OffsetDateTime) -> OffsetDateTime {
        match self {
            When::At(at) => at,
            When::After(d) => received + d,
        }
    }
}

/// A request's times, resolved against its receipt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Times {
    /// Not routed or run before this.
    pub not_before: Option<OffsetDateTime>,
    /// Ended `expired` when not finished by this.
    pub deadline: Option<OffsetDateTime>,
}

// === impl Times ===

impl Times {
    /// Whether the request has neither time (the plain path: nothing to check).
    pub fn is_plain(&self) -> bool {
        self.not_before.is_none() && self.deadline.is_none()
    }

    /// Whether the deadline has passed at `now`.
    pub fn expired(&self, now: OffsetDateTime) -> bool {
        self.deadline.is_some_and(|d| now >= d)
    }

    /// How long to hand a request back for while it waits for its time, or `None` when it is
    /// due (or expired: the deadline wins).
    pub fn wait(&self, now: OffsetDateTime) -> Option<Duration> {
        if self.expired(now) {
            return None;
        }
        let due = self.not_before.filter(|nb| *nb > now)?;
        Some(park_until(due, self.deadline, now))
    }
}

/// How long to hand back a message that waits for `until` (and at most until `deadline`, when
/// it must come back to be ended `expired`): never longer than [`MAX_PARK`], never zero.
pub fn park_until(
    until: OffsetDateTime,
    deadline: Option<OffsetDateTime>,
    now: OffsetDateTime,
) -> Duration {
    let until = deadline.map_or(until, |d| d.min(until));
    let left = Duration::try_from(until - now).unwrap_or(Duration::ZERO);
    left.clamp(Duration::from_millis(1), MAX_PARK)
}

/// How long to hand back a message waiting for something without a time of its own (a
/// person's approval): until the deadline, at most [`MAX_PARK`].
pub fn park_open(deadline: Option<OffsetDateTime>, now: OffsetDateTime) -> Duration {
    park_until(now + MAX_PARK, deadline, now)
}

/// A time as the fleet's records write it.
pub fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&Rfc3339).unwrap_or_default()
}

/// A time a record or message carries, when it is readable.
pub fn parse_rfc3339(text: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(text, &Rfc3339).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> OffsetDateTime {
        OffsetDateTime::parse(s, &Rfc3339).expect("time")
    }

    #[test]
    fn durations_and_times_are_both_read() {
        assert_eq!(
            When::parse("delay", "30s"),
            Ok(When::After(Duration::from_secs(30)))
        );
        assert_eq!(
            When::parse("not_before", "2030-01-01T09:00:00Z"),
            Ok(When::At(t("2030-01-01T09:00:00Z")))
        );
        let e = When::parse("deadline", "tomorrow-ish").expect_err("bad");
        assert!(e.contains("deadline") && e.contains("30s"), "{e}");
    }

    #[test]
    fn durations_count_from_receipt() {
        let received = t("2030-01-01T09:00:00Z");
        assert_eq!(
            When::After(Duration::from_secs(90)).resolve(received),
            t("2030-01-01T09:01:30Z")
        );
        assert_eq!(
            When::At(t("2031-01-01T00:00:00Z")).resolve(received),
            t("2031-01-01T00:00:00Z")
        );
    }

    #[test]
    fn a_waiting_request_comes_back_at_its_time_or_deadline_at_the_latest() {
        let now = t("2030-01-01T09:00:00Z");
        let times = Times {
            not_before: Some(t("2030-01-01T09:00:30Z")),
            deadline: None,
        };
        assert_eq!(times.wait(now), Some(Duration::from_secs(30)));
        let capped = Times {
            not_before: Some(t("2030-01-02T09:00:00Z")),
            deadline: None,
        };
        assert_eq!(capped.wait(now), Some(MAX_PARK));
        let deadline_first = Times {
            not_before: Some(t("2030-01-01T10:00:00Z")),
            deadline: Some(t("2030-01-01T09:00:10Z")),
        };
        assert_eq!(deadline_first.wait(now), Some(Duration::from_secs(10)));
        // Due, or expired: no wait.
        assert_eq!(Times::default().wait(now), None);
        let due = Times {
            not_before: Some(t("2030-01-01T08:59:59Z")),
            deadline: None,
        };
        assert_eq!(due.wait(now), None);
        let expired = Times {
            not_before: Some(t("2030-01-01T10:00:00Z")),
            deadline: Some(t("2030-01-01T09:00:00Z")),
        };
        assert!(expired.expired(now));
        assert_eq!(expired.wait(now), None);
    }

    #[test]
    fn an_open_wait_ends_at_the_deadline_or_the_cap() {
        let now = t("2030-01-01T09:00:00Z");
        assert_eq!(park_open(None, now), MAX_PARK);
        assert_eq!(
            park_open(Some(t("2030-01-01T09:00:05Z")), now),
            Duration::from_secs(5)
        );
        // Never zero: a NAK without delay would come straight back.
        assert_eq!(
            park_open(Some(t("2030-01-01T08:00:00Z")), now),
            Duration::from_millis(1)
        );
    }
}
