//! Data-lake output end to end: a worker writes Parquet objects cut by record-time hour, and
//! pyarrow (a reader nobody here wrote) reads back exactly what was produced: keys, values,
//! headers, offsets and timestamps, each record once, each in the `dt=`/`hr=` of its own time.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use common::{BUCKET, FleetSpec, Res, Worker};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use testkit::pyarrow::{ParquetObject as Read, ParquetRow as Row, hex};
use zonal_transporter::config::{Compression, Format};

/// 2026-11-22T06:00:00Z.
const BASE_MS: i64 = 1_795_327_200_000;
const PARTITIONS: i32 = 3;
const PER_PARTITION: i64 = 120;

/// Key, value, timestamp and headers of a produced record.
type Produced = (Option<Vec<u8>>, Option<Vec<u8>>, i64, Vec<(String, Option<Vec<u8>>)>);

/// Record `i` of partition `p`: 90 s apart (120 of them span three hours), every 7th an hour
/// and a half late, some without a key, some tombstones, values with line breaks and bytes
/// that are not UTF-8, repeated and null headers.
fn record(p: i32, i: i64) -> Produced {
    let late = if i % 7 == 3 { 90 * 60_000 } else { 0 };
    let ts = BASE_MS + i * 90_000 - late;
    let key = (i % 11 != 0).then(|| format!("k{p}-{i}").into_bytes());
    let value = match i {
        i if i % 13 == 0 => None,
        i if i % 5 == 0 => {
            Some(format!("r{p}-{i} first\nsecond \u{e9}\r\n").into_bytes().into_iter().chain([0xff, 0x00]).collect())
        }
        i => Some(format!("r{p}-{i} {}", "x".repeat(100)).into_bytes()),
    };
    let headers = if i % 2 == 0 {
        vec![
            ("trace".to_owned(), Some(i.to_string().into_bytes())),
            ("trace".to_owned(), None),
            ("bin".to_owned(), Some(vec![0xfe, i as u8])),
        ]
    } else {
        Vec::new()
    };
    (key, value, ts, headers)
}

/// Produces every record in order (one request in flight: offsets follow `i`).
fn produce(world: &testkit::World, topic: &str) -> Res<BTreeMap<(i64, i64), Row>> {
    let producer: BaseProducer =
        world.kafka.client_config().set("linger.ms", "5").set("max.in.flight.requests.per.connection", "1").create()?;
    let mut expected = BTreeMap::new();
    for p in 0..PARTITIONS {
        for i in 0..PER_PARTITION {
            let (key, value, ts, headers) = record(p, i);
            let mut hs = OwnedHeaders::new();
            for (k, v) in &headers {
                hs = hs.insert(Header { key: k, value: v.as_deref() });
            }
            let mut r = BaseRecord::<[u8], [u8]>::to(topic).partition(p).timestamp(ts).headers(hs);
            if let Some(k) = &key {
                r = r.key(k);
            }
            if let Some(v) = &value {
                r = r.payload(v);
            }
            testkit::kafka::send_waiting(&producer, r);
            expected.insert(
                (i64::from(p), i),
                Row {
                    topic: topic.to_owned(),
                    partition: i64::from(p),
                    offset: i,
                    timestamp: Some(ts),
                    timestamp_type: Some("create-time".into()),
                    key: key.as_deref().map(hex),
                    value: value.as_deref().map(hex),
                    headers: headers.iter().map(|(k, v)| (k.clone(), v.as_deref().map(hex))).collect(),
                    fields: None,
                },
            );
        }
    }
    producer.flush(Duration::from_secs(30))?;
    Ok(expected)
}

/// `dt=` and `hr=` of a key.
fn partition_of(key: &str) -> Option<(String, String)> {
    let dt = key.split('/').find_map(|s| s.strip_prefix("dt="))?;
    let hr = key.split('/').find_map(|s| s.strip_prefix("hr="))?;
    Some((dt.to_owned(), hr.to_owned()))
}

#[test]
fn parquet_objects_read_by_pyarrow_hold_every_record_once_in_its_own_hour() -> Res {
    let world = common::world()?;
    world.kafka.create_topic("lake", PARTITIONS)?;
    let dir = tempfile::tempdir()?;
    let spec = FleetSpec { topics: vec!["lake".into()], max_records: 50, ..FleetSpec::default() }.edit(|c| {
        c.s3.format = Format::Parquet;
        c.s3.compression = Compression::Zstd;
    });
    let w = Worker::start(&world, dir.path(), "w0", Some(0), &spec)?;
    let expected = produce(&world, "lake")?;
    common::wait_exactly_once(&world, expected.len(), &[&w])?;
    let s3 = world.s3.as_ref().ok_or_else(|| anyhow::anyhow!("no s3"))?;
    let keys = common::object_keys(&world)?;
    anyhow::ensure!(keys.iter().all(|k| k.ends_with(".parquet")), "{keys:?}");
    let files: Vec<PathBuf> = keys.iter().map(|k| s3.root().join(BUCKET).join(k)).collect();
    let mut got = BTreeMap::new();
    for (key, read) in keys.iter().zip(testkit::pyarrow::read(&files)?) {
        check_object(key, &read)?;
        for row in read.rows {
            anyhow::ensure!(got.insert((row.partition, row.offset), row).is_none(), "a row twice in {key}");
        }
    }
    for (id, want) in &expected {
        anyhow::ensure!(got.get(id) == Some(want), "record {id:?}: pyarrow read {:?}, produced {want:?}", got.get(id));
    }
    anyhow::ensure!(got.len() == expected.len(), "{} rows, {} produced", got.len(), expected.len());
    // The hours the records span (with the late ones) each have objects, as the times say.
    let hours: std::collections::BTreeSet<_> = keys.iter().filter_map(|k| partition_of(k)).collect();
    anyhow::ensure!(hours.len() >= 4, "objects in {hours:?}");
    Ok(())
}

/// An object as pyarrow reads it: the schema, every row in the key's hour, and metadata that
/// counts its rows and names its offsets.
fn check_object(key: &str, read: &Read) -> Res {
    let (dt, hr) = partition_of(key).ok_or_else(|| anyhow::anyhow!("{key} has no dt=/hr="))?;
    for row in &read.rows {
        let ts = row.timestamp.ok_or_else(|| anyhow::anyhow!("{key}: a row without a timestamp"))?;
        let t = chrono::DateTime::from_timestamp_millis(ts).ok_or_else(|| anyhow::anyhow!("time {ts}"))?;
        let own = (t.format("%Y-%m-%d").to_string(), t.format("%H").to_string());
        anyhow::ensure!(own == (dt.clone(), hr.clone()), "{key}: offset {} at {t} is not in its hour", row.offset);
    }
    let meta = |k: &str| read.meta.get(k).map(String::as_str);
    anyhow::ensure!(meta("zonal-records") == Some(read.rows.len().to_string().as_str()), "{key}: {:?}", read.meta);
    let first = read.rows.iter().map(|r| r.offset).min().map(|o| o.to_string());
    let last = read.rows.iter().map(|r| r.offset).max().map(|o| o.to_string());
    anyhow::ensure!(meta("zonal-first-offset") == first.as_deref(), "{key}: {:?}", read.meta);
    anyhow::ensure!(meta("zonal-last-offset") == last.as_deref(), "{key}: {:?}", read.meta);
    anyhow::ensure!(read.row_groups >= 1, "{}: no row group", read.path.display());
    let want = [
        "topic:string",
        "partition:int32",
        "offset:int64",
        "timestamp:timestamp[ms, tz=UTC]",
        "timestamp_type:string",
        "key:binary",
        "value:binary",
    ];
    anyhow::ensure!(read.schema.starts_with(&want.map(String::from)), "{key}: schema {:?}", read.schema);
    Ok(())
}

/// Deterministic mode on a store that ignores conditional writes (fencing rests on etcd
/// alone there): objects end at every 40th offset and name both ends; when the same offsets
/// are read again (an operator sets them back, as a new owner reading from a stale offset
/// would), every object is written again under the same key with the same bytes, so the
/// overwrite replaces nothing with anything else.
#[test]
fn deterministic_objects_are_written_again_byte_for_byte_where_conditions_are_ignored() -> Res {
    let world = common::world()?;
    world.kafka.create_topic("det", 2)?;
    let s3 = world.s3.as_ref().ok_or_else(|| anyhow::anyhow!("no s3"))?;
    s3.ignore_conditional_writes(true);
    common::produce(&world, "det", 2, 120, "d")?;
    let dir = tempfile::tempdir()?;
    // The age does not cut: every object is a whole interval.
    let spec = FleetSpec { topics: vec!["det".into()], max_age_ms: 20_000, max_records: 1000, ..FleetSpec::default() }
        .edit(|c| {
            c.s3.format = Format::Parquet;
            c.s3.require_conditional_writes = false;
            c.roll.offset_interval = 40;
        });
    let mut w = Worker::start(&world, dir.path(), "w0", Some(0), &spec)?;
    common::wait_exactly_once(&world, 240, &[&w])?;
    let read = |k: &String| std::fs::read(s3.root().join(BUCKET).join(k)).map(|b| (k.clone(), b));
    let first: BTreeMap<String, Vec<u8>> = common::object_keys(&world)?.iter().map(read).collect::<Result<_, _>>()?;
    let names: Vec<&str> = first.keys().filter_map(|k| k.rsplit('/').next()).collect();
    let want: Vec<String> = (0..2)
        .flat_map(|p| (0..3).map(move |i| format!("det-{p}-{:020}-{:020}.parquet", i * 40, i * 40 + 39)))
        .collect();
    anyhow::ensure!(names == want, "objects {names:?}");
    w.stop()?;
    let out = common::cli(&world, dir.path(), "w0", &["offsets", "--set", "det/0=0", "--set", "det/1=0"])?;
    anyhow::ensure!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let written = |k: &String| std::fs::metadata(s3.root().join(BUCKET).join(k)).and_then(|m| m.modified());
    let before: Vec<_> = first.keys().map(written).collect::<Result<_, _>>()?;
    w.restart()?;
    testkit::wait_until("every object written again", Duration::from_secs(60), || {
        let now: Vec<_> = first.keys().map(written).collect::<Result<_, _>>().ok()?;
        now.iter().zip(&before).all(|(n, b)| n > b).then_some(())
    })
    .map_err(|e| anyhow::anyhow!("{e}\n{}", w.log_tail()))?;
    common::wait_exactly_once(&world, 240, &[&w])?;
    let again: BTreeMap<String, Vec<u8>> = common::object_keys(&world)?.iter().map(read).collect::<Result<_, _>>()?;
    anyhow::ensure!(again == first, "the objects written again differ from the first ones");
    Ok(())
}

/// Deterministic mode: an object the age cut short ends elsewhere than a later reader would cut
/// (at the interval's end), and so has another key. A reader that starts at its first offset
/// again finds it by that offset and goes on after it, instead of writing its records twice.
#[test]
fn an_object_cut_by_age_is_found_by_its_first_offset_when_read_again() -> Res {
    let world = common::world()?;
    world.kafka.create_topic("cut", 2)?;
    let dir = tempfile::tempdir()?;
    let spec = FleetSpec { topics: vec!["cut".into()], max_age_ms: 400, ..FleetSpec::default() }
        .edit(|c| c.roll.offset_interval = 40);
    let mut w = Worker::start(&world, dir.path(), "w0", Some(0), &spec)?;
    common::produce(&world, "cut", 2, 20, "a")?;
    common::wait_exactly_once(&world, 40, &[&w])?;
    w.stop()?;
    common::produce(&world, "cut", 2, 20, "b")?;
    let out = common::cli(&world, dir.path(), "w0", &["offsets", "--set", "cut/0=0", "--set", "cut/1=0"])?;
    anyhow::ensure!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    w.restart()?;
    common::wait_exactly_once(&world, 80, &[&w])?;
    // The first records went up in objects cut by age (wherever the reading was then); the
    // rest in one that ends at the interval's end.
    let names: Vec<String> =
        common::object_keys(&world)?.iter().filter_map(|k| k.rsplit('/').next().map(str::to_owned)).collect();
    for p in 0..2 {
        let full = format!("cut-{p}-{:020}-{:020}.jsonl.zst", 20, 39);
        anyhow::ensure!(names.contains(&full), "no {full} in {names:?}");
    }
    Ok(())
}

/// `parquet.value-schema`: values parsed into typed columns, as pyarrow reads them; a value that
/// does not fit (not JSON, a field of another type, a tombstone) goes whole to the dead-letter
/// folder, counted, and every record is in exactly one of the two.
#[test]
fn json_values_become_typed_columns_and_misfits_go_to_dead_letters() -> Res {
    use zonal_transporter::buffer::ValueType;
    let world = common::world()?;
    world.kafka.create_topic("typed", 2)?;
    let dir = tempfile::tempdir()?;
    let spec = FleetSpec { topics: vec!["typed".into()], max_records: 25, ..FleetSpec::default() }.edit(|c| {
        c.s3.format = Format::Parquet;
        c.parquet.value_schema =
            [("level".to_owned(), ValueType::String), ("status".to_owned(), ValueType::Int64)].into();
    });
    let w = Worker::start(&world, dir.path(), "w0", Some(0), &spec)?;
    let producer: BaseProducer = world.kafka.client_config().set("linger.ms", "5").create()?;
    let mut misfits = std::collections::BTreeSet::new();
    for p in 0..2 {
        for i in 0..60i64 {
            let value = match i % 10 {
                3 => "plain text, not JSON".to_owned(),
                7 => format!(r#"{{"level":"warn","status":"{i}"}}"#),
                _ => format!(r#"{{"level":"info","status":{i},"extra":[1]}}"#),
            };
            if matches!(i % 10, 3 | 7) {
                misfits.insert((i64::from(p), value.clone()));
            }
            testkit::kafka::send_waiting(&producer, BaseRecord::<(), String>::to("typed").partition(p).payload(&value));
        }
    }
    producer.flush(Duration::from_secs(30))?;
    let s3 = world.s3.as_ref().ok_or_else(|| anyhow::anyhow!("no s3"))?;
    let path = |k: &String| s3.root().join(BUCKET).join(k);
    testkit::wait_until("every record committed, typed or dead-lettered", Duration::from_secs(60), || {
        let counted = w.metric("zonal_transporter_records_total", &[]).ok()?;
        (counted >= 120.0).then_some(())
    })
    .map_err(|e| anyhow::anyhow!("{e}\n{}", w.log_tail()))?;
    let main: Vec<PathBuf> = common::object_keys(&world)?.iter().map(path).collect();
    let dead: Vec<PathBuf> = common::dead_letter_keys(&world)?.iter().map(path).collect();
    let (main, dead) = (testkit::pyarrow::read(&main)?, testkit::pyarrow::read(&dead)?);
    let mut seen = BTreeMap::new();
    for row in main.iter().chain(&dead).flat_map(|o| &o.rows) {
        *seen.entry((row.partition, row.offset)).or_insert(0) += 1;
    }
    anyhow::ensure!(
        seen.len() == 120 && seen.values().all(|n| *n == 1),
        "{} records, some twice: {seen:?}",
        seen.len()
    );
    let dead_values: std::collections::BTreeSet<(i64, String)> = dead
        .iter()
        .flat_map(|o| &o.rows)
        .map(|r| (r.partition, String::from_utf8_lossy(&r.value_bytes().unwrap_or_default()).into_owned()))
        .collect();
    anyhow::ensure!(dead_values == misfits, "dead letters {dead_values:?}");
    for o in &main {
        anyhow::ensure!(
            o.schema.iter().any(|c| c == "value_fields:struct<level: string, status: int64>"),
            "{:?}",
            o.schema
        );
        for r in &o.rows {
            let value: serde_json::Value = serde_json::from_slice(&r.value_bytes().unwrap_or_default())?;
            let fields = r.fields.clone().unwrap_or_default();
            anyhow::ensure!(
                fields["level"] == value["level"] && fields["status"] == value["status"],
                "{fields} for {value}"
            );
        }
    }
    anyhow::ensure!(w.metric("zonal_transporter_records_dead_lettered_total", &[])? == 24.0, "dead letters counted");
    Ok(())
}

/// The lines in every `lines` object (zstd), as written.
fn object_lines(world: &testkit::World) -> Res<Vec<String>> {
    let s3 = world.s3.as_ref().ok_or_else(|| anyhow::anyhow!("no s3"))?;
    let mut out = Vec::new();
    for k in common::object_keys(world)? {
        let text = zstd::stream::decode_all(&std::fs::read(s3.root().join(BUCKET).join(&k))?[..])?;
        out.extend(String::from_utf8_lossy(&text).lines().map(str::to_owned));
    }
    out.sort();
    Ok(out)
}

/// `records.newlines = "refuse"`: the partition is held before a value with a line break, and
/// what came before it is uploaded at once (not at the next age), so the offset an operator
/// sets next (past the record) loses nothing read before it.
#[test]
fn a_refused_line_break_holds_the_partition_after_uploading_what_came_before() -> Res {
    let world = common::world()?;
    world.kafka.create_topic("nl", 1)?;
    let dir = tempfile::tempdir()?;
    // No age roll within the test: buffers roll by count (10) or by the hold.
    let spec = FleetSpec { topics: vec!["nl".into()], max_age_ms: 120_000, max_records: 10, ..FleetSpec::default() }
        .edit(|c| {
            c.s3.format = Format::Lines;
            c.records.newlines = zonal_transporter::config::Newlines::Refuse;
        });
    let w = Worker::start(&world, dir.path(), "w0", Some(0), &spec)?;
    let producer: BaseProducer =
        world.kafka.client_config().set("max.in.flight.requests.per.connection", "1").create()?;
    for i in 0..10 {
        let v = if i == 5 { "two\nlines".to_owned() } else { format!("line {i}") };
        testkit::kafka::send_waiting(&producer, BaseRecord::<(), String>::to("nl").partition(0).payload(&v));
    }
    producer.flush(Duration::from_secs(30))?;
    let before: Vec<String> = (0..5).map(|i| format!("line {i}")).collect();
    testkit::wait_until("the records before the line break in S3", Duration::from_secs(30), || {
        let held = w.metric("zonal_transporter_errors_total", &[("kind", "newline")]).ok()? >= 1.0;
        (held && object_lines(&world).ok()? == before).then_some(())
    })
    .map_err(|e| anyhow::anyhow!("{e}\n{}", w.log_tail()))?;
    let out = common::cli(&world, dir.path(), "w0", &["offsets", "--set", "nl/0=6", "--while-owned"])?;
    anyhow::ensure!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Ten more records from offset 6 fill a buffer.
    for i in 10..16 {
        testkit::kafka::send_waiting(
            &producer,
            BaseRecord::<(), String>::to("nl").partition(0).payload(&format!("line {i}")),
        );
    }
    producer.flush(Duration::from_secs(30))?;
    let mut all: Vec<String> = (0..16).filter(|i| *i != 5).map(|i| format!("line {i}")).collect();
    all.sort();
    testkit::wait_until("every other record in S3, once", Duration::from_secs(60), || {
        (object_lines(&world).ok()? == all).then_some(())
    })
    .map_err(|e| anyhow::anyhow!("{e}: {:?}\n{}", object_lines(&world), w.log_tail()))?;
    Ok(())
}
