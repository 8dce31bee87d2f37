//! The Kubernetes zone provider: the zone labels of the node the pod runs on, read through the
//! API server with the pod's service account. On EKS this is what works when IMDS does not
//! answer pods (the default hop limit of 1), and on every managed Kubernetes it is the zone the
//! scheduler itself uses.
//!
//! ```text
//!  NODE_NAME (downward API: spec.nodeName) ──┐
//!  KUBERNETES_SERVICE_HOST/PORT ─────────────┼─> GET https://<api>/api/v1/nodes/<node>
//!  service account token + CA ───────────────┘     Authorization: Bearer <token>
//!      metadata.labels["topology.k8s.aws/zone-id"]   -> zone id (EKS)
//!      metadata.labels["topology.kubernetes.io/zone"] -> zone name
//! ```

use std::path::PathBuf;
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use super::http::{error_chain, fetch_text, tls_config};
use super::provider::ZoneProvider;
use super::{DiscoveryConfig, Env, ProbeError, Zone};

/// The variable the manifests fill from `spec.nodeName` (the downward API).
pub const NODE_NAME_ENV: &str = "NODE_NAME";
/// Set by the kubelet in every pod.
pub const SERVICE_HOST_ENV: &str = "KUBERNETES_SERVICE_HOST";
/// Set by the kubelet in every pod.
pub const SERVICE_PORT_ENV: &str = "KUBERNETES_SERVICE_PORT";
/// Where the kubelet mounts the service account token.
pub const DEFAULT_TOKEN_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";
/// Where the kubelet mounts the cluster CA.
pub const DEFAULT_CA_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt";
/// The zone id label EKS puts on nodes.
pub const ZONE_ID_LABEL: &str = "topology.k8s.aws/zone-id";
/// The well-known zone label every cloud's Kubernetes sets.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
/// The deprecated zone label older clusters still carry.
pub const LEGACY_ZONE_LABEL: &str = "failure-domain.beta.kubernetes.io/zone";

/// The node's zone labels through the Kubernetes API server (pods).
pub(crate) struct Kubernetes;

impl ZoneProvider for Kubernetes {
    /// Asks the API server for the node's zone labels.
    async fn probe(&self, config: &DiscoveryConfig, env: &Env, timeout: Duration) -> Result<Zone, ProbeError> {
        let node =
            config.kubernetes_node.clone().or_else(|| env.var(NODE_NAME_ENV)).ok_or(ProbeError::Disabled(
                "NODE_NAME being unset (set it from spec.nodeName with the downward API)",
            ))?;
        let api = match &config.kubernetes_api {
            Some(api) => api.trim_end_matches('/').to_owned(),
            None => {
                let host =
                    env.var(SERVICE_HOST_ENV).ok_or(ProbeError::Disabled("KUBERNETES_SERVICE_HOST being unset"))?;
                let port = env.var(SERVICE_PORT_ENV).unwrap_or_else(|| "443".into());
                let host = if host.contains(':') { format!("[{host}]") } else { host };
                format!("https://{host}:{port}")
            }
        };
        let url = format!("{api}/api/v1/nodes/{node}");
        let token_file = config.kubernetes_token_file.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_TOKEN_FILE));
        let token = std::fs::read_to_string(&token_file).map_err(|e| ProbeError::Http {
            url: url.clone(),
            reason: format!("reading the service account token {}: {e}", token_file.display()),
        })?;
        let ca_file = config.kubernetes_ca_file.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_CA_FILE));
        let client = client(&url, &ca_file, timeout)?;
        let body = fetch_text(client.get(&url).bearer_auth(token.trim()), &url).await?;
        parse_node(&body).map_err(|reason| ProbeError::Malformed { url, reason })
    }
}

/// An HTTPS client that trusts only the cluster CA (plain HTTP for an `http://` API, as a local
/// proxy such as `kubectl proxy` serves).
fn client(url: &str, ca_file: &std::path::Path, timeout: Duration) -> Result<reqwest::Client, ProbeError> {
    let err = |reason: String| ProbeError::Http { url: url.to_owned(), reason };
    let builder = reqwest::Client::builder().connect_timeout(timeout).timeout(timeout).no_proxy();
    let builder = if url.starts_with("https://") {
        let mut roots = rustls::RootCertStore::empty();
        let certs = CertificateDer::pem_file_iter(ca_file)
            .map_err(|e| err(format!("reading the cluster CA {}: {e}", ca_file.display())))?;
        for cert in certs {
            let cert = cert.map_err(|e| err(format!("reading the cluster CA {}: {e}", ca_file.display())))?;
            roots.add(cert).map_err(|e| err(format!("cluster CA {}: {e}", ca_file.display())))?;
        }
        builder.use_preconfigured_tls(tls_config(roots).map_err(|e| err(e.to_string()))?)
    } else {
        builder
    };
    builder.build().map_err(|e| err(error_chain(&e)))
}

/// The zone of a Node object: the EKS zone id label and the well-known zone label (or its
/// deprecated form).
pub fn parse_node(body: &str) -> Result<Zone, String> {
    let node: serde_json::Value = serde_json::from_str(body).map_err(|e| format!("not a Node object: {e}"))?;
    let labels = &node["metadata"]["labels"];
    let label = |k: &str| labels[k].as_str().map(str::trim).filter(|v| !v.is_empty()).map(str::to_owned);
    let zone = Zone { id: label(ZONE_ID_LABEL), name: label(ZONE_LABEL).or_else(|| label(LEGACY_ZONE_LABEL)) };
    if zone.id.is_none() && zone.name.is_none() {
        return Err(format!("the node has neither {ZONE_ID_LABEL} nor {ZONE_LABEL}"));
    }
    Ok(zone)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_labels_give_id_and_name() {
        let body = r#"{"kind":"Node","metadata":{"name":"n1","labels":{
            "topology.k8s.aws/zone-id":"use1-az2","topology.kubernetes.io/zone":"us-east-1b"}}}"#;
        assert_eq!(parse_node(body), Ok(Zone { id: Some("use1-az2".into()), name: Some("us-east-1b".into()) }));
        let gke = r#"{"metadata":{"labels":{"failure-domain.beta.kubernetes.io/zone":"europe-west1-b"}}}"#;
        assert_eq!(parse_node(gke), Ok(Zone { id: None, name: Some("europe-west1-b".into()) }));
        assert!(parse_node(r#"{"metadata":{"labels":{}}}"#).is_err());
        assert!(parse_node("<html>").is_err());
    }
}
