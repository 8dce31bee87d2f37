//! The transporter's configuration: one struct, layered by figment from defaults, a TOML file and
//! `ZONAL_TRANSPORTER__`-prefixed environment variables (`__` separates levels).
//!
//! ```text
//!  TransporterConfig::default() ─┐
//!  transporter.toml ─────────────┼─ figment ─> TransporterConfig ─validate()─> run (or an error naming the field)
//!  ZONAL_TRANSPORTER__S3__BUCKET=... ┘
//! ```
//!
//! S3 credentials are never part of it: they come from aws-config's default chain.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use az_core::kafka_options::{ClientOptions, Guard};
use az_core::zone::ZoneSettings;
use figment::Figment;
use serde::{Deserialize, Serialize};

/// Environment prefix of overrides.
pub const ENV_PREFIX: &str = "ZONAL_TRANSPORTER__";

/// librdkafka properties the transporter sets itself because exactly-once depends on them.
pub const GUARDS: &[Guard] = &[
    Guard {
        key: "enable.auto.commit",
        allowed: &["false"],
        reason: "offsets are committed in etcd after the upload; an automatic commit would skip records",
    },
    Guard {
        key: "enable.auto.offset.store",
        allowed: &["false"],
        reason: "offsets are stored only after the object holding them is in S3",
    },
    Guard {
        key: "auto.offset.reset",
        allowed: &[],
        reason: "where a partition without a committed offset starts is kafka.start-from; a silent reset would lose or repeat records",
    },
    Guard { key: "group.id", allowed: &[], reason: "set kafka.group-id instead" },
    Guard { key: "bootstrap.servers", allowed: &[], reason: "set kafka.bootstrap-servers instead" },
];

/// Default object key template.
pub const DEFAULT_KEY_TEMPLATE: &str =
    "{prefix}/{topic}/dt={date}/hr={hour}/{topic}-{partition}-{first_offset:020}.{ext}";

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
    /// How the master assigns partitions.
    pub assignment: AssignmentConfig,
    /// HTTP server for metrics, health, status and the assignment view.
    pub http: HttpConfig,
}

/// Master settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct AssignmentConfig {
    /// Assign partitions to workers in their zone. `false` balances without regard to zones
    /// (the baseline the demo compares against).
    pub zone_aware: bool,
}

impl Default for AssignmentConfig {
    fn default() -> Self {
        AssignmentConfig { zone_aware: true }
    }
}

/// Kafka settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// `bootstrap.servers`.
    pub bootstrap_servers: String,
    /// librdkafka properties passed through unchanged (TLS, SASL, tuning), except those
    /// exactly-once depends on (`enable.auto.commit`, `auto.offset.reset`). A key ending in
    /// `-file` (`"sasl.password-file"`) reads the property from a file, one ending in `-env` from
    /// an environment variable; secrets are shown as `***`.
    pub options: BTreeMap<String, String>,
    /// Topics to move.
    pub topics: Vec<String>,
    /// Regex of topics to move, in addition to `topics` (matched against the cluster's topics).
    pub topic_pattern: Option<String>,
    /// Consumer group the committed offsets are mirrored to, so standard lag tools see them.
    pub group_id: String,
    /// Read from an in-sync replica in the worker's zone (KIP-392; sets `client.rack`).
    pub follower_fetching: bool,
    /// Seconds between topology refreshes.
    pub topology_refresh_secs: u64,
    /// Where a partition without a committed offset starts: `earliest` or `latest`.
    pub start_from: String,
    /// When the committed offset is no longer in Kafka (retention passed it): `earliest` reads
    /// what is still kept, `fail` holds the partition until an operator sets its offset. Either
    /// way it is counted (`errors{kind="offset-out-of-range"}`).
    pub on_offset_out_of_range: OutOfRange,
}

/// The policy for a committed offset Kafka no longer has.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OutOfRange {
    /// Read from the earliest offset still kept.
    #[default]
    Earliest,
    /// Hold the partition until an operator acts.
    Fail,
}

impl KafkaConfig {
    /// The passthrough options with secrets read from their files and variables.
    pub fn client_options(&self) -> anyhow::Result<ClientOptions> {
        Ok(ClientOptions::resolve(&self.options)?)
    }
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            bootstrap_servers: String::new(),
            options: BTreeMap::new(),
            topics: Vec::new(),
            topic_pattern: None,
            group_id: "zonal-transporter".into(),
            follower_fetching: false,
            topology_refresh_secs: 30,
            start_from: "earliest".into(),
            on_offset_out_of_range: OutOfRange::Earliest,
        }
    }
}

/// etcd settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct EtcdConfig {
    /// Client endpoints, e.g. `http://10.0.0.1:2379`.
    pub endpoints: Vec<String>,
    /// Fleet name; every key lives under `/<cluster>/`.
    pub cluster: String,
    /// User name, when etcd authentication is on.
    pub username: Option<String>,
    /// Password for `username` (prefer `password-file`, or `ZONAL_TRANSPORTER__ETCD__PASSWORD`).
    pub password: Option<String>,
    /// File holding the password for `username` (a Kubernetes Secret, a systemd credential).
    pub password_file: Option<PathBuf>,
    /// TLS to etcd (endpoints then use `https://`).
    pub tls: Option<EtcdTls>,
    /// Lease TTL in seconds: how long a dead worker keeps its partitions fenced.
    pub lease_ttl_secs: i64,
}

impl Default for EtcdConfig {
    fn default() -> Self {
        EtcdConfig {
            endpoints: Vec::new(),
            cluster: "zonal".into(),
            username: None,
            password: None,
            password_file: None,
            tls: None,
            lease_ttl_secs: 10,
        }
    }
}

impl EtcdConfig {
    /// The password, from `password` or read from `password-file` (a trailing newline is not
    /// part of it).
    pub fn resolved_password(&self) -> anyhow::Result<Option<String>> {
        match (&self.password, &self.password_file) {
            (Some(p), _) => Ok(Some(p.clone())),
            (None, Some(f)) => {
                let text = std::fs::read_to_string(f)
                    .with_context(|| format!("etcd.password-file: reading {}", f.display()))?;
                Ok(Some(text.trim_end_matches(['\n', '\r']).to_owned()))
            }
            (None, None) => Ok(None),
        }
    }
}

/// TLS settings for etcd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct EtcdTls {
    /// PEM file of the CA that signed etcd's server certificate.
    pub ca_file: PathBuf,
    /// PEM client certificate, when etcd requires client certificates.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert-file`.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Server name to verify, when it differs from the endpoint's host.
    #[serde(default)]
    pub domain: Option<String>,
}

/// This worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct WorkerConfig {
    /// Worker id; defaults to the host name. Must be stable across restarts for the grace
    /// period to give partitions back.
    pub id: Option<String>,
    /// Relative capacity (1.0 = a standard worker).
    pub capacity: f64,
    /// How long a departed worker's partitions wait for it, in seconds.
    pub grace_period_secs: u64,
    /// Directory for buffer files.
    pub buffer_dir: PathBuf,
    /// Objects compressed and uploaded at once; each holds a compressor and one upload part
    /// (8 MiB) in memory, whatever the object's size.
    pub max_concurrent_rolls: usize,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            id: None,
            capacity: 1.0,
            grace_period_secs: 30,
            buffer_dir: PathBuf::from("/var/lib/zonal-transporter"),
            max_concurrent_rolls: 8,
        }
    }
}

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

/// Object compression.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Compression {
    /// Zstandard.
    #[default]
    Zstd,
    /// gzip.
    Gzip,
    /// None.
    None,
}

/// S3 settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct S3Config {
    /// Bucket.
    pub bucket: String,
    /// Key prefix (`{prefix}` in the template).
    pub prefix: String,
    /// Region.
    pub region: Option<String>,
    /// Endpoint override for S3-compatible stores.
    pub endpoint: Option<String>,
    /// Path-style addressing (most S3-compatible stores need it).
    pub path_style: bool,
    /// Object key template: `{prefix} {topic} {partition} {first_offset} {first_offset:020}
    /// {date} {hour} {ext}` (`{last_offset}` is refused: a re-read roll could end elsewhere); date and hour come from the first record's timestamp
    /// (UTC), so a re-upload lands on the same key.
    pub key_template: String,
    /// Record format.
    pub format: Format,
    /// Compression.
    pub compression: Compression,
    /// Compression level (zstd 1-19, gzip 0-9).
    pub compression_level: i32,
    /// Objects above this many bytes are uploaded in parts.
    pub multipart_threshold_bytes: usize,
}

impl Default for S3Config {
    fn default() -> Self {
        S3Config {
            bucket: String::new(),
            prefix: "zonal".into(),
            region: None,
            endpoint: None,
            path_style: false,
            key_template: DEFAULT_KEY_TEMPLATE.into(),
            format: Format::Lines,
            compression: Compression::Zstd,
            compression_level: 3,
            multipart_threshold_bytes: 16 * 1024 * 1024,
        }
    }
}

/// When a buffer is rolled into an object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct RollConfig {
    /// Uncompressed bytes.
    pub max_bytes: u64,
    /// Age of the buffer's first record, in milliseconds, checked by a timer (an idle
    /// partition still uploads).
    pub max_age_ms: u64,
    /// Records.
    pub max_records: u64,
}

impl Default for RollConfig {
    fn default() -> Self {
        RollConfig { max_bytes: 64 * 1024 * 1024, max_age_ms: 60_000, max_records: 1_000_000 }
    }
}

/// HTTP settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Listen address (loopback by default).
    pub listen: SocketAddr,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig { listen: SocketAddr::from(([127, 0, 0, 1], 9465)) }
    }
}

impl TransporterConfig {
    /// Layers defaults, the file and the environment.
    pub fn figment(file: Option<&Path>) -> Figment {
        shell::config::layered::<TransporterConfig>(ENV_PREFIX, file)
    }

    /// Loads and validates; errors name the file and the field.
    pub fn load(file: Option<&Path>) -> anyhow::Result<TransporterConfig> {
        let config: TransporterConfig = shell::config::extract(ENV_PREFIX, file)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what serde cannot.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.kafka.bootstrap_servers.trim().is_empty() {
            bail!("kafka.bootstrap-servers: must be set");
        }
        if self.kafka.topics.is_empty() && self.kafka.topic_pattern.is_none() {
            bail!("kafka.topics: set topics or kafka.topic-pattern");
        }
        if let Some(p) = &self.kafka.topic_pattern {
            regex_lite_check(p).with_context(|| format!("kafka.topic-pattern: invalid regex {p:?}"))?;
        }
        if self.kafka.topics.iter().any(|t| t.is_empty() || t.contains('/')) {
            bail!("kafka.topics: names must be non-empty and contain no '/'");
        }
        if !matches!(self.kafka.start_from.as_str(), "earliest" | "latest") {
            bail!("kafka.start-from: must be \"earliest\" or \"latest\", got {:?}", self.kafka.start_from);
        }
        if self.etcd.endpoints.is_empty() {
            bail!("etcd.endpoints: at least one endpoint is required");
        }
        if self.etcd.cluster.is_empty() || self.etcd.cluster.contains('/') {
            bail!("etcd.cluster: must be non-empty without '/'");
        }
        if !(2..=3600).contains(&self.etcd.lease_ttl_secs) {
            bail!("etcd.lease-ttl-secs: must be between 2 and 3600, got {}", self.etcd.lease_ttl_secs);
        }
        if let Some(t) = &self.etcd.tls {
            if t.cert_file.is_some() != t.key_file.is_some() {
                bail!("etcd.tls: cert-file and key-file go together");
            }
            if let Some(e) = self.etcd.endpoints.iter().find(|e| e.starts_with("http://")) {
                bail!("etcd.endpoints: {e:?} is plain http while etcd.tls is set; use https://");
            }
        }
        if self.etcd.password.is_some() && self.etcd.password_file.is_some() {
            bail!("etcd.password and etcd.password-file: set one");
        }
        if (self.etcd.password.is_some() || self.etcd.password_file.is_some()) && self.etcd.username.is_none() {
            bail!("etcd.password: set etcd.username too");
        }
        self.etcd.resolved_password()?;
        let options = self.kafka.client_options()?;
        options.check_guards(GUARDS)?;
        options.validate()?;
        if self.worker.capacity.is_nan() || self.worker.capacity <= 0.0 {
            bail!("worker.capacity: must be positive, got {}", self.worker.capacity);
        }
        if self.worker.id.as_deref().is_some_and(|i| i.is_empty() || i.contains('/')) {
            bail!("worker.id: must be non-empty without '/'");
        }
        if self.s3.bucket.is_empty() {
            bail!("s3.bucket: must be set");
        }
        crate::naming::check_template(&self.s3.key_template).context("s3.key-template")?;
        if self.roll.max_bytes == 0 || self.roll.max_age_ms == 0 || self.roll.max_records == 0 {
            bail!("roll.max-bytes, roll.max-age-ms and roll.max-records: must be positive");
        }
        let levels = match self.s3.compression {
            Compression::Zstd => 1..=19,
            Compression::Gzip => 0..=9,
            Compression::None => i32::MIN..=i32::MAX,
        };
        if !levels.contains(&self.s3.compression_level) {
            bail!("s3.compression-level: {} is out of range for {:?}", self.s3.compression_level, self.s3.compression);
        }
        if self.s3.multipart_threshold_bytes < 5 * 1024 * 1024 {
            bail!("s3.multipart-threshold-bytes: must be at least 5 MiB (the S3 minimum part size)");
        }
        Ok(())
    }

    /// The effective configuration as TOML, with secrets shown as `***`.
    pub fn to_toml(&self) -> anyhow::Result<String> {
        Ok(shell::config::to_toml(self, &["etcd.password"])?)
    }

    /// This worker's id.
    pub fn worker_id(&self) -> String {
        self.worker.id.clone().unwrap_or_else(|| {
            hostname::get().map(|h| h.to_string_lossy().into_owned()).unwrap_or_else(|_| "worker".into())
        })
    }
}

fn regex_lite_check(p: &str) -> anyhow::Result<()> {
    // The topic pattern is a full regex; compiling it here gives the error at startup.
    crate::topics::compile_pattern(p).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[kafka]
bootstrap-servers = "k:9092"
topics = ["logs"]
[etcd]
endpoints = ["http://127.0.0.1:2379"]
[s3]
bucket = "b"
"#;

    fn write(dir: &tempfile::TempDir, text: &str) -> PathBuf {
        let p = dir.path().join("transporter.toml");
        std::fs::write(&p, text).expect("write");
        p
    }

    #[test]
    #[allow(clippy::result_large_err)]
    fn layering() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write(&dir, MINIMAL);
        figment::Jail::expect_with(|jail| {
            let c: TransporterConfig = TransporterConfig::figment(Some(&path)).extract()?;
            assert_eq!(c.roll.max_age_ms, 60_000);
            assert_eq!(c.s3.key_template, DEFAULT_KEY_TEMPLATE);
            jail.set_env("ZONAL_TRANSPORTER__S3__BUCKET", "from-env");
            jail.set_env("ZONAL_TRANSPORTER__ROLL__MAX_RECORDS", "7");
            let c: TransporterConfig = TransporterConfig::figment(Some(&path)).extract()?;
            assert_eq!((c.s3.bucket.as_str(), c.roll.max_records), ("from-env", 7));
            Ok(())
        });
    }

    /// Runs `f` under figment's Jail: tests that read the environment must not overlap with the
    /// layering test, which sets variables in the (shared) process environment.
    #[allow(clippy::result_large_err)] // figment's Jail fixes the closure's error type.
    fn isolated(f: impl FnOnce()) {
        figment::Jail::expect_with(|_| {
            f();
            Ok(())
        });
    }

    #[test]
    fn errors_name_the_field() {
        isolated(errors_name_the_field_inner);
    }

    fn errors_name_the_field_inner() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (text, field) in [
            (MINIMAL.replace("bucket = \"b\"", "bucket = \"b\"\ncompression = \"lzma\""), "compression"),
            (MINIMAL.replace("bucket = \"b\"", "bucket = \"\""), "s3.bucket"),
            (MINIMAL.replace("bucket = \"b\"", "bucket = \"b\"\nkey-template = \"{topic}/{nope}\""), "s3.key-template"),
            (MINIMAL.replace("[etcd]", "[etcd]\nlease-ttl-secs = 0"), "etcd.lease-ttl-secs"),
            (MINIMAL.replace("topics = [\"logs\"]", "topics = []"), "kafka.topics"),
            (MINIMAL.replace("[s3]", "[roll]\nmax-age = 3\n[s3]"), "max-age"),
            (MINIMAL.replace("[s3]", "[worker]\ncapacity = -1.0\n[s3]"), "worker.capacity"),
        ] {
            let err = TransporterConfig::load(Some(&write(&dir, &text))).expect_err(field);
            assert!(format!("{err:#}").contains(field), "{err:#} does not name {field}");
        }
    }

    #[test]
    fn password_is_hidden() {
        isolated(password_is_hidden_inner);
    }

    fn password_is_hidden_inner() {
        let dir = tempfile::tempdir().expect("tempdir");
        let text = MINIMAL.replace("[etcd]", "[etcd]\nusername = \"u\"\npassword = \"hunter2\"");
        let c = TransporterConfig::load(Some(&write(&dir, &text))).expect("valid");
        assert!(!c.to_toml().expect("toml").contains("hunter2"));
    }
}
