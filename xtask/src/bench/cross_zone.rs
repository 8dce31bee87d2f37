//! `cargo xtask bench cross-zone`: the demo at a fixed rate; the cross-zone bytes of its
//! zone-aware run against those of its zone-unaware run, read back from the demo's
//! `summary.json`.

use std::path::Path;

use super::Row;

pub(super) fn run(dir: &Path) -> anyhow::Result<Vec<Row>> {
    let out = dir.join("cross-zone");
    let args = crate::demo::DemoArgs {
        duration: 10,
        rate: 300,
        zones: 3,
        partitions: 12,
        line_bytes: 200,
        volume_gb_per_day: 1000.0,
        price_per_gb: 0.02,
        format: crate::fleet::ObjectFormat::Lines,
        out: Some(out.clone()),
    };
    crate::demo::run(&args)?;
    let s: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("summary.json"))?)?;
    // A figure the summary lacks reads as 0, which shows in the ratio rather than failing the
    // whole benchmark after the demo's minutes of work.
    let f = |run: &str, k: &str| s[run][k].as_f64().unwrap_or(0.0);
    let per = |run: &str| f(run, "cross_zone_bytes") / f(run, "producer_bytes").max(1.0);
    Ok(vec![
        Row {
            case: "cross-zone",
            metric: "producer cross-zone B",
            value: f("zone_aware", "producer_cross_zone_bytes"),
            reference: f("baseline", "producer_cross_zone_bytes"),
        },
        Row {
            case: "cross-zone",
            metric: "consumer cross-zone B",
            value: f("zone_aware", "consumer_cross_zone_bytes"),
            reference: f("baseline", "consumer_cross_zone_bytes"),
        },
        Row {
            case: "cross-zone",
            metric: "total per produced B",
            value: per("zone_aware"),
            reference: per("baseline"),
        },
    ])
}
