//! pyarrow, from PyPI, as an independent reader of the Parquet objects the transporter writes:
//! nothing of it shares code with the writer (Rust's `parquet` crate), so a row it reads back as
//! produced is evidence the file is what any data-lake reader sees.
//!
//! ```text
//!  files ──python3 -c readers/parquet_rows.py──> JSON: per file its key-value metadata, row
//!        groups, schema and rows (bytes as hex, timestamps as stored ms) ──> [`ParquetObject`]
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{Result, TestkitError};

/// The reader, run by `python3 -c`.
const SCRIPT: &str = include_str!("../readers/parquet_rows.py");

/// One object as pyarrow reads it.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct ParquetObject {
    /// The file read.
    pub path: PathBuf,
    /// Its key-value metadata.
    pub meta: BTreeMap<String, String>,
    /// Row groups.
    pub row_groups: u64,
    /// `name:type` of every column, as Arrow names the type.
    pub schema: Vec<String>,
    /// Every row.
    pub rows: Vec<ParquetRow>,
}

/// One row: a Kafka record.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct ParquetRow {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i64,
    /// Offset.
    pub offset: i64,
    /// Timestamp (ms), as stored.
    pub timestamp: Option<i64>,
    /// `create-time` or `log-append-time`.
    pub timestamp_type: Option<String>,
    /// Key, hex.
    pub key: Option<String>,
    /// Value, hex.
    pub value: Option<String>,
    /// Headers in order: key and value (hex).
    pub headers: Vec<(String, Option<String>)>,
    /// The typed columns (`value_fields`), when the object has them.
    #[serde(default)]
    pub fields: Option<serde_json::Value>,
}

impl ParquetRow {
    /// The value's bytes.
    pub fn value_bytes(&self) -> Option<Vec<u8>> {
        self.value.as_deref().and_then(unhex)
    }
}

/// Bytes as lowercase hex, as the reader gives them.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|c| format!("{c:02x}")).collect()
}

/// Hex back to bytes.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    (0..s.len()).step_by(2).map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok())).collect()
}

/// Whether pyarrow can be imported.
pub fn available() -> bool {
    Command::new("python3").args(["-c", "import pyarrow.parquet"]).output().is_ok_and(|o| o.status.success())
}

/// Reads `files` with pyarrow.
pub fn read(files: &[impl AsRef<Path>]) -> Result<Vec<ParquetObject>> {
    if files.is_empty() {
        return Ok(Vec::new());
    }
    let out = Command::new("python3")
        .args(["-c", SCRIPT])
        .args(files.iter().map(AsRef::as_ref))
        .output()
        .map_err(crate::io_err("running python3 (pyarrow)"))?;
    if !out.status.success() {
        return Err(TestkitError::Reader {
            reader: "pyarrow",
            reason: format!(
                "reading {} Parquet files failed (cargo xtask test installs pyarrow: python3 -m pip install pyarrow): {}",
                files.len(),
                String::from_utf8_lossy(&out.stderr)
            ),
        });
    }
    serde_json::from_slice(&out.stdout).map_err(|e| TestkitError::Reader {
        reader: "pyarrow",
        reason: format!("its output is not the JSON expected: {e}"),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_round_trips() {
        let b = [0u8, 0xff, 0x10, b'a'];
        assert_eq!(super::hex(&b), "00ff1061");
        assert_eq!(super::unhex(&super::hex(&b)), Some(b.to_vec()));
        assert_eq!(super::unhex("zz"), None);
    }
}
