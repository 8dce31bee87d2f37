//! The GCP zone provider: the Compute Engine metadata server, asked with the `Metadata-Flavor`
//! header it requires. It gives the zone name only (GCP has no separate zone ids).

use std::time::Duration;

use super::http::{fetch_text, http_client, with_scheme};
use super::provider::ZoneProvider;
use super::{DiscoveryConfig, Env, ProbeError, Zone};

/// The variable Google's own client libraries read to move the metadata server.
pub const GCE_METADATA_HOST_ENV: &str = "GCE_METADATA_HOST";

const GCP_DEFAULT_ENDPOINT: &str = "http://metadata.google.internal";

/// Google Compute Engine metadata server.
pub(crate) struct Gcp;

impl ZoneProvider for Gcp {
    async fn probe(&self, config: &DiscoveryConfig, env: &Env, timeout: Duration) -> Result<Zone, ProbeError> {
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
}

/// GCP answers `projects/<number>/zones/<zone>`.
pub fn parse_gcp_zone(body: &str) -> Option<Zone> {
    let zone = body.trim().rsplit('/').next()?.trim();
    (!zone.is_empty() && body.contains("zones/")).then(|| Zone { id: None, name: Some(zone.to_owned()) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gcp_answers_parse() {
        assert_eq!(
            parse_gcp_zone("projects/123/zones/europe-west1-b").and_then(|z| z.name),
            Some("europe-west1-b".into())
        );
        assert_eq!(parse_gcp_zone("garbage"), None);
        assert_eq!(parse_gcp_zone("projects/1/zones/"), None);
    }
}
