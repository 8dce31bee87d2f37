//! Descriptors: a file idle at its end is closed after `close-idle-secs` and reopened by its
//! identity when a scan sees it change; at most `max-open-files` are open, the files idle the
//! longest closed first to make room. A node with thousands of log files, most of them quiet,
//! then holds a descriptor per busy file rather than per file.
//!
//! ```text
//!  close_idle (each scan): in the globs, read to the end, nothing unsent, idle >= close-idle ──> closed
//!  reopen_changed (each scan), a closed file:
//!     matched, size != read offset ──open the path, same (dev, ino)──> read again (a truncation
//!     │                                                                  is told at the next read)
//!     not matched (renamed or deleted while closed) ──inode beside the stream's files──> reopened,
//!     │                                                                 finished like any rotation
//!     └ not found: deleted; let go (lines written after it was closed, if any, went with it)
//!  room_to_open: open files < max-open-files, else close the longest idle file at rest
//! ```

use std::fs::File;
use std::io::{Seek, SeekFrom};

use super::{Matches, Tailed, Tailer};
use crate::checkpoint::FileId;
use crate::rotation;

impl Tailed {
    /// Whether the file can be closed without losing its place: in the globs (an orphan may be
    /// deleted, and is read only through its descriptor), read to its end with its head as it
    /// was (a truncation not yet handled needs the descriptor), and nothing read is waiting to
    /// be sent or split.
    fn at_rest(&self) -> bool {
        let Some(file) = &self.file else { return false };
        self.unseen_scans == 0
            && self.batch.is_empty()
            && self.splitter.buffered() == 0
            && !self.splitter.has_pending()
            && file.metadata().is_ok_and(|m| m.len() == self.offset)
            && self.track.with(|s| s.fingerprint).same_file(file).unwrap_or(false)
    }
}

impl Tailer {
    /// Closes the files idle at their end for `close-idle-secs`.
    pub(super) fn close_idle(&mut self) {
        let close_idle = self.close_idle;
        for t in self.files.values_mut() {
            if t.file.is_some() && t.last_data.elapsed() >= close_idle && t.at_rest() {
                t.file = None;
            }
        }
    }

    /// Whether one more file may be opened: under `max-open-files`, or once the file idle the
    /// longest among those at rest is closed.
    pub(super) fn room_to_open(&mut self) -> bool {
        if self.files.values().filter(|t| t.file.is_some()).count() < self.max_open {
            return true;
        }
        let oldest = self.files.iter().filter(|(_, t)| t.at_rest()).min_by_key(|(_, t)| t.last_data).map(|(id, _)| *id);
        match oldest.and_then(|id| self.files.get_mut(&id)) {
            Some(t) => {
                t.file = None;
                true
            }
            None => false,
        }
    }

    /// Reopens the closed files that changed since they were closed: grown or shrunk at their
    /// path, or renamed or deleted (found again by inode beside the stream's files, or let go).
    pub(super) fn reopen_changed(&mut self, seen: &Matches) {
        let closed: Vec<FileId> = self.files.iter().filter(|(_, t)| t.file.is_none()).map(|(id, _)| *id).collect();
        for id in closed {
            let Some(t) = self.files.get(&id) else { continue };
            if seen.get(&id).is_some_and(|path| std::fs::metadata(path).is_ok_and(|m| m.len() == t.offset)) {
                continue;
            }
            // Room first: the file is opened to be looked at.
            if !self.room_to_open() {
                return;
            }
            let Some(t) = self.files.get(&id) else { continue };
            let found = match seen.get(&id) {
                Some(path) => match std::fs::metadata(path) {
                    Ok(m) if FileId::of(&m) == id && m.len() == t.offset => continue,
                    Ok(m) if FileId::of(&m) == id => File::open(path).ok().map(|f| (f, false)),
                    // Replaced or unreadable for now: the next scan tells.
                    _ => continue,
                },
                None => {
                    let path = t.track.with(|s| s.path.clone());
                    // Still at its path, or that cannot be told: the listing failed (a folder
                    // unreadable for a moment, descriptors exhausted), which is no rotation.
                    if self.missed_by_listing(&path, id) {
                        continue;
                    }
                    let dirs = self.search_dirs(seen, Some(&path));
                    match rotation::find_inode(id, &dirs) {
                        Some((path, file)) => {
                            t.track.with(|s| s.path = path);
                            Some((file, true))
                        }
                        // A folder it may have been renamed into cannot be listed: gone cannot
                        // be told from hidden, so it waits.
                        None if dirs
                            .iter()
                            .any(|d| std::fs::read_dir(d).is_err_and(|e| e.kind() != std::io::ErrorKind::NotFound)) =>
                        {
                            continue;
                        }
                        None => {
                            tracing::info!(stream = %self.name, path = %t.track.with(|s| s.path.display().to_string()),
                                "a file closed while idle was deleted; lines written to it after it was closed, if any, went with it");
                            self.let_go(id);
                            continue;
                        }
                    }
                }
            };
            let Some((mut file, orphan)) = found else { continue };
            let Some(t) = self.files.get_mut(&id) else { continue };
            if file.metadata().is_ok_and(|m| FileId::of(&m) == id) && file.seek(SeekFrom::Start(t.offset)).is_ok() {
                t.file = Some(file);
                t.track.with(|s| s.orphan = orphan);
            }
        }
    }
}
