//! Buffers end to end: compressed lines, Parquet read back, and objects cut by time partition.

use ::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use arrow_array::cast::AsArray;
use arrow_array::types::{Int64Type, TimestampMillisecondType};
use arrow_array::{Array, RecordBatch};

use super::*;
use crate::config::{RecordsConfig, RollConfig};
use crate::timepart::TimeParts;

/// A record of topic `t`, partition 2, key `k`, created 1000 ms after its offset.
pub(crate) fn rec(offset: i64, value: &[u8]) -> Record<'_> {
    Record {
        topic: "t",
        partition: 2,
        offset,
        timestamp_ms: Some(1000 + offset),
        timestamp_type: TimestampType::CreateTime,
        key: Some(b"k"),
        value: Some(value),
        headers: &[],
    }
}

fn layout(format: Format, compression: Compression) -> Layout {
    Layout { format, compression, level: 3, newlines: Newlines::Escape, row_group_bytes: 1 << 20, value_schema: None }
}

const B: Place = Place { bucket: Bucket::At(0), cell: 0 };

#[test]
fn roll_and_compress_round_trip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let slots = Slots::new(dir.path());
    for compression in [Compression::Zstd, Compression::Gzip, Compression::None] {
        let l = layout(Format::Lines, compression);
        let mut b = Buffer::create(&slots, l, Span::starting(10), &rec(10, b"a"), B).expect("create");
        for o in 10..20 {
            b.append(&rec(o, format!("line {o}").as_bytes()), B).expect("append");
        }
        let roll = |max_records, offset_interval| RollConfig {
            max_bytes: 1 << 20,
            max_age_ms: 1,
            max_records,
            offset_interval,
        };
        assert!(b.full(&roll(10, 0)));
        assert!(!b.full(&roll(11, 0)));
        assert!(b.full(&roll(11, 20)), "offsets 10..=19: the interval [0, 20) is complete");
        assert!(!b.full(&roll(11, 40)));
        assert!(b.append(&rec(21, b"a jump"), B).is_err(), "an offset that does not follow is refused");
        let elsewhere = Place { bucket: Bucket::NoTime, ..B };
        assert!(b.append(&rec(20, b"another hour"), elsewhere).is_err(), "so is another time partition");
        assert!(b.append(&rec(20, b"next interval"), Place { cell: 1, ..B }).is_err(), "and another interval");
        let f = b.finish(&[]).expect("finish");
        assert_eq!((f.first_offset, f.span.last, f.span.records), (10, 19, 10));
        let text = decompress(compression, &std::fs::read(&f.path).expect("object")).expect("decompress");
        assert_eq!(text.iter().filter(|&&c| c == b'\n').count(), 10);
        assert!(String::from_utf8_lossy(&text).starts_with("line 10\n"));
    }
    // One slot served every buffer in turn, and is empty between them.
    let files: Vec<u64> =
        dir.path().read_dir().expect("dir").map(|e| e.expect("entry").metadata().expect("meta").len()).collect();
    assert_eq!(files, vec![0, 0], "one slot's two files, emptied");
}

#[test]
fn lines_can_refuse_line_breaks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let slots = Slots::new(dir.path());
    let l = Layout { newlines: Newlines::Refuse, ..layout(Format::Lines, Compression::None) };
    let mut b = Buffer::create(&slots, l, Span::starting(0), &rec(0, b"a"), B).expect("create");
    b.append(&rec(0, b"fine"), B).expect("append");
    let e = b.append(&rec(1, b"two\nlines"), B).expect_err("refused");
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
    assert_eq!(b.records(), 1, "the refused record is not in the buffer");
    b.append(&rec(1, b"fine again"), B).expect("the same offset, without a break");
}

/// Reads a Parquet object back with the parquet crate's Arrow reader.
fn read_parquet(path: &std::path::Path) -> (Vec<RecordBatch>, Vec<(String, String)>, usize) {
    let file = std::fs::File::open(path).expect("object");
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).expect("a Parquet file");
    let meta = builder.metadata().file_metadata().key_value_metadata().cloned().unwrap_or_default();
    let meta = meta.into_iter().map(|kv| (kv.key, kv.value.unwrap_or_default())).collect();
    let groups = builder.metadata().num_row_groups();
    let batches = builder.build().expect("reader").map(|b| b.expect("batch")).collect();
    (batches, meta, groups)
}

#[test]
fn parquet_keeps_every_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let slots = Slots::new(dir.path());
    let headers: [Header<'_>; 2] = [(b"trace", Some(b"\xff\x00")), (b"trace", None)];
    for compression in [Compression::Zstd, Compression::Snappy, Compression::Gzip, Compression::None] {
        let l = layout(Format::Parquet, compression);
        let mut b = Buffer::create(&slots, l, Span::starting(5), &rec(5, b""), B).expect("create");
        b.append(&Record { headers: &headers, ..rec(5, b"caf\xe9 \n") }, B).expect("append");
        b.append(
            &Record { value: None, key: None, timestamp_ms: None, timestamp_type: TimestampType::None, ..rec(6, b"") },
            B,
        )
        .expect("a tombstone");
        let f = b.finish(&[("zonal-records", "2".into())]).expect("finish");
        let (batches, meta, _) = read_parquet(&f.path);
        assert!(meta.contains(&("zonal-records".into(), "2".into())), "{meta:?}");
        let b = &batches[0];
        assert_eq!(b.num_rows(), 2);
        let col = |name: &str| b.column_by_name(name).expect(name);
        assert_eq!(col("offset").as_primitive::<Int64Type>().values().to_vec(), vec![5, 6]);
        let ts = col("timestamp").as_primitive::<TimestampMillisecondType>();
        assert_eq!((ts.value(0), ts.is_null(1)), (1005, true));
        assert_eq!(col("timestamp_type").as_string::<i32>().value(0), "create-time");
        let value = col("value").as_binary::<i32>();
        assert_eq!((value.value(0), value.is_null(1)), (&b"caf\xe9 \n"[..], true), "bytes kept, a tombstone null");
        assert!(col("key").as_binary::<i32>().is_null(1));
        let hs = col("headers").as_list::<i32>();
        let first = hs.value(0);
        let first = first.as_struct();
        assert_eq!(first.len(), 2);
        assert_eq!(first.column(0).as_string::<i32>().value(1), "trace");
        assert_eq!(first.column(1).as_binary::<i32>().value(0), b"\xff\x00");
        assert!(first.column(1).is_null(1));
        assert_eq!(hs.value(1).len(), 0);
    }
}

#[test]
fn parquet_values_in_typed_columns_and_the_rest_in_dead_letters() {
    let dir = tempfile::tempdir().expect("tempdir");
    let slots = Slots::new(dir.path());
    let schema = ValueSchema { fields: vec![("level".into(), ValueType::String), ("status".into(), ValueType::Int64)] };
    let l = Layout { value_schema: Some(Arc::new(schema)), ..layout(Format::Parquet, Compression::Zstd) };
    let values: [Option<&[u8]>; 5] = [
        Some(br#"{"level":"info","status":200}"#),
        Some(b"not json"),
        Some(br#"{"status":"x"}"#),
        None,
        Some(br#"{"level":"warn"}"#),
    ];
    let mut b = Buffer::create(&slots, l, Span::starting(0), &rec(0, b""), B).expect("create");
    for (o, v) in values.iter().enumerate() {
        b.append(&Record { value: *v, ..rec(o as i64, b"") }, B).expect("append");
    }
    let f = b.finish(&[]).expect("finish");
    let (dead, size, n) = f.dead_letter.clone().expect("dead letters");
    assert_eq!(n, 3);
    assert_eq!(std::fs::metadata(&dead).expect("dead-letter file").len(), size);
    let (batches, meta, _) = read_parquet(&f.path);
    assert!(meta.contains(&("zonal-dead-letter-records".into(), "3".into())), "{meta:?}");
    let offsets: Vec<i64> = batches
        .iter()
        .flat_map(|b| b.column_by_name("offset").expect("offset").as_primitive::<Int64Type>().values().to_vec())
        .collect();
    assert_eq!(offsets, vec![0, 4], "the values that fit");
    let fields = batches[0].column_by_name("value_fields").expect("typed columns");
    let fields = fields.as_struct();
    assert_eq!(fields.column(0).as_string::<i32>().value(1), "warn");
    assert_eq!(fields.column(1).as_primitive::<Int64Type>().value(0), 200);
    assert!(fields.column(1).is_null(1), "an absent field is null");
    let (dead_batches, dead_meta, _) = read_parquet(&dead);
    assert!(dead_meta.contains(&("zonal-dead-letter-records".into(), "3".into())));
    let dead_offsets: Vec<i64> = dead_batches
        .iter()
        .flat_map(|b| b.column_by_name("offset").expect("offset").as_primitive::<Int64Type>().values().to_vec())
        .collect();
    assert_eq!(dead_offsets, vec![1, 2, 3], "the rest, whole");
    assert!(dead_batches[0].column_by_name("value_fields").is_none());
}

#[test]
fn parquet_row_groups_follow_their_size() {
    let dir = tempfile::tempdir().expect("tempdir");
    let slots = Slots::new(dir.path());
    let l = Layout { row_group_bytes: 1 << 20, ..layout(Format::Parquet, Compression::Zstd) };
    let mut b = Buffer::create(&slots, l, Span::starting(0), &rec(0, b""), B).expect("create");
    // Values that neither a dictionary nor zstd shrinks: 4 KB of a linear congruential sequence.
    let mut x = 1u64;
    for o in 0..3000 {
        let value: Vec<u8> = (0..500)
            .flat_map(|_| {
                x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                x.to_le_bytes()
            })
            .collect();
        b.append(&rec(o, &value), B).expect("append");
    }
    let f = b.finish(&[]).expect("finish");
    let (batches, _, groups) = read_parquet(&f.path);
    assert_eq!(batches.iter().map(RecordBatch::num_rows).sum::<usize>(), 3000);
    assert!((8..=20).contains(&groups), "12 MB of values in 1 MiB row groups: {groups}");
}

/// Appends records as the pump does, reading from `start`: a hole in the offsets is a gap, a
/// record of another place (time partition, offset interval) ends the buffer, and so does a
/// complete interval. Objects as (first offset, last offset, bytes).
fn split(
    slots: &Arc<Slots>,
    parts: &TimeParts,
    l: Layout,
    interval: u64,
    start: i64,
    records: &[(i64, Option<i64>)],
) -> Vec<(i64, i64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut open: Option<Buffer> = None;
    let mut pending = Span::starting(start);
    let finish = |b: Buffer, out: &mut Vec<(i64, i64, Vec<u8>)>| {
        let meta = b.span.to_meta("t", 2, "source");
        let f = b.finish(&meta).expect("finish");
        out.push((f.first_offset, f.span.last, std::fs::read(&f.path).expect("object")));
        Span::starting(f.span.next())
    };
    let roll = RollConfig { max_records: u64::MAX, max_bytes: u64::MAX, max_age_ms: 1, offset_interval: interval };
    for &(offset, ts) in records.iter().filter(|r| r.0 >= start) {
        let next = open.as_ref().map_or(pending.next(), |b| b.span.next());
        if offset > next {
            let gap = crate::continuity::Gap { from: next, to: offset - 1, reason: crate::continuity::GapReason::Log };
            match &mut open {
                Some(b) => b.gap(gap).expect("gap"),
                None => pending.gap(gap).expect("gap"),
            }
        }
        let r = Record { timestamp_ms: ts, ..rec(offset, b"v") };
        let place = Place::of(parts.bucket(parts.time_of(&r)), offset, interval);
        if open.as_ref().is_some_and(|b| b.place != place)
            && let Some(b) = open.take()
        {
            pending = finish(b, &mut out);
        }
        let b = match &mut open {
            Some(b) => b,
            None => {
                let span = std::mem::replace(&mut pending, Span::starting(offset));
                open.insert(Buffer::create(slots, l.clone(), span, &r, place).expect("create"))
            }
        };
        b.append(&r, place).expect("append");
        if b.full(&roll)
            && let Some(b) = open.take()
        {
            pending = finish(b, &mut out);
        }
    }
    if let Some(b) = open {
        finish(b, &mut out);
    }
    out
}

fn times() -> TimeParts {
    TimeParts::new(&RecordsConfig::default(), crate::config::DEFAULT_KEY_TEMPLATE).expect("parts")
}

proptest::proptest! {
    /// The vectorised scan finds exactly the values with a line break, wherever it is.
    #[test]
    fn needs_escape_finds_every_line_break(value in proptest::collection::vec(proptest::sample::select(vec![b'a', b'\n', b'\r', 0xff, b' ']), 0..200)) {
        proptest::prop_assert_eq!(super::needs_escape(&value), value.iter().any(|&c| c == b'\n' || c == b'\r'));
    }

    /// Any records, late ones and ones without a time included, split into objects that each
    /// hold only records of their own time partition, all of them, once, in order.
    #[test]
    fn objects_hold_one_time_partition(times_ms in proptest::collection::vec(proptest::option::weighted(0.9, 0i64..4 * 3_600_000), 1..60)) {
        let dir = tempfile::tempdir().expect("tempdir");
        let slots = Slots::new(dir.path());
        let parts = times();
        let records: Vec<(i64, Option<i64>)> = times_ms.iter().enumerate().map(|(i, t)| (i as i64, *t)).collect();
        let objects = split(&slots, &parts, layout(Format::Json, Compression::None), 0, 0, &records);
        let mut seen = Vec::new();
        for (_, _, body) in &objects {
            let mut buckets = std::collections::BTreeSet::new();
            for line in body.split(|&c| c == b'\n').filter(|l| !l.is_empty()) {
                let v: serde_json::Value = serde_json::from_slice(line).expect("json");
                let ts = v["timestamp"].as_i64();
                buckets.insert(parts.bucket(ts));
                seen.push((v["offset"].as_i64().expect("offset"), ts));
            }
            proptest::prop_assert_eq!(buckets.len(), 1, "an object of one time partition");
        }
        proptest::prop_assert_eq!(seen, records);
    }

    /// Deterministic mode: a reader that starts at any object boundary of another (as a
    /// committed offset is) writes the same objects from there on, byte for byte, in every
    /// format; offsets may have holes (compaction, transaction markers). (That an object holds
    /// one interval is enforced by `Buffer::append`, which `split` would trip over.)
    #[test]
    fn deterministic_objects_are_the_same_bytes_from_any_start(
        steps in proptest::collection::vec(1i64..4, 1..80),
        times_ms in proptest::collection::vec(0i64..3 * 3_600_000, 80),
        interval in 1u64..20,
        start in proptest::prelude::any::<proptest::sample::Index>(),
        format in proptest::sample::select(vec![Format::Lines, Format::Json, Format::Parquet]),
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let slots = Slots::new(dir.path());
        let parts = times();
        // Times that only move forward within an hour or two, as logs do.
        let mut sorted = times_ms.clone();
        sorted.sort_unstable();
        let mut offset = 0;
        let records: Vec<(i64, Option<i64>)> = steps.iter().zip(&sorted).map(|(s, t)| { offset += s; (offset, Some(*t)) }).collect();
        let l = layout(format, Compression::Zstd);
        let all = split(&slots, &parts, l.clone(), interval, 0, &records);
        // A committed offset: where an object ends, plus one.
        let from = start.index(all.len());
        let committed = if from == 0 { 0 } else { all[from - 1].1 + 1 };
        let again = split(&slots, &parts, l, interval, committed, &records);
        proptest::prop_assert_eq!(&all[from..], &again[..]);
    }
}
