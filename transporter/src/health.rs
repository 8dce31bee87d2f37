//! What `/healthz` and `/readyz` judge beyond "the process answers". Liveness: the loops that
//! must keep turning (the control loop while registered, the master's loop while master) beat
//! here each round; a loop that has not turned for [`STALLED_AFTER`] makes the process
//! unhealthy, so the liveness probe restarts it. Their etcd requests time out (5 s), so an etcd
//! outage slows a round but never stalls it: an outage is a readiness matter, not a restart.
//!
//! ```text
//!  control loop round ──beat_control──┐
//!  master round ───────beat_master────┴──> Health ──stalled(registered, master)──> /healthz 503
//!  lease grant / registration / renewal ──set_etcd(why)──> Health ──etcd()──> /readyz 503 "etcd: …"
//! ```

use std::sync::Mutex;
use std::sync::PoisonError;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long a loop may go without a round before the process is unhealthy: a round makes a
/// few etcd requests of at most 5 s each, so a minute without one is a stuck process.
pub const STALLED_AFTER: Duration = Duration::from_secs(60);

/// The loops' heartbeats, as milliseconds since `started` (0: never).
#[derive(Debug)]
pub struct Health {
    started: Instant,
    control: AtomicU64,
    master: AtomicU64,
    /// Why etcd cannot be used now (a lease not granted or not renewed), for `/readyz`.
    etcd: Mutex<Option<String>>,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            started: Instant::now(),
            control: AtomicU64::new(0),
            master: AtomicU64::new(0),
            etcd: Mutex::new(None),
        }
    }
}

impl Health {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX).max(1)
    }

    /// The control loop turned.
    pub fn beat_control(&self) {
        self.control.store(self.now_ms(), Ordering::Relaxed);
    }

    /// The master's loop turned.
    pub fn beat_master(&self) {
        self.master.store(self.now_ms(), Ordering::Relaxed);
    }

    /// Records why etcd cannot be used now, or that it can (`None`).
    pub fn set_etcd(&self, why: Option<String>) {
        *self.etcd.lock().unwrap_or_else(PoisonError::into_inner) = why;
    }

    /// Why etcd cannot be used now, if it cannot.
    pub fn etcd(&self) -> Option<String> {
        self.etcd.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Why the process is stuck, if it is: a loop that should turn (the control loop while
    /// `registered`, the master's while `master`) has not for `limit`.
    pub fn stalled(&self, registered: bool, master: bool, limit: Duration) -> Option<String> {
        let now = self.now_ms();
        let limit_ms = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX);
        let check = |name: &str, beat: &AtomicU64| {
            let last = beat.load(Ordering::Relaxed);
            // A loop that never beat is measured from the process's start.
            let idle = now.saturating_sub(last);
            (idle > limit_ms).then(|| format!("the {name} has not turned for {} s", idle / 1000))
        };
        let control = if registered { check("control loop", &self.control) } else { None };
        control.or_else(|| if master { check("master's loop", &self.master) } else { None })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms_ago: u64) -> Health {
        let h = Health::default();
        h.beat_control();
        h.beat_master();
        Health { started: h.started - Duration::from_millis(ms_ago), ..h }
    }

    #[test]
    fn a_loop_is_stalled_only_while_it_should_turn() {
        let limit = Duration::from_secs(60);
        let fresh = at(1_000);
        assert_eq!(fresh.stalled(true, true, limit), None, "turned a second ago");
        let stuck = at(61_500);
        assert_eq!(stuck.stalled(true, false, limit).as_deref(), Some("the control loop has not turned for 61 s"));
        assert_eq!(stuck.stalled(false, true, limit).as_deref(), Some("the master's loop has not turned for 61 s"));
        assert_eq!(stuck.stalled(false, false, limit), None, "neither loop runs: not registered, not master");
        let h = at(0);
        h.beat_control();
        assert_eq!(h.stalled(true, false, limit), None, "a beat resets the clock");
    }
}
