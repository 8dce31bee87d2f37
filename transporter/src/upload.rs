//! Uploading objects to S3 so that a stale owner cannot corrupt them: every write is
//! conditional (`If-None-Match: *` on the PUT and on the multipart completion), so S3 itself
//! refuses to replace an object; the object's metadata names its offsets, so whoever meets an
//! existing object knows where it ends. Retried with backoff for as long as the lease is valid,
//! following its renewals; multipart uploads are aborted on every failure.
//!
//! ```text
//!  Finished { body } ──key──> put_object | create_multipart → upload_part* → complete
//!       (If-None-Match: *, x-amz-meta-zonal-first-offset/-last-offset/-records)
//!    200 ──> Written
//!    412 ──> HEAD ──> Exists { last_offset, etag } (a previous owner's object, or our own earlier try)
//!    an object without offsets (older version) ──> replaced deliberately: If-Match: <etag>
//!    error ──> retry with backoff while the lease holds; lease lost ──> stop (abort multipart)
//! ```

use std::time::Duration;

use anyhow::{Context, bail};
use aws_sdk_s3::Client;
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use tokio::sync::watch;

use crate::config::S3Config;
use crate::coord::LeaseState;

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

    /// `len` bytes from `offset`, as a request body.
    async fn stream(&self, offset: u64, len: u64) -> anyhow::Result<ByteStream> {
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
/// Object metadata keys (sent as `x-amz-meta-…`).
pub const META_FIRST_OFFSET: &str = "zonal-first-offset";
/// The offset of the object's last record.
pub const META_LAST_OFFSET: &str = "zonal-last-offset";
/// Records in the object.
pub const META_RECORDS: &str = "zonal-records";

/// Builds the S3 client: credentials from aws-config's default chain (environment, profile,
/// web identity, instance role), region and endpoint from the config when set.
pub async fn client(cfg: &S3Config) -> Client {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(r) = &cfg.region {
        loader = loader.region(aws_config::Region::new(r.clone()));
    }
    let shared = loader.load().await;
    let mut b = aws_sdk_s3::config::Builder::from(&shared).force_path_style(cfg.path_style);
    if let Some(e) = &cfg.endpoint {
        b = b.endpoint_url(e);
    }
    if shared.region().is_none() {
        b = b.region(aws_config::Region::new("us-east-1"));
    }
    Client::from_conf(b.build())
}

/// What an object holds, written as its metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// Offset of the first record.
    pub first_offset: i64,
    /// Offset of the last record.
    pub last_offset: i64,
    /// Number of records.
    pub records: u64,
}

/// How an upload ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The object was written.
    Written,
    /// An object was already at the key (S3 refused to replace it); it ends at `last_offset`
    /// when its metadata says so.
    Exists {
        /// The existing object's last offset, from its metadata.
        last_offset: Option<i64>,
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
    span: Span,
    condition: &Condition,
    lease: &watch::Receiver<LeaseState>,
) -> anyhow::Result<Outcome> {
    let mut backoff = Duration::from_millis(100);
    let mut attempt = 0;
    loop {
        attempt += 1;
        if !lease.borrow().valid() {
            bail!("upload of {key} stopped: the lease is no longer valid ({attempt} attempts)");
        }
        let result = tokio::select! {
            r = once(client, cfg, key, body, span, condition) => r,
            () = lease_lost(lease.clone()) => bail!("upload of {key} stopped: the lease was lost while it ran"),
        };
        match result {
            Ok(outcome) => return Ok(outcome),
            Err(e) => tracing::warn!(key, attempt, error = %format!("{e:#}"), "upload failed; retrying"),
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = lease_lost(lease.clone()) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
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

fn precondition_failed<E: ProvideErrorMetadata>(e: &aws_sdk_s3::error::SdkError<E>) -> bool {
    e.as_service_error().and_then(ProvideErrorMetadata::code) == Some("PreconditionFailed")
        || e.raw_response().is_some_and(|r| r.status().as_u16() == 412)
}

/// The last offset of the object at `key`, from its metadata.
async fn existing(client: &Client, cfg: &S3Config, key: &str) -> anyhow::Result<Outcome> {
    let head = client
        .head_object()
        .bucket(&cfg.bucket)
        .key(key)
        .send()
        .await
        .with_context(|| format!("HEAD s3://{}/{key} after S3 refused to replace it", cfg.bucket))?;
    let last_offset = head.metadata().and_then(|m| m.get(META_LAST_OFFSET)).and_then(|v| v.parse().ok());
    Ok(Outcome::Exists { last_offset, etag: head.e_tag().map(str::to_owned) })
}

async fn once(
    client: &Client,
    cfg: &S3Config,
    key: &str,
    body: Body<'_>,
    span: Span,
    condition: &Condition,
) -> anyhow::Result<Outcome> {
    let (if_none_match, if_match) = match condition {
        Condition::Create => (Some("*".to_owned()), None),
        Condition::Replace(etag) => (None, Some(etag.clone())),
    };
    let meta = [
        (META_FIRST_OFFSET, span.first_offset.to_string()),
        (META_LAST_OFFSET, span.last_offset.to_string()),
        (META_RECORDS, span.records.to_string()),
    ];
    let size = body.len();
    if size <= cfg.multipart_threshold_bytes as u64 {
        let stream = body.stream(0, size).await?;
        let mut put = client
            .put_object()
            .bucket(&cfg.bucket)
            .key(key)
            .set_if_none_match(if_none_match.clone())
            .set_if_match(if_match.clone())
            .body(stream);
        for (k, v) in &meta {
            put = put.metadata(*k, v);
        }
        return match put.send().await {
            Ok(_) => Ok(Outcome::Written),
            Err(e) if precondition_failed(&e) => existing(client, cfg, key).await,
            Err(e) => Err(e).with_context(|| format!("PUT s3://{}/{key}", cfg.bucket)),
        };
    }
    let mut create = client.create_multipart_upload().bucket(&cfg.bucket).key(key);
    for (k, v) in &meta {
        create = create.metadata(*k, v);
    }
    let created =
        create.send().await.with_context(|| format!("starting multipart upload of s3://{}/{key}", cfg.bucket))?;
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
        let stream = body.stream(offset, (size - offset).min(PART as u64)).await?;
        let part = client
            .upload_part()
            .bucket(&cfg.bucket)
            .key(key)
            .upload_id(&upload_id)
            .part_number(n)
            .body(stream)
            .send()
            .await
            .with_context(|| format!("uploading part {n} of {key}"))?;
        parts.push(CompletedPart::builder().part_number(n).set_e_tag(part.e_tag().map(str::to_owned)).build());
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
        Err(e) => Err(e).with_context(|| format!("completing multipart upload of {key}")),
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

#[cfg(test)]
mod tests;
