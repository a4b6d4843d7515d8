//! `GET` for the tests (health endpoints, the fake GitHub): the kit's [`fleet_testkit::http`],
//! with failures as panics.

pub use fleet_testkit::HttpResponse;

/// `GET url` (an `http://host:port/path` URL).
///
/// # Panics
///
/// When the URL is not `http://`, the connection fails, or the answer is not HTTP.
pub async fn http_get(url: &str) -> HttpResponse {
    fleet_testkit::http::get(url)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}
