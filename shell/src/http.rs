//! The HTTP endpoints every Zonal program serves (axum): `/metrics` (OpenMetrics text),
//! `/healthz`, `/readyz` and `/status` (JSON), answered through the program's [`Endpoints`].
//! A program adds its own routes by merging them into [`router`]'s result.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use prometheus_client::registry::Registry;
use serde::Serialize;
use tokio::task::JoinHandle;

/// A program's default HTTP port (on loopback, so that metrics are not exposed by accident).
pub trait DefaultPort {
    /// The port.
    const PORT: u16;
}

/// The `[http]` section: where the endpoints listen, by default `127.0.0.1:<P::PORT>`.
#[derive(Debug, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default, bound = "")]
pub struct HttpConfig<P: DefaultPort> {
    /// Listen address.
    pub listen: SocketAddr,
    #[serde(skip)]
    port: std::marker::PhantomData<P>,
}

impl<P: DefaultPort> HttpConfig<P> {
    /// Endpoints on `listen`.
    pub fn new(listen: SocketAddr) -> Self {
        HttpConfig { listen, port: std::marker::PhantomData }
    }
}

impl<P: DefaultPort> Default for HttpConfig<P> {
    fn default() -> Self {
        HttpConfig::new(SocketAddr::from(([127, 0, 0, 1], P::PORT)))
    }
}

// Derived, these would ask `P` for the same traits; the marker holds no value.
impl<P: DefaultPort> Clone for HttpConfig<P> {
    fn clone(&self) -> Self {
        HttpConfig::new(self.listen)
    }
}

impl<P: DefaultPort> PartialEq for HttpConfig<P> {
    fn eq(&self, other: &Self) -> bool {
        self.listen == other.listen
    }
}

impl<P: DefaultPort> Eq for HttpConfig<P> {}

/// What the shell's endpoints ask of a program. Answers come from local state only: the
/// endpoints must answer while Kafka, etcd or S3 do not.
pub trait Endpoints: Send + Sync + 'static {
    /// The `/status` document.
    type Status: Serialize;

    /// The registry `/metrics` encodes.
    fn registry(&self) -> &Registry;

    /// Updates the gauges that are computed rather than counted, just before `/metrics` reads them.
    fn refresh_gauges(&self) {}

    /// Why the program should be restarted, if it should (`/healthz` answers 503 with it).
    fn unhealthy(&self) -> Option<String> {
        None
    }

    /// Why the program is not ready for work yet, if it is not (`/readyz` answers 503 with it).
    fn not_ready(&self) -> Option<String>;

    /// The `/status` document.
    fn status(&self) -> Self::Status;

    /// The `ready` and `healthy` gauges, set from [`Self::not_ready`] and [`Self::unhealthy`]
    /// at each scrape.
    fn health(&self) -> Option<&crate::metrics::Health> {
        None
    }
}

/// The shell's routes over `state`.
pub fn router<E: Endpoints>(state: Arc<E>) -> Router {
    Router::new()
        .route("/metrics", get(metrics::<E>))
        .route("/healthz", get(healthz::<E>))
        .route("/readyz", get(readyz::<E>))
        .route("/status", get(status::<E>))
        .with_state(state)
}

async fn metrics<E: Endpoints>(State(state): State<Arc<E>>) -> Response {
    state.refresh_gauges();
    if let Some(h) = state.health() {
        h.ready.set(i64::from(state.not_ready().is_none()));
        h.healthy.set(i64::from(state.unhealthy().is_none()));
    }
    let mut text = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, state.registry()) {
        return (StatusCode::INTERNAL_SERVER_ERROR, format!("encoding metrics failed: {e}\n")).into_response();
    }
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text).into_response()
}

async fn healthz<E: Endpoints>(State(state): State<Arc<E>>) -> Response {
    match state.unhealthy() {
        None => (StatusCode::OK, "ok\n").into_response(),
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response(),
    }
}

async fn readyz<E: Endpoints>(State(state): State<Arc<E>>) -> Response {
    match state.not_ready() {
        None => (StatusCode::OK, "ready\n").into_response(),
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n")).into_response(),
    }
}

async fn status<E: Endpoints>(State(state): State<Arc<E>>) -> Json<E::Status> {
    Json(state.status())
}

/// Why the HTTP server did not start.
#[derive(Debug, thiserror::Error)]
#[error("binding http.listen {addr}: {source}")]
pub struct BindError {
    /// The address asked for.
    pub addr: SocketAddr,
    /// What the OS said.
    #[source]
    pub source: std::io::Error,
}

/// A running HTTP server.
#[derive(Debug)]
pub struct Server {
    /// Where it listens (the port the OS chose when `http.listen` asked for port 0).
    pub addr: SocketAddr,
    /// The server; it runs until the runtime stops or the task is aborted.
    pub task: JoinHandle<std::io::Result<()>>,
}

/// Binds `listen` and serves `router` on it.
pub async fn serve(listen: SocketAddr, router: Router) -> Result<Server, BindError> {
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|source| BindError { addr: listen, source })?;
    let addr = listener.local_addr().map_err(|source| BindError { addr: listen, source })?;
    tracing::info!(%addr, "HTTP listening");
    let task = tokio::spawn(axum::serve(listener, router).into_future());
    Ok(Server { addr, task })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use prometheus_client::metrics::counter::Counter;

    use super::*;

    struct Fake {
        registry: Registry,
        ready: AtomicBool,
        refreshed: Counter,
        health: crate::metrics::Health,
    }

    impl Endpoints for Fake {
        type Status = serde_json::Value;
        fn registry(&self) -> &Registry {
            &self.registry
        }
        fn refresh_gauges(&self) {
            self.refreshed.inc();
        }
        fn unhealthy(&self) -> Option<String> {
            (!self.ready.load(Ordering::Relaxed)).then(|| "stalled".to_owned())
        }
        fn not_ready(&self) -> Option<String> {
            (!self.ready.load(Ordering::Relaxed)).then(|| "no assignment yet".to_owned())
        }
        fn status(&self) -> serde_json::Value {
            serde_json::json!({ "ready": self.ready.load(Ordering::Relaxed) })
        }
        fn health(&self) -> Option<&crate::metrics::Health> {
            Some(&self.health)
        }
    }

    async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
        let host = addr.to_string();
        let path = path.to_owned();
        tokio::task::spawn_blocking(move || testkit::http::get(&host, &path)).await.expect("join").expect("request")
    }

    #[tokio::test]
    async fn endpoints_answer_from_the_programs_state() {
        let refreshed = Counter::default();
        let mut registry = Registry::default();
        registry.register("refreshes", "Gauge refreshes", refreshed.clone());
        let health = crate::metrics::Health::default();
        health.register(&mut registry);
        let state = Arc::new(Fake { registry, ready: AtomicBool::new(false), refreshed, health });
        let listen: SocketAddr = "127.0.0.1:0".parse().expect("address");
        let server = serve(listen, router(state.clone())).await.expect("serve");

        assert_eq!(get(server.addr, "/readyz").await, (503, "not ready: no assignment yet\n".into()));
        let text = get(server.addr, "/metrics").await.1;
        assert!(text.contains("\nready 0\n") && text.contains("\nhealthy 0\n"), "{text}");
        assert_eq!(get(server.addr, "/healthz").await, (503, "stalled\n".into()));
        assert_eq!(get(server.addr, "/status").await, (200, r#"{"ready":false}"#.into()));
        state.ready.store(true, Ordering::Relaxed);
        assert_eq!(get(server.addr, "/readyz").await, (200, "ready\n".into()));
        assert_eq!(get(server.addr, "/healthz").await, (200, "ok\n".into()));
        let (code, text) = get(server.addr, "/metrics").await;
        assert_eq!(code, 200);
        assert!(text.contains("refreshes_total 2"), "{text}");
        assert!(text.contains("\nready 1\n") && text.contains("\nhealthy 1\n"), "{text}");
        server.task.abort();
    }

    #[tokio::test]
    async fn a_taken_port_is_named() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = taken.local_addr().expect("addr");
        let state = Arc::new(Fake {
            registry: Registry::default(),
            ready: AtomicBool::new(true),
            refreshed: Counter::default(),
            health: crate::metrics::Health::default(),
        });
        let err = serve(addr, router(state)).await.expect_err("port in use").to_string();
        assert!(err.contains(&addr.to_string()) && err.contains("http.listen"), "{err}");
    }
}
