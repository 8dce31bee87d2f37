//! The report of a chaos run: a table per fault kind (injected, recovered, time to recover),
//! the outcome's totals, and `summary.json` for tools.
//!
//! ```text
//!  Summary { seed, events, outcome, exits } ──print──> stderr table + <out>/summary.json
//!                                          └─verdict──> Err when lost, duplicated or unrecovered
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, bail};
use serde_json::json;

use super::Event;
use super::check::Outcome;
use super::schedule::Kind;

/// Everything a run reports.
pub struct Summary {
    /// The schedule's seed.
    pub seed: u64,
    /// The command that runs the same faults again.
    pub reproduce: String,
    /// What S3 and Kafka held at the end.
    pub outcome: Outcome,
    /// Each fault, in order.
    pub events: Vec<Event>,
    /// Programs that exited without being killed, with their last log lines.
    pub exits: Vec<String>,
    /// Share of the agents' Kafka bytes that crossed zones.
    pub cross_zone_share: f64,
}

/// Per kind: injected, recovered, mean and max seconds to recover.
#[derive(Default)]
struct Row {
    injected: usize,
    recovered: usize,
    seconds: Vec<f64>,
}

impl Row {
    fn mean(&self) -> f64 {
        if self.seconds.is_empty() { 0.0 } else { self.seconds.iter().sum::<f64>() / self.seconds.len() as f64 }
    }
    fn max(&self) -> f64 {
        self.seconds.iter().copied().fold(0.0, f64::max)
    }
}

impl Summary {
    fn rows(&self) -> BTreeMap<Kind, Row> {
        let mut rows: BTreeMap<Kind, Row> = Kind::ALL.iter().map(|&k| (k, Row::default())).collect();
        for e in &self.events {
            let row = rows.entry(e.kind).or_default();
            row.injected += 1;
            if let Some(s) = e.recovery_seconds {
                row.recovered += 1;
                row.seconds.push(s);
            }
        }
        rows
    }

    fn json(&self) -> serde_json::Value {
        let rows = self.rows();
        let faults: BTreeMap<&str, usize> = rows.iter().map(|(k, r)| (k.name(), r.injected)).collect();
        let recovery: BTreeMap<&str, serde_json::Value> = rows
            .iter()
            .map(|(k, r)| {
                (k.name(), json!({ "recovered": r.recovered, "mean": r.mean(), "max": r.max(), "each": r.seconds }))
            })
            .collect();
        let o = &self.outcome;
        json!({
            "seed": self.seed,
            "reproduce": self.reproduce,
            "faults": faults,
            "lines_generated": o.lines_generated,
            "lines_in_s3": o.lines_in_s3,
            "lost": o.lost,
            "lost_examples": o.lost_examples,
            "duplicated_in_s3": o.duplicated_in_s3,
            "missing_offsets": o.missing_offsets,
            "kafka_duplicates": o.kafka_duplicates,
            "foreign_records": o.foreign_records,
            "recovery_seconds": recovery,
            "unexpected_exits": self.exits,
            "cross_zone_share": self.cross_zone_share,
            "events": self.events,
        })
    }

    /// Whether the run passed: nothing lost, nothing twice in S3, every offset there, every
    /// fault recovered from.
    pub fn verdict(&self) -> anyhow::Result<()> {
        let o = &self.outcome;
        let unrecovered = self.events.iter().filter(|e| e.recovery_seconds.is_none()).count();
        if o.lost + o.duplicated_in_s3 + o.missing_offsets + o.foreign_records > 0 || unrecovered > 0 {
            bail!(
                "chaos seed {}: lost {}, duplicated in S3 {}, offsets missing {}, foreign records {}, faults not recovered from {unrecovered}",
                self.seed,
                o.lost,
                o.duplicated_in_s3,
                o.missing_offsets,
                o.foreign_records
            );
        }
        Ok(())
    }
}

/// Prints the table and totals and writes `summary.json` into `out`.
pub fn print(s: &Summary, out: &Path) -> anyhow::Result<()> {
    eprintln!("\n{:<18} {:>8} {:>9} {:>10} {:>10}", "fault", "injected", "recovered", "mean s", "max s");
    for (kind, r) in s.rows() {
        eprintln!("{:<18} {:>8} {:>9} {:>10.1} {:>10.1}", kind.name(), r.injected, r.recovered, r.mean(), r.max());
    }
    let o = &s.outcome;
    eprintln!(
        "\nseed {}: {} faults; lines generated {}, in S3 {}, lost {}, duplicated in S3 {}, offsets missing {}",
        s.seed,
        s.events.len(),
        o.lines_generated,
        o.lines_in_s3,
        o.lost,
        o.duplicated_in_s3,
        o.missing_offsets
    );
    eprintln!(
        "agent duplicates in Kafka (at-least-once resends) {}; agents' cross-zone share {:.2}%; programs that exited by themselves {}",
        o.kafka_duplicates,
        s.cross_zone_share * 100.0,
        s.exits.len()
    );
    for e in s.events.iter().filter(|e| e.cost.is_some()) {
        let cost = e.cost.as_ref().map(super::ZoneCost::line).unwrap_or_default();
        eprintln!("{} {}{cost}", e.kind.name(), e.note);
    }
    for e in &s.exits {
        eprintln!("{e}");
    }
    if !o.lost_examples.is_empty() {
        eprintln!("first lost lines (zone, seq): {:?}", o.lost_examples);
    }
    let path = out.join("summary.json");
    std::fs::write(&path, serde_json::to_string_pretty(&s.json())?)
        .with_context(|| format!("writing {}", path.display()))?;
    eprintln!("summary: {}\nreproduce: {}", path.display(), s.reproduce);
    Ok(())
}
