//! The worker's disk: its buffer files are bounded by `worker.max-buffer-bytes`, and the
//! filesystem must keep `worker.min-free-bytes` free. Past either, partitions roll what they
//! buffered early (an upload frees its files) and read nothing more until there is room; the
//! records wait in Kafka. Without it, buffers grew to about twice `roll.max-bytes` per owned
//! partition with no check, and a full disk failed every append, released and respawned the
//! partitions in a loop while `/readyz` stayed green.
//!
//! ```text
//!  every 300 ms: size of the files in <buffer-dir>/<worker> + statvfs(free) ──> Disk { used, free }
//!      ──> gauges buffer_disk_bytes, disk_free_bytes; a change of over() wakes every partition
//!  pump: each record's bytes ──Disk::add──> counted until the next measure
//!        over() ──> roll the open buffer when no roll is in flight; read nothing until not over
//!  readyz: red while over (says which bound)
//! ```

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::watch;

/// The buffer folder's use against its bounds, measured in the background.
#[derive(Debug)]
pub struct Disk {
    dir: PathBuf,
    max_used: u64,
    min_free: u64,
    used: AtomicU64,
    free: AtomicU64,
    /// Whether the bound on the files was reached: reading resumes only below nine tenths of it,
    /// so that near the bound every open buffer does not roll at each measure.
    tripped: std::sync::atomic::AtomicBool,
    /// Bytes appended since the last measure: records arrive faster than the folder is
    /// measured, and a bound checked only every 300 ms would be overshot by what came between.
    added: AtomicU64,
    /// Whether the disk is past its bounds, as last measured: partitions waiting with a buffer
    /// open are woken to roll it, and those holding off reading to read again.
    over_tx: watch::Sender<bool>,
    /// What `over_tx` holds, readable without its lock.
    published: std::sync::atomic::AtomicBool,
}

impl Disk {
    /// Bounds for `dir`: at most `max_used` bytes of files in it, at least `min_free` bytes free
    /// on its filesystem (0: no bound).
    pub fn new(dir: &Path, max_used: u64, min_free: u64) -> Disk {
        Disk {
            dir: dir.to_owned(),
            max_used,
            min_free,
            used: AtomicU64::new(0),
            free: AtomicU64::new(u64::MAX),
            added: AtomicU64::new(0),
            tripped: std::sync::atomic::AtomicBool::new(false),
            over_tx: watch::channel(false).0,
            published: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Counts bytes appended to a buffer until the next measure.
    pub fn add(&self, bytes: u64) {
        self.added.fetch_add(bytes, Ordering::Relaxed);
        self.publish();
    }

    /// Tells the partitions when over() changed: a partition with a buffer open rolls it. The
    /// state is computed under the channel's lock, so of racing publishes the last one says
    /// what is true; a partition that stopped reading also looks again every 300 ms (`pump`),
    /// so a change no publish carried cannot keep it stopped.
    /// Called for every record appended: it compares with an atomic copy of the published
    /// state, and takes the channel's lock only when the state changed.
    fn publish(&self) {
        if self.published.load(Ordering::Relaxed) != self.over().is_some() {
            self.over_tx.send_if_modified(|was| {
                let over = self.over().is_some();
                self.published.store(over, Ordering::Relaxed);
                std::mem::replace(was, over) != over
            });
        }
    }

    /// Follows whether the disk is past its bounds.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.over_tx.subscribe()
    }

    /// Measures the folder and the filesystem again; `(used, free)`.
    pub fn measure(&self) -> (u64, u64) {
        let used = std::fs::read_dir(&self.dir)
            .map(|entries| entries.flatten().filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum())
            .unwrap_or(0);
        let free = free_bytes(&self.dir).unwrap_or(u64::MAX);
        self.used.store(used, Ordering::Relaxed);
        self.added.store(0, Ordering::Relaxed);
        self.free.store(free, Ordering::Relaxed);
        self.publish();
        (used, free)
    }

    /// Why no more may be buffered now, if so.
    pub fn over(&self) -> Option<String> {
        let added = self.added.load(Ordering::Relaxed);
        let used = self.used.load(Ordering::Relaxed).saturating_add(added);
        let free = self.free.load(Ordering::Relaxed).saturating_sub(added);
        let tripped = self.tripped.load(Ordering::Relaxed);
        let max_used = if tripped { self.max_used / 10 * 9 } else { self.max_used };
        let why = over(used, free, max_used, self.min_free);
        let files_over = self.max_used > 0 && used >= max_used;
        if files_over != tripped {
            self.tripped.store(files_over, Ordering::Relaxed);
        }
        why
    }
}

/// Why `used` and `free` are past the bounds, if they are. Pure.
fn over(used: u64, free: u64, max_used: u64, min_free: u64) -> Option<String> {
    if max_used > 0 && used >= max_used {
        return Some(format!("buffer files hold {used} bytes, worker.max-buffer-bytes is {max_used}"));
    }
    if min_free > 0 && free < min_free {
        return Some(format!(
            "{free} bytes free on the buffer folder's filesystem, worker.min-free-bytes is {min_free}"
        ));
    }
    None
}

/// Bytes available to this process on the filesystem holding `dir`.
fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: a valid NUL-terminated path and a buffer of the right type; statvfs fills it
    // when it returns 0.
    let rc = unsafe { libc::statvfs(path.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so the struct is initialised.
    let st = unsafe { st.assume_init() };
    #[allow(clippy::useless_conversion)] // the field types differ between targets
    Some(u64::from(st.f_bavail).saturating_mul(u64::from(st.f_frsize)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_name_what_is_over() {
        assert_eq!(over(10, 1000, 0, 0), None, "no bounds");
        assert_eq!(over(99, 1000, 100, 500), None);
        assert!(over(100, 1000, 100, 500).is_some_and(|w| w.contains("worker.max-buffer-bytes")));
        assert!(over(10, 499, 100, 500).is_some_and(|w| w.contains("worker.min-free-bytes")));
    }

    #[test]
    fn a_folder_is_measured() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(dir.path().join("a"), vec![0u8; 3000]).expect("write");
        std::fs::write(dir.path().join("b"), vec![0u8; 1000]).expect("write");
        let d = Disk::new(dir.path(), 4000, 1);
        assert_eq!(d.over(), None, "nothing measured yet");
        let (used, free) = d.measure();
        assert_eq!(used, 4000);
        assert!(free > 0 && free < u64::MAX);
        assert!(d.over().is_some(), "at the bound");
        std::fs::write(dir.path().join("a"), b"").expect("truncate");
        d.measure();
        assert_eq!(d.over(), None);
        d.add(3000);
        assert!(d.over().is_some(), "appends count before the next measure");
        std::fs::write(dir.path().join("a"), vec![0u8; 2700]).expect("write");
        d.measure();
        assert!(d.over().is_some(), "3,700 of 4,000 (with b): not yet under nine tenths");
        std::fs::write(dir.path().join("a"), vec![0u8; 2500]).expect("write");
        d.measure();
        assert_eq!(d.over(), None, "3,500 of 4,000 (with b): under nine tenths, reading resumes");
    }
}
