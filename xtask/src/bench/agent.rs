//! `cargo xtask bench agent`: a release `zonal-agent` tails a generated access log into the mock
//! cluster, against `kcat -P` producing the same file with the agent's producer settings
//! (acks=all, idempotence, lz4, linger 10 ms) on the same cluster: MB/s, lines/s, peak RSS. The
//! `scale` case runs the same over many files at once (`run_files`).

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use testkit::process::{Process, ProcessSpec};
use testkit::{World, WorldSpec};

use super::Row;
use super::probe::{PeakRss, Timed, bar, high_watermarks, timed};

/// The input: its files, the glob the agent tails them by, their bytes and lines.
pub(super) struct Input {
    pub(super) files: Vec<PathBuf>,
    /// What kcat reads: the one file, or every file's lines in one (`kcat -l` takes one file).
    pub(super) kcat_file: PathBuf,
    pub(super) glob: String,
    pub(super) size: u64,
    pub(super) lines: usize,
}

pub(super) fn run(lines: usize, line_bytes: usize, dir: &Path) -> anyhow::Result<Vec<Row>> {
    let path = input_file(dir, lines, line_bytes)?;
    let input = Input {
        size: std::fs::metadata(&path)?.len(),
        glob: path.display().to_string(),
        kcat_file: path.clone(),
        files: vec![path],
        lines,
    };
    measure("agent", &input)
}

/// The `scale` case's agent: `files` files of `lines_each` lines, tailed at once.
pub(super) fn run_files(files: usize, lines_each: usize, line_bytes: usize, dir: &Path) -> anyhow::Result<Vec<Row>> {
    let input = files_input(files, lines_each, line_bytes, dir)?;
    measure("scale agent", &input)
}

/// `files` files of `lines_each` lines each, generated once and kept between runs, and their
/// lines all in one file for kcat.
pub(super) fn files_input(files: usize, lines_each: usize, line_bytes: usize, dir: &Path) -> anyhow::Result<Input> {
    let sub = dir.join(format!("agent-files-{files}x{lines_each}x{line_bytes}"));
    std::fs::create_dir_all(&sub).with_context(|| format!("creating {}", sub.display()))?;
    let mut paths = Vec::new();
    let mut size = 0;
    for f in 0..files {
        let path = sub.join(format!("app-{f:04}.log"));
        if !path.exists() {
            // Each file its own lines (the agent tells files apart by inode and by their head).
            let mut w =
                BufWriter::new(std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?);
            let mut line = Vec::with_capacity(line_bytes + 64);
            for n in 0..lines_each {
                log_line(f * lines_each + n, line_bytes, &mut line);
                w.write_all(&line)?;
            }
            w.flush()?;
        }
        size += std::fs::metadata(&path)?.len();
        paths.push(path);
    }
    let kcat_file = sub.with_extension("all");
    if !kcat_file.exists() {
        let mut all = BufWriter::new(std::fs::File::create(&kcat_file)?);
        for path in &paths {
            std::io::copy(&mut std::fs::File::open(path)?, &mut all)?;
        }
        all.flush()?;
    }
    let glob = format!("{}/*.log", sub.display());
    Ok(Input { files: paths, kcat_file, glob, size, lines: files * lines_each })
}

fn measure(case: &'static str, input: &Input) -> anyhow::Result<Vec<Row>> {
    crate::tools::ensure_installed(&[crate::tools::TEST_PACKAGES[5]])?;
    crate::run(
        "cargo build --release -p zonal-agent",
        crate::cargo().args(["build", "--release", "-p", "zonal-agent"]),
    )?;
    let agent_bin = crate::target_dir().join("release/zonal-agent");
    let lines = input.lines;
    let mb = input.size as f64 / 1e6;
    eprintln!("==> input: {} ({mb:.0} MB, {} lines in {} files)", input.glob, lines, input.files.len());

    let world = World::start(&WorldSpec { etcd: false, s3: false, ..Default::default() })?;
    for t in ["bench-kcat", "bench-agent"] {
        world.kafka.create_topic(t, 12)?;
    }
    let bootstrap = world.kafka.bootstrap();
    let kcat = kcat(&bootstrap, input)?;
    if kcat.code != 0 {
        bail!("kcat exited with status {}", kcat.code);
    }
    let kcat_count = high_watermarks(&bootstrap, "bench-kcat")?;
    let (agent_secs, agent_rss) = agent(&world, &agent_bin, input)?;
    let agent_count = high_watermarks(&bootstrap, "bench-agent")?;
    if agent_count < lines as i64 || kcat_count < lines as i64 {
        bail!("records in Kafka: agent {agent_count}, kcat {kcat_count}; expected {lines} each");
    }

    let n = lines as f64;
    let kcat_secs = kcat.secs;
    eprintln!(
        "kcat:  {kcat_secs:.1} s, {:.1} MB/s, {:.0} lines/s, peak RSS {:.1} MB",
        mb / kcat_secs,
        n / kcat_secs,
        kcat.rss_mb
    );
    eprintln!(
        "agent: {agent_secs:.1} s, {:.1} MB/s, {:.0} lines/s, peak RSS {:.1} MB",
        mb / agent_secs,
        n / agent_secs,
        agent_rss
    );
    Ok(vec![
        Row { case, metric: "MB/s", value: mb / agent_secs, reference: mb / kcat_secs },
        Row { case, metric: "lines/s", value: n / agent_secs, reference: n / kcat_secs },
        Row { case, metric: "peak RSS MB", value: agent_rss, reference: kcat.rss_mb },
    ])
}

pub(super) fn kcat(bootstrap: &str, input: &Input) -> anyhow::Result<Timed> {
    let mut cmd = Command::new("kcat");
    cmd.args(["-P", "-b", bootstrap, "-t", "bench-kcat", "-z", "lz4"])
        .args(["-X", "enable.idempotence=true", "-X", "acks=all", "-X", "linger.ms=10"])
        .arg("-l")
        .arg(&input.kcat_file)
        .stdout(Stdio::null());
    timed(&mut cmd, bar(input.size, "kcat -P"))
}

/// The release agent tails the same file until its status shows the whole file acknowledged;
/// returns the seconds that took and its peak RSS in MB.
/// A release agent tailing `input` into `bench-agent`, started in `work` with `kafka_options`
/// (TOML lines of `[kafka.options]`) on top of the bench's configuration.
pub(super) struct BenchAgent {
    pub(super) process: Process,
    pub(super) pid: u32,
    /// `127.0.0.1:<port>` of its HTTP server.
    pub(super) http: String,
}

impl BenchAgent {
    pub(super) fn start(
        world: &World,
        bin: &Path,
        input: &Input,
        work: &Path,
        kafka_options: &str,
    ) -> anyhow::Result<Self> {
        let port = testkit::net::free_port()?;
        let config = work.join("agent.toml");
        std::fs::write(
            &config,
            format!(
                "checkpoint-dir = \"{}\"\n[http]\nlisten = \"127.0.0.1:{port}\"\n[kafka]\nbootstrap-servers = \"{}\"\n\
                 [kafka.options]\n{kafka_options}\n\
                 [zone]\nproviders = [\"ec2\"]\nec2-endpoint = \"{}\"\n[[streams]]\nname = \"bench\"\npaths = [\"{}\"]\ntopic = \"bench-agent\"\n",
                work.join("ckpt").display(),
                world.kafka.bootstrap(),
                world.metadata[0].endpoint(),
                input.glob
            ),
        )?;
        let process = Process::start(
            ProcessSpec::new(bin, &["run".as_ref(), "-c".as_ref(), config.as_os_str()], work.join("agent.log"))
                .env("RUST_LOG", "warn"),
        )?;
        let pid = process.pid().context("the agent is not running")?;
        Ok(BenchAgent { process, pid, http: format!("127.0.0.1:{port}") })
    }

    /// Every file's acknowledged bytes, from `/status`: one file, or the many of the scale case.
    pub(super) fn acked(&self) -> Option<u64> {
        let (_, body) = testkit::http::get(&self.http, "/status").ok()?;
        let s: serde_json::Value = serde_json::from_str(&body).ok()?;
        Some(s["streams"][0]["files"].as_array()?.iter().filter_map(|f| f["acked_offset"].as_u64()).sum())
    }
}

fn agent(world: &World, bin: &Path, input: &Input) -> anyhow::Result<(f64, f64)> {
    let work = tempfile::tempdir()?;
    let progress = bar(input.size, "zonal-agent");
    let start = Instant::now();
    let mut agent = BenchAgent::start(world, bin, input, work.path(), "")?;
    let agent_pid = agent.pid;
    let agent_peak = PeakRss::watch(agent_pid);
    // Poll every 100 ms: often enough for the figure, rarely enough not to load the agent.
    testkit::wait_until_every(
        "the agent to ship every file",
        Duration::from_secs(1800),
        Duration::from_millis(100),
        || {
            let done = agent.acked().unwrap_or(0);
            progress.set_position(done);
            (done >= input.size).then_some(())
        },
    )?;
    let secs = start.elapsed().as_secs_f64();
    progress.finish_and_clear();
    let rss = agent_peak.finish(agent_pid);
    agent.process.stop(Duration::from_secs(30))?;
    Ok((secs, rss))
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
    // The rest is xorshift letters: not compressible to nothing, as real messages are not.
    let mut x = (n as u64).wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    while out.len() < bytes {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.push(b'a' + (x % 26) as u8);
    }
    out.push(b'\n');
}

/// The input file of `lines` lines of about `bytes` bytes, generated once and kept between runs
/// (it is written under another name and renamed, so an interrupted generation is not reused).
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
