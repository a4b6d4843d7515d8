//! Dead letters as the tests see them (messages of `FLEET_DLQ`).

use async_nats::jetstream::message::StreamMessage;
use bytes::Bytes;
use serde_json::Value;

/// A message of `FLEET_DLQ`.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// `fleet.dlq.<task>` or `fleet.dlq.unreadable`.
    pub subject: String,
    /// Stream sequence.
    pub sequence: u64,
    /// Headers (name, value), in no particular order.
    pub headers: Vec<(String, String)>,
    /// The original body.
    pub payload: Bytes,
}

// === impl DeadLetter ===

impl DeadLetter {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The `Fleet-Request-Id` header.
    pub fn request_id(&self) -> Option<&str> {
        self.header("Fleet-Request-Id")
    }

    /// The `Fleet-Errors` header parsed as JSON (`Value::Null` when absent or not JSON).
    pub fn errors(&self) -> Value {
        self.header("Fleet-Errors")
            .and_then(|h| serde_json::from_str(h).ok())
            .unwrap_or(Value::Null)
    }
}

impl From<StreamMessage> for DeadLetter {
    fn from(message: StreamMessage) -> Self {
        let mut headers = Vec::new();
        for (name, values) in message.headers.iter() {
            for value in values {
                headers.push((name.to_string(), value.as_str().to_string()));
            }
        }
        Self {
            subject: message.subject.to_string(),
            sequence: message.sequence,
            headers,
            payload: message.payload,
        }
    }
}
