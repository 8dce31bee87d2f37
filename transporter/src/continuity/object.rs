//! What an object's metadata says it covers, and whether an existing object proves it holds
//! the records of a buffer: the `zonal-*` metadata keys, written from a [`Span`] and read back
//! as an [`ObjectSpan`].

use std::collections::BTreeMap;

use super::{Gap, GapReason, Span};

/// Object metadata keys (sent as `x-amz-meta-…`).
pub mod meta {
    /// The topic.
    pub const TOPIC: &str = "zonal-topic";
    /// The partition.
    pub const PARTITION: &str = "zonal-partition";
    /// The offset committed before the object: where its chain starts.
    pub const FROM_OFFSET: &str = "zonal-from-offset";
    /// The offset of the object's first record.
    pub const FIRST_OFFSET: &str = "zonal-first-offset";
    /// The offset of the object's last record.
    pub const LAST_OFFSET: &str = "zonal-last-offset";
    /// Records in the object.
    pub const RECORDS: &str = "zonal-records";
    /// Offsets between `from` and `last` that are not in the object because Kafka does not hold them.
    pub const GAP_RECORDS: &str = "zonal-gap-records";
    /// The gaps as `from-to:reason`, comma-separated; cut (and ending in `,…`) past
    /// [`MAX_LISTED_GAPS`], since S3 allows 2 KB of user metadata.
    pub const GAPS: &str = "zonal-gaps";
    /// The deployment that wrote it, `<kafka cluster id>/<etcd.cluster>`
    /// (`upload::deployment`).
    pub const SOURCE: &str = "zonal-source";
    /// Records of a `lines` object whose line breaks were escaped (absent when none were).
    pub const ESCAPED: &str = "zonal-escaped-records";
    /// Gaps listed in [`GAPS`] at most.
    pub const MAX_LISTED_GAPS: usize = 32;
}

/// What an object's metadata says it covers (objects of older versions lack some fields).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObjectSpan {
    /// Topic, when written.
    pub topic: Option<String>,
    /// Partition, when written.
    pub partition: Option<i32>,
    /// Where its chain starts (older objects: its first offset).
    pub from: Option<i64>,
    /// First record.
    pub first: Option<i64>,
    /// Last record.
    pub last: Option<i64>,
    /// Records.
    pub records: Option<u64>,
    /// Offsets in gaps (older objects: none written, taken as 0).
    pub gap_records: Option<u64>,
    /// The gaps, when all of them are listed.
    pub gaps: Option<Vec<Gap>>,
    /// The deployment that wrote it, when written.
    pub source: Option<String>,
}

impl Span {
    /// The object metadata for this span of `topic`/`partition`, written by `source`.
    pub fn to_meta(&self, topic: &str, partition: i32, source: &str) -> Vec<(&'static str, String)> {
        let mut gaps: Vec<String> = self.gaps.iter().take(meta::MAX_LISTED_GAPS).map(Gap::to_string).collect();
        if self.gaps.len() > meta::MAX_LISTED_GAPS {
            gaps.push("…".to_owned());
        }
        let mut out = vec![
            (meta::TOPIC, topic.to_owned()),
            (meta::PARTITION, partition.to_string()),
            (meta::FROM_OFFSET, self.from.to_string()),
            (meta::LAST_OFFSET, self.last.to_string()),
            (meta::RECORDS, self.records.to_string()),
            (meta::GAP_RECORDS, self.gap_records().to_string()),
            (meta::GAPS, gaps.join(",")),
            (meta::SOURCE, source.to_owned()),
        ];
        if let Some(first) = self.first {
            out.push((meta::FIRST_OFFSET, first.to_string()));
        }
        out
    }
}

impl ObjectSpan {
    /// Reads an object's metadata; fields that are missing or do not parse are `None`.
    pub fn from_meta(m: &BTreeMap<String, String>) -> ObjectSpan {
        let num = |k: &str| m.get(k).and_then(|v| v.trim().parse::<i64>().ok());
        let gaps = m.get(meta::GAPS).and_then(|v| parse_gaps(v));
        ObjectSpan {
            topic: m.get(meta::TOPIC).cloned(),
            partition: num(meta::PARTITION).and_then(|p| i32::try_from(p).ok()),
            from: num(meta::FROM_OFFSET).or(num(meta::FIRST_OFFSET)),
            first: num(meta::FIRST_OFFSET),
            last: num(meta::LAST_OFFSET),
            records: num(meta::RECORDS).and_then(|r| u64::try_from(r).ok()),
            gap_records: num(meta::GAP_RECORDS).and_then(|r| u64::try_from(r).ok()),
            gaps,
            source: m.get(meta::SOURCE).cloned(),
        }
    }

    /// Whether the object's own counts agree: offsets in order (`0 <= from <= first <= last`),
    /// at least one record, listed gaps inside the span and in order, and every offset from
    /// `from` to `last` a record or in a gap. None when the metadata lacks what the check needs.
    pub fn consistent(&self) -> Option<bool> {
        let (from, last, records) = (self.from?, self.last?, self.records?);
        let first = self.first.unwrap_or(from);
        if from < 0 || first < from || last < first || records == 0 {
            return Some(false);
        }
        if let Some(gaps) = &self.gaps {
            let mut at = from;
            for g in gaps {
                if g.from < at || g.to < g.from || g.to > last {
                    return Some(false);
                }
                at = g.to + 1;
            }
            let listed: u64 = gaps.iter().map(Gap::len).sum();
            if Some(listed) != self.gap_records.or(Some(0)) {
                return Some(false);
            }
        }
        let covered = u64::try_from(last - from).ok()?.checked_add(1)?;
        Some(records.checked_add(self.gap_records.unwrap_or(0)) == Some(covered))
    }

    /// Records at offsets up to `offset`, when the metadata can tell.
    pub fn records_through(&self, offset: i64) -> Option<u64> {
        if self.consistent() != Some(true) {
            return None;
        }
        let (from, last, records) = (self.from?, self.last?, self.records?);
        if offset >= last {
            return Some(records);
        }
        let gap_records = self.gap_records.unwrap_or(0);
        let gaps = match &self.gaps {
            Some(g) => g.clone(),
            None if gap_records == 0 => Vec::new(),
            None => return None,
        };
        let span = Span { from, first: self.first, last, records, gaps };
        Some(span.records_through(offset))
    }
}

/// Parses `from-to:reason,…`; None when cut or malformed (the list is then not complete).
fn parse_gaps(s: &str) -> Option<Vec<Gap>> {
    let s = s.trim();
    if s.is_empty() {
        return Some(Vec::new());
    }
    s.split(',')
        .map(|g| {
            let (range, reason) = g.split_once(':')?;
            let (from, to) = range.split_once('-')?;
            Some(Gap { from: from.parse().ok()?, to: to.parse().ok()?, reason: GapReason::parse(reason)? })
        })
        .collect()
}

/// Whether an existing object at a buffer's key holds the same records over the range both
/// cover: same first record, counts that add up, the same number of records up to the shorter
/// one's end. An object that cannot prove it is never taken as covering anything.
pub fn proves(existing: &ObjectSpan, ours: &Span) -> Result<(), String> {
    let (Some(first), Some(last)) = (existing.first, existing.last) else {
        return Err("its metadata does not say which offsets it holds".into());
    };
    if last < first {
        return Err(format!("it ends at {last}, before its first record {first}"));
    }
    if Some(first) != ours.first {
        return Err(format!("it starts at offset {first}, the buffer at {:?}", ours.first));
    }
    match existing.consistent() {
        Some(true) => {}
        Some(false) => {
            return Err(format!(
                "its counts do not add up: {:?} records and {:?} gap offsets from {:?} to {last}",
                existing.records, existing.gap_records, existing.from
            ));
        }
        None => return Err("its metadata lacks the record count".into()),
    }
    // Neither holds a record before its first one, so counts up to the shorter end compare
    // the same range.
    let through = last.min(ours.last);
    let theirs = existing.records_through(through).ok_or("its gaps are not all listed")?;
    let ours_count = ours.records_through(through);
    if theirs != ours_count {
        return Err(format!("it holds {theirs} records from {first} to {through}, the buffer {ours_count}"));
    }
    Ok(())
}
