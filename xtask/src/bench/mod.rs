//! `cargo xtask bench [CASE]`: performance as ratios against a reference measured in the same
//! run on the same cluster and data, never as absolute timings. Writes
//! `target/zonal-bench/results.json` (case, metric, value, reference, ratio). The cases, in the
//! order they run, one module each:
//!
//! - `agent`: a release `zonal-agent` tails a generated access log (cached between runs) into the
//!   mock cluster, against `kcat -P` producing the same file with the agent's producer settings:
//!   MB/s, lines/s and peak RSS.
//! - `transporter`: about 1 GiB in 256 partitions moved to the testkit S3 by a release
//!   transporter fleet (one worker per zone), against `kcat -C -e` reading the same records into
//!   a file: MB/s from process start and once every partition is owned, peak RSS per worker.
//! - `assignment`: `az_core::assign` of 100,000 partitions over 1,000 workers in 3 zones, fresh
//!   and sticky, against only hashing each partition to a worker of its zone.
//! - `cross-zone`: the demo at a fixed rate; the zone-aware run's cross-zone bytes against the
//!   zone-unaware run's in the same invocation.
//! - `leaders`: zones producing at 1:2:4; each partition's load (max/mean) before and after
//!   `zonal-agent leaders` plans leaders from the agents' metrics (applied with the mock's leader
//!   controls).
//! - `scale`: wide rather than fast: the agent tailing 200 files at once against `kcat -P` over
//!   them, then over 5,000 files with every broker down for 10 s in the middle (`many-files`,
//!   also runnable alone: bytes lost, peak RSS against the formula in docs/operations.md, most descriptors
//!   open), and the transporter fleet over 1,000 partitions against `kcat -C`; throughput and
//!   peak RSS. The transporter case also gives CPU seconds per GB.
//!
//! ```text
//!  agent:        generate FILE (cached) ──> testkit world (mock Kafka, racks, IMDS)
//!                  ├─ reference: kcat -P -l FILE ─────────> topic bench-kcat   (time, peak RSS)
//!                  └─ zonal-agent (release) tailing FILE ─> topic bench-agent  (time, peak RSS)
//!  transporter:  produce N MiB into 256 partitions
//!                  ├─ reference: kcat -C -e ──> file                           (time, peak RSS)
//!                  └─ 3 x zonal-transporter (release) ──> S3                   (time, peak RSS)
//!  assignment:   assign(100k partitions, 1k workers), fresh and sticky   vs   hash into zone
//!  cross-zone:   cargo xtask demo (10 s, 300 lines/s): zone-aware   vs   zone-unaware bytes
//!  leaders:      agents at 1:2:4 over 28 partitions: load max/mean after the plan   vs   before
//!  scale:        agent over 200 files; over 5,000 files with an outage; 3 transporters over
//!                1,000 partitions   vs   kcat -P / -C
//!  ratio = Zonal's figure / the reference's figure
//! ```

mod agent;
mod assignment;
mod cross_zone;
mod leaders;
mod many;
mod probe;
mod scale;
mod transporter;

use anyhow::{Context, bail};
use serde_json::json;

/// Options of the benchmarks.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// One case: agent, transporter, assignment, cross-zone, leaders or scale (all of them when
    /// absent).
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
    /// The transporter benchmark's object format (`lines` zstd, `json` zstd, `parquet` zstd
    /// columns).
    #[arg(long, value_enum, default_value = "lines")]
    format: crate::fleet::ObjectFormat,
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
pub const CASES: [&str; 8] =
    ["agent", "transporter", "assignment", "cross-zone", "leaders", "scale", "many-files", "wide-transporter"];

pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let dir = crate::target_dir().join("zonal-bench");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let cases: Vec<&str> = match args.case.as_deref() {
        // `many-files` and `wide-transporter` are parts of `scale`; alone, they are for measuring
        // that part by itself.
        None => CASES.iter().copied().filter(|c| !matches!(*c, "many-files" | "wide-transporter")).collect(),
        Some(c) if CASES.contains(&c) => vec![c],
        Some(c) => bail!("unknown bench case {c:?}; cases: {}", CASES.join(", ")),
    };
    let mut rows = Vec::new();
    for case in cases {
        eprintln!("==> bench {case}");
        // The previous case's files (the agent's 1 GB of input) are written back to disk
        // first: the transporters' buffer writes were throttled behind that writeback, and the
        // case took 8 s instead of 5.
        if let Err(e) = std::process::Command::new("sync").status() {
            eprintln!("warning: sync failed ({e}); figures may include the previous case's disk writes");
        }
        rows.extend(match case {
            "agent" => agent::run(args.lines, args.line_bytes, &dir)?,
            "transporter" => transporter::run(args.transporter_mib, args.format, &dir)?,
            "assignment" => assignment::run(),
            "scale" => scale::run(args.line_bytes, &dir)?,
            "many-files" => many::run(args.line_bytes, &dir)?,
            "wide-transporter" => scale::transporter(&dir)?,
            "leaders" => leaders::run(&dir)?,
            _ => cross_zone::run(&dir)?,
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
