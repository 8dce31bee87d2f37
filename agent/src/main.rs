//! `zonal-agent`: tails log files and ships each line to Kafka, writing only to partitions whose
//! leader is in the host's own zone. Commands: `run`, `check`, `inspect`.

mod ack;
mod app;
mod batch;
mod checkpoint;
mod config;
mod http;
mod kafka;
mod limits;
mod lines;
mod metrics;
mod partition;
mod rotation;
mod stream;
mod tail;
mod track;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use az_core::zone::{DiscoveryConfig, Env};
use az_core::{Purpose, ZoneMatcher};
use clap::{Parser, Subcommand};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::config::AgentConfig;

#[derive(Parser)]
#[command(name = "zonal-agent", version, about = "Zone-aware log shipping to Kafka")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent until SIGTERM or SIGINT.
    Run {
        /// Configuration file (TOML); `ZONAL_AGENT__*` variables override it.
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Validate a configuration and print the effective result.
    Check {
        /// Configuration file (TOML).
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Show what the agent sees: its zone, brokers with racks, partitions and which are local.
    Inspect {
        /// Kafka bootstrap servers.
        #[arg(long)]
        bootstrap: String,
        /// Topic to inspect.
        #[arg(long)]
        topic: String,
        /// Zone override (skips discovery).
        #[arg(long)]
        zone: Option<String>,
        /// EC2 IMDS endpoint override.
        #[arg(long)]
        ec2_endpoint: Option<String>,
        /// librdkafka properties, `key=value`, repeatable (TLS, SASL).
        #[arg(short = 'X', value_name = "KEY=VALUE")]
        options: Vec<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> std::process::ExitCode {
    az_core::program::main("zonal-agent", real_main)
}

fn real_main() -> anyhow::Result<()> {
    let rt = || tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build();
    match Cli::parse().command {
        Command::Run { config } => {
            let config = AgentConfig::load(Some(&config))?;
            rt().context("starting the runtime")?.block_on(app::run(config))
        }
        Command::Check { config } => {
            let config = AgentConfig::load(Some(&config))?;
            // Build every stream's producer the way `run` does, so whatever librdkafka refuses
            // as a whole (a missing certificate file, a mechanism without its settings) fails
            // here too.
            let options = config.kafka.client_options()?;
            for stream in &config.streams {
                let cc = kafka::producer_config(&config, stream, &options, None);
                az_core::kafka_options::try_create::<rdkafka::producer::BaseProducer>(&cc, "producer", &options)
                    .with_context(|| format!("streams.{}", stream.name))?;
            }
            print!("{}", config.to_toml()?);
            Ok(())
        }
        Command::Inspect { bootstrap, topic, zone, ec2_endpoint, options, json } => {
            rt().context("starting the runtime")?.block_on(inspect(bootstrap, topic, zone, ec2_endpoint, options, json))
        }
    }
}

async fn inspect(
    bootstrap: String,
    topic: String,
    zone: Option<String>,
    ec2_endpoint: Option<String>,
    options: Vec<String>,
    json: bool,
) -> anyhow::Result<()> {
    let discovery = DiscoveryConfig { zone, ec2_endpoint, ..Default::default() };
    let info = az_core::discover(&discovery, &Env::Process).await;
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", &bootstrap).set("group.id", "zonal-agent-inspect");
    let mut raw = std::collections::BTreeMap::new();
    for o in &options {
        let Some((k, v)) = o.split_once('=') else { bail!("-X {:?}: expected KEY=VALUE", o.split('=').next()) };
        raw.insert(k.to_owned(), v.to_owned());
    }
    let options = az_core::kafka_options::ClientOptions::resolve(&raw)?;
    options.apply(&mut cc);
    let consumer: BaseConsumer = cc
        .create()
        .map_err(|e| anyhow::anyhow!(options.redactor().redact(&e.to_string())))
        .context("creating a Kafka client")?;
    let topics = vec![topic.clone()];
    let topo = tokio::task::spawn_blocking(move || {
        az_core::topology::fetch(consumer.client(), &topics, Duration::from_secs(10), 1)
    })
    .await
    .context("topology task")?
    .with_context(|| format!("reading the topology of {bootstrap}"))?;
    let matcher = ZoneMatcher::default();
    let sel = az_core::select(&topo, &topic, info.zone.as_ref(), &matcher, Purpose::Produce);
    if json {
        let doc = serde_json::json!({ "zone": info, "topology": topo, "selection": sel });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    match &info.zone {
        Some(z) => println!("zone: {z} (source: {})", info.source),
        None => {
            println!("zone: unknown");
            for f in &info.failures {
                println!("  {}: {}", f.provider, f.error);
            }
        }
    }
    println!("brokers:");
    for b in topo.brokers.values() {
        println!("  {:>4}  {}:{}  rack={}", b.id, b.host, b.port, b.rack.as_deref().unwrap_or("-"));
    }
    println!("topic {topic}:");
    match topo.partitions(&topic) {
        Some(parts) => {
            for p in parts {
                let leader = p.leader.map_or("-".to_owned(), |l| l.to_string());
                let rack = p.leader.and_then(|l| topo.rack_of(l)).unwrap_or("-");
                let local = if sel.is_local() && sel.partitions.contains(&p.id) { "  local" } else { "" };
                println!(
                    "  partition {:>4}  leader {leader:>4} ({rack})  replicas {:?}  isr {:?}{local}",
                    p.id, p.replicas, p.isr
                );
            }
        }
        None => println!("  missing: {:?}", topo.topics.get(&topic)),
    }
    match sel.fallback {
        None => println!("local partitions: {:?}", sel.partitions),
        Some(r) => println!("no zone-local selection ({r}); writing to all partitions: {:?}", sel.partitions),
    }
    Ok(())
}
