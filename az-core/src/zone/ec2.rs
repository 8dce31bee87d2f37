//! The EC2 zone provider: the instance metadata service, version 2 (a session token first, then
//! requests carrying it), through aws-config's client. It gives both the stable zone id and the
//! per-account zone name.

use std::time::Duration;

use super::http::error_chain;
use super::provider::ZoneProvider;
use super::{DiscoveryConfig, Env, ProbeError, Zone};

/// The aws-config variable that moves the IMDS endpoint (honoured here explicitly).
pub const EC2_ENDPOINT_ENV: &str = "AWS_EC2_METADATA_SERVICE_ENDPOINT";
/// The aws-config variable that disables IMDS.
pub const EC2_DISABLED_ENV: &str = "AWS_EC2_METADATA_DISABLED";

const EC2_DEFAULT_ENDPOINT: &str = "http://169.254.169.254";

/// AWS EC2 instance metadata service, version 2.
pub(crate) struct Ec2;

impl ZoneProvider for Ec2 {
    async fn probe(&self, config: &DiscoveryConfig, env: &Env, timeout: Duration) -> Result<Zone, ProbeError> {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zone::{Provider, ZoneSource, discover};

    #[tokio::test]
    async fn ec2_disabled_by_env() {
        let cfg = DiscoveryConfig { providers: vec![Provider::Ec2], ..Default::default() };
        let info = discover(&cfg, &Env::fixed([(EC2_DISABLED_ENV, "true")])).await;
        assert_eq!(info.source, ZoneSource::Unknown);
        assert!(info.failures[0].error.contains("disabled"), "{:?}", info.failures);
    }
}
