//! Lines read from one file and not yet sent, and how they are cut into groups (one group per
//! partition choice). Pure logic, no I/O.
//!
//! ```text
//!  Splitter events ──push──> Batch { data, spans } ──next_group(limits)──> [start, end)
//!                                    ▲                                       │ sent
//!                                    └──────────────── consume(end) <────────┘
//! ```

use std::ops::Range;

use crate::container::EventMeta;

/// Events read but not yet sent, from one file, in file order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Batch {
    /// The events' bytes, one after the other, so that a batch is two allocations however many
    /// events it holds.
    data: Vec<u8>,
    /// One span per event, in file order.
    spans: Vec<Span>,
}

/// Where one event of a [`Batch`] is, in the batch and in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    /// Index in the batch's `data` of the event's first byte.
    start: usize,
    /// Length of the event in bytes (its newline is not part of it).
    len: usize,
    /// File offset just past the event (past its newline when it had one): where the file's
    /// checkpoint may move once the event is acknowledged.
    end: u64,
    /// What its container log line said (time, stream).
    meta: EventMeta,
}

impl Span {
    /// The event's bytes as a range of the batch's `data`.
    fn bytes(&self) -> Range<usize> {
        self.start..self.start + self.len
    }
}

/// How large a group may be.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Events per group.
    pub lines: usize,
    /// Bytes per group (a single larger event still makes a group of its own).
    pub bytes: usize,
}

impl Batch {
    /// Appends an event that ends at `end` in the file.
    pub fn push(&mut self, event: &[u8], end: u64, meta: EventMeta) {
        let start = self.data.len();
        self.data.extend_from_slice(event);
        self.spans.push(Span { start, len: event.len(), end, meta });
    }

    /// The container log metadata of the events of `range`.
    pub fn metas(&self, range: Range<usize>) -> impl Iterator<Item = EventMeta> + '_ {
        self.spans[range].iter().map(|s| s.meta)
    }

    /// Whether there are no events.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Bytes of event data held.
    pub fn bytes(&self) -> usize {
        self.data.len()
    }

    /// The events of `range`, with their end offsets.
    pub fn events(&self, range: Range<usize>) -> impl Iterator<Item = (&[u8], u64)> {
        self.spans[range].iter().map(|s| (&self.data[s.bytes()], s.end))
    }

    /// The file offset where the last event of `range` ends.
    pub fn end_offset(&self, range: &Range<usize>) -> Option<u64> {
        range.end.checked_sub(1).and_then(|i| self.spans.get(i)).map(|s| s.end)
    }

    /// Payload bytes of `range`.
    pub fn range_bytes(&self, range: &Range<usize>) -> u64 {
        self.spans[range.clone()].iter().map(|s| s.len as u64).sum()
    }

    /// The next group starting at `start`: up to `limits.lines` events and `limits.bytes` bytes.
    /// Unless `all`, a group that is not full waits for more events (`None`), so that a slow
    /// writer's lines still travel in batches.
    pub fn next_group(&self, start: usize, limits: Limits, all: bool) -> Option<Range<usize>> {
        let mut end = start;
        let mut bytes = 0;
        while end < self.spans.len()
            && end - start < limits.lines.max(1)
            && (end == start || bytes + self.spans[end].len <= limits.bytes)
        {
            bytes += self.spans[end].len;
            end += 1;
        }
        let full = end - start >= limits.lines.max(1) || end < self.spans.len();
        (end > start && (full || all)).then_some(start..end)
    }

    /// Memory the batch holds (its capacity, not only its events), for the unsent-bytes bound.
    pub fn held(&self) -> usize {
        self.data.capacity() + self.spans.capacity() * std::mem::size_of::<Span>()
    }

    /// Gives the memory back when there are no events.
    pub fn release_if_empty(&mut self) {
        if self.spans.is_empty() {
            self.data = Vec::new();
            self.spans = Vec::new();
        }
    }

    /// Drops the first `n` events (they were sent).
    pub fn consume(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        let cut = self.spans.get(n).map_or(self.data.len(), |s| s.start);
        self.data.drain(..cut);
        self.spans.drain(..n.min(self.spans.len()));
        for s in &mut self.spans {
            s.start -= cut;
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn an_empty_batch_gives_its_memory_back_and_one_with_events_keeps_them() {
        let mut b = batch(&["one", "two", "three"]);
        b.release_if_empty();
        assert_eq!(b.events(0..3).map(|(e, _)| e.to_vec()).collect::<Vec<_>>(), [&b"one"[..], b"two", b"three"]);
        b.consume(3);
        b.release_if_empty();
        assert!(b.is_empty());
        assert_eq!((b.data.capacity(), b.spans.capacity()), (0, 0));
        b.push(b"four", 19, EventMeta::default());
        assert_eq!(b.events(0..1).collect::<Vec<_>>(), [(&b"four"[..], 19)]);
    }

    fn batch(lines: &[&str]) -> Batch {
        let mut b = Batch::default();
        let mut end = 0;
        for l in lines {
            end += l.len() as u64 + 1;
            b.push(l.as_bytes(), end, EventMeta::default());
        }
        b
    }

    #[test]
    fn an_incomplete_group_waits_unless_all() {
        let b = batch(&["a", "b"]);
        let limits = Limits { lines: 3, bytes: 100 };
        assert_eq!(b.next_group(0, limits, false), None);
        assert_eq!(b.next_group(0, limits, true), Some(0..2));
        assert_eq!(b.next_group(2, limits, true), None);
    }

    #[test]
    fn an_oversized_event_makes_a_group_of_its_own() {
        let b = batch(&["aaaaaaaaaa", "b"]);
        let limits = Limits { lines: 10, bytes: 4 };
        assert_eq!(b.next_group(0, limits, false), Some(0..1));
        assert_eq!(b.next_group(1, limits, true), Some(1..2));
    }

    #[test]
    fn consume_keeps_the_rest_intact() {
        let mut b = batch(&["one", "two", "three"]);
        b.consume(1);
        assert_eq!(b.events(0..2).map(|(d, _)| d).collect::<Vec<_>>(), vec![&b"two"[..], b"three"]);
        assert_eq!(b.events(0..2).map(|(_, e)| e).collect::<Vec<_>>(), vec![8, 14]);
        b.consume(2);
        assert!(b.is_empty());
        assert_eq!(b.bytes(), 0);
    }

    proptest! {
        /// Cutting a batch into groups and consuming them yields every event once, in order,
        /// and every group respects the limits (a single oversized event aside).
        #[test]
        fn groups_cover_every_event_in_order(
            lens in proptest::collection::vec(0usize..40, 0..60),
            lines in 1usize..8,
            bytes in 1usize..100,
        ) {
            let mut b = Batch::default();
            let mut end = 0u64;
            for (i, len) in lens.iter().enumerate() {
                end += *len as u64 + 1;
                b.push(&vec![b'a' + (i % 26) as u8; *len], end, EventMeta::default());
            }
            let original = b.clone();
            let limits = Limits { lines, bytes };
            let mut seen = Vec::new();
            while let Some(r) = b.next_group(0, limits, true) {
                prop_assert!(r.len() <= lines);
                prop_assert!(r.len() == 1 || b.range_bytes(&r) <= bytes as u64);
                seen.extend(b.events(r.clone()).map(|(d, e)| (d.to_vec(), e)));
                b.consume(r.end);
            }
            prop_assert!(b.is_empty());
            let expected: Vec<_> = original.events(0..lens.len()).map(|(d, e)| (d.to_vec(), e)).collect();
            prop_assert_eq!(seen, expected);
        }
    }
}
