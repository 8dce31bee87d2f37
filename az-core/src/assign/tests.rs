//! Tests of the assignment: locality, balance, stickiness, grace, and its speed at scale.

use proptest::prelude::*;

use super::*;

fn tp(p: i32) -> TopicPartition {
    TopicPartition { topic: "t".into(), partition: p }
}

fn parts(n: i32, zones: usize) -> Vec<PartitionSpec> {
    (0..n).map(|p| PartitionSpec { tp: tp(p), zones: vec![format!("z{}", p as usize % zones)], weight: 1.0 }).collect()
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
