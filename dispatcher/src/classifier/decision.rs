//! What a classifier answers, and the trait every classifier implements.

use std::sync::Arc;

use fleet_common::{
    catalog::Catalog,
    messages::{ClassifiedBy, LlmUsage, Routing},
};
use futures::future::BoxFuture;
use serde_json::Value;
use thiserror::Error;

/// The task the built-in tasks fall back to when nothing fits.
pub const FALLBACK_TASK: &str = "chat";

/// A classifier's answer: which task, with which input.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The task's name.
    pub task: String,
    /// Its input.
    pub input: Value,
    /// Who decided.
    pub by: ClassifiedBy,
    /// What the LLM call cost, when an LLM decided.
    pub usage: Option<LlmUsage>,
    /// Why this tier decided, and how (recorded in the status record and the result).
    pub routing: Routing,
}

// === impl Decision ===

impl Decision {
    /// A decision without LLM usage.
    pub fn new(task: &str, input: Value, by: ClassifiedBy) -> Self {
        Self {
            task: task.to_owned(),
            input,
            by,
            usage: None,
            routing: Routing::default(),
        }
    }

    /// The same decision, saying why it was made.
    pub fn because(mut self, reason: impl Into<String>) -> Self {
        self.routing.reason = reason.into();
        self
    }
}

/// Why a classifier gave no answer (the dispatcher then takes the patterns' best guess).
#[derive(Debug, Error)]
pub enum ClassifyError {
    /// The classifier cannot be reached (down, rate-limited, circuit open).
    #[error("classifier unavailable: {0}")]
    Unavailable(String),
    /// The classifier answered, but not with a catalog task and schema-valid, grounded input.
    #[error("classifier gave no valid answer: {why}")]
    Invalid {
        /// What was wrong with the last answer.
        why: String,
        /// How many calls were answered.
        calls: u32,
    },
}

/// Picks a task from the catalog for a natural-language request.
pub trait Classify: Send + Sync {
    /// Chooses a task in `catalog` for `text`.
    fn classify<'a>(
        &'a self,
        text: &'a str,
        catalog: Arc<Catalog>,
    ) -> BoxFuture<'a, Result<Decision, ClassifyError>>;

    /// A decision that needs no slow call, when this classifier can make one at once: the
    /// dispatcher then writes the request's guard record as `queued`, saving a status write.
    fn quick(&self, _text: &str, _catalog: &Catalog) -> Option<Decision> {
        None
    }
}
