//! One stream on its own thread: the tailer reads its files and hands groups of lines to the
//! Kafka sender, which charges the in-flight budget, chooses partitions and sends; failed
//! records come back through the retry queue and are sent again.
//!
//! ```text
//!  StreamRunner::run loop
//!    ├─ KafkaSender::process_retries: Retry queue (failed deliveries) ──> sent again, partition afresh
//!    ├─ Tailer::scan (every poll): globs, renames, copytruncate, files rotated while down
//!    └─ Tailer::read_all ──groups──> KafkaSender::send ──budget──> Partitioner ──> producer.send
//!                                                                   (opaque: BatchAck)
//! ```

use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;

use crate::batch::Batch;
use crate::budget::Heartbeat;
use crate::checkpoint::Store;
use crate::config::StreamConfig;
use crate::kafka::{AgentContext, Budget, Retry, Sent};
use crate::metrics::{ErrorKind, Metrics};
use crate::partition::{Partitioner, Routing};
use crate::record::{GroupHeaders, Outgoing};
use crate::tail::{Dispatch, Tailer};
use crate::track::{BatchAck, FileTrack, Tracks};

const RETRY_BACKOFF: Duration = Duration::from_millis(200);
const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(5);

/// What the rest of the agent sees of a stream.
pub struct StreamShared {
    /// Its configuration.
    pub config: StreamConfig,
    /// Current routing.
    pub routing: RwLock<Routing>,
    /// Tailed files, for the checkpointer and `/status`.
    pub tracks: Tracks,
    /// Checkpoint files.
    pub store: Store,
    /// The producer.
    pub producer: Arc<ThreadedProducer<AgentContext>>,
    /// This stream's part of the in-flight budget.
    pub budget: Arc<Budget>,
    /// When the stream's thread last made progress (a loop round, a wait for budget, routing or
    /// librdkafka's queue): a thread that stops beating is stuck, whatever Kafka does.
    pub heartbeat: Heartbeat,
    /// Why the last round of checkpoint writes failed, until one succeeds.
    pub checkpoint_error: std::sync::Mutex<Option<String>>,
    /// Why the last scan could not list every folder of the globs, until one can.
    pub listing_error: Arc<std::sync::Mutex<Option<String>>>,
}

impl StreamShared {
    /// Writes the checkpoint of every file whose acknowledged offset moved; a failure is kept
    /// for `/readyz` until a round succeeds.
    pub fn write_checkpoints(&self, metrics: &Metrics) {
        let failed = crate::track::write_checkpoints(&self.config.name, &self.store, &self.tracks, metrics);
        *self.checkpoint_error.lock().unwrap_or_else(PoisonError::into_inner) = failed;
    }
}

/// What a stream's tailer may hold of its files.
#[derive(Debug, Clone, Copy)]
pub struct FileLimits {
    /// How long a file outside the globs is read after its last data.
    pub rotate_wait: Duration,
    /// Lines read and not yet sent, in bytes.
    pub unsent_bytes: u64,
    /// How long a file idle at its end stays open.
    pub close_idle: Duration,
    /// Files open at once.
    pub max_open: usize,
}

/// Runs one stream until `stop` is set.
pub struct StreamRunner {
    tailer: Tailer,
    sender: KafkaSender,
    poll: Duration,
}

impl StreamRunner {
    /// Prepares the runner; fails only on invalid patterns (already checked by validation).
    pub fn new(
        shared: Arc<StreamShared>,
        metrics: Arc<Metrics>,
        retries: Receiver<Retry>,
        stop: Arc<AtomicBool>,
        poll: Duration,
        files: FileLimits,
    ) -> anyhow::Result<StreamRunner> {
        let c = &shared.config;
        let tailer = Tailer::new(c, shared.store.clone(), shared.tracks.clone(), metrics.clone(), files.rotate_wait)?
            .with_unsent_limit(files.unsent_bytes)
            .with_descriptors(files.close_idle, files.max_open)
            .with_listing_report(shared.listing_error.clone());
        let partitioner = Partitioner::new(c)?;
        let budget = shared.budget.clone();
        Ok(StreamRunner {
            tailer,
            sender: KafkaSender {
                shared,
                metrics,
                budget,
                retries,
                pending_retries: Vec::new(),
                retry_after: Instant::now(),
                retry_rounds: 0,
                stop,
                partitioner,
            },
            poll,
        })
    }

    /// The loop. Returns when `stop` is set; what was read but not sent stays unacknowledged and
    /// is read again after a restart.
    pub fn run(mut self) {
        let mut last_scan: Option<Instant> = None;
        while !self.sender.stopping() {
            self.sender.shared.heartbeat.beat();
            self.sender.process_retries();
            if last_scan.is_none_or(|t| t.elapsed() >= self.poll) {
                self.tailer.scan(&mut self.sender);
                last_scan = Some(Instant::now());
            }
            // A round of reads ends by the next scan, however many files are busy.
            if !self.tailer.read_all(&mut self.sender, Instant::now() + self.poll) {
                // Idle: wait for the next poll (poll-interval-ms: an idle file costs one look per
                // interval), waking early when a retry arrives or a waiting one is due.
                let wait = self
                    .sender
                    .next_retry_due()
                    .map_or(self.poll, |due| due.max(Duration::from_millis(10)).min(self.poll));
                self.sender.wait_for_retry(wait);
            }
        }
        tracing::info!(stream = %self.sender.name(), "stream stopped");
    }
}

/// The Kafka side of a stream: budget, partition choice, sends and re-sends.
struct KafkaSender {
    shared: Arc<StreamShared>,
    metrics: Arc<Metrics>,
    budget: Arc<Budget>,
    retries: Receiver<Retry>,
    pending_retries: Vec<Retry>,
    retry_after: Instant,
    /// Consecutive rounds of re-sending (reset when nothing waits for a retry).
    retry_rounds: u32,
    stop: Arc<AtomicBool>,
    partitioner: Partitioner,
}

impl Dispatch for KafkaSender {
    fn send(&mut self, track: &Arc<FileTrack>, batch: &Batch, range: Range<usize>) -> bool {
        let name = self.shared.config.name.clone();
        let group = GroupHeaders::of(track);
        let charge: u64 = batch
            .events(range.clone())
            .zip(batch.metas(range.clone()))
            .map(|((d, _), m)| group.charge(d.len(), &m))
            .sum();
        // Records waiting for a retry hold budget that only this thread can free by sending
        // them again: never wait for budget while there are any (a long outage would otherwise
        // stall the stream for good).
        let waiting = self.shared.producer.context().retries_waiting.clone();
        let has_retries = !self.pending_retries.is_empty();
        // Waiting for budget is backpressure, not being stuck: it beats.
        let shared = self.shared.clone();
        let interrupt = move || {
            shared.heartbeat.beat();
            has_retries || waiting.load(Ordering::Acquire) > 0
        };
        if !self.wait_for_routing() || !self.budget.acquire(charge, &self.stop, &interrupt) {
            return false;
        }
        let routing = self.shared.routing.read().unwrap_or_else(PoisonError::into_inner).clone();
        let Some(partition) = self.partitioner.for_group(&routing, batch.range_bytes(&range)) else {
            self.budget.release(charge);
            return false;
        };
        let Some(end) = batch.end_offset(&range) else {
            self.budget.release(charge);
            return true;
        };
        let ack = BatchAck::dispatch(track, end, range.len());
        let topic = self.shared.config.topic.clone();
        let max = self.shared.config.max_message_bytes;
        let mut payload_bytes = 0u64;
        for ((line, end), meta) in batch.events(range.clone()).zip(batch.metas(range.clone())) {
            let placed = self.partitioner.for_event(&routing, partition, line);
            if placed.key_missing {
                self.metrics.error(&name, ErrorKind::KeyMissing);
            }
            // A record is at most max-message-bytes with its key (which the topic's and the
            // producer's limits were checked against at start): the payload gives way.
            let key_len = placed.key.as_ref().map_or(0, Vec::len);
            let payload = if line.len() + key_len > max {
                self.metrics.truncated_lines.get_or_create(&Metrics::stream(&name)).inc();
                &line[..max.saturating_sub(key_len).min(line.len())]
            } else {
                line
            };
            payload_bytes += payload.len() as u64;
            let sent = Box::new(Sent { ack: ack.clone(), charge: group.charge(line.len(), &meta) });
            let rec = Outgoing {
                payload,
                key: placed.key.as_deref(),
                headers: group.record(&meta, end),
                timestamp: meta.timestamp_ms,
            };
            self.send_one(&topic, rec, placed.partition, sent);
        }
        let label = Metrics::stream(&name);
        self.metrics.lines.get_or_create(&label).inc_by(range.len() as u64);
        self.metrics.bytes.get_or_create(&label).inc_by(payload_bytes);
        self.metrics.batches.get_or_create(&label).inc();
        true
    }

    fn make_room(&mut self) {
        // Budget is held by records to retry: send those, then wait for the next delivery
        // report (a retry or a release of budget) before trying again.
        self.retry_after = Instant::now();
        self.process_retries();
        self.wait_for_retry(Duration::from_millis(20));
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

impl KafkaSender {
    fn name(&self) -> &str {
        &self.shared.config.name
    }

    /// How long until the records waiting for a retry are due, if any wait.
    fn next_retry_due(&self) -> Option<Duration> {
        (!self.pending_retries.is_empty()).then(|| self.retry_after.saturating_duration_since(Instant::now()))
    }

    /// Waits up to `timeout` for a failed record to come back for a retry.
    fn wait_for_retry(&mut self, timeout: Duration) {
        if let Ok(r) = self.retries.recv_timeout(timeout) {
            self.shared.producer.context().retries_waiting.fetch_sub(1, Ordering::AcqRel);
            self.pending_retries.push(r);
        }
    }

    /// Waits for a partition to write to; false when stopping.
    fn wait_for_routing(&self) -> bool {
        let strategy = self.partitioner.strategy();
        loop {
            if !self.shared.routing.read().unwrap_or_else(PoisonError::into_inner).candidates(strategy).is_empty() {
                return true;
            }
            if self.stopping() {
                return false;
            }
            self.shared.heartbeat.beat();
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Hands one record to librdkafka. What librdkafka refuses at once is classified: a full
    /// queue waits for its thread to drain; a partition it does not know yet (a partition
    /// increase seen by the topology before this producer) or a leader it has lost makes the
    /// topology and librdkafka look again, and the record is re-sent with its partition chosen
    /// afresh; anything else is retried with backoff. Nothing is dropped.
    fn send_one(&mut self, topic: &str, rec: Outgoing<'_>, partition: i32, sent: Box<Sent>) {
        let Outgoing { payload, key, headers, timestamp } = rec;
        let mut record = BaseRecord::with_opaque_to(topic, sent).payload(payload).partition(partition);
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(h) = headers {
            record = record.headers(h);
        }
        if let Some(t) = timestamp {
            record = record.timestamp(t);
        }
        loop {
            match self.shared.producer.send(record) {
                Ok(()) => return,
                Err((e, r)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) => {
                    // librdkafka's queue is sized above our budget, so this is rare: give its
                    // thread a moment to drain.
                    self.shared.producer.poll(Duration::from_millis(5));
                    self.shared.heartbeat.beat();
                    record = r;
                    if self.stopping() {
                        return;
                    }
                }
                Err((e, r)) => {
                    let code = e.rdkafka_error_code().unwrap_or(RDKafkaErrorCode::Fail);
                    let kind = if crate::kafka::leadership_moved(code) {
                        ErrorKind::UnknownPartition
                    } else {
                        ErrorKind::Send
                    };
                    if kind == ErrorKind::UnknownPartition {
                        self.learn_partitions(topic);
                    }
                    tracing::debug!(stream = %self.name(), error = %e, partition, "send refused; will retry");
                    self.metrics.error(self.name(), kind);
                    self.pending_retries.push(Retry {
                        payload: payload.to_vec(),
                        key: key.map(<[u8]>::to_vec),
                        headers: r.headers,
                        timestamp: r.timestamp,
                        sent: r.delivery_opaque,
                    });
                    return;
                }
            }
        }
    }

    /// librdkafka refused a partition the topology lists: ask it for the topic's metadata (which
    /// it caches for this producer) and the topology to refresh, so that the retry finds them
    /// in agreement.
    fn learn_partitions(&self, topic: &str) {
        if let Some(t) = self.shared.producer.context().topology.get() {
            t.refresh_now();
        }
        if let Err(e) = self.shared.producer.client().fetch_metadata(Some(topic), Duration::from_secs(5)) {
            tracing::debug!(stream = %self.name(), topic, error = %e, "metadata refresh after an unknown partition failed");
        }
    }

    fn process_retries(&mut self) {
        let waiting = self.shared.producer.context().retries_waiting.clone();
        while let Ok(r) = self.retries.try_recv() {
            waiting.fetch_sub(1, Ordering::AcqRel);
            self.pending_retries.push(r);
        }
        if self.pending_retries.is_empty() {
            if waiting.load(Ordering::Acquire) == 0 {
                self.retry_rounds = 0;
            }
            return;
        }
        if Instant::now() < self.retry_after {
            return;
        }
        if !self.wait_for_routing() {
            return;
        }
        let topic = self.shared.config.topic.clone();
        let retries = std::mem::take(&mut self.pending_retries);
        tracing::debug!(stream = %self.name(), records = retries.len(), "re-sending failed records");
        for r in retries {
            let routing = self.shared.routing.read().unwrap_or_else(PoisonError::into_inner).clone();
            let Some(p) = self.partitioner.for_retry(&routing, r.key.as_deref(), r.payload.len() as u64) else {
                self.pending_retries.push(r);
                continue;
            };
            let rec =
                Outgoing { payload: &r.payload, key: r.key.as_deref(), headers: r.headers, timestamp: r.timestamp };
            self.send_one(&topic, rec, p, r.sent);
        }
        // Back off while records keep failing (an outage, a refusal), up to a few seconds.
        self.retry_rounds = self.retry_rounds.saturating_add(1);
        let backoff = RETRY_BACKOFF.saturating_mul(1 << self.retry_rounds.min(5)).min(MAX_RETRY_BACKOFF);
        self.retry_after = Instant::now() + backoff;
    }
}
