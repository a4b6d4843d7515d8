//! A scripted OpenAI-compatible server (`POST /v1/chat/completions`) on `127.0.0.1:0`.
//!
//! The fleet talks to it with its real async-openai client over HTTP, so everything between
//! the fleet and a real server is exercised: the request body (`response_format`, the enum of
//! task names, the corrective retry's messages), status codes, `Retry-After`, slow answers,
//! `usage`.
//!
//! - Calls come in two kinds: *routing* calls (the dispatcher's, which carry a
//!   `response_format`) and *chat* calls (the `chat` task's plain completions). Each kind has
//!   its own queue of scripted [`Reply`]s, used in arrival order.
//! - When a routing queue is empty the default answers: by default, route to `chat` with the
//!   user's text as the prompt (what a model does when nothing fits); [`FakeOpenAi::set_default`]
//!   changes it. An empty chat queue answers [`DEFAULT_CHAT_ANSWER`].
//! - [`FakeOpenAi::refuse_json_schema`] imitates a server without `json_schema` support: those
//!   requests get a 400 (without using the queue); `json_object` ones are answered as usual.
//! - Every request is recorded ([`LlmCall`]) with its body and arrival time.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

/// What a chat call (no `response_format`) answers when its queue is empty.
pub const DEFAULT_CHAT_ANSWER: &str = "The fake LLM's answer.";

/// Token counts a scripted completion reports unless told otherwise: (prompt, completion).
pub const DEFAULT_USAGE: (u32, u32) = (120, 15);

/// The body of a scripted reply.
#[derive(Debug, Clone)]
enum ReplyBody {
    /// A chat completion whose first choice says `content`.
    Completion {
        /// The assistant's text.
        content: String,
        /// `usage.prompt_tokens`, `usage.completion_tokens`.
        usage: (u32, u32),
        /// `finish_reason`: `stop`, or `length` for an answer cut at `max_tokens`.
        finish_reason: &'static str,
    },
    /// Any JSON (errors).
    Json(Value),
}

/// One scripted answer: status, headers, body and an optional delay.
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status.
    status: u16,
    /// Extra headers (e.g. `Retry-After`).
    headers: Vec<(String, String)>,
    /// The body.
    body: ReplyBody,
    /// How long to wait before answering.
    delay: Duration,
}

// === impl Reply ===

impl Reply {
    /// A 200 chat completion whose message content is `content` (any text, valid or not).
    pub fn content(content: &str) -> Self {
        Self {
            status: 200,
            headers: Vec::new(),
            body: ReplyBody::Completion {
                content: content.to_string(),
                usage: DEFAULT_USAGE,
                finish_reason: "stop",
            },
            delay: Duration::ZERO,
        }
    }

    /// A 200 completion answering `{"task": task, "input": input}`.
    pub fn route(task: &str, input: Value) -> Self {
        Self::content(&json!({ "task": task, "input": input }).to_string())
    }

    /// An error in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`.
    pub fn error(status: u16, message: &str) -> Self {
        let kind = match status {
            429 => "rate_limit_exceeded",
            400..=499 => "invalid_request_error",
            _ => "server_error",
        };
        Self {
            status,
            headers: Vec::new(),
            body: ReplyBody::Json(json!({
                "error": { "message": message, "type": kind, "param": null, "code": null }
            })),
            delay: Duration::ZERO,
        }
    }

    /// Adds a response header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Waits `delay` before answering (a slow model).
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Says the answer was cut at `max_tokens` (`finish_reason: length`).
    pub fn cut(mut self) -> Self {
        if let ReplyBody::Completion { finish_reason, .. } = &mut self.body {
            *finish_reason = "length";
        }
        self
    }

    /// Sets the `usage` a completion reports.
    pub fn usage(mut self, prompt_tokens: u32, completion_tokens: u32) -> Self {
        if let ReplyBody::Completion { usage, .. } = &mut self.body {
            *usage = (prompt_tokens, completion_tokens);
        }
        self
    }
}

/// What a routing call answers when its queue is empty.
#[derive(Debug, Clone)]
pub enum DefaultRoute {
    /// `{"task": "chat", "input": {"prompt": <the last user message>}}`.
    Chat,
    /// This reply, every time.
    Reply(Reply),
}

/// One request the server received.
#[derive(Debug, Clone)]
pub struct LlmCall {
    /// The request path.
    pub path: String,
    /// The JSON body (`Value::Null` if it was not JSON).
    pub body: Value,
    /// When it arrived.
    pub at: Instant,
    /// The status it was answered with (0 when the client gave up before the answer).
    pub status: u16,
}

// === impl LlmCall ===

impl LlmCall {
    /// Is this a routing call (one with a `response_format`)?
    pub fn is_routing(&self) -> bool {
        !self.body["response_format"].is_null()
    }

    /// `response_format.type` (`json_schema`, `json_object`), if any.
    pub fn response_format(&self) -> Option<&str> {
        self.body["response_format"]["type"].as_str()
    }

    /// The enum of task names in a `json_schema` response format.
    pub fn task_enum(&self) -> Vec<String> {
        self.body["response_format"]["json_schema"]["schema"]["properties"]["task"]["enum"]
            .as_array()
            .map(|names| {
                names
                    .iter()
                    .filter_map(|n| n.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The messages as (role, text) pairs.
    pub fn messages(&self) -> Vec<(String, String)> {
        self.body["messages"]
            .as_array()
            .map(|messages| {
                messages
                    .iter()
                    .map(|m| {
                        (
                            m["role"].as_str().unwrap_or_default().to_string(),
                            text_of(&m["content"]),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The text of the last user message.
    pub fn last_user_message(&self) -> Option<String> {
        self.messages()
            .into_iter()
            .rev()
            .find(|(role, _)| role == "user")
            .map(|(_, text)| text)
    }

    /// Does any user message contain `needle`?
    pub fn mentions(&self, needle: &str) -> bool {
        self.messages()
            .iter()
            .any(|(role, text)| role == "user" && text.contains(needle))
    }
}

/// A message's content as text: a string, or the text parts of an array.
fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join(""),
        _ => String::new(),
    }
}

/// The server's script and what happened.
#[derive(Debug)]
struct Script {
    /// Replies for routing calls, in order.
    routing: VecDeque<Reply>,
    /// Replies for chat calls, in order.
    chat: VecDeque<Reply>,
    /// What a routing call gets when its queue is empty.
    default_route: DefaultRoute,
    /// Answer `json_schema` requests with a 400.
    refuse_json_schema: bool,
    /// Every request, in arrival order.
    calls: Vec<LlmCall>,
}

/// The scripted server; stops on drop.
#[derive(Debug)]
pub struct FakeOpenAi {
    /// `http://127.0.0.1:<port>`.
    base: String,
    /// Shared with the handler.
    script: Arc<Mutex<Script>>,
    /// The server task.
    task: tokio::task::JoinHandle<()>,
}

// === impl FakeOpenAi ===

impl FakeOpenAi {
    /// Binds `127.0.0.1:0` and serves in the background.
    ///
    /// # Panics
    ///
    /// When the listener cannot be bound.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake OpenAI listener");
        let addr = listener.local_addr().expect("fake OpenAI address");
        let script = Arc::new(Mutex::new(Script {
            routing: VecDeque::new(),
            chat: VecDeque::new(),
            default_route: DefaultRoute::Chat,
            refuse_json_schema: false,
            calls: Vec::new(),
        }));
        let app = Router::new()
            .route("/v1/chat/completions", post(completions))
            .fallback(unexpected)
            .with_state(script.clone());
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("fake OpenAI stopped: {e}");
            }
        });
        Self {
            base: format!("http://{addr}"),
            script,
            task,
        }
    }

    /// The base URL to give the fleet as `OPENAI_BASE_URL` (`http://127.0.0.1:<port>/v1`).
    pub fn url(&self) -> String {
        format!("{}/v1", self.base)
    }

    /// Queues a reply for the next routing call (one with a `response_format`).
    pub fn push(&self, reply: Reply) {
        self.lock().routing.push_back(reply);
    }

    /// Queues a reply for the next chat call (one without a `response_format`).
    pub fn push_chat(&self, reply: Reply) {
        self.lock().chat.push_back(reply);
    }

    /// What a routing call answers when its queue is empty.
    pub fn set_default(&self, default: DefaultRoute) {
        self.lock().default_route = default;
    }

    /// Imitates a server without `json_schema` support: 400 to those, answers `json_object`.
    pub fn refuse_json_schema(&self) {
        self.lock().refuse_json_schema = true;
    }

    /// Every request received so far.
    pub fn calls(&self) -> Vec<LlmCall> {
        self.lock().calls.clone()
    }

    /// The routing calls received so far.
    pub fn routing_calls(&self) -> Vec<LlmCall> {
        self.calls()
            .into_iter()
            .filter(LlmCall::is_routing)
            .collect()
    }

    /// The chat calls received so far.
    pub fn chat_calls(&self) -> Vec<LlmCall> {
        self.calls()
            .into_iter()
            .filter(|c| !c.is_routing())
            .collect()
    }

    /// The routing calls whose last user message contains `text` (a corrective retry's last
    /// user message is the correction, so it is matched on any user message).
    pub fn routing_calls_for(&self, text: &str) -> Vec<LlmCall> {
        self.routing_calls()
            .into_iter()
            .filter(|c| c.mentions(text))
            .collect()
    }

    /// How many scripted routing replies are still queued.
    pub fn queued(&self) -> usize {
        self.lock().routing.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Script> {
        self.script.lock().expect("fake OpenAI state")
    }
}

impl Drop for FakeOpenAi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `POST /v1/chat/completions`.
async fn completions(State(script): State<Arc<Mutex<Script>>>, body: Bytes) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut call = LlmCall {
        path: "/v1/chat/completions".to_string(),
        body: body.clone(),
        at: Instant::now(),
        status: 0,
    };
    let reply = {
        let mut script = script.lock().expect("fake OpenAI state");
        let reply = if call.response_format() == Some("json_schema") && script.refuse_json_schema {
            Reply::error(400, "response_format json_schema is not supported")
        } else if call.is_routing() {
            match script.routing.pop_front() {
                Some(reply) => reply,
                None => match &script.default_route {
                    DefaultRoute::Chat => Reply::route(
                        "chat",
                        json!({ "prompt": call.last_user_message().unwrap_or_default() }),
                    ),
                    DefaultRoute::Reply(reply) => reply.clone(),
                },
            }
        } else {
            script
                .chat
                .pop_front()
                .unwrap_or_else(|| Reply::content(DEFAULT_CHAT_ANSWER))
        };
        call.status = reply.status;
        script.calls.push(call);
        reply
    };
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let model = body["model"].as_str().unwrap_or("fake-model").to_string();
    respond(reply, &model)
}

/// Anything else: recorded, and a 404 in OpenAI's shape.
async fn unexpected(
    State(script): State<Arc<Mutex<Script>>>,
    uri: axum::http::Uri,
    body: Bytes,
) -> Response {
    let call = LlmCall {
        path: uri.path().to_string(),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        at: Instant::now(),
        status: 404,
    };
    script.lock().expect("fake OpenAI state").calls.push(call);
    respond(
        Reply::error(404, &format!("no route {} on the fake OpenAI", uri.path())),
        "",
    )
}

/// Turns a reply into an HTTP response.
fn respond(reply: Reply, model: &str) -> Response {
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = match reply.body {
        ReplyBody::Json(value) => value,
        ReplyBody::Completion {
            content,
            usage,
            finish_reason,
        } => json!({
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": 1_700_000_000,
            "model": model,
            "choices": [{
                "index": 0,
                "message": { "role": "assistant", "content": content },
                "finish_reason": finish_reason,
            }],
            "usage": {
                "prompt_tokens": usage.0,
                "completion_tokens": usage.1,
                "total_tokens": usage.0 + usage.1,
            },
        }),
    };
    let mut headers = HeaderMap::new();
    for (name, value) in &reply.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.insert(name, value);
        }
    }
    (status, headers, axum::Json(body)).into_response()
}
