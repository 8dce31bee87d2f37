//! Reading one owned partition: records from its split queue into a buffer, rolled into an
//! object by size, count or age, with Kafka's errors handled by policy and gaps counted.
//!
//! ```text
//!  stop (Flush | Abandon) ──> the roll in flight ends ──> roll the buffer | discard it ──> return
//!  age timer (spread over the last fifth of roll.max-age-ms) ──> roll
//!  split queue ──record──> expected offset? (else offset-gap) ──> Buffer::append ──full?──> roll
//!              ──out of range──> on-offset-out-of-range: earliest (seek) | fail (hold)
//!  held: every 2 s read the committed offset; set by an operator ──> seek there, read again
//!  roll: the roll in flight ends first ──> the buffer rolls in flight while the next one fills
//!  roll in flight ends ──Next──> go on | ──ResumeAt(o)──> discard the next buffer, seek to o
//!                                         (an existing object already holds the records before o)
//! ```
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
use rdkafka::consumer::Consumer;
use rdkafka::consumer::stream_consumer::StreamPartitionQueue;
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message, Timestamp};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::watch;

use super::roll::Rolled;
use super::stats::RateWindow;
use super::{Stop, Worker, WorkerContext};
use crate::buffer::{Buffer, Record};
use crate::config::OutOfRange;
use crate::coord::{self, LeaseState};
use crate::metrics::ErrorKind;

/// A roll under way while reading goes on.
type InFlight<'a> = Pin<Box<dyn Future<Output = anyhow::Result<Rolled>> + Send + 'a>>;

/// The state of reading one partition.
struct Reading<'a> {
    tp: &'a TopicPartition,
    /// The offset reading started from, or an operator set: a held partition waits for another.
    committed: Option<i64>,
    /// The offset the next record must have; anything else is a gap, counted.
    expected: Option<i64>,
    /// Held on an out-of-range offset until an operator sets one (`on-offset-out-of-range = fail`).
    held: bool,
    /// The open buffer, from the first record after the last roll.
    buf: Option<Buffer>,
    /// Bytes read, for the partition's rate.
    rate: RateWindow,
}

impl Worker {
    /// Reads `tp` from its queue until told to stop; errors mean ownership is gone or cannot be
    /// proven (the caller releases what it can).
    pub(super) async fn pump(
        &self,
        tp: &TopicPartition,
        queue: &StreamPartitionQueue<WorkerContext>,
        lease: &watch::Receiver<LeaseState>,
        stop: &mut watch::Receiver<Stop>,
        committed: Option<i64>,
    ) -> anyhow::Result<()> {
        let max_age = Duration::from_millis(self.cfg.roll.max_age_ms);
        let mut r = Reading { tp, committed, expected: committed, held: false, buf: None, rate: RateWindow::new() };
        let mut inflight: Option<InFlight<'_>> = None;
        loop {
            let deadline = r.buf.as_ref().map(|b| b.opened + spread_age(max_age, tp, b.first_offset));
            tokio::select! {
                biased;
                _ = stop.changed() => {
                    let mode = *stop.borrow();
                    if mode == Stop::Flush {
                        // The roll under way ends and commits first, then the last buffer.
                        self.land(&mut r, &mut inflight).await?;
                        if let Some(b) = r.buf.take() {
                            self.roll(tp, b, lease).await?;
                        }
                        return Ok(());
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
                rolled = in_flight(&mut inflight), if inflight.is_some() => {
                    inflight = None;
                    self.resume(&mut r, rolled?)?;
                }
                _ = sleep_until(deadline), if deadline.is_some() => self.start_roll(&mut r, &mut inflight, lease).await?,
                // A partition held on an out-of-range offset reads its committed offset again
                // until an operator sets one (`zonal-transporter offsets --set … --while-owned`).
                _ = tokio::time::sleep(Duration::from_secs(2)), if r.held => self.reread_held(&mut r).await?,
                msg = queue.recv(), if !r.held => {
                    // The message is consumed here, before any await: it borrows from librdkafka
                    // and is not to be held while a roll uploads.
                    let Some(bytes) = self.take(&mut r, msg)? else { continue };
                    if r.buf.as_ref().is_some_and(|b| b.full(&self.cfg.roll)) {
                        self.start_roll(&mut r, &mut inflight, lease).await?;
                    }
                    if let Some(rate) = r.rate.add(bytes) {
                        self.record_rate(tp, rate);
                    }
                    // A queue that always has a record ready would keep this task on its thread
                    // for as long as it lasts: the rolls' uploads, the lease's watch and the other
                    // partitions would wait. The record counts against tokio's budget instead.
                    tokio::task::coop::consume_budget().await;
                }
            }
        }
    }

    /// Takes what the queue gave: a record is appended (its payload size returned), an error
    /// handled by its policy.
    fn take(&self, r: &mut Reading<'_>, msg: Result<BorrowedMessage<'_>, KafkaError>) -> anyhow::Result<Option<u64>> {
        match msg {
            Ok(m) => self.append(r, &m).map(Some),
            Err(e) => {
                self.on_error(r, &e)?;
                Ok(None)
            }
        }
    }

    /// Appends a record to the buffer, opening one for the first record after a roll.
    fn append(&self, r: &mut Reading<'_>, m: &BorrowedMessage<'_>) -> anyhow::Result<u64> {
        let tp = r.tp;
        if let Some(want) = r.expected {
            // A record from before a seek (fetched before it, still queued) is not read twice.
            if m.offset() < want {
                tracing::debug!(partition = %tp, offset = m.offset(), want, "dropping a record from before a seek");
                return Ok(0);
            }
            r.expected = None;
            if m.offset() != want {
                let kind = ErrorKind::OffsetGap;
                self.metrics.error(kind);
                tracing::warn!(kind = kind.as_str(), partition = %tp, asked = want, got = m.offset(), "the first record is not the one asked for; offsets between are not in Kafka");
            }
        }
        let rec = Record {
            topic: &tp.topic,
            partition: tp.partition,
            offset: m.offset(),
            timestamp_ms: match m.timestamp() {
                Timestamp::NotAvailable => None,
                t => t.to_millis(),
            },
            key: m.key(),
            value: m.payload(),
        };
        let b = match &mut r.buf {
            Some(b) => b,
            None => {
                let s3 = &self.cfg.s3;
                let b = Buffer::create(&self.buffers, s3.format, s3.compression, s3.compression_level, &rec)
                    .with_context(|| format!("creating a buffer in {}", self.buffers.dir().display()))?;
                r.buf.insert(b)
            }
        };
        b.append(&rec).context("appending to the buffer")?;
        // Status is for humans: refresh it every 1024 records, not per record.
        if b.records % 1024 == 1
            && let Some(s) = self.owned.lock().unwrap_or_else(PoisonError::into_inner).get_mut(tp)
        {
            s.position = m.offset();
            s.buffered = b.records;
        }
        Ok(m.payload_len() as u64)
    }

    /// A Kafka error for the partition. An offset out of range follows
    /// `kafka.on-offset-out-of-range`; anything else is counted and reading goes on.
    fn on_error(&self, r: &mut Reading<'_>, e: &KafkaError) -> anyhow::Result<()> {
        let tp = r.tp;
        let out_of_range = matches!(
            e.rdkafka_error_code(),
            Some(RDKafkaErrorCode::AutoOffsetReset | RDKafkaErrorCode::OffsetOutOfRange)
        );
        if !out_of_range {
            let kind = ErrorKind::Kafka;
            self.metrics.error(kind);
            tracing::warn!(kind = kind.as_str(), partition = %tp, error = %e, "consume error");
            return Ok(());
        }
        let kind = ErrorKind::OffsetOutOfRange;
        self.metrics.error(kind);
        match self.cfg.kafka.on_offset_out_of_range {
            OutOfRange::Earliest => {
                // Retention passed the committed offset: what is still kept is read from its
                // start (what retention deleted is gone).
                tracing::warn!(kind = kind.as_str(), partition = %tp, committed = ?r.committed, error = %e, "offset out of range; reading from the earliest kept offset");
                self.seek(tp, Offset::Beginning)?;
                r.expected = None;
            }
            OutOfRange::Fail => {
                tracing::error!(kind = kind.as_str(), partition = %tp, committed = ?r.committed, error = %e, "offset out of range; the partition is held until an operator sets its offset");
                r.held = true;
            }
        }
        Ok(())
    }

    /// A held partition: reads the committed offset again, and reads from it once an operator
    /// changed it.
    async fn reread_held(&self, r: &mut Reading<'_>) -> anyhow::Result<()> {
        if let Ok(Some(set)) = coord::committed(&self.etcd, &self.keys, r.tp).await
            && Some(set) != r.committed
        {
            tracing::info!(partition = %r.tp, offset = set, "offset set by an operator; reading again");
            // What was read past the last roll is not wanted: reading starts at the set offset.
            if let Some(b) = r.buf.take() {
                b.discard();
            }
            self.seek(r.tp, Offset::Offset(set))?;
            r.committed = Some(set);
            r.expected = Some(set);
            r.held = false;
        }
        Ok(())
    }

    /// Rolls the open buffer in flight, once the roll under way (if any) has ended.
    async fn start_roll<'s>(
        &'s self,
        r: &mut Reading<'s>,
        inflight: &mut Option<InFlight<'s>>,
        lease: &'s watch::Receiver<LeaseState>,
    ) -> anyhow::Result<()> {
        self.land(r, inflight).await?;
        if let Some(b) = r.buf.take() {
            *inflight = Some(Box::pin(self.roll(r.tp, b, lease)));
        }
        Ok(())
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
            Rolled::Next(next) => r.committed = Some(next),
            Rolled::ResumeAt(at) => {
                r.committed = Some(at);
                if let Some(b) = r.buf.take() {
                    b.discard();
                }
                self.seek(r.tp, Offset::Offset(at))?;
                r.expected = Some(at);
                // A new position: if it is out of range too, the error holds the partition again.
                r.held = false;
            }
        }
        if let Some(s) = self.owned.lock().unwrap_or_else(PoisonError::into_inner).get_mut(r.tp) {
            s.buffered = r.buf.as_ref().map_or(0, |b| b.records);
        }
        Ok(())
    }

    /// Reads `tp` again from `offset`. A partition in an error state refuses a seek, and records
    /// already fetched must not be read: it is assigned again.
    fn seek(&self, tp: &TopicPartition, offset: Offset) -> anyhow::Result<()> {
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
