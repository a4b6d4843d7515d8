//! `github.repo_info`: a repository's stars and contributors from the GitHub REST API.
//!
//! 5xx, 429, rate-limit 403s, timeouts and connection errors are retryable (honouring
//! `Retry-After`); 404 and other 4xx are permanent. Contributors are counted over every page,
//! following the `Link: <…>; rel="next"` headers.

use std::time::Duration;

use fleet_common::telemetry;
use reqwest::{Response, StatusCode, header};
use schemars::JsonSchema;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::Instrument;

use super::Task;
use crate::error::TaskError;

/// The most contributor pages read (100 each); GitHub itself stops listing at 500 contributors.
const MAX_PAGES: usize = 50;

/// The input of `github.repo_info`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// The owner (user or organisation), such as `ranfysvalle02`.
    #[schemars(pattern(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})$"))]
    pub owner: String,
    /// The repository name, such as `ai-self-attention`.
    #[schemars(pattern(r"^[A-Za-z0-9._-]{1,100}$"))]
    pub repo: String,
}

/// The repository fields the task reads.
#[derive(Debug, Deserialize)]
struct Repo {
    /// `owner/name`.
    full_name: String,
    /// Stars.
    stargazers_count: u64,
    /// Forks.
    #[serde(default)]
    forks_count: u64,
    /// Open issues and pull requests.
    #[serde(default)]
    open_issues_count: u64,
    /// The description.
    #[serde(default)]
    description: Option<String>,
    /// The web page.
    #[serde(default)]
    html_url: Option<String>,
}

/// Reads a repository's stars and contributors.
#[derive(Debug, Clone)]
pub struct GithubRepoInfo {
    /// Shared HTTP client (timeouts set by `FLEET_HTTP_TIMEOUT`).
    http: reqwest::Client,
    /// `GITHUB_API_URL` without a trailing slash.
    base: String,
    /// `GITHUB_TOKEN`.
    token: Option<SecretString>,
}

// === impl GithubRepoInfo ===

impl GithubRepoInfo {
    /// A task calling the API at `base`.
    pub fn new(http: reqwest::Client, base: &str, token: Option<SecretString>) -> Self {
        Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            token,
        }
    }

    async fn get(&self, url: &str, what: &str) -> Result<Response, TaskError> {
        let target = reqwest::Url::parse(url).ok();
        let span = tracing::info_span!(
            "http.get",
            otel.name = "GET",
            otel.kind = "client",
            http.request.method = "GET",
            url.full = %url,
            server.address = target.as_ref().and_then(|u| u.host_str()),
            server.port = target
                .as_ref()
                .and_then(|u| u.port_or_known_default())
                .map(i64::from),
            http.response.status_code = tracing::field::Empty,
        );
        self.send(url, what).instrument(span).await
    }

    async fn send(&self, url: &str, what: &str) -> Result<Response, TaskError> {
        let mut headers = header::HeaderMap::new();
        telemetry::inject_http(&mut headers);
        let mut request = self
            .http
            .get(url)
            .headers(headers)
            .header(header::ACCEPT, "application/vnd.github+json")
            .header(header::USER_AGENT, "fleet-worker")
            .header("X-GitHub-Api-Version", "2022-11-28");
        if let Some(token) = &self.token {
            request = request.bearer_auth(token.expose_secret());
        }
        let response = request.send().await.map_err(|e| {
            let (why, error_type) = if e.is_timeout() {
                ("timed out", "timeout")
            } else if e.is_connect() {
                ("could not connect", "connection")
            } else {
                ("failed", "http")
            };
            let message = format!("GitHub request for {what} {why}: {}", e.without_url());
            // Inside the `GET` span: it failed before any answer.
            telemetry::record_error(error_type, &message);
            TaskError::retry(message)
        })?;
        let status = response.status();
        tracing::Span::current().record("http.response.status_code", i64::from(status.as_u16()));
        if status.is_client_error() || status.is_server_error() {
            // A client call answered with a 4xx or 5xx failed; the status is its class.
            telemetry::record_error(&status.as_u16().to_string(), &format!("HTTP {status}"));
        }
        classify(response, what)
    }
}

impl Task for GithubRepoInfo {
    type Input = Input;
    const NAME: &'static str = "github.repo_info";
    const DESCRIPTION: &'static str = "Look up a GitHub repository given as owner/repo: its number of stars and of contributors (all pages counted), forks and open issues.";
    const OUTPUT: &'static str =
        "{ full_name, stars, contributors, forks, open_issues, description, url }";
    const EXAMPLES: &'static [&'static str] = &[
        "Give me the stars and contributors for ranfysvalle02/ai-self-attention",
        "How many stars does rust-lang/rust have?",
    ];

    async fn run(&self, input: Input) -> Result<Value, TaskError> {
        let name = format!("{}/{}", input.owner, input.repo);
        let repo: Repo = self
            .get(&format!("{}/repos/{name}", self.base), &name)
            .await?
            .json()
            .await
            .map_err(|e| {
                TaskError::retry(format!("GitHub sent an unreadable answer for {name}: {e}"))
            })?;

        let mut contributors = 0usize;
        let mut next = Some(format!(
            "{}/repos/{name}/contributors?per_page=100&anon=1",
            self.base
        ));
        let mut pages = 0;
        while let Some(url) = next.take() {
            pages += 1;
            let response = self.get(&url, &name).await?;
            if response.status() == StatusCode::NO_CONTENT {
                break;
            }
            next = next_link(response.headers()).filter(|_| pages < MAX_PAGES);
            let page: Vec<Value> = response.json().await.map_err(|e| {
                TaskError::retry(format!(
                    "GitHub sent an unreadable contributors page for {name}: {e}"
                ))
            })?;
            contributors += page.len();
        }

        Ok(json!({
            "full_name": repo.full_name,
            "stars": repo.stargazers_count,
            "contributors": contributors,
            "forks": repo.forks_count,
            "open_issues": repo.open_issues_count,
            "description": repo.description,
            "url": repo.html_url,
        }))
    }
}

/// Turns an HTTP status into the retry decision.
fn classify(response: Response, what: &str) -> Result<Response, TaskError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let retry_after = retry_after(response.headers());
    let rate_limited = response
        .headers()
        .get("x-ratelimit-remaining")
        .and_then(|v| v.to_str().ok())
        == Some("0");
    match status {
        StatusCode::NOT_FOUND => Err(TaskError::abort(format!(
            "GitHub has no repository {what} (404): check the owner and the name, or set GITHUB_TOKEN for a private repository"
        ))),
        StatusCode::TOO_MANY_REQUESTS => Err(TaskError::Retry {
            message: format!("GitHub rate-limited the request for {what} (429)"),
            after: retry_after,
        }),
        StatusCode::FORBIDDEN if rate_limited || retry_after.is_some() => Err(TaskError::Retry {
            message: format!(
                "GitHub's rate limit is used up (403) for {what}; set GITHUB_TOKEN for a higher limit"
            ),
            after: retry_after.or_else(|| reset_in(response.headers())),
        }),
        s if s.is_server_error() || s == StatusCode::REQUEST_TIMEOUT => Err(TaskError::Retry {
            message: format!("GitHub answered {s} for {what}"),
            after: retry_after,
        }),
        s => Err(TaskError::abort(format!(
            "GitHub refused the request for {what} ({s}); check GITHUB_TOKEN and the repository name"
        ))),
    }
}

/// `Retry-After` in seconds.
fn retry_after(headers: &header::HeaderMap) -> Option<Duration> {
    headers
        .get(header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// Time until `x-ratelimit-reset` (a Unix time).
fn reset_in(headers: &header::HeaderMap) -> Option<Duration> {
    let reset: u64 = headers
        .get("x-ratelimit-reset")?
        .to_str()
        .ok()?
        .parse()
        .ok()?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs();
    Some(Duration::from_secs(reset.saturating_sub(now).max(1)))
}

/// The `rel="next"` URL of a `Link` header.
fn next_link(headers: &header::HeaderMap) -> Option<String> {
    let link = headers.get(header::LINK)?.to_str().ok()?;
    link.split(',').find_map(|part| {
        let (url, params) = part.split_once(';')?;
        params
            .split(';')
            .any(|p| p.trim() == "rel=\"next\"")
            .then(|| {
                url.trim()
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_owned()
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_headers_give_the_next_page() {
        let mut h = header::HeaderMap::new();
        h.insert(
            header::LINK,
            header::HeaderValue::from_static(
                "<https://api.github.com/x?page=2>; rel=\"next\", <https://api.github.com/x?page=5>; rel=\"last\"",
            ),
        );
        assert_eq!(
            next_link(&h).as_deref(),
            Some("https://api.github.com/x?page=2")
        );
        h.insert(
            header::LINK,
            header::HeaderValue::from_static("<https://api.github.com/x?page=1>; rel=\"prev\""),
        );
        assert_eq!(next_link(&h), None);
    }
}
