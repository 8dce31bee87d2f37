//! When the agent first tailed a stream, kept beside its checkpoints: `start-at = end` skips
//! only what was written before that moment, never a file created while the agent was down.
//!
//! ```text
//!  Tailer::new ──Store::first_start──> the record        : Some(t)
//!                                   └ none, checkpoints  : the oldest one's time, recorded (an
//!                                   │                      older version wrote them)
//!                                   └ none at all        : None (the very first start), now recorded
//!  first scan, file without checkpoint: start-at = end and (None, or created before t) ──> its end
//!                                                                           otherwise ──> byte 0
//! ```

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{CheckpointError, Store};

/// The record's file name in the stream's folder (never taken for a checkpoint: those are
/// `<dev>-<ino>.json`).
const RECORD: &str = "first-start";

impl Store {
    /// When the agent first tailed this stream, or `None` at its very first start; the first
    /// start is recorded now. A store with checkpoints and no record was written by a version
    /// that kept none: its oldest checkpoint's time stands for it.
    pub fn first_start(&self) -> Result<Option<SystemTime>, CheckpointError> {
        let path = self.dir.join(RECORD);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let nanos: u64 = text.trim().parse().map_err(|_| {
                    CheckpointError::Format(format!("{}: not a time in nanoseconds: {:?}", path.display(), text.trim()))
                })?;
                return Ok(Some(UNIX_EPOCH + Duration::from_nanos(nanos)));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(CheckpointError::Io { op: "read", path, source }),
        }
        let oldest = self.oldest_checkpoint();
        self.record(&path, oldest.unwrap_or_else(SystemTime::now))?;
        Ok(oldest)
    }

    /// The modification time of the oldest checkpoint file, if there is one.
    fn oldest_checkpoint(&self) -> Option<SystemTime> {
        std::fs::read_dir(&self.dir)
            .ok()?
            .flatten()
            .filter(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.ends_with(".json") || name == super::store::REGISTRY
            })
            .filter_map(|e| e.metadata().ok()?.modified().ok())
            .min()
    }

    fn record(&self, path: &Path, at: SystemTime) -> Result<(), CheckpointError> {
        let nanos = at.duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        let tmp = path.with_extension("tmp");
        let io = |op| move |source| CheckpointError::Io { op, path: path.to_owned(), source };
        let mut f = std::fs::File::create(&tmp).map_err(io("create"))?;
        std::io::Write::write_all(&mut f, format!("{nanos}\n").as_bytes()).map_err(io("write"))?;
        f.sync_all().map_err(io("fsync"))?;
        std::fs::rename(&tmp, path).map_err(io("rename"))?;
        std::fs::File::open(&self.dir).and_then(|d| d.sync_all()).map_err(io("fsync"))
    }
}

/// Whether a file without a checkpoint, found at the first scan, was there before the agent
/// first tailed its stream (`first_start`; `None`: this is the first start, so it was). A file
/// whose creation time the filesystem does not keep counts as new: read from its start, since
/// duplicates are better than loss.
pub fn predates(meta: &std::fs::Metadata, first_start: Option<SystemTime>) -> bool {
    match first_start {
        None => true,
        Some(t) => meta.created().is_ok_and(|born| born < t),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_start_is_recorded_once_and_an_old_store_dates_from_its_oldest_checkpoint() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fresh = Store::open(dir.path(), "fresh").expect("store");
        assert_eq!(fresh.first_start().expect("read"), None, "the very first start");
        let recorded = fresh.first_start().expect("read").expect("recorded at the first start");
        assert!(recorded <= SystemTime::now());
        assert_eq!(fresh.first_start().expect("read"), Some(recorded), "recorded once");

        let old = Store::open(dir.path(), "old").expect("store");
        let id = crate::checkpoint::FileId { dev: 1, ino: 2 };
        old.save(&crate::checkpoint::Checkpoint::new(Path::new("/x"), id, Default::default(), 0)).expect("save");
        let registry = old.dir().join(super::super::store::REGISTRY);
        let mtime = std::fs::metadata(registry).and_then(|m| m.modified()).expect("mtime");
        assert_eq!(old.first_start().expect("read"), Some(mtime));

        std::fs::write(dir.path().join("fresh").join(RECORD), "yesterday").expect("write");
        let e = fresh.first_start().expect_err("garbage");
        assert!(e.to_string().contains("first-start"), "{e}");
    }

    #[test]
    fn only_files_born_before_the_first_start_predate_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("f");
        std::fs::write(&f, "x").expect("write");
        let meta = std::fs::metadata(&f).expect("meta");
        assert!(predates(&meta, None));
        let Ok(born) = meta.created() else { return }; // a filesystem without birth times
        assert!(predates(&meta, Some(born + Duration::from_secs(1))));
        assert!(!predates(&meta, Some(born)));
    }
}
