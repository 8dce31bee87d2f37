//! The options of `cargo xtask chaos`, and the short run `cargo xtask test` makes.

use std::path::PathBuf;

use super::schedule;

/// Options of a chaos run.
#[derive(Debug, Clone, clap::Args)]
pub struct ChaosArgs {
    /// Seed of the fault schedule: the same seed injects the same faults.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Faults to inject, one after another (every kind at least once from 17 on).
    #[arg(long, default_value_t = 30)]
    pub faults: usize,
    /// Seconds the writers run at least (they run until the last fault has recovered).
    #[arg(long, default_value_t = 30)]
    pub duration: u64,
    /// Lines per second each zone's application writes.
    #[arg(long, default_value_t = 100)]
    pub rate: u64,
    /// Bytes per line.
    #[arg(long, default_value_t = 120)]
    pub line_bytes: usize,
    /// Partitions of the topic.
    #[arg(long, default_value_t = 12)]
    pub partitions: i32,
    /// Only these fault kinds, comma-separated (default: all 15), to study one.
    #[arg(long, value_delimiter = ',')]
    pub kinds: Vec<String>,
    /// The objects' format: `parquet` (read back with pyarrow) or `json` (`lines` has no
    /// offsets to check).
    #[arg(long, value_enum, default_value = "parquet")]
    pub format: crate::fleet::ObjectFormat,
    /// Where summary.json goes (default target/zonal-chaos).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Build the programs as the test run built them (the whole workspace with its tests, so
    /// features resolve the same and nothing is compiled again); set by `cargo xtask test`.
    #[arg(skip)]
    pub after_tests: bool,
}

impl ChaosArgs {
    /// The run `cargo xtask test` makes: seed 1, every fault kind once.
    pub fn short_run() -> ChaosArgs {
        ChaosArgs {
            seed: 1,
            faults: schedule::Kind::ALL.len(),
            duration: 0,
            rate: 100,
            line_bytes: 120,
            partitions: 12,
            kinds: Vec::new(),
            format: crate::fleet::ObjectFormat::Parquet,
            out: None,
            after_tests: true,
        }
    }
}
