//! Memory with 1,000 partitions: one worker owns them all, every record lands once, and its peak
//! resident memory stays within the README's formula for the configuration.

mod common;

use std::time::Duration;

use common::*;

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
