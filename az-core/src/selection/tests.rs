//! Tests of partition selection: a table of layouts, aliases, and invariants over random layouts.

use std::collections::BTreeMap;

use super::*;
use crate::topology::{Broker, TopicInfo};

/// Six brokers, racks round-robin over three zones (as the testkit lays them out), one
/// topic with six partitions led by brokers 1..=6.
fn world(racks: &[Option<&str>]) -> Topology {
    let brokers = racks
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let id = i as i32 + 1;
            (id, Broker { id, host: "127.0.0.1".into(), port: 9000, rack: r.map(str::to_owned) })
        })
        .collect::<BTreeMap<_, _>>();
    let n = racks.len() as i32;
    let parts = (0..n)
        .map(|p| {
            let replicas: Vec<i32> = (0..3).map(|k| (p + k) % n + 1).collect();
            PartitionInfo { id: p, leader: Some(p + 1), isr: replicas.clone(), replicas }
        })
        .collect();
    Topology {
        brokers,
        topics: BTreeMap::from([("logs".into(), TopicInfo::Present(parts))]),
        fetched_at: None,
        generation: 1,
    }
}

const RACKS: [Option<&str>; 6] = [Some("az1"), Some("az2"), Some("az3"), Some("az1"), Some("az2"), Some("az3")];

/// A row of the selection table: a layout, who asks, and the selection it must get.
struct Case<'a> {
    name: &'a str,
    topo: &'a Topology,
    topic: &'a str,
    zone: Option<Zone>,
    purpose: Purpose,
    want: Vec<i32>,
    reason: Option<FallbackReason>,
}

/// Runs every row of a table, naming the row that fails.
fn check<'a>(cases: impl IntoIterator<Item = Case<'a>>) {
    let m = ZoneMatcher::default();
    for c in cases {
        let got = select(c.topo, c.topic, c.zone.as_ref(), &m, c.purpose);
        assert_eq!(got.partitions, c.want, "{}", c.name);
        assert_eq!(got.fallback, c.reason, "{}", c.name);
    }
}

fn az(s: &str) -> Zone {
    Zone::label(s)
}

/// The layouts the tables run on: [`world`] over [`RACKS`], and variations of it.
struct Layouts {
    base: Topology,
    norack: Topology,
    no_leader_rack: Topology,
    downed: Topology,
    leaderless: Topology,
    all_in_az1: Topology,
    missing: Topology,
}

impl Layouts {
    fn new() -> Self {
        let mut no_leader_rack = world(&RACKS);
        if let Some(b) = no_leader_rack.brokers.get_mut(&1) {
            b.rack = None;
        }
        let mut downed = world(&RACKS);
        downed.brokers.remove(&4);
        let mut leaderless = world(&RACKS);
        if let Some(TopicInfo::Present(p)) = leaderless.topics.get_mut("logs") {
            p[0].leader = None;
        }
        let mut all_in_az1 = world(&RACKS);
        if let Some(TopicInfo::Present(p)) = all_in_az1.topics.get_mut("logs") {
            for part in p.iter_mut() {
                part.leader = Some(1);
                part.isr = vec![1, 4];
            }
        }
        let missing = {
            let mut t = world(&RACKS);
            t.topics.insert("gone".into(), TopicInfo::Missing("unknown topic".into()));
            t
        };
        Layouts {
            base: world(&RACKS),
            norack: world(&[None; 6]),
            no_leader_rack,
            downed,
            leaderless,
            all_in_az1,
            missing,
        }
    }
}

/// Zone-local selections: the leader's (or an in-sync replica's) zone, and what does not count.
#[test]
fn table_local() {
    use Purpose::*;
    let l = Layouts::new();
    check([
        Case {
            name: "produce az1",
            topo: &l.base,
            topic: "logs",
            zone: Some(az("az1")),
            purpose: Produce,
            want: vec![0, 3],
            reason: None,
        },
        Case {
            name: "produce az3",
            topo: &l.base,
            topic: "logs",
            zone: Some(az("az3")),
            purpose: Produce,
            want: vec![2, 5],
            reason: None,
        },
        Case {
            name: "consume az1: every partition has an az1 replica",
            topo: &l.base,
            topic: "logs",
            zone: Some(az("az1")),
            purpose: Consume,
            want: vec![0, 1, 2, 3, 4, 5],
            reason: None,
        },
        Case {
            name: "leader without rack is not local",
            topo: &l.no_leader_rack,
            topic: "logs",
            zone: Some(az("az1")),
            purpose: Produce,
            want: vec![3],
            reason: None,
        },
        Case {
            name: "downed broker's partitions are not local",
            topo: &l.downed,
            topic: "logs",
            zone: Some(az("az1")),
            purpose: Produce,
            want: vec![0],
            reason: None,
        },
        Case {
            name: "leaderless partition is neither local nor a fallback target",
            topo: &l.leaderless,
            topic: "logs",
            zone: Some(az("az1")),
            purpose: Produce,
            want: vec![3],
            reason: None,
        },
    ]);
}

/// A known zone and racks, but no partition local to the zone.
#[test]
fn table_no_local_partition() {
    use FallbackReason::*;
    use Purpose::*;
    let l = Layouts::new();
    check([
        Case {
            name: "zone with no leaders",
            topo: &l.all_in_az1,
            topic: "logs",
            zone: Some(az("az2")),
            purpose: Produce,
            want: vec![0, 1, 2, 3, 4, 5],
            reason: Some(NoLocalPartition),
        },
        Case {
            name: "zone with no replicas",
            topo: &l.all_in_az1,
            topic: "logs",
            zone: Some(az("az3")),
            purpose: Consume,
            want: vec![0, 1, 2, 3, 4, 5],
            reason: Some(NoLocalPartition),
        },
        Case {
            name: "zone nobody is in",
            topo: &l.base,
            topic: "logs",
            zone: Some(az("az9")),
            purpose: Produce,
            want: vec![0, 1, 2, 3, 4, 5],
            reason: Some(NoLocalPartition),
        },
    ]);
}

/// Fallbacks for what is not known: the zone, the racks, the topic; leaderless partitions are
/// never fallback targets.
#[test]
fn table_missing_information() {
    use FallbackReason::*;
    use Purpose::*;
    let l = Layouts::new();
    check([
        Case {
            name: "leaderless fallback",
            topo: &l.leaderless,
            topic: "logs",
            zone: None,
            purpose: Produce,
            want: vec![1, 2, 3, 4, 5],
            reason: Some(UnknownZone),
        },
        Case {
            name: "unknown zone",
            topo: &l.base,
            topic: "logs",
            zone: None,
            purpose: Produce,
            want: vec![0, 1, 2, 3, 4, 5],
            reason: Some(UnknownZone),
        },
        Case {
            name: "no racks anywhere",
            topo: &l.norack,
            topic: "logs",
            zone: Some(az("az1")),
            purpose: Produce,
            want: vec![0, 1, 2, 3, 4, 5],
            reason: Some(NoRackInfo),
        },
        Case {
            name: "topic missing",
            topo: &l.missing,
            topic: "gone",
            zone: Some(az("az1")),
            purpose: Produce,
            want: vec![],
            reason: Some(TopicMissing),
        },
        Case {
            name: "topic never described",
            topo: &l.base,
            topic: "other",
            zone: Some(az("az1")),
            purpose: Produce,
            want: vec![],
            reason: Some(TopicMissing),
        },
    ]);
}

#[test]
fn alias_and_name_racks() {
    let t = world(&[
        Some("us-east-1a"),
        Some("us-east-1b"),
        Some("rack-c"),
        Some("us-east-1a"),
        Some("us-east-1b"),
        Some("rack-c"),
    ]);
    let zone = Zone { id: Some("use1-az3".into()), name: Some("us-east-1c".into()) };
    let plain = select(&t, "logs", Some(&zone), &ZoneMatcher::default(), Purpose::Produce);
    assert_eq!(plain.fallback, Some(FallbackReason::NoLocalPartition));
    let m = ZoneMatcher::new(BTreeMap::from([("rack-c".into(), "use1-az3".into())]));
    assert_eq!(select(&t, "logs", Some(&zone), &m, Purpose::Produce).partitions, vec![2, 5]);
    let a = Zone { id: Some("use1-az1".into()), name: Some("us-east-1a".into()) };
    assert_eq!(select(&t, "logs", Some(&a), &m, Purpose::Produce).partitions, vec![0, 3]);
}

proptest::proptest! {
    /// Whatever the layout, a selection is never empty for an existing topic, is local iff
    /// every chosen partition is local, and the local sets of all zones cover every led
    /// partition exactly once for producing.
    #[test]
    fn selection_invariants(leaders in proptest::collection::vec(proptest::option::of(1i32..=6), 1..40),
                            racks in proptest::collection::vec(proptest::option::of(0usize..3), 6)) {
        let names = ["az1", "az2", "az3"];
        let rack_labels: Vec<Option<&str>> = racks.iter().map(|r| r.map(|i| names[i])).collect();
        let mut t = world(&rack_labels);
        let parts: Vec<PartitionInfo> = leaders.iter().enumerate().map(|(i, l)| PartitionInfo {
            id: i as i32, leader: *l, replicas: vec![1, 2, 3], isr: vec![1, 2, 3] }).collect();
        t.topics.insert("logs".into(), TopicInfo::Present(parts.clone()));
        let m = ZoneMatcher::default();
        let mut covered = Vec::new();
        for z in names {
            let s = select(&t, "logs", Some(&Zone::label(z)), &m, Purpose::Produce);
            proptest::prop_assert!(!s.partitions.is_empty());
            if s.is_local() {
                for p in &s.partitions {
                    proptest::prop_assert_eq!(t.leader_rack("logs", *p), Some(z));
                }
                covered.extend(s.partitions);
            }
        }
        covered.sort_unstable();
        let expected: Vec<i32> = parts.iter().filter(|p| t.leader_rack("logs", p.id).is_some()).map(|p| p.id).collect();
        proptest::prop_assert_eq!(covered, expected);
    }
}
