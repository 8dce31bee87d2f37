//! Checkpoints: how far each tailed file has been acknowledged by Kafka. One JSON line per
//! tailed file in a stream's registry, the whole registry written atomically (temp file, fsync,
//! rename, fsync of the directory) once per round however many files moved, so a crash leaves
//! either the old or the new offsets, never a torn one. Checkpoints of older versions, a file
//! each, are still read, and taken into the registry.
//!
//! ```text
//!  <checkpoint-dir>/<stream>/checkpoints.jsonl   one line per file:
//!      {"version":1,"path":..,"dev":..,"ino":..,"fingerprint_len":..,"fingerprint_crc":..,"offset":..}
//!  <checkpoint-dir>/<stream>/<dev>-<ino>.json    (older versions) the same, a file each
//! ```
//!
//! A file is identified by device and inode plus a CRC of its first bytes, because inodes are
//! reused: a new file that got an old inode must not resume at the old file's offset.

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

mod first_start;
mod store;
pub use first_start::predates;
pub use store::Store;

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
