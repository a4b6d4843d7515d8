//! How to reach NATS: the `nats` CLI's connection flags, its contexts, and the connection.
//!
//! The flags and variables are natscli's (`-s/--server` with `NATS_URL`, `--creds`, `--user`,
//! `--password`, `--nkey` a seed file, `--tlscert`, `--tlskey`, `--tlsca`, `--context`), so a
//! user's `nats` habits and environment carry over. The fleet's older names (`--nats-url`,
//! `--nats-user`, …) stay as hidden aliases. A context fills in what no flag or variable sets,
//! key by key.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use clap::Args;
use secrecy::{ExposeSecret, SecretString};

use super::{
    DEFAULT_NATS_URL, DEFAULT_PREFIX, DEFAULT_RESULT_TTL,
    context::{self, NatsContext},
    parse_duration, parse_prefix, parse_secret,
};
use crate::Error;

/// The first wait between two connection attempts of a service.
const CONNECT_RETRY_MIN: Duration = Duration::from_millis(100);

/// The longest wait between two connection attempts of a service.
const CONNECT_RETRY_MAX: Duration = Duration::from_secs(2);

/// How often a service still waiting for NATS says so.
const CONNECT_WARN_EVERY: Duration = Duration::from_secs(30);

/// How to reach NATS, and which fleet on it.
#[derive(Debug, Clone, Args)]
pub struct NatsArgs {
    /// NATS servers, comma-separated (nats://host:port or tls://host:port)
    /// [default: nats://127.0.0.1:4222].
    #[arg(
        short = 's',
        long = "server",
        alias = "nats-url",
        env = "NATS_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub nats_url: Option<String>,

    /// Credentials (.creds) file with the user JWT and NKey seed.
    #[arg(
        long = "creds",
        alias = "nats-creds",
        env = "NATS_CREDS",
        value_name = "FILE"
    )]
    pub nats_creds: Option<PathBuf>,

    /// User name, with --password.
    #[arg(long = "user", alias = "nats-user", env = "NATS_USER")]
    pub nats_user: Option<String>,

    /// Password, with --user.
    #[arg(long = "password", alias = "nats-password", env = "NATS_PASSWORD", value_parser = parse_secret, hide_env_values = true)]
    pub nats_password: Option<SecretString>,

    /// Authentication token.
    #[arg(long = "token", alias = "nats-token", env = "NATS_TOKEN", value_parser = parse_secret, hide_env_values = true)]
    pub nats_token: Option<SecretString>,

    /// NKey seed file (holding a user seed, SU…), as the nats CLI reads it.
    #[arg(long = "nkey", alias = "nats-nkey", env = "NATS_NKEY", value_name = "FILE", value_parser = parse_secret, hide_env_values = true)]
    pub nats_nkey: Option<SecretString>,

    /// Client certificate (PEM) for TLS client authentication, with --tlskey.
    #[arg(long = "tlscert", env = "NATS_CERT", value_name = "FILE")]
    pub nats_cert: Option<PathBuf>,

    /// Private key (PEM) of the client certificate, with --tlscert.
    #[arg(long = "tlskey", env = "NATS_KEY", value_name = "FILE")]
    pub nats_key: Option<PathBuf>,

    /// Certificate authority (PEM) that signed the servers' TLS certificates; setting it
    /// requires TLS.
    #[arg(
        long = "tlsca",
        alias = "nats-ca",
        env = "NATS_CA",
        value_name = "FILE"
    )]
    pub nats_ca: Option<PathBuf>,

    /// A nats CLI context by name (`nats context ls`): its settings apply where no flag or
    /// variable sets one.
    #[arg(long = "context", env = "NATS_CONTEXT", value_name = "NAME")]
    pub context: Option<String>,

    /// Prefix of this connection's reply subjects (default `_INBOX`), as the nats CLI's
    /// --inbox-prefix: a NATS user allowed only its own inbox (`_INBOX_<user>.>`) needs it.
    #[arg(long = "inbox-prefix", env = "NATS_INBOX_PREFIX", value_name = "PREFIX", value_parser = parse_inbox_prefix)]
    pub inbox_prefix: Option<String>,

    /// Prefix of every subject, stream and bucket, so several fleets can share one account.
    #[arg(long, env = "FLEET_PREFIX", default_value = DEFAULT_PREFIX, value_parser = parse_prefix)]
    pub prefix: String,

    /// Replicas of every stream and bucket the fleet creates (3 on a 3-node NATS cluster).
    #[arg(long, env = "FLEET_STREAM_REPLICAS", default_value_t = 1)]
    pub stream_replicas: usize,

    /// How long results (and so id deduplication) are kept.
    #[arg(long, env = "FLEET_RESULT_TTL", default_value = DEFAULT_RESULT_TTL, value_parser = parse_duration)]
    pub result_ttl: Duration,
}

/// The settings of one connection, the context merged in: what [`NatsArgs::connect`] uses.
struct Login {
    /// Servers, comma-separated.
    url: String,
    /// A credentials file.
    creds: Option<PathBuf>,
    /// User and password.
    user: Option<String>,
    /// The password.
    password: Option<SecretString>,
    /// A token.
    token: Option<SecretString>,
    /// A seed file (or, as the fleet once took it, the seed itself).
    nkey: Option<SecretString>,
    /// Client certificate.
    cert: Option<PathBuf>,
    /// Its key.
    key: Option<PathBuf>,
    /// The servers' certificate authority.
    ca: Option<PathBuf>,
    /// The prefix of reply subjects.
    inbox_prefix: Option<String>,
}

// === impl NatsArgs ===

impl NatsArgs {
    /// The servers to connect to: the flag or `NATS_URL`, else the context's, else the default.
    ///
    /// Credentials written into the URL (`user:password@`) are part of it: show it only
    /// through [`redact_url`].
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when the context named by `--context` cannot be used.
    pub fn servers(&self) -> Result<String, Error> {
        Ok(self.login()?.url)
    }

    /// Uses the context that `nats context select` chose when none is named, as the nats CLI
    /// does. Only the `fleet` client does this: services take a context only when told.
    pub fn or_selected_context(mut self) -> Self {
        if self.context.is_none() {
            self.context = context::selected_context();
        }
        self
    }

    /// The flags and variables, with the context filling in what they leave unset.
    fn login(&self) -> Result<Login, Error> {
        let ctx = match &self.context {
            Some(name) => context::load(name)?,
            None => NatsContext::default(),
        };
        if let Some(name) = &self.context {
            tracing::debug!(context = %name, "using the nats context");
        }
        Ok(Login {
            url: self
                .nats_url
                .clone()
                .or(ctx.url)
                .unwrap_or_else(|| DEFAULT_NATS_URL.to_owned()),
            creds: self.nats_creds.clone().or(ctx.creds),
            user: self.nats_user.clone().or(ctx.user),
            password: self.nats_password.clone().or(ctx.password),
            token: self.nats_token.clone().or(ctx.token),
            nkey: self.nats_nkey.clone().or_else(|| {
                ctx.nkey
                    .map(|p| SecretString::from(p.to_string_lossy().into_owned()))
            }),
            cert: self.nats_cert.clone().or(ctx.cert),
            key: self.nats_key.clone().or(ctx.key),
            ca: self.nats_ca.clone().or(ctx.ca),
            inbox_prefix: self.inbox_prefix.clone().or(ctx.inbox_prefix),
        })
    }

    /// Connects to NATS with the configured authentication.
    ///
    /// Services pass `retry = true`: while no server answers they keep trying (and say so every
    /// 30 s), which is what a pod that starts before its NATS server needs. A failure that
    /// another try cannot mend (TLS: an unknown CA, a missing or refused client certificate;
    /// refused credentials; a malformed server list) ends the wait at once, with a hint, so a
    /// misconfigured pod exits instead of hanging. The `fleet` client passes `false` and fails
    /// at the first error, so a user sees "cannot reach NATS" instead of a hang.
    ///
    /// Credentials written into the URL are taken out of it before async-nats sees it: its debug
    /// log shows the server addresses.
    ///
    /// # Errors
    ///
    /// [`Error::Connect`] when no server answers (without `retry`) or the failure is permanent,
    /// [`Error::Credentials`] when the credentials file cannot be read, [`Error::Config`] when
    /// the context, the seed file or a TLS file cannot be used. No message shows a secret.
    ///
    /// ```no_run
    /// # async fn f(args: fleet_common::config::NatsArgs) -> Result<(), fleet_common::Error> {
    /// let client = args.connect("fleet-dispatcher", true).await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect(&self, name: &str, retry: bool) -> Result<async_nats::Client, Error> {
        let login = self.login()?;
        // async-nats builds its TLS configuration on rustls' process-wide provider. The
        // workspace compiles one provider, aws-lc-rs (reqwest's, tonic's and async-nats' TLS all
        // use it), so rustls would pick it by itself; installing it says so, and keeps TLS
        // working should a dependency ever bring a second provider (rustls then panics rather
        // than choose). A provider installed earlier stays.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let servers = without_userinfo(&login.url);
        // A comma-separated list is several servers: async-nats reads a `&str` as one URL.
        let addrs = servers
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<async_nats::ServerAddr>().map_err(|e| {
                    Error::Config(format!("NATS server `{}` is not a URL: {e}", redact_url(s)))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut delay = CONNECT_RETRY_MIN;
        let mut warned: Option<Instant> = None;
        loop {
            let opts = Self::options(&login, name).await?;
            let source = match opts.connect(addrs.as_slice()).await {
                Ok(client) => return Ok(client),
                Err(e) => e,
            };
            let failure = Failure::of(&source);
            if !retry || failure.permanent {
                return Err(Error::Connect {
                    url: redact_url(&login.url),
                    hint: failure.hint,
                    source,
                });
            }
            if warned.is_none_or(|at| at.elapsed() >= CONNECT_WARN_EVERY) {
                tracing::warn!(url = %redact_url(&login.url), error = %source, "cannot reach NATS yet; retrying");
                warned = Some(Instant::now());
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(CONNECT_RETRY_MAX);
        }
    }

    /// The connection options of `login`: authentication, TLS, inbox prefix.
    async fn options(login: &Login, name: &str) -> Result<async_nats::ConnectOptions, Error> {
        let mut opts = async_nats::ConnectOptions::new()
            .name(name)
            .connection_timeout(Duration::from_secs(5))
            .request_timeout(Some(Duration::from_secs(10)))
            .event_callback(|event| async move {
                match event {
                    async_nats::Event::Disconnected => tracing::warn!("disconnected from NATS"),
                    async_nats::Event::Connected => tracing::info!("connected to NATS"),
                    // A permissions violation: the call it refused only times out, so say why.
                    async_nats::Event::ServerError(e) => {
                        tracing::warn!(error = %e, "the NATS server refused something");
                    }
                    other => tracing::debug!(event = %other, "NATS event"),
                }
            });
        if let Some(prefix) = &login.inbox_prefix {
            opts = opts.custom_inbox_prefix(prefix);
        }
        if let Some(path) = &login.creds {
            opts = opts
                .credentials_file(path)
                .await
                .map_err(|source| Error::Credentials {
                    path: path.display().to_string(),
                    source,
                })?;
        }
        match (&login.user, &login.password) {
            (Some(user), Some(pass)) => {
                opts = opts.user_and_password(user.clone(), pass.expose_secret().to_owned());
            }
            (Some(_), None) => {
                return Err(Error::Config(
                    "--user (NATS_USER) needs --password (NATS_PASSWORD)".into(),
                ));
            }
            (None, Some(_)) => {
                return Err(Error::Config(
                    "--password (NATS_PASSWORD) needs --user (NATS_USER)".into(),
                ));
            }
            (None, None) => {}
        }
        if let Some(token) = &login.token {
            opts = opts.token(token.expose_secret().to_owned());
        }
        if let Some(nkey) = &login.nkey {
            opts = opts.nkey(read_seed(nkey)?);
        }
        // async-nats does not log in with credentials written into the URL; take them from the
        // first server's `user:password@` or `token@` when no setting gives any.
        let explicit = login.creds.is_some()
            || login.user.is_some()
            || login.token.is_some()
            || login.nkey.is_some();
        if !explicit && let Some((user, pass)) = url_credentials(&login.url) {
            opts = match pass {
                Some(pass) => opts.user_and_password(user, pass),
                None => opts.token(user),
            };
        }
        match (&login.cert, &login.key) {
            (Some(cert), Some(key)) => {
                readable("client certificate (--tlscert, NATS_CERT)", cert)?;
                readable("client key (--tlskey, NATS_KEY)", key)?;
                opts = opts
                    .add_client_certificate(cert.clone(), key.clone())
                    .require_tls(true);
            }
            (None, None) => {}
            _ => {
                return Err(Error::Config(
                    "--tlscert (NATS_CERT) and --tlskey (NATS_KEY) go together".into(),
                ));
            }
        }
        if let Some(ca) = &login.ca {
            readable("certificate authority (--tlsca, NATS_CA)", ca)?;
            opts = opts.add_root_certificates(ca.clone()).require_tls(true);
        }
        Ok(opts)
    }
}

/// Checks an inbox prefix: one or more subject tokens, no wildcards, no spaces.
///
/// # Errors
///
/// Returns a message saying what a prefix may hold.
pub(super) fn parse_inbox_prefix(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.split('.').all(|token| {
            !token.is_empty()
                && !token.contains(['*', '>'])
                && !token.chars().any(|c| c.is_whitespace() || c.is_control())
        });
    if ok {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "`{s}` is not an inbox prefix: use subject tokens such as _INBOX_alice, without \
             wildcards, spaces or a trailing `.`"
        ))
    }
}

/// Checks that a TLS file can be read, so a wrong path is named at once rather than retried.
fn readable(what: &str, path: &Path) -> Result<(), Error> {
    std::fs::File::open(path)
        .map(drop)
        .map_err(|e| Error::Config(format!("cannot read the {what} {}: {e}", path.display())))
}

/// Whether `s` has the shape of an NKey seed (`S` + a type letter + base32, 58 characters).
fn seed_shaped(s: &str) -> bool {
    s.len() == 58
        && s.starts_with('S')
        && s.bytes()
            .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))
}

/// The user seed that `nkey` names: read from the seed file, as the nats CLI does.
///
/// A seed given in place of the file (what `NATS_NKEY` used to hold) is still taken, with a
/// warning. Messages never show a seed, nor a value shaped like one.
fn read_seed(nkey: &SecretString) -> Result<String, Error> {
    let value = nkey.expose_secret().trim();
    if nkeys::KeyPair::from_seed(value).is_ok() {
        tracing::warn!(
            "NATS_NKEY (--nkey) holds a seed; give the path of a seed file instead, as the nats CLI does"
        );
        return Ok(value.to_owned());
    }
    if seed_shaped(value) {
        return Err(Error::Config(
            "--nkey (NATS_NKEY) is neither a seed file nor a valid seed".into(),
        ));
    }
    let path = Path::new(value.strip_prefix("file://").unwrap_or(value));
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::Config(format!(
            "cannot read the NKey seed file {} (--nkey, NATS_NKEY): {e}",
            path.display()
        ))
    })?;
    // A bare seed, or one between `-----BEGIN … NKEY SEED-----` lines as `nk` and nsc write it.
    text.lines()
        .map(str::trim)
        .find(|line| line.starts_with("SU") && nkeys::KeyPair::from_seed(line).is_ok())
        .map(str::to_owned)
        .ok_or_else(|| {
            Error::Config(format!(
                "the NKey seed file {} holds no user seed (SU…)",
                path.display()
            ))
        })
}

/// The `user:password@` (or `token@`) of the first server URL, percent-decoded.
fn url_credentials(urls: &str) -> Option<(String, Option<String>)> {
    let first = urls.split(',').next()?.trim();
    let with_scheme = if first.contains("://") {
        first.to_owned()
    } else {
        format!("nats://{first}")
    };
    let url = url::Url::parse(&with_scheme).ok()?;
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    if url.username().is_empty() {
        return None;
    }
    Some((decode(url.username()), url.password().map(decode)))
}

/// Removes any `user:password@` part from a server list before it is shown.
pub fn redact_url(urls: &str) -> String {
    urls.split(',')
        .map(|u| match (u.find("://"), u.rfind('@')) {
            (Some(s), Some(at)) if at > s => format!("{}://***@{}", &u[..s], &u[at + 1..]),
            (None, Some(at)) => format!("***@{}", &u[at + 1..]),
            _ => u.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The server list without any `user:password@` or `token@`: what async-nats is given, so that
/// its logs (which show server addresses) never hold a credential. The credentials themselves
/// reach it as options (see [`url_credentials`]).
fn without_userinfo(urls: &str) -> String {
    urls.split(',')
        .map(|u| {
            let u = u.trim();
            match (u.find("://"), u.rfind('@')) {
                (Some(s), Some(at)) if at > s => format!("{}://{}", &u[..s], &u[at + 1..]),
                (None, Some(at)) => u[at + 1..].to_owned(),
                _ => u.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// What a failed connection attempt means: whether another try could succeed, and what to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Failure {
    /// Another try cannot mend it (TLS, credentials, a malformed server list).
    permanent: bool,
    /// What to check, appended to the error (empty when there is nothing to add).
    hint: &'static str,
}

// === impl Failure ===

impl Failure {
    /// No server answered (yet): worth another try.
    const TRANSIENT: Self = Self {
        permanent: false,
        hint: "",
    };

    /// Reads async-nats' error, and the rustls error under it when TLS failed: async-nats
    /// reports a failed handshake or a server's TLS alert as an I/O error.
    fn of(e: &async_nats::ConnectError) -> Self {
        use async_nats::ConnectErrorKind as Kind;
        let permanent = |hint| Self {
            permanent: true,
            hint,
        };
        match e.kind() {
            Kind::Authentication | Kind::AuthorizationViolation => permanent(
                " (the server refused the credentials: check --creds, --user/--password, \
                 --token, --nkey or the URL's user:password@)",
            ),
            Kind::ServerParse => permanent(" (check the server list: --server, NATS_URL)"),
            Kind::Tls => permanent(
                " (check the TLS files: --tlsca (NATS_CA), --tlscert (NATS_CERT), --tlskey \
                 (NATS_KEY) must be PEM)",
            ),
            Kind::Io | Kind::TimedOut | Kind::Dns | Kind::MaxReconnects => {
                rustls_error(e).map_or(Self::TRANSIENT, |tls| permanent(tls_hint(tls)))
            }
        }
    }
}

/// The rustls error somewhere under `e`, if TLS is what failed.
fn rustls_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut current = Some(e);
    while let Some(err) = current {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        // An io::Error's source() skips the error it wraps: look at that one first.
        if let Some(tls) = err
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(tls);
        }
        current = err.source();
    }
    None
}

/// What to check when TLS failed with `e`.
fn tls_hint(e: &rustls::Error) -> &'static str {
    use rustls::{AlertDescription as Alert, CertificateError as Cert, Error as Tls};
    match e {
        Tls::InvalidCertificate(Cert::UnknownIssuer | Cert::BadSignature) => {
            " (the server's certificate is not signed by a CA this process trusts: give that CA \
             with --tlsca or NATS_CA)"
        }
        Tls::InvalidCertificate(Cert::NotValidForName | Cert::NotValidForNameContext { .. }) => {
            " (the server's certificate does not name the host in the server URL: connect by a \
             name or address it lists)"
        }
        Tls::InvalidCertificate(Cert::Expired | Cert::ExpiredContext { .. }) => {
            " (the server's certificate has expired)"
        }
        Tls::AlertReceived(Alert::CertificateRequired) => {
            " (the server asks for a client certificate: give one with --tlscert and --tlskey, \
             or NATS_CERT and NATS_KEY)"
        }
        Tls::AlertReceived(
            Alert::BadCertificate | Alert::UnknownCA | Alert::CertificateUnknown,
        ) => {
            " (the server refused the client certificate, or wants one: give one signed by a CA \
             it trusts, for client authentication, with --tlscert and --tlskey or NATS_CERT and \
             NATS_KEY)"
        }
        _ => {
            " (TLS failed: check --tlsca (NATS_CA), --tlscert (NATS_CERT) and --tlskey \
             (NATS_KEY) against the server's TLS settings)"
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        nats: NatsArgs,
    }

    #[test]
    fn natscli_names_and_the_old_ones_parse() {
        let cli = Cli::try_parse_from([
            "t",
            "-s",
            "nats://h:1",
            "--creds",
            "/c.creds",
            "--tlscert",
            "/c.pem",
            "--tlskey",
            "/k.pem",
            "--tlsca",
            "/ca.pem",
            "--context",
            "dev",
        ])
        .expect("natscli flags");
        assert_eq!(cli.nats.nats_url.as_deref(), Some("nats://h:1"));
        assert_eq!(cli.nats.nats_cert, Some(PathBuf::from("/c.pem")));
        assert_eq!(cli.nats.context.as_deref(), Some("dev"));
        let old = Cli::try_parse_from(["t", "--nats-url", "nats://o:2", "--nats-user", "u"])
            .expect("the old names");
        assert_eq!(old.nats.nats_url.as_deref(), Some("nats://o:2"));
        assert_eq!(old.nats.nats_user.as_deref(), Some("u"));
    }

    #[test]
    fn the_default_server_is_local() {
        let cli = Cli::try_parse_from(["t"]).expect("no flags");
        if std::env::var_os("NATS_URL").is_none() && std::env::var_os("NATS_CONTEXT").is_none() {
            assert_eq!(cli.nats.servers().ok().as_deref(), Some(DEFAULT_NATS_URL));
        }
    }

    #[test]
    fn seeds_are_read_from_files_and_never_shown() {
        let pair = nkeys::KeyPair::new_user();
        let seed = pair.seed().expect("a seed");
        let dir = std::env::temp_dir().join(format!("fleet-nkey-{}", nuid::next()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let plain = dir.join("plain.nk");
        std::fs::write(&plain, format!("{seed}\n")).expect("write");
        let decorated = dir.join("decorated.nk");
        std::fs::write(
            &decorated,
            format!("-----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"),
        )
        .expect("write");
        for file in [&plain, &decorated] {
            let given = SecretString::from(file.display().to_string());
            assert_eq!(read_seed(&given).ok().as_deref(), Some(seed.as_str()));
        }
        // The seed itself, as NATS_NKEY once held it, still works.
        assert_eq!(
            read_seed(&SecretString::from(seed.clone())).ok().as_deref(),
            Some(seed.as_str())
        );
        // A damaged seed is not taken for a path and not shown.
        let mut damaged = seed.clone();
        damaged.replace_range(10..12, "22");
        if nkeys::KeyPair::from_seed(&damaged).is_err() {
            let err = read_seed(&SecretString::from(damaged.clone())).expect_err("damaged");
            assert!(!err.to_string().contains(&damaged[4..]), "{err}");
        }
        let empty = dir.join("empty.nk");
        std::fs::write(&empty, "nothing here\n").expect("write");
        assert!(read_seed(&SecretString::from(empty.display().to_string())).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn url_credentials_are_read() {
        assert_eq!(
            url_credentials("nats://u:p%40ss@h:4222,nats://h2"),
            Some(("u".into(), Some("p@ss".into())))
        );
        assert_eq!(
            url_credentials("nats://tok@h:4222"),
            Some(("tok".into(), None))
        );
        assert_eq!(url_credentials("nats://h:4222"), None);
    }

    #[test]
    fn inbox_prefixes_are_subject_tokens() {
        assert!(parse_inbox_prefix("_INBOX_client").is_ok());
        assert!(parse_inbox_prefix("_I.client-a").is_ok());
        for bad in ["", "_INBOX.", "a.>", "a b", "*"] {
            assert!(parse_inbox_prefix(bad).is_err(), "{bad:?}");
        }
        let cli = Cli::try_parse_from(["t", "--inbox-prefix", "_INBOX_w"]).expect("a prefix");
        assert_eq!(cli.nats.inbox_prefix.as_deref(), Some("_INBOX_w"));
    }

    #[test]
    fn async_nats_gets_the_servers_without_credentials() {
        assert_eq!(
            without_userinfo("nats://u:p%40ss@h:4222, tls://tok@h2:4443,h3:4222,x:y@h4"),
            "nats://h:4222,tls://h2:4443,h3:4222,h4"
        );
    }

    #[test]
    fn tls_and_credential_failures_are_permanent_and_say_what_to_check() {
        use async_nats::{ConnectError, ConnectErrorKind as Kind};
        let tls = |e: rustls::Error| {
            Failure::of(&ConnectError::with_source(
                Kind::Io,
                std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            ))
        };
        let no_cert = tls(rustls::Error::AlertReceived(
            rustls::AlertDescription::CertificateRequired,
        ));
        assert!(no_cert.permanent);
        assert!(no_cert.hint.contains("NATS_CERT"), "{}", no_cert.hint);
        let unknown_ca = tls(rustls::Error::InvalidCertificate(
            rustls::CertificateError::UnknownIssuer,
        ));
        assert!(unknown_ca.permanent);
        assert!(unknown_ca.hint.contains("NATS_CA"), "{}", unknown_ca.hint);
        let refused = Failure::of(&ConnectError::with_source(
            Kind::Io,
            std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        ));
        assert_eq!(refused, Failure::TRANSIENT);
        assert_eq!(
            Failure::of(&ConnectError::new(Kind::TimedOut)),
            Failure::TRANSIENT
        );
        assert!(Failure::of(&ConnectError::new(Kind::AuthorizationViolation)).permanent);
    }

    #[test]
    fn urls_lose_their_passwords() {
        assert_eq!(
            redact_url("nats://u:p@h:4222,nats://h2:4222"),
            "nats://***@h:4222,nats://h2:4222"
        );
    }
}
