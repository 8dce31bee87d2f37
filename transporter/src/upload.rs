//! Uploading objects to S3: one PUT, or a multipart upload above the threshold; retried with
//! exponential backoff; never past a deadline (the lease's), so that an owner that may have lost
//! its partition cannot land an object after the next owner started.
//!
//! ```text
//!  Finished { body } ──key──> put_object | create_multipart → upload_part* → complete
//!                              (abort on failure)     retry with backoff until `deadline`
//! ```

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};

use crate::config::S3Config;

const PART: usize = 8 * 1024 * 1024;

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

/// Uploads `body` under `key`, retrying until it succeeds or `deadline` passes.
pub async fn upload(client: &Client, cfg: &S3Config, key: &str, body: &[u8], deadline: Instant) -> anyhow::Result<()> {
    let mut backoff = Duration::from_millis(100);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!("upload of {key} not done before the lease deadline ({attempt} attempts)");
        }
        let result = tokio::time::timeout(left, once(client, cfg, key, body)).await;
        match result {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => tracing::warn!(key, attempt, error = %format!("{e:#}"), "upload failed; retrying"),
            Err(_) => bail!("upload of {key} not done before the lease deadline"),
        }
        tokio::time::sleep(backoff.min(deadline.saturating_duration_since(Instant::now()))).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

async fn once(client: &Client, cfg: &S3Config, key: &str, body: &[u8]) -> anyhow::Result<()> {
    if body.len() <= cfg.multipart_threshold_bytes {
        client
            .put_object()
            .bucket(&cfg.bucket)
            .key(key)
            .body(ByteStream::from(body.to_vec()))
            .send()
            .await
            .with_context(|| format!("PUT s3://{}/{key}", cfg.bucket))?;
        return Ok(());
    }
    let created = client
        .create_multipart_upload()
        .bucket(&cfg.bucket)
        .key(key)
        .send()
        .await
        .with_context(|| format!("starting multipart upload of s3://{}/{key}", cfg.bucket))?;
    let upload_id = created.upload_id().context("S3 returned no upload id")?.to_owned();
    let result = async {
        let mut parts = Vec::new();
        for (i, chunk) in body.chunks(PART).enumerate() {
            let n = i32::try_from(i + 1)?;
            let part = client
                .upload_part()
                .bucket(&cfg.bucket)
                .key(key)
                .upload_id(&upload_id)
                .part_number(n)
                .body(ByteStream::from(chunk.to_vec()))
                .send()
                .await
                .with_context(|| format!("uploading part {n} of {key}"))?;
            parts.push(CompletedPart::builder().part_number(n).set_e_tag(part.e_tag().map(str::to_owned)).build());
        }
        client
            .complete_multipart_upload()
            .bucket(&cfg.bucket)
            .key(key)
            .upload_id(&upload_id)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
            .send()
            .await
            .with_context(|| format!("completing multipart upload of {key}"))?;
        anyhow::Ok(())
    }
    .await;
    if result.is_err() {
        let _ = client.abort_multipart_upload().bucket(&cfg.bucket).key(key).upload_id(&upload_id).send().await;
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    // Bucket names must be 3 to 63 characters; s3s checks that on multipart requests.
    async fn setup() -> (testkit::S3Server, Client, S3Config) {
        let s3 = testkit::S3Server::start().expect("s3");
        s3.create_bucket("uploads").expect("bucket");
        let conf = aws_sdk_s3::Config::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .endpoint_url(s3.endpoint())
            .region(aws_config::Region::new(s3.region().to_owned()))
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                s3.access_key(),
                s3.secret_key(),
                None,
                None,
                "test",
            ))
            .force_path_style(true)
            .build();
        let cfg =
            S3Config { bucket: "uploads".into(), multipart_threshold_bytes: 5 * 1024 * 1024, ..Default::default() };
        (s3, Client::from_conf(conf), cfg)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn large_objects_go_in_parts_small_ones_in_one_put() {
        let (s3, client, cfg) = setup().await;
        let big: Vec<u8> = (0..19 * 1024 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
        let deadline = Instant::now() + Duration::from_secs(60);
        upload(&client, &cfg, "a/big.bin", &big, deadline).await.expect("multipart upload");
        upload(&client, &cfg, "a/small.bin", b"tiny", deadline).await.expect("put");
        // Overwriting the same key (a re-upload) replaces the object.
        upload(&client, &cfg, "a/small.bin", b"tiny again", deadline).await.expect("re-put");
        let got = client.get_object().bucket("uploads").key("a/big.bin").send().await.expect("get");
        assert_eq!(got.body.collect().await.expect("body").into_bytes().as_ref(), &big[..]);
        assert_eq!(std::fs::read(s3.root().join("uploads/a/small.bin")).expect("small"), b"tiny again");
    }

    #[tokio::test]
    async fn a_deadline_in_the_past_uploads_nothing() {
        let (s3, client, cfg) = setup().await;
        let err = upload(&client, &cfg, "late.bin", b"x", Instant::now()).await.expect_err("too late");
        assert!(err.to_string().contains("lease deadline"), "{err}");
        assert!(s3.list_keys("uploads").expect("list").is_empty());
    }
}
