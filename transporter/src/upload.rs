//! Uploading objects to S3 so that a stale owner cannot corrupt them: every write is
//! conditional (`If-None-Match: *` on the PUT and on the multipart completion), so S3 itself
//! refuses to replace an object; the object's metadata names its offsets, so whoever meets an
//! existing object knows where it ends. Retried with backoff for as long as the lease is valid,
//! following its renewals; multipart uploads are aborted on every failure.
//!
//! ```text
//!  Finished { body } ──key──> put_object | create_multipart → upload_part* → complete
//!       (If-None-Match: *, x-amz-meta-zonal-*: topic, partition, from/first/last offset, records, gaps)
//!    200 ──> Written
//!    412 ──> HEAD ──> Exists { span, etag } (a previous owner's object, or our own earlier try)
//!    an object without offsets (older version) ──> replaced deliberately: If-Match: <etag>
//!    error ──> retry with backoff while the lease holds; lease lost ──> stop (abort multipart)
//!    an attempt slower than s3.upload-min-bytes-per-sec ──> given up and retried
//! ```
//!
//! Bodies are signed as `s3.upload-signing` says: stores differ in which of the SDK's signing
//! and checksum modes they accept, so the mode is chosen, not left to the SDK's default. With
//! `s3.checksum-algorithm`, each body's checksum is computed from the file first (`checksum`).

use std::time::Duration;

use anyhow::{Context, bail};
use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use tokio::sync::watch;

use crate::config::{S3Config, UploadSigning};
use crate::continuity::ObjectSpan;
use crate::coord::LeaseState;
use checksum::WithChecksum as _;

/// An object's bytes: a file of `size` bytes, streamed from disk (a part at a time for
/// multipart uploads), so that uploading holds no object in memory.
#[derive(Debug, Clone, Copy)]
pub struct Body<'a> {
    /// The file.
    pub path: &'a std::path::Path,
    /// Its size.
    pub size: u64,
}

impl Body<'_> {
    fn len(&self) -> u64 {
        self.size
    }

    /// `len` bytes from `offset`, as a request body: streamed from the file, or read into
    /// memory when the payload is signed (its SHA-256 is computed before the request).
    async fn stream(&self, offset: u64, len: u64, signing: UploadSigning) -> anyhow::Result<ByteStream> {
        if signing == UploadSigning::SignedPayload {
            use tokio::io::{AsyncReadExt, AsyncSeekExt};
            let mut f = tokio::fs::File::open(self.path)
                .await
                .with_context(|| format!("opening {} for upload", self.path.display()))?;
            f.seek(std::io::SeekFrom::Start(offset)).await?;
            let mut buf = vec![0; usize::try_from(len)?];
            f.read_exact(&mut buf).await.with_context(|| format!("reading {} for upload", self.path.display()))?;
            return Ok(ByteStream::from(buf));
        }
        ByteStream::read_from()
            .path(self.path)
            .offset(offset)
            .length(aws_sdk_s3::primitives::Length::Exact(len))
            .build()
            .await
            .with_context(|| format!("reading {} for upload", self.path.display()))
    }
}

/// Multipart part size: the most an upload holds in memory (parts are read from disk).
pub const PART: usize = 8 * 1024 * 1024;
/// An object's metadata (`x-amz-meta-…`), from [`crate::continuity::Span::to_meta`].
pub type Meta = [(&'static str, String)];

/// Builds the S3 client: credentials from aws-config's default chain (environment, profile,
/// web identity, instance role), region and endpoint from the config when set.
pub async fn client(cfg: &S3Config) -> Client {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(r) = &cfg.region {
        loader = loader.region(aws_config::Region::new(r.clone()));
    }
    let shared = loader.load().await;
    let mut b = aws_sdk_s3::config::Builder::from(&shared).force_path_style(cfg.path_style);
    b = with_signing(b, cfg.upload_signing);
    if let Some(e) = &cfg.endpoint {
        b = b.endpoint_url(e);
    }
    if shared.region().is_none() {
        b = b.region(aws_config::Region::new("us-east-1"));
    }
    Client::from_conf(b.build())
}

/// Sets the checksum mode `signing` needs: a checksum only where an operation requires one,
/// except for `aws-chunked`, where the SDK's default (a trailing CRC32) is the point. Stalled
/// uploads are left to the attempt deadline ([`attempt_deadline`]), which knows the object's
/// size, rather than the SDK's fixed grace period.
pub fn with_signing(b: aws_sdk_s3::config::Builder, signing: UploadSigning) -> aws_sdk_s3::config::Builder {
    use aws_sdk_s3::config::{RequestChecksumCalculation, StalledStreamProtectionConfig};
    let checksum = match signing {
        UploadSigning::AwsChunked => RequestChecksumCalculation::WhenSupported,
        UploadSigning::UnsignedPayload | UploadSigning::SignedPayload => RequestChecksumCalculation::WhenRequired,
    };
    b.request_checksum_calculation(checksum).stalled_stream_protection(
        StalledStreamProtectionConfig::enabled().upload_enabled(false).grace_period(Duration::from_secs(20)).build(),
    )
}

/// How long one attempt to upload `size` bytes may take.
pub fn attempt_deadline(cfg: &S3Config, size: u64) -> Duration {
    Duration::from_secs(cfg.upload_attempt_min_secs.max(size / cfg.upload_min_bytes_per_sec.max(1)))
}

/// How an upload ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The object was written.
    Written,
    /// An object was already at the key (S3 refused to replace it); its metadata says what
    /// it covers, as far as it says.
    Exists {
        /// What the existing object's metadata says.
        span: ObjectSpan,
        /// Its ETag, for a deliberate replace ([`Condition::Replace`]).
        etag: Option<String>,
    },
}

/// When S3 may write the object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// Only if no object is at the key (`If-None-Match: *`).
    Create,
    /// Only if the object at the key is still this one (`If-Match: <etag>`): replacing an
    /// object whose metadata does not say where it ends (written before offsets were kept).
    Replace(String),
}

/// Uploads `body` under `key` unless an object is already there, retrying while `lease` is
/// valid (its renewals extend the time allowed; its loss stops the upload at once).
pub async fn upload(
    client: &Client,
    cfg: &S3Config,
    key: &str,
    body: Body<'_>,
    meta: &Meta,
    condition: &Condition,
    lease: &watch::Receiver<LeaseState>,
) -> anyhow::Result<Uploaded> {
    let mut backoff = Duration::from_millis(100);
    let mut attempt = 0;
    let mut refused = 0;
    let deadline = attempt_deadline(cfg, body.len());
    loop {
        attempt += 1;
        if !lease.borrow().valid() {
            bail!("upload of {key} stopped: the lease is no longer valid ({attempt} attempts)");
        }
        let result = tokio::select! {
            r = tokio::time::timeout(deadline, once(client, cfg, key, body, meta, condition)) => match r {
                Ok(r) => r,
                Err(_) => Err(anyhow::anyhow!(
                    "the attempt took over {} s for {} bytes (s3.upload-min-bytes-per-sec = {})",
                    deadline.as_secs(), body.len(), cfg.upload_min_bytes_per_sec
                )),
            },
            () = lease_lost(lease.clone()) => bail!("upload of {key} stopped: the lease was lost while it ran"),
        };
        match result {
            Ok(outcome) => return Ok(Uploaded { outcome, attempts: attempt }),
            Err(e) => {
                // A refusal that does not go away by itself (a 4xx other than a timeout or
                // throttling: a signature, a permission, a bad request) is not retried forever:
                // after a few tries it fails the roll, which shows in /readyz.
                if let Some(status) = e.downcast_ref::<Refused>().map(|r| r.status) {
                    refused += 1;
                    if refused >= MAX_REFUSED {
                        return Err(e.context(format!(
                            "S3 refused the upload of {key} {refused} times with HTTP {status}; not retried further"
                        )));
                    }
                } else {
                    refused = 0;
                }
                tracing::warn!(key, attempt, error = %format!("{e:#}"), "upload failed; retrying");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = lease_lost(lease.clone()) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// How an upload ended, and after how many attempts (each a full send of the body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uploaded {
    /// The outcome.
    pub outcome: Outcome,
    /// Attempts made, the last one included.
    pub attempts: u32,
}

/// Resolves when the lease is lost or expires without renewal.
async fn lease_lost(mut lease: watch::Receiver<LeaseState>) {
    loop {
        let state = *lease.borrow_and_update();
        if !state.valid() {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep_until(state.valid_until.into()) => {}
            changed = lease.changed() => {
                if changed.is_err() {
                    // The keepalive task is gone: nothing renews the lease any more.
                    tokio::time::sleep_until(state.valid_until.into()).await;
                    return;
                }
            }
        }
    }
}

/// What the object at `key` covers, from its metadata (after S3 refused to replace it, or
/// found by `siblings`).
pub(crate) async fn existing(client: &Client, cfg: &S3Config, key: &str) -> anyhow::Result<Outcome> {
    let head = client
        .head_object()
        .bucket(&cfg.bucket)
        .key(key)
        .send()
        .await
        .with_context(|| format!("HEAD s3://{}/{key}", cfg.bucket))?;
    let meta: std::collections::BTreeMap<String, String> =
        head.metadata().map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()).unwrap_or_default();
    Ok(Outcome::Exists { span: ObjectSpan::from_meta(&meta), etag: head.e_tag().map(str::to_owned) })
}

async fn once(
    client: &Client,
    cfg: &S3Config,
    key: &str,
    body: Body<'_>,
    meta: &Meta,
    condition: &Condition,
) -> anyhow::Result<Outcome> {
    let (if_none_match, if_match) = match condition {
        Condition::Create => (Some("*".to_owned()), None),
        Condition::Replace(etag) => (None, Some(etag.clone())),
    };
    let size = body.len();
    if size <= cfg.multipart_threshold_bytes as u64 {
        let stream = body.stream(0, size, cfg.upload_signing).await?;
        let sum = checksum::of_file(cfg.checksum_algorithm, body.path, 0, size).await?;
        let mut put = cfg
            .object_settings()
            .on_put(client.put_object())
            .bucket(&cfg.bucket)
            .key(key)
            .set_if_none_match(if_none_match.clone())
            .set_if_match(if_match.clone())
            .with_checksum(cfg.checksum_algorithm, sum)
            .body(stream);
        for (k, v) in meta {
            put = put.metadata(*k, v);
        }
        return match put.send().await {
            Ok(_) => Ok(Outcome::Written),
            Err(e) if precondition_failed(&e) => existing(client, cfg, key).await,
            Err(e) => {
                Err(refusal(status_of(&e), anyhow::Error::new(e).context(format!("PUT s3://{}/{key}", cfg.bucket))))
            }
        };
    }
    multipart(client, cfg, key, body, meta, (if_none_match, if_match)).await
}

/// The multipart path of [`once`]: create (with the metadata), parts read from the file,
/// completion under the condition; aborted on every way out but success.
async fn multipart(
    client: &Client,
    cfg: &S3Config,
    key: &str,
    body: Body<'_>,
    meta: &Meta,
    (if_none_match, if_match): (Option<String>, Option<String>),
) -> anyhow::Result<Outcome> {
    let size = body.len();
    let mut create = cfg.object_settings().on_create(client.create_multipart_upload()).bucket(&cfg.bucket).key(key);
    for (k, v) in meta {
        create = create.metadata(*k, v);
    }
    let created = create.send().await.map_err(|e| {
        refusal(
            status_of(&e),
            anyhow::Error::new(e).context(format!("starting multipart upload of s3://{}/{key}", cfg.bucket)),
        )
    })?;
    let upload_id = created.upload_id().context("S3 returned no upload id")?.to_owned();
    // Aborted on every way out but success, including this future being dropped (the lease
    // was lost): the guard spawns the abort.
    let mut guard = AbortGuard {
        client: client.clone(),
        bucket: cfg.bucket.clone(),
        key: key.to_owned(),
        upload_id: Some(upload_id.clone()),
    };
    let mut parts = Vec::new();
    for (i, offset) in (0..size).step_by(PART).enumerate() {
        let n = i32::try_from(i + 1)?;
        let len = (size - offset).min(PART as u64);
        let stream = body.stream(offset, len, cfg.upload_signing).await?;
        let sum = checksum::of_file(cfg.checksum_algorithm, body.path, offset, len).await?;
        let part = client
            .upload_part()
            .bucket(&cfg.bucket)
            .key(key)
            .upload_id(&upload_id)
            .part_number(n)
            .with_checksum(cfg.checksum_algorithm, sum.clone())
            .body(stream)
            .send()
            .await
            .map_err(|e| {
                refusal(status_of(&e), anyhow::Error::new(e).context(format!("uploading part {n} of {key}")))
            })?;
        let done = CompletedPart::builder().part_number(n).set_e_tag(part.e_tag().map(str::to_owned));
        parts.push(done.with_checksum(cfg.checksum_algorithm, sum).build());
    }
    let completed = client
        .complete_multipart_upload()
        .bucket(&cfg.bucket)
        .key(key)
        .upload_id(&upload_id)
        .set_if_none_match(if_none_match)
        .set_if_match(if_match)
        .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
        .send()
        .await;
    match completed {
        Ok(_) => {
            guard.upload_id = None;
            Ok(Outcome::Written)
        }
        Err(e) if precondition_failed(&e) => existing(client, cfg, key).await,
        Err(e) => {
            Err(refusal(status_of(&e), anyhow::Error::new(e).context(format!("completing multipart upload of {key}"))))
        }
    }
}

/// Aborts a multipart upload that did not complete (S3 keeps and bills unfinished parts until a
/// lifecycle rule removes them).
struct AbortGuard {
    client: Client,
    bucket: String,
    key: String,
    upload_id: Option<String>,
}

impl Drop for AbortGuard {
    fn drop(&mut self) {
        let Some(upload_id) = self.upload_id.take() else { return };
        let (client, bucket, key) = (self.client.clone(), self.bucket.clone(), self.key.clone());
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(e) =
                    client.abort_multipart_upload().bucket(&bucket).key(&key).upload_id(&upload_id).send().await
                {
                    tracing::warn!(key, error = %e, "aborting a multipart upload failed; a lifecycle rule removes it");
                }
            });
        }
    }
}

pub mod checksum;
pub mod deployment;
pub mod probe;
mod refusal;
pub mod siblings;

pub use refusal::{MAX_REFUSED, Refused};
use refusal::{brief, precondition_failed, refusal, status_of};

#[cfg(test)]
mod tests;
