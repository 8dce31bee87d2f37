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
mod tests;
