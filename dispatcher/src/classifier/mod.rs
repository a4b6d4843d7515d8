//! Choosing a task for a natural-language request.
//!
//! [`Router`] is the routing policy, top to bottom: explicit requests are not classified at
//! all; the catalog's certain [`patterns`] route without an LLM; else the LLM
//! ([`LlmClassifier`]) answers with the strict schema built from the catalog, its answer is
//! checked (catalog-valid and [`grounding`]: its input in the request's words) and retried
//! once with a short error; else the patterns' best guess, else `chat`. Whatever answers, the
//! dispatcher checks the decision against the catalog before it publishes anything.

mod breaker;
mod cache;
mod decision;
pub mod grounding;
mod llm;
pub mod patterns;
mod prompt;
mod router;

pub use self::{
    breaker::Breaker,
    cache::{CacheSize, DecisionCache, parse_bytes},
    decision::{Classify, ClassifyError, Decision, FALLBACK_TASK},
    llm::{LlmClassifier, LlmClassifierConfig, ResponseFormatMode, routing_max_tokens},
    patterns::{chat, fallback},
    prompt::{PROMPT_TEXT_MAX, response_schema, strict_schema},
    router::Router,
};
