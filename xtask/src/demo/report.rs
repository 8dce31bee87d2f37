//! The demo's report: the table printed to the terminal, `summary.json` (what the cross-zone
//! benchmark reads back) and `report.html` with its SVG chart, all comparing the zone-unaware
//! run with the zone-aware one.

use std::path::Path;

use anyhow::Context;
use serde_json::json;

use super::{DemoArgs, Phase};

/// Figures derived from both runs that the table, the JSON and the page all show.
struct Costs {
    /// Percentage of cross-zone bytes the zone-aware run saved.
    saving: f64,
    /// Dollars per month at the configured volume and price, zone-unaware.
    monthly_base: f64,
    /// The same, zone-aware.
    monthly_aware: f64,
}

impl Costs {
    fn new(args: &DemoArgs, base: &Phase, aware: &Phase) -> Costs {
        let saving = if base.cross_total() == 0 {
            0.0
        } else {
            100.0 * (1.0 - aware.cross_total() as f64 / base.cross_total() as f64)
        };
        Costs { saving, monthly_base: monthly(args, base), monthly_aware: monthly(args, aware) }
    }
}

fn mb(b: u64) -> f64 {
    b as f64 / 1e6
}

/// Cross-zone GB per GB produced.
fn per_gb(p: &Phase) -> f64 {
    if p.producer_bytes == 0 { 0.0 } else { p.cross_total() as f64 / p.producer_bytes as f64 }
}

/// Cross-zone GB per GB produced, times the configured volume and price.
fn monthly(args: &DemoArgs, p: &Phase) -> f64 {
    per_gb(p) * args.volume_gb_per_day * 30.0 * args.price_per_gb
}

/// Prints the comparison and writes `summary.json` and `report.html` into `out`.
pub(super) fn report(args: &DemoArgs, base: &Phase, aware: &Phase, out: &Path) -> anyhow::Result<()> {
    let costs = Costs::new(args, base, aware);
    for line in table(args, base, aware, &costs) {
        println!("{line}");
    }
    let summary = json!({
        "zones": args.zones,
        "partitions": args.partitions,
        "format": args.format.as_str(),
        "lines_generated": base.lines_generated + aware.lines_generated,
        "lines_in_s3": base.lines_in_s3 + aware.lines_in_s3,
        "lost": base.lost + aware.lost,
        "duplicated": base.duplicated + aware.duplicated,
        "baseline": phase_json(base),
        "zone_aware": phase_json(aware),
        "saving_pct": costs.saving,
        "monthly_usd": { "volume_gb_per_day": args.volume_gb_per_day, "price_per_gb": args.price_per_gb, "baseline": costs.monthly_base, "zone_aware": costs.monthly_aware },
    });
    let sp = out.join("summary.json");
    std::fs::write(&sp, serde_json::to_vec_pretty(&summary)?).with_context(|| format!("writing {}", sp.display()))?;
    let hp = out.join("report.html");
    std::fs::write(&hp, html(args, base, aware, &costs)?).with_context(|| format!("writing {}", hp.display()))?;
    println!("Written: {} and {}", sp.display(), hp.display());
    Ok(())
}

fn phase_json(p: &Phase) -> serde_json::Value {
    json!({
        "lines_generated": p.lines_generated,
        "lines_in_s3": p.lines_in_s3,
        "lost": p.lost,
        "duplicated": p.duplicated,
        "producer_bytes": p.producer_bytes,
        "producer_cross_zone_bytes": p.producer_cross_zone_bytes,
        "producer_protocol_cross_zone_bytes": p.producer_protocol_cross_zone_bytes,
        "consumer_bytes": p.consumer_bytes,
        "consumer_cross_zone_bytes": p.consumer_cross_zone_bytes,
        "consumer_protocol_cross_zone_bytes": p.consumer_protocol_cross_zone_bytes,
        "replication_cross_zone_bytes": p.replication_cross_zone_bytes,
        "cross_zone_bytes": p.cross_total(),
        "partition_skew": p.partition_skew,
        "cross_zone_partitions": p.cross_zone_partitions,
    })
}

/// `cross` MB and its share of `total`, as the table shows it.
fn share(cross: u64, total: u64) -> String {
    let pct = if total == 0 { 0.0 } else { 100.0 * cross as f64 / total as f64 };
    format!("{:.2} ({:.1}%)", mb(cross), pct)
}

/// The comparison as the terminal shows it, one line per element.
fn table(args: &DemoArgs, base: &Phase, aware: &Phase, costs: &Costs) -> Vec<String> {
    let row = |label: &str, (a, b): (String, String)| format!("{label:<28} {a:>14} {b:>14}");
    let both = |f: &dyn Fn(&Phase) -> String| (f(base), f(aware));
    let rows: [(&str, (String, String)); 15] = [
        ("lines generated", both(&|p| p.lines_generated.to_string())),
        ("lines in S3 (distinct)", both(&|p| p.lines_in_s3.to_string())),
        ("lost", both(&|p| p.lost.to_string())),
        ("duplicated", both(&|p| p.duplicated.to_string())),
        ("partition skew (max/mean)", both(&|p| format!("{:.2}", p.partition_skew))),
        ("cross-zone partitions", both(&|p| p.cross_zone_partitions.to_string())),
        ("producer MB", both(&|p| format!("{:.2}", mb(p.producer_bytes)))),
        ("  cross-zone MB (share)", both(&|p| share(p.producer_cross_zone_bytes, p.producer_bytes))),
        ("    of which protocol only", both(&|p| share(p.producer_protocol_cross_zone_bytes, p.producer_bytes))),
        ("consumer MB", both(&|p| format!("{:.2}", mb(p.consumer_bytes)))),
        ("  cross-zone MB (share)", both(&|p| share(p.consumer_cross_zone_bytes, p.consumer_bytes))),
        ("    of which protocol only", both(&|p| share(p.consumer_protocol_cross_zone_bytes, p.consumer_bytes))),
        ("replication cross-zone MB", both(&|p| format!("{:.2}", mb(p.replication_cross_zone_bytes)))),
        ("total cross-zone MB", both(&|p| format!("{:.2}", mb(p.cross_total())))),
        ("cross-zone GB per GB produced", both(&|p| format!("{:.2}", per_gb(p)))),
    ];
    let mut lines = vec![
        String::new(),
        format!(
            "Zonal demo: {} zones, RF 3, {} partitions, {} lines/s per agent for {} s per phase, {} objects",
            args.zones,
            args.partitions,
            args.rate,
            args.duration,
            args.format.as_str()
        ),
        String::new(),
        format!("{:<28} {:>14} {:>14}", "", "zone-unaware", "zone-aware"),
    ];
    lines.extend(rows.into_iter().map(|(label, values)| row(label, values)));
    let dollars = (format!("${:.0}", costs.monthly_base), format!("${:.0}", costs.monthly_aware));
    lines.push(row(&format!("$/month at {} GB/day", args.volume_gb_per_day), dollars));
    lines.push(String::new());
    lines.push(format!(
        "Cross-zone bytes saved: {:.1}% (limit with RF 3 over 3 zones: 40%); ${:.0} per month at ${}/GB",
        costs.saving,
        costs.monthly_base - costs.monthly_aware,
        args.price_per_gb
    ));
    lines
}

/// A stacked bar chart (producer, consumer, replication cross-zone MB per run) as SVG.
fn chart(base: &Phase, aware: &Phase) -> anyhow::Result<String> {
    use plotters::prelude::*;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (720, 420)).into_drawing_area();
        root.fill(&WHITE)?;
        let max = mb(base.cross_total().max(aware.cross_total())).max(0.001) * 1.3;
        let mut c = ChartBuilder::on(&root)
            .caption("Cross-zone MB by traffic type", ("sans-serif", 20))
            .margin(20)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0f64..2.0f64, 0.0f64..max)?;
        c.configure_mesh().disable_x_mesh().x_labels(0).y_desc("MB crossing zones").draw()?;
        let colors = [RGBColor(231, 111, 81), RGBColor(42, 157, 143), RGBColor(38, 70, 83)];
        let names = ["producer", "consumer", "replication"];
        for (i, p) in [base, aware].iter().enumerate() {
            let x0 = i as f64 + 0.25;
            let x1 = i as f64 + 0.75;
            let mut y = 0.0;
            for (k, v) in [p.producer_cross_zone_bytes, p.consumer_cross_zone_bytes, p.replication_cross_zone_bytes]
                .iter()
                .enumerate()
            {
                let h = mb(*v);
                let series =
                    c.draw_series(std::iter::once(Rectangle::new([(x0, y), (x1, y + h)], colors[k].filled())))?;
                // The legend needs each traffic type once, so only the first run's bars label it.
                if i == 0 {
                    series
                        .label(names[k])
                        .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], colors[k].filled()));
                }
                y += h;
            }
            let label = if i == 0 { "zone-unaware" } else { "zone-aware" };
            c.draw_series(std::iter::once(Text::new(
                format!("{label}: {:.1} MB", y),
                (x0, y + max * 0.1),
                ("sans-serif", 15),
            )))?;
        }
        c.configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()?;
        root.present()?;
    }
    Ok(svg)
}

/// The page: the chart and a table of both runs.
fn html(args: &DemoArgs, base: &Phase, aware: &Phase, costs: &Costs) -> anyhow::Result<String> {
    let svg = chart(base, aware)?;
    let row = |label: &str, a: String, b: String| format!("<tr><td>{label}</td><td>{a}</td><td>{b}</td></tr>");
    let both = |label: &str, f: &dyn Fn(&Phase) -> String| row(label, f(base), f(aware));
    let rows = [
        both("lines generated", &|p| p.lines_generated.to_string()),
        both("lines in S3", &|p| p.lines_in_s3.to_string()),
        both("lost / duplicated", &|p| format!("{} / {}", p.lost, p.duplicated)),
        both("producer cross-zone / total MB", &|p| {
            format!("{:.2} / {:.2}", mb(p.producer_cross_zone_bytes), mb(p.producer_bytes))
        }),
        both("consumer cross-zone / total MB", &|p| {
            format!("{:.2} / {:.2}", mb(p.consumer_cross_zone_bytes), mb(p.consumer_bytes))
        }),
        both("replication cross-zone MB", &|p| format!("{:.2}", mb(p.replication_cross_zone_bytes))),
        both("partition skew (max/mean)", &|p| format!("{:.2}", p.partition_skew)),
        row(
            &format!("$/month at {} GB/day, ${}/GB", args.volume_gb_per_day, args.price_per_gb),
            format!("${:.0}", costs.monthly_base),
            format!("${:.0}", costs.monthly_aware),
        ),
    ]
    .join("");
    Ok(format!(
        "<!doctype html><html><head><meta charset=utf-8><title>Zonal demo report</title>\
         <style>body{{font:15px sans-serif;max-width:800px;margin:2em auto}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 10px;text-align:right}}td:first-child{{text-align:left}}</style></head><body>\
         <h1>Zonal: cross-zone traffic, zone-unaware vs zone-aware</h1>\
         <p>{zones} zones, RF 3, {parts} partitions, {rate} lines/s per agent for {dur} s per run. Bytes measured from the clients' librdkafka statistics; replication computed from RF and rack layout.</p>\
         <p><b>Saving: {saving:.1}%</b> of cross-zone bytes (limit 40% with RF 3 over 3 zones).</p>{svg}\
         <table><tr><th></th><th>zone-unaware</th><th>zone-aware</th></tr>{rows}</table></body></html>",
        zones = args.zones,
        parts = args.partitions,
        rate = args.rate,
        dur = args.duration,
        saving = costs.saving,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> DemoArgs {
        DemoArgs {
            duration: 20,
            rate: 500,
            zones: 3,
            partitions: 12,
            line_bytes: 200,
            volume_gb_per_day: 1000.0,
            price_per_gb: 0.02,
            format: crate::fleet::ObjectFormat::Lines,
            out: None,
        }
    }

    fn phase(cross: u64) -> Phase {
        Phase {
            lines_generated: 30_000,
            lines_in_s3: 30_000,
            producer_bytes: 6_000_000,
            producer_cross_zone_bytes: cross,
            consumer_bytes: 6_000_000,
            replication_cross_zone_bytes: cross,
            ..Phase::default()
        }
    }

    #[test]
    fn the_table_compares_both_runs_and_states_the_saving() {
        let (base, aware) = (phase(4_000_000), phase(1_000_000));
        let costs = Costs::new(&args(), &base, &aware);
        assert!((costs.saving - 75.0).abs() < 1e-9, "{}", costs.saving);
        let lines = table(&args(), &base, &aware, &costs);
        assert!(lines.contains(&format!("{:<28} {:>14} {:>14}", "total cross-zone MB", "8.00", "2.00")));
        assert!(
            lines.contains(&format!("{:<28} {:>14} {:>14}", "  cross-zone MB (share)", "4.00 (66.7%)", "1.00 (16.7%)"))
        );
        assert!(lines.last().is_some_and(|l| l.starts_with("Cross-zone bytes saved: 75.0%")), "{lines:#?}");
    }

    #[test]
    fn the_summary_and_the_page_are_written() -> anyhow::Result<()> {
        let out = tempfile::tempdir()?;
        report(&args(), &phase(4_000_000), &phase(0), out.path())?;
        let summary: serde_json::Value = serde_json::from_slice(&std::fs::read(out.path().join("summary.json"))?)?;
        assert_eq!(summary["baseline"]["cross_zone_bytes"], 8_000_000);
        assert_eq!(summary["zone_aware"]["cross_zone_bytes"], 0);
        assert_eq!(summary["saving_pct"], 100.0);
        let page = std::fs::read_to_string(out.path().join("report.html"))?;
        assert!(page.contains("<svg") && page.contains("<b>Saving: 100.0%</b>"));
        Ok(())
    }
}
