//! `cargo xtask chaos`: the whole pipeline of the demo under a seeded schedule of faults, then
//! drained and checked: every line written is in S3, every Kafka offset is in S3 exactly once.
//!
//! ```text
//!  World (3 zones x 2 brokers, etcd, S3, IMDS) ── 2 workers per zone ── 1 agent per zone
//!  writers (rate lines/s per zone) ──> logs/app.log ──logrotate (create | copytruncate)──┐
//!  schedule::plan(seed, n) ──> for each fault: pause, inject::inject (hold, heal),      │
//!                              wait until healthy again (recovery time), restart exits  │
//!  stop writers ──> wait until S3 holds every line ──> stop programs ──> check::tally ──┘
//!  report: a table per fault kind, target/zonal-chaos/summary.json, exit 1 on loss or duplicates
//! ```

mod args;
mod check;
mod inject;
mod report;
pub mod schedule;
pub(crate) mod writers;
mod zones;

use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};

use crate::fleet::{self, BUCKET, FleetSpec, Node};
pub use args::ChaosArgs;
use inject::Pipeline;
use schedule::Kind;
pub use zones::ZoneCost;

/// What one injected fault came to.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Event {
    /// The fault's kind.
    pub kind: Kind,
    /// What it hit.
    pub note: String,
    /// Seconds from healing to a healthy pipeline; `None` when it did not recover in time.
    pub recovery_seconds: Option<f64>,
    /// For a recovery over 5 s, the last thing waited for.
    pub waited_for: Option<String>,
    /// For a zone's fault, what it cost in traffic.
    pub cost: Option<ZoneCost>,
}

/// Per partition, the offset committed after its newest object in S3.
type Newest = std::collections::BTreeMap<i32, i64>;

/// Per partition, the highest committed offset any worker reports in `/status` (a worker
/// commits only after the object is in S3). Workers that do not answer are skipped.
fn committed(p: &Pipeline) -> Newest {
    let mut out = Newest::new();
    for w in &p.workers {
        let Some(v) = w.get("/status").ok().and_then(|b| serde_json::from_str::<serde_json::Value>(&b).ok()) else {
            continue;
        };
        for (key, owned) in v["owned"].as_object().into_iter().flatten() {
            let partition = key.rsplit('/').next().and_then(|n| n.parse::<i32>().ok());
            if let (Some(part), Some(c)) = (partition, owned["committed"].as_i64()) {
                let e = out.entry(part).or_insert(c);
                *e = (*e).max(c);
            }
        }
    }
    out
}

/// How long a pipeline may take to be healthy again after a fault is healed.
const RECOVERY_DEADLINE: Duration = Duration::from_secs(180);

/// The transporters' grace period for a departed worker.
const GRACE: Duration = Duration::from_secs(10);

/// How often each zone's log is rotated in steady operation.
const ROTATE_EVERY: Duration = Duration::from_secs(15);

/// Runs a chaos run; an error when anything was lost or duplicated in S3.
pub fn run(args: &ChaosArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.rate > 0 && args.partitions > 0 && args.line_bytes >= 40,
        "--rate, --partitions must be positive and --line-bytes at least 40"
    );
    anyhow::ensure!(
        args.format != crate::fleet::ObjectFormat::Lines,
        "--format lines: its objects carry no offsets, and the check needs them (json or parquet)"
    );
    if args.format == crate::fleet::ObjectFormat::Parquet {
        crate::tools::ensure_pip(&[crate::tools::PYARROW])?;
    }
    // Alone, only the two programs are built. After the test run, the build asks for what the
    // tests had (the workspace, with tests): features then resolve as they did, and the
    // programs the tests built are used as they are instead of being compiled again.
    let build: &[&str] = if args.after_tests {
        &["build", "--workspace", "--bins", "--tests", "--locked"]
    } else {
        &["build", "-p", "zonal-agent", "-p", "zonal-transporter"]
    };
    crate::run(&format!("cargo {}", build.join(" ")), crate::cargo().args(build))?;
    let bins = crate::target_dir().join("debug");
    let out = args.out.clone().unwrap_or_else(|| crate::target_dir().join("zonal-chaos"));
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let work = tempfile::Builder::new().prefix("zonal-chaos-").tempdir()?;
    let faults = schedule::plan(args.seed, args.faults, &kinds(args)?);
    let reproduce = format!(
        "cargo xtask chaos --seed {} --faults {} --format {}{}",
        args.seed,
        args.faults,
        args.format.as_str(),
        if args.kinds.is_empty() { String::new() } else { format!(" --kinds {}", args.kinds.join(",")) }
    );
    eprintln!("==> chaos, seed {} ({} faults): reproduce with `{reproduce}`", args.seed, faults.len());

    let mut p = start(args, &bins, work.path())?;
    let s3 = p.world.s3.as_ref().context("no S3")?;
    let mut reader = check::Reader::new(s3, BUCKET, "chaos")?;
    let started = Instant::now();
    let bar = ProgressBar::new(faults.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>8} [{bar:40}] {pos}/{len} faults {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix("chaos");
    let mut events = Vec::new();
    let mut exits = Vec::new();
    let mut last_rotation = vec![Instant::now(); p.writers.len()];
    for f in &faults {
        // The pause between faults: part of the schedule.
        std::thread::sleep(Duration::from_millis(f.pause_ms));
        rotate_due(&p, &mut last_rotation)?;
        bar.set_message(format!("{} ...", f.kind.name()));
        events.push(one_fault(&mut p, f, started, &bar, &mut exits)?);
        bar.inc(1);
    }
    bar.finish_and_clear();
    while started.elapsed() < Duration::from_secs(args.duration) {
        rotate_due(&p, &mut last_rotation)?;
        // Steady writing for the rest of --duration.
        std::thread::sleep(Duration::from_millis(500));
    }
    let written: Vec<u64> = p.writers.iter_mut().map(|w| w.finish()).collect::<anyhow::Result<_>>()?;
    let cross_zone_share = cross_zone_share(&p.agents);
    drain(&mut p, &mut reader, &written, &mut exits)?;
    for n in p.agents.iter_mut().chain(p.workers.iter_mut()) {
        n.stop();
    }
    let records = reader.records()?;
    let watermarks = watermarks(&p)?;
    let outcome = check::tally(&records, &written, &watermarks);
    let summary = report::Summary { seed: args.seed, reproduce, outcome, events, exits, cross_zone_share };
    report::print(&summary, &out)?;
    summary.verdict()
}

/// Starts the world, the transporters (two per zone), the agents and the writers.
fn start(args: &ChaosArgs, bins: &std::path::Path, dir: &std::path::Path) -> anyhow::Result<Pipeline> {
    eprintln!("==> starting the testkit world: 3 zones x 2 brokers (RF 3), etcd, S3");
    zones::clear_leftover_cuts();
    let world = testkit::World::start(&testkit::WorldSpec::default())?;
    world.s3.as_ref().context("no S3")?.create_bucket(BUCKET)?;
    let topic = "chaos";
    world.kafka.create_topic(topic, args.partitions)?;
    let lease_ttl = Duration::from_secs(4);
    let spec = FleetSpec {
        world: &world,
        bins,
        topic,
        name: "chaos",
        zone_aware: true,
        lease_ttl_secs: lease_ttl.as_secs(),
        max_age_ms: 1000,
        batch_lines: 100,
        agent_extra: String::new(),
        format: args.format,
        // A downed mock broker keeps the connections made to it open without answering (as a
        // crashed host does): requests on them wait for librdkafka's socket timeout, 60 s by
        // default, and two in a row made a broker-down take two minutes to recover from.
        kafka_options: &[("socket.timeout.ms", "15000")],
        // Each zone's programs under their own group id, for `zone-isolation`'s packet filter.
        zone_groups: true,
        // A departed worker's partitions wait 10 s (30 by default), so that a zone's faults
        // show the failover to other zones within a fault's hold.
        grace_secs: Some(GRACE.as_secs()),
    };
    let mut workers = Vec::new();
    for zone in 0..world.zones.len() {
        for k in 0..2 {
            workers.push(spec.transporter(zone, k, dir)?);
        }
    }
    eprintln!("==> waiting for the fleet to assign {} partitions", args.partitions);
    fleet::wait_assigned(&workers, args.partitions as usize, Duration::from_secs(90))?;
    let agents = (0..world.zones.len()).map(|z| spec.agent(z, dir)).collect::<anyhow::Result<Vec<_>>>()?;
    for a in &agents {
        testkit::wait_until("an agent to become ready", Duration::from_secs(60), || a.ready().then_some(()))
            .map_err(|e| anyhow::anyhow!("{e}\n{}", a.log_tail()))?;
    }
    let writers = agents
        .iter()
        .map(|a| writers::Writer::start(a.zone, &a.dir.join("logs"), args.rate, args.line_bytes, a.zone == 1))
        .collect();
    Ok(Pipeline { world, topic: topic.to_owned(), partitions: args.partitions, agents, workers, writers, lease_ttl })
}

/// Rotates each zone's log when its turn has come.
fn rotate_due(p: &Pipeline, last: &mut [Instant]) -> anyhow::Result<()> {
    for (w, at) in p.writers.iter().zip(last.iter_mut()) {
        if at.elapsed() >= ROTATE_EVERY {
            w.rotate()?;
            *at = Instant::now();
        }
    }
    Ok(())
}

/// Restarts programs that exited by themselves (as a supervisor would) and remembers them.
fn supervise(p: &mut Pipeline, exits: &mut Vec<String>) {
    for n in p.agents.iter_mut().chain(p.workers.iter_mut()) {
        if !n.process.running() {
            exits.push(format!("{} exited by itself:\n{}", n.name, n.process.log_tail(6)));
            let _ = n.process.restart();
        }
    }
}

/// Why the pipeline is not healthy yet: a program not running or not ready, an assignment
/// that misses a partition or a worker, or a partition whose committed offset has not moved
/// past `newest` (every partition receives lines all the time, so each must reach S3 again).
/// `None` when healthy.
fn unhealthy(p: &mut Pipeline, newest: &Newest, exits: &mut Vec<String>) -> Option<String> {
    supervise(p, exits);
    if let Some(n) = p.agents.iter().chain(p.workers.iter()).find(|n| !n.ready()) {
        return Some(format!("{} is not ready", n.name));
    }
    let assigned = p.workers.iter().any(|w| {
        fleet::assignment(w).is_some_and(|(owned, named, _)| owned == p.partitions as usize && named == p.workers.len())
    });
    if !assigned {
        return Some("no worker shows every partition assigned to every worker".to_owned());
    }
    let now = committed(p);
    let stuck: Vec<i32> = (0..p.partitions)
        .filter(|part| now.get(part).copied().unwrap_or(-1) <= newest.get(part).copied().unwrap_or(-1))
        .collect();
    (!stuck.is_empty()).then(|| format!("no new commit (object in S3) for partitions {stuck:?}"))
}

/// Waits until the pipeline is healthy, calling `watch` at every look; returns what it waited
/// for last (empty when healthy at once), or the reason it is not, past the deadline.
fn wait_healthy(
    p: &mut Pipeline,
    newest: &Newest,
    exits: &mut Vec<String>,
    watch: &mut impl FnMut(&Pipeline),
) -> Result<String, String> {
    let mut why = String::new();
    testkit::wait_until_every("a healthy pipeline", RECOVERY_DEADLINE, Duration::from_millis(250), || {
        watch(p);
        match unhealthy(p, newest, exits) {
            None => Some(()),
            Some(w) => {
                why = w;
                None
            }
        }
    })
    .map(|()| why.clone())
    .map_err(|_| why.clone())
}

/// Waits until S3 holds every line written (or the deadline passes: the check then counts what
/// is missing).
fn drain(p: &mut Pipeline, reader: &mut check::Reader, written: &[u64], exits: &mut Vec<String>) -> anyhow::Result<()> {
    let total: u64 = written.iter().sum();
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>8} [{bar:40}] {pos}/{len} lines in S3")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix("drain");
    let done = testkit::wait_until_every("every line in S3", Duration::from_secs(300), Duration::from_secs(2), || {
        supervise(p, exits);
        let records = match reader.records() {
            Ok(r) => r,
            Err(e) => return Some(Err(e)),
        };
        let o = check::tally(&records, written, &Default::default());
        bar.set_position(o.lines_in_s3);
        (o.lost == 0).then_some(Ok(()))
    });
    bar.finish_and_clear();
    match done {
        Ok(r) => r,
        Err(e) => {
            eprintln!("warning: {e}");
            Ok(())
        }
    }
}

/// The share of the agents' Kafka bytes that crossed zones.
fn cross_zone_share(agents: &[Node]) -> f64 {
    let (mut cross, mut all) = (0u64, 0u64);
    for a in agents {
        let m = |zone: &str| a.kafka_bytes("zonal_agent_kafka_bytes", zone);
        cross += m("cross-zone");
        all += m("cross-zone") + m("same-zone") + m("unknown");
    }
    if all == 0 { 0.0 } else { cross as f64 / all as f64 }
}

/// Each partition's (low, high) watermarks.
fn watermarks(p: &Pipeline) -> anyhow::Result<std::collections::BTreeMap<i32, (i64, i64)>> {
    use rdkafka::consumer::{BaseConsumer, Consumer as _};
    let consumer: BaseConsumer = p.world.kafka.client_config().create().context("a Kafka client for watermarks")?;
    (0..p.partitions)
        .map(|part| {
            let marks = testkit::wait_until("the partition's watermarks", Duration::from_secs(120), || {
                consumer.fetch_watermarks(&p.topic, part, Duration::from_secs(10)).ok()
            })
            .with_context(|| format!("watermarks of {}/{part}", p.topic))?;
            Ok((part, marks))
        })
        .collect()
}

/// The parsed `--kinds`, or every kind.
fn kinds(args: &ChaosArgs) -> anyhow::Result<Vec<Kind>> {
    if args.kinds.is_empty() {
        return Ok(Kind::ALL.to_vec());
    }
    let names = Kind::ALL.map(Kind::name).join(", ");
    args.kinds
        .iter()
        .map(|k| Kind::parse(k).with_context(|| format!("--kinds: no fault kind {k:?} (kinds: {names})")))
        .collect()
}

/// Injects one fault, heals it, waits for the pipeline to be healthy again and prints the line.
fn one_fault(
    p: &mut Pipeline,
    f: &schedule::Fault,
    started: Instant,
    bar: &ProgressBar,
    exits: &mut Vec<String>,
) -> anyhow::Result<Event> {
    let zonal = matches!(f.kind, Kind::ZoneOutage | Kind::ZoneIsolation);
    let mut meter = zones::Meter::default();
    if zonal {
        meter.sample(p);
    }
    let injected = p.inject(f).with_context(|| format!("injecting {}", f.kind.name()))?;
    let during = if zonal { Some(meter.sample(p)) } else { None };
    let newest = committed(p);
    let back = std::cell::Cell::new(None);
    let mut watch = |p: &Pipeline| {
        if zonal && back.get().is_none() && meter.window(p).is_some_and(|share| share < zones::ZONE_AWARE_SHARE) {
            back.set(Some(injected.healed_at.elapsed().as_secs_f64()));
        }
    };
    let recovered = wait_healthy(p, &newest, exits, &mut watch);
    let recovery_seconds = recovered.is_ok().then(|| injected.healed_at.elapsed().as_secs_f64());
    // The cross-zone share may take longer to settle than the pipeline to be healthy: the
    // zone's partitions come back to its own workers once they have registered again.
    if zonal && recovered.is_ok() {
        zones::settle(p, exits, &mut watch, &back);
    }
    let cost = during.map(|bytes| ZoneCost::new(bytes, back.get()));
    // For slow recoveries, what was waited for last.
    let waited_for = match &recovered {
        Ok(why) if recovery_seconds.is_some_and(|s| s > 5.0) => Some(why.clone()),
        _ => None,
    };
    let line = format!(
        "{:>4}s {:>18} {:<44} {}{}{}",
        started.elapsed().as_secs(),
        f.kind.name(),
        injected.note,
        recovery_seconds.map_or("NOT RECOVERED".to_owned(), |s| format!("recovered in {s:.1} s")),
        waited_for.as_deref().map(|w| format!(" (last waited for: {w})")).unwrap_or_default(),
        cost.as_ref().map(ZoneCost::line).unwrap_or_default()
    );
    // Without a terminal the bar is hidden and so is its println.
    if bar.is_hidden() {
        eprintln!("{line}");
    } else {
        bar.println(line);
    }
    if let Err(why) = recovered {
        let tails: Vec<String> = p.agents.iter().chain(p.workers.iter()).map(Node::log_tail).collect();
        eprintln!("not recovered: {why}; the programs' last lines:\n{}", tails.join("\n"));
    }
    Ok(Event { kind: f.kind, note: injected.note, recovery_seconds, waited_for, cost })
}
