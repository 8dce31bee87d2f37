//! The `[kafka]` section: where records come from, which topics, where a partition starts, and
//! the librdkafka properties the transporter keeps for itself because exactly-once depends on
//! them.

use std::collections::BTreeMap;

use anyhow::{Context, bail};
use az_core::kafka_options::{ClientOptions, Guard};
use serde::{Deserialize, Serialize};

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
    Guard {
        key: "isolation.level",
        allowed: &["read_committed"],
        reason: "read_uncommitted would write records of aborted transactions to S3",
    },
    Guard { key: "group.id", allowed: &[], reason: "set kafka.group-id instead" },
    Guard { key: "bootstrap.servers", allowed: &[], reason: "set kafka.bootstrap-servers instead" },
];

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
    pub start_from: StartFrom,
    /// When the committed offset is no longer in Kafka (retention passed it): `earliest` reads
    /// what is still kept, `fail` holds the partition until an operator sets its offset. Either
    /// way it is counted (`errors{kind="offset-out-of-range"}`).
    pub on_offset_out_of_range: OutOfRange,
}

/// Where a partition that has no committed offset yet starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StartFrom {
    /// The earliest offset Kafka still keeps: everything retained is moved.
    #[default]
    Earliest,
    /// The end of the partition: only records produced from now on are moved.
    Latest,
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
            start_from: StartFrom::Earliest,
            on_offset_out_of_range: OutOfRange::Earliest,
        }
    }
}

impl KafkaConfig {
    /// The passthrough options with secrets read from their files and variables.
    pub fn client_options(&self) -> anyhow::Result<ClientOptions> {
        Ok(ClientOptions::resolve(&self.options)?)
    }

    /// Checks the servers and the topics (the options are checked by [`Self::validate_options`]).
    pub(super) fn validate(&self) -> anyhow::Result<()> {
        if self.bootstrap_servers.trim().is_empty() {
            bail!("kafka.bootstrap-servers: must be set");
        }
        if self.topics.is_empty() && self.topic_pattern.is_none() {
            bail!("kafka.topics: set topics or kafka.topic-pattern");
        }
        if let Some(p) = &self.topic_pattern {
            // The topic pattern is a full regex; compiling it here gives the error at startup.
            crate::topics::compile_pattern(p).with_context(|| format!("kafka.topic-pattern: invalid regex {p:?}"))?;
        }
        if self.topics.iter().any(|t| t.is_empty() || t.contains('/')) {
            bail!("kafka.topics: names must be non-empty and contain no '/'");
        }
        Ok(())
    }

    /// Checks the passthrough options: none of the guarded ones, and each one as librdkafka
    /// itself sees it.
    pub(super) fn validate_options(&self) -> anyhow::Result<()> {
        let options = self.client_options()?;
        options.check_guards(GUARDS)?;
        options.validate()?;
        Ok(())
    }
}
