//! The LLM client: any OpenAI-compatible server (OpenAI, vLLM, Ollama, llama.cpp) or Azure
//! OpenAI, through async-openai.
//!
//! Errors carry the retry decision: 429, 5xx, timeouts and connection errors are
//! [`LlmError::Retryable`]; everything else is [`LlmError::Permanent`]. Error messages never
//! contain the API key.

use std::time::Duration;

use async_openai::{
    Client,
    config::{AzureConfig, OpenAIConfig},
    error::OpenAIError,
    middleware::{ReqwestService, retry::OpenAIRetryLayer},
    types::chat::{
        ChatCompletionRequestMessage, ChatCompletionRequestUserMessage,
        CreateChatCompletionRequest, CreateChatCompletionResponse,
    },
};
use secrecy::ExposeSecret;
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

impl From<OpenAIError> for LlmError {
    fn from(e: OpenAIError) -> Self {
        match &e {
            OpenAIError::ApiError(resp) => {
                let code = resp.status_code.as_u16();
                let message = format!("HTTP {code}: {}", resp.api_error.message);
                if code == 429 || code == 408 || code >= 500 {
                    LlmError::Retryable {
                        message,
                        after: None,
                    }
                } else {
                    LlmError::Permanent { message }
                }
            }
            OpenAIError::Reqwest(re) => {
                let message = if re.is_timeout() {
                    "the call timed out".to_owned()
                } else if re.is_connect() {
                    "cannot connect to the LLM server".to_owned()
                } else {
                    // reqwest errors name the URL, never the key.
                    re.to_string()
                };
                LlmError::Retryable {
                    message,
                    after: None,
                }
            }
            other => LlmError::Permanent {
                message: other.to_string(),
            },
        }
    }
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
        // Retry-After, by async-openai's own retry layer.
        let service = tower::ServiceBuilder::new()
            .layer(OpenAIRetryLayer::new(args.llm_retries))
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

    /// Sends one chat completion request (the model is filled in when empty).
    ///
    /// # Errors
    ///
    /// [`LlmError`] with the retry decision.
    pub async fn complete(
        &self,
        mut request: CreateChatCompletionRequest,
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
                    Ok(response)
                }
                Err(e) => {
                    let error_type = error_type(&e);
                    let e = LlmError::from(e);
                    crate::telemetry::record_error(&error_type, &e.to_string());
                    Err(e)
                }
            }
        };
        tracing::Instrument::instrument(call, span).await
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
