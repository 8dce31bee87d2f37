//! The topology the master plans from, steadied against what passes: a partition's new leader
//! counts only once it has led for `assignment.leader-settle-secs` (a rolling broker restart
//! moves each leader away and back within a minute or two; following each move would hand
//! every partition over twice), and a topic that was described before and now fails to be is
//! planned from its last description for [`MISSING_GRACE_MS`] (one topic's DescribeTopics error
//! dropped all its partitions from the assignment, and their owners let them go). Pure.
//!
//! ```text
//!  Topology (as fetched) ──Steady::apply(now)──> Topology (planned from)
//!     leader L2 ≠ held L1: L1 until L2 has led for settle; then L2
//!     topic Missing, was Present: its last partitions until the grace ends; then Missing
//!  + the next moment the result could change without a new fetch (a settle or a grace ending)
//! ```

use std::collections::BTreeMap;

use az_core::topology::{PartitionInfo, TopicInfo};
use az_core::{TopicPartition, Topology};

/// How long a topic that fails to be described keeps its last description.
pub const MISSING_GRACE_MS: i64 = 60_000;

/// A partition's leader as planned, and a different one seen since.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Held {
    leader: Option<i32>,
    /// The leader seen instead, and since when (Unix ms).
    pending: Option<(Option<i32>, i64)>,
}

/// What the master remembers of earlier topologies.
#[derive(Debug, Clone, Default)]
pub struct Steady {
    settle_ms: i64,
    leaders: BTreeMap<TopicPartition, Held>,
    /// Topics last described, and when.
    described: BTreeMap<String, (Vec<PartitionInfo>, i64)>,
}

impl Steady {
    /// A new memory; leaders settle after `settle_ms` (0: every move is followed at once).
    pub fn new(settle_ms: i64) -> Steady {
        Steady { settle_ms: settle_ms.max(0), ..Steady::default() }
    }

    /// The topology to plan from at `now_ms`, and when (Unix ms) it could next change without
    /// a new fetch.
    pub fn apply(&mut self, topo: &Topology, now_ms: i64) -> (Topology, Option<i64>) {
        let mut out = topo.clone();
        let mut next: Option<i64> = None;
        let mut soonest = |t: i64| next = Some(next.map_or(t, |n| n.min(t)));
        for (name, info) in &mut out.topics {
            match info {
                TopicInfo::Present(parts) => {
                    self.described.insert(name.clone(), (parts.clone(), now_ms));
                    for p in parts.iter_mut() {
                        if let Some(until) = self.settle(name, p, now_ms) {
                            soonest(until);
                        }
                    }
                }
                TopicInfo::Missing(why) => {
                    if let Some((parts, at)) = self.described.get(name)
                        && now_ms < at.saturating_add(MISSING_GRACE_MS)
                    {
                        tracing::debug!(topic = %name, error = %why, "planning from the topic's last description");
                        soonest(at.saturating_add(MISSING_GRACE_MS));
                        let mut parts = parts.clone();
                        // Its leaders as settled, not as last fetched (a new one may be settling).
                        for p in &mut parts {
                            if let Some(until) = self.settle(name, p, now_ms) {
                                soonest(until);
                            }
                        }
                        *info = TopicInfo::Present(parts);
                    }
                }
            }
        }
        self.described
            .retain(|name, (_, at)| topo.topics.contains_key(name) && now_ms < at.saturating_add(MISSING_GRACE_MS));
        self.leaders.retain(|tp, _| topo.topics.contains_key(&tp.topic));
        (out, next)
    }

    /// Replaces `p.leader` by the held leader while a new one settles; when the new one's
    /// settle ends, if it is still settling.
    fn settle(&mut self, topic: &str, p: &mut PartitionInfo, now_ms: i64) -> Option<i64> {
        let tp = TopicPartition { topic: topic.to_owned(), partition: p.id };
        let held = self.leaders.entry(tp).or_insert(Held { leader: p.leader, pending: None });
        if held.leader == p.leader || held.leader.is_none() || self.settle_ms == 0 {
            *held = Held { leader: p.leader, pending: None };
            return None;
        }
        let since = match held.pending {
            Some((l, since)) if l == p.leader => since,
            _ => {
                held.pending = Some((p.leader, now_ms));
                now_ms
            }
        };
        let until = since.saturating_add(self.settle_ms);
        if now_ms >= until {
            *held = Held { leader: p.leader, pending: None };
            return None;
        }
        p.leader = held.leader;
        Some(until)
    }
}

#[cfg(test)]
mod tests {
    use az_core::topology::Broker;

    use super::*;

    fn topo(leaders: &[Option<i32>], missing: bool) -> Topology {
        let parts = leaders
            .iter()
            .enumerate()
            .map(|(i, l)| PartitionInfo { id: i as i32, leader: *l, replicas: vec![1, 2, 3], isr: vec![1, 2, 3] })
            .collect();
        let info = if missing { TopicInfo::Missing("REQUEST_TIMED_OUT".into()) } else { TopicInfo::Present(parts) };
        Topology {
            brokers: (1..=3).map(|id| (id, Broker { id, host: "b".into(), port: 1, rack: None })).collect(),
            topics: BTreeMap::from([("t".to_owned(), info)]),
            fetched_at: None,
            generation: 1,
        }
    }

    fn leaders(t: &Topology) -> Vec<Option<i32>> {
        t.partitions("t").unwrap_or_default().iter().map(|p| p.leader).collect()
    }

    /// A rolling restart: broker 1 goes, its partition is led by 2 for 40 s, then by 1 again.
    /// With a settle of 60 s the plan never sees the move; a longer absence is followed.
    #[test]
    fn a_leader_away_for_less_than_the_settle_is_not_followed() {
        let mut s = Steady::new(60_000);
        assert_eq!(leaders(&s.apply(&topo(&[Some(1), Some(3)], false), 0).0), vec![Some(1), Some(3)]);
        let (away, next) = s.apply(&topo(&[Some(2), Some(3)], false), 1_000);
        assert_eq!(leaders(&away), vec![Some(1), Some(3)], "held while it settles");
        assert_eq!(next, Some(61_000));
        assert_eq!(leaders(&s.apply(&topo(&[Some(2), Some(3)], false), 41_000).0), vec![Some(1), Some(3)]);
        let (back, next) = s.apply(&topo(&[Some(1), Some(3)], false), 42_000);
        assert_eq!((leaders(&back), next), (vec![Some(1), Some(3)], None), "back before the settle: no move at all");
        // Away for longer than the settle: followed once it has led that long.
        s.apply(&topo(&[Some(2), Some(3)], false), 50_000);
        assert_eq!(leaders(&s.apply(&topo(&[Some(2), Some(3)], false), 109_999).0)[0], Some(1));
        assert_eq!(leaders(&s.apply(&topo(&[Some(2), Some(3)], false), 110_000).0)[0], Some(2));
        // A third leader during the settle starts the settle again.
        s.apply(&topo(&[Some(3), Some(3)], false), 120_000);
        s.apply(&topo(&[Some(1), Some(3)], false), 150_000);
        assert_eq!(leaders(&s.apply(&topo(&[Some(1), Some(3)], false), 200_000).0)[0], Some(2));
        assert_eq!(leaders(&s.apply(&topo(&[Some(1), Some(3)], false), 210_000).0)[0], Some(1));
    }

    /// A partition without a leader planned before takes the first one at once; a settle of 0
    /// follows every move.
    #[test]
    fn a_first_leader_and_a_zero_settle_are_taken_at_once() {
        let mut s = Steady::new(60_000);
        s.apply(&topo(&[None], false), 0);
        assert_eq!(leaders(&s.apply(&topo(&[Some(2)], false), 1).0), vec![Some(2)]);
        let mut s = Steady::new(0);
        s.apply(&topo(&[Some(1)], false), 0);
        assert_eq!(leaders(&s.apply(&topo(&[Some(2)], false), 1).0), vec![Some(2)]);
    }

    /// A topic that fails to be described keeps its partitions for a minute; one never
    /// described stays missing.
    #[test]
    fn a_topic_that_fails_to_be_described_keeps_its_partitions_for_a_while() {
        let mut s = Steady::new(0);
        let (never, _) = s.apply(&topo(&[], true), 0);
        assert!(never.partitions("t").is_none());
        s.apply(&topo(&[Some(1), Some(2)], false), 1_000);
        let (kept, next) = s.apply(&topo(&[], true), 2_000);
        assert_eq!(leaders(&kept), vec![Some(1), Some(2)]);
        assert_eq!(next, Some(1_000 + MISSING_GRACE_MS));
        let (gone, _) = s.apply(&topo(&[], true), 1_000 + MISSING_GRACE_MS);
        assert!(gone.partitions("t").is_none(), "missing for longer than the grace: dropped");
    }
}
