//! Coordination through etcd: worker registration under a lease, the lease's validity as the
//! worker sees it, partition ownership (fencing) and offset commits conditioned on ownership,
//! and the assignment document.
//!
//! ```text
//!  /<cluster>/workers/<id>          WorkerInfo JSON, bound to the worker's lease
//!  /<cluster>/left/<id>             clean-stop mark, on a lease of its own (no grace needed)
//!  /<cluster>/master                election (etcd's election API), value = worker id
//!  /<cluster>/assignment            assignment summary, written by the master (txn: still leader)
//!  /<cluster>/assignment/<worker>   that worker's share of the assignment (see `shares`)
//!  /<cluster>/owners/<topic>/<p>    worker id, bound to its lease: the fence
//!  /<cluster>/offsets/<topic>/<p>   next offset to read, written by txn "owner = me, my lease"
//!  /<cluster>/topic-ids/<topic>/<p> the id of the topic those offsets were read from (`topic_id`)
//! ```
//!
//! By concern: `connect` (clients), `lease` (the lease and its keepalive, on an `OwnThread`),
//! `registration` (workers and clean stops, and the master's incremental view of them), `paged`
//! (prefixes read a page at a time, under the client's message limit), `ownership` (the fence, committed offsets, and the
//! operators' view of both).

pub mod batch;
mod commit;
mod connect;
mod lease;
mod own_thread;
mod ownership;
pub mod paged;
mod registration;
pub mod topic_id;

use std::collections::BTreeMap;

use az_core::TopicPartition;
use serde::{Deserialize, Serialize};

pub use batch::Batcher;
pub use commit::{CommitStart, Committed, commit, commit_start};
pub use connect::{connect, connect_untimed};
pub use lease::{Lease, LeaseState, lease};
pub use own_thread::OwnThread;
pub use ownership::{
    Acquire, CommittedError, SetOffset, Taken, acquire, committed, offsets, owner_released, owners, release,
    set_offset, stored_offset,
};
pub use registration::{
    MAX_RATES, ReadCost, Registrations, Registry, WorkerInfo, clear_left, left, mark_left, register, registered_rates,
    workers,
};

/// The master's assignment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AssignmentDoc {
    /// Increases with every change.
    pub generation: u64,
    /// Master that wrote it.
    pub master: String,
    /// Partition -> worker id.
    pub owners: BTreeMap<TopicPartition, String>,
    /// Partition -> zone the partition is read without crossing zones from (leader's zone),
    /// when known.
    pub zones: BTreeMap<TopicPartition, String>,
    /// Worker id -> zone label, for every worker mentioned.
    pub workers: BTreeMap<String, String>,
    /// Partitions assigned across zones.
    pub cross_zone: usize,
    /// Partitions held for departed workers in their grace period.
    pub waiting: usize,
    /// Unix ms when written.
    pub written_at_ms: i64,
    /// Departed workers whose partitions wait for them -> Unix ms when they were noticed gone.
    #[serde(default)]
    pub departed_ms: BTreeMap<String, i64>,
}

/// Key layout under `/<cluster>/`.
#[derive(Debug, Clone)]
pub struct Keys {
    root: String,
}

impl Keys {
    /// The layout of a fleet.
    pub fn new(cluster: &str) -> Keys {
        Keys { root: format!("/{cluster}") }
    }
    /// Worker registrations prefix.
    pub fn workers(&self) -> String {
        format!("{}/workers/", self.root)
    }
    /// One worker.
    pub fn worker(&self, id: &str) -> String {
        format!("{}/workers/{id}", self.root)
    }
    /// Marks of workers that stopped cleanly (their partitions need no grace period).
    pub fn left(&self) -> String {
        format!("{}/left/", self.root)
    }
    /// One worker's clean-stop mark.
    pub fn left_mark(&self, id: &str) -> String {
        format!("{}/left/{id}", self.root)
    }
    /// Election name.
    pub fn election(&self) -> String {
        format!("{}/master", self.root)
    }
    /// Assignment summary (see `shares`).
    pub fn assignment(&self) -> String {
        format!("{}/assignment", self.root)
    }
    /// Prefix of the workers' assignment shares.
    pub fn shares(&self) -> String {
        format!("{}/assignment/", self.root)
    }
    /// One worker's assignment share.
    pub fn share(&self, worker: &str) -> String {
        format!("{}/assignment/{worker}", self.root)
    }
    /// Owner of a partition.
    pub fn owner(&self, tp: &TopicPartition) -> String {
        format!("{}/owners/{tp}", self.root)
    }
    /// Owners prefix.
    pub fn owners(&self) -> String {
        format!("{}/owners/", self.root)
    }
    /// Committed offset of a partition.
    pub fn offset(&self, tp: &TopicPartition) -> String {
        format!("{}/offsets/{tp}", self.root)
    }
    /// The id of the topic a partition's committed offset belongs to (`topic_id`).
    pub fn topic_id(&self, tp: &TopicPartition) -> String {
        format!("{}/topic-ids/{tp}", self.root)
    }
    /// Offsets prefix.
    pub fn offsets(&self) -> String {
        format!("{}/offsets/", self.root)
    }
}
