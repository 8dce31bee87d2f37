//! Table tests of the master's decisions. One topic `t` of six partitions over three brokers,
//! one per zone; partition `p`'s leader is broker `p % 3 + 1`, so partitions 0 and 3 are read
//! in zone 1, 1 and 4 in zone 2, 2 and 5 in zone 3; its in-sync replicas are the leader and the
//! next broker. Workers are named by their zone: `a*` in zone 1, `b*` in 2, `c*` in 3, `x*` in
//! none known.

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use az_core::topology::{Broker, PartitionInfo, TopicInfo};

use super::*;

const ZONE_IDS: [&str; 3] = ["use1-az1", "use1-az2", "use1-az3"];
const ZONE_NAMES: [&str; 3] = ["us-east-1a", "us-east-1b", "us-east-1c"];
const GRACE_MS: i64 = 10_000;

fn topology(racks: [&str; 3]) -> Topology {
    let brokers = (1..=3)
        .map(|id: i32| (id, Broker { id, host: "b".into(), port: 9092, rack: Some(racks[(id - 1) as usize].into()) }))
        .collect();
    let partitions = (0..6)
        .map(|p| {
            let leader = p % 3 + 1;
            PartitionInfo { id: p, leader: Some(leader), replicas: vec![leader], isr: vec![leader, leader % 3 + 1] }
        })
        .collect();
    let topics = BTreeMap::from([("t".to_owned(), TopicInfo::Present(partitions))]);
    Topology { brokers, topics, fetched_at: Some(SystemTime::now()), generation: 1 }
}

/// The zone index of a worker named by its zone, if any.
fn zone_of(id: &str) -> Option<usize> {
    match id.as_bytes().first() {
        Some(b'a') => Some(0),
        Some(b'b') => Some(1),
        Some(b'c') => Some(2),
        _ => None,
    }
}

fn worker(id: &str) -> WorkerInfo {
    let zone = zone_of(id);
    WorkerInfo {
        id: id.into(),
        zone_id: zone.map(|z| ZONE_IDS[z].into()),
        zone_name: zone.map(|z| ZONE_NAMES[z].into()),
        host: "h".into(),
        capacity: 1.0,
        http: String::new(),
        rates: BTreeMap::new(),
    }
}

fn workers(ids: &str) -> Vec<WorkerInfo> {
    ids.split_whitespace().map(worker).collect()
}

fn tp(p: i32) -> TopicPartition {
    TopicPartition::new("t", p)
}

/// An assignment as a previous master wrote it: `owners` lists the owner of `t/0`..`t/5` in
/// order (`-` for none); `departed` its departed workers' grace clocks.
fn doc(owners: &str, departed: &[(&str, i64)], waiting: usize) -> AssignmentDoc {
    let owners: BTreeMap<TopicPartition, String> =
        owners.split_whitespace().zip(0..).filter(|(w, _)| *w != "-").map(|(w, p)| (tp(p), w.to_owned())).collect();
    let workers =
        owners.values().map(|w| (w.clone(), zone_of(w).map_or("unknown", |z| ZONE_IDS[z]).to_owned())).collect();
    AssignmentDoc {
        generation: 1,
        master: "m".into(),
        zones: (0..6).map(|p| (tp(p), ZONE_IDS[(p % 3) as usize].to_owned())).collect(),
        owners,
        workers,
        cross_zone: 0,
        waiting,
        written_at_ms: 0,
        departed_ms: departed.iter().map(|(w, t)| ((*w).to_owned(), *t)).collect(),
    }
}

/// The owners of `t/0`..`t/5` in the form [`doc`] takes.
fn owners_of(d: &AssignmentDoc) -> String {
    (0..6).map(|p| d.owners.get(&tp(p)).map_or("-", String::as_str)).collect::<Vec<_>>().join(" ")
}

struct Case {
    name: &'static str,
    /// Registered workers, by name.
    workers: &'static str,
    previous: Option<AssignmentDoc>,
    /// Workers that stopped cleanly.
    left: &'static [&'static str],
    now_ms: i64,
    zone_aware: bool,
    follower_fetching: bool,
    /// Brokers' racks: zone ids, or names.
    racks: [&'static str; 3],
    expect: Expect,
}

struct Expect {
    /// Owners of `t/0`..`t/5`.
    owners: &'static str,
    cross_zone: usize,
    waiting: usize,
    moved: usize,
    changed: bool,
    /// Departed workers in grace, with their clocks.
    departed: &'static [(&'static str, i64)],
    /// Workers the document lists.
    listed: &'static str,
}

fn base(name: &'static str, expect: Expect) -> Case {
    Case {
        name,
        workers: "a1 b1 c1",
        previous: None,
        left: &[],
        now_ms: 1_000,
        zone_aware: true,
        follower_fetching: false,
        racks: ZONE_IDS,
        expect,
    }
}

/// The assignment a fleet of one worker per zone settles on.
const STABLE: &str = "a1 b1 c1 a1 b1 c1";

fn expect(
    owners: &'static str,
    cross_zone: usize,
    waiting: usize,
    moved: usize,
    changed: bool,
    listed: &'static str,
) -> Expect {
    Expect { owners, cross_zone, waiting, moved, changed, departed: &[], listed }
}

fn cases() -> Vec<Case> {
    [membership(), departures(), zones()].into_iter().flatten().collect()
}

/// Workers present, joining, or of no known zone.
fn membership() -> Vec<Case> {
    vec![
        base(
            "a first assignment reads every partition in its leader's zone",
            expect(STABLE, 0, 0, 0, true, "a1 b1 c1"),
        ),
        Case {
            previous: Some(doc(STABLE, &[], 0)),
            ..base("a stable fleet keeps its assignment and writes nothing", expect(STABLE, 0, 0, 0, false, "a1 b1 c1"))
        },
        Case {
            workers: "a1 b1 c1 a2",
            previous: Some(doc(STABLE, &[], 0)),
            ..base(
                "a worker joining a zone takes half of that zone's partitions, and only those",
                expect("a2 b1 c1 a1 b1 c1", 0, 0, 1, true, "a1 a2 b1 c1"),
            )
        },
        Case {
            workers: "a1 b1 c1 x1",
            ..base(
                "a worker of unknown zone gets nothing while every zone has a worker",
                expect(STABLE, 0, 0, 0, true, "a1 b1 c1 x1"),
            )
        },
    ]
}

/// Workers leaving: by crashing (grace), cleanly (none), and a new master in between.
fn departures() -> Vec<Case> {
    vec![
        Case {
            workers: "b1 c1",
            previous: Some(doc(STABLE, &[], 0)),
            ..base(
                "a departed worker's partitions wait for it during the grace period, its clock started now",
                Expect { departed: &[("a1", 1_000)], ..expect(STABLE, 0, 2, 0, true, "a1 b1 c1") },
            )
        },
        Case {
            workers: "b1 c1",
            previous: Some(doc(STABLE, &[("a1", 1_000)], 2)),
            now_ms: 1_000 + GRACE_MS - 1,
            ..base(
                "a new master continues the grace clock of the document instead of restarting it",
                Expect { departed: &[("a1", 1_000)], ..expect(STABLE, 0, 2, 0, false, "a1 b1 c1") },
            )
        },
        Case {
            workers: "b1 c1",
            previous: Some(doc(STABLE, &[("a1", 1_000)], 2)),
            now_ms: 1_000 + GRACE_MS,
            ..base(
                "after the grace period the partitions of a zone without workers cross zones",
                expect("b1 b1 c1 c1 b1 c1", 2, 0, 2, true, "b1 c1"),
            )
        },
        Case {
            workers: "b1 c1",
            previous: Some(doc(STABLE, &[], 0)),
            left: &["a1"],
            ..base("a worker that stopped cleanly gets no grace", expect("b1 b1 c1 c1 b1 c1", 2, 0, 2, true, "b1 c1"))
        },
    ]
}

/// Zones: without workers, with follower fetching, zone-unaware, racks named by zone name.
fn zones() -> Vec<Case> {
    vec![
        Case {
            workers: "a1 b1 x1",
            ..base(
                "a zone without workers falls back to the least loaded worker anywhere",
                expect("a1 b1 x1 a1 b1 x1", 2, 0, 0, true, "a1 b1 x1"),
            )
        },
        Case {
            workers: "a1 b1",
            follower_fetching: true,
            ..base(
                "with follower fetching an in-sync replica's zone is eligible: nothing crosses",
                expect("a1 b1 a1 b1 b1 a1", 0, 0, 0, true, "a1 b1"),
            )
        },
        Case {
            workers: "a1 b1",
            ..base(
                "without follower fetching the same partitions cross zones",
                expect("a1 b1 a1 a1 b1 b1", 2, 0, 0, true, "a1 b1"),
            )
        },
        Case {
            workers: "c1 a1 b1",
            zone_aware: false,
            ..base(
                "zone-unaware, the baseline balances over every worker and counts what crosses",
                expect("c1 a1 b1 c1 a1 b1", 6, 0, 0, true, "a1 b1 c1"),
            )
        },
        Case {
            racks: ZONE_NAMES,
            ..base(
                "racks named by zone name match workers known by id and name",
                expect(STABLE, 0, 0, 0, true, "a1 b1 c1"),
            )
        },
    ]
}

#[test]
fn plans() {
    for case in cases() {
        let topo = topology(case.racks);
        let topics = vec!["t".to_owned()];
        let workers = workers(case.workers);
        let left: BTreeSet<String> = case.left.iter().map(|w| (*w).to_owned()).collect();
        let settings = PlanSettings {
            matcher: ZoneMatcher::default(),
            follower_fetching: case.follower_fetching,
            zone_aware: case.zone_aware,
            grace_ms: GRACE_MS,
            leader_settle_ms: 0,
            formation_ms: 0,
        };
        let got = plan(&PlanInput {
            topo: &topo,
            topics: &topics,
            workers: &workers,
            left: &left,
            previous: case.previous.as_ref(),
            master: "m",
            now_ms: case.now_ms,
            settings: &settings,
        });
        let name = case.name;
        let e = &case.expect;
        assert_eq!(owners_of(&got.doc), e.owners, "{name}: owners");
        assert_eq!(got.doc.cross_zone, e.cross_zone, "{name}: cross-zone");
        assert_eq!(got.doc.waiting, e.waiting, "{name}: waiting");
        assert_eq!(got.moved, e.moved, "{name}: moved");
        assert_eq!(got.changed, e.changed, "{name}: changed");
        let departed: BTreeMap<String, i64> = e.departed.iter().map(|(w, t)| ((*w).to_owned(), *t)).collect();
        assert_eq!(got.doc.departed_ms, departed, "{name}: departed");
        let listed: Vec<&str> = got.doc.workers.keys().map(String::as_str).collect();
        assert_eq!(listed.join(" "), e.listed, "{name}: workers listed");
        assert_eq!(got.doc.generation, case.previous.as_ref().map_or(1, |p| p.generation + 1), "{name}: generation");
        assert_eq!((got.doc.master.as_str(), got.doc.written_at_ms), ("m", case.now_ms), "{name}: stamp");
        // Every partition's zone is its leader's (the first of its eligible zones with follower
        // fetching), labelled as the workers of that zone are.
        let zones: Vec<&str> = (0..6).map(|p| got.doc.zones.get(&tp(p)).map_or("-", String::as_str)).collect();
        let leaders: Vec<&str> = (0..6).map(|p| ZONE_IDS[p % 3]).collect();
        if !case.follower_fetching {
            assert_eq!(zones, leaders, "{name}: zones");
        }
    }
}

/// A departed worker keeps its zone in the document while it is waited for, so the view still
/// shows its partitions in their zone.
#[test]
fn a_departed_worker_keeps_its_zone_while_waited_for() {
    let topo = topology(ZONE_IDS);
    let topics = vec!["t".to_owned()];
    let settings = PlanSettings {
        matcher: ZoneMatcher::default(),
        follower_fetching: false,
        zone_aware: true,
        grace_ms: GRACE_MS,
        leader_settle_ms: 0,
        formation_ms: 0,
    };
    let previous = doc(STABLE, &[], 0);
    let got = plan(&PlanInput {
        topo: &topo,
        topics: &topics,
        workers: &workers("b1 c1"),
        left: &BTreeSet::new(),
        previous: Some(&previous),
        master: "m",
        now_ms: 5,
        settings: &settings,
    });
    assert_eq!(got.doc.workers.get("a1").map(String::as_str), Some(ZONE_IDS[0]));
}

#[test]
fn plans_only_from_inputs_it_can_trust() {
    let topics = vec!["t".to_owned()];
    let fetched = topology(ZONE_IDS);
    let unfetched = Topology { fetched_at: None, ..fetched.clone() };
    let missing = Topology {
        topics: BTreeMap::from([("t".to_owned(), TopicInfo::Missing("timed out".into()))]),
        ..fetched.clone()
    };
    let empty = Topology { topics: BTreeMap::from([("t".to_owned(), TopicInfo::Present(vec![]))]), ..fetched.clone() };
    let cases: [(&str, &Topology, &[String], bool, bool); 6] = [
        ("a fetched topology with partitions", &fetched, &topics, true, true),
        ("never fetched", &unfetched, &topics, true, false),
        ("the topics not listed yet (pattern)", &fetched, &topics, false, false),
        ("every topic missing from the fetch", &missing, &topics, true, false),
        ("every topic without partitions", &empty, &topics, true, false),
        ("no topics at all: an empty assignment is right", &fetched, &[], true, true),
    ];
    for (name, topo, topics, listed, expected) in cases {
        assert_eq!(can_plan(topo, topics, listed), expected, "{name}");
    }
}
