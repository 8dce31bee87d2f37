//! The master's term, the I/O around `plan`: it reads the topics, the topology, the workers and
//! the clean stops, asks `plan` for the next assignment when something it plans from changed,
//! and writes what differs from what is stored while its leader key is unchanged.
//!
//! ```text
//!  stored shares + summary (etcd, paged) ─┐
//!  every 500 ms:  Topics::refresh (list the cluster for a pattern) ─> TopologyWatcher::current
//!                 Registry::refresh (keys + revisions; values of changed registrations only)
//!                 coord::left ─────────────────────────────────────────┐
//!  inputs changed, a grace period ended, or 30 s passed:               v
//!                 can_plan ──plan()──> metrics ──differs from stored──> shares::write (guarded)
//! ```
//!
//! At 1,000 workers and 100,000 partitions an idle round is two small requests and no plan; the
//! plan (which walks every partition) runs only when its inputs moved.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use az_core::{Topology, TopologyWatcher, WatchOptions};
use tokio::sync::watch;

use super::plan::{Plan, PlanInput, PlanSettings, can_plan, plan};
use super::steady::Steady;
use crate::coord::{self, AssignmentDoc, Keys, LeaseState, Registry};
use crate::metrics::ErrorKind;
use crate::shares::{self, Share, WriteStats};
use crate::worker::Worker;

/// The leader key this master was elected with: every write is conditioned on it.
pub(super) struct Leader {
    /// The key.
    pub key: Vec<u8>,
    /// Its create revision (a new campaign's key has another).
    pub revision: i64,
}

/// The longest a master goes without planning although nothing it reads changed: a safety net
/// for a change no comparison saw.
const PLAN_AT_LEAST_EVERY: Duration = Duration::from_secs(30);

/// Plans and writes the assignment until the lease is lost or another master took over.
pub(super) async fn lead(
    worker: &Arc<Worker>,
    etcd: &etcd_client::Client,
    lease: &watch::Receiver<LeaseState>,
    leader: &Leader,
) -> anyhow::Result<()> {
    let mut topics = Topics::new(worker)?;
    let mut term = Term::start(etcd, &worker.keys, leader, PlanSettings::new(&worker.cfg), &worker.id).await?;
    loop {
        worker.health.beat_master();
        if !lease.borrow().valid() {
            anyhow::bail!("lease lost while master");
        }
        topics.refresh(worker).await?;
        let topo = topics.watcher.current();
        let round = term.round(&topo, &topics.names, topics.listed, chrono::Utc::now().timestamp_millis()).await?;
        for b in &round.invalid {
            let kind = ErrorKind::EtcdValue;
            worker.metrics.error(kind);
            tracing::error!(kind = kind.as_str(), value = %b, "skipping an invalid worker registration");
        }
        if let Some(p) = &round.planned {
            worker.metrics.cross_zone_partitions.set(p.doc.cross_zone as u64);
            worker.metrics.waiting_partitions.set(p.doc.waiting as u64);
        }
        if let (Some(p), Some(stats)) = (&round.planned, &round.written) {
            tracing::info!(
                generation = p.doc.generation,
                cross_zone = p.doc.cross_zone,
                waiting = p.doc.waiting,
                moved = p.moved,
                keys = stats.keys,
                txns = stats.txns,
                bytes = stats.bytes,
                "assignment written"
            );
        }
        if term.forming() {
            // A forming fleet's plan comes as soon as its registrations have been still for
            // the window, not up to a round later: registrations are read every 25 ms while it
            // forms (a keys-only read, for at most five windows), so that the window starts
            // when the last worker registered, not up to a tick after (100 ms ticks made the
            // first assignment 100 ms later at every deployment's start).
            tokio::time::sleep(Duration::from_millis(25)).await;
        } else if topo.is_fetched() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        } else {
            // A term's first plan waits for the cluster's topology, not for a fixed half second:
            // at a fleet's start that was half of the time to the first assignment.
            topics.watcher.wait_for(Duration::from_millis(500), az_core::Topology::is_fetched).await;
        }
    }
}

/// A master's term: what it planned from last, and the assignment as stored.
pub(super) struct Term<'a> {
    etcd: &'a etcd_client::Client,
    keys: &'a Keys,
    leader: &'a Leader,
    settings: PlanSettings,
    master: String,
    /// The registrations, read incrementally.
    pub registry: Registry,
    /// The assignment in force (stickiness, grace clocks).
    previous: Option<AssignmentDoc>,
    /// The shares as stored in etcd: what the next write is a difference from.
    stored: BTreeMap<String, Share>,
    /// What the last plan was made from.
    seen: Option<Seen>,
    /// Leaders settling, topics that failed to be described.
    steady: Steady,
    /// The topology as steadied, what the plan reads.
    planned: Arc<Topology>,
    /// The generation of the fetched topology `planned` was made from.
    fetched_generation: Option<u64>,
    /// When `planned` could change without a new fetch (a settle or a grace ending).
    steady_until_ms: Option<i64>,
    /// A new deployment's fleet forming: nothing is planned before this (Unix ms).
    forming: Option<Forming>,
}

/// The wait for a new deployment's fleet to form (`assignment.formation-ms`).
#[derive(Debug, Clone, Copy)]
struct Forming {
    /// Registrations unchanged until then end the wait.
    quiet_until_ms: i64,
    /// The wait ends then whatever registers.
    at_most_until_ms: i64,
}

impl Forming {
    /// Whether the first plan still waits at `now_ms`, after registrations did or did not change.
    fn waits(&mut self, registrations_changed: bool, now_ms: i64, quiet_ms: i64) -> bool {
        if registrations_changed {
            self.quiet_until_ms = now_ms.saturating_add(quiet_ms);
        }
        now_ms < self.quiet_until_ms.min(self.at_most_until_ms)
    }
}

/// The inputs of the last plan, to tell whether the next round must plan.
struct Seen {
    topo: Arc<Topology>,
    topics: Vec<String>,
    left: BTreeSet<String>,
    /// When a departed worker's grace period ends next (Unix ms).
    grace_ends_ms: Option<i64>,
    at: Instant,
}

/// What one round did.
#[derive(Debug, Default)]
pub(super) struct Round {
    /// Registrations that did not parse, when the registrations changed.
    pub invalid: Vec<String>,
    /// The plan, when the round planned.
    pub planned: Option<Plan>,
    /// What writing it cost, when it was written.
    pub written: Option<WriteStats>,
}

impl<'a> Term<'a> {
    /// Starts a term from the assignment as stored. It carries stickiness: an etcd error reading
    /// it ends this term (the campaign starts again) instead of starting from nothing; only a
    /// document that is not an assignment at all is replaced.
    pub(super) async fn start(
        etcd: &'a etcd_client::Client,
        keys: &'a Keys,
        leader: &'a Leader,
        settings: PlanSettings,
        master: &str,
    ) -> anyhow::Result<Term<'a>> {
        let stored = match shares::stored(etcd, keys).await {
            Ok(s) => s,
            Err(e) if e.root_cause().is::<serde_json::Error>() => {
                tracing::error!(error = %format!("{e:#}"), "replacing an invalid assignment document");
                None
            }
            Err(e) => return Err(e.context("reading the previous assignment")),
        };
        let (previous, stored) = match stored {
            Some(s) => (Some(shares::join(s.summary, s.shares.clone())), s.shares),
            None => (None, BTreeMap::new()),
        };
        Ok(Term {
            etcd,
            keys,
            leader,
            steady: Steady::new(settings.leader_settle_ms),
            settings,
            master: master.to_owned(),
            registry: Registry::default(),
            previous,
            stored,
            seen: None,
            planned: Arc::new(Topology::default()),
            fetched_generation: None,
            steady_until_ms: None,
            forming: None,
        })
    }

    /// Reads what changed and, when something the plan depends on did, plans and writes. An
    /// error when etcd cannot be read or this master is no longer the leader (it steps down).
    pub(super) async fn round(
        &mut self,
        topo: &Arc<Topology>,
        topics: &[String],
        listed: bool,
        now_ms: i64,
    ) -> anyhow::Result<Round> {
        let mut round = Round::default();
        let registrations_changed = self.registry.refresh(self.etcd, self.keys).await?;
        let registered = self.registry.registrations();
        if registrations_changed {
            round.invalid = registered.invalid;
        }
        let left = coord::left(self.etcd, self.keys).await?;
        // An unfetched topology (a watcher started again for a new topic list) is not planned
        // from and must not reset what `steady` remembers.
        if topo.is_fetched()
            && (self.fetched_generation != Some(topo.generation) || self.steady_until_ms.is_some_and(|t| now_ms >= t))
        {
            let (steadied, until) = self.steady.apply(topo, now_ms);
            self.fetched_generation = Some(topo.generation);
            self.steady_until_ms = until;
            self.planned = Arc::new(steadied);
        }
        let topo = &self.planned.clone();
        let due = match &self.seen {
            None => true,
            Some(seen) => {
                registrations_changed
                    || seen.left != left
                    || seen.topics != topics
                    || seen.grace_ends_ms.is_some_and(|t| now_ms >= t)
                    || seen.at.elapsed() >= PLAN_AT_LEAST_EVERY
                    || (!Arc::ptr_eq(&seen.topo, topo)
                        && (seen.topo.brokers != topo.brokers || seen.topo.topics != topo.topics))
            }
        };
        if !due || !can_plan(topo, topics, listed) || self.still_forming(registrations_changed, now_ms) {
            return Ok(round);
        }
        let next = plan(&PlanInput {
            topo,
            topics,
            workers: &registered.workers,
            left: &left,
            previous: self.previous.as_ref(),
            master: &self.master,
            now_ms,
            settings: &self.settings,
        });
        let grace_ends_ms = next
            .doc
            .departed_ms
            .values()
            .map(|t| t.saturating_add(self.settings.grace_ms))
            .filter(|t| *t > now_ms)
            .min();
        self.seen = Some(Seen { topo: topo.clone(), topics: topics.to_vec(), left, grace_ends_ms, at: Instant::now() });
        if next.changed || shares::needs_healing(&self.stored, &next.doc) {
            let writes = shares::diff(self.keys, &self.stored, &next.doc)?;
            let Some(stats) = shares::write(self.etcd, writes, &self.leader.key, self.leader.revision).await? else {
                anyhow::bail!("no longer the leader; stepping down");
            };
            self.stored = shares::split(&next.doc).shares;
            self.previous = Some(next.doc.clone());
            round.written = Some(stats);
        }
        round.planned = Some(next);
        Ok(round)
    }
}

impl Term<'_> {
    /// Whether this term waits for a new deployment's fleet to form (nothing planned yet).
    pub(super) fn forming(&self) -> bool {
        self.forming.is_some() && self.seen.is_none()
    }

    /// Whether a new deployment's first plan still waits for its fleet to form. Only a term
    /// that found no assignment stored waits, so a master taking over a running fleet (or a
    /// fleet restarting with its worker ids) plans at once.
    fn still_forming(&mut self, registrations_changed: bool, now_ms: i64) -> bool {
        let quiet = self.settings.formation_ms;
        if self.previous.is_some() || quiet <= 0 {
            return false;
        }
        let forming = self.forming.get_or_insert(Forming {
            quiet_until_ms: now_ms.saturating_add(quiet),
            at_most_until_ms: now_ms.saturating_add(quiet.saturating_mul(5)),
        });
        forming.waits(registrations_changed, now_ms, quiet)
    }
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

#[cfg(test)]
mod tests {
    use super::Forming;

    #[test]
    fn a_new_fleet_forms_once_registrations_are_still_and_at_most_five_times_as_long() {
        let quiet = 1_000;
        let mut f = Forming { quiet_until_ms: quiet, at_most_until_ms: 5 * quiet };
        assert!(f.waits(true, 0, quiet), "the first registration starts the wait");
        assert!(f.waits(false, 500, quiet));
        assert!(f.waits(true, 900, quiet), "a worker joining starts it again");
        assert!(f.waits(false, 1_899, quiet));
        assert!(!f.waits(false, 1_900, quiet), "still for the whole window: formed");

        let mut f = Forming { quiet_until_ms: quiet, at_most_until_ms: 5 * quiet };
        for now in (0..5 * quiet).step_by(500) {
            assert!(f.waits(true, now, quiet), "workers keep registering at {now} ms");
        }
        assert!(!f.waits(true, 5 * quiet, quiet), "a fleet that never stops growing is planned after the bound");
    }
}
