//! The settler: the final status of results the fleet's own code did not write.
//!
//! A worker in another language stores its result and writes no status (SPEC "Workers in any
//! language"). The dispatcher listens to `<prefix>.results.*` with a core NATS queue
//! subscription (no consumer: nothing stored, nothing acknowledged; one dispatcher of the group
//! gets each result) and, for a result without `Fleet-Status: written`, writes the final state
//! from the *stored* result (the message seen may be a second result the stream refused).
//! A result with the header is skipped after a look at its headers: its body is never parsed.
//!
//! A result stored while no dispatcher runs is not seen: its record keeps its last state until
//! something settles it (a redelivery to a Rust worker, a cancel); `fleet status` and `fleet
//! watch` read the result first, so they show the final state meanwhile.

use std::time::Duration;

use async_nats::HeaderMap;

use crate::{
    Error,
    messages::{STATUS_HEADER, STATUS_WRITTEN},
    topology::Fleet,
};

/// How often the stored result is looked for: the stream stores a result through its own
/// subscription, which may lag behind the settler's by a moment.
const READ_TRIES: u32 = 5;

/// What [`Fleet::settle_foreign`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settling {
    /// The writer writes the status itself (`Fleet-Status: written`): nothing read.
    OwnStatus,
    /// The record already held a final state.
    AlreadyFinal,
    /// The final state was written from the stored result.
    Settled,
    /// Not a result subject, or no result is stored under it (a publish the stream refused
    /// or never got).
    NothingStored,
}

/// Whether a result's writer writes the final status itself (the header, whatever its case).
pub fn writes_own_status(headers: Option<&HeaderMap>) -> bool {
    headers
        .and_then(|h| h.get(STATUS_HEADER))
        .is_some_and(|v| v.as_str().eq_ignore_ascii_case(STATUS_WRITTEN))
}

// === impl Fleet ===

impl Fleet {
    /// Every result as it is published, shared among the dispatchers (queue group
    /// `<prefix>-settlers`), for [`Fleet::settle_foreign`].
    ///
    /// # Errors
    ///
    /// [`Error::JetStream`] when the subscription cannot be opened.
    pub async fn results_to_settle(&self) -> Result<async_nats::Subscriber, Error> {
        let group = format!("{}-settlers", self.topology.prefix());
        self.client
            .queue_subscribe(self.topology.result_subject("*"), group)
            .await
            .map_err(|e| Error::js("subscribe to results to settle", e))
    }

    /// Settles the status of the result published as `msg`, unless its writer does it.
    ///
    /// # Errors
    ///
    /// [`Error::JetStream`] when the record or the result cannot be read or written.
    pub async fn settle_foreign(&self, msg: &async_nats::Message) -> Result<Settling, Error> {
        if writes_own_status(msg.headers.as_ref()) {
            return Ok(Settling::OwnStatus);
        }
        let Some(id) = self.request_id_of_result(msg.subject.as_str()) else {
            return Ok(Settling::NothingStored);
        };
        if let Some((Some(record), _)) = self.status_entry(id).await?
            && record.state.is_terminal()
        {
            return Ok(Settling::AlreadyFinal);
        }
        for _ in 0..READ_TRIES {
            if let Some(result) = self.result(id).await? {
                self.settle_status(&result).await?;
                return Ok(Settling::Settled);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Settling::NothingStored)
    }

    /// The request id in a result's subject, `<prefix>.results.<id>`.
    fn request_id_of_result<'a>(&self, subject: &'a str) -> Option<&'a str> {
        let prefix = self.topology.result_subject("");
        subject
            .strip_prefix(prefix.as_str())
            .filter(|id| !id.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_written_header_skips_settling() {
        assert!(!writes_own_status(None));
        let mut headers = HeaderMap::new();
        assert!(!writes_own_status(Some(&headers)));
        headers.insert("traceparent", "00-abc-def-01");
        assert!(!writes_own_status(Some(&headers)));
        headers.insert(STATUS_HEADER, "something else");
        assert!(!writes_own_status(Some(&headers)));
        headers.insert(STATUS_HEADER, STATUS_WRITTEN);
        assert!(writes_own_status(Some(&headers)));
    }
}
