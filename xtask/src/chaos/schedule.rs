//! The fault schedule of a chaos run: which fault, on which target, held how long, after which
//! pause. A pure function of the seed and the number of faults, so a seed printed in a report
//! reproduces the run's faults exactly.
//!
//! ```text
//!  seed ──StdRng──> deck: every kind ⌊n / kinds⌋ times + random kinds for the rest, shuffled
//!                    └─> per fault: target index, hold, restart delay, pause before, variant
//! ```

use rand::seq::SliceRandom as _;
use rand::{Rng as _, SeedableRng as _};

/// Every kind of fault the harness injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// kill -9 of an agent, restarted after a delay.
    AgentKill,
    /// kill -9 of a transporter worker that is not the master, restarted after a delay.
    WorkerKill,
    /// kill -9 of the master, restarted after a delay.
    MasterKill,
    /// SIGSTOP of a worker for longer than its lease, then SIGCONT.
    WorkerStall,
    /// An agent stopped (kill -9), its logs rotated by logrotate, the agent restarted.
    RotateWhileDown,
    /// logrotate with `copytruncate` under a running agent.
    Copytruncate,
    /// A partition's leader moved to another replica.
    LeaderMove,
    /// A broker down, then up.
    BrokerDown,
    /// Errors pushed onto the next Kafka requests of one API.
    KafkaErrors,
    /// etcd paused (SIGSTOP) past the lease TTL, then resumed.
    EtcdPause,
    /// etcd paused past the lease TTL, then killed and restarted on the same data.
    EtcdRestart,
    /// The next S3 requests answered 500 or 503.
    S3Errors,
    /// S3 answering late and reading bodies slowly.
    S3Slow,
    /// The connection of the next S3 uploads cut halfway through the body.
    S3Cut,
    /// An agent's checkpoint directory or a worker's buffer directory made unwritable.
    DirUnwritable,
    /// The next fetches answered OFFSET_OUT_OF_RANGE though the offsets are in the log.
    FetchOutOfRange,
    /// S3 taking uploads so slowly that one upload outlasts the workers' lease TTL.
    S3SlowPastLease,
    /// A whole zone down: its brokers (leadership moved away first), workers and agent.
    ZoneOutage,
    /// A zone's programs cut off from the other zones' brokers and from etcd, still running.
    ZoneIsolation,
}

impl Kind {
    /// Every kind, in report order.
    pub const ALL: [Kind; 19] = [
        Kind::AgentKill,
        Kind::WorkerKill,
        Kind::MasterKill,
        Kind::WorkerStall,
        Kind::RotateWhileDown,
        Kind::Copytruncate,
        Kind::LeaderMove,
        Kind::BrokerDown,
        Kind::KafkaErrors,
        Kind::EtcdPause,
        Kind::EtcdRestart,
        Kind::S3Errors,
        Kind::S3Slow,
        Kind::S3Cut,
        Kind::DirUnwritable,
        Kind::FetchOutOfRange,
        Kind::S3SlowPastLease,
        Kind::ZoneOutage,
        Kind::ZoneIsolation,
    ];

    /// The kebab-case name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Kind::AgentKill => "agent-kill",
            Kind::WorkerKill => "worker-kill",
            Kind::MasterKill => "master-kill",
            Kind::WorkerStall => "worker-stall",
            Kind::RotateWhileDown => "rotate-while-down",
            Kind::Copytruncate => "copytruncate",
            Kind::LeaderMove => "leader-move",
            Kind::BrokerDown => "broker-down",
            Kind::KafkaErrors => "kafka-errors",
            Kind::EtcdPause => "etcd-pause",
            Kind::EtcdRestart => "etcd-restart",
            Kind::S3Errors => "s3-errors",
            Kind::S3Slow => "s3-slow",
            Kind::S3Cut => "s3-cut",
            Kind::DirUnwritable => "dir-unwritable",
            Kind::FetchOutOfRange => "fetch-out-of-range",
            Kind::S3SlowPastLease => "s3-slow-past-lease",
            Kind::ZoneOutage => "zone-outage",
            Kind::ZoneIsolation => "zone-isolation",
        }
    }

    /// The kind named `name` (as in reports).
    pub fn parse(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// One planned fault. Targets are drawn as raw numbers and reduced modulo the number of
/// candidates when the fault is injected (the candidates, such as the non-master workers, are
/// only known then).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// What to inject.
    pub kind: Kind,
    /// Picks the target among the candidates.
    pub target: u64,
    /// A second pick (a partition, an API, an error code, a status).
    pub variant: u64,
    /// How long the fault lasts before it is healed, beyond the minimum its kind needs (a
    /// stall must outlast the lease), in milliseconds.
    pub hold_ms: u64,
    /// Pause before the fault, in milliseconds.
    pub pause_ms: u64,
    /// How many requests or writes a request fault hits.
    pub count: usize,
}

/// The schedule of `n` faults of the given kinds for `seed`. When `n` is at least the number of
/// kinds, every kind appears at least `n / kinds` times.
pub fn plan(seed: u64, n: usize, kinds: &[Kind]) -> Vec<Fault> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let rounds = n / kinds.len().max(1);
    let mut deck: Vec<Kind> = (0..rounds).flat_map(|_| kinds.iter().copied()).collect();
    let mut rest = kinds.to_vec();
    rest.shuffle(&mut rng);
    deck.extend(rest.into_iter().take(n - deck.len()));
    deck.shuffle(&mut rng);
    deck.into_iter()
        .map(|kind| Fault {
            kind,
            target: rng.random(),
            variant: rng.random(),
            hold_ms: rng.random_range(500..3_000),
            pause_ms: rng.random_range(200..1_500),
            count: rng.random_range(2..8),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_schedule_and_another_seed_another() {
        assert_eq!(plan(7, 40, &Kind::ALL), plan(7, 40, &Kind::ALL));
        assert_ne!(plan(7, 40, &Kind::ALL), plan(8, 40, &Kind::ALL));
    }

    #[test]
    fn every_kind_appears_at_least_n_over_kinds_times() {
        for (seed, n) in [(1, 100), (2, 100), (3, 100), (4, 15), (5, 31), (6, 7)] {
            let faults = plan(seed, n, &Kind::ALL);
            assert_eq!(faults.len(), n);
            for kind in Kind::ALL {
                let count = faults.iter().filter(|f| f.kind == kind).count();
                assert!(count >= n / Kind::ALL.len(), "seed {seed}: {kind:?} {count} times in {n}");
            }
            // With fewer faults than kinds, no kind repeats.
            if n < Kind::ALL.len() {
                let mut kinds: Vec<Kind> = faults.iter().map(|f| f.kind).collect();
                kinds.sort();
                kinds.dedup();
                assert_eq!(kinds.len(), n);
            }
        }
    }

    #[test]
    fn a_subset_of_kinds_is_all_a_plan_holds() {
        let faults = plan(3, 10, &[Kind::BrokerDown, Kind::S3Cut]);
        assert!(faults.iter().all(|f| matches!(f.kind, Kind::BrokerDown | Kind::S3Cut)));
        assert_eq!(faults.iter().filter(|f| f.kind == Kind::S3Cut).count(), 5);
    }

    #[test]
    fn names_are_distinct_and_parse_back() {
        for k in Kind::ALL {
            assert_eq!(Kind::parse(k.name()), Some(k));
        }
        let mut names: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Kind::ALL.len());
    }
}
