//! The `fleet` CLI as a nats CLI user expects it: connection flags before or after the
//! subcommand, natscli's names, `--context` from natscli's context files, an NKey seed file;
//! `fleet stats` counting a known backlog, `fleet dlq purge`, `fleet completion`.
//!
//! These run the real binary with an environment of the test's choosing (no `NATS_URL`
//! unless given), so that flags, variables and contexts are seen exactly as a user's shell
//! passes them.

use std::{path::Path, time::Duration};

use fleet_tests::{
    CliOutput, Client, Fleet, NatsServer, Repo, TempDir, TestEnv, WAIT, assert_outcome, binary,
    poll_until, stats_by_task,
};
use serde_json::{Value, json};

/// A URL where no NATS server listens.
const NOWHERE: &str = "nats://127.0.0.1:1";

/// Runs `fleet <args>` with only `PATH`, `HOME` (a fresh one unless given) and `env`.
async fn fleet(env: &[(&str, &str)], args: &[&str]) -> CliOutput {
    let home = TempDir::new("cli-home").expect("a temp HOME");
    let mut cmd = tokio::process::Command::new(binary("fleet"));
    cmd.env_clear()
        .env("HOME", home.path())
        .env("RUST_LOG", "warn");
    if let Some(path) = std::env::var_os("PATH") {
        cmd.env("PATH", path);
    }
    for (key, value) in env {
        cmd.env(key, value);
    }
    cmd.args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    match tokio::time::timeout(Duration::from_secs(30), cmd.output()).await {
        Ok(Ok(output)) => CliOutput {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        },
        Ok(Err(e)) => panic!("cannot run fleet: {e}"),
        Err(_) => panic!("`fleet {}` did not finish within 30 s", args.join(" ")),
    }
}

/// An explicit `text.transform` request's `--input`.
const UPPER_A: &str = r#"{"text": "a", "op": "upper"}"#;

#[tokio::test(flavor = "multi_thread")]
async fn connection_flags_work_after_the_subcommand() {
    let env = TestEnv::start().await;
    let url = env.url();

    // NATS_URL points nowhere: only the flag after the subcommand can reach the server.
    let nowhere = [("NATS_URL", NOWHERE)];
    let out = fleet(
        &nowhere,
        &[
            "submit",
            "--task",
            "text.transform",
            "--input",
            UPPER_A,
            "--id",
            "flags-1",
            "--wait",
            "--json",
            "-s",
            &url,
        ],
    )
    .await;
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(out.json()["output"]["text"], "A", "{out}");
    // No spinner off a terminal: stderr stays empty.
    assert!(out.stderr.trim().is_empty(), "{out}");

    for args in [
        ["status", "flags-1", "--server", url.as_str()],
        ["--server", url.as_str(), "status", "flags-1"],
        ["status", "flags-1", "--nats-url", url.as_str()],
    ] {
        let out = fleet(&nowhere, &args).await;
        assert_eq!(out.code, Some(0), "fleet {args:?}: {out}");
    }
    let out = fleet(&nowhere, &["dlq", "list", "-s", &url]).await;
    assert_eq!(out.code, Some(0), "flags after a nested subcommand: {out}");

    // The flag wins over NATS_URL; without it NATS_URL is used.
    let out = fleet(
        &[("NATS_URL", url.as_str())],
        &["status", "flags-1", "-s", NOWHERE],
    )
    .await;
    assert_eq!(out.code, Some(4), "cannot reach NATS: {out}");
    let out = fleet(&[("NATS_URL", url.as_str())], &["status", "flags-1"]).await;
    assert_eq!(out.code, Some(0), "{out}");
}

/// Writes natscli's context `name` under `config/nats/context/`, every key present as
/// `nats context save` writes them.
fn write_context(config: &Path, name: &str, fields: &Value) {
    let mut context = json!({
        "description": "", "url": "", "socks_proxy": "", "token": "", "user": "",
        "password": "", "creds": "", "nkey": "", "cert": "", "key": "", "ca": "", "nsc": "",
        "jetstream_domain": "", "jetstream_api_prefix": "", "jetstream_event_prefix": "",
        "inbox_prefix": "", "user_jwt": "", "color_scheme": "", "tls_first": false,
    });
    if let (Some(all), Some(set)) = (context.as_object_mut(), fields.as_object()) {
        all.extend(set.clone());
    }
    let dir = config.join("nats").join("context");
    std::fs::create_dir_all(&dir).expect("context dir");
    std::fs::write(dir.join(format!("{name}.json")), context.to_string()).expect("context");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_nats_context_gives_the_server_and_the_login() {
    const USER: &str = "ctx-user";
    const PASSWORD: &str = "ctx-pw-51e0a7";
    let nats = NatsServer::start_with(
        &["--user", USER, "--pass", PASSWORD],
        &format!("{USER}:{PASSWORD}"),
    );
    let _fleet = Fleet::builder(&nats)
        .env("NATS_URL", &nats.plain_url())
        .env("NATS_USER", USER)
        .env("NATS_PASSWORD", PASSWORD)
        .start()
        .await;
    let config = TempDir::new("xdg").expect("a temp XDG_CONFIG_HOME");
    let xdg = config.path().to_string_lossy().into_owned();
    let plain = nats.plain_url();
    write_context(
        config.path(),
        "dev",
        &json!({"url": plain, "user": USER, "password": PASSWORD}),
    );
    write_context(config.path(), "nowhere", &json!({"url": NOWHERE}));
    let xdg_env = [("XDG_CONFIG_HOME", xdg.as_str())];

    // --context NAME, before or after the subcommand.
    let submit = [
        "submit",
        "--task",
        "text.transform",
        "--input",
        UPPER_A,
        "--id",
        "ctx-1",
        "--wait",
        "--json",
    ];
    let out = fleet(&xdg_env, &[&submit[..], &["--context", "dev"]].concat()).await;
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(out.json()["output"]["text"], "A", "{out}");
    let out = fleet(&xdg_env, &["--context", "dev", "status", "ctx-1"]).await;
    assert_eq!(out.code, Some(0), "{out}");

    // NATS_CONTEXT names it too.
    let out = fleet(
        &[("XDG_CONFIG_HOME", xdg.as_str()), ("NATS_CONTEXT", "dev")],
        &["status", "ctx-1"],
    )
    .await;
    assert_eq!(out.code, Some(0), "{out}");

    // Without a name, the context `nats context select` chose (context.txt) is used.
    std::fs::write(config.path().join("nats").join("context.txt"), "dev\n").expect("select");
    let out = fleet(&xdg_env, &["status", "ctx-1"]).await;
    assert_eq!(out.code, Some(0), "the selected context: {out}");

    // Explicit flags and variables win over the context, key by key.
    let out = fleet(&xdg_env, &["status", "ctx-1", "-s", NOWHERE]).await;
    assert_eq!(out.code, Some(4), "-s wins over the context's url: {out}");
    let out = fleet(
        &[
            ("XDG_CONFIG_HOME", xdg.as_str()),
            ("NATS_PASSWORD", "wrong-pw"),
        ],
        &["status", "ctx-1"],
    )
    .await;
    assert_eq!(out.code, Some(4), "NATS_PASSWORD wins: {out}");
    assert!(!out.stderr.contains("wrong-pw"), "no secret shows: {out}");
    assert!(!out.stderr.contains(PASSWORD), "no secret shows: {out}");
    let out = fleet(&xdg_env, &["status", "ctx-1", "--context", "nowhere"]).await;
    assert_eq!(
        out.code,
        Some(4),
        "--context wins over the selected one: {out}"
    );

    // A context that is not there is a usage error that names it.
    let out = fleet(&xdg_env, &["status", "ctx-1", "--context", "missing"]).await;
    assert_eq!(out.code, Some(2), "{out}");
    assert!(out.stderr.contains("missing"), "{out}");
}

/// A user NKey made for these tests only (seed, public key); the second is a stranger.
const NKEY_USER: (&str, &str) = (
    "SUAP6WTXJTFRZVQHYDV4754KLBHYNSZEBFNDKNJ4QDF3QDZZBP74UHEGCQ",
    "UA45GBUPYZECUXB2KC6F6DET6VSFCGBIMEG2PNZJIM2RI5ZVFUWKXGX3",
);
const NKEY_STRANGER: &str = "SUADWUQPYJ6WWQPTHLCD76PDIUK7AYVLIIKO5ACPAJ452QMWUN2TF65W3U";

#[tokio::test(flavor = "multi_thread")]
async fn an_nkey_seed_file_logs_the_fleet_and_the_cli_in() {
    let files = TempDir::new("nkey").expect("a temp dir");
    // The server knows the NKey user, plus a user/password for the harness's own client.
    let conf = files.path().join("nkey.conf");
    std::fs::write(
        &conf,
        format!(
            "authorization {{\n  users = [\n    {{ nkey: {} }}\n    {{ user: harness, password: harness-pw }}\n  ]\n}}\n",
            NKEY_USER.1
        ),
    )
    .expect("server config");
    let seed_file = files.path().join("user.nk");
    std::fs::write(&seed_file, format!("{}\n", NKEY_USER.0)).expect("seed file");
    let stranger_file = files.path().join("stranger.nk");
    std::fs::write(&stranger_file, format!("{NKEY_STRANGER}\n")).expect("seed file");
    let seed_path = seed_file.to_string_lossy().into_owned();
    let stranger_path = stranger_file.to_string_lossy().into_owned();

    let conf_arg = conf.to_string_lossy().into_owned();
    let nats = NatsServer::start_with(&["-c", &conf_arg], "harness:harness-pw");
    let plain = nats.plain_url();
    // The services read NATS_NKEY as a seed file too.
    let _fleet = Fleet::builder(&nats)
        .env("NATS_URL", &plain)
        .env("NATS_NKEY", &seed_path)
        .start()
        .await;
    let client = Client::connect(&nats.url()).await;
    client
        .publish_json(
            &json!({"id": "nk-1", "task": "text.transform", "input": {"text": "n", "op": "upper"}}),
        )
        .await;
    assert_outcome(&client.wait_result("nk-1", WAIT).await, "succeeded", None);

    let url = [("NATS_URL", plain.as_str())];
    let out = fleet(&url, &["status", "nk-1", "--nkey", &seed_path]).await;
    assert_eq!(out.code, Some(0), "--nkey after the subcommand: {out}");
    let out = fleet(
        &[
            ("NATS_URL", plain.as_str()),
            ("NATS_NKEY", seed_path.as_str()),
        ],
        &["status", "nk-1"],
    )
    .await;
    assert_eq!(out.code, Some(0), "NATS_NKEY: {out}");

    // Without it, or with a stranger's seed, the server refuses; no seed ever shows.
    let out = fleet(&url, &["status", "nk-1"]).await;
    assert_eq!(out.code, Some(4), "{out}");
    let out = fleet(&url, &["status", "nk-1", "--nkey", &stranger_path]).await;
    assert_eq!(out.code, Some(4), "{out}");
    assert!(!out.stderr.contains(NKEY_STRANGER), "{out}");
    // A seed file that is not there is named.
    let missing = files.path().join("nope.nk").to_string_lossy().into_owned();
    let out = fleet(&url, &["status", "nk-1", "--nkey", &missing]).await;
    assert_eq!(out.code, Some(2), "{out}");
    assert!(out.stderr.contains("nope.nk"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn stats_count_a_known_backlog_and_dlq_purge_empties_the_dlq() {
    let mut env = TestEnv::start().await;
    let url = env.url();

    // Done: three text.transform tasks; dead: one github.repo_info after its 3 attempts and
    // one unreadable request.
    for i in 0..3 {
        env.client
            .publish_json(&json!({"id": format!("st-done-{i}"), "task": "text.transform", "input": {"text": "s", "op": "upper"}}))
            .await;
    }
    env.github
        .set("broken-org/broken", Repo::new().always_fail(500));
    env.client
        .publish_json(&json!({"id": "st-dead", "task": "github.repo_info", "input": {"owner": "broken-org", "repo": "broken"}}))
        .await;
    env.client
        .publish_with_id(
            "st-unreadable",
            bytes::Bytes::from_static(&[0xff, 0xfe, 0x80]),
        )
        .await;
    for i in 0..3 {
        assert_outcome(
            &env.client.wait_result(&format!("st-done-{i}"), WAIT).await,
            "succeeded",
            None,
        );
    }
    assert_outcome(
        &env.client.wait_result("st-dead", WAIT).await,
        "dead",
        Some("exhausted"),
    );
    env.client.wait_result("st-unreadable", WAIT).await;

    // A live worker keeps a pull request waiting on each of its consumers.
    let live = poll_until(WAIT, || {
        let url = url.clone();
        async move {
            let s = stats_by_task(&url).await;
            (s["text.transform"]["workers"].as_u64() >= Some(1)).then_some(s)
        }
    })
    .await
    .expect("the worker shows as pulling");
    let row = &live["text.transform"];
    assert_eq!(
        (
            row["waiting"].as_u64(),
            row["running"].as_u64(),
            row["done"].as_u64()
        ),
        (Some(0), Some(0), Some(3)),
        "{live:#}"
    );
    assert_eq!(row["dead"], 0, "{live:#}");
    assert_eq!(live["github.repo_info"]["dead"], 1, "{live:#}");
    assert_eq!(live["unreadable"]["dead"], 1, "{live:#}");
    assert!(
        live.get("chat").is_some(),
        "catalog tasks are listed: {live:#}"
    );

    // No worker: a backlog of five stays queued.
    env.fleet.kill_worker("w1");
    for i in 0..5 {
        env.client
            .publish_json(&json!({"id": format!("st-wait-{i}"), "task": "text.transform", "input": {"text": "w", "op": "lower"}}))
            .await;
    }
    let backlog = poll_until(Duration::from_secs(30), || {
        let url = url.clone();
        async move {
            let s = stats_by_task(&url).await;
            let row = &s["text.transform"];
            let queued =
                row["waiting"].as_u64().unwrap_or(0) + row["running"].as_u64().unwrap_or(0);
            (queued == 5).then_some(s)
        }
    })
    .await;
    let now = stats_by_task(&url).await;
    let backlog = backlog.unwrap_or_else(|| panic!("the backlog of 5 never showed: {now:#}"));
    // Delivered to the killed worker's last pull request, a task counts as running until it
    // is redelivered; either way it is not done.
    assert_eq!(backlog["text.transform"]["done"], 3, "{backlog:#}");

    let out = fleet(&[("NATS_URL", url.as_str())], &["stats"]).await;
    assert_eq!(out.code, Some(0), "{out}");
    assert!(
        out.stdout
            .lines()
            .next()
            .is_some_and(|l| l.contains("waiting") && l.contains("workers")),
        "a table: {out}"
    );

    // Purge one task's dead letters, then the rest.
    let out = fleet(
        &[("NATS_URL", url.as_str())],
        &["dlq", "purge", "--task", "github.repo_info", "--json"],
    )
    .await;
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(out.json(), json!({"purged": 1}), "{out}");
    let left = stats_by_task(&url).await;
    assert_eq!(left["github.repo_info"]["dead"], 0, "{left:#}");
    assert_eq!(left["unreadable"]["dead"], 1, "only that task's: {left:#}");

    let out = fleet(&[("NATS_URL", url.as_str())], &["dlq", "purge"]).await;
    assert_eq!(out.code, Some(0), "{out}");
    assert!(out.stdout.contains("removed 1 dead letter"), "{out}");
    let out = fleet(&[("NATS_URL", url.as_str())], &["dlq", "list", "--json"]).await;
    assert_eq!(out.json(), json!([]), "{out}");
    let out = fleet(
        &[("NATS_URL", url.as_str())],
        &["dlq", "purge", "--task", "fleet.*"],
    )
    .await;
    assert_eq!(out.code, Some(2), "wildcards are no task: {out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn completion_and_help_need_no_server() {
    let nowhere = [("NATS_URL", NOWHERE)];
    for (shell, mark) in [
        ("bash", "complete -F _fleet"),
        ("zsh", "#compdef fleet"),
        ("fish", "complete -c fleet"),
    ] {
        let out = fleet(&nowhere, &["completion", shell]).await;
        assert_eq!(out.code, Some(0), "{shell}: {out}");
        assert!(out.stdout.contains(mark), "{shell}: {out}");
        assert!(
            out.stdout.contains("stats"),
            "{shell} knows the commands: {out}"
        );
    }
    let out = fleet(&nowhere, &["completion", "tcsh"]).await;
    assert_eq!(out.code, Some(2), "{out}");

    // Help names natscli's flags on every command, and never a secret's value.
    let secrets = [
        ("NATS_URL", NOWHERE),
        ("NATS_PASSWORD", "help-pw-3f1"),
        ("NATS_TOKEN", "help-token-9c2"),
        ("NATS_NKEY", "/secret/seed-path.nk"),
    ];
    for args in [&["--help"][..], &["submit", "--help"]] {
        let out = fleet(&secrets, args).await;
        assert_eq!(out.code, Some(0), "{out}");
        for flag in [
            "-s, --server",
            "--creds",
            "--user",
            "--password",
            "--nkey",
            "--tlscert",
            "--tlskey",
            "--tlsca",
            "--context",
        ] {
            assert!(out.stdout.contains(flag), "{args:?} lacks {flag}: {out}");
        }
        for (_, secret) in &secrets[1..] {
            assert!(
                !out.stdout.contains(secret),
                "{args:?} shows a secret: {out}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_certificate_logs_the_fleet_and_the_cli_in() {
    let tls = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/tls");
    let file = |name: &str| tls.join(name).to_string_lossy().into_owned();
    let (ca, cert, key) = (file("ca.pem"), file("client.pem"), file("client-key.pem"));
    let files = TempDir::new("tls").expect("a temp dir");
    let conf = files.path().join("tls.conf");
    std::fs::write(
        &conf,
        format!(
            "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n  ca_file: \"{ca}\"\n  verify: true\n  timeout: 2\n}}\n",
            file("server.pem"),
            file("server-key.pem"),
        ),
    )
    .expect("server config");
    let conf_arg = conf.to_string_lossy().into_owned();
    let nats = NatsServer::start_with(&["-c", &conf_arg], "");
    let url = nats.plain_url();
    // The harness's own client has no certificate, so the fleet is not awaited through it:
    // the CLI, with the certificate, sees it come up.
    let _fleet = Fleet::builder(&nats)
        .env("NATS_CA", &ca)
        .env("NATS_CERT", &cert)
        .env("NATS_KEY", &key)
        .start_unready();
    let with_cert = [
        "--tlsca",
        ca.as_str(),
        "--tlscert",
        cert.as_str(),
        "--tlskey",
        key.as_str(),
    ];
    let nowhere = [("NATS_URL", url.as_str())];
    let up = poll_until(Duration::from_secs(30), || async {
        let out = fleet(&nowhere, &[&["catalog", "--json"][..], &with_cert].concat()).await;
        (out.code == Some(0) && out.stdout.contains("text.transform")).then_some(out)
    })
    .await;
    assert!(
        up.is_some(),
        "the fleet never came up over TLS with client certificates"
    );

    let out = fleet(
        &nowhere,
        &[
            &[
                "submit",
                "--task",
                "text.transform",
                "--input",
                UPPER_A,
                "--id",
                "tls-1",
                "--wait",
                "--json",
            ][..],
            &with_cert,
        ]
        .concat(),
    )
    .await;
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(out.json()["output"]["text"], "A", "{out}");

    // NATS_CERT and NATS_KEY as variables.
    let out = fleet(
        &[
            ("NATS_URL", url.as_str()),
            ("NATS_CA", ca.as_str()),
            ("NATS_CERT", cert.as_str()),
            ("NATS_KEY", key.as_str()),
        ],
        &["status", "tls-1"],
    )
    .await;
    assert_eq!(out.code, Some(0), "{out}");

    // Without the certificate the server refuses; half of it is a usage error.
    let out = fleet(&nowhere, &["status", "tls-1", "--tlsca", &ca]).await;
    assert_eq!(out.code, Some(4), "{out}");
    let out = fleet(
        &nowhere,
        &["status", "tls-1", "--tlsca", &ca, "--tlscert", &cert],
    )
    .await;
    assert_eq!(out.code, Some(2), "{out}");
    assert!(out.stderr.contains("--tlskey"), "{out}");
}
