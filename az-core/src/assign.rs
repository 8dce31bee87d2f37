//! Assignment of partitions to transporter workers: a pure function of the partitions' zones, the live and
//! recently departed workers, and the previous assignment. No I/O; the master calls it.
//!
//! ```text
//!  partitions (leader zone, ISR zones, weight) ─┐
//!  live workers (zone, capacity)               ├─ assign() ─> partition -> worker, with counts:
//!  departed workers still in their grace period │              cross-zone, waiting for a returning worker
//!  previous assignment (stickiness) ────────────┘
//! ```
//!
//! Rules, in order:
//! 1. A partition whose previous worker departed less than the grace period ago stays with it
//!    (nobody reads it meanwhile), so a restarting worker gets its partitions back.
//! 2. A partition stays with its previous live worker when that worker is in an eligible zone
//!    (the leader's zone; with follower fetching, any in-sync replica's zone).
//! 3. Otherwise it goes to the least loaded live worker (load / capacity) of an eligible zone.
//! 4. With no eligible worker (rack unknown, zone without workers) it goes to the least loaded
//!    worker anywhere and is counted as cross-zone.
//! 5. Within each zone, partitions move from the most to the least loaded worker while that
//!    lowers the maximum and max/mean exceeds the tolerance (1.1). Moves are the minimum needed.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};


pub use crate::topic_partition::TopicPartition;

/// A partition to place.
#[derive(Debug, Clone, PartialEq)]
pub struct PartitionSpec {
    /// Which partition.
    pub tp: TopicPartition,
    /// Zones a reader may be in without crossing zones (leader zone; with follower fetching
    /// every ISR zone). Empty when racks are unknown.
    pub zones: Vec<String>,
    /// Observed bytes/s (or 1.0 when unknown, so counts balance).
    pub weight: f64,
}

/// A live worker.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerSpec {
    /// Worker id.
    pub id: String,
    /// Its zone, if known.
    pub zone: Option<String>,
    /// Relative capacity (1.0 = one standard worker).
    pub capacity: f64,
}

/// The result.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Assignment {
    /// Partition -> worker id (a live worker, or a departed one in its grace period).
    pub owners: BTreeMap<TopicPartition, String>,
    /// Partitions assigned outside their eligible zones.
    pub cross_zone: usize,
    /// Partitions held for a departed worker in its grace period.
    pub waiting: usize,
    /// Partitions that moved relative to the previous assignment.
    pub moved: usize,
}

/// Balance tolerance: max/mean load per zone at or below this is left alone.
pub const TOLERANCE: f64 = 1.1;

#[derive(Clone, Copy, PartialEq)]
struct Load(f64);
impl Eq for Load {}
impl PartialOrd for Load {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Load {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// Computes the assignment. `departed_in_grace` are ids of workers gone for less than the grace
/// period. Deterministic for equal inputs.
pub fn assign(
    partitions: &[PartitionSpec],
    workers: &[WorkerSpec],
    previous: &BTreeMap<TopicPartition, String>,
    departed_in_grace: &[String],
) -> Assignment {
    let mut out = Assignment::default();
    if workers.is_empty() {
        // Nobody to read: keep what departed workers may come back for, nothing else.
        for p in partitions {
            if let Some(w) = previous.get(&p.tp).filter(|w| departed_in_grace.contains(w)) {
                out.owners.insert(p.tp.clone(), w.clone());
                out.waiting += 1;
            }
        }
        return out;
    }
    let index: HashMap<&str, usize> = workers.iter().enumerate().map(|(i, w)| (w.id.as_str(), i)).collect();
    let mut load = vec![0.0f64; workers.len()];
    let cap = |i: usize| workers[i].capacity.max(0.01);
    let mut by_zone: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, w) in workers.iter().enumerate() {
        if let Some(z) = &w.zone {
            by_zone.entry(z.as_str()).or_default().push(i);
        }
    }
    // Per worker: the partitions it holds (index into `partitions`), for rebalancing.
    let mut held: Vec<Vec<usize>> = vec![Vec::new(); workers.len()];
    let mut unplaced = Vec::new();

    for (pi, p) in partitions.iter().enumerate() {
        let prev = previous.get(&p.tp);
        if let Some(w) = prev.filter(|w| departed_in_grace.contains(w)) {
            out.owners.insert(p.tp.clone(), w.clone());
            out.waiting += 1;
            continue;
        }
        let keep = prev.and_then(|w| index.get(w.as_str()).copied()).filter(|&i| {
            let z = workers[i].zone.as_deref();
            if p.zones.is_empty() || !p.zones.iter().any(|pz| by_zone.contains_key(pz.as_str())) {
                // No eligible zone has workers: any live worker may keep it.
                true
            } else {
                z.is_some_and(|z| p.zones.iter().any(|pz| pz == z))
            }
        });
        match keep {
            Some(i) => {
                load[i] += p.weight;
                held[i].push(pi);
            }
            None => unplaced.push(pi),
        }
    }

    // Heaviest first places large partitions while there is most room.
    unplaced.sort_by(|&a, &b| partitions[b].weight.total_cmp(&partitions[a].weight).then(a.cmp(&b)));
    // A min-heap of (load/capacity, worker) per eligible zone, plus one over all workers; stale
    // entries are skipped lazily.
    let mut heaps: HashMap<&str, BinaryHeap<Reverse<(Load, usize)>>> = HashMap::new();
    for (z, ws) in &by_zone {
        heaps.insert(z, ws.iter().map(|&i| Reverse((Load(load[i] / cap(i)), i))).collect());
    }
    let mut global: BinaryHeap<Reverse<(Load, usize)>> =
        (0..workers.len()).map(|i| Reverse((Load(load[i] / cap(i)), i))).collect();
    let pop_min = |heap: &mut BinaryHeap<Reverse<(Load, usize)>>, load: &[f64]| -> Option<usize> {
        while let Some(Reverse((Load(l), i))) = heap.pop() {
            if (l - load[i] / cap(i)).abs() < 1e-9 {
                return Some(i);
            }
        }
        None
    };
    for pi in unplaced {
        let p = &partitions[pi];
        // The least loaded worker over the eligible zones.
        let mut best: Option<(f64, usize, &str)> = None;
        for z in &p.zones {
            if let Some(h) = heaps.get_mut(z.as_str())
                && let Some(i) = pop_min(h, &load)
            {
                let l = load[i] / cap(i);
                h.push(Reverse((Load(l), i)));
                if best.is_none_or(|(bl, bi, _)| l < bl || (l == bl && i < bi)) {
                    best = Some((l, i, z.as_str()));
                }
            }
        }
        let i = match best {
            Some((_, i, _)) => i,
            None => pop_min(&mut global, &load).unwrap_or(0),
        };
        load[i] += p.weight;
        held[i].push(pi);
        if let Some(z) = workers[i].zone.as_deref()
            && let Some(h) = heaps.get_mut(z)
        {
            h.push(Reverse((Load(load[i] / cap(i)), i)));
        }
        global.push(Reverse((Load(load[i] / cap(i)), i)));
    }

    // Rebalance within each zone: only partitions whose eligible zones include the zone move,
    // so locality is never traded for balance.
    for ws in by_zone.values() {
        rebalance_zone(ws, partitions, workers, &mut load, &mut held);
    }

    for (i, ps) in held.iter().enumerate() {
        for &pi in ps {
            out.owners.insert(partitions[pi].tp.clone(), workers[i].id.clone());
            let local = workers[i].zone.as_deref().is_some_and(|z| partitions[pi].zones.iter().any(|pz| pz == z));
            if !local {
                out.cross_zone += 1;
            }
        }
    }
    out.moved = out.owners.iter().filter(|(tp, w)| previous.get(*tp).is_some_and(|pw| pw != *w)).count();
    out
}

fn rebalance_zone(
    ws: &[usize],
    partitions: &[PartitionSpec],
    workers: &[WorkerSpec],
    load: &mut [f64],
    held: &mut [Vec<usize>],
) {
    if ws.len() < 2 {
        return;
    }
    let cap = |i: usize| workers[i].capacity.max(0.01);
    let zone = workers[ws[0]].zone.as_deref();
    let movable = |pi: usize| zone.is_some_and(|z| partitions[pi].zones.iter().any(|pz| pz == z));
    // Bounded: every move strictly lowers the zone's maximum or stops.
    for _ in 0..partitions.len().max(1) * 2 {
        let total: f64 = ws.iter().map(|&i| load[i]).sum();
        let total_cap: f64 = ws.iter().map(|&i| cap(i)).sum();
        if total <= 0.0 {
            return;
        }
        let mean = total / total_cap;
        let Some(&hi) = ws.iter().max_by(|&&a, &&b| (load[a] / cap(a)).total_cmp(&(load[b] / cap(b))).then(b.cmp(&a)))
        else {
            return;
        };
        let Some(&lo) = ws.iter().min_by(|&&a, &&b| (load[a] / cap(a)).total_cmp(&(load[b] / cap(b))).then(a.cmp(&b)))
        else {
            return;
        };
        let (hi_l, lo_l) = (load[hi] / cap(hi), load[lo] / cap(lo));
        if hi_l <= mean * TOLERANCE || hi == lo {
            return;
        }
        // The partition whose move lowers the pair's maximum the most.
        let gap = hi_l - lo_l;
        let best = held[hi]
            .iter()
            .enumerate()
            .filter(|&(_, &pi)| movable(pi))
            .map(|(k, &pi)| {
                let w = partitions[pi].weight;
                let new_max = ((load[hi] - w) / cap(hi)).max((load[lo] + w) / cap(lo));
                (k, pi, new_max)
            })
            .filter(|&(_, _, new_max)| new_max < hi_l - 1e-12 && gap > 0.0)
            .min_by(|a, b| a.2.total_cmp(&b.2).then(a.1.cmp(&b.1)));
        let Some((k, pi, _)) = best else { return };
        held[hi].swap_remove(k);
        held[lo].push(pi);
        load[hi] -= partitions[pi].weight;
        load[lo] += partitions[pi].weight;
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn tp(p: i32) -> TopicPartition {
        TopicPartition { topic: "t".into(), partition: p }
    }

    fn parts(n: i32, zones: usize) -> Vec<PartitionSpec> {
        (0..n)
            .map(|p| PartitionSpec { tp: tp(p), zones: vec![format!("z{}", p as usize % zones)], weight: 1.0 })
            .collect()
    }

    fn workers(per_zone: usize, zones: usize) -> Vec<WorkerSpec> {
        (0..zones)
            .flat_map(|z| {
                (0..per_zone).map(move |k| WorkerSpec {
                    id: format!("w{z}-{k}"),
                    zone: Some(format!("z{z}")),
                    capacity: 1.0,
                })
            })
            .collect()
    }

    fn zone_of<'a>(ws: &'a [WorkerSpec], id: &str) -> Option<&'a str> {
        ws.iter().find(|w| w.id == id).and_then(|w| w.zone.as_deref())
    }

    #[test]
    fn every_partition_in_its_leader_zone_and_balanced() {
        let ps = parts(12, 3);
        let ws = workers(2, 3);
        let a = assign(&ps, &ws, &BTreeMap::new(), &[]);
        assert_eq!(a.owners.len(), 12);
        assert_eq!(a.cross_zone, 0);
        for p in &ps {
            assert_eq!(zone_of(&ws, &a.owners[&p.tp]), Some(p.zones[0].as_str()));
        }
        let mut counts: BTreeMap<&String, usize> = BTreeMap::new();
        for w in a.owners.values() {
            *counts.entry(w).or_default() += 1;
        }
        assert!(counts.values().all(|&c| c == 2), "{counts:?}");
    }

    #[test]
    fn sticky_and_grace() {
        let ps = parts(12, 3);
        let ws = workers(2, 3);
        let first = assign(&ps, &ws, &BTreeMap::new(), &[]);
        let again = assign(&ps, &ws, &first.owners, &[]);
        assert_eq!(again.owners, first.owners);
        assert_eq!(again.moved, 0);

        // w0-0 departs: within grace its partitions wait for it.
        let without: Vec<WorkerSpec> = ws.iter().filter(|w| w.id != "w0-0").cloned().collect();
        let waiting = assign(&ps, &without, &first.owners, &["w0-0".into()]);
        let held: Vec<&TopicPartition> = first.owners.iter().filter(|(_, w)| *w == "w0-0").map(|(t, _)| t).collect();
        assert_eq!(waiting.waiting, held.len());
        for t in &held {
            assert_eq!(waiting.owners[*t], "w0-0");
        }
        // It comes back: it gets them again, nothing moves.
        let back = assign(&ps, &ws, &waiting.owners, &[]);
        assert_eq!(back.owners, first.owners);
        // Grace over: they move to the other worker of the same zone.
        let moved = assign(&ps, &without, &first.owners, &[]);
        for t in &held {
            assert_eq!(moved.owners[*t], "w0-1");
        }
        assert_eq!(moved.cross_zone, 0);
    }

    #[test]
    fn zone_without_workers_and_unknown_rack_are_counted() {
        let mut ps = parts(6, 3);
        ps.push(PartitionSpec { tp: tp(99), zones: vec![], weight: 1.0 });
        let ws: Vec<WorkerSpec> = workers(1, 3).into_iter().filter(|w| w.zone.as_deref() != Some("z2")).collect();
        let a = assign(&ps, &ws, &BTreeMap::new(), &[]);
        assert_eq!(a.owners.len(), 7);
        assert_eq!(a.cross_zone, 3, "two z2 partitions and one without rack");
    }

    #[test]
    fn follower_fetching_uses_any_isr_zone() {
        let ps: Vec<PartitionSpec> = (0..6)
            .map(|p| PartitionSpec { tp: tp(p), zones: vec!["z0".into(), "z1".into(), "z2".into()], weight: 1.0 })
            .collect();
        let ws: Vec<WorkerSpec> = workers(1, 3).into_iter().filter(|w| w.zone.as_deref() == Some("z1")).collect();
        let a = assign(&ps, &ws, &BTreeMap::new(), &[]);
        assert_eq!(a.cross_zone, 0);
        assert!(a.owners.values().all(|w| w == "w1-0"));
    }

    #[test]
    fn weights_and_capacity_balance() {
        let ps: Vec<PartitionSpec> = (0..20)
            .map(|p| PartitionSpec { tp: tp(p), zones: vec!["z0".into()], weight: if p < 2 { 10.0 } else { 1.0 } })
            .collect();
        let ws = vec![
            WorkerSpec { id: "a".into(), zone: Some("z0".into()), capacity: 1.0 },
            WorkerSpec { id: "b".into(), zone: Some("z0".into()), capacity: 1.0 },
        ];
        let a = assign(&ps, &ws, &BTreeMap::new(), &[]);
        let load = |id: &str| ps.iter().filter(|p| a.owners[&p.tp] == id).map(|p| p.weight).sum::<f64>();
        assert_eq!(load("a") + load("b"), 38.0);
        assert!((load("a") - load("b")).abs() <= 1.0, "{} vs {}", load("a"), load("b"));
    }

    #[test]
    fn rebalances_when_a_worker_joins_with_few_moves() {
        let ps = parts(30, 1);
        let two: Vec<WorkerSpec> = workers(2, 1);
        let first = assign(&ps, &two, &BTreeMap::new(), &[]);
        let three = workers(3, 1);
        let next = assign(&ps, &three, &first.owners, &[]);
        let count = |id: &str| next.owners.values().filter(|w| *w == id).count();
        let counts = [count("w0-0"), count("w0-1"), count("w0-2")];
        let max = counts.iter().copied().max().unwrap_or(0) as f64;
        assert!(max / 10.0 <= TOLERANCE + 1e-9, "{counts:?}");
        assert!(counts[2] >= 8, "{counts:?}");
        assert_eq!(next.moved, counts[2], "only what the new worker takes moves");
    }

    #[test]
    fn tp_keys_round_trip() {
        let t = TopicPartition { topic: "a.b-c".into(), partition: 17 };
        assert_eq!(TopicPartition::parse(&t.key()), Some(t));
        assert_eq!(TopicPartition::parse("nopartition"), None);
        assert_eq!(TopicPartition::parse("t/x"), None);
    }

    proptest! {
        /// Every partition is assigned; partitions with an eligible zone that has workers are
        /// never cross-zone; per zone, max/mean <= 1.1 whenever unit weights make it possible.
        #[test]
        fn invariants(n in 1i32..200, per_zone in proptest::collection::vec(0usize..5, 3), seed_prev in any::<bool>()) {
            let ps = parts(n, 3);
            let ws: Vec<WorkerSpec> = per_zone.iter().enumerate().flat_map(|(z, &k)| (0..k).map(move |j| WorkerSpec {
                id: format!("w{z}-{j}"), zone: Some(format!("z{z}")), capacity: 1.0 })).collect();
            let prev = if seed_prev { assign(&ps, &ws, &BTreeMap::new(), &[]).owners } else { BTreeMap::new() };
            let a = assign(&ps, &ws, &prev, &[]);
            if ws.is_empty() {
                prop_assert!(a.owners.is_empty());
                return Ok(());
            }
            prop_assert_eq!(a.owners.len(), n as usize);
            let mut cross = 0;
            for p in &ps {
                let z = zone_of(&ws, &a.owners[&p.tp]);
                if per_zone[p.tp.partition as usize % 3] > 0 {
                    prop_assert_eq!(z, Some(p.zones[0].as_str()));
                } else {
                    cross += 1;
                }
            }
            prop_assert_eq!(a.cross_zone, cross);
            for (z, &k) in per_zone.iter().enumerate() {
                if k == 0 { continue; }
                let counts: Vec<usize> = (0..k).map(|j| a.owners.values().filter(|w| **w == format!("w{z}-{j}")).count()).collect();
                let (max, min) = (*counts.iter().max().unwrap_or(&0), *counts.iter().min().unwrap_or(&0));
                prop_assert!(max - min <= 1, "zone {} counts {:?}", z, counts);
            }
        }
    }

    #[test]
    fn hundred_thousand_partitions_thousand_workers_is_fast() {
        let ps = parts(100_000, 3);
        let ws = workers(334, 3);
        let start = std::time::Instant::now();
        let a = assign(&ps, &ws, &BTreeMap::new(), &[]);
        let first = start.elapsed();
        let again = assign(&ps, &ws, &a.owners, &[]);
        assert_eq!(a.owners.len(), 100_000);
        assert_eq!(again.moved, 0);
        // Timing is reported, not asserted (benchmarks do ratios); this guards the complexity.
        println!("100k x 1002: {first:?}");
    }
}
