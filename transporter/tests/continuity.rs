//! The transporter's core promise at the moments an offset could be committed past a record
//! that is not in an object: out-of-range at start during a burst, retention passing the
//! committed offset, and an operator recovering holes found by `audit`.
//!
//! librdkafka's mock cluster keeps at most 5 MiB of batches per partition
//! (`rdkafka_mock.c`, `max_size`) and deletes the oldest past that: a real retention, which
//! the retention test uses. The burst test produces lz4 batches (as the agent does) so that
//! the mock keeps every record, and forces the out-of-range with the mock's per-request errors.

mod common;

use std::time::Duration;

use common::*;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use zonal_transporter::config::Compression;

/// `n` records of about 105 bytes over `partitions` partitions, as fast as the producer goes;
/// `compression` as librdkafka names it.
fn burst(world: &testkit::World, topic: &str, partitions: i32, n: usize, compression: &str) -> Res {
    let p: BaseProducer = world
        .kafka
        .client_config()
        .set("linger.ms", "20")
        .set("batch.size", "1000000")
        .set("compression.type", compression)
        .create()?;
    for i in 0..n {
        let part = (i % partitions as usize) as i32;
        let v = format!("{topic}-p{part}-{i:06} {}", "x".repeat(84));
        testkit::kafka::send_waiting(&p, BaseRecord::<(), String>::to(topic).payload(&v).partition(part));
    }
    p.flush(Duration::from_secs(60))?;
    Ok(())
}

fn sum_metric(workers: &[&Worker], name: &str, labels: &[(&str, &str)]) -> f64 {
    workers.iter().map(|w| w.metric(name, labels).unwrap_or(0.0)).sum()
}

/// The audit's JSON report and whether it passed.
fn audit(dir: &std::path::Path, id: &str, topic: &str, world: &testkit::World) -> Res<(serde_json::Value, bool)> {
    let out = cli(world, dir, id, &["audit", "--topic", topic, "--json"])?;
    let report = serde_json::from_slice(&out.stdout)
        .map_err(|e| anyhow::anyhow!("{e}: {}", String::from_utf8_lossy(&out.stderr)))?;
    Ok((report, out.status.success()))
}

/// Issue 30's scenario: two workers of one zone start, a burst of 100,000 records arrives
/// while they take their partitions, and their first fetches are answered out-of-range; then,
/// while each partition has an open buffer (records read but not yet in an object), its next
/// fetches are answered out-of-range again. Every record reaches S3 exactly once, the
/// out-of-range is counted, and the audit finds every partition's chain whole. (Before the
/// chain, an out-of-range sought to the log start and kept the open buffer: the records were
/// read into it a second time.)
#[test]
fn an_out_of_range_during_a_burst_at_start_delivers_every_record_once() -> Res {
    let world = world()?;
    world.kafka.create_topic("f.slow", 2)?;
    let tmp = tempfile::tempdir()?;
    // Objects cut by count only, so that where buffers stand is known: 10,000 records each.
    let spec =
        FleetSpec { topics: vec!["f.slow".into()], lease_ttl_secs: 10, max_records: 10_000, ..FleetSpec::default() }
            .edit(|c| {
                c.roll.max_bytes = 4 * 1024 * 1024;
                c.roll.max_age_ms = 600_000;
                c.s3.compression = Compression::None;
            });
    let workers = [
        Worker::start(&world, tmp.path(), "w0-0", Some(0), &spec)?,
        Worker::start(&world, tmp.path(), "w0-1", Some(0), &spec)?,
    ];
    let refs: Vec<&Worker> = workers.iter().collect();
    let oor = RDKafkaRespErr::RD_KAFKA_RESP_ERR_OFFSET_OUT_OF_RANGE;
    // The fleet settles first (a partition moved during the burst would cut its objects at
    // other offsets than every 10,000, and the last one would wait for the roll's age); then
    // the next fetches, before any record was read, are answered out-of-range.
    testkit::wait_until("each worker to own one partition", Duration::from_secs(30), || {
        refs.iter().all(|w| w.owned().len() == 1).then_some(())
    })?;
    world.kafka.mock()?.request_errors(RDKafkaApiKey::Fetch, &[oor; 4]);
    burst(&world, "f.slow", 2, 50_000, "lz4")?;
    // Each partition has read (nearly) all of its 25,000 records: 20,000 are in two objects,
    // the rest in the open buffer (status refreshes its position every 1,024 records).
    testkit::wait_until("each partition's buffer to hold the end of the burst", Duration::from_secs(60), || {
        let positions: Vec<i64> = refs
            .iter()
            .filter_map(|w| w.status().ok())
            .flat_map(|s| s["owned"].as_object().cloned().unwrap_or_default().into_values())
            .filter(|p| p["buffered"].as_u64().unwrap_or(0) > 0)
            .filter_map(|p| p["position"].as_i64())
            .collect();
        (positions.len() == 2 && positions.iter().all(|p| *p >= 24_096)).then_some(())
    })?;
    world.kafka.mock()?.request_errors(RDKafkaApiKey::Fetch, &[oor; 4]);
    burst(&world, "f.slow", 2, 50_000, "lz4")?;
    let got = wait_exactly_once(&world, 100_000, &refs)?;
    assert!(got.keys().all(|(_, p, o)| (0..2).contains(p) && (0..50_000).contains(o)));
    testkit::wait_until("the out-of-range to be counted", Duration::from_secs(20), || {
        (sum_metric(&refs, "zonal_transporter_errors_total", &[("kind", "offset-out-of-range")]) >= 2.0).then_some(())
    })?;
    let (report, clean) = audit(tmp.path(), "w0-0", "f.slow", &world)?;
    assert!(clean, "{report:#}");
    for p in ["f.slow/0", "f.slow/1"] {
        assert_eq!(report["partitions"][p]["records"], 50_000, "{report:#}");
        assert_eq!(report["partitions"][p]["objects"], 5, "{report:#}");
        assert_eq!(report["partitions"][p]["chain"]["from"], 0, "{report:#}");
    }
    Ok(())
}

/// Retention removes records before they are read (the mock keeps 5 MiB per partition): the
/// offsets lost in Kafka are counted as a retention gap in the metric and in the first object's
/// metadata, everything still kept is shipped once, and the audit explains the gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_before_reading_is_a_counted_gap_and_the_rest_arrives_once() -> Res {
    let world = world()?;
    world.kafka.create_topic("ret", 1)?;
    let mut client = etcd_client(&world).await?;
    client.put("/test/offsets/ret/0", "0", None).await?;
    tokio::task::block_in_place(|| burst(&world, "ret", 1, 80_000, "none"))?;
    let (low, high) = tokio::task::block_in_place(|| -> Res<(i64, i64)> {
        let c: rdkafka::consumer::BaseConsumer = world.kafka.client_config().create()?;
        Ok(rdkafka::consumer::Consumer::fetch_watermarks(&c, "ret", 0, Duration::from_secs(10))?)
    })?;
    assert!(low > 0 && high == 80_000, "the mock's retention did not remove anything: {low}..{high}");
    let tmp = tempfile::tempdir()?;
    let spec = FleetSpec { topics: vec!["ret".into()], max_records: 20_000, ..FleetSpec::default() };
    let w = tokio::task::block_in_place(|| Worker::start(&world, tmp.path(), "w0-0", Some(0), &spec))?;
    tokio::task::block_in_place(|| -> Res {
        let got = wait_exactly_once(&world, (high - low) as usize, &[&w])?;
        assert!(got.keys().all(|(_, _, o)| (low..high).contains(o)), "a record below the log start");
        testkit::wait_until("the retention gap to be counted", Duration::from_secs(20), || {
            (w.metric("zonal_transporter_gap_records_total", &[("reason", "retention")]).ok()? == low as f64)
                .then_some(())
        })?;
        let (report, clean) = audit(tmp.path(), "w0-0", "ret", &world)?;
        assert!(clean, "{report:#}");
        let p = &report["partitions"]["ret/0"];
        assert_eq!(p["gap_records"]["retention"], low, "{report:#}");
        assert_eq!(p["chain"]["from"], 0, "{report:#}");
        assert_eq!(p["committed"], high, "{report:#}");
        assert!(
            w.log_tail().contains("retention removed offsets")
                || std::fs::read_to_string(&w.log)?.contains("retention removed offsets")
        );
        Ok(())
    })
}

/// `audit` on a bucket with a clean partition, a hole (an object deleted) and an overlap (an
/// object written across another's range); then an operator rewinds the partition with the hole
/// (`offsets --set`) and the missing records are shipped again, nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_finds_holes_and_overlaps_and_a_rewind_reships_the_missing_records() -> Res {
    let world = world()?;
    world.kafka.create_topic("aud", 3)?;
    let tmp = tempfile::tempdir()?;
    let spec = FleetSpec { topics: vec!["aud".into()], max_records: 50, ..FleetSpec::default() };
    let mut w = tokio::task::block_in_place(|| Worker::start(&world, tmp.path(), "w0-0", Some(0), &spec))?;
    tokio::task::block_in_place(|| -> Res {
        produce(&world, "aud", 3, 150, "a")?;
        wait_exactly_once(&world, 450, &[&w])?;
        testkit::wait_until("every offset committed", Duration::from_secs(20), || {
            let (report, clean) = audit(tmp.path(), "w0-0", "aud", &world).ok()?;
            (clean && (0..3).all(|p| report["partitions"][format!("aud/{p}")]["committed"] == 150)).then_some(())
        })?;
        w.stop()?;
        Ok(())
    })?;
    let s3 = world.s3.as_ref().ok_or_else(|| anyhow::anyhow!("no s3"))?;
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .endpoint_url(s3.endpoint())
        .region(aws_config::Region::new(s3.region().to_owned()))
        .credentials_provider(aws_sdk_s3::config::Credentials::new(s3.access_key(), s3.secret_key(), None, None, "t"))
        .force_path_style(true)
        .build();
    let client = aws_sdk_s3::Client::from_conf(conf);
    let keys = s3.list_keys(BUCKET)?;
    let key_of = |p: i32, first: i64| {
        keys.iter()
            .find(|k| k.ends_with(&format!("aud-{p}-{first:020}.jsonl.zst")))
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("no object aud/{p}@{first} in {keys:?}"))
    };
    // A hole: partition 1's middle object is gone.
    client.delete_object().bucket(BUCKET).key(key_of(1, 50)?).send().await?;
    // An overlap: an object at partition 2 covering 25..=74 (a stray writer).
    let mut span = zonal_transporter::continuity::Span::starting(25);
    for o in 25..=74 {
        span.record(o)?;
    }
    let stray = key_of(2, 0)?.replace("00000000000000000000", "00000000000000000025");
    let mut put = client.put_object().bucket(BUCKET).key(&stray);
    for (k, v) in span.to_meta("aud", 2, "unknown/test") {
        put = put.metadata(k, v);
    }
    put.body(aws_sdk_s3::primitives::ByteStream::from(b"stray".to_vec())).send().await?;
    tokio::task::block_in_place(|| -> Res {
        let (report, clean) = audit(tmp.path(), "w0-0", "aud", &world)?;
        assert!(!clean, "{report:#}");
        let parts = &report["partitions"];
        assert_eq!(parts["aud/0"]["holes"], serde_json::json!([]), "{report:#}");
        assert_eq!(parts["aud/0"]["overlaps"], serde_json::json!([]), "{report:#}");
        assert_eq!(parts["aud/1"]["holes"], serde_json::json!([{ "from": 50, "to": 99 }]), "{report:#}");
        assert_eq!(parts["aud/2"]["overlaps"], serde_json::json!([{ "from": 25, "to": 74 }]), "{report:#}");
        // The text report names them too.
        let out = cli(&world, tmp.path(), "w0-0", &["audit", "--topic", "aud"])?;
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success() && text.contains("HOLE 50..=99") && text.contains("OVERLAP 25..=74"), "{text}");

        // The rewind: partition 1 is read again from its hole; the object after the hole is
        // found at its key, proves it holds the same records, and is not written twice.
        let out = cli(&world, tmp.path(), "w0-0", &["offsets", "--set", "aud/1=50"])?;
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        w.restart()?;
        testkit::wait_until("partition 1 whole again", Duration::from_secs(60), || {
            let (report, _) = audit(tmp.path(), "w0-0", "aud", &world).ok()?;
            let p = &report["partitions"]["aud/1"];
            (p["holes"] == serde_json::json!([]) && p["committed"] == 150).then_some(())
        })?;
        Ok(())
    })?;
    // The stray object is not the transporter's to read back; the rest is checked record by record.
    client.delete_object().bucket(BUCKET).key(stray).send().await?;
    tokio::task::block_in_place(|| -> Res {
        let (seen, _) = s3_records(&world)?;
        let p1: Vec<_> = seen.iter().filter(|((_, p, _), _)| *p == 1).collect();
        assert_eq!(p1.len(), 150);
        assert!(p1.iter().all(|(_, n)| **n == 1), "a record of partition 1 twice");
        Ok(())
    })
}

/// SIGTERM while S3 holds every upload without answering: the worker gives up the flush after
/// `worker.shutdown-timeout-secs` and exits; the next owner ships every record exactly once
/// (the held uploads, let go afterwards, land on the same keys and prove themselves).
#[test]
fn sigterm_ends_within_the_shutdown_timeout_while_s3_hangs() -> Res {
    let world = world()?;
    world.kafka.create_topic("logs", 2)?;
    let s3 = world.s3.as_ref().ok_or_else(|| anyhow::anyhow!("no s3"))?;
    let tmp = tempfile::tempdir()?;
    let spec = FleetSpec::default().edit(|c| c.worker.shutdown_timeout_secs = 2);
    let mut w = Worker::start(&world, tmp.path(), "w0-0", Some(0), &spec)?;
    testkit::wait_until("both partitions owned", Duration::from_secs(30), || (w.owned().len() == 2).then_some(()))?;
    s3.hold_next_writes(1000);
    produce(&world, "logs", 2, 400, "held")?;
    testkit::wait_until("an upload held by S3", Duration::from_secs(20), || (s3.held_writes() >= 1).then_some(()))?;
    let asked = std::time::Instant::now();
    let code = w.stop()?;
    let took = asked.elapsed();
    assert!(took < Duration::from_secs(10), "SIGTERM took {took:?} with S3 hanging\n{}", w.log_tail());
    assert_eq!(code, Some(0), "{}", w.log_tail());
    assert!(std::fs::read_to_string(&w.log)?.contains("did not flush within worker.shutdown-timeout-secs"));
    s3.release_writes();
    s3.hold_next_writes(0);
    let next = Worker::start(&world, tmp.path(), "w0-1", Some(0), &spec)?;
    wait_exactly_once(&world, 800, &[&next])?;
    Ok(())
}

/// Issue 23, item 10: a transactional producer's commit markers take offsets, so a committed
/// offset often points at one and every transaction makes a jump. Neither is an error: the
/// jumps are gaps of the log (`gap_records{reason="log"}`), and a worker taking over at a marker
/// counts nothing. (The mock writes no markers of its own: the testkit writes them as a
/// transaction coordinator does. It does not abort either, so read_committed's side is guarded
/// in the configuration: `isolation.level` is refused unless read_committed.)
#[test]
fn transaction_markers_are_log_gaps_not_errors_and_a_takeover_at_one_counts_nothing() -> Res {
    let world = world()?;
    world.kafka.create_topic("txn", 1)?;
    let transaction = |tag: &str, n: usize| -> Res {
        produce(&world, "txn", 1, n, tag)?;
        Ok(world.kafka.append_commit_marker("txn", 0, 4242)?)
    };
    transaction("a", 200)?;
    transaction("b", 200)?;
    let tmp = tempfile::tempdir()?;
    let spec = FleetSpec { topics: vec!["txn".into()], max_records: 10_000, ..FleetSpec::default() };
    let mut first = Worker::start(&world, tmp.path(), "w0-0", Some(0), &spec)?;
    wait_exactly_once(&world, 400, &[&first])?;
    assert_eq!(first.metric("zonal_transporter_errors_total", &[("kind", "offset-gap")])?, 0.0, "{}", first.log_tail());
    assert_eq!(
        first.metric("zonal_transporter_gap_records_total", &[("reason", "log")])?,
        1.0,
        "the first marker is a gap"
    );
    first.stop()?;
    // The next owner starts at the committed offset, which is the last marker's.
    transaction("c", 100)?;
    let second = Worker::start(&world, tmp.path(), "w0-1", Some(0), &spec)?;
    let got = wait_exactly_once(&world, 500, &[&second])?;
    let offsets: Vec<i64> = got.keys().map(|(_, _, o)| *o).collect();
    assert!(!offsets.contains(&200) && !offsets.contains(&401), "a marker's offset in S3: {offsets:?}");
    for kind in ["offset-gap", "continuity"] {
        assert_eq!(
            second.metric("zonal_transporter_errors_total", &[("kind", kind)])?,
            0.0,
            "{kind}: {}",
            second.log_tail()
        );
    }
    assert_eq!(
        second.metric("zonal_transporter_gap_records_total", &[("reason", "log")])?,
        1.0,
        "the marker it started at"
    );
    let (report, clean) = audit(tmp.path(), "w0-1", "txn", &world)?;
    assert!(clean, "{report:#}");
    Ok(())
}
