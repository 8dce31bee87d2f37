//! The explicit zone: the `zone` setting of the configuration or, failing that, the `ZONAL_ZONE`
//! environment variable. Either one answers before any provider is asked, because an operator
//! who names the zone knows better than any metadata service (and a host without one still needs
//! an answer).

use super::chain::{ZoneInfo, ZoneSource};
use super::{DiscoveryConfig, Env, Zone};

/// Environment variable that overrides every provider, as an explicit zone would.
pub const ZONAL_ZONE_ENV: &str = "ZONAL_ZONE";

/// The zone named by the configuration, else by `ZONAL_ZONE`; `None` when neither names one
/// (blank values name nothing).
pub(super) fn explicit_zone(config: &DiscoveryConfig, env: &Env) -> Option<ZoneInfo> {
    if let Some(zone) = config.zone.as_deref().filter(|z| !z.trim().is_empty()) {
        return Some(ZoneInfo { zone: Some(Zone::label(zone.trim())), source: ZoneSource::Config, failures: vec![] });
    }
    let zone = env.var(ZONAL_ZONE_ENV)?;
    Some(ZoneInfo { zone: Some(Zone::label(zone.trim())), source: ZoneSource::Env, failures: vec![] })
}
