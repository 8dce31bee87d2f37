//! Failure modes: a zone without workers and a partition without rack (assigned elsewhere and
//! counted), etcd unreachable for a while, a leader move, and bad input (config, etcd values).

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use zonal_transporter::config::Compression;

#[test]
fn zone_without_workers_and_partition_without_rack_are_assigned_elsewhere_and_counted() -> Res {
    let world = world()?;
    world.kafka.create_topic("logs", 12)?;
    // Broker 1 (zone 1) loses its rack: the partitions it leads have no zone.
    world.kafka.mock()?.broker_rack(1, "")?;
    let norack: Vec<i32> = world.kafka.leaders("logs")?.into_iter().filter(|(_, l)| *l == 1).map(|(p, _)| p).collect();
    assert!(!norack.is_empty());
    let tmp = tempfile::tempdir()?;
    let spec = FleetSpec::default();
    // Workers in zones 1 and 2 only: zone 3 has none.
    let workers = [
        Worker::start(&world, tmp.path(), "w0-0", Some(0), &spec)?,
        Worker::start(&world, tmp.path(), "w1-0", Some(1), &spec)?,
    ];
    let refs: Vec<&Worker> = workers.iter().collect();
    let zone3 = 4; // partitions 2, 5, 8, 11
    let expected_cross = zone3 + norack.len();
    let view = testkit::wait_until("the assignment", Duration::from_secs(30), || {
        let v = assignment(&refs)?;
        (owners_of(&v).len() == 12 && v["cross_zone"] == expected_cross).then_some(v)
    })
    .map_err(|e| anyhow::anyhow!("{e}: {:?}", assignment(&refs)))?;
    let master = workers
        .iter()
        .find(|w| w.status().ok().is_some_and(|s| s["role"] == "master"))
        .ok_or_else(|| anyhow::anyhow!("no master"))?;
    assert_eq!(master.metric("zonal_transporter_cross_zone_partitions", &[])?, expected_cross as f64);
    assert_eq!(view["cross_zone"], expected_cross);
    produce(&world, "logs", 12, 100, "a")?;
    wait_exactly_once(&world, 1200, &refs)?;
    Ok(())
}

#[test]
fn etcd_unreachable_for_a_while_recovers_without_loss_or_duplicates() -> Res {
    let world = world()?;
    world.kafka.create_topic("logs", 12)?;
    let tmp = tempfile::tempdir()?;
    let workers = fleet(&world, tmp.path(), &FleetSpec { lease_ttl_secs: 6, ..FleetSpec::default() })?;
    let refs: Vec<&Worker> = workers.iter().collect();
    produce(&world, "logs", 12, 100, "a")?;
    wait_exactly_once(&world, 1200, &refs)?;
    let etcd = world.etcd.as_ref().ok_or_else(|| anyhow::anyhow!("etcd"))?;

    // A short outage (under the lease TTL): workers keep their partitions; uploads wait.
    // Ownership is watched through the outage, not sampled once: a worker that let a partition
    // go at the first failed keepalive would show here. The lease (6 s, 20% margin, renewed
    // every 2 s) is valid at least 2.8 s past the last renewal: 1 s is inside it even when a
    // loaded machine delays a renewal.
    etcd.pause()?;
    let paused = std::time::Instant::now();
    produce(&world, "logs", 12, 100, "b")?;
    let mut samples = 0;
    while paused.elapsed() < Duration::from_secs(1) {
        let owned: usize = workers.iter().map(|w| w.owned().len()).sum();
        if owned != 12 {
            etcd.resume()?;
            anyhow::bail!("{owned} of 12 partitions owned {:?} into a short etcd outage", paused.elapsed());
        }
        samples += 1;
    }
    etcd.resume()?;
    assert!(samples >= 3, "{samples} samples");
    wait_exactly_once(&world, 2400, &refs)?;

    // A long outage (beyond the lease TTL): leases expire, buffers are dropped, ownership is
    // taken again after recovery; everything still lands exactly once.
    // Meanwhile every worker says why it is not ready (etcd, by name) and stays alive: an
    // outage is not a reason for the liveness probe to restart it.
    etcd.pause()?;
    produce(&world, "logs", 12, 100, "c")?;
    let lost = testkit::wait_until("workers to notice the lease is gone", Duration::from_secs(20), || {
        let gone = workers.iter().all(|w| w.owned().is_empty());
        let named =
            workers.iter().all(|w| w.get("/readyz").is_ok_and(|(code, why)| code == 503 && why.contains("etcd: ")));
        let alive = workers.iter().all(|w| w.get("/healthz").is_ok_and(|(code, _)| code == 200));
        (gone && named && alive).then_some(())
    });
    etcd.resume()?;
    lost?;
    testkit::wait_until("every worker ready again", Duration::from_secs(30), || {
        workers.iter().all(|w| w.get("/readyz").is_ok_and(|(code, _)| code == 200)).then_some(())
    })?;
    produce(&world, "logs", 12, 100, "d")?;
    wait_exactly_once(&world, 4800, &refs)?;
    Ok(())
}

/// A leader that moves for good is followed once it has led for `assignment.leader-settle-secs`
/// (4 s here), not before: a rolling restart's brief moves are not followed at all (the
/// settling itself is table-tested in `master::steady`).
#[test]
fn leader_move_reassigns_in_the_new_zone_after_the_settle_without_loss_or_duplicates() -> Res {
    let world = world()?;
    world.kafka.create_topic("logs", 12)?;
    let tmp = tempfile::tempdir()?;
    let spec = FleetSpec::default().edit(|c| c.assignment.leader_settle_secs = 4);
    let workers = fleet(&world, tmp.path(), &spec)?;
    let refs: Vec<&Worker> = workers.iter().collect();
    produce(&world, "logs", 12, 150, "a")?;
    // Partition 0 (zone 1) moves to its replica in zone 2 while records are flowing.
    let target = world.kafka.replicas("logs")?[&0]
        .iter()
        .copied()
        .find(|&b| world.kafka.rack_of(b) == Some("use1-az2"))
        .ok_or_else(|| anyhow::anyhow!("no zone-2 replica"))?;
    world.kafka.move_leader("logs", 0, target)?;
    let moved = std::time::Instant::now();
    produce(&world, "logs", 12, 150, "b")?;
    let view = testkit::wait_until("partition 0 to move to zone 2", Duration::from_secs(30), || {
        let v = assignment(&refs)?;
        let owner = owners_of(&v).get("logs/0")?.clone();
        (owner.starts_with("w1-") && v["cross_zone"] == 0).then_some(v)
    })?;
    assert_eq!(view["cross_zone"], 0);
    assert!(moved.elapsed() >= Duration::from_secs(4), "followed after {:?}, before the settle", moved.elapsed());
    produce(&world, "logs", 12, 150, "c")?;
    wait_exactly_once(&world, 12 * 450, &refs)?;
    Ok(())
}

/// Two workers in the zone of the leader of a new one-partition topic `logs`, once one of them
/// owns it: `(owner, peer)`.
fn owner_and_peer(world: &testkit::World, dir: &std::path::Path, spec: &FleetSpec) -> Res<(Worker, Worker)> {
    world.kafka.create_topic("logs", 1)?;
    let leader = world.kafka.leaders("logs")?[&0];
    let rack = world.kafka.rack_of(leader).unwrap_or_default().to_owned();
    let zone = world.kafka.zones().iter().position(|z| *z == rack).ok_or_else(|| anyhow::anyhow!("leader rack"))?;
    let a = Worker::start(world, dir, "a", Some(zone), spec)?;
    let b = Worker::start(world, dir, "b", Some(zone), spec)?;
    let view = wait_converged(&[&a, &b], 1, 1)?;
    // Both past their start (the store's probe writes an object: a peer still starting would
    // have its probe taken for the owner's held upload).
    testkit::wait_until("both workers to be ready", Duration::from_secs(60), || {
        [&a, &b].iter().all(|w| w.get("/readyz").is_ok_and(|(c, _)| c == 200)).then_some(())
    })?;
    let owner = owners_of(&view).get("logs/0").cloned().ok_or_else(|| anyhow::anyhow!("no owner"))?;
    Ok(if owner == "a" { (a, b) } else { (b, a) })
}

/// Holds the next write S3 receives, produces `records` to `logs`, and stops `owner` (SIGSTOP)
/// once its upload of them is held.
fn stop_owner_mid_upload(world: &testkit::World, owner: &Worker, records: usize) -> Res {
    let s3 = world.s3.as_ref().ok_or_else(|| anyhow::anyhow!("no s3"))?;
    s3.hold_next_writes(1);
    produce(world, "logs", 1, records, "first")?;
    testkit::wait_until("the owner's upload to be in flight", Duration::from_secs(30), || {
        (s3.held_writes() == 1).then_some(())
    })?;
    owner.signal(libc::SIGSTOP)
}

#[test]
/// A worker stopped (SIGSTOP: a VM pause, CPU starvation) while its upload is in flight and
/// resumed after a peer took its partition over: S3 refuses the late write instead of replacing
/// the peer's longer object, and every record is in S3 once.
fn a_worker_stopped_mid_upload_and_resumed_after_a_takeover_replaces_nothing() -> Res {
    let world = world()?;
    let s3 = world.s3.as_ref().ok_or_else(|| anyhow::anyhow!("no s3"))?;
    // Rolls by age only, so the stalled owner's object and the peer's differ in length.
    let spec = FleetSpec { max_age_ms: 1000, max_records: 1_000_000, grace_secs: 1, ..FleetSpec::default() };
    let tmp = tempfile::tempdir()?;
    let (owner, peer) = owner_and_peer(&world, tmp.path(), &spec)?;
    let refs = [&owner, &peer];

    stop_owner_mid_upload(&world, &owner, 300)?;
    produce(&world, "logs", 1, 300, "second")?;
    // The owner's lease runs out; the peer takes the partition over and uploads from the last
    // commit, a longer object under the same key.
    testkit::wait_until("the peer to upload", Duration::from_secs(60), || {
        (peer.metric("zonal_transporter_uploads_total", &[]).ok()? >= 1.0).then_some(())
    })
    .map_err(|e| anyhow::anyhow!("{e}\n{}", peer.log_tail()))?;
    // The stalled write reaches S3 now.
    s3.release_writes();
    testkit::wait_until("the late write to be answered", Duration::from_secs(30), || {
        (s3.held_writes() == 0).then_some(())
    })?;
    owner.signal(libc::SIGCONT)?;
    produce(&world, "logs", 1, 300, "third")?;
    wait_exactly_once(&world, 900, &refs)?;
    Ok(())
}

#[test]
/// A previous owner's object lands (uncommitted) while the next owner reads on: the next owner's
/// upload at the same key finds it, resumes after it, and drops the buffer it filled meanwhile
/// (`ResumeAt` with a next buffer full). Every record ends up in S3 once.
fn a_previous_owners_object_found_while_the_next_buffer_filled_resumes_after_it() -> Res {
    let world = world()?;
    let s3 = world.s3.as_ref().ok_or_else(|| anyhow::anyhow!("no s3"))?;
    // Rolls by age only, so that the two owners' objects differ in length; an age long enough
    // for the next buffer to take every record of the third batch before it is due (a buffer
    // that is due waits for the roll in flight, and reading waits with it).
    let spec = FleetSpec { max_age_ms: 4000, max_records: 1_000_000, grace_secs: 1, ..FleetSpec::default() };
    let tmp = tempfile::tempdir()?;
    let (owner, peer) = owner_and_peer(&world, tmp.path(), &spec)?;
    let refs = [&owner, &peer];

    // The owner's object of offsets 0-299 reaches S3, and the owner stops before committing it.
    stop_owner_mid_upload(&world, &owner, 300)?;
    s3.release_writes();
    testkit::wait_until("the owner's object to land", Duration::from_secs(30), || {
        (s3.held_writes() == 0).then_some(())
    })?;

    // The peer takes over from the last commit (none): its object of 0-599 is held on the way...
    s3.hold_next_writes(1);
    produce(&world, "logs", 1, 300, "second")?;
    testkit::wait_until("the peer's upload to be in flight", Duration::from_secs(60), || {
        (s3.held_writes() == 1).then_some(())
    })
    .map_err(|e| anyhow::anyhow!("{e}\n{}", peer.log_tail()))?;
    // ...while it reads 600-1699 into its next buffer (`/status` shows a buffer's position
    // every 1,024 records: at its 1,025th, offset 1624).
    produce(&world, "logs", 1, 1100, "third")?;
    testkit::wait_until("the peer to read on into its next buffer", Duration::from_secs(30), || {
        let status = peer.status().ok()?;
        (status["owned"]["logs/0"]["position"].as_i64()? >= 1624).then_some(())
    })
    .map_err(|e| anyhow::anyhow!("{e}: {:?}\n{}", peer.status().ok(), peer.log_tail()))?;
    // S3 refuses the peer's object (one is at the key), which resumes after the owner's.
    s3.release_writes();
    owner.signal(libc::SIGCONT)?;
    wait_exactly_once(&world, 1700, &refs)?;
    let found = peer.metric("zonal_transporter_errors_total", &[("kind", "object-exists")])?;
    assert!(found >= 1.0, "the peer never found the owner's object ({found})\n{}", peer.log_tail());
    Ok(())
}

#[test]
/// S3 at a few hundred KB/s: an object takes longer to upload than a lease lasts. The upload
/// goes on for as long as the lease is renewed, so every object lands, once.
fn s3_at_a_few_hundred_kb_per_second_still_gets_every_record_once() -> Res {
    let world = world()?;
    world.kafka.create_topic("logs", 1)?;
    let s3 = world.s3.as_ref().ok_or_else(|| anyhow::anyhow!("no s3"))?;
    s3.set_upload_rate(200 * 1024);
    let leader = world.kafka.leaders("logs")?[&0];
    let rack = world.kafka.rack_of(leader).unwrap_or_default().to_owned();
    let zone = world.kafka.zones().iter().position(|z| *z == rack).ok_or_else(|| anyhow::anyhow!("leader rack"))?;
    // Uncompressed objects of ~630 KB: over 3 s each at this rate, past a 3 s lease.
    let spec = FleetSpec { max_age_ms: 60_000, max_records: 3000, ..FleetSpec::default() }
        .edit(|c| c.s3.compression = Compression::None);
    let tmp = tempfile::tempdir()?;
    let worker = Worker::start(&world, tmp.path(), "slow", Some(zone), &spec)?;
    wait_converged(&[&worker], 1, 1).map_err(|e| anyhow::anyhow!("{e}\n{}", worker.log_tail()))?;
    let started = std::time::Instant::now();
    produce(&world, "logs", 1, 6000, "slow")?;
    let got = wait_exactly_once(&world, 6000, &[&worker])?;
    let took = started.elapsed();
    assert_eq!(got.len(), 6000);
    assert!(worker.metric("zonal_transporter_upload_seconds_sum", &[])? >= 5.0, "uploads were not slow");
    // The uploads run one after the other at the link's rate: the whole took at most twice
    // the ideal transfer time (plus a second for producing and committing), with no attempt
    // given up and sent again.
    let keys = object_keys(&world)?;
    let bytes: u64 = object_sizes(&world)?.iter().sum();
    let ideal = Duration::from_secs_f64(bytes as f64 / (200.0 * 1024.0));
    assert!(took <= ideal * 2 + Duration::from_secs(1), "{took:?} for {bytes} bytes (ideal {ideal:?})");
    assert_eq!(worker.metric("zonal_transporter_upload_retries_total", &[])?, 0.0);
    // Each upload is in the log at info, with its offsets, size, attempts and seconds.
    let log = std::fs::read_to_string(&worker.log)?;
    let uploads: Vec<&str> = log.lines().filter(|l| l.contains("object uploaded and committed")).collect();
    assert_eq!(uploads.len(), keys.len(), "{log}");
    assert!(
        uploads.iter().all(|l| l.contains("attempts=1") && l.contains("records=3000") && l.contains("seconds=")),
        "{uploads:?}"
    );
    Ok(())
}

#[test]
fn invalid_config_names_the_field() -> Res {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("t.toml");
    for (text, field) in [
        (
            "[kafka]\nbootstrap-servers = \"k\"\ntopics = [\"t\"]\n[etcd]\nendpoints = [\"http://e\"]\n[s3]\nbucket = \"b\"\nformat = \"xml\"\n",
            "format",
        ),
        (
            "[kafka]\nbootstrap-servers = \"k\"\ntopics = [\"t\"]\n[etcd]\nendpoints = []\n[s3]\nbucket = \"b\"\n",
            "etcd.endpoints",
        ),
        ("[kafka]\nbootstrap-servers = \"k\"\ntopicz = [\"t\"]\n", "topicz"),
    ] {
        std::fs::write(&path, text)?;
        let out = Command::new(env!("CARGO_BIN_EXE_zonal-transporter")).args(["check", "-c"]).arg(&path).output()?;
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(field), "{err}");
    }
    let example =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/transporter/transporter.example.toml");
    let out = testkit::process::check_config(env!("CARGO_BIN_EXE_zonal-transporter"), &example)?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    Ok(())
}

/// Every key of the effective configuration is documented in docs/configuration.md.
#[test]
fn the_configuration_reference_documents_every_key() -> Res {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let example = root.join("deploy/transporter/transporter.example.toml");
    // Fill every optional key so that `check` prints it too.
    let text = std::fs::read_to_string(&example)?;
    let dir = tempfile::tempdir()?;
    let full = dir.path().join("full.toml");
    // `check` reads the files `run` would: give it some.
    for f in ["etcd-ca.pem", "etcd-client.pem", "etcd-client.key", "etcd-password"] {
        std::fs::write(dir.path().join(f), "x")?;
    }
    let text = text.replace("/etc/zonal/", &format!("{}/", dir.path().display())).replace(
        "# password-file = \"/run/credentials/zonal-transporter.service/etcd-password\"",
        &format!("password-file = \"{}/etcd-password\"", dir.path().display()),
    );
    let text = text
        .replace("# region = \"us-east-1\"", "region = \"us-east-1\"")
        .replace("# endpoint = \"http://minio:9000\"", "endpoint = \"http://minio:9000\"")
        .replace("# username = \"zonal\"", "username = \"zonal\"")
        .replace("# password = \"...\"", "password = \"x\"")
        .replace("# id = \"transporter-a\"", "id = \"transporter-a\"")
        .replace("http://etcd-1.internal:2379", "https://etcd-1.internal:2379")
        .replace("# [etcd.tls]", "[etcd.tls]")
        .replace("# ca-file", "ca-file")
        .replace("# cert-file", "cert-file")
        .replace("# key-file", "key-file");
    std::fs::write(&full, text)?;
    let out = Command::new(env!("CARGO_BIN_EXE_zonal-transporter")).args(["check", "-c"]).arg(&full).output()?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let effective: toml::Table = toml::from_str(&String::from_utf8(out.stdout)?)?;
    let readme = std::fs::read_to_string(root.join("docs/configuration.md"))?;
    let count = testkit::readme::config_keys(&effective).len();
    // Zone settings are shared with the agent and documented there.
    let documented_by_the_agent = |key: &str| key.starts_with("zone.");
    let missing = testkit::readme::undocumented_keys(
        &effective,
        &readme,
        "## zonal-transporter",
        "## Object keys",
        &documented_by_the_agent,
    );
    assert!(count > 30, "{count} keys");
    assert!(missing.is_empty(), "docs/configuration.md's transporter reference lacks {missing:?}");
    Ok(())
}

/// A committed offset that cannot be read (here: an etcd permission missing on one partition's
/// offset key, which fails every read of it) is never taken for "no offset": that partition
/// waits, counted, while the others move, and once the read works it starts from the committed
/// offset: every record once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offset_that_cannot_be_read_is_waited_for_never_guessed() -> Res {
    use etcd_client::{ConnectOptions, Permission};
    let world = world()?;
    world.kafka.create_topic("logs", 6)?;
    let etcd = world.etcd.as_ref().ok_or_else(|| anyhow::anyhow!("etcd"))?;
    let tmp = tempfile::tempdir()?;
    let spec = FleetSpec::default();
    let mut w = tokio::task::block_in_place(|| Worker::start(&world, tmp.path(), "w0-0", Some(0), &spec))?;
    tokio::task::block_in_place(|| -> Res {
        produce(&world, "logs", 6, 50, "a")?;
        wait_exactly_once(&world, 300, &[&w])?;
        w.stop()?;
        Ok(())
    })?;
    // etcd authentication on; the worker's role may read and write the fleet's keys except read
    // partition 3's committed offset.
    let mut root = etcd_client::Client::connect([etcd.endpoint()], None).await?;
    root.role_add("root").await?;
    root.user_add("root", "root-pw", None).await?;
    root.user_grant_role("root", "root").await?;
    root.role_add("zonal").await?;
    let hidden = "/test/offsets/logs/3";
    let mut after = hidden.as_bytes().to_vec();
    after.push(0);
    root.role_grant_permission("zonal", Permission::read_write("/test/").with_range_end(hidden)).await?;
    root.role_grant_permission("zonal", Permission::read_write(after).with_range_end("/test0")).await?;
    root.role_grant_permission("zonal", Permission::write(hidden)).await?;
    root.user_add("zonal", "zonal-pw", None).await?;
    root.user_grant_role("zonal", "zonal").await?;
    root.auth_enable().await?;
    let mut root =
        etcd_client::Client::connect([etcd.endpoint()], Some(ConnectOptions::new().with_user("root", "root-pw")))
            .await?;
    let spec = FleetSpec {
        env: vec![
            ("ZONAL_TRANSPORTER__ETCD__USERNAME".into(), "zonal".into()),
            ("ZONAL_TRANSPORTER__ETCD__PASSWORD".into(), "zonal-pw".into()),
        ],
        ..FleetSpec::default()
    };
    let w = tokio::task::block_in_place(|| Worker::start(&world, tmp.path(), "w0-0", Some(0), &spec))?;
    tokio::task::block_in_place(|| -> Res {
        produce(&world, "logs", 6, 50, "b")?;
        // The five readable partitions move on; partition 3 waits, its failed reads counted.
        // The offset is read by the transaction that takes the partition, so it is that
        // transaction etcd refuses, and the partition is not taken at all.
        wait_exactly_once(&world, 550, &[&w])?;
        testkit::wait_until("the failed offset reads to be counted", Duration::from_secs(20), || {
            (w.metric("zonal_transporter_errors_total", &[("kind", "etcd")]).ok()? >= 2.0).then_some(())
        })?;
        let log = std::fs::read_to_string(&w.log)?;
        assert!(
            log.lines().any(|l| l.contains("acquiring /test/owners/logs/3") && l.contains("permission denied")),
            "the refused read is not reported for partition 3"
        );
        let (seen, _) = s3_records(&world)?;
        assert_eq!(seen.keys().filter(|(_, p, _)| *p == 3).count(), 50, "partition 3 read from a guessed offset");
        Ok(())
    })?;
    // The permission is fixed: partition 3 starts at its committed offset. (etcd replaces a
    // key's permission rather than adding to it: read alone would take the write away, and
    // the commit after the upload would be refused.)
    root.role_grant_permission("zonal", Permission::read_write(hidden)).await?;
    tokio::task::block_in_place(|| wait_exactly_once(&world, 600, &[&w]))?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_in_etcd_is_reported_and_an_invalid_offset_holds_its_partition_until_fixed() -> Res {
    let world = world()?;
    world.kafka.create_topic("logs", 6)?;
    let mut client = etcd_client(&world).await?;
    client.put("/test/workers/bogus", "{not json", None).await?;
    client.put("/test/offsets/logs/3", "minus seven", None).await?;
    client.put("/test/assignment", "\u{0}garbage", None).await?;
    let tmp = tempfile::tempdir()?;
    let w = tokio::task::block_in_place(|| Worker::start(&world, tmp.path(), "w0-0", Some(0), &FleetSpec::default()))?;
    tokio::task::block_in_place(|| -> Res {
        produce(&world, "logs", 6, 50, "a")?;
        // Partition 3's offset is not an offset: it is never guessed (from the beginning would
        // duplicate, from the end would lose); the partition waits while the others move.
        wait_exactly_once(&world, 250, &[&w])?;
        testkit::wait_until("the invalid offset to be reported", Duration::from_secs(20), || {
            (w.metric("zonal_transporter_errors_total", &[("kind", "etcd-value")]).ok()? >= 2.0).then_some(())
        })?;
        let (seen, _) = s3_records(&world)?;
        assert!(!seen.keys().any(|(_, p, _)| *p == 3), "partition 3 was read from a guessed offset");
        Ok(())
    })?;
    // The operator sets it: the partition starts there.
    client.put("/test/offsets/logs/3", "0", None).await?;
    tokio::task::block_in_place(|| -> Res {
        wait_exactly_once(&world, 300, &[&w])?;
        let out = Command::new(env!("CARGO_BIN_EXE_zonal-transporter"))
            .args(["status", "-c"])
            .arg(tmp.path().join("w0-0.toml"))
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(text.contains("master: w0-0") && text.contains("invalid worker registration skipped"), "{text}");
        Ok(())
    })?;
    Ok(())
}

#[test]
fn etcd_over_tls() -> Res {
    let etcd = testkit::Etcd::start_tls()?;
    let files = etcd.tls_files().ok_or_else(|| anyhow::anyhow!("no certificates"))?.clone();
    let dir = tempfile::tempdir()?;
    let base = format!(
        "[kafka]\nbootstrap-servers = \"127.0.0.1:1\"\ntopics = [\"t\"]\n[s3]\nbucket = \"b\"\n[etcd]\nendpoints = [\"{}\"]\ncluster = \"tls\"\n",
        etcd.endpoint()
    );
    let status = |text: &str| -> Res<(bool, String)> {
        let path = dir.path().join("t.toml");
        std::fs::write(&path, text)?;
        let out = Command::new(env!("CARGO_BIN_EXE_zonal-transporter")).args(["status", "-c"]).arg(&path).output()?;
        Ok((
            out.status.success(),
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        ))
    };
    // Trusting the CA: connected, and the (empty) fleet is reported.
    let (ok, out) = status(&format!("{base}[etcd.tls]\nca-file = \"{}\"\n", files.ca.display()))?;
    assert!(ok && out.contains("master: (none)"), "{out}");
    // Without trusting it: refused, and the error says so.
    let (ok, out) = status(&base)?;
    assert!(!ok && out.contains("etcd") && out.contains("UnknownIssuer"), "{out}");
    // A missing CA file is named.
    let (ok, out) = status(&format!("{base}[etcd.tls]\nca-file = \"/nonexistent/ca.pem\"\n"))?;
    assert!(!ok && out.contains("etcd.tls.ca-file /nonexistent/ca.pem"), "{out}");
    Ok(())
}

#[test]
fn check_refuses_options_that_break_exactly_once_and_hides_secrets() -> Res {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("t.toml");
    let pw = dir.path().join("etcd-pw");
    std::fs::write(&pw, "etcd-secret-71\n")?;
    let base = format!(
        "[kafka]\nbootstrap-servers = \"k:9092\"\ntopics = [\"t\"]\n[kafka.options]\n{{}}\n[etcd]\nendpoints = [\"http://e:2379\"]\nusername = \"zonal\"\npassword-file = \"{}\"\n[s3]\nbucket = \"b\"\n",
        pw.display()
    );
    let run = |options: &str| -> Res<(bool, String)> {
        std::fs::write(&path, base.replace("{}", options))?;
        let out = Command::new(env!("CARGO_BIN_EXE_zonal-transporter")).args(["check", "-c"]).arg(&path).output()?;
        Ok((
            out.status.success(),
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        ))
    };
    let (ok, out) = run(
        "\"sasl.password\" = \"kafka-secret-93\"\n\"sasl.username\" = \"u\"\n\"security.protocol\" = \"SASL_SSL\"\n\"sasl.mechanism\" = \"SCRAM-SHA-256\"",
    )?;
    assert!(ok, "{out}");
    assert!(!out.contains("kafka-secret-93") && !out.contains("etcd-secret-71"), "{out}");
    for (options, named) in [
        ("\"enable.auto.commit\" = \"true\"", "enable.auto.commit"),
        ("\"auto.offset.reset\" = \"latest\"", "kafka.start-from"),
        ("\"group.id\" = \"other\"", "kafka.group-id"),
        ("\"isolation.level\" = \"read_uncommitted\"", "aborted transactions"),
        ("\"fetch.max.bytes\" = \"lots\"", "fetch.max.bytes"),
    ] {
        let (ok, out) = run(options)?;
        assert!(!ok, "accepted: {options}");
        assert!(out.contains(named), "{out:?} does not name {named}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_starting_during_a_kafka_outage_keeps_the_assignment() -> Res {
    let world = world()?;
    world.kafka.create_topic("logs.app", 6)?;
    let mut client = etcd_client(&world).await?;
    let tmp = tempfile::tempdir()?;
    // Topics only by pattern, as the shipped manifests do.
    let spec = FleetSpec { topics: vec![], topic_pattern: Some("logs\\..*".into()), ..FleetSpec::default() };
    let mut w = tokio::task::block_in_place(|| Worker::start(&world, tmp.path(), "w0-0", Some(0), &spec))?;
    // The assignment as etcd holds it: every worker's share, as JSON text.
    let owners = |shares: &[u8]| -> usize {
        serde_json::from_slice::<Vec<serde_json::Value>>(shares)
            .map(|v| v.iter().filter_map(|s| s.as_object().map(|o| o.len())).sum())
            .unwrap_or(0)
    };
    let read = |mut c: etcd_client::Client| async move {
        let r = c.get("/test/assignment/", Some(etcd_client::GetOptions::new().with_prefix())).await.ok()?;
        let shares: Vec<serde_json::Value> =
            r.kvs().iter().filter_map(|kv| serde_json::from_slice(kv.value()).ok()).collect();
        serde_json::to_vec(&shares).ok()
    };
    testkit::wait_until_async("an assignment of 6 partitions", Duration::from_secs(20), || {
        let c = client.clone();
        async move { read(c).await.filter(|d| owners(d) == 6).map(|_| ()) }
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}: {}", w.log_tail()))?;
    // The master stops; Kafka goes down; a new master term starts during the outage.
    tokio::task::block_in_place(|| w.stop())?;
    for b in world.kafka.broker_racks().keys() {
        world.kafka.broker_down(*b)?;
    }
    tokio::task::block_in_place(|| w.restart())?;
    // Until it leads, and once it does, the document keeps its 6 owners.
    let w_ref = &w;
    testkit::wait_until_async("the restarted worker to lead during the outage", Duration::from_secs(30), || {
        let c = client.clone();
        async move {
            let doc = read(c).await.unwrap_or_default();
            assert_eq!(owners(&doc), 6, "the assignment was rewritten: {}", String::from_utf8_lossy(&doc));
            w_ref.status().ok().filter(|s| s["role"] == "master").map(|_| ())
        }
    })
    .await?;
    let doc = read(client.clone()).await.unwrap_or_default();
    assert_eq!(owners(&doc), 6, "the assignment was rewritten from a failed read: {}", String::from_utf8_lossy(&doc));
    for b in world.kafka.broker_racks().keys() {
        world.kafka.broker_up(*b)?;
    }
    tokio::task::block_in_place(|| -> Res {
        produce(&world, "logs.app", 6, 50, "a")?;
        wait_exactly_once(&world, 300, &[&w])?;
        Ok(())
    })?;
    client.delete("/test/nothing", None).await?;
    Ok(())
}

#[test]
fn follower_fetching_writes_client_rack_as_the_brokers_racks_are_written() -> Res {
    let world = world()?;
    world.kafka.create_topic("logs", 6)?;
    let tmp = tempfile::tempdir()?;
    let spec = FleetSpec::default().edit(|c| c.kafka.follower_fetching = true);
    let w = Worker::start(&world, tmp.path(), "w0-0", Some(0), &spec)?;
    produce(&world, "logs", 6, 50, "a")?;
    wait_exactly_once(&world, 300, &[&w])?;
    let log = std::fs::read_to_string(&w.log)?;
    assert!(!log.contains("could not read broker racks") && !log.contains("no broker rack in this zone"), "{log}");
    Ok(())
}

/// A committed offset past the end of the log (truncated, a topic recreated, an operator's
/// typo) is never reset silently, not even under `on-offset-out-of-range = earliest` (which is
/// about retention, `tests/continuity.rs`): the partition is held until an operator sets an
/// offset, and the other partitions go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offset_past_the_end_holds_its_partition_until_an_operator_sets_one() -> Res {
    {
        let policy = "earliest";
        let world = world()?;
        world.kafka.create_topic("logs", 3)?;
        let mut client = etcd_client(&world).await?;
        client.put("/test/offsets/logs/2", "1000000", None).await?;
        let tmp = tempfile::tempdir()?;
        let spec = FleetSpec {
            env: vec![("ZONAL_TRANSPORTER__KAFKA__ON_OFFSET_OUT_OF_RANGE".into(), policy.into())],
            ..FleetSpec::default()
        };
        let w = tokio::task::block_in_place(|| Worker::start(&world, tmp.path(), "w0-0", Some(0), &spec))?;
        tokio::task::block_in_place(|| -> Res {
            produce(&world, "logs", 3, 50, policy)?;
            // An offset past the end of the log (truncated, recreated, set too high) is never
            // taken as "start again from the beginning": whatever the policy, the partition is
            // held for an operator, and the others go on.
            wait_exactly_once(&world, 100, &[&w])?;
            testkit::wait_until("the out-of-range offset to be counted", Duration::from_secs(20), || {
                (w.metric("zonal_transporter_errors_total", &[("kind", "offset-out-of-range")]).ok()? >= 1.0)
                    .then_some(())
            })?;
            {
                let (seen, _) = s3_records(&world)?;
                assert!(!seen.keys().any(|(_, p, _)| *p == 2), "a held partition was read");
                // The operator sets the offset with the CLI: refused while owned unless asked
                // for a held partition; the owner then reads from there.
                let offsets = |extra: &[&str]| cli(&world, tmp.path(), "w0-0", &[&["offsets"], extra].concat());
                let out = offsets(&["--set", "logs/2=0"])?;
                let err = String::from_utf8_lossy(&out.stderr);
                assert!(!out.status.success() && err.contains("owned by worker \"w0-0\""), "{err}");
                let out = offsets(&["--set", "logs/2=zero"])?;
                assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("is not an offset"));
                let out = offsets(&["--set", "logs/2=0", "--while-owned"])?;
                assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
                let shown = String::from_utf8_lossy(&out.stdout);
                assert!(shown.lines().any(|l| l.starts_with("logs/2") && l.contains("next offset 0")), "{shown}");
                wait_exactly_once(&world, 150, &[&w])?;
            }
            Ok(())
        })?;
    }
    Ok(())
}
