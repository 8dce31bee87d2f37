//! The worker's control loop: it follows this worker's share of the assignment and keeps one
//! partition task running per partition in it.
//!
//! ```text
//!  shares::own (read; again every 30 s and whenever the watch broke) ──┐
//!  watch /assignment/<id> from the next revision ──────────────────────┴─> Worker::share
//!     ──> desired partitions ──> spawn a task for each new one (partition::run)
//!                            └─> Stop::Handoff to each one no longer desired
//!  shutdown ──> Stop::Flush to all, wait        lease lost ──> Stop::Abandon to all, wait
//!  the buffer folder measured every 300 ms on a task of its own (`disk`)
//!  a task that failed ──> started again after a backoff (1 s, doubling to 60 s; reset by a task
//!                         that ends well), so a lasting error does not spin on etcd and S3
//! ```

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context;
use az_core::TopicPartition;
use tokio::sync::watch;

use super::{Stop, Worker};
use crate::coord::LeaseState;
use crate::metrics::ErrorKind;
use crate::shares::{self, Share};

/// How often a worker reads its share again although it watches it.
const SHARE_REREAD: Duration = Duration::from_secs(30);

/// A running partition task; it returns whether it ended with an error.
struct Running {
    stop: watch::Sender<Stop>,
    handle: tokio::task::JoinHandle<bool>,
}

/// When a failed partition may start again, and the wait after its next failure.
#[derive(Debug, Clone, Copy)]
struct Backoff {
    until: Instant,
    next: Duration,
}

/// The first wait after a failure, and the longest.
const RESPAWN_FIRST: Duration = Duration::from_secs(1);
const RESPAWN_MAX: Duration = Duration::from_secs(60);

impl Worker {
    /// Follows the assignment until the lease is lost (error) or `shutdown` fires (Ok). On
    /// shutdown every partition is flushed and released.
    pub async fn control(
        self: &Arc<Self>,
        lease: watch::Receiver<LeaseState>,
        mut shutdown: watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        let mut running: BTreeMap<TopicPartition, Running> = BTreeMap::new();
        let mut backoff: BTreeMap<TopicPartition, Backoff> = BTreeMap::new();
        let mut share = ShareFollower { watch: None, reread: Instant::now() };
        let measuring = self.measure_disk();
        let result = loop {
            self.health.beat_control();
            let state = *lease.borrow();
            if state.lost {
                self.health.set_etcd(Some(format!("lease {} lost", state.id)));
                break Err(anyhow::anyhow!("lease {} lost", state.id));
            }
            self.health
                .set_etcd((!state.valid()).then(|| "the lease is not being renewed (etcd unreachable?)".to_owned()));
            share.refresh(self).await;
            self.reconcile(&mut running, &mut backoff, &lease);
            self.metrics.owned.set(self.owned.lock().unwrap_or_else(PoisonError::into_inner).len() as u64);
            self.update_lag_metrics();
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(300)) => {}
                changed = share.next() => match changed {
                    Ok(Some(s)) => *self.share.write().unwrap_or_else(PoisonError::into_inner) = Some(s),
                    Ok(None) => {}
                    Err(e) => {
                        tracing::debug!(error = %format!("{e:#}"), "the assignment watch ended; reading it again");
                        share.watch = None;
                    }
                },
                _ = shutdown.changed() => break Ok(()),
            }
        };
        measuring.abort();
        let mode = if result.is_ok() { Stop::Flush } else { Stop::Abandon };
        for r in running.values() {
            let _ = r.stop.send(mode);
        }
        // A flush is bounded: past the shutdown timeout, what is still uploading is dropped
        // (Abandon), read again by the next owner, and the process ends.
        let timeout = Duration::from_secs(self.cfg.worker.shutdown_timeout_secs);
        let deadline = tokio::time::Instant::now() + timeout;
        for (tp, mut r) in running {
            if tokio::time::timeout_at(deadline, &mut r.handle).await.is_err() {
                tracing::warn!(partition = %tp, timeout_secs = timeout.as_secs(),
                    "the partition did not flush within worker.shutdown-timeout-secs; its buffer is dropped and read again by the next owner");
                let _ = r.stop.send(Stop::Abandon);
                let _ = r.handle.await;
            }
        }
        result
    }

    /// Brings the running tasks in line with the share: finished tasks (fenced, failed, or
    /// flushed) leave, and restart if still desired; partitions no longer desired are flushed and
    /// handed off; new ones get a task.
    fn reconcile(
        self: &Arc<Self>,
        running: &mut BTreeMap<TopicPartition, Running>,
        backoff: &mut BTreeMap<TopicPartition, Backoff>,
        lease: &watch::Receiver<LeaseState>,
    ) {
        // A set: this runs every 300 ms over every owned partition, and a list's `contains`
        // made it quadratic (10^9 comparisons a round at 30,000 partitions).
        let desired: BTreeSet<TopicPartition> = self
            .share
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|share| share.keys().cloned().collect())
            .unwrap_or_default();
        let now = Instant::now();
        running.retain(|tp, r| {
            if !r.handle.is_finished() {
                return true;
            }
            let failed = futures::FutureExt::now_or_never(&mut r.handle).is_none_or(|ended| ended.unwrap_or(true));
            if failed {
                let b = backoff.entry(tp.clone()).or_insert(Backoff { until: now, next: RESPAWN_FIRST });
                b.until = now + b.next;
                tracing::info!(partition = %tp, retry_in_secs = b.next.as_secs(), "the partition starts again after a pause");
                b.next = (b.next * 2).min(RESPAWN_MAX);
            } else {
                backoff.remove(tp);
            }
            false
        });
        for (tp, r) in running.iter() {
            if !desired.contains(tp) && *r.stop.borrow() == Stop::Run {
                tracing::info!(partition = %tp, "partition reassigned: handing off");
                let _ = r.stop.send(Stop::Handoff);
            }
        }
        backoff.retain(|tp, _| desired.contains(tp));
        for tp in desired {
            if backoff.get(&tp).is_some_and(|b| b.until > now) {
                continue;
            }
            if let Entry::Vacant(slot) = running.entry(tp.clone()) {
                slot.insert(self.spawn_partition(tp, lease.clone()));
            }
        }
    }

    /// Measures the buffer folder every 300 ms on a task of its own (a blocking thread for the
    /// listing): a slow etcd in the control loop must not hold partitions that wait for room.
    fn measure_disk(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                let m = me.clone();
                if let Ok((used, free)) = tokio::task::spawn_blocking(move || m.disk.measure()).await {
                    me.metrics.buffer_disk_bytes.set(used);
                    me.metrics.disk_free_bytes.set(free);
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        })
    }

    /// Starts the task that owns `tp`; when it ends, the partition is no longer shown as owned.
    fn spawn_partition(self: &Arc<Self>, tp: TopicPartition, lease: watch::Receiver<LeaseState>) -> Running {
        let (stop, rx) = watch::channel(Stop::Run);
        let me = self.clone();
        let handle = tokio::spawn(async move {
            let result = me.partition(&tp, lease, rx).await;
            if let Err(e) = &result {
                let kind = ErrorKind::Partition;
                me.metrics.error(kind);
                tracing::warn!(kind = kind.as_str(), partition = %tp, error = %format!("{e:#}"), "partition task ended");
            }
            me.owned.lock().unwrap_or_else(PoisonError::into_inner).remove(&tp);
            // Its rate is the next owner's to report, and its lag gauge goes with it (a gauge
            // of a partition no longer read would stay at its last value forever).
            me.rates.lock().unwrap_or_else(PoisonError::into_inner).remove(&tp);
            me.metrics.lag.remove(&Worker::label(&tp));
            result.is_err()
        });
        Running { stop, handle }
    }
}

/// This worker's share as it follows it: read once, then watched from the revision after the
/// read; read again every [`SHARE_REREAD`] as a safety net, and whenever the watch broke.
struct ShareFollower {
    watch: Option<etcd_client::WatchStream>,
    reread: Instant,
}

impl ShareFollower {
    /// Reads the share when due; a failed read keeps what is owned (and counts an etcd error).
    async fn refresh(&mut self, worker: &Worker) {
        if self.watch.is_some() && self.reread.elapsed() < SHARE_REREAD {
            return;
        }
        match shares::own(&worker.etcd, &worker.keys, &worker.id).await {
            Ok(own) => {
                *worker.share.write().unwrap_or_else(PoisonError::into_inner) = Some(own.share);
                self.reread = Instant::now();
                if self.watch.is_none() {
                    let opts = etcd_client::WatchOptions::new().with_start_revision(own.revision + 1);
                    let mut c = worker.etcd.clone();
                    match c.watch(worker.keys.share(&worker.id), Some(opts)).await {
                        Ok(w) => self.watch = Some(w),
                        Err(e) => {
                            tracing::warn!(error = %e, "watching the assignment failed; reading it again")
                        }
                    }
                }
            }
            Err(e) => {
                let kind = ErrorKind::Etcd;
                worker.metrics.error(kind);
                tracing::warn!(kind = kind.as_str(), error = %format!("{e:#}"), "reading the assignment failed; keeping what is owned");
            }
        }
    }

    /// The next change of the watched share: `Ok(None)` for events that do not change it, an
    /// error when the watch ended (it is set up again). Pending forever without a watch.
    async fn next(&mut self) -> anyhow::Result<Option<Share>> {
        let Some(stream) = self.watch.as_mut() else { return std::future::pending().await };
        let resp =
            stream.message().await.context("the assignment watch failed")?.context("the assignment watch ended")?;
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
}
