//! The master at fleet scale against a real etcd (its default request limits): 100,000
//! partitions, 1,000 registrations carrying their owned partitions' rates (simulated clients, each
//! on a lease of its own), a worker dying and one joining, driven through the master's own
//! `Term`; and a partition left in two shares by a master killed mid-write, healed by the next.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use az_core::Topology;
use az_core::topology::{Broker, PartitionInfo, TopicInfo};

use super::lead::{Leader, Round, Term};
use super::*;
use crate::coord::{Keys, WorkerInfo};
use crate::shares;

const ZONES: [&str; 3] = ["use1-az1", "use1-az2", "use1-az3"];

/// Topic names as production clusters name them (the length matters: rates are keyed by them).
fn topic(t: usize) -> String {
    format!("prod.checkout.service-logs.{t:03}")
}

fn topology(topics: usize, partitions: i32) -> Arc<Topology> {
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
            (topic(t), TopicInfo::Present(parts))
        })
        .collect();
    Arc::new(Topology { brokers, topics, fetched_at: Some(std::time::SystemTime::now()), generation: 1 })
}

fn worker(i: usize) -> WorkerInfo {
    WorkerInfo {
        id: format!("w{i:04}"),
        zone_id: Some(ZONES[i % 3].into()),
        zone_name: None,
        host: format!("ip-10-0-{}-{}.ec2.internal", i / 250, i % 250),
        capacity: 1.0,
        http: format!("10.0.{}.{}:9464", i / 250, i % 250),
        rates: BTreeMap::new(),
    }
}

/// A spread of rates, from idle partitions to busy ones (bytes/s), the same every run.
fn rate(tp: &az_core::TopicPartition) -> f64 {
    let h = (tp.partition as u64).wrapping_mul(2_654_435_761) ^ (tp.topic.len() as u64 * 40_503);
    1_500.0 * f64::from(1 + (h % 2000) as u32) + 0.37
}

/// This test's master, elected on a lease of its own.
async fn elect(client: &etcd_client::Client, keys: &Keys) -> Leader {
    let lease = client.clone().lease_grant(600, None).await.expect("lease").id();
    let won = client.election_client().campaign(keys.election(), "m", lease).await.expect("campaign");
    let leader = won.leader().expect("leader");
    Leader { key: leader.key().to_vec(), revision: leader.rev() }
}

/// Zone-aware, a 10 s grace, leader moves followed at once.
fn settings() -> PlanSettings {
    PlanSettings {
        matcher: az_core::ZoneMatcher::default(),
        follower_fetching: false,
        zone_aware: true,
        grace_ms: 10_000,
        leader_settle_ms: 0,
        formation_ms: 0,
    }
}

struct Fleet {
    client: etcd_client::Client,
    keys: Keys,
    leases: BTreeMap<String, i64>,
    largest_registration: usize,
}

impl Fleet {
    async fn register(&mut self, info: &WorkerInfo) {
        let lease = match self.leases.get(&info.id) {
            Some(l) => *l,
            None => {
                let l = self.client.clone().lease_grant(120, None).await.expect("lease").id();
                self.leases.insert(info.id.clone(), l);
                l
            }
        };
        self.largest_registration = self.largest_registration.max(serde_json::to_vec(info).expect("json").len());
        coord::register(&self.client, &self.keys, info, lease).await.expect("register");
    }

    async fn die(&mut self, id: &str) {
        let lease = self.leases.remove(id).expect("a registered worker");
        self.client.clone().lease_revoke(lease).await.expect("revoke");
    }
}

fn report(what: &str, term: &Term<'_>, r: &Round, started: Instant) {
    let cost = term.registry.cost;
    eprintln!(
        "{what}: {:?}; registrations read in {} requests (largest reply {} bytes, {} values); {}",
        started.elapsed(),
        cost.requests,
        cost.largest_reply,
        cost.values,
        match (&r.planned, &r.written) {
            (Some(p), Some(w)) => format!(
                "planned (moved {}, waiting {}, cross-zone {}), wrote {} keys in {} transactions (largest {} bytes, {} ops at most)",
                p.moved,
                p.doc.waiting,
                p.doc.cross_zone,
                w.keys,
                w.txns,
                w.max_txn_bytes,
                shares::MAX_TXN_OPS
            ),
            (Some(_), None) => "planned, nothing to write".into(),
            _ => "nothing changed, no plan".into(),
        }
    );
}

/// Issue 23's fleet test. etcd runs with its default limits (1.5 MiB per request, 128
/// operations per transaction); the etcd client refuses replies over 4 MiB. The 1,000
/// registrations together are over 4 MiB: read unpaged they fail (as the master's did), so the
/// registry reads them a page at a time and, once current, only what changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_workers_and_a_hundred_thousand_partitions_stay_within_etcds_limits() {
    let etcd = testkit::Etcd::start().expect("etcd");
    let cfg =
        crate::config::EtcdConfig { endpoints: vec![etcd.endpoint()], cluster: "scale".into(), ..Default::default() };
    let client = coord::connect(&cfg).await.expect("connect");
    let keys = Keys::new("scale");
    let leader = elect(&client, &keys).await;
    let settings = settings();
    let topo = topology(100, 1000);
    let topics: Vec<String> = topo.topics.keys().cloned().collect();
    let mut fleet =
        Fleet { client: client.clone(), keys: keys.clone(), leases: BTreeMap::new(), largest_registration: 0 };
    for i in 0..1000 {
        fleet.register(&worker(i)).await;
    }
    let mut term = Term::start(&client, &keys, &leader, settings, "m").await.expect("term");

    // The first assignment.
    let started = Instant::now();
    let first = term.round(&topo, &topics, true, 0).await.expect("first round");
    report("first assignment", &term, &first, started);
    let doc = first.planned.as_ref().expect("planned").doc.clone();
    assert_eq!(doc.owners.len(), 100_000);
    assert_eq!(doc.cross_zone, 0);
    let written = first.written.expect("written");
    assert_eq!(written.keys, 1001, "a share per worker and the summary");
    assert!(written.max_txn_bytes <= shares::MAX_TXN_BYTES, "{written:?}");

    // Every worker registers the rates of the partitions it owns (about 100 each).
    let mut held: BTreeMap<&str, Vec<&az_core::TopicPartition>> = BTreeMap::new();
    for (tp, w) in &doc.owners {
        held.entry(w.as_str()).or_default().push(tp);
    }
    for i in 0..1000 {
        let mut info = worker(i);
        info.rates = held.get(info.id.as_str()).into_iter().flatten().map(|tp| ((*tp).clone(), rate(tp))).collect();
        fleet.register(&info).await;
    }
    let unpaged = client.clone().get(keys.workers(), Some(etcd_client::GetOptions::new().with_prefix())).await;
    eprintln!(
        "registrations with rates: largest {} bytes (etcd takes 1.5 MiB); read unpaged: {}",
        fleet.largest_registration,
        unpaged.as_ref().map_or_else(|e| format!("refused ({e})"), |r| format!("{} keys", r.kvs().len()))
    );
    assert!(unpaged.is_err(), "the registrations fit one reply; the test no longer tests paging");
    assert!(fleet.largest_registration < 64 * 1024);

    let started = Instant::now();
    let rated = term.round(&topo, &topics, true, 1_000).await.expect("round with rates");
    report("rates registered", &term, &rated, started);
    assert_eq!(term.registry.cost.values, 1000, "every registration changed");
    assert!(term.registry.cost.largest_reply < 4 * 1024 * 1024);
    assert!(rated.planned.is_some(), "rates changed: the master plans");
    assert_eq!(term.registry.registrations().workers.len(), 1000);

    // Nothing changes: a round is a listing of keys and no plan.
    let started = Instant::now();
    let idle = term.round(&topo, &topics, true, 2_000).await.expect("idle round");
    report("idle round", &term, &idle, started);
    assert!(idle.planned.is_none(), "nothing changed, yet the master planned");
    assert_eq!(term.registry.cost.values, 0);
    assert!(term.registry.cost.largest_reply < 128 * 1024, "{:?}", term.registry.cost);

    let before = rated.planned.map_or(doc, |p| p.doc);
    let after = departure_and_join(&mut term, &mut fleet, &topo, &topics, &before).await;
    assert_eq!(shares::full(&client, &keys).await.expect("read").expect("an assignment"), after);
    owners_and_offsets_at_scale(&client, &keys, &after, cfg).await;
}

/// w0007 dies and w1000 joins in its zone: the dead worker's partitions wait out the grace, then
/// move within the zone, most to the worker that joined.
async fn departure_and_join(
    term: &mut Term<'_>,
    fleet: &mut Fleet,
    topo: &Arc<Topology>,
    topics: &[String],
    before: &coord::AssignmentDoc,
) -> coord::AssignmentDoc {
    // w0007 dies and w1000 joins in its zone (az2): within the grace the dead worker's
    // partitions wait for it; the summary alone is written.
    let dead: BTreeSet<_> = before.owners.iter().filter(|(_, w)| *w == "w0007").map(|(tp, _)| tp.clone()).collect();
    fleet.die("w0007").await;
    let started = Instant::now();
    let gone = term.round(topo, topics, true, 3_000).await.expect("departure round");
    report("w0007 gone", term, &gone, started);
    let waiting = gone.planned.as_ref().expect("planned").doc.clone();
    assert_eq!(waiting.waiting, dead.len());
    assert_eq!(gone.written.expect("written").keys, 1, "only the summary (the departure's clock)");
    let mut joiner = worker(1000);
    joiner.zone_id = Some(ZONES[1].into());
    fleet.register(&joiner).await;
    let started = Instant::now();
    let joined = term.round(topo, topics, true, 4_000).await.expect("join round");
    report("w1000 joined", term, &joined, started);
    assert!(joined.planned.is_some(), "a worker joined: the master plans");
    let still = term.round(topo, topics, true, 12_999).await.expect("round in grace");
    assert!(still.planned.is_none(), "nothing changed within the grace");

    // The grace ends: its partitions move within the zone, most to the worker that joined.
    let started = Instant::now();
    let moved = term.round(topo, topics, true, 13_000).await.expect("grace over");
    report("grace over", term, &moved, started);
    let after = moved.planned.as_ref().expect("planned at the grace's end").doc.clone();
    assert_eq!(after.waiting, 0);
    assert_eq!(after.cross_zone, 0);
    assert!(dead.iter().all(|tp| after.owners.get(tp).is_some_and(|w| w != "w0007")));
    let to_joiner = dead.iter().filter(|tp| after.owners.get(*tp).map(String::as_str) == Some("w1000")).count();
    assert!(to_joiner > 0, "the joining worker got none of the dead worker's partitions");
    let stats = moved.written.expect("written");
    assert!(stats.keys <= 336, "one departure rewrote {} keys", stats.keys);

    after
}

/// `status` and `offsets` over 100,000 owner and offset keys (each over 4 MiB read at once).
async fn owners_and_offsets_at_scale(
    client: &etcd_client::Client,
    keys: &Keys,
    doc: &coord::AssignmentDoc,
    etcd: crate::config::EtcdConfig,
) {
    let mut c = client.clone();
    let all: Vec<_> = doc.owners.iter().collect();
    for chunk in all.chunks(50) {
        let ops: Vec<_> = chunk
            .iter()
            .flat_map(|(tp, w)| {
                [
                    etcd_client::TxnOp::put(keys.owner(tp), w.as_str(), None),
                    etcd_client::TxnOp::put(keys.offset(tp), "123456789", None),
                ]
            })
            .collect();
        c.txn(etcd_client::Txn::new().and_then(ops)).await.expect("txn");
    }
    let started = Instant::now();
    let owners = coord::owners(client, keys).await.expect("owners");
    let offsets = coord::offsets(client, keys).await.expect("offsets");
    assert_eq!((owners.len(), offsets.len()), (100_000, 100_000));
    eprintln!("owners and offsets of 100,000 partitions read in {:?}", started.elapsed());
    let cfg = crate::config::TransporterConfig { etcd, ..Default::default() };
    let started = Instant::now();
    crate::commands::status(cfg.clone(), false).await.expect("status");
    crate::commands::offsets(cfg, Vec::new(), false, true).await.expect("offsets");
    eprintln!("status and offsets commands at 100,000 partitions: {:?}", started.elapsed());
}

/// Issue 23, item 8, through the master's own path: a master killed between its transactions
/// left t/1 in two shares (the new owner's written, the old owner's not yet). The next master
/// rewrites the stale share; without diffing against what is stored, it wrote nothing and the
/// stale holder kept reading t/1 while the new one waited for its fence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_left_in_two_shares_by_a_killed_master_is_healed_by_the_next() {
    let etcd = testkit::Etcd::start().expect("etcd");
    let cfg = crate::config::EtcdConfig { endpoints: vec![etcd.endpoint()], ..Default::default() };
    let client = coord::connect(&cfg).await.expect("connect");
    let keys = Keys::new("heal");
    let leader = elect(&client, &keys).await;
    let settings = settings();
    let topo = topology(1, 6);
    let topics = vec![topic(0)];
    let lease = client.clone().lease_grant(600, None).await.expect("lease").id();
    for i in 0..3 {
        coord::register(&client, &keys, &worker(i), lease).await.expect("register");
    }
    let mut term = Term::start(&client, &keys, &leader, settings.clone(), "m").await.expect("term");
    let first = term.round(&topo, &topics, true, 0).await.expect("round").planned.expect("planned").doc;
    // The killed master's partial write: t/1's owner is w0001 (leader broker 2, in az2); a copy
    // of it lands in w0000's share as if a move had begun, and the rest of that write never
    // came. The joined view still says w0001 (the later share wins), so the plan is unchanged.
    let tp1 = az_core::TopicPartition::new(topic(0), 1);
    assert_eq!(first.owners.get(&tp1).map(String::as_str), Some("w0001"));
    let mut stale = shares::split(&first).shares.get("w0000").cloned().unwrap_or_default();
    stale.insert(tp1.clone(), ZONES[1].into());
    client.clone().put(keys.share("w0000"), serde_json::to_vec(&stale).expect("json"), None).await.expect("put");

    let mut next = Term::start(&client, &keys, &leader, settings, "m2").await.expect("next term");
    let healed = next.round(&topo, &topics, true, 1_000).await.expect("round");
    assert!(healed.written.is_some(), "the next master left the stale share");
    let stored = shares::stored(&client, &keys).await.expect("read").expect("stored");
    let holders: Vec<&String> = stored.shares.iter().filter(|(_, s)| s.contains_key(&tp1)).map(|(w, _)| w).collect();
    assert_eq!(holders, vec!["w0001"], "t/1 is in the shares of {holders:?}");
}
