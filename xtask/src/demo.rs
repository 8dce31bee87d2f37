//! `cargo xtask demo`: producers in every zone of the testkit world write the same workload
//! twice, zone-unaware (all partitions) and zone-aware (partitions led in their own zone, chosen
//! by az-core), and the cross-zone bytes measured from librdkafka statistics are compared.
//!
//! ```text
//!  World (zones x brokers, racks) ──> per zone: fake IMDS ──discover──> Zone
//!                                      TopologyWatcher ──select──> partitions
//!  phase 1: all partitions  ─┐  ThreadedProducer<StatsContext> ──> BrokerTraffic ──> report
//!  phase 2: local partitions ┘                                   target/zonal-demo/summary.json
//! ```
//!
//! This is the demonstration of what exists today (az-core and the testkit); the full pipeline
//! demo with agents, transporters and S3 replaces it when those land.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use az_core::zone::{DiscoveryConfig, Env};
use az_core::{Provider, Purpose, StatsContext, TopologyWatcher, WatchOptions, Zone, ZoneMatcher, ZoneTraffic};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use rdkafka::ClientConfig;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use testkit::{World, WorldSpec};

const TOPIC: &str = "zonal-demo-logs";

/// Options of the demo.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Number of zones.
    #[arg(long, default_value_t = 3)]
    zones: usize,
    /// Lines each zone's producer writes per phase.
    #[arg(long, default_value_t = 20_000)]
    lines: usize,
    /// Bytes per line.
    #[arg(long, default_value_t = 256)]
    line_bytes: usize,
    /// Partitions of the demo topic.
    #[arg(long, default_value_t = 12)]
    partitions: i32,
}

/// One phase of the demo: its name, total traffic, and traffic per zone.
type Phase = (&'static str, ZoneTraffic, Vec<(String, ZoneTraffic)>);

struct ZoneClient {
    zone: Zone,
    source: String,
    local: Vec<i32>,
}

pub fn run(args: &DemoArgs) -> anyhow::Result<()> {
    if args.zones < 2 || args.zones > 26 {
        bail!("--zones must be between 2 and 26, got {}", args.zones);
    }
    if args.partitions < 1 {
        bail!("--partitions must be at least 1");
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(demo(args))
}

async fn demo(args: &DemoArgs) -> anyhow::Result<()> {
    eprintln!("==> starting the testkit world: {} zones x 2 brokers, RF 3", args.zones);
    let world = World::start(&WorldSpec { zones: args.zones, brokers_per_zone: 2, etcd: false, s3: false })
        .context("starting the testkit world")?;
    world.kafka.create_topic(TOPIC, args.partitions).context("creating the demo topic")?;
    let bootstrap = world.kafka.bootstrap();

    let meta: Arc<rdkafka::consumer::BaseConsumer> =
        Arc::new(ClientConfig::new().set("bootstrap.servers", &bootstrap).set("group.id", "zonal-demo").create()?);
    let watcher = TopologyWatcher::start(meta, WatchOptions { topics: vec![TOPIC.into()], ..Default::default() });
    let topo = watcher.wait_for(Duration::from_secs(20), |t| t.is_fetched()).await;
    if !topo.is_fetched() {
        bail!("could not read the cluster topology: {:?}", watcher.status());
    }
    let matcher = ZoneMatcher::default();

    let mut clients = Vec::new();
    for server in &world.metadata {
        let cfg = DiscoveryConfig {
            providers: vec![Provider::Ec2],
            ec2_endpoint: Some(server.endpoint()),
            ..Default::default()
        };
        let info = az_core::discover(&cfg, &Env::fixed::<&str, &str>([])).await;
        let zone = info
            .zone
            .with_context(|| format!("zone discovery from {} failed: {:?}", server.endpoint(), info.failures))?;
        let sel = az_core::select(&topo, TOPIC, Some(&zone), &matcher, Purpose::Produce);
        eprintln!(
            "    zone {zone} (from {}): local partitions {:?}{}",
            info.source,
            sel.partitions,
            sel.fallback.map(|r| format!(" — fallback: {r}")).unwrap_or_default()
        );
        clients.push(ZoneClient { zone, source: info.source.to_string(), local: sel.partitions });
    }
    let all: Vec<i32> = (0..args.partitions).collect();

    let multi = MultiProgress::new();
    let style = ProgressStyle::with_template("{prefix:>24} [{bar:40}] {pos}/{len} lines {per_sec}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    let mut phases: Vec<Phase> = Vec::new();
    for (name, zone_aware) in [("zone-unaware", false), ("zone-aware", true)] {
        let mut total = ZoneTraffic::default();
        let mut per_zone = Vec::new();
        for c in &clients {
            let bar = multi.add(ProgressBar::new(args.lines as u64));
            bar.set_style(style.clone());
            bar.set_prefix(format!("{name} {}", c.zone.display_label()));
            let parts = if zone_aware { &c.local } else { &all };
            let traffic = produce(&bootstrap, parts, args, &bar).await?;
            let report = traffic.report(&watcher.current(), Some(&c.zone), &matcher);
            bar.finish();
            total.add(&report);
            per_zone.push((c.zone.display_label().to_owned(), report));
        }
        phases.push((name, total, per_zone));
    }
    drop(multi);

    print_report(args, &clients, &phases);
    write_summary(args, &phases)?;
    Ok(())
}

async fn produce(
    bootstrap: &str,
    partitions: &[i32],
    args: &DemoArgs,
    bar: &ProgressBar,
) -> anyhow::Result<az_core::BrokerTraffic> {
    let context = StatsContext::default();
    let traffic = context.traffic.clone();
    let producer: ThreadedProducer<StatsContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("statistics.interval.ms", "100")
        .set("linger.ms", "5")
        .set("acks", "all")
        .create_with_context(context)
        .context("creating a demo producer")?;
    let mut line = vec![b'.'; args.line_bytes.max(1)];
    for i in 0..args.lines {
        let text = format!("{i:>12} ");
        let n = text.len().min(line.len());
        line[..n].copy_from_slice(&text.as_bytes()[..n]);
        // Microbatches of 100 lines stick to one partition, as the agent's do.
        let p = partitions[(i / 100) % partitions.len()];
        let mut record = BaseRecord::<(), [u8]>::to(TOPIC).payload(&line[..]).partition(p);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((e, r)) if e.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::QueueFull) => {
                    producer.poll(Duration::from_millis(5));
                    record = r;
                }
                Err((e, _)) => return Err(e).context("producing a demo line"),
            }
        }
        if i % 500 == 0 {
            bar.set_position(i as u64);
        }
    }
    producer.flush(Duration::from_secs(60)).context("flushing demo lines")?;
    bar.set_position(args.lines as u64);
    // Wait for a statistics document that covers everything produced.
    let want = (args.lines * args.line_bytes) as u64;
    testkit::wait_until_async("statistics covering the produced bytes", Duration::from_secs(20), || {
        let sent: u64 = traffic.per_broker().values().map(|b| b.tx).sum();
        async move { (sent >= want).then_some(()) }
    })
    .await?;
    Ok(traffic)
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

fn print_report(args: &DemoArgs, clients: &[ZoneClient], phases: &[Phase]) {
    println!();
    println!(
        "Cross-zone producer traffic, {} zones, {} lines x {} B per zone and phase",
        args.zones, args.lines, args.line_bytes
    );
    for c in clients {
        println!("  {} learned from {}; local partitions {:?}", c.zone, c.source, c.local);
    }
    println!();
    println!("{:<14} {:>12} {:>12} {:>8}  cross-zone share", "phase", "same MiB", "cross MiB", "share");
    let max = phases.iter().map(|(_, t, _)| t.cross_zone.total()).max().unwrap_or(1).max(1);
    for (name, t, _) in phases {
        let bar = "#".repeat(((t.cross_zone.total() as f64 / max as f64) * 40.0).round() as usize);
        println!(
            "{:<14} {:>12.2} {:>12.2} {:>7.1}%  |{bar:<40}|",
            name,
            mib(t.same_zone.total()),
            mib(t.cross_zone.total()),
            t.cross_zone_share() * 100.0
        );
    }
    if let [(_, base, _), (_, aware, _)] = phases {
        let saved = base.cross_zone.total().saturating_sub(aware.cross_zone.total());
        let pct =
            if base.cross_zone.total() == 0 { 0.0 } else { saved as f64 * 100.0 / base.cross_zone.total() as f64 };
        println!();
        println!("Producer cross-zone bytes saved: {:.2} MiB ({pct:.1}%)", mib(saved));
    }
}

fn write_summary(args: &DemoArgs, phases: &[Phase]) -> anyhow::Result<()> {
    let dir = crate::target_dir().join("zonal-demo");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let phase_json = |t: &ZoneTraffic, zones: &[(String, ZoneTraffic)]| {
        serde_json::json!({
            "producer_bytes": t.total(),
            "producer_cross_zone_bytes": t.cross_zone.total(),
            "producer_cross_zone_share": t.cross_zone_share(),
            "per_zone": zones.iter().map(|(z, t)| serde_json::json!({
                "zone": z, "same_zone_bytes": t.same_zone.total(), "cross_zone_bytes": t.cross_zone.total(),
            })).collect::<Vec<_>>(),
        })
    };
    let mut summary =
        serde_json::json!({ "zones": args.zones, "lines_per_zone": args.lines, "line_bytes": args.line_bytes });
    for (name, t, zones) in phases {
        let key = if *name == "zone-aware" { "zone_aware" } else { "baseline" };
        summary[key] = phase_json(t, zones);
    }
    let path = dir.join("summary.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&summary)?)
        .with_context(|| format!("writing {}", path.display()))?;
    println!("Summary written to {}", path.display());
    Ok(())
}
