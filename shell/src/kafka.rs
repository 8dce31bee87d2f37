//! The librdkafka settings every Zonal client starts from. Each program adds its own (producer
//! or consumer settings), and the operator's `kafka.options` are applied last, so they win.

use std::time::Duration;

use rdkafka::ClientConfig;

/// A client of `bootstrap` named `client_id`. Statistics are what the cross-zone accounting
/// reads (bytes per broker) and, for the producer, the leaders librdkafka routes to, so every
/// client emits them; `statistics` is how often.
pub fn base(bootstrap: &str, client_id: &str, statistics: Duration) -> ClientConfig {
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", bootstrap)
        .set("client.id", client_id)
        .set("statistics.interval.ms", statistics.as_millis().to_string());
    cc
}
