//! NATS over TLS, with a CA each test makes (rcgen): a server with TLS only serves the fleet and
//! the `fleet` CLI given that CA (`NATS_CA`, `--tlsca`) over a `tls://` URL, and over `nats://`
//! too; a server that verifies client certificates (`verify: true`) turns away every process
//! without `NATS_CERT`/`NATS_KEY` at once, with an error that says what is missing, and serves
//! them with it. A process that cannot do TLS exits non-zero in seconds instead of retrying
//! forever, and nothing panics (two rustls crypto providers once made async-nats' TLS set-up
//! panic).

use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use fleet_testkit::process::{ChildProc, clean_command};
use fleet_tests::{
    Client, Fleet, NatsServer, TempDir, WAIT, assert_outcome, binary, poll_until, run_cli,
};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use serde_json::json;

/// How long a process that cannot connect may take to give up.
const GIVE_UP_WITHIN: Duration = Duration::from_secs(20);

/// A test CA with a server certificate (`127.0.0.1`, `localhost`) and a client certificate, as
/// PEM files in a temporary directory.
struct Pki {
    /// Holds the files and the server's configuration.
    dir: TempDir,
}

// === impl Pki ===

impl Pki {
    /// Makes the CA and both certificates (EC P-256).
    fn new() -> Self {
        let dir = TempDir::new("tls-pki").expect("a temp dir");
        let ca_key = KeyPair::generate().expect("a CA key");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "fleet test CA");
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca.self_signed(&ca_key).expect("a self-signed CA");
        let issuer = Issuer::new(ca, ca_key);
        let write = |name: &str, pem: String| {
            std::fs::write(dir.path().join(name), pem).expect("write a PEM file");
        };
        write("ca.pem", ca_cert.pem());
        for (name, sans, usage) in [
            (
                "server",
                vec!["127.0.0.1".to_owned(), "localhost".to_owned()],
                ExtendedKeyUsagePurpose::ServerAuth,
            ),
            ("client", Vec::new(), ExtendedKeyUsagePurpose::ClientAuth),
        ] {
            let key = KeyPair::generate().expect("a key");
            let mut params = CertificateParams::new(sans).expect("certificate parameters");
            params
                .distinguished_name
                .push(DnType::CommonName, format!("fleet test {name}"));
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            params.extended_key_usages = vec![usage];
            let cert = params
                .signed_by(&key, &issuer)
                .expect("a signed certificate");
            write(&format!("{name}.pem"), cert.pem());
            write(&format!("{name}-key.pem"), key.serialize_pem());
        }
        Self { dir }
    }

    /// The path of one of the PEM files (`ca.pem`, `client.pem`, `client-key.pem`, …).
    fn file(&self, name: &str) -> String {
        self.dir.path().join(name).to_string_lossy().into_owned()
    }

    /// Starts a nats-server with TLS on its client port; `verify` asks every client for a
    /// certificate signed by the CA.
    fn server(&self, verify: bool) -> NatsServer {
        let ca = if verify {
            format!("  ca_file: \"{}\"\n  verify: true\n", self.file("ca.pem"))
        } else {
            String::new()
        };
        let conf = self
            .dir
            .path()
            .join(if verify { "verify.conf" } else { "tls.conf" });
        std::fs::write(
            &conf,
            format!(
                "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n{ca}  timeout: 2\n}}\n",
                self.file("server.pem"),
                self.file("server-key.pem"),
            ),
        )
        .expect("write the server configuration");
        NatsServer::start_with(&["-c", &conf.to_string_lossy()], "")
    }

    /// The harness's own connection to `url`, trusting the CA, with the client certificate when
    /// `with_cert`.
    async fn client(&self, url: &str, with_cert: bool) -> Client {
        let nats = poll_until(Duration::from_secs(15), || async {
            let mut options = async_nats::ConnectOptions::new()
                .connection_timeout(Duration::from_secs(2))
                .add_root_certificates(PathBuf::from(self.file("ca.pem")))
                .require_tls(true);
            if with_cert {
                options = options.add_client_certificate(
                    PathBuf::from(self.file("client.pem")),
                    PathBuf::from(self.file("client-key.pem")),
                );
            }
            options.connect(url).await.ok()
        })
        .await
        .unwrap_or_else(|| panic!("the test cannot connect to {url} over TLS"));
        Client::from_nats(nats)
    }
}

/// `tls://127.0.0.1:<port>` of `nats`.
fn tls_url(nats: &NatsServer) -> String {
    format!("tls://127.0.0.1:{}", nats.port())
}

/// Starts `bin` (`dispatcher` or `worker`) with `env` and waits for it to exit; returns its exit
/// status, how long it ran, and its log.
///
/// # Panics
///
/// When it is still running after [`GIVE_UP_WITHIN`] (it hangs instead of failing).
async fn run_until_exit(bin: &str, env: &[(&str, &str)]) -> (ExitStatus, Duration, String) {
    let dir = TempDir::new("tls-refused").expect("a temp dir");
    let log = dir.path().join(format!("{bin}.log"));
    let mut cmd = clean_command(&binary(bin));
    cmd.env("FLEET_METRICS_PORT", "0").envs(env.iter().copied());
    let started = Instant::now();
    let mut proc = ChildProc::spawn(bin, cmd, &log).unwrap_or_else(|e| panic!("{e}"));
    let status = poll_until(GIVE_UP_WITHIN, || {
        let status = proc.exited();
        async move { status }
    })
    .await;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let Some(status) = status else {
        panic!("{bin} still runs after {GIVE_UP_WITHIN:?} although it cannot connect:\n{text}");
    };
    (status, started.elapsed(), text)
}

/// Asserts that the dispatcher and a worker started with `env` give up with an error naming
/// `hint`, quickly and without a panic.
async fn assert_turned_away(env: &[(&str, &str)], hint: &str) {
    for bin in ["dispatcher", "worker"] {
        let (status, took, log) = run_until_exit(bin, env).await;
        assert!(!status.success(), "{bin} exited with {status}:\n{log}");
        assert!(
            log.contains("cannot connect to NATS") && log.contains(hint),
            "{bin} should say what is missing ({hint}):\n{log}"
        );
        assert!(!log.contains("panicked"), "{bin} panicked:\n{log}");
        assert!(
            took < Duration::from_secs(15),
            "{bin} took {took:?} to give up"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tls_server_serves_the_fleet_and_the_cli_given_the_ca() {
    let pki = Pki::new();
    let nats = pki.server(false);
    let url = tls_url(&nats);
    let ca = pki.file("ca.pem");

    // Without the CA nobody trusts the server: the processes say so and exit.
    assert_turned_away(&[("NATS_URL", url.as_str())], "NATS_CA").await;

    let client = pki.client(&url, false).await;
    let mut fleet = Fleet::builder(&nats)
        .env("NATS_URL", &url)
        .env("NATS_CA", &ca)
        .start_unready();
    fleet.wait_ready_with(&client).await;

    let request =
        json!({"id": "tls-1", "task": "text.transform", "input": {"text": "a", "op": "upper"}});
    client.publish_json(&request).await;
    let result = client.wait_result("tls-1", WAIT).await;
    assert_outcome(&result, "succeeded", None);
    assert_eq!(result["output"], json!({"text": "A"}), "{result:#}");
    // Routed by the dispatcher, not only explicit.
    client
        .publish_with_id("tls-2", "Make the letter x uppercase")
        .await;
    let result = client.wait_result("tls-2", WAIT).await;
    assert_outcome(&result, "succeeded", None);

    // The CLI over tls:// with --tlsca.
    let out = run_cli(
        &url,
        &[
            "submit",
            "--task",
            "text.transform",
            "--input",
            r#"{"text":"b","op":"upper"}"#,
            "--id",
            "tls-cli",
            "--wait",
            "--json",
            "--tlsca",
            &ca,
        ],
    )
    .await;
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(out.json()["output"]["text"], "B", "{out}");
    // A nats:// URL with the CA: the client upgrades to the TLS the server requires.
    let out = run_cli(&nats.plain_url(), &["status", "tls-cli", "--tlsca", &ca]).await;
    assert_eq!(out.code, Some(0), "{out}");
    // Without the CA: cannot reach NATS (4), saying why, no panic.
    let out = run_cli(&url, &["status", "tls-cli"]).await;
    assert_eq!(out.code, Some(4), "{out}");
    assert!(out.stderr.contains("NATS_CA"), "{out}");
    assert!(!out.stderr.contains("panicked"), "{out}");
    fleet.assert_running();
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_verify_wants_a_client_certificate_from_every_process() {
    let pki = Pki::new();
    let nats = pki.server(true);
    let url = tls_url(&nats);
    let (ca, cert, key) = (
        pki.file("ca.pem"),
        pki.file("client.pem"),
        pki.file("client-key.pem"),
    );

    // The CA but no certificate: turned away at once, told to give one.
    assert_turned_away(
        &[("NATS_URL", url.as_str()), ("NATS_CA", ca.as_str())],
        "NATS_CERT",
    )
    .await;
    let out = run_cli(&url, &["catalog", "--tlsca", &ca]).await;
    assert_eq!(out.code, Some(4), "{out}");
    assert!(out.stderr.contains("--tlscert"), "{out}");
    assert!(!out.stderr.contains("panicked"), "{out}");

    // With NATS_CERT and NATS_KEY the fleet runs.
    let client = pki.client(&url, true).await;
    let mut fleet = Fleet::builder(&nats)
        .env("NATS_URL", &url)
        .env("NATS_CA", &ca)
        .env("NATS_CERT", &cert)
        .env("NATS_KEY", &key)
        .start_unready();
    fleet.wait_ready_with(&client).await;
    client
        .publish_with_id("mtls-1", "Make the letter m uppercase")
        .await;
    let result = client.wait_result("mtls-1", WAIT).await;
    assert_outcome(&result, "succeeded", None);
    assert_eq!(result["output"], json!({"text": "M"}), "{result:#}");

    let out = run_cli(
        &url,
        &[
            "--tlsca",
            &ca,
            "--tlscert",
            &cert,
            "--tlskey",
            &key,
            "submit",
            "--task",
            "text.transform",
            "--input",
            r#"{"text":"n","op":"upper"}"#,
            "--id",
            "mtls-cli",
            "--wait",
            "--json",
        ],
    )
    .await;
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(out.json()["output"]["text"], "N", "{out}");
    fleet.assert_running();
}
