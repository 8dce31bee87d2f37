//! The agent's Prometheus metrics, registered once and shared by every stream.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// Label of per-stream metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StreamLabel {
    /// Stream name.
    pub stream: String,
}

/// Labels of per-file metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FileLabel {
    /// Stream name.
    pub stream: String,
    /// File path.
    pub path: String,
}

/// Labels of error counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabel {
    /// Stream name.
    pub stream: String,
    /// Kind of error.
    pub kind: String,
}

/// What went wrong, as the `kind` label of `zonal_agent_errors` and the `kind` field of the log
/// line that goes with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Reading a tailed file failed; it is read again from the same offset.
    Read,
    /// Writing or removing a checkpoint failed; the next round tries again.
    Checkpoint,
    /// A rotated file was gone before it was read to the end.
    RotatedFileGone,
    /// A keyed stream's line had no key; it went to a partition of its own choosing.
    KeyMissing,
    /// librdkafka refused a record at once: the partition or leader is unknown to it yet.
    UnknownPartition,
    /// librdkafka refused a record at once for another reason; it is retried.
    Send,
    /// Kafka refused a record for a reason an operator must fix (ACL, size); it is retried.
    Refused,
    /// A record's delivery failed; it is retried.
    Delivery,
    /// A folder of the globs could not be listed; its files are kept as they are.
    List,
}

impl ErrorKind {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Read => "read",
            ErrorKind::Checkpoint => "checkpoint",
            ErrorKind::RotatedFileGone => "rotated-file-gone",
            ErrorKind::KeyMissing => "key-missing",
            ErrorKind::UnknownPartition => "unknown-partition",
            ErrorKind::Send => "send",
            ErrorKind::Refused => "refused",
            ErrorKind::Delivery => "delivery",
            ErrorKind::List => "list",
        }
    }
}

/// Labels of fallback reasons.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// Stream name.
    pub stream: String,
    /// Fallback reason.
    pub reason: String,
}

/// Labels of Kafka traffic by zone relation.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TrafficLabel {
    /// Stream name.
    pub stream: String,
    /// `same-zone`, `cross-zone` or `unknown`.
    pub zone: String,
    /// `tx` or `rx`.
    pub direction: String,
}

/// Labels of a stream's identity: where its bytes go and which zone they come from.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StreamInfoLabel {
    /// Stream name.
    pub stream: String,
    /// The topic it writes to.
    pub topic: String,
    /// The agent's zone (`unknown` until discovered).
    pub zone: String,
    /// The rack label the brokers use for that zone (empty when no broker is in it).
    pub rack: String,
}

type U64Gauge = Gauge<u64, AtomicU64>;

/// Every metric.
#[derive(Debug, Default)]
pub struct Metrics {
    /// `ready` and `healthy`, set at each scrape.
    pub health: shell::metrics::Health,
    /// Lines (events) read and handed to Kafka.
    pub lines: Family<StreamLabel, Counter>,
    /// Payload bytes handed to Kafka.
    pub bytes: Family<StreamLabel, Counter>,
    /// Batches sent.
    pub batches: Family<StreamLabel, Counter>,
    /// Lines acknowledged by Kafka.
    pub acked_lines: Family<StreamLabel, Counter>,
    /// Lines truncated to the maximum message size.
    pub truncated_lines: Family<StreamLabel, Counter>,
    /// Lines not in the stream's container log format (`format = "cri" | "docker"`), shipped
    /// as they are.
    pub malformed_lines: Family<StreamLabel, Counter>,
    /// Errors by [`ErrorKind`].
    pub errors: Family<ErrorLabel, Counter>,
    /// Copytruncate rotations detected.
    pub truncations: Family<StreamLabel, Counter>,
    /// Rename rotations detected.
    pub renames: Family<StreamLabel, Counter>,
    /// Rotated files found again and finished (after a restart, or the copy of a copytruncate).
    pub recovered_files: Family<StreamLabel, Counter>,
    /// Bytes that could not be read because their file was gone (compressed or deleted before
    /// the agent read them, or truncated without a copy beside it).
    pub unrecoverable_bytes: Family<StreamLabel, Counter>,
    /// Bytes of each file not yet acknowledged (size minus checkpoint offset).
    pub lag_bytes: Family<FileLabel, U64Gauge>,
    /// Number of partitions the stream writes to.
    pub local_partitions: Family<StreamLabel, U64Gauge>,
    /// 1 for the stream's current fallback reason, 0 for the others.
    pub fallback: Family<ReasonLabel, U64Gauge>,
    /// Kafka bytes by zone relation, from librdkafka statistics.
    pub kafka_bytes: Family<TrafficLabel, U64Gauge>,
    /// The part of `kafka_bytes` on connections that carried no records (metadata, admin,
    /// handshakes): a zone-aware stream's cross-zone bytes should all be here.
    pub kafka_protocol_bytes: Family<TrafficLabel, U64Gauge>,
    /// Bytes sent to Kafka and not yet acknowledged.
    pub in_flight_bytes: U64Gauge,
    /// Memory holding lines read and not yet handed to Kafka, by stream.
    pub unsent_bytes: Family<StreamLabel, U64Gauge>,
    /// 1 per stream with its topic, zone and rack: what `zonal-agent leaders --scrape` joins
    /// `bytes` with to learn each zone's produce rate.
    pub stream_info: Family<StreamInfoLabel, U64Gauge>,
    /// The `stream_info` series set at the last scrape, removed when they change.
    pub stream_info_shown: std::sync::Mutex<Vec<StreamInfoLabel>>,
}

impl Metrics {
    /// Registers every metric under the `zonal_agent` prefix.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("zonal_agent");
        let per_stream = [
            ("lines", "Lines read and handed to Kafka", &self.lines),
            ("bytes", "Payload bytes handed to Kafka", &self.bytes),
            ("batches", "Batches sent (each to one partition)", &self.batches),
            ("acked_lines", "Lines acknowledged by Kafka", &self.acked_lines),
            ("truncated_lines", "Lines truncated to max-message-bytes", &self.truncated_lines),
            (
                "malformed_lines",
                "Lines not in the stream's container log format, shipped as they are",
                &self.malformed_lines,
            ),
            ("truncations", "Copytruncate rotations detected", &self.truncations),
            ("renames", "Rename rotations detected", &self.renames),
            ("recovered_files", "Rotated files found again by inode or head and finished", &self.recovered_files),
            (
                "unrecoverable_bytes",
                "Bytes lost because their file was gone before they were read",
                &self.unrecoverable_bytes,
            ),
        ];
        for (name, help, family) in per_stream {
            r.register(name, help, family.clone());
        }
        r.register("errors", "Errors by kind", self.errors.clone());
        r.register("lag_bytes", "Bytes of a file not yet acknowledged by Kafka", self.lag_bytes.clone());
        r.register("local_partitions", "Partitions the stream writes to", self.local_partitions.clone());
        r.register("fallback", "1 when the stream is not zone-local, by reason", self.fallback.clone());
        r.register("in_flight_bytes", "Bytes sent and not yet acknowledged", self.in_flight_bytes.clone());
        r.register("unsent_bytes", "Memory holding lines read and not yet sent", self.unsent_bytes.clone());
        r.register("stream_info", "1 per stream: its topic, the agent's zone and rack", self.stream_info.clone());
        shell::metrics::register_traffic(r, &self.kafka_bytes, &self.kafka_protocol_bytes);
        self.health.register(r);
    }

    /// Counts an error of `kind` on `stream`.
    pub fn error(&self, stream: &str, kind: ErrorKind) {
        self.errors.get_or_create(&ErrorLabel { stream: stream.to_owned(), kind: kind.as_str().to_owned() }).inc();
    }

    /// The per-stream label.
    pub fn stream(stream: &str) -> StreamLabel {
        StreamLabel { stream: stream.to_owned() }
    }
}
