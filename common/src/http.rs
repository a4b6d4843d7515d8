//! What the fleet reads from HTTP answers it gets (the LLM's, GitHub's).

use std::time::Duration;

use reqwest::header;

/// `Retry-After` in seconds (the form OpenAI-compatible servers and GitHub send).
pub fn retry_after(headers: &header::HeaderMap) -> Option<Duration> {
    headers
        .get(header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}
