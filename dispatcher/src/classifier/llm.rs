//! Routing with an LLM: structured output built from the catalog, validated against it.
//!
//! The answer must name a catalog task (not an explicit-only one) with input that passes the
//! task's schema and is found in the request's words ([`super::grounding`]), and must not be
//! cut at `max_tokens`. An invalid answer is retried once with a one-sentence error (the bad
//! answer itself is never sent back: a small model's rambling would overflow its context),
//! then the router takes the patterns' best guess. A model that needed that retry and then
//! answered `chat` is not trusted over a pattern's hint for another task: the best guess routes
//! (a weak model's retry often falls back to `chat` with the whole request, which is always
//! grounded). Calls that fail (after async-openai's retries of 429, 5xx and connection errors,
//! honouring Retry-After) count toward a circuit breaker; while it is open the patterns route without calling the LLM. Decisions are cached
//! by normalised text, catalog version and model; at most a bounded number of calls are in
//! flight.
//!
//! Every call is bounded: the prompt shows at most [`PROMPT_TEXT_MAX`] bytes of the request (an
//! answer that copies text up to that cut is not used: the patterns route the whole text),
//! the answer at most [`routing_max_tokens`] tokens, and the call with its retries and their
//! waits ends within `FLEET_LLM_TIMEOUT` (see `fleet_common::llm`).

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use async_openai::types::chat::{
    ChatCompletionRequestMessage, ChatCompletionRequestSystemMessage,
    ChatCompletionRequestUserMessage, CreateChatCompletionRequest, FinishReason, ResponseFormat,
    ResponseFormatJsonSchema,
};
use clap::ValueEnum;
use fleet_common::{
    catalog::Catalog,
    llm::{Llm, LlmError},
    messages::{ClassifiedBy, LlmUsage},
};
use futures::future::BoxFuture;
use serde_json::Value;
use tokio::sync::Semaphore;

use super::{
    Breaker, CacheSize, Classify, ClassifyError, Decision, DecisionCache, FALLBACK_TASK, grounding,
    prompt::{PROMPT_TEXT_MAX, RequestText, response_schema, system_prompt},
};
use crate::metrics::Metrics;

/// The most tokens a routing answer may take for a request of `shown` bytes (as the prompt
/// shows it). An answer is a task name and an input copied from the request, in JSON: about
/// 48 tokens of frame plus a quarter of a token a byte of English; half a token a byte leaves
/// room for other scripts, and 1,024 bounds it. A model that rambles (small local models
/// repeat themselves until the context is full) stops here, and an answer cut there
/// (`finish_reason: length`) is not used.
pub fn routing_max_tokens(shown: usize) -> u32 {
    let bytes = u32::try_from(shown).unwrap_or(u32::MAX);
    (96 + bytes / 2).min(1_024)
}

/// The longest error sentence sent back to the model in the corrective retry.
const RETRY_ERROR_MAX: usize = 240;

/// How the answer's shape is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ResponseFormatMode {
    /// `json_schema` (strict), falling back to `json_object` when the server refuses it.
    Auto,
    /// Always `json_schema` (strict).
    JsonSchema,
    /// Always `json_object`, with the schema in the prompt.
    JsonObject,
}

/// Settings of the LLM classifier.
#[derive(Debug, Clone)]
pub struct LlmClassifierConfig {
    /// How the answer's shape is asked for.
    pub response_format: ResponseFormatMode,
    /// Classifications in flight at once.
    pub concurrency: usize,
    /// How much the decision cache holds (entries and bytes; either 0: no cache).
    pub cache_size: CacheSize,
    /// How long a cached decision is used.
    pub cache_ttl: Duration,
    /// Failed calls in a row that open the circuit.
    pub breaker_threshold: u32,
    /// How long the circuit stays open.
    pub breaker_cooldown: Duration,
}

/// Routes natural-language requests with an OpenAI-compatible model.
pub struct LlmClassifier {
    /// The client.
    llm: Llm,
    /// The configured mode.
    mode: ResponseFormatMode,
    /// Set once the server refused `json_schema` (in `auto` mode).
    json_schema_refused: AtomicBool,
    /// Bounds calls in flight.
    permits: Semaphore,
    /// Decisions by text, catalog version and model.
    cache: Option<DecisionCache>,
    /// Stops calling a failing LLM.
    breaker: Breaker,
    /// Counters and histograms.
    metrics: Metrics,
}

/// Why one answer was not usable.
enum Answer {
    /// A usable decision.
    Valid(Decision),
    /// What is wrong with it, in a sentence.
    Invalid(String),
}

// === impl LlmClassifier ===

impl LlmClassifier {
    /// A classifier calling `llm`.
    pub fn new(llm: Llm, config: &LlmClassifierConfig, metrics: Metrics) -> Self {
        Self {
            llm,
            mode: config.response_format,
            json_schema_refused: AtomicBool::new(false),
            permits: Semaphore::new(config.concurrency.max(1)),
            cache: config
                .cache_size
                .is_on()
                .then(|| DecisionCache::new(config.cache_size, config.cache_ttl)),
            breaker: Breaker::new(config.breaker_threshold, config.breaker_cooldown),
            metrics,
        }
    }

    fn use_json_schema(&self) -> bool {
        match self.mode {
            ResponseFormatMode::JsonSchema => true,
            ResponseFormatMode::JsonObject => false,
            ResponseFormatMode::Auto => !self.json_schema_refused.load(Ordering::Relaxed),
        }
    }

    /// The model this classifier asks.
    pub fn model(&self) -> &str {
        self.llm.model()
    }

    /// The LLM's decision for `text`: a valid, grounded answer, asked at most twice.
    ///
    /// # Errors
    ///
    /// [`ClassifyError::Unavailable`] when the LLM cannot be reached (or its circuit is open),
    /// [`ClassifyError::Invalid`] when neither answer was usable.
    pub async fn decide(&self, text: &str, catalog: &Catalog) -> Result<Decision, ClassifyError> {
        let key = DecisionCache::key(text, catalog.version(), self.llm.model());
        if let Some(cache) = &self.cache {
            if let Some(mut hit) = cache.get(&key) {
                self.metrics.cache_hits.inc();
                hit.routing.cache_hit = true;
                hit.routing.llm_calls = 0;
                return Ok(hit);
            }
            self.metrics.cache_misses.inc();
        }
        if !self.breaker.allow() {
            self.metrics
                .llm_calls
                .get_or_create(&vec![("outcome", "circuit_open".to_owned())])
                .inc();
            return Err(ClassifyError::Unavailable(
                "the LLM circuit is open after repeated failures".into(),
            ));
        }
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| ClassifyError::Unavailable("shutting down".into()))?;

        let shown = RequestText::new(text);
        let mut messages = self.messages(&shown, catalog);
        let mut usage: Option<LlmUsage> = None;
        let max_tokens = routing_max_tokens(shown.prompt().len());
        for round in 0..2u32 {
            let (content, cut) = self
                .call(&mut messages, catalog, &mut usage, max_tokens, text)
                .await?;
            let answer = if cut {
                Answer::Invalid(format!(
                    "the answer was cut at {max_tokens} tokens; answer with the JSON object only"
                ))
            } else {
                parse_answer(&content, catalog)
            };
            let answer = match answer {
                Answer::Valid(decision) if shown.copied_up_to_the_cut(&decision.input) => {
                    // Asking again would not show the model the rest; the patterns read all
                    // of it.
                    return Err(ClassifyError::Invalid {
                        why: format!(
                            "the answer copies the request up to where the prompt cut it ({PROMPT_TEXT_MAX} bytes shown)"
                        ),
                        calls: round + 1,
                    });
                }
                Answer::Valid(decision) => grounded(decision, catalog, text),
                invalid => invalid,
            };
            let answer = match answer {
                Answer::Valid(decision) if round > 0 && decision.task == FALLBACK_TASK => {
                    match super::patterns::hinted_task(text, catalog) {
                        Some(hinted) => Answer::Invalid(format!(
                            "the answer after a corrective retry is {FALLBACK_TASK}, and the patterns hint at {hinted}"
                        )),
                        None => Answer::Valid(decision),
                    }
                }
                answer => answer,
            };
            match answer {
                Answer::Valid(mut decision) => {
                    decision.usage = usage;
                    decision.routing.model = Some(self.llm.model().to_owned());
                    decision.routing.grounded = Some(true);
                    decision.routing.llm_calls = round + 1;
                    decision.routing.reason = if round == 0 {
                        "LLM answer, valid and grounded".into()
                    } else {
                        "LLM answer after one corrective retry, valid and grounded".into()
                    };
                    if let Some(cache) = &self.cache {
                        cache.insert(key, decision.clone());
                    }
                    return Ok(decision);
                }
                Answer::Invalid(why) => {
                    self.metrics
                        .llm_calls
                        .get_or_create(&vec![("outcome", "invalid_answer".to_owned())])
                        .inc();
                    tracing::info!(round, error = %why, "the LLM's answer is not valid");
                    if round == 0 {
                        // One short sentence, never the bad answer itself.
                        messages.truncate(2);
                        messages.push(ChatCompletionRequestMessage::User(
                            ChatCompletionRequestUserMessage::from(format!(
                                "Your previous answer was not usable: {}. Answer again for my request above with one JSON object {{\"task\": ..., \"input\": ...}}, copying the input from my words.",
                                clip_chars(&why, RETRY_ERROR_MAX)
                            )),
                        ));
                    } else {
                        return Err(ClassifyError::Invalid {
                            why,
                            calls: round + 1,
                        });
                    }
                }
            }
        }
        Err(ClassifyError::Invalid {
            why: "no valid answer".into(),
            calls: 2,
        })
    }

    fn messages(
        &self,
        text: &RequestText<'_>,
        catalog: &Catalog,
    ) -> Vec<ChatCompletionRequestMessage> {
        let mut messages = vec![ChatCompletionRequestMessage::System(
            ChatCompletionRequestSystemMessage::from(system_prompt(
                catalog,
                !self.use_json_schema(),
            )),
        )];
        messages.push(ChatCompletionRequestMessage::User(
            ChatCompletionRequestUserMessage::from(text.prompt()),
        ));
        messages
    }

    /// One call (and, in `auto` mode, one more with `json_object` if `json_schema` is refused):
    /// the answer's text, and whether it was cut at `max_tokens`.
    async fn call(
        &self,
        messages: &mut [ChatCompletionRequestMessage],
        catalog: &Catalog,
        usage: &mut Option<LlmUsage>,
        max_tokens: u32,
        text: &str,
    ) -> Result<(String, bool), ClassifyError> {
        loop {
            let json_schema = self.use_json_schema();
            if !json_schema
                && let Some(ChatCompletionRequestMessage::System(system)) = messages.first_mut()
            {
                *system = ChatCompletionRequestSystemMessage::from(system_prompt(catalog, true));
            }
            let request = CreateChatCompletionRequest {
                model: self.llm.model().to_owned(),
                messages: messages.to_vec(),
                temperature: Some(0.0),
                max_completion_tokens: Some(max_tokens),
                response_format: Some(if json_schema {
                    ResponseFormat::JsonSchema {
                        json_schema: ResponseFormatJsonSchema {
                            name: "route".into(),
                            description: Some("the task to run and its input".into()),
                            schema: response_schema(catalog),
                            strict: Some(true),
                        },
                    }
                } else {
                    ResponseFormat::JsonObject
                }),
                ..Default::default()
            };
            let started = Instant::now();
            // The check's verdict on this answer goes on the `chat <model>` span.
            let verdict = |response: &async_openai::types::chat::CreateChatCompletionResponse| {
                Some(verdict(response, catalog, text))
            };
            let outcome = self.llm.complete_judged(request, verdict).await;
            self.metrics
                .llm_duration
                .observe(started.elapsed().as_secs_f64());
            match outcome {
                Ok(response) => {
                    self.breaker.success();
                    self.metrics
                        .llm_calls
                        .get_or_create(&vec![("outcome", "ok".to_owned())])
                        .inc();
                    if let Some(u) = &response.usage {
                        self.metrics
                            .llm_tokens
                            .get_or_create(&vec![("type", "input".to_owned())])
                            .inc_by(u64::from(u.prompt_tokens));
                        self.metrics
                            .llm_tokens
                            .get_or_create(&vec![("type", "output".to_owned())])
                            .inc_by(u64::from(u.completion_tokens));
                        let total = usage.get_or_insert(LlmUsage {
                            model: response.model.clone(),
                            input_tokens: 0,
                            output_tokens: 0,
                        });
                        total.input_tokens += u.prompt_tokens;
                        total.output_tokens += u.completion_tokens;
                    }
                    let cut = response
                        .choices
                        .iter()
                        .any(|c| c.finish_reason == Some(FinishReason::Length));
                    let content = response
                        .choices
                        .into_iter()
                        .find_map(|c| c.message.content)
                        .unwrap_or_default();
                    return Ok((content, cut));
                }
                Err(LlmError::Permanent { message })
                    if json_schema
                        && self.mode == ResponseFormatMode::Auto
                        && refuses_json_schema(&message) =>
                {
                    tracing::warn!(error = %message, "the LLM server refuses json_schema response formats; using json_object with the schema in the prompt from now on");
                    self.json_schema_refused.store(true, Ordering::Relaxed);
                }
                Err(e) => {
                    self.metrics
                        .llm_calls
                        .get_or_create(&vec![("outcome", "error".to_owned())])
                        .inc();
                    if self.breaker.failure() {
                        tracing::warn!(
                            "the LLM failed repeatedly: circuit open, the patterns route meanwhile"
                        );
                    }
                    return Err(ClassifyError::Unavailable(e.to_string()));
                }
            }
        }
    }
}

impl Classify for LlmClassifier {
    fn classify<'a>(
        &'a self,
        text: &'a str,
        catalog: Arc<Catalog>,
    ) -> BoxFuture<'a, Result<Decision, ClassifyError>> {
        Box::pin(async move { self.decide(text, &catalog).await })
    }
}

/// Whether a server's error says it does not support `json_schema` response formats.
fn refuses_json_schema(message: &str) -> bool {
    let m = message.to_lowercase();
    m.contains("json_schema") || m.contains("response_format") || m.contains("response format")
}

/// What the check makes of one response: `used: valid and grounded`, or `not used: why`.
fn verdict(
    response: &async_openai::types::chat::CreateChatCompletionResponse,
    catalog: &Catalog,
    text: &str,
) -> String {
    if response
        .choices
        .iter()
        .any(|c| c.finish_reason == Some(FinishReason::Length))
    {
        return "not used: cut at max_tokens".into();
    }
    let content = response
        .choices
        .iter()
        .find_map(|c| c.message.content.as_deref())
        .unwrap_or_default();
    let answer = match parse_answer(content, catalog) {
        Answer::Valid(decision) => grounded(decision, catalog, text),
        invalid => invalid,
    };
    match answer {
        Answer::Valid(_) => "used: valid and grounded".into(),
        Answer::Invalid(why) => format!("not used: {}", clip_chars(&why, RETRY_ERROR_MAX)),
    }
}

/// At most `max` characters of `s`.
fn clip_chars(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// `decision` if its input is found in the request's words, else why not.
fn grounded(decision: Decision, catalog: &Catalog, text: &str) -> Answer {
    let Some(spec) = catalog.get(&decision.task) else {
        return Answer::Invalid(format!("`{}` is not a task", decision.task));
    };
    let check = if decision.task == FALLBACK_TASK {
        grounding::check_whole(&decision.input, text)
    } else {
        grounding::check(&decision.input, &spec.input_schema, text)
    };
    match check {
        Ok(()) => Answer::Valid(decision),
        Err(why) => Answer::Invalid(why),
    }
}

/// Reads and checks one answer: JSON, a routable task, schema-valid input.
fn parse_answer(content: &str, catalog: &Catalog) -> Answer {
    let trimmed = content
        .trim()
        .trim_start_matches("```json")
        .trim_start_matches("```")
        .trim_end_matches("```")
        .trim();
    let invalid = Answer::Invalid;
    let value: Value = match serde_json::from_str(trimmed) {
        Ok(v) => v,
        Err(e) => return invalid(format!("it is not JSON ({e})")),
    };
    let Some(task) = value.get("task").and_then(Value::as_str) else {
        return invalid("it has no string field `task`".into());
    };
    let input = value.get("input").cloned().unwrap_or(Value::Null);
    match catalog.get(task) {
        None => {
            let names: Vec<&str> = catalog
                .specs()
                .filter(|s| !s.explicit_only)
                .map(|s| s.name.as_str())
                .collect();
            return invalid(format!(
                "`{}` is not a task; choose one of: {}",
                clip_chars(task, 64),
                names.join(", ")
            ));
        }
        Some(spec) if spec.explicit_only => {
            return invalid(format!("`{task}` may only be named explicitly by a caller"));
        }
        Some(_) => {}
    }
    if let Err(e) = catalog.check(task, &input) {
        return invalid(e.message);
    }
    Answer::Valid(Decision::new(task, input, ClassifiedBy::Llm))
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_common::catalog::TaskSpec;
    use serde_json::json;

    fn catalog() -> Catalog {
        let mut c = Catalog::default();
        for spec in [
            json!({"name": "chat", "description": "d", "input_schema": {"type": "object",
                "properties": {"prompt": {"type": "string"}}, "required": ["prompt"]}}),
            json!({"name": "text.transform", "description": "d", "input_schema": {"type": "object",
                "properties": {"text": {"type": "string"}, "op": {"enum": ["upper", "lower"]}},
                "required": ["text", "op"], "additionalProperties": false}}),
            json!({"name": "secret", "description": "d", "explicit_only": true,
                "input_schema": {"type": "object"}}),
        ] {
            let spec: TaskSpec = serde_json::from_value(spec).expect("a spec");
            c.insert(spec).expect("valid");
        }
        c
    }

    fn check(content: &str, text: &str) -> Result<Decision, String> {
        let c = catalog();
        match parse_answer(content, &c) {
            Answer::Valid(d) => match grounded(d, &c, text) {
                Answer::Valid(d) => Ok(d),
                Answer::Invalid(why) => Err(why),
            },
            Answer::Invalid(why) => Err(why),
        }
    }

    #[test]
    fn answers_are_used_only_when_valid_and_grounded() {
        let text = "Make the letter x uppercase";
        let ok = check(
            r#"{"task": "text.transform", "input": {"text": "x", "op": "upper"}}"#,
            text,
        )
        .expect("valid and grounded");
        assert_eq!(ok.by, ClassifiedBy::Llm);
        // Fenced JSON is read too.
        assert!(
            check(
                "```json\n{\"task\": \"chat\", \"input\": {\"prompt\": \"make the letter X uppercase\"}}\n```",
                text
            )
            .is_ok()
        );
        for (answer, why) in [
            ("Sure! text.transform", "not JSON"),
            (r#"{"input": {}}"#, "no string field `task`"),
            (r#"{"task": "weather", "input": {}}"#, "is not a task"),
            (r#"{"task": "secret", "input": {}}"#, "explicitly"),
            (
                r#"{"task": "text.transform", "input": {"text": "x", "op": "louder"}}"#,
                "does not match its schema",
            ),
            (
                r#"{"task": "text.transform", "input": {"text": "y", "op": "upper"}}"#,
                "`y` is not in the request",
            ),
            (
                r#"{"task": "chat", "input": {"prompt": "Convert x to upper case"}}"#,
                "not the whole request",
            ),
            (
                r#"{"task": "chat", "input": {"prompt": "the letter x"}}"#,
                "not the whole request",
            ),
        ] {
            let e = check(answer, text).expect_err(answer);
            assert!(e.contains(why), "{answer}: {e}");
        }
    }

    #[test]
    fn answer_budgets_grow_with_the_request_and_are_capped() {
        assert_eq!(routing_max_tokens(0), 96);
        assert_eq!(routing_max_tokens(100), 146);
        assert_eq!(routing_max_tokens(PROMPT_TEXT_MAX + 200), 1_024);
        assert_eq!(routing_max_tokens(usize::MAX), 1_024);
    }
}
