//! The transporter's own HTTP endpoint, beside the shell's `/metrics`, `/healthz`, `/readyz` and
//! `/status`: `/assignment` (the assignment by zone, as JSON, or HTML with `?format=html`).

use std::collections::BTreeMap;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Json, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};

use crate::state::AppState;

/// The shell's routes (`/metrics`, `/healthz`, `/readyz`, `/status`) and `/assignment`.
pub fn router(state: Arc<AppState>) -> Router {
    shell::http::router(state.clone()).merge(Router::new().route("/assignment", get(assignment)).with_state(state))
}

#[derive(Deserialize)]
struct Fmt {
    format: Option<String>,
}

/// Assignment view: zones → workers → partitions, with cross-zone partitions marked.
#[derive(Serialize)]
pub struct View {
    generation: u64,
    master: String,
    cross_zone: usize,
    waiting: usize,
    zones: BTreeMap<String, BTreeMap<String, Vec<ViewPartition>>>,
}

#[derive(Serialize)]
struct ViewPartition {
    partition: String,
    partition_zone: Option<String>,
    cross_zone: bool,
}

/// Builds the view from an assignment document.
pub fn view(doc: &crate::coord::AssignmentDoc) -> View {
    let mut zones: BTreeMap<String, BTreeMap<String, Vec<ViewPartition>>> = BTreeMap::new();
    for (w, z) in &doc.workers {
        zones.entry(z.clone()).or_default().entry(w.clone()).or_default();
    }
    for (tp, w) in &doc.owners {
        let wz = doc.workers.get(w).cloned().unwrap_or_else(|| "unknown".into());
        let pz = doc.zones.get(tp).cloned();
        zones.entry(wz.clone()).or_default().entry(w.clone()).or_default().push(ViewPartition {
            partition: tp.to_string(),
            cross_zone: pz.as_deref() != Some(wz.as_str()),
            partition_zone: pz,
        });
    }
    View {
        generation: doc.generation,
        master: doc.master.clone(),
        cross_zone: doc.cross_zone,
        waiting: doc.waiting,
        zones,
    }
}

/// Escapes text for HTML, inside elements and inside quoted attributes of either kind (the
/// cross-zone mark's title is single-quoted: a zone or topic name with `'` ended it).
fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('\'', "&#39;").replace('"', "&quot;")
}

async fn assignment(State(s): State<Arc<AppState>>, Query(f): Query<Fmt>) -> Response {
    // Assembled from etcd on demand: workers only keep their own share.
    let doc = match crate::shares::full(&s.worker.etcd, &s.worker.keys).await {
        Ok(Some(doc)) => doc,
        Ok(None) => return (StatusCode::SERVICE_UNAVAILABLE, "no assignment yet\n").into_response(),
        Err(e) => return (StatusCode::SERVICE_UNAVAILABLE, format!("reading the assignment: {e:#}\n")).into_response(),
    };
    let v = view(&doc);
    if f.format.as_deref() != Some("html") {
        return Json(v).into_response();
    }
    let mut html = format!(
        "<!doctype html><meta charset=utf-8><title>Zonal assignment</title>\
         <style>body{{font:14px sans-serif}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px}}.x{{color:#b00;font-weight:bold}}</style>\
         <h1>Assignment generation {}</h1><p>master {} · cross-zone partitions {} · waiting {}</p>",
        v.generation,
        escape(&v.master),
        v.cross_zone,
        v.waiting
    );
    for (zone, workers) in &v.zones {
        html.push_str(&format!("<h2>zone {}</h2><table><tr><th>worker</th><th>partitions</th></tr>", escape(zone)));
        for (w, parts) in workers {
            let list: Vec<String> = parts
                .iter()
                .map(|p| {
                    if p.cross_zone {
                        format!(
                            "<span class=x title='partition zone {}'>{} ✗</span>",
                            escape(p.partition_zone.as_deref().unwrap_or("unknown")),
                            escape(&p.partition)
                        )
                    } else {
                        escape(&p.partition)
                    }
                })
                .collect();
            html.push_str(&format!("<tr><td>{}</td><td>{}</td></tr>", escape(w), list.join(", ")));
        }
        html.push_str("</table>");
    }
    Html(html).into_response()
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_cannot_leave_an_attribute_or_open_an_element() {
        assert_eq!(super::escape("a'b\"c<d>&e"), "a&#39;b&quot;c&lt;d&gt;&amp;e");
    }
}
