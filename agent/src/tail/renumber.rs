//! A device renumbered since the last run (a reboot with LVM, btrfs subvolumes, NFS, a
//! different disk order): every checkpoint names the old device number, the files the new one,
//! with the same inodes and heads. Each such checkpoint is moved to its file's new identity
//! before anything else looks at it, so the files go on from their checkpoints instead of being
//! taken as rotated, gone or new (resent in full, or skipped with `start-at = end`).
//!
//! ```text
//!  checkpoint (dev, ino) not found, and no file matched or beside the matches on dev any more
//!     ──the one such file (dev', ino), dev' != dev (among several: the one with the
//!       checkpoint's head)──> checkpoint
//!       saved as (dev', ino), the old one removed (a crash in between: the old one is removed
//!       at the next start, the new one already in place)
//! ```

use std::collections::{BTreeMap, BTreeSet};

use super::{Matches, Tailer};
use crate::checkpoint::{Checkpoint, FileId};

impl Tailer {
    /// Moves the checkpoints of a renumbered device to their files' new identities; returns
    /// the checkpoints as they now are.
    pub(super) fn adopt_renumbered(&mut self, checkpoints: Vec<Checkpoint>, seen: &Matches) -> Vec<Checkpoint> {
        if checkpoints.iter().all(|c| seen.contains_key(&c.id)) {
            return checkpoints;
        }
        // The files matched, and those where rotations go: beside the matches and the
        // checkpoints' paths, and in the folders their symlinks point to.
        // The matches' folders once, then each checkpoint's own (a search per checkpoint over
        // every match would be quadratic in the number of files).
        let mut dirs = self.search_dirs(seen, None);
        let none = Matches::new();
        for c in checkpoints.iter().filter(|c| !seen.contains_key(&c.id)) {
            dirs.extend(self.search_dirs(&none, Some(std::path::Path::new(&c.path))));
        }
        let mut files: Matches = seen.clone();
        for dir in dirs {
            for path in std::fs::read_dir(&dir).into_iter().flatten().flatten().map(|e| e.path()) {
                if let Ok(m) = std::fs::metadata(&path)
                    && m.is_file()
                {
                    files.entry(FileId::of(&m)).or_insert(path);
                }
            }
        }
        let devices: BTreeSet<u64> = files.keys().map(|id| id.dev).collect();
        let mut by_inode: BTreeMap<u64, Vec<FileId>> = BTreeMap::new();
        for id in files.keys() {
            by_inode.entry(id.ino).or_default().push(*id);
        }
        let mut out = Vec::with_capacity(checkpoints.len());
        for c in checkpoints {
            if files.contains_key(&c.id) || devices.contains(&c.id.dev) {
                // Found, or its device is still there: not a renumbering.
                out.push(c);
                continue;
            }
            let candidates: Vec<FileId> =
                by_inode.get(&c.id.ino).into_iter().flatten().copied().filter(|id| id.dev != c.id.dev).collect();
            // The one file with that inode (its head may have changed: truncated while the
            // agent was down, which the recovery then handles as usual), or among several (other
            // filesystems) the one with the checkpoint's head.
            let same_head = |id: &FileId| {
                files
                    .get(id)
                    .and_then(|path| std::fs::File::open(path).ok())
                    .is_some_and(|f| c.fingerprint().same_file(&f).unwrap_or(false))
            };
            let chosen = match candidates[..] {
                [one] => Some(one),
                _ => match candidates.iter().filter(|id| same_head(id)).collect::<Vec<_>>()[..] {
                    [one] => Some(*one),
                    _ => None,
                },
            };
            let Some(new) = chosen else {
                out.push(c);
                continue;
            };
            if let Some(moved) = self.move_checkpoint(&c, new) {
                out.push(moved);
            }
        }
        out
    }

    /// Saves `c` under the file's new identity and removes the old one. A checkpoint already
    /// there (a crash between the two steps last time) is kept. Returns what now describes the
    /// file, or `None` when the old checkpoint only had to go.
    fn move_checkpoint(&mut self, c: &Checkpoint, new: FileId) -> Option<Checkpoint> {
        let existing = self.store.load(new).ok().flatten();
        let moved = match existing {
            Some(_) => None,
            None => {
                let mut moved = c.clone();
                moved.id = new;
                if let Err(e) = self.store.save(&moved) {
                    tracing::error!(stream = %self.name, error = %e, "cannot move a checkpoint to its file's new device number");
                    return Some(c.clone());
                }
                tracing::info!(stream = %self.name, path = %c.path, old_device = c.id.dev, new_device = new.dev,
                    "device renumbered since the last run; the file goes on from its checkpoint");
                Some(moved)
            }
        };
        if let Err(e) = self.store.remove(c.id) {
            tracing::warn!(stream = %self.name, error = %e, "removing the checkpoint of the old device number failed");
        }
        moved
    }
}
