//! Scraping a process's Prometheus `/metrics` and reading values out of the text format.

use crate::http::http_get;

/// One sample: metric name, label pairs, value.
type Sample = (String, Vec<(String, String)>, f64);

/// One scrape: every sample as (name, labels, value).
#[derive(Debug, Clone)]
pub struct Scrape {
    /// The samples, in the order served.
    samples: Vec<Sample>,
    /// The raw text, for failure messages.
    pub text: String,
}

// === impl Scrape ===

impl Scrape {
    /// `GET http://127.0.0.1:<port>/metrics` and parses it.
    ///
    /// # Panics
    ///
    /// When the endpoint does not answer 200.
    pub async fn fetch(port: u16) -> Self {
        let response = http_get(&format!("http://127.0.0.1:{port}/metrics")).await;
        assert_eq!(response.status, 200, "/metrics on {port}: {response:?}");
        Self::parse(&response.body)
    }

    /// Parses Prometheus (or OpenMetrics) text.
    pub fn parse(text: &str) -> Self {
        let samples = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .filter_map(parse_sample)
            .collect();
        Self {
            samples,
            text: text.to_string(),
        }
    }

    /// The sum of every sample named `name` whose labels include all of `labels` (0 when none:
    /// a counter that never moved may not be listed yet).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|(_, _, v)| v)
            .sum()
    }

    /// Is there any sample named `name`?
    pub fn has(&self, name: &str) -> bool {
        self.samples.iter().any(|(n, _, _)| n == name)
    }
}

/// `name{a="b",c="d"} 1.0 [timestamp]`.
fn parse_sample(line: &str) -> Option<Sample> {
    let (series, rest) = if line.contains('{') {
        let close = line.rfind('}')?;
        (&line[..close + 1], &line[close + 1..])
    } else {
        line.split_at(line.find(' ')?)
    };
    let value: f64 = rest.split_whitespace().next()?.parse().ok()?;
    let (name, labels) = match series.split_once('{') {
        Some((name, labels)) => (name, labels.trim_end_matches('}')),
        None => (series, ""),
    };
    let labels = split_labels(labels)
        .into_iter()
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            Some((k.trim().to_string(), v.trim().trim_matches('"').to_string()))
        })
        .collect();
    Some((name.trim().to_string(), labels, value))
}

/// Splits `a="x",b="y,z"` on the commas outside quotes.
fn split_labels(labels: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut escaped = false;
    for c in labels.chars() {
        match c {
            '\\' if quoted && !escaped => {
                escaped = true;
                current.push(c);
                continue;
            }
            '"' if !escaped => quoted = !quoted,
            ',' if !quoted => {
                out.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        escaped = false;
        current.push(c);
    }
    if !current.trim().is_empty() {
        out.push(current);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_counters_labels_and_histograms() {
        let scrape = Scrape::parse(
            "# HELP fleet_requests_received Requests read\n\
             # TYPE fleet_requests_received counter\n\
             fleet_requests_received_total 3\n\
             fleet_requests_classified_total{method=\"patterns\"} 2\n\
             fleet_requests_classified_total{method=\"explicit\"} 1\n\
             fleet_task_duration_seconds_count{task=\"a,b\"} 4\n\
             # EOF\n",
        );
        assert_eq!(scrape.value("fleet_requests_received_total", &[]), 3.0);
        assert_eq!(
            scrape.value("fleet_requests_classified_total", &[("method", "patterns")]),
            2.0
        );
        assert_eq!(scrape.value("fleet_requests_classified_total", &[]), 3.0);
        assert_eq!(
            scrape.value("fleet_task_duration_seconds_count", &[("task", "a,b")]),
            4.0
        );
        assert_eq!(scrape.value("missing", &[]), 0.0);
    }
}
