//! Fake cloud metadata servers that speak the real protocols, one per zone, so every agent or
//! worker learns its zone the way it would in the cloud.
//!
//! ```text
//!  EC2 IMDSv2: PUT /latest/api/token (X-aws-ec2-metadata-token-ttl-seconds) -> token
//!              GET /latest/meta-data/placement/availability-zone[-id] with X-aws-ec2-metadata-token
//!              (401 without a valid token)
//!  GCP:        GET /computeMetadata/v1/instance/zone with Metadata-Flavor: Google (403 without)
//!  Azure:      GET /metadata/instance/compute?api-version=... with Metadata: true (400 without)
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, put};

use crate::Result;
use crate::runtime::ServerRuntime;

/// A zone as the metadata servers describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneSpec {
    /// AZ id, e.g. `use1-az1`; used as the broker rack.
    pub id: String,
    /// AZ name, e.g. `us-east-1a`.
    pub name: String,
}

/// How a metadata server behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetadataBehaviour {
    /// Answers every provider's protocol.
    Answer,
    /// Answers only the EC2 protocol (GCP and Azure paths 404).
    Ec2Only,
    /// Answers only GCP.
    GcpOnly,
    /// Answers only Azure.
    AzureOnly,
    /// Accepts connections and never answers: a hung metadata service.
    Hang,
}

struct Shared {
    zone: ZoneSpec,
    behaviour: MetadataBehaviour,
    /// While set, every request is answered 404 (a metadata service not reachable yet).
    silent: std::sync::atomic::AtomicBool,
    tokens: AtomicU64,
    requests: AtomicU64,
}

/// A running metadata server.
pub struct MetadataServer {
    port: u16,
    shared: Arc<Shared>,
    _rt: ServerRuntime,
}

impl std::fmt::Debug for MetadataServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetadataServer").field("endpoint", &self.endpoint()).field("zone", &self.shared.zone).finish()
    }
}

const TOKEN_PREFIX: &str = "testkit-imds-token-";

impl MetadataServer {
    /// Starts a server for `zone` on a free loopback port.
    pub fn start(zone: ZoneSpec, behaviour: MetadataBehaviour) -> Result<MetadataServer> {
        let shared = Arc::new(Shared {
            zone,
            behaviour,
            silent: std::sync::atomic::AtomicBool::new(false),
            tokens: AtomicU64::new(0),
            requests: AtomicU64::new(0),
        });
        let rt = ServerRuntime::new("testkit-metadata")?;
        let (std_listener, port) = crate::runtime::bind_loopback("metadata")?;
        let app = Router::new()
            .route("/latest/api/token", put(ec2_token))
            .route("/latest/meta-data/placement/availability-zone", get(ec2_zone_name))
            .route("/latest/meta-data/placement/availability-zone-id", get(ec2_zone_id))
            .route("/computeMetadata/v1/instance/zone", get(gcp_zone))
            .route("/metadata/instance/compute", get(azure_compute))
            .with_state(shared.clone());
        let hang = behaviour == MetadataBehaviour::Hang;
        rt.handle().spawn(async move {
            let Ok(listener) = tokio::net::TcpListener::from_std(std_listener) else { return };
            if hang {
                // Accept and hold every connection without ever reading or answering.
                let mut held = Vec::new();
                while let Ok((socket, _)) = listener.accept().await {
                    held.push(socket);
                }
            } else {
                let _ = axum::serve(listener, app).await;
            }
        });
        Ok(MetadataServer { port, shared, _rt: rt })
    }

    /// `http://127.0.0.1:PORT`, usable as the endpoint of every provider.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The zone it serves.
    pub fn zone(&self) -> &ZoneSpec {
        &self.shared.zone
    }

    /// While `silent`, every request is answered 404, as a metadata service that is not reachable
    /// yet; clearing it makes the server answer again.
    pub fn set_silent(&self, silent: bool) {
        self.shared.silent.store(silent, Ordering::Relaxed);
    }

    /// Requests answered so far (any path).
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::Relaxed)
    }
}

fn serves(s: &Shared, which: MetadataBehaviour) -> bool {
    s.requests.fetch_add(1, Ordering::Relaxed);
    !s.silent.load(Ordering::Relaxed) && (s.behaviour == MetadataBehaviour::Answer || s.behaviour == which)
}

async fn ec2_token(State(s): State<Arc<Shared>>, headers: HeaderMap) -> axum::response::Response {
    if !serves(&s, MetadataBehaviour::Ec2Only) {
        return StatusCode::NOT_FOUND.into_response();
    }
    let ttl = headers
        .get("x-aws-ec2-metadata-token-ttl-seconds")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u32>().ok());
    match ttl {
        Some(ttl @ 1..=21600) => {
            let n = s.tokens.fetch_add(1, Ordering::Relaxed);
            // Like the real service, the answer echoes the granted TTL in a header; clients
            // (aws-config among them) refuse a token without it.
            ([("x-aws-ec2-metadata-token-ttl-seconds", ttl.to_string())], format!("{TOKEN_PREFIX}{n}")).into_response()
        }
        _ => (StatusCode::BAD_REQUEST, "missing or invalid X-aws-ec2-metadata-token-ttl-seconds").into_response(),
    }
}

fn ec2_authorised(s: &Shared, headers: &HeaderMap) -> bool {
    headers
        .get("x-aws-ec2-metadata-token")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix(TOKEN_PREFIX))
        .and_then(|n| n.parse::<u64>().ok())
        .is_some_and(|n| n < s.tokens.load(Ordering::Relaxed))
}

async fn ec2_zone_name(State(s): State<Arc<Shared>>, headers: HeaderMap) -> impl IntoResponse {
    ec2_get(&s, &headers, s.zone.name.clone())
}

async fn ec2_zone_id(State(s): State<Arc<Shared>>, headers: HeaderMap) -> impl IntoResponse {
    ec2_get(&s, &headers, s.zone.id.clone())
}

fn ec2_get(s: &Shared, headers: &HeaderMap, value: String) -> (StatusCode, String) {
    if !serves(s, MetadataBehaviour::Ec2Only) {
        return (StatusCode::NOT_FOUND, String::new());
    }
    if !ec2_authorised(s, headers) {
        // IMDSv2-only instances answer 401 to token-less (IMDSv1) requests.
        return (StatusCode::UNAUTHORIZED, String::new());
    }
    (StatusCode::OK, value)
}

async fn gcp_zone(State(s): State<Arc<Shared>>, headers: HeaderMap) -> impl IntoResponse {
    if !serves(&s, MetadataBehaviour::GcpOnly) {
        return (StatusCode::NOT_FOUND, String::new());
    }
    if headers.get("metadata-flavor").and_then(|v| v.to_str().ok()) != Some("Google") {
        return (StatusCode::FORBIDDEN, "Missing Metadata-Flavor:Google header".into());
    }
    (StatusCode::OK, format!("projects/123456789/zones/{}", s.zone.name))
}

async fn azure_compute(State(s): State<Arc<Shared>>, headers: HeaderMap) -> impl IntoResponse {
    if !serves(&s, MetadataBehaviour::AzureOnly) {
        return (StatusCode::NOT_FOUND, String::new());
    }
    if headers.get("metadata").and_then(|v| v.to_str().ok()) != Some("true") {
        return (StatusCode::BAD_REQUEST, r#"{"error":"Bad request. Required metadata header not specified"}"#.into());
    }
    // Azure zones are numbers within a location; take the zone's trailing digits.
    let number: String =
        s.zone.id.chars().rev().take_while(char::is_ascii_digit).collect::<Vec<_>>().into_iter().rev().collect();
    let body = serde_json::json!({ "location": "eastus", "zone": number, "name": "testkit-vm" });
    (StatusCode::OK, body.to_string())
}
