//! Writing a buffer's frames as a Parquet file: one row per record, every field of it kept,
//! compressed per column, in row groups sized for readers.
//!
//! ```text
//!  slot-<n>.buf ──frames──> column builders (≤ 8192 rows or 8 MiB a batch) ──RecordBatch──>
//!     ArrowWriter (a row group per `parquet.row-group-bytes`) ──> slot-<n>.obj
//!     + key-value metadata: the object's span (the same `zonal-*` keys as its S3 metadata)
//!  with `parquet.value-schema`: the value's fields ──typed──> a `value_fields` struct column;
//!     a value that does not fit ──> its whole record to slot-<n>.dlq (the dead-letter object)
//! ```
//!
//! Columns: `topic` string, `partition` int32, `offset` int64, `timestamp` (ms, UTC; null when
//! the record has none), `timestamp_type` (`create-time` | `log-append-time`), `key` and `value`
//! binary (null for a null key or a tombstone), `headers` a list of `{key string, value binary}`
//! in the producer's order (a list, not a map: Kafka allows a key more than once).

use std::io::{self, Read, Write};
use std::sync::Arc;

use arrow_array::builder::{
    ArrayBuilder, BinaryBuilder, Int32Builder, Int64Builder, ListBuilder, StringBuilder, StructBuilder,
    TimestampMillisecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression as Codec, GzipLevel, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;

use super::frame;
use super::typed::{self, SharedSchema, Typed, ValueSchema};
use crate::config::Compression;

/// Rows a batch holds at most before it goes to the writer.
const BATCH_ROWS: usize = 8192;
/// Bytes of keys and values a batch holds at most.
const BATCH_BYTES: usize = 8 << 20;

/// How a Parquet object is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParquetSettings {
    /// Column compression.
    pub compression: Compression,
    /// Its level (zstd 1-22, gzip 0-9; snappy has none).
    pub level: i32,
    /// A row group is closed past this many bytes (the writer's estimate of its encoded size).
    pub row_group_bytes: usize,
    /// Typed columns from JSON values, when configured.
    pub value_schema: Option<SharedSchema>,
}

fn header_fields() -> Fields {
    Fields::from(vec![Field::new("key", DataType::Utf8, false), Field::new("value", DataType::Binary, true)])
}

/// The schema of every object: the record's fields, and `value_fields` with a value schema.
pub fn schema(value: Option<&ValueSchema>) -> SchemaRef {
    let element = Field::new("element", DataType::Struct(header_fields()), false);
    let mut fields = vec![
        Field::new("topic", DataType::Utf8, false),
        Field::new("partition", DataType::Int32, false),
        Field::new("offset", DataType::Int64, false),
        Field::new("timestamp", DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())), true),
        Field::new("timestamp_type", DataType::Utf8, true),
        Field::new("key", DataType::Binary, true),
        Field::new("value", DataType::Binary, true),
        Field::new("headers", DataType::List(Arc::new(element)), false),
    ];
    if let Some(v) = value {
        fields.push(Field::new("value_fields", DataType::Struct(v.arrow_fields()), true));
    }
    Arc::new(Schema::new(fields))
}

fn err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("writing Parquet: {e}"))
}

/// The columns of the batch being filled.
struct Columns {
    topic: StringBuilder,
    partition: Int32Builder,
    offset: Int64Builder,
    timestamp: TimestampMillisecondBuilder,
    timestamp_type: StringBuilder,
    key: BinaryBuilder,
    value: BinaryBuilder,
    headers: ListBuilder<StructBuilder>,
    /// The typed fields, with a value schema.
    fields: Option<(StructBuilder, SharedSchema)>,
    bytes: usize,
}

impl Columns {
    fn new(value: Option<SharedSchema>) -> Columns {
        let element = Field::new("element", DataType::Struct(header_fields()), false);
        let headers = StructBuilder::new(
            header_fields(),
            vec![Box::new(StringBuilder::new()) as Box<dyn ArrayBuilder>, Box::new(BinaryBuilder::new())],
        );
        Columns {
            topic: StringBuilder::new(),
            partition: Int32Builder::new(),
            offset: Int64Builder::new(),
            timestamp: TimestampMillisecondBuilder::new().with_timezone("UTC"),
            timestamp_type: StringBuilder::new(),
            key: BinaryBuilder::new(),
            value: BinaryBuilder::new(),
            headers: ListBuilder::new(headers).with_field(Arc::new(element)),
            fields: value.map(|v| (v.builder(), v)),
            bytes: 0,
        }
    }

    /// Appends a record, with its typed fields when the columns have them.
    fn push(&mut self, topic: &str, partition: i32, f: &frame::Frame<'_>, typed: Option<&[Typed]>) -> io::Result<()> {
        if let Some((b, schema)) = &mut self.fields {
            typed::append(b, schema, typed).map_err(err)?;
        }
        self.topic.append_value(topic);
        self.partition.append_value(partition);
        self.offset.append_value(f.offset);
        self.timestamp.append_option(f.timestamp_ms);
        self.timestamp_type.append_option(f.timestamp_type.name());
        self.key.append_option(f.key);
        self.value.append_option(f.value);
        let hs = self.headers.values();
        for (k, v) in &f.headers {
            // Kafka defines header names as strings: one that is not UTF-8 is written with
            // U+FFFD in its invalid bytes (JSON objects keep them exactly, as `key_b64`).
            let key = String::from_utf8_lossy(k);
            hs.field_builder::<StringBuilder>(0).ok_or_else(|| err("header key column"))?.append_value(key.as_ref());
            hs.field_builder::<BinaryBuilder>(1).ok_or_else(|| err("header value column"))?.append_option(*v);
            hs.append(true);
            self.bytes += k.len() + v.map_or(0, <[u8]>::len);
        }
        self.headers.append(true);
        self.bytes += f.key.map_or(0, <[u8]>::len) + f.value.map_or(0, <[u8]>::len) + 32;
        Ok(())
    }

    fn rows(&self) -> usize {
        self.offset.len()
    }

    fn batch(&mut self, schema: &SchemaRef) -> io::Result<RecordBatch> {
        self.bytes = 0;
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(self.topic.finish()),
            Arc::new(self.partition.finish()),
            Arc::new(self.offset.finish()),
            Arc::new(self.timestamp.finish()),
            Arc::new(self.timestamp_type.finish()),
            Arc::new(self.key.finish()),
            Arc::new(self.value.finish()),
            Arc::new(self.headers.finish()),
        ];
        if let Some((b, _)) = &mut self.fields {
            columns.push(Arc::new(b.finish()));
        }
        RecordBatch::try_new(schema.clone(), columns).map_err(err)
    }
}

/// The writer's properties: the codec, row groups by size, and `meta` as key-value metadata.
fn properties(s: &ParquetSettings, meta: Vec<(String, String)>) -> io::Result<WriterProperties> {
    let codec = match s.compression {
        Compression::Zstd => Codec::ZSTD(ZstdLevel::try_new(s.level).map_err(err)?),
        Compression::Gzip => Codec::GZIP(GzipLevel::try_new(s.level.clamp(0, 9) as u32).map_err(err)?),
        Compression::Snappy => Codec::SNAPPY,
        Compression::None => Codec::UNCOMPRESSED,
    };
    Ok(WriterProperties::builder()
        .set_compression(codec)
        .set_max_row_group_row_count(None)
        .set_max_row_group_bytes(Some(s.row_group_bytes.max(1)))
        .set_created_by(format!("zonal-transporter {}", env!("CARGO_PKG_VERSION")))
        .set_key_value_metadata(Some(meta.into_iter().map(|(k, v)| KeyValue::new(k, v)).collect()))
        .build())
}

/// What [`write`] wrote.
pub struct Written<W> {
    /// The object's file.
    pub out: W,
    /// Its rows.
    pub rows: u64,
    /// Rows of the dead-letter file (0: none was written).
    pub dead: u64,
}

/// One Parquet file being written: the writer, its batch and its schema.
struct File<W: Write + Send> {
    writer: ArrowWriter<W>,
    cols: Columns,
    schema: SchemaRef,
    rows: u64,
}

impl<W: Write + Send> File<W> {
    fn new(out: W, value: Option<SharedSchema>, props: WriterProperties) -> io::Result<File<W>> {
        let schema = schema(value.as_deref());
        let writer = ArrowWriter::try_new(out, schema.clone(), Some(props)).map_err(err)?;
        Ok(File { writer, cols: Columns::new(value), schema, rows: 0 })
    }

    fn push(&mut self, topic: &str, partition: i32, f: &frame::Frame<'_>, typed: Option<&[Typed]>) -> io::Result<()> {
        self.cols.push(topic, partition, f, typed)?;
        self.rows += 1;
        if self.cols.rows() >= BATCH_ROWS || self.cols.bytes >= BATCH_BYTES {
            self.writer.write(&self.cols.batch(&self.schema)?).map_err(err)?;
        }
        Ok(())
    }

    fn close(mut self, dead: u64) -> io::Result<W> {
        if self.cols.rows() > 0 {
            self.writer.write(&self.cols.batch(&self.schema)?).map_err(err)?;
        }
        self.writer.append_key_value_metadata(KeyValue::new(DEAD_LETTER_RECORDS.to_owned(), dead.to_string()));
        self.writer.into_inner().map_err(err)
    }
}

/// The key-value metadata (and S3 metadata) key counting the span's records in the
/// dead-letter object.
pub const DEAD_LETTER_RECORDS: &str = "zonal-dead-letter-records";

/// Writes the frames read from `raw` as one Parquet file to `out`; with a value schema, the
/// records whose value does not fit go to a second file, created at `dead_letter` only when
/// there is one. Blocking.
pub fn write<W: Write + Send>(
    raw: &mut impl Read,
    out: W,
    dead_letter: &std::path::Path,
    topic: &str,
    partition: i32,
    settings: &ParquetSettings,
    meta: Vec<(String, String)>,
) -> io::Result<Written<W>> {
    let value = settings.value_schema.clone().filter(|v| !v.is_empty());
    let mut main = File::new(out, value.clone(), properties(settings, meta.clone())?)?;
    let mut dead: Option<File<io::BufWriter<std::fs::File>>> = None;
    let mut body = Vec::new();
    let mut read = 0u64;
    while frame::read_next(raw, &mut body)? {
        let f = frame::decode(&body).map_err(|e| io::Error::new(e.kind(), format!("{e} (record {read})")))?;
        read += 1;
        match value.as_deref().map(|v| v.parse(f.value)) {
            None => main.push(topic, partition, &f, None)?,
            Some(Ok(typed)) => main.push(topic, partition, &f, Some(&typed))?,
            Some(Err(_)) => {
                let d = match &mut dead {
                    Some(d) => d,
                    None => {
                        let file = io::BufWriter::with_capacity(64 * 1024, std::fs::File::create(dead_letter)?);
                        dead.insert(File::new(file, None, properties(settings, meta.clone())?)?)
                    }
                };
                d.push(topic, partition, &f, None)?;
            }
        }
    }
    let dead_rows = dead.as_ref().map_or(0, |d| d.rows);
    if let Some(d) = dead {
        d.close(dead_rows)?.flush()?;
    }
    let rows = main.rows;
    Ok(Written { out: main.close(dead_rows)?, rows, dead: dead_rows })
}
