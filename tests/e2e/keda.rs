//! KEDA's view of the fleet: the worker ScaledObjects (`deploy/k8s/components/keda/`: one for
//! fleet-worker, one for the chat workers) name a stream, consumers and an account that the
//! fleet really creates, and the lag KEDA's `nats-jetstream` scaler computes from `/jsz` is the
//! backlog, so the replicas it asks for follow `lagThreshold`.
//!
//! A nats-server with its monitoring port (`-m`) runs a fleet whose only worker is then
//! killed; explicit requests leave a backlog on three task consumers (the two normal ones and
//! one high: a known number above a multiple of each trigger's threshold) and none on the
//! others. The test then reads `/jsz`
//! exactly as the scaler does (KEDA `pkg/scalers/nats_jetstream_scaler.go`): the URL
//! `/jsz?acc=<account>&config=true&consumers=true`, the account in `account_details` by name,
//! the stream in its `stream_detail` by name, the consumer in `consumer_detail` by name, and
//! lag = `num_pending + num_ack_pending` (the scaler falls back to the stream's `last_seq`
//! when the consumer is missing: that silent fallback is why the names are checked here).
//! Each trigger is an `AverageValue` external metric with target `lagThreshold`, so the HPA
//! wants `ceil(lag / lagThreshold)` replicas; the largest trigger wins, within
//! `minReplicaCount..=maxReplicaCount`.

use std::{path::Path, time::Duration};

use fleet_tests::{Client, FakeGithub, Fleet, NatsServer, http_get, nats::free_port, poll_until};
use serde_json::{Value, json};

/// One `nats-jetstream` trigger's metadata.
#[derive(Debug, Clone, PartialEq)]
struct Trigger {
    /// `account` (KEDA matches it against the account's name or id).
    account: String,
    /// `stream`.
    stream: String,
    /// `consumer`.
    consumer: String,
    /// `lagThreshold` (KEDA's default: 10).
    lag_threshold: u64,
    /// `activationLagThreshold` (default 0).
    activation: u64,
}

/// What the test reads of the ScaledObject.
#[derive(Debug)]
struct ScaledObject {
    /// `minReplicaCount`.
    min: u64,
    /// `maxReplicaCount`.
    max: u64,
    /// Its `nats-jetstream` triggers, in order.
    triggers: Vec<Trigger>,
}

// === impl ScaledObject ===

impl ScaledObject {
    /// Reads the file's fields line by line (its layout is ours: one `key: value` a line).
    fn parse(text: &str) -> Self {
        let (mut min, mut max, mut triggers) = (None, None, Vec::new());
        let mut in_triggers = false;
        for raw in text.lines() {
            let line = raw.split(" #").next().unwrap_or_default().trim();
            if line.starts_with('#') {
                continue;
            }
            if line == "triggers:" {
                in_triggers = true;
                continue;
            }
            let line = line.strip_prefix("- ").unwrap_or(line);
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim().trim_matches('"').trim_matches('\'').to_owned();
            let number = || -> u64 {
                value
                    .parse()
                    .unwrap_or_else(|e| panic!("{key}: {value:?} is not a number: {e}"))
            };
            let current = triggers.last_mut();
            match (key.trim(), current) {
                ("minReplicaCount", _) => min = Some(number()),
                ("maxReplicaCount", _) => max = Some(number()),
                ("type", _) if in_triggers => {
                    assert_eq!(value, "nats-jetstream", "a trigger of another type");
                    triggers.push(Trigger {
                        account: String::new(),
                        stream: String::new(),
                        consumer: String::new(),
                        lag_threshold: 10,
                        activation: 0,
                    });
                }
                ("account", Some(t)) => t.account = value,
                ("stream", Some(t)) => t.stream = value,
                ("consumer", Some(t)) => t.consumer = value,
                ("lagThreshold", Some(t)) => t.lag_threshold = number(),
                ("activationLagThreshold", Some(t)) => t.activation = number(),
                _ => {}
            }
        }
        Self {
            min: min.expect("minReplicaCount"),
            max: max.expect("maxReplicaCount"),
            triggers,
        }
    }

    /// The replicas the HPA that KEDA makes asks for, given each trigger's lag.
    fn replicas(&self, lags: &[u64]) -> u64 {
        let wanted = self
            .triggers
            .iter()
            .zip(lags)
            .map(|(t, lag)| lag.div_ceil(t.lag_threshold))
            .max()
            .unwrap_or(0);
        wanted.clamp(self.min, self.max)
    }
}

/// `/jsz?acc=<account>&config=true&consumers=true`, encoded as Go's `url.Values.Encode`
/// encodes KEDA's parameters (keys sorted, `$` as `%24`).
fn jsz_path(account: &str) -> String {
    let acc: String = account
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    format!("/jsz?acc={acc}&config=true&consumers=true")
}

/// What the scaler finds for `trigger` in a `/jsz` answer: `Err` when the account or the
/// stream is missing (KEDA: "stream not found"), `Ok((lag, consumer_found))` otherwise, with
/// KEDA's fallback to the stream's `last_seq` when the consumer is missing.
fn scaler_lag(jsz: &Value, trigger: &Trigger) -> Result<(u64, bool), String> {
    let accounts = jsz["account_details"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let account = accounts
        .iter()
        .find(|a| a["name"] == trigger.account.as_str() || a["id"] == trigger.account.as_str())
        .ok_or_else(|| format!("no account {:?} in account_details", trigger.account))?;
    let streams = account["stream_detail"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let stream = streams
        .iter()
        .find(|s| s["name"] == trigger.stream.as_str())
        .ok_or_else(|| {
            format!(
                "no stream {:?} in account {:?}",
                trigger.stream, trigger.account
            )
        })?;
    let consumers = stream["consumer_detail"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    Ok(
        match consumers
            .iter()
            .find(|c| c["name"] == trigger.consumer.as_str())
        {
            Some(c) => (n(&c["num_pending"]) + n(&c["num_ack_pending"]), true),
            None => (n(&stream["state"]["last_seq"]), false),
        },
    )
}

#[test]
fn replicas_follow_the_lag_threshold() {
    let so = ScaledObject {
        min: 2,
        max: 20,
        triggers: vec![
            Trigger {
                account: "$G".into(),
                stream: "S".into(),
                consumer: "a".into(),
                lag_threshold: 16,
                activation: 0,
            },
            Trigger {
                account: "$G".into(),
                stream: "S".into(),
                consumer: "b".into(),
                lag_threshold: 128,
                activation: 0,
            },
        ],
    };
    assert_eq!(so.replicas(&[0, 0]), 2, "never below the minimum");
    assert_eq!(so.replicas(&[48, 0]), 3);
    assert_eq!(so.replicas(&[49, 0]), 4);
    assert_eq!(so.replicas(&[49, 640]), 5, "the largest trigger wins");
    assert_eq!(so.replicas(&[10_000, 0]), 20, "never above the maximum");
    assert_eq!(jsz_path("$G"), "/jsz?acc=%24G&config=true&consumers=true");
}

#[tokio::test(flavor = "multi_thread")]
async fn keda_reads_the_backlog_of_the_consumers_the_fleet_creates() {
    let read = |file: &str| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../deploy/k8s/components/keda")
            .join(file);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        ScaledObject::parse(&text)
    };
    // fleet-worker runs github.repo_info, text.transform and note.append; chat has a Deployment
    // of its own.
    let so = read("scaledobject.yaml");
    let chat = read("scaledobject-chat.yaml");
    // One trigger per task and priority (worker-, high-worker-, low-worker-<task>).
    assert_eq!(
        so.triggers.len(),
        9,
        "one trigger per task and priority: {so:?}"
    );
    assert_eq!(chat.triggers.len(), 3, "one trigger per priority: {chat:?}");
    let all_triggers: Vec<&Trigger> = so.triggers.iter().chain(&chat.triggers).collect();

    let monitor = free_port();
    let nats = NatsServer::start_with(&["-m", &monitor.to_string()], "");
    let github = FakeGithub::start().await;
    let mut fleet = Fleet::builder(&nats).github(&github).start().await;
    let client = Client::connect(&nats.url()).await;
    let jsz = |account: String| async move {
        let response = http_get(&format!("http://127.0.0.1:{monitor}{}", jsz_path(&account))).await;
        assert_eq!(response.status, 200, "/jsz: {}", response.body);
        serde_json::from_str::<Value>(&response.body)
            .unwrap_or_else(|e| panic!("/jsz is not JSON ({e}): {}", response.body))
    };

    // Names: every trigger finds its account, stream and consumer as the fleet made them, and
    // every worker consumer on the triggers' stream has a trigger.
    let before = jsz(so.triggers[0].account.clone()).await;
    for trigger in &all_triggers {
        let found = scaler_lag(&before, trigger);
        assert!(
            matches!(found, Ok((_, true))),
            "{trigger:?}: KEDA would not find its consumer ({found:?}); /jsz: {before:#}"
        );
    }
    let stream = &so.triggers[0].stream;
    let made: Vec<String> = before["account_details"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|a| a["stream_detail"].as_array().cloned().unwrap_or_default())
        .filter(|s| s["name"] == stream.as_str())
        .flat_map(|s| s["consumer_detail"].as_array().cloned().unwrap_or_default())
        .filter_map(|c| c["name"].as_str().map(str::to_owned))
        .collect();
    let mut watched: Vec<String> = all_triggers.iter().map(|t| t.consumer.clone()).collect();
    let mut made_sorted = made.clone();
    watched.sort();
    made_sorted.sort();
    assert_eq!(
        watched, made_sorted,
        "the ScaledObject's consumers and the fleet's consumers on {stream} differ"
    );

    // No worker consumes: a backlog of a known size on three of the consumers, chosen
    // just above a multiple of each one's threshold.
    fleet.kill_worker("w1");
    // The request that waits on `consumer` (`high-`/`low-` ones: that priority).
    let task_of = |consumer: &str| -> (&'static str, Value, &'static str) {
        let (priority, base) = match consumer.split_once("-worker-") {
            Some((lane, task)) => (if lane == "high" { "high" } else { "low" }, task),
            None => ("normal", consumer.trim_start_matches("worker-")),
        };
        match base {
            "github_repo_info" => (
                "github.repo_info",
                json!({"owner": "octo-org", "repo": "octo-repo"}),
                priority,
            ),
            "text_transform" => (
                "text.transform",
                json!({"text": "k", "op": "upper"}),
                priority,
            ),
            other => panic!("no request for consumer {other} in this test"),
        }
    };
    // A backlog on the normal consumers and on the high one of github.repo_info; the other
    // triggers must read 0.
    let loaded = |t: &Trigger| {
        matches!(
            t.consumer.as_str(),
            "worker-github_repo_info" | "worker-text_transform" | "high-worker-github_repo_info"
        )
    };
    let mut backlog: Vec<u64> = vec![0; so.triggers.len()];
    let mut n = 0;
    for (i, trigger) in so.triggers.iter().enumerate() {
        if !loaded(trigger) {
            continue;
        }
        backlog[i] = (i as u64 + 2) * trigger.lag_threshold + 1;
        let (task, input, priority) = task_of(&trigger.consumer);
        for _ in 0..backlog[i] {
            n += 1;
            client
                .publish_json(&json!({
                    "id": format!("keda-{n}"),
                    "task": task,
                    "input": input,
                    "priority": priority,
                }))
                .await;
        }
    }

    // The dispatcher routes them all; then KEDA's numbers are the backlog.
    let account = so.triggers[0].account.clone();
    let lags = poll_until(Duration::from_secs(60), || {
        let (so, backlog) = (&so, &backlog);
        let jsz = jsz(account.clone());
        async move {
            let now = jsz.await;
            let lags: Vec<u64> = so
                .triggers
                .iter()
                .map(|t| scaler_lag(&now, t).map(|(lag, _)| lag).unwrap_or(0))
                .collect();
            (&lags == backlog).then_some(lags)
        }
    })
    .await;
    let now = jsz(account).await;
    let lags = lags.unwrap_or_else(|| {
        panic!(
            "KEDA's lags never matched the backlog {backlog:?}: {:?}\n/jsz: {now:#}",
            so.triggers
                .iter()
                .map(|t| scaler_lag(&now, t))
                .collect::<Vec<_>>()
        )
    });
    for (trigger, lag) in so.triggers.iter().zip(&lags) {
        let wanted = lag.div_ceil(trigger.lag_threshold);
        let active = *lag > trigger.activation;
        eprintln!(
            "keda: {} lag {lag} / lagThreshold {} -> {wanted} replicas (active: {active})",
            trigger.consumer, trigger.lag_threshold
        );
        assert_eq!(
            active,
            *lag > 0,
            "activationLagThreshold 0: any backlog activates"
        );
    }
    let expected = (2..)
        .zip(&so.triggers)
        .filter(|(_, t)| loaded(t))
        .map(|(k, _)| k + 1)
        .max()
        .unwrap_or(0)
        .clamp(so.min, so.max);
    assert_eq!(
        so.replicas(&lags),
        expected,
        "ceil(lag / lagThreshold) of the largest trigger, within {}..={}",
        so.min,
        so.max
    );
}
