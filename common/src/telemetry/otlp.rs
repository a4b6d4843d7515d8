//! Where spans are exported, read as the OTLP exporter specification says, and the exporter.
//!
//! - `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` wins over `OTEL_EXPORTER_OTLP_ENDPOINT` and is used as
//!   is. The generic endpoint is a base URL: for HTTP `/v1/traces` is appended to it, for gRPC it
//!   is used as is. Neither set: nothing is exported.
//! - `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL` wins over `OTEL_EXPORTER_OTLP_PROTOCOL`: `grpc` or
//!   `http/protobuf`.
//! - An `https://` endpoint (or a gRPC endpoint with no scheme, unless
//!   `OTEL_EXPORTER_OTLP_[TRACES_]INSECURE=true`) is reached over TLS, verified against the
//!   system's roots plus `OTEL_EXPORTER_OTLP_[TRACES_]CERTIFICATE` when set, with the client
//!   certificate `OTEL_EXPORTER_OTLP_[TRACES_]CLIENT_CERTIFICATE` + `..._CLIENT_KEY` when set.
//! - Headers, timeout and compression (`OTEL_EXPORTER_OTLP_HEADERS`, ...) are read by the
//!   exporter itself.
//!
//! The endpoint is resolved here, from the settings and the environment, and handed to the
//! exporter already resolved: that keeps `--otlp-endpoint` working without letting it hide
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`.

use crate::{Error, config::OtlpArgs};

/// The trace exporter's wire protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Protocol {
    /// OTLP/gRPC.
    Grpc,
    /// OTLP/HTTP with protobuf bodies.
    HttpProtobuf,
}

/// Where and how spans are exported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Target {
    /// The wire protocol.
    pub(super) protocol: Protocol,
    /// The full endpoint, as the exporter is to use it.
    pub(super) endpoint: String,
    /// Whether the connection is TLS.
    pub(super) tls: bool,
    /// A PEM file of extra trusted CA certificates.
    pub(super) certificate: Option<String>,
    /// PEM files of the client certificate and its key, for mutual TLS.
    pub(super) client: Option<(String, String)>,
}

/// Reads the exporter's settings from `args` and the environment through `env` (a variable's
/// value, when set and not empty); `None` when no endpoint is set.
///
/// # Errors
///
/// [`Error::Telemetry`] for a protocol this build cannot speak.
pub(super) fn resolve(
    args: &OtlpArgs,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<Target>, Error> {
    let signal = |name: &str| {
        env(&format!("OTEL_EXPORTER_OTLP_TRACES_{name}"))
            .or_else(|| env(&format!("OTEL_EXPORTER_OTLP_{name}")))
    };
    let protocol = match env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        .unwrap_or_else(|| args.otlp_protocol.clone())
        .as_str()
    {
        "grpc" | "" => Protocol::Grpc,
        "http/protobuf" | "http" => Protocol::HttpProtobuf,
        other => {
            return Err(Error::Telemetry(format!(
                "OTLP protocol `{other}` is not supported: use grpc or http/protobuf"
            )));
        }
    };
    let generic = args.otlp_endpoint.clone().filter(|e| !e.is_empty());
    let endpoint = match (env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"), generic) {
        (Some(traces), _) => traces,
        (None, Some(base)) if protocol == Protocol::HttpProtobuf => {
            format!("{}/v1/traces", base.trim_end_matches('/'))
        }
        (None, Some(base)) => base,
        (None, None) => return Ok(None),
    };
    let insecure = signal("INSECURE").is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let tls = endpoint.starts_with("https://")
        || (protocol == Protocol::Grpc && !endpoint.contains("://") && !insecure);
    let client = signal("CLIENT_CERTIFICATE").zip(signal("CLIENT_KEY"));
    Ok(Some(Target {
        protocol,
        endpoint,
        tls,
        certificate: signal("CERTIFICATE"),
        client,
    }))
}

/// The environment variable `name`, when set and not empty.
pub(super) fn from_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Reads a PEM file named by an OTLP setting.
#[cfg(feature = "otlp")]
fn read_pem(path: &str) -> Result<Vec<u8>, Error> {
    std::fs::read(path)
        .map_err(|e| Error::Telemetry(format!("cannot read OTLP TLS file {path}: {e}")))
}

/// The span exporter for `target`.
///
/// # Errors
///
/// [`Error::Telemetry`] when a TLS file cannot be read or the exporter refuses the endpoint.
#[cfg(feature = "otlp")]
pub(super) fn exporter(target: &Target) -> Result<opentelemetry_otlp::SpanExporter, Error> {
    use opentelemetry_otlp::{SpanExporter, WithExportConfig, WithHttpConfig, WithTonicConfig};
    let built = match target.protocol {
        Protocol::Grpc => {
            let mut builder = SpanExporter::builder()
                .with_tonic()
                .with_protocol(opentelemetry_otlp::Protocol::Grpc)
                .with_endpoint(&target.endpoint);
            if target.tls {
                builder = builder.with_tls_config(tonic_tls(target)?);
            }
            builder.build()
        }
        Protocol::HttpProtobuf => {
            let mut builder = SpanExporter::builder()
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .with_endpoint(&target.endpoint);
            if target.certificate.is_some() || target.client.is_some() {
                builder = builder.with_http_client(http_client(target)?);
            }
            builder.build()
        }
    };
    built.map_err(|e| Error::Telemetry(e.to_string()))
}

/// gRPC's TLS (rustls on aws-lc-rs, the workspace's one provider): the system's roots, the extra
/// CA and the client certificate.
#[cfg(feature = "otlp")]
fn tonic_tls(
    target: &Target,
) -> Result<opentelemetry_otlp::tonic_types::transport::ClientTlsConfig, Error> {
    use opentelemetry_otlp::tonic_types::transport::{Certificate, ClientTlsConfig, Identity};
    let mut config = ClientTlsConfig::new().with_enabled_roots();
    if let Some(path) = &target.certificate {
        config = config.ca_certificate(Certificate::from_pem(read_pem(path)?));
    }
    if let Some((cert, key)) = &target.client {
        config = config.identity(Identity::from_pem(read_pem(cert)?, read_pem(key)?));
    }
    Ok(config)
}

/// HTTP's client when TLS needs more than the system's roots. Built on its own thread: a
/// blocking client may not be made inside the async runtime.
#[cfg(feature = "otlp")]
fn http_client(target: &Target) -> Result<reqwest::blocking::Client, Error> {
    let mut builder = reqwest::blocking::Client::builder().timeout(EXPORT_TIMEOUT);
    if let Some(path) = &target.certificate {
        for cert in reqwest::Certificate::from_pem_bundle(&read_pem(path)?)
            .map_err(|e| Error::Telemetry(format!("OTLP certificate {path}: {e}")))?
        {
            builder = builder.add_root_certificate(cert);
        }
    }
    if let Some((cert, key)) = &target.client {
        let mut pem = read_pem(cert)?;
        pem.extend(read_pem(key)?);
        let identity = reqwest::Identity::from_pem(&pem)
            .map_err(|e| Error::Telemetry(format!("OTLP client certificate {cert}: {e}")))?;
        builder = builder.identity(identity);
    }
    std::thread::spawn(move || builder.build())
        .join()
        .map_err(|_| Error::Telemetry("building the OTLP HTTP client panicked".into()))?
        .map_err(|e| Error::Telemetry(format!("OTLP HTTP client: {e}")))
}

/// How long one HTTP export may take (the OTLP default, `OTEL_EXPORTER_OTLP_TIMEOUT`).
#[cfg(feature = "otlp")]
const EXPORT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn args(endpoint: Option<&str>, protocol: &str) -> OtlpArgs {
        OtlpArgs {
            otlp_endpoint: endpoint.map(str::to_owned),
            otlp_protocol: protocol.to_owned(),
            service_name: None,
        }
    }

    fn resolve_with(args: &OtlpArgs, vars: &[(&str, &str)]) -> Result<Option<Target>, Error> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        resolve(args, |name| {
            vars.get(name).cloned().filter(|v| !v.is_empty())
        })
    }

    fn endpoint(args: &OtlpArgs, vars: &[(&str, &str)]) -> Option<String> {
        resolve_with(args, vars)
            .expect("a supported protocol")
            .map(|t| t.endpoint)
    }

    #[test]
    fn nothing_is_exported_without_an_endpoint() {
        assert_eq!(endpoint(&args(None, "grpc"), &[]), None);
        assert_eq!(endpoint(&args(Some(""), "grpc"), &[]), None);
    }

    #[test]
    fn the_traces_endpoint_wins_and_is_used_as_is() {
        let base = args(Some("http://generic:4318"), "http/protobuf");
        let vars = [(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "http://traces:4318/custom",
        )];
        assert_eq!(
            endpoint(&base, &vars).as_deref(),
            Some("http://traces:4318/custom")
        );
        let grpc = args(Some("http://generic:4317"), "grpc");
        let vars = [("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://traces:4317")];
        assert_eq!(
            endpoint(&grpc, &vars).as_deref(),
            Some("http://traces:4317")
        );
        // Only the signal-specific endpoint set: spans are exported there.
        assert_eq!(
            endpoint(&args(None, "grpc"), &vars).as_deref(),
            Some("http://traces:4317")
        );
    }

    #[test]
    fn http_appends_the_signal_path_to_the_generic_endpoint() {
        for (base, expected) in [
            ("http://c:4318", "http://c:4318/v1/traces"),
            ("http://c:4318/", "http://c:4318/v1/traces"),
            ("https://c/otlp", "https://c/otlp/v1/traces"),
        ] {
            assert_eq!(
                endpoint(&args(Some(base), "http/protobuf"), &[]).as_deref(),
                Some(expected)
            );
        }
        assert_eq!(
            endpoint(&args(Some("http://c:4317"), "grpc"), &[]).as_deref(),
            Some("http://c:4317"),
            "gRPC has no signal path"
        );
    }

    #[test]
    fn the_traces_protocol_wins() {
        let target = resolve_with(
            &args(Some("http://c:4318"), "grpc"),
            &[("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf")],
        )
        .expect("supported")
        .expect("an endpoint");
        assert_eq!(target.protocol, Protocol::HttpProtobuf);
        assert_eq!(target.endpoint, "http://c:4318/v1/traces");
        let err = resolve_with(&args(Some("http://c:4318"), "http/json"), &[])
            .expect_err("http/json is not built in");
        assert!(err.to_string().contains("http/json"), "{err}");
    }

    #[test]
    fn https_and_schemeless_grpc_are_tls() {
        let tls = |endpoint: &str, protocol: &str, vars: &[(&str, &str)]| {
            resolve_with(&args(Some(endpoint), protocol), vars)
                .expect("supported")
                .expect("an endpoint")
                .tls
        };
        assert!(tls("https://collector.example:4317", "grpc", &[]));
        assert!(tls("https://collector.example", "http/protobuf", &[]));
        assert!(!tls("http://localhost:4317", "grpc", &[]));
        assert!(tls("collector.example:4317", "grpc", &[]));
        assert!(!tls(
            "collector.example:4317",
            "grpc",
            &[("OTEL_EXPORTER_OTLP_INSECURE", "true")]
        ));
        let target = resolve_with(
            &args(Some("https://c:4317"), "grpc"),
            &[
                ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/generic.pem"),
                ("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", "/traces.pem"),
            ],
        )
        .expect("supported")
        .expect("an endpoint");
        assert_eq!(target.certificate.as_deref(), Some("/traces.pem"));
    }

    #[cfg(feature = "otlp")]
    #[tokio::test]
    async fn an_https_collector_can_be_configured() {
        for protocol in ["grpc", "http/protobuf"] {
            let target = resolve_with(&args(Some("https://collector.example"), protocol), &[])
                .expect("supported")
                .expect("an endpoint");
            exporter(&target).unwrap_or_else(|e| panic!("{protocol} over TLS: {e}"));
        }
    }
}
