//! An embedded S3-compatible server (s3s + s3s-fs) on a free loopback port, with real SigV4
//! credential checks, serving buckets as directories of a temporary folder.
//!
//! ```text
//!  aws-sdk-s3 (path-style, endpoint override) ──HTTP──> hyper ──> s3s (auth) ──> s3s-fs ──> temp dir
//! ```

use std::path::{Path, PathBuf};

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;

use crate::runtime::ServerRuntime;
use crate::{Result, TestkitError, io_err};

/// A running S3 server.
pub struct S3Server {
    port: u16,
    root: tempfile::TempDir,
    access_key: String,
    secret_key: String,
    _rt: ServerRuntime,
}

impl std::fmt::Debug for S3Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Server").field("endpoint", &self.endpoint()).finish()
    }
}

impl S3Server {
    /// Starts the server with generated credentials.
    pub fn start() -> Result<S3Server> {
        let root = tempfile::Builder::new().prefix("zonal-s3-").tempdir().map_err(io_err("create S3 root"))?;
        let access_key = "zonal-test-access".to_owned();
        let secret_key = format!("zonal-test-secret-{}", std::process::id());
        let fs = s3s_fs::FileSystem::new(root.path()).map_err(|e| TestkitError::Start {
            server: "s3",
            reason: format!("s3s-fs on {}: {e:?}", root.path().display()),
        })?;
        let service = {
            let mut b = S3ServiceBuilder::new(fs);
            b.set_auth(SimpleAuth::from_single(access_key.clone(), secret_key.clone()));
            b.build()
        };
        let rt = ServerRuntime::new("testkit-s3")?;
        let (std_listener, port) = crate::runtime::bind_loopback("s3")?;
        rt.handle().spawn(async move {
            let Ok(listener) = tokio::net::TcpListener::from_std(std_listener) else { return };
            let http = ConnBuilder::new(TokioExecutor::new());
            loop {
                let Ok((socket, _)) = listener.accept().await else { continue };
                let conn = http.serve_connection(TokioIo::new(socket), service.clone()).into_owned();
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
        });
        Ok(S3Server { port, root, access_key, secret_key, _rt: rt })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
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
