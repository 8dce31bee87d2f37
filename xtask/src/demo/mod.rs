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
//!
//! The modules follow that flow: `phase` starts one run's fleet and workload, `measure` turns
//! what the run left behind (objects in S3, the clients' metrics, the topic's layout) into a
//! [`Phase`], and `report` prints and writes the comparison of the two runs.

mod measure;
mod phase;
mod report;

use std::path::PathBuf;

use anyhow::{Context, bail};
use indicatif::MultiProgress;
use testkit::{World, WorldSpec};

use crate::fleet::BUCKET;

/// Options of the demo.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Seconds each phase generates logs for.
    #[arg(long, default_value_t = 20)]
    pub duration: u64,
    /// Lines per second per agent. At 5,000 the clients' protocol overhead (metadata, the group
    /// coordinator) is under 1% of their bytes; at 500 it is a few percent, and the report shows it
    /// in rows of its own either way.
    #[arg(long, default_value_t = 5000)]
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
    /// The objects' format: `lines`, `json` or `parquet` (read back with pyarrow).
    #[arg(long, value_enum, default_value = "lines")]
    pub format: crate::fleet::ObjectFormat,
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
    /// The part of `producer_cross_zone_bytes` on connections that carried no records.
    pub producer_protocol_cross_zone_bytes: u64,
    pub consumer_bytes: u64,
    pub consumer_cross_zone_bytes: u64,
    /// The part of `consumer_cross_zone_bytes` on connections that carried no records.
    pub consumer_protocol_cross_zone_bytes: u64,
    pub replication_cross_zone_bytes: u64,
    pub partition_skew: f64,
    pub cross_zone_partitions: u64,
}

impl Phase {
    /// Every byte that crossed zones: produced, consumed and replicated.
    fn cross_total(&self) -> u64 {
        self.producer_cross_zone_bytes + self.consumer_cross_zone_bytes + self.replication_cross_zone_bytes
    }
}

pub fn run(args: &DemoArgs) -> anyhow::Result<()> {
    if !(2..=6).contains(&args.zones) {
        bail!("--zones must be between 2 and 6, got {}", args.zones);
    }
    if args.partitions < 1 || args.rate == 0 || args.duration == 0 || args.line_bytes < 40 {
        bail!("--partitions, --rate and --duration must be positive and --line-bytes at least 40");
    }
    if args.format == crate::fleet::ObjectFormat::Parquet {
        crate::tools::ensure_pip(&[crate::tools::PYARROW])?;
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
        let run = phase::PhaseRun {
            args,
            world: &world,
            bins: &bins,
            dir: work.path().join(name),
            name,
            zone_aware,
            multi: &multi,
        };
        phases.push(run.run()?);
    }
    drop(multi);
    let [base, aware] = [&phases[0], &phases[1]];
    report::report(args, base, aware, &out)?;
    if base.lost + aware.lost + base.duplicated + aware.duplicated > 0 {
        bail!("the demo found lost or duplicated lines: see the report");
    }
    Ok(())
}
