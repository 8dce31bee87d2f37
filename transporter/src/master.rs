//! The master: one worker at a time, elected through etcd's election API. It watches workers and
//! the topology and writes the assignment (a pure function, `assign`) with a generation number.
//!
//! ```text
//!  campaign(/<cluster>/master, lease) ──elected──> every 500 ms:
//!     workers (etcd) + topology (az-core) + previous assignment + departed-in-grace
//!        ──assign()──> AssignmentDoc ──txn "my leader key still exists"──> /<cluster>/assignment
//!  lease lost or txn fails ──> step down, campaign again
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use az_core::{Topology, TopologyWatcher, WatchOptions, Zone, ZoneMatcher};
use tokio::sync::watch;

use crate::coord::{self, AssignmentDoc, LeaseState, WorkerInfo};
use crate::worker::Worker;
use az_core::assign::{self, PartitionSpec, TopicPartition, WorkerSpec};

fn worker_zone(w: &WorkerInfo) -> Option<Zone> {
    (w.zone_id.is_some() || w.zone_name.is_some()).then(|| Zone { id: w.zone_id.clone(), name: w.zone_name.clone() })
}

/// The zone label a worker is grouped by.
pub fn zone_label(w: &WorkerInfo) -> Option<String> {
    w.zone_id.clone().or_else(|| w.zone_name.clone())
}

/// Partition specs from a topology: each partition's eligible zones, named by the label of the
/// workers' zone that matches the rack (so id racks, name racks and aliases all work), else by
/// the rack itself.
pub fn partition_specs(
    topo: &Topology,
    topics: &[String],
    workers: &[WorkerInfo],
    matcher: &ZoneMatcher,
    follower_fetching: bool,
    rates: &BTreeMap<String, f64>,
) -> Vec<PartitionSpec> {
    // A few zones among many workers, a few racks among many partitions: match each rack once.
    let mut zones: Vec<(Zone, String)> =
        workers.iter().filter_map(|w| Some((worker_zone(w)?, zone_label(w)?))).collect();
    zones.sort_by(|a, b| (&a.0.id, &a.0.name, &a.1).cmp(&(&b.0.id, &b.0.name, &b.1)));
    zones.dedup();
    let mut labels: BTreeMap<String, String> = BTreeMap::new();
    let mut label_of_rack = |rack: &str| -> String {
        labels
            .entry(rack.to_owned())
            .or_insert_with(|| {
                zones
                    .iter()
                    .find(|(z, _)| matcher.matches(z, rack))
                    .map(|(_, l)| l.clone())
                    .unwrap_or_else(|| matcher.canonical(rack).to_owned())
            })
            .clone()
    };
    let known: Vec<f64> = rates.values().copied().filter(|r| *r > 0.0).collect();
    let mean = if known.is_empty() { 1.0 } else { known.iter().sum::<f64>() / known.len() as f64 };
    let mut out = Vec::new();
    for t in topics {
        for p in topo.partitions(t).unwrap_or_default() {
            let tp = TopicPartition { topic: t.clone(), partition: p.id };
            let brokers: Vec<i32> = if follower_fetching { p.isr.clone() } else { p.leader.into_iter().collect() };
            let mut zs: Vec<String> = brokers.iter().filter_map(|&b| topo.rack_of(b)).map(&mut label_of_rack).collect();
            zs.sort();
            zs.dedup();
            let weight = rates.get(&tp.key()).filter(|r| **r > 0.0).map_or(1.0, |r| (r / mean).max(0.01));
            out.push(PartitionSpec { tp, zones: zs, weight });
        }
    }
    out
}

/// Campaigns for mastership and, while master, keeps the assignment current. Returns when the
/// lease is lost.
/// It runs on a thread of its own (see `app`), with connections of its own: the campaign's has no
/// request timeout (it blocks until elected; a timeout would churn the election key), the
/// master's work uses the usual one.
pub async fn run(worker: Arc<Worker>, lease: watch::Receiver<LeaseState>) -> anyhow::Result<()> {
    let etcd = coord::connect(&worker.cfg.etcd).await?;
    let mut election = coord::connect_untimed(&worker.cfg.etcd).await?.election_client();
    let lease_id = lease.borrow().id;
    let name = worker.keys.election();
    let resp = election.campaign(name.clone(), worker.id.clone(), lease_id).await.context("campaigning for master")?;
    let leader = resp.leader().context("campaign answered without a leader key")?.clone();
    tracing::info!(worker = %worker.id, "elected master");
    worker.metrics.is_master.set(1);
    let result = lead(&worker, &etcd, &lease, leader.key().to_vec(), leader.rev()).await;
    worker.metrics.is_master.set(0);
    let _ = election.resign(Some(etcd_client::ResignOptions::new().with_leader(leader))).await;
    result
}

async fn lead(
    worker: &Arc<Worker>,
    etcd: &etcd_client::Client,
    lease: &watch::Receiver<LeaseState>,
    leader_key: Vec<u8>,
    leader_rev: i64,
) -> anyhow::Result<()> {
    let cfg = &worker.cfg;
    let matcher = cfg.zone.matcher();
    let grace = Duration::from_secs(cfg.worker.grace_period_secs);
    let pattern = cfg.kafka.topic_pattern.as_deref().map(crate::topics::compile_pattern).transpose()?;
    let mut topics = crate::topics::select(&cfg.kafka.topics, None, &[]);
    let mut watcher = start_watcher(worker, &topics);
    let mut topics_checked = Instant::now() - Duration::from_secs(3600);
    // The previous assignment carries stickiness: an etcd error reading it stops this term
    // (the campaign starts again) instead of starting from nothing; only a document that is not
    // an assignment at all is replaced.
    let mut previous: Option<AssignmentDoc> = match crate::shares::full(etcd, &worker.keys).await {
        Ok(doc) => doc,
        Err(e) if e.root_cause().is::<serde_json::Error>() => {
            tracing::error!(error = %format!("{e:#}"), "replacing an invalid assignment document");
            None
        }
        Err(e) => return Err(e.context("reading the previous assignment")),
    };
    // With a topic pattern, the topics are known only once the cluster has been listed: until
    // then (a Kafka blip when this master starts) nothing is written, rather than an empty
    // assignment that would make every worker drop its partitions.
    let mut listed = pattern.is_none();
    loop {
        if !lease.borrow().valid() {
            anyhow::bail!("lease lost while master");
        }
        if let Some(re) = &pattern
            && topics_checked.elapsed() >= Duration::from_secs(cfg.kafka.topology_refresh_secs.max(1))
        {
            topics_checked = Instant::now();
            let consumer = worker.consumer.clone();
            let listing = tokio::task::spawn_blocking(move || {
                rdkafka::consumer::Consumer::fetch_metadata(&*consumer, None, Duration::from_secs(10))
                    .map(|md| md.topics().iter().map(|t| t.name().to_owned()).collect::<Vec<_>>())
            })
            .await?;
            if let Ok(cluster) = listing {
                listed = true;
                let next = crate::topics::select(&cfg.kafka.topics, Some(re), &cluster);
                if next != topics {
                    tracing::info!(?next, "topics to move changed");
                    topics = next;
                    watcher = start_watcher(worker, &topics);
                }
            }
        }
        let topo = watcher.current();
        let (workers, bad) = coord::workers(etcd, &worker.keys).await?;
        let left = coord::left(etcd, &worker.keys).await?;
        for b in bad {
            worker.metrics.error("etcd-value");
            tracing::error!(value = %b, "skipping an invalid worker registration");
        }
        // A topology whose every partition is missing (the fetch failed for all topics) is not
        // a reason to unassign: wait for a real answer.
        let answered = topics.is_empty() || topics.iter().any(|t| topo.partitions(t).is_some_and(|p| !p.is_empty()));
        if topo.is_fetched() && listed && answered {
            let input = PlanInput {
                topo: &topo,
                topics: &topics,
                workers: &workers,
                left: &left,
                previous: previous.as_ref(),
                master: &worker.id,
                matcher: &matcher,
                follower_fetching: cfg.kafka.follower_fetching,
                zone_aware: cfg.assignment.zone_aware,
                grace_ms: i64::try_from(grace.as_millis()).unwrap_or(i64::MAX),
                now_ms: chrono::Utc::now().timestamp_millis(),
            };
            let (doc, moved) = plan(&input);
            worker.metrics.cross_zone_partitions.set(doc.cross_zone as u64);
            worker.metrics.waiting_partitions.set(doc.waiting as u64);
            if previous.as_ref().is_none_or(|p| changed(p, &doc)) {
                let writes = crate::shares::diff(&worker.keys, previous.as_ref(), &doc)?;
                let Some(stats) = crate::shares::write(etcd, writes, &leader_key, leader_rev).await? else {
                    anyhow::bail!("no longer the leader; stepping down");
                };
                tracing::info!(
                    generation = doc.generation,
                    cross_zone = doc.cross_zone,
                    waiting = doc.waiting,
                    moved,
                    keys = stats.keys,
                    txns = stats.txns,
                    bytes = stats.bytes,
                    "assignment written"
                );
                previous = Some(doc);
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// What the master plans from.
pub struct PlanInput<'a> {
    /// Partitions and their replicas' racks.
    pub topo: &'a Topology,
    /// Topics to move.
    pub topics: &'a [String],
    /// Registered workers.
    pub workers: &'a [WorkerInfo],
    /// Workers that stopped cleanly (no grace for them).
    pub left: &'a BTreeSet<String>,
    /// The assignment in force (stickiness, departed workers and their grace clocks).
    pub previous: Option<&'a AssignmentDoc>,
    /// This master's id.
    pub master: &'a str,
    /// How racks are matched to zones.
    pub matcher: &'a ZoneMatcher,
    /// Any in-sync replica's zone is eligible, not only the leader's.
    pub follower_fetching: bool,
    /// Zone-aware (off: the baseline that balances over every worker).
    pub zone_aware: bool,
    /// How long a departed worker's partitions wait for it.
    pub grace_ms: i64,
    /// Wall-clock now (grace clocks are wall-clock so a new master keeps them).
    pub now_ms: i64,
}

/// The next assignment: pure, no I/O. Returns it with the number of partitions that moved.
pub fn plan(input: &PlanInput<'_>) -> (AssignmentDoc, usize) {
    let live: BTreeSet<&str> = input.workers.iter().map(|w| w.id.as_str()).collect();
    let prev_owners: BTreeMap<TopicPartition, String> = input
        .previous
        .map(|d| d.owners.iter().filter_map(|(k, w)| Some((TopicPartition::parse(k)?, w.clone()))).collect())
        .unwrap_or_default();
    // Workers that held partitions and are gone are in grace from when a master first noticed
    // (kept in the document, so a new master does not restart their clocks); a worker that
    // stopped cleanly released its partitions: no grace for it.
    let mut departed: BTreeMap<String, i64> = input.previous.map(|d| d.departed_ms.clone()).unwrap_or_default();
    for w in prev_owners.values() {
        if !live.contains(w.as_str()) {
            departed.entry(w.clone()).or_insert(input.now_ms);
        }
    }
    departed
        .retain(|w, _| !live.contains(w.as_str()) && !input.left.contains(w) && prev_owners.values().any(|o| o == w));
    let in_grace: Vec<String> =
        departed.iter().filter(|(_, t)| input.now_ms - **t < input.grace_ms).map(|(w, _)| w.clone()).collect();
    let rates: BTreeMap<String, f64> = input.workers.iter().flat_map(|w| w.rates.clone()).collect();
    let specs =
        partition_specs(input.topo, input.topics, input.workers, input.matcher, input.follower_fetching, &rates);
    let wspecs: Vec<WorkerSpec> = input
        .workers
        .iter()
        .map(|w| WorkerSpec { id: w.id.clone(), zone: zone_label(w), capacity: w.capacity })
        .collect();
    // Zone-unaware (baseline) mode balances over every worker; the zones stay in the document
    // so the view still shows what crosses zones.
    let placed: Vec<PartitionSpec> = if input.zone_aware {
        specs.clone()
    } else {
        specs.iter().map(|s| PartitionSpec { zones: vec![], ..s.clone() }).collect()
    };
    let mut a = assign::assign(&placed, &wspecs, &prev_owners, &in_grace);
    if !input.zone_aware {
        a.cross_zone = specs
            .iter()
            .filter(|s| {
                let z =
                    a.owners.get(&s.tp).and_then(|w| wspecs.iter().find(|x| &x.id == w)).and_then(|w| w.zone.clone());
                !z.is_some_and(|z| s.zones.contains(&z))
            })
            .count();
    }
    let owners: BTreeMap<String, String> = a.owners.iter().map(|(tp, w)| (tp.key(), w.clone())).collect();
    let zones: BTreeMap<String, String> =
        specs.iter().filter_map(|s| Some((s.tp.key(), s.zones.first()?.clone()))).collect();
    let mut workers: BTreeMap<String, String> =
        input.workers.iter().map(|w| (w.id.clone(), zone_label(w).unwrap_or_else(|| "unknown".into()))).collect();
    for w in &in_grace {
        let z = input.previous.and_then(|d| d.workers.get(w).cloned()).unwrap_or_else(|| "unknown".into());
        workers.entry(w.clone()).or_insert(z);
    }
    departed.retain(|w, _| in_grace.contains(w));
    let doc = AssignmentDoc {
        generation: input.previous.map_or(1, |p| p.generation + 1),
        master: input.master.to_owned(),
        owners,
        zones,
        workers,
        cross_zone: a.cross_zone,
        waiting: a.waiting,
        written_at_ms: input.now_ms,
        departed_ms: departed,
    };
    (doc, a.moved)
}

/// Whether `next` says something `previous` does not (the generation and time aside).
fn changed(previous: &AssignmentDoc, next: &AssignmentDoc) -> bool {
    previous.owners != next.owners
        || previous.zones != next.zones
        || previous.cross_zone != next.cross_zone
        || previous.waiting != next.waiting
        || previous.master != next.master
        || previous.departed_ms.keys().ne(next.departed_ms.keys())
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
mod scale {
    use std::time::Instant;

    use az_core::topology::{Broker, PartitionInfo, TopicInfo};

    use super::*;
    use crate::shares;

    const ZONES: [&str; 3] = ["use1-az1", "use1-az2", "use1-az3"];

    fn topology(topics: usize, partitions: i32) -> Topology {
        let brokers = (1..=6)
            .map(|id| {
                let b = Broker { id, host: "b".into(), port: 9092, rack: Some(ZONES[(id as usize - 1) % 3].into()) };
                (id, b)
            })
            .collect();
        let topics = (0..topics)
            .map(|t| {
                let parts = (0..partitions)
                    .map(|p| {
                        let leader = p % 6 + 1;
                        PartitionInfo { id: p, leader: Some(leader), replicas: vec![leader], isr: vec![leader] }
                    })
                    .collect();
                (format!("t{t:03}"), TopicInfo::Present(parts))
            })
            .collect();
        Topology { brokers, topics, fetched_at: Some(std::time::SystemTime::now()), generation: 1 }
    }

    fn workers(n: usize) -> Vec<WorkerInfo> {
        (0..n)
            .map(|i| WorkerInfo {
                id: format!("w{i:04}"),
                zone_id: Some(ZONES[i % 3].into()),
                zone_name: None,
                host: "h".into(),
                capacity: 1.0,
                http: String::new(),
                rates: BTreeMap::new(),
            })
            .collect()
    }

    /// 100,000 partitions over 1,000 workers in 3 zones, written to real etcd by the master's own
    /// path: the first assignment fits etcd's request limit with room, reads back whole, a
    /// departed worker's grace changes only the summary, and its partitions moving rewrites only
    /// the shares that receive them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hundred_thousand_partitions_over_a_thousand_workers_fit_etcd() {
        let etcd = testkit::Etcd::start().expect("etcd");
        let cfg = crate::config::EtcdConfig { endpoints: vec![etcd.endpoint()], ..Default::default() };
        let client = coord::connect(&cfg).await.expect("connect");
        let keys = coord::Keys::new("scale");
        let lease = client.clone().lease_grant(60, None).await.expect("lease").id();
        let won = client.election_client().campaign(keys.election(), "m", lease).await.expect("campaign");
        let leader = won.leader().expect("leader").clone();

        let topo = topology(100, 1000);
        let topics: Vec<String> = topo.topics.keys().cloned().collect();
        let mut ws = workers(1000);
        let matcher = ZoneMatcher::default();
        let left = BTreeSet::new();
        let input = |workers: &[WorkerInfo], previous: Option<&AssignmentDoc>, now_ms: i64| {
            plan(&PlanInput {
                topo: &topo,
                topics: &topics,
                workers,
                left: &left,
                previous,
                master: "m",
                matcher: &matcher,
                follower_fetching: false,
                zone_aware: true,
                grace_ms: 10_000,
                now_ms,
            })
            .0
        };

        let started = Instant::now();
        let first = input(&ws, None, 0);
        let planned = started.elapsed();
        let writes = shares::diff(&keys, None, &first).expect("diff");
        let stats = shares::write(&client, writes, leader.key(), leader.rev()).await.expect("write").expect("leader");
        let total = started.elapsed();
        assert_eq!(first.owners.len(), 100_000);
        assert_eq!(first.cross_zone, 0);
        assert_eq!(stats.keys, 1001, "a share per worker and the summary");
        assert!(stats.max_txn_bytes <= shares::MAX_TXN_BYTES, "{stats:?}");
        eprintln!(
            "first assignment: planned in {planned:?}, written in {:?}: {} keys in {} transactions, {} bytes, largest transaction {} bytes (etcd allows 1.5 MiB)",
            total - planned,
            stats.keys,
            stats.txns,
            stats.bytes,
            stats.max_txn_bytes
        );
        let back = shares::full(&client, &keys).await.expect("read").expect("an assignment");
        assert_eq!(back, first, "the assignment reads back whole");
        let (share, _) = shares::own(&client, &keys, "w0001").await.expect("share");
        assert_eq!(share.len(), first.owners.values().filter(|w| *w == "w0001").count());

        // Worker w0007 goes: within its grace its partitions wait for it; only the summary
        // (the departure and its time) is written.
        ws.retain(|w| w.id != "w0007");
        let waiting = input(&ws, Some(&back), 1_000);
        assert!(waiting.waiting > 0 && waiting.departed_ms.contains_key("w0007"));
        let writes = shares::diff(&keys, Some(&back), &waiting).expect("diff");
        let stats = shares::write(&client, writes, leader.key(), leader.rev()).await.expect("write").expect("leader");
        assert_eq!(stats.keys, 1, "{stats:?}");
        // A new master reads the grace clock back instead of starting it again.
        let reread = shares::full(&client, &keys).await.expect("read").expect("an assignment");
        assert_eq!(reread.departed_ms.get("w0007"), Some(&1_000));

        // The grace is over: its partitions move within its zone; only the shares that changed
        // are written.
        let moved = input(&ws, Some(&reread), 20_000);
        assert_eq!(moved.waiting, 0);
        assert_eq!(moved.cross_zone, 0);
        let writes = shares::diff(&keys, Some(&reread), &moved).expect("diff");
        let stats = shares::write(&client, writes, leader.key(), leader.rev()).await.expect("write").expect("leader");
        let receivers = moved
            .owners
            .iter()
            .filter(|(tp, w)| reread.owners.get(*tp) != Some(*w))
            .map(|(_, w)| w)
            .collect::<BTreeSet<_>>();
        assert_eq!(
            stats.keys,
            receivers.len() + 2,
            "receivers, the departed share's deletion and the summary: {stats:?}"
        );
        assert!(receivers.len() <= 334, "{} shares rewritten for one departure", receivers.len());
        eprintln!("one departure: {} keys written in {} transactions ({} bytes)", stats.keys, stats.txns, stats.bytes);
    }
}
