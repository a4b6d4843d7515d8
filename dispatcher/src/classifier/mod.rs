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
    cache::{CacheSize, DecisionCache, parse_bytes},
    decision::{Classify, ClassifyError, Decision, FALLBACK_TASK},
    llm::{LlmClassifier, LlmClassifierConfig, ROUTING_MAX_TOKENS, ResponseFormatMode},
    prompt::{PROMPT_TEXT_MAX, response_schema, strict_schema},
    rules::{Rules, chat, route},
};
