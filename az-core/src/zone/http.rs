//! The HTTP pieces the providers share: a client for plain-HTTP metadata services, the TLS
//! configuration every client here is built on, one GET read as text, and error messages that
//! keep the whole chain of causes.

use std::sync::Arc;
use std::time::Duration;

use super::ProbeError;

/// A client for a link-local metadata service, every request bounded by `timeout`.
pub(super) fn http_client(timeout: Duration) -> Result<reqwest::Client, ProbeError> {
    // Metadata services speak plain HTTP; the TLS configuration only has to exist (reqwest would
    // otherwise look for a process-wide crypto provider).
    let tls = tls_config(rustls::RootCertStore::empty())
        .map_err(|e| ProbeError::Http { url: String::new(), reason: e.to_string() })?;
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .connect_timeout(timeout)
        .timeout(timeout)
        // Metadata services are link-local; a proxy from the environment would only break them.
        .no_proxy()
        .build()
        .map_err(|e| ProbeError::Http { url: String::new(), reason: e.to_string() })
}

/// A TLS client configuration trusting `roots`, on the same crypto provider (aws-lc-rs) as the
/// rest of the process, so nothing depends on a process-wide default provider.
pub(super) fn tls_config(roots: rustls::RootCertStore) -> Result<rustls::ClientConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The endpoint without a trailing `/`, with `http://` in front when it names no scheme (as
/// `GCE_METADATA_HOST` does: Google's libraries take a bare `host:port`).
pub(super) fn with_scheme(endpoint: &str) -> String {
    let endpoint = endpoint.trim_end_matches('/');
    if endpoint.contains("://") { endpoint.to_owned() } else { format!("http://{endpoint}") }
}

/// Sends `request` and reads the body of a successful answer; any other status is an error.
pub(super) async fn fetch_text(request: reqwest::RequestBuilder, url: &str) -> Result<String, ProbeError> {
    let http_err = |e: reqwest::Error| ProbeError::Http { url: url.to_owned(), reason: error_chain(&e) };
    let response = request.send().await.map_err(http_err)?;
    let status = response.status();
    if !status.is_success() {
        return Err(ProbeError::Http { url: url.to_owned(), reason: format!("HTTP {status}") });
    }
    response.text().await.map_err(http_err)
}

/// An error and all its sources, joined by `: `, because HTTP clients put the useful part
/// (connection refused, timed out) several sources deep.
pub(super) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
