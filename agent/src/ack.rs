//! Acknowledgement tracking per file: batches complete out of order (they go to different
//! partitions), but a file's checkpoint may only move past a byte once every batch before it
//! is acknowledged. Pure logic, no I/O.
//!
//! ```text
//!  dispatch(end) -> seq ──> pending: [seq 7 end 100 ✓][seq 8 end 180 ·][seq 9 end 260 ✓]
//!  complete(seq 8) ──> pops 7, 8, 9 ──> acked = 260
//! ```
//!
//! A copytruncate starts a new generation: batches of the old generation still complete (their
//! bytes are released) but can no longer move the checkpoint of the truncated file.

use std::collections::VecDeque;

/// Tracks one file's in-flight batches.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AckTracker {
    generation: u64,
    first_seq: u64,
    pending: VecDeque<(u64, bool)>,
    acked: u64,
}

impl AckTracker {
    /// A tracker whose checkpoint starts at `offset`.
    pub fn new(offset: u64) -> AckTracker {
        AckTracker { acked: offset, ..Default::default() }
    }

    /// Registers a batch ending at `end_offset`; returns its (generation, sequence).
    pub fn dispatch(&mut self, end_offset: u64) -> (u64, u64) {
        let seq = self.first_seq + self.pending.len() as u64;
        self.pending.push_back((end_offset, false));
        (self.generation, seq)
    }

    /// Marks a batch acknowledged; returns the new checkpoint offset when it moved.
    pub fn complete(&mut self, generation: u64, seq: u64) -> Option<u64> {
        if generation != self.generation || seq < self.first_seq {
            return None;
        }
        let idx = usize::try_from(seq - self.first_seq).ok()?;
        self.pending.get_mut(idx)?.1 = true;
        let before = self.acked;
        while let Some(&(end, true)) = self.pending.front() {
            self.acked = end;
            self.pending.pop_front();
            self.first_seq += 1;
        }
        (self.acked != before).then_some(self.acked)
    }

    /// Every byte before this offset is acknowledged.
    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// Batches not yet acknowledged.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn out_of_order_completion_waits_for_the_gap() {
        let mut t = AckTracker::new(10);
        let a = t.dispatch(100);
        let b = t.dispatch(180);
        let c = t.dispatch(260);
        assert_eq!(t.complete(c.0, c.1), None);
        assert_eq!(t.complete(a.0, a.1), Some(100));
        assert_eq!(t.complete(b.0, b.1), Some(260));
        assert_eq!(t.in_flight(), 0);
        assert_eq!(t.complete(b.0, b.1), None, "double completion is ignored");
    }

    proptest::proptest! {
        /// For any completion order, the checkpoint never passes an unacknowledged batch and
        /// ends at the last batch's end.
        #[test]
        fn never_skips_a_gap(order in Just((0..30usize).collect::<Vec<_>>()).prop_shuffle()) {
            let mut t = AckTracker::new(0);
            let ids: Vec<(u64, u64)> = (0..30u64).map(|i| t.dispatch((i + 1) * 10)).collect();
            let mut done = [false; 30];
            for i in order {
                done[i] = true;
                t.complete(ids[i].0, ids[i].1);
                let prefix = done.iter().take_while(|d| **d).count() as u64;
                prop_assert_eq!(t.acked(), prefix * 10);
            }
            prop_assert_eq!(t.acked(), 300);
        }
    }
}
