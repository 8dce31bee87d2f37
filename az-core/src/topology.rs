//! Rack-aware topology of a Kafka cluster: broker id -> rack, and per partition the leader,
//! replicas and ISR; fetched through librdkafka's admin API and kept fresh in the background.
//!
//! ```text
//!  Kafka client (the caller's, so TLS/SASL apply) ──fetch()──> Topology snapshot (Arc)
//!       ▲                                                         │
//!  TopologyWatcher: every `interval`, or at once on refresh_now() ─┴─> watch channel
//!                                                 many readers: borrow() is a cheap clone of an Arc
//! ```

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use rdkafka::ClientContext;
use rdkafka::client::Client;
use serde::Serialize;

use crate::admin;

mod watcher;

pub use watcher::{FetchStatus, KafkaClient, TopologyWatcher, WatchOptions};

/// A broker and where it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Broker {
    /// Broker id.
    pub id: i32,
    /// Advertised host.
    pub host: String,
    /// Advertised port.
    pub port: u16,
    /// `broker.rack`, when the broker has one.
    pub rack: Option<String>,
}

/// One partition's placement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionInfo {
    /// Partition id.
    pub id: i32,
    /// Leader broker id; `None` while the partition has no leader.
    pub leader: Option<i32>,
    /// Replica broker ids, preferred leader first.
    pub replicas: Vec<i32>,
    /// In-sync replica broker ids.
    pub isr: Vec<i32>,
}

/// One topic: its partitions, or why it could not be described.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TopicInfo {
    /// The topic exists; partitions sorted by id.
    Present(Vec<PartitionInfo>),
    /// The topic does not exist or could not be described.
    Missing(String),
}

/// A consistent snapshot of the cluster as seen at `fetched_at`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Topology {
    /// Brokers by id.
    pub brokers: BTreeMap<i32, Broker>,
    /// Topics by name.
    pub topics: BTreeMap<String, TopicInfo>,
    /// When it was fetched; `None` for the empty topology before the first fetch.
    pub fetched_at: Option<SystemTime>,
    /// Increases with every successful fetch.
    pub generation: u64,
}

impl Topology {
    /// The rack of a broker, if the broker is known and has one.
    pub fn rack_of(&self, broker: i32) -> Option<&str> {
        self.brokers.get(&broker).and_then(|b| b.rack.as_deref())
    }

    /// The partitions of a topic, or `None` when the topic is missing or unknown.
    pub fn partitions(&self, topic: &str) -> Option<&[PartitionInfo]> {
        match self.topics.get(topic) {
            Some(TopicInfo::Present(p)) => Some(p),
            _ => None,
        }
    }

    /// One partition.
    pub fn partition(&self, topic: &str, partition: i32) -> Option<&PartitionInfo> {
        self.partitions(topic)?.iter().find(|p| p.id == partition)
    }

    /// The rack of a partition's leader.
    pub fn leader_rack(&self, topic: &str, partition: i32) -> Option<&str> {
        self.partition(topic, partition)?.leader.and_then(|l| self.rack_of(l))
    }

    /// Whether any broker has a rack.
    pub fn has_racks(&self) -> bool {
        self.brokers.values().any(|b| b.rack.is_some())
    }

    /// Whether the topology has been fetched at least once.
    pub fn is_fetched(&self) -> bool {
        self.fetched_at.is_some()
    }
}

/// Why a topology fetch failed.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    /// The cluster's broker list could not be read.
    #[error("listing the cluster's brokers failed: {source}")]
    Metadata {
        /// The client error.
        source: rdkafka::error::KafkaError,
    },
    /// The DescribeCluster admin request failed against every broker tried.
    #[error("DescribeCluster failed (brokers tried: {tried:?}): {reason}")]
    DescribeCluster {
        /// Broker ids the request was aimed at.
        tried: Vec<i32>,
        /// The last failure.
        reason: String,
    },
    /// The DescribeTopics admin request failed against every broker tried.
    #[error("DescribeTopics {topics:?} failed (brokers tried: {tried:?}): {reason}")]
    DescribeTopics {
        /// The topics asked for.
        topics: Vec<String>,
        /// Broker ids the request was aimed at.
        tried: Vec<i32>,
        /// The last failure.
        reason: String,
    },
    /// The blocking fetch task died.
    #[error("topology fetch task failed: {0}")]
    Task(String),
}

/// The ids of `topics` (base64, as Kafka's tools print them), by name; a topic that does not
/// exist, or whose broker sends no id (before Kafka 2.8), is absent. Blocking. A topic deleted
/// and created again under its name has another id: offsets kept by name must not carry over.
pub fn topic_ids<C: ClientContext>(
    client: &Client<C>,
    topics: &[String],
    timeout: Duration,
) -> Result<BTreeMap<String, String>, TopologyError> {
    // Aimed at brokers the client knows, as `fetch` does: the reported controller may be
    // unreachable.
    let metadata = client
        .fetch_metadata(topics.first().map(String::as_str), timeout)
        .map_err(|source| TopologyError::Metadata { source })?;
    let mut tried = Vec::new();
    let mut last = "metadata listed no brokers".to_owned();
    for b in metadata.brokers().iter().map(|b| b.id()).take(3) {
        tried.push(b);
        match admin::describe_topics(client, topics, Some(b), timeout) {
            Ok(raw) => {
                return Ok(raw
                    .into_iter()
                    .filter(|t| t.error.is_none())
                    .filter_map(|t| Some((t.name, t.id?)))
                    .collect());
            }
            Err(e) => last = e.to_string(),
        }
    }
    Err(TopologyError::DescribeTopics { topics: topics.to_vec(), tried, reason: last })
}

/// Fetches a topology snapshot for `topics`. Blocking: run it on a blocking thread.
///
/// Admin requests are aimed at brokers the client already knows from metadata, trying up to
/// three in turn, because a cluster's reported controller may be unreachable (or, on the mock
/// cluster, nonexistent).
pub fn fetch<C: ClientContext>(
    client: &Client<C>,
    topics: &[String],
    timeout: Duration,
    generation: u64,
) -> Result<Topology, TopologyError> {
    let metadata = client
        .fetch_metadata(topics.first().map(String::as_str), timeout)
        .map_err(|source| TopologyError::Metadata { source })?;
    let mut candidates: Vec<i32> = metadata.brokers().iter().map(|b| b.id()).collect();
    candidates.sort_unstable();
    // Spread the load of periodic refreshes across brokers instead of always asking the lowest id.
    if !candidates.is_empty() {
        let shift = (generation as usize) % candidates.len();
        candidates.rotate_left(shift);
    }
    candidates.truncate(3);
    if candidates.is_empty() {
        return Err(TopologyError::DescribeCluster { tried: vec![], reason: "metadata listed no brokers".into() });
    }

    let mut tried = Vec::new();
    let mut last = String::new();
    let mut brokers = None;
    for &b in &candidates {
        tried.push(b);
        match admin::describe_cluster(client, Some(b), timeout) {
            Ok(list) => {
                brokers = Some((b, list));
                break;
            }
            Err(e) => last = e.to_string(),
        }
    }
    let Some((used, brokers)) = brokers else {
        return Err(TopologyError::DescribeCluster { tried, reason: last });
    };

    let mut raw_topics = None;
    let mut tried_topics = Vec::new();
    for &b in std::iter::once(&used).chain(candidates.iter().filter(|&&c| c != used)) {
        tried_topics.push(b);
        match admin::describe_topics(client, topics, Some(b), timeout) {
            Ok(t) => {
                raw_topics = Some(t);
                break;
            }
            Err(e) => last = e.to_string(),
        }
    }
    let Some(raw_topics) = raw_topics else {
        return Err(TopologyError::DescribeTopics { topics: topics.to_vec(), tried: tried_topics, reason: last });
    };

    let brokers =
        brokers.into_iter().map(|b| (b.id, Broker { id: b.id, host: b.host, port: b.port, rack: b.rack })).collect();
    let mut described: BTreeMap<String, TopicInfo> = raw_topics
        .into_iter()
        .map(|t| {
            let info = match t.error {
                Some(e) => TopicInfo::Missing(e),
                None if t.partitions.is_empty() => TopicInfo::Missing("topic has no partitions".into()),
                None => {
                    let mut parts: Vec<PartitionInfo> = t
                        .partitions
                        .into_iter()
                        .map(|p| PartitionInfo { id: p.id, leader: p.leader, replicas: p.replicas, isr: p.isr })
                        .collect();
                    parts.sort_by_key(|p| p.id);
                    TopicInfo::Present(parts)
                }
            };
            (t.name, info)
        })
        .collect();
    for t in topics {
        described.entry(t.clone()).or_insert_with(|| TopicInfo::Missing("not in DescribeTopics answer".into()));
    }
    Ok(Topology { brokers, topics: described, fetched_at: Some(SystemTime::now()), generation })
}
