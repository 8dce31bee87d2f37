//! Copytruncate noticed while tailing (the file shrank below what was read, or its head
//! changed), and the head of a young file saved as it grows, since the head is what finds a
//! file again after a restart.
//!
//! ```text
//!  scan ──> size < read offset, or head changed ──> truncated:
//!     copy beside it (same head) ──> the track (offset, unsent lines, batches in flight)
//!     │                               moves to the copy, finished outside the globs
//!     no copy ──> what was read is sent; what was not is counted as lost
//!     either way ──> the file itself starts again at 0, through its open descriptor
//!  head < FINGERPRINT_BYTES and the file longer ──> longer head saved to the checkpoint now
//! ```

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::{Dispatch, Matches, Tailed, Tailer};
use crate::checkpoint::{self, FileId, Fingerprint, Store};
use crate::metrics::Metrics;
use crate::rotation::{self, Found};

impl Tailer {
    /// Copytruncate: the file shrank below what was read, or its head changed. logrotate keeps
    /// the copy beside the file: the track (its read position, unsent lines and in-flight
    /// batches) moves to the copy, which is finished like a renamed file, and the file itself
    /// starts again at 0. Without a copy, what was read is still sent and what was not is
    /// counted as lost.
    pub(super) fn check_truncation(&mut self, id: FileId, seen: &Matches, out: &mut impl Dispatch) {
        let Some(t) = self.files.get_mut(&id) else { return };
        // A closed file is looked at when a scan reopens it.
        let Some(file) = &t.file else { return };
        let Ok(size) = file.metadata().map(|m| m.len()) else { return };
        let head = t.track.with(|s| s.fingerprint);
        let same = head.same_file(file).unwrap_or(true);
        if size >= t.offset && same {
            if head_can_grow(head, size) {
                self.unflushed |= save_longer_head(&self.store, t);
            }
            return;
        }
        let path = t.track.with(|s| s.path.clone());
        let read = t.offset;
        self.metrics.truncations.get_or_create(&Metrics::stream(&self.name)).inc();
        let dirs = self.search_dirs(seen, Some(&path));
        let tailed: BTreeSet<FileId> = self.files.keys().chain(seen.keys()).copied().collect();
        let copy = rotation::find(id, head, read, &dirs, &|f| tailed.contains(&f)).filter(|f| f.id != id);
        let Some(old) = self.files.remove(&id) else { return };
        self.shared_tracks().remove(&id);
        let truncated = match copy {
            Some(found) => self.move_to_copy(old, found, &path),
            None => self.send_what_was_read(old, &path, out),
        };
        if let Some(truncated) = truncated {
            self.start_again(id, truncated, path, seen);
        }
    }

    /// logrotate kept a copy of the truncated file: the track (read position, unsent lines,
    /// batches in flight) moves to the copy, which is finished like a renamed file. Returns
    /// the truncated file's descriptor.
    fn move_to_copy(&mut self, old: Tailed, found: Found, path: &Path) -> Option<File> {
        let Tailed { file: truncated, track, splitter, batch, last_data, offset: read, .. } = old;
        tracing::info!(stream = %self.name, path = %path.display(), copy = %found.path.display(), read,
            "file truncated (copytruncate); finishing the copy, then the file from the start");
        self.metrics.recovered_files.get_or_create(&Metrics::stream(&self.name)).inc();
        let mut file = found.file;
        let _ = file.seek(SeekFrom::Start(read));
        let copy_size = file.metadata().map(|m| m.len()).unwrap_or(read);
        track.with(|s| {
            s.id = found.id;
            s.path = found.path.clone();
            s.orphan = true;
            s.size = copy_size;
            s.dirty = true;
        });
        // The copy's checkpoint is written before the file's own is reset (when the file starts
        // again): a crash in between must still find the copy and where to finish it.
        self.save_checkpoint(&track.with(|s| s.checkpoint()));
        self.shared_tracks().insert(found.id, track.clone());
        self.files.insert(
            found.id,
            Tailed { file: Some(file), track, splitter, offset: read, last_data, unseen_scans: 1, batch },
        );
        truncated
    }

    /// No copy beside the truncated file: what was read is sent all the same, and what was not
    /// is counted as lost. Returns the truncated file's descriptor.
    fn send_what_was_read(&mut self, mut old: Tailed, path: &Path, out: &mut impl Dispatch) -> Option<File> {
        let read = old.offset;
        let lost = old.track.with(|s| s.size).saturating_sub(read);
        tracing::warn!(stream = %self.name, path = %path.display(), read, lost_bytes = lost,
            "file truncated (copytruncate) with no copy beside it; lines not read before the truncation are lost");
        self.metrics.unrecoverable_bytes.get_or_create(&Metrics::stream(&self.name)).inc_by(lost);
        // The old track is no longer among the stream's tracks (the file starts again under a
        // new one), so its batches' acknowledgements keep it alive until they settle and
        // nothing writes its checkpoint any more.
        old.flush_all();
        let Tailed { file, track, batch, .. } = old;
        self.send_leftover(&track, batch, out);
        file
    }

    /// The truncated file starts again from 0, through the descriptor already open: it may
    /// have been renamed since the truncation (a rename rotation right after a copytruncate)
    /// and its new lines must not be lost. Outside the globs it is finished like any renamed
    /// file.
    fn start_again(&mut self, id: FileId, file: File, path: PathBuf, seen: &Matches) {
        // Outside the globs only if not still at its path (a listing that failed is no rename).
        let orphan = !seen.contains_key(&id) && !self.missed_by_listing(&path, id);
        let path = seen.get(&id).cloned().unwrap_or(path);
        let fingerprint = Fingerprint::read(&file).unwrap_or_default();
        self.start(id, path, file, 0, fingerprint, orphan);
    }
}

/// Whether a file of `size` bytes has more head to fingerprint than `head` covers.
pub(super) fn head_can_grow(head: Fingerprint, size: u64) -> bool {
    (head.len as usize) < checkpoint::FINGERPRINT_BYTES && size > u64::from(head.len)
}

/// The head identifies a file after a restart (a copytruncate or a rename while the agent was
/// down is told by it), so a longer head goes to the checkpoint before any of the lines it
/// covers is sent (staged here, written before the next send: see `Tailer::flush_identities`):
/// a file first seen empty would otherwise be found by nothing. The head stops growing at
/// [`checkpoint::FINGERPRINT_BYTES`], so this is a few records per file. Returns whether a
/// checkpoint was staged.
pub(super) fn save_longer_head(store: &Store, t: &Tailed) -> bool {
    let Some(Ok(new_fp)) = t.file.as_ref().map(Fingerprint::read) else { return false };
    let changed = t.track.with(|s| {
        let changed = s.fingerprint != new_fp;
        s.fingerprint = new_fp;
        changed.then(|| s.checkpoint())
    });
    changed.inspect(|c| store.stage(c)).is_some()
}
