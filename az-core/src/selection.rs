//! Partition selection: which partitions of a topic a client in a given zone should write to
//! (leader in the zone) or read from (an in-sync replica in the zone), and why it falls back to
//! all partitions when there are none. Pure logic, no I/O.
//!
//! ```text
//!  Topology + topic + Option<Zone> + ZoneMatcher + Purpose ──select()──> Selection
//!                                                   { partitions, fallback: Option<FallbackReason> }
//! ```

use serde::Serialize;

use crate::topology::{PartitionInfo, Topology};
use crate::zone::{Zone, ZoneMatcher};

/// What the selected partitions are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Purpose {
    /// Writing: a partition is local when its leader is in the zone.
    Produce,
    /// Reading with follower fetching (KIP-392): a partition is local when an in-sync replica
    /// is in the zone.
    Consume,
}

/// Why a selection is not zone-local. Each reason is also a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FallbackReason {
    /// The client's own zone is unknown.
    UnknownZone,
    /// No broker reports a rack.
    NoRackInfo,
    /// The zone is known and brokers have racks, but no partition is local.
    NoLocalPartition,
    /// The topic does not exist (or has not been described yet).
    TopicMissing,
}

impl FallbackReason {
    /// Every reason, for metric label pre-registration.
    pub const ALL: [FallbackReason; 4] = [
        FallbackReason::UnknownZone,
        FallbackReason::NoRackInfo,
        FallbackReason::NoLocalPartition,
        FallbackReason::TopicMissing,
    ];

    /// A stable label for metrics and status output.
    pub fn as_str(self) -> &'static str {
        match self {
            FallbackReason::UnknownZone => "unknown-zone",
            FallbackReason::NoRackInfo => "no-rack-info",
            FallbackReason::NoLocalPartition => "no-local-partition",
            FallbackReason::TopicMissing => "topic-missing",
        }
    }
}

impl std::fmt::Display for FallbackReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The partitions to use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Selection {
    /// Partition ids, ascending. Empty only when the topic is missing.
    pub partitions: Vec<i32>,
    /// Set when `partitions` is not zone-local.
    pub fallback: Option<FallbackReason>,
}

impl Selection {
    /// Whether the selection is zone-local.
    pub fn is_local(&self) -> bool {
        self.fallback.is_none()
    }
}

/// Whether a partition is local to `zone` for `purpose`.
pub fn is_local(topology: &Topology, p: &PartitionInfo, zone: &Zone, matcher: &ZoneMatcher, purpose: Purpose) -> bool {
    let in_zone = |broker: i32| topology.rack_of(broker).is_some_and(|rack| matcher.matches(zone, rack));
    match purpose {
        Purpose::Produce => p.leader.is_some_and(in_zone),
        // A partition without a leader cannot be read from at all, follower or not.
        Purpose::Consume => p.leader.is_some() && p.isr.iter().copied().any(in_zone),
    }
}

/// Selects the partitions of `topic` for a client in `zone`.
///
/// Fallback lists every partition that has a leader (all of them when none has), so a client
/// that cannot be zone-aware still spreads evenly rather than stalling.
pub fn select(
    topology: &Topology,
    topic: &str,
    zone: Option<&Zone>,
    matcher: &ZoneMatcher,
    purpose: Purpose,
) -> Selection {
    let Some(parts) = topology.partitions(topic).filter(|p| !p.is_empty()) else {
        return Selection { partitions: Vec::new(), fallback: Some(FallbackReason::TopicMissing) };
    };
    let all = || {
        let led: Vec<i32> = parts.iter().filter(|p| p.leader.is_some()).map(|p| p.id).collect();
        if led.is_empty() { parts.iter().map(|p| p.id).collect() } else { led }
    };
    let Some(zone) = zone else {
        return Selection { partitions: all(), fallback: Some(FallbackReason::UnknownZone) };
    };
    if !topology.has_racks() {
        return Selection { partitions: all(), fallback: Some(FallbackReason::NoRackInfo) };
    }
    let local: Vec<i32> =
        parts.iter().filter(|p| is_local(topology, p, zone, matcher, purpose)).map(|p| p.id).collect();
    if local.is_empty() {
        return Selection { partitions: all(), fallback: Some(FallbackReason::NoLocalPartition) };
    }
    Selection { partitions: local, fallback: None }
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn table() {
        let m = ZoneMatcher::default();
        let az = |s: &str| Zone::label(s);
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

        struct Case<'a> {
            name: &'a str,
            topo: &'a Topology,
            topic: &'a str,
            zone: Option<Zone>,
            purpose: Purpose,
            want: Vec<i32>,
            reason: Option<FallbackReason>,
        }
        use FallbackReason::*;
        use Purpose::*;
        let base = world(&RACKS);
        let norack = world(&[None; 6]);
        let cases = [
            Case {
                name: "produce az1",
                topo: &base,
                topic: "logs",
                zone: Some(az("az1")),
                purpose: Produce,
                want: vec![0, 3],
                reason: None,
            },
            Case {
                name: "produce az3",
                topo: &base,
                topic: "logs",
                zone: Some(az("az3")),
                purpose: Produce,
                want: vec![2, 5],
                reason: None,
            },
            Case {
                name: "consume az1: every partition has an az1 replica",
                topo: &base,
                topic: "logs",
                zone: Some(az("az1")),
                purpose: Consume,
                want: vec![0, 1, 2, 3, 4, 5],
                reason: None,
            },
            Case {
                name: "zone with no leaders",
                topo: &all_in_az1,
                topic: "logs",
                zone: Some(az("az2")),
                purpose: Produce,
                want: vec![0, 1, 2, 3, 4, 5],
                reason: Some(NoLocalPartition),
            },
            Case {
                name: "zone with no replicas",
                topo: &all_in_az1,
                topic: "logs",
                zone: Some(az("az3")),
                purpose: Consume,
                want: vec![0, 1, 2, 3, 4, 5],
                reason: Some(NoLocalPartition),
            },
            Case {
                name: "leader without rack is not local",
                topo: &no_leader_rack,
                topic: "logs",
                zone: Some(az("az1")),
                purpose: Produce,
                want: vec![3],
                reason: None,
            },
            Case {
                name: "downed broker's partitions are not local",
                topo: &downed,
                topic: "logs",
                zone: Some(az("az1")),
                purpose: Produce,
                want: vec![0],
                reason: None,
            },
            Case {
                name: "leaderless partition is neither local nor a fallback target",
                topo: &leaderless,
                topic: "logs",
                zone: Some(az("az1")),
                purpose: Produce,
                want: vec![3],
                reason: None,
            },
            Case {
                name: "leaderless fallback",
                topo: &leaderless,
                topic: "logs",
                zone: None,
                purpose: Produce,
                want: vec![1, 2, 3, 4, 5],
                reason: Some(UnknownZone),
            },
            Case {
                name: "unknown zone",
                topo: &base,
                topic: "logs",
                zone: None,
                purpose: Produce,
                want: vec![0, 1, 2, 3, 4, 5],
                reason: Some(UnknownZone),
            },
            Case {
                name: "no racks anywhere",
                topo: &norack,
                topic: "logs",
                zone: Some(az("az1")),
                purpose: Produce,
                want: vec![0, 1, 2, 3, 4, 5],
                reason: Some(NoRackInfo),
            },
            Case {
                name: "zone nobody is in",
                topo: &base,
                topic: "logs",
                zone: Some(az("az9")),
                purpose: Produce,
                want: vec![0, 1, 2, 3, 4, 5],
                reason: Some(NoLocalPartition),
            },
            Case {
                name: "topic missing",
                topo: &missing,
                topic: "gone",
                zone: Some(az("az1")),
                purpose: Produce,
                want: vec![],
                reason: Some(TopicMissing),
            },
            Case {
                name: "topic never described",
                topo: &base,
                topic: "other",
                zone: Some(az("az1")),
                purpose: Produce,
                want: vec![],
                reason: Some(TopicMissing),
            },
        ];
        for c in cases {
            let got = select(c.topo, c.topic, c.zone.as_ref(), &m, c.purpose);
            assert_eq!(got.partitions, c.want, "{}", c.name);
            assert_eq!(got.fallback, c.reason, "{}", c.name);
        }
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
}
