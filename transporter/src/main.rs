//! `zonal-transporter`: moves Kafka to S3 with each partition read by a worker in that
//! partition's zone, coordinated through etcd, exactly once. Commands: `run`, `check`, `status`,
//! `offsets`, `audit`.

use clap::Subcommand;
use shell::ConfigFile;
use zonal_transporter::app;
use zonal_transporter::commands::{audit, offsets, parse_set, status};

fn main() -> std::process::ExitCode {
    shell::main("zonal-transporter", || {
        match shell::parse_command::<Command>("zonal-transporter", "Zone-aware Kafka-to-S3 fleet") {
            Command::Run(file) => shell::run_command(&file, app::run),
            Command::Check(file) => shell::check_command(&file, app::check),
            Command::Status { file, json } => shell::run_command(&file, |cfg| status(cfg, json)),
            Command::Offsets { file, set, while_owned, json } => {
                let changes = set.iter().map(|s| parse_set(s)).collect::<anyhow::Result<Vec<_>>>()?;
                shell::run_command(&file, |cfg| offsets(cfg, changes, while_owned, json))
            }
            Command::Audit { file, topic, json } => shell::run_command(&file, |cfg| audit(cfg, topic, json)),
        }
    })
}

#[derive(Subcommand)]
enum Command {
    /// Run a worker (and master candidate) until SIGTERM or SIGINT.
    Run(ConfigFile),
    /// Validate a configuration and print the effective result.
    Check(ConfigFile),
    /// Read the fleet's state from etcd: master, workers by zone, assignment, owners.
    Status {
        /// Its etcd section is used.
        #[command(flatten)]
        file: ConfigFile,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show the committed offsets (next offset to read per partition), or set them.
    Offsets {
        /// Its etcd section is used.
        #[command(flatten)]
        file: ConfigFile,
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
    /// Check a topic's objects in S3: per partition, the chain of objects (from their
    /// metadata), holes, overlaps, offsets explained as not in Kafka, objects past the committed
    /// offset, beside Kafka's log start and end. Read-only; fails when a partition has a hole,
    /// an overlap or an object that does not prove its offsets.
    Audit {
        /// Its s3, etcd and kafka sections are used.
        #[command(flatten)]
        file: ConfigFile,
        /// The topic.
        #[arg(long)]
        topic: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}
