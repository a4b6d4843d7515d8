//! Retries of one LLM call, every wait inside the call's time budget.
//!
//! async-openai 0.43's own `OpenAIRetryLayer` (`src/middleware/retry/openai.rs`) retries 429,
//! 5xx and connection errors, sleeping for the server's `Retry-After` with no upper bound
//! (`Retry-After: 3600` is an hour's sleep holding a routing permit), else 100 ms doubling up
//! to 8 s. This layer retries the same answers with the same backoff, but a wait that would end
//! past the budget (`FLEET_LLM_TIMEOUT` from the call's start) is not taken: the last answer is
//! returned at once, as the error it is, and the caller decides (routing falls back to the
//! rules, `chat` is retried later by the worker). [`super::Llm::complete`] also bounds the
//! whole call by the same budget, so a slow answer cannot stretch it either.
//!
//! Unlike async-openai's layer, a 429 whose body says `insufficient_quota` is retried like
//! any other 429 (reading the body here would mean rebuilding the response); the retries are
//! few (`FLEET_LLM_RETRIES`) and inside the budget.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use async_openai::{error::OpenAIError, middleware::HttpRequestFactory};
use reqwest::Response;
use tokio::time::Instant;

use crate::http::retry_after;

/// The first backoff without `Retry-After`; it doubles per retry.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// The longest backoff without `Retry-After`.
const BACKOFF_MAX: Duration = Duration::from_secs(8);

/// A [`tower::Layer`] adding [`BoundedRetry`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct BoundedRetryLayer {
    /// Retries after the first attempt.
    pub(crate) retries: usize,
    /// The time from the call's start within which every attempt and wait must end.
    pub(crate) budget: Duration,
}

impl<S> tower::Layer<S> for BoundedRetryLayer {
    type Service = BoundedRetry<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BoundedRetry {
            inner,
            retries: self.retries,
            budget: self.budget,
        }
    }
}

/// Retries 429, 5xx and connection errors while the wait fits in the budget.
#[derive(Debug, Clone)]
pub(crate) struct BoundedRetry<S> {
    /// The transport.
    inner: S,
    /// Retries after the first attempt.
    retries: usize,
    /// See [`BoundedRetryLayer::budget`].
    budget: Duration,
}

// === impl BoundedRetry ===

impl<S> tower::Service<HttpRequestFactory> for BoundedRetry<S>
where
    S: tower::Service<HttpRequestFactory, Response = Response, Error = OpenAIError>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = OpenAIError;
    type Future = Pin<Box<dyn Future<Output = Result<Response, OpenAIError>> + Send + 'static>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: HttpRequestFactory) -> Self::Future {
        // The ready service answers the first attempt (tower's contract); a clone takes its place.
        let clone = self.inner.clone();
        let mut service = std::mem::replace(&mut self.inner, clone);
        let deadline = Instant::now() + self.budget;
        let retries = self.retries;
        let first = service.call(request.clone());
        Box::pin(async move {
            let mut outcome = first.await;
            for retry in 0..retries {
                let Some(wait) = wait_before_retry(&outcome, retry) else {
                    break;
                };
                if Instant::now() + wait >= deadline {
                    tracing::info!(
                        wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                        "the LLM asks for a wait past FLEET_LLM_TIMEOUT: not retried"
                    );
                    break;
                }
                tokio::time::sleep(wait).await;
                std::future::poll_fn(|cx| service.poll_ready(cx)).await?;
                outcome = service.call(request.clone()).await;
            }
            outcome
        })
    }
}

/// How long to wait before retry number `retry` (from 0), or `None` when the outcome is not
/// worth another try: success, a 4xx other than 429, an error other than a refused connection.
fn wait_before_retry(outcome: &Result<Response, OpenAIError>, retry: usize) -> Option<Duration> {
    let backoff = || {
        let factor = 2u32.saturating_pow(u32::try_from(retry).unwrap_or(u32::MAX));
        BACKOFF_MIN.saturating_mul(factor).min(BACKOFF_MAX)
    };
    match outcome {
        Ok(response)
            if response.status().as_u16() == 429 || response.status().is_server_error() =>
        {
            Some(retry_after(response.headers()).unwrap_or_else(backoff))
        }
        Ok(_) => None,
        Err(OpenAIError::Reqwest(e)) if e.is_connect() => Some(backoff()),
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    use super::*;

    /// A transport answering every call with `status` and `headers`, counting calls.
    #[derive(Clone)]
    struct Scripted {
        status: u16,
        headers: Vec<(&'static str, &'static str)>,
        calls: Arc<AtomicUsize>,
    }

    impl tower::Service<HttpRequestFactory> for Scripted {
        type Response = Response;
        type Error = OpenAIError;
        type Future = Pin<Box<dyn Future<Output = Result<Response, OpenAIError>> + Send + 'static>>;

        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _request: HttpRequestFactory) -> Self::Future {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let mut builder = axum::http::Response::builder().status(self.status);
            for (name, value) in &self.headers {
                builder = builder.header(*name, *value);
            }
            let response = builder.body(Vec::<u8>::new()).map(Response::from);
            Box::pin(
                async move { response.map_err(|e| OpenAIError::InvalidArgument(e.to_string())) },
            )
        }
    }

    fn request() -> HttpRequestFactory {
        HttpRequestFactory::new(|| async {
            reqwest::Client::new()
                .get("http://127.0.0.1:9/")
                .build()
                .map_err(OpenAIError::Reqwest)
        })
    }

    async fn run(
        status: u16,
        headers: Vec<(&'static str, &'static str)>,
        retries: usize,
        budget: Duration,
    ) -> (u16, usize, Duration) {
        use tower::{Layer, Service};
        let calls = Arc::new(AtomicUsize::new(0));
        let mut service = BoundedRetryLayer { retries, budget }.layer(Scripted {
            status,
            headers,
            calls: calls.clone(),
        });
        let started = Instant::now();
        let response = service.call(request()).await.expect("a response");
        (
            response.status().as_u16(),
            calls.load(Ordering::SeqCst),
            started.elapsed(),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_after_past_the_budget_is_not_waited_for() {
        let (status, calls, took) = run(
            429,
            vec![("retry-after", "3600")],
            2,
            Duration::from_secs(30),
        )
        .await;
        assert_eq!((status, calls), (429, 1));
        assert!(took < Duration::from_secs(1), "{took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn waits_inside_the_budget_are_taken() {
        let (status, calls, took) =
            run(429, vec![("retry-after", "1")], 2, Duration::from_secs(30)).await;
        assert_eq!((status, calls), (429, 3), "the first call and two retries");
        assert!(took >= Duration::from_secs(2), "{took:?}");
        // Backoff without Retry-After: 100 ms, then 200 ms; the third wait (400 ms) would pass
        // a 500 ms budget.
        let (status, calls, took) = run(503, vec![], 5, Duration::from_millis(500)).await;
        assert_eq!((status, calls), (503, 3));
        assert!(took < Duration::from_millis(500), "{took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn other_answers_are_not_retried() {
        for status in [200, 400, 401, 404] {
            let (got, calls, _) = run(status, vec![], 3, Duration::from_secs(30)).await;
            assert_eq!((got, calls), (status, 1), "{status}");
        }
    }
}
