//! Zone discovery: which availability zone this process runs in, and where that answer came from.
//!
//! ```text
//!  explicit config / ZONAL_ZONE ──────────> answers at once, no provider is asked   (explicit.rs)
//!  Kubernetes node labels (API server) ──┐
//!  EC2 IMDSv2 (aws-config) ──────────────┤  probed concurrently, each under its own timeout;
//!  GCP metadata ─────────────────────────┼─> the first provider in priority order that answered
//!  Azure IMDS ───────────────────────────┘   wins (a later provider never overrides an earlier one)
//!                                             nothing answered -> Zone unknown, with the per-provider errors
//! ```
//!
//! The providers are probed at the same time rather than one after another so that a host with
//! no metadata service at all (a laptop, CI) learns "unknown" in one timeout, not in the sum of
//! every provider's. Priority is still respected: the result is taken in chain order.
//!
//! The rooms of this module:
//! - `chain`: [`discover`], the order of the chain and the failures it reports;
//! - `explicit`: the zone named by the configuration or by `ZONAL_ZONE`;
//! - `matcher`: [`Zone`] and [`ZoneMatcher`], which tells whether a broker rack is in a zone;
//! - `settings` and `env`: the inputs, [`ZoneSettings`] (alias [`DiscoveryConfig`]) and [`Env`];
//! - `provider`: the `ZoneProvider` trait every provider implements, its errors, and the macro
//!   behind the registry below;
//! - one file per provider (`kubernetes`, `ec2`, `gcp`, `azure`), sharing the HTTP helpers of `http`.
//!
//! Adding a provider is a new file in `zone/` with a unit struct implementing `ZoneProvider`, its
//! `mod` line below, and its line in the `zone_providers!` registry.

mod azure;
mod chain;
mod ec2;
mod env;
mod explicit;
mod gcp;
mod http;
pub mod kubernetes;
mod matcher;
mod provider;
mod settings;

pub use azure::parse_azure_compute;
pub use chain::{ProviderFailure, ZoneInfo, ZoneSource, discover};
pub use ec2::{EC2_DISABLED_ENV, EC2_ENDPOINT_ENV};
pub use env::Env;
pub use explicit::ZONAL_ZONE_ENV;
pub use gcp::{GCE_METADATA_HOST_ENV, parse_gcp_zone};
pub use matcher::{Zone, ZoneMatcher};
pub use provider::ProbeError;
pub use settings::{DiscoveryConfig, ZoneSettings};

/// A client for plain-HTTP services near the program (metadata services, agents' metrics), on
/// the process's own TLS configuration and without a proxy from the environment.
pub fn plain_http_client(timeout: std::time::Duration) -> Result<reqwest::Client, ProbeError> {
    http::http_client(timeout)
}

// The registry of providers: the default chain, in priority order. Each line is
// `module::Type = "name"`: the file, the unit struct implementing `ZoneProvider` (which also names
// the `Provider` variant) and how configuration and output spell it.
provider::zone_providers! {
    /// The node's zone labels through the Kubernetes API server (pods).
    kubernetes::Kubernetes = "kubernetes",
    /// AWS EC2 instance metadata service, version 2 (session tokens).
    ec2::Ec2 = "ec2",
    /// Google Compute Engine metadata server.
    gcp::Gcp = "gcp",
    /// Azure instance metadata service.
    azure::Azure = "azure",
}
