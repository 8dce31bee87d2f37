//! The dashboards' and alerts' PromQL checked against what the programs export: every query
//! parses (promql-parser, Prometheus' own grammar) and every metric it names is in a `/metrics`
//! scrape, so a renamed metric cannot leave a panel or an alert silently empty.
//!
//! ```text
//!  dashboard JSON ──grafana_queries (variables filled)──┐
//!  PrometheusRule exprs ────────────────────────────────┴─ metric_names ─┐
//!  /metrics text ──exported──────────────────────────────────────────────┴─ unknown_metrics
//! ```

use std::collections::BTreeSet;

use promql_parser::parser::{self, Expr};

use crate::{Result, TestkitError};

/// The metric names `expr` selects (by name; a selector on `__name__` alone names none).
pub fn metric_names(expr: &str) -> Result<BTreeSet<String>> {
    let ast = parser::parse(expr).map_err(|reason| TestkitError::Query { expr: expr.to_owned(), reason })?;
    let mut names = BTreeSet::new();
    walk(&ast, &mut names);
    Ok(names)
}

fn walk(e: &Expr, names: &mut BTreeSet<String>) {
    match e {
        Expr::Aggregate(a) => {
            walk(&a.expr, names);
            if let Some(p) = &a.param {
                walk(p, names);
            }
        }
        Expr::Unary(u) => walk(&u.expr, names),
        Expr::Binary(b) => {
            walk(&b.lhs, names);
            walk(&b.rhs, names);
        }
        Expr::Paren(p) => walk(&p.expr, names),
        Expr::Subquery(s) => walk(&s.expr, names),
        Expr::VectorSelector(v) => names.extend(v.name.clone()),
        Expr::MatrixSelector(m) => names.extend(m.vs.name.clone()),
        Expr::Call(c) => c.args.args.iter().for_each(|a| walk(a, names)),
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
    }
}

/// The series names a Prometheus text scrape offers: its samples', and for each declared family
/// the names its type gives (`_total` for a counter; `_bucket`, `_sum`, `_count` for a
/// histogram), so a family with no sample yet (an error counter at 0 labels) still counts.
pub fn exported(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else { continue };
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                _ => &[""],
            };
            names.extend(suffixes.iter().map(|s| format!("{name}{s}")));
        } else if !line.starts_with('#') {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            if end > 0 {
                names.insert(line[..end].to_owned());
            }
        }
    }
    names
}

/// Every query of a Grafana dashboard (each panel's targets, rows' panels included), with its
/// template variables filled in: a custom or text variable with its current value, any other
/// with `.*`, and Grafana's own intervals with `5m`.
pub fn grafana_queries(dashboard: &serde_json::Value) -> Vec<String> {
    let mut vars: Vec<(String, String)> =
        ["__rate_interval", "__interval", "__range"].into_iter().map(|v| (v.to_owned(), "5m".to_owned())).collect();
    for v in dashboard["templating"]["list"].as_array().into_iter().flatten() {
        let name = v["name"].as_str().unwrap_or_default().to_owned();
        let value = match v["type"].as_str() {
            Some("custom" | "textbox" | "constant") => {
                v["current"]["value"].as_str().or(v["query"].as_str()).unwrap_or_default().to_owned()
            }
            _ => ".*".to_owned(),
        };
        vars.push((name, value));
    }
    // Longest first, so `$instance` is not read as `$in` followed by `stance`.
    vars.sort_by_key(|(n, _)| std::cmp::Reverse(n.len()));
    let mut out = Vec::new();
    let mut panels: Vec<&serde_json::Value> = dashboard["panels"].as_array().into_iter().flatten().collect();
    while let Some(p) = panels.pop() {
        panels.extend(p["panels"].as_array().into_iter().flatten());
        for t in p["targets"].as_array().into_iter().flatten() {
            let Some(expr) = t["expr"].as_str() else { continue };
            let mut expr = expr.to_owned();
            for (name, value) in &vars {
                expr = expr.replace(&format!("${{{name}}}"), value).replace(&format!("${name}"), value);
            }
            out.push(expr);
        }
    }
    out
}

/// The queries naming a metric that `scrape` does not offer, as (query, metric).
pub fn unknown_metrics(queries: &[String], scrape: &str) -> Result<Vec<(String, String)>> {
    let offered = exported(scrape);
    let mut unknown = Vec::new();
    for q in queries {
        for name in metric_names(q)? {
            if !offered.contains(&name) {
                unknown.push((q.clone(), name));
            }
        }
    }
    Ok(unknown)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_every_part_of_a_query_and_bad_syntax_is_an_error() {
        let names = metric_names(
            "sum by (zone) (rate(a_total{x=\"1\"}[5m])) / on() group_left max(b) > 0 or histogram_quantile(0.9, c_bucket)",
        )
        .expect("parses");
        assert_eq!(names, BTreeSet::from(["a_total".into(), "b".into(), "c_bucket".into()]));
        let e = metric_names("sum(rate(a[5m])").expect_err("unbalanced").to_string();
        assert!(e.contains("sum(rate(a[5m])"), "{e}");
    }

    #[test]
    fn a_scrape_offers_samples_and_the_names_of_declared_families() {
        let text = "# TYPE c counter\n# TYPE h histogram\n# TYPE g gauge\ng{a=\"1\"} 2\nother 1\n# EOF\n";
        let names = exported(text);
        for n in ["c_total", "h_bucket", "h_sum", "h_count", "g", "other"] {
            assert!(names.contains(n), "{n}");
        }
        assert!(!names.contains("c"), "a counter's series end in _total");
        let q = vec!["rate(c_total[1m]) + g".to_owned(), "h_bucket + missing".to_owned()];
        assert_eq!(unknown_metrics(&q, text).expect("parses"), vec![(q[1].clone(), "missing".to_owned())]);
    }

    #[test]
    fn grafana_variables_are_filled_before_parsing() {
        let d = serde_json::json!({
            "templating": {"list": [
                {"name": "instance", "type": "query"},
                {"name": "in", "type": "textbox", "query": "3"},
            ]},
            "panels": [{"type": "row", "panels": [{"targets": [{"expr": "rate(x{i=~\"$instance\"}[$__rate_interval]) * ${in}"}]}]}],
        });
        assert_eq!(grafana_queries(&d), vec!["rate(x{i=~\".*\"}[5m]) * 3".to_owned()]);
    }
}
