//! HTTP endpoints: `/metrics`, `/healthz`, `/readyz`, `/status` (role, zone, owned partitions)
//! and `/assignment` (the master's assignment by zone, as JSON, or HTML with `?format=html`).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Json, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};

use crate::app::AppState;

/// Builds the router.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/status", get(status))
        .route("/assignment", get(assignment))
        .with_state(state)
}

async fn metrics(State(s): State<Arc<AppState>>) -> Response {
    s.refresh_gauges();
    let mut text = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &s.registry) {
        return (StatusCode::INTERNAL_SERVER_ERROR, format!("encoding metrics failed: {e}\n")).into_response();
    }
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text).into_response()
}

async fn readyz(State(s): State<Arc<AppState>>) -> Response {
    if s.registered.load(Ordering::Relaxed) && s.worker.share.read().unwrap_or_else(PoisonError::into_inner).is_some() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready: not registered or no assignment yet\n").into_response()
    }
}

/// `/status` body.
#[derive(Serialize)]
struct Status {
    id: String,
    role: &'static str,
    zone: Option<String>,
    zone_source: String,
    registered: bool,
    /// Partitions in this worker's share of the assignment (`None` before it was read).
    assigned: Option<usize>,
    owned: BTreeMap<String, crate::worker::OwnedStatus>,
}

async fn status(State(s): State<Arc<AppState>>) -> Json<impl Serialize> {
    let w = &s.worker;
    // Only local state: `/status` must answer while etcd does not.
    let assigned = w.share.read().unwrap_or_else(PoisonError::into_inner).as_ref().map(|s| s.len());
    let is_master = w.metrics.is_master.get() == 1;
    Json(Status {
        id: w.id.clone(),
        role: if is_master { "master" } else { "worker" },
        zone: s.zone.zone.as_ref().map(|z| z.display_label().to_owned()),
        zone_source: s.zone.source.to_string(),
        registered: s.registered.load(Ordering::Relaxed),
        assigned,
        owned: w
            .owned
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(k, v)| (k.key(), v.clone()))
            .collect(),
    })
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
            partition: tp.clone(),
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

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
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
