//! `cargo xtask bench assignment`: `az_core::assign` of 100,000 partitions over 1,000 workers in
//! 3 zones, fresh and sticky, against a reference that only hashes each partition to a worker of
//! its zone (the least any assignment must do).

use std::collections::BTreeMap;
use std::time::Instant;

use az_core::assign::{PartitionSpec, TopicPartition, WorkerSpec, assign};

use super::Row;

/// Milliseconds `f` takes.
fn time(f: &mut dyn FnMut()) -> f64 {
    let start = Instant::now();
    f();
    start.elapsed().as_secs_f64() * 1000.0
}

pub(super) fn run() -> Vec<Row> {
    let zones = ["use1-az1", "use1-az2", "use1-az3"];
    let parts: Vec<PartitionSpec> = (0..100_000)
        .map(|p| PartitionSpec {
            tp: TopicPartition { topic: format!("t{}", p % 50), partition: p / 50 },
            zones: vec![zones[p as usize % 3].to_owned()],
            weight: 1.0 + (p % 7) as f64,
        })
        .collect();
    let workers: Vec<WorkerSpec> = (0..1000)
        .map(|w| WorkerSpec { id: format!("w{w}"), zone: Some(zones[w % 3].to_owned()), capacity: 1.0 })
        .collect();
    let mut first = Default::default();
    let fresh = time(&mut || first = assign(&parts, &workers, &BTreeMap::new(), &[]));
    let sticky = time(&mut || {
        let _ = assign(&parts, &workers, &first.owners, &[]);
    });
    let by_zone: BTreeMap<&str, Vec<&str>> = zones
        .iter()
        .map(|z| (*z, workers.iter().filter(|w| w.zone.as_deref() == Some(z)).map(|w| w.id.as_str()).collect()))
        .collect();
    let mut naive: BTreeMap<&TopicPartition, &str> = BTreeMap::new();
    let reference = time(&mut || {
        naive.clear();
        for (i, p) in parts.iter().enumerate() {
            let ws = &by_zone[p.zones[0].as_str()];
            naive.insert(&p.tp, ws[i % ws.len()]);
        }
    });
    eprintln!(
        "assign 100k x 1k: fresh {fresh:.0} ms, sticky {sticky:.0} ms; reference (hash into zone) {reference:.0} ms; cross-zone {}",
        first.cross_zone
    );
    vec![
        Row { case: "assignment", metric: "fresh ms", value: fresh, reference },
        Row { case: "assignment", metric: "sticky ms", value: sticky, reference },
    ]
}
