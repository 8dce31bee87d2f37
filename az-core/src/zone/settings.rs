//! How to discover the zone and match racks: the `[zone]` section of both programs'
//! configuration. Discovery reads the same struct under the name [`DiscoveryConfig`], so the two
//! cannot drift apart; the fields only the programs use (`aliases`, `retry-secs`) are ignored by
//! discovery.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{Provider, ZoneMatcher};

/// Zone settings as programs configure them (kebab-case keys, unknown keys rejected).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct ZoneSettings {
    /// Explicit zone (AZ id or name); skips metadata discovery. `ZONAL_ZONE` does the same.
    pub zone: Option<String>,
    /// Rack label -> zone id or name, for racks that are neither.
    pub aliases: BTreeMap<String, String>,
    /// Metadata providers to try, in order.
    pub providers: Vec<Provider>,
    /// Time each provider gets, in milliseconds.
    pub provider_timeout_ms: u64,
    /// EC2 IMDS endpoint override (default: `AWS_EC2_METADATA_SERVICE_ENDPOINT`, then link-local).
    pub ec2_endpoint: Option<String>,
    /// GCP metadata endpoint override (default: `GCE_METADATA_HOST`, then metadata.google.internal).
    pub gcp_endpoint: Option<String>,
    /// Azure IMDS endpoint override (default: the link-local address).
    pub azure_endpoint: Option<String>,
    /// Kubernetes API server override (default: `https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`).
    pub kubernetes_api: Option<String>,
    /// Node name override (default: `$NODE_NAME`, from the downward API's `spec.nodeName`).
    pub kubernetes_node: Option<String>,
    /// Service account token file (default: the kubelet's mount).
    pub kubernetes_token_file: Option<PathBuf>,
    /// Cluster CA file (default: the kubelet's mount).
    pub kubernetes_ca_file: Option<PathBuf>,
    /// While the zone is unknown, how often discovery is tried again, in seconds; once a zone is
    /// found, routing switches to it without a restart.
    pub retry_secs: u64,
}

/// How to discover the zone: the same struct as [`ZoneSettings`], named for what discovery does
/// with it. It used to be a copy of the discovery fields, which had to be kept in step by hand.
pub type DiscoveryConfig = ZoneSettings;

impl Default for ZoneSettings {
    fn default() -> Self {
        ZoneSettings {
            zone: None,
            aliases: BTreeMap::new(),
            providers: Provider::ALL.to_vec(),
            provider_timeout_ms: 1000,
            ec2_endpoint: None,
            gcp_endpoint: None,
            azure_endpoint: None,
            kubernetes_api: None,
            kubernetes_node: None,
            kubernetes_token_file: None,
            kubernetes_ca_file: None,
            retry_secs: 30,
        }
    }
}

impl ZoneSettings {
    /// The discovery settings of az-core: a copy of these settings, since discovery reads its
    /// fields from the same struct. Callers get an owned value, as they always have, so that they
    /// may move it into a task of their own.
    pub fn discovery(&self) -> DiscoveryConfig {
        self.clone()
    }

    /// The rack matcher with this configuration's aliases.
    pub fn matcher(&self) -> ZoneMatcher {
        ZoneMatcher::new(self.aliases.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `[zone]` keys the programs' configurations and their documentation use: renaming a
    /// field would break every deployed configuration, so the keys are pinned here.
    #[test]
    fn toml_keys_are_kebab_case_and_unknown_keys_are_refused() {
        let text = r#"
            zone = "use1-az1"
            aliases = { "rack-a" = "use1-az2" }
            providers = ["kubernetes", "ec2", "gcp", "azure"]
            provider-timeout-ms = 500
            ec2-endpoint = "http://127.0.0.1:1"
            gcp-endpoint = "127.0.0.1:2"
            azure-endpoint = "http://127.0.0.1:3"
            kubernetes-api = "https://127.0.0.1:4"
            kubernetes-node = "node-a"
            kubernetes-token-file = "/token"
            kubernetes-ca-file = "/ca.crt"
            retry-secs = 5
        "#;
        let settings: ZoneSettings = toml::from_str(text).expect("every documented key parses");
        assert_eq!(settings.discovery().zone.as_deref(), Some("use1-az1"));
        assert_eq!(settings.providers, Provider::ALL.to_vec());
        assert_eq!((settings.provider_timeout_ms, settings.retry_secs), (500, 5));
        assert_eq!(settings.kubernetes_ca_file, Some(PathBuf::from("/ca.crt")));
        let defaults: ZoneSettings = toml::from_str("").expect("every key has a default");
        assert_eq!(defaults, ZoneSettings::default());
        assert!(toml::from_str::<ZoneSettings>("zone-id = \"x\"").is_err());
    }
}
