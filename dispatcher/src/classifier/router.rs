//! The routing policy, top to bottom.
//!
//! 1. **Explicit**: a request naming `task` and `input` is not classified (the dispatcher
//!    checks it against the catalog and runs it).
//! 2. **Patterns**: certain catalog patterns that agree decide at once: no LLM call.
//! 3. **LLM** (when configured): one call with the strict answer schema built from the
//!    catalog; the answer must name a routable task, pass its schema, not be cut at
//!    `max_tokens`, and be **grounded** (its free-text input found in the request's words).
//! 4. **One corrective retry**, telling the model in a sentence what was wrong (never sending
//!    its whole answer back: a small model's rambling would overflow its context). If it then
//!    answers `chat` while a pattern hints at another task, the hint wins (step 5).
//! 5. **The patterns' best guess** (a certain match that others contradicted, or a hint
//!    unless the request is phrased as a question), else **`chat`** with the whole request.
//!
//! Every decision says which tier decided and why (`Decision::routing`), for the status
//! record, the result, the `fleet_requests_classified_total{method}` metric and the spans.

use std::sync::Arc;

use fleet_common::catalog::Catalog;
use futures::future::BoxFuture;

use super::{Classify, ClassifyError, Decision, LlmClassifier, patterns};

/// Routes natural-language requests: patterns first, then the LLM when there is one.
pub struct Router {
    /// The LLM tier, when one is configured.
    llm: Option<LlmClassifier>,
}

// === impl Router ===

impl Router {
    /// A router asking `llm` when the patterns are not certain (patterns only when `None`).
    pub fn new(llm: Option<LlmClassifier>) -> Self {
        Self { llm }
    }

    /// The decision for `text`: always one (the fallbacks never fail).
    pub async fn route(&self, text: &str, catalog: &Catalog) -> Decision {
        if let Some(decision) = patterns::certain(text, catalog) {
            return decision;
        }
        let Some(llm) = &self.llm else {
            return patterns::fallback(text, catalog, "no LLM configured");
        };
        match llm.decide(text, catalog).await {
            Ok(decision) => decision,
            Err(ClassifyError::Unavailable(why)) => {
                tracing::warn!(error = %why, "the LLM is unavailable; the patterns route this request");
                patterns::fallback(text, catalog, "LLM unavailable")
            }
            Err(ClassifyError::Invalid { why, calls }) => {
                tracing::info!(error = %why, "no usable LLM answer; the patterns route this request");
                let mut decision =
                    patterns::fallback(text, catalog, &format!("LLM answer not used: {why}"));
                decision.routing.llm_calls = calls;
                decision.routing.model = Some(llm.model().to_owned());
                decision
            }
        }
    }
}

impl Classify for Router {
    fn classify<'a>(
        &'a self,
        text: &'a str,
        catalog: Arc<Catalog>,
    ) -> BoxFuture<'a, Result<Decision, ClassifyError>> {
        Box::pin(async move { Ok(self.route(text, &catalog).await) })
    }

    /// Certain patterns decide at once; without an LLM, so do the fallbacks.
    fn quick(&self, text: &str, catalog: &Catalog) -> Option<Decision> {
        patterns::certain(text, catalog).or_else(|| {
            self.llm
                .is_none()
                .then(|| patterns::fallback(text, catalog, "no LLM configured"))
        })
    }
}
