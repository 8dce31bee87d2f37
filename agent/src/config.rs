//! The agent's configuration: one struct, layered by figment from defaults, a TOML file and
//! `ZONAL_AGENT__`-prefixed environment variables (`__` separates levels), in that order.
//!
//! ```text
//!  AgentConfig::default() ─┐
//!  agent.toml ─────────────┼─ figment ─> AgentConfig ─validate()─> ready to run (or an error naming the field)
//!  ZONAL_AGENT__KAFKA__BOOTSTRAP_SERVERS=... ┘
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, bail};
use az_core::kafka_options::{ClientOptions, Guard};
use az_core::zone::ZoneSettings;
use serde::{Deserialize, Serialize};

/// Environment prefix of overrides: `ZONAL_AGENT__KAFKA__BOOTSTRAP_SERVERS`.
pub const ENV_PREFIX: &str = "ZONAL_AGENT__";

/// librdkafka properties the agent sets itself because at-least-once delivery depends on them.
pub const GUARDS: &[Guard] = &[
    Guard {
        key: "acks",
        allowed: &["all", "-1"],
        reason: "a checkpoint may only pass lines every in-sync replica has (at-least-once)",
    },
    Guard {
        key: "request.required.acks",
        allowed: &["all", "-1"],
        reason: "a checkpoint may only pass lines every in-sync replica has (at-least-once)",
    },
    Guard {
        key: "enable.idempotence",
        allowed: &["true"],
        reason: "retries without idempotence reorder and duplicate lines within a partition",
    },
    Guard {
        key: "delivery.report.only.error",
        allowed: &["false"],
        reason: "checkpoints advance only on delivery reports of successful sends",
    },
    Guard { key: "bootstrap.servers", allowed: &[], reason: "set kafka.bootstrap-servers instead" },
];

/// The whole agent configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct AgentConfig {
    /// Kafka connection settings.
    pub kafka: KafkaConfig,
    /// How the agent learns its zone and matches it to broker racks.
    pub zone: ZoneSettings,
    /// Directory holding one checkpoint file per tailed file.
    pub checkpoint_dir: PathBuf,
    /// HTTP server for metrics, health and status.
    pub http: HttpConfig,
    /// How log lines are written.
    pub log: shell::config::LogConfig,
    /// Upper bound on bytes sent to Kafka and not yet acknowledged, over all streams; reading
    /// stops while it is reached. 8 MiB by default: 16 MiB was no faster in the benchmark and
    /// held 10-13 MB more (librdkafka keeps a header of about 150 bytes per record besides).
    /// Each stream holds at most its share of it (see `streams[].in-flight-share`).
    pub max_in_flight_bytes: u64,
    /// Upper bound on lines read from files and not yet handed to Kafka, over all streams (each
    /// stream its share, as for `max-in-flight-bytes`): while Kafka is slow or away, reading
    /// stops there, however many files have lines to read. 16 MiB by default.
    pub max_unsent_bytes: u64,
    /// A file idle at its end for this long, in seconds, is closed, and reopened by its identity
    /// when a scan sees it change: a node's thousands of quiet files hold no descriptor. A file
    /// written after it was closed and then deleted before the next scan takes those lines with
    /// it (as with Filebeat's `close_inactive`).
    pub close_idle_secs: u64,
    /// The most files open at once, over all streams (each its `in-flight-share`); at the bound
    /// the file idle the longest is closed, and new files wait for a later scan. Also held
    /// under the process's descriptor limit (raised to its hard limit at start).
    pub max_open_files: u64,
    /// How often globs are re-expanded and idle files polled for growth, in milliseconds.
    pub poll_interval_ms: u64,
    /// How often acknowledged offsets are written to checkpoint files, in milliseconds.
    pub checkpoint_interval_ms: u64,
    /// How long a file that left the globs (renamed by rotation, deleted) is kept open after its
    /// last growth, in milliseconds: writers that keep their descriptor (until a reopen signal)
    /// still append to it, and a partial last line waits this long for its newline.
    pub rotate_wait_ms: u64,
    /// On SIGTERM, how long in all the agent may take to flush in-flight lines (every stream at
    /// once) and write its checkpoints, in seconds; below the 60 s systemd and Kubernetes give.
    pub shutdown_timeout_secs: u64,
    /// `/healthz` fails when a stream's thread made no progress (no scan, read, retry or wait
    /// for budget) for this long, in seconds: a stuck agent is restarted from its checkpoints.
    /// A Kafka outage does not fail it (it shows in `/readyz`): a restart cannot fix the
    /// destination and would close the descriptors that keep rotated files readable.
    pub stall_timeout_secs: u64,
    /// `/readyz` fails when a stream has lines waiting and none was acknowledged for this long,
    /// in seconds (Kafka away or refusing): the lines are kept and retried meanwhile.
    pub unacknowledged_not_ready_secs: u64,
    /// The log streams to ship.
    pub streams: Vec<StreamConfig>,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            kafka: KafkaConfig::default(),
            zone: ZoneSettings::default(),
            checkpoint_dir: PathBuf::from("/var/lib/zonal-agent"),
            http: HttpConfig::default(),
            log: shell::config::LogConfig::default(),
            max_in_flight_bytes: 8 * 1024 * 1024,
            max_unsent_bytes: 16 * 1024 * 1024,
            close_idle_secs: 300,
            max_open_files: 10_000,
            poll_interval_ms: 250,
            checkpoint_interval_ms: 1000,
            rotate_wait_ms: 30_000,
            shutdown_timeout_secs: 45,
            stall_timeout_secs: 300,
            unacknowledged_not_ready_secs: 30,
            streams: Vec::new(),
        }
    }
}

/// Kafka connection settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// `bootstrap.servers`: comma-separated host:port list.
    pub bootstrap_servers: String,
    /// librdkafka properties passed through unchanged (TLS, SASL, tuning), e.g.
    /// `"security.protocol" = "SASL_SSL"`. They override the agent's own defaults, except those
    /// its guarantees depend on (`acks`, `enable.idempotence`, `delivery.report.only.error`).
    /// A key ending in `-file` (`"sasl.password-file"`) reads the property from a file, one
    /// ending in `-env` from an environment variable; secrets are shown as `***`.
    pub options: BTreeMap<String, String>,
    /// Seconds between topology refreshes (leaders and racks); errors that mean leadership
    /// moved trigger an immediate refresh.
    pub topology_refresh_secs: u64,
    /// Timeout of metadata and admin requests, in milliseconds.
    pub request_timeout_ms: u64,
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
            topology_refresh_secs: 30,
            request_timeout_ms: 5000,
        }
    }
}

/// HTTP settings (`http.listen`, on loopback port 9464 by default).
pub type HttpConfig = shell::http::HttpConfig<AgentPort>;

/// The agent's default HTTP port.
#[derive(Debug)]
pub struct AgentPort;

impl shell::http::DefaultPort for AgentPort {
    const PORT: u16 = 9464;
}

pub use stream::{Compression, KeyConfig, Partitioning, StartAt, StreamConfig};

mod stream;

impl AgentConfig {
    /// The bytes in flight `stream` may hold: its share of `max-in-flight-bytes` (at least 1).
    pub fn in_flight_bytes_of(&self, stream: &StreamConfig) -> u64 {
        self.share_of(self.max_in_flight_bytes, stream)
    }

    /// The files `stream` may keep open: its share of `max-open-files`, within `nofile` (the
    /// process's descriptor limit) less room for sockets, checkpoints and listings.
    pub fn open_files_of(&self, stream: &StreamConfig, nofile: u64) -> u64 {
        let room = nofile.saturating_sub(256).max(self.streams.len() as u64 * 8);
        self.share_of(self.max_open_files.min(room), stream)
    }

    /// The bytes read and not yet sent `stream` may hold: its share of `max-unsent-bytes`.
    pub fn unsent_bytes_of(&self, stream: &StreamConfig) -> u64 {
        self.share_of(self.max_unsent_bytes, stream)
    }

    fn share_of(&self, whole: u64, stream: &StreamConfig) -> u64 {
        let total: u64 = self.streams.iter().map(|s| u64::from(s.in_flight_share)).sum::<u64>().max(1);
        let part = u128::from(whole) * u128::from(stream.in_flight_share) / u128::from(total);
        u64::try_from(part).unwrap_or(u64::MAX).max(1)
    }
}

impl shell::ProgramConfig for AgentConfig {
    fn log(&self) -> &shell::config::LogConfig {
        &self.log
    }

    const ENV_PREFIX: &'static str = ENV_PREFIX;

    /// Checks what serde cannot: required values, patterns, ranges.
    fn validate(&self) -> anyhow::Result<()> {
        if self.kafka.bootstrap_servers.trim().is_empty() {
            bail!("kafka.bootstrap-servers: must be set");
        }
        if self.streams.is_empty() {
            bail!("streams: at least one stream is required");
        }
        let options = self.kafka.client_options()?;
        options.check_guards(GUARDS)?;
        options.validate()?;
        if self.max_in_flight_bytes < 64 * 1024 {
            bail!("max-in-flight-bytes: must be at least 65536, got {}", self.max_in_flight_bytes);
        }
        if self.max_open_files == 0 || self.close_idle_secs == 0 {
            bail!("max-open-files and close-idle-secs: must be positive");
        }
        if self.max_unsent_bytes < 1024 * 1024 {
            bail!("max-unsent-bytes: must be at least 1048576, got {}", self.max_unsent_bytes);
        }
        if self.poll_interval_ms == 0 || self.checkpoint_interval_ms == 0 {
            bail!("poll-interval-ms and checkpoint-interval-ms: must be positive");
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, s) in self.streams.iter().enumerate() {
            let at = format!("streams[{i}]");
            if s.name.is_empty() || !s.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                bail!("{at}.name: {:?} must be non-empty letters, digits, '-' or '_'", s.name);
            }
            if !names.insert(&s.name) {
                bail!("{at}.name: {:?} is used by another stream", s.name);
            }
            if s.topic.trim().is_empty() {
                bail!("{at}.topic: must be set");
            }
            if s.paths.is_empty() {
                bail!("{at}.paths: at least one glob is required");
            }
            for (j, p) in s.paths.iter().chain(&s.exclude).enumerate() {
                glob::Pattern::new(p).with_context(|| format!("{at}.paths/exclude[{j}]: invalid glob {p:?}"))?;
            }
            if let Some(m) = &s.multiline_start {
                regex::bytes::Regex::new(m).with_context(|| format!("{at}.multiline-start: invalid regex {m:?}"))?;
            }
            match (&s.partitioning, &s.key) {
                (Partitioning::Keyed, None) => bail!("{at}.key: required when partitioning = \"keyed\""),
                (_, Some(KeyConfig::Regex(r))) => {
                    let re =
                        regex::bytes::Regex::new(r).with_context(|| format!("{at}.key.regex: invalid regex {r:?}"))?;
                    if re.captures_len() < 2 {
                        bail!("{at}.key.regex: {r:?} has no capture group");
                    }
                }
                (_, Some(KeyConfig::JsonField(f))) if f.is_empty() => bail!("{at}.key.json-field: must be non-empty"),
                _ => {}
            }
            if !(1..=100_000_000).contains(&s.max_message_bytes) {
                bail!("{at}.max-message-bytes: must be between 1 and 100000000, got {}", s.max_message_bytes);
            }
            if s.in_flight_share == 0 {
                bail!("{at}.in-flight-share: must be positive");
            }
            if s.batch_lines == 0 || s.batch_bytes == 0 {
                bail!("{at}.batch-lines and batch-bytes: must be positive");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
