//! The `[records]` and `[parquet]` sections: how a record's time is found and which partition of
//! the key template's `{date}`/`{hour}` it goes to, what `lines` does with a line break, and how
//! Parquet objects are laid out.

use anyhow::bail;
use serde::{Deserialize, Serialize};

/// Where a record's time comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TimeSource {
    /// The Kafka record's timestamp (create time or log-append time, as the topic keeps it).
    #[default]
    Record,
    /// A top-level field of the value, parsed as JSON: a number (ms since the epoch) or an
    /// RFC 3339 string.
    JsonField,
}

/// What `lines` does with a value holding a line break.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Newlines {
    /// `\n` and `\r` are written as the two characters `\n` and `\r` (backslashes are left as
    /// they are, so JSON log lines stay JSON); the object's metadata counts the records escaped.
    #[default]
    Escape,
    /// The partition stops before the record (held, `errors{kind="newline"}`), uploading what
    /// came before it, until an operator sets its offset or changes the format.
    Refuse,
}

/// How records are placed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct RecordsConfig {
    /// Where `{date}` and `{hour}` come from: `record` (the record's timestamp) or `json-field`
    /// (the value's `time-field`). Every object holds records of one date (and hour, when the
    /// template has `{hour}`): a record of another one ends the object, so late records go
    /// where they belong.
    pub time_source: TimeSource,
    /// With `time-source = "json-field"`: the top-level field of the value holding its time.
    pub time_field: Option<String>,
    /// The time zone of `{date}` and `{hour}`: `UTC`, or an IANA name such as `Europe/Berlin`.
    pub time_zone: String,
    /// `{date}` and `{hour}` of a record without a time (no timestamp, or no usable field):
    /// such records are counted (`records_without_time`) and go there, not to 1970.
    pub no_time: String,
    /// With `s3.format = "lines"`: `escape` (the default) or `refuse` a value with a line break.
    pub newlines: Newlines,
}

impl Default for RecordsConfig {
    fn default() -> Self {
        RecordsConfig {
            time_source: TimeSource::Record,
            time_field: None,
            time_zone: "UTC".into(),
            no_time: "unknown".into(),
            newlines: Newlines::Escape,
        }
    }
}

impl RecordsConfig {
    /// The time zone, parsed.
    pub fn zone(&self) -> anyhow::Result<chrono_tz::Tz> {
        self.time_zone.parse().map_err(|_| {
            anyhow::anyhow!(
                "records.time-zone: {:?} is not an IANA time zone (e.g. UTC, Europe/Berlin)",
                self.time_zone
            )
        })
    }

    /// Checks what serde cannot.
    pub(super) fn validate(&self) -> anyhow::Result<()> {
        self.zone()?;
        match (self.time_source, &self.time_field) {
            (TimeSource::JsonField, None) => bail!("records.time-field: must be set with time-source = \"json-field\""),
            (TimeSource::JsonField, Some(f)) if f.is_empty() => bail!("records.time-field: must not be empty"),
            (TimeSource::Record, Some(_)) => bail!("records.time-field: only used with time-source = \"json-field\""),
            _ => {}
        }
        if self.no_time.is_empty() || self.no_time.contains('/') {
            bail!("records.no-time: must be a non-empty path segment without '/'");
        }
        Ok(())
    }
}

/// Parquet objects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct ParquetConfig {
    /// A row group is closed when its encoded size passes this many bytes. Readers fetch and
    /// decode a row group at a time: tens of MiB keep their requests few and large (an object
    /// is at most `roll.max-bytes` before compression, so most objects are one row group).
    pub row_group_bytes: usize,
    /// Typed columns from JSON values: field name = `string`, `int64`, `float64`, `boolean`,
    /// `timestamp` (ms or RFC 3339) or `json` (kept as text), written in a `value_fields`
    /// struct column beside the raw `value`. A record whose value does not fit (not a JSON
    /// object, a field of another type, a tombstone) goes whole to the dead-letter object,
    /// counted (`records_dead_lettered`), never dropped. Empty: no typed columns.
    pub value_schema: std::collections::BTreeMap<String, crate::buffer::ValueType>,
    /// The folder under `s3.prefix` that dead-letter objects go to; Hive, Spark, Trino and
    /// Athena skip folders whose names start with `_`.
    pub dead_letter_folder: String,
}

impl Default for ParquetConfig {
    fn default() -> Self {
        ParquetConfig {
            row_group_bytes: 64 << 20,
            value_schema: Default::default(),
            dead_letter_folder: "_dead-letter".into(),
        }
    }
}

impl ParquetConfig {
    /// Checks what serde cannot.
    pub(super) fn validate(&self) -> anyhow::Result<()> {
        if self.row_group_bytes < 1 << 20 {
            bail!("parquet.row-group-bytes: must be at least 1 MiB (readers fetch a row group at a time)");
        }
        if let Some(empty) = self.value_schema.keys().find(|k| k.is_empty()) {
            bail!("parquet.value-schema: a field name is empty ({empty:?})");
        }
        if self.dead_letter_folder.is_empty() || self.dead_letter_folder.contains('/') {
            bail!("parquet.dead-letter-folder: must be a non-empty folder name without '/'");
        }
        Ok(())
    }
}
