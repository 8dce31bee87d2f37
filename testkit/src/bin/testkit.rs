//! `testkit up`: starts the multi-zone world and prints its endpoints as `KEY=value` lines for
//! manual use, then runs until Ctrl-C.

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Zonal's local multi-zone world: mock Kafka with racks, etcd, S3, metadata servers")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the world, print endpoints, run until Ctrl-C.
    Up {
        /// Number of zones.
        #[arg(long, default_value_t = 3)]
        zones: usize,
        /// Brokers per zone.
        #[arg(long, default_value_t = 2)]
        brokers_per_zone: usize,
        /// Topics to create, as NAME:PARTITIONS.
        #[arg(long = "topic", value_name = "NAME:PARTITIONS")]
        topics: Vec<String>,
        /// Skip etcd (when it is not installed).
        #[arg(long)]
        no_etcd: bool,
        /// How Kafka clients must connect: plaintext, tls, mtls (client certificate) or
        /// sasl-ssl (SCRAM/PLAIN over TLS as user `zonal`, password from --sasl-password).
        #[arg(long, default_value = "plaintext")]
        security: String,
        /// The SASL password with --security sasl-ssl.
        #[arg(long, default_value = "zonal-secret")]
        sasl_password: String,
    },
}

fn main() -> anyhow::Result<()> {
    let Command::Up { zones, brokers_per_zone, topics, no_etcd, security, sasl_password } = Cli::parse().command;
    let security = match security.as_str() {
        "plaintext" => testkit::Security::default(),
        "tls" => testkit::Security::tls(),
        "mtls" => testkit::Security::mutual_tls(),
        "sasl-ssl" => testkit::Security::sasl_ssl("zonal", &sasl_password),
        other => anyhow::bail!("--security {other:?}: expected plaintext, tls, mtls or sasl-ssl"),
    };
    let spec = testkit::WorldSpec { zones, brokers_per_zone, etcd: !no_etcd, s3: true, security, s3_parent: None };
    let world = testkit::World::start(&spec).context("starting the testkit world")?;
    for t in &topics {
        let (name, parts) = t.split_once(':').with_context(|| format!("--topic {t:?}: expected NAME:PARTITIONS"))?;
        let parts: i32 = parts.parse().with_context(|| format!("--topic {t:?}: partitions must be a number"))?;
        world.kafka.create_topic(name, parts).with_context(|| format!("creating topic {name}"))?;
        println!("TOPIC_{}={name}:{parts}", name.to_uppercase().replace(['-', '.'], "_"));
    }
    for (k, v) in world.endpoints() {
        println!("{k}={v}");
    }
    println!("READY=1");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("tokio runtime")?;
    rt.block_on(tokio::signal::ctrl_c()).context("waiting for Ctrl-C")?;
    drop(world);
    Ok(())
}
