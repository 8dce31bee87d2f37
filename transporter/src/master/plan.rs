//! The master's decisions, pure: from what it read (topology, registered workers, clean stops,
//! the assignment in force) to the next assignment document and whether it must be written.
//!
//! ```text
//!  Topology + topics ──partition_specs()──> PartitionSpec { zones (racks → worker zone labels), weight (rates) }
//!  WorkerInfo[]      ──────────────────────> WorkerSpec { zone label, capacity }
//!  previous doc ──owners──────────────────> stickiness
//!               ──departed_ms + left + now─> departed workers still in grace
//!        └──────────────── az_core::assign() ──> AssignmentDoc (generation + 1) + moved + changed
//! ```
//!
//! Grace clocks are wall-clock Unix milliseconds kept in the document itself, so that a new
//! master continues a departed worker's grace period instead of starting it again.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use az_core::assign::{self, Assignment, PartitionSpec, WorkerSpec};
use az_core::{TopicPartition, Topology, Zone, ZoneMatcher};

use crate::config::TransporterConfig;
use crate::coord::{AssignmentDoc, WorkerInfo};

#[cfg(test)]
mod tests;

/// The label of a worker or partition whose zone is not known.
const UNKNOWN: &str = "unknown";

fn worker_zone(w: &WorkerInfo) -> Option<Zone> {
    (w.zone_id.is_some() || w.zone_name.is_some()).then(|| Zone { id: w.zone_id.clone(), name: w.zone_name.clone() })
}

/// The zone label a worker is grouped by.
pub fn zone_label(w: &WorkerInfo) -> Option<String> {
    w.zone_id.clone().or_else(|| w.zone_name.clone())
}

/// A zone some worker is in, with the label workers of that zone are grouped by.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LabelledZone {
    zone: Zone,
    label: String,
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
    rates: &BTreeMap<TopicPartition, f64>,
) -> Vec<PartitionSpec> {
    // A few zones among many workers, a few racks among many partitions: match each rack once.
    let mut zones: Vec<LabelledZone> =
        workers.iter().filter_map(|w| Some(LabelledZone { zone: worker_zone(w)?, label: zone_label(w)? })).collect();
    zones.sort_by(|a, b| (&a.zone.id, &a.zone.name, &a.label).cmp(&(&b.zone.id, &b.zone.name, &b.label)));
    zones.dedup();
    let mut labels: BTreeMap<String, String> = BTreeMap::new();
    let mut label_of_rack = |rack: &str| -> String {
        labels
            .entry(rack.to_owned())
            .or_insert_with(|| {
                zones
                    .iter()
                    .find(|z| matcher.matches(&z.zone, rack))
                    .map(|z| z.label.clone())
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
            let weight = rates.get(&tp).filter(|r| **r > 0.0).map_or(1.0, |r| (r / mean).max(0.01));
            out.push(PartitionSpec { tp, zones: zs, weight });
        }
    }
    out
}

/// How the master plans, from the configuration; the same for its whole term.
#[derive(Debug, Clone)]
pub struct PlanSettings {
    /// How racks are matched to zones.
    pub matcher: ZoneMatcher,
    /// Any in-sync replica's zone is eligible, not only the leader's.
    pub follower_fetching: bool,
    /// Zone-aware (off: the baseline that balances over every worker).
    pub zone_aware: bool,
    /// How long a departed worker's partitions wait for it.
    pub grace_ms: i64,
    /// How long a partition's new leader must lead before the plan follows it (`steady`).
    pub leader_settle_ms: i64,
    /// How long registrations must be still before a new deployment's first plan
    /// (`assignment.formation-ms`).
    pub formation_ms: i64,
}

impl PlanSettings {
    /// The settings a configuration gives.
    pub fn new(cfg: &TransporterConfig) -> PlanSettings {
        let grace = Duration::from_secs(cfg.worker.grace_period_secs);
        PlanSettings {
            matcher: cfg.zone.matcher(),
            follower_fetching: cfg.kafka.follower_fetching,
            zone_aware: cfg.assignment.zone_aware,
            grace_ms: i64::try_from(grace.as_millis()).unwrap_or(i64::MAX),
            leader_settle_ms: i64::try_from(cfg.assignment.leader_settle_secs.saturating_mul(1000)).unwrap_or(i64::MAX),
            formation_ms: i64::try_from(cfg.assignment.formation_ms).unwrap_or(i64::MAX),
        }
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
    /// Wall-clock now (grace clocks are wall-clock so a new master keeps them).
    pub now_ms: i64,
    /// The term's settings.
    pub settings: &'a PlanSettings,
}

/// The next assignment and what it changes.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The next document (its generation one more than the previous one's).
    pub doc: AssignmentDoc,
    /// Partitions that moved to another worker.
    pub moved: usize,
    /// Whether the document says something the previous one does not (or there was none): only
    /// then is it written, so an idle fleet does not write every half second.
    pub changed: bool,
}

/// Whether the inputs can be trusted: a topology fetched at least once, the topics listed (with a
/// pattern, the cluster must have answered), and some topic answered with partitions. Planning
/// from less would write an empty assignment and make every worker drop its partitions.
pub fn can_plan(topo: &Topology, topics: &[String], listed: bool) -> bool {
    let answered = topics.is_empty() || topics.iter().any(|t| topo.partitions(t).is_some_and(|p| !p.is_empty()));
    topo.is_fetched() && listed && answered
}

/// The next assignment: pure, no I/O.
pub fn plan(input: &PlanInput<'_>) -> Plan {
    let previous_owners: BTreeMap<TopicPartition, String> =
        input.previous.map(|d| d.owners.clone()).unwrap_or_default();
    let departed = departed(input, &previous_owners);
    let in_grace: Vec<String> =
        departed.iter().filter(|(_, t)| input.now_ms - **t < input.settings.grace_ms).map(|(w, _)| w.clone()).collect();
    let rates: BTreeMap<TopicPartition, f64> = input.workers.iter().flat_map(|w| w.rates.clone()).collect();
    let s = input.settings;
    let specs = partition_specs(input.topo, input.topics, input.workers, &s.matcher, s.follower_fetching, &rates);
    let workers: Vec<WorkerSpec> = input
        .workers
        .iter()
        .map(|w| WorkerSpec { id: w.id.clone(), zone: zone_label(w), capacity: w.capacity })
        .collect();
    let a = place(&specs, &workers, &previous_owners, &in_grace, s.zone_aware);
    let moved = a.moved;
    let doc = document(input, &specs, a, departed, &in_grace);
    let changed = input.previous.is_none_or(|p| changed(p, &doc));
    Plan { doc, moved, changed }
}

/// Workers that held partitions and are gone, with when a master first noticed: the clocks of
/// the previous document are kept, so a new master does not restart them. A worker that stopped
/// cleanly released its partitions: no grace for it.
fn departed(input: &PlanInput<'_>, previous_owners: &BTreeMap<TopicPartition, String>) -> BTreeMap<String, i64> {
    let live: BTreeSet<&str> = input.workers.iter().map(|w| w.id.as_str()).collect();
    let mut departed: BTreeMap<String, i64> = input.previous.map(|d| d.departed_ms.clone()).unwrap_or_default();
    for w in previous_owners.values() {
        if !live.contains(w.as_str()) {
            departed.entry(w.clone()).or_insert(input.now_ms);
        }
    }
    departed.retain(|w, _| {
        !live.contains(w.as_str()) && !input.left.contains(w) && previous_owners.values().any(|o| o == w)
    });
    departed
}

/// Places the partitions. Zone-unaware (baseline) mode balances over every worker, then counts
/// what crosses zones by the partitions' real zones, so the view still shows it.
fn place(
    specs: &[PartitionSpec],
    workers: &[WorkerSpec],
    previous_owners: &BTreeMap<TopicPartition, String>,
    in_grace: &[String],
    zone_aware: bool,
) -> Assignment {
    if zone_aware {
        return assign::assign(specs, workers, previous_owners, in_grace);
    }
    let anywhere: Vec<PartitionSpec> = specs.iter().map(|s| PartitionSpec { zones: vec![], ..s.clone() }).collect();
    let mut a = assign::assign(&anywhere, workers, previous_owners, in_grace);
    a.cross_zone = specs
        .iter()
        .filter(|s| {
            let zone =
                a.owners.get(&s.tp).and_then(|w| workers.iter().find(|x| &x.id == w)).and_then(|w| w.zone.clone());
            !zone.is_some_and(|z| s.zones.contains(&z))
        })
        .count();
    a
}

/// The document for an assignment: every live worker and every departed one still in grace is
/// listed with its zone (a departed worker's from the previous document).
fn document(
    input: &PlanInput<'_>,
    specs: &[PartitionSpec],
    a: Assignment,
    mut departed: BTreeMap<String, i64>,
    in_grace: &[String],
) -> AssignmentDoc {
    let zones: BTreeMap<TopicPartition, String> =
        specs.iter().filter_map(|s| Some((s.tp.clone(), s.zones.first()?.clone()))).collect();
    let mut workers: BTreeMap<String, String> =
        input.workers.iter().map(|w| (w.id.clone(), zone_label(w).unwrap_or_else(|| UNKNOWN.into()))).collect();
    for w in in_grace {
        let z = input.previous.and_then(|d| d.workers.get(w).cloned()).unwrap_or_else(|| UNKNOWN.into());
        workers.entry(w.clone()).or_insert(z);
    }
    departed.retain(|w, _| in_grace.contains(w));
    AssignmentDoc {
        generation: input.previous.map_or(1, |p| p.generation + 1),
        master: input.master.to_owned(),
        owners: a.owners,
        zones,
        workers,
        cross_zone: a.cross_zone,
        waiting: a.waiting,
        written_at_ms: input.now_ms,
        departed_ms: departed,
    }
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
