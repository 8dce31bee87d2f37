//! Tests of the uploads against a local S3 (s3s): conditional writes, multipart, deliberate
//! replacement by ETag, and the lease bounding retries.

use super::*;
use crate::config::UploadSigning;

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
        .force_path_style(true);
    // Signed as the worker signs by default (`client`).
    let conf = with_signing(conf, UploadSigning::default()).build();
    let cfg = S3Config { bucket: "uploads".into(), multipart_threshold_bytes: 5 * 1024 * 1024, ..Default::default() };
    (s3, Client::from_conf(conf), cfg)
}

fn lease(valid_for: Duration) -> (watch::Sender<LeaseState>, watch::Receiver<LeaseState>) {
    watch::channel(LeaseState { id: 1, valid_until: std::time::Instant::now() + valid_for, lost: false })
}

/// Writes `bytes` to a file in `dir` and uploads it as the worker does.
async fn up_file(
    client: &Client,
    cfg: &S3Config,
    key: &str,
    bytes: &[u8],
    span: Vec<(&'static str, String)>,
    lease: &watch::Receiver<LeaseState>,
) -> anyhow::Result<Outcome> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("object");
    std::fs::write(&path, bytes)?;
    let body = Body { path: &path, size: bytes.len() as u64 };
    Ok(upload(client, cfg, key, body, &span, &Condition::Create, lease).await?.outcome)
}

/// The metadata of an object holding every offset from `first` to `last`.
fn span(first: i64, last: i64) -> Vec<(&'static str, String)> {
    crate::continuity::Span::of_offsets(first, last, &[]).to_meta("t", 0, "c/zonal")
}

fn last_offset(o: &Outcome) -> Option<i64> {
    match o {
        Outcome::Exists { span, .. } => span.last,
        Outcome::Written => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_objects_go_in_parts_small_ones_in_one_put_and_neither_replaces() {
    let (s3, client, cfg) = setup().await;
    let (_keep, lease) = lease(Duration::from_secs(60));
    let big: Vec<u8> = (0..19 * 1024 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let up = |key: &'static str, body: Vec<u8>, span: Vec<(&'static str, String)>| {
        let (client, cfg, lease) = (client.clone(), cfg.clone(), lease.clone());
        async move { up_file(&client, &cfg, key, &body, span, &lease).await.expect("upload") }
    };
    assert_eq!(up("a/big.bin", big.clone(), span(0, 99)).await, Outcome::Written);
    assert_eq!(up("a/small.bin", b"tiny".to_vec(), span(100, 109)).await, Outcome::Written);
    // A second writer of the same keys (a stale owner, a retry whose first try landed) is
    // refused by S3 and learns where the existing object ends; nothing is replaced.
    let again = up("a/small.bin", b"tiny again".to_vec(), span(100, 120)).await;
    assert!(matches!(again, Outcome::Exists { etag: Some(_), .. }) && last_offset(&again) == Some(109), "{again:?}");
    let other: Vec<u8> = big.iter().map(|b| b ^ 0xff).collect();
    let other = up("a/big.bin", other, span(0, 50)).await;
    assert_eq!(last_offset(&other), Some(99), "{other:?}");
    let got = client.get_object().bucket("uploads").key("a/big.bin").send().await.expect("get");
    let records = crate::continuity::meta::RECORDS;
    assert_eq!(got.metadata().and_then(|m| m.get(records)).map(String::as_str), Some("100"));
    assert_eq!(got.body.collect().await.expect("body").into_bytes().as_ref(), &big[..]);
    assert_eq!(std::fs::read(s3.root().join("uploads/a/small.bin")).expect("small"), b"tiny");
    // The refused multipart upload was aborted, not left to be billed (s3s-fs keeps an
    // upload's state and parts as `.upload*` files at its root until then).
    let root = s3.root().to_path_buf();
    testkit::wait_until_async("the refused multipart upload to be aborted", Duration::from_secs(10), || {
        let root = root.clone();
        async move {
            let left = std::fs::read_dir(&root)
                .ok()?
                .flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with(".upload"));
            (!left).then_some(())
        }
    })
    .await
    .expect("aborted");
}

/// An object written before offsets were kept in metadata is replaced only deliberately:
/// with the ETag read back, and only while it is still that object.
#[tokio::test]
async fn an_object_without_offsets_is_replaced_only_by_its_etag() {
    let (s3, client, cfg) = setup().await;
    let (_keep, lease) = lease(Duration::from_secs(60));
    client
        .put_object()
        .bucket("uploads")
        .key("old.bin")
        .body(ByteStream::from(b"old".to_vec()))
        .send()
        .await
        .expect("old object");
    let found = up_file(&client, &cfg, "old.bin", b"new", span(0, 9), &lease).await.expect("upload");
    let Outcome::Exists { span: found_span, etag: Some(etag) } = found else { panic!("{found:?}") };
    assert_eq!(found_span.last, None);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("object");
    std::fs::write(&path, b"new").expect("write");
    let body = Body { path: &path, size: 3 };
    let wrong = Condition::Replace("\"0000\"".into());
    let refused = upload(&client, &cfg, "old.bin", body, &span(0, 9), &wrong, &lease).await.expect("upload");
    assert!(matches!(refused.outcome, Outcome::Exists { .. }), "{refused:?}");
    let replaced =
        upload(&client, &cfg, "old.bin", body, &span(0, 9), &Condition::Replace(etag), &lease).await.expect("upload");
    assert_eq!(replaced.outcome, Outcome::Written);
    assert_eq!(std::fs::read(s3.root().join("uploads/old.bin")).expect("object"), b"new");
}

#[tokio::test]
async fn a_lost_lease_uploads_nothing() {
    let (s3, client, cfg) = setup().await;
    let (_keep, lease) = lease(Duration::ZERO);
    let err = up_file(&client, &cfg, "late.bin", b"x", span(0, 0), &lease).await.expect_err("too late");
    assert!(err.to_string().contains("lease"), "{err}");
    assert!(s3.list_keys("uploads").expect("list").is_empty());
}

#[tokio::test]
async fn renewals_extend_the_time_allowed_and_a_loss_stops_retries() {
    let (_s3, _, cfg) = setup().await;
    // Nothing listens on port 1 of the loopback: every attempt fails and is retried.
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .endpoint_url("http://127.0.0.1:1")
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_s3::config::Credentials::new("a", "b", None, None, "test"))
        .force_path_style(true)
        .build();
    let client = Client::from_conf(conf);
    let (tx, lease) = lease(Duration::from_millis(300));
    let renew = tokio::spawn(async move {
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_millis(150)).await;
            tx.send_modify(|l| l.valid_until = std::time::Instant::now() + Duration::from_millis(300));
        }
        tx.send_modify(|l| l.lost = true);
        tx
    });
    let started = std::time::Instant::now();
    let err = up_file(&client, &cfg, "x.bin", b"x", span(0, 0), &lease).await.expect_err("fails");
    let _tx = renew.await.expect("renewer");
    assert!(err.to_string().contains("lease"), "{err}");
    // It kept trying past the first deadline because the lease was renewed.
    assert!(started.elapsed() >= Duration::from_millis(700), "{:?}", started.elapsed());
}

/// Every signing mode uploads, in one PUT and in parts, and the object reads back whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_signing_mode_uploads_in_one_put_and_in_parts() {
    let (s3, client, cfg) = setup().await;
    let (_keep, lease) = lease(Duration::from_secs(60));
    let big: Vec<u8> = (0..6 * 1024 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    for signing in [UploadSigning::UnsignedPayload, UploadSigning::SignedPayload, UploadSigning::AwsChunked] {
        let conf = with_signing(client.config().to_builder(), signing).build();
        let client = Client::from_conf(conf);
        let cfg = S3Config { upload_signing: signing, ..cfg.clone() };
        for (name, body) in [("small", b"tiny".to_vec()), ("big", big.clone())] {
            let key = format!("{signing:?}/{name}");
            let got = up_file(&client, &cfg, &key, &body, span(0, 9), &lease).await.expect("upload");
            assert_eq!(got, Outcome::Written, "{key}");
            assert_eq!(std::fs::read(s3.root().join("uploads").join(&key)).expect("object"), body, "{key}");
        }
    }
}

/// `s3.checksum-algorithm`: in every signing mode, in one PUT and in parts, each body carries the
/// checksum of what the worker wrote, the store (which verifies it: a wrong one is refused)
/// accepts it and keeps it with the object, and the store probe passes with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_checksum_algorithm_is_sent_verified_and_kept_in_every_signing_mode() {
    use crate::config::ChecksumAlgorithm as Alg;
    let (s3, client, cfg) = setup().await;
    let (_keep, lease) = lease(Duration::from_secs(60));
    let big: Vec<u8> = (0..6 * 1024 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let wrong =
        client.put_object().bucket("uploads").key("wrong").checksum_crc32_c("AAAAAA==").body(b"tiny".to_vec().into());
    let refused = format!("{:?}", wrong.send().await.expect_err("the test store verifies checksums"));
    assert!(refused.contains("BadDigest"), "{refused}");
    for alg in [Alg::Crc32c, Alg::Crc32, Alg::Sha256] {
        for signing in [UploadSigning::UnsignedPayload, UploadSigning::SignedPayload, UploadSigning::AwsChunked] {
            let client = Client::from_conf(with_signing(client.config().to_builder(), signing).build());
            let cfg = S3Config { upload_signing: signing, checksum_algorithm: alg, ..cfg.clone() };
            let before = s3.policy().writes().len();
            for (name, body) in [("small", b"tiny".to_vec()), ("big", big.clone())] {
                let key = format!("{alg:?}/{signing:?}/{name}");
                let got = up_file(&client, &cfg, &key, &body, span(0, 9), &lease).await.expect("upload");
                assert_eq!(got, Outcome::Written, "{key}");
                assert_eq!(std::fs::read(s3.root().join("uploads").join(&key)).expect("object"), body, "{key}");
            }
            let writes = s3.policy().writes().split_off(before);
            let header = format!("x-amz-checksum-{}", format!("{alg:?}").to_lowercase());
            assert_eq!(
                writes[0].get(&header),
                checksum::of_bytes(alg, b"tiny").as_ref(),
                "{alg:?} {signing:?}: {writes:?}"
            );
            let sdk_name = alg.sdk().expect("an algorithm").as_str().to_owned();
            assert_eq!(writes[1].get("x-amz-checksum-algorithm"), Some(&sdk_name), "{writes:?}");
            let head = client
                .head_object()
                .bucket("uploads")
                .key(format!("{alg:?}/{signing:?}/small"))
                .checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled)
                .send()
                .await
                .expect("head");
            let kept = match alg {
                Alg::Crc32c => head.checksum_crc32_c(),
                Alg::Crc32 => head.checksum_crc32(),
                _ => head.checksum_sha256(),
            };
            assert_eq!(kept.map(str::to_owned), checksum::of_bytes(alg, b"tiny"), "{alg:?} {signing:?}");
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = S3Config { checksum_algorithm: alg, ..cfg.clone() };
        let p = probe::probe(&client, &cfg, dir.path(), "w").await.expect("the probe with a checksum");
        assert!(p.conditional() && p.keeps_metadata, "{p:?}");
    }
}

#[test]
fn an_attempt_is_given_time_by_the_size_of_its_object() {
    let cfg = S3Config { upload_min_bytes_per_sec: 1024 * 1024, upload_attempt_min_secs: 30, ..Default::default() };
    assert_eq!(attempt_deadline(&cfg, 10), Duration::from_secs(30));
    assert_eq!(attempt_deadline(&cfg, 64 * 1024 * 1024), Duration::from_secs(64));
}

/// The store probe on the test server: everything as required, on a fast link and on a slow
/// one, and the probe object is gone afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_probe_passes_on_a_store_that_behaves_as_s3() {
    let (s3, client, cfg) = setup().await;
    let dir = tempfile::tempdir().expect("tempdir");
    for rate in [0, 200 * 1024] {
        s3.set_upload_rate(rate);
        let p = tokio::time::timeout(Duration::from_secs(20), probe::probe(&client, &cfg, dir.path(), "w"))
            .await
            .expect("the probe ends")
            .expect("probe");
        assert!(p.conditional() && p.keeps_metadata, "{p:?}");
        assert!(s3.list_keys("uploads").expect("list").is_empty(), "the probe object was left");
    }
}
