//! Acknowledgement tracking per file: batches complete out of order (they go to different
//! partitions), but a file's checkpoint may only move past a byte once every batch before it
//! is acknowledged. Pure logic, no I/O.
//!
//! ```text
//!  dispatch(end) -> Ticket ──> pending: [seq 7 end 100 ✓][seq 8 end 180 ·][seq 9 end 260 ✓]
//!  complete(Ticket seq 8) ──> pops 7, 8, 9 ──> acked = 260
//! ```
//!
//! A copytruncate moves the whole tracker to the copy and the truncated file starts with a fresh
//! tracker, so a ticket only ever meets the tracker that issued it.

use std::collections::VecDeque;

/// What identifies a dispatched batch to its tracker; the batch's acknowledgement hands it back
/// to [`AckTracker::complete`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    /// The batch's place in the file's dispatch order: 0 for the tracker's first batch, then
    /// one more for each batch after it.
    pub seq: u64,
}

/// A dispatched batch as the tracker remembers it until every batch before it is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pending {
    /// The file offset just past the batch's last event: where the checkpoint goes once this
    /// batch and every batch before it are acknowledged.
    end_offset: u64,
    /// Whether Kafka has acknowledged (or the agent has settled) every record of the batch.
    acked: bool,
}

/// Tracks one file's in-flight batches.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AckTracker {
    /// The sequence number of the front of `pending`.
    first_seq: u64,
    /// Batches not yet folded into `acked`, in dispatch order.
    pending: VecDeque<Pending>,
    acked: u64,
}

impl AckTracker {
    /// A tracker whose checkpoint starts at `offset`.
    pub fn new(offset: u64) -> AckTracker {
        AckTracker { acked: offset, ..Default::default() }
    }

    /// Registers a batch ending at `end_offset`; returns the ticket that completes it.
    pub fn dispatch(&mut self, end_offset: u64) -> Ticket {
        let seq = self.first_seq + self.pending.len() as u64;
        self.pending.push_back(Pending { end_offset, acked: false });
        Ticket { seq }
    }

    /// Marks a batch acknowledged; returns the new checkpoint offset when it moved.
    pub fn complete(&mut self, ticket: Ticket) -> Option<u64> {
        if ticket.seq < self.first_seq {
            return None;
        }
        let idx = usize::try_from(ticket.seq - self.first_seq).ok()?;
        self.pending.get_mut(idx)?.acked = true;
        let before = self.acked;
        while let Some(&Pending { end_offset, acked: true }) = self.pending.front() {
            self.acked = end_offset;
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
        assert_eq!(t.complete(c), None);
        assert_eq!(t.complete(a), Some(100));
        assert_eq!(t.complete(b), Some(260));
        assert_eq!(t.in_flight(), 0);
        assert_eq!(t.complete(b), None, "double completion is ignored");
    }

    proptest::proptest! {
        /// For any completion order, the checkpoint never passes an unacknowledged batch and
        /// ends at the last batch's end.
        #[test]
        fn never_skips_a_gap(order in Just((0..30usize).collect::<Vec<_>>()).prop_shuffle()) {
            let mut t = AckTracker::new(0);
            let ids: Vec<Ticket> = (0..30u64).map(|i| t.dispatch((i + 1) * 10)).collect();
            let mut done = [false; 30];
            for i in order {
                done[i] = true;
                t.complete(ids[i]);
                let prefix = done.iter().take_while(|d| **d).count() as u64;
                prop_assert_eq!(t.acked(), prefix * 10);
            }
            prop_assert_eq!(t.acked(), 300);
        }
    }
}
