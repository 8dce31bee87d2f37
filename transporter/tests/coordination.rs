//! What the fleet costs etcd while it waits: a partition held by an owner that is gone but
//! whose lease has not expired yet is watched, not polled.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// etcd's count of transaction requests (its gRPC server's metric, read over HTTP from the
/// client port; `etcd_mvcc_txn_total` leaves out transactions that wrote nothing).
fn etcd_txns(world: &testkit::World) -> Res<f64> {
    let etcd = world.etcd.as_ref().ok_or_else(|| anyhow::anyhow!("etcd"))?;
    let host = etcd.endpoint().trim_start_matches("http://").to_owned();
    let (_, text) = testkit::http::get(&host, "/metrics")?;
    Ok(testkit::http::metric(&text, "grpc_server_handled_total", &[("grpc_method", "Txn")]))
}

/// Issue 23, item 5: six partitions whose owner keys are held by a worker that died (its
/// lease of 8 s runs out on its own). The new worker watches each key and takes the partition
/// when the lease expires; before, it polled every 200 ms (six partitions over eight seconds:
/// about 240 transactions).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_held_by_a_dead_owner_is_watched_not_polled() -> Res {
    let world = world()?;
    world.kafka.create_topic("logs", 6)?;
    let mut client = etcd_client(&world).await?;
    let ghost = client.lease_grant(8, None).await?.id();
    for p in 0..6 {
        let opts = etcd_client::PutOptions::new().with_lease(ghost);
        client.put(format!("/test/owners/logs/{p}"), "ghost", Some(opts)).await?;
    }
    let expires = Instant::now() + Duration::from_secs(8);
    let before = etcd_txns(&world)?;
    let tmp = tempfile::tempdir()?;
    let w = tokio::task::block_in_place(|| Worker::start(&world, tmp.path(), "w0-0", Some(0), &FleetSpec::default()))?;
    tokio::task::block_in_place(|| -> Res {
        produce(&world, "logs", 6, 20, "a")?;
        testkit::wait_until("every partition waiting for the dead owner", Duration::from_secs(20), || {
            (std::fs::read_to_string(&w.log).ok()?.matches("waiting for the previous owner").count() >= 6).then_some(())
        })?;
        wait_exactly_once(&world, 120, &[&w])?;
        Ok(())
    })?;
    let waited = Instant::now().saturating_duration_since(expires);
    let txns = etcd_txns(&world)? - before;
    eprintln!("{txns} etcd transactions while waiting for 6 partitions (taken {waited:?} after the lease's end)");
    // Six acquisitions that find the key held, six that take it, the master's writes, the
    // first commits, and a second look at each key when a watch reaches its bound.
    assert!(txns < 80.0, "{txns} transactions: the partitions polled etcd");
    assert!(Instant::now() < expires + Duration::from_secs(30));
    Ok(())
}

/// Issue 23, item 11: a second process with the same `worker.id` and buffer folder would empty
/// and overwrite the first one's buffers. It stops at start, naming the folder and the setting;
/// the first one goes on and loses nothing.
#[test]
fn a_second_process_with_the_same_worker_id_and_buffer_folder_is_refused() -> Res {
    let world = world()?;
    world.kafka.create_topic("logs", 3)?;
    let tmp = tempfile::tempdir()?;
    let first = Worker::start(&world, tmp.path(), "w0-0", Some(0), &FleetSpec::default())?;
    testkit::wait_until("the first worker to own its partitions", Duration::from_secs(30), || {
        (first.owned().len() == 3).then_some(())
    })?;
    let spec = FleetSpec::default().edit(|c| c.worker.id = Some("w0-0".into()));
    let mut twin = Worker::start(&world, tmp.path(), "twin", Some(0), &spec)?;
    let (code, log) = exited_with(&mut twin)?;
    assert!(code.is_some_and(|c| c != 0), "the twin ran ({code:?}): {log}");
    assert!(log.contains("another zonal-transporter with worker.id \"w0-0\""), "{log}");
    produce(&world, "logs", 3, 50, "a")?;
    wait_exactly_once(&world, 150, &[&first])?;
    Ok(())
}

/// Issue 23, item 3: offsets are kept by topic name; a topic deleted and created again under
/// that name has another id. The partition is held (counted, logged with the command to run)
/// instead of being read from the old topic's offset, until an operator sets its offset. (The
/// mock cannot delete a topic: the recorded id is made another, as a re-creation leaves it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_created_again_holds_its_partition_until_an_operator_sets_the_offset() -> Res {
    let world = world()?;
    world.kafka.create_topic("re", 1)?;
    let tmp = tempfile::tempdir()?;
    let spec = FleetSpec { topics: vec!["re".into()], ..FleetSpec::default() };
    let mut w = tokio::task::block_in_place(|| -> Res<Worker> {
        let w = Worker::start(&world, tmp.path(), "w0-0", Some(0), &spec)?;
        produce(&world, "re", 1, 100, "a")?;
        wait_exactly_once(&world, 100, &[&w])?;
        Ok(w)
    })?;
    let mut client = etcd_client(&world).await?;
    let recorded = client.get("/test/topic-ids/re/0", None).await?;
    let real = recorded.kvs().first().map(|kv| kv.value().to_vec()).ok_or_else(|| anyhow::anyhow!("no id recorded"))?;
    assert_eq!(real.len(), 22, "{}", String::from_utf8_lossy(&real));
    tokio::task::block_in_place(|| w.stop())?;
    client.put("/test/topic-ids/re/0", "AAAAAAAAAAAAAAAAAAAAAQ", None).await?;
    tokio::task::block_in_place(|| -> Res {
        w.restart()?;
        produce(&world, "re", 1, 50, "b")?;
        testkit::wait_until("the partition to be held", Duration::from_secs(30), || {
            (w.metric("zonal_transporter_errors_total", &[("kind", "topic-recreated")]).ok()? >= 1.0).then_some(())
        })?;
        let log = std::fs::read_to_string(&w.log)?;
        assert!(log.contains("offsets --set re/0=<offset> --while-owned"), "{log}");
        assert_eq!(s3_records(&world)?.0.len(), 100, "read while held");
        let out = cli(&world, tmp.path(), "w0-0", &["offsets", "--set", "re/0=100", "--while-owned"])?;
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        wait_exactly_once(&world, 150, &[&w])?;
        Ok(())
    })?;
    let now = client.get("/test/topic-ids/re/0", None).await?;
    assert_eq!(now.kvs().first().map(|kv| kv.value().to_vec()), Some(real), "the current id is recorded again");
    Ok(())
}

/// Issue 23: the same while the partition is owned and read. Each commit is made only while the
/// recorded topic id is the one the partition started with (and each upload only while the
/// topic still has it): the owner does not commit past records of another incarnation of the
/// topic, nor its progress over an operator's offset. The partition starts again and is held.
/// (The mock cannot create a topic again: the recorded id is made another while owned.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_id_changed_while_owned_stops_its_commits_and_holds_the_partition() -> Res {
    let world = world()?;
    world.kafka.create_topic("re2", 1)?;
    let tmp = tempfile::tempdir()?;
    let spec = FleetSpec { topics: vec!["re2".into()], ..FleetSpec::default() };
    let w = tokio::task::block_in_place(|| -> Res<Worker> {
        let w = Worker::start(&world, tmp.path(), "w0-0", Some(0), &spec)?;
        produce(&world, "re2", 1, 100, "a")?;
        wait_exactly_once(&world, 100, &[&w])?;
        Ok(w)
    })?;
    let mut client = etcd_client(&world).await?;
    client.put("/test/topic-ids/re2/0", "AAAAAAAAAAAAAAAAAAAAAQ", None).await?;
    tokio::task::block_in_place(|| -> Res {
        produce(&world, "re2", 1, 50, "b")?;
        testkit::wait_until("the partition to be held", Duration::from_secs(30), || {
            (w.metric("zonal_transporter_errors_total", &[("kind", "topic-recreated")]).ok()? >= 1.0).then_some(())
        })
        .map_err(|e| anyhow::anyhow!("{e}: {}", w.log_tail()))?;
        let log = std::fs::read_to_string(&w.log)?;
        assert!(log.contains("not committing 150"), "{log}");
        assert!(log.contains("offsets --set re2/0=<offset> --while-owned"), "{log}");
        Ok(())
    })?;
    let committed = client.get("/test/offsets/re2/0", None).await?;
    assert_eq!(committed.kvs().first().map(|kv| kv.value().to_vec()), Some(b"100".to_vec()), "nothing committed past");
    tokio::task::block_in_place(|| -> Res {
        let out = cli(&world, tmp.path(), "w0-0", &["offsets", "--set", "re2/0=100", "--while-owned"])?;
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        wait_exactly_once(&world, 150, &[&w])?;
        Ok(())
    })?;
    Ok(())
}

/// Issue 23, item 6: the buffer files are bounded (`worker.max-buffer-bytes`): past it a
/// partition rolls what it holds and reads nothing more until the upload made room, so objects
/// stay near the bound however large `roll.max-bytes` is; and a filesystem short of
/// `worker.min-free-bytes` stops reading altogether with `/readyz` red, losing nothing.
#[test]
fn buffers_stay_within_the_disk_budget_and_a_full_disk_holds_reading() -> Res {
    let world = world()?;
    world.kafka.create_topic("logs", 1)?;
    let tmp = tempfile::tempdir()?;
    let budget: u64 = 256 * 1024;
    let spec = FleetSpec { max_age_ms: 2_000, max_records: 1_000_000, ..FleetSpec::default() }.edit(move |c| {
        c.roll.max_bytes = 64 * 1024 * 1024;
        c.worker.max_buffer_bytes = budget;
        c.s3.compression = zonal_transporter::config::Compression::None;
    });
    let mut w = Worker::start(&world, tmp.path(), "w0-0", Some(0), &spec)?;
    produce(&world, "logs", 1, 5000, "a")?;
    wait_exactly_once(&world, 5000, &[&w])?;
    let sizes = object_sizes(&world)?;
    // 5,000 records of ~300 bytes are 1.5 MB: several objects, none past the budget by more
    // than a record (appends count at once; the folder is measured every 300 ms).
    assert!(sizes.len() >= 5, "{sizes:?}");
    assert!(sizes.iter().all(|s| *s <= budget + 4096), "{sizes:?}");
    w.stop()?;

    // No room at all: nothing is read, /readyz says why, and nothing is lost.
    let full = spec.clone().edit(|c| c.worker.min_free_bytes = u64::MAX / 2);
    let held = Worker::start(&world, tmp.path(), "w0-0", Some(0), &full)?;
    produce(&world, "logs", 1, 100, "b")?;
    let (code, body) = testkit::wait_until("readyz to say there is no room", Duration::from_secs(30), || {
        held.get("/readyz").ok().filter(|(c, b)| *c != 200 && b.contains("worker.min-free-bytes"))
    })?;
    assert_eq!(code, 503, "{body}");
    assert_eq!(s3_records(&world)?.0.len(), 5000, "read while there was no room");
    drop(held);
    let w = Worker::start(&world, tmp.path(), "w0-0", Some(0), &spec)?;
    wait_exactly_once(&world, 5100, &[&w])?;
    Ok(())
}

/// Issue 23, item 7: `kafka.start-from = latest` is resolved once and saved at once. A worker
/// killed before its first object does not leave "latest" to be resolved again by the next
/// owner, which would skip what arrived in between.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_from_latest_is_saved_at_once_and_a_crash_skips_nothing() -> Res {
    let world = world()?;
    world.kafka.create_topic("late", 1)?;
    tokio::task::block_in_place(|| produce(&world, "late", 1, 100, "before"))?;
    let tmp = tempfile::tempdir()?;
    let spec = FleetSpec { topics: vec!["late".into()], grace_secs: 1, ..FleetSpec::default() }
        .edit(|c| c.kafka.start_from = zonal_transporter::config::StartFrom::Latest);
    let mut first = tokio::task::block_in_place(|| Worker::start(&world, tmp.path(), "w0-0", Some(0), &spec))?;
    let mut client = etcd_client(&world).await?;
    let handle = tokio::runtime::Handle::current();
    let saved = tokio::task::block_in_place(|| {
        testkit::wait_until("the resolved offset in etcd", Duration::from_secs(30), || {
            let got = handle.block_on(client.get("/test/offsets/late/0", None)).ok()?;
            got.kvs().first().map(|kv| String::from_utf8_lossy(kv.value()).into_owned())
        })
    })?;
    assert_eq!(saved, "100", "latest was not saved when the partition was taken");
    tokio::task::block_in_place(|| -> Res {
        first.kill9()?;
        produce(&world, "late", 1, 50, "between")?;
        let next = Worker::start(&world, tmp.path(), "w0-1", Some(0), &spec)?;
        let got = wait_exactly_once(&world, 50, &[&next])?;
        assert!(got.keys().all(|(_, _, o)| (100..150).contains(o)), "{got:?}");
        Ok(())
    })
}
