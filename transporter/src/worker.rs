//! A worker: follows the assignment, owns partitions through fenced etcd keys, and moves each
//! owned partition's records to S3 exactly once.
//!
//! ```text
//!  assignment (etcd) ──control loop──> desired partitions                          [control]
//!      new: acquire /owners/<tp> (waits for the old owner's release or lease expiry) [partition]
//!           ──> committed offset ──> split partition queue + incremental_assign
//!           ──> records ──> Buffer ──roll (bytes | records | age timer)──> S3 object  [pump]
//!           ──> commit offset in etcd (txn: still owner) ──> mirror to the Kafka group [roll]
//!      gone: flush (upload + commit) ──> unassign ──> release the owner key
//!  lease lost: every partition task stops at once, buffers are discarded (re-read later)
//!  librdkafka statistics ──> lag per partition; records read ──> rates for the master [stats]
//! ```
//!
//! The consumer is one for the whole worker (`consumer`): each owned partition reads its own
//! split queue, so a slow partition never holds up another.

mod append;
mod consumer;
mod control;
mod dead_letter;
pub mod disk;
mod keys;
mod partition;
mod pump;
mod range;
mod roll;
mod stats;
mod topic_check;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};

use az_core::TopicPartition;
use etcd_client::Client;
use rdkafka::consumer::StreamConsumer;
use serde::Serialize;

use crate::config::TransporterConfig;
use crate::coord::Keys;
use crate::metrics::Metrics;
use crate::shares::Share;

pub use consumer::{WorkerContext, consumer, consumer_config};

/// What `/status` shows of an owned partition.
#[derive(Debug, Clone, Default, Serialize)]
pub struct OwnedStatus {
    /// Next offset to commit from (everything before is in S3 and committed).
    pub committed: i64,
    /// Last offset read.
    pub position: i64,
    /// Objects uploaded since taking ownership.
    pub uploads: u64,
    /// Records in the open buffer.
    pub buffered: u64,
    /// The id of the topic the partition started in, when the cluster says (it is the one
    /// recorded in etcd then): every upload and commit is made only while it still is.
    #[serde(skip)]
    pub topic_id: Option<String>,
}

/// Everything a worker's tasks share.
pub struct Worker {
    /// Configuration.
    pub cfg: TransporterConfig,
    /// Worker id.
    pub id: String,
    /// etcd keys.
    pub keys: Keys,
    /// etcd client.
    pub etcd: Client,
    /// The partitions' fenced writes (taking, committing, releasing), gathered (`coord::batch`).
    pub txns: crate::coord::Batcher,
    /// S3 client.
    pub s3: aws_sdk_s3::Client,
    /// The one consumer; each owned partition reads its own split queue.
    pub consumer: Arc<StreamConsumer<WorkerContext>>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Owned partitions.
    pub owned: Mutex<BTreeMap<TopicPartition, OwnedStatus>>,
    /// Which time partition a record goes to (`records`, the key template).
    pub times: crate::timepart::TimeParts,
    /// How every buffer encodes and finishes its records (`s3`, `records`, `parquet`).
    pub layout: crate::buffer::Layout,
    /// The files buffers are written to (`worker.buffer-dir/<id>`), reused from roll to roll.
    pub buffers: Arc<crate::buffer::Slots>,
    /// Compressions allowed at once.
    pub rolls: tokio::sync::Semaphore,
    /// Uploads (with their commits) allowed at once.
    pub uploads: tokio::sync::Semaphore,
    /// This worker's share of the assignment, as last read or watched.
    pub share: RwLock<Option<Share>>,
    /// Bytes per second per owned partition, for the master's weights.
    pub rates: Mutex<BTreeMap<TopicPartition, f64>>,
    /// Why S3 refused the last upload that failed for good (a lasting 4xx); cleared by the next
    /// upload that lands. `/readyz` is red while it is set.
    pub upload_refused: Mutex<Option<String>>,
    /// The buffer folder's lock, held while the worker lives (see `app::lock_buffers`).
    pub buffer_lock: std::fs::File,
    /// This deployment's source, `<kafka cluster id>/<etcd.cluster>`: in every object's
    /// metadata and the prefix's deployment marker (`upload::deployment`).
    pub source: String,
    /// Topic ids as last asked (`topic_check`), with when.
    pub topic_ids: Mutex<BTreeMap<String, (Option<String>, std::time::Instant)>>,
    /// Held while a topic id is asked of the cluster (one question at a time).
    pub topic_lookup: tokio::sync::Mutex<()>,
    /// The buffer folder's use against its bounds (`disk`).
    pub disk: disk::Disk,
    /// The control and master loops' heartbeats, for `/healthz`.
    pub health: crate::health::Health,
}

/// How a partition task should stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Keep running.
    Run,
    /// Upload and commit what is buffered, then release (shutdown).
    Flush,
    /// The partition moved to another worker: as `Flush`, except that a young, small buffer
    /// is dropped for the next owner to read again (`RollConfig::hand_over_by_dropping`).
    Handoff,
    /// Stop at once, discard the buffer (ownership lost).
    Abandon,
}
