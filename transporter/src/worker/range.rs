//! A Kafka error on a partition's queue, handled by what it means: an offset out of range is
//! told apart by the partition's log start and end (ListOffsets), never taken as "read from the
//! beginning".
//!
//! ```text
//!  error ──not out of range──> counted, reading goes on (a jump it causes is caught by the chain)
//!        ──out of range──> ListOffsets ──position < log start──> retention gap, seek to the start
//!                                                                (on-offset-out-of-range = fail: hold)
//!                                      ──in range──> seek to the same position (after a pause when repeated)
//!                                      ──position > log end──> hold for an operator
//!                                      ──unreadable──> seek to the same position after 1 s
//! ```

use std::time::Duration;

use anyhow::Context;
use az_core::TopicPartition;
use rdkafka::Offset;
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

use tokio::sync::watch;

use super::pump::Reading;
use super::{Stop, Worker};
use crate::config::OutOfRange;
use crate::metrics::ErrorKind;

impl Worker {
    /// A Kafka error for the partition. An offset out of range is told apart by the partition's
    /// log start and end; anything else is counted and reading goes on (a jump it causes is
    /// caught by the chain).
    /// Its waits (the log's bounds, a pause) end early when the partition is told to stop.
    pub(super) async fn on_error(
        &self,
        r: &mut Reading<'_>,
        e: &KafkaError,
        stop: &watch::Receiver<Stop>,
    ) -> anyhow::Result<()> {
        let tp = r.tp;
        let out_of_range = matches!(
            e.rdkafka_error_code(),
            Some(RDKafkaErrorCode::AutoOffsetReset | RDKafkaErrorCode::OffsetOutOfRange)
        );
        if !out_of_range {
            let kind = ErrorKind::Kafka;
            self.metrics.error(kind);
            tracing::warn!(kind = kind.as_str(), partition = %tp, error = %e, "consume error");
            // librdkafka may have skipped what it could not read (a batch whose CRC failed is
            // skipped at every read): a jump after this is not taken for the log's own hole.
            r.chain.distrust();
            return Ok(());
        }
        let kind = ErrorKind::OffsetOutOfRange;
        self.metrics.error(kind);
        let at = r.chain.expected();
        let Some(bounds) = unless_stopped(stop, self.watermarks(tp)).await else { return Ok(()) };
        let (low, high) = match bounds {
            Ok(w) => w,
            Err(err) => {
                // Without the log's bounds nothing is decided: the same position is read again.
                tracing::warn!(kind = kind.as_str(), partition = %tp, at, error = %format!("{err:#}"),
                    "offset out of range and the log's bounds could not be read; reading the same offset again");
                if unless_stopped(stop, tokio::time::sleep(Duration::from_secs(1))).await.is_none() {
                    return Ok(());
                }
                return self.seek(tp, Offset::Offset(at));
            }
        };
        if at < low {
            if self.cfg.kafka.on_offset_out_of_range == OutOfRange::Fail {
                tracing::error!(kind = kind.as_str(), partition = %tp, at, log_start = low,
                    "retention removed offsets before they were read; the partition is held until an operator sets its offset (on-offset-out-of-range = fail)");
                r.held = true;
                return Ok(());
            }
            if let Some(g) = r.chain.retention(low) {
                tracing::error!(kind = kind.as_str(), partition = %tp, from = g.from, to = g.to, lost = g.len(),
                    "retention removed offsets before they were read; counted as a gap, reading on from the log start");
                self.gap(r, g)?;
            }
            return self.seek(tp, Offset::Offset(low));
        }
        if at > high {
            tracing::error!(kind = kind.as_str(), partition = %tp, at, log_end = high,
                "the offset is past the end of the log (truncated, recreated, or set too high); the partition is held until an operator sets its offset");
            r.held = true;
            return Ok(());
        }
        // In range: the broker answered for a moment it had not caught up (a new leader, a
        // follower behind), or an error was injected. The same offset is read again, after a
        // pause when it keeps happening.
        r.spurious += 1;
        tracing::warn!(kind = kind.as_str(), partition = %tp, at, log_start = low, log_end = high, times = r.spurious,
            "offset out of range though the log holds it; reading it again");
        if r.spurious > 3 && unless_stopped(stop, tokio::time::sleep(Duration::from_millis(500))).await.is_none() {
            return Ok(());
        }
        self.seek(tp, Offset::Offset(at))
    }

    /// The partition's log start and end (ListOffsets), on a blocking thread.
    pub(super) async fn watermarks(&self, tp: &TopicPartition) -> anyhow::Result<(i64, i64)> {
        let consumer = self.consumer.clone();
        let (topic, partition) = (tp.topic.clone(), tp.partition);
        let (low, high) =
            tokio::task::spawn_blocking(move || consumer.fetch_watermarks(&topic, partition, Duration::from_secs(10)))
                .await
                .context("watermarks task")?
                .with_context(|| format!("reading the log start and end of {tp}"))?;
        // Offsets below 0 are librdkafka's sentinels (END, BEGINNING), never positions.
        anyhow::ensure!(0 <= low && low <= high, "the log bounds of {tp} make no sense: start {low}, end {high}");
        Ok((low, high))
    }
}

/// Runs `fut` unless the partition is told to stop first (None then). It watches a clone of
/// `stop`, so the pump's own receiver still sees the change and stops.
async fn unless_stopped<T>(stop: &watch::Receiver<Stop>, fut: impl std::future::Future<Output = T>) -> Option<T> {
    let mut stop = stop.clone();
    tokio::select! {
        out = fut => Some(out),
        () = async {
            while *stop.borrow_and_update() == Stop::Run {
                if stop.changed().await.is_err() {
                    return;
                }
            }
        } => None,
    }
}
