//! Six workers in three zones move a 12-partition topic to S3: every record exactly once, every
//! partition read in its leader's zone, cross-zone consume bytes ~0; then the fleet's failure
//! modes: a worker killed (returns within grace / does not), the master killed; a fleet
//! forming at its start, and a worker joining a running one.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;

#[test]
fn six_workers_three_zones_exactly_once_in_zone() -> Res {
    let world = world()?;
    world.kafka.create_topic("logs", 12)?;
    let tmp = tempfile::tempdir()?;
    let workers = fleet(&world, tmp.path(), &FleetSpec::default())?;
    let refs: Vec<&Worker> = workers.iter().collect();
    produce(&world, "logs", 12, 500, "a")?;
    wait_exactly_once(&world, 12 * 500, &refs)?;

    // Every partition is read by a worker in its leader's zone.
    let view = assignment(&refs).ok_or_else(|| anyhow::anyhow!("no assignment"))?;
    assert_eq!(view["cross_zone"], 0);
    let owners = owners_of(&view);
    assert_eq!(owners.len(), 12);
    let leaders = world.kafka.leaders("logs")?;
    for (tp, w) in &owners {
        let p: i32 = tp.rsplit('/').next().unwrap_or_default().parse()?;
        let leader_zone = world.kafka.rack_of(leaders[&p]).unwrap_or_default().to_owned();
        let worker_zone = &world.zones[w[1..2].parse::<usize>()?].id;
        assert_eq!(&leader_zone, worker_zone, "{tp} read by {w}");
    }
    // Balanced: two partitions per worker.
    let mut per: BTreeMap<&String, usize> = BTreeMap::new();
    for w in owners.values() {
        *per.entry(w).or_default() += 1;
    }
    assert!(per.values().all(|&c| c == 2), "{per:?}");

    // Cross-zone consume bytes ~0, from each worker's statistics.
    for w in &workers {
        let (cross, same) = testkit::wait_until("consumer statistics", Duration::from_secs(20), || {
            let same = w.metric("zonal_transporter_kafka_bytes", &[("zone", "same-zone"), ("direction", "rx")]).ok()?;
            let cross =
                w.metric("zonal_transporter_kafka_bytes", &[("zone", "cross-zone"), ("direction", "rx")]).ok()?;
            (same > 150_000.0).then_some((cross, same))
        })?;
        assert!(cross / (cross + same) < 0.05, "{}: cross-zone {cross} of {}", w.id, cross + same);
    }

    // The HTML view renders zones and workers.
    let (code, html) = workers[0].get("/assignment?format=html")?;
    assert_eq!(code, 200);
    assert!(html.contains("zone use1-az1") && html.contains("w2-1"), "{html}");

    // Offsets are mirrored to the Kafka consumer group.
    let consumer: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", world.kafka.bootstrap())
        .set("group.id", "zonal-transporter")
        .create()?;
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..12 {
        tpl.add_partition("logs", p);
    }
    let committed = testkit::wait_until("offsets mirrored to the group", Duration::from_secs(20), || {
        let c = rdkafka::consumer::Consumer::committed_offsets(&consumer, tpl.clone(), Duration::from_secs(5)).ok()?;
        c.elements().iter().all(|e| e.offset() == rdkafka::Offset::Offset(500)).then_some(c)
    })?;
    assert_eq!(committed.count(), 12);
    Ok(())
}

#[test]
fn killed_worker_gets_its_partitions_back_within_grace_else_zone_peer_takes_them() -> Res {
    let world = world()?;
    world.kafka.create_topic("logs", 12)?;
    let tmp = tempfile::tempdir()?;
    let spec = FleetSpec { grace_secs: 8, ..Default::default() };
    let mut workers = fleet(&world, tmp.path(), &spec)?;
    produce(&world, "logs", 12, 200, "a")?;
    wait_exactly_once(&world, 12 * 200, &workers.iter().collect::<Vec<_>>())?;
    let before = owners_of(&assignment(&workers.iter().collect::<Vec<_>>()).ok_or_else(|| anyhow::anyhow!("no view"))?);
    let mine: Vec<String> = before.iter().filter(|(_, w)| *w == "w0-0").map(|(t, _)| t.clone()).collect();
    assert_eq!(mine.len(), 2);

    // Killed and back within the grace period: the same partitions come back to it.
    workers[0].kill9()?;
    produce(&world, "logs", 12, 100, "b")?;
    workers[0].restart()?;
    testkit::wait_until("w0-0 to own its partitions again", Duration::from_secs(30), || {
        let mut owned = workers[0].owned();
        owned.sort();
        (owned == mine).then_some(())
    })?;
    wait_exactly_once(&world, 12 * 300, &workers.iter().collect::<Vec<_>>())?;

    // Killed for good: after the grace period its partitions go to w0-1, the other zone-0 worker.
    workers[0].kill9()?;
    produce(&world, "logs", 12, 100, "c")?;
    let rest: Vec<&Worker> = workers[1..].iter().collect();
    testkit::wait_until("w0-1 to take over", Duration::from_secs(40), || {
        let owned = workers[1].owned();
        mine.iter().all(|t| owned.contains(t)).then_some(())
    })?;
    let view = assignment(&rest).ok_or_else(|| anyhow::anyhow!("no view"))?;
    assert_eq!(view["cross_zone"], 0, "the takeover stays in zone");
    wait_exactly_once(&world, 12 * 400, &rest)?;
    Ok(())
}

#[test]
fn killed_master_is_replaced_and_the_run_completes_exactly_once() -> Res {
    let world = world()?;
    world.kafka.create_topic("logs", 12)?;
    let tmp = tempfile::tempdir()?;
    let mut workers = fleet(&world, tmp.path(), &FleetSpec { grace_secs: 2, ..Default::default() })?;
    produce(&world, "logs", 12, 200, "a")?;
    wait_exactly_once(&world, 12 * 200, &workers.iter().collect::<Vec<_>>())?;
    let master = testkit::wait_until("a master", Duration::from_secs(20), || {
        workers.iter().position(|w| w.status().ok().is_some_and(|s| s["role"] == "master"))
    })?;
    let old = workers[master].id.clone();
    workers[master].kill9()?;
    produce(&world, "logs", 12, 200, "b")?;
    let rest: Vec<&Worker> = workers.iter().enumerate().filter(|(i, _)| *i != master).map(|(_, w)| w).collect();
    let new = testkit::wait_until("a new master", Duration::from_secs(30), || {
        rest.iter().find(|w| w.status().ok().is_some_and(|s| s["role"] == "master")).map(|w| w.id.clone())
    })?;
    assert_ne!(new, old);
    wait_exactly_once(&world, 12 * 400, &rest)?;
    let view = assignment(&rest).ok_or_else(|| anyhow::anyhow!("no view"))?;
    assert_eq!(view["master"], new.as_str());
    assert!(!owners_of(&view).values().any(|w| *w == old), "the dead master's partitions moved");
    Ok(())
}

#[test]
fn sigterm_hands_partitions_over_at_once_without_the_grace_period() -> Res {
    let world = world()?;
    world.kafka.create_topic("logs", 12)?;
    let tmp = tempfile::tempdir()?;
    // A grace period far longer than the wait below: only a clean handover can pass.
    let spec = FleetSpec { grace_secs: 300, ..Default::default() };
    let mut workers = fleet(&world, tmp.path(), &spec)?;
    produce(&world, "logs", 12, 200, "a")?;
    wait_exactly_once(&world, 12 * 200, &workers.iter().collect::<Vec<_>>())?;
    let before = owners_of(&assignment(&workers.iter().collect::<Vec<_>>()).ok_or_else(|| anyhow::anyhow!("no view"))?);
    let leaving = if before.values().any(|w| w == "w0-0") { 0 } else { 1 };
    let id = workers[leaving].id.clone();
    let mine: Vec<String> = before.iter().filter(|(_, w)| **w == id).map(|(t, _)| t.clone()).collect();
    assert!(!mine.is_empty());
    let started = std::time::Instant::now();
    assert_eq!(workers[leaving].stop()?, Some(0), "a clean stop exits 0");
    produce(&world, "logs", 12, 100, "b")?;
    let peer = 1 - leaving;
    testkit::wait_until("the zone peer to take over", Duration::from_secs(30), || {
        let owned = workers[peer].owned();
        mine.iter().all(|t| owned.contains(t)).then_some(())
    })?;
    assert!(started.elapsed() < Duration::from_secs(60), "took {:?}", started.elapsed());
    let rest: Vec<&Worker> = workers.iter().enumerate().filter(|(i, _)| *i != leaving).map(|(_, w)| w).collect();
    wait_exactly_once(&world, 12 * 300, &rest)?;
    // Back again, it registers and takes work like any worker; a later crash would get grace.
    workers[leaving].restart()?;
    testkit::wait_until("the returning worker to get partitions", Duration::from_secs(30), || {
        (!workers[leaving].owned().is_empty()).then_some(())
    })?;
    Ok(())
}

/// Workers started together form one fleet before the first assignment
/// (`assignment.formation-ms`): the first of them up does not take every partition only to hand
/// two thirds over a moment later, so one assignment is written and each partition makes one
/// object. (With `formation-ms = 0` the first master planned for itself alone, then again for
/// each worker that joined.)
#[test]
fn workers_started_together_get_one_assignment_and_each_partition_one_object() -> Res {
    let world = world()?;
    world.kafka.create_topic("logs", 12)?;
    let tmp = tempfile::tempdir()?;
    // The first worker is master before the others start, as when pods start a moment apart;
    // they register well within the window.
    let spec = FleetSpec { max_age_ms: 60_000, ..FleetSpec::default() }.edit(|c| c.assignment.formation_ms = 3_000);
    let mut workers = vec![Worker::start(&world, tmp.path(), "w0-0", Some(0), &spec)?];
    testkit::wait_until("w0-0 to be master", Duration::from_secs(20), || {
        workers[0].status().ok().is_some_and(|s| s["role"] == "master").then_some(())
    })?;
    for z in 1..3 {
        workers.push(Worker::start(&world, tmp.path(), &format!("w{z}-0"), Some(z), &spec)?);
    }
    let refs: Vec<&Worker> = workers.iter().collect();
    let view = wait_converged(&refs, 12, 3)?;
    assert_eq!(view["generation"], 1, "the assignment was written again at the start: {view}");
    produce(&world, "logs", 12, 300, "a")?;
    wait_exactly_once(&world, 12 * 300, &refs)?;
    assert_eq!(object_keys(&world)?.len(), 12, "a partition moved at the start and made two objects");
    Ok(())
}

/// A partition that moves to a worker joining a running fleet, while its buffer is young and
/// small, is handed over by dropping the buffer: the next owner reads those records again and
/// makes one object of them, instead of the old owner uploading a small object first and the
/// new one waiting for it. (With a flush on every move, each moved partition made two objects.)
#[test]
fn a_worker_joining_takes_over_young_buffers_without_a_small_object_each() -> Res {
    let world = world()?;
    world.kafka.create_topic("logs", 6)?;
    let tmp = tempfile::tempdir()?;
    // Objects roll at 300 records; the age roll (60 s) never comes in this test, so a buffer
    // is young (under 15 s) when the partition moves.
    let spec = FleetSpec { max_age_ms: 60_000, ..FleetSpec::default() };
    let first = Worker::start(&world, tmp.path(), "w0-0", Some(0), &spec)?;
    testkit::wait_until("w0-0 to own every partition", Duration::from_secs(30), || {
        (first.owned().len() == 6).then_some(())
    })?;
    produce(&world, "logs", 6, 150, "a")?;
    // `/status` shows a buffer once it holds its first record (and every 1,024 after): every
    // partition then has an open buffer that the move must hand over.
    testkit::wait_until("w0-0 to have a buffer open for every partition", Duration::from_secs(30), || {
        let status = first.status().ok()?;
        let owned = status["owned"].as_object()?;
        (owned.len() == 6 && owned.values().all(|p| p["buffered"].as_u64() >= Some(1))).then_some(())
    })?;
    testkit::wait_until("w0-0 to export the lag of every partition", Duration::from_secs(30), || {
        (lag_gauges(&first).len() == 6).then_some(())
    })?;
    let second = Worker::start(&world, tmp.path(), "w0-1", Some(0), &spec)?;
    let both = [&first, &second];
    let moved = testkit::wait_until("the partitions to be shared", Duration::from_secs(30), || {
        let (a, b) = (first.owned(), second.owned());
        (!b.is_empty() && a.len() + b.len() == 6).then_some(b.len())
    })?;
    assert!(moved < 6, "w0-0 kept none");
    produce(&world, "logs", 6, 150, "b")?;
    wait_exactly_once(&world, 6 * 300, &both)?;
    assert_eq!(object_keys(&world)?.len(), 6, "a moved partition's young buffer was uploaded as an object of its own");
    // The lag of a partition that moved away is no longer exported by its old owner: a gauge
    // left at its last value would show lag that nobody has.
    let mut owned: Vec<String> =
        first.owned().iter().filter_map(|tp| tp.rsplit('/').next().map(str::to_owned)).collect();
    owned.sort();
    assert_eq!(lag_gauges(&first), owned, "w0-0 exports the lag of partitions it no longer owns");
    Ok(())
}

/// The partitions whose `lag_records` gauge a worker exports, sorted.
fn lag_gauges(w: &Worker) -> Vec<String> {
    let text = w.get("/metrics").map(|(_, t)| t).unwrap_or_default();
    let mut parts: Vec<String> = text
        .lines()
        .filter(|l| l.starts_with("zonal_transporter_lag_records{"))
        .filter_map(|l| l.split("partition=\"").nth(1)?.split('"').next().map(str::to_owned))
        .collect();
    parts.sort();
    parts
}

/// `log.format = "json"` (here from the environment, as a manifest sets it): every line the
/// worker writes is one JSON object with `timestamp`, `level`, `target` and `fields`, the
/// message among the fields, so that a log collector parses it without patterns.
#[test]
fn json_logs_are_one_object_per_line_with_stable_fields() -> Res {
    let world = world()?;
    world.kafka.create_topic("logs", 2)?;
    let tmp = tempfile::tempdir()?;
    let spec =
        FleetSpec { env: vec![("ZONAL_TRANSPORTER__LOG__FORMAT".into(), "json".into())], ..FleetSpec::default() };
    let worker = Worker::start(&world, tmp.path(), "w0-0", Some(0), &spec)?;
    produce(&world, "logs", 2, 300, "a")?;
    wait_exactly_once(&world, 600, &[&worker])?;
    let text = std::fs::read_to_string(&worker.log)?;
    let mut messages = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| anyhow::anyhow!("not a JSON line ({e}): {line}"))?;
        for field in ["timestamp", "level", "target", "fields"] {
            assert!(v.get(field).is_some(), "no {field} in {line}");
        }
        messages.push(v["fields"]["message"].as_str().unwrap_or_default().to_owned());
    }
    assert!(messages.iter().any(|m| m == "registered"), "{messages:?}");
    assert!(messages.iter().any(|m| m == "object uploaded and committed"), "{messages:?}");
    Ok(())
}

/// Buffers hold raw log records: the folder a worker makes is 0700 and every file in it 0600,
/// whatever the umask of whoever started it.
#[test]
fn buffers_are_private_to_the_worker() -> Res {
    use std::os::unix::fs::PermissionsExt;
    let world = world()?;
    world.kafka.create_topic("logs", 2)?;
    let tmp = tempfile::tempdir()?;
    let worker = Worker::start(&world, tmp.path(), "w0-0", Some(0), &FleetSpec::default())?;
    produce(&world, "logs", 2, 300, "a")?;
    wait_exactly_once(&world, 600, &[&worker])?;
    let dir = tmp.path().join("buffers").join("w0-0");
    let mode = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.permissions().mode() & 0o777);
    assert_eq!(mode(&tmp.path().join("buffers"))?, 0o700);
    assert_eq!(mode(&dir)?, 0o700);
    let mut files = 0;
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        if path.is_file() {
            assert_eq!(mode(&path)?, 0o600, "{}", path.display());
            files += 1;
        }
    }
    assert!(files > 0, "no buffer file to look at");
    Ok(())
}

/// Restart is the reload: SIGHUP (which asks many daemons to reload) is answered with a warning
/// and the worker goes on owning its partitions; before, its default action ended the process
/// without the orderly stop. SIGTERM then stops it cleanly.
#[test]
fn sighup_is_answered_with_a_warning_not_an_exit() -> Res {
    let world = world()?;
    world.kafka.create_topic("logs", 2)?;
    let tmp = tempfile::tempdir()?;
    let mut worker = Worker::start(&world, tmp.path(), "w0-0", Some(0), &FleetSpec::default())?;
    testkit::wait_until("w0-0 to own its partitions", Duration::from_secs(30), || {
        (worker.owned().len() == 2).then_some(())
    })?;
    worker.signal(libc::SIGHUP)?;
    testkit::wait_until("the warning", Duration::from_secs(10), || {
        std::fs::read_to_string(&worker.log).ok()?.contains("SIGHUP: the configuration is not reloaded").then_some(())
    })?;
    produce(&world, "logs", 2, 300, "a")?;
    wait_exactly_once(&world, 600, &[&worker])?;
    assert_eq!(worker.owned().len(), 2, "the worker let its partitions go");
    assert_eq!(worker.stop()?, Some(0), "{}", worker.log_tail());
    Ok(())
}
