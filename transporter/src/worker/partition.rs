//! One partition task, from taking ownership to giving it back: it waits for the fence, reads
//! where to start (never guessing), reads the partition's own queue through `pump`, and releases.
//!
//! ```text
//!  acquire /owners/<tp> ──Owned { by, revision }──> watch the key's deletion (at most a lease TTL), again
//!                      ──etcd error──> again after 200 ms doubling to 5 s, jittered
//!      └─Acquired (with the offset and topic id read in the same transaction)
//!          ──> committed offset ──Unreachable──> read again after 500 ms
//!                                    └──Invalid─────> hold (2 s), until an operator sets it
//!          ──Some(o)──────────────────────────────────────────────> split queue + incremental_assign ──> pump
//!          ──None──> ListOffsets (kafka.start-from: log start | end) ──> committed at once,
//!                    with the topic's id, in one transaction ──────────────────────────────┘
//!  pump ends ──> incremental_unassign ──> release (while the lease is valid)
//! ```

use std::sync::{Arc, PoisonError};
use std::time::Duration;

use anyhow::Context;
use az_core::TopicPartition;
use rdkafka::consumer::Consumer;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::watch;

use super::{OwnedStatus, Stop, Worker};
use crate::config::StartFrom;
use crate::coord::{self, Acquire, CommitStart, LeaseState};
use crate::metrics::ErrorKind;

/// The first pause after a failed acquisition, and the longest.
const ACQUIRE_BACKOFF_FIRST: Duration = Duration::from_millis(200);
const ACQUIRE_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// `d` spread over its second half and once more (0.5 to 1.5 times), so that partitions that
/// failed together do not try again together.
fn jittered(d: Duration) -> Duration {
    d.mul_f64(0.5 + rand::random::<f64>())
}

/// Where an owned partition starts reading, and the id of its topic as recorded in etcd then
/// (`None` when the cluster does not say: nothing is checked), which its commits compare.
pub(super) struct Started {
    /// The first offset to read.
    pub(super) offset: i64,
    /// The topic's recorded id.
    pub(super) topic_id: Option<String>,
}

/// Where a partition starts, once owned.
enum Start {
    /// From this committed offset, or, without one, from `kafka.start-from`.
    At(Option<i64>),
    /// Told to stop (or the lease became invalid) before it could start.
    Stopped,
}

impl Worker {
    /// Owns one partition until told to stop or fenced.
    pub(super) async fn partition(
        self: &Arc<Self>,
        tp: &TopicPartition,
        lease: watch::Receiver<LeaseState>,
        mut stop: watch::Receiver<Stop>,
    ) -> anyhow::Result<()> {
        let Some(taken) = self.acquire(tp, &lease, &mut stop).await else {
            return Ok(());
        };
        let start = match self.start(tp, taken.as_ref(), &lease, &mut stop).await {
            Start::At(Some(o)) => {
                let recorded = taken.map(|t| t.topic_id);
                self.same_topic(tp, o, recorded, &lease, &mut stop).await
            }
            Start::At(None) => self.resolve_start(tp, &lease, &mut stop).await,
            Start::Stopped => None,
        };
        let Some(Started { offset: start, topic_id }) = start else {
            let _ = coord::release(&self.txns, &self.keys, tp, &self.id).await;
            return Ok(());
        };
        let offset = Offset::Offset(start);
        tracing::info!(partition = %tp, ?offset, "owning partition");
        let queue = self
            .consumer
            .split_partition_queue(&tp.topic, tp.partition)
            .with_context(|| format!("splitting the queue of {tp}"))?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&tp.topic, tp.partition, offset)?;
        self.consumer.incremental_assign(&tpl).with_context(|| format!("assigning {tp}"))?;
        self.owned
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(tp.clone(), OwnedStatus { committed: start, position: start - 1, topic_id, ..Default::default() });

        let result = self.pump(tp, &queue, &lease, &mut stop, start).await;

        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&tp.topic, tp.partition);
        if let Err(e) = self.consumer.incremental_unassign(&tpl) {
            tracing::warn!(partition = %tp, error = %e, "unassign failed");
        }
        drop(queue);
        if lease.borrow().valid()
            && let Err(e) = coord::release(&self.txns, &self.keys, tp, &self.id).await
        {
            tracing::warn!(partition = %tp, error = %format!("{e:#}"), "release failed; the owner key expires with the lease");
        }
        result
    }

    /// Fencing: waits until the previous owner released or its lease expired, and takes the
    /// owner key. While another holds it, the key is watched for its deletion (bounded by a
    /// lease's time to live, then tried again); etcd errors are tried again after a backoff of
    /// 200 ms doubling to 5 s, spread by a jitter so that a fleet coming back after an etcd
    /// restart does not come back at once. What the taking transaction read with the key
    /// (`Some(None)` when the key was ours already); None when told to stop, or the lease
    /// became invalid, first.
    async fn acquire(
        &self,
        tp: &TopicPartition,
        lease: &watch::Receiver<LeaseState>,
        stop: &mut watch::Receiver<Stop>,
    ) -> Option<Option<coord::Taken>> {
        let mut waited = false;
        let mut backoff = ACQUIRE_BACKOFF_FIRST;
        let watch_bound = Duration::from_secs(u64::try_from(self.cfg.etcd.lease_ttl_secs).unwrap_or(10) + 2);
        loop {
            if *stop.borrow() != Stop::Run {
                return None;
            }
            let l = *lease.borrow();
            if !l.valid() {
                return None;
            }
            let pause = match coord::acquire(&self.txns, &self.keys, tp, &self.id, l.id).await {
                Ok(Acquire::Acquired(taken)) => return Some(taken),
                Ok(Acquire::Owned { by, revision }) => {
                    if !waited {
                        tracing::info!(partition = %tp, owner = by, "waiting for the previous owner to release or expire");
                        waited = true;
                    }
                    let released = coord::owner_released(&self.etcd, &self.keys, tp, revision);
                    tokio::select! {
                        r = tokio::time::timeout(watch_bound, released) => match r {
                            Ok(Ok(())) | Err(_) => {
                                backoff = ACQUIRE_BACKOFF_FIRST;
                                continue;
                            }
                            Ok(Err(e)) => {
                                tracing::debug!(partition = %tp, error = %format!("{e:#}"), "watching the owner key failed");
                                backoff
                            }
                        },
                        _ = stop.changed() => continue,
                    }
                }
                Err(e) => {
                    // The taking transaction also reads the committed offset: a refused read
                    // (etcd permissions) is reported here, and the partition is not taken.
                    let kind = ErrorKind::Etcd;
                    self.metrics.error(kind);
                    tracing::warn!(kind = kind.as_str(), partition = %tp, error = %format!("{e:#}"), "acquire failed");
                    backoff
                }
            };
            backoff = (backoff * 2).min(ACQUIRE_BACKOFF_MAX);
            tokio::select! {
                _ = tokio::time::sleep(jittered(pause)) => {}
                _ = stop.changed() => {}
            }
        }
    }

    /// A partition never committed starts where `kafka.start-from` says, resolved once to an
    /// offset (ListOffsets) and committed at once: reading then starts from a known offset with
    /// its chain set, and a restart or a move before the first object does not resolve
    /// "latest" again and skip what came between. None when told to stop first.
    async fn resolve_start(
        &self,
        tp: &TopicPartition,
        lease: &watch::Receiver<LeaseState>,
        stop: &mut watch::Receiver<Stop>,
    ) -> Option<Started> {
        let mut reported = false;
        loop {
            let l = *lease.borrow();
            let err = match self.watermarks(tp).await {
                Ok((low, high)) => {
                    let at = match self.cfg.kafka.start_from {
                        StartFrom::Earliest => low,
                        StartFrom::Latest => high,
                    };
                    // The topic's id is recorded with the offset, from an answer fresh enough
                    // that it cannot predate a re-creation (without one, the next owner records it).
                    let id = self.topic_id(&tp.topic, super::topic_check::TOPIC_ID_TO_RECORD).await;
                    match coord::commit_start(&self.txns, &self.keys, tp, &self.id, l.id, at, id.as_deref()).await {
                        Ok(CommitStart::Done) => {
                            tracing::info!(partition = %tp, start_from = ?self.cfg.kafka.start_from, offset = at, "no committed offset; starting here, committed");
                            return Some(Started { offset: at, topic_id: id });
                        }
                        Ok(CommitStart::Fenced) => {
                            self.metrics.error(ErrorKind::Fenced);
                            tracing::warn!(partition = %tp, "fenced before the first commit");
                            return None;
                        }
                        // An earlier attempt's first commit landed after all: it is where this
                        // partition starts (one that is not an offset: the partition starts
                        // again, and is held on it there).
                        Ok(CommitStart::Exists { offset, topic_id }) => {
                            tracing::info!(partition = %tp, offset, "an earlier first commit landed after all; starting there");
                            let offset = coord::stored_offset(&offset)?;
                            return Some(Started { offset, topic_id });
                        }
                        Err(e) => e.context("committing the resolved start offset"),
                    }
                }
                Err(e) => e,
            };
            if !reported {
                tracing::warn!(partition = %tp, error = %format!("{err:#}"), "resolving where to start failed; trying again");
                reported = true;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = stop.changed() => {}
            }
            if *stop.borrow() != Stop::Run || !lease.borrow().valid() {
                return None;
            }
        }
    }

    /// Never guesses an offset: a read that failed is tried again, a value that is not an offset
    /// holds the partition (owned, not read) until an operator sets it. Each is reported once.
    /// The first read is the one the taking transaction made, when there is one.
    async fn start(
        &self,
        tp: &TopicPartition,
        taken: Option<&coord::Taken>,
        lease: &watch::Receiver<LeaseState>,
        stop: &mut watch::Receiver<Stop>,
    ) -> Start {
        let mut reported = false;
        let mut first = taken.map(|t| t.committed(&self.keys, tp));
        loop {
            let read = match first.take() {
                Some(read) => read,
                None => coord::committed(&self.etcd, &self.keys, tp).await,
            };
            let wait = match read {
                Ok(c) => return Start::At(c),
                Err(coord::CommittedError::Unreachable(e)) => {
                    let kind = ErrorKind::OffsetRead;
                    self.metrics.error(kind);
                    if !reported {
                        tracing::warn!(kind = kind.as_str(), partition = %tp, error = %format!("{e:#}"), "reading the committed offset failed; the partition waits");
                    }
                    Duration::from_millis(500)
                }
                Err(e @ coord::CommittedError::Invalid { .. }) => {
                    let kind = ErrorKind::EtcdValue;
                    self.metrics.error(kind);
                    if !reported {
                        tracing::error!(kind = kind.as_str(), partition = %tp, error = %e, "invalid committed offset; the partition is held until it is fixed");
                    }
                    Duration::from_secs(2)
                }
            };
            reported = true;
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => {}
            }
            if *stop.borrow() != Stop::Run || !lease.borrow().valid() {
                return Start::Stopped;
            }
        }
    }
}
