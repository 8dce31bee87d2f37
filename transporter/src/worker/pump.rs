//! Reading one owned partition: records from its split queue into a buffer, rolled into an
//! object by size, count or age, with Kafka's errors handled by policy and gaps counted.
//!
//! ```text
//!  stop (Flush | Abandon) ──> the roll in flight ends ──> roll the buffer | discard it ──> return
//!  age timer (spread over the last fifth of roll.max-age-ms) ──> roll
//!  split queue ──record──> Chain::offer: Append ──> Buffer::append (refuses what does not follow) ──full?──> roll
//!                                      (another time partition: held back, the buffer rolls, then it opens the next)
//!                                      Stale ──> dropped (fetched before a seek)
//!                                      Verify ──> seek to the expected offset (an unexplained jump is read again)
//!                                      Gap ──> counted in the buffer's span (the log has no records there)
//!              ──out of range──> ListOffsets: below the log start ──> retention gap, read on from the start
//!                                                                     (on-offset-out-of-range = fail: hold)
//!                                             in range ──> seek to the expected offset again
//!                                             past the end ──> hold
//!              ──other error──> counted; a jump it causes is caught by the chain
//!  held: every 2 s read the committed offset; set by an operator ──> seek there, read again
//!  disk past its bounds (`disk`) ──> the buffer rolls, nothing is read until it is not
//!  roll: when none is in flight ──> the buffer rolls in flight while the next one fills
//!        (a full buffer waits for it; reading waits with it, answering stop meanwhile)
//!  roll in flight ends ──Next──> go on | ──ResumeAt(o)──> discard the next buffer, seek to o
//!                                         (an existing object already holds the records before o)
//! ```
//!
//! Every seek sets the chain's position: records the consumer fetched before it are dropped,
//! and a buffer is kept across a seek only when the seek returns to the offset the buffer ends
//! at (a jump read again, an out-of-range read again), so what it holds still follows.
//!
//! One roll per partition is in flight at a time, and it commits before the next one starts:
//! offsets are committed in order. Reading goes on meanwhile, into the next buffer on disk, so
//! librdkafka's prefetch queue keeps draining while an object compresses and uploads.

use std::future::Future;
use std::pin::Pin;
use std::sync::PoisonError;
use std::time::{Duration, Instant};

use anyhow::Context;
use az_core::TopicPartition;
use futures::FutureExt as _;
use rdkafka::consumer::Consumer;
use rdkafka::consumer::stream_consumer::StreamPartitionQueue;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::watch;

use super::roll::Rolled;
use super::stats::RateWindow;
use super::{Stop, Worker, WorkerContext};
use crate::buffer::Buffer;
use crate::continuity::{Chain, Gap, Span};
use crate::coord::{self, LeaseState};
use crate::metrics::ErrorKind;

/// A roll under way while reading goes on.
type InFlight<'a> = Pin<Box<dyn Future<Output = anyhow::Result<Rolled>> + Send + 'a>>;

/// The state of reading one partition.
pub(super) struct Reading<'a> {
    pub(super) tp: &'a TopicPartition,
    /// The offset last committed (read at start, or set by an operator): a held partition
    /// waits for another.
    pub(super) committed: i64,
    /// Where reading is: the offset the next record must have.
    pub(super) chain: Chain,
    /// While no buffer is open, what the next one continues: where it starts, and gaps before
    /// its first record.
    pub(super) pending: Span,
    /// Held on an out-of-range offset until an operator sets one.
    pub(super) held: bool,
    /// The open buffer, from the first record after the last roll.
    pub(super) buf: Option<Buffer>,
    /// Out-of-range errors in a row while the position was in range.
    pub(super) spurious: u32,
    /// Bytes read, for the partition's rate.
    pub(super) rate: RateWindow,
    /// A record of another time partition than the open buffer's: held back until that buffer
    /// has rolled, then the first of the next one (`append`).
    pub(super) carry: Option<crate::buffer::OwnedRecord>,
}

/// Records taken from the queue per turn of the reading loop at most.
const DRAIN: usize = 64;

impl Worker {
    /// Reads `tp` from its queue until told to stop; errors mean ownership is gone or cannot be
    /// proven (the caller releases what it can).
    pub(super) async fn pump(
        &self,
        tp: &TopicPartition,
        queue: &StreamPartitionQueue<WorkerContext>,
        lease: &watch::Receiver<LeaseState>,
        stop: &mut watch::Receiver<Stop>,
        committed: i64,
    ) -> anyhow::Result<()> {
        let max_age = Duration::from_millis(self.cfg.roll.max_age_ms);
        let mut r = Reading {
            tp,
            committed,
            chain: Chain::at(committed),
            pending: Span::starting(committed),
            held: false,
            buf: None,
            rate: RateWindow::new(),
            spurious: 0,
            carry: None,
        };
        let mut inflight: Option<InFlight<'_>> = None;
        let mut disk = self.disk.subscribe();
        loop {
            let deadline = r.buf.as_ref().map(|b| b.opened + spread_age(max_age, tp, b.first_offset));
            // A full buffer waits for the roll in flight; reading waits with it (the queue
            // holds the prefetched records meanwhile), and every wait here answers `stop`.
            // Past the disk's bounds, an open buffer rolls (its upload frees its files) and
            // nothing more is read until there is room (`disk`).
            let no_room = self.disk.over().is_some();
            // A held partition rolls what it read at once: an operator's offset, set next, must
            // not find it still buffered (it would be dropped with nothing committed for it).
            let full = r.buf.as_ref().is_some_and(|b| b.full(&self.cfg.roll) || no_room || r.carry.is_some() || r.held);
            let idle = inflight.is_none();
            tokio::select! {
                biased;
                changed = stop.changed() => {
                    // The controller gone (it cannot be told to stop any more): abandon.
                    let mode = if changed.is_err() { Stop::Abandon } else { *stop.borrow() };
                    if matches!(mode, Stop::Flush | Stop::Handoff) {
                        // The roll under way ends and commits first, then the last buffer. An
                        // Abandon meanwhile (the shutdown timeout, a lost lease) drops both.
                        let flush = async {
                            self.land(&mut r, &mut inflight).await?;
                            if let Some(b) = r.buf.take() {
                                if mode == Stop::Handoff && self.cfg.roll.hand_over_by_dropping(b.bytes, b.opened.elapsed()) {
                                    tracing::debug!(partition = %tp, bytes = b.bytes, "handing off a young buffer by dropping it; the next owner reads it again");
                                    b.discard();
                                } else {
                                    self.roll(tp, b, lease).await?;
                                }
                            }
                            anyhow::Ok(())
                        };
                        return tokio::select! {
                            done = flush => done,
                            () = abandoned(stop) => Ok(()),
                        };
                    }
                    if mode == Stop::Abandon {
                        // Ownership is gone: the roll under way is dropped (its upload, if it
                        // lands, is found by the next owner at the same key and counted as
                        // theirs), and so is the buffer; both are read again from Kafka.
                        drop(inflight.take());
                        if let Some(b) = r.buf.take() {
                            b.discard();
                        }
                        return Ok(());
                    }
                }
                rolled = in_flight(&mut inflight), if !idle => {
                    inflight = None;
                    self.resume(&mut r, rolled?)?;
                }
                () = std::future::ready(()), if full && idle => self.start_roll(&mut r, &mut inflight, lease),
                () = std::future::ready(()), if r.buf.is_none() && r.carry.is_some() => self.append_carried(&mut r)?,
                _ = sleep_until(deadline), if deadline.is_some() && idle => self.start_roll(&mut r, &mut inflight, lease),
                // A partition held on an out-of-range offset reads its committed offset again
                // until an operator sets one (`zonal-transporter offsets --set … --while-owned`).
                // Not while a roll is in flight: its commit would overwrite the operator's offset.
                _ = tokio::time::sleep(Duration::from_secs(2)), if r.held && idle => self.reread_held(&mut r).await?,
                _ = disk.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(300)), if no_room => {}
                msg = queue.recv(), if !r.held && !full && !no_room => self.take_ready(&mut r, queue, msg, stop).await?,
            }
        }
    }

    /// Takes the record the loop received, and the records already in the queue after it, up
    /// to `DRAIN`, without going round the loop for each: its timers and watches cost a worker
    /// a tenth of its CPU while reading, once per record.
    async fn take_ready<'q>(
        &self,
        r: &mut Reading<'_>,
        queue: &'q StreamPartitionQueue<WorkerContext>,
        first: rdkafka::error::KafkaResult<rdkafka::message::BorrowedMessage<'q>>,
        stop: &mut watch::Receiver<Stop>,
    ) -> anyhow::Result<()> {
        let mut next = Some(first);
        let mut taken = 0;
        while let Some(msg) = next.take() {
            // The message is consumed here, before any await: it borrows from librdkafka and is
            // not to be held while a roll uploads.
            let msg = match msg {
                Ok(m) => Ok(self.append(r, &m)?),
                Err(e) => Err(e),
            };
            match msg {
                Ok(bytes) => {
                    if let Some(rate) = r.rate.add(bytes) {
                        self.record_rate(r.tp, rate);
                    }
                }
                Err(e) => return self.on_error(r, &e, stop).await,
            }
            // A queue that always has a record ready would keep this task on its thread for as
            // long as it lasts: the rolls' uploads, the lease's watch and the other partitions
            // would wait. Each record counts against tokio's budget instead.
            tokio::task::coop::consume_budget().await;
            taken += 1;
            if taken < DRAIN && self.reads_on(r) && !stop.has_changed().unwrap_or(true) {
                next = queue.recv().now_or_never();
            }
        }
        Ok(())
    }

    /// Whether reading may go on without the loop looking at its timers: nothing holds it, and
    /// the buffer and the disk have room.
    fn reads_on(&self, r: &Reading<'_>) -> bool {
        !r.held
            && r.carry.is_none()
            && !r.buf.as_ref().is_some_and(|b| b.full(&self.cfg.roll))
            && self.disk.over().is_none()
    }

    /// Adds a gap to the open buffer, or to what the next one continues.
    pub(super) fn gap(&self, r: &mut Reading<'_>, g: Gap) -> anyhow::Result<()> {
        match &mut r.buf {
            Some(b) => b.gap(g).inspect_err(|_| self.metrics.error(ErrorKind::Continuity))?,
            None => r.pending.gap(g).inspect_err(|_| self.metrics.error(ErrorKind::Continuity))?,
        }
        Ok(())
    }

    /// A held partition: reads the committed offset again, and reads from it once an operator
    /// changed it.
    async fn reread_held(&self, r: &mut Reading<'_>) -> anyhow::Result<()> {
        if let Ok(Some(set)) = coord::committed(&self.etcd, &self.keys, r.tp).await
            && set != r.committed
        {
            tracing::info!(partition = %r.tp, offset = set, "offset set by an operator; reading again");
            // What was read past the last roll is not wanted: reading starts at the set offset.
            if let Some(b) = r.buf.take() {
                b.discard();
            }
            r.carry = None;
            self.seek(r.tp, Offset::Offset(set))?;
            r.committed = set;
            r.chain.seek(set);
            r.pending = Span::starting(set);
            r.held = false;
        }
        Ok(())
    }

    /// Rolls the open buffer in flight (the caller knows none is under way).
    fn start_roll<'s>(
        &'s self,
        r: &mut Reading<'s>,
        inflight: &mut Option<InFlight<'s>>,
        lease: &'s watch::Receiver<LeaseState>,
    ) {
        debug_assert!(inflight.is_none(), "one roll in flight per partition");
        if let Some(b) = r.buf.take() {
            r.pending = Span::starting(b.span.next());
            *inflight = Some(Box::pin(self.roll(r.tp, b, lease)));
        }
    }

    /// Waits for the roll under way, if any, and goes on where it says.
    async fn land(&self, r: &mut Reading<'_>, inflight: &mut Option<InFlight<'_>>) -> anyhow::Result<()> {
        if let Some(f) = inflight.take() {
            let rolled = f.await?;
            self.resume(r, rolled)?;
        }
        Ok(())
    }

    /// Goes on where a roll says: after an existing object, reading starts again after it, and
    /// what was read past the rolled buffer meanwhile is dropped (it is read again).
    /// The committed offset is remembered, so that a held partition does not take this
    /// worker's own commit for an operator's.
    fn resume(&self, r: &mut Reading<'_>, rolled: Rolled) -> anyhow::Result<()> {
        match rolled {
            Rolled::Next(next) => r.committed = next,
            Rolled::ResumeAt(at) => {
                r.committed = at;
                if let Some(b) = r.buf.take() {
                    b.discard();
                }
                r.carry = None;
                self.seek(r.tp, Offset::Offset(at))?;
                r.chain.seek(at);
                r.pending = Span::starting(at);
                // A new position: if it is out of range too, the error holds the partition again.
                r.held = false;
            }
        }
        if let Some(s) = self.owned.lock().unwrap_or_else(PoisonError::into_inner).get_mut(r.tp) {
            s.buffered = r.buf.as_ref().map_or(0, Buffer::records);
        }
        Ok(())
    }

    /// Reads `tp` again from `offset`. A partition in an error state refuses a seek, and records
    /// already fetched must not be read: it is assigned again.
    pub(super) fn seek(&self, tp: &TopicPartition, offset: Offset) -> anyhow::Result<()> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&tp.topic, tp.partition);
        self.consumer.incremental_unassign(&tpl).with_context(|| format!("unassigning {tp}"))?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&tp.topic, tp.partition, offset)?;
        self.consumer.incremental_assign(&tpl).with_context(|| format!("assigning {tp} at {offset:?}"))?;
        Ok(())
    }
}

/// The age at which a buffer rolls: up to a fifth earlier than `roll.max-age-ms`, by partition
/// and first offset, so that the partitions a worker takes at once (after a restart) do not all
/// roll, compress and upload in the same instant.
fn spread_age(max_age: Duration, tp: &TopicPartition, first_offset: i64) -> Duration {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (tp.key(), first_offset).hash(&mut h);
    let fifths = (h.finish() % 1000) as f64 / 5000.0;
    max_age.mul_f64(1.0 - fifths)
}

/// Resolves when the partition is told to abandon (or its controller is gone).
async fn abandoned(stop: &mut watch::Receiver<Stop>) {
    while *stop.borrow_and_update() != Stop::Abandon {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

/// The end of the roll under way; never, when there is none.
async fn in_flight(inflight: &mut Option<InFlight<'_>>) -> anyhow::Result<Rolled> {
    match inflight {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roll_ages_spread_over_the_last_fifth() {
        let max = Duration::from_secs(60);
        let tp = |partition| TopicPartition { topic: "logs".into(), partition };
        let ages: Vec<Duration> = (0..1000).map(|p| spread_age(max, &tp(p), 0)).collect();
        assert!(ages.iter().all(|a| *a <= max && *a >= max.mul_f64(0.8)));
        let distinct: std::collections::BTreeSet<_> = ages.iter().map(|a| a.as_millis() / 100).collect();
        assert!(distinct.len() > 100, "ages do not spread: {} distinct", distinct.len());
        assert_eq!(spread_age(max, &tp(7), 5), spread_age(max, &tp(7), 5));
    }
}
