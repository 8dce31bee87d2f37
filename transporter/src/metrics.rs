//! The transporter's Prometheus metrics, and the error kinds that logs and the `errors` counter
//! share.

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

/// What went wrong, as counted in `zonal_transporter_errors_total{kind}` and named in the log
/// line beside the count (`kind = kind.as_str()`), so that a count can be found in the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// An etcd request failed (reading the assignment, committing an offset).
    Etcd,
    /// A partition task ended with an error.
    Partition,
    /// A committed offset could not be read (etcd did not answer).
    OffsetRead,
    /// A value in etcd is not what it should be (a worker registration, a committed offset).
    EtcdValue,
    /// The committed offset is no longer in Kafka.
    OffsetOutOfRange,
    /// Kafka returned an error for a partition.
    Kafka,
    /// Reads of one position kept disagreeing on where the log continues (a jump past the
    /// expected offset that is seen once is read again, and seen again is a gap, not an error).
    OffsetGap,
    /// An upload to S3 failed for good.
    Upload,
    /// An object of a previous owner is already at the key.
    ObjectExists,
    /// A commit was refused: another worker owns the partition now.
    Fenced,
    /// Reading could not prove its offsets: a buffer whose counts did not add up, an existing
    /// object that did not prove it holds the same records, reads that kept disagreeing. The
    /// partition is read again from its committed offset, or stopped; nothing is committed.
    Continuity,
    /// The topic's id is not the one its partition's offsets were committed under (deleted and
    /// created again): the partition is held until an operator sets its offset.
    TopicRecreated,
    /// A value with a line break while `records.newlines = "refuse"`: the partition is held
    /// before it.
    Newline,
}

impl ErrorKind {
    /// The label value, as dashboards and alerts know it.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Etcd => "etcd",
            ErrorKind::Partition => "partition",
            ErrorKind::OffsetRead => "offset-read",
            ErrorKind::EtcdValue => "etcd-value",
            ErrorKind::OffsetOutOfRange => "offset-out-of-range",
            ErrorKind::Kafka => "kafka",
            ErrorKind::OffsetGap => "offset-gap",
            ErrorKind::Upload => "upload",
            ErrorKind::ObjectExists => "object-exists",
            ErrorKind::Fenced => "fenced",
            ErrorKind::Continuity => "continuity",
            ErrorKind::TopicRecreated => "topic-recreated",
            ErrorKind::Newline => "newline",
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error kind label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// Kind.
    pub kind: String,
}

/// Gap reason label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// `retention` or `log`.
    pub reason: String,
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
    /// `ready` and `healthy`, set at each scrape.
    pub health: shell::metrics::Health,
    /// Records written to objects.
    pub records: Counter,
    /// Uncompressed bytes written to objects.
    pub bytes: Counter,
    /// Records without a time (`records.time-source`) written to the `records.no-time` partition.
    pub records_without_time: Counter,
    /// Records whose line breaks `lines` escaped.
    pub records_escaped: Counter,
    /// Records whose value did not fit `parquet.value-schema`, written to dead-letter objects.
    pub records_dead_lettered: Counter,
    /// Objects uploaded.
    pub uploads: Counter,
    /// Upload latency in seconds.
    pub upload_seconds: Histogram,
    /// Seconds a roll waited for a compression slot and an upload slot
    /// (`worker.max-concurrent-rolls`, `worker.max-concurrent-uploads`).
    pub roll_wait_seconds: Histogram,
    /// Seconds compressing a buffer into its object.
    pub compress_seconds: Histogram,
    /// Seconds committing a rolled offset to etcd.
    pub commit_seconds: Histogram,
    /// Errors by kind.
    pub errors: Family<KindLabel, Counter>,
    /// Offsets committed past because Kafka does not hold them, by reason (`retention`,
    /// `log`): written in each object's metadata too.
    pub gap_records: Family<ReasonLabel, Counter>,
    /// Upload attempts that failed and were made again (each re-sends the whole body).
    pub upload_retries: Counter,
    /// Bytes sent again by those attempts.
    pub upload_retried_bytes: Counter,
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
    /// Bytes of this worker's buffer files.
    pub buffer_disk_bytes: U64Gauge,
    /// Bytes free on the buffer folder's filesystem.
    pub disk_free_bytes: U64Gauge,
    /// Kafka bytes by zone relation.
    pub kafka_bytes: Family<TrafficLabel, U64Gauge>,
    /// The part of `kafka_bytes` on connections that carried no records (metadata, the group
    /// coordinator's offset mirror, handshakes).
    pub kafka_protocol_bytes: Family<TrafficLabel, U64Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            records: Counter::default(),
            bytes: Counter::default(),
            records_without_time: Counter::default(),
            records_escaped: Counter::default(),
            records_dead_lettered: Counter::default(),
            uploads: Counter::default(),
            upload_seconds: Histogram::new(exponential_buckets(0.005, 2.0, 14)),
            roll_wait_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            compress_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            commit_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            errors: Family::default(),
            gap_records: Family::default(),
            upload_retries: Counter::default(),
            upload_retried_bytes: Counter::default(),
            lag: Family::default(),
            owned: U64Gauge::default(),
            cross_zone_partitions: U64Gauge::default(),
            waiting_partitions: U64Gauge::default(),
            is_master: U64Gauge::default(),
            buffer_disk_bytes: U64Gauge::default(),
            disk_free_bytes: U64Gauge::default(),
            kafka_bytes: Family::default(),
            kafka_protocol_bytes: Family::default(),
            health: shell::metrics::Health::default(),
        }
    }
}

impl Metrics {
    /// Registers under `zonal_transporter`.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("zonal_transporter");
        for (name, help, counter) in [
            ("records", "Records written to S3 objects", &self.records),
            ("bytes", "Uncompressed bytes written to S3 objects", &self.bytes),
            (
                "records_without_time",
                "Records without a time, in the records.no-time partition",
                &self.records_without_time,
            ),
            ("records_escaped", "Records whose line breaks the lines format escaped", &self.records_escaped),
            (
                "records_dead_lettered",
                "Records whose value did not fit the value schema, in dead-letter objects",
                &self.records_dead_lettered,
            ),
            ("uploads", "Objects uploaded", &self.uploads),
            ("upload_retries", "Upload attempts made again", &self.upload_retries),
            ("upload_retried_bytes", "Bytes sent again by repeated upload attempts", &self.upload_retried_bytes),
        ] {
            r.register(name, help, counter.clone());
        }
        for (name, help, h) in [
            ("upload_seconds", "Upload latency", &self.upload_seconds),
            ("roll_wait_seconds", "Time a roll waited for compression and upload slots", &self.roll_wait_seconds),
            ("compress_seconds", "Time compressing a buffer into its object", &self.compress_seconds),
            ("commit_seconds", "Time committing a rolled offset to etcd", &self.commit_seconds),
        ] {
            r.register(name, help, h.clone());
        }
        r.register("errors", "Errors by kind", self.errors.clone());
        r.register("gap_records", "Offsets not in Kafka, committed past, by reason", self.gap_records.clone());
        r.register("lag_records", "Records behind the end of the partition", self.lag.clone());
        for (name, help, gauge) in [
            ("owned_partitions", "Partitions this worker owns", &self.owned),
            ("cross_zone_partitions", "Partitions assigned across zones (master)", &self.cross_zone_partitions),
            ("waiting_partitions", "Partitions waiting for a departed worker (master)", &self.waiting_partitions),
            ("is_master", "1 on the elected master", &self.is_master),
            ("buffer_disk_bytes", "Bytes of this worker's buffer files", &self.buffer_disk_bytes),
            ("disk_free_bytes", "Bytes free on the buffer folder's filesystem", &self.disk_free_bytes),
        ] {
            r.register(name, help, gauge.clone());
        }
        shell::metrics::register_traffic(r, &self.kafka_bytes, &self.kafka_protocol_bytes);
        self.health.register(r);
    }

    /// Counts an error of `kind`.
    pub fn error(&self, kind: ErrorKind) {
        self.errors.get_or_create(&KindLabel { kind: kind.as_str().to_owned() }).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The labels are what dashboards, alerts and the integration tests look for.
    #[test]
    fn error_kinds_keep_their_labels() {
        let kinds = [
            (ErrorKind::Etcd, "etcd"),
            (ErrorKind::Partition, "partition"),
            (ErrorKind::OffsetRead, "offset-read"),
            (ErrorKind::EtcdValue, "etcd-value"),
            (ErrorKind::OffsetOutOfRange, "offset-out-of-range"),
            (ErrorKind::Kafka, "kafka"),
            (ErrorKind::OffsetGap, "offset-gap"),
            (ErrorKind::Upload, "upload"),
            (ErrorKind::ObjectExists, "object-exists"),
            (ErrorKind::Fenced, "fenced"),
            (ErrorKind::Continuity, "continuity"),
            (ErrorKind::TopicRecreated, "topic-recreated"),
            (ErrorKind::Newline, "newline"),
        ];
        for (kind, label) in kinds {
            assert_eq!(kind.as_str(), label);
            assert_eq!(kind.to_string(), label);
        }
        let m = Metrics::default();
        m.error(ErrorKind::OffsetRead);
        assert_eq!(m.errors.get_or_create(&KindLabel { kind: "offset-read".into() }).get(), 1);
    }
}
