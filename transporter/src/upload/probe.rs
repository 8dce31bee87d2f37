//! The startup probe of the S3 store: before a worker reads anything, it checks that the store
//! takes uploads signed the configured way, refuses to replace an object on `If-None-Match: *`
//! (on PUT and on multipart completion), answers HEAD, and keeps user metadata. Stores differ
//! in each of these (Garage 2.5 refuses aws-chunked bodies and ignores `If-None-Match`), and a
//! worker that starts on a store that lacks one would retry forever or rewrite silently.
//!
//! ```text
//!  PUT probe (If-None-Match: *, x-amz-meta-zonal-probe) ──refused──> "set s3.upload-signing"
//!  PUT probe again (If-None-Match: *) ──200──> ignores conditions ──501──> does not implement them
//!  HEAD probe ──no zonal-probe metadata──> drops metadata
//!  multipart at the probe's key, completed with If-None-Match: * ──200──> ignores it on completion
//!  DELETE probe (a policy may deny it: then it stays, and says what it was)
//! ```

use std::collections::BTreeMap;

use anyhow::Context;
use aws_sdk_s3::Client;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};

use super::checksum::{self, WithChecksum as _};
use super::{Body, Refused, brief, precondition_failed, refusal, status_of};
use crate::config::S3Config;

/// What the store did with each thing the transporter relies on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Probed {
    /// A second conditional PUT was refused (412).
    pub conditional_put: Option<bool>,
    /// A conditional multipart completion over an existing object was refused.
    pub conditional_complete: Option<bool>,
    /// User metadata came back on HEAD.
    pub keeps_metadata: bool,
    /// What the store answered where it did not behave, for the message.
    pub notes: Vec<String>,
}

impl Probed {
    /// Whether fencing by the store holds: both conditional writes refused.
    pub fn conditional(&self) -> bool {
        self.conditional_put == Some(true) && self.conditional_complete == Some(true)
    }
}

const PROBE_META: &str = "zonal-probe";

/// The folder under `s3.prefix` that probe objects are written to (and deleted from); readers
/// of the bucket skip it.
pub const PROBE_DIR: &str = "_zonal-probe";

/// How long the probe tries again after errors that may pass (5xx, timeouts, connections).
const PROBE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(60);

/// Probes the store with objects under `{prefix}/_zonal-probe/`. Errors are what the
/// transporter cannot work without at all (an upload refused, HEAD refused); the rest is in
/// [`Probed`] for the caller's policy. Errors that may pass are tried again for a minute.
pub async fn probe(client: &Client, cfg: &S3Config, dir: &std::path::Path, id: &str) -> anyhow::Result<Probed> {
    let started = std::time::Instant::now();
    let mut wait = std::time::Duration::from_millis(200);
    loop {
        match probe_once(client, cfg, dir, id).await {
            Ok(p) => return Ok(p),
            Err(e) if e.downcast_ref::<Refused>().is_some() || started.elapsed() > PROBE_PATIENCE => return Err(e),
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "probing the S3 store failed; trying again"),
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(std::time::Duration::from_secs(5));
    }
}

async fn probe_once(client: &Client, cfg: &S3Config, dir: &std::path::Path, id: &str) -> anyhow::Result<Probed> {
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
    let key = format!("{}/{PROBE_DIR}/{id}-{stamp}", cfg.prefix.trim_end_matches('/'));
    let path = dir.join(".probe");
    std::fs::write(&path, b"zonal-transporter store probe\n").with_context(|| format!("writing {}", path.display()))?;
    let body = Body { path: &path, size: 30 };
    let result = run(client, cfg, &key, body).await;
    let _ = std::fs::remove_file(&path);
    if let Err(e) = client.delete_object().bucket(&cfg.bucket).key(&key).send().await {
        tracing::warn!(key, error = %e, "could not delete the store probe object; it is harmless and can be removed");
    }
    result
}

async fn run(client: &Client, cfg: &S3Config, key: &str, body: Body<'_>) -> anyhow::Result<Probed> {
    let bucket = &cfg.bucket;
    // The probe's writes carry the objects' settings, so that a bucket policy demanding
    // encryption refuses the probe (and the start) rather than every upload.
    let put = |if_none_match: bool| async move {
        let mut put = cfg
            .object_settings()
            .on_put(client.put_object())
            .bucket(bucket)
            .key(key)
            .metadata(PROBE_META, "1")
            .with_checksum(
                cfg.checksum_algorithm,
                checksum::of_file(cfg.checksum_algorithm, body.path, 0, body.size).await?,
            )
            .body(body.stream(0, body.size, cfg.upload_signing).await?);
        if if_none_match {
            put = put.if_none_match("*");
        }
        anyhow::Ok(put.send().await)
    };
    // Unconditional first: this one tries the signing mode and the objects' settings alone.
    put(false).await?.map_err(|e| {
        let what = brief(&e);
        let err =
            anyhow::anyhow!("S3 refused an upload to s3://{bucket}/{key} ({what}); {}", refused_because(cfg, &what));
        refusal(status_of(&e), err)
    })?;
    let mut p = Probed::default();
    match put(true).await? {
        Ok(_) => {
            p.conditional_put = Some(false);
            p.notes.push("a second PUT with If-None-Match: * replaced the object".into());
        }
        Err(e) if precondition_failed(&e) => p.conditional_put = Some(true),
        Err(e) => p.notes.push(format!("a PUT with If-None-Match: * was answered {} instead of 412", brief(&e))),
    }
    let head = client
        .head_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| {
            let status = status_of(&e);
            refusal(status, anyhow::Error::new(e).context(format!("HEAD s3://{bucket}/{key}: the worker reads an existing object's metadata by HEAD, which its policy must allow")))
        })?;
    let meta: BTreeMap<&str, &str> =
        head.metadata().map(|m| m.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()).unwrap_or_default();
    p.keeps_metadata = meta.get(PROBE_META) == Some(&"1");
    if !p.keeps_metadata {
        p.notes.push("user metadata (x-amz-meta-*) was not kept".into());
    }
    p.conditional_complete = Some(conditional_completion(client, cfg, key, body, &mut p.notes).await?);
    Ok(p)
}

/// Refuses to start on a store that does not take the configured uploads, answer HEAD with
/// metadata, or (unless allowed) refuse conditional overwrites: each would otherwise show only
/// later, as uploads retried forever or objects rewritten silently.
/// What to change when the store refused a plain upload, from its answer: the storage class,
/// the encryption (a bucket policy, a KMS key the credentials may not use) or the signing mode.
fn refused_because(cfg: &S3Config, answer: &str) -> String {
    if answer.contains("StorageClass") {
        format!(
            "s3.storage-class = {:?} is not one this store takes (many S3-compatible stores take only STANDARD)",
            cfg.storage_class.as_deref().unwrap_or("STANDARD")
        )
    } else if answer.contains("Encryption") || answer.contains("KMS") || answer.contains("AccessDenied") {
        format!(
            "check s3.server-side-encryption = {:?} (and s3.sse-kms-key-id) against the bucket's policy, and that the credentials may write there and use the key",
            cfg.server_side_encryption
        )
    } else {
        format!(
            "it was signed as s3.upload-signing = {:?}, and stores differ in the signing modes they take: try \"unsigned-payload\" or \"signed-payload\"",
            cfg.upload_signing
        )
    }
}

pub async fn check_store(s3: &S3Config, client: &Client, dir: &std::path::Path, id: &str) -> anyhow::Result<()> {
    let p = probe(client, s3, dir, id).await.context("probing the S3 store (s3.probe-on-start)")?;
    if !p.keeps_metadata {
        anyhow::bail!(
            "the S3 store at {} drops user metadata (x-amz-meta-*): objects could not prove which offsets they hold; it cannot be used",
            s3.endpoint.as_deref().unwrap_or("AWS")
        );
    }
    if !p.conditional() {
        let what = p.notes.join("; ");
        if s3.require_conditional_writes {
            anyhow::bail!(
                "the S3 store at {} does not honour conditional writes ({what}): a stalled worker could replace a newer object. Set s3.require-conditional-writes = false to run with fencing by etcd alone (docs/guarantees.md: S3 stores)",
                s3.endpoint.as_deref().unwrap_or("AWS")
            );
        }
        tracing::warn!(
            store = s3.endpoint.as_deref().unwrap_or("AWS"),
            what,
            "the S3 store does not honour conditional writes; running with fencing by etcd alone (s3.require-conditional-writes = false)"
        );
    } else {
        tracing::info!(signing = ?s3.upload_signing, "S3 store probed: uploads, conditional writes and metadata as required");
    }
    Ok(())
}

/// A multipart upload at `key` (which exists) completed with `If-None-Match: *`: true when the
/// store refuses it, as S3 does.
async fn conditional_completion(
    client: &Client,
    cfg: &S3Config,
    key: &str,
    body: Body<'_>,
    notes: &mut Vec<String>,
) -> anyhow::Result<bool> {
    let bucket = &cfg.bucket;
    let created = cfg
        .object_settings()
        .on_create(client.create_multipart_upload())
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .with_context(|| format!("starting a multipart upload of s3://{bucket}/{key}"))?;
    let id = created.upload_id().context("S3 returned no upload id")?.to_owned();
    let sum = checksum::of_file(cfg.checksum_algorithm, body.path, 0, body.size).await?;
    let part = client
        .upload_part()
        .bucket(bucket)
        .key(key)
        .upload_id(&id)
        .part_number(1)
        .with_checksum(cfg.checksum_algorithm, sum.clone())
        .body(body.stream(0, body.size, cfg.upload_signing).await?)
        .send()
        .await;
    let part = match part {
        Ok(p) => p,
        Err(e) => {
            let _ = client.abort_multipart_upload().bucket(bucket).key(key).upload_id(&id).send().await;
            return Err(e).with_context(|| format!("uploading a part of s3://{bucket}/{key}"));
        }
    };
    let done = CompletedPart::builder().part_number(1).set_e_tag(part.e_tag().map(str::to_owned));
    let parts = vec![done.with_checksum(cfg.checksum_algorithm, sum).build()];
    let completed = client
        .complete_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(&id)
        .if_none_match("*")
        .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
        .send()
        .await;
    let refused = match completed {
        Ok(_) => {
            notes.push("a multipart completion with If-None-Match: * replaced the object".into());
            false
        }
        Err(e) => {
            // A refused completion leaves the upload open: abort it.
            let _ = client.abort_multipart_upload().bucket(bucket).key(key).upload_id(&id).send().await;
            if precondition_failed(&e) {
                true
            } else {
                notes.push(format!(
                    "a multipart completion with If-None-Match: * was answered {} instead of 412",
                    brief(&e)
                ));
                false
            }
        }
    };
    Ok(refused)
}
