//! `cargo xtask bench scale`: the agent and the transporter where a deployment grows wide rather
//! than fast. The agent tails 200 files at once (against `kcat -P` over the same 200 files), then
//! 5,000 with every broker down in the middle (`many`: nothing lost, memory and descriptors); the
//! transporter moves a topic of 1,000 partitions with three workers (against `kcat -C`). Each
//! reports throughput and peak RSS, as the `agent` and `transporter` cases do.
//!
//! ```text
//!  200 files x 5,000 lines ──zonal-agent (one stream, a glob)──> Kafka   vs  kcat -P (200 files)
//!  1,000 partitions x ~0.5 MB ──3 zonal-transporter workers──> S3        vs  kcat -C -e
//! ```

use std::path::Path;

use super::{Row, agent, many, transporter};

/// Files the agent tails at once.
const FILES: usize = 200;
/// Lines per file.
const LINES_PER_FILE: usize = 5_000;
/// Partitions of the transporter's topic.
const PARTITIONS: i32 = 1_000;
/// MiB the transporter moves (about half a MB per partition: the mock broker keeps at most 5 MB
/// of each).
const TRANSPORTER_MIB: u64 = 512;

pub(super) fn run(line_bytes: usize, dir: &Path) -> anyhow::Result<Vec<Row>> {
    let mut rows = agent::run_files(FILES, LINES_PER_FILE, line_bytes, dir)?;
    rows.extend(many::run(line_bytes, dir)?);
    rows.extend(self::transporter(dir)?);
    Ok(rows)
}

/// The transporter's part alone (`cargo xtask bench wide-transporter`).
pub(super) fn transporter(dir: &Path) -> anyhow::Result<Vec<Row>> {
    transporter::run_with("scale transporter", PARTITIONS, TRANSPORTER_MIB, crate::fleet::ObjectFormat::Lines, dir)
}
