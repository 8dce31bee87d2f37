//! Memory with 1,000 partitions: one worker owns them all, every record lands once, and its peak
//! resident memory stays within the README's formula for the configuration; and with every
//! partition's prefetch queue full (S3 holding every upload), still within it.

mod common;

use std::time::Duration;

use common::*;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

/// The README's bound on a worker's peak RSS, in MiB: 80 + brokers x 8 (fetch responses) +
/// partitions x (prefetch + one partition fetch + 0.2) + concurrent compressions x 24 +
/// concurrent uploads x 1.
fn bound_mib(brokers: f64, partitions: f64, prefetch_kib: f64, fetch_kib: f64, rolls: f64, uploads: f64) -> f64 {
    80.0 + brokers * 8.0 + partitions * ((prefetch_kib + fetch_kib) / 1024.0 + 0.2) + rolls * 24.0 + uploads
}

#[test]
fn a_thousand_partitions_stay_within_the_memory_formula() -> Res {
    const PARTITIONS: usize = 1000;
    let world = world()?;
    world.kafka.create_topic("wide", PARTITIONS as i32)?;
    // The defaults: queued.max.messages.kbytes of 64 KiB, max.partition.fetch.bytes of 256 KiB.
    let (prefetch_kib, fetch_kib) = (64.0, 256.0);
    let spec =
        FleetSpec { topics: vec!["wide".into()], max_age_ms: 1500, max_records: 1_000_000, ..FleetSpec::default() };
    let tmp = tempfile::tempdir()?;
    // One worker: partitions led in the other zones come to it as the only one anywhere.
    let w = Worker::start(&world, tmp.path(), "wide", Some(0), &spec)?;
    testkit::wait_until("the worker to own every partition", Duration::from_secs(60), || {
        (w.owned().len() == PARTITIONS).then_some(())
    })
    .map_err(|e| anyhow::anyhow!("{e}: owns {}\n{}", w.owned().len(), w.log_tail()))?;
    produce(&world, "wide", PARTITIONS as i32, 40, "m")?;
    wait_exactly_once(&world, PARTITIONS * 40, &[&w])?;
    let pid = w.pid().ok_or_else(|| anyhow::anyhow!("worker not running"))?;
    let peak = testkit::process::peak_rss_mib(pid)?;
    let brokers = world.kafka.broker_racks().len() as f64;
    let worker = zonal_transporter::config::WorkerConfig::default();
    let (rolls, uploads) = (worker.max_concurrent_rolls as f64, worker.max_concurrent_uploads as f64);
    let bound = bound_mib(brokers, PARTITIONS as f64, prefetch_kib, fetch_kib, rolls, uploads);
    eprintln!("1,000 partitions: peak RSS {peak:.0} MiB, formula {bound:.0} MiB");
    assert!(peak <= bound, "peak RSS {peak:.0} MiB over the formula's {bound:.0} MiB");
    Ok(())
}

/// S3 holds every upload, so each partition has one roll in flight and its next buffer full:
/// reading stops, and librdkafka fills every partition's prefetch queue to its bound (then it
/// stops fetching: no Fetch for a second while every partition still has records to read is
/// how the test knows). Peak memory stays within the formula.
#[test]
fn full_prefetch_queues_stay_within_the_memory_formula() -> Res {
    const PARTITIONS: i32 = 100;
    const VALUE: usize = 2048;
    let world = world()?;
    world.kafka.create_topic("deep", PARTITIONS)?;
    let (prefetch_kib, fetch_kib) = (64.0, 256.0);
    // Buffers of 64 KiB: two per partition (one rolling, one full) take 128 KiB of each
    // partition's 500 KiB; the rest waits in Kafka and in the prefetch queues.
    let spec = FleetSpec { topics: vec!["deep".into()], max_age_ms: 3_000, ..FleetSpec::default() }
        .edit(|c| c.roll.max_bytes = 64 * 1024);
    let tmp = tempfile::tempdir()?;
    let w = Worker::start(&world, tmp.path(), "deep", Some(0), &spec)?;
    testkit::wait_until("the worker to own every partition", Duration::from_secs(60), || {
        (w.owned().len() == PARTITIONS as usize).then_some(())
    })?;
    let pid = w.pid().ok_or_else(|| anyhow::anyhow!("worker not running"))?;
    let before = testkit::process::peak_rss_mib(pid)?;
    let s3 = world.s3.as_ref().ok_or_else(|| anyhow::anyhow!("no s3"))?;
    s3.hold_next_writes(usize::MAX);
    world.kafka.track_requests();
    let per_partition = 250;
    let p: BaseProducer = world.kafka.client_config().set("linger.ms", "5").create()?;
    let value = "v".repeat(VALUE);
    for part in 0..PARTITIONS {
        for _ in 0..per_partition {
            testkit::kafka::send_waiting(&p, BaseRecord::<(), str>::to("deep").payload(value.as_str()).partition(part));
        }
    }
    p.flush(Duration::from_secs(60))?;
    // A partition whose queue is under its bound is fetched at least every 100 ms (the fetch
    // wait): a second without any Fetch means every queue is full.
    testkit::wait_until_every(
        "every prefetch queue full (no Fetch for a second)",
        Duration::from_secs(120),
        Duration::from_secs(1),
        || (world.kafka.requests().get(&1).copied().unwrap_or(0) == 0).then_some(()),
    )
    .map_err(|e| anyhow::anyhow!("{e}\n{}", w.log_tail()))?;
    let peak = testkit::process::peak_rss_mib(pid)?;
    // No Fetch alone could also be a stalled consumer. With records still to read in every
    // partition (the worker's position short of the log's end), librdkafka would fetch any
    // partition whose queue were under its bound: so every queue is at it.
    let status = w.status()?;
    let short = (0..PARTITIONS)
        .filter(|p| {
            let at = status["owned"][format!("deep/{p}")]["position"].as_i64();
            at.is_some_and(|at| at < per_partition as i64 - 1)
        })
        .count();
    assert_eq!(short, PARTITIONS as usize, "partitions with records left to fetch: {short}, not every one");
    let worker = zonal_transporter::config::WorkerConfig::default();
    let (rolls, uploads) = (worker.max_concurrent_rolls as f64, worker.max_concurrent_uploads as f64);
    let brokers = world.kafka.broker_racks().len() as f64;
    let bound = bound_mib(brokers, f64::from(PARTITIONS), prefetch_kib, fetch_kib, rolls, uploads);
    eprintln!(
        "full prefetch, {PARTITIONS} partitions: peak RSS {peak:.0} MiB (from {before:.0}), formula {bound:.0} MiB"
    );
    assert!(peak <= bound, "peak RSS {peak:.0} MiB over the formula's {bound:.0} MiB");
    s3.release_writes();
    wait_exactly_once(&world, PARTITIONS as usize * per_partition, &[&w])?;
    Ok(())
}
