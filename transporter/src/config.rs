//! The transporter's configuration: one struct, layered by figment from defaults, a TOML file and
//! `ZONAL_TRANSPORTER__`-prefixed environment variables (`__` separates levels).
//!
//! ```text
//!  TransporterConfig::default() ─┐
//!  transporter.toml ─────────────┼─ figment ─> TransporterConfig ─validate()─> run (or an error naming the field)
//!  ZONAL_TRANSPORTER__S3__BUCKET=... ┘
//! ```
//!
//! Each section is a file of its own: `kafka`, `etcd`, `objects` (`[s3]` and `[roll]`),
//! `records` (`[records]`, `[parquet]`) and `process` (`[worker]`, `[assignment]`, `[http]`); what serde checks (types, enumerations,
//! unknown fields) is named by figment, the rest by each section's `validate`.
//!
//! S3 credentials are never part of it: they come from aws-config's default chain.

mod etcd;
mod kafka;
mod objects;
mod process;
mod records;
#[cfg(test)]
mod tests;

use az_core::zone::ZoneSettings;
use serde::{Deserialize, Serialize};

pub use etcd::{EtcdConfig, EtcdTls};
pub use kafka::{GUARDS, KafkaConfig, OutOfRange, StartFrom};
pub use objects::{
    ChecksumAlgorithm, Compression, DEFAULT_KEY_TEMPLATE, DETERMINISTIC_KEY_TEMPLATE, Encryption, Format,
    ObjectSettings, RollConfig, S3Config, UploadSigning,
};
pub use process::{AssignmentConfig, HttpConfig, WorkerConfig};
pub use records::{Newlines, ParquetConfig, RecordsConfig, TimeSource};

/// Environment prefix of overrides.
pub const ENV_PREFIX: &str = "ZONAL_TRANSPORTER__";

/// The whole transporter configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct TransporterConfig {
    /// Kafka settings.
    pub kafka: KafkaConfig,
    /// etcd settings.
    pub etcd: EtcdConfig,
    /// How the worker learns its zone.
    pub zone: ZoneSettings,
    /// This worker.
    pub worker: WorkerConfig,
    /// Where objects go.
    pub s3: S3Config,
    /// When a buffer becomes an object.
    pub roll: RollConfig,
    /// Where a record's time comes from, and what `lines` does with line breaks.
    pub records: RecordsConfig,
    /// How Parquet objects are laid out.
    pub parquet: ParquetConfig,
    /// How the master assigns partitions.
    pub assignment: AssignmentConfig,
    /// HTTP server for metrics, health, status and the assignment view.
    pub http: HttpConfig,
    /// How log lines are written.
    pub log: shell::config::LogConfig,
}

impl shell::ProgramConfig for TransporterConfig {
    const ENV_PREFIX: &'static str = ENV_PREFIX;

    fn log(&self) -> &shell::config::LogConfig {
        &self.log
    }

    const SECRETS: &'static [&'static str] = &["etcd.password"];

    /// Checks what serde cannot. The first invalid field is reported; the sections are checked
    /// in this order so that a configuration with several mistakes always names the same one.
    fn validate(&self) -> anyhow::Result<()> {
        self.kafka.validate()?;
        self.etcd.validate()?;
        self.kafka.validate_options()?;
        self.worker.validate()?;
        self.s3.validate(&self.roll)?;
        self.records.validate()?;
        self.parquet.validate()?;
        if !self.parquet.value_schema.is_empty() && self.s3.format != Format::Parquet {
            anyhow::bail!("parquet.value-schema: only with s3.format = \"parquet\"");
        }
        Ok(())
    }
}

impl TransporterConfig {
    /// This worker's id.
    pub fn worker_id(&self) -> String {
        self.worker.id.clone().unwrap_or_else(|| {
            hostname::get().map(|h| h.to_string_lossy().into_owned()).unwrap_or_else(|_| "worker".into())
        })
    }
}
