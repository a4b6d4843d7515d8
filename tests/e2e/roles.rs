//! Least privilege: a nats-server with `deploy/nats/auth.conf` (the four roles' users, with test
//! passwords). `fleet setup` runs as admin; the dispatcher and a worker run with their own users
//! and `FLEET_MANAGE_STREAMS=false`; a client submits a request and gets its result. A client
//! cannot publish a task, write the catalog, manage streams or read another user's replies,
//! and the dispatcher cannot write the catalog either.

use std::path::PathBuf;
use std::time::Duration;

use fleet_testkit::process::{ChildProc, clean_command};
use fleet_tests::{
    BUILTIN_TASKS, NatsServer, TempDir, WAIT, assert_outcome, binary, fleet::FAST_SETTINGS, run_cli,
};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// The users of `deploy/nats/auth.conf`, their password variables and the test's passwords.
const USERS: [(&str, &str, &str); 5] = [
    ("admin", "FLEET_ADMIN_PASSWORD", "admin-pw-5e1"),
    (
        "dispatcher",
        "FLEET_DISPATCHER_PASSWORD",
        "dispatcher-pw-77c",
    ),
    ("worker", "FLEET_WORKER_PASSWORD", "worker-pw-0b9"),
    ("client-a", "FLEET_CLIENT_A_PASSWORD", "client-a-pw-3d2"),
    ("client-b", "FLEET_CLIENT_B_PASSWORD", "client-b-pw-f40"),
];

/// The test password of `user`.
fn password(user: &str) -> &'static str {
    USERS
        .iter()
        .find(|(u, _, _)| *u == user)
        .map(|(_, _, p)| *p)
        .unwrap_or_else(|| panic!("no user {user} in deploy/nats/auth.conf"))
}

/// `deploy/nats/auth.conf` as shipped, with the test passwords defined in front of it.
fn server_config(dir: &TempDir) -> PathBuf {
    let shipped = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/nats/auth.conf");
    let auth = std::fs::read_to_string(&shipped)
        .unwrap_or_else(|e| panic!("read {}: {e}", shipped.display()));
    let mut conf: String = USERS
        .iter()
        .map(|(_, var, pw)| format!("{var}: \"{pw}\"\n"))
        .collect();
    conf.push_str(&auth);
    let path = dir.path().join("nats.conf");
    std::fs::write(&path, conf).expect("write nats.conf");
    path
}

/// A server running the shipped configuration; [`NatsServer::url`] logs in as admin.
fn start_server(dir: &TempDir) -> NatsServer {
    let conf = server_config(dir);
    let conf = conf.to_string_lossy().into_owned();
    NatsServer::start_with(&["-c", &conf], &format!("admin:{}", password("admin")))
}

/// The connection flags of `user`, with its own inbox prefix.
fn login(user: &str) -> Vec<String> {
    vec![
        "--user".into(),
        user.into(),
        "--password".into(),
        password(user).into(),
        "--inbox-prefix".into(),
        format!("_INBOX_{user}"),
    ]
}

/// Runs `fleet` as `user`.
async fn fleet_as(nats: &NatsServer, user: &str, args: &[&str]) -> fleet_tests::CliOutput {
    let mut all = login(user);
    all.extend(args.iter().map(|a| (*a).to_owned()));
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    run_cli(&nats.plain_url(), &all).await
}

/// Starts `bin` (`dispatcher` or `worker`) as NATS user `bin`, managing no streams, with its
/// health port; logs go to `dir`.
fn start_service(nats: &NatsServer, bin: &str, dir: &TempDir) -> (ChildProc, u16) {
    let port = fleet_testkit::free_port().expect("a free port");
    let mut cmd = clean_command(&binary(bin));
    cmd.envs(FAST_SETTINGS.iter().copied())
        .env("NATS_URL", nats.plain_url())
        .env("NATS_USER", bin)
        .env("NATS_PASSWORD", password(bin))
        .env("NATS_INBOX_PREFIX", format!("_INBOX_{bin}"))
        .env("FLEET_MANAGE_STREAMS", "false")
        .env("FLEET_METRICS_PORT", port.to_string());
    let log = dir.path().join(format!("{bin}.log"));
    let proc = ChildProc::spawn(bin, cmd, &log).unwrap_or_else(|e| panic!("{e}"));
    (proc, port)
}

/// A connection as `user` (own inbox prefix) whose server errors, such as permission
/// violations, arrive on the returned channel.
async fn connect_as(
    nats: &NatsServer,
    user: &str,
) -> (async_nats::Client, mpsc::UnboundedReceiver<String>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let client = async_nats::ConnectOptions::new()
        .user_and_password(user.into(), password(user).into())
        .custom_inbox_prefix(format!("_INBOX_{user}"))
        .event_callback(move |event| {
            let tx = tx.clone();
            async move {
                if let async_nats::Event::ServerError(e) = event {
                    let _ = tx.send(e.to_string());
                }
            }
        })
        .connect(nats.plain_url())
        .await
        .unwrap_or_else(|e| panic!("{user} cannot connect: {e}"));
    (client, rx)
}

/// Waits up to 5 s for the server to refuse something on `subject`; returns its message.
async fn refusal(errors: &mut mpsc::UnboundedReceiver<String>, subject: &str) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, errors.recv()).await {
            Ok(Some(e)) if e.contains("Permissions Violation") && e.contains(subject) => return e,
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => panic!("the server did not refuse `{subject}`"),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_fleet_runs_with_each_roles_own_credentials() {
    let dir = TempDir::new("roles").expect("temp dir");
    let nats = start_server(&dir);

    // Before `fleet setup`, a service that may not manage streams stops at once and says why.
    let (mut early, _) = start_service(&nats, "worker", &dir);
    let status = fleet_tests::poll_until(WAIT, || {
        let exited = early.exited();
        async move { exited }
    })
    .await
    .expect("the worker stops when the streams are missing");
    assert!(!status.success(), "{status}");
    let log = std::fs::read_to_string(early.log()).unwrap_or_default();
    assert!(
        log.contains("fleet setup"),
        "the error names `fleet setup`:\n{log}"
    );
    drop(early);

    // The admin sets up streams, buckets and consumers.
    let setup = fleet_as(&nats, "admin", &["setup", "--ack-wait", "2s", "--json"]).await;
    assert_eq!(setup.code, Some(0), "{setup}");
    let made = setup.json();
    let consumers: Vec<&str> = made["consumers"]
        .as_array()
        .map(|cs| cs.iter().filter_map(|c| c["consumer"].as_str()).collect())
        .unwrap_or_default();
    assert!(consumers.contains(&"dispatcher"), "{made}");
    for task in BUILTIN_TASKS {
        let name = format!("worker-{}", task.replace('.', "_"));
        assert!(consumers.contains(&name.as_str()), "{name} in {made}");
        for other in ["high", "low"] {
            let lane = format!("{other}-{name}");
            assert!(consumers.contains(&lane.as_str()), "{lane} in {made}");
        }
    }

    let (mut worker, worker_port) = start_service(&nats, "worker", &dir);
    let (mut dispatcher, dispatcher_port) = start_service(&nats, "dispatcher", &dir);
    for (proc, port) in [
        (&mut worker, worker_port),
        (&mut dispatcher, dispatcher_port),
    ] {
        if let Err(e) = proc.wait_ready(port, Duration::from_secs(30)).await {
            panic!(
                "{e}\n{}\n--- nats ---\n{}",
                fleet_tests::tail(proc.log(), 40),
                nats.log_summary()
            );
        }
    }

    // A client submits and waits; another client reads the result by its id.
    let input = json!({"text": "least privilege", "op": "upper"}).to_string();
    let submitted = fleet_as(
        &nats,
        "client-a",
        &[
            "submit",
            "--task",
            "text.transform",
            "--input",
            &input,
            "--id",
            "roles-1",
            "--wait",
            "--json",
        ],
    )
    .await;
    assert_eq!(submitted.code, Some(0), "{submitted}");
    let result: Value = submitted.json();
    assert_outcome(&result, "succeeded", None);
    assert_eq!(result["output"]["text"], "LEAST PRIVILEGE", "{result}");
    // High priority work goes through fleet.tasks-high.<task> and its own consumer.
    let high = fleet_as(
        &nats,
        "client-a",
        &[
            "submit",
            "--task",
            "text.transform",
            "--input",
            &input,
            "--id",
            "roles-2",
            "--priority",
            "high",
            "--wait",
            "--json",
        ],
    )
    .await;
    assert_eq!(high.code, Some(0), "{high}");
    assert_outcome(&high.json(), "succeeded", None);
    let status = fleet_as(&nats, "client-b", &["status", "roles-1", "--json"]).await;
    assert_eq!(status.code, Some(0), "{status}");
    let catalog = fleet_as(&nats, "client-b", &["catalog", "--json"]).await;
    assert_eq!(catalog.code, Some(0), "{catalog}");

    // Without its own inbox prefix a client gets no answer from JetStream.
    let no_prefix = run_cli(
        &nats.plain_url(),
        &[
            "--user",
            "client-a",
            "--password",
            password("client-a"),
            "status",
            "roles-1",
        ],
    )
    .await;
    assert_ne!(no_prefix.code, Some(0), "{no_prefix}");

    // The fleet's own users needed nothing they were not given.
    let log = nats.log_tail(100_000);
    let violations: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("Violation") && !l.contains("client-a"))
        .collect();
    assert!(violations.is_empty(), "{violations:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_cannot_publish_tasks_write_the_catalog_or_read_other_replies() {
    let dir = TempDir::new("roles").expect("temp dir");
    let nats = start_server(&dir);
    let setup = fleet_as(&nats, "admin", &["setup"]).await;
    assert_eq!(setup.code, Some(0), "{setup}");
    let admin = fleet_tests::Client::connect(&nats.url()).await;
    let admin_js = admin.jetstream();

    let (client, mut errors) = connect_as(&nats, "client-a").await;
    // Publishing a task behind the dispatcher's back, writing the catalog, managing streams,
    // cancelling, approving or denying (operators' verbs).
    for subject in [
        "fleet.cancel.some-id",
        "fleet.approve.some-id",
        "fleet.deny.some-id",
        "fleet.tasks.text.transform",
        "fleet.tasks-high.text.transform",
        "$KV.fleet-catalog.text.transform",
        "$KV.fleet-catalog.x",
        "$JS.API.STREAM.PURGE.FLEET_DLQ",
        "$JS.API.STREAM.DELETE.FLEET_TASKS",
        "$JS.API.CONSUMER.CREATE.FLEET_TASKS",
        "$JS.API.CONSUMER.DURABLE.CREATE.FLEET_TASKS.thief",
    ] {
        client
            .publish(subject.to_owned(), r#"{"name":"x"}"#.into())
            .await
            .expect("the publish leaves the client");
        client.flush().await.expect("flush");
        refusal(&mut errors, subject).await;
    }
    let tasks = admin_js
        .get_stream("FLEET_TASKS")
        .await
        .expect("FLEET_TASKS");
    assert_eq!(tasks.cached_info().state.messages, 0, "no task was stored");
    let catalog = admin_js
        .get_key_value("fleet-catalog")
        .await
        .expect("the catalog");
    assert!(catalog.get("x").await.ok().flatten().is_none());
    assert!(catalog.get("text.transform").await.ok().flatten().is_none());

    // Nor may the dispatcher write the catalog.
    let (dispatcher, mut dispatcher_errors) = connect_as(&nats, "dispatcher").await;
    dispatcher
        .publish("$KV.fleet-catalog.x", "{}".into())
        .await
        .expect("the publish leaves the client");
    dispatcher.flush().await.expect("flush");
    refusal(&mut dispatcher_errors, "$KV.fleet-catalog.x").await;

    // Another user's replies: neither the shared default inbox nor client-b's own.
    let mut snoops = Vec::new();
    for subject in ["_INBOX.>", "_INBOX_client-b.>", "_INBOX_dispatcher.>", ">"] {
        snoops.push(client.subscribe(subject).await.expect("subscribe"));
        client.flush().await.expect("flush");
        refusal(&mut errors, subject).await;
    }
    // client-b asks JetStream something; the answer reaches client-b only.
    let (other, _) = connect_as(&nats, "client-b").await;
    let other_js = async_nats::jetstream::new(other.clone());
    let status = other_js
        .get_key_value("fleet-status")
        .await
        .expect("client-b opens the status bucket");
    assert!(status.get("nobody").await.expect("a direct get").is_none());
    for mut snoop in snoops {
        let seen = tokio::time::timeout(Duration::from_millis(500), snoop.next()).await;
        assert!(
            !matches!(seen, Ok(Some(_))),
            "a client read another user's reply"
        );
    }
    // The server logs what it refused, naming the user (the other test relies on it).
    let log = nats.log_tail(100_000);
    assert!(
        log.lines()
            .any(|l| l.contains("Violation") && l.contains("client-a")),
        "{log}"
    );
}
