//! `zonal-agent`: tails log files and ships each line to Kafka, writing only to partitions whose
//! leader is in the host's own zone. Commands: `run`, `check`, `inspect`.

use anyhow::Context;
use clap::Subcommand;
use shell::ConfigFile;
use zonal_agent::app;

#[derive(Subcommand)]
enum Command {
    /// Run the agent until SIGTERM or SIGINT.
    Run(ConfigFile),
    /// Validate a configuration and print the effective result.
    Check(ConfigFile),
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
    /// Plan leaders so that each zone leads a share of partitions proportional to the bytes it
    /// produces (replicas reordered, no data moved); print it for Kafka's tools, or `--apply` it.
    Leaders(zonal_agent::leaders::LeadersArgs),
}

fn main() -> std::process::ExitCode {
    shell::main("zonal-agent", || {
        match shell::parse_command::<Command>("zonal-agent", "Zone-aware log shipping to Kafka") {
            Command::Run(file) => shell::run_command(&file, app::run),
            Command::Check(file) => shell::check_command(&file, app::check),
            Command::Inspect { bootstrap, topic, zone, ec2_endpoint, options, json } => shell::runtime()
                .context("starting the runtime")?
                .block_on(zonal_agent::inspect::inspect(bootstrap, topic, zone, ec2_endpoint, options, json)),
            Command::Leaders(args) => {
                shell::runtime().context("starting the runtime")?.block_on(zonal_agent::leaders::leaders(args))
            }
        }
    })
}
