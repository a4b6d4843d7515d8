//! A scriptable imitation of the GitHub REST API, bound to `127.0.0.1:0`.
//!
//! Serves the two endpoints `github.repo_info` uses:
//!
//! - `GET /repos/{owner}/{repo}`: `{full_name, stargazers_count, forks_count,
//!   open_issues_count, description, html_url}`.
//! - `GET /repos/{owner}/{repo}/contributors?per_page=..&page=..`: pages of contributors with a
//!   GitHub-style `Link` header (`rel="prev"`, `"next"`, `"last"`, `"first"`, absolute URLs).
//!
//! Each repo is scripted with a [`Repo`]; a repo nobody scripted answers 404, or follows the
//! default script when one is set ([`FakeGithub::set_default`]). Requests are counted per repo
//! so tests can assert how many attempts the fleet made, and the chaos run how many tasks ran
//! twice. Every request, whatever its path, is also logged with its `Authorization` header
//! ([`FakeGithub::seen`]), so a test can prove a token went nowhere else.
//!
//! A hostile or odd server, for the task's trust rules: [`Repo::links_to`] makes the `Link`
//! URLs point at another base (another host, port or scheme), [`Repo::without_last`] leaves
//! out `rel="last"` (cursor-style paging: only `next`). `per_page=1` answers one contributor
//! with a `last` link whose page number is the count, as GitHub does.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use crate::Error;

/// How one fake repository behaves.
#[derive(Debug, Clone)]
pub struct Repo {
    /// `stargazers_count`.
    stars: u64,
    /// `forks_count`.
    forks: u64,
    /// `open_issues_count`.
    open_issues: u64,
    /// How many contributors the paged endpoint lists in total.
    contributors: usize,
    /// The first N requests to `/repos/{owner}/{repo}` fail with `fail_status`.
    fail_first: usize,
    /// Status of the leading failures (429 adds `Retry-After: 1`).
    fail_status: u16,
    /// Every request fails with this status.
    always_fail: Option<u16>,
    /// Every request answers 404 Not Found.
    not_found: bool,
    /// Delay before answering `/repos/{owner}/{repo}` (the contributors pages are not delayed).
    delay: Duration,
    /// The base of the `Link` URLs (None: this server's own).
    links_to: Option<String>,
    /// Leave `rel="last"` out of the `Link` header.
    without_last: bool,
}

// === impl Repo ===

impl Default for Repo {
    fn default() -> Self {
        Self {
            stars: 7,
            forks: 2,
            open_issues: 1,
            contributors: 3,
            fail_first: 0,
            fail_status: 503,
            always_fail: None,
            not_found: false,
            delay: Duration::ZERO,
            links_to: None,
            without_last: false,
        }
    }
}

impl Repo {
    /// A healthy repo with 7 stars and 3 contributors.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `stargazers_count`.
    pub fn stars(mut self, stars: u64) -> Self {
        self.stars = stars;
        self
    }

    /// Sets `forks_count`.
    pub fn forks(mut self, forks: u64) -> Self {
        self.forks = forks;
        self
    }

    /// Sets how many contributors are listed (over as many pages as `per_page` makes).
    pub fn contributors(mut self, contributors: usize) -> Self {
        self.contributors = contributors;
        self
    }

    /// The first `n` requests to the repo endpoint fail with `status` (503, 500, 429, ...).
    pub fn fail_first(mut self, n: usize, status: u16) -> Self {
        self.fail_first = n;
        self.fail_status = status;
        self
    }

    /// Every request fails with `status`.
    pub fn always_fail(mut self, status: u16) -> Self {
        self.always_fail = Some(status);
        self
    }

    /// Every request answers 404.
    pub fn not_found(mut self) -> Self {
        self.not_found = true;
        self
    }

    /// Each request to the repo endpoint waits `delay` before answering (a slow task).
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// The contributors pages' `Link` URLs start with `base` (such as another fake's
    /// [`FakeGithub::url`], or the same host under another scheme) instead of this server's.
    pub fn links_to(mut self, base: &str) -> Self {
        self.links_to = Some(base.trim_end_matches('/').to_string());
        self
    }

    /// The contributors pages' `Link` headers carry `next` (and `prev`, `first`) but no `last`.
    pub fn without_last(mut self) -> Self {
        self.without_last = true;
        self
    }
}

/// One request the fake received, on any path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// The path and query, as sent.
    pub path: String,
    /// The `Authorization` header, when there was one.
    pub authorization: Option<String>,
}

/// A repo's script and what happened to it.
#[derive(Debug, Default)]
struct RepoState {
    /// The script (None: unscripted, answers 404).
    script: Option<Repo>,
    /// How many leading failures are still to come.
    failures_left: usize,
    /// Arrival time of each request to the repo endpoint.
    info_requests: Vec<Instant>,
    /// The `traceparent` header of each request to the repo endpoint (None when absent).
    traceparents: Vec<Option<String>>,
    /// How many contributors pages were requested.
    contributor_requests: usize,
}

/// Shared between the handlers and the test.
#[derive(Debug, Default)]
struct Shared {
    /// Base URL (`http://127.0.0.1:<port>`) for absolute `Link` URLs.
    base: String,
    /// Per `owner/repo`.
    repos: Mutex<HashMap<String, RepoState>>,
    /// The script of repos nobody scripted (None: they answer 404).
    default: Mutex<Option<Repo>>,
    /// Every request, in arrival order.
    seen: Mutex<Vec<Seen>>,
}

// === impl Shared ===

impl Shared {
    /// The repos' states (a handler that panicked cannot leave them half-written: every
    /// update is one statement).
    fn repos(&self) -> MutexGuard<'_, HashMap<String, RepoState>> {
        self.repos.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The script of `state`'s repo: its own, else the default.
    fn script(&self, state: &RepoState) -> Option<Repo> {
        state.script.clone().or_else(|| {
            self.default
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
        })
    }
}

/// The fake GitHub API server; stops on drop.
#[derive(Debug)]
pub struct FakeGithub {
    /// State shared with the handlers.
    shared: Arc<Shared>,
    /// The server task.
    task: tokio::task::JoinHandle<()>,
}

// === impl FakeGithub ===

impl FakeGithub {
    /// Binds `127.0.0.1:0` and serves in the background.
    ///
    /// # Errors
    ///
    /// When the listener cannot be bound.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), fleet_testkit::Error> {
    /// use fleet_testkit::{FakeGithub, Repo};
    /// let github = FakeGithub::start().await?;
    /// github.set("o/r", Repo::new().stars(5));
    /// // give the worker GITHUB_API_URL = github.url()
    /// # Ok(())
    /// # }
    /// ```
    pub async fn start() -> Result<Self, Error> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            base: format!("http://{addr}"),
            repos: Mutex::new(HashMap::new()),
            default: Mutex::new(None),
            seen: Mutex::new(Vec::new()),
        });
        let app = Router::new()
            .route("/repos/{owner}/{repo}", get(repo_info))
            .route("/repos/{owner}/{repo}/contributors", get(contributors))
            .fallback(|| async { not_found_response() })
            .layer(middleware::from_fn_with_state(shared.clone(), log_request))
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("fake GitHub stopped: {e}");
            }
        });
        Ok(Self { shared, task })
    }

    /// The base URL to give the fleet as `GITHUB_API_URL`.
    pub fn url(&self) -> String {
        self.shared.base.clone()
    }

    /// Scripts `owner/repo` (replacing an earlier script; request counts are kept).
    pub fn set(&self, full_name: &str, repo: Repo) {
        let mut repos = self.shared.repos();
        let state = repos.entry(full_name.to_string()).or_default();
        state.failures_left = repo.fail_first;
        state.script = Some(repo);
    }

    /// Scripts every repo not scripted with [`FakeGithub::set`] (its `fail_first` is ignored:
    /// leading failures are counted per scripted repo).
    pub fn set_default(&self, repo: Repo) {
        *self
            .shared
            .default
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(repo);
    }

    /// How many requests reached `GET /repos/{owner}/{repo}`, for every repo asked for.
    pub fn request_counts(&self) -> HashMap<String, usize> {
        self.shared
            .repos()
            .iter()
            .map(|(name, state)| (name.clone(), state.info_requests.len()))
            .collect()
    }

    /// How many requests reached `GET /repos/{owner}/{repo}` (one per task attempt).
    pub fn requests(&self, full_name: &str) -> usize {
        self.request_times(full_name).len()
    }

    /// When each request to `GET /repos/{owner}/{repo}` arrived.
    pub fn request_times(&self, full_name: &str) -> Vec<Instant> {
        let repos = self.shared.repos();
        repos
            .get(full_name)
            .map(|s| s.info_requests.clone())
            .unwrap_or_default()
    }

    /// The `traceparent` header each request to `GET /repos/{owner}/{repo}` carried.
    pub fn traceparents(&self, full_name: &str) -> Vec<Option<String>> {
        let repos = self.shared.repos();
        repos
            .get(full_name)
            .map(|s| s.traceparents.clone())
            .unwrap_or_default()
    }

    /// Every request this server received, on any path, with its `Authorization` header.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared
            .seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// How many contributors pages were requested for `owner/repo`.
    pub fn contributor_requests(&self, full_name: &str) -> usize {
        let repos = self.shared.repos();
        repos
            .get(full_name)
            .map(|s| s.contributor_requests)
            .unwrap_or_default()
    }
}

impl Drop for FakeGithub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Logs every request (see [`FakeGithub::seen`]).
async fn log_request(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let seen = Seen {
        path: request
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_default(),
        authorization: request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
    };
    shared
        .seen
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(seen);
    next.run(request).await
}

/// `GET /repos/{owner}/{repo}`.
async fn repo_info(
    State(shared): State<Arc<Shared>>,
    Path((owner, repo)): Path<(String, String)>,
    request_headers: HeaderMap,
) -> Response {
    let full_name = format!("{owner}/{repo}");
    let traceparent = request_headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let (response, delay) = {
        let mut repos = shared.repos();
        let state = repos.entry(full_name.clone()).or_default();
        state.info_requests.push(Instant::now());
        state.traceparents.push(traceparent);
        match shared.script(state) {
            None => (not_found_response(), Duration::ZERO),
            Some(script) => {
                let response = if script.not_found {
                    not_found_response()
                } else if let Some(status) = script.always_fail {
                    error_response(status)
                } else if state.failures_left > 0 {
                    state.failures_left -= 1;
                    error_response(script.fail_status)
                } else {
                    Json(json!({
                        "id": 1,
                        "name": repo,
                        "full_name": full_name,
                        "stargazers_count": script.stars,
                        "watchers_count": script.stars,
                        "forks_count": script.forks,
                        "open_issues_count": script.open_issues,
                        "description": format!("Fake repository {full_name}"),
                        "html_url": format!("https://github.com/{full_name}"),
                        "private": false,
                    }))
                    .into_response()
                };
                (response, script.delay)
            }
        }
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    response
}

/// `GET /repos/{owner}/{repo}/contributors`.
async fn contributors(
    State(shared): State<Arc<Shared>>,
    Path((owner, repo)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let full_name = format!("{owner}/{repo}");
    let script = {
        let mut repos = shared.repos();
        let state = repos.entry(full_name.clone()).or_default();
        state.contributor_requests += 1;
        shared.script(state)
    };
    let Some(script) = script else {
        return not_found_response();
    };
    if script.not_found {
        return not_found_response();
    }
    if let Some(status) = script.always_fail {
        return error_response(status);
    }

    let per_page: usize = query
        .get("per_page")
        .and_then(|v| v.parse().ok())
        .unwrap_or(30)
        .clamp(1, 100);
    let page: usize = query
        .get("page")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .max(1);
    let total = script.contributors;
    let start = (page - 1).saturating_mul(per_page).min(total);
    let end = (start + per_page).min(total);
    let items: Vec<Value> = (start..end)
        .map(|i| {
            json!({
                "login": format!("contributor-{i}"),
                "id": i + 1,
                "type": "User",
                "contributions": total - i,
            })
        })
        .collect();

    let last = total.div_ceil(per_page).max(1);
    let anon = query
        .get("anon")
        .map(|a| format!("&anon={a}"))
        .unwrap_or_default();
    let base = script.links_to.as_deref().unwrap_or(&shared.base);
    let url = |p: usize| {
        format!("{base}/repos/{full_name}/contributors?per_page={per_page}{anon}&page={p}")
    };
    // GitHub's order: prev, next, last, first.
    let mut links = Vec::new();
    if page > 1 {
        links.push(format!("<{}>; rel=\"prev\"", url(page - 1)));
    }
    if page < last {
        links.push(format!("<{}>; rel=\"next\"", url(page + 1)));
        if !script.without_last {
            links.push(format!("<{}>; rel=\"last\"", url(last)));
        }
    }
    if page > 1 {
        links.push(format!("<{}>; rel=\"first\"", url(1)));
    }
    let mut headers = HeaderMap::new();
    if !links.is_empty()
        && let Ok(value) = HeaderValue::from_str(&links.join(", "))
    {
        headers.insert(header::LINK, value);
    }
    (headers, Json(Value::Array(items))).into_response()
}

/// GitHub's 404 body.
fn not_found_response() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({
            "message": "Not Found",
            "documentation_url": "https://docs.github.com/rest",
            "status": "404",
        })),
    )
        .into_response()
}

/// An error status with a GitHub-like body; 429 carries `Retry-After: 1`.
fn error_response(status: u16) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = Json(json!({ "message": format!("fake failure {status}") }));
    if code == StatusCode::TOO_MANY_REQUESTS {
        let mut headers = HeaderMap::new();
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        (code, headers, body).into_response()
    } else {
        (code, body).into_response()
    }
}
