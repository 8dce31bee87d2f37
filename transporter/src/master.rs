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
use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use tokio::sync::watch;

use crate::coord::{self, AssignmentDoc, LeaseState, WorkerInfo};
use crate::worker::Worker;
use az_core::assign::{self, PartitionSpec, Tp, WorkerSpec};

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
    let zones: Vec<(Zone, String)> = workers.iter().filter_map(|w| Some((worker_zone(w)?, zone_label(w)?))).collect();
    let label_of_rack = |rack: &str| -> String {
        zones
            .iter()
            .find(|(z, _)| matcher.matches(z, rack))
            .map(|(_, l)| l.clone())
            .unwrap_or_else(|| matcher.canonical(rack).to_owned())
    };
    let known: Vec<f64> = rates.values().copied().filter(|r| *r > 0.0).collect();
    let mean = if known.is_empty() { 1.0 } else { known.iter().sum::<f64>() / known.len() as f64 };
    let mut out = Vec::new();
    for t in topics {
        for p in topo.partitions(t).unwrap_or_default() {
            let tp = Tp { topic: t.clone(), partition: p.id };
            let brokers: Vec<i32> = if follower_fetching { p.isr.clone() } else { p.leader.into_iter().collect() };
            let mut zs: Vec<String> = brokers.iter().filter_map(|&b| topo.rack_of(b)).map(label_of_rack).collect();
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
    let mut departed: BTreeMap<String, Instant> = BTreeMap::new();
    // The previous assignment carries stickiness: an etcd error reading it stops this term
    // (the campaign starts again) instead of starting from nothing; only a document that is not
    // an assignment at all is replaced.
    let mut previous: Option<AssignmentDoc> = match coord::assignment(etcd, &worker.keys).await {
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
            let live: BTreeSet<&str> = workers.iter().map(|w| w.id.as_str()).collect();
            let prev_owners: BTreeMap<Tp, String> = previous
                .as_ref()
                .map(|d| d.owners.iter().filter_map(|(k, w)| Some((Tp::parse(k)?, w.clone()))).collect())
                .unwrap_or_default();
            // Workers that held partitions and are gone: in grace from when this master first
            // noticed.
            for w in prev_owners.values() {
                if !live.contains(w.as_str()) {
                    departed.entry(w.clone()).or_insert_with(Instant::now);
                }
            }
            // A worker that stopped cleanly released its partitions: no grace for it.
            departed
                .retain(|w, _| !live.contains(w.as_str()) && !left.contains(w) && prev_owners.values().any(|o| o == w));
            let in_grace: Vec<String> =
                departed.iter().filter(|(_, t)| t.elapsed() < grace).map(|(w, _)| w.clone()).collect();
            let rates: BTreeMap<String, f64> = workers.iter().flat_map(|w| w.rates.clone()).collect();
            let specs = partition_specs(&topo, &topics, &workers, &matcher, cfg.kafka.follower_fetching, &rates);
            let wspecs: Vec<WorkerSpec> = workers
                .iter()
                .map(|w| WorkerSpec { id: w.id.clone(), zone: zone_label(w), capacity: w.capacity })
                .collect();
            // Zone-unaware (baseline) mode balances over every worker; the zones stay in the
            // document so the view still shows what crosses zones.
            let placed: Vec<PartitionSpec> = if cfg.assignment.zone_aware {
                specs.clone()
            } else {
                specs.iter().map(|s| PartitionSpec { zones: vec![], ..s.clone() }).collect()
            };
            let mut a = assign::assign(&placed, &wspecs, &prev_owners, &in_grace);
            if !cfg.assignment.zone_aware {
                a.cross_zone = specs
                    .iter()
                    .filter(|s| {
                        let z = a
                            .owners
                            .get(&s.tp)
                            .and_then(|w| wspecs.iter().find(|x| &x.id == w))
                            .and_then(|w| w.zone.clone());
                        !z.is_some_and(|z| s.zones.contains(&z))
                    })
                    .count();
            }
            worker.metrics.cross_zone_partitions.set(a.cross_zone as u64);
            worker.metrics.waiting_partitions.set(a.waiting as u64);
            let owners: BTreeMap<String, String> = a.owners.iter().map(|(tp, w)| (tp.key(), w.clone())).collect();
            let zones: BTreeMap<String, String> =
                specs.iter().filter_map(|s| Some((s.tp.key(), s.zones.first()?.clone()))).collect();
            let mut worker_zones: BTreeMap<String, String> =
                workers.iter().map(|w| (w.id.clone(), zone_label(w).unwrap_or_else(|| "unknown".into()))).collect();
            for w in &in_grace {
                let z = previous.as_ref().and_then(|d| d.workers.get(w).cloned()).unwrap_or_else(|| "unknown".into());
                worker_zones.entry(w.clone()).or_insert(z);
            }
            let changed = previous.as_ref().is_none_or(|p| {
                p.owners != owners
                    || p.zones != zones
                    || p.cross_zone != a.cross_zone
                    || p.waiting != a.waiting
                    || p.master != worker.id
            });
            if changed {
                let doc = AssignmentDoc {
                    generation: previous.as_ref().map_or(1, |p| p.generation + 1),
                    master: worker.id.clone(),
                    owners,
                    zones,
                    workers: worker_zones,
                    cross_zone: a.cross_zone,
                    waiting: a.waiting,
                    written_at_ms: chrono::Utc::now().timestamp_millis(),
                };
                let txn = Txn::new()
                    .when([Compare::create_revision(leader_key.clone(), CompareOp::Equal, leader_rev)])
                    .and_then([TxnOp::put(worker.keys.assignment(), serde_json::to_vec(&doc)?, None)]);
                let mut c = etcd.clone();
                let resp = c.txn(txn).await.context("writing the assignment")?;
                if !resp.succeeded() {
                    anyhow::bail!("no longer the leader; stepping down");
                }
                tracing::info!(
                    generation = doc.generation,
                    cross_zone = doc.cross_zone,
                    waiting = doc.waiting,
                    moved = a.moved,
                    "assignment written"
                );
                previous = Some(doc);
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
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
