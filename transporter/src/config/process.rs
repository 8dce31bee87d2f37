//! The `[worker]`, `[assignment]` and `[http]` sections: this process as a worker (its id,
//! capacity and buffers), how the master assigns, and where the HTTP endpoints listen.

use std::path::PathBuf;

use anyhow::bail;
use serde::{Deserialize, Serialize};

/// This worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct WorkerConfig {
    /// Worker id; defaults to the host name. Must be stable across restarts for the grace
    /// period to give partitions back.
    pub id: Option<String>,
    /// Relative capacity (1.0 = a standard worker).
    pub capacity: f64,
    /// How long a departed worker's partitions wait for it, in seconds.
    pub grace_period_secs: u64,
    /// Directory for buffer files.
    pub buffer_dir: PathBuf,
    /// Buffers compressed at once; each holds a compressor (a few MiB at zstd level 3) while
    /// it runs. Defaults to the CPUs this process may use (its cgroup's quota), at least 2 and
    /// at most 8: compressing is CPU work, and more at once than there are cores only holds
    /// more compressors in memory.
    pub max_concurrent_rolls: usize,
    /// Objects uploaded and committed at once, once compressed; each streams its file from
    /// disk, so it holds little memory, and spends most of its time waiting for S3 and etcd.
    pub max_concurrent_uploads: usize,
    /// How long a shutdown (SIGTERM) waits for the partitions to upload and commit what they
    /// buffered, in seconds; past it, what is left is dropped (the next owner reads it again
    /// from Kafka) so that the process ends within a pod's `terminationGracePeriodSeconds`
    /// even while S3 refuses or hangs.
    pub shutdown_timeout_secs: u64,
    /// Bytes the buffer files (open buffers and objects waiting to upload) may hold together;
    /// past it, partitions roll early and read nothing more until uploads make room (records
    /// wait in Kafka). 0: no bound. Keep it under the volume's size (the manifests' `emptyDir`
    /// `sizeLimit`).
    pub max_buffer_bytes: u64,
    /// Bytes that must stay free on the buffer folder's filesystem; below it, as past
    /// `max-buffer-bytes`. 0: not checked.
    pub min_free_bytes: u64,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            id: None,
            capacity: 1.0,
            grace_period_secs: 30,
            buffer_dir: PathBuf::from("/var/lib/zonal-transporter"),
            max_concurrent_rolls: default_rolls(),
            max_concurrent_uploads: 32,
            shutdown_timeout_secs: 20,
            max_buffer_bytes: 16 * 1024 * 1024 * 1024,
            min_free_bytes: 512 * 1024 * 1024,
        }
    }
}

/// The CPUs this process may use, from 2 to 8 (see `max_concurrent_rolls`).
fn default_rolls() -> usize {
    std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get).clamp(2, 8)
}

impl WorkerConfig {
    /// Checks what serde cannot: a positive capacity, an id that can be part of an etcd key.
    pub(super) fn validate(&self) -> anyhow::Result<()> {
        if self.capacity.is_nan() || self.capacity <= 0.0 {
            bail!("worker.capacity: must be positive, got {}", self.capacity);
        }
        if self.id.as_deref().is_some_and(|i| i.is_empty() || i.contains('/')) {
            bail!("worker.id: must be non-empty without '/'");
        }
        Ok(())
    }
}

/// Master settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct AssignmentConfig {
    /// Assign partitions to workers in their zone. `false` balances without regard to zones
    /// (the baseline the demo compares against).
    pub zone_aware: bool,
    /// Seconds a partition's new leader must lead before the partition moves to a worker in the
    /// leader's zone (a rolling broker restart moves leaders away and back within a minute or
    /// two; following each move would hand every partition over twice). Meanwhile it is read
    /// across zones. 0 follows every move at once.
    pub leader_settle_secs: u64,
    /// Milliseconds a new deployment's first assignment waits for the fleet to form: it is made
    /// once no worker has registered for this long (at most five times as long after the
    /// master's start), as Kafka's `group.initial.rebalance.delay.ms` does. Without it the first
    /// of workers started together took every partition, and handed two thirds of them over a
    /// moment later. Workers that start seconds apart (pods pulling their image) are not waited
    /// for: a move of a partition read only briefly is cheap (its young buffer is dropped and
    /// read again). Only a deployment with no assignment stored waits; 0 does not wait.
    pub formation_ms: u64,
}

impl Default for AssignmentConfig {
    fn default() -> Self {
        AssignmentConfig { zone_aware: true, leader_settle_secs: 60, formation_ms: 250 }
    }
}

/// HTTP settings (`http.listen`, on loopback port 9465 by default).
pub type HttpConfig = shell::http::HttpConfig<TransporterPort>;

/// The transporter's default HTTP port.
#[derive(Debug)]
pub struct TransporterPort;

impl shell::http::DefaultPort for TransporterPort {
    const PORT: u16 = 9465;
}
