//! `chat`: a plain answer from the LLM, the fallback when no other task fits.

use fleet_common::{
    llm::{Llm, LlmError},
    messages::ErrorKind,
};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

use super::Task;
use crate::error::TaskError;

/// The input of `chat`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// The question or instruction, as the user wrote it.
    #[schemars(length(min = 1))]
    pub prompt: String,
}

/// Answers through the configured LLM.
#[derive(Debug, Clone)]
pub struct Chat {
    /// The LLM, when one is configured.
    llm: Option<Llm>,
}

// === impl Chat ===

impl Chat {
    /// A chat task answering with `llm` (or failing clearly without one).
    pub fn new(llm: Option<Llm>) -> Self {
        Self { llm }
    }
}

impl Task for Chat {
    type Input = Input;
    const NAME: &'static str = "chat";
    const DESCRIPTION: &'static str = "Answer in plain language with the LLM: questions, explanations, advice, writing, translations, conversation. Pick it whenever no other task does exactly what is asked; `prompt` is the user's request copied unchanged.";
    const OUTPUT: &'static str = "{ \"answer\": the LLM's answer }";
    const EXAMPLES: &'static [&'static str] = &["What is the capital of France?", "Tell me a joke"];

    async fn run(&self, input: Input) -> Result<Value, TaskError> {
        let Some(llm) = &self.llm else {
            return Err(TaskError::Abort {
                kind: ErrorKind::NoLlm,
                message: "no LLM is configured, so `chat` cannot answer: set OPENAI_API_KEY, OPENAI_BASE_URL or AZURE_OPENAI_ENDPOINT on the workers".into(),
            });
        };
        match llm.answer(&input.prompt).await {
            Ok(answer) => Ok(json!({ "answer": answer })),
            Err(LlmError::Retryable { message, after }) => Err(TaskError::Retry { message, after }),
            Err(LlmError::Permanent { message }) => Err(TaskError::abort(message)),
        }
    }
}
