//! The master's term, the I/O around `plan`: it reads the topics, the topology, the workers and
//! the clean stops, asks `plan` for the next assignment, and writes what changed while its
//! leader key is unchanged.
//!
//! ```text
//!  previous assignment (etcd) ─┐
//!  every 500 ms (at a term's start: as soon as the topology is fetched):
//!                Topics::refresh (list the cluster for a pattern) ─> TopologyWatcher::current
//!                coord::workers + coord::left ────────────────────────┐
//!                can_plan ──plan()──> metrics ──changed──> shares::write (guarded by the leader key)
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use az_core::{TopologyWatcher, WatchOptions};
use tokio::sync::watch;

use super::plan::{Plan, PlanInput, PlanSettings, can_plan, plan};
use crate::coord::{self, AssignmentDoc, Keys, LeaseState};
use crate::metrics::ErrorKind;
use crate::worker::Worker;

/// The leader key this master was elected with: every write is conditioned on it.
pub(super) struct Leader {
    /// The key.
    pub key: Vec<u8>,
    /// Its create revision (a new campaign's key has another).
    pub revision: i64,
}

/// Plans and writes the assignment until the lease is lost or another master took over.
pub(super) async fn lead(
    worker: &Arc<Worker>,
    etcd: &etcd_client::Client,
    lease: &watch::Receiver<LeaseState>,
    leader: &Leader,
) -> anyhow::Result<()> {
    let settings = PlanSettings::new(&worker.cfg);
    let mut topics = Topics::new(worker)?;
    let mut previous = previous_assignment(etcd, &worker.keys).await?;
    loop {
        if !lease.borrow().valid() {
            anyhow::bail!("lease lost while master");
        }
        topics.refresh(worker).await?;
        let topo = topics.watcher.current();
        let registered = coord::workers(etcd, &worker.keys).await?;
        let left = coord::left(etcd, &worker.keys).await?;
        for b in &registered.invalid {
            let kind = ErrorKind::EtcdValue;
            worker.metrics.error(kind);
            tracing::error!(kind = kind.as_str(), value = %b, "skipping an invalid worker registration");
        }
        let fetched = topo.is_fetched();
        if can_plan(&topo, &topics.names, topics.listed) {
            let next = plan(&PlanInput {
                topo: &topo,
                topics: &topics.names,
                workers: &registered.workers,
                left: &left,
                previous: previous.as_ref(),
                master: &worker.id,
                now_ms: chrono::Utc::now().timestamp_millis(),
                settings: &settings,
            });
            worker.metrics.cross_zone_partitions.set(next.doc.cross_zone as u64);
            worker.metrics.waiting_partitions.set(next.doc.waiting as u64);
            if next.changed {
                write(worker, etcd, leader, previous.as_ref(), &next).await?;
                previous = Some(next.doc);
            }
        }
        if fetched {
            tokio::time::sleep(Duration::from_millis(500)).await;
        } else {
            // A term's first plan waits for the cluster's topology, not for a fixed half second:
            // at a fleet's start that was half of the time to the first assignment.
            topics.watcher.wait_for(Duration::from_millis(500), az_core::Topology::is_fetched).await;
        }
    }
}

/// The assignment in force when the term starts. It carries stickiness: an etcd error reading it
/// ends this term (the campaign starts again) instead of starting from nothing; only a document
/// that is not an assignment at all is replaced.
async fn previous_assignment(etcd: &etcd_client::Client, keys: &Keys) -> anyhow::Result<Option<AssignmentDoc>> {
    match crate::shares::full(etcd, keys).await {
        Ok(doc) => Ok(doc),
        Err(e) if e.root_cause().is::<serde_json::Error>() => {
            tracing::error!(error = %format!("{e:#}"), "replacing an invalid assignment document");
            Ok(None)
        }
        Err(e) => Err(e.context("reading the previous assignment")),
    }
}

/// Writes what moving from `previous` to `next` changes; an error when this master is no longer
/// the leader, so that it steps down.
async fn write(
    worker: &Worker,
    etcd: &etcd_client::Client,
    leader: &Leader,
    previous: Option<&AssignmentDoc>,
    next: &Plan,
) -> anyhow::Result<()> {
    let writes = crate::shares::diff(&worker.keys, previous, &next.doc)?;
    let Some(stats) = crate::shares::write(etcd, writes, &leader.key, leader.revision).await? else {
        anyhow::bail!("no longer the leader; stepping down");
    };
    tracing::info!(
        generation = next.doc.generation,
        cross_zone = next.doc.cross_zone,
        waiting = next.doc.waiting,
        moved = next.moved,
        keys = stats.keys,
        txns = stats.txns,
        bytes = stats.bytes,
        "assignment written"
    );
    Ok(())
}

/// The topics to move and the topology watcher that follows them.
struct Topics {
    /// `kafka.topic-pattern`, compiled.
    pattern: Option<regex::Regex>,
    /// The topics, sorted.
    names: Vec<String>,
    /// With a pattern, the topics are known only once the cluster has been listed: until then (a
    /// Kafka blip when this master starts) nothing is written, rather than an empty assignment
    /// that would make every worker drop its partitions.
    listed: bool,
    /// When the cluster was last listed.
    checked: Option<Instant>,
    /// Follows the topics' partitions and leaders.
    watcher: TopologyWatcher,
}

impl Topics {
    fn new(worker: &Arc<Worker>) -> anyhow::Result<Topics> {
        let cfg = &worker.cfg.kafka;
        let pattern = cfg.topic_pattern.as_deref().map(crate::topics::compile_pattern).transpose()?;
        let names = crate::topics::select(&cfg.topics, None, &[]);
        let watcher = start_watcher(worker, &names);
        Ok(Topics { listed: pattern.is_none(), pattern, names, checked: None, watcher })
    }

    /// Lists the cluster again when a pattern is set and the refresh interval passed; a failed
    /// listing keeps the topics known so far.
    async fn refresh(&mut self, worker: &Arc<Worker>) -> anyhow::Result<()> {
        let every = Duration::from_secs(worker.cfg.kafka.topology_refresh_secs.max(1));
        let Some(re) = &self.pattern else { return Ok(()) };
        if self.checked.is_some_and(|c| c.elapsed() < every) {
            return Ok(());
        }
        self.checked = Some(Instant::now());
        let consumer = worker.consumer.clone();
        let listing = tokio::task::spawn_blocking(move || {
            rdkafka::consumer::Consumer::fetch_metadata(&*consumer, None, Duration::from_secs(10))
                .map(|md| md.topics().iter().map(|t| t.name().to_owned()).collect::<Vec<_>>())
        })
        .await?;
        if let Ok(cluster) = listing {
            self.listed = true;
            let next = crate::topics::select(&worker.cfg.kafka.topics, Some(re), &cluster);
            if next != self.names {
                tracing::info!(?next, "topics to move changed");
                self.names = next;
                self.watcher = start_watcher(worker, &self.names);
            }
        }
        Ok(())
    }
}

fn start_watcher(worker: &Arc<Worker>, topics: &[String]) -> TopologyWatcher {
    TopologyWatcher::start(
        worker.consumer.clone(),
        WatchOptions {
            topics: topics.to_vec(),
            interval: Duration::from_secs(worker.cfg.kafka.topology_refresh_secs.max(1)),
            request_timeout: Duration::from_secs(5),
        },
    )
}
