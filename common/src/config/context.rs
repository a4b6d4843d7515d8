//! `nats` CLI contexts: the named connection settings that natscli keeps on disk.
//!
//! A context `NAME` is the JSON file `nats/context/NAME.json` under `$XDG_CONFIG_HOME` (or
//! `~/.config`), and `nats/context.txt` names the one `nats context select` chose (ADR-8 of the
//! NATS architecture decisions). Every key is present in natscli's files, unset ones as `""`.
//! The fleet reads the keys a connection needs (`url`, `creds`, `user`, `password`, `token`,
//! `nkey`, `cert`, `key`, `ca`, `inbox_prefix`); a context that relies on anything else (an `nsc` reference, a
//! JetStream domain or API prefix, a user JWT, TLS-first) is refused or warned about, never
//! silently half-used.

use std::path::{Path, PathBuf};

use secrecy::SecretString;
use serde::Deserialize;

use crate::Error;

/// The connection settings of one context; `None` where the context sets nothing.
#[derive(Debug, Default)]
pub(super) struct NatsContext {
    /// `url`: servers, comma-separated.
    pub(super) url: Option<String>,
    /// `creds`: a credentials file.
    pub(super) creds: Option<PathBuf>,
    /// `user`.
    pub(super) user: Option<String>,
    /// `password`.
    pub(super) password: Option<SecretString>,
    /// `token`.
    pub(super) token: Option<SecretString>,
    /// `nkey`: a seed file.
    pub(super) nkey: Option<PathBuf>,
    /// `cert`: the client certificate.
    pub(super) cert: Option<PathBuf>,
    /// `key`: the client certificate's key.
    pub(super) key: Option<PathBuf>,
    /// `ca`: the servers' certificate authority.
    pub(super) ca: Option<PathBuf>,
    /// `inbox_prefix`: the prefix of reply subjects.
    pub(super) inbox_prefix: Option<String>,
}

/// The file as natscli writes it. Not `Debug`: it holds the password and token in clear.
#[derive(Default, Deserialize)]
#[serde(default)]
struct ContextFile {
    url: String,
    token: String,
    user: String,
    password: String,
    creds: String,
    nkey: String,
    cert: String,
    key: String,
    ca: String,
    nsc: String,
    user_jwt: String,
    jetstream_domain: String,
    jetstream_api_prefix: String,
    jetstream_event_prefix: String,
    inbox_prefix: String,
    socks_proxy: String,
    tls_first: bool,
}

/// `$XDG_CONFIG_HOME/nats`, else `$HOME/.config/nats`.
pub(super) fn nats_config_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|home| PathBuf::from(home).join(".config"))
        })?;
    Some(base.join("nats"))
}

/// The context `nats context select` chose (`nats/context.txt`), if any.
pub fn selected_context() -> Option<String> {
    selected_in(&nats_config_dir()?)
}

/// The name in `dir/context.txt`, if the file exists and names one.
fn selected_in(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join("context.txt")).ok()?;
    let name = text.trim();
    (!name.is_empty()).then(|| name.to_owned())
}

/// Loads the context `name` from the user's nats configuration directory.
///
/// # Errors
///
/// [`Error::Config`] when the name is not a context name, its file cannot be read or parsed, or
/// it relies on what the fleet cannot do.
pub(super) fn load(name: &str) -> Result<NatsContext, Error> {
    let dir = nats_config_dir().ok_or_else(|| {
        Error::Config(format!(
            "nats context `{name}`: neither XDG_CONFIG_HOME nor HOME is set"
        ))
    })?;
    load_from(&dir, name)
}

/// Loads the context `name` from `dir/context/<name>.json`.
fn load_from(dir: &Path, name: &str) -> Result<NatsContext, Error> {
    if name.is_empty()
        || name.starts_with('.')
        || name.contains(['/', '\\'])
        || name.chars().any(char::is_control)
    {
        return Err(Error::Config(format!(
            "`{name}` is not a nats context name (see `nats context ls`)"
        )));
    }
    let path = dir.join("context").join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).map_err(|e| {
        Error::Config(format!(
            "cannot read nats context `{name}` ({}): {e}",
            path.display()
        ))
    })?;
    // serde_json's message names a line and column, never the text around it.
    let file: ContextFile = serde_json::from_str(&text).map_err(|e| {
        Error::Config(format!(
            "nats context `{name}` ({}) is not a context file: {e}",
            path.display()
        ))
    })?;
    from_file(name, file)
}

/// The settings of a parsed context file.
fn from_file(name: &str, file: ContextFile) -> Result<NatsContext, Error> {
    let set = |s: String| {
        let s = s.trim().to_owned();
        (!s.is_empty()).then_some(s)
    };
    if !file.nsc.trim().is_empty() && file.creds.trim().is_empty() {
        return Err(Error::Config(format!(
            "nats context `{name}` takes its credentials from nsc, which the fleet does not run: \
             set its `creds` to a .creds file (nsc generate creds)"
        )));
    }
    for (key, value) in [
        ("user_jwt", &file.user_jwt),
        ("jetstream_domain", &file.jetstream_domain),
        ("jetstream_api_prefix", &file.jetstream_api_prefix),
        ("jetstream_event_prefix", &file.jetstream_event_prefix),
        ("socks_proxy", &file.socks_proxy),
    ] {
        if !value.trim().is_empty() {
            return Err(Error::Config(format!(
                "nats context `{name}` sets `{key}`, which the fleet does not support"
            )));
        }
    }
    if file.tls_first {
        tracing::warn!(
            context = name,
            "the nats context asks for TLS first; the fleet starts TLS after the server's INFO"
        );
    }
    let path = |key: &str, value: String| -> Result<Option<PathBuf>, Error> {
        set(value).map(|v| file_path(name, key, &v)).transpose()
    };
    Ok(NatsContext {
        url: set(file.url),
        creds: path("creds", file.creds)?,
        user: set(file.user),
        password: set(file.password).map(SecretString::from),
        token: set(file.token).map(SecretString::from),
        nkey: path("nkey", file.nkey)?,
        cert: path("cert", file.cert)?,
        key: path("key", file.key)?,
        ca: path("ca", file.ca)?,
        inbox_prefix: set(file.inbox_prefix)
            .map(|p| {
                super::nats::parse_inbox_prefix(&p)
                    .map_err(|e| Error::Config(format!("nats context `{name}`: {e}")))
            })
            .transpose()?,
    })
}

/// A context's file setting as a path: a bare path or `file://`, with `~/` expanded.
///
/// Other credential URIs (`env://`, `data:`, `op://`, `nsc://`) are refused, naming only the
/// scheme: a `data:` URI holds the secret itself.
fn file_path(context: &str, key: &str, value: &str) -> Result<PathBuf, Error> {
    let value = value.strip_prefix("file://").unwrap_or(value);
    let scheme = value
        .split_once("://")
        .map(|(s, _)| s)
        .or_else(|| value.starts_with("data:").then_some("data"));
    if let Some(scheme) = scheme {
        return Err(Error::Config(format!(
            "nats context `{context}`: its `{key}` is a `{scheme}` URI, which the fleet does not \
             read; give a file path"
        )));
    }
    match value.strip_prefix("~/") {
        Some(rest) => std::env::var_os("HOME")
            .map(|home| PathBuf::from(home).join(rest))
            .ok_or_else(|| {
                Error::Config(format!(
                    "nats context `{context}`: its `{key}` starts with ~ but HOME is not set"
                ))
            }),
        None => Ok(PathBuf::from(value)),
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    /// A fresh directory under the system's temporary directory.
    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "fleet-context-{tag}-{}-{}",
            std::process::id(),
            nuid::next()
        ));
        std::fs::create_dir_all(dir.join("context")).expect("create a temp dir");
        dir
    }

    #[test]
    fn a_natscli_context_file_is_read() {
        let dir = temp_dir("read");
        // As `nats context save` writes it: every key, unset ones empty.
        let text = r#"{
          "description": "dev", "url": "nats://a:4222,nats://b:4222", "socks_proxy": "",
          "token": "", "user": "u", "password": "p", "creds": "", "nkey": "file:///k/seed.nk",
          "cert": "/c/cert.pem", "key": "/c/key.pem", "ca": "", "nsc": "",
          "jetstream_domain": "", "jetstream_api_prefix": "", "jetstream_event_prefix": "",
          "inbox_prefix": "", "user_jwt": "", "color_scheme": "", "tls_first": false,
          "windows_cert_store": "", "windows_cert_match_by": "", "windows_cert_match": "",
          "windows_ca_certs_match": []
        }"#;
        std::fs::write(dir.join("context/dev.json"), text).expect("write");
        std::fs::write(dir.join("context.txt"), "dev\n").expect("write");

        assert_eq!(selected_in(&dir).as_deref(), Some("dev"));
        let ctx = load_from(&dir, "dev").expect("a context");
        assert_eq!(ctx.url.as_deref(), Some("nats://a:4222,nats://b:4222"));
        assert_eq!(ctx.user.as_deref(), Some("u"));
        assert_eq!(
            ctx.password.as_ref().map(|p| p.expose_secret().to_owned()),
            Some("p".into())
        );
        assert!(ctx.token.is_none() && ctx.creds.is_none() && ctx.ca.is_none());
        assert_eq!(ctx.nkey, Some(PathBuf::from("/k/seed.nk")));
        assert_eq!(ctx.cert, Some(PathBuf::from("/c/cert.pem")));
        assert_eq!(ctx.key, Some(PathBuf::from("/c/key.pem")));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn bad_names_and_unsupported_contexts_are_refused() {
        let dir = temp_dir("refuse");
        assert!(load_from(&dir, "../etc/passwd").is_err());
        assert!(load_from(&dir, "").is_err());
        let missing = load_from(&dir, "nope").expect_err("no such file");
        assert!(missing.to_string().contains("nope"), "{missing}");
        std::fs::write(
            dir.join("context/js.json"),
            r#"{"jetstream_domain": "hub"}"#,
        )
        .expect("write");
        assert!(load_from(&dir, "js").is_err());
        std::fs::write(dir.join("context/nsc.json"), r#"{"nsc": "nsc://op/acc/u"}"#)
            .expect("write");
        assert!(load_from(&dir, "nsc").is_err());
        std::fs::write(
            dir.join("context/data.json"),
            r#"{"nkey": "data:;base64,U1VBQ1NFQ1JFVA=="}"#,
        )
        .expect("write");
        let err = load_from(&dir, "data").expect_err("a data: URI");
        assert!(!err.to_string().contains("U1VB"), "no secret shows: {err}");
        assert!(selected_in(&dir).is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
