//! A partition's local buffer: records appended to a file until the roll policy (or a record
//! of another time partition) says so, then written into the file of one object, which the
//! upload streams from disk.
//!
//! ```text
//!  record ──encode (lines | JSON lines | frame)──> <buffer-dir>/<worker>/slot-<n>.buf   (a slot: see `slots`)
//!           roll on bytes / records / age / time partition ──> finish() ──> slot-<n>.obj
//!              lines, JSON: zstd | gzip | none over the file;  Parquet: frames ──> columns (`parquet`)
//!           uploaded or abandoned ──> the slot's files emptied, the slot reused
//! ```
//!
//! Memory does not grow with object size: records go to disk as they come, the object is
//! written to disk as it is compressed, and the upload reads it a part at a time (Parquet holds
//! one row group, `parquet.row-group-bytes`).
//!
//! Compression happens at roll time, on a blocking thread, one buffer at a time: a streaming
//! encoder per open partition would hold its compression state (about 1 MB for zstd level 3)
//! for every owned partition at once; the raw file is read back from the page cache.

mod encode;
mod frame;
mod parquet;
mod record;
mod slots;
#[cfg(test)]
pub(crate) mod tests;
mod typed;

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::config::{Compression, Newlines, RollConfig, TransporterConfig};
use crate::continuity::{Gap, Span};
use crate::timepart::Bucket;
pub use encode::{encode, needs_escape};
pub use parquet::{DEAD_LETTER_RECORDS, ParquetSettings};
pub use record::{Header, OwnedRecord, Record, TimestampType};
pub use slots::{Slot, Slots};
pub use typed::{SharedSchema, ValueSchema, ValueType};

/// Output format of objects.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// Record values, one per line (line breaks in a value escaped or refused:
    /// `records.newlines`).
    #[default]
    Lines,
    /// JSON lines with key, value, headers, offset, partition, timestamp and its type.
    Json,
    /// Apache Parquet, a column per field (`buffer::parquet`).
    Parquet,
}

/// File extension for a format and compression.
pub fn extension(format: Format, compression: Compression) -> &'static str {
    match (format, compression) {
        (Format::Lines, Compression::Zstd) => "log.zst",
        (Format::Lines, Compression::Gzip) => "log.gz",
        (Format::Lines, _) => "log",
        (Format::Json, Compression::Zstd) => "jsonl.zst",
        (Format::Json, Compression::Gzip) => "jsonl.gz",
        (Format::Json, _) => "jsonl",
        // Parquet compresses its columns inside the file.
        (Format::Parquet, _) => "parquet",
    }
}

/// Where a record belongs: its time partition and, in deterministic mode
/// (`roll.offset-interval`), its interval of offsets (`offset / interval`; 0 otherwise). A
/// buffer holds the records of one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place {
    /// The time partition.
    pub bucket: Bucket,
    /// The offset interval.
    pub cell: i64,
}

impl Place {
    /// The place of a record at `offset` in time partition `bucket`, with offset intervals of
    /// `interval` (0: none).
    pub fn of(bucket: Bucket, offset: i64, interval: u64) -> Place {
        let cell = i64::try_from(interval).ok().filter(|n| *n > 0).map_or(0, |n| offset.div_euclid(n));
        Place { bucket, cell }
    }
}

/// How buffers encode and finish their records: the same for every buffer of a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Format.
    pub format: Format,
    /// Compression.
    pub compression: Compression,
    /// Its level.
    pub level: i32,
    /// Line breaks in `lines`.
    pub newlines: Newlines,
    /// Parquet row groups.
    pub row_group_bytes: usize,
    /// Parquet: typed columns from JSON values (`parquet.value-schema`).
    pub value_schema: Option<SharedSchema>,
}

impl Layout {
    /// The layout a configuration asks for.
    pub fn of(cfg: &TransporterConfig) -> Layout {
        Layout {
            format: cfg.s3.format,
            compression: cfg.s3.compression,
            level: cfg.s3.compression_level,
            newlines: cfg.records.newlines,
            row_group_bytes: cfg.parquet.row_group_bytes,
            value_schema: (!cfg.parquet.value_schema.is_empty()).then(|| {
                Arc::new(ValueSchema {
                    fields: cfg.parquet.value_schema.iter().map(|(k, t)| (k.clone(), *t)).collect(),
                })
            }),
        }
    }
}

/// An open buffer.
#[derive(Debug)]
pub struct Buffer {
    slot: Slot,
    file: BufWriter<File>,
    layout: Layout,
    topic: String,
    partition: i32,
    /// First record's offset.
    pub first_offset: i64,
    /// What the buffer covers: its chain from the committed offset, records and gaps. Every
    /// record appended must follow it, and it must add up before the buffer becomes an object.
    pub span: Span,
    /// The place every record of it belongs to.
    pub place: Place,
    /// Uncompressed bytes appended.
    pub bytes: u64,
    /// Records whose line breaks `lines` escaped.
    pub escaped: u64,
    /// When the first record arrived.
    pub opened: Instant,
    scratch: Vec<u8>,
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
    /// The time partition of all its records.
    pub bucket: Bucket,
    /// Uncompressed bytes.
    pub bytes: u64,
    /// Records whose line breaks were escaped.
    pub escaped: u64,
    /// The dead-letter object (Parquet with a value schema): its file, size and records, when
    /// some values did not fit.
    pub dead_letter: Option<(PathBuf, u64, u64)>,
}

impl Buffer {
    /// Opens a buffer for a partition in a slot of `slots`, for record `first` at `place`,
    /// continuing `span` (empty but for gaps before the first record).
    pub fn create(
        slots: &Arc<Slots>,
        layout: Layout,
        span: Span,
        first: &Record<'_>,
        place: Place,
    ) -> std::io::Result<Buffer> {
        std::fs::create_dir_all(slots.dir())?;
        let slot = slots.take();
        // Every owned partition has one open (and one rolling): 16 KiB each keeps that to a few
        // MiB at hundreds of partitions, and a write per 16 KiB costs little.
        let file = BufWriter::with_capacity(16 * 1024, File::create(slot.raw())?);
        Ok(Buffer {
            slot,
            file,
            layout,
            topic: first.topic.to_owned(),
            partition: first.partition,
            first_offset: first.offset,
            span,
            place,
            bytes: 0,
            escaped: 0,
            opened: Instant::now(),
            scratch: Vec::with_capacity(4096),
        })
    }

    /// Records appended.
    pub fn records(&self) -> u64 {
        self.span.records
    }

    /// Appends a record at `place`, which must follow the span and be the buffer's place: the
    /// buffer refuses an offset that would leave a hole nobody explained, and a record that
    /// belongs in another object. Returns the bytes it added.
    pub fn append(&mut self, r: &Record<'_>, place: Place) -> std::io::Result<u64> {
        let invalid = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
        if place != self.place {
            return Err(invalid(format!("offset {} belongs to {place:?}, the buffer to {:?}", r.offset, self.place)));
        }
        if self.layout.format == Format::Lines
            && self.layout.newlines == Newlines::Refuse
            && needs_escape(r.value.unwrap_or_default())
        {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("offset {} has a line break, and records.newlines = \"refuse\"", r.offset),
            ));
        }
        self.span.record(r.offset).map_err(|e| invalid(e.to_string()))?;
        self.scratch.clear();
        if encode(self.layout.format, r, &mut self.scratch) {
            self.escaped += 1;
        }
        self.file.write_all(&self.scratch)?;
        let written = self.scratch.len() as u64;
        self.bytes += written;
        Ok(written)
    }

    /// Records offsets that Kafka does not hold (`gap` must follow the span).
    pub fn gap(&mut self, gap: Gap) -> std::io::Result<()> {
        self.span.gap(gap).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    }

    /// Whether size or count says roll now, or (deterministic mode) the last offset of the
    /// buffer's interval is in; age is checked by the caller's timer.
    pub fn full(&self, roll: &RollConfig) -> bool {
        let interval = i64::try_from(roll.offset_interval).unwrap_or(0);
        let complete = interval > 0 && self.span.last >= (self.place.cell + 1) * interval - 1;
        self.bytes >= roll.max_bytes || self.span.records >= roll.max_records || complete
    }

    /// Closes the file and writes it into the object's file (Parquet, or compressed lines);
    /// `meta` is the object's metadata, which a Parquet file carries too. The raw file is
    /// emptied. Blocking: call it on a blocking thread.
    pub fn finish(mut self, meta: &[(&str, String)]) -> std::io::Result<Finished> {
        // The last check before an object exists: its counts must add up.
        self.span.check().map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        self.file.flush()?;
        drop(self.file.into_inner().map_err(|e| e.into_error())?);
        let raw = File::open(self.slot.raw())?;
        let raw_len = raw.metadata()?.len();
        let mut raw = std::io::BufReader::with_capacity(256 * 1024, raw);
        let object = self.slot.object();
        let out = std::io::BufWriter::with_capacity(256 * 1024, File::create(&object)?);
        let l = &self.layout;
        let mut dead_letter = None;
        let out = match (l.format, l.compression) {
            (Format::Parquet, compression) => {
                let settings = ParquetSettings {
                    compression,
                    level: l.level,
                    row_group_bytes: l.row_group_bytes,
                    value_schema: l.value_schema.clone(),
                };
                let meta = meta.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect();
                let path = self.slot.dead_letter();
                let w = parquet::write(&mut raw, out, &path, &self.topic, self.partition, &settings, meta)?;
                // The files must hold exactly the records the span counts.
                if w.rows + w.dead != self.span.records {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!(
                            "{} rows (and {} dead letters) written for a span of {} records",
                            w.rows, w.dead, self.span.records
                        ),
                    ));
                }
                if w.dead > 0 {
                    dead_letter = Some((path.clone(), std::fs::metadata(&path)?.len(), w.dead));
                }
                w.out
            }
            (_, Compression::Zstd) => {
                let mut enc = zstd::stream::write::Encoder::new(out, l.level)?;
                // The size is known: zstd sizes its window and tables to it (less memory for
                // small objects) and writes it in the frame header for readers.
                enc.set_pledged_src_size(Some(raw_len))?;
                enc.include_contentsize(true)?;
                std::io::copy(&mut raw, &mut enc)?;
                enc.finish()?
            }
            (_, Compression::Gzip) => {
                let mut enc = flate2::write::GzEncoder::new(out, flate2::Compression::new(l.level.clamp(0, 9) as u32));
                std::io::copy(&mut raw, &mut enc)?;
                enc.finish()?
            }
            (_, Compression::None | Compression::Snappy) => {
                let mut out = out;
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
            bucket: self.place.bucket,
            bytes: self.bytes,
            escaped: self.escaped,
            dead_letter,
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
        Compression::None | Compression::Snappy => Ok(body.to_vec()),
    }
}
