//! Leader placement from the traffic each zone produces (issue 26). Zone-aware producing sends a
//! zone's whole traffic to the partitions led in that zone, so partition load follows where
//! leaders are. Kafka places leaders without regard to client zones. This plans a placement
//! that gives each zone a share of leaders proportional to its traffic, only by choosing which
//! existing replica leads (the preferred replica first): replica sets, and with them the rack
//! spread, stay as they are, and no data moves. Pure logic.
//!
//! ```text
//!  zone rates ──largest remainder──> leaders per zone (every producing zone at least one)
//!  partitions: keep a leader whose zone still wants one; the rest, most constrained first,
//!     to the replica zone that wants most, its least loaded replica broker in that zone
//!  ──> replicas reordered (new leader first) ──> load per partition before and after
//! ```

use std::collections::{BTreeMap, BTreeSet};

use crate::topology::PartitionInfo;

pub mod apply;

/// Why no plan could be made.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    /// No zone that holds replicas produces anything.
    #[error("no zone that holds replicas of the topic has a produce rate above 0")]
    NoTraffic,
    /// A partition has no replica in a known zone.
    #[error("partition {0} has no replica on a broker with a known zone (broker.rack)")]
    NoZone(i32),
}

/// One partition in a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    /// Partition id.
    pub partition: i32,
    /// The leader now (`None` while the partition has none).
    pub leader_before: Option<i32>,
    /// Its replicas now, preferred leader first.
    pub replicas_before: Vec<i32>,
    /// The same replicas, the planned leader first.
    pub replicas: Vec<i32>,
    /// The zone of the planned leader.
    pub zone: String,
}

impl Placed {
    /// The planned leader.
    pub fn leader(&self) -> i32 {
        self.replicas[0]
    }
}

/// A leader placement.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Every partition, by id.
    pub partitions: Vec<Placed>,
    /// Leaders each zone should have.
    pub targets: BTreeMap<String, usize>,
}

/// Leaders per zone, proportional to `rates` over `partitions` (largest remainder), among
/// `zones` that can lead. Every producing zone gets one at least while there are enough
/// partitions: without one, its agents write across zones.
pub fn targets(rates: &BTreeMap<String, f64>, partitions: usize, zones: &BTreeSet<String>) -> BTreeMap<String, usize> {
    let producing: Vec<(&String, f64)> =
        rates.iter().filter(|(z, r)| zones.contains(*z) && r.is_finite() && **r > 0.0).map(|(z, r)| (z, *r)).collect();
    let total: f64 = producing.iter().map(|(_, r)| r).sum();
    let mut out: BTreeMap<String, usize> = zones.iter().map(|z| (z.clone(), 0)).collect();
    if producing.is_empty() || partitions == 0 {
        return out;
    }
    let exact: Vec<(&String, f64)> = producing.iter().map(|(z, r)| (*z, r / total * partitions as f64)).collect();
    let mut given = 0;
    for (z, e) in &exact {
        let n = (e.floor() as usize).max(usize::from(partitions >= producing.len()));
        out.insert((*z).clone(), n);
        given += n;
    }
    // The rest to the largest remainders; a zone raised to one above took from them.
    let mut by_remainder = exact.clone();
    by_remainder.sort_by(|a, b| (b.1 - b.1.floor()).total_cmp(&(a.1 - a.1.floor())).then(a.0.cmp(b.0)));
    let mut i = 0;
    while given < partitions {
        let z = by_remainder[i % by_remainder.len()].0;
        *out.entry(z.clone()).or_default() += 1;
        given += 1;
        i += 1;
    }
    while given > partitions {
        // Too many minimums: take back from the zone with the most.
        let Some(z) = out.iter().max_by_key(|(_, n)| **n).map(|(z, _)| z.clone()) else { break };
        *out.entry(z).or_default() -= 1;
        given -= 1;
    }
    out
}

/// Plans leaders for one topic's `partitions`, whose brokers are in the zones `zone_of` gives,
/// from each zone's produce rate.
pub fn plan(
    partitions: &[PartitionInfo],
    zone_of: &BTreeMap<i32, String>,
    rates: &BTreeMap<String, f64>,
) -> Result<Plan, PlanError> {
    if !rates.values().any(|r| r.is_finite() && *r > 0.0) {
        return Err(PlanError::NoTraffic);
    }
    // Only an in-sync replica can be elected. A partition with none (offline) is left as it
    // is: its preferred replica stays first.
    let eligible = |p: &PartitionInfo| -> Vec<i32> {
        let isr: Vec<i32> = p.replicas.iter().copied().filter(|b| p.isr.contains(b)).collect();
        if isr.is_empty() { p.replicas.first().copied().into_iter().collect() } else { isr }
    };
    let zones_of = |p: &PartitionInfo| -> BTreeSet<String> {
        eligible(p).iter().filter_map(|b| zone_of.get(b).cloned()).collect()
    };
    if let Some(p) = partitions.iter().find(|p| zones_of(p).is_empty()) {
        return Err(PlanError::NoZone(p.id));
    }
    let all: BTreeSet<String> = partitions.iter().flat_map(zones_of).collect();
    let targets = targets(rates, partitions.len(), &all);
    if targets.values().sum::<usize>() == 0 {
        return Err(PlanError::NoTraffic);
    }
    let mut wanted: BTreeMap<String, i64> = targets.iter().map(|(z, n)| (z.clone(), *n as i64)).collect();
    let mut chosen: BTreeMap<i32, String> = BTreeMap::new();
    // A leader whose zone still wants one stays: fewer elections.
    for p in partitions {
        if let Some(z) = p.leader.and_then(|l| zone_of.get(&l))
            && wanted.get(z).is_some_and(|w| *w > 0)
        {
            *wanted.entry(z.clone()).or_default() -= 1;
            chosen.insert(p.id, z.clone());
        }
    }
    // The rest, those with fewest zones to choose from first, to the zone that wants most.
    let mut rest: Vec<&PartitionInfo> = partitions.iter().filter(|p| !chosen.contains_key(&p.id)).collect();
    rest.sort_by_key(|p| (zones_of(p).len(), p.id));
    for p in rest {
        let zone = zones_of(p)
            .into_iter()
            .max_by_key(|z| (wanted.get(z).copied().unwrap_or(i64::MIN), std::cmp::Reverse(z.clone())))
            .ok_or(PlanError::NoZone(p.id))?;
        *wanted.entry(zone.clone()).or_default() -= 1;
        chosen.insert(p.id, zone);
    }
    // Within its zone, a partition is led by its current leader if that is there, else by the
    // replica leading fewest partitions so far.
    let mut leading: BTreeMap<i32, usize> = BTreeMap::new();
    let mut out = Vec::with_capacity(partitions.len());
    for p in partitions {
        let zone = chosen.get(&p.id).cloned().ok_or(PlanError::NoZone(p.id))?;
        let in_zone: Vec<i32> = eligible(p).into_iter().filter(|b| zone_of.get(b) == Some(&zone)).collect();
        let leader = match p.leader.filter(|l| in_zone.contains(l)) {
            Some(l) => l,
            None => *in_zone
                .iter()
                .min_by_key(|b| (leading.get(b).copied().unwrap_or(0), **b))
                .ok_or(PlanError::NoZone(p.id))?,
        };
        *leading.entry(leader).or_default() += 1;
        let mut replicas = vec![leader];
        replicas.extend(p.replicas.iter().copied().filter(|b| *b != leader));
        out.push(Placed {
            partition: p.id,
            leader_before: p.leader,
            replicas_before: p.replicas.clone(),
            replicas,
            zone,
        });
    }
    Ok(Plan { partitions: out, targets })
}

/// The load of each partition when every zone's agents spread its rate evenly over the
/// partitions led in that zone (`leader_zones[i]`: the zone of partition `i`'s leader). A zone
/// that leads none sends its traffic across zones, spread over all partitions.
pub fn loads(leader_zones: &[Option<&str>], rates: &BTreeMap<String, f64>) -> Vec<f64> {
    let mut led: BTreeMap<&str, usize> = BTreeMap::new();
    for z in leader_zones.iter().flatten() {
        *led.entry(z).or_default() += 1;
    }
    let mut out: Vec<f64> =
        leader_zones.iter().map(|z| z.and_then(|z| Some(rates.get(z)? / *led.get(z)? as f64)).unwrap_or(0.0)).collect();
    let orphan: f64 = rates.iter().filter(|(z, _)| !led.contains_key(z.as_str())).map(|(_, r)| r).sum();
    if !out.is_empty() {
        let share = orphan / out.len() as f64;
        out.iter_mut().for_each(|l| *l += share);
    }
    out
}

/// max / mean of `loads` (1.0 is even; 0 loads give 1.0).
pub fn skew(loads: &[f64]) -> f64 {
    let mean = loads.iter().sum::<f64>() / loads.len().max(1) as f64;
    let max = loads.iter().copied().fold(0.0, f64::max);
    if mean > 0.0 { max / mean } else { 1.0 }
}

/// The plan as `kafka-reassign-partitions.sh --execute` takes it: the same replicas, reordered.
pub fn reassignment_json(topic: &str, plan: &Plan) -> serde_json::Value {
    let partitions: Vec<serde_json::Value> = plan
        .partitions
        .iter()
        .filter(|p| p.replicas != p.replicas_before)
        .map(|p| serde_json::json!({ "topic": topic, "partition": p.partition, "replicas": p.replicas }))
        .collect();
    serde_json::json!({ "version": 1, "partitions": partitions })
}

/// The preferred-leader election step as `kafka-leader-election.sh --path-to-json-file` takes
/// it: every partition whose leader changes.
pub fn election_json(topic: &str, plan: &Plan) -> serde_json::Value {
    let partitions: Vec<serde_json::Value> = plan
        .partitions
        .iter()
        .filter(|p| p.leader_before != Some(p.leader()))
        .map(|p| serde_json::json!({ "topic": topic, "partition": p.partition }))
        .collect();
    serde_json::json!({ "partitions": partitions })
}

/// One partition's expected load before and after a plan.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Row {
    /// Partition id.
    pub partition: i32,
    /// Leader and its zone now.
    pub leader_before: Option<i32>,
    /// The zone leading now.
    pub zone_before: Option<String>,
    /// Expected load now (rate units as given).
    pub load_before: f64,
    /// Planned leader.
    pub leader_after: i32,
    /// Its zone.
    pub zone_after: String,
    /// Expected load after.
    pub load_after: f64,
}

/// The before/after table of `plan`: per partition, its leader and expected load, and the skew
/// (max/mean) before and after.
pub fn table(plan: &Plan, zone_of: &BTreeMap<i32, String>, rates: &BTreeMap<String, f64>) -> (Vec<Row>, f64, f64) {
    let before_zones: Vec<Option<&str>> =
        plan.partitions.iter().map(|p| p.leader_before.and_then(|l| zone_of.get(&l)).map(String::as_str)).collect();
    let after_zones: Vec<Option<&str>> = plan.partitions.iter().map(|p| Some(p.zone.as_str())).collect();
    let (before, after) = (loads(&before_zones, rates), loads(&after_zones, rates));
    let rows = plan
        .partitions
        .iter()
        .enumerate()
        .map(|(i, p)| Row {
            partition: p.partition,
            leader_before: p.leader_before,
            zone_before: before_zones[i].map(str::to_owned),
            load_before: before[i],
            leader_after: p.leader(),
            zone_after: p.zone.clone(),
            load_after: after[i],
        })
        .collect();
    (rows, skew(&before), skew(&after))
}

#[cfg(test)]
mod tests;
