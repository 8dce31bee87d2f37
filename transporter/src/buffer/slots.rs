//! The files buffers are written to, kept and reused: a slot is a pair of paths (the raw
//! records and the compressed object) that one buffer at a time holds, from its first record
//! until its object is uploaded or dropped.
//!
//! ```text
//!  Slots::take ──> Slot n (free list, else a new number) ──> <dir>/slot-<n>.buf, slot-<n>.obj
//!  Slot dropped ──> both files truncated to 0 bytes (disk freed, inode kept) ──> n back on the free list
//! ```
//!
//! Why not a new file per buffer: creating and deleting two files per roll made ext4 search its
//! inode bitmap past every recently deleted inode (`find_inode_bit` / `recently_deleted`), which
//! cost more CPU than compressing the records; truncating a kept file does not allocate an inode.
//! Slots also make names unique by construction: two buffers of one partition (a handover back
//! to this worker while the old one still drains) never share a file.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

/// The pool of buffer files of one worker, in its own directory.
#[derive(Debug)]
pub struct Slots {
    dir: PathBuf,
    /// Slot numbers not held by a buffer, and the next new number.
    state: Mutex<(Vec<u32>, u32)>,
}

/// One slot, held by a buffer and then by its finished object; returned to the pool when dropped.
#[derive(Debug)]
pub struct Slot {
    pool: Arc<Slots>,
    n: u32,
}

impl Slots {
    /// A pool of files in `dir`, which must exist and hold no other buffer's files.
    pub fn new(dir: &Path) -> Arc<Slots> {
        Arc::new(Slots { dir: dir.to_owned(), state: Mutex::new((Vec::new(), 0)) })
    }

    /// A free slot, or a new one.
    pub fn take(self: &Arc<Self>) -> Slot {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let n = match s.0.pop() {
            Some(n) => n,
            None => {
                s.1 += 1;
                s.1 - 1
            }
        };
        Slot { pool: self.clone(), n }
    }

    /// Where the pool's files are.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Slot {
    /// The raw records' file.
    pub fn raw(&self) -> PathBuf {
        self.pool.dir.join(format!("slot-{}.buf", self.n))
    }

    /// The compressed object's file.
    pub fn object(&self) -> PathBuf {
        self.pool.dir.join(format!("slot-{}.obj", self.n))
    }

    /// The dead-letter object's file (Parquet with `parquet.value-schema`), when one is written.
    pub fn dead_letter(&self) -> PathBuf {
        self.pool.dir.join(format!("slot-{}.dlq", self.n))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        // Emptied, not removed: the disk is freed and the inodes stay for the next buffer.
        for path in [self.raw(), self.object(), self.dead_letter()] {
            if let Ok(f) = std::fs::OpenOptions::new().write(true).open(&path) {
                let _ = f.set_len(0);
            }
        }
        let mut s = self.pool.state.lock().unwrap_or_else(PoisonError::into_inner);
        s.0.push(self.n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_reused_emptied_and_never_shared() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pool = Slots::new(dir.path());
        let (a, b) = (pool.take(), pool.take());
        assert_ne!(a.raw(), b.raw(), "two held slots share a file");
        std::fs::write(a.raw(), b"records").expect("write");
        std::fs::write(a.object(), b"object").expect("write");
        let raw = a.raw();
        drop(a);
        assert_eq!(std::fs::metadata(&raw).expect("kept").len(), 0, "a returned slot is emptied");
        let c = pool.take();
        assert_eq!(c.raw(), raw, "a returned slot is taken again before a new one");
        assert_ne!(c.raw(), b.raw());
        drop((b, c));
        assert_eq!(dir.path().read_dir().expect("dir").count(), 2, "only files that were written exist");
    }
}
