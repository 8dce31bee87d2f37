//! A tailed file's beginning and end: starting to tail an open file (its track, its first
//! checkpoint) and letting go of a file outside the globs once it is finished.
//!
//! ```text
//!  open / recover / truncate ──start(file, offset)──> seek ──> FileTrack + checkpoint saved
//!                                                          ──> Tracks + files (read from here)
//!  orphan idle for rotate-wait, read to the end ──> unterminated last line? flush and send it
//!     everything acknowledged ──let_go──> track, lag metric and checkpoint removed
//! ```

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::{Arc, MutexGuard, PoisonError};
use std::time::Instant;

use super::{Dispatch, Tailed, Tailer};
use crate::batch::Batch;
use crate::checkpoint::{Checkpoint, FileId, Fingerprint};
use crate::lines::Splitter;
use crate::metrics::{ErrorKind, FileLabel};
use crate::track::FileTrack;

impl Tailer {
    /// Starts tailing an open file at `offset`. An `orphan` is a file outside the globs (a
    /// rotated file found again): it is finished and released once idle.
    pub(super) fn start(
        &mut self,
        id: FileId,
        path: PathBuf,
        mut file: File,
        offset: u64,
        fingerprint: Fingerprint,
        orphan: bool,
    ) {
        let size = file.metadata().map(|m| m.len()).unwrap_or(offset);
        if let Err(e) = file.seek(SeekFrom::Start(offset)) {
            self.metrics.error(&self.name, ErrorKind::Read);
            tracing::error!(stream = %self.name, path = %path.display(), error = %e, "seek failed");
            return;
        }
        tracing::info!(stream = %self.name, path = %path.display(), offset, size, orphan, "tailing");
        let pod = self.config.pod_metadata.then(|| crate::container::PodMeta::of(&path)).flatten();
        let track = Arc::new(FileTrack::new(id, path, fingerprint, offset).with_pod(pod));
        track.with(|s| {
            s.size = size;
            s.orphan = orphan;
        });
        // The checkpoint exists from the first moment: a crash before the first periodic write
        // must still leave what identifies this file (its inode and head) for the restart.
        self.save_checkpoint(&track.with(|s| s.checkpoint()));
        self.shared_tracks().insert(id, track.clone());
        let splitter = Splitter::new(self.config.max_message_bytes, self.multiline.clone(), self.config.format);
        self.files.insert(
            id,
            Tailed {
                file: Some(file),
                track,
                splitter,
                offset,
                last_data: Instant::now(),
                unseen_scans: u32::from(orphan),
                batch: Batch::default(),
            },
        );
    }

    /// Records a checkpoint that identifies a file (a new one, a longer head, a copy taking
    /// over), written before anything more is sent ([`Tailer::flush_identities`]).
    pub(super) fn save_checkpoint(&mut self, c: &Checkpoint) {
        self.store.stage(c);
        self.unflushed = true;
    }

    /// Writes the checkpoints staged to identify files, if any: at the end of each scan and
    /// before each send, so a line is never sent before the checkpoint that finds its file
    /// again after a crash, and the files a scan opens cost one write together. A failure is
    /// counted and logged and tailing goes on: the next call tries again.
    pub(super) fn flush_identities(&mut self) {
        if !self.unflushed {
            return;
        }
        match self.store.flush() {
            Ok(()) => self.unflushed = false,
            Err(e) => {
                self.metrics.error(&self.name, ErrorKind::Checkpoint);
                tracing::error!(stream = %self.name, error = %e, "writing the checkpoints failed");
            }
        }
    }

    /// The stream's tracks, shared with the checkpointer and `/status`. Every use of the lock is
    /// a single insert, removal or read, so a panic elsewhere cannot leave the map half changed
    /// and a poisoned lock is used as it is.
    pub(super) fn shared_tracks(&self) -> MutexGuard<'_, BTreeMap<FileId, Arc<FileTrack>>> {
        self.tracks.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Lets go of the files outside the globs that are finished: read to the end, idle for
    /// rotate-wait, and everything read sent and acknowledged.
    pub(super) fn release_finished_orphans(&mut self, out: &mut impl Dispatch) {
        for id in self.idle_orphans() {
            let Some(t) = self.files.get_mut(&id) else { continue };
            if t.splitter.buffered() > 0 {
                // An orphan's unterminated last line will never get its newline: ship it, and
                // release the file once that is acknowledged.
                t.flush_all();
                self.send_batch(id, true, out);
                continue;
            }
            if t.track.with(|s| s.acks.acked() < t.offset) {
                continue;
            }
            self.let_go(id);
        }
    }

    /// The files outside the globs that were read to the end, have nothing unsent or in flight,
    /// and have been idle for rotate-wait.
    fn idle_orphans(&self) -> Vec<FileId> {
        self.files
            .iter()
            .filter(|(_, t)| {
                // Writers may keep their descriptor after a rename (until a reopen signal), so a
                // file outside the globs is read until it has been idle for rotate-wait.
                t.unseen_scans >= 1
                    && t.last_data.elapsed() >= self.rotate_wait
                    && t.batch.is_empty()
                    && t.track.with(|s| s.acks.in_flight() == 0)
                    && t.file.as_ref().is_some_and(|f| f.metadata().is_ok_and(|m| m.len() <= t.offset))
            })
            .map(|(id, _)| *id)
            .collect()
    }

    /// Stops tailing a finished file: its track, lag metric and checkpoint go, since nothing
    /// of it is left to ship.
    pub(super) fn let_go(&mut self, id: FileId) {
        let Some(t) = self.files.remove(&id) else { return };
        let path = t.track.with(|s| s.path.clone());
        tracing::info!(stream = %self.name, path = %path.display(), "finished a rotated or deleted file");
        self.shared_tracks().remove(&id);
        self.metrics.lag_bytes.remove(&FileLabel { stream: self.name.clone(), path: path.display().to_string() });
        if let Err(e) = self.store.remove(id) {
            tracing::warn!(stream = %self.name, error = %e, "removing a checkpoint failed");
        }
    }
}
