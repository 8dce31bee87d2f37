//! The `scale` case's agent at a node's width: 5,000 files tailed at once, with every broker
//! down for a while in the middle. It reports what docs/guarantees.md promises of that moment: nothing
//! lost (every byte of every file acknowledged), peak RSS against the memory formula, the most
//! descriptors open, and the throughput outside the outage against `kcat -P` over the same
//! lines.
//!
//! ```text
//!  5,000 files ──zonal-agent──> Kafka: half acknowledged ──every broker down (>= 10 s, until
//!     records time out)──> up ──> all
//!     acknowledged; sampled all along: VmHWM, open descriptors    vs   kcat -P (one file)
//! ```

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::bail;
use testkit::{World, WorldSpec};

use super::Row;
use super::agent::{BenchAgent, Input, files_input, kcat};
use super::probe::{PeakRss, bar, high_watermarks};

/// Files tailed at once.
const FILES: usize = 5_000;
/// Lines per file.
const LINES_PER_FILE: usize = 100;
/// The least time every broker is down (longer until records have timed out).
const OUTAGE: Duration = Duration::from_secs(10);

pub(super) fn run(line_bytes: usize, dir: &Path) -> anyhow::Result<Vec<Row>> {
    let input = files_input(FILES, LINES_PER_FILE, line_bytes, dir)?;
    crate::run(
        "cargo build --release -p zonal-agent",
        crate::cargo().args(["build", "--release", "-p", "zonal-agent"]),
    )?;
    let bin = crate::target_dir().join("release/zonal-agent");
    let world = World::start(&WorldSpec { etcd: false, s3: false, ..Default::default() })?;
    for t in ["bench-kcat", "bench-agent"] {
        world.kafka.create_topic(t, 12)?;
    }
    let bootstrap = world.kafka.bootstrap();
    let reference = kcat(&bootstrap, &input)?;
    if reference.code != 0 {
        bail!("kcat exited with status {}", reference.code);
    }
    let run = agent(&world, &bin, &input)?;
    let records = high_watermarks(&bootstrap, "bench-agent")?;
    let mb = input.size as f64 / 1e6;
    let lost = input.size.saturating_sub(run.acked);
    // docs/operations.md: 24 MB + 1.5 x max-in-flight-bytes (8 MiB) + 2 x max-unsent-bytes (16 MiB).
    let formula = 24.0 + 1.5 * 8.0 * 1.048_576 + 2.0 * 16.0 * 1.048_576;
    let first_half = mb / 2.0 / run.first_half_secs;
    eprintln!(
        "agent over {FILES} files: the first half ({:.0} MB) in {:.1} s ({first_half:.1} MB/s; kcat {:.1} MB/s over \
         all of it); every broker down {:.0} s; the rest acknowledged {:.1} s after they came back; lost {lost} bytes; \
         {} records for {} lines; peak RSS {:.1} MB (formula {formula:.1}); at most {} descriptors",
        mb / 2.0,
        run.first_half_secs,
        mb / reference.secs,
        run.outage_secs,
        run.after_secs,
        records,
        input.lines,
        run.rss_mb,
        run.fds,
    );
    if lost > 0 || records < input.lines as i64 {
        bail!(
            "the agent lost lines across the outage: {lost} bytes unacknowledged, {records} records for {} lines",
            input.lines
        );
    }
    let case = "scale agent 5k files";
    Ok(vec![
        Row { case, metric: "MB/s before the outage", value: first_half, reference: mb / reference.secs },
        Row { case, metric: "s to catch up after", value: run.after_secs, reference: run.outage_secs },
        Row { case, metric: "peak RSS MB/formula", value: run.rss_mb, reference: formula },
        Row { case, metric: "peak descriptors", value: run.fds as f64, reference: FILES as f64 },
        Row { case, metric: "bytes lost", value: lost as f64, reference: 0.0 },
    ])
}

/// What one run of the agent came to.
struct Run {
    /// Seconds from the start to half the bytes acknowledged (5,000 files opened included).
    first_half_secs: f64,
    /// Seconds every broker was down.
    outage_secs: f64,
    /// Seconds from the brokers' return to every byte acknowledged.
    after_secs: f64,
    rss_mb: f64,
    /// The most descriptors it had open at once.
    fds: u64,
    /// Bytes acknowledged over all files.
    acked: u64,
}

fn agent(world: &World, bin: &Path, input: &Input) -> anyhow::Result<Run> {
    let work = tempfile::tempdir()?;
    let progress = bar(input.size, "zonal-agent (5,000 files, an outage)");
    let start = Instant::now();
    // Records time out within the outage, so the agent meets it as it would a long one: records
    // waiting for a retry while the files keep being read up to the bounds.
    let mut agent = BenchAgent::start(world, bin, input, work.path(), "\"message.timeout.ms\" = \"5000\"")?;
    let peak = PeakRss::watch(agent.pid);
    let reach = |what: &str, bytes: u64| {
        testkit::wait_until_every(what, Duration::from_secs(1800), Duration::from_millis(200), || {
            let done = agent.acked().unwrap_or(0);
            progress.set_position(done);
            (done >= bytes).then_some(())
        })
    };
    reach("half of the lines acknowledged", input.size / 2)?;
    let first_half_secs = start.elapsed().as_secs_f64();
    let brokers: Vec<i32> = world.kafka.broker_racks().keys().copied().collect();
    for &b in &brokers {
        world.kafka.broker_down(b)?;
    }
    progress.set_message("zonal-agent: every broker down");
    let down = Instant::now();
    // The outage lasts until records have timed out and wait for a retry (and at least
    // OUTAGE): the moment whose memory and descriptors the case is about.
    testkit::wait_until_every(
        "records to time out during the outage",
        Duration::from_secs(120),
        Duration::from_millis(200),
        || {
            let (_, body) = testkit::http::get(&agent.http, "/metrics").ok()?;
            let failed = testkit::http::metric(&body, "zonal_agent_errors_total", &[("kind", "delivery")]);
            (failed > 0.0 && down.elapsed() >= OUTAGE).then_some(())
        },
    )?;
    let outage_secs = down.elapsed().as_secs_f64();
    for &b in &brokers {
        world.kafka.broker_up(b)?;
    }
    progress.set_message("zonal-agent: brokers back");
    let back = Instant::now();
    reach("every line acknowledged after the outage", input.size)?;
    let after_secs = back.elapsed().as_secs_f64();
    progress.finish_and_clear();
    let acked = agent.acked().unwrap_or(0);
    let fds = peak.most_descriptors();
    let rss_mb = peak.finish(agent.pid);
    agent.process.stop(Duration::from_secs(30))?;
    Ok(Run { first_half_secs, outage_secs, after_secs, rss_mb, fds, acked })
}
