//! Choosing a task for a natural-language request.
//!
//! [`Classify`] hides how the choice is made: [`Rules`] is built in, [`LlmClassifier`] asks an
//! OpenAI-compatible model with structured output built from the catalog. Whatever answers, the
//! dispatcher checks the answer against the catalog before it publishes anything.

mod breaker;
mod cache;
mod decision;
mod llm;
mod prompt;
mod rules;

pub use self::{
    breaker::Breaker,
    cache::DecisionCache,
    decision::{Classify, ClassifyError, Decision, FALLBACK_TASK},
    llm::{LlmClassifier, LlmClassifierConfig, ResponseFormatMode},
    prompt::{response_schema, strict_schema},
    rules::{Rules, chat, route},
};
