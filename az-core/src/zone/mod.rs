//! Zone discovery: which availability zone this process runs in, and where that answer came from.
//!
//! ```text
//!  explicit config / ZONAL_ZONE ──┐
//!  EC2 IMDSv2 (aws-config) ───────┤  probed concurrently, each under its own timeout;
//!  GCP metadata ──────────────────┼─> the first provider in priority order that answered wins
//!  Azure IMDS ────────────────────┘   (a later provider never overrides an earlier one)
//!                                     nothing answered -> Zone unknown, with the per-provider errors
//! ```
//!
//! The providers are probed at the same time rather than one after another so that a host with
//! no metadata service at all (a laptop, CI) learns "unknown" in one timeout, not in the sum of
//! four. Priority is still respected: the result is taken in chain order.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub mod kubernetes;

/// Environment variable that overrides every provider, as an explicit zone would.
pub const ZONAL_ZONE_ENV: &str = "ZONAL_ZONE";
/// The aws-config variable that moves the IMDS endpoint (honoured here explicitly).
pub const EC2_ENDPOINT_ENV: &str = "AWS_EC2_METADATA_SERVICE_ENDPOINT";
/// The aws-config variable that disables IMDS.
pub const EC2_DISABLED_ENV: &str = "AWS_EC2_METADATA_DISABLED";
/// The variable Google's own client libraries read to move the metadata server.
pub const GCE_METADATA_HOST_ENV: &str = "GCE_METADATA_HOST";

const EC2_DEFAULT_ENDPOINT: &str = "http://169.254.169.254";
const GCP_DEFAULT_ENDPOINT: &str = "http://metadata.google.internal";
const AZURE_DEFAULT_ENDPOINT: &str = "http://169.254.169.254";

/// A cloud metadata provider that can tell the zone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Provider {
    /// The node's zone labels through the Kubernetes API server (pods).
    Kubernetes,
    /// AWS EC2 instance metadata service, version 2 (session tokens).
    Ec2,
    /// Google Compute Engine metadata server.
    Gcp,
    /// Azure instance metadata service.
    Azure,
}

impl Provider {
    /// Every provider, in the order the chain tries them.
    pub const ALL: [Provider; 4] = [Provider::Kubernetes, Provider::Ec2, Provider::Gcp, Provider::Azure];
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Provider::Kubernetes => "kubernetes",
            Provider::Ec2 => "ec2",
            Provider::Gcp => "gcp",
            Provider::Azure => "azure",
        })
    }
}

/// Where a zone answer came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind", content = "detail")]
pub enum ZoneSource {
    /// The `zone` setting of the program's configuration.
    Config,
    /// The `ZONAL_ZONE` environment variable.
    Env,
    /// A cloud metadata service.
    Metadata(Provider),
    /// Nothing answered.
    Unknown,
}

impl fmt::Display for ZoneSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ZoneSource::Config => f.write_str("config"),
            ZoneSource::Env => write!(f, "env:{ZONAL_ZONE_ENV}"),
            ZoneSource::Metadata(p) => write!(f, "metadata:{p}"),
            ZoneSource::Unknown => f.write_str("unknown"),
        }
    }
}

/// An availability zone, known by its stable id (`use1-az1`), its name (`us-east-1a`), or both.
///
/// AWS zone names are shuffled per account while ids are not, which is why brokers should carry
/// ids as racks; matching accepts either so that existing clusters with name racks work too.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Zone {
    /// Stable zone id, e.g. `use1-az1`.
    pub id: Option<String>,
    /// Zone name, e.g. `us-east-1a`.
    pub name: Option<String>,
}

impl Zone {
    /// A zone known by a single label that may be an id or a name.
    pub fn label(label: impl Into<String>) -> Self {
        let label = label.into();
        Zone { id: Some(label.clone()), name: Some(label) }
    }

    /// The label to show: the id when known, else the name.
    pub fn display_label(&self) -> &str {
        self.id.as_deref().or(self.name.as_deref()).unwrap_or("?")
    }

    fn labels(&self) -> impl Iterator<Item = &str> {
        self.id.iter().chain(self.name.iter()).map(String::as_str)
    }
}

impl fmt::Display for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.id, &self.name) {
            (Some(id), Some(name)) if id != name => write!(f, "{id} ({name})"),
            _ => f.write_str(self.display_label()),
        }
    }
}

/// Decides whether a broker rack is in a zone: by id, by name, or through an alias map
/// (rack -> zone id or name), case-insensitively.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ZoneMatcher {
    aliases: BTreeMap<String, String>,
}

impl ZoneMatcher {
    /// A matcher with the given aliases, from rack label to zone id or name.
    pub fn new(aliases: BTreeMap<String, String>) -> Self {
        let aliases = aliases.into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v)).collect();
        ZoneMatcher { aliases }
    }

    /// Whether `rack` denotes `zone`.
    pub fn matches(&self, zone: &Zone, rack: &str) -> bool {
        let rack = rack.trim();
        if rack.is_empty() {
            return false;
        }
        let alias = self.aliases.get(&rack.to_ascii_lowercase()).map(String::as_str);
        zone.labels()
            .any(|label| label.eq_ignore_ascii_case(rack) || alias.is_some_and(|a| a.eq_ignore_ascii_case(label)))
    }

    /// The canonical label for a rack: its alias target if one is configured, else the rack.
    /// Two racks with the same canonical label are in the same zone.
    pub fn canonical<'a>(&'a self, rack: &'a str) -> &'a str {
        self.aliases.get(&rack.trim().to_ascii_lowercase()).map(String::as_str).unwrap_or(rack)
    }

    /// The label brokers use for `zone`, among their `racks` (an AZ id, a name or an alias), so
    /// that a client's `client.rack` is written the way the brokers compare it.
    pub fn rack_label<'a>(&self, zone: &Zone, racks: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
        racks.into_iter().find(|r| self.matches(zone, r))
    }

    /// Whether two racks are in the same zone.
    pub fn same_zone(&self, a: &str, b: &str) -> bool {
        self.canonical(a).eq_ignore_ascii_case(self.canonical(b))
    }
}

/// How to discover the zone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct DiscoveryConfig {
    /// Explicit zone label (id or name); when set no provider is asked.
    pub zone: Option<String>,
    /// Which metadata providers to try, in priority order.
    pub providers: Vec<Provider>,
    /// Time each provider gets to answer, in milliseconds.
    pub provider_timeout_ms: u64,
    /// EC2 IMDS endpoint; defaults to `AWS_EC2_METADATA_SERVICE_ENDPOINT`, then the link-local address.
    pub ec2_endpoint: Option<String>,
    /// GCP metadata endpoint; defaults to `GCE_METADATA_HOST`, then `metadata.google.internal`.
    pub gcp_endpoint: Option<String>,
    /// Azure IMDS endpoint; defaults to the link-local address.
    pub azure_endpoint: Option<String>,
    /// Kubernetes API server; defaults to `https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`.
    pub kubernetes_api: Option<String>,
    /// Node name; defaults to `$NODE_NAME` (the downward API's `spec.nodeName`).
    pub kubernetes_node: Option<String>,
    /// Service account token file; defaults to the kubelet's mount.
    pub kubernetes_token_file: Option<std::path::PathBuf>,
    /// Cluster CA file; defaults to the kubelet's mount.
    pub kubernetes_ca_file: Option<std::path::PathBuf>,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        DiscoveryConfig {
            zone: None,
            providers: Provider::ALL.to_vec(),
            provider_timeout_ms: 1000,
            ec2_endpoint: None,
            gcp_endpoint: None,
            azure_endpoint: None,
            kubernetes_api: None,
            kubernetes_node: None,
            kubernetes_token_file: None,
            kubernetes_ca_file: None,
        }
    }
}

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
    /// Azure IMDS endpoint override.
    pub azure_endpoint: Option<String>,
    /// Kubernetes API server override (default: `https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`).
    pub kubernetes_api: Option<String>,
    /// Node name override (default: `$NODE_NAME`, from the downward API's `spec.nodeName`).
    pub kubernetes_node: Option<String>,
    /// Service account token file (default: the kubelet's mount).
    pub kubernetes_token_file: Option<std::path::PathBuf>,
    /// Cluster CA file (default: the kubelet's mount).
    pub kubernetes_ca_file: Option<std::path::PathBuf>,
    /// While the zone is unknown, how often discovery is tried again, in seconds; once a zone is
    /// found, routing switches to it without a restart.
    pub retry_secs: u64,
}

impl Default for ZoneSettings {
    fn default() -> Self {
        let d = DiscoveryConfig::default();
        ZoneSettings {
            zone: None,
            aliases: BTreeMap::new(),
            providers: d.providers,
            provider_timeout_ms: d.provider_timeout_ms,
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
    /// The discovery settings of az-core.
    pub fn discovery(&self) -> DiscoveryConfig {
        DiscoveryConfig {
            zone: self.zone.clone(),
            providers: self.providers.clone(),
            provider_timeout_ms: self.provider_timeout_ms,
            ec2_endpoint: self.ec2_endpoint.clone(),
            gcp_endpoint: self.gcp_endpoint.clone(),
            azure_endpoint: self.azure_endpoint.clone(),
            kubernetes_api: self.kubernetes_api.clone(),
            kubernetes_node: self.kubernetes_node.clone(),
            kubernetes_token_file: self.kubernetes_token_file.clone(),
            kubernetes_ca_file: self.kubernetes_ca_file.clone(),
        }
    }

    /// The rack matcher with this configuration's aliases.
    pub fn matcher(&self) -> ZoneMatcher {
        ZoneMatcher::new(self.aliases.clone())
    }
}

/// The environment discovery reads. Tests pass a fixed map so they neither race on the process
/// environment nor need `unsafe` `set_var`.
#[derive(Clone, Debug, Default)]
pub enum Env {
    /// The real process environment.
    #[default]
    Process,
    /// A fixed set of variables.
    Fixed(BTreeMap<String, String>),
}

impl Env {
    /// A fixed environment from pairs.
    pub fn fixed<K: Into<String>, V: Into<String>>(vars: impl IntoIterator<Item = (K, V)>) -> Self {
        Env::Fixed(vars.into_iter().map(|(k, v)| (k.into(), v.into())).collect())
    }

    /// One variable, empty values treated as unset.
    pub fn var(&self, key: &str) -> Option<String> {
        let value = match self {
            Env::Process => std::env::var(key).ok(),
            Env::Fixed(map) => map.get(key).cloned(),
        };
        value.filter(|v| !v.trim().is_empty())
    }
}

/// Why one provider did not give a zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProviderFailure {
    /// The provider.
    pub provider: Provider,
    /// What went wrong, for logs and `inspect`.
    pub error: String,
}

/// The answer of discovery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ZoneInfo {
    /// The zone, if anything knew it.
    pub zone: Option<Zone>,
    /// Where it came from.
    pub source: ZoneSource,
    /// Providers that were asked and failed, in chain order (empty when config or env answered).
    pub failures: Vec<ProviderFailure>,
}

impl ZoneInfo {
    /// A zone that is not known.
    pub fn unknown() -> Self {
        ZoneInfo { zone: None, source: ZoneSource::Unknown, failures: Vec::new() }
    }
}

/// Errors of a single metadata probe.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The provider did not answer within its timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The provider is disabled by the environment.
    #[error("disabled by {0}")]
    Disabled(&'static str),
    /// The endpoint setting is not a usable URL.
    #[error("invalid endpoint {endpoint:?}: {reason}")]
    Endpoint {
        /// The endpoint as configured.
        endpoint: String,
        /// Why it was rejected.
        reason: String,
    },
    /// The HTTP exchange failed.
    #[error("request to {url} failed: {reason}")]
    Http {
        /// The URL asked.
        url: String,
        /// What failed.
        reason: String,
    },
    /// The answer was not in the expected form.
    #[error("unexpected answer from {url}: {reason}")]
    Malformed {
        /// The URL asked.
        url: String,
        /// What was wrong.
        reason: String,
    },
}

/// Discovers the zone following the chain: config, `ZONAL_ZONE`, then the configured providers.
/// Never fails: an undiscoverable zone is an answer (`ZoneSource::Unknown`) that callers turn into
/// a fallback reason.
pub async fn discover(config: &DiscoveryConfig, env: &Env) -> ZoneInfo {
    if let Some(zone) = config.zone.as_deref().filter(|z| !z.trim().is_empty()) {
        return ZoneInfo { zone: Some(Zone::label(zone.trim())), source: ZoneSource::Config, failures: vec![] };
    }
    if let Some(zone) = env.var(ZONAL_ZONE_ENV) {
        return ZoneInfo { zone: Some(Zone::label(zone.trim())), source: ZoneSource::Env, failures: vec![] };
    }
    let timeout = Duration::from_millis(config.provider_timeout_ms.max(1));
    let mut providers = Vec::new();
    for p in &config.providers {
        if !providers.contains(p) {
            providers.push(*p);
        }
    }
    let probes = providers.iter().map(|&p| async move {
        let result = match tokio::time::timeout(timeout, probe(p, config, env, timeout)).await {
            Ok(r) => r,
            Err(_) => Err(ProbeError::Timeout(timeout)),
        };
        (p, result)
    });
    // Every probe runs concurrently; results are then read in priority order.
    let results = futures::future::join_all(probes).await;
    let mut failures = Vec::new();
    for (provider, result) in results {
        match result {
            Ok(zone) => {
                return ZoneInfo { zone: Some(zone), source: ZoneSource::Metadata(provider), failures };
            }
            Err(e) => failures.push(ProviderFailure { provider, error: e.to_string() }),
        }
    }
    ZoneInfo { zone: None, source: ZoneSource::Unknown, failures }
}

async fn probe(provider: Provider, config: &DiscoveryConfig, env: &Env, timeout: Duration) -> Result<Zone, ProbeError> {
    match provider {
        Provider::Kubernetes => kubernetes::probe(config, env, timeout).await,
        Provider::Ec2 => probe_ec2(config, env, timeout).await,
        Provider::Gcp => probe_gcp(config, env, timeout).await,
        Provider::Azure => probe_azure(config, timeout).await,
    }
}

async fn probe_ec2(config: &DiscoveryConfig, env: &Env, timeout: Duration) -> Result<Zone, ProbeError> {
    // An endpoint set explicitly in the config wins over the environment's "disabled".
    if config.ec2_endpoint.is_none() && env.var(EC2_DISABLED_ENV).is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return Err(ProbeError::Disabled(EC2_DISABLED_ENV));
    }
    let endpoint = config
        .ec2_endpoint
        .clone()
        .or_else(|| env.var(EC2_ENDPOINT_ENV))
        .unwrap_or_else(|| EC2_DEFAULT_ENDPOINT.to_owned());
    // aws-config's client does the IMDSv2 token dance (PUT a token, then GET with it) and caches
    // the token; one attempt only, because the chain has its own overall timeout.
    let client = aws_config::imds::Client::builder()
        .endpoint(&endpoint)
        .map_err(|e| ProbeError::Endpoint { endpoint: endpoint.clone(), reason: e.to_string() })?
        .max_attempts(1)
        .connect_timeout(timeout)
        .read_timeout(timeout)
        .operation_timeout(timeout)
        .build();
    let get = |path: &'static str| {
        let client = client.clone();
        let endpoint = endpoint.clone();
        async move {
            client
                .get(path)
                .await
                .map(|v| v.as_ref().trim().to_owned())
                .map_err(|e| ProbeError::Http { url: format!("{endpoint}{path}"), reason: error_chain(&e) })
        }
    };
    let id = get("/latest/meta-data/placement/availability-zone-id").await;
    let name = get("/latest/meta-data/placement/availability-zone").await;
    match (id, name) {
        (Ok(id), Ok(name)) => Ok(Zone { id: Some(id), name: Some(name) }),
        (Ok(id), Err(_)) => Ok(Zone { id: Some(id), name: None }),
        (Err(_), Ok(name)) => Ok(Zone { id: None, name: Some(name) }),
        (Err(e), Err(_)) => Err(e),
    }
}

fn http_client(timeout: Duration) -> Result<reqwest::Client, ProbeError> {
    // Metadata services speak plain HTTP; the TLS configuration only has to exist (reqwest would
    // otherwise look for a process-wide crypto provider).
    let tls = kubernetes::tls_config(rustls::RootCertStore::empty())
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

fn with_scheme(endpoint: &str) -> String {
    let endpoint = endpoint.trim_end_matches('/');
    if endpoint.contains("://") { endpoint.to_owned() } else { format!("http://{endpoint}") }
}

async fn fetch_text(request: reqwest::RequestBuilder, url: &str) -> Result<String, ProbeError> {
    let http_err = |e: reqwest::Error| ProbeError::Http { url: url.to_owned(), reason: error_chain(&e) };
    let response = request.send().await.map_err(http_err)?;
    let status = response.status();
    if !status.is_success() {
        return Err(ProbeError::Http { url: url.to_owned(), reason: format!("HTTP {status}") });
    }
    response.text().await.map_err(http_err)
}

async fn probe_gcp(config: &DiscoveryConfig, env: &Env, timeout: Duration) -> Result<Zone, ProbeError> {
    let endpoint = config
        .gcp_endpoint
        .clone()
        .or_else(|| env.var(GCE_METADATA_HOST_ENV))
        .unwrap_or_else(|| GCP_DEFAULT_ENDPOINT.to_owned());
    let url = format!("{}/computeMetadata/v1/instance/zone", with_scheme(&endpoint));
    let client = http_client(timeout)?;
    let body = fetch_text(client.get(&url).header("Metadata-Flavor", "Google"), &url).await?;
    parse_gcp_zone(&body).ok_or_else(|| ProbeError::Malformed { url, reason: format!("zone path {body:?}") })
}

/// GCP answers `projects/<number>/zones/<zone>`.
pub fn parse_gcp_zone(body: &str) -> Option<Zone> {
    let zone = body.trim().rsplit('/').next()?.trim();
    (!zone.is_empty() && body.contains("zones/")).then(|| Zone { id: None, name: Some(zone.to_owned()) })
}

async fn probe_azure(config: &DiscoveryConfig, timeout: Duration) -> Result<Zone, ProbeError> {
    let endpoint = config.azure_endpoint.clone().unwrap_or_else(|| AZURE_DEFAULT_ENDPOINT.to_owned());
    let url = format!("{}/metadata/instance/compute?api-version=2021-02-01", with_scheme(&endpoint));
    let client = http_client(timeout)?;
    let body = fetch_text(client.get(&url).header("Metadata", "true"), &url).await?;
    parse_azure_compute(&body).map_err(|reason| ProbeError::Malformed { url, reason })
}

/// Azure answers a JSON document with `location` (`eastus`) and `zone` (`1`); the zone label is
/// `<location>-<zone>`, the form Kafka racks on AKS usually take (`eastus-1`).
pub fn parse_azure_compute(body: &str) -> Result<Zone, String> {
    #[derive(Deserialize)]
    struct Compute {
        location: Option<String>,
        zone: Option<String>,
    }
    let compute: Compute = serde_json::from_str(body).map_err(|e| format!("not compute JSON: {e}"))?;
    let zone = compute.zone.filter(|z| !z.trim().is_empty()).ok_or("no zone (not a zonal VM)")?;
    let location = compute.location.filter(|l| !l.trim().is_empty()).ok_or("no location")?;
    Ok(Zone { id: Some(format!("{location}-{zone}")), name: None })
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone(id: &str, name: &str) -> Zone {
        Zone { id: Some(id.into()), name: Some(name.into()) }
    }

    #[test]
    fn matching_accepts_id_name_and_alias() {
        let m = ZoneMatcher::new(BTreeMap::from([("rack-a".to_owned(), "use1-az1".to_owned())]));
        let z = zone("use1-az1", "us-east-1a");
        assert!(m.matches(&z, "use1-az1"));
        assert!(m.matches(&z, "US-EAST-1A"));
        assert!(m.matches(&z, "rack-a"));
        assert!(m.matches(&z, " use1-az1 "));
        assert!(!m.matches(&z, "use1-az2"));
        assert!(!m.matches(&z, ""));
        assert!(!m.matches(&Zone::default(), "use1-az1"));
        assert!(m.same_zone("rack-a", "USE1-AZ1"));
    }

    #[test]
    fn rack_label_takes_the_brokers_form() {
        let m = ZoneMatcher::new(BTreeMap::from([("rack-b".to_owned(), "use1-az2".to_owned())]));
        let z = zone("use1-az1", "us-east-1a");
        assert_eq!(m.rack_label(&z, ["us-east-1b", "us-east-1a"]), Some("us-east-1a"));
        assert_eq!(m.rack_label(&z, ["use1-az1"]), Some("use1-az1"));
        assert_eq!(m.rack_label(&zone("use1-az2", "x"), ["rack-a", "rack-b"]), Some("rack-b"));
        assert_eq!(m.rack_label(&z, ["elsewhere"]), None);
    }

    #[test]
    fn gcp_and_azure_answers_parse() {
        assert_eq!(
            parse_gcp_zone("projects/123/zones/europe-west1-b").and_then(|z| z.name),
            Some("europe-west1-b".into())
        );
        assert_eq!(parse_gcp_zone("garbage"), None);
        assert_eq!(parse_gcp_zone("projects/1/zones/"), None);
        let z = parse_azure_compute(r#"{"location":"eastus","zone":"2","name":"vm"}"#);
        assert_eq!(z.map(|z| z.id), Ok(Some("eastus-2".into())));
        assert!(parse_azure_compute(r#"{"location":"eastus","zone":""}"#).is_err());
        assert!(parse_azure_compute("<html>").is_err());
    }

    #[tokio::test]
    async fn config_beats_env_beats_providers() {
        let env = Env::fixed([(ZONAL_ZONE_ENV, "from-env")]);
        let mut cfg = DiscoveryConfig { zone: Some("from-config".into()), providers: vec![], ..Default::default() };
        let info = discover(&cfg, &env).await;
        assert_eq!((info.zone, info.source), (Some(Zone::label("from-config")), ZoneSource::Config));
        cfg.zone = None;
        let info = discover(&cfg, &env).await;
        assert_eq!((info.zone, info.source), (Some(Zone::label("from-env")), ZoneSource::Env));
        let info = discover(&cfg, &Env::fixed::<&str, &str>([])).await;
        assert_eq!(info, ZoneInfo::unknown());
    }

    #[tokio::test]
    async fn ec2_disabled_by_env() {
        let cfg = DiscoveryConfig { providers: vec![Provider::Ec2], ..Default::default() };
        let info = discover(&cfg, &Env::fixed([(EC2_DISABLED_ENV, "true")])).await;
        assert_eq!(info.source, ZoneSource::Unknown);
        assert!(info.failures[0].error.contains("disabled"), "{:?}", info.failures);
    }
}
