//! A minimal HTTP/1.1 GET (health endpoints, the fake GitHub), with no client crate: one request
//! per connection, `Connection: close`.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::Error;

/// How long a readiness probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// A response: status code, headers (names lower-cased) and body.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// Header (name, value) pairs, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body as text.
    pub body: String,
}

// === impl HttpResponse ===

impl HttpResponse {
    /// The first value of header `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `GET url`, an `http://host:port/path` URL.
///
/// # Errors
///
/// [`Error::Http`] when the URL is not `http://`, the connection fails, or the answer is not
/// HTTP.
///
/// ```no_run
/// # async fn f() -> Result<(), fleet_testkit::Error> {
/// let r = fleet_testkit::http::get("http://127.0.0.1:9464/healthz").await?;
/// assert_eq!(r.status, 200);
/// # Ok(())
/// # }
/// ```
pub async fn get(url: &str) -> Result<HttpResponse, Error> {
    let fail = |message: String| Error::Http {
        url: url.to_owned(),
        message,
    };
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| fail("not an http:// URL".into()))?;
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let mut stream = tokio::net::TcpStream::connect(host)
        .await
        .map_err(|e| fail(format!("connect: {e}")))?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| fail(format!("write: {e}")))?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .await
        .map_err(|e| fail(format!("read: {e}")))?;
    let raw = String::from_utf8_lossy(&raw);
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .ok_or_else(|| fail("no end of headers".into()))?;
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| fail("no status line".into()))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

/// Does `GET http://127.0.0.1:<port>/readyz` answer 200 within 500 ms?
pub async fn is_ready(port: u16) -> bool {
    let url = format!("http://127.0.0.1:{port}/readyz");
    matches!(
        tokio::time::timeout(PROBE_TIMEOUT, get(&url)).await,
        Ok(Ok(HttpResponse { status: 200, .. }))
    )
}

/// Decodes a chunked body.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}
