//! Checkpoints: how far each tailed file has been acknowledged by Kafka. One small JSON file per
//! tailed file, written atomically (temp file, fsync, rename, fsync of the directory), so a
//! crash leaves either the old or the new offset, never a torn one.
//!
//! ```text
//!  <checkpoint-dir>/<stream>/<dev>-<ino>.json   {"version":1,"path":..,"dev":..,"ino":..,
//!                                                "fingerprint_len":..,"fingerprint_crc":..,"offset":..}
//! ```
//!
//! A file is identified by device and inode plus a CRC of its first bytes, because inodes are
//! reused: a new file that got an old inode must not resume at the old file's offset.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

mod first_start;
pub use first_start::predates;

/// How many leading bytes identify a file's content.
pub const FINGERPRINT_BYTES: usize = 256;
const VERSION: u32 = 1;

/// Device and inode of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FileId {
    /// Device number.
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
}

impl FileId {
    /// The id of an opened or stat-ed file.
    pub fn of(meta: &std::fs::Metadata) -> FileId {
        use std::os::unix::fs::MetadataExt;
        FileId { dev: meta.dev(), ino: meta.ino() }
    }
}

/// CRC of a file's first `len` bytes (`len` <= [`FINGERPRINT_BYTES`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// Bytes covered.
    pub len: u32,
    /// CRC-32 of them.
    pub crc: u32,
}

impl Fingerprint {
    /// Fingerprint of the given leading bytes (at most [`FINGERPRINT_BYTES`] are used).
    pub fn of(head: &[u8]) -> Fingerprint {
        let head = &head[..head.len().min(FINGERPRINT_BYTES)];
        Fingerprint { len: head.len() as u32, crc: crc32fast::hash(head) }
    }

    /// Reads the head of an open file without moving its cursor's logical position for callers
    /// that track offsets themselves (uses positional reads).
    pub fn read(file: &File) -> std::io::Result<Fingerprint> {
        use std::os::unix::fs::FileExt;
        let mut head = [0u8; FINGERPRINT_BYTES];
        let mut n = 0;
        while n < head.len() {
            let got = file.read_at(&mut head[n..], n as u64)?;
            if got == 0 {
                break;
            }
            n += got;
        }
        Ok(Fingerprint::of(&head[..n]))
    }

    /// Whether a file whose current head is `current` is the same content as this one: the
    /// current head must start with the bytes this fingerprint covered.
    pub fn same_file(&self, file: &File) -> std::io::Result<bool> {
        use std::os::unix::fs::FileExt;
        let mut head = vec![0u8; self.len as usize];
        let mut n = 0;
        while n < head.len() {
            let got = file.read_at(&mut head[n..], n as u64)?;
            if got == 0 {
                return Ok(false);
            }
            n += got;
        }
        Ok(crc32fast::hash(&head) == self.crc)
    }
}

/// One file's checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// Format version.
    pub version: u32,
    /// Last path the file was seen at (informational).
    pub path: String,
    /// Device and inode.
    #[serde(flatten)]
    pub id: FileId,
    /// Bytes covered by the fingerprint.
    pub fingerprint_len: u32,
    /// CRC of those bytes.
    pub fingerprint_crc: u32,
    /// Every byte before this offset has been acknowledged by Kafka.
    pub offset: u64,
}

impl Checkpoint {
    /// A checkpoint for the current state of a file.
    pub fn new(path: &Path, id: FileId, fingerprint: Fingerprint, offset: u64) -> Checkpoint {
        Checkpoint {
            version: VERSION,
            path: path.to_string_lossy().into_owned(),
            id,
            fingerprint_len: fingerprint.len,
            fingerprint_crc: fingerprint.crc,
            offset,
        }
    }

    /// The fingerprint.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint { len: self.fingerprint_len, crc: self.fingerprint_crc }
    }

    /// Serialises.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec(self).unwrap_or_default();
        v.push(b'\n');
        v
    }

    /// Parses, checking version and consistency.
    pub fn decode(bytes: &[u8]) -> Result<Checkpoint, CheckpointError> {
        let c: Checkpoint = serde_json::from_slice(bytes).map_err(|e| CheckpointError::Format(e.to_string()))?;
        if c.version != VERSION {
            return Err(CheckpointError::Format(format!("unsupported version {}", c.version)));
        }
        if c.fingerprint_len as usize > FINGERPRINT_BYTES {
            return Err(CheckpointError::Format(format!("fingerprint_len {} too large", c.fingerprint_len)));
        }
        Ok(c)
    }
}

/// Why a checkpoint could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The content is not a valid checkpoint.
    #[error("not a valid checkpoint: {0}")]
    Format(String),
    /// A filesystem error.
    #[error("{op} {path}: {source}")]
    Io {
        /// The operation.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// The checkpoint files of one stream. Clones share one lock over writes and removals, so a
/// checkpoint decided before a file was let go is never written after its removal.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
    writes: std::sync::Arc<std::sync::Mutex<()>>,
}

impl Store {
    /// The folder the checkpoints are in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The store of `stream` under `root`; creates the directory.
    pub fn open(root: &Path, stream: &str) -> Result<Store, CheckpointError> {
        let dir = root.join(stream);
        std::fs::create_dir_all(&dir).map_err(|source| CheckpointError::Io {
            op: "create",
            path: dir.clone(),
            source,
        })?;
        // Temp files of writes a crash interrupted are never read; clear them.
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().contains(".json.tmp") {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        Ok(Store { dir, writes: Default::default() })
    }

    /// The checkpoint file of a tailed file.
    pub fn path_of(&self, id: FileId) -> PathBuf {
        self.dir.join(format!("{}-{}.json", id.dev, id.ino))
    }

    /// Loads the checkpoint of `id`: `Ok(None)` when there is none.
    pub fn load(&self, id: FileId) -> Result<Option<Checkpoint>, CheckpointError> {
        let path = self.path_of(id);
        let mut bytes = Vec::new();
        match File::open(&path) {
            Ok(mut f) => f.read_to_end(&mut bytes).map_err(|source| CheckpointError::Io {
                op: "read",
                path: path.clone(),
                source,
            })?,
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

    /// Moves a corrupt checkpoint aside (kept for inspection) so the file starts afresh.
    pub fn quarantine(&self, id: FileId) -> Result<PathBuf, CheckpointError> {
        let path = self.path_of(id);
        let to = path.with_extension("json.corrupt");
        std::fs::rename(&path, &to).map_err(|source| CheckpointError::Io { op: "rename", path, source })?;
        Ok(to)
    }

    /// Writes atomically: temp file, fsync, rename over the old one, fsync the directory.
    pub fn save(&self, c: &Checkpoint) -> Result<(), CheckpointError> {
        let _writes = self.writes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.write(c)
    }

    /// Decides the checkpoint under the store's write lock (`decide` returns `None` to write
    /// nothing), then writes it: what `decide` saw cannot be undone by a removal before the write.
    pub fn save_with(
        &self,
        decide: impl FnOnce() -> Option<Checkpoint>,
    ) -> Result<Option<Checkpoint>, CheckpointError> {
        let _writes = self.writes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(c) = decide() else { return Ok(None) };
        self.write(&c)?;
        Ok(Some(c))
    }

    fn write(&self, c: &Checkpoint) -> Result<(), CheckpointError> {
        let path = self.path_of(c.id);
        // A name of its own per write: the stream thread (a file it starts tailing) and the
        // checkpointer may save the same checkpoint at once, and must not share a temp file.
        static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = path.with_extension(format!("json.tmp{n}"));
        let io = |op, p: &Path| {
            let p = p.to_path_buf();
            move |source| CheckpointError::Io { op, path: p, source }
        };
        let written = (|| {
            let mut f =
                OpenOptions::new().write(true).create(true).truncate(true).open(&tmp).map_err(io("create", &tmp))?;
            f.write_all(&c.encode()).map_err(io("write", &tmp))?;
            f.sync_all().map_err(io("fsync", &tmp))?;
            drop(f);
            std::fs::rename(&tmp, &path).map_err(io("rename", &path))
        })();
        if written.is_err() {
            // A full disk would otherwise collect one temp file per failed write until restart.
            let _ = std::fs::remove_file(&tmp);
        }
        written?;
        File::open(&self.dir).and_then(|d| d.sync_all()).map_err(io("fsync", &self.dir))?;
        Ok(())
    }

    /// Every checkpoint in the store, with the files that could not be read as errors (with
    /// the file they are named for, when the error is one checkpoint's).
    pub fn list(&self) -> (Vec<Checkpoint>, Vec<(Option<FileId>, CheckpointError)>) {
        let mut good = Vec::new();
        let mut bad = Vec::new();
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(source) => {
                return (good, vec![(None, CheckpointError::Io { op: "list", path: self.dir.clone(), source })]);
            }
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some((dev, ino)) = name.strip_suffix(".json").and_then(|n| n.split_once('-')) else { continue };
            let (Ok(dev), Ok(ino)) = (dev.parse(), ino.parse()) else { continue };
            let id = FileId { dev, ino };
            match self.load(id) {
                Ok(Some(c)) => good.push(c),
                Ok(None) => {}
                Err(e) => bad.push((Some(id), e)),
            }
        }
        (good, bad)
    }

    /// Removes the checkpoint of a file that is gone and fully shipped.
    pub fn remove(&self, id: FileId) -> Result<(), CheckpointError> {
        let path = self.path_of(id);
        let _writes = self.writes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(CheckpointError::Io { op: "remove", path, source }),
        }
    }
}

/// Where a file should start given its checkpoint: the checkpoint offset when the checkpoint
/// describes this file's content and the file is still that long, else 0 (the file was replaced
/// or truncated while the agent was down: ship it again rather than lose it).
pub fn resume_offset(c: &Checkpoint, file: &mut File, size: u64) -> std::io::Result<u64> {
    if !c.fingerprint().same_file(file)? || c.offset > size {
        return Ok(0);
    }
    file.seek(SeekFrom::Start(c.offset))?;
    Ok(c.offset)
}

#[cfg(test)]
mod tests;
