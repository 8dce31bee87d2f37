//! The agent's `/status` document (JSON): its zone and where it came from, and per stream the
//! partitions it writes to and each file with its read and acknowledged offsets.

use serde::Serialize;

/// `/status` body.
#[derive(Debug, Serialize)]
pub struct Status {
    /// Zone label, if known.
    pub zone: Option<String>,
    /// Where the zone came from.
    pub zone_source: String,
    /// Topology generation in use.
    pub topology_generation: u64,
    /// Bytes sent and not yet acknowledged.
    pub in_flight_bytes: u64,
    /// Streams.
    pub streams: Vec<StreamStatus>,
}

/// One stream in `/status`.
#[derive(Debug, Serialize)]
pub struct StreamStatus {
    /// Name.
    pub name: String,
    /// Topic.
    pub topic: String,
    /// Partitioning strategy.
    pub partitioning: crate::config::Partitioning,
    /// Zone-local partitions (zone-aware selection).
    pub local_partitions: Vec<i32>,
    /// Why the selection is not zone-local, if it is not.
    pub fallback_reason: Option<String>,
    /// Bytes this stream has sent and Kafka has not acknowledged yet.
    pub in_flight_bytes: u64,
    /// The most it may hold: its share of `max-in-flight-bytes`.
    pub in_flight_limit: u64,
    /// Why the last scan could not list every folder of the globs, if it could not.
    pub listing_error: Option<String>,
    /// Files.
    pub files: Vec<FileStatus>,
}

/// One file in `/status`.
#[derive(Debug, Serialize)]
pub struct FileStatus {
    /// Current path.
    pub path: String,
    /// Device.
    pub dev: u64,
    /// Inode.
    pub ino: u64,
    /// Bytes read.
    pub read_offset: u64,
    /// Bytes acknowledged (the checkpoint).
    pub acked_offset: u64,
    /// Size at the last look.
    pub size: u64,
    /// Renamed away or deleted, being finished.
    pub orphan: bool,
}
