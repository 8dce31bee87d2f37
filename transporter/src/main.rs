//! `zonal-transporter`: moves Kafka to S3 with each partition read by a worker in that
//! partition's zone, coordinated through etcd, exactly once. Commands: `run`, `check`, `status`,
//! `offsets`.

mod app;
mod buffer;
mod config;
mod coord;
mod http;
mod master;
mod metrics;
mod naming;
mod shares;
mod topics;
mod upload;
mod worker;

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::config::TransporterConfig;

#[derive(Parser)]
#[command(name = "zonal-transporter", version, about = "Zone-aware Kafka-to-S3 fleet")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a worker (and master candidate) until SIGTERM or SIGINT.
    Run {
        /// Configuration file (TOML); `ZONAL_TRANSPORTER__*` variables override it.
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Validate a configuration and print the effective result.
    Check {
        /// Configuration file.
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Read the fleet's state from etcd: master, workers by zone, assignment, owners.
    Status {
        /// Configuration file (its etcd section is used).
        #[arg(short, long)]
        config: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show the committed offsets (next offset to read per partition), or set them.
    Offsets {
        /// Configuration file (its etcd section is used).
        #[arg(short, long)]
        config: PathBuf,
        /// Set a partition's next offset, as `TOPIC/PARTITION=OFFSET` (repeatable).
        #[arg(long, value_name = "TOPIC/PARTITION=OFFSET")]
        set: Vec<String>,
        /// Also set partitions a worker owns: for one held on an invalid or out-of-range offset,
        /// which its owner reads again until it can use it.
        #[arg(long)]
        while_owned: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> std::process::ExitCode {
    az_core::program::main("zonal-transporter", real_main)
}

fn real_main() -> anyhow::Result<()> {
    let rt = || tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build();
    match Cli::parse().command {
        Command::Run { config } => {
            let cfg = TransporterConfig::load(Some(&config))?;
            rt().context("starting the runtime")?.block_on(app::run(cfg))
        }
        Command::Check { config } => {
            let cfg = TransporterConfig::load(Some(&config))?;
            // Build the consumer the way `run` does, so what librdkafka refuses as a whole fails
            // here too; and read the etcd TLS files `run` would read.
            let options = cfg.kafka.client_options()?;
            let cc = worker::consumer_config(&cfg, None, &options);
            az_core::kafka_options::try_create::<rdkafka::consumer::BaseConsumer>(&cc, "consumer", &options)?;
            if let Some(t) = &cfg.etcd.tls {
                for f in [Some(&t.ca_file), t.cert_file.as_ref(), t.key_file.as_ref()].into_iter().flatten() {
                    std::fs::metadata(f).with_context(|| format!("etcd.tls: {}", f.display()))?;
                }
            }
            print!("{}", cfg.to_toml()?);
            Ok(())
        }
        Command::Status { config, json } => {
            let cfg = TransporterConfig::load(Some(&config))?;
            rt().context("starting the runtime")?.block_on(status(cfg, json))
        }
        Command::Offsets { config, set, while_owned, json } => {
            let cfg = TransporterConfig::load(Some(&config))?;
            let changes = set.iter().map(|s| parse_set(s)).collect::<anyhow::Result<Vec<_>>>()?;
            rt().context("starting the runtime")?.block_on(offsets(cfg, changes, while_owned, json))
        }
    }
}

/// `TOPIC/PARTITION=OFFSET`.
fn parse_set(text: &str) -> anyhow::Result<(az_core::assign::TopicPartition, i64)> {
    let (tp, offset) =
        text.rsplit_once('=').with_context(|| format!("--set {text:?}: expected TOPIC/PARTITION=OFFSET"))?;
    let tp =
        az_core::assign::TopicPartition::parse(tp).with_context(|| format!("--set {text:?}: {tp:?} is not TOPIC/PARTITION"))?;
    let offset: i64 = offset
        .trim()
        .parse()
        .ok()
        .filter(|o| *o >= 0)
        .with_context(|| format!("--set {text:?}: {offset:?} is not an offset (a number >= 0)"))?;
    Ok((tp, offset))
}

async fn offsets(
    cfg: TransporterConfig,
    changes: Vec<(az_core::assign::TopicPartition, i64)>,
    while_owned: bool,
    json: bool,
) -> anyhow::Result<()> {
    let client = coord::connect(&cfg.etcd).await?;
    let keys = coord::Keys::new(&cfg.etcd.cluster);
    let mut refused = Vec::new();
    for (tp, next) in &changes {
        match coord::set_offset(&client, &keys, tp, *next, while_owned).await? {
            coord::SetOffset::Done => eprintln!("{}: next offset set to {next}", tp.key()),
            coord::SetOffset::Owned(owner) => refused.push(format!(
                "{} is owned by worker {owner:?}, whose next commit would overwrite it; stop that worker or pass --while-owned for a held partition",
                tp.key()
            )),
        }
    }
    let offsets = coord::offsets(&client, &keys).await?;
    let owners = coord::owners(&client, &keys).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "offsets": offsets, "owners": owners }))?);
    } else {
        for (tp, next) in &offsets {
            println!("{tp:<28} next offset {next:<12} owner {}", owners.get(tp).map_or("-", String::as_str));
        }
    }
    anyhow::ensure!(refused.is_empty(), "{}", refused.join("; "));
    Ok(())
}

async fn status(cfg: TransporterConfig, json: bool) -> anyhow::Result<()> {
    let client = coord::connect(&cfg.etcd).await?;
    let keys = coord::Keys::new(&cfg.etcd.cluster);
    let mut election = client.election_client();
    let master = match election.leader(keys.election()).await {
        Ok(r) => r.kv().map(|kv| String::from_utf8_lossy(kv.value()).into_owned()),
        Err(_) => None,
    };
    let (workers, bad) = coord::workers(&client, &keys).await?;
    let doc = shares::full(&client, &keys).await?;
    let owners = coord::owners(&client, &keys).await?;
    let mut by_zone: BTreeMap<String, Vec<&coord::WorkerInfo>> = BTreeMap::new();
    for w in &workers {
        by_zone.entry(master::zone_label(w).unwrap_or_else(|| "unknown".into())).or_default().push(w);
    }
    if json {
        let v = serde_json::json!({
            "master": master, "workers": workers, "invalid_workers": bad,
            "assignment": doc.as_ref().map(http::view), "owners": owners,
            "offsets": coord::offsets(&client, &keys).await?,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("cluster: {}", cfg.etcd.cluster);
    println!("master: {}", master.as_deref().unwrap_or("(none)"));
    for (zone, ws) in &by_zone {
        println!("zone {zone}:");
        for w in ws {
            let parts: Vec<&String> =
                doc.iter().flat_map(|d| d.owners.iter()).filter(|(_, o)| **o == w.id).map(|(tp, _)| tp).collect();
            println!("  {:<24} host {:<20} capacity {:<4} partitions {:?}", w.id, w.host, w.capacity, parts);
        }
    }
    for b in bad {
        println!("invalid worker registration skipped: {b}");
    }
    match &doc {
        Some(d) => println!(
            "assignment: generation {} by {}, {} partitions, {} cross-zone, {} waiting for a returning worker",
            d.generation,
            d.master,
            d.owners.len(),
            d.cross_zone,
            d.waiting
        ),
        None => println!("assignment: none yet"),
    }
    let offsets = coord::offsets(&client, &keys).await?;
    println!("owners (fenced) and committed offsets:");
    let all: std::collections::BTreeSet<&String> = owners.keys().chain(offsets.keys()).collect();
    for tp in all {
        let owner = owners.get(tp).map_or("-", String::as_str);
        let off = offsets.get(tp).map_or("-", String::as_str);
        println!("  {tp:<28} owner {owner:<24} next offset {off}");
    }
    Ok(())
}
