//! Leader plans: targets by rate, the 1:2:4 world, and properties over any topology.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::*;

fn rates(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
    pairs.iter().map(|(z, r)| ((*z).to_owned(), *r)).collect()
}

fn zones(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|z| (*z).to_owned()).collect()
}

#[test]
fn targets_follow_the_rates() {
    let r = rates(&[("a", 1.0), ("b", 2.0), ("c", 4.0)]);
    let t = targets(&r, 28, &zones(&["a", "b", "c"]));
    assert_eq!(t.values().copied().collect::<Vec<_>>(), vec![4, 8, 16]);
    let t = targets(&r, 12, &zones(&["a", "b", "c"]));
    assert_eq!(t.values().sum::<usize>(), 12);
    assert!(t.values().all(|n| *n >= 1));
    // A zone producing nothing leads nothing; one that cannot lead is not given any.
    let t = targets(&rates(&[("a", 0.0), ("b", 5.0)]), 6, &zones(&["a", "b"]));
    assert_eq!((t["a"], t["b"]), (0, 6));
    let t = targets(&rates(&[("a", 1.0), ("x", 5.0)]), 6, &zones(&["a", "b"]));
    assert_eq!((t["a"], t["b"]), (6, 0));
    // A tiny zone still gets one, so that its agents write in their zone.
    let t = targets(&rates(&[("a", 1.0), ("b", 1000.0)]), 10, &zones(&["a", "b"]));
    assert_eq!((t["a"], t["b"]), (1, 9));
}

/// `partitions` partitions, RF 3 over 3 zones of 2 brokers each (broker b in zone b % 3), led
/// round-robin as Kafka places them.
fn spread(partitions: i32) -> (Vec<PartitionInfo>, BTreeMap<i32, String>) {
    let zone_of: BTreeMap<i32, String> = (0..6).map(|b| (b, ["a", "b", "c"][b as usize % 3].to_owned())).collect();
    let parts = (0..partitions)
        .map(|p| {
            let replicas: Vec<i32> = (0..3).map(|k| (p + k) % 6).collect();
            PartitionInfo { id: p, leader: Some(replicas[0]), isr: replicas.clone(), replicas }
        })
        .collect();
    (parts, zone_of)
}

fn leader_zones(plan: &Plan) -> Vec<Option<&str>> {
    plan.partitions.iter().map(|p| Some(p.zone.as_str())).collect()
}

#[test]
fn a_1_2_4_world_is_even_after_the_plan() {
    let r = rates(&[("a", 1.0), ("b", 2.0), ("c", 4.0)]);
    let (parts, zone_of) = spread(28);
    let before: Vec<Option<&str>> =
        parts.iter().map(|p| p.leader.and_then(|l| zone_of.get(&l)).map(String::as_str)).collect();
    let before = skew(&loads(&before, &r));
    let plan = plan(&parts, &zone_of, &r).expect("plan");
    let after = skew(&loads(&leader_zones(&plan), &r));
    assert!(before > 1.5, "before {before}");
    assert!(after <= 1.1, "after {after}");
    let json = reassignment_json("logs", &plan);
    assert!(json["partitions"].as_array().is_some_and(|a| !a.is_empty() && a.len() < 28), "{json}");
}

#[test]
fn errors_name_what_is_missing() {
    let (parts, zone_of) = spread(3);
    assert_eq!(plan(&parts, &zone_of, &rates(&[("a", 0.0)])), Err(PlanError::NoTraffic));
    assert_eq!(plan(&parts, &BTreeMap::new(), &rates(&[("a", 1.0)])), Err(PlanError::NoZone(0)));
}

prop_compose! {
    /// A topology: 2-9 brokers over 2-4 zones, 1-60 partitions of 1-3 distinct replicas, some
    /// out of sync (the first replica always in sync, so that the in-sync set is never empty).
    fn topology()(brokers in 2i32..10, zone_count in 2usize..5, seeds in prop::collection::vec((any::<u32>(), 1usize..4, any::<bool>(), any::<u8>()), 1..60))
        -> (Vec<PartitionInfo>, BTreeMap<i32, String>) {
        let zone_of: BTreeMap<i32, String> = (0..brokers).map(|b| (b, format!("z{}", b as usize % zone_count))).collect();
        let parts = seeds.iter().enumerate().map(|(p, (seed, rf, led, in_sync))| {
            let start = (*seed % brokers as u32) as i32;
            let rf = (*rf).min(brokers as usize) as i32;
            let replicas: Vec<i32> = (0..rf).map(|k| (start + k) % brokers).collect();
            let isr = replicas.iter().enumerate().filter(|(k, _)| *k == 0 || in_sync & (1 << k) != 0).map(|(_, b)| *b).collect();
            PartitionInfo { id: p as i32, leader: led.then_some(replicas[0]), isr, replicas }
        }).collect();
        (parts, zone_of)
    }
}

proptest! {
    /// Replica sets never change, leaders are in-sync replicas in the planned zone, and where
    /// every partition can be led from every zone, each zone leads its target within one.
    #[test]
    fn plans_only_reorder_replicas((parts, zone_of) in topology(), r in prop::collection::vec(0.0f64..100.0, 4)) {
        let rates: BTreeMap<String, f64> = r.iter().enumerate().map(|(i, r)| (format!("z{i}"), *r)).collect();
        let Ok(plan) = plan(&parts, &zone_of, &rates) else { return Ok(()) };
        for (p, placed) in parts.iter().zip(&plan.partitions) {
            let (mut a, mut b) = (p.replicas.clone(), placed.replicas.clone());
            a.sort_unstable();
            b.sort_unstable();
            prop_assert_eq!(a, b, "partition {} changed replicas", p.id);
            prop_assert!(p.isr.contains(&placed.leader()), "partition {}: leader {} not in sync", p.id, placed.leader());
            prop_assert_eq!(zone_of.get(&placed.leader()), Some(&placed.zone));
        }
        let all: BTreeSet<&String> = zone_of.values().collect();
        let everywhere = parts.iter().all(|p| {
            let z: BTreeSet<&String> = p.isr.iter().filter_map(|b| zone_of.get(b)).collect();
            z == all
        });
        if everywhere {
            let mut led: BTreeMap<&str, usize> = BTreeMap::new();
            for p in &plan.partitions {
                *led.entry(p.zone.as_str()).or_default() += 1;
            }
            for (z, t) in &plan.targets {
                let n = led.get(z.as_str()).copied().unwrap_or(0);
                prop_assert!(n.abs_diff(*t) <= 1, "zone {z}: {n} leaders, target {t}");
            }
        }
    }
}

#[test]
fn the_table_and_the_election_follow_the_plan() {
    let r = rates(&[("a", 1.0), ("b", 2.0), ("c", 4.0)]);
    let (parts, zone_of) = spread(28);
    let plan = plan(&parts, &zone_of, &r).expect("plan");
    let (rows, before, after) = table(&plan, &zone_of, &r);
    assert_eq!(rows.len(), 28);
    assert!(before > 1.5 && after <= 1.1, "{before} {after}");
    let total: f64 = rows.iter().map(|row| row.load_after).sum();
    assert!((total - 7.0).abs() < 1e-9, "every byte is somewhere: {total}");
    let elected = election_json("t", &plan)["partitions"].as_array().map_or(0, Vec::len);
    assert_eq!(elected, rows.iter().filter(|row| row.leader_before != Some(row.leader_after)).count());
    assert!(elected > 0);
}

#[tokio::test]
async fn apply_refuses_a_secured_cluster_before_connecting() {
    let err = apply::check(&["127.0.0.1:1".to_owned()], "SASL_SSL", std::time::Duration::from_secs(1)).await;
    let text = err.expect_err("refused").to_string();
    assert!(text.contains("security.protocol=SASL_SSL") && text.contains("kafka-reassign-partitions.sh"), "{text}");
}
