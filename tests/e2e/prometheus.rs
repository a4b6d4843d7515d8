//! A real Prometheus scrapes a running fleet, and every query of the Grafana dashboard
//! (`deploy/grafana/fleet.json`) and every alert rule (`deploy/prometheus/alerts.yaml`, loaded
//! by that Prometheus) returns data.
//!
//! The fleet gets traffic that makes every series exist: requests routed by the LLM (with token
//! counts) and, once the scripted LLM fails, by the rules with the circuit open; explicit
//! requests; a rejected one; a duplicate; a GitHub task retried once, one that fails (404) and
//! one that exhausts its attempts into the DLQ. Then a third worker joins and is killed. An alert expression is
//! `<signal> <comparison> <threshold>` (as alerts.yaml says): every signal must return data,
//! and the alerts this traffic provokes (dead letters, circuit open, a process down) must
//! return data whole.
//!
//! Needs the `prometheus` binary (Debian: `apt-get install -y prometheus`, which installs
//! `/usr/bin/prometheus` and `/usr/bin/promtool`; `PROMETHEUS_BIN` picks another). The test
//! fails, never skips, when it is missing. Its own server runs on a free port with its own
//! configuration and data directory; a system Prometheus is never used.

use std::{
    collections::BTreeMap,
    fs::File,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use fleet_tests::{
    DefaultRoute, FakeOpenAi, Reply, Repo, TempDir, TestEnv, WAIT, assert_outcome, http_get,
    nats::free_port, poll_until,
};
use serde_json::{Value, json};

/// How to get the binary when it is missing.
const INSTALL: &str = "install it with `apt-get install -y prometheus` (Debian/Ubuntu: \
                       /usr/bin/prometheus and /usr/bin/promtool), or point PROMETHEUS_BIN at one";

/// What the dashboard's Grafana variables stand for here (Prometheus scrapes every second).
const GRAFANA_VARS: [(&str, &str); 3] = [
    ("$__rate_interval", "1m"),
    ("$__interval", "15s"),
    ("$__range", "5m"),
];

/// The alerts the test's traffic makes true: their whole expression must return data.
const PROVOKED: [&str; 3] = [
    "FleetDeadLettersGrowing",
    "FleetLlmCircuitOpen",
    "FleetProcessDown",
];

/// The repository root (the tests crate is `tests/`).
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// `PROMETHEUS_BIN`, else `prometheus` on `PATH`, else `/usr/bin/prometheus`.
///
/// # Panics
///
/// When none exists, saying how to install it.
fn prometheus_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("PROMETHEUS_BIN") {
        let bin = PathBuf::from(bin);
        assert!(
            bin.is_file(),
            "PROMETHEUS_BIN={} is not a file; {INSTALL}",
            bin.display()
        );
        return bin;
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("prometheus"))
            .find(|p| p.is_file())
    });
    let bin = on_path.unwrap_or_else(|| PathBuf::from("/usr/bin/prometheus"));
    assert!(
        bin.is_file(),
        "the prometheus binary is missing (this test needs a real Prometheus): {INSTALL}"
    );
    bin
}

/// A Prometheus server on `127.0.0.1:<free port>`, killed on drop.
struct Prometheus {
    /// The server process.
    child: Child,
    /// Its HTTP port.
    port: u16,
    /// Holds `prometheus.yml`, `data/` and `prometheus.log`.
    dir: TempDir,
}

// === impl Prometheus ===

impl Prometheus {
    /// Starts a server that scrapes `jobs` (job name, ports on 127.0.0.1) every second and
    /// evaluates the rule file `rules`, and waits until it is ready. Each job's targets are in
    /// a file ([`Prometheus::set_targets`] changes them while it runs).
    async fn start(jobs: &[(&str, Vec<u16>)], rules: &Path) -> Self {
        let bin = prometheus_bin();
        let dir = TempDir::new("prometheus").expect("a temporary directory for Prometheus");
        let mut config = String::from(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n",
        );
        config += &format!("rule_files:\n  - {}\n", json!(rules.display().to_string()));
        config += "scrape_configs:\n";
        for (job, ports) in jobs {
            write_targets(dir.path(), job, ports);
            let file = dir.path().join(format!("{job}.json"));
            config += &format!(
                "  - job_name: {job}\n    file_sd_configs:\n      - files: [{}]\n        refresh_interval: 1s\n",
                json!(file.display().to_string())
            );
        }
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, &config).expect("write prometheus.yml");
        let log = File::create(dir.path().join("prometheus.log")).expect("create the log");
        let port = free_port();
        let child = Command::new(&bin)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}; {INSTALL}", bin.display()));
        let mut server = Self { child, port, dir };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!(
                    "prometheus exited with {status}:\n{}\nconfig:\n{config}",
                    server.log()
                );
            }
            let up = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok();
            if up && http_get(&server.url("/-/ready")).await.status == 200 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "prometheus never became ready:\n{}",
                server.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        server
    }

    /// Makes `job` scrape `ports` from now on.
    fn set_targets(&self, job: &str, ports: &[u16]) {
        write_targets(self.dir.path(), job, ports);
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn log(&self) -> String {
        fleet_tests::tail(&self.dir.path().join("prometheus.log"), 40)
    }

    /// `GET path` of the HTTP API, its `data` (panics on anything but success).
    async fn api(&self, path: &str) -> Value {
        let response = http_get(&self.url(path)).await;
        let body: Value = serde_json::from_str(&response.body).unwrap_or_else(|e| {
            panic!(
                "GET {path}: {} not JSON ({e}): {}",
                response.status, response.body
            )
        });
        assert_eq!(body["status"], "success", "GET {path}: {body:#}");
        body["data"].clone()
    }

    /// The series an instant query returns now (`Err`: the query failed).
    async fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let response = http_get(&self.url(&format!("/api/v1/query?query={}", encode(expr)))).await;
        let body: Value = serde_json::from_str(&response.body)
            .map_err(|e| format!("{} not JSON ({e}): {}", response.status, response.body))?;
        if body["status"] != "success" {
            return Err(format!("{}: {}", body["errorType"], body["error"]));
        }
        match &body["data"]["result"] {
            Value::Array(series) => Ok(series.clone()),
            other => Err(format!("not a vector: {other}")),
        }
    }

    /// Every rule Prometheus loaded: (name, query), after checking each one evaluates cleanly.
    async fn alert_rules(&self) -> Vec<(String, String)> {
        let data = self.api("/api/v1/rules?type=alert").await;
        let mut rules = Vec::new();
        for group in data["groups"].as_array().into_iter().flatten() {
            for rule in group["rules"].as_array().into_iter().flatten() {
                let name = rule["name"].as_str().unwrap_or_default().to_owned();
                assert_eq!(
                    rule["health"], "ok",
                    "rule {name} does not evaluate: {rule:#}"
                );
                rules.push((name, rule["query"].as_str().unwrap_or_default().to_owned()));
            }
        }
        rules
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- prometheus log ----\n{}", self.log());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes `<dir>/<job>.json`, a file_sd target list of `ports` on 127.0.0.1 (whole, by rename).
fn write_targets(dir: &Path, job: &str, ports: &[u16]) {
    let targets: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let tmp = dir.join(format!(".{job}.json.tmp"));
    std::fs::write(&tmp, json!([{ "targets": targets }]).to_string()).expect("write targets");
    std::fs::rename(&tmp, dir.join(format!("{job}.json"))).expect("rename targets");
}

/// Percent-encodes a query parameter.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The signal of an alert expression: what comes before its last top-level comparison
/// (`>`, `<`, `>=`, `<=`, `==`, `!=`), or the whole expression when it has none.
fn signal(expr: &str) -> &str {
    let bytes = expr.as_bytes();
    let (mut depth, mut quote, mut cut) = (0_i32, None::<u8>, None);
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if let Some(q) = quote {
            if c == b'\\' {
                i += 1;
            } else if c == q {
                quote = None;
            }
        } else {
            let equals_next = bytes.get(i + 1) == Some(&b'=');
            match c {
                b'"' | b'\'' | b'`' => quote = Some(c),
                b'(' | b'[' | b'{' => depth += 1,
                b')' | b']' | b'}' => depth -= 1,
                b'>' | b'<' if depth == 0 => cut = Some(i),
                b'=' | b'!' if depth == 0 && equals_next => cut = Some(i),
                _ => {}
            }
            if cut == Some(i) && equals_next {
                i += 1;
            }
        }
        i += 1;
    }
    cut.map_or(expr, |at| &expr[..at]).trim()
}

/// Every query of the dashboard: (panel title, query with Grafana's variables replaced).
fn dashboard_queries() -> Vec<(String, String)> {
    let path = repo_root().join("deploy/grafana/fleet.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let dashboard: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
    fn walk(panels: &Value, out: &mut Vec<(String, String)>) {
        for panel in panels.as_array().into_iter().flatten() {
            walk(&panel["panels"], out);
            for target in panel["targets"].as_array().into_iter().flatten() {
                let mut expr = target["expr"].as_str().unwrap_or_default().to_owned();
                for (var, value) in GRAFANA_VARS {
                    expr = expr.replace(var, value);
                }
                let title = panel["title"].as_str().unwrap_or_default().to_owned();
                out.push((title, expr));
            }
        }
    }
    let mut queries = Vec::new();
    walk(&dashboard["panels"], &mut queries);
    queries
}

/// Runs `queries` (label, expr) until each returns at least one series, for at most `within`;
/// then fails listing every one that returned nothing or failed.
async fn assert_all_return_data(prometheus: &Prometheus, queries: &[(String, String)]) {
    let mut missing: BTreeMap<String, String> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        missing.clear();
        for (label, expr) in queries {
            match prometheus.query(expr).await {
                Ok(series) if !series.is_empty() => {}
                Ok(_) => {
                    missing.insert(format!("{label}: {expr}"), "no data".to_owned());
                }
                Err(e) => {
                    missing.insert(format!("{label}: {expr}"), e);
                }
            }
        }
        if missing.is_empty() || tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(
        missing.is_empty(),
        "{} of {} queries returned no data from a Prometheus scraping the fleet:\n{}\n\
         (fleet_request_duration_seconds is observed by the worker's handler through \
         Metrics::observe_request once a result is stored)",
        missing.len(),
        queries.len(),
        missing
            .iter()
            .map(|(q, why)| format!("  - {q}  ({why})"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn alert_signals_drop_the_last_top_level_comparison() {
    assert_eq!(
        signal(r#"max by (stream) (delta(fleet_dlq_messages[15m])) > 0"#),
        "max by (stream) (delta(fleet_dlq_messages[15m]))"
    );
    assert_eq!(
        signal(r#"up{job=~"fleet-dispatcher|fleet-worker"} == 0"#),
        r#"up{job=~"fleet-dispatcher|fleet-worker"}"#
    );
    assert_eq!(
        signal(r#"(sum(up{job!="a>b"}) or vector(0)) < 1"#),
        r#"(sum(up{job!="a>b"}) or vector(0))"#
    );
    assert_eq!(signal("a >= 2"), "a");
    assert_eq!(signal("a != 2"), "a");
    assert_eq!(signal("rate(x[5m])"), "rate(x[5m])");
    assert_eq!(encode("a{b=\"c d\"}"), "a%7Bb%3D%22c%20d%22%7D");
}

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_scrapes_the_fleet_and_every_dashboard_and_alert_query_has_data() {
    let openai = FakeOpenAi::start().await;
    // The first routing call answers (with token counts); every later one fails, so the
    // circuit opens after two failures and the patterns route.
    openai.push(Reply::route("text.transform", json!({"text": "a", "op": "upper"})).usage(120, 14));
    openai.set_default(DefaultRoute::Reply(Reply::error(503, "overloaded")));
    let mut env = TestEnv::start_with(|b| {
        b.openai(&openai)
            .env("FLEET_LLM_BREAKER_THRESHOLD", "2")
            .env("FLEET_LLM_BREAKER_COOLDOWN", "10m")
            .env("FLEET_LLM_RETRIES", "0")
            .env("FLEET_MAX_ATTEMPTS", "2")
            .workers(&["w1", "w2"])
    })
    .await;
    let mut ports = Vec::new();
    for process in ["dispatcher", "w1", "w2"] {
        let port = env.fleet.metrics_port(process).await;
        ports.push(port.unwrap_or_else(|| panic!("{process} never logged its metrics port")));
    }
    let (dispatcher, w1, w2) = (ports[0], ports[1], ports[2]);
    let rules = repo_root().join("deploy/prometheus/alerts.yaml");
    let prometheus = Prometheus::start(
        &[
            ("fleet-dispatcher", vec![dispatcher]),
            ("fleet-worker", vec![w1, w2]),
        ],
        &rules,
    )
    .await;

    // Every target scraped before the traffic, so counters and the DLQ gauge start from 0.
    let scraped = poll_until(Duration::from_secs(20), || async {
        let series = prometheus
            .query(r#"up{job=~"fleet-dispatcher|fleet-worker"} == 1"#)
            .await
            .unwrap_or_default();
        (series.len() == 3).then_some(())
    })
    .await;
    assert!(
        scraped.is_some(),
        "Prometheus did not scrape the dispatcher and both workers: {:#}",
        prometheus.api("/api/v1/targets").await
    );

    env.github
        .set("flaky-org/flaky", Repo::new().stars(3).fail_first(1, 503));
    env.github.set("gone-org/gone", Repo::new().not_found());
    env.github
        .set("down-org/down", Repo::new().always_fail(503));
    let github = |id: &str, repo: &str| json!({"id": id, "task": "github.repo_info", "input": {"owner": repo.split('/').next(), "repo": repo.split('/').nth(1)}});
    for request in [
        json!({"id": "p-explicit", "task": "text.transform", "input": {"text": "p", "op": "upper"}}),
        json!({"id": "p-unknown", "task": "no.such.task", "input": {}}),
        github("p-retried", "flaky-org/flaky"),
        github("p-failed", "gone-org/gone"),
        github("p-dead", "down-org/down"),
    ] {
        env.client.publish_json(&request).await;
    }
    // Routed one at a time so the LLM's answers come in order: ok, error, error, circuit open.
    // Only a pattern's hint matches these words, so each one reaches the LLM (or its breaker)
    // and the hint decides when it cannot.
    for (i, letter) in ["a", "b", "c", "d"].iter().enumerate() {
        let id = format!("p-llm-{i}");
        env.client
            .publish_with_id(
                &id,
                format!("So, about `{letter}`: uppercase would be nice"),
            )
            .await;
        assert_outcome(&env.client.wait_result(&id, WAIT).await, "succeeded", None);
    }
    env.client
        .publish_json(&json!({"id": "p-explicit", "task": "text.transform",
            "input": {"text": "again", "op": "upper"}}))
        .await;
    for (id, status) in [
        ("p-explicit", "succeeded"),
        ("p-unknown", "rejected"),
        ("p-retried", "succeeded"),
        ("p-failed", "failed"),
        ("p-dead", "dead"),
    ] {
        assert_outcome(&env.client.wait_result(id, WAIT).await, status, None);
    }
    let calls = openai.routing_calls().len();
    assert_eq!(
        calls, 3,
        "one answer and two failures, then the circuit is open"
    );

    // A process down: a third worker joins after the traffic (so the series of the tasks
    // above stay with live workers), is scraped, and is killed.
    env.fleet.start_worker("w3");
    let w3 = env
        .fleet
        .metrics_port("w3")
        .await
        .unwrap_or_else(|| panic!("w3 never logged its metrics port"));
    prometheus.set_targets("fleet-worker", &[w1, w2, w3]);
    let w3_up = format!(r#"up{{instance="127.0.0.1:{w3}"}} == 1"#);
    let scraped = poll_until(Duration::from_secs(20), || async {
        let series = prometheus.query(&w3_up).await.unwrap_or_default();
        (!series.is_empty()).then_some(())
    })
    .await;
    assert!(scraped.is_some(), "Prometheus never scraped w3");
    env.fleet.kill_worker("w3");

    let alerts = prometheus.alert_rules().await;
    let names: Vec<&str> = alerts.iter().map(|(n, _)| n.as_str()).collect();
    assert!(
        alerts.len() >= 7,
        "alerts.yaml's rules are not all loaded: {names:?}"
    );
    for provoked in PROVOKED {
        assert!(names.contains(&provoked), "no rule {provoked} in {names:?}");
    }
    let mut queries: Vec<(String, String)> = dashboard_queries()
        .into_iter()
        .map(|(title, expr)| (format!("dashboard panel {title:?}"), expr))
        .collect();
    assert!(queries.len() >= 20, "the dashboard lost its queries");
    for (name, expr) in &alerts {
        queries.push((format!("alert {name} (signal)"), signal(expr).to_owned()));
        if PROVOKED.contains(&name.as_str()) {
            queries.push((format!("alert {name} (whole)"), expr.clone()));
        }
    }
    assert_all_return_data(&prometheus, &queries).await;

    // The numbers behind a few of them are the traffic's.
    let value = |series: Vec<Value>| -> f64 {
        series
            .first()
            .and_then(|s| s["value"][1].as_str())
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN)
    };
    let dead = prometheus
        .query(r#"max(fleet_dlq_messages)"#)
        .await
        .expect("the DLQ query runs");
    assert_eq!(value(dead), 1.0, "one dead letter");
    let tokens = prometheus
        .query(r#"sum(fleet_llm_tokens_total{type="input"})"#)
        .await
        .expect("the tokens query runs");
    assert_eq!(value(tokens), 120.0, "the LLM's one answer's input tokens");
    let services = prometheus
        .query(r#"count by (service) (fleet_build_info{version!=""})"#)
        .await
        .expect("the build info query runs");
    let mut services: Vec<String> = services
        .iter()
        .filter_map(|s| s["metric"]["service"].as_str().map(str::to_owned))
        .collect();
    services.sort();
    assert_eq!(services, ["fleet-dispatcher", "fleet-worker"]);
    let down = prometheus
        .query(r#"up{job="fleet-worker"} == 0"#)
        .await
        .expect("the up query runs");
    assert_eq!(
        down.first().map(|s| s["metric"]["instance"].clone()),
        Some(json!(format!("127.0.0.1:{w3}"))),
        "the killed worker is the one down"
    );
}
