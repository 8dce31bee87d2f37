//! The Azure zone provider: the instance metadata service's compute document, whose location and
//! zone number make the zone label Kafka racks on Azure usually carry.

use std::time::Duration;

use serde::Deserialize;

use super::http::{fetch_text, http_client, with_scheme};
use super::provider::ZoneProvider;
use super::{DiscoveryConfig, Env, ProbeError, Zone};

const AZURE_DEFAULT_ENDPOINT: &str = "http://169.254.169.254";

/// Azure instance metadata service.
pub(crate) struct Azure;

impl ZoneProvider for Azure {
    async fn probe(&self, config: &DiscoveryConfig, _env: &Env, timeout: Duration) -> Result<Zone, ProbeError> {
        let endpoint = config.azure_endpoint.clone().unwrap_or_else(|| AZURE_DEFAULT_ENDPOINT.to_owned());
        let url = format!("{}/metadata/instance/compute?api-version=2021-02-01", with_scheme(&endpoint));
        let client = http_client(timeout)?;
        let body = fetch_text(client.get(&url).header("Metadata", "true"), &url).await?;
        parse_azure_compute(&body).map_err(|reason| ProbeError::Malformed { url, reason })
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn azure_answers_parse() {
        let z = parse_azure_compute(r#"{"location":"eastus","zone":"2","name":"vm"}"#);
        assert_eq!(z.map(|z| z.id), Ok(Some("eastus-2".into())));
        assert!(parse_azure_compute(r#"{"location":"eastus","zone":""}"#).is_err());
        assert!(parse_azure_compute("<html>").is_err());
    }
}
