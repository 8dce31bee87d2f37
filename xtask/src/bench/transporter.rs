//! `cargo xtask bench transporter`: move about 1 GiB from the testkit cluster to the testkit S3
//! with a release transporter fleet (one worker per zone), and read the same data with
//! `kcat -C -e` into a file in the same run.
//!
//! ```text
//!  produce N MiB into 256 partitions (each under the mock broker's 5 MB per-partition log limit)
//!     ├─ reference: kcat -C -e -o beginning ──> file          (time, peak RSS)
//!     └─ 3 x zonal-transporter (release) ──> S3 (zstd objects, or --format parquet) (time until every offset is
//!                                                               committed, peak RSS per worker)
//! ```

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rdkafka::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use testkit::process::{Process, ProcessSpec};
use testkit::{World, WorldSpec};
use zonal_transporter::config::TransporterConfig;

use super::Row;
use super::probe::{PeakRss, Timed, bar, cpu_by_thread, cpu_delta, cpu_seconds, high_watermarks, timed};
use crate::fleet::ObjectFormat;

/// Partitions of the `transporter` case (the `scale` case uses 1,000).
const PARTITIONS: i32 = 256;
const VALUE: usize = 1000;
/// The producer's `batch.size`: 64 KiB, a common setting (Java's default is 16 KiB,
/// librdkafka's 1 MB); the batches the mock broker serves, one per partition per fetch.
const BATCH: usize = 64 * 1024;
const TOPIC: &str = "bench-transporter";

/// How much the benchmark moves.
struct Volume {
    records: u64,
    bytes: u64,
    partitions: i32,
}

/// A running transporter worker: its process, HTTP address and RSS sampler.
struct Worker {
    process: Process,
    http: String,
    peak: PeakRss,
}

pub(super) fn run(mib: u64, format: ObjectFormat, dir: &Path) -> anyhow::Result<Vec<Row>> {
    let case = match format {
        ObjectFormat::Lines => "transporter",
        ObjectFormat::Json => "transporter json",
        ObjectFormat::Parquet => "transporter parquet",
    };
    run_with(case, PARTITIONS, mib, format, dir)
}

/// The case over `partitions` partitions writing `format`, its rows named `case`.
pub(super) fn run_with(
    case: &'static str,
    partitions: i32,
    mib: u64,
    format: ObjectFormat,
    dir: &Path,
) -> anyhow::Result<Vec<Row>> {
    // kcat is the reference; etcd coordinates the workers.
    crate::tools::ensure_installed(&[crate::tools::TEST_PACKAGES[5], crate::tools::TEST_PACKAGES[0]])?;
    crate::run(
        "cargo build --release -p zonal-transporter",
        crate::cargo().args(["build", "--release", "-p", "zonal-transporter"]),
    )?;
    let bin = crate::target_dir().join("release/zonal-transporter");
    // The mock broker keeps at most 5 MB per partition, so the volume stays under it.
    let per_partition = (mib * 1024 * 1024 / partitions as u64 / VALUE as u64).min(4500);
    let records = per_partition * partitions as u64;
    let volume = Volume { records, bytes: records * VALUE as u64, partitions };
    let mb = volume.bytes as f64 / 1e6;

    // S3 stands for a remote service: its storage goes to memory when the machine has a tmpfs.
    let shm = std::path::Path::new("/dev/shm");
    let world = World::start(&WorldSpec { s3_parent: shm.is_dir().then(|| shm.to_owned()), ..WorldSpec::default() })?;
    let s3 = world.s3.as_ref().context("no S3")?;
    s3.create_bucket("bench")?;
    world.kafka.create_topic(TOPIC, partitions)?;
    let bootstrap = world.kafka.bootstrap();
    produce(&bootstrap, &volume)?;
    eprintln!("==> {mb:.0} MB in {partitions} partitions");

    // The reference: kcat reads every record into a file, as it comes and with a prefetch large
    // enough to hold the topic (its default, 64 MiB per partition, left it waiting a second at
    // a time); the faster run counts. The file is in memory where the machine has a tmpfs: on
    // disk, kcat measured the disk (9.7 s at 110 MB/s while it used 2.8 s of CPU), which would
    // flatter Zonal's ratio.
    let kcat_dir = if shm.is_dir() { tempfile::tempdir_in(shm)? } else { tempfile::tempdir_in(dir)? };
    let first = reference(&world, kcat_dir.path(), &volume, &[])?;
    let second = reference(&world, kcat_dir.path(), &volume, &["queued.max.messages.kbytes=2000000"])?;
    eprintln!("kcat runs: {:.1} s as it comes, {:.1} s with a large prefetch", first.0.secs, second.0.secs);
    let (kcat, world_cpu_kcat) = if second.0.secs < first.0.secs { second } else { first };

    // Zonal runs one worker per zone, built for release as the reference is.
    let work = tempfile::tempdir()?;
    let start = Instant::now();
    let world_cpu = cpu_seconds("self").unwrap_or(0.0);
    let threads = cpu_by_thread();
    world.kafka.track_requests();
    let workers = start_workers(&world, &bin, work.path(), format)?;
    let all_owned = wait_committed(&workers, &volume)?;
    let zonal_secs = start.elapsed().as_secs_f64();
    let transfer_secs = all_owned.map_or(zonal_secs, |t| t.elapsed().as_secs_f64());
    let world_cpu_zonal = cpu_seconds("self").unwrap_or(0.0) - world_cpu;
    eprintln!(
        "world threads during the transporters: {}; requests by API key {:?}",
        cpu_delta(&threads),
        world.kafka.requests()
    );
    let mut rss = Vec::new();
    let mut zonal_cpu = 0.0;
    eprintln!("{}", roll_phases(&workers));
    for (z, Worker { mut process, peak, .. }) in workers.into_iter().enumerate() {
        let (mb, cpu) = peak.finish_with_cpu(process.pid().unwrap_or(0));
        rss.push(mb);
        zonal_cpu += cpu;
        process.stop(Duration::from_secs(30))?;
        // Kept for a look afterwards (`ZONAL_BENCH_LOG=info` for more than warnings).
        let _ = std::fs::copy(process.log(), dir.join(format!("{}-w{z}.log", case.replace(' ', "-"))));
    }
    let objects = s3.list_keys("bench")?.len();
    let max_rss = rss.iter().cloned().fold(0.0, f64::max);
    eprintln!(
        "kcat:        {:.1} s, {:.1} MB/s, peak RSS {:.1} MB; CPU {:.1} s (brokers and S3: {world_cpu_kcat:.1} s)",
        kcat.secs,
        mb / kcat.secs,
        kcat.rss_mb,
        kcat.cpu_secs
    );
    eprintln!("transporter CPU: {zonal_cpu:.1} s over the workers (brokers and S3: {world_cpu_zonal:.1} s)");
    eprintln!(
        "transporter: {zonal_secs:.1} s from process start ({:.1} MB/s); {transfer_secs:.1} s once every partition was owned ({:.1} MB/s); {objects} objects; peak RSS per worker {:?} MB",
        mb / zonal_secs,
        mb / transfer_secs,
        rss.iter().map(|r| (r * 10.0).round() / 10.0).collect::<Vec<_>>()
    );
    Ok(vec![
        Row { case, metric: "MB/s", value: mb / zonal_secs, reference: mb / kcat.secs },
        Row { case, metric: "MB/s after startup", value: mb / transfer_secs, reference: mb / kcat.secs },
        Row { case, metric: "peak RSS MB (max)", value: max_rss, reference: kcat.rss_mb },
        Row { case, metric: "CPU s per GB", value: zonal_cpu / mb * 1000.0, reference: kcat.cpu_secs / mb * 1000.0 },
    ])
}

/// One run of `kcat -C -e` (with librdkafka `options`) over the whole topic into a file, and the CPU seconds the world
/// (this process: the mock brokers and the S3 server) used meanwhile.
fn reference(world: &World, dir: &Path, volume: &Volume, options: &[&str]) -> anyhow::Result<(Timed, f64)> {
    let out = dir.join("kcat-out.txt");
    let mut cmd = Command::new("kcat");
    cmd.args(["-C", "-b", &world.kafka.bootstrap(), "-t", TOPIC, "-o", "beginning", "-e", "-q", "-f", "%s\\n"])
        .stdout(std::fs::File::create(&out)?)
        .stderr(Stdio::null());
    for o in options {
        cmd.args(["-X", o]);
    }
    let world_cpu = cpu_seconds("self").unwrap_or(0.0);
    let threads = cpu_by_thread();
    world.kafka.track_requests();
    let kcat = timed(&mut cmd, bar(volume.bytes, "kcat -C -e"))?;
    let world_cpu = cpu_seconds("self").unwrap_or(0.0) - world_cpu;
    eprintln!("world threads during kcat: {}; requests by API key {:?}", cpu_delta(&threads), world.kafka.requests());
    let kcat_bytes = std::fs::metadata(&out)?.len();
    let _ = std::fs::remove_file(&out);
    if kcat.code != 0 || kcat_bytes < volume.bytes {
        bail!("kcat exited with {} after {kcat_bytes} of {} bytes", kcat.code, volume.bytes);
    }
    Ok((kcat, world_cpu))
}

/// Produces the whole volume round-robin over the partitions and checks that Kafka holds it.
///
/// Batches close on size ([`BATCH`]), never on time: the log's layout is then the same in every
/// run. With a short linger it depended on the machine's pace, and so did the mock broker's
/// cost per fetch (it finds a batch by walking the partition's list of batches, and returns
/// one batch per partition per fetch), which made kcat's time vary from 2.9 s to 8 s.
fn produce(bootstrap: &str, volume: &Volume) -> anyhow::Result<()> {
    let produce_bar = bar(volume.bytes, "producing");
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "60000")
        .set("batch.size", BATCH.to_string())
        // As the agent writes by default (`compression = "lz4"`).
        .set("compression.type", "lz4")
        .set("queue.buffering.max.kbytes", "262144")
        .create()?;
    let mut value = vec![0u8; VALUE];
    for i in 0..volume.records {
        // The values look like log lines: compressible, as real logs are, but not trivially so.
        let head = format!("2026-11-22T00:00:{:02}Z INFO req={i:012} path=/api/items/{} ", i % 60, i % 9973);
        value[..head.len()].copy_from_slice(head.as_bytes());
        for (k, b) in value[head.len()..].iter_mut().enumerate() {
            *b = b'a' + ((i as usize * 31 + k * 7) % 26) as u8;
        }
        let p = (i % volume.partitions as u64) as i32;
        testkit::kafka::send_waiting(&producer, BaseRecord::<(), [u8]>::to(TOPIC).payload(&value[..]).partition(p));
        if i % 10_000 == 0 {
            produce_bar.set_position(i * VALUE as u64);
        }
    }
    producer.flush(Duration::from_secs(120))?;
    produce_bar.finish_and_clear();
    let in_kafka = high_watermarks(bootstrap, TOPIC)?;
    if in_kafka != volume.records as i64 {
        bail!("{in_kafka} records in Kafka, expected {}", volume.records);
    }
    Ok(())
}

/// Starts one release worker per zone, each with its RSS sampled from its start.
fn start_workers(world: &World, bin: &Path, work: &Path, format: ObjectFormat) -> anyhow::Result<Vec<Worker>> {
    let s3 = world.s3.as_ref().context("no S3")?;
    let etcd = world.etcd.as_ref().context("no etcd")?;
    let bootstrap = world.kafka.bootstrap();
    let mut workers = Vec::new();
    for (z, imds) in world.metadata.iter().enumerate() {
        let port = testkit::net::free_port()?;
        let config = work.join(format!("w{z}.toml"));
        let mut c = TransporterConfig::default();
        c.kafka.bootstrap_servers = bootstrap.clone();
        c.kafka.topics = vec![TOPIC.to_owned()];
        c.etcd.endpoints = vec![etcd.endpoint()];
        c.etcd.cluster = "bench".to_owned();
        c.zone.providers = vec![az_core::Provider::Ec2];
        c.zone.ec2_endpoint = Some(imds.endpoint());
        c.worker.id = Some(format!("w{z}"));
        c.worker.buffer_dir = work.join("buffers");
        c.s3.bucket = "bench".to_owned();
        c.s3.endpoint = Some(s3.endpoint());
        c.s3.path_style = true;
        c.s3.format = format.into();
        c.roll.max_bytes = 4 * 1024 * 1024;
        c.roll.max_age_ms = 2000;
        c.http.listen = ([127, 0, 0, 1], port).into();
        std::fs::write(&config, toml::to_string(&c)?)?;
        let log = work.join(format!("w{z}.log"));
        let process = Process::start(
            ProcessSpec::new(bin, &["run".as_ref(), "-c".as_ref(), config.as_os_str()], log)
                .env("RUST_LOG", std::env::var("ZONAL_BENCH_LOG").unwrap_or_else(|_| "warn".to_owned()))
                .env("AWS_ACCESS_KEY_ID", s3.access_key())
                .env("AWS_SECRET_ACCESS_KEY", s3.secret_key())
                .env("AWS_REGION", s3.region())
                .env("AWS_CONFIG_FILE", "/nonexistent")
                .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent"),
        )?;
        let peak = PeakRss::watch(process.pid().context("a transporter is not running")?);
        workers.push(Worker { process, http: format!("127.0.0.1:{port}"), peak });
    }
    Ok(workers)
}

/// Where the workers' rolls spent their time, from their `/metrics` histograms: the mean of each
/// phase over every roll of every worker.
fn roll_phases(workers: &[Worker]) -> String {
    let phases = ["roll_wait", "compress", "upload", "commit"];
    let mut sums = [(0.0f64, 0.0f64); 4];
    for w in workers {
        let Ok((_, text)) = testkit::http::get(&w.http, "/metrics") else { continue };
        for (i, p) in phases.iter().enumerate() {
            sums[i].0 += testkit::http::metric(&text, &format!("zonal_transporter_{p}_seconds_sum"), &[]);
            sums[i].1 += testkit::http::metric(&text, &format!("zonal_transporter_{p}_seconds_count"), &[]);
        }
    }
    let means: Vec<String> = phases
        .iter()
        .zip(sums)
        .map(|(p, (sum, n))| format!("{p} {:.1} ms", if n > 0.0 { sum / n * 1000.0 } else { 0.0 }))
        .collect();
    format!("roll phases (mean per roll): {}", means.join(", "))
}

/// Waits until the workers' `/status` shows every record committed; returns when every
/// partition was first seen owned, the start of the transfer proper.
fn wait_committed(workers: &[Worker], volume: &Volume) -> anyhow::Result<Option<Instant>> {
    let progress = bar(volume.bytes, "zonal-transporter");
    let mut all_owned: Option<Instant> = None;
    // Poll every 100 ms: often enough for the figure, rarely enough not to load the workers.
    testkit::wait_until_every(
        "the transporters to commit every record",
        Duration::from_secs(1800),
        Duration::from_millis(100),
        || {
            let (committed, owned) = workers
                .iter()
                .filter_map(|w| {
                    let s: serde_json::Value =
                        serde_json::from_str(&testkit::http::get(&w.http, "/status").ok()?.1).ok()?;
                    let o = s["owned"].as_object()?;
                    let c = o.values().filter_map(|o| o["committed"].as_i64()).map(|c| c.max(0) as u64).sum::<u64>();
                    Some((c, o.len()))
                })
                .fold((0u64, 0usize), |a, b| (a.0 + b.0, a.1 + b.1));
            if all_owned.is_none() && owned >= volume.partitions as usize {
                all_owned = Some(Instant::now());
            }
            progress.set_position(committed * VALUE as u64);
            (committed >= volume.records).then_some(())
        },
    )?;
    progress.finish_and_clear();
    Ok(all_owned)
}
