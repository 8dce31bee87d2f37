//! The master's own path at scale: 100,000 partitions over 1,000 workers, planned and written to
//! a real etcd.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use az_core::topology::{Broker, PartitionInfo, TopicInfo};
use az_core::{Topology, ZoneMatcher};

use super::*;
use crate::coord::{AssignmentDoc, WorkerInfo};
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
    let settings =
        PlanSettings { matcher: ZoneMatcher::default(), follower_fetching: false, zone_aware: true, grace_ms: 10_000 };
    let left = BTreeSet::new();
    let input = |workers: &[WorkerInfo], previous: Option<&AssignmentDoc>, now_ms: i64| {
        plan(&PlanInput {
            topo: &topo,
            topics: &topics,
            workers,
            left: &left,
            previous,
            master: "m",
            now_ms,
            settings: &settings,
        })
        .doc
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
    let share = shares::own(&client, &keys, "w0001").await.expect("share").share;
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
    assert_eq!(stats.keys, receivers.len() + 2, "receivers, the departed share's deletion and the summary: {stats:?}");
    assert!(receivers.len() <= 334, "{} shares rewritten for one departure", receivers.len());
    eprintln!("one departure: {} keys written in {} transactions ({} bytes)", stats.keys, stats.txns, stats.bytes);
}
