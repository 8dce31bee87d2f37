//! The agent's HTTP endpoints (axum): `/metrics` (Prometheus text), `/healthz`, `/readyz`,
//! `/status` (JSON: zone and its source, files with offsets, streams with their partitions).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use serde::Serialize;

use crate::app::AgentState;

/// Builds the router.
pub fn router(state: Arc<AgentState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/status", get(status))
        .with_state(state)
}

/// Unhealthy (so a supervisor restarts it from its checkpoints) when a stream has lines waiting
/// and has not had one acknowledged for `stall-timeout-secs`.
async fn healthz(State(state): State<Arc<AgentState>>) -> Response {
    match state.stalled() {
        None => (StatusCode::OK, "ok\n").into_response(),
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response(),
    }
}

async fn metrics(State(state): State<Arc<AgentState>>) -> Response {
    state.refresh_gauges();
    let mut text = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &state.registry) {
        return (StatusCode::INTERNAL_SERVER_ERROR, format!("encoding metrics failed: {e}\n")).into_response();
    }
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text).into_response()
}

async fn readyz(State(state): State<Arc<AgentState>>) -> Response {
    match state.not_ready() {
        None => (StatusCode::OK, "ready\n").into_response(),
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n")).into_response(),
    }
}

/// `/status` body.
#[derive(Debug, Serialize)]
pub struct Status {
    /// Zone label, if known.
    pub zone: Option<String>,
    /// Where the zone came from.
    pub zone_source: String,
    /// Topology generation in use.
    pub topology_generation: u64,
    /// Bytes sent and not yet acknowledged.
    pub in_flight_bytes: u64,
    /// Streams.
    pub streams: Vec<StreamStatus>,
}

/// One stream in `/status`.
#[derive(Debug, Serialize)]
pub struct StreamStatus {
    /// Name.
    pub name: String,
    /// Topic.
    pub topic: String,
    /// Partitioning strategy.
    pub partitioning: crate::config::Partitioning,
    /// Zone-local partitions (zone-aware selection).
    pub local_partitions: Vec<i32>,
    /// Why the selection is not zone-local, if it is not.
    pub fallback_reason: Option<String>,
    /// Files.
    pub files: Vec<FileStatus>,
}

/// One file in `/status`.
#[derive(Debug, Serialize)]
pub struct FileStatus {
    /// Current path.
    pub path: String,
    /// Device.
    pub dev: u64,
    /// Inode.
    pub ino: u64,
    /// Bytes read.
    pub read_offset: u64,
    /// Bytes acknowledged (the checkpoint).
    pub acked_offset: u64,
    /// Size at the last look.
    pub size: u64,
    /// Renamed away or deleted, being finished.
    pub orphan: bool,
}

async fn status(State(state): State<Arc<AgentState>>) -> Json<Status> {
    Json(state.status())
}
