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

/// A load per capacity that orders totally (`f64` alone does not), so that it can key a heap.
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
    if workers.is_empty() {
        return waiting_only(partitions, previous, departed_in_grace);
    }
    let mut out = Assignment::default();
    let mut placement = Placement::new(partitions, workers);
    let unplaced = placement.keep_previous(previous, departed_in_grace, &mut out);
    placement.place(unplaced);
    // Rebalance within each zone: only partitions whose eligible zones include the zone move,
    // so locality is never traded for balance.
    for ws in placement.by_zone.values() {
        rebalance_zone(ws, partitions, workers, &mut placement.load, &mut placement.held);
    }
    placement.finish(previous, out)
}

/// The assignment when no worker is alive: nobody can read, so only what departed workers may
/// come back for is kept, and nothing else is assigned.
fn waiting_only(
    partitions: &[PartitionSpec],
    previous: &BTreeMap<TopicPartition, String>,
    departed_in_grace: &[String],
) -> Assignment {
    let mut out = Assignment::default();
    for p in partitions {
        if let Some(w) = previous.get(&p.tp).filter(|w| departed_in_grace.contains(w)) {
            out.owners.insert(p.tp.clone(), w.clone());
            out.waiting += 1;
        }
    }
    out
}

/// A min-heap of (load / capacity, worker index). Entries go stale when a worker's load changes;
/// they are skipped when popped rather than removed, which keeps every update O(log n).
type LoadHeap = BinaryHeap<Reverse<(Load, usize)>>;

/// An assignment in progress over live workers: per worker its load and the partitions it holds.
struct Placement<'a> {
    partitions: &'a [PartitionSpec],
    workers: &'a [WorkerSpec],
    /// Worker indices by zone; a worker without a zone is in none.
    by_zone: BTreeMap<&'a str, Vec<usize>>,
    /// Per worker: the sum of the weights it holds.
    load: Vec<f64>,
    /// Per worker: the partitions it holds (index into `partitions`), for rebalancing.
    held: Vec<Vec<usize>>,
}

impl<'a> Placement<'a> {
    /// Nothing placed yet.
    fn new(partitions: &'a [PartitionSpec], workers: &'a [WorkerSpec]) -> Self {
        let mut by_zone: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, w) in workers.iter().enumerate() {
            if let Some(z) = &w.zone {
                by_zone.entry(z.as_str()).or_default().push(i);
            }
        }
        Placement {
            partitions,
            workers,
            by_zone,
            load: vec![0.0f64; workers.len()],
            held: vec![Vec::new(); workers.len()],
        }
    }

    /// Worker `i`'s capacity, never zero so that it can divide.
    fn cap(&self, i: usize) -> f64 {
        self.workers[i].capacity.max(0.01)
    }

    /// Worker `i`'s heap entry for its current load.
    fn entry(&self, i: usize) -> Reverse<(Load, usize)> {
        Reverse((Load(self.load[i] / self.cap(i)), i))
    }

    /// Gives partition `pi` to worker `i`.
    fn add(&mut self, i: usize, pi: usize) {
        self.load[i] += self.partitions[pi].weight;
        self.held[i].push(pi);
    }

    /// Rules 1 and 2: partitions waiting for a departed worker in its grace period go into `out`
    /// at once, and partitions stay with their previous live worker where it may keep them.
    /// Returns the partitions left to place.
    fn keep_previous(
        &mut self,
        previous: &BTreeMap<TopicPartition, String>,
        departed_in_grace: &[String],
        out: &mut Assignment,
    ) -> Vec<usize> {
        let index: HashMap<&str, usize> = self.workers.iter().enumerate().map(|(i, w)| (w.id.as_str(), i)).collect();
        let mut unplaced = Vec::new();
        for (pi, p) in self.partitions.iter().enumerate() {
            let prev = previous.get(&p.tp);
            if let Some(w) = prev.filter(|w| departed_in_grace.contains(w)) {
                out.owners.insert(p.tp.clone(), w.clone());
                out.waiting += 1;
                continue;
            }
            match prev.and_then(|w| index.get(w.as_str()).copied()).filter(|&i| self.may_keep(i, p)) {
                Some(i) => self.add(i, pi),
                None => unplaced.push(pi),
            }
        }
        unplaced
    }

    /// Whether live worker `i` may keep `p`: it is in one of `p`'s eligible zones, or no eligible
    /// zone has workers, in which case any live worker may keep it.
    fn may_keep(&self, i: usize, p: &PartitionSpec) -> bool {
        if p.zones.is_empty() || !p.zones.iter().any(|pz| self.by_zone.contains_key(pz.as_str())) {
            true
        } else {
            self.workers[i].zone.as_deref().is_some_and(|z| p.zones.iter().any(|pz| pz == z))
        }
    }

    /// Rules 3 and 4: every partition not kept goes to the least loaded worker of its eligible
    /// zones, or, when none of them has workers, to the least loaded worker anywhere.
    fn place(&mut self, mut unplaced: Vec<usize>) {
        let partitions = self.partitions;
        // Heaviest first places large partitions while there is most room.
        unplaced.sort_by(|&a, &b| partitions[b].weight.total_cmp(&partitions[a].weight).then(a.cmp(&b)));
        // One heap per zone for the eligible zones, plus one over all workers for the rest.
        let mut heaps: HashMap<&str, LoadHeap> =
            self.by_zone.iter().map(|(&z, ws)| (z, ws.iter().map(|&i| self.entry(i)).collect())).collect();
        let mut global: LoadHeap = (0..self.workers.len()).map(|i| self.entry(i)).collect();
        for pi in unplaced {
            let i = match self.least_loaded_eligible(&partitions[pi], &mut heaps) {
                Some(i) => i,
                None => self.pop_min(&mut global).unwrap_or(0),
            };
            self.add(i, pi);
            if let Some(z) = self.workers[i].zone.as_deref()
                && let Some(h) = heaps.get_mut(z)
            {
                h.push(self.entry(i));
            }
            global.push(self.entry(i));
        }
    }

    /// The least loaded worker over `p`'s eligible zones (the lowest index among equals), or
    /// `None` when none of them has workers. The heaps keep their entries.
    fn least_loaded_eligible(&self, p: &PartitionSpec, heaps: &mut HashMap<&str, LoadHeap>) -> Option<usize> {
        let mut best: Option<(f64, usize)> = None;
        for z in &p.zones {
            if let Some(h) = heaps.get_mut(z.as_str())
                && let Some(i) = self.pop_min(h)
            {
                let l = self.load[i] / self.cap(i);
                h.push(Reverse((Load(l), i)));
                if best.is_none_or(|(bl, bi)| l < bl || (l == bl && i < bi)) {
                    best = Some((l, i));
                }
            }
        }
        best.map(|(_, i)| i)
    }

    /// Pops the worker with the least load per capacity, skipping stale entries.
    fn pop_min(&self, heap: &mut LoadHeap) -> Option<usize> {
        while let Some(Reverse((Load(l), i))) = heap.pop() {
            if (l - self.load[i] / self.cap(i)).abs() < 1e-9 {
                return Some(i);
            }
        }
        None
    }

    /// Writes the placement into `out`: owners, partitions outside their eligible zones, and
    /// partitions that moved relative to `previous`.
    fn finish(self, previous: &BTreeMap<TopicPartition, String>, mut out: Assignment) -> Assignment {
        for (i, ps) in self.held.iter().enumerate() {
            for &pi in ps {
                let (partition, worker) = (&self.partitions[pi], &self.workers[i]);
                out.owners.insert(partition.tp.clone(), worker.id.clone());
                let local = worker.zone.as_deref().is_some_and(|z| partition.zones.iter().any(|pz| pz == z));
                if !local {
                    out.cross_zone += 1;
                }
            }
        }
        out.moved = out.owners.iter().filter(|(tp, w)| previous.get(*tp).is_some_and(|pw| pw != *w)).count();
        out
    }
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
mod tests;
