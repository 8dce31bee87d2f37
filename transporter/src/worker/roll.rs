//! Rolling a buffer: it becomes an object in S3 and the partition's committed offset moves past
//! it, under the fence; or, when S3 already holds an object at its key, past that object.
//!
//! ```text
//!  Buffer ──finish (blocking thread: compress)──> Finished ──naming──> key
//!     ──lease valid?──> upload (If-None-Match: *) ──Written──────────────> next = our last + 1
//!                                                 ──Exists, no offsets──> replace (If-Match: etag)
//!                                                 ──Exists, ends at o───> next = o + 1 (ResumeAt if o ≠ ours)
//!     ──commit next (txn: still owner, same lease; retried until the lease would expire)
//!     ──> status, metrics ──> mirror next to the Kafka group (best effort)
//! ```

use std::sync::PoisonError;
use std::time::{Duration, Instant};

use anyhow::Context;
use az_core::TopicPartition;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::watch;

use super::Worker;
use crate::buffer::{self, Buffer, Finished};
use crate::coord::{self, LeaseState};
use crate::metrics::ErrorKind;
use crate::naming::{self, ObjectName};
use crate::upload::{Body, Condition, Outcome, Span};

/// Where reading goes on after a roll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Rolled {
    /// After the records just uploaded; the offset committed.
    Next(i64),
    /// At this offset: an existing object covered a different range than the buffer.
    ResumeAt(i64),
}

/// What an upload's outcome means for the partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum After {
    /// The buffer's records are in S3 (our object, or an identical one): commit after them.
    Ours,
    /// A previous owner's object (stalled, or crashed before committing) starts at the same
    /// offset and ends at `last`: its records are in S3, so the partition goes on after them
    /// instead of writing them again.
    Theirs {
        /// The existing object's last offset.
        last: i64,
    },
    /// An object is there whose end is unknown, or before the buffer's start: nothing can be
    /// committed without guessing.
    Unknown {
        /// What its metadata says of its last offset.
        last_offset: Option<i64>,
    },
}

/// Decides what an upload's outcome means for a buffer covering `span`. Pure.
fn after(outcome: &Outcome, span: Span) -> After {
    match outcome {
        Outcome::Written => After::Ours,
        Outcome::Exists { last_offset: Some(last), .. } if *last == span.last_offset => After::Ours,
        Outcome::Exists { last_offset: Some(last), .. } if *last >= span.first_offset => After::Theirs { last: *last },
        Outcome::Exists { last_offset, .. } => After::Unknown { last_offset: *last_offset },
    }
}

impl Worker {
    /// Uploads a buffer and commits past it (or past the object S3 already holds at its key).
    /// Errors mean ownership is gone or cannot be proven.
    pub(super) async fn roll(
        &self,
        tp: &TopicPartition,
        b: Buffer,
        lease: &watch::Receiver<LeaseState>,
    ) -> anyhow::Result<Rolled> {
        // Compressions at once are capped (each holds a compressor), and so are uploads (each
        // holds a connection and a file): an upload waits on S3 and etcd, not on memory or CPU,
        // so it does not hold a compression slot.
        let waited = Instant::now();
        let slot = self.rolls.acquire().await.context("the roll limiter closed")?;
        let mut wait = waited.elapsed();
        let compressing = Instant::now();
        let f = tokio::task::spawn_blocking(move || b.finish())
            .await
            .context("buffer task")?
            .context("finishing a buffer")?;
        self.metrics.compress_seconds.observe(compressing.elapsed().as_secs_f64());
        drop(slot);
        let waited = Instant::now();
        let _upload = self.uploads.acquire().await.context("the upload limiter closed")?;
        wait += waited.elapsed();
        self.metrics.roll_wait_seconds.observe(wait.as_secs_f64());
        let key = self.object_key(tp, &f)?;
        if !lease.borrow().valid() {
            anyhow::bail!("lease no longer valid; not uploading {key}");
        }
        let started = Instant::now();
        let span = Span { first_offset: f.first_offset, last_offset: f.last_offset, records: f.records };
        let outcome = self.upload(tp, &key, &f, span, lease).await?;
        self.metrics.upload_seconds.observe(started.elapsed().as_secs_f64());
        let (next, rolled) = match after(&outcome, span) {
            After::Ours => (f.last_offset + 1, Rolled::Next(f.last_offset + 1)),
            After::Theirs { last } => {
                let kind = ErrorKind::ObjectExists;
                self.metrics.error(kind);
                tracing::warn!(kind = kind.as_str(), partition = %tp, key, ours = f.last_offset, theirs = last,
                    "an object of a previous owner is at this key; resuming after its last offset");
                (last + 1, Rolled::ResumeAt(last + 1))
            }
            After::Unknown { last_offset } => {
                self.metrics.error(ErrorKind::ObjectExists);
                anyhow::bail!(
                    "s3://{}/{key} exists and its metadata does not say where it ends ({last_offset:?}); the partition stops until an operator looks",
                    self.cfg.s3.bucket
                );
            }
        };
        let committing = Instant::now();
        self.commit(tp, &key, next, lease).await?;
        self.metrics.commit_seconds.observe(committing.elapsed().as_secs_f64());
        self.rolled(tp, &key, &f, next);
        Ok(rolled)
    }

    /// The object key of a finished buffer.
    fn object_key(&self, tp: &TopicPartition, f: &Finished) -> anyhow::Result<String> {
        let s3 = &self.cfg.s3;
        Ok(naming::render(
            &s3.key_template,
            &ObjectName {
                prefix: &s3.prefix,
                topic: &tp.topic,
                partition: tp.partition,
                first_offset: f.first_offset,
                timestamp_ms: f.first_timestamp_ms,
                ext: buffer::extension(s3.format, s3.compression),
            },
        )?)
    }

    /// Uploads the object unless one is at its key. An object without offsets was written
    /// before objects carried them (an older version that crashed before committing): its range
    /// is unknown but starts at this buffer's first offset, which is the committed one, so
    /// replacing it loses nothing. Only that very object is replaced (If-Match), never one a
    /// peer writes meanwhile.
    async fn upload(
        &self,
        tp: &TopicPartition,
        key: &str,
        f: &Finished,
        span: Span,
        lease: &watch::Receiver<LeaseState>,
    ) -> anyhow::Result<Outcome> {
        let body = Body { path: &f.path, size: f.size };
        let (s3, cfg) = (&self.s3, &self.cfg.s3);
        let outcome = crate::upload::upload(s3, cfg, key, body, span, &Condition::Create, lease)
            .await
            .inspect_err(|_| self.metrics.error(ErrorKind::Upload))?;
        let Outcome::Exists { last_offset: None, etag: Some(etag) } = &outcome else { return Ok(outcome) };
        tracing::warn!(partition = %tp, key, "an object without offsets is at this key; replacing it");
        let replace = Condition::Replace(etag.clone());
        crate::upload::upload(s3, cfg, key, body, span, &replace, lease)
            .await
            .inspect_err(|_| self.metrics.error(ErrorKind::Upload))
    }

    /// Commits `next` under the same fence; while etcd does not answer, retries until the lease
    /// would have expired.
    async fn commit(
        &self,
        tp: &TopicPartition,
        key: &str,
        next: i64,
        lease: &watch::Receiver<LeaseState>,
    ) -> anyhow::Result<()> {
        loop {
            let l = *lease.borrow();
            if !l.valid() {
                anyhow::bail!("lease lost before committing {tp} at {next}; the next owner re-uploads {key}");
            }
            let left = l.valid_until.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, coord::commit(&self.etcd, &self.keys, tp, &self.id, l.id, next)).await {
                Ok(Ok(true)) => return Ok(()),
                Ok(Ok(false)) => {
                    self.metrics.error(ErrorKind::Fenced);
                    anyhow::bail!("fenced: {tp} is no longer ours");
                }
                Ok(Err(e)) => {
                    let kind = ErrorKind::Etcd;
                    self.metrics.error(kind);
                    tracing::warn!(kind = kind.as_str(), partition = %tp, error = %format!("{e:#}"), "commit failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(_) => {}
            }
        }
    }

    /// Counts a committed roll, shows it in `/status`, and mirrors the offset to the Kafka group
    /// so standard lag tools see progress; etcd stays the truth.
    fn rolled(&self, tp: &TopicPartition, key: &str, f: &Finished, next: i64) {
        self.metrics.uploads.inc();
        self.metrics.records.inc_by(f.records);
        self.metrics.bytes.inc_by(f.bytes);
        // Position and buffered records belong to the buffer filling meanwhile (`pump`).
        if let Some(s) = self.owned.lock().unwrap_or_else(PoisonError::into_inner).get_mut(tp) {
            s.committed = next;
            s.uploads += 1;
        }
        let mut tpl = TopicPartitionList::new();
        if tpl.add_partition_offset(&tp.topic, tp.partition, Offset::Offset(next)).is_ok()
            && let Err(e) = self.consumer.commit(&tpl, CommitMode::Async)
        {
            tracing::debug!(partition = %tp, error = %e, "mirroring the offset to Kafka failed");
        }
        tracing::debug!(partition = %tp, key, records = f.records, next, "uploaded and committed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_an_upload_means() {
        let span = Span { first_offset: 100, last_offset: 199, records: 100 };
        let exists = |last_offset: Option<i64>| Outcome::Exists { last_offset, etag: Some("\"e\"".into()) };
        let cases = [
            ("written", Outcome::Written, After::Ours),
            ("our own earlier try, or the same records", exists(Some(199)), After::Ours),
            ("a previous owner's object ending later", exists(Some(250)), After::Theirs { last: 250 }),
            ("a previous owner's object ending earlier", exists(Some(150)), After::Theirs { last: 150 }),
            ("an object ending before our start", exists(Some(99)), After::Unknown { last_offset: Some(99) }),
            (
                "an object without offsets (after the replace failed)",
                exists(None),
                After::Unknown { last_offset: None },
            ),
        ];
        for (name, outcome, want) in cases {
            assert_eq!(after(&outcome, span), want, "{name}");
        }
    }
}
