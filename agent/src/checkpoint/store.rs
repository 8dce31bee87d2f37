//! The checkpoints of one stream: held in memory, written as one registry file per round
//! (`flush`), whatever the number of files, so that a thousand busy files cost two fsyncs a
//! second rather than two thousand.
//!
//! ```text
//!  stage(c) / remove(id) ──> entries (memory), dirty
//!  save(c)               ──> stage + flush now (what a crash must find at once)
//!  flush ──dirty──> checkpoints.jsonl.tmpN ──fsync──> rename ──fsync dir──> older per-file
//!                   checkpoints taken in are deleted; a failed flush leaves no temp file and
//!                   stays dirty for the next one
//!  open ──> registry lines (a corrupt line is reported, the others kept) + older per-file files
//! ```

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::{Checkpoint, CheckpointError, FileId};

/// The registry's file name in the stream's folder.
pub const REGISTRY: &str = "checkpoints.jsonl";

/// The checkpoints of one stream. Clones share the entries and one lock over changes and
/// writes, so a checkpoint decided before a file was let go is never written after its removal.
#[derive(Debug, Clone)]
pub struct Store {
    pub(super) dir: PathBuf,
    inner: Arc<Mutex<Registry>>,
}

#[derive(Debug, Default)]
struct Registry {
    entries: BTreeMap<FileId, Checkpoint>,
    /// Changed since the last write.
    dirty: bool,
    /// Lines of the registry that could not be read when it was opened.
    bad_lines: Vec<String>,
    /// Per-file checkpoints of older versions taken into `entries`: deleted once the registry
    /// holding them is written.
    migrated: Vec<PathBuf>,
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError {
    let path = path.to_path_buf();
    move |source| CheckpointError::Io { op, path, source }
}

impl Store {
    /// The folder the checkpoints are in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The store of `stream` under `root`; creates the directory and reads what is there.
    pub fn open(root: &Path, stream: &str) -> Result<Store, CheckpointError> {
        let dir = root.join(stream);
        std::fs::create_dir_all(&dir).map_err(io("create", &dir))?;
        let mut registry = Registry::default();
        // Temp files of writes a crash interrupted are never read; clear them.
        for e in std::fs::read_dir(&dir).map_err(io("list", &dir))?.flatten() {
            if e.file_name().to_string_lossy().contains(".tmp") {
                let _ = std::fs::remove_file(e.path());
            }
        }
        let path = dir.join(REGISTRY);
        match std::fs::read(&path) {
            Ok(bytes) => {
                for (n, line) in bytes.split(|b| *b == b'\n').enumerate().filter(|(_, l)| !l.is_empty()) {
                    match Checkpoint::decode(line) {
                        Ok(c) => {
                            registry.entries.insert(c.id, c);
                        }
                        Err(e) => registry.bad_lines.push(format!("{}:{}: {e}", path.display(), n + 1)),
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(CheckpointError::Io { op: "read", path, source }),
        }
        if !registry.bad_lines.is_empty() {
            // Kept for inspection: the next write leaves the bad lines out.
            let _ = std::fs::copy(&path, dir.join(format!("{REGISTRY}.corrupt")));
        }
        let store = Store { dir, inner: Arc::new(Mutex::new(registry)) };
        // Older versions' checkpoints, a file each: taken in unless the registry has a newer
        // word on the file (it is written after them, and they are deleted once it is).
        for (id, file) in store.legacy_files() {
            if let Ok(Some(c)) = store.load_legacy(id) {
                let mut r = store.lock();
                r.entries.entry(id).or_insert(c);
                r.migrated.push(file);
                r.dirty = true;
            }
        }
        Ok(store)
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Where an older version kept the checkpoint of a file.
    pub fn path_of(&self, id: FileId) -> PathBuf {
        self.dir.join(format!("{}-{}.json", id.dev, id.ino))
    }

    /// The older versions' per-file checkpoints in the folder, by the file they are named for.
    fn legacy_files(&self) -> Vec<(FileId, PathBuf)> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return Vec::new() };
        entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let (dev, ino) = name.strip_suffix(".json")?.split_once('-')?;
                Some((FileId { dev: dev.parse().ok()?, ino: ino.parse().ok()? }, e.path()))
            })
            .collect()
    }

    /// Reads an older version's checkpoint file, if there is one.
    fn load_legacy(&self, id: FileId) -> Result<Option<Checkpoint>, CheckpointError> {
        let path = self.path_of(id);
        let mut bytes = Vec::new();
        match File::open(&path) {
            Ok(mut f) => f.read_to_end(&mut bytes).map_err(io("read", &path))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(CheckpointError::Io { op: "open", path, source }),
        };
        let c = Checkpoint::decode(&bytes).map_err(|e| match e {
            CheckpointError::Format(m) => CheckpointError::Format(format!("{}: {m}", path.display())),
            other => other,
        })?;
        if c.id != id {
            return Err(CheckpointError::Format(format!(
                "{}: names inode {:?}, expected {id:?}",
                path.display(),
                c.id
            )));
        }
        Ok(Some(c))
    }

    /// The checkpoint of a file, if it has one; an older version's checkpoint file that cannot
    /// be read is an error (moved aside with [`Store::quarantine`]).
    pub fn load(&self, id: FileId) -> Result<Option<Checkpoint>, CheckpointError> {
        if let Some(c) = self.lock().entries.get(&id) {
            return Ok(Some(c.clone()));
        }
        self.load_legacy(id)
    }

    /// Moves an older version's corrupt checkpoint file aside (kept for inspection), so the
    /// file starts afresh.
    pub fn quarantine(&self, id: FileId) -> Result<PathBuf, CheckpointError> {
        let path = self.path_of(id);
        let to = path.with_extension("json.corrupt");
        std::fs::rename(&path, &to).map_err(io("rename", &path))?;
        Ok(to)
    }

    /// Whether some checkpoints could not be read when the store was opened: which files they
    /// described is unknown, so none may be taken as never seen (`start-at = end`).
    pub fn lost_some(&self) -> bool {
        !self.lock().bad_lines.is_empty()
    }

    /// Records a checkpoint, written at the next [`Store::flush`].
    pub fn stage(&self, c: &Checkpoint) {
        let mut r = self.lock();
        r.entries.insert(c.id, c.clone());
        r.dirty = true;
    }

    /// Records a checkpoint and writes the registry now: for what a crash must find at once.
    pub fn save(&self, c: &Checkpoint) -> Result<(), CheckpointError> {
        let mut r = self.lock();
        r.entries.insert(c.id, c.clone());
        r.dirty = true;
        self.write(&mut r)
    }

    /// Decides the checkpoint under the store's lock (`decide` returns `None` to record
    /// nothing), then records it for the next flush: what `decide` saw cannot be undone by a
    /// removal in between.
    pub fn stage_with(&self, decide: impl FnOnce() -> Option<Checkpoint>) -> Option<Checkpoint> {
        let mut r = self.lock();
        let c = decide()?;
        r.entries.insert(c.id, c.clone());
        r.dirty = true;
        Some(c)
    }

    /// Writes the registry if anything changed since it was last written.
    pub fn flush(&self) -> Result<(), CheckpointError> {
        let mut r = self.lock();
        if !r.dirty {
            return Ok(());
        }
        self.write(&mut r)
    }

    /// Writes every entry atomically: temp file, fsync, rename over the registry, fsync of the
    /// folder; then deletes the older per-file checkpoints it now holds. A failure leaves no
    /// temp file (a full disk would otherwise collect one per round) and the store dirty.
    fn write(&self, r: &mut Registry) -> Result<(), CheckpointError> {
        let path = self.dir.join(REGISTRY);
        // A name of its own per write, in case two stores were opened on one folder.
        static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = self.dir.join(format!("{REGISTRY}.tmp{n}"));
        let mut bytes = Vec::with_capacity(r.entries.len() * 160);
        for c in r.entries.values() {
            bytes.extend_from_slice(&c.encode());
        }
        let written = (|| {
            let mut f =
                OpenOptions::new().write(true).create(true).truncate(true).open(&tmp).map_err(io("create", &tmp))?;
            f.write_all(&bytes).map_err(io("write", &tmp))?;
            f.sync_all().map_err(io("fsync", &tmp))?;
            drop(f);
            std::fs::rename(&tmp, &path).map_err(io("rename", &path))
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written?;
        File::open(&self.dir).and_then(|d| d.sync_all()).map_err(io("fsync", &self.dir))?;
        r.dirty = false;
        for file in std::mem::take(&mut r.migrated) {
            let _ = std::fs::remove_file(file);
        }
        Ok(())
    }

    /// Every checkpoint, with what could not be read as errors (with the file they are named
    /// for, when the error is one older per-file checkpoint's).
    pub fn list(&self) -> (Vec<Checkpoint>, Vec<(Option<FileId>, CheckpointError)>) {
        let (mut good, mut bad): (Vec<Checkpoint>, Vec<(Option<FileId>, CheckpointError)>) = {
            let r = self.lock();
            let bad = r.bad_lines.iter().map(|m| (None, CheckpointError::Format(m.clone()))).collect();
            (r.entries.values().cloned().collect(), bad)
        };
        for (id, _) in self.legacy_files() {
            if self.lock().entries.contains_key(&id) {
                continue;
            }
            match self.load_legacy(id) {
                Ok(Some(c)) => good.push(c),
                Ok(None) => {}
                Err(e) => bad.push((Some(id), e)),
            }
        }
        (good, bad)
    }

    /// Forgets the checkpoint of a file that is gone and fully shipped (written at the next
    /// flush), and deletes an older version's file for it.
    pub fn remove(&self, id: FileId) -> Result<(), CheckpointError> {
        let mut r = self.lock();
        if r.entries.remove(&id).is_some() {
            r.dirty = true;
        }
        let path = self.path_of(id);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(CheckpointError::Io { op: "remove", path, source }),
        }
    }
}
