//! `cargo xtask demo`: the whole pipeline on the testkit world, run twice on the same workload:
//! zone-unaware (agents write random partitions, the master ignores zones) and zone-aware (the
//! defaults). It reads S3 back to prove every line is there exactly once, measures cross-zone
//! bytes from the clients' own statistics, computes replication from RF and racks, and writes a
//! report with a chart.
//!
//! ```text
//!  World: zones x 2 brokers (racks), etcd, S3, one IMDS per zone
//!  per phase: 2 transporters per zone ──(etcd: master assigns)──┐
//!             1 agent per zone <── generator (rate lines/s, rotation by rename)
//!             agent ──produce──> Kafka ──consume──> transporters ──> S3 (prefix = phase)
//!  S3 read back ──> lost / duplicated;  /metrics ──> producer and consumer bytes by zone
//!  target/zonal-demo/summary.json, report.html (SVG chart rendered by plotters)
//! ```

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde_json::json;
use testkit::{World, WorldSpec};

use crate::fleet::{self, BUCKET, FleetSpec, Node};

/// Options of the demo.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Seconds each phase generates logs for.
    #[arg(long, default_value_t = 20)]
    pub duration: u64,
    /// Lines per second per agent.
    #[arg(long, default_value_t = 500)]
    pub rate: u64,
    /// Number of zones (one agent and two transporters each).
    #[arg(long, default_value_t = 3)]
    pub zones: usize,
    /// Partitions of each phase's topic.
    #[arg(long, default_value_t = 12)]
    pub partitions: i32,
    /// Bytes per generated line.
    #[arg(long, default_value_t = 200)]
    pub line_bytes: usize,
    /// Daily log volume (GB produced) for the monthly estimate.
    #[arg(long, default_value_t = 1000.0)]
    pub volume_gb_per_day: f64,
    /// Price per GB crossing zones (AWS: $0.01 out + $0.01 in).
    #[arg(long, default_value_t = 0.02)]
    pub price_per_gb: f64,
    /// Where summary.json and report.html go (default target/zonal-demo).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// What one phase measured.
#[derive(Debug, Default, Clone)]
pub struct Phase {
    pub lines_generated: u64,
    pub lines_in_s3: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub producer_bytes: u64,
    pub producer_cross_zone_bytes: u64,
    pub consumer_bytes: u64,
    pub consumer_cross_zone_bytes: u64,
    pub replication_cross_zone_bytes: u64,
    pub partition_skew: f64,
    pub cross_zone_partitions: u64,
}

impl Phase {
    fn cross_total(&self) -> u64 {
        self.producer_cross_zone_bytes + self.consumer_cross_zone_bytes + self.replication_cross_zone_bytes
    }
    fn json(&self) -> serde_json::Value {
        json!({
            "lines_generated": self.lines_generated,
            "lines_in_s3": self.lines_in_s3,
            "lost": self.lost,
            "duplicated": self.duplicated,
            "producer_bytes": self.producer_bytes,
            "producer_cross_zone_bytes": self.producer_cross_zone_bytes,
            "consumer_bytes": self.consumer_bytes,
            "consumer_cross_zone_bytes": self.consumer_cross_zone_bytes,
            "replication_cross_zone_bytes": self.replication_cross_zone_bytes,
            "cross_zone_bytes": self.cross_total(),
            "partition_skew": self.partition_skew,
            "cross_zone_partitions": self.cross_zone_partitions,
        })
    }
}

pub fn run(args: &DemoArgs) -> anyhow::Result<()> {
    if !(2..=6).contains(&args.zones) {
        bail!("--zones must be between 2 and 6, got {}", args.zones);
    }
    if args.partitions < 1 || args.rate == 0 || args.duration == 0 || args.line_bytes < 40 {
        bail!("--partitions, --rate and --duration must be positive and --line-bytes at least 40");
    }
    crate::run(
        "cargo build -p zonal-agent -p zonal-transporter",
        crate::cargo().args(["build", "-p", "zonal-agent", "-p", "zonal-transporter"]),
    )?;
    let bins = crate::target_dir().join("debug");
    let out = args.out.clone().unwrap_or_else(|| crate::target_dir().join("zonal-demo"));
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;

    eprintln!("==> starting the testkit world: {} zones x 2 brokers (RF 3), etcd, S3", args.zones);
    let world = World::start(&WorldSpec { zones: args.zones, brokers_per_zone: 2, ..WorldSpec::default() })?;
    let s3 = world.s3.as_ref().context("no S3 server")?;
    s3.create_bucket(BUCKET)?;
    let work = tempfile::Builder::new().prefix("zonal-demo-").tempdir()?;

    let multi = MultiProgress::new();
    let mut phases = Vec::new();
    for (name, zone_aware) in [("baseline", false), ("zone-aware", true)] {
        let p = phase(args, &world, &bins, &work.path().join(name), name, zone_aware, &multi)?;
        phases.push(p);
    }
    drop(multi);
    let [base, aware] = [&phases[0], &phases[1]];
    report(args, base, aware, &out)?;
    if base.lost + aware.lost + base.duplicated + aware.duplicated > 0 {
        bail!("the demo found lost or duplicated lines: see the report");
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn phase(
    args: &DemoArgs,
    world: &World,
    bins: &Path,
    dir: &Path,
    name: &'static str,
    zone_aware: bool,
    multi: &MultiProgress,
) -> anyhow::Result<Phase> {
    std::fs::create_dir_all(dir)?;
    let topic = format!("demo-{name}");
    world.kafka.create_topic(&topic, args.partitions)?;
    let s3 = world.s3.as_ref().context("no S3")?;
    let style = ProgressStyle::with_template("{prefix:>12} {spinner} [{bar:40}] {pos}/{len} {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");

    let spec = FleetSpec {
        world,
        bins,
        topic: &topic,
        name,
        zone_aware,
        lease_ttl_secs: 5,
        max_age_ms: 1000,
        batch_lines: 100,
        agent_extra: String::new(),
        format: "lines",
        kafka_options: &[],
    };
    // Transporters: two per zone.
    let mut transporters = Vec::new();
    for zone in 0..world.zones.len() {
        for k in 0..2 {
            transporters.push(spec.transporter(zone, k, dir)?);
        }
    }
    let setup = multi.add(ProgressBar::new_spinner());
    setup.set_prefix(name);
    setup.set_message("waiting for the transporter fleet to assign every partition");
    setup.enable_steady_tick(Duration::from_millis(120));
    let cross_zone_partitions = fleet::wait_assigned(&transporters, args.partitions as usize, Duration::from_secs(60))?;
    setup.finish_and_clear();

    // Agents: one per zone.
    let agents = (0..world.zones.len()).map(|z| spec.agent(z, dir)).collect::<anyhow::Result<Vec<_>>>()?;
    for a in &agents {
        testkit::wait_until("an agent to become ready", Duration::from_secs(30), || a.ready().then_some(()))
            .map_err(|e| anyhow::anyhow!("{e}\n{}", a.log_tail()))?;
    }

    // Generators: `rate` lines/s per agent for `duration` s, rotating by rename every 5 s.
    let total = args.rate * args.duration * agents.len() as u64;
    let gen_bar = multi.add(ProgressBar::new(total));
    gen_bar.set_style(style.clone());
    gen_bar.set_prefix(name);
    gen_bar.set_message("lines written");
    let written = Arc::new(AtomicU64::new(0));
    let mut generators = Vec::new();
    for (z, agent) in agents.iter().enumerate() {
        let (adir, written, a) = (agent.dir.clone(), written.clone(), args.clone());
        let tag = name;
        generators.push(std::thread::spawn(move || generate(&adir.join("logs"), z, tag, &a, &written)));
    }
    testkit::wait_until_every(
        "the generators",
        Duration::from_secs(args.duration * 2 + 60),
        Duration::from_millis(100),
        || {
            gen_bar.set_position(written.load(Ordering::Relaxed));
            generators.iter().all(|g| g.is_finished()).then_some(())
        },
    )?;
    for g in generators {
        g.join().map_err(|_| anyhow::anyhow!("a generator panicked"))??;
    }
    gen_bar.finish();

    // Wait until S3 holds every line.
    let ship_bar = multi.add(ProgressBar::new(total));
    ship_bar.set_style(style);
    ship_bar.set_prefix(name);
    ship_bar.set_message("lines in S3");
    // Reading the bucket back decompresses every object: check twice a second, not faster.
    let mut contents = Contents::default();
    let shipped =
        testkit::wait_until_every("every line in S3", Duration::from_secs(180), Duration::from_millis(500), || {
            match read_back(s3, name) {
                Ok(c) => contents = c,
                Err(e) => return Some(Err(e)),
            }
            ship_bar.set_position(contents.distinct);
            (contents.distinct >= total).then_some(Ok(()))
        });
    ship_bar.finish();
    match shipped {
        Ok(r) => r?,
        // Not everything arrived: report what did (the report counts the lost lines).
        Err(e) => eprintln!("warning: {e}"),
    }

    // The clients' byte counters come from librdkafka statistics, emitted periodically: wait
    // until every client has reported once more after the last line landed.
    let clients: Vec<(&Node, &str)> = agents
        .iter()
        .map(|a| (a, "zonal_agent_kafka_bytes"))
        .chain(transporters.iter().map(|t| (t, "zonal_transporter_kafka_bytes")))
        .collect();
    let total_bytes = |(c, m): &(&Node, &str)| {
        ["same-zone", "cross-zone", "unknown"].iter().map(|z| c.kafka_bytes(m, z)).sum::<u64>()
    };
    let before: Vec<u64> = clients.iter().map(total_bytes).collect();
    testkit::wait_until("statistics after the last delivery", Duration::from_secs(15), || {
        clients.iter().zip(&before).all(|(c, b)| total_bytes(c) > *b).then_some(())
    })?;
    let mut p = Phase { lines_generated: total, cross_zone_partitions, ..Default::default() };
    for a in &agents {
        let m = |zone: &str| a.kafka_bytes("zonal_agent_kafka_bytes", zone);
        p.producer_cross_zone_bytes += m("cross-zone");
        p.producer_bytes += m("cross-zone") + m("same-zone") + m("unknown");
    }
    for t in &transporters {
        let m = |zone: &str| t.kafka_bytes("zonal_transporter_kafka_bytes", zone);
        p.consumer_cross_zone_bytes += m("cross-zone");
        p.consumer_bytes += m("cross-zone") + m("same-zone") + m("unknown");
    }
    // Replication: each partition's bytes travel to every follower outside the leader's zone.
    let leaders = world.kafka.leaders(&topic)?;
    let replicas = world.kafka.replicas(&topic)?;
    let total_records: u64 = contents.per_partition.values().sum();
    let mut factor = 0.0;
    for (part, n) in &contents.per_partition {
        let leader = leaders.get(part).copied().unwrap_or(-1);
        let lz = world.kafka.rack_of(leader);
        let cross = replicas
            .get(part)
            .map_or(0, |r| r.iter().filter(|&&b| b != leader && world.kafka.rack_of(b) != lz).count());
        factor += *n as f64 / total_records.max(1) as f64 * cross as f64;
    }
    p.replication_cross_zone_bytes = (p.producer_bytes as f64 * factor) as u64;
    p.lines_in_s3 = contents.distinct;
    p.lost = total.saturating_sub(contents.distinct);
    p.duplicated = contents.total - contents.distinct;
    let counts: Vec<f64> = (0..args.partitions).map(|i| *contents.per_partition.get(&i).unwrap_or(&0) as f64).collect();
    let mean = counts.iter().sum::<f64>() / counts.len().max(1) as f64;
    p.partition_skew = if mean > 0.0 { counts.iter().cloned().fold(0.0, f64::max) / mean } else { 0.0 };

    let mut agents = agents;
    for a in &mut agents {
        a.stop();
    }
    for t in &mut transporters {
        t.stop();
    }
    Ok(p)
}

/// Writes lines at the configured rate, rotating `app.log` to `app.log.N` every 5 seconds.
fn generate(dir: &Path, zone: usize, tag: &str, args: &DemoArgs, written: &AtomicU64) -> anyhow::Result<()> {
    let path = dir.join("app.log");
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&path)?;
    let start = Instant::now();
    let total = args.rate * args.duration;
    let mut rotation = 0;
    let mut line = Vec::with_capacity(args.line_bytes + 1);
    for n in 0..total {
        // Pace: line n is due at n / rate seconds.
        let due = start + Duration::from_secs_f64(n as f64 / args.rate as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            file.flush()?;
            std::thread::sleep(wait);
        }
        if n > 0 && n % (args.rate * 5) == 0 {
            rotation += 1;
            std::fs::rename(&path, dir.join(format!("app.log.{rotation}")))?;
            file = std::fs::OpenOptions::new().create(true).append(true).open(&path)?;
        }
        line.clear();
        write!(line, "{tag} zone{zone} line {n:09} ")?;
        while line.len() < args.line_bytes {
            line.push(b'a' + ((n as usize * 7 + line.len()) % 26) as u8);
        }
        line.push(b'\n');
        file.write_all(&line)?;
        written.fetch_add(1, Ordering::Relaxed);
    }
    file.flush()?;
    Ok(())
}

#[derive(Default)]
struct Contents {
    total: u64,
    distinct: u64,
    per_partition: BTreeMap<i32, u64>,
}

/// Reads every object of a phase back from the S3 server's storage and counts lines.
fn read_back(s3: &testkit::S3Server, prefix: &str) -> anyhow::Result<Contents> {
    let mut seen: std::collections::HashSet<Vec<u8>> = std::collections::HashSet::new();
    let mut c = Contents::default();
    for key in s3.list_keys(BUCKET)?.iter().filter(|k| k.starts_with(&format!("{prefix}/")) && k.ends_with(".zst")) {
        // .../<topic>-<partition>-<first offset>.log.zst
        let stem = key.rsplit('/').next().and_then(|f| f.split('.').next()).unwrap_or_default();
        let partition: i32 = stem.rsplit('-').nth(1).and_then(|p| p.parse().ok()).unwrap_or(-1);
        let text = zstd::stream::decode_all(std::fs::File::open(s3.root().join(BUCKET).join(key))?)?;
        for l in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            c.total += 1;
            *c.per_partition.entry(partition).or_default() += 1;
            if seen.insert(l.to_vec()) {
                c.distinct += 1;
            }
        }
    }
    Ok(c)
}

fn mb(b: u64) -> f64 {
    b as f64 / 1e6
}

fn report(args: &DemoArgs, base: &Phase, aware: &Phase, out: &Path) -> anyhow::Result<()> {
    let saving = if base.cross_total() == 0 {
        0.0
    } else {
        100.0 * (1.0 - aware.cross_total() as f64 / base.cross_total() as f64)
    };
    // Cross-zone GB per GB produced, times the configured volume and price.
    let per_gb = |p: &Phase| if p.producer_bytes == 0 { 0.0 } else { p.cross_total() as f64 / p.producer_bytes as f64 };
    let monthly = |p: &Phase| per_gb(p) * args.volume_gb_per_day * 30.0 * args.price_per_gb;
    println!();
    println!(
        "Zonal demo: {} zones, RF 3, {} partitions, {} lines/s per agent for {} s per phase",
        args.zones, args.partitions, args.rate, args.duration
    );
    println!();
    println!("{:<28} {:>14} {:>14}", "", "zone-unaware", "zone-aware");
    let row = |label: &str, a: String, b: String| println!("{label:<28} {a:>14} {b:>14}");
    row("lines generated", base.lines_generated.to_string(), aware.lines_generated.to_string());
    row("lines in S3 (distinct)", base.lines_in_s3.to_string(), aware.lines_in_s3.to_string());
    row("lost", base.lost.to_string(), aware.lost.to_string());
    row("duplicated", base.duplicated.to_string(), aware.duplicated.to_string());
    row("partition skew (max/mean)", format!("{:.2}", base.partition_skew), format!("{:.2}", aware.partition_skew));
    row("cross-zone partitions", base.cross_zone_partitions.to_string(), aware.cross_zone_partitions.to_string());
    row("producer MB", format!("{:.2}", mb(base.producer_bytes)), format!("{:.2}", mb(aware.producer_bytes)));
    let share = |c: u64, t: u64| if t == 0 { 0.0 } else { 100.0 * c as f64 / t as f64 };
    row(
        "  cross-zone MB (share)",
        format!(
            "{:.2} ({:.0}%)",
            mb(base.producer_cross_zone_bytes),
            share(base.producer_cross_zone_bytes, base.producer_bytes)
        ),
        format!(
            "{:.2} ({:.0}%)",
            mb(aware.producer_cross_zone_bytes),
            share(aware.producer_cross_zone_bytes, aware.producer_bytes)
        ),
    );
    row("consumer MB", format!("{:.2}", mb(base.consumer_bytes)), format!("{:.2}", mb(aware.consumer_bytes)));
    row(
        "  cross-zone MB (share)",
        format!(
            "{:.2} ({:.0}%)",
            mb(base.consumer_cross_zone_bytes),
            share(base.consumer_cross_zone_bytes, base.consumer_bytes)
        ),
        format!(
            "{:.2} ({:.0}%)",
            mb(aware.consumer_cross_zone_bytes),
            share(aware.consumer_cross_zone_bytes, aware.consumer_bytes)
        ),
    );
    row(
        "replication cross-zone MB",
        format!("{:.2}", mb(base.replication_cross_zone_bytes)),
        format!("{:.2}", mb(aware.replication_cross_zone_bytes)),
    );
    row("total cross-zone MB", format!("{:.2}", mb(base.cross_total())), format!("{:.2}", mb(aware.cross_total())));
    row("cross-zone GB per GB produced", format!("{:.2}", per_gb(base)), format!("{:.2}", per_gb(aware)));
    row(
        &format!("$/month at {} GB/day", args.volume_gb_per_day),
        format!("${:.0}", monthly(base)),
        format!("${:.0}", monthly(aware)),
    );
    println!();
    println!(
        "Cross-zone bytes saved: {saving:.1}% (limit with RF 3 over 3 zones: 40%); ${:.0} per month at ${}/GB",
        monthly(base) - monthly(aware),
        args.price_per_gb
    );

    let summary = json!({
        "zones": args.zones,
        "partitions": args.partitions,
        "lines_generated": base.lines_generated + aware.lines_generated,
        "lines_in_s3": base.lines_in_s3 + aware.lines_in_s3,
        "lost": base.lost + aware.lost,
        "duplicated": base.duplicated + aware.duplicated,
        "baseline": base.json(),
        "zone_aware": aware.json(),
        "saving_pct": saving,
        "monthly_usd": { "volume_gb_per_day": args.volume_gb_per_day, "price_per_gb": args.price_per_gb, "baseline": monthly(base), "zone_aware": monthly(aware) },
    });
    let sp = out.join("summary.json");
    std::fs::write(&sp, serde_json::to_vec_pretty(&summary)?).with_context(|| format!("writing {}", sp.display()))?;
    let hp = out.join("report.html");
    std::fs::write(&hp, html(args, base, aware, saving, monthly(base), monthly(aware))?)
        .with_context(|| format!("writing {}", hp.display()))?;
    println!("Written: {} and {}", sp.display(), hp.display());
    Ok(())
}

/// A stacked bar chart (producer, consumer, replication cross-zone MB per run) as SVG.
fn chart(base: &Phase, aware: &Phase) -> anyhow::Result<String> {
    use plotters::prelude::*;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (720, 420)).into_drawing_area();
        root.fill(&WHITE)?;
        let max = mb(base.cross_total().max(aware.cross_total())).max(0.001) * 1.3;
        let mut c = ChartBuilder::on(&root)
            .caption("Cross-zone MB by traffic type", ("sans-serif", 20))
            .margin(20)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0f64..2.0f64, 0.0f64..max)?;
        c.configure_mesh().disable_x_mesh().x_labels(0).y_desc("MB crossing zones").draw()?;
        let colors = [RGBColor(231, 111, 81), RGBColor(42, 157, 143), RGBColor(38, 70, 83)];
        let names = ["producer", "consumer", "replication"];
        for (i, p) in [base, aware].iter().enumerate() {
            let x0 = i as f64 + 0.25;
            let x1 = i as f64 + 0.75;
            let mut y = 0.0;
            for (k, v) in [p.producer_cross_zone_bytes, p.consumer_cross_zone_bytes, p.replication_cross_zone_bytes]
                .iter()
                .enumerate()
            {
                let h = mb(*v);
                let series =
                    c.draw_series(std::iter::once(Rectangle::new([(x0, y), (x1, y + h)], colors[k].filled())))?;
                if i == 0 {
                    series
                        .label(names[k])
                        .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], colors[k].filled()));
                }
                y += h;
            }
            let label = if i == 0 { "zone-unaware" } else { "zone-aware" };
            c.draw_series(std::iter::once(Text::new(
                format!("{label}: {:.1} MB", y),
                (x0, y + max * 0.1),
                ("sans-serif", 15),
            )))?;
        }
        c.configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()?;
        root.present()?;
    }
    Ok(svg)
}

fn html(
    args: &DemoArgs,
    base: &Phase,
    aware: &Phase,
    saving: f64,
    mb_base: f64,
    mb_aware: f64,
) -> anyhow::Result<String> {
    let svg = chart(base, aware)?;
    let row = |label: &str, a: String, b: String| format!("<tr><td>{label}</td><td>{a}</td><td>{b}</td></tr>");
    let rows = [
        row("lines generated", base.lines_generated.to_string(), aware.lines_generated.to_string()),
        row("lines in S3", base.lines_in_s3.to_string(), aware.lines_in_s3.to_string()),
        row(
            "lost / duplicated",
            format!("{} / {}", base.lost, base.duplicated),
            format!("{} / {}", aware.lost, aware.duplicated),
        ),
        row(
            "producer cross-zone / total MB",
            format!("{:.2} / {:.2}", mb(base.producer_cross_zone_bytes), mb(base.producer_bytes)),
            format!("{:.2} / {:.2}", mb(aware.producer_cross_zone_bytes), mb(aware.producer_bytes)),
        ),
        row(
            "consumer cross-zone / total MB",
            format!("{:.2} / {:.2}", mb(base.consumer_cross_zone_bytes), mb(base.consumer_bytes)),
            format!("{:.2} / {:.2}", mb(aware.consumer_cross_zone_bytes), mb(aware.consumer_bytes)),
        ),
        row(
            "replication cross-zone MB",
            format!("{:.2}", mb(base.replication_cross_zone_bytes)),
            format!("{:.2}", mb(aware.replication_cross_zone_bytes)),
        ),
        row("partition skew (max/mean)", format!("{:.2}", base.partition_skew), format!("{:.2}", aware.partition_skew)),
        row(
            &format!("$/month at {} GB/day, ${}/GB", args.volume_gb_per_day, args.price_per_gb),
            format!("${mb_base:.0}"),
            format!("${mb_aware:.0}"),
        ),
    ]
    .join("");
    Ok(format!(
        "<!doctype html><html><head><meta charset=utf-8><title>Zonal demo report</title>\
         <style>body{{font:15px sans-serif;max-width:800px;margin:2em auto}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 10px;text-align:right}}td:first-child{{text-align:left}}</style></head><body>\
         <h1>Zonal: cross-zone traffic, zone-unaware vs zone-aware</h1>\
         <p>{zones} zones, RF 3, {parts} partitions, {rate} lines/s per agent for {dur} s per run. Bytes measured from the clients' librdkafka statistics; replication computed from RF and rack layout.</p>\
         <p><b>Saving: {saving:.1}%</b> of cross-zone bytes (limit 40% with RF 3 over 3 zones).</p>{svg}\
         <table><tr><th></th><th>zone-unaware</th><th>zone-aware</th></tr>{rows}</table></body></html>",
        zones = args.zones,
        parts = args.partitions,
        rate = args.rate,
        dur = args.duration,
    ))
}
