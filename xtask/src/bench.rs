//! `cargo xtask bench [CASE]`: performance as ratios against a reference measured in the same
//! run on the same cluster and data, never as absolute timings. Writes
//! `target/zonal-bench/results.json` (case, metric, value, reference, ratio).
//!
//! ```text
//!  generate input file (cached) ──> testkit world (mock Kafka, racks, IMDS)
//!     ├─ reference: kcat -P -l FILE ──────────────> topic bench-kcat   (time, peak RSS)
//!     └─ zonal-agent (release) tailing FILE ──────> topic bench-agent  (time, peak RSS)
//!  ratio = agent MB/s / kcat MB/s
//! ```

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use serde_json::json;
use testkit::process::{Process, ProcessSpec};
use testkit::{World, WorldSpec};

/// Options of the benchmarks.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// One case: agent (others arrive with the transporter and demo).
    case: Option<String>,
    /// Lines in the agent benchmark's input file.
    #[arg(long, default_value_t = 5_000_000)]
    lines: usize,
    /// Average bytes per line.
    #[arg(long, default_value_t = 200)]
    line_bytes: usize,
    /// MiB moved by the transporter benchmark.
    #[arg(long, default_value_t = 1024)]
    transporter_mib: u64,
}

/// One row of results.json.
pub struct Row {
    /// Bench case.
    pub case: &'static str,
    /// What is measured.
    pub metric: &'static str,
    /// Zonal's figure.
    pub value: f64,
    /// The reference's figure in the same run.
    pub reference: f64,
}

/// Every case, in the order `cargo xtask bench` runs them.
pub const CASES: [&str; 4] = ["agent", "transporter", "assignment", "cross-zone"];

pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let dir = crate::target_dir().join("zonal-bench");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let cases: Vec<&str> = match args.case.as_deref() {
        None => CASES.to_vec(),
        Some(c) if CASES.contains(&c) => vec![c],
        Some(c) => bail!("unknown bench case {c:?}; cases: {}", CASES.join(", ")),
    };
    let mut rows = Vec::new();
    for case in cases {
        eprintln!("==> bench {case}");
        rows.extend(match case {
            "agent" => bench_agent(args, &dir)?,
            "transporter" => crate::bench_transporter::run(args.transporter_mib, &dir)?,
            "assignment" => bench_assignment(),
            _ => bench_cross_zone(&dir)?,
        });
    }
    println!();
    println!("{:<12} {:<22} {:>14} {:>14} {:>8}", "case", "metric", "value", "reference", "ratio");
    for r in &rows {
        let ratio = if r.reference == 0.0 { f64::NAN } else { r.value / r.reference };
        println!("{:<12} {:<22} {:>14.2} {:>14.2} {:>8.3}", r.case, r.metric, r.value, r.reference, ratio);
    }
    let doc: Vec<_> = rows
        .iter()
        .map(|r| {
            let ratio = if r.reference == 0.0 { None } else { Some(r.value / r.reference) };
            json!({ "case": r.case, "metric": r.metric, "value": r.value, "reference": r.reference, "ratio": ratio })
        })
        .collect();
    let path = dir.join("results.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&doc)?).with_context(|| format!("writing {}", path.display()))?;
    println!("\nresults written to {}", path.display());
    Ok(())
}

/// A synthetic but realistic access-log line of about `bytes` bytes.
fn log_line(n: usize, bytes: usize, out: &mut Vec<u8>) {
    out.clear();
    let _ = write!(
        out,
        "2026-11-22T{:02}:{:02}:{:02}.{:03}Z INFO [worker-{}] method=GET path=/api/v1/items/{} status={} latency_ms={} user=u{} req={:016x} ",
        (n / 3_600_000) % 24,
        (n / 60_000) % 60,
        (n / 1000) % 60,
        n % 1000,
        n % 32,
        n % 100_003,
        [200, 200, 200, 404, 500][n % 5],
        (n * 7) % 250,
        n % 9973,
        (n as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
    );
    let mut x = (n as u64).wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    while out.len() < bytes {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.push(b'a' + (x % 26) as u8);
    }
    out.push(b'\n');
}

fn input_file(dir: &Path, lines: usize, bytes: usize) -> anyhow::Result<PathBuf> {
    let path = dir.join(format!("agent-input-{lines}x{bytes}.log"));
    if path.exists() {
        return Ok(path);
    }
    let tmp = path.with_extension("partial");
    let mut w = BufWriter::with_capacity(
        1 << 20,
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?,
    );
    let bar = bar(lines as u64, "generating input");
    let mut line = Vec::with_capacity(bytes + 64);
    for n in 0..lines {
        log_line(n, bytes, &mut line);
        w.write_all(&line)?;
        if n % 100_000 == 0 {
            bar.set_position(n as u64);
        }
    }
    w.flush()?;
    drop(w);
    std::fs::rename(&tmp, &path)?;
    bar.finish_and_clear();
    Ok(path)
}

pub fn bar(len: u64, msg: &'static str) -> ProgressBar {
    let b = ProgressBar::new(len);
    b.set_style(
        ProgressStyle::with_template("{msg:>20} [{bar:40}] {percent:>3}% {binary_bytes_per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    b.set_message(msg);
    b
}

/// Assignment of 100,000 partitions over 1,000 workers in 3 zones, fresh and sticky, against a
/// reference that only hashes each partition to a worker of its zone (the least any assignment
/// must do).
fn bench_assignment() -> Vec<Row> {
    use az_core::assign::{PartitionSpec, TopicPartition, WorkerSpec, assign};
    use std::collections::BTreeMap;
    let zones = ["use1-az1", "use1-az2", "use1-az3"];
    let parts: Vec<PartitionSpec> = (0..100_000)
        .map(|p| PartitionSpec {
            tp: TopicPartition { topic: format!("t{}", p % 50), partition: p / 50 },
            zones: vec![zones[p as usize % 3].to_owned()],
            weight: 1.0 + (p % 7) as f64,
        })
        .collect();
    let workers: Vec<WorkerSpec> = (0..1000)
        .map(|w| WorkerSpec { id: format!("w{w}"), zone: Some(zones[w % 3].to_owned()), capacity: 1.0 })
        .collect();
    let time = |f: &mut dyn FnMut()| {
        let start = Instant::now();
        f();
        start.elapsed().as_secs_f64() * 1000.0
    };
    let mut first = Default::default();
    let fresh = time(&mut || first = assign(&parts, &workers, &BTreeMap::new(), &[]));
    let sticky = time(&mut || {
        let _ = assign(&parts, &workers, &first.owners, &[]);
    });
    let by_zone: BTreeMap<&str, Vec<&str>> = zones
        .iter()
        .map(|z| (*z, workers.iter().filter(|w| w.zone.as_deref() == Some(z)).map(|w| w.id.as_str()).collect()))
        .collect();
    let mut naive: BTreeMap<&TopicPartition, &str> = BTreeMap::new();
    let reference = time(&mut || {
        naive.clear();
        for (i, p) in parts.iter().enumerate() {
            let ws = &by_zone[p.zones[0].as_str()];
            naive.insert(&p.tp, ws[i % ws.len()]);
        }
    });
    eprintln!(
        "assign 100k x 1k: fresh {fresh:.0} ms, sticky {sticky:.0} ms; reference (hash into zone) {reference:.0} ms; cross-zone {}",
        first.cross_zone
    );
    vec![
        Row { case: "assignment", metric: "fresh ms", value: fresh, reference },
        Row { case: "assignment", metric: "sticky ms", value: sticky, reference },
    ]
}

/// The demo at a fixed rate: cross-zone bytes of the zone-aware run against the zone-unaware
/// run of the same invocation.
fn bench_cross_zone(dir: &Path) -> anyhow::Result<Vec<Row>> {
    let out = dir.join("cross-zone");
    let args = crate::demo::DemoArgs {
        duration: 10,
        rate: 300,
        zones: 3,
        partitions: 12,
        line_bytes: 200,
        volume_gb_per_day: 1000.0,
        price_per_gb: 0.02,
        out: Some(out.clone()),
    };
    crate::demo::run(&args)?;
    let s: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("summary.json"))?)?;
    let f = |run: &str, k: &str| s[run][k].as_f64().unwrap_or(0.0);
    let per = |run: &str| f(run, "cross_zone_bytes") / f(run, "producer_bytes").max(1.0);
    Ok(vec![
        Row {
            case: "cross-zone",
            metric: "producer cross-zone B",
            value: f("zone_aware", "producer_cross_zone_bytes"),
            reference: f("baseline", "producer_cross_zone_bytes"),
        },
        Row {
            case: "cross-zone",
            metric: "consumer cross-zone B",
            value: f("zone_aware", "consumer_cross_zone_bytes"),
            reference: f("baseline", "consumer_cross_zone_bytes"),
        },
        Row {
            case: "cross-zone",
            metric: "total per produced B",
            value: per("zone_aware"),
            reference: per("baseline"),
        },
    ])
}

/// Peak RSS of a running process, sampled from `/proc/<pid>/status` (VmHWM, the high-water mark
/// of its own address space). `ru_maxrss` from wait4 is not usable: Rust spawns children with
/// vfork, and the kernel then charges the parent's memory to the child's maximum.
pub struct PeakRss {
    peak: std::sync::Arc<std::sync::atomic::AtomicU64>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines().find_map(|l| l.strip_prefix("VmHWM:"))?.trim().trim_end_matches("kB").trim().parse().ok()
}

impl PeakRss {
    /// Starts sampling every 20 ms.
    pub fn watch(pid: u32) -> PeakRss {
        use std::sync::atomic::Ordering;
        let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (p, s) = (peak.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match vm_hwm_kib(pid) {
                    Some(k) => {
                        p.fetch_max(k, Ordering::Relaxed);
                    }
                    None => return,
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        PeakRss { peak, stop, thread: Some(thread) }
    }

    /// Takes one more sample (call before the process exits) and returns the peak in MB.
    pub fn finish(mut self, pid: u32) -> f64 {
        use std::sync::atomic::Ordering;
        if let Some(k) = vm_hwm_kib(pid) {
            self.peak.fetch_max(k, Ordering::Relaxed);
        }
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.peak.load(Ordering::Relaxed) as f64 / 1024.0
    }
}

/// Waits for a child; returns its exit status.
pub fn wait_child(child: &mut std::process::Child) -> anyhow::Result<i32> {
    let status = child.wait().context("waiting for a child process")?;
    Ok(status.code().unwrap_or(-1))
}

pub fn high_watermarks(bootstrap: &str, topic: &str) -> anyhow::Result<i64> {
    let c: BaseConsumer = ClientConfig::new().set("bootstrap.servers", bootstrap).set("group.id", "bench").create()?;
    let md = c.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let mut total = 0;
    for p in md.topics().iter().flat_map(|t| t.partitions()) {
        total += c.fetch_watermarks(topic, p.id(), Duration::from_secs(10))?.1;
    }
    Ok(total)
}

fn bench_agent(args: &BenchArgs, dir: &Path) -> anyhow::Result<Vec<Row>> {
    // The reference client.
    crate::tools::ensure_installed(&[crate::tools::TEST_PACKAGES[5]])?;
    crate::run(
        "cargo build --release -p zonal-agent",
        crate::cargo().args(["build", "--release", "-p", "zonal-agent"]),
    )?;
    let agent_bin = crate::target_dir().join("release/zonal-agent");
    let input = input_file(dir, args.lines, args.line_bytes)?;
    let size = std::fs::metadata(&input)?.len();
    let mb = size as f64 / 1e6;
    eprintln!("==> input: {} ({mb:.0} MB, {} lines)", input.display(), args.lines);

    let world = World::start(&WorldSpec { etcd: false, s3: false, ..Default::default() })?;
    for t in ["bench-kcat", "bench-agent"] {
        world.kafka.create_topic(t, 12)?;
    }
    let bootstrap = world.kafka.bootstrap();

    // Reference: kcat with the agent's producer settings (acks=all, idempotence, lz4, linger 10 ms).
    let spinner = bar(size, "kcat -P");
    let start = Instant::now();
    let kcat = Command::new("kcat")
        .args(["-P", "-b", &bootstrap, "-t", "bench-kcat", "-z", "lz4"])
        .args(["-X", "enable.idempotence=true", "-X", "acks=all", "-X", "linger.ms=10"])
        .arg("-l")
        .arg(&input)
        .stdout(Stdio::null())
        .spawn()
        .context("starting kcat")?;
    let mut kcat = kcat;
    let kcat_peak = PeakRss::watch(kcat.id());
    spinner.enable_steady_tick(Duration::from_millis(200));
    let status = wait_child(&mut kcat)?;
    let kcat_rss = kcat_peak.finish(kcat.id());
    let kcat_secs = start.elapsed().as_secs_f64();
    spinner.finish_and_clear();
    if status != 0 {
        bail!("kcat exited with status {status}");
    }
    let kcat_count = high_watermarks(&bootstrap, "bench-kcat")?;

    // Zonal agent, release build, tailing the same file.
    let work = tempfile::tempdir()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let config = work.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "checkpoint-dir = \"{}\"\n[http]\nlisten = \"127.0.0.1:{port}\"\n[kafka]\nbootstrap-servers = \"{bootstrap}\"\n\
             [zone]\nproviders = [\"ec2\"]\nec2-endpoint = \"{}\"\n[[streams]]\nname = \"bench\"\npaths = [\"{}\"]\ntopic = \"bench-agent\"\n",
            work.path().join("ckpt").display(),
            world.metadata[0].endpoint(),
            input.display()
        ),
    )?;
    let progress = bar(size, "zonal-agent");
    let start = Instant::now();
    let mut agent = Process::start(
        ProcessSpec::new(
            &agent_bin,
            &["run".as_ref(), "-c".as_ref(), config.as_os_str()],
            work.path().join("agent.log"),
        )
        .env("RUST_LOG", "warn"),
    )?;
    let agent_pid = agent.pid().context("the agent is not running")?;
    let agent_peak = PeakRss::watch(agent_pid);
    let status_url = format!("127.0.0.1:{port}");
    let acked = || -> Option<u64> {
        let (_, body) = testkit::http::get(&status_url, "/status").ok()?;
        let s: serde_json::Value = serde_json::from_str(&body).ok()?;
        s["streams"][0]["files"].as_array()?.iter().filter_map(|f| f["acked_offset"].as_u64()).max()
    };
    // Poll every 100 ms: often enough for the figure, rarely enough not to load the agent.
    testkit::wait_until_every(
        "the agent to ship the whole file",
        Duration::from_secs(1800),
        Duration::from_millis(100),
        || {
            let done = acked().unwrap_or(0);
            progress.set_position(done);
            (done >= size).then_some(())
        },
    )?;
    let agent_secs = start.elapsed().as_secs_f64();
    progress.finish_and_clear();
    let agent_rss = agent_peak.finish(agent_pid);
    agent.stop(Duration::from_secs(30))?;
    let agent_count = high_watermarks(&bootstrap, "bench-agent")?;
    if agent_count < args.lines as i64 || kcat_count < args.lines as i64 {
        bail!("records in Kafka: agent {agent_count}, kcat {kcat_count}; expected {} each", args.lines);
    }

    let lines = args.lines as f64;
    eprintln!(
        "kcat:  {kcat_secs:.1} s, {:.1} MB/s, {:.0} lines/s, peak RSS {:.1} MB",
        mb / kcat_secs,
        lines / kcat_secs,
        kcat_rss
    );
    eprintln!(
        "agent: {agent_secs:.1} s, {:.1} MB/s, {:.0} lines/s, peak RSS {:.1} MB",
        mb / agent_secs,
        lines / agent_secs,
        agent_rss
    );
    Ok(vec![
        Row { case: "agent", metric: "MB/s", value: mb / agent_secs, reference: mb / kcat_secs },
        Row { case: "agent", metric: "lines/s", value: lines / agent_secs, reference: lines / kcat_secs },
        Row { case: "agent", metric: "peak RSS MB", value: agent_rss, reference: kcat_rss },
    ])
}
