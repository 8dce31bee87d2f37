//! The transporter's own HTTP endpoint, beside the shell's `/metrics`, `/healthz`, `/readyz` and
//! `/status`: `/assignment` (the assignment by zone, as JSON, or HTML with `?format=html`).
//!
//! ```text
//!  GET /assignment ──> AssignmentCache (one read in flight, kept 5 s) ──miss──> shares::full (paged etcd read)
//! ```

use std::collections::BTreeMap;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

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

/// The assignment as `/assignment` last read it. The whole assignment is a paged etcd read (a
/// hundred thousand partitions are megabytes): without this, whoever can reach the endpoint
/// could load etcd at will. Requests within [`AssignmentCache::FRESH`] of a read share it, and
/// requests during a read wait for it rather than start their own.
#[derive(Default)]
pub struct AssignmentCache {
    last: tokio::sync::Mutex<Option<(Instant, Arc<crate::coord::AssignmentDoc>)>>,
}

impl AssignmentCache {
    /// How long a read answers requests.
    pub const FRESH: Duration = Duration::from_secs(5);

    /// The assignment read at most [`Self::FRESH`] before `now`, or read by `load` now.
    pub async fn get<F>(&self, now: Instant, load: F) -> anyhow::Result<Option<Arc<crate::coord::AssignmentDoc>>>
    where
        F: Future<Output = anyhow::Result<Option<crate::coord::AssignmentDoc>>>,
    {
        let mut last = self.last.lock().await;
        if let Some((at, doc)) = last.as_ref()
            && now.saturating_duration_since(*at) < Self::FRESH
        {
            return Ok(Some(doc.clone()));
        }
        let Some(doc) = load.await? else { return Ok(None) };
        let doc = Arc::new(doc);
        *last = Some((now, doc.clone()));
        Ok(Some(doc))
    }
}

async fn assignment(State(s): State<Arc<AppState>>, Query(f): Query<Fmt>) -> Response {
    // Assembled from etcd on demand (workers only keep their own share), at most every 5 s.
    let read = crate::shares::full(&s.worker.etcd, &s.worker.keys);
    let doc = match s.assignment_view.get(Instant::now(), read).await {
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
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn requests_share_one_etcd_read_for_five_seconds() {
        let cache = AssignmentCache::default();
        let reads = AtomicUsize::new(0);
        let load = || async {
            reads.fetch_add(1, Ordering::SeqCst);
            Ok(Some(crate::coord::AssignmentDoc::default()))
        };
        let t0 = Instant::now();
        // Concurrent requests: one read, the others wait for it.
        let all = futures::future::join_all((0..50).map(|_| cache.get(t0, load()))).await;
        assert!(all.iter().all(|r| matches!(r, Ok(Some(_)))));
        assert_eq!(reads.load(Ordering::SeqCst), 1);
        cache.get(t0 + Duration::from_millis(4900), load()).await.expect("cached");
        assert_eq!(reads.load(Ordering::SeqCst), 1);
        cache.get(t0 + AssignmentCache::FRESH, load()).await.expect("read again");
        assert_eq!(reads.load(Ordering::SeqCst), 2);
        // A failed read is not kept.
        let failed = cache.get(t0 + 2 * AssignmentCache::FRESH, async { anyhow::bail!("etcd down") }).await;
        assert!(failed.is_err());
    }

    #[test]
    fn names_cannot_leave_an_attribute_or_open_an_element() {
        assert_eq!(escape("a'b\"c<d>&e"), "a&#39;b&quot;c&lt;d&gt;&amp;e");
    }
}
