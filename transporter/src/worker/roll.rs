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
use crate::buffer::{Buffer, Finished};
use crate::continuity::{self, Span};
use crate::coord::{self, LeaseState};
use crate::metrics::{ErrorKind, ReasonLabel};
use crate::timepart::Bucket;
use crate::upload::{Body, Condition, Outcome, Uploaded, deployment};

/// Where reading goes on after a roll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Rolled {
    /// After the records just uploaded; the offset committed.
    Next(i64),
    /// At this offset: an existing object covered a different range than the buffer.
    ResumeAt(i64),
}

/// What an upload's outcome means for the partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum After {
    /// The buffer's records are in S3 (our object, or one that proved it holds the same).
    Ours,
    /// A previous owner's object (stalled, or crashed before committing) starts at the same
    /// offset, holds the same records where both have them, and ends at `last`: its records
    /// are in S3, so the partition goes on after them instead of writing them again.
    Theirs {
        /// The existing object's last offset.
        last: i64,
    },
    /// An object is there that does not prove it holds the buffer's records: nothing can be
    /// committed without guessing.
    Unproven {
        /// Why.
        why: String,
    },
}

/// Decides what an upload's outcome means for a buffer of `tp` covering `span`, written by
/// `source`. Pure.
pub(super) fn after(outcome: &Outcome, tp: &TopicPartition, span: &Span, source: &str) -> After {
    match outcome {
        Outcome::Written => After::Ours,
        Outcome::Exists { span: theirs, .. }
            if theirs.source.as_deref().is_some_and(|s| !deployment::same_deployment(s, source)) =>
        {
            After::Unproven {
                why: format!("another deployment wrote it (source {:?}, this one {source:?})", theirs.source),
            }
        }
        Outcome::Exists { span: theirs, .. }
            if theirs.topic.as_ref().is_some_and(|t| *t != tp.topic)
                || theirs.partition.is_some_and(|p| p != tp.partition) =>
        {
            After::Unproven { why: format!("it holds {:?}/{:?}", theirs.topic, theirs.partition) }
        }
        Outcome::Exists { span: theirs, .. } => match (continuity::proves(theirs, span), theirs.last) {
            (Ok(()), Some(last)) if last == span.last => After::Ours,
            (Ok(()), Some(last)) => After::Theirs { last },
            (Ok(()), None) => After::Unproven { why: "its metadata does not say where it ends".into() },
            (Err(why), _) => After::Unproven { why },
        },
    }
}

impl Worker {
    /// Uploads a buffer and commits past it (or past the object S3 already holds at its key).
    /// Errors mean ownership is gone or cannot be proven, or the object cannot prove its
    /// offsets (then nothing is committed).
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
        // A Parquet file carries the object's metadata too (a copy survives a copy of the file).
        let meta: Vec<(&'static str, String)> = b.span.to_meta(&tp.topic, tp.partition, &self.source);
        let f = tokio::task::spawn_blocking(move || b.finish(&meta))
            .await
            .context("buffer task")?
            .inspect_err(|e| {
                if e.kind() == std::io::ErrorKind::InvalidData {
                    self.metrics.error(ErrorKind::Continuity);
                }
            })
            .with_context(|| format!("finishing a buffer of {tp}"))?;
        self.metrics.compress_seconds.observe(compressing.elapsed().as_secs_f64());
        drop(slot);
        let waited = Instant::now();
        let _upload = self.uploads.acquire().await.context("the upload limiter closed")?;
        wait += waited.elapsed();
        self.metrics.roll_wait_seconds.observe(wait.as_secs_f64());
        let key = self.object_key(tp, &f)?;
        let topic_id = self.topic_unchanged(tp).await?;
        if !lease.borrow().valid() {
            anyhow::bail!("lease no longer valid; not uploading {key}");
        }
        let started = Instant::now();
        // Records whose value did not fit the value schema go up first, so that a committed
        // object never lacks its dead letters.
        let dead = self.upload_dead_letter(tp, &key, &f, lease).await?;
        // Deterministic mode: an object that starts here under another last offset (cut by
        // age before a crash, or by a stale owner) holds these records already.
        let up = match self.same_start(tp, &key, &f).await? {
            Some(outcome) => Uploaded { outcome, attempts: 0 },
            None => self.upload(tp, &key, &f, lease).await?,
        };
        if up.outcome != Outcome::Written {
            // The records are in an object found there, whose dead letters went up before it.
            self.drop_dead_letter(dead.as_deref()).await;
        }
        let seconds = started.elapsed().as_secs_f64();
        self.metrics.upload_seconds.observe(seconds);
        let span = &f.span;
        let (next, rolled) = match after(&up.outcome, tp, span, &self.source) {
            After::Ours => (span.next(), Rolled::Next(span.next())),
            After::Theirs { last } => {
                let kind = ErrorKind::ObjectExists;
                self.metrics.error(kind);
                tracing::warn!(kind = kind.as_str(), partition = %tp, key, ours = span.last, theirs = last,
                    "an object of a previous owner is at this key and holds the same records; resuming after its last offset");
                (last + 1, Rolled::ResumeAt(last + 1))
            }
            After::Unproven { why } => {
                self.metrics.error(ErrorKind::Continuity);
                anyhow::bail!(
                    "s3://{}/{key} exists and does not prove it holds offsets {}..={} of {tp} ({why}); nothing is committed past it, the partition stops until an operator looks (zonal-transporter audit)",
                    self.cfg.s3.bucket,
                    span.from,
                    span.last
                );
            }
        };
        let committing = Instant::now();
        self.commit(tp, &key, span.from, next, topic_id.as_deref(), lease).await?;
        self.metrics.commit_seconds.observe(committing.elapsed().as_secs_f64());
        tracing::info!(partition = %tp, key, from = span.from, first = f.first_offset, last = span.last,
            records = span.records, gap_records = span.gap_records(), bytes = f.size, attempts = up.attempts,
            seconds = format!("{seconds:.3}"), next, "object uploaded and committed");
        self.rolled(tp, &f, next);
        Ok(rolled)
    }

    /// Uploads the object unless one is at its key. An object without any offsets was written
    /// before objects carried them (an older version that crashed before committing): its range
    /// is unknown but starts at this buffer's first offset, which is the committed one, so
    /// replacing it loses nothing. Only that very object is replaced (If-Match), never one a
    /// peer writes meanwhile.
    async fn upload(
        &self,
        tp: &TopicPartition,
        key: &str,
        f: &Finished,
        lease: &watch::Receiver<LeaseState>,
    ) -> anyhow::Result<Uploaded> {
        let body = Body { path: &f.path, size: f.size };
        let mut meta = f.span.to_meta(&tp.topic, tp.partition, &self.source);
        if f.escaped > 0 {
            meta.push((crate::continuity::meta::ESCAPED, f.escaped.to_string()));
        }
        if let Some((_, _, n)) = f.dead_letter {
            meta.push((crate::buffer::DEAD_LETTER_RECORDS, n.to_string()));
        }
        let (s3, cfg) = (&self.s3, &self.cfg.s3);
        let count = |up: &Uploaded| {
            let again = u64::from(up.attempts.saturating_sub(1));
            self.metrics.upload_retries.inc_by(again);
            self.metrics.upload_retried_bytes.inc_by(again * f.size);
        };
        let up = crate::upload::upload(s3, cfg, key, body, &meta, &Condition::Create, lease)
            .await
            .inspect_err(|e| self.upload_failed(e))?;
        count(&up);
        self.upload_refused.lock().unwrap_or_else(PoisonError::into_inner).take();
        let Outcome::Exists { span, etag: Some(etag) } = &up.outcome else { return Ok(up) };
        if span.last.is_some() || span.first.is_some() || span.records.is_some() {
            return Ok(up);
        }
        tracing::warn!(partition = %tp, key, "an object without offsets is at this key; replacing it");
        let replace = Condition::Replace(etag.clone());
        let up = crate::upload::upload(s3, cfg, key, body, &meta, &replace, lease)
            .await
            .inspect_err(|e| self.upload_failed(e))?;
        count(&up);
        Ok(up)
    }

    /// Counts an upload that failed for good; a lasting refusal turns `/readyz` red.
    pub(super) fn upload_failed(&self, e: &anyhow::Error) {
        self.metrics.error(ErrorKind::Upload);
        if e.downcast_ref::<crate::upload::Refused>().is_some() {
            *self.upload_refused.lock().unwrap_or_else(PoisonError::into_inner) = Some(format!("{e:#}"));
        }
    }

    /// Commits `next` under the same fence, and while the recorded topic id is still
    /// `topic_id` (when known); while etcd does not answer, retries until the lease would have
    /// expired.
    async fn commit(
        &self,
        tp: &TopicPartition,
        key: &str,
        from: i64,
        next: i64,
        topic_id: Option<&str>,
        lease: &watch::Receiver<LeaseState>,
    ) -> anyhow::Result<()> {
        // The committed offset as stored; written by this program it is `from` in decimal.
        let mut stored = Some(from.to_string());
        loop {
            let l = *lease.borrow();
            if !l.valid() {
                anyhow::bail!("lease lost before committing {tp} at {next}; the next owner re-uploads {key}");
            }
            let left = l.valid_until.saturating_duration_since(Instant::now());
            let commit = coord::commit(&self.txns, &self.keys, tp, &self.id, l.id, stored.as_deref(), next, topic_id);
            match tokio::time::timeout(left, commit).await {
                Ok(Ok(coord::Committed::Done)) => return Ok(()),
                Ok(Ok(coord::Committed::Fenced)) => {
                    self.metrics.error(ErrorKind::Fenced);
                    anyhow::bail!("fenced: {tp} is no longer ours");
                }
                // An operator's offset (which drops the recorded id) or an id recorded for
                // another incarnation of the topic: the partition starts again from what etcd
                // says, where a foreign id holds it.
                Ok(Ok(coord::Committed::TopicId { recorded })) => {
                    anyhow::bail!(
                        "{tp}: not committing {next}: the recorded topic id is {recorded:?}, not {topic_id:?} as at start; starting the partition again"
                    )
                }
                // The same offset written otherwise (`etcdctl put` of " 42"): compared as stored.
                Ok(Ok(coord::Committed::Moved { recorded: Some(r) }))
                    if stored.as_deref() != Some(r.as_str()) && coord::stored_offset(&r) == Some(from) =>
                {
                    stored = Some(r);
                }
                // The offset key removed while owned (`etcdctl del`): the object follows what
                // this owner committed last, so its commit puts the key back. Starting again
                // would resolve `kafka.start-from` and skip or rewrite the partition.
                Ok(Ok(coord::Committed::Moved { recorded: None })) if stored.is_some() => {
                    tracing::warn!(partition = %tp, from, next, "the committed offset was removed while owned; committing the next one again");
                    stored = None;
                }
                // Offsets are committed only contiguously: an object that does not start at the
                // committed offset is not committed past it (an operator's offset set while
                // the roll was under way, or a commit this owner never made).
                Ok(Ok(coord::Committed::Moved { recorded })) => {
                    anyhow::bail!(
                        "{tp}: not committing {next}: the committed offset is {recorded:?}, not {from} where {key} starts; starting the partition again from it"
                    )
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
    fn rolled(&self, tp: &TopicPartition, f: &Finished, next: i64) {
        self.metrics.uploads.inc();
        self.metrics.records.inc_by(f.span.records);
        for g in &f.span.gaps {
            self.metrics
                .gap_records
                .get_or_create(&ReasonLabel { reason: g.reason.as_str().to_owned() })
                .inc_by(g.len());
        }
        self.metrics.bytes.inc_by(f.bytes);
        self.metrics.records_escaped.inc_by(f.escaped);
        self.metrics.records_dead_lettered.inc_by(f.dead_letter.as_ref().map_or(0, |d| d.2));
        if f.bucket == Bucket::NoTime {
            self.metrics.records_without_time.inc_by(f.span.records);
        }
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::continuity::ObjectSpan;

    fn span(first: i64, last: i64, holes: &[i64]) -> Span {
        Span::of_offsets(first, last, holes)
    }

    fn exists(s: &Span) -> Outcome {
        Outcome::Exists { span: s.as_object(0), etag: Some("\"e\"".into()) }
    }

    #[test]
    fn what_an_upload_means() {
        let tp = TopicPartition { topic: "t".into(), partition: 0 };
        let ours = span(100, 199, &[]);
        let cases = [
            ("written", Outcome::Written, After::Ours),
            ("our own earlier try, or the same records", exists(&ours), After::Ours),
            ("a previous owner's object ending later", exists(&span(100, 250, &[])), After::Theirs { last: 250 }),
            ("a previous owner's object ending earlier", exists(&span(100, 150, &[])), After::Theirs { last: 150 }),
        ];
        for (name, outcome, want) in cases {
            assert_eq!(after(&outcome, &tp, &ours, "c/zonal"), want, "{name}");
        }
        // Objects that do not prove they hold our records are never committed past.
        for (name, outcome) in [
            ("an object written across a hole", exists(&span(100, 199, &[150]))),
            ("an object starting elsewhere", exists(&span(99, 199, &[]))),
            ("an object without offsets", Outcome::Exists { span: ObjectSpan::default(), etag: None }),
        ] {
            assert!(matches!(after(&outcome, &tp, &ours, "c/zonal"), After::Unproven { .. }), "{name}");
        }
        let mut lying = span(100, 199, &[]).as_object(0);
        lying.records = Some(39_946);
        let lie = Outcome::Exists { span: lying, etag: None };
        assert!(matches!(after(&lie, &tp, &ours, "c/zonal"), After::Unproven { .. }), "counts that do not add up");
        let mut staging = ours.as_object(0);
        staging.source = Some("lkc-staging/zonal".into());
        let other_deployment = Outcome::Exists { span: staging, etag: None };
        assert!(
            matches!(after(&other_deployment, &tp, &ours, "lkc-prod/zonal"), After::Unproven { .. }),
            "another deployment's object with the same records is not ours"
        );
        assert_eq!(
            after(&exists(&ours), &tp, &ours, "unknown/zonal"),
            After::Ours,
            "an unknown cluster does not refuse"
        );
        let other = TopicPartition { topic: "t".into(), partition: 1 };
        assert!(
            matches!(after(&exists(&ours), &other, &ours, "c/zonal"), After::Unproven { .. }),
            "another partition's object"
        );
    }
}
