//! A fake Kubernetes API server for zone discovery: HTTPS with a throwaway CA, a service account
//! token that must come as `Authorization: Bearer`, and Node objects carrying zone labels, as
//! `GET /api/v1/nodes/<name>` answers on a real cluster.
//!
//! ```text
//!  GET /api/v1/nodes/<name>  Bearer <token> ──> 200 Node { metadata.labels: zone-id, zone }
//!                            no/wrong token  ──> 401 Status (Unauthorized)
//!                            unknown node    ──> 404 Status (NotFound)
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::runtime::{ServerRuntime, bind_loopback};
use crate::tls::{TlsFiles, make_certs};
use crate::{Result, TestkitError, ZoneSpec, io_err};

struct Shared {
    token: String,
    nodes: BTreeMap<String, ZoneSpec>,
    requests: AtomicU64,
}

/// A running fake API server.
pub struct KubeApi {
    port: u16,
    files: TlsFiles,
    token_file: PathBuf,
    shared: Arc<Shared>,
    _dir: tempfile::TempDir,
    _rt: ServerRuntime,
}

impl std::fmt::Debug for KubeApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeApi").field("endpoint", &self.endpoint()).finish()
    }
}

impl KubeApi {
    /// Serves one Node per `(name, zone)`.
    pub fn start(nodes: impl IntoIterator<Item = (String, ZoneSpec)>) -> Result<KubeApi> {
        let dir = tempfile::Builder::new().prefix("zonal-kube-").tempdir().map_err(io_err("create kube dir"))?;
        let files = make_certs(dir.path())?;
        let token = format!("testkit-sa-token-{}", std::process::id());
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, format!("{token}\n")).map_err(io_err("write the token file"))?;
        let shared = Arc::new(Shared { token, nodes: nodes.into_iter().collect(), requests: AtomicU64::new(0) });
        let tls = tls_config(&files)?;
        let rt = ServerRuntime::new("testkit-kube")?;
        let (listener, port) = bind_loopback("kube-api")?;
        let app = Router::new().route("/api/v1/nodes/{name}", get(node)).with_state(shared.clone());
        rt.handle().spawn(async move {
            let Ok(listener) = tokio::net::TcpListener::from_std(listener) else { return };
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
            while let Ok((conn, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let app = app.clone();
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(conn).await else { return };
                    let service = hyper_util::service::TowerToHyperService::new(app);
                    let _ = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(KubeApi { port, files, token_file, shared, _dir: dir, _rt: rt })
    }

    /// `https://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// The CA that signed the server certificate (the pod's `ca.crt`).
    pub fn ca_file(&self) -> &std::path::Path {
        &self.files.ca
    }

    /// The service account token file (the pod's `token`).
    pub fn token_file(&self) -> &std::path::Path {
        &self.token_file
    }

    /// Requests answered so far.
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::Relaxed)
    }
}

fn tls_config(files: &TlsFiles) -> Result<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let err = |reason: String| TestkitError::Start { server: "kube-api", reason };
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|i| i.collect::<std::result::Result<Vec<_>, _>>())
        .map_err(|e| err(e.to_string()))?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| err(e.to_string()))?;
    let mut config =
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| err(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| err(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

fn status(code: StatusCode, reason: &str, message: String) -> axum::response::Response {
    let body = serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16(),
    });
    (code, [("content-type", "application/json")], body.to_string()).into_response()
}

async fn node(State(s): State<Arc<Shared>>, Path(name): Path<String>, headers: HeaderMap) -> axum::response::Response {
    s.requests.fetch_add(1, Ordering::Relaxed);
    let bearer = headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    if bearer != Some(s.token.as_str()) {
        return status(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized".into());
    }
    let Some(zone) = s.nodes.get(&name) else {
        return status(StatusCode::NOT_FOUND, "NotFound", format!("nodes \"{name}\" not found"));
    };
    let body = serde_json::json!({
        "kind": "Node", "apiVersion": "v1",
        "metadata": { "name": name, "labels": {
            "kubernetes.io/hostname": name,
            "topology.k8s.aws/zone-id": zone.id,
            "topology.kubernetes.io/zone": zone.name,
        }},
    });
    (StatusCode::OK, [("content-type", "application/json")], body.to_string()).into_response()
}
