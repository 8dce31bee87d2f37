//! One stream's configuration: which files, which topic, how records are cut and sent.

use serde::{Deserialize, Serialize};

pub use crate::partition::Partitioning;

/// Compression of produced batches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Compression {
    /// No compression.
    None,
    /// gzip.
    Gzip,
    /// Snappy.
    Snappy,
    /// LZ4.
    #[default]
    Lz4,
    /// Zstandard.
    Zstd,
}

impl Compression {
    /// The librdkafka `compression.type` value.
    pub fn as_librdkafka(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

/// How a keyed stream finds a line's key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum KeyConfig {
    /// A regex whose first capture group (or a group named `key`) is the key.
    Regex(String),
    /// A top-level field of a JSON line; strings are used as they are, other values as JSON.
    JsonField(String),
}

/// Where to start in a file that has no checkpoint when the agent starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StartAt {
    /// From the first byte.
    #[default]
    Beginning,
    /// From the current end (only new lines), for files created before the stream was first
    /// tailed; a file created since (while the agent was down, say) and files appearing later
    /// start at the beginning.
    End,
}

/// One log stream: files matching globs, shipped to one topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct StreamConfig {
    /// Name used in metrics, status and checkpoint paths; letters, digits, `-` and `_`.
    pub name: String,
    /// Glob patterns of files to tail.
    pub paths: Vec<String>,
    /// Glob patterns of files to skip even when `paths` match them.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Kafka topic.
    pub topic: String,
    /// Partition choice.
    #[serde(default)]
    pub partitioning: Partitioning,
    /// Key extraction (required for `keyed`, ignored otherwise).
    #[serde(default)]
    pub key: Option<KeyConfig>,
    /// Regex matching the first line of a multi-line event; lines that do not match are
    /// appended to the current event.
    #[serde(default)]
    pub multiline_start: Option<String>,
    /// How long an incomplete multi-line event waits for more lines at the end of a file, in
    /// milliseconds.
    #[serde(default = "default_multiline_timeout_ms")]
    pub multiline_timeout_ms: u64,
    /// Longest message in bytes; longer lines are truncated to it and counted.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// Lines per batch; a batch goes to a single partition.
    #[serde(default = "default_batch_lines")]
    pub batch_lines: usize,
    /// Bytes per batch (whichever of lines or bytes is reached first).
    #[serde(default = "default_batch_bytes")]
    pub batch_bytes: usize,
    /// librdkafka `linger.ms`: how long the producer waits to fill a request.
    #[serde(default = "default_linger_ms")]
    pub linger_ms: u64,
    /// Compression codec.
    #[serde(default)]
    pub compression: Compression,
    /// Where to start in files without a checkpoint at startup.
    #[serde(default)]
    pub start_at: StartAt,
    /// How lines are written: `raw` (as they are), `cri` (containerd and CRI-O:
    /// `<time> <stdout|stderr> <P|F> <message>`, parts joined) or `docker` (json-file). For
    /// `cri` and `docker` the record's value is the message, its timestamp the runtime's, and
    /// its `log.iostream` header the stream; a line not in the format is shipped as it is and
    /// counted (`malformed_lines`).
    #[serde(default)]
    pub format: crate::container::LogFormat,
    /// Attach the pod and container a file belongs to as record headers (`k8s.namespace.name`,
    /// `k8s.pod.name`, `k8s.pod.uid`, `k8s.container.name`, `container.id`), read from kubelet's
    /// or docker's folder and file names; files outside those layouts get none.
    #[serde(default = "default_true")]
    pub pod_metadata: bool,
    /// This stream's share of `max-in-flight-bytes` and `max-unsent-bytes`, relative to the
    /// other streams' (1 each by default: equal parts). A stream never holds more than its part, so one whose records
    /// Kafka refuses or whose partitions have no leader cannot hold up the others.
    #[serde(default = "default_share")]
    pub in_flight_share: u32,
    /// Attach `zonal.source` (`<host>/<dev>-<ino>-<crc of the first line>`: the file's content)
    /// and `zonal.offset` (where
    /// in it the line ends) to each record: together a key by which a consumer drops the
    /// duplicates that at-least-once delivery sends after a crash.
    #[serde(default = "default_true")]
    pub source_headers: bool,
}

fn default_share() -> u32 {
    1
}

fn default_true() -> bool {
    true
}

fn default_multiline_timeout_ms() -> u64 {
    1000
}
fn default_max_message_bytes() -> usize {
    1_000_000
}
fn default_batch_lines() -> usize {
    1000
}
fn default_batch_bytes() -> usize {
    1024 * 1024
}
fn default_linger_ms() -> u64 {
    10
}
