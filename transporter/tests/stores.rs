//! S3-compatible stores that differ from AWS, as the test S3 server can behave: a payload
//! signing mode refused (Garage 2.5 answers aws-chunked uploads `400 Invalid payload
//! signature`), conditional writes ignored or answered 501, user metadata dropped. A worker
//! reports each at start instead of retrying forever or rewriting silently, and a refusal that
//! begins while it runs is not retried forever and shows in `/readyz`.

mod common;

use std::time::Duration;

use common::*;
use zonal_transporter::config::UploadSigning;

#[test]
fn a_store_that_refuses_a_signing_mode_is_reported_at_start_and_the_default_mode_works() -> Res {
    let world = world()?;
    world.kafka.create_topic("logs", 2)?;
    let s3 = world.s3.as_ref().ok_or_else(|| anyhow::anyhow!("no s3"))?;
    s3.refuse_payload_mode(Some("STREAMING-"));
    let tmp = tempfile::tempdir()?;
    let chunked = FleetSpec::default().edit(|c| c.s3.upload_signing = UploadSigning::AwsChunked);
    let mut w = Worker::start(&world, tmp.path(), "chunked", Some(0), &chunked)?;
    let (code, log) = exited_with(&mut w)?;
    assert_ne!(code, Some(0), "{log}");
    assert!(log.contains("s3.upload-signing = AwsChunked") && log.contains("HTTP 400 InvalidRequest"), "{log}");
    // The default mode is what such a store takes.
    let w = Worker::start(&world, tmp.path(), "w0-0", Some(0), &FleetSpec::default())?;
    produce(&world, "logs", 2, 100, "a")?;
    wait_exactly_once(&world, 200, &[&w])?;
    Ok(())
}

#[test]
fn stores_that_ignore_conditions_answer_501_or_drop_metadata_are_refused_at_start() -> Res {
    let world = world()?;
    world.kafka.create_topic("logs", 2)?;
    let s3 = world.s3.as_ref().ok_or_else(|| anyhow::anyhow!("no s3"))?;
    let tmp = tempfile::tempdir()?;
    let spec = FleetSpec::default();
    type Knob = fn(&testkit::S3Server, bool);
    let cases: [(&str, Knob, &str); 3] = [
        ("ignores", testkit::S3Server::ignore_conditional_writes, "replaced the object"),
        ("501", testkit::S3Server::answer_conditions_501, "HTTP 501 NotImplemented"),
        ("metadata", testkit::S3Server::drop_metadata, "drops user metadata"),
    ];
    for (name, knob, says) in cases {
        knob(s3, true);
        let mut w = Worker::start(&world, tmp.path(), name, Some(0), &spec)?;
        let (code, log) = exited_with(&mut w)?;
        assert_ne!(code, Some(0), "{name}: {log}");
        assert!(log.contains(says), "{name}: {log}");
        if name != "metadata" {
            assert!(log.contains("s3.require-conditional-writes = false"), "{name}: {log}");
        }
        knob(s3, false);
    }
    // The documented weaker mode runs on a store that ignores conditions, and says so.
    s3.ignore_conditional_writes(true);
    let weaker = FleetSpec::default().edit(|c| c.s3.require_conditional_writes = false);
    let w = Worker::start(&world, tmp.path(), "w0-0", Some(0), &weaker)?;
    produce(&world, "logs", 2, 100, "a")?;
    wait_exactly_once(&world, 200, &[&w])?;
    assert!(std::fs::read_to_string(&w.log)?.contains("fencing by etcd alone"));
    Ok(())
}

/// A store that starts refusing uploads (a policy changed, a signing mode dropped) while the
/// worker runs: each upload is tried a few times, not forever; `/readyz` turns red with the
/// reason; the partition pauses and starts again; once the store takes uploads again, every
/// record lands once and `/readyz` is green.
#[test]
fn a_lasting_refusal_is_not_retried_forever_and_turns_readyz_red() -> Res {
    let world = world()?;
    world.kafka.create_topic("logs", 1)?;
    let s3 = world.s3.as_ref().ok_or_else(|| anyhow::anyhow!("no s3"))?;
    let tmp = tempfile::tempdir()?;
    let w = Worker::start(&world, tmp.path(), "w0-0", Some(0), &FleetSpec::default())?;
    testkit::wait_until("the worker to be ready", Duration::from_secs(30), || {
        (w.get("/readyz").ok()?.0 == 200 && w.owned().len() == 1).then_some(())
    })?;
    s3.refuse_payload_mode(Some("UNSIGNED-PAYLOAD"));
    produce(&world, "logs", 1, 100, "a")?;
    let body = testkit::wait_until("/readyz to turn red", Duration::from_secs(30), || {
        let (code, body) = w.get("/readyz").ok()?;
        (code == 503).then_some(body)
    })?;
    assert!(body.contains("S3 refuses uploads") && body.contains("HTTP 400"), "{body}");
    // The roll's error is logged when its partition task ends, just after /readyz turned red.
    testkit::wait_until("the refusal to end the roll, not retried further", Duration::from_secs(10), || {
        std::fs::read_to_string(&w.log).ok()?.contains("not retried further").then_some(())
    })
    .map_err(|e| anyhow::anyhow!("{e}\n{}", w.log_tail()))?;
    s3.refuse_payload_mode(None);
    wait_exactly_once(&world, 100, &[&w])?;
    testkit::wait_until("/readyz to turn green", Duration::from_secs(30), || {
        (w.get("/readyz").ok()?.0 == 200).then_some(())
    })?;
    Ok(())
}

/// Issue 23, item 4: a second deployment (another `etcd.cluster`, as staging beside production)
/// pointed at the same bucket and prefix would make the same keys and take the first one's
/// objects for a previous owner's. It refuses to start, naming the prefix and what to change;
/// every object names its deployment (`zonal-source`), and the first deployment goes on.
#[test]
fn a_second_deployment_in_the_same_prefix_is_refused_at_start() -> Res {
    let world = world()?;
    world.kafka.create_topic("logs", 2)?;
    let tmp = tempfile::tempdir()?;
    let first = Worker::start(&world, tmp.path(), "w0-0", Some(0), &FleetSpec::default())?;
    produce(&world, "logs", 2, 100, "a")?;
    wait_exactly_once(&world, 200, &[&first])?;
    let s3 = world.s3.as_ref().ok_or_else(|| anyhow::anyhow!("no s3"))?;
    let marker = std::fs::read_to_string(s3.root().join(BUCKET).join("out/_zonal-probe/deployment.json"))?;
    let marker: serde_json::Value = serde_json::from_str(&marker)?;
    let source = marker["source"].as_str().unwrap_or_default().to_owned();
    assert!(source.ends_with("/test") && !source.starts_with("unknown/"), "{marker}");
    let staging = FleetSpec::default().edit(|c| c.etcd.cluster = "staging".to_owned());
    let mut second = Worker::start(&world, tmp.path(), "s0-0", Some(0), &staging)?;
    let (code, log) = exited_with(&mut second)?;
    assert_ne!(code, Some(0), "{log}");
    assert!(log.contains("belongs to another deployment") && log.contains(&source), "{log}");
    assert!(log.contains("s3.prefix"), "{log}");
    produce(&world, "logs", 2, 100, "b")?;
    wait_exactly_once(&world, 400, &[&first])?;
    unknown_clusters_are_checked_against_the_claim(&world, tmp.path())
}

/// A worker that could not learn the Kafka cluster's id does not claim the prefix, but the claim
/// there still refuses it when it is of another fleet (`etcd.cluster`).
fn unknown_clusters_are_checked_against_the_claim(world: &testkit::World, dir: &std::path::Path) -> Res {
    use zonal_transporter::upload::deployment::{claim, source};
    let s3 = world.s3.as_ref().ok_or_else(|| anyhow::anyhow!("no s3"))?;
    let creds = aws_sdk_s3::config::Credentials::new(s3.access_key(), s3.secret_key(), None, None, "test");
    let client = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .endpoint_url(s3.endpoint())
            .region(aws_sdk_s3::config::Region::new(s3.region().to_owned()))
            .credentials_provider(creds)
            .force_path_style(true)
            .build(),
    );
    let cfg = FleetSpec::default().config(world, dir, "x", None, 0)?.s3;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let other = rt.block_on(claim(&client, &cfg, &source(None, "staging")));
    let err = other.err().ok_or_else(|| anyhow::anyhow!("another fleet with an unknown cluster was let in"))?;
    assert!(format!("{err:#}").contains("belongs to another deployment"), "{err:#}");
    rt.block_on(claim(&client, &cfg, &source(None, "test")))?;
    Ok(())
}

/// Issue 25, item 5: a bucket policy that denies writes without SSE-KMS (as AWS users commonly
/// set) refuses the start of a worker that does not encrypt, at the store probe, naming the
/// refusal; a worker with `server-side-encryption = "sse-kms"`, a key, a bucket key and a
/// storage class sends them with every write (objects, parts' creation, the probe and the
/// deployment marker) and moves every record once.
#[test]
fn objects_carry_the_configured_encryption_and_storage_class_and_a_policy_demanding_it_is_met() -> Res {
    use zonal_transporter::config::Encryption;
    let world = world()?;
    world.kafka.create_topic("logs", 2)?;
    let tmp = tempfile::tempdir()?;
    let s3 = world.s3.as_ref().ok_or_else(|| anyhow::anyhow!("no s3"))?;
    s3.policy().require_encryption(Some("aws:kms"));
    let mut plain = Worker::start(&world, tmp.path(), "w0-0", Some(0), &FleetSpec::default())?;
    let (code, log) = exited_with(&mut plain)?;
    assert_ne!(code, Some(0), "{log}");
    assert!(log.contains("AccessDenied") && log.contains("check s3.server-side-encryption"), "{log}");

    // The store (as MinIO and most S3-compatible stores) takes only STANDARD and
    // REDUCED_REDUNDANCY: another class is refused at start, naming the setting.
    let class = |class: &'static str| {
        FleetSpec::default().edit(move |c| {
            c.s3.server_side_encryption = Encryption::SseKms;
            c.s3.sse_kms_key_id = Some("alias/zonal-test".to_owned());
            c.s3.storage_class = Some(class.to_owned());
        })
    };
    let mut infrequent = Worker::start(&world, tmp.path(), "w0-1", Some(0), &class("STANDARD_IA"))?;
    let (code, log) = exited_with(&mut infrequent)?;
    assert_ne!(code, Some(0), "{log}");
    assert!(log.contains("s3.storage-class = \"STANDARD_IA\" is not one this store takes"), "{log}");

    let before = s3.policy().writes().len();
    let worker = Worker::start(&world, tmp.path(), "w0-2", Some(0), &class("REDUCED_REDUNDANCY"))?;
    produce(&world, "logs", 2, 300, "a")?;
    wait_exactly_once(&world, 600, &[&worker]).map_err(|e| anyhow::anyhow!("{e}: {}", worker.log_tail()))?;
    let writes = s3.policy().writes().split_off(before);
    assert!(writes.len() >= 4, "the probe, the marker and two objects at least: {writes:?}");
    for w in &writes {
        assert_eq!(w.get("x-amz-server-side-encryption").map(String::as_str), Some("aws:kms"), "{w:?}");
        assert_eq!(w.get("x-amz-server-side-encryption-aws-kms-key-id").map(String::as_str), Some("alias/zonal-test"));
        assert_eq!(w.get("x-amz-server-side-encryption-bucket-key-enabled").map(String::as_str), Some("true"));
        assert_eq!(w.get("x-amz-storage-class").map(String::as_str), Some("REDUCED_REDUNDANCY"));
    }
    Ok(())
}
