//! Lock-free bookkeeping on the acknowledgement path: each stream's in-flight byte [`Budget`]
//! and [`AckClock`], touched once per record on librdkafka's delivery thread, so neither takes a
//! lock unless a reader is waiting for budget; and the [`Heartbeat`] of the stream's thread.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::Duration;

/// Bytes sent and not yet acknowledged, bounded over all streams. Reading stops while the budget
/// is exhausted: when Kafka is slow or down, the agent holds still instead of growing.
#[derive(Debug)]
pub struct Budget {
    /// Bytes taken and not yet returned. Taken and returned without a lock: returns happen once
    /// per record on librdkafka's delivery thread, which must not contend with the reader.
    used: AtomicU64,
    /// Readers waiting for budget; a return takes the lock and wakes them only when there are any.
    waiting: AtomicUsize,
    lock: Mutex<()>,
    freed: Condvar,
    max: u64,
}

impl Budget {
    /// A budget of `max` bytes.
    pub fn new(max: u64) -> Budget {
        Budget {
            used: AtomicU64::new(0),
            waiting: AtomicUsize::new(0),
            lock: Mutex::new(()),
            freed: Condvar::new(),
            max,
        }
    }

    /// Takes `n` bytes when they fit (or when nothing is taken: an oversized request goes
    /// through alone); returns false when they do not fit now.
    fn try_take(&self, n: u64) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                (used == 0 || used + n <= self.max).then_some(used + n)
            })
            .is_ok()
    }

    /// Takes `n` bytes, waiting while the budget is full; an oversized request goes through
    /// alone once everything else is acknowledged. Returns false if `stop` was set meanwhile, or
    /// when `interrupt` says the caller has other work that frees budget (records to retry).
    pub fn acquire(&self, n: u64, stop: &AtomicBool, interrupt: &dyn Fn() -> bool) -> bool {
        loop {
            if self.try_take(n) {
                return true;
            }
            if stop.load(Ordering::Relaxed) || interrupt() {
                return false;
            }
            // Registered as waiting before looking again, under the lock a return takes to wake:
            // a return either sees the waiter and wakes it after it sleeps, or happened before
            // the second look, which then sees the bytes returned. The timeout re-checks `stop`.
            let guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
            self.waiting.fetch_add(1, Ordering::SeqCst);
            if !self.fits(n) {
                let _ =
                    self.freed.wait_timeout(guard, Duration::from_millis(100)).unwrap_or_else(PoisonError::into_inner);
            }
            self.waiting.fetch_sub(1, Ordering::SeqCst);
        }
    }

    fn fits(&self, n: u64) -> bool {
        let used = self.used.load(Ordering::SeqCst);
        used == 0 || used + n <= self.max
    }

    /// Returns `n` bytes.
    pub fn release(&self, n: u64) {
        let _ = self.used.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| Some(used.saturating_sub(n)));
        if self.waiting.load(Ordering::SeqCst) > 0 {
            let _guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
            self.freed.notify_all();
        }
    }

    /// The bound.
    pub fn max(&self) -> u64 {
        self.max
    }

    /// Bytes in use.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Wakes waiters (used on shutdown).
    pub fn wake(&self) {
        let _guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        self.freed.notify_all();
    }
}

/// When a stream last had a record acknowledged, as milliseconds since the clock was made:
/// written per record without a lock.
#[derive(Debug)]
pub struct AckClock {
    start: std::time::Instant,
    last_ms: AtomicU64,
}

impl Default for AckClock {
    fn default() -> Self {
        AckClock { start: std::time::Instant::now(), last_ms: AtomicU64::new(0) }
    }
}

impl AckClock {
    /// An acknowledgement now.
    pub fn tick(&self) {
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.fetch_max(now, Ordering::Relaxed);
    }

    /// Time since the last acknowledgement (or since the clock was made).
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed().saturating_sub(Duration::from_millis(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// The last moment a thread showed it was alive, readable from any thread.
#[derive(Debug)]
pub struct Heartbeat {
    base: std::time::Instant,
    /// Milliseconds from `base` to the last beat.
    last_ms: AtomicU64,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Heartbeat { base: std::time::Instant::now(), last_ms: AtomicU64::new(0) }
    }
}

impl Heartbeat {
    /// Records a beat now.
    pub fn beat(&self) {
        self.last_ms.store(self.base.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Time since the last beat.
    pub fn since(&self) -> Duration {
        self.base.elapsed().saturating_sub(Duration::from_millis(self.last_ms.load(Ordering::Relaxed)))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn an_oversized_request_goes_through_alone() {
        let b = Budget::new(100);
        let stop = AtomicBool::new(false);
        assert!(b.acquire(500, &stop, &|| false));
        assert_eq!(b.used(), 500);
        assert!(!b.try_take(1));
        b.release(500);
        assert!(b.acquire(60, &stop, &|| false));
        assert!(!b.try_take(60));
        assert!(b.try_take(40));
        b.release(1000);
        assert_eq!(b.used(), 0, "returns never go below zero");
    }

    #[test]
    fn a_stop_or_an_interrupt_ends_the_wait() {
        let b = Budget::new(100);
        let stop = AtomicBool::new(false);
        assert!(b.acquire(100, &stop, &|| false));
        assert!(!b.acquire(1, &stop, &|| true));
        stop.store(true, Ordering::Relaxed);
        assert!(!b.acquire(1, &stop, &|| false));
    }

    /// Readers and a releasing thread race: the bound holds at every take, and every reader is
    /// woken by returns (a lost wake-up would leave them on the 100 ms timeout, which the
    /// test's rounds would take minutes to sit through).
    #[test]
    fn concurrent_takes_never_exceed_the_bound_and_every_waiter_wakes() {
        let b = Arc::new(Budget::new(1000));
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel::<u64>();
        let readers: Vec<_> = (0..4)
            .map(|_| {
                let (b, stop, tx) = (b.clone(), stop.clone(), tx.clone());
                std::thread::spawn(move || {
                    for _ in 0..5000 {
                        assert!(b.acquire(100, &stop, &|| false));
                        assert!(b.used() <= 1000, "over the bound: {}", b.used());
                        if tx.send(100).is_err() {
                            return;
                        }
                    }
                })
            })
            .collect();
        drop(tx);
        let releaser = {
            let b = b.clone();
            std::thread::spawn(move || {
                for n in rx {
                    b.release(n);
                }
            })
        };
        let started = std::time::Instant::now();
        for r in readers {
            r.join().expect("reader");
        }
        releaser.join().expect("releaser");
        assert_eq!(b.used(), 0);
        assert!(started.elapsed() < Duration::from_secs(60), "waiters slept on timeouts: {:?}", started.elapsed());
    }

    #[test]
    fn the_ack_clock_measures_from_the_last_tick() {
        let start = std::time::Instant::now().checked_sub(Duration::from_secs(5)).expect("an instant 5 s ago");
        let c = AckClock { start, last_ms: AtomicU64::new(0) };
        assert!(c.elapsed() >= Duration::from_secs(5));
        c.tick();
        assert!(c.elapsed() < Duration::from_secs(5));
    }
}
