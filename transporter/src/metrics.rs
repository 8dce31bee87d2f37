//! The transporter's Prometheus metrics.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Per-partition label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TpLabel {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: String,
}

/// Error kind label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// Kind.
    pub kind: String,
}

/// Kafka traffic label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TrafficLabel {
    /// `same-zone`, `cross-zone`, `unknown`.
    pub zone: String,
    /// `tx` or `rx`.
    pub direction: String,
}

type U64Gauge = Gauge<u64, AtomicU64>;

/// Every metric.
#[derive(Debug)]
pub struct Metrics {
    /// Records written to objects.
    pub records: Counter,
    /// Uncompressed bytes written to objects.
    pub bytes: Counter,
    /// Objects uploaded.
    pub uploads: Counter,
    /// Upload latency in seconds.
    pub upload_seconds: Histogram,
    /// Errors by kind.
    pub errors: Family<KindLabel, Counter>,
    /// Records behind the partition's end (from librdkafka statistics).
    pub lag: Family<TpLabel, Gauge>,
    /// Partitions this worker owns.
    pub owned: U64Gauge,
    /// Partitions assigned across zones (master view).
    pub cross_zone_partitions: U64Gauge,
    /// Partitions waiting for a departed worker (master view).
    pub waiting_partitions: U64Gauge,
    /// 1 on the master.
    pub is_master: U64Gauge,
    /// Kafka bytes by zone relation.
    pub kafka_bytes: Family<TrafficLabel, U64Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            records: Counter::default(),
            bytes: Counter::default(),
            uploads: Counter::default(),
            upload_seconds: Histogram::new(exponential_buckets(0.005, 2.0, 14)),
            errors: Family::default(),
            lag: Family::default(),
            owned: U64Gauge::default(),
            cross_zone_partitions: U64Gauge::default(),
            waiting_partitions: U64Gauge::default(),
            is_master: U64Gauge::default(),
            kafka_bytes: Family::default(),
        }
    }
}

impl Metrics {
    /// Registers under `zonal_transporter`.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("zonal_transporter");
        r.register("records", "Records written to S3 objects", self.records.clone());
        r.register("bytes", "Uncompressed bytes written to S3 objects", self.bytes.clone());
        r.register("uploads", "Objects uploaded", self.uploads.clone());
        r.register("upload_seconds", "Upload latency", self.upload_seconds.clone());
        r.register("errors", "Errors by kind", self.errors.clone());
        r.register("lag_records", "Records behind the end of the partition", self.lag.clone());
        r.register("owned_partitions", "Partitions this worker owns", self.owned.clone());
        r.register(
            "cross_zone_partitions",
            "Partitions assigned across zones (master)",
            self.cross_zone_partitions.clone(),
        );
        r.register(
            "waiting_partitions",
            "Partitions waiting for a departed worker (master)",
            self.waiting_partitions.clone(),
        );
        r.register("is_master", "1 on the elected master", self.is_master.clone());
        r.register("kafka_bytes", "Kafka bytes by zone relation and direction", self.kafka_bytes.clone());
    }

    /// Counts an error.
    pub fn error(&self, kind: &str) {
        self.errors.get_or_create(&KindLabel { kind: kind.to_owned() }).inc();
    }
}
