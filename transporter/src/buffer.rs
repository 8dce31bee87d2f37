//! A partition's local buffer: records appended to a file until the roll policy says so, then
//! compressed into the file of one object, which the upload streams from disk.
//!
//! ```text
//!  record ──encode (lines | JSON lines)──> <buffer-dir>/<worker>/slot-<n>.buf   (a slot: see `slots`)
//!           roll on bytes / records / age ──> finish() ──zstd|gzip|none──> slot-<n>.obj
//!           uploaded or abandoned ──> the slot's files emptied, the slot reused
//! ```
//!
//! Memory does not grow with object size: records go to disk as they come, the object is
//! written to disk as it is compressed, and the upload reads it a part at a time.
//!
//! Compression happens at roll time, on a blocking thread, one buffer at a time: a streaming
//! encoder per open partition would hold its compression state (about 1 MB for zstd level 3)
//! for every owned partition at once; the raw file is read back from the page cache.

mod encode;
mod slots;

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::config::{Compression, RollConfig};
use crate::continuity::{Gap, Span};
pub use encode::encode;
pub use slots::{Slot, Slots};

/// Output format of objects.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// Record values, one per line.
    #[default]
    Lines,
    /// JSON lines with key, value, offset, partition and timestamp.
    Json,
}

/// One Kafka record as the buffer needs it: borrowed from the consumer's message, so that
/// appending copies its bytes only once, into the buffer file.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    /// Topic.
    pub topic: &'a str,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Timestamp in ms, if any.
    pub timestamp_ms: Option<i64>,
    /// Key.
    pub key: Option<&'a [u8]>,
    /// Value.
    pub value: Option<&'a [u8]>,
}

/// File extension for a format and compression.
pub fn extension(format: Format, compression: Compression) -> &'static str {
    match (format, compression) {
        (Format::Lines, Compression::Zstd) => "log.zst",
        (Format::Lines, Compression::Gzip) => "log.gz",
        (Format::Lines, Compression::None) => "log",
        (Format::Json, Compression::Zstd) => "jsonl.zst",
        (Format::Json, Compression::Gzip) => "jsonl.gz",
        (Format::Json, Compression::None) => "jsonl",
    }
}

/// An open buffer.
#[derive(Debug)]
pub struct Buffer {
    slot: Slot,
    file: BufWriter<File>,
    compression: Compression,
    level: i32,
    /// First record's offset.
    pub first_offset: i64,
    /// What the buffer covers: its chain from the committed offset, records and gaps. Every
    /// record appended must follow it, and it must add up before the buffer becomes an object.
    pub span: Span,
    /// First record's timestamp (ms), for the key's date and hour.
    pub first_timestamp_ms: i64,
    /// Uncompressed bytes appended.
    pub bytes: u64,
    /// When the first record arrived.
    pub opened: Instant,
    scratch: Vec<u8>,
    format: Format,
}

/// A finished buffer: the object's file and what it covers. The file is emptied when this is
/// dropped (uploaded, or abandoned to be read again from Kafka).
#[derive(Debug)]
pub struct Finished {
    /// The compressed object, on disk.
    pub path: PathBuf,
    /// The slot the file belongs to, returned when this is dropped.
    _slot: Slot,
    /// Its size in bytes.
    pub size: u64,
    /// First record's offset.
    pub first_offset: i64,
    /// What the object covers, checked to add up.
    pub span: Span,
    /// First timestamp (ms).
    pub first_timestamp_ms: i64,
    /// Uncompressed bytes.
    pub bytes: u64,
}

impl Buffer {
    /// Opens a buffer for a partition in a slot of `slots`, for record `first`, continuing
    /// `span` (empty but for gaps before the first record).
    pub fn create(
        slots: &Arc<Slots>,
        format: Format,
        compression: Compression,
        level: i32,
        span: Span,
        first: &Record<'_>,
    ) -> std::io::Result<Buffer> {
        std::fs::create_dir_all(slots.dir())?;
        let slot = slots.take();
        // Every owned partition has one open (and one rolling): 16 KiB each keeps that to a few
        // MiB at hundreds of partitions, and a write per 16 KiB costs little.
        let file = BufWriter::with_capacity(16 * 1024, File::create(slot.raw())?);
        Ok(Buffer {
            slot,
            file,
            compression,
            level,
            first_offset: first.offset,
            span,
            first_timestamp_ms: first.timestamp_ms.unwrap_or(0),
            bytes: 0,
            opened: Instant::now(),
            scratch: Vec::with_capacity(4096),
            format,
        })
    }

    /// Records appended.
    pub fn records(&self) -> u64 {
        self.span.records
    }

    /// Appends a record, which must follow the span: the buffer refuses an offset that would
    /// leave a hole nobody explained. Returns the bytes it added to the file.
    pub fn append(&mut self, r: &Record<'_>) -> std::io::Result<u64> {
        self.span.record(r.offset).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        self.scratch.clear();
        encode(self.format, r, &mut self.scratch);
        self.file.write_all(&self.scratch)?;
        let written = self.scratch.len() as u64;
        self.bytes += written;
        Ok(written)
    }

    /// Records offsets that Kafka does not hold (`gap` must follow the span).
    pub fn gap(&mut self, gap: Gap) -> std::io::Result<()> {
        self.span.gap(gap).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    }

    /// Whether size or count says roll now (age is checked by the caller's timer).
    pub fn full(&self, roll: &RollConfig) -> bool {
        self.bytes >= roll.max_bytes || self.span.records >= roll.max_records
    }

    /// Closes the file and compresses it into the object's bytes; the file is removed.
    /// Blocking: call it on a blocking thread.
    pub fn finish(mut self) -> std::io::Result<Finished> {
        // The last check before an object exists: its counts must add up.
        self.span.check().map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        self.file.flush()?;
        drop(self.file.into_inner().map_err(|e| e.into_error())?);
        let raw = File::open(self.slot.raw())?;
        let raw_len = raw.metadata()?.len();
        let raw = std::io::BufReader::with_capacity(256 * 1024, raw);
        let object = self.slot.object();
        let out = std::io::BufWriter::with_capacity(256 * 1024, File::create(&object)?);
        let out = match self.compression {
            Compression::Zstd => {
                let mut enc = zstd::stream::write::Encoder::new(out, self.level)?;
                // The size is known: zstd sizes its window and tables to it (less memory for
                // small objects) and writes it in the frame header for readers.
                enc.set_pledged_src_size(Some(raw_len))?;
                enc.include_contentsize(true)?;
                let mut raw = raw;
                std::io::copy(&mut raw, &mut enc)?;
                enc.finish()?
            }
            Compression::Gzip => {
                let mut enc =
                    flate2::write::GzEncoder::new(out, flate2::Compression::new(self.level.clamp(0, 9) as u32));
                let mut raw = raw;
                std::io::copy(&mut raw, &mut enc)?;
                enc.finish()?
            }
            Compression::None => {
                let mut out = out;
                let mut raw = raw;
                std::io::copy(&mut raw, &mut out)?;
                out
            }
        };
        // Not synced: after a crash the object is built again from Kafka, never read from here.
        let file = out.into_inner().map_err(|e| e.into_error())?;
        let size = file.metadata()?.len();
        // The raw records are not needed any more: their disk is freed now, not after the upload.
        std::fs::OpenOptions::new().write(true).open(self.slot.raw())?.set_len(0)?;
        Ok(Finished {
            path: object,
            _slot: self.slot,
            size,
            first_offset: self.first_offset,
            span: self.span,
            first_timestamp_ms: self.first_timestamp_ms,
            bytes: self.bytes,
        })
    }

    /// Drops the buffer without producing an object (ownership lost: the records are read
    /// again by the next owner from the committed offset).
    pub fn discard(self) {
        // The slot's files are emptied as it returns to the pool.
        drop(self);
    }
}

/// Decompresses an object (for tests).
#[cfg(test)]
pub fn decompress(compression: Compression, body: &[u8]) -> std::io::Result<Vec<u8>> {
    match compression {
        Compression::Zstd => zstd::stream::decode_all(body),
        Compression::Gzip => {
            let mut out = Vec::new();
            std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(body), &mut out)?;
            Ok(out)
        }
        Compression::None => Ok(body.to_vec()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record of topic `t`, partition 2, key `k`, timestamped 1000 ms after its offset.
    pub(super) fn rec(offset: i64, value: &[u8]) -> Record<'_> {
        Record {
            topic: "t",
            partition: 2,
            offset,
            timestamp_ms: Some(1000 + offset),
            key: Some(b"k"),
            value: Some(value),
        }
    }

    #[test]
    fn roll_and_compress_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let slots = Slots::new(dir.path());
        for compression in [Compression::Zstd, Compression::Gzip, Compression::None] {
            let mut b = Buffer::create(&slots, Format::Lines, compression, 3, Span::starting(10), &rec(10, b"a"))
                .expect("create");
            for o in 10..20 {
                b.append(&rec(o, format!("line {o}").as_bytes())).expect("append");
            }
            assert!(b.full(&RollConfig { max_bytes: 1 << 20, max_age_ms: 1, max_records: 10 }));
            assert!(!b.full(&RollConfig { max_bytes: 1 << 20, max_age_ms: 1, max_records: 11 }));
            assert!(b.append(&rec(21, b"a jump")).is_err(), "an offset that does not follow is refused");
            let f = b.finish().expect("finish");
            assert_eq!((f.first_offset, f.span.last, f.span.records, f.first_timestamp_ms), (10, 19, 10, 1010));
            let text = decompress(compression, &std::fs::read(&f.path).expect("object")).expect("decompress");
            assert_eq!(text.iter().filter(|&&c| c == b'\n').count(), 10);
            assert!(String::from_utf8_lossy(&text).starts_with("line 10\n"));
        }
        // One slot served every buffer in turn, and is empty between them.
        let files: Vec<u64> =
            dir.path().read_dir().expect("dir").map(|e| e.expect("entry").metadata().expect("meta").len()).collect();
        assert_eq!(files, vec![0, 0], "one slot's two files, emptied");
    }
}
