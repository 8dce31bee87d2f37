//! The Kafka side of a stream: producer settings, the in-flight byte budget, and delivery
//! reports that advance file checkpoints or send failed records back for another try.
//!
//! ```text
//!  stream thread ──budget.acquire──> ThreadedProducer.send(record, opaque = Sent { batch, charge })
//!                                         │ librdkafka (idempotent, acks=all)
//!  delivery callback (producer thread) <──┘
//!     ok    ──> budget.release(exactly its charge), BatchAck done ──> FileTrack.complete ──> checkpoint offset moves
//!     error ──> Retry queue ──> stream thread re-sends (partition chosen afresh)
//! ```

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use az_core::kafka_options::{AuthFailure, ClientOptions};
use az_core::{BrokerTraffic, TopologyWatcher};
use prometheus_client::metrics::counter::Counter;
use rdkafka::ClientConfig;
use rdkafka::ClientContext;
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{DeliveryResult, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;

pub use crate::budget::{AckClock, Budget};
use crate::config::{AgentConfig, StreamConfig};
use crate::metrics::{ErrorKind, Metrics};
use crate::track::BatchAck;

/// librdkafka's own bookkeeping per message, charged to the budget on top of the payload so
/// that many small lines cannot exhaust memory while the byte count looks small.
pub const PER_MESSAGE_OVERHEAD: u64 = 160;

/// A record whose delivery failed and that the stream thread sends again.
#[derive(Debug)]
pub struct Retry {
    /// Payload.
    pub payload: Vec<u8>,
    /// Key, for keyed streams.
    pub key: Option<Vec<u8>>,
    /// Headers (pod metadata, the container's stream).
    pub headers: Option<rdkafka::message::OwnedHeaders>,
    /// The record's timestamp, when the log gave one.
    pub timestamp: Option<i64>,
    /// Its batch and charge.
    pub sent: Box<Sent>,
}

/// What travels with one record through librdkafka: its batch, and what it charged the
/// in-flight budget, so that its delivery gives back exactly that (a charge recomputed from
/// the delivered record would differ from it when the payload was cut, and leak).
#[derive(Debug)]
pub struct Sent {
    /// Its batch.
    pub ack: Arc<BatchAck>,
    /// Bytes charged to the budget.
    pub charge: u64,
}

/// Producer context of a stream.
pub struct AgentContext {
    /// Bytes per broker from librdkafka statistics.
    pub traffic: BrokerTraffic,
    stream: String,
    metrics: Arc<Metrics>,
    budget: Arc<Budget>,
    retries: Mutex<Sender<Retry>>,
    /// Records in the retry channel not yet taken by the stream thread: while there are any,
    /// the thread must not wait for budget that only their re-sending can free.
    pub retries_waiting: Arc<AtomicUsize>,
    /// When a record of this stream was last acknowledged (or the producer created).
    pub last_ack: AckClock,
    /// The last refusal that needs an operator, until a record is accepted again.
    pub last_error: Mutex<Option<String>>,
    /// Whether `last_error` is set: read once per acknowledged record instead of the lock.
    erroring: AtomicBool,
    /// The stream's `acked_lines` counter, looked up once rather than per record.
    acked: Counter,
    /// Set once the topology watcher exists, so leadership errors can trigger a refresh.
    pub topology: OnceLock<TopologyWatcher>,
    /// Where a refused login is reported (shared by every stream).
    auth: Arc<AuthFailure>,
    /// Woken when an error may have been fatal.
    pub fatal_check: Arc<tokio::sync::Notify>,
}

impl ClientContext for AgentContext {
    // MSK IAM tokens (`sasl.mechanism = "AWS_MSK_IAM"`); without it librdkafka never asks.
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn generate_oauth_token(
        &self,
        config: Option<&str>,
    ) -> Result<rdkafka::client::OAuthToken, Box<dyn std::error::Error>> {
        az_core::msk_iam::generate(config)
    }

    fn stats_raw(&self, statistics: &[u8]) {
        if let Err(e) = self.traffic.ingest(statistics) {
            tracing::warn!(stream = %self.stream, error = %e, "ignoring librdkafka statistics");
        }
        // librdkafka follows a leader move on its own (NOT_LEADER, then new metadata); its
        // statistics show the new leader, so routing follows within one statistics interval
        // instead of the periodic topology refresh.
        if let Some(topology) = self.topology.get()
            && leaders_moved(statistics, &topology.current())
        {
            topology.refresh_now();
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if reason.contains("Fatal error") || matches!(error, KafkaError::Global(_)) {
            // Whether this error made the client unusable is only known by asking it; the
            // stream's fatal-error watch does (see `app`), this makes it look now.
            self.fatal_check.notify_one();
        }
        if self.auth.observe(&error, reason) {
            tracing::error!(stream = %self.stream, error = %error, reason, "Kafka refused the login");
        } else if self.auth.observe_fatal(&error, reason) {
            tracing::error!(stream = %self.stream, error = %error, reason, "fatal producer error; stopping");
        } else {
            tracing::warn!(stream = %self.stream, error = %error, reason, "kafka client error");
        }
    }
}

/// Whether librdkafka's statistics name a partition leader other than the topology's.
fn leaders_moved(statistics: &[u8], topology: &az_core::Topology) -> bool {
    #[derive(serde::Deserialize)]
    struct Stats {
        #[serde(default)]
        topics: std::collections::BTreeMap<String, TopicStats>,
    }
    #[derive(serde::Deserialize)]
    struct TopicStats {
        #[serde(default)]
        partitions: std::collections::BTreeMap<String, PartitionStats>,
    }
    #[derive(serde::Deserialize)]
    struct PartitionStats {
        #[serde(default = "no_leader")]
        leader: i32,
    }
    fn no_leader() -> i32 {
        -1
    }
    let Ok(stats) = serde_json::from_slice::<Stats>(statistics) else { return false };
    stats.topics.iter().any(|(topic, t)| {
        let Some(known) = topology.partitions(topic) else { return false };
        t.partitions.iter().any(|(p, ps)| {
            let Ok(p) = p.parse::<i32>() else { return false };
            ps.leader >= 0 && known.iter().any(|k| k.id == p && k.leader.is_some_and(|l| l != ps.leader))
        })
    })
}

/// Errors an operator has to fix (an ACL, a topic setting): the records wait and are retried, the
/// stream shows red in `/readyz`, and nothing is dropped.
fn needs_operator(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::ClusterAuthorizationFailed
            | RDKafkaErrorCode::MessageSizeTooLarge
            | RDKafkaErrorCode::InvalidMessageSize
            | RDKafkaErrorCode::InvalidMessage
            | RDKafkaErrorCode::InvalidRecord
            | RDKafkaErrorCode::Authentication
    )
}

/// Errors that mean the partition's leader moved or is unknown.
pub fn leadership_moved(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::NotLeaderForPartition
            | RDKafkaErrorCode::LeaderNotAvailable
            | RDKafkaErrorCode::UnknownTopicOrPartition
            | RDKafkaErrorCode::UnknownPartition
            | RDKafkaErrorCode::FencedLeaderEpoch
            | RDKafkaErrorCode::NotEnoughReplicas
            | RDKafkaErrorCode::MessageTimedOut
    )
}

impl ProducerContext for AgentContext {
    type DeliveryOpaque = Box<Sent>;

    fn delivery(&self, result: &DeliveryResult<'_>, sent: Box<Sent>) {
        match result {
            Ok(_) => {
                // Once per record, on librdkafka's delivery thread: atomics only, unless the
                // stream is recovering from a refusal.
                if self.erroring.load(Ordering::Relaxed) && self.erroring.swap(false, Ordering::AcqRel) {
                    self.last_error.lock().unwrap_or_else(PoisonError::into_inner).take();
                    tracing::info!(stream = %self.stream, "Kafka accepts this stream's records again");
                }
                self.budget.release(sent.charge);
                self.last_ack.tick();
                self.acked.inc();
                sent.ack.settle_one();
            }
            Err((err, msg)) => {
                let code = err.rdkafka_error_code().unwrap_or(RDKafkaErrorCode::Fail);
                if leadership_moved(code)
                    && let Some(t) = self.topology.get()
                {
                    t.refresh_now();
                }
                if needs_operator(code) {
                    self.metrics.error(&self.stream, ErrorKind::Refused);
                    let mut last = self.last_error.lock().unwrap_or_else(PoisonError::into_inner);
                    if last.is_none() {
                        tracing::error!(stream = %self.stream, error = %err,
                            "Kafka refuses this stream's records; they are kept and retried until it accepts them");
                    }
                    *last = Some(err.to_string());
                    self.erroring.store(true, Ordering::Release);
                }
                self.metrics.error(&self.stream, ErrorKind::Delivery);
                tracing::debug!(stream = %self.stream, error = %err, "delivery failed, will retry");
                let retry = Retry {
                    payload: msg.payload().unwrap_or_default().to_vec(),
                    key: msg.key().map(<[u8]>::to_vec),
                    headers: msg.headers().map(rdkafka::message::BorrowedHeaders::detach),
                    timestamp: msg.timestamp().to_millis(),
                    sent,
                };
                let tx = self.retries.lock().unwrap_or_else(PoisonError::into_inner);
                self.retries_waiting.fetch_add(1, Ordering::AcqRel);
                if tx.send(retry).is_err() {
                    // The stream has stopped; the record stays unacknowledged, so the
                    // checkpoint stays before it and it is read again after restart.
                    tracing::debug!(stream = %self.stream, "retry after stop discarded");
                }
            }
        }
    }
}

/// The librdkafka configuration of a stream's producer: idempotent, acks=all, the stream's linger
/// and compression, librdkafka queues sized to the budget, then the passthrough options on top
/// (guarded ones were refused when the configuration was loaded).
pub fn producer_config(
    config: &AgentConfig,
    stream: &StreamConfig,
    options: &ClientOptions,
    topic_limit: Option<usize>,
) -> ClientConfig {
    // Statistics carry the bytes per broker (cross-zone accounting) and the leaders librdkafka
    // currently uses (routing follows a leader move within this interval).
    let mut cc = shell::kafka::base(
        &config.kafka.bootstrap_servers,
        &format!("zonal-agent-{}", stream.name),
        Duration::from_millis(500),
    );
    // librdkafka answers QUEUE_FULL for as long as one record does not fit its queue, so the
    // queue holds twice the stream's budget and at least two of its largest records (key and
    // value within `max-message-bytes`, plus headers and librdkafka's bookkeeping).
    let largest = stream.max_message_bytes as u64 + 64 * 1024;
    let queue_kb = (config.in_flight_bytes_of(stream).max(largest) * 2 / 1024).max(16 * 1024);
    cc.set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", stream.linger_ms.to_string())
        .set("compression.type", stream.compression.as_librdkafka())
        .set("queue.buffering.max.kbytes", queue_kb.to_string())
        .set("queue.buffering.max.messages", "2000000");
    for (k, v) in crate::limits::producer_sizes(stream, topic_limit) {
        cc.set(k, v);
    }
    options.apply(&mut cc);
    cc
}

/// Creates the producer of a stream (see [`producer_config`]).
pub fn producer(
    config: &AgentConfig,
    stream: &StreamConfig,
    metrics: Arc<Metrics>,
    budget: Arc<Budget>,
    retries: Sender<Retry>,
    auth: Arc<AuthFailure>,
    topic_limit: Option<usize>,
) -> anyhow::Result<ThreadedProducer<AgentContext>> {
    use anyhow::Context;
    let options = config.kafka.client_options()?;
    let cc = producer_config(config, stream, &options, topic_limit);
    let acked = metrics.acked_lines.get_or_create(&Metrics::stream(&stream.name)).clone();
    let context = AgentContext {
        traffic: BrokerTraffic::new(),
        stream: stream.name.clone(),
        budget,
        retries: Mutex::new(retries),
        retries_waiting: Arc::new(AtomicUsize::new(0)),
        last_error: Mutex::new(None),
        erroring: AtomicBool::new(false),
        acked,
        last_ack: AckClock::default(),
        topology: OnceLock::new(),
        auth,
        fatal_check: Arc::new(tokio::sync::Notify::new()),
        metrics,
    };
    let producer: ThreadedProducer<AgentContext> = cc
        .create_with_context(context)
        .map_err(|e| anyhow::anyhow!(options.redactor().redact(&e.to_string())))
        .with_context(|| format!("creating the Kafka producer of stream {}", stream.name))?;
    az_core::msk_iam::prime(rdkafka::producer::Producer::client(&producer), &options);
    Ok(producer)
}
