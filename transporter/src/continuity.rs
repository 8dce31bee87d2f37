//! A partition's offset chain, without I/O: which record may go into a buffer next, which
//! offsets are missing and why, and what an object must hold to prove it covers its span.
//!
//! ```text
//!  record offset ──Chain::offer──> Append (the expected one)
//!                               ──> Stale (fetched before a seek: dropped)
//!                               ──> Verify (an unexplained jump: read again from the expected
//!                                           offset; seen again at the same place, it is part of the log)
//!                               ──> Gap (a verified jump: compaction, transaction markers, aborted records)
//!  out of range, position < log start ──Chain::retention──> Gap (retention)
//!  Span: from ..= last = records + gap records, checked before a commit (Span::check)
//! ```
//!
//! The invariant the transporter keeps is that no offset is committed past a record that is
//! not in an object: every object says where its chain starts (`from`, the offset committed
//! before it), where it ends, how many records it holds and which offsets between are not in
//! Kafka and why. The pump keeps it by construction ([`Chain`] decides, [`Span`] refuses an
//! offset that does not follow), and a roll checks it again ([`Span::check`]) so that a path
//! nobody thought of fails loudly instead of committing past records it never wrote.

use std::fmt;

/// Why offsets are missing from an object's chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GapReason {
    /// Below the partition's log start when read: retention (or a deleted-records request)
    /// removed them before they were read. Lost in Kafka, not by the transporter.
    Retention,
    /// Absent from the log itself, seen twice at the same place: compaction, transaction
    /// markers, aborted transactions under `read_committed`.
    Log,
}

impl GapReason {
    /// The name in metrics, logs and object metadata.
    pub fn as_str(self) -> &'static str {
        match self {
            GapReason::Retention => "retention",
            GapReason::Log => "log",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<GapReason> {
        match s {
            "retention" => Some(GapReason::Retention),
            "log" => Some(GapReason::Log),
            _ => None,
        }
    }
}

/// Offsets `from ..= to` that are not in Kafka, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    /// First missing offset.
    pub from: i64,
    /// Last missing offset.
    pub to: i64,
    /// Why they are missing.
    pub reason: GapReason,
}

impl Gap {
    /// Offsets in the gap (no overflow, whatever a metadata value says).
    pub fn len(&self) -> u64 {
        self.to.checked_sub(self.from).and_then(|d| d.checked_add(1)).map_or(0, |n| n.max(0) as u64)
    }

    /// Whether the gap is empty (never, for gaps made here).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Display for Gap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}:{}", self.from, self.to, self.reason.as_str())
    }
}

/// What to do with a record the consumer delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// It is the expected record: append it.
    Append,
    /// It is from before the current position (fetched before a seek): drop it.
    Stale,
    /// It jumps past the expected offset and the jump is not yet explained: drop it and read
    /// again from [`Chain::expected`].
    Verify,
    /// The jump was seen again from a fresh read at the same place: the offsets between are not
    /// in the log. Record the gap, then append the record.
    Gap(Gap),
}

/// The most reads of the same position that may disagree on where the log continues before
/// the partition stops with an error.
pub const MAX_VERIFICATIONS: u32 = 8;

/// Errors of the chain: each means a record would be committed past without being written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContinuityError {
    /// A record or gap does not start where the chain is.
    #[error("offset {got} does not follow the chain, which is at {expected}")]
    NotNext {
        /// Where the chain is.
        expected: i64,
        /// What was offered.
        got: i64,
    },
    /// Reads of the same position kept disagreeing.
    #[error("reading from offset {at} gave {reads} different next offsets; the log cannot be followed here")]
    Unstable {
        /// The position.
        at: i64,
        /// How many reads disagreed.
        reads: u32,
    },
    /// A span's record count does not match its offsets and gaps.
    #[error(
        "span {from}..={last} holds {records} records and {gap_records} offsets in gaps, but covers {covered}: the object does not prove its offsets"
    )]
    Count {
        /// Where the chain started.
        from: i64,
        /// Last offset.
        last: i64,
        /// Records.
        records: u64,
        /// Offsets in gaps.
        gap_records: u64,
        /// Offsets covered.
        covered: u64,
    },
}

/// Where reading a partition is, and what it accepts next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    expected: i64,
    /// The first record seen after the expected offset by the last read that jumped.
    suspect: Option<i64>,
    reads: u32,
    /// A consume error came since the last record appended: a jump repeated now may be a batch
    /// librdkafka skipped (a CRC mismatch skips the same batch at every read), so it is never
    /// taken for the log's own hole until a record is appended again.
    distrusted: bool,
}

impl Chain {
    /// A chain at `offset` (the committed one, or a resolved start).
    pub fn at(offset: i64) -> Chain {
        Chain { expected: offset, suspect: None, reads: 0, distrusted: false }
    }

    /// A consume error came: until the next record is appended, no jump is believed.
    pub fn distrust(&mut self) {
        self.distrusted = true;
        self.suspect = None;
    }

    /// The offset the next record must have.
    pub fn expected(&self) -> i64 {
        self.expected
    }

    /// Judges the next delivered record.
    pub fn offer(&mut self, offset: i64) -> Result<Verdict, ContinuityError> {
        if offset < self.expected {
            return Ok(Verdict::Stale);
        }
        if offset == self.expected {
            self.expected += 1;
            self.suspect = None;
            self.reads = 0;
            self.distrusted = false;
            return Ok(Verdict::Append);
        }
        if self.suspect == Some(offset) && !self.distrusted {
            let gap = Gap { from: self.expected, to: offset - 1, reason: GapReason::Log };
            self.expected = offset + 1;
            self.suspect = None;
            self.reads = 0;
            return Ok(Verdict::Gap(gap));
        }
        self.reads += 1;
        if self.reads > MAX_VERIFICATIONS {
            return Err(ContinuityError::Unstable { at: self.expected, reads: self.reads });
        }
        self.suspect = Some(offset);
        Ok(Verdict::Verify)
    }

    /// Moves the chain to `offset` (an operator's offset, or after an existing object): what
    /// comes before it is no longer expected.
    pub fn seek(&mut self, offset: i64) {
        *self = Chain::at(offset);
    }

    /// The partition's log now starts at `log_start`: when the chain is below it, the offsets
    /// between were removed by retention before they were read. Returns that gap, and the chain
    /// continues at the log start.
    pub fn retention(&mut self, log_start: i64) -> Option<Gap> {
        if log_start <= self.expected {
            return None;
        }
        let gap = Gap { from: self.expected, to: log_start - 1, reason: GapReason::Retention };
        *self = Chain::at(log_start);
        Some(gap)
    }
}

/// What one object covers: its chain from `from` (the offset committed before it) to `last`,
/// as records and gaps, each following the one before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    /// The offset the chain started at (the one committed before this object).
    pub from: i64,
    /// The first record's offset, once there is one.
    pub first: Option<i64>,
    /// The last offset covered (by a record or a gap); `from - 1` when empty.
    pub last: i64,
    /// Records.
    pub records: u64,
    /// The gaps, in order.
    pub gaps: Vec<Gap>,
}

impl Span {
    /// An empty span starting at `from`.
    pub fn starting(from: i64) -> Span {
        Span { from, first: None, last: from - 1, records: 0, gaps: Vec::new() }
    }

    /// The offset that follows the span: what is committed after it.
    pub fn next(&self) -> i64 {
        self.last + 1
    }

    /// Offsets in gaps.
    pub fn gap_records(&self) -> u64 {
        self.gaps.iter().map(Gap::len).sum()
    }

    /// Adds a record, which must follow the span.
    pub fn record(&mut self, offset: i64) -> Result<(), ContinuityError> {
        if offset != self.next() {
            return Err(ContinuityError::NotNext { expected: self.next(), got: offset });
        }
        self.first.get_or_insert(offset);
        self.last = offset;
        self.records += 1;
        Ok(())
    }

    /// Adds a gap, which must follow the span.
    pub fn gap(&mut self, gap: Gap) -> Result<(), ContinuityError> {
        if gap.from != self.next() || gap.to < gap.from {
            return Err(ContinuityError::NotNext { expected: self.next(), got: gap.from });
        }
        self.last = gap.to;
        self.gaps.push(gap);
        Ok(())
    }

    /// Checks that the counts match the offsets: every offset from `from` to `last` is a
    /// record or in a gap.
    pub fn check(&self) -> Result<(), ContinuityError> {
        let covered = (self.last - self.from + 1).max(0) as u64;
        if self.records + self.gap_records() != covered {
            return Err(ContinuityError::Count {
                from: self.from,
                last: self.last,
                records: self.records,
                gap_records: self.gap_records(),
                covered,
            });
        }
        Ok(())
    }

    /// Records of this span at offsets up to `offset`.
    pub fn records_through(&self, offset: i64) -> u64 {
        let end = offset.min(self.last);
        let covered = (end - self.from + 1).max(0) as u64;
        let gaps: u64 = self
            .gaps
            .iter()
            .filter(|g| g.from <= end)
            .map(|g| Gap { from: g.from, to: g.to.min(end), reason: g.reason }.len())
            .sum();
        covered - gaps
    }
}

/// Builders the tests of several modules share.
#[cfg(test)]
impl Span {
    /// A span from `first` to `last` holding every offset but `holes`, each a one-offset `log`
    /// gap.
    pub(crate) fn of_offsets(first: i64, last: i64, holes: &[i64]) -> Span {
        let mut s = Span::starting(first);
        for o in first..=last {
            if holes.contains(&o) {
                s.gap(Gap { from: o, to: o, reason: GapReason::Log }).expect("gap");
            } else {
                s.record(o).expect("record");
            }
        }
        s
    }

    /// What an object of this span of `t`/`partition` says of itself, read back.
    pub(crate) fn as_object(&self, partition: i32) -> ObjectSpan {
        let meta = self.to_meta("t", partition, "c/zonal").into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        ObjectSpan::from_meta(&meta)
    }
}

mod object;

pub use object::{ObjectSpan, meta, proves};

#[cfg(test)]
mod tests;
