//! An embedded S3-compatible server (s3s + s3s-fs) on a free loopback port, with real SigV4
//! credential checks, serving buckets as directories of a temporary folder. Faults an operator
//! meets are injected in front of s3s: object writes held until released (an upload in flight
//! while its writer is stopped), request bodies read at a limited rate (a slow link), requests
//! answered late, requests answered with a 5xx error, and uploads whose connection is cut
//! halfway through the body. It can also behave as S3-compatible stores that differ from AWS
//! (`store`): conditional writes ignored or answered 501, user metadata dropped, a payload
//! signing mode refused (Garage 2.5 answers aws-chunked uploads `400 Invalid payload signature`).
//!
//! ```text
//!  aws-sdk-s3 (path-style, endpoint override) ──HTTP──> hyper ──> Faults ──> s3s (auth) ──> s3s-fs ──> temp dir
//!                                                                  │ latency: every request waits first
//!                                                                  │ fail: the next n requests get 500/503 with an S3 error body
//!                                                                  │ cut: the next n writes read half their body, then the connection drops
//!                                                                  │ hold: PUT object / complete multipart wait for release
//!                                                                  │ rate: body frames paced to bytes/s
//!                                                                  │ refused payload mode: 400 InvalidRequest
//!                                                                  └ conditions 501: NotImplemented
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt as _;
use http_body_util::{BodyStream, StreamBody};

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;

use crate::runtime::ServerRuntime;
use crate::{Result, TestkitError, io_err};

mod errors;
mod policy;
mod store;

use errors::{error_response, error_with};
pub use policy::{Policy, RECORDED, test_credentials};

/// A running S3 server.
pub struct S3Server {
    port: u16,
    root: tempfile::TempDir,
    access_key: String,
    secret_key: String,
    faults: Arc<Faults>,
    _rt: ServerRuntime,
}

/// Faults injected in front of s3s.
#[derive(Debug, Default)]
struct Faults {
    /// Object writes still to hold.
    to_hold: AtomicUsize,
    /// Object writes being held now.
    held: AtomicUsize,
    /// Bumped by [`S3Server::release_writes`].
    released: tokio::sync::Notify,
    /// Request body bytes per second (0: unlimited).
    rate: AtomicU64,
    /// Requests whose body was paced at `rate`, since the start.
    paced: AtomicUsize,
    /// Milliseconds every request waits before it is served.
    latency_ms: AtomicU64,
    /// Requests still to answer with `fail_status`.
    to_fail: AtomicUsize,
    /// The status of failed requests (500 or 503).
    fail_status: AtomicU64,
    /// Writes (object or part) whose connection is still to cut mid-body.
    to_cut: AtomicUsize,
    /// Conditional writes applied as unconditional (the store ignores the headers).
    ignore_conditions: AtomicBool,
    /// Requests with `If-None-Match` or `If-Match` answered 501 NotImplemented.
    conditions_501: AtomicBool,
    /// User metadata dropped from writes.
    drop_metadata: AtomicBool,
    /// The bucket owner's demands (encryption) and the writes' object-level headers.
    policy: Policy,
    /// The start of an `x-amz-content-sha256` value (a payload signing mode) answered 400
    /// InvalidRequest.
    refused_payload: Mutex<Option<String>>,
}

/// Takes one from a countdown; false when it was already 0.
fn take_one(n: &AtomicUsize) -> bool {
    n.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok()
}

impl Faults {
    /// Whether a request writes an object: a PUT of a key (not a copy, not a part), or the
    /// completion of a multipart upload.
    fn is_object_write(req: &hyper::Request<hyper::body::Incoming>) -> bool {
        let query = req.uri().query().unwrap_or("");
        let key_path = req.uri().path().trim_start_matches('/').contains('/');
        match *req.method() {
            hyper::Method::PUT => {
                key_path && !query.contains("partNumber=") && !req.headers().contains_key("x-amz-copy-source")
            }
            hyper::Method::POST => query.contains("uploadId="),
            _ => false,
        }
    }

    async fn serve(
        self: Arc<Self>,
        service: s3s::service::S3Service,
        req: hyper::Request<hyper::body::Incoming>,
    ) -> std::result::Result<s3s::HttpResponse, s3s::HttpError> {
        let latency = self.latency_ms.load(Ordering::SeqCst);
        if latency > 0 {
            tokio::time::sleep(Duration::from_millis(latency)).await;
        }
        if let Some(refused) = self.refused(&req).or_else(|| self.policy.check(&req, Faults::is_object_write(&req))) {
            let _ = http_body_util::BodyExt::collect(req.into_body()).await;
            return Ok(refused);
        }
        if take_one(&self.to_fail) {
            // The body is read first, as a server that fails after receiving the request does.
            let _ = http_body_util::BodyExt::collect(req.into_body()).await;
            return Ok(error_response(self.fail_status.load(Ordering::SeqCst) as u16));
        }
        if (Faults::is_object_write(&req) || req.method() == hyper::Method::PUT) && take_one(&self.to_cut) {
            return Err(Self::cut(req).await);
        }
        if Faults::is_object_write(&req) && take_one(&self.to_hold) {
            // The whole request is received first: S3 has it, and serves it late (as a request
            // delayed in the network would be), whatever its writer does meanwhile.
            let (parts, body) = req.into_parts();
            let body =
                http_body_util::BodyExt::collect(body).await.map_err(|e| s3s::HttpError::new(Box::new(e)))?.to_bytes();
            let released = self.released.notified();
            self.held.fetch_add(1, Ordering::SeqCst);
            released.await;
            self.held.fetch_sub(1, Ordering::SeqCst);
            return service.call(hyper::Request::from_parts(parts, s3s::Body::from(body))).await;
        }
        // Only bodies are paced: a paced body has no exact length, and s3s asks a request
        // without a body (HEAD, GET, DELETE) for its length then (411).
        let has_body =
            req.headers().get(hyper::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).is_some_and(|v| v != "0");
        let rate = if has_body { self.rate.load(Ordering::SeqCst) } else { 0 };
        let req = if rate == 0 {
            req.map(s3s::Body::from)
        } else {
            self.paced.fetch_add(1, Ordering::SeqCst);
            req.map(|incoming| {
                let paced = BodyStream::new(incoming).then(move |frame| async move {
                    if let Ok(f) = &frame
                        && let Some(data) = f.data_ref()
                    {
                        tokio::time::sleep(Duration::from_secs_f64(data.len() as f64 / rate as f64)).await;
                    }
                    frame
                });
                s3s::Body::http_body_unsync(StreamBody::new(paced))
            })
        };
        service.call(req).await
    }

    /// The answer of a store that refuses the request as it is: its payload signing mode, or
    /// its conditional headers.
    fn refused(&self, req: &hyper::Request<hyper::body::Incoming>) -> Option<s3s::HttpResponse> {
        let mode = req.headers().get("x-amz-content-sha256").and_then(|v| v.to_str().ok()).unwrap_or("");
        let refused = self.refused_payload.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        if refused.is_some_and(|r| mode.starts_with(&r)) {
            return Some(error_with(400, "InvalidRequest", "Invalid payload signature"));
        }
        let conditional = req.headers().contains_key("if-none-match") || req.headers().contains_key("if-match");
        if conditional && self.conditions_501.load(Ordering::SeqCst) && req.method() != hyper::Method::GET {
            return Some(error_with(
                501,
                "NotImplemented",
                "A header you provided implies functionality that is not implemented",
            ));
        }
        None
    }

    /// Reads about half of a request's body, then fails the connection: hyper closes it with no
    /// response, as a cut link or a dying load balancer would.
    async fn cut(req: hyper::Request<hyper::body::Incoming>) -> s3s::HttpError {
        let declared = req
            .headers()
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        let mut body = BodyStream::new(req.into_body());
        let mut read = 0u64;
        while read < declared / 2 {
            match body.next().await {
                Some(Ok(frame)) => read += frame.data_ref().map_or(0, |d| d.len() as u64),
                _ => break,
            }
        }
        s3s::HttpError::new(Box::new(std::io::Error::new(
            std::io::ErrorKind::ConnectionAborted,
            format!("testkit cut the connection after {read} of {declared} body bytes"),
        )))
    }
}

impl std::fmt::Debug for S3Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Server").field("endpoint", &self.endpoint()).finish()
    }
}

impl S3Server {
    /// Starts the server with generated credentials.
    pub fn start() -> Result<S3Server> {
        Self::start_in(None)
    }

    /// Starts the server with its buckets in a new folder under `parent` (the system's
    /// temporary folder when `None`).
    pub fn start_in(parent: Option<&Path>) -> Result<S3Server> {
        let mut builder = tempfile::Builder::new();
        builder.prefix("zonal-s3-");
        let root = match parent {
            Some(p) => builder.tempdir_in(p),
            None => builder.tempdir(),
        }
        .map_err(io_err("create S3 root"))?;
        let (access_key, secret_key) = test_credentials();
        let fs = s3s_fs::FileSystem::new(root.path()).map_err(|e| TestkitError::Start {
            server: "s3",
            reason: format!("s3s-fs on {}: {e:?}", root.path().display()),
        })?;
        let faults = Arc::new(Faults::default());
        let service = {
            let mut b =
                S3ServiceBuilder::new(store::Store { fs, faults: faults.clone(), conditional: Default::default() });
            b.set_auth(SimpleAuth::from_single(access_key.clone(), secret_key.clone()));
            b.build()
        };
        let rt = ServerRuntime::new("testkit-s3")?;
        let (std_listener, port) = crate::runtime::bind_loopback("s3")?;
        let serving = faults.clone();
        rt.handle().spawn(async move {
            let Ok(listener) = tokio::net::TcpListener::from_std(std_listener) else { return };
            let http = ConnBuilder::new(TokioExecutor::new());
            loop {
                let Ok((socket, _)) = listener.accept().await else { continue };
                let (faults, service) = (serving.clone(), service.clone());
                let handler = hyper::service::service_fn(move |req| faults.clone().serve(service.clone(), req));
                let conn = http.serve_connection(TokioIo::new(socket), handler).into_owned();
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
        });
        Ok(S3Server { port, root, access_key, secret_key, faults, _rt: rt })
    }

    /// Holds the next `n` object writes (PUT of an object, completion of a multipart upload),
    /// received whole, until [`S3Server::release_writes`]: the writer sees an upload in flight,
    /// and S3 applies it late.
    pub fn hold_next_writes(&self, n: usize) {
        self.faults.to_hold.store(n, Ordering::SeqCst);
    }

    /// Object writes held right now.
    pub fn held_writes(&self) -> usize {
        self.faults.held.load(Ordering::SeqCst)
    }

    /// Lets every held write go on (it is then served as if it had just arrived) and holds no
    /// more.
    pub fn release_writes(&self) {
        self.faults.to_hold.store(0, Ordering::SeqCst);
        self.faults.released.notify_waiters();
    }

    /// Requests whose body has begun to be read at the upload rate: a test knows a slow upload
    /// has reached the server before it starts the next.
    pub fn paced_requests(&self) -> usize {
        self.faults.paced.load(Ordering::SeqCst)
    }

    /// Reads request bodies at `bytes_per_sec` (0: as fast as they come), as over a slow link.
    pub fn set_upload_rate(&self, bytes_per_sec: u64) {
        self.faults.rate.store(bytes_per_sec, Ordering::SeqCst);
    }

    /// Answers every request `ms` milliseconds late (0: at once).
    pub fn set_latency(&self, ms: u64) {
        self.faults.latency_ms.store(ms, Ordering::SeqCst);
    }

    /// Answers the next `n` requests, whatever they are, with `status` (500: InternalError,
    /// 503: SlowDown) and an S3 error body, after reading their body.
    pub fn fail_next_requests(&self, n: usize, status: u16) {
        self.faults.fail_status.store(u64::from(status), Ordering::SeqCst);
        self.faults.to_fail.store(n, Ordering::SeqCst);
    }

    /// Cuts the connection of the next `n` writes (object PUT, part upload, multipart
    /// completion) after about half of their body, with no response.
    pub fn cut_next_writes(&self, n: usize) {
        self.faults.to_cut.store(n, Ordering::SeqCst);
    }

    /// Applies conditional writes (`If-None-Match: *`, `If-Match`) as if they had no condition,
    /// replacing the object, as a store that ignores the headers does.
    pub fn ignore_conditional_writes(&self, on: bool) {
        self.faults.ignore_conditions.store(on, Ordering::SeqCst);
    }

    /// Answers writes carrying `If-None-Match` or `If-Match` with 501 NotImplemented.
    pub fn answer_conditions_501(&self, on: bool) {
        self.faults.conditions_501.store(on, Ordering::SeqCst);
    }

    /// Drops user metadata (`x-amz-meta-*`) from writes.
    pub fn drop_metadata(&self, on: bool) {
        self.faults.drop_metadata.store(on, Ordering::SeqCst);
    }

    /// Refuses requests whose `x-amz-content-sha256` starts with `mode` (`STREAMING-` for every
    /// aws-chunked variant, `UNSIGNED-PAYLOAD`, ...) with `400 InvalidRequest: Invalid payload
    /// signature`, as Garage 2.5 does for aws-chunked uploads; `None` takes every mode again.
    pub fn refuse_payload_mode(&self, mode: Option<&str>) {
        *self.faults.refused_payload.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
            mode.map(str::to_owned);
    }

    /// Requests still to fail and writes still to cut (faults armed but not yet met).
    pub fn pending_faults(&self) -> usize {
        self.faults.to_fail.load(Ordering::SeqCst) + self.faults.to_cut.load(Ordering::SeqCst)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// What the bucket owner demands of writes, and the headers they carried.
    pub fn policy(&self) -> &Policy {
        &self.faults.policy
    }

    /// Access key id accepted by the server.
    pub fn access_key(&self) -> &str {
        &self.access_key
    }

    /// Secret key accepted by the server.
    pub fn secret_key(&self) -> &str {
        &self.secret_key
    }

    /// Region to sign with (any works; this one is used consistently).
    pub fn region(&self) -> &str {
        "us-east-1"
    }

    /// The directory holding the buckets.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// Creates a bucket (a directory, which is what s3s-fs serves as one).
    pub fn create_bucket(&self, name: &str) -> Result<PathBuf> {
        let dir = self.root.path().join(name);
        std::fs::create_dir_all(&dir).map_err(io_err(format!("create bucket {name}")))?;
        Ok(dir)
    }

    /// Every object key in a bucket, sorted, read straight from the backing directory.
    pub fn list_keys(&self, bucket: &str) -> Result<Vec<String>> {
        fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) -> std::io::Result<()> {
            for entry in std::fs::read_dir(dir)? {
                let entry = entry?;
                let path = entry.path();
                if entry.file_type()?.is_dir() {
                    walk(base, &path, out)?;
                } else if let Ok(rel) = path.strip_prefix(base) {
                    let key = rel.to_string_lossy().into_owned();
                    // s3s-fs keeps upload scratch files and metadata beside objects.
                    if !key.starts_with(".") && !key.contains("/.") {
                        out.push(key);
                    }
                }
            }
            Ok(())
        }
        let base = self.root.path().join(bucket);
        let mut out = Vec::new();
        walk(&base, &base, &mut out).map_err(io_err(format!("list bucket {bucket}")))?;
        out.sort();
        Ok(out)
    }
}
