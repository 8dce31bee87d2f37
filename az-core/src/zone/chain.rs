//! The discovery chain: the explicit zone first, then the configured providers probed
//! concurrently and read in priority order, and what the answer records about where it came from
//! and which providers failed.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::explicit::{ZONAL_ZONE_ENV, explicit_zone};
use super::{DiscoveryConfig, Env, ProbeError, Provider, Zone};

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

/// Discovers the zone following the chain: config, `ZONAL_ZONE`, then the configured providers.
/// Never fails: an undiscoverable zone is an answer (`ZoneSource::Unknown`) that callers turn into
/// a fallback reason.
pub async fn discover(config: &DiscoveryConfig, env: &Env) -> ZoneInfo {
    if let Some(info) = explicit_zone(config, env) {
        return info;
    }
    let timeout = Duration::from_millis(config.provider_timeout_ms.max(1));
    let mut providers = Vec::new();
    for p in &config.providers {
        if !providers.contains(p) {
            providers.push(*p);
        }
    }
    let probes = providers.iter().map(|&p| async move {
        let result = match tokio::time::timeout(timeout, p.probe(config, env, timeout)).await {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
