//! Appending one consumed record to its partition's buffer: the chain says whether it follows,
//! its time says which object it belongs to, and `lines` may refuse a line break.
//!
//! ```text
//!  message ──Chain::offer──> Stale (dropped) | Verify (seek back) | Gap (counted) | Append
//!     Append ──place (time partition, offset interval) = open buffer's?──yes──> Buffer::append
//!                                             ──no───> carry (copied): the buffer rolls, the carry opens the next
//!            ──lines, newlines = refuse, a line break──> held before it (what came before still uploads)
//! ```

use anyhow::Context;
use rdkafka::Offset;
use rdkafka::message::{BorrowedMessage, Message};
use std::sync::PoisonError;

use super::Worker;
use super::pump::Reading;
use crate::buffer::{Buffer, Format, OwnedRecord, Place, Record, needs_escape};
use crate::config::Newlines;
use crate::continuity::{ContinuityError, Span, Verdict};
use crate::metrics::ErrorKind;

impl Worker {
    /// Appends a consumed record to the buffer, opening one for the first record after a roll,
    /// as the chain says; returns the payload size (0 for a record not appended).
    pub(super) fn append(&self, r: &mut Reading<'_>, m: &BorrowedMessage<'_>) -> anyhow::Result<u64> {
        let tp = r.tp;
        let verdict = r.chain.offer(m.offset()).map_err(|e| {
            self.metrics.error(match e {
                ContinuityError::Unstable { .. } => ErrorKind::OffsetGap,
                _ => ErrorKind::Continuity,
            });
            anyhow::anyhow!("reading {tp}: {e}")
        })?;
        match verdict {
            Verdict::Append => {}
            Verdict::Stale => {
                tracing::debug!(partition = %tp, offset = m.offset(), want = r.chain.expected(), "dropping a record from before a seek");
                return Ok(0);
            }
            Verdict::Verify => {
                // Not an error: a transactional topic's commit markers make a jump after every
                // transaction, and a committed offset often points at one. The jump is read again
                // and, seen again, counted as a gap (`gap_records{reason="log"}`); only reads
                // that keep disagreeing are an error (offset-gap).
                let want = r.chain.expected();
                tracing::debug!(partition = %tp, want, got = m.offset(),
                    "a record past the expected offset; reading again from the expected one before believing the jump");
                self.seek(tp, Offset::Offset(want))?;
                return Ok(0);
            }
            Verdict::Gap(g) => {
                tracing::info!(partition = %tp, from = g.from, to = g.to, reason = g.reason.as_str(),
                    "offsets not in the log (compaction, transaction markers), seen twice; counted as a gap");
                self.gap(r, g)?;
            }
        }
        let headers = az_core::headers::of(m);
        let rec = Record::of_message(&tp.topic, m, &headers);
        let place = self.place(&rec);
        if r.buf.as_ref().is_some_and(|b| b.place != place) {
            // The record belongs to another object: the open buffer rolls first. The message
            // borrows from librdkafka and cannot wait for that roll, so it is copied.
            r.carry = Some(OwnedRecord::of(&rec));
            return Ok(m.payload_len() as u64);
        }
        self.push(r, &rec, place)?;
        Ok(m.payload_len() as u64)
    }

    /// Appends the record held back for the next buffer (none is open).
    pub(super) fn append_carried(&self, r: &mut Reading<'_>) -> anyhow::Result<()> {
        if let Some(carried) = r.carry.take() {
            let topic = r.tp.topic.clone();
            carried.with(&topic, |rec| self.push(r, rec, self.place(rec)))?;
        }
        Ok(())
    }

    /// Where a record belongs: its time partition and offset interval.
    fn place(&self, rec: &Record<'_>) -> Place {
        Place::of(self.times.bucket(self.times.time_of(rec)), rec.offset, self.cfg.roll.offset_interval)
    }

    /// Appends a record that follows the chain to the open buffer (opening one if none is).
    fn push(&self, r: &mut Reading<'_>, rec: &Record<'_>, place: Place) -> anyhow::Result<()> {
        let (tp, s3) = (r.tp, &self.cfg.s3);
        if s3.format == Format::Lines
            && self.cfg.records.newlines == Newlines::Refuse
            && needs_escape(rec.value.unwrap_or_default())
        {
            // Held before the record: the buffer so far rolls by age and commits up to it, and
            // nothing after it is read until an operator sets the offset (past it, or after
            // changing the format and restarting).
            self.metrics.error(ErrorKind::Newline);
            tracing::error!(partition = %tp, offset = rec.offset, kind = ErrorKind::Newline.as_str(),
                "a value with a line break, and records.newlines = \"refuse\": the partition is held before it (zonal-transporter offsets --set … --while-owned, or newlines = \"escape\", or format = \"json\")");
            r.held = true;
            return Ok(());
        }
        let b = match &mut r.buf {
            Some(b) => b,
            None => {
                let span = std::mem::replace(&mut r.pending, Span::starting(rec.offset));
                let b = Buffer::create(&self.buffers, self.layout.clone(), span, rec, place)
                    .with_context(|| format!("creating a buffer in {}", self.buffers.dir().display()))?;
                r.buf.insert(b)
            }
        };
        let written = b
            .append(rec, place)
            .inspect_err(|_| self.metrics.error(ErrorKind::Continuity))
            .with_context(|| format!("appending offset {} of {tp} to its buffer", rec.offset))?;
        self.disk.add(written);
        r.spurious = 0;
        // Status is for humans: refresh it every 1024 records, not per record.
        if b.records() % 1024 == 1
            && let Some(s) = self.owned.lock().unwrap_or_else(PoisonError::into_inner).get_mut(tp)
        {
            s.position = rec.offset;
            s.buffered = b.records();
        }
        Ok(())
    }
}
