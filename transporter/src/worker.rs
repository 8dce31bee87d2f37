//! A worker: follows the assignment, owns partitions through fenced etcd keys, and moves each
//! owned partition's records to S3 exactly once.
//!
//! ```text
//!  assignment (etcd) ──control loop──> desired partitions
//!      new: acquire /owners/<tp> (waits for the old owner's release or lease expiry)
//!           ──> committed offset ──> split partition queue + incremental_assign
//!           ──> records ──> Buffer ──roll (bytes | records | age timer)──> S3 object
//!           ──> commit offset in etcd (txn: still owner) ──> mirror to the Kafka group
//!      gone: flush (upload + commit) ──> unassign ──> release the owner key
//!  lease lost: every partition task stops at once, buffers are discarded (re-read later)
//! ```

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use az_core::kafka_options::{AuthFailure, ClientOptions};
use az_core::{BrokerTraffic, Zone};
use etcd_client::Client;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::message::{Message, Timestamp};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::buffer::{self, Buffer, Rec};
use crate::config::{OutOfRange, TransporterConfig};
use crate::coord::{self, Keys, LeaseState};
use crate::metrics::{Metrics, TpLabel};
use crate::naming::{self, ObjectName};
use crate::shares::{self, Share};
use crate::upload::{Body, Condition, Outcome, Span};
use az_core::assign::TopicPartition;

/// Consumer context: statistics feed cross-zone accounting and per-partition lag.
#[derive(Default)]
pub struct WorkerContext {
    /// Bytes per broker.
    pub traffic: BrokerTraffic,
    /// Lag per partition from the latest statistics.
    pub lag: Mutex<BTreeMap<TopicPartition, i64>>,
    /// Where a refused login is reported.
    pub auth: Arc<AuthFailure>,
}

#[derive(Deserialize)]
struct Stats {
    #[serde(default)]
    topics: BTreeMap<String, TopicStats>,
}
#[derive(Deserialize)]
struct TopicStats {
    #[serde(default)]
    partitions: BTreeMap<String, PartStats>,
}
#[derive(Deserialize)]
struct PartStats {
    #[serde(default)]
    consumer_lag: i64,
}

impl ClientContext for WorkerContext {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        if self.auth.observe(&error, reason) {
            tracing::error!(error = %error, reason, "Kafka refused the login");
        } else {
            tracing::warn!(error = %error, reason, "kafka client error");
        }
    }

    fn stats_raw(&self, statistics: &[u8]) {
        if let Err(e) = self.traffic.ingest(statistics) {
            tracing::warn!(error = %e, "ignoring librdkafka statistics");
        }
        if let Ok(s) = serde_json::from_slice::<Stats>(statistics) {
            let mut lag = self.lag.lock().unwrap_or_else(PoisonError::into_inner);
            lag.clear();
            for (t, ts) in s.topics {
                for (p, ps) in ts.partitions {
                    if let Ok(p) = p.parse::<i32>()
                        && p >= 0
                    {
                        lag.insert(TopicPartition { topic: t.clone(), partition: p }, ps.consumer_lag.max(0));
                    }
                }
            }
        }
    }
}

impl ConsumerContext for WorkerContext {}

/// What `/status` shows of an owned partition.
#[derive(Debug, Clone, Default, Serialize)]
pub struct OwnedStatus {
    /// Next offset to commit from (everything before is in S3 and committed).
    pub committed: i64,
    /// Last offset read.
    pub position: i64,
    /// Objects uploaded since taking ownership.
    pub uploads: u64,
    /// Records in the open buffer.
    pub buffered: u64,
}

/// Everything a worker's tasks share.
pub struct Worker {
    /// Configuration.
    pub cfg: TransporterConfig,
    /// Worker id.
    pub id: String,
    /// etcd keys.
    pub keys: Keys,
    /// etcd client.
    pub etcd: Client,
    /// S3 client.
    pub s3: aws_sdk_s3::Client,
    /// The one consumer; each owned partition reads its own split queue.
    pub consumer: Arc<StreamConsumer<WorkerContext>>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Owned partitions.
    pub owned: Mutex<BTreeMap<TopicPartition, OwnedStatus>>,
    /// Rolls (compression and upload) allowed at once.
    pub rolls: tokio::sync::Semaphore,
    /// This worker's share of the assignment, as last read or watched.
    pub share: RwLock<Option<Share>>,
    /// Bytes per second per owned partition, for the master's weights.
    pub rates: Mutex<BTreeMap<String, f64>>,
}

/// Where reading goes on after a roll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rolled {
    /// After the records just uploaded.
    Next,
    /// At this offset: an existing object covered a different range than the buffer.
    ResumeAt(i64),
}

/// How a partition task should stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Keep running.
    Run,
    /// Upload and commit what is buffered, then release (handoff, shutdown).
    Flush,
    /// Stop at once, discard the buffer (ownership lost).
    Abandon,
}

struct Running {
    stop: watch::Sender<Stop>,
    handle: tokio::task::JoinHandle<()>,
}

/// The worker's consumer configuration: manual assignment, no auto commit, the group for
/// mirrored offsets, `client.rack` when follower fetching is on, passthrough options on top
/// (guarded ones were refused when the configuration was loaded).
pub fn consumer_config(cfg: &TransporterConfig, rack: Option<&str>, options: &ClientOptions) -> rdkafka::ClientConfig {
    let mut cc = shell::kafka::base(
        &cfg.kafka.bootstrap_servers,
        &format!("zonal-transporter-{}", cfg.worker_id()),
        Duration::from_secs(5),
    );
    cc.set("group.id", &cfg.kafka.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        // Never reset silently: an offset out of range reaches `pump`, which applies
        // kafka.on-offset-out-of-range and counts it.
        .set("auto.offset.reset", "error")
        .set("fetch.wait.max.ms", "100")
        // Prefetch is per partition with split queues (librdkafka has no limit for the whole
        // consumer): 2 MiB each, and fetch responses of at most 16 MiB per broker, so memory is
        // the README's formula in the partitions owned (override through kafka.options).
        .set("queued.min.messages", "20000")
        .set("queued.max.messages.kbytes", "2048")
        .set("fetch.max.bytes", "16777216");
    if cfg.kafka.follower_fetching
        && let Some(r) = rack
    {
        cc.set("client.rack", r);
    }
    options.apply(&mut cc);
    cc
}

/// `client.rack` in the form the brokers' racks use: brokers compare it with their own
/// `broker.rack` literally, so a zone known by id must be written as a name when racks are
/// names (or through an alias). Asked of the cluster once; without an answer, the zone's id.
fn client_rack(cfg: &TransporterConfig, zone: &Zone, options: &ClientOptions) -> String {
    let probe: anyhow::Result<Vec<String>> = (|| {
        let consumer: rdkafka::consumer::BaseConsumer = consumer_config(cfg, None, options).create()?;
        let topo = az_core::topology::fetch(consumer.client(), &[], Duration::from_secs(10), 0)?;
        Ok(topo.brokers.values().filter_map(|b| b.rack.clone()).collect())
    })();
    match probe {
        Ok(racks) => match cfg.zone.matcher().rack_label(zone, racks.iter().map(String::as_str)) {
            Some(r) => r.to_owned(),
            None => {
                tracing::warn!(zone = %zone, ?racks, "no broker rack in this zone; follower fetching reads from leaders");
                zone.display_label().to_owned()
            }
        },
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "could not read broker racks; client.rack is the zone's id");
            zone.display_label().to_owned()
        }
    }
}

/// Creates the worker's consumer (see [`consumer_config`]); a refused login is reported to `auth`.
pub fn consumer(
    cfg: &TransporterConfig,
    zone: Option<&Zone>,
    auth: Arc<AuthFailure>,
) -> anyhow::Result<StreamConsumer<WorkerContext>> {
    let options = cfg.kafka.client_options()?;
    let rack = match zone {
        Some(z) if cfg.kafka.follower_fetching => Some(client_rack(cfg, z, &options)),
        _ => None,
    };
    let cc = consumer_config(cfg, rack.as_deref(), &options);
    cc.create_with_context(WorkerContext { auth, ..WorkerContext::default() })
        .map_err(|e| anyhow::anyhow!(options.redactor().redact(&e.to_string())))
        .context("creating the Kafka consumer")
}

impl Worker {
    fn label(tp: &TopicPartition) -> TpLabel {
        TpLabel { topic: tp.topic.clone(), partition: tp.partition.to_string() }
    }

    /// Follows the assignment until the lease is lost (error) or `shutdown` fires (Ok). On
    /// shutdown every partition is flushed and released.
    pub async fn control(
        self: &Arc<Self>,
        lease: watch::Receiver<LeaseState>,
        mut shutdown: watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        let mut running: BTreeMap<TopicPartition, Running> = BTreeMap::new();
        let mut watch: Option<etcd_client::WatchStream> = None;
        let mut reread = Instant::now();
        let result = loop {
            let state = *lease.borrow();
            if state.lost {
                break Err(anyhow::anyhow!("lease {} lost", state.id));
            }
            // The worker's own share is read once and then watched; it is read again every
            // SHARE_REREAD as a safety net, and whenever the watch broke.
            if watch.is_none() || reread.elapsed() >= SHARE_REREAD {
                match shares::own(&self.etcd, &self.keys, &self.id).await {
                    Ok((share, revision)) => {
                        *self.share.write().unwrap_or_else(PoisonError::into_inner) = Some(share);
                        reread = Instant::now();
                        if watch.is_none() {
                            let opts = etcd_client::WatchOptions::new().with_start_revision(revision + 1);
                            let mut c = self.etcd.clone();
                            match c.watch(self.keys.share(&self.id), Some(opts)).await {
                                Ok(w) => watch = Some(w),
                                Err(e) => {
                                    tracing::warn!(error = %e, "watching the assignment failed; reading it again")
                                }
                            }
                        }
                    }
                    Err(e) => {
                        self.metrics.error("etcd");
                        tracing::warn!(error = %format!("{e:#}"), "reading the assignment failed; keeping what is owned");
                    }
                }
            }
            let desired: Vec<TopicPartition> = self
                .share
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .as_ref()
                .map(|share| share.keys().filter_map(|k| TopicPartition::parse(k)).collect())
                .unwrap_or_default();
            // Finished tasks (fenced, failed, or flushed) leave; still-desired ones restart.
            running.retain(|_, r| !r.handle.is_finished());
            for (tp, r) in &running {
                if !desired.contains(tp) && *r.stop.borrow() == Stop::Run {
                    tracing::info!(partition = %tp.key(), "partition reassigned: flushing and handing off");
                    let _ = r.stop.send(Stop::Flush);
                }
            }
            for tp in desired {
                if let std::collections::btree_map::Entry::Vacant(slot) = running.entry(tp.clone()) {
                    let (tx, rx) = watch::channel(Stop::Run);
                    let me = self.clone();
                    let lease = lease.clone();
                    let t = tp.clone();
                    let handle = tokio::spawn(async move {
                        if let Err(e) = me.partition(&t, lease, rx).await {
                            me.metrics.error("partition");
                            tracing::warn!(partition = %t.key(), error = %format!("{e:#}"), "partition task ended");
                        }
                        me.owned.lock().unwrap_or_else(PoisonError::into_inner).remove(&t);
                    });
                    slot.insert(Running { stop: tx, handle });
                }
            }
            self.metrics.owned.set(self.owned.lock().unwrap_or_else(PoisonError::into_inner).len() as u64);
            self.update_lag_metrics();
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(300)) => {}
                changed = next_share(&mut watch) => match changed {
                    Ok(Some(share)) => *self.share.write().unwrap_or_else(PoisonError::into_inner) = Some(share),
                    Ok(None) => {}
                    Err(e) => {
                        tracing::debug!(error = %format!("{e:#}"), "the assignment watch ended; reading it again");
                        watch = None;
                    }
                },
                _ = shutdown.changed() => break Ok(()),
            }
        };
        let mode = if result.is_ok() { Stop::Flush } else { Stop::Abandon };
        for r in running.values() {
            let _ = r.stop.send(mode);
        }
        for (_, r) in running {
            let _ = r.handle.await;
        }
        result
    }

    fn update_lag_metrics(&self) {
        let lag =
            Consumer::client(&*self.consumer).context().lag.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let owned = self.owned.lock().unwrap_or_else(PoisonError::into_inner);
        for tp in owned.keys() {
            if let Some(l) = lag.get(tp) {
                self.metrics.lag.get_or_create(&Self::label(tp)).set(*l);
            }
        }
    }

    /// Owns one partition until told to stop or fenced.
    async fn partition(
        self: &Arc<Self>,
        tp: &TopicPartition,
        lease: watch::Receiver<LeaseState>,
        mut stop: watch::Receiver<Stop>,
    ) -> anyhow::Result<()> {
        // Fencing: wait until the previous owner released or its lease expired.
        let mut waited = false;
        loop {
            if *stop.borrow() != Stop::Run {
                return Ok(());
            }
            let l = *lease.borrow();
            if !l.valid() {
                return Ok(());
            }
            match coord::acquire(&self.etcd, &self.keys, tp, &self.id, l.id).await {
                Ok(Ok(())) => break,
                Ok(Err(owner)) => {
                    if !waited {
                        tracing::info!(partition = %tp.key(), owner, "waiting for the previous owner to release or expire");
                        waited = true;
                    }
                }
                Err(e) => tracing::warn!(partition = %tp.key(), error = %format!("{e:#}"), "acquire failed"),
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                _ = stop.changed() => {}
            }
        }
        // Never guess an offset: a read that failed is tried again, a value that is not an offset
        // holds the partition (owned, not read) until an operator sets it.
        let mut reported = false;
        let start = loop {
            let wait = match coord::committed(&self.etcd, &self.keys, tp).await {
                Ok(c) => break c,
                Err(coord::CommittedError::Unreachable(e)) => {
                    self.metrics.error("offset-read");
                    if !reported {
                        tracing::warn!(partition = %tp.key(), error = %format!("{e:#}"), "reading the committed offset failed; the partition waits");
                    }
                    Duration::from_millis(500)
                }
                Err(e @ coord::CommittedError::Invalid { .. }) => {
                    self.metrics.error("etcd-value");
                    if !reported {
                        tracing::error!(partition = %tp.key(), error = %e, "invalid committed offset; the partition is held until it is fixed");
                    }
                    Duration::from_secs(2)
                }
            };
            reported = true;
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => {}
            }
            if *stop.borrow() != Stop::Run || !lease.borrow().valid() {
                let _ = coord::release(&self.etcd, &self.keys, tp, &self.id).await;
                return Ok(());
            }
        };
        let offset = match start {
            Some(o) => Offset::Offset(o),
            None if self.cfg.kafka.start_from == "latest" => Offset::End,
            None => Offset::Beginning,
        };
        tracing::info!(partition = %tp.key(), ?offset, "owning partition");
        let queue = self
            .consumer
            .split_partition_queue(&tp.topic, tp.partition)
            .with_context(|| format!("splitting the queue of {}", tp.key()))?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&tp.topic, tp.partition, offset)?;
        self.consumer.incremental_assign(&tpl).with_context(|| format!("assigning {}", tp.key()))?;
        self.owned.lock().unwrap_or_else(PoisonError::into_inner).insert(
            tp.clone(),
            OwnedStatus { committed: start.unwrap_or(-1), position: start.unwrap_or(0) - 1, ..Default::default() },
        );

        let result = self.pump(tp, &queue, &lease, &mut stop, start).await;

        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&tp.topic, tp.partition);
        if let Err(e) = self.consumer.incremental_unassign(&tpl) {
            tracing::warn!(partition = %tp.key(), error = %e, "unassign failed");
        }
        drop(queue);
        if lease.borrow().valid()
            && let Err(e) = coord::release(&self.etcd, &self.keys, tp, &self.id).await
        {
            tracing::warn!(partition = %tp.key(), error = %format!("{e:#}"), "release failed; the owner key expires with the lease");
        }
        result
    }

    async fn pump(
        self: &Arc<Self>,
        tp: &TopicPartition,
        queue: &rdkafka::consumer::stream_consumer::StreamPartitionQueue<WorkerContext>,
        lease: &watch::Receiver<LeaseState>,
        stop: &mut watch::Receiver<Stop>,
        mut committed: Option<i64>,
    ) -> anyhow::Result<()> {
        let max_age = Duration::from_millis(self.cfg.roll.max_age_ms);
        // The first record must be the one asked for; anything else is a gap, counted.
        let mut expected = committed;
        let mut held = false;
        let dir = self.cfg.worker.buffer_dir.join(&self.id);
        let mut buf: Option<Buffer> = None;
        let mut window = (Instant::now(), 0u64);
        loop {
            let deadline = buf.as_ref().map(|b| b.opened + spread_age(max_age, tp, b.first_offset));
            tokio::select! {
                biased;
                _ = stop.changed() => {
                    let mode = *stop.borrow();
                    match (mode, buf.take()) {
                        (Stop::Flush, Some(b)) => { self.roll(tp, b, lease).await?; }
                        (Stop::Abandon, Some(b)) => b.discard(),
                        _ => {}
                    }
                    if mode != Stop::Run {
                        return Ok(());
                    }
                }
                _ = sleep_until(deadline), if deadline.is_some() => {
                    if let Some(b) = buf.take()
                        && let Rolled::ResumeAt(at) = self.roll(tp, b, lease).await?
                    {
                        self.seek(tp, Offset::Offset(at))?;
                        expected = Some(at);
                    }
                }
                // A partition held on an out-of-range offset reads its committed offset again
                // until an operator sets one (`zonal-transporter offsets --set … --while-owned`).
                _ = tokio::time::sleep(Duration::from_secs(2)), if held => {
                    if let Ok(Some(set)) = coord::committed(&self.etcd, &self.keys, tp).await
                        && Some(set) != committed
                    {
                        tracing::info!(partition = %tp.key(), offset = set, "offset set by an operator; reading again");
                        self.seek(tp, Offset::Offset(set))?;
                        committed = Some(set);
                        expected = Some(set);
                        held = false;
                    }
                }
                msg = queue.recv(), if !held => {
                    let m = match msg {
                        Ok(m) => m,
                        Err(e) if matches!(e.rdkafka_error_code(), Some(RDKafkaErrorCode::AutoOffsetReset | RDKafkaErrorCode::OffsetOutOfRange)) => {
                            self.metrics.error("offset-out-of-range");
                            match self.cfg.kafka.on_offset_out_of_range {
                                OutOfRange::Earliest => {
                                    // Retention passed the committed offset: what is still kept
                                    // is read from its start (what retention deleted is gone).
                                    tracing::warn!(partition = %tp.key(), ?committed, error = %e, "offset out of range; reading from the earliest kept offset");
                                    self.seek(tp, Offset::Beginning)?;
                                    expected = None;
                                }
                                OutOfRange::Fail => {
                                    tracing::error!(partition = %tp.key(), ?committed, error = %e, "offset out of range; the partition is held until an operator sets its offset");
                                    held = true;
                                }
                            }
                            continue;
                        }
                        Err(e) => {
                            self.metrics.error("kafka");
                            tracing::warn!(partition = %tp.key(), error = %e, "consume error");
                            continue;
                        }
                    };
                    if let Some(want) = expected.take()
                        && m.offset() != want
                    {
                        self.metrics.error("offset-gap");
                        tracing::warn!(partition = %tp.key(), asked = want, got = m.offset(), "the first record is not the one asked for; offsets between are not in Kafka");
                    }
                    let rec = Rec {
                        topic: &tp.topic,
                        partition: tp.partition,
                        offset: m.offset(),
                        timestamp_ms: match m.timestamp() { Timestamp::NotAvailable => None, t => t.to_millis() },
                        key: m.key(),
                        value: m.payload(),
                    };
                    if buf.is_none() {
                        buf = Some(Buffer::create(&dir, self.cfg.s3.format, self.cfg.s3.compression, self.cfg.s3.compression_level, &rec).with_context(|| format!("creating a buffer in {}", dir.display()))?);
                    }
                    if let Some(b) = buf.as_mut() {
                        b.append(&rec).context("appending to the buffer")?;
                        window.1 += m.payload_len() as u64;
                        // Status is for humans: refresh it every 1024 records, not per record.
                        if b.records % 1024 == 1
                            && let Some(s) = self.owned.lock().unwrap_or_else(PoisonError::into_inner).get_mut(tp)
                        {
                            s.position = m.offset();
                            s.buffered = b.records;
                        }
                    }
                    drop(m);
                    if buf.as_ref().is_some_and(|b| b.full(&self.cfg.roll))
                        && let Some(b) = buf.take()
                        && let Rolled::ResumeAt(at) = self.roll(tp, b, lease).await?
                    {
                        self.seek(tp, Offset::Offset(at))?;
                        expected = Some(at);
                    }
                    let elapsed = window.0.elapsed();
                    if elapsed >= Duration::from_secs(5) {
                        let rate = window.1 as f64 / elapsed.as_secs_f64();
                        self.rates.lock().unwrap_or_else(PoisonError::into_inner).insert(tp.key(), rate);
                        window = (Instant::now(), 0);
                    }
                }
            }
        }
    }

    /// Reads `tp` again from `offset`. A partition in an error state refuses a seek, and records
    /// already fetched must not be read: it is assigned again.
    fn seek(&self, tp: &TopicPartition, offset: Offset) -> anyhow::Result<()> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&tp.topic, tp.partition);
        self.consumer.incremental_unassign(&tpl).with_context(|| format!("unassigning {}", tp.key()))?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&tp.topic, tp.partition, offset)?;
        self.consumer.incremental_assign(&tpl).with_context(|| format!("assigning {} at {offset:?}", tp.key()))?;
        Ok(())
    }

    /// Uploads a buffer and commits past it (or past the object S3 already holds at its key).
    /// Errors mean ownership is gone or cannot be proven.
    async fn roll(
        self: &Arc<Self>,
        tp: &TopicPartition,
        b: Buffer,
        lease: &watch::Receiver<LeaseState>,
    ) -> anyhow::Result<Rolled> {
        // Rolls at once are capped: each holds a compressor and an upload part in memory.
        let _slot = self.rolls.acquire().await.context("the roll limiter closed")?;
        let f = tokio::task::spawn_blocking(move || b.finish())
            .await
            .context("buffer task")?
            .context("finishing a buffer")?;
        let ext = buffer::extension(self.cfg.s3.format, self.cfg.s3.compression);
        let key = naming::render(
            &self.cfg.s3.key_template,
            &ObjectName {
                prefix: &self.cfg.s3.prefix,
                topic: &tp.topic,
                partition: tp.partition,
                first_offset: f.first_offset,
                timestamp_ms: f.first_timestamp_ms,
                ext,
            },
        )?;
        if !lease.borrow().valid() {
            anyhow::bail!("lease no longer valid; not uploading {key}");
        }
        let started = Instant::now();
        let span = Span { first_offset: f.first_offset, last_offset: f.last_offset, records: f.records };
        let body = Body { path: &f.path, size: f.size };
        let mut outcome = crate::upload::upload(&self.s3, &self.cfg.s3, &key, body, span, &Condition::Create, lease)
            .await
            .inspect_err(|_| self.metrics.error("upload"))?;
        if let Outcome::Exists { last_offset: None, etag: Some(etag) } = &outcome {
            // Written before objects carried their offsets (an older version that crashed before
            // committing): its range is unknown but starts at this buffer's first offset, which
            // is the committed one, so replacing it loses nothing. Only that very object is
            // replaced (If-Match), never one a peer writes meanwhile.
            tracing::warn!(partition = %tp.key(), key, "an object without offsets is at this key; replacing it");
            let replace = Condition::Replace(etag.clone());
            outcome = crate::upload::upload(&self.s3, &self.cfg.s3, &key, body, span, &replace, lease)
                .await
                .inspect_err(|_| self.metrics.error("upload"))?;
        }
        self.metrics.upload_seconds.observe(started.elapsed().as_secs_f64());
        // S3 refused to replace an object already at this key: a previous owner (stalled, or
        // crashed before committing) wrote the same first offset. Its records are in S3; go on
        // after its last one instead of writing them again.
        let (next, rolled) = match outcome {
            Outcome::Written => (f.last_offset + 1, Rolled::Next),
            Outcome::Exists { last_offset: Some(last), .. } if last == f.last_offset => (last + 1, Rolled::Next),
            Outcome::Exists { last_offset: Some(last), .. } if last >= f.first_offset => {
                self.metrics.error("object-exists");
                tracing::warn!(partition = %tp.key(), key, ours = f.last_offset, theirs = last,
                    "an object of a previous owner is at this key; resuming after its last offset");
                (last + 1, Rolled::ResumeAt(last + 1))
            }
            Outcome::Exists { last_offset, .. } => {
                self.metrics.error("object-exists");
                anyhow::bail!(
                    "s3://{}/{key} exists and its metadata does not say where it ends ({last_offset:?}); the partition stops until an operator looks",
                    self.cfg.s3.bucket
                );
            }
        };
        // Commit under the same fence; while etcd does not answer, retry until the lease would
        // have expired.
        loop {
            let l = *lease.borrow();
            if !l.valid() {
                anyhow::bail!("lease lost before committing {} at {next}; the next owner re-uploads {key}", tp.key());
            }
            let left = l.valid_until.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, coord::commit(&self.etcd, &self.keys, tp, &self.id, l.id, next)).await {
                Ok(Ok(true)) => break,
                Ok(Ok(false)) => {
                    self.metrics.error("fenced");
                    anyhow::bail!("fenced: {} is no longer ours", tp.key());
                }
                Ok(Err(e)) => {
                    self.metrics.error("etcd");
                    tracing::warn!(partition = %tp.key(), error = %format!("{e:#}"), "commit failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(_) => {}
            }
        }
        self.metrics.uploads.inc();
        self.metrics.records.inc_by(f.records);
        self.metrics.bytes.inc_by(f.bytes);
        if let Some(s) = self.owned.lock().unwrap_or_else(PoisonError::into_inner).get_mut(tp) {
            s.committed = next;
            s.position = f.last_offset;
            s.uploads += 1;
            s.buffered = 0;
        }
        // Mirror to the Kafka group so standard lag tools see progress; etcd stays the truth.
        let mut tpl = TopicPartitionList::new();
        if tpl.add_partition_offset(&tp.topic, tp.partition, Offset::Offset(next)).is_ok()
            && let Err(e) = self.consumer.commit(&tpl, CommitMode::Async)
        {
            tracing::debug!(partition = %tp.key(), error = %e, "mirroring the offset to Kafka failed");
        }
        tracing::debug!(partition = %tp.key(), key, records = f.records, next, "uploaded and committed");
        Ok(rolled)
    }
}

/// The age at which a buffer rolls: up to a fifth earlier than `roll.max-age-ms`, by partition
/// and first offset, so that the partitions a worker takes at once (after a restart) do not all
/// roll, compress and upload in the same instant.
fn spread_age(max_age: Duration, tp: &TopicPartition, first_offset: i64) -> Duration {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (tp.key(), first_offset).hash(&mut h);
    let fifths = (h.finish() % 1000) as f64 / 5000.0;
    max_age.mul_f64(1.0 - fifths)
}

/// How often a worker reads its share again although it watches it.
const SHARE_REREAD: Duration = Duration::from_secs(30);

/// The next change of the watched share: `Ok(None)` for events that do not change it, an error
/// when the watch ended (it is set up again). Pending forever without a watch.
async fn next_share(watch: &mut Option<etcd_client::WatchStream>) -> anyhow::Result<Option<Share>> {
    let Some(stream) = watch.as_mut() else { return std::future::pending().await };
    let resp = stream.message().await.context("the assignment watch failed")?.context("the assignment watch ended")?;
    if resp.canceled() {
        anyhow::bail!("etcd cancelled the assignment watch");
    }
    let mut latest = None;
    for event in resp.events() {
        latest = match (event.event_type(), event.kv()) {
            (etcd_client::EventType::Put, Some(kv)) => Some(
                serde_json::from_slice(kv.value())
                    .with_context(|| format!("{} holds an invalid share", String::from_utf8_lossy(kv.key())))?,
            ),
            (etcd_client::EventType::Delete, _) => Some(Share::new()),
            _ => latest,
        };
    }
    Ok(latest)
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roll_ages_spread_over_the_last_fifth() {
        let max = Duration::from_secs(60);
        let tp = |partition| TopicPartition { topic: "logs".into(), partition };
        let ages: Vec<Duration> = (0..1000).map(|p| spread_age(max, &tp(p), 0)).collect();
        assert!(ages.iter().all(|a| *a <= max && *a >= max.mul_f64(0.8)));
        let distinct: std::collections::BTreeSet<_> = ages.iter().map(|a| a.as_millis() / 100).collect();
        assert!(distinct.len() > 100, "ages do not spread: {} distinct", distinct.len());
        assert_eq!(spread_age(max, &tp(7), 5), spread_age(max, &tp(7), 5));
    }
}
