//! `github.repo_info`: a repository's stars and contributors from the GitHub REST API.
//!
//! 5xx, 429, rate-limit 403s, timeouts and connection errors are retryable (honouring
//! `Retry-After`); 404 and other 4xx are permanent.
//!
//! What the task trusts, and why:
//!
//! - **Paths.** `owner` and `repo` are checked against the input schema (the patterns below,
//!   which the dispatcher and the worker both apply) and, again here, each is one
//!   percent-encoded path segment that is never `.` or `..`: no input reaches another path of
//!   the API host with the token.
//! - **Links.** `Link` URLs come from the server's answer. One is used only when it has the
//!   origin (scheme, host, port) of `GITHUB_API_URL`; any other origin fails the task and is
//!   never requested.
//! - **The token.** `GITHUB_TOKEN` is sent only to `GITHUB_API_URL`'s origin (reqwest drops it
//!   on a redirect to another origin as well).
//!
//! Contributors are counted in one or two calls, never page by page: `per_page=1&anon=true`
//! makes the `last` link's page number the count (GitHub's own trick); without a `Link` header
//! the one page is all of them. Only a server that sends `next` without `last` is paged
//! through (100 a page, same-origin `next` links), and past [`MAX_PAGES`] the task fails
//! saying so rather than report a partial count.

use std::time::Duration;

use fleet_common::{http::retry_after, messages::ErrorKind, patterns::Pattern, telemetry};
use reqwest::{Response, StatusCode, Url, header};
use schemars::JsonSchema;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::Instrument;

use super::Task;
use crate::error::TaskError;

/// The most pages read from a server that sends `next` links but no `last` (100 contributors
/// a page); past it the task fails instead of reporting part of the count.
const MAX_PAGES: u64 = 1_000;

/// The input of `github.repo_info`.
///
/// The patterns are the security boundary of the request path: an owner is what GitHub allows
/// (letters, digits, inner hyphens); a repository name is letters, digits, `.`, `_` and `-`
/// with at least one that is not a dot, so `.` and `..` (path steps, not names) never match.
/// Both are RE2-compatible, for workers and dispatchers in other languages.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// The owner (user or organisation), such as `ranfysvalle02`.
    #[schemars(pattern(r"^[A-Za-z0-9][A-Za-z0-9-]{0,38}$"))]
    pub owner: String,
    /// The repository name, such as `ai-self-attention`.
    #[schemars(
        length(min = 1, max = 100),
        pattern(r"^\.*[A-Za-z0-9_-][A-Za-z0-9._-]*$")
    )]
    pub repo: String,
}

/// `owner/repo` (or a github.com link to it) standing as a word of its own: an owner holds a
/// letter or a hyphen, so dates and fractions (`2024/05`, `1/2`) are not repositories; a final
/// `.git`, `/`, `'s` or punctuation is not part of the name.
const SLUG: &str = r#"(?:^|[\s(\[<"'`])(?:https?://)?(?:www\.)?(?:github\.com/)?(?P<owner>[A-Za-z0-9-]*[A-Za-z-][A-Za-z0-9-]*)/(?P<repo>[A-Za-z0-9_.-]*?[A-Za-z0-9_-])(?:\.git)?/?(?:'s)?(?:[.,;:!?)\]>"'`]*(?:\s|$))"#;
/// Words that ask for what the task reports.
const FACTS: &str = r"(?:stars?|stargazers?|starred|star\s+count|contribut\w*|committers|forks?|forked|watchers|open\s+issues|popular(?:ity)?|info|information|details|stats|statistics|metadata)";

/// The catalog patterns of `github.repo_info`: a repository with words asking for its facts
/// (certain), a request that is only a repository (certain), a repository with the word repo,
/// project or GitHub, or a github.com link (hints: "what license does the repo x/y use?" is a
/// question for `chat`).
pub(super) fn patterns() -> Vec<Pattern> {
    vec![
        Pattern::new(format!(r"(?i)\b{FACTS}\b.*?{SLUG}")),
        Pattern::new(format!(r"(?i){SLUG}.*?\b{FACTS}\b")),
        Pattern::new(format!(r"(?i)^\s*{SLUG}\s*$")),
        Pattern::new(format!(r"(?i)\b(?:repo|repos|repository|project|github)\b.*?{SLUG}")).hint(),
        Pattern::new(format!(r"(?i){SLUG}.*?\b(?:repo|repository|project|github)\b")).hint(),
        Pattern::new(
            r"(?i)github\.com/(?P<owner>[A-Za-z0-9-]+)/(?P<repo>[A-Za-z0-9_.-]*?[A-Za-z0-9_-])(?:\.git)?(?:[/?#,;:!)\s]|\.(?:\s|$)|$)",
        )
        .hint(),
    ]
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
    /// `GITHUB_API_URL`, parsed: its origin is the only one the task talks to. `None` when it
    /// is not an `http(s)` URL (every run then fails, saying so).
    base: Option<Url>,
    /// `GITHUB_TOKEN`, sent only to `base`'s origin.
    token: Option<SecretString>,
}

// === impl GithubRepoInfo ===

impl GithubRepoInfo {
    /// A task calling the API at `base`.
    pub fn new(http: reqwest::Client, base: &str, token: Option<SecretString>) -> Self {
        let base = Url::parse(base.trim())
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
        if base.is_none() {
            tracing::warn!(
                "GITHUB_API_URL is not an http(s) URL: github.repo_info fails until it is fixed"
            );
        }
        Self { http, base, token }
    }

    /// `GITHUB_API_URL`, or the permanent error saying it is unusable.
    fn base(&self) -> Result<&Url, TaskError> {
        self.base.as_ref().ok_or_else(|| {
            TaskError::abort("GITHUB_API_URL is not an http(s) URL; set it to the API's base URL")
        })
    }

    async fn get(&self, url: &Url, what: &str) -> Result<Response, TaskError> {
        let span = tracing::info_span!(
            "http.get",
            otel.name = "GET",
            otel.kind = "client",
            http.request.method = "GET",
            url.full = %url,
            server.address = url.host_str(),
            server.port = url.port_or_known_default().map(i64::from),
            http.response.status_code = tracing::field::Empty,
        );
        self.send(url, what).instrument(span).await
    }

    async fn send(&self, url: &Url, what: &str) -> Result<Response, TaskError> {
        let mut headers = header::HeaderMap::new();
        telemetry::inject_http(&mut headers);
        let mut request = self
            .http
            .get(url.clone())
            .headers(headers)
            .header(header::ACCEPT, "application/vnd.github+json")
            .header(header::USER_AGENT, "fleet-worker")
            .header("X-GitHub-Api-Version", "2022-11-28");
        if let Some(token) = &self.token
            && self
                .base
                .as_ref()
                .is_some_and(|base| same_origin(base, url))
        {
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

    /// A `Link` URL the server sent, when it may be requested: same origin as
    /// `GITHUB_API_URL`, else a permanent error (the link is never requested).
    fn trusted_link(&self, link: &str, what: &str) -> Result<Url, TaskError> {
        let base = self.base()?;
        match Url::parse(link) {
            Ok(url) if same_origin(base, &url) => Ok(url),
            Ok(url) => Err(TaskError::abort(format!(
                "GitHub's answer for {what} links to {} outside GITHUB_API_URL ({}); the link was not followed",
                url.origin().ascii_serialization(),
                base.origin().ascii_serialization()
            ))),
            Err(_) => Err(TaskError::abort(format!(
                "GitHub's answer for {what} has a Link header that is not a URL"
            ))),
        }
    }

    /// How many contributors `owner/repo` has (anonymous ones included), in one or two calls.
    async fn count_contributors(&self, input: &Input, what: &str) -> Result<u64, TaskError> {
        let mut url = endpoint(
            self.base()?,
            &input.owner,
            &input.repo,
            Some("contributors"),
        )?;
        url.set_query(Some("per_page=1&anon=true"));
        let response = self.get(&url, what).await?;
        if response.status() == StatusCode::NO_CONTENT {
            // An empty repository.
            return Ok(0);
        }
        let links = Links::parse(response.headers());
        if let Some(last) = &links.last {
            let last = self.trusted_link(last, what)?;
            let (page, per_page) = page_of(&last).ok_or_else(|| {
                TaskError::abort(format!(
                    "GitHub's last contributors link for {what} has no page number"
                ))
            })?;
            if per_page == Some(1) {
                return Ok(page);
            }
            // The server paged by more than one: full pages before the last, then count it.
            let per_page = per_page.unwrap_or(1);
            let on_last = page_len(self.get(&last, what).await?, what).await?;
            return Ok(page.saturating_sub(1).saturating_mul(per_page) + on_last);
        }
        let Some(next) = &links.next else {
            return page_len(response, what).await;
        };
        // `next` without `last`: page through, 100 at a time, if the links stay at home.
        self.trusted_link(next, what)?;
        url.set_query(Some("per_page=100&anon=true"));
        let mut count = 0u64;
        for _ in 0..MAX_PAGES {
            let response = self.get(&url, what).await?;
            if response.status() == StatusCode::NO_CONTENT {
                return Ok(count);
            }
            let next = Links::parse(response.headers()).next;
            count += page_len(response, what).await?;
            match next {
                Some(next) => url = self.trusted_link(&next, what)?,
                None => return Ok(count),
            }
        }
        Err(TaskError::abort(format!(
            "{what} has more than {count} contributors on over {MAX_PAGES} pages without a last link; they were not all counted"
        )))
    }
}

impl Task for GithubRepoInfo {
    type Input = Input;
    const NAME: &'static str = "github.repo_info";
    const DESCRIPTION: &'static str = "Look up the numbers of one GitHub repository given as owner/repo or a github.com link: its stars, contributors (all of them counted), forks and open issues. Pick it only when the request asks for these facts about the repository; a question about what the code does or how to use it is `chat`.";
    const OUTPUT: &'static str =
        "{ full_name, stars, contributors, forks, open_issues, description, url }";
    const EXAMPLES: &'static [&'static str] = &[
        "Give me the stars and contributors for ranfysvalle02/ai-self-attention",
        "How many stars does rust-lang/rust have?",
    ];

    fn patterns() -> Vec<Pattern> {
        patterns()
    }

    async fn run(&self, input: Input) -> Result<Value, TaskError> {
        let name = format!("{}/{}", input.owner, input.repo);
        let url = endpoint(self.base()?, &input.owner, &input.repo, None)?;
        let repo: Repo = self.get(&url, &name).await?.json().await.map_err(|e| {
            TaskError::retry(format!("GitHub sent an unreadable answer for {name}: {e}"))
        })?;
        let contributors = self.count_contributors(&input, &name).await?;

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

/// `{base}/repos/{owner}/{repo}[/{tail}]`, each input one percent-encoded path segment (`/`,
/// `?`, `#` and `%` are encoded), so no input can leave the repository's path.
///
/// # Errors
///
/// `invalid_input` for an empty, `.` or `..` segment (the schema already refuses them; this is
/// the check that does not depend on whoever published the task).
fn endpoint(base: &Url, owner: &str, repo: &str, tail: Option<&str>) -> Result<Url, TaskError> {
    for (field, segment) in [("owner", owner), ("repo", repo)] {
        if matches!(segment, "" | "." | "..") {
            return Err(TaskError::Abort {
                kind: ErrorKind::InvalidInput,
                message: format!("`{segment}` is not a GitHub {field} name"),
            });
        }
    }
    let mut url = base.clone();
    url.set_query(None);
    url.set_fragment(None);
    url.path_segments_mut()
        .map_err(|()| TaskError::abort("GITHUB_API_URL cannot take a path"))?
        .pop_if_empty()
        .extend(["repos", owner, repo])
        .extend(tail);
    Ok(url)
}

/// Whether two URLs share an origin: scheme, host and port (the default port of the scheme
/// when none is written).
fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

/// The `page` and `per_page` query parameters of a page link.
fn page_of(url: &Url) -> Option<(u64, Option<u64>)> {
    let mut page = None;
    let mut per_page = None;
    for (key, value) in url.query_pairs() {
        match key.as_ref() {
            "page" => page = value.parse().ok(),
            "per_page" => per_page = value.parse().ok(),
            _ => {}
        }
    }
    Some((page?, per_page))
}

/// The number of items in one page of contributors.
async fn page_len(response: Response, what: &str) -> Result<u64, TaskError> {
    let page: Vec<serde::de::IgnoredAny> = response.json().await.map_err(|e| {
        TaskError::retry(format!(
            "GitHub sent an unreadable contributors page for {what}: {e}"
        ))
    })?;
    Ok(page.len() as u64)
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

/// The page links of a `Link` header (RFC 8288): `<url>; rel="next"`, several per header
/// value and several values, relation types compared without case.
#[derive(Debug, Default, PartialEq)]
struct Links {
    /// `rel="next"`.
    next: Option<String>,
    /// `rel="last"`.
    last: Option<String>,
}

// === impl Links ===

impl Links {
    fn parse(headers: &header::HeaderMap) -> Self {
        let mut links = Self::default();
        for value in headers.get_all(header::LINK) {
            let Ok(mut rest) = value.to_str() else {
                continue;
            };
            while let Some(open) = rest.find('<') {
                let Some(close) = rest[open..].find('>').map(|i| open + i) else {
                    break;
                };
                let url = rest[open + 1..close].trim();
                let after = &rest[close + 1..];
                let end = after.find('<').unwrap_or(after.len());
                for rel in relations(&after[..end]) {
                    let slot = match rel.to_ascii_lowercase().as_str() {
                        "next" => &mut links.next,
                        "last" => &mut links.last,
                        _ => continue,
                    };
                    slot.get_or_insert_with(|| url.to_owned());
                }
                rest = &after[end..];
            }
        }
        links
    }
}

/// The relation types in one link's parameters (`; rel="next last"` or `; rel=next`).
fn relations(params: &str) -> Vec<&str> {
    params
        .split([';', ','])
        .filter_map(|p| {
            let (key, value) = p.split_once('=')?;
            (key.trim().eq_ignore_ascii_case("rel")).then(|| value.trim().trim_matches('"'))
        })
        .flat_map(str::split_whitespace)
        .collect()
}

#[cfg(test)]
mod tests {
    use fleet_common::catalog::Catalog;

    use super::*;
    use crate::tasks::DynTask;

    fn links(value: &'static str) -> Links {
        let mut h = header::HeaderMap::new();
        h.insert(header::LINK, header::HeaderValue::from_static(value));
        Links::parse(&h)
    }

    fn url(s: &str) -> Url {
        Url::parse(s).expect("a test URL")
    }

    #[test]
    fn link_headers_give_the_next_and_last_pages() {
        assert_eq!(
            links(
                "<https://api.github.com/x?page=2>; rel=\"next\", <https://api.github.com/x?page=5>; rel=\"last\""
            ),
            Links {
                next: Some("https://api.github.com/x?page=2".into()),
                last: Some("https://api.github.com/x?page=5".into()),
            }
        );
        assert_eq!(
            links("<https://api.github.com/x?page=1>; rel=\"prev\""),
            Links::default()
        );
        // Unquoted, several relations in one, other parameters, odd spacing and case.
        assert_eq!(
            links("<https://h/a?page=9>;title=\"x\";REL=\"Last next\" ,<https://h/b>; rel=first"),
            Links {
                next: Some("https://h/a?page=9".into()),
                last: Some("https://h/a?page=9".into()),
            }
        );
        assert_eq!(links("garbage, <unclosed; rel=next"), Links::default());
    }

    #[test]
    fn origins_are_scheme_host_and_port() {
        let base = url("https://api.github.com");
        assert!(same_origin(
            &base,
            &url("https://api.github.com/repos/a/b?page=2")
        ));
        assert!(same_origin(&base, &url("https://API.github.com:443/x")));
        assert!(!same_origin(&base, &url("http://api.github.com/x")));
        assert!(!same_origin(&base, &url("https://api.github.com:8443/x")));
        assert!(!same_origin(&base, &url("https://evil.example/x")));
        assert!(!same_origin(
            &base,
            &url("https://api.github.com.evil.example/x")
        ));
        assert!(!same_origin(&base, &url("file:///etc/passwd")));
        let local = url("http://127.0.0.1:8080/api/v3");
        assert!(same_origin(&local, &url("http://127.0.0.1:8080/other")));
        assert!(!same_origin(&local, &url("http://localhost:8080/api/v3")));
    }

    #[test]
    fn cross_origin_links_are_refused_with_a_reason() {
        let task = GithubRepoInfo::new(reqwest::Client::new(), "http://127.0.0.1:9/api/v3/", None);
        assert!(
            task.trusted_link("http://127.0.0.1:9/x?page=3", "o/r")
                .is_ok()
        );
        for link in [
            "http://127.0.0.1:10/x",
            "https://127.0.0.1:9/x",
            "//evil/x",
            "x?page=2",
        ] {
            let e = task.trusted_link(link, "o/r").expect_err(link);
            assert!(
                matches!(&e, TaskError::Abort { message, .. } if message.contains("o/r")),
                "{link}: {e:?}"
            );
        }
    }

    #[test]
    fn last_links_give_the_page_number() {
        assert_eq!(
            page_of(&url(
                "https://h/repos/a/b/contributors?per_page=1&anon=true&page=10000"
            )),
            Some((10_000, Some(1)))
        );
        assert_eq!(page_of(&url("https://h/x?page=3")), Some((3, None)));
        assert_eq!(page_of(&url("https://h/x?per_page=1")), None);
        assert_eq!(page_of(&url("https://h/x?page=-1")), None);
    }

    #[test]
    fn inputs_stay_one_path_segment() {
        let base = url("https://ghe.example/api/v3/");
        let built = endpoint(&base, "o", "r.rs", Some("contributors")).expect("a valid name");
        assert_eq!(
            built.as_str(),
            "https://ghe.example/api/v3/repos/o/r.rs/contributors"
        );
        // Whatever gets past the schema is encoded, never interpreted.
        let built = endpoint(&base, "o", "a/../../x?y#z%2e", None).expect("encoded");
        assert_eq!(
            built.as_str(),
            "https://ghe.example/api/v3/repos/o/a%2F..%2F..%2Fx%3Fy%23z%252e"
        );
        for (owner, repo) in [("o", ".."), ("o", "."), ("..", "r"), ("o", "")] {
            let e = endpoint(&base, owner, repo, None).expect_err(repo);
            assert_eq!(e.kind(), ErrorKind::InvalidInput, "{owner}/{repo}");
        }
    }

    #[tokio::test]
    async fn dot_segments_never_reach_the_network() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        let token = Some(SecretString::from("t".to_owned()));
        let task = GithubRepoInfo::new(reqwest::Client::new(), &base, token);
        for (owner, repo) in [("o", ".."), ("o", "."), ("..", "r")] {
            // Straight to the task, as if the schema had been skipped.
            let e = task
                .call(json!({"owner": owner, "repo": repo}))
                .await
                .expect_err(repo);
            assert_eq!(e.kind(), ErrorKind::InvalidInput, "{owner}/{repo}: {e:?}");
        }
        let accepted = tokio::time::timeout(Duration::from_millis(100), listener.accept()).await;
        assert!(accepted.is_err(), "nothing connected: {accepted:?}");
    }

    #[test]
    fn the_schema_refuses_names_that_could_leave_the_path() {
        let task = GithubRepoInfo::new(reqwest::Client::new(), "https://api.github.com", None);
        let mut catalog = Catalog::default();
        catalog.insert(task.spec()).expect("the schema compiles");
        let check = |owner: &str, repo: &str| {
            catalog
                .check(GithubRepoInfo::NAME, &json!({"owner": owner, "repo": repo}))
                .is_ok()
        };
        for repo in ["ai-self-attention", ".github", "a.b_c-d", "..x", "x..", "_"] {
            assert!(check("rust-lang", repo), "{repo} is a repository name");
        }
        for repo in [
            "", ".", "..", "...", "a/b", "../x", "%2e%2e", "a?b", "a#b", "a b", "a\\b", "ä",
        ] {
            assert!(!check("rust-lang", repo), "{repo:?} must be refused");
        }
        assert!(!check("rust-lang", &"r".repeat(101)));
        for owner in ["", ".", "..", "-x", "a/b", "a.b", &"o".repeat(40)] {
            assert!(!check(owner, "r"), "{owner:?} must be refused");
        }
    }
}
