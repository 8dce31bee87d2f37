//! Tests of the offset chain: each verdict, spans that refuse what does not follow, metadata
//! round trips, the proof of an existing object, and a property test of the whole reading
//! model (records, jumps, stale records, out-of-range, retention, rolls and restarts).

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::*;

#[test]
fn verdicts() {
    let mut c = Chain::at(10);
    assert_eq!(c.offer(9), Ok(Verdict::Stale));
    assert_eq!(c.offer(10), Ok(Verdict::Append));
    // A jump is read again before it is believed; the read that agrees with the log wins.
    assert_eq!(c.offer(15), Ok(Verdict::Verify));
    assert_eq!(c.expected(), 11);
    assert_eq!(c.offer(11), Ok(Verdict::Append));
    // The same jump seen twice is part of the log.
    assert_eq!(c.offer(20), Ok(Verdict::Verify));
    assert_eq!(c.offer(20), Ok(Verdict::Gap(Gap { from: 12, to: 19, reason: GapReason::Log })));
    assert_eq!(c.expected(), 21);
    // Reads that never agree stop the partition.
    let mut c = Chain::at(0);
    for o in 1..=i64::from(MAX_VERIFICATIONS) {
        assert_eq!(c.offer(o), Ok(Verdict::Verify));
    }
    assert!(matches!(c.offer(100), Err(ContinuityError::Unstable { at: 0, .. })));
    // After a consume error, a repeated jump is not believed (a skipped corrupt batch would
    // repeat at every read): reads go on until one agrees or the partition stops.
    let mut c = Chain::at(0);
    c.distrust();
    assert_eq!(c.offer(5), Ok(Verdict::Verify));
    assert_eq!(c.offer(5), Ok(Verdict::Verify));
    assert_eq!(c.offer(0), Ok(Verdict::Append));
    assert_eq!(c.offer(5), Ok(Verdict::Verify));
    assert_eq!(c.offer(5), Ok(Verdict::Gap(Gap { from: 1, to: 4, reason: GapReason::Log })));
    // Retention only below the log start.
    let mut c = Chain::at(50);
    assert_eq!(c.retention(40), None);
    assert_eq!(c.retention(50), None);
    assert_eq!(c.retention(70), Some(Gap { from: 50, to: 69, reason: GapReason::Retention }));
    assert_eq!(c.expected(), 70);
}

#[test]
fn spans_refuse_what_does_not_follow_and_check_counts() {
    let mut s = Span::starting(100);
    assert!(s.record(101).is_err(), "a jump is refused");
    s.gap(Gap { from: 100, to: 104, reason: GapReason::Retention }).expect("gap");
    s.record(105).expect("record");
    s.record(106).expect("record");
    assert!(s.record(106).is_err(), "a repeat is refused");
    s.gap(Gap { from: 107, to: 107, reason: GapReason::Log }).expect("gap");
    s.record(108).expect("record");
    assert_eq!((s.first, s.last, s.records, s.gap_records(), s.next()), (Some(105), 108, 3, 6, 109));
    s.check().expect("consistent");
    assert_eq!(s.records_through(104), 0);
    assert_eq!(s.records_through(107), 2);
    assert_eq!(s.records_through(500), 3);
    // A span whose counts were tampered with fails the check.
    let mut bad = s.clone();
    bad.records += 1;
    assert!(matches!(bad.check(), Err(ContinuityError::Count { covered: 9, .. })));
}

fn meta(span: &Span) -> BTreeMap<String, String> {
    span.to_meta("t", 3, "c/zonal").into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

#[test]
fn metadata_round_trips_and_long_gap_lists_are_cut() {
    let mut s = Span::starting(0);
    s.gap(Gap { from: 0, to: 9, reason: GapReason::Retention }).expect("gap");
    s.record(10).expect("record");
    let o = ObjectSpan::from_meta(&meta(&s));
    assert_eq!(o.topic.as_deref(), Some("t"));
    assert_eq!(o.partition, Some(3));
    assert_eq!((o.from, o.first, o.last, o.records, o.gap_records), (Some(0), Some(10), Some(10), Some(1), Some(10)));
    assert_eq!(o.gaps, Some(s.gaps.clone()));
    assert_eq!(o.consistent(), Some(true));
    let mut s = Span::starting(0);
    for i in 0..100 {
        s.record(2 * i).expect("record");
        s.gap(Gap { from: 2 * i + 1, to: 2 * i + 1, reason: GapReason::Log }).expect("gap");
    }
    s.record(200).expect("record");
    let m = meta(&s);
    assert!(m.values().map(String::len).sum::<usize>() < 2000, "S3 allows 2 KB of user metadata");
    let o = ObjectSpan::from_meta(&m);
    assert_eq!(o.gaps, None, "a cut list is not complete");
    assert_eq!(o.consistent(), Some(true));
    assert_eq!(o.records_through(50), None, "cannot count without every gap");
    assert_eq!(o.records_through(200), Some(101));
    // An object of an older version: offsets and count only.
    let old: BTreeMap<String, String> =
        [("zonal-first-offset", "5"), ("zonal-last-offset", "9"), ("zonal-records", "5")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
    let o = ObjectSpan::from_meta(&old);
    assert_eq!((o.from, o.consistent(), o.records_through(7)), (Some(5), Some(true), Some(3)));
}

#[test]
fn an_existing_object_proves_itself_or_is_refused() {
    let span = Span::of_offsets;
    let obj = |s: &Span| s.as_object(3);
    let ours = span(100, 199, &[]);
    assert_eq!(proves(&obj(&ours), &ours), Ok(()), "the same records");
    assert_eq!(proves(&obj(&span(100, 250, &[])), &ours), Ok(()), "a longer object over the same records");
    assert_eq!(proves(&obj(&span(100, 150, &[])), &ours), Ok(()), "a shorter object over the same records");
    assert!(proves(&obj(&span(100, 199, &[120])), &ours).is_err(), "a hole we do not have");
    assert!(proves(&obj(&span(100, 150, &[120])), &ours).is_err(), "a shorter object with a hole");
    let with_hole = span(100, 199, &[120]);
    assert_eq!(proves(&obj(&span(100, 250, &[120])), &with_hole), Ok(()), "the same hole");
    let mut lying = obj(&ours);
    lying.records = Some(60);
    assert!(proves(&lying, &ours).expect_err("refused").contains("do not add up"), "counts that do not add up");
    let mut other_start = obj(&span(101, 199, &[]));
    other_start.from = Some(100);
    assert!(proves(&other_start, &ours).is_err(), "another first record");
    assert!(proves(&ObjectSpan::default(), &ours).is_err(), "no metadata");
    // Metadata that cannot be true is never trusted: an empty object, offsets out of order,
    // values that would overflow, gaps outside the span.
    let mut empty = obj(&ours);
    (empty.last, empty.records) = (Some(99), Some(0));
    assert!(proves(&empty, &ours).is_err(), "an object ending before its first record");
    let mut huge = obj(&ours);
    (huge.from, huge.gap_records) = (Some(i64::MIN), Some(u64::MAX));
    assert!(proves(&huge, &ours).is_err(), "overflowing values");
    let mut wild = obj(&with_hole);
    wild.gaps = Some(vec![Gap { from: 500, to: 500, reason: GapReason::Log }]);
    assert!(proves(&wild, &with_hole).is_err(), "a gap outside the object");
}

/// What happens next in the model of one partition being read.
#[derive(Debug, Clone)]
enum Step {
    /// The consumer delivers the record at its position.
    Deliver,
    /// The consumer delivers a record `n` past its position, once (a fault, not the log).
    Jump(u8),
    /// A record from before the last seek arrives late.
    Stale(u8),
    /// An out-of-range error though the position is in range.
    SpuriousOutOfRange,
    /// Retention removes the first `n` records of the log.
    Retention(u8),
    /// The buffer rolls into an object and commits.
    Roll,
    /// The worker restarts: the buffer is lost, reading starts at the committed offset.
    Restart,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        10 => Just(Step::Deliver),
        1 => (1u8..20).prop_map(Step::Jump),
        1 => (1u8..20).prop_map(Step::Stale),
        1 => Just(Step::SpuriousOutOfRange),
        1 => (1u8..40).prop_map(Step::Retention),
        2 => Just(Step::Roll),
        1 => Just(Step::Restart),
    ]
}

/// The partition's log: which offsets exist (holes are compaction or transaction markers) and
/// where it starts.
struct Log {
    offsets: BTreeSet<i64>,
    start: i64,
}

impl Log {
    /// The first record at or after `pos`, if any.
    fn at(&self, pos: i64) -> Option<i64> {
        self.offsets.range(pos.max(self.start)..).next().copied()
    }
}

/// The pump's reading model, as `worker::pump` runs it.
struct Model {
    log: Log,
    /// Where the consumer fetches.
    pos: i64,
    chain: Chain,
    span: Span,
    committed: i64,
    objects: Vec<Span>,
    /// The log start when each retention gap was taken.
    retention_seen: Vec<(Gap, i64)>,
    /// Whether the next delivery comes from a fetch made after a jump was sent back to be read
    /// again: the broker answers such a fetch from its log, so it does not repeat the fault.
    /// (The chain's one assumption: a jump seen twice from fresh fetches is the log's.)
    verifying: bool,
}

impl Model {
    fn seek(&mut self, to: i64) {
        self.pos = to;
    }

    fn offer(&mut self, offset: i64) {
        match self.chain.offer(offset).expect("the log is stable") {
            Verdict::Stale => {}
            Verdict::Verify => {
                let e = self.chain.expected();
                self.seek(e);
                self.verifying = true;
            }
            Verdict::Append => {
                self.span.record(offset).expect("follows");
                self.pos = offset + 1;
            }
            Verdict::Gap(g) => {
                self.span.gap(g).expect("follows");
                self.span.record(offset).expect("follows");
                self.pos = offset + 1;
            }
        }
    }

    fn out_of_range(&mut self) {
        if let Some(g) = self.chain.retention(self.log.start) {
            self.retention_seen.push((g, self.log.start));
            self.span.gap(g).expect("follows");
        }
        let e = self.chain.expected();
        self.seek(e);
    }

    fn roll(&mut self) {
        if self.span.records == 0 {
            return;
        }
        let next = Span::starting(self.span.next());
        let s = std::mem::replace(&mut self.span, next);
        s.check().expect("a span that does not add up is never committed");
        self.committed = s.next();
        self.objects.push(s);
    }

    fn run(&mut self, step: &Step) {
        match *step {
            Step::Deliver => {
                self.verifying = false;
                if self.pos < self.log.start {
                    self.out_of_range();
                } else if let Some(o) = self.log.at(self.pos) {
                    self.offer(o);
                }
            }
            Step::Jump(_) if self.verifying => {}
            Step::Jump(n) => {
                if let Some(o) = self.log.offsets.range(self.pos.max(self.log.start)..).nth(usize::from(n)).copied() {
                    self.offer(o);
                }
            }
            Step::Stale(n) => {
                let o = self.pos - i64::from(n);
                if self.log.offsets.contains(&o) {
                    self.offer(o);
                }
            }
            Step::SpuriousOutOfRange => self.out_of_range(),
            Step::Retention(n) => {
                let new_start = self.log.offsets.range(self.log.start..).nth(usize::from(n)).copied();
                self.log.start = new_start.unwrap_or(self.log.start);
            }
            Step::Roll => self.roll(),
            Step::Restart => {
                self.chain = Chain::at(self.committed);
                self.span = Span::starting(self.committed);
                self.pos = self.committed;
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Any interleaving of records, faults, retention, rolls and restarts leaves objects whose
    /// chains follow each other from the start, whose counts add up, which hold every record
    /// that retention did not remove first, each once, and whose gaps are true: retention gaps
    /// below the log start when taken, log gaps only where the log has no record.
    #[test]
    fn objects_are_contiguous_or_their_gaps_are_counted(
        holes in proptest::collection::btree_set(0i64..300, 0..40),
        steps in proptest::collection::vec(step(), 0..400),
    ) {
        let offsets: BTreeSet<i64> = (0..300).filter(|o| !holes.contains(o)).collect();
        let mut m = Model {
            log: Log { offsets, start: 0 },
            pos: 0,
            chain: Chain::at(0),
            span: Span::starting(0),
            committed: 0,
            objects: Vec::new(),
            retention_seen: Vec::new(),
            verifying: false,
        };
        for s in &steps {
            m.run(s);
        }
        // Then the consumer catches up without faults.
        while m.log.at(m.pos).is_some() || m.pos < m.log.start {
            m.run(&Step::Deliver);
        }
        m.roll();

        let mut at = 0;
        let mut seen = BTreeSet::new();
        let mut records = Vec::new();
        for o in &m.objects {
            prop_assert_eq!(o.from, at, "objects follow each other");
            prop_assert!(o.check().is_ok());
            at = o.next();
            for g in &o.gaps {
                for x in g.from..=g.to {
                    match g.reason {
                        GapReason::Log => prop_assert!(!m.log.offsets.contains(&x), "log gap over record {}", x),
                        GapReason::Retention => {
                            let (_, start) = m.retention_seen.iter().find(|(r, _)| r == g).expect("seen");
                            prop_assert!(x < *start, "retention gap over a kept record {}", x);
                        }
                    }
                    seen.insert(x);
                }
            }
            records.push(o.records);
        }
        // Every offset up to the last committed one is a record in exactly one object or in a
        // gap; records are the log's, each once.
        let gap_offsets = seen.len() as u64;
        let record_count: u64 = records.iter().sum();
        prop_assert_eq!(gap_offsets + record_count, at as u64);
        let kept: u64 = m.log.offsets.iter().filter(|o| **o < at && !seen.contains(o)).count() as u64;
        prop_assert_eq!(kept, record_count);
        // Everything the log still holds was read.
        prop_assert!(m.log.at(at).is_none());
    }
}
