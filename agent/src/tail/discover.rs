//! Discovery: what the globs match now, and what that means for the files already tailed
//! (renamed, or gone from the globs) and for new ones (opened where their checkpoint says).
//!
//! ```text
//!  paths (globs) ──glob──> not excluded ──stat──> Matches { (dev, ino) -> path }
//!  Matches ──follow_known──> tailed and matched: path updated (a rename follows the inode)
//!          │                 tailed, not matched: orphan, read until idle, then let go
//!          └──open──> new: checkpoint ──> its offset (a copy finished first if it no longer fits)
//!                          none ──> 0, or the end at the first scan with `start-at = end`
//! ```

use std::fs::File;
use std::path::{Path, PathBuf};

use super::{Matches, Tailer};
use crate::checkpoint::{self, FileId, Fingerprint};
use crate::config::StartAt;
use crate::metrics::{ErrorKind, Metrics};

impl Tailer {
    /// Lists the globs: every regular file they match and `exclude` does not, by identity. A
    /// pattern or entry that cannot be listed is logged and skipped, so the others go on.
    pub(super) fn list_globs(&self) -> Matches {
        let name = &self.name;
        let mut seen = Matches::new();
        let mut failures: Vec<String> = Vec::new();
        #[cfg(test)]
        if self.listing_fails {
            return seen;
        }
        for pattern in &self.config.paths {
            let entries = match glob::glob(pattern) {
                Ok(e) => e,
                Err(e) => {
                    tracing::error!(stream = %name, pattern, error = %e, "invalid glob");
                    continue;
                }
            };
            for entry in entries {
                match entry {
                    Ok(path) if !self.excluded(&path) => match std::fs::metadata(&path) {
                        Ok(meta) if meta.is_file() => {
                            seen.entry(FileId::of(&meta)).or_insert(path);
                        }
                        Ok(_) => {}
                        Err(e) => tracing::debug!(stream = %name, path = %path.display(), error = %e, "stat failed"),
                    },
                    Ok(_) => {}
                    Err(e) => {
                        // Not a deletion: the files of a folder that cannot be listed stay
                        // tailed as they are (see `follow_known`).
                        self.metrics.error(name, ErrorKind::List);
                        tracing::warn!(stream = %name, error = %e, "a folder of the globs cannot be listed; its files are kept as they are");
                        failures.push(e.to_string());
                    }
                }
            }
        }
        let report = match &failures[..] {
            [] => None,
            [one] => Some(format!("cannot list {one}")),
            [first, rest @ ..] => Some(format!("cannot list {first} (and {} more)", rest.len())),
        };
        *self.listing.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = report;
        seen
    }

    fn excluded(&self, path: &Path) -> bool {
        self.exclude.iter().any(|p| p.matches_path(path))
    }

    /// Whether the stream's globs would match `path` (and `exclude` would not).
    pub(super) fn matches_globs(&self, path: &Path) -> bool {
        !self.excluded(path)
            && self.config.paths.iter().any(|p| glob::Pattern::new(p).is_ok_and(|p| p.matches_path(path)))
    }

    /// Whether file `id`, not among the matches, was only missed by a listing that failed: its
    /// path is one the globs match and it is still there (or that cannot be told). A file
    /// whose known path is outside the globs (a rotation being finished) is never that.
    pub(super) fn missed_by_listing(&self, path: &Path, id: FileId) -> bool {
        self.matches_globs(path) && still_at(path, id)
    }

    /// Brings the tailed files up to date with the globs. A file matched at another path was
    /// renamed within the globs, and its track follows the inode. A file not matched was
    /// renamed out of the globs or deleted: it becomes an orphan, finished through the open
    /// descriptor and then let go.
    pub(super) fn follow_known(&mut self, seen: &Matches) {
        let missed: std::collections::BTreeSet<FileId> = self
            .files
            .iter()
            .filter(|(id, t)| !seen.contains_key(id) && self.missed_by_listing(&t.track.with(|s| s.path.clone()), **id))
            .map(|(id, _)| *id)
            .collect();
        for (id, t) in self.files.iter_mut() {
            match seen.get(id) {
                Some(path) => {
                    let renamed = t.track.with(|s| {
                        let renamed = s.path != *path;
                        s.path = path.clone();
                        s.orphan = false;
                        renamed
                    });
                    if renamed {
                        self.metrics.renames.get_or_create(&Metrics::stream(&self.name)).inc();
                    }
                    t.unseen_scans = 0;
                }
                // Not matched, but still at its path as far as a stat can tell: the listing
                // failed (a folder unreadable for a moment, descriptors exhausted, a stale
                // handle), which is not a rotation. It stays tailed as it is.
                None if missed.contains(id) => {}
                None => {
                    t.unseen_scans += 1;
                    // A file leaving the globs is counted once, at the first scan that misses
                    // it, however many scans it takes to finish.
                    if t.unseen_scans == 1 {
                        self.metrics.renames.get_or_create(&Metrics::stream(&self.name)).inc();
                    }
                    t.track.with(|s| s.orphan = true);
                }
            }
        }
    }

    /// Opens a file the globs newly match and starts tailing it where its checkpoint says.
    pub(super) fn open(&mut self, id: FileId, path: PathBuf) {
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) => {
                self.metrics.error(&self.name, ErrorKind::Read);
                tracing::error!(stream = %self.name, path = %path.display(), error = %e, "cannot open file; other files continue");
                return;
            }
        };
        let meta = match file.metadata() {
            Ok(m) if FileId::of(&m) == id => m,
            // The path was replaced between the stat and the open: the next scan sees the new file.
            _ => return,
        };
        let size = meta.len();
        let fingerprint = Fingerprint::read(&file).unwrap_or_default();
        let offset = self.resume_offset(id, &path, &mut file, size);
        self.start(id, path, file, offset, fingerprint, false);
    }

    /// Where a newly matched file of `size` bytes starts, from its checkpoint. A checkpoint that
    /// no longer fits the file (head changed, or longer than the file) means a copytruncate or
    /// a replacement while the agent was down; the copy beside it, if logrotate kept one, is
    /// finished first, and the file starts at 0.
    fn resume_offset(&mut self, id: FileId, path: &Path, file: &mut File, size: u64) -> u64 {
        match self.store.load(id) {
            Ok(Some(c)) => {
                let offset = checkpoint::resume_offset(&c, file, size).unwrap_or(0);
                let replaced = c.fingerprint().len > 0 && !c.fingerprint().same_file(file).unwrap_or(true);
                if replaced || c.offset > size {
                    self.finish_copy_of(&c, id, path);
                }
                offset
            }
            // `start-at = end` skips what was written before the agent first tailed the stream,
            // never a file created since (while the agent was down, say).
            Ok(None)
                if self.first_scan
                    && self.config.start_at == StartAt::End
                    && file.metadata().is_ok_and(|m| checkpoint::predates(&m, self.first_start)) =>
            {
                size
            }
            Ok(None) => 0,
            Err(e) => {
                self.metrics.error(&self.name, ErrorKind::Checkpoint);
                tracing::error!(stream = %self.name, path = %path.display(), error = %e,
                    "corrupt checkpoint; shipping the file from the start (duplicates rather than loss)");
                if let Err(e) = self.store.quarantine(id) {
                    tracing::error!(stream = %self.name, error = %e, "cannot move the corrupt checkpoint aside");
                }
                0
            }
        }
    }
}

/// Whether `path` is still file `id`, or cannot be told (a stat error other than "not found"):
/// only a file known to be gone or replaced at its path has left the globs.
pub(super) fn still_at(path: &Path, id: FileId) -> bool {
    match std::fs::metadata(path) {
        Ok(meta) => FileId::of(&meta) == id,
        Err(e) => e.kind() != std::io::ErrorKind::NotFound,
    }
}
