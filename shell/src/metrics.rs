//! Metrics both programs export the same way: the Kafka bytes by zone relation and direction,
//! all of them and the part on connections that carried no records; readiness and health as
//! gauges, for alerts.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// A gauge of bytes.
pub type BytesGauge = Gauge<u64, std::sync::atomic::AtomicU64>;

/// Registers `kafka_bytes` (every byte, from librdkafka statistics) and `kafka_protocol_bytes`
/// (those on connections that carried no records) under the program's prefix.
pub fn register_traffic<L>(registry: &mut Registry, all: &Family<L, BytesGauge>, protocol: &Family<L, BytesGauge>)
where
    L: EncodeLabelSet + Clone + std::hash::Hash + Eq + std::fmt::Debug + Send + Sync + 'static,
{
    registry.register("kafka_bytes", "Kafka bytes by zone relation and direction", all.clone());
    registry.register(
        "kafka_protocol_bytes",
        "Kafka bytes on connections that carried no records, by zone relation and direction",
        protocol.clone(),
    );
}

/// `ready` and `healthy`: 1 when `/readyz` and `/healthz` would answer 200, set at each scrape
/// (see [`crate::http::Endpoints::health`]), so that an alert can say how long a pod has not
/// been ready without asking the cluster.
#[derive(Debug, Clone, Default)]
pub struct Health {
    /// 1 when ready for work.
    pub ready: Gauge,
    /// 1 when not stuck (a 0 makes the liveness probe restart the process).
    pub healthy: Gauge,
}

impl Health {
    /// Registers both gauges under the program's prefix.
    pub fn register(&self, registry: &mut Registry) {
        registry.register("ready", "1 when /readyz answers 200 (ready for work)", self.ready.clone());
        registry.register("healthy", "1 when /healthz answers 200 (not stuck)", self.healthy.clone());
    }
}
