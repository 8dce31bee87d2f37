//! Reading: a file's new bytes become events in its batch, and the batch leaves in groups of
//! `batch-lines`/`batch-bytes`, each handed to the [`Dispatch`] as one partition choice.
//!
//! ```text
//!  file ──read CHUNK──> Splitter ──events──> Batch ──next_group(limits)──> Dispatch::send
//!    │ up to PER_FILE_PASS per file and round, for fairness      │ refused: kept, sent later
//!    │ unsent bytes over the cap: reading waits for the sender ◄─┘
//!    └ at the end for now: the incomplete last group goes too; an overdue multi-line event too
//! ```

use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::truncate::{head_can_grow, save_longer_head};
use super::{CHUNK, Dispatch, PER_FILE_PASS, Tailed, Tailer};
use crate::batch::Batch;
use crate::checkpoint::FileId;
use crate::container::EventMeta;
use crate::metrics::{ErrorKind, Metrics};
use crate::track::FileTrack;

impl Tailed {
    /// Whether the file was truncated under the reader: it is shorter than what was read, or
    /// has more to read and its head is no longer the head it had (truncated and written
    /// again past the read offset). One `fstat` per read, and a read of the head (at most
    /// `FINGERPRINT_BYTES`) only when there is something new to read.
    fn changed_under(&self) -> bool {
        let Some(file) = &self.file else { return false };
        let Ok(size) = file.metadata().map(|m| m.len()) else { return false };
        match size.cmp(&self.offset) {
            std::cmp::Ordering::Less => true,
            std::cmp::Ordering::Equal => false,
            std::cmp::Ordering::Greater => !self.track.with(|s| s.fingerprint).same_file(file).unwrap_or(true),
        }
    }
}

impl Tailer {
    /// Reads up to one pass worth of a file; returns whether anything was read or sent.
    pub(super) fn read_file(&mut self, id: FileId, out: &mut impl Dispatch) -> bool {
        let mut read_total = 0usize;
        // Lines read and not yet sent are bounded: while the budget is exhausted, reading stops.
        let unsent_cap = self.config.batch_bytes.max(CHUNK) * 2;
        loop {
            if self.others_unsent + self.held_by(id) + CHUNK > self.unsent_limit {
                // The stream's files hold all the unsent lines they may: this one sends what it
                // has, an incomplete group too (otherwise files each holding one could wait for
                // one another for ever), and reads on only if that made room.
                self.send_batch(id, true, out);
                if let Some(t) = self.files.get_mut(&id) {
                    t.batch.release_if_empty();
                }
                if self.others_unsent + self.held_by(id) + CHUNK > self.unsent_limit {
                    return read_total > 0;
                }
            }
            let Some(t) = self.files.get_mut(&id) else { return false };
            if t.changed_under() {
                // Truncated (copytruncate) since the last read, and maybe grown again past the
                // read offset: reading on from that offset would skip what the copy holds
                // beyond it and ship the new content from its middle. Handled now, not at the
                // next scan, which may be a long pass away while catching up.
                let seen = std::mem::take(&mut self.last_seen);
                self.check_truncation(id, &seen, out);
                self.last_seen = seen;
                return true;
            }
            if t.batch.bytes() >= unsent_cap {
                self.send_batch(id, false, out);
                if self.files.get(&id).is_some_and(|t| t.batch.bytes() >= unsent_cap) {
                    return read_total > 0;
                }
                continue;
            }
            // A closed file is read again once a scan sees it change and reopens it.
            let Some(file) = t.file.as_mut() else { return read_total > 0 };
            let n = match file.read(&mut self.buf) {
                Ok(n) => n,
                Err(e) => {
                    self.metrics.error(&self.name, ErrorKind::Read);
                    tracing::error!(stream = %self.name, error = %e, "read failed; will retry");
                    return false;
                }
            };
            if n == 0 {
                let progressed = self.at_end(id, out);
                return progressed || read_total > 0;
            }
            self.split_chunk(id, n);
            read_total += n;
            if !self.send_batch(id, false, out) || read_total >= PER_FILE_PASS {
                return true;
            }
        }
    }

    /// At the end of the file for now: sends what is complete, a multi-line event whose
    /// continuation is overdue included. Returns whether there was anything to send, or true
    /// when the file shrank, so that the stream looks again soon.
    fn at_end(&mut self, id: FileId, out: &mut impl Dispatch) -> bool {
        let multiline_timeout = Duration::from_millis(self.config.multiline_timeout_ms);
        let Some(t) = self.files.get_mut(&id) else { return false };
        if t.splitter.has_pending() && t.last_data.elapsed() >= multiline_timeout {
            t.flush_pending();
        }
        let size = t.file.as_ref().and_then(|f| f.metadata().ok()).map_or(t.offset, |m| m.len());
        t.track.with(|s| s.size = size);
        let sent = !t.batch.is_empty();
        if size < t.offset {
            // Truncated: handled before the next read.
            return true;
        }
        self.send_batch(id, true, out);
        if let Some(t) = self.files.get_mut(&id) {
            t.batch.release_if_empty();
        }
        sent
    }

    /// Splits the `n` bytes just read into the buffer into the file's batch, and records how
    /// far the file is read.
    fn split_chunk(&mut self, id: FileId, n: usize) {
        let Some(t) = self.files.get_mut(&id) else { return };
        let Tailed { splitter, batch, offset, .. } = t;
        let (mut truncated, mut malformed) = (0u64, 0u64);
        splitter.push(&self.buf[..n], *offset, &mut |d: &[u8], e: u64, tr: bool, m: EventMeta| {
            truncated += u64::from(tr);
            malformed += u64::from(m.malformed);
            batch.push(d, e, m);
        });
        *offset += n as u64;
        t.last_data = Instant::now();
        let off = *offset;
        let head_grew = t.track.with(|s| {
            s.read_offset = off;
            s.size = s.size.max(off);
            head_can_grow(s.fingerprint, off)
        });
        if head_grew {
            self.unflushed |= save_longer_head(&self.store, t);
        }
        if truncated > 0 {
            self.metrics.truncated_lines.get_or_create(&Metrics::stream(&self.name)).inc_by(truncated);
        }
        if malformed > 0 {
            self.metrics.malformed_lines.get_or_create(&Metrics::stream(&self.name)).inc_by(malformed);
        }
    }

    /// Sends the file's batch in groups of `batch-lines`/`batch-bytes`, each to one partition.
    /// Unless `all`, an incomplete last group waits for more lines. Returns false when the
    /// dispatcher refused a group (stopping, or budget held by retries).
    pub(super) fn send_batch(&mut self, id: FileId, all: bool, out: &mut impl Dispatch) -> bool {
        self.flush_identities();
        let limits = self.limits;
        let Some(t) = self.files.get_mut(&id) else { return true };
        // The file's identity for the records' headers, from its first line, which is complete
        // by the time anything of the file is sent.
        if self.config.source_headers
            && t.track.source.get().is_none()
            && !t.batch.is_empty()
            && let Some(source) = t.file.as_ref().and_then(|f| crate::record::source_of(&self.host, id, f))
        {
            let _ = t.track.source.set(source.into());
        }
        let mut batch = std::mem::take(&mut t.batch);
        let track = t.track.clone();
        let mut start = 0;
        let mut ok = true;
        while let Some(range) = batch.next_group(start, limits, all) {
            if !out.send(&track, &batch, range.clone()) {
                ok = false;
                break;
            }
            start = range.end;
        }
        // What was not sent stays in the file's batch, to go at the next call in file order.
        batch.consume(start);
        if let Some(t) = self.files.get_mut(&id) {
            t.batch = batch;
        }
        ok
    }

    /// Sends the lines of a file that is no longer tailed, all of them: nothing would send
    /// them later, so a refused group waits for room instead of being kept.
    pub(super) fn send_leftover(&mut self, track: &Arc<FileTrack>, batch: Batch, out: &mut impl Dispatch) {
        let mut start = 0;
        while let Some(range) = batch.next_group(start, self.limits, true) {
            if out.stopping() {
                return;
            }
            if out.send(track, &batch, range.clone()) {
                start = range.end;
            } else {
                out.make_room();
            }
        }
    }
}
