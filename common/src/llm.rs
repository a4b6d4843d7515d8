//! The LLM client: any OpenAI-compatible server (OpenAI, vLLM, Ollama, llama.cpp) or Azure
//! OpenAI, through async-openai.
//!
//! Errors carry the retry decision: 429, 5xx, timeouts and connection errors are
//! [`LlmError::Retryable`]; everything else is [`LlmError::Permanent`]. Error messages never
//! contain the API key: they are sentences of our own with the HTTP status. A server's own text
//! is kept only where it says what is wrong with a request (400, 404, 422: an unknown model, an
//! unsupported response format), cut short and with the configured keys and anything shaped
//! like a key masked; an authentication error never quotes it, since servers echo the key there
//! ("Incorrect API key provided: sk-…"). These messages reach logs, spans and results.

use std::time::Duration;

mod retry;

use async_openai::{
    Client,
    config::{AzureConfig, OpenAIConfig},
    error::OpenAIError,
    middleware::ReqwestService,
    types::chat::{
        ChatCompletionRequestMessage, ChatCompletionRequestUserMessage,
        CreateChatCompletionRequest, CreateChatCompletionResponse,
    },
};
use secrecy::{ExposeSecret, SecretString};
use thiserror::Error;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::config::LlmArgs;

/// Why an LLM call failed.
#[derive(Debug, Error)]
pub enum LlmError {
    /// Worth another try later (rate limit, server error, timeout, connection).
    #[error("the LLM is unavailable: {message}")]
    Retryable {
        /// What happened.
        message: String,
        /// How long the server asked to wait, when it said.
        after: Option<Duration>,
    },
    /// Another try would fail the same way (bad request, auth, unknown model).
    #[error("the LLM refused the call: {message}")]
    Permanent {
        /// What happened.
        message: String,
    },
}

/// How much of a server's own error text a message keeps.
const SERVER_TEXT_MAX: usize = 200;

/// What replaces a word that may be a credential.
const MASK: &str = "[redacted]";

impl From<OpenAIError> for LlmError {
    fn from(e: OpenAIError) -> Self {
        let retryable = |message: String| LlmError::Retryable {
            message,
            after: None,
        };
        match &e {
            OpenAIError::ApiError(resp) => {
                let code = resp.status_code.as_u16();
                let api = &resp.api_error;
                match code {
                    401 | 403 | 407 => LlmError::Permanent {
                        message: format!(
                            "HTTP {code}: the LLM server did not accept the fleet's credentials; \
                             check OPENAI_API_KEY (or AZURE_OPENAI_API_KEY) and the key's rights"
                        ),
                    },
                    429 => retryable(format!(
                        "HTTP {code}: the LLM server is rate-limiting calls"
                    )),
                    408 => retryable(format!("HTTP {code}: the LLM server timed the call out")),
                    500.. => retryable(format!("HTTP {code}: the LLM server failed")),
                    _ => LlmError::Permanent {
                        message: format!(
                            "HTTP {code}: the LLM server refused the request{}: {}",
                            identifiers(api),
                            scrub(&api.message, &[])
                        ),
                    },
                }
            }
            // reqwest's own text names the URL, which may carry credentials.
            OpenAIError::Reqwest(re) => retryable(if re.is_timeout() {
                "the call timed out".to_owned()
            } else if re.is_connect() {
                "cannot connect to the LLM server".to_owned()
            } else if let Some(status) = re.status() {
                format!("HTTP {}: the LLM call failed", status.as_u16())
            } else {
                "the LLM call failed on the way (connection, body or redirect)".to_owned()
            }),
            // The text holds the body, which may echo the request or the key.
            OpenAIError::JSONDeserialize(..) => LlmError::Permanent {
                message: "the LLM server's answer is not an OpenAI-compatible response (a proxy's \
                          error page?)"
                    .to_owned(),
            },
            OpenAIError::InvalidArgument(text) => LlmError::Permanent {
                message: format!("the LLM request is invalid: {}", scrub(text, &[])),
            },
            _ => LlmError::Permanent {
                message: "the LLM call failed".to_owned(),
            },
        }
    }
}

// === impl LlmError ===

impl LlmError {
    /// The same error with every occurrence of one of `keys` masked in its message.
    fn without(self, keys: &[SecretString]) -> Self {
        let keys: Vec<&str> = keys.iter().map(|k| k.expose_secret()).collect();
        match self {
            LlmError::Retryable { message, after } => LlmError::Retryable {
                message: scrub(&message, &keys),
                after,
            },
            LlmError::Permanent { message } => LlmError::Permanent {
                message: scrub(&message, &keys),
            },
        }
    }
}

/// The error's `type`, `code` and `param` when they are plain identifiers
/// (` (invalid_request_error, model_not_found, param model)`), else nothing.
fn identifiers(api: &async_openai::error::ApiError) -> String {
    let plain = |s: &&String| {
        !s.is_empty()
            && s.len() <= 64
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    };
    let mut parts: Vec<String> = [&api.r#type, &api.code]
        .into_iter()
        .flatten()
        .filter(plain)
        .cloned()
        .collect();
    if let Some(param) = api.param.as_ref().filter(plain) {
        parts.push(format!("param {param}"));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join(", "))
    }
}

/// `text` cut to [`SERVER_TEXT_MAX`] characters, with each of `keys` and every word shaped
/// like a credential replaced by [`MASK`].
fn scrub(text: &str, keys: &[&str]) -> String {
    let mut text: String = text.chars().take(SERVER_TEXT_MAX).collect();
    for key in keys.iter().filter(|k| k.len() >= 8) {
        text = text.replace(key, MASK);
    }
    text.split_inclusive(char::is_whitespace)
        .map(|piece| {
            let word = piece.trim_end();
            let bare =
                word.trim_matches(|c: char| !(c.is_ascii_alphanumeric() || "-_*".contains(c)));
            if key_shaped(bare) {
                piece.replacen(bare, MASK, 1)
            } else {
                piece.to_owned()
            }
        })
        .collect()
}

/// Whether `word` looks like an API key or token: a known key prefix (`sk-`, a GitHub token's,
/// a Slack token's), or 32 or more characters of letters, digits, `-` and `_` with both
/// letters and digits (as Azure's hex keys and most tokens are).
fn key_shaped(word: &str) -> bool {
    const PREFIXES: [&str; 8] = [
        "sk-",
        "sk_",
        "ghp_",
        "gho_",
        "ghs_",
        "ghu_",
        "github_pat_",
        "xox",
    ];
    if PREFIXES.iter().any(|p| word.starts_with(p)) && word.len() > 6 {
        return true;
    }
    word.len() >= 32
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '*')
        && word.chars().any(|c| c.is_ascii_digit())
        && word.chars().any(|c| c.is_ascii_alphabetic())
}

/// The configured client.
#[derive(Debug, Clone)]
enum Backend {
    /// OpenAI or any compatible server.
    OpenAi(Client<OpenAIConfig>),
    /// Azure OpenAI.
    Azure(Client<AzureConfig>),
}

/// An LLM client with its model name.
#[derive(Debug, Clone)]
pub struct Llm {
    /// Who answers.
    backend: Backend,
    /// The model sent with each call.
    model: String,
    /// `openai` or `azure.ai.openai`, for `gen_ai.provider.name`.
    provider: &'static str,
    /// The server's host and port, for `server.address` and `server.port`.
    server: Option<(String, u16)>,
    /// The configured API keys, masked in every error message should a server echo them.
    keys: Vec<SecretString>,
    /// `FLEET_LLM_TIMEOUT`: the most one call may take, retries and their waits included
    /// (async-openai's own retry would sleep for any `Retry-After`; see `llm/retry.rs`).
    timeout: Duration,
}

// === impl Llm ===

impl Llm {
    /// Builds the client from the settings; `None` when no LLM is configured.
    ///
    /// ```no_run
    /// # fn f(args: fleet_common::config::LlmArgs) {
    /// let llm = fleet_common::llm::Llm::from_args(&args);
    /// # }
    /// ```
    pub fn from_args(args: &LlmArgs) -> Option<Self> {
        if !args.is_configured() {
            return None;
        }
        let http = reqwest::Client::builder()
            .timeout(args.llm_timeout)
            .build()
            .unwrap_or_default();
        // 429, 5xx and connection errors are retried with exponential backoff, honouring
        // Retry-After when the wait ends within FLEET_LLM_TIMEOUT (`llm/retry.rs`).
        let service = tower::ServiceBuilder::new()
            .layer(retry::BoundedRetryLayer {
                retries: args.llm_retries,
                budget: args.llm_timeout,
            })
            .service(ReqwestService::new(http));
        if let Some(endpoint) = &args.azure_openai_endpoint {
            let mut config = AzureConfig::new()
                .with_api_base(endpoint.clone())
                .with_api_version(args.azure_openai_api_version.clone())
                .with_deployment_id(
                    args.azure_openai_deployment
                        .clone()
                        .unwrap_or_else(|| args.llm_model.clone()),
                );
            if let Some(key) = &args.azure_openai_api_key {
                config = config.with_api_key(key.expose_secret());
            }
            return Some(Self {
                backend: Backend::Azure(Client::with_config(config).with_http_service(service)),
                model: args.llm_model.clone(),
                provider: "azure.ai.openai",
                server: host_and_port(endpoint),
                keys: args.azure_openai_api_key.iter().cloned().collect(),
                timeout: args.llm_timeout,
            });
        }
        let mut config = OpenAIConfig::new();
        if let Some(base) = &args.openai_base_url {
            config = config.with_api_base(base.trim_end_matches('/'));
        }
        // A local server needs no key; async-openai would otherwise send an empty bearer.
        config = config.with_api_key(
            args.openai_api_key
                .as_ref()
                .map(|k| k.expose_secret().to_owned())
                .unwrap_or_else(|| "none".to_owned()),
        );
        Some(Self {
            backend: Backend::OpenAi(Client::with_config(config).with_http_service(service)),
            model: args.llm_model.clone(),
            provider: "openai",
            server: host_and_port(
                args.openai_base_url
                    .as_deref()
                    .unwrap_or(async_openai::config::OPENAI_API_BASE),
            ),
            keys: args.openai_api_key.iter().cloned().collect(),
            timeout: args.llm_timeout,
        })
    }

    /// The model name.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// The `gen_ai.provider.name` value: `openai` or `azure.ai.openai`.
    pub fn provider(&self) -> &'static str {
        self.provider
    }

    /// Sends one chat completion request (the model is filled in when empty); the call, its
    /// retries and their waits end within `FLEET_LLM_TIMEOUT`, else it is a retryable error.
    ///
    /// # Errors
    ///
    /// [`LlmError`] with the retry decision.
    pub async fn complete(
        &self,
        request: CreateChatCompletionRequest,
    ) -> Result<CreateChatCompletionResponse, LlmError> {
        self.complete_judged(request, |_| None).await
    }

    /// Like [`Self::complete`]; `verdict` says what the caller makes of an answer (a routing
    /// answer used, or why not), recorded on the `chat <model>` span as `fleet.routing.verdict`.
    ///
    /// # Errors
    ///
    /// [`LlmError`] with the retry decision.
    pub async fn complete_judged(
        &self,
        mut request: CreateChatCompletionRequest,
        verdict: impl FnOnce(&CreateChatCompletionResponse) -> Option<String> + Send,
    ) -> Result<CreateChatCompletionResponse, LlmError> {
        if request.model.is_empty() {
            request.model = self.model.clone();
        }
        let span = tracing::info_span!(
            "gen_ai.chat",
            otel.name = format!("chat {}", request.model),
            otel.kind = "client",
            gen_ai.provider.name = self.provider,
            gen_ai.operation.name = "chat",
            gen_ai.request.model = %request.model,
            gen_ai.response.id = tracing::field::Empty,
            gen_ai.response.model = tracing::field::Empty,
            gen_ai.usage.input_tokens = tracing::field::Empty,
            gen_ai.usage.output_tokens = tracing::field::Empty,
            fleet.routing.verdict = tracing::field::Empty,
            server.address = self.server.as_ref().map(|(host, _)| host.as_str()),
            server.port = self.server.as_ref().map(|(_, port)| i64::from(*port)),
        );
        let call = async {
            let response = match &self.backend {
                Backend::OpenAi(c) => c.chat().create(request).await,
                Backend::Azure(c) => c.chat().create(request).await,
            };
            let span = tracing::Span::current();
            match response {
                Ok(response) => {
                    span.record("gen_ai.response.id", response.id.as_str());
                    span.record("gen_ai.response.model", response.model.as_str());
                    span.set_attribute("gen_ai.response.finish_reasons", finish_reasons(&response));
                    if let Some(usage) = &response.usage {
                        span.record("gen_ai.usage.input_tokens", i64::from(usage.prompt_tokens));
                        span.record(
                            "gen_ai.usage.output_tokens",
                            i64::from(usage.completion_tokens),
                        );
                    }
                    if let Some(v) = verdict(&response) {
                        span.record("fleet.routing.verdict", v.as_str());
                    }
                    Ok(response)
                }
                Err(e) => {
                    let error_type = error_type(&e);
                    let e = LlmError::from(e).without(&self.keys);
                    crate::telemetry::record_error(&error_type, &e.to_string());
                    Err(e)
                }
            }
        };
        let call = tracing::Instrument::instrument(call, span.clone());
        match tokio::time::timeout(self.timeout, call).await {
            Ok(outcome) => outcome,
            Err(_) => {
                let e = LlmError::Retryable {
                    message: format!(
                        "no answer within FLEET_LLM_TIMEOUT ({})",
                        humantime::format_duration(self.timeout)
                    ),
                    after: None,
                };
                span.in_scope(|| crate::telemetry::record_error("timeout", &e.to_string()));
                Err(e)
            }
        }
    }

    /// Asks a plain question and returns the answer text.
    ///
    /// # Errors
    ///
    /// [`LlmError`] with the retry decision; an empty answer is retryable.
    pub async fn answer(&self, prompt: &str) -> Result<String, LlmError> {
        let request = CreateChatCompletionRequest {
            model: self.model.clone(),
            messages: vec![ChatCompletionRequestMessage::User(
                ChatCompletionRequestUserMessage::from(prompt),
            )],
            ..Default::default()
        };
        let response = self.complete(request).await?;
        response
            .choices
            .into_iter()
            .find_map(|c| c.message.content)
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| LlmError::Retryable {
                message: "the LLM answered with no text".into(),
                after: None,
            })
    }
}

/// `gen_ai.response.finish_reasons`: each choice's reason, as the API names it (`stop`,
/// `length`, `tool_calls`, `content_filter`, `function_call`).
fn finish_reasons(response: &CreateChatCompletionResponse) -> opentelemetry::Value {
    let reasons = response
        .choices
        .iter()
        .filter_map(|c| c.finish_reason)
        .filter_map(|r| match serde_json::to_value(r) {
            Ok(serde_json::Value::String(s)) => Some(opentelemetry::StringValue::from(s)),
            _ => None,
        })
        .collect();
    opentelemetry::Value::Array(opentelemetry::Array::String(reasons))
}

/// `error.type` of a failed call: the HTTP status when the server answered, else a short class.
fn error_type(e: &OpenAIError) -> String {
    match e {
        OpenAIError::ApiError(resp) => resp.status_code.as_u16().to_string(),
        OpenAIError::Reqwest(re) if re.is_timeout() => "timeout".into(),
        OpenAIError::Reqwest(re) if re.is_connect() => "connection".into(),
        OpenAIError::Reqwest(re) => match re.status() {
            Some(status) => status.as_u16().to_string(),
            None => "http".into(),
        },
        OpenAIError::JSONDeserialize(..) => "invalid_response".into(),
        _ => "_OTHER".into(),
    }
}

/// The host and port of a base URL, for `server.address` and `server.port`.
fn host_and_port(base: &str) -> Option<(String, u16)> {
    let url = url::Url::parse(base).ok()?;
    Some((url.host_str()?.to_owned(), url.port_or_known_default()?))
}

#[cfg(test)]
mod tests {
    use async_openai::error::{ApiError, ApiErrorResponse};

    use super::*;

    const KEY: &str = "sk-proj-Zq81xT0pLm4Vv7Rr2Nn5Kk9Hh3Gg6Ff1Dd8Ss";

    fn api(status: u16, message: &str) -> OpenAIError {
        OpenAIError::ApiError(ApiErrorResponse {
            status_code: reqwest::StatusCode::from_u16(status).unwrap_or_default(),
            api_error: ApiError {
                message: message.to_owned(),
                r#type: Some("invalid_request_error".into()),
                code: Some("invalid_api_key".into()),
                ..Default::default()
            },
        })
    }

    #[test]
    fn authentication_errors_never_quote_the_server() {
        let text = format!("Incorrect API key provided: {KEY}. You can find your API key at …");
        for status in [401, 403] {
            let e = LlmError::from(api(status, &text));
            let shown = e.to_string();
            assert!(matches!(e, LlmError::Permanent { .. }), "{shown}");
            assert!(!shown.contains("Zq81xT0p"), "{shown}");
            assert!(!shown.contains("Incorrect"), "{shown}");
            assert!(shown.contains(&format!("HTTP {status}")), "{shown}");
            assert!(shown.contains("OPENAI_API_KEY"), "{shown}");
        }
    }

    #[test]
    fn request_errors_keep_the_servers_reason_without_keys() {
        let e = LlmError::from(api(400, "response_format json_schema is not supported"));
        assert!(
            e.to_string().contains("json_schema is not supported"),
            "{e}"
        );
        let e = LlmError::from(api(404, &format!("no model gpt-x for key {KEY}")));
        assert!(!e.to_string().contains("Zq81xT0p"), "{e}");
        assert!(e.to_string().contains("no model gpt-x"), "{e}");
        // A key the server echoes in another shape is masked because it is configured.
        let echoed = "key=hunter2-longer-than-8";
        let e = LlmError::from(api(400, &format!("bad {echoed}")))
            .without(&[SecretString::from("hunter2-longer-than-8")]);
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }

    #[test]
    fn server_errors_and_unreadable_answers_are_sentences_of_our_own() {
        let e = LlmError::from(api(503, &format!("upstream said {KEY}")));
        assert!(matches!(e, LlmError::Retryable { .. }), "{e}");
        assert!(!e.to_string().contains("upstream"), "{e}");
        let Err(json) = serde_json::from_str::<serde_json::Value>("{") else {
            return;
        };
        let e = LlmError::from(OpenAIError::JSONDeserialize(
            json,
            format!("<html>denied for {KEY}</html>"),
        ));
        assert!(!e.to_string().contains("denied"), "{e}");
    }

    #[test]
    fn key_shaped_words_are_masked() {
        assert_eq!(
            scrub(&format!("use {KEY}, not that"), &[]),
            format!("use {MASK}, not that")
        );
        let azure = "0123456789abcdef0123456789abcdef";
        assert_eq!(
            scrub(&format!("key '{azure}'"), &[]),
            format!("key '{MASK}'")
        );
        let kept = "model Meta-Llama-3.1-8B-Instruct-Q4_K_M does not exist";
        assert_eq!(scrub(kept, &[]), kept);
        assert!(scrub(&"x".repeat(1_000), &[]).len() <= SERVER_TEXT_MAX);
    }
}
