//! Recovery of files rotated while the agent was down. A checkpoint whose file the globs no
//! longer match describes a file renamed or copied away; a checkpoint that no longer fits its
//! file means the file was truncated and its copy holds the rest. Either way the file is found
//! again through `rotation` and finished from the checkpoint's offset, outside the globs.
//!
//! ```text
//!  first scan: Store::list ──checkpoint not matched──rotation::find──> same inode: finish it
//!                                  │                                 └ a copy: finish it; the
//!                                  │                                   truncated file from 0
//!                                  └ nothing found ──> counted gone, checkpoint removed
//!  open: checkpoint no longer fits its file ──rotation::find──> the copy: finish it / counted
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::{Matches, Tailer};
use crate::checkpoint::{Checkpoint, FileId, Fingerprint};
use crate::metrics::{ErrorKind, Metrics};
use crate::rotation;

impl Tailer {
    /// Directories where a rotated file of this stream may be.
    pub(super) fn search_dirs(&self, seen: &Matches, extra: Option<&Path>) -> BTreeSet<PathBuf> {
        rotation::search_dirs(&self.config.paths, seen.values().map(PathBuf::as_path), extra)
    }

    /// At start: every checkpoint whose file is not among the glob matches describes a file
    /// rotated (renamed, copied) while the agent was down. Find it by inode or head and finish
    /// it from the checkpoint, so no line written before the rotation is lost.
    pub(super) fn recover_checkpoints(&mut self, seen: &Matches) {
        let (checkpoints, errors) = self.store.list();
        for (id, e) in errors {
            self.metrics.error(&self.name, ErrorKind::Checkpoint);
            match id {
                // A file the globs match is opened as usual, and its corrupt checkpoint dealt
                // with there.
                Some(id) if seen.contains_key(&id) => {}
                Some(id) => self.finish_without_checkpoint(id, &e, seen),
                None => tracing::error!(stream = %self.name, error = %e, "checkpoints cannot be listed"),
            }
        }
        for c in self.adopt_renumbered(checkpoints, seen) {
            if seen.contains_key(&c.id) || self.files.contains_key(&c.id) {
                continue;
            }
            self.recover(&c, seen);
        }
    }

    /// A corrupt checkpoint of a file the globs no longer match (rotated while the agent was
    /// down): it is moved aside, and the file, if it is still beside its stream's files, is
    /// finished from its start: where it was read to is unknown, and duplicates are better
    /// than loss.
    fn finish_without_checkpoint(&mut self, id: FileId, e: &crate::checkpoint::CheckpointError, seen: &Matches) {
        let moved = self.store.quarantine(id);
        tracing::error!(stream = %self.name, error = %e, moved_to = ?moved.as_ref().ok(),
            "corrupt checkpoint of a file outside the globs moved aside");
        let dirs = self.search_dirs(seen, None);
        match rotation::find_inode(id, &dirs) {
            Some((path, file)) if !self.files.contains_key(&id) => {
                tracing::warn!(stream = %self.name, path = %path.display(),
                    "finishing the rotated file of a corrupt checkpoint from its start (lines may repeat)");
                self.metrics.recovered_files.get_or_create(&Metrics::stream(&self.name)).inc();
                let fingerprint = Fingerprint::read(&file).unwrap_or_default();
                self.start(id, path, file, 0, fingerprint, true);
            }
            _ => {}
        }
    }

    /// Finishes the file of one checkpoint the globs do not match, or counts it as gone. When
    /// that cannot be told (its folder cannot be listed, or the stream's folder is not there:
    /// a volume not mounted yet), the checkpoint is kept and tried again at the next scans.
    pub(super) fn recover(&mut self, c: &Checkpoint, seen: &Matches) {
        let path = Path::new(&c.path);
        if self.matches_globs(path)
            && let Ok(meta) = std::fs::metadata(path)
            && FileId::of(&meta) == c.id
        {
            // The listing missed a file that is there: open it like a matched file, from its
            // checkpoint (or, truncated meanwhile, its copy first and then from the start).
            self.open(c.id, path.to_owned());
            if self.files.contains_key(&c.id) {
                return;
            }
        }
        if self.undecidable(path) {
            if !self.deferred.iter().any(|d| d.id == c.id) {
                tracing::warn!(stream = %self.name, path = %c.path,
                    "the folder of a checkpoint cannot be listed now; it is kept and looked for again");
                self.deferred.push(c.clone());
            }
            return;
        }
        let dirs = self.search_dirs(seen, Some(Path::new(&c.path)));
        let tailed: BTreeSet<FileId> = self.files.keys().chain(seen.keys()).copied().collect();
        let Some(found) = rotation::find(c.id, c.fingerprint(), c.offset, &dirs, &|id| tailed.contains(&id)) else {
            if let Some((path, file)) = rotation::find_inode(c.id, &dirs).filter(|_| !tailed.contains(&c.id)) {
                // The file is there under another name with another head: truncated (its copy
                // gone too) and written again while the agent was down. What it holds now is new.
                tracing::warn!(stream = %self.name, was = %c.path, now = %path.display(),
                    "truncated and renamed while the agent was down, its copy gone; finishing what it holds now from the start");
                self.metrics.error(&self.name, ErrorKind::RotatedFileGone);
                let fingerprint = Fingerprint::read(&file).unwrap_or_default();
                self.start(c.id, path, file, 0, fingerprint, true);
                return;
            }
            self.metrics.error(&self.name, ErrorKind::RotatedFileGone);
            tracing::warn!(stream = %self.name, path = %c.path, offset = c.offset,
                "the file of a checkpoint is gone (compressed or deleted while the agent was down); anything it held past the offset could not be read");
            // Nothing is left to finish, and a checkpoint kept would be searched for again at
            // every start.
            let _ = self.store.remove(c.id);
            return;
        };
        tracing::info!(stream = %self.name, was = %c.path, now = %found.path.display(), offset = c.offset,
            same_inode = found.same_inode, "finishing a file rotated while the agent was down");
        self.metrics.recovered_files.get_or_create(&Metrics::stream(&self.name)).inc();
        let same_inode = found.same_inode;
        self.start(found.id, found.path, found.file, c.offset, c.fingerprint(), true);
        if !same_inode {
            self.finish_truncated(c, &dirs);
        }
    }

    /// The file of checkpoint `c` was found only as a copy: the file itself was truncated. If
    /// it still exists outside the globs (renamed after the truncation), what it holds now is
    /// new lines, finished from the start; otherwise its checkpoint has nothing left to describe.
    fn finish_truncated(&mut self, c: &Checkpoint, dirs: &BTreeSet<PathBuf>) {
        match rotation::find_inode(c.id, dirs) {
            Some((path, file)) if !self.files.contains_key(&c.id) => {
                tracing::info!(stream = %self.name, path = %path.display(),
                    "the truncated file was renamed too; finishing it from the start");
                let fingerprint = Fingerprint::read(&file).unwrap_or_default();
                self.start(c.id, path, file, 0, fingerprint, true);
            }
            _ => {
                let _ = self.store.remove(c.id);
            }
        }
    }

    /// Whether the fate of a file at `path` cannot be told now: its folder exists but cannot be
    /// listed, or the folder of every one of the stream's patterns is missing or unreadable (a
    /// volume not mounted yet).
    fn undecidable(&self, path: &Path) -> bool {
        let unlistable = |dir: &Path| match std::fs::read_dir(dir) {
            Ok(_) => false,
            Err(e) => e.kind() != std::io::ErrorKind::NotFound,
        };
        if path.parent().is_some_and(unlistable) {
            return true;
        }
        self.config.paths.iter().all(|p| {
            let dir = rotation::pattern_dir(p);
            !dir.as_os_str().is_empty() && std::fs::read_dir(&dir).is_err()
        })
    }

    /// Tries again the checkpoints whose files could not be told found or gone.
    pub(super) fn retry_deferred(&mut self, seen: &Matches) {
        for c in std::mem::take(&mut self.deferred) {
            if seen.contains_key(&c.id) || self.files.contains_key(&c.id) {
                // Matched again: opened at its checkpoint like any file.
                continue;
            }
            self.recover(&c, seen);
        }
    }

    /// Finds and finishes the copy of a file whose checkpoint no longer matches it: the file was
    /// truncated or replaced while the agent was down, and the copy beside it, if logrotate
    /// kept one, holds the rest of the old content.
    pub(super) fn finish_copy_of(&mut self, c: &Checkpoint, id: FileId, path: &Path) {
        let dirs = self.search_dirs(&BTreeMap::new(), Some(path));
        let tailed: BTreeSet<FileId> = self.files.keys().copied().chain([id]).collect();
        match rotation::find(c.id, c.fingerprint(), c.offset, &dirs, &|f| tailed.contains(&f)) {
            Some(found) if found.id != id => {
                tracing::info!(stream = %self.name, path = %path.display(), copy = %found.path.display(), offset = c.offset,
                    "truncated while the agent was down; finishing the copy");
                self.metrics.recovered_files.get_or_create(&Metrics::stream(&self.name)).inc();
                self.start(found.id, found.path, found.file, c.offset, c.fingerprint(), true);
            }
            _ => {
                tracing::warn!(stream = %self.name, path = %path.display(), offset = c.offset,
                    "truncated or replaced while the agent was down and no copy beside it; unread lines of the old content cannot be recovered");
                self.metrics.error(&self.name, ErrorKind::RotatedFileGone);
            }
        }
    }
}
