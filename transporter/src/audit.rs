//! What `zonal-transporter audit` concludes from a topic's objects, its committed offsets and
//! Kafka's log bounds, without I/O: per partition, the chain of objects, its holes, overlaps,
//! gaps explained in the objects' metadata, and objects past the committed offset.
//!
//! ```text
//!  objects (key, ObjectSpan) ──by partition, by first offset──> chain from..=last
//!      from > where the chain is ──> hole (offsets in no object, not explained)
//!      from < where the chain is ──> overlap (offsets in two objects)
//!      counts that do not add up ──> inconsistent
//!  committed offset > chain end ──> hole (committed past, in no object: loss)
//!  committed offset < chain end ──> objects past the committed offset (read again, found at their keys)
//!  Kafka log start/end ──> shown beside, for "what is still there to recover"
//! ```

use std::collections::BTreeMap;

use serde::Serialize;

use crate::continuity::ObjectSpan;

/// One object as the audit sees it.
#[derive(Debug, Clone)]
pub struct Object {
    /// Its key.
    pub key: String,
    /// What its metadata says.
    pub span: ObjectSpan,
}

/// A range of offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Range {
    /// First offset.
    pub from: i64,
    /// Last offset.
    pub to: i64,
}

/// The audit of one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PartitionReport {
    /// Objects.
    pub objects: usize,
    /// Records in them.
    pub records: u64,
    /// Where the chain starts and ends (offsets covered, records and gaps).
    pub chain: Option<Range>,
    /// Offsets explained as not in Kafka, by reason (from the objects' metadata; `unlisted`
    /// when an object's list was cut).
    pub gap_records: BTreeMap<String, u64>,
    /// Offsets in no object and not explained: between objects, or committed past.
    pub holes: Vec<Range>,
    /// Offsets that two objects cover.
    pub overlaps: Vec<Range>,
    /// Objects whose metadata does not prove their offsets (counts that do not add up,
    /// offsets missing).
    pub inconsistent: Vec<String>,
    /// The committed offset (next to read), if any.
    pub committed: Option<i64>,
    /// Objects starting at or past the committed offset.
    pub past_committed: Vec<String>,
    /// The offsets Kafka's log holds (start ..= end - 1; empty when `to < from`), when read.
    pub kafka: Option<Range>,
}

impl PartitionReport {
    /// Whether nothing is wrong: no hole, overlap or object that does not prove itself.
    pub fn clean(&self) -> bool {
        self.holes.is_empty() && self.overlaps.is_empty() && self.inconsistent.is_empty()
    }
}

/// Audits one partition's objects against its committed offset and Kafka's bounds.
pub fn partition(mut objects: Vec<Object>, committed: Option<i64>, kafka: Option<(i64, i64)>) -> PartitionReport {
    let mut r =
        // Kafka's end is the next offset; the range kept is the offsets the log holds.
        PartitionReport { committed, kafka: kafka.map(|(start, end)| Range { from: start, to: end - 1 }), ..PartitionReport::default() };
    objects.sort_by_key(|o| (o.span.first.or(o.span.from).unwrap_or(i64::MAX), o.span.last.unwrap_or(i64::MAX)));
    let mut at: Option<i64> = None;
    let mut start: Option<i64> = None;
    for o in &objects {
        r.objects += 1;
        let s = &o.span;
        let (Some(from), Some(last), Some(records)) = (s.from, s.last, s.records) else {
            r.inconsistent.push(format!("{}: its metadata does not say which offsets it holds", o.key));
            continue;
        };
        if s.consistent() != Some(true) {
            r.inconsistent.push(format!(
                "{}: {records} records and {} gap offsets do not add up to {from}..={last}",
                o.key,
                s.gap_records.unwrap_or(0)
            ));
        }
        r.records += records;
        match &s.gaps {
            Some(gaps) => {
                for g in gaps {
                    *r.gap_records.entry(g.reason.as_str().to_owned()).or_default() += g.len();
                }
            }
            None => *r.gap_records.entry("unlisted".into()).or_default() += s.gap_records.unwrap_or(0),
        }
        start.get_or_insert(from);
        if let Some(next) = at {
            if from > next {
                r.holes.push(Range { from: next, to: from - 1 });
            } else if from < next {
                let o = Range { from, to: (next - 1).min(last) };
                // Overlaps that touch are one range of offsets held twice.
                match r.overlaps.last_mut() {
                    Some(prev) if prev.to + 1 >= o.from => prev.to = prev.to.max(o.to),
                    _ => r.overlaps.push(o),
                }
            }
        }
        at = Some(at.map_or(last + 1, |a| a.max(last + 1)));
        if committed.is_some_and(|c| s.first.unwrap_or(from) >= c) {
            r.past_committed.push(o.key.clone());
        }
    }
    if let (Some(start), Some(end)) = (start, at) {
        r.chain = Some(Range { from: start, to: end - 1 });
    }
    // Committed past the last object: offsets nobody wrote (unless nothing was ever written
    // and the start was simply resolved and committed).
    if let (Some(c), Some(end)) = (committed, at)
        && c > end
    {
        r.holes.push(Range { from: end, to: c - 1 });
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::continuity::{Gap, GapReason, Span};

    fn object(first: i64, last: i64, gap: Option<(i64, i64)>) -> Object {
        let from = gap.map_or(first, |g| g.0.min(first));
        let mut s = Span::starting(from);
        for o in from..=last {
            match gap {
                Some((a, b)) if (a..=b).contains(&o) => {
                    if o == a {
                        s.gap(Gap { from: a, to: b, reason: GapReason::Retention }).expect("gap");
                    }
                }
                _ => s.record(o).expect("record"),
            }
        }
        Object { key: format!("t-0-{first:020}"), span: s.as_object(0) }
    }

    #[test]
    fn a_clean_chain_a_hole_an_overlap_and_a_counted_gap() {
        let clean = partition(vec![object(100, 199, None), object(0, 99, None)], Some(200), Some((0, 200)));
        assert!(clean.clean(), "{clean:?}");
        assert_eq!((clean.objects, clean.records, clean.chain), (2, 200, Some(Range { from: 0, to: 199 })));

        let hole = partition(vec![object(0, 99, None), object(150, 199, None)], Some(200), None);
        assert_eq!(hole.holes, vec![Range { from: 100, to: 149 }]);

        let overlap = partition(vec![object(0, 99, None), object(50, 149, None)], Some(150), None);
        assert_eq!(overlap.overlaps, vec![Range { from: 50, to: 99 }]);
        // A stray object across two others: one range held twice.
        let stray = partition(vec![object(0, 49, None), object(25, 74, None), object(50, 99, None)], Some(100), None);
        assert_eq!(stray.overlaps, vec![Range { from: 25, to: 74 }]);

        // Retention removed 100..=119 before they were read: explained, not a hole.
        let gap = partition(vec![object(0, 99, None), object(120, 199, Some((100, 119)))], Some(200), None);
        assert!(gap.clean(), "{gap:?}");
        assert_eq!(gap.gap_records.get("retention"), Some(&20));

        // Committed past the last object: a hole; an object past the committed offset is listed.
        let past = partition(vec![object(0, 99, None)], Some(150), None);
        assert_eq!(past.holes, vec![Range { from: 100, to: 149 }]);
        let ahead = partition(vec![object(0, 99, None), object(100, 149, None)], Some(100), None);
        assert!(ahead.clean());
        assert_eq!(ahead.past_committed, vec!["t-0-00000000000000000100".to_owned()]);

        // An object whose counts do not add up (written across a hole by an older version).
        let mut lying = object(0, 54_925, None);
        lying.span.records = Some(39_946);
        let bad = partition(vec![lying], Some(54_926), None);
        assert_eq!(bad.inconsistent.len(), 1, "{bad:?}");
        assert!(!bad.clean());
    }
}
