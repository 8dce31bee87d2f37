//! At-least-once delivery: SIGKILL mid-stream loses nothing, and a leader move during a run is
//! followed without loss.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use testkit::{World, WorldSpec};
use zonal_agent::config::{Compression, StreamConfig};

fn world() -> Res<World> {
    Ok(World::start(&WorldSpec { etcd: false, s3: false, ..Default::default() })?)
}

/// Writes `total` lines in appends of 1000 from a thread. After each append it waits until the
/// agent has read the file to its end (until `free` is set), so the agent is always mid-stream
/// while the writer runs: a kill or a leader move then lands in the middle, not after the end.
/// While `pause` is set it writes nothing; `written` counts the lines written so far.
struct Writer {
    free: Arc<AtomicBool>,
    done: Arc<AtomicBool>,
    pause: Arc<AtomicBool>,
    written: Arc<AtomicUsize>,
    handle: std::thread::JoinHandle<Res>,
}

fn writer(path: std::path::PathBuf, total: usize, http: String) -> Writer {
    let (free, done, pause) =
        (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    let written = Arc::new(AtomicUsize::new(0));
    let (f, d, p, w) = (free.clone(), done.clone(), pause.clone(), written.clone());
    let handle = std::thread::spawn(move || {
        let (free, done, pause, written) = (f, d, p, w);
        for chunk in (0..total).collect::<Vec<_>>().chunks(1000) {
            testkit::wait_until("the test to unpause the writer", Duration::from_secs(60), || {
                (!pause.load(Ordering::SeqCst)).then_some(())
            })?;
            append(&path, chunk.iter().map(|n| format!("line {n:07}")))?;
            written.fetch_add(chunk.len(), Ordering::SeqCst);
            let size = std::fs::metadata(&path)?.len();
            let _ = testkit::wait_until("the agent to read the append", Duration::from_secs(30), || {
                if free.load(Ordering::SeqCst) {
                    return Some(());
                }
                let (_, body) = http_get(&format!("{http}/status")).ok()?;
                let s: serde_json::Value = serde_json::from_str(&body).ok()?;
                s["streams"][0]["files"]
                    .as_array()?
                    .iter()
                    .any(|f| f["read_offset"].as_u64() >= Some(size))
                    .then_some(())
            });
        }
        done.store(true, Ordering::SeqCst);
        Ok(())
    });
    Writer { free, done, pause, written, handle }
}

#[test]
fn sigkill_mid_stream_loses_nothing() -> Res {
    const TOTAL: usize = 40_000;
    let world = world()?;
    world.kafka.create_topic("kill", 6)?;
    let bootstrap = world.kafka.bootstrap();
    let tmp = tempfile::tempdir()?;
    let mut agent = Agent::start(&AgentSpec::new(&bootstrap, tmp.path(), "kill").imds(&world.metadata[0].endpoint()))?;
    let log = tmp.path().join("logs/app.log");
    let w = writer(log.clone(), TOTAL, agent.http.clone());

    // Kill once some lines are acknowledged and the writer is still going.
    testkit::wait_until("some lines acknowledged", Duration::from_secs(30), || {
        let acked = agent.metric("zonal_agent_acked_lines_total", &[]).ok()?;
        (acked > 5000.0).then_some(())
    })?;
    agent.kill9()?;
    let killed_while_writing = !w.done.load(Ordering::SeqCst);
    w.free.store(true, Ordering::SeqCst);
    assert!(killed_while_writing, "the kill must land mid-stream");
    w.handle.join().map_err(|_| anyhow::anyhow!("writer panicked"))??;
    agent.restart()?;
    agent.wait_caught_up(&log, "the restarted agent to ship everything")?;

    let got = counts(&read_topic(&bootstrap, "kill")?);
    let missing: Vec<usize> = (0..TOTAL).filter(|n| !got.contains_key(&format!("line {n:07}"))).collect();
    assert!(missing.is_empty(), "{} lines lost, first {:?}", missing.len(), &missing[..missing.len().min(5)]);
    let dups: usize = got.values().map(|c| c - 1).sum();
    println!("killed while writing: {killed_while_writing}; duplicates after SIGKILL: {dups}");
    // Duplicates are bounded by what was in flight or not yet checkpointed, far below the total.
    assert!(dups < TOTAL / 2, "{dups} duplicates");
    // The key a consumer drops duplicates by: every record has one, a resent line has the same
    // one as its first sending, and two lines never share one. So deduplicating by it leaves
    // each line exactly once.
    let keyed = read_topic_with(&bootstrap, "kill", |m| {
        use rdkafka::message::{Headers, Message};
        let header = |name: &str| {
            m.headers()?
                .iter()
                .find(|h| h.key == name)
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
        };
        (header("zonal.source"), header("zonal.offset"), m.payload().unwrap_or_default().to_vec())
    })?;
    let mut by_key: std::collections::BTreeMap<(String, String), std::collections::BTreeSet<Vec<u8>>> =
        Default::default();
    for (source, offset, payload) in keyed {
        let key = (
            source.ok_or_else(|| anyhow::anyhow!("a record without zonal.source"))?,
            offset.ok_or_else(|| anyhow::anyhow!("a record without zonal.offset"))?,
        );
        by_key.entry(key).or_default().insert(payload);
    }
    assert!(by_key.values().all(|p| p.len() == 1), "two different lines share a deduplication key");
    assert_eq!(by_key.len(), TOTAL, "deduplicated by (zonal.source, zonal.offset), each line once");
    Ok(())
}

#[test]
fn leader_move_is_followed_without_loss() -> Res {
    const TOTAL: usize = 30_000;
    let world = world()?;
    world.kafka.create_topic("moving", 6)?;
    let bootstrap = world.kafka.bootstrap();
    let tmp = tempfile::tempdir()?;
    let agent = Agent::start(&AgentSpec::new(&bootstrap, tmp.path(), "moving").imds(&world.metadata[0].endpoint()))?;
    let local = |a: &Agent| -> Option<Vec<i64>> {
        Some(a.status().ok()?["streams"][0]["local_partitions"].as_array()?.iter().filter_map(|v| v.as_i64()).collect())
    };
    assert_eq!(local(&agent), Some(vec![0, 3]));

    let log = tmp.path().join("logs/app.log");
    let w = writer(log.clone(), TOTAL, agent.http.clone());
    testkit::wait_until("some lines acknowledged", Duration::from_secs(30), || {
        (agent.metric("zonal_agent_acked_lines_total", &[]).ok()? > 5000.0).then_some(())
    })?;
    // Partition 3 loses its zone-1 leader to its replica in zone 2, mid-stream; the writer holds
    // still until the agent has noticed, so what it writes afterwards must avoid partition 3.
    w.pause.store(true, Ordering::SeqCst);
    let replicas = world.kafka.replicas("moving")?;
    let target = replicas[&3]
        .iter()
        .copied()
        .find(|&b| world.kafka.rack_of(b) == Some("use1-az2"))
        .ok_or_else(|| anyhow::anyhow!("no az2 replica"))?;
    world.kafka.move_leader("moving", 3, target)?;
    testkit::wait_until("the agent to drop partition 3", Duration::from_secs(20), || {
        (local(&agent)? == vec![0]).then_some(())
    })?;
    let written_before = w.written.load(Ordering::SeqCst);
    assert!(written_before < TOTAL, "the move must land mid-stream");
    w.pause.store(false, Ordering::SeqCst);
    w.handle.join().map_err(|_| anyhow::anyhow!("writer panicked"))??;
    agent.wait_caught_up(&log, "the agent to ship everything")?;

    let records = read_topic(&bootstrap, "moving")?;
    let got = counts(&records);
    let missing = (0..TOTAL).filter(|n| !got.contains_key(&format!("line {n:07}"))).count();
    assert_eq!(missing, 0, "lines lost across the leader move");
    assert!(records.iter().all(|r| r.0 == 0 || r.0 == 3), "only zone-1 partitions were ever local");
    // Lines written after the move was seen went to partition 0 only.
    let late: Vec<i32> = records
        .iter()
        .filter(|r| String::from_utf8_lossy(&r.2)[5..].parse::<usize>().is_ok_and(|n| n >= written_before))
        .map(|r| r.0)
        .collect();
    assert!(
        !late.is_empty() && late.iter().all(|&p| p == 0),
        "late lines in partitions {:?}",
        late.iter().collect::<std::collections::BTreeSet<_>>()
    );
    // After the move, new lines go to partition 0 only: partition 3 stops growing.
    let before = records.iter().filter(|r| r.0 == 3).count();
    append(&log, (0..2000).map(|n| format!("after {n:05}")))?;
    agent.wait_caught_up(&log, "the agent to ship the lines written after the move")?;
    let after = read_topic(&bootstrap, "moving")?;
    assert_eq!(after.iter().filter(|r| r.0 == 3).count(), before, "lines still went to the moved partition");
    assert_eq!(after.iter().filter(|r| String::from_utf8_lossy(&r.2).starts_with("after")).count(), 2000);
    Ok(())
}

#[test]
fn kafka_down_stops_reading_at_the_budget_and_resumes_without_loss() -> Res {
    const TOTAL: usize = 30_000;
    let world = world()?;
    world.kafka.create_topic("down", 3)?;
    let bootstrap = world.kafka.bootstrap();
    let tmp = tempfile::tempdir()?;
    let spec = AgentSpec::new(&bootstrap, tmp.path(), "down")
        .imds(&world.metadata[0].endpoint())
        .edit_stream(|s| s.compression = Compression::None);
    let agent = Agent::start(&spec)?;
    let config = agent.config.clone();
    drop(agent);
    // The smallest budget the config allows, so the bound is reached quickly.
    rewrite_config(&config, |c| c.max_in_flight_bytes = 65536)?;
    let mut agent = Agent::start_with_config(tmp.path())?;

    for b in world.kafka.broker_racks().keys() {
        world.kafka.broker_down(*b)?;
    }
    let log = tmp.path().join("logs/app.log");
    append(&log, (0..TOTAL).map(|n| format!("line {n:07} {}", "y".repeat(60))))?;
    let size = std::fs::metadata(&log)?.len();
    // Reading stops once the budget is in flight: the agent holds still well short of the end.
    testkit::wait_until("the in-flight budget to fill", Duration::from_secs(20), || {
        (agent.metric("zonal_agent_in_flight_bytes", &[]).ok()? >= 30_000.0).then_some(())
    })?;
    let read = |a: &Agent| -> Option<u64> { a.status().ok()?["streams"][0]["files"][0]["read_offset"].as_u64() };
    let first = read(&agent).unwrap_or(0);
    assert!(first < size / 4, "read {first} of {size} bytes while Kafka is down");
    assert!(agent.metric("zonal_agent_in_flight_bytes", &[])? <= 65536.0 + 4096.0);

    for b in world.kafka.broker_racks().keys() {
        world.kafka.broker_up(*b)?;
    }
    agent.wait_caught_up(&log, "the agent to resume and ship everything")?;
    let got = counts(&read_topic(&bootstrap, "down")?);
    let missing = (0..TOTAL).filter(|n| !got.contains_key(&format!("line {n:07} {}", "y".repeat(60)))).count();
    assert_eq!(missing, 0);
    assert_eq!(agent.stop()?, Some(0));
    Ok(())
}

#[test]
fn an_outage_longer_than_message_timeout_ends_with_every_line_delivered_and_no_restart() -> Res {
    const TOTAL: usize = 20_000;
    let world = world()?;
    world.kafka.create_topic("outage", 3)?;
    let bootstrap = world.kafka.bootstrap();
    let tmp = tempfile::tempdir()?;
    // A small budget fills at once; records time out in librdkafka after 1.5 s and come back
    // for a retry while the budget is exhausted: the retry path must not wait for budget.
    let spec = AgentSpec::new(&bootstrap, tmp.path(), "outage")
        .imds(&world.metadata[0].endpoint())
        .edit_stream(|s| s.compression = Compression::None)
        .edit(|c| {
            c.max_in_flight_bytes = 65536;
            c.stall_timeout_secs = 2;
            c.unacknowledged_not_ready_secs = 1;
        });
    let mut agent = Agent::start(&spec)?;
    agent.kill9()?;
    agent.rewrite_config(|c| {
        c.kafka.options.insert("message.timeout.ms".to_owned(), "1500".to_owned());
    })?;
    agent.restart()?;
    for b in world.kafka.broker_racks().keys() {
        world.kafka.broker_down(*b)?;
    }
    let log = tmp.path().join("logs/app.log");
    append(&log, (0..TOTAL).map(|n| format!("line {n:07} {}", "o".repeat(60))))?;
    // Several message timeouts pass while Kafka is down.
    testkit::wait_until("records to time out and wait for a retry", Duration::from_secs(30), || {
        (agent.metric("zonal_agent_errors_total", &[("kind", "delivery")]).ok()? >= 50.0).then_some(())
    })?;
    // Lines waiting and none acknowledged: /readyz says so, and /healthz stays green although
    // the outage lasts many times the stall timeout: the agent is not stuck, and a restart
    // could not bring Kafka back (it would only close descriptors of rotated files).
    let http = agent.http.clone();
    testkit::wait_until("/readyz to report the outage", Duration::from_secs(20), || {
        let (code, body) = http_get(&format!("{http}/readyz")).ok()?;
        (code == 503 && body.contains("none acknowledged")).then_some(())
    })?;
    assert_eq!(http_get(&format!("{http}/healthz"))?.0, 200, "a Kafka outage is not a stuck agent");
    // The outage goes on through more rounds of timeouts and retries.
    let failed = agent.metric("zonal_agent_errors_total", &[("kind", "delivery")])?;
    testkit::wait_until("more rounds of timed-out records", Duration::from_secs(30), || {
        (agent.metric("zonal_agent_errors_total", &[("kind", "delivery")]).ok()? >= failed + 50.0).then_some(())
    })?;
    assert_eq!(http_get(&format!("{http}/healthz"))?.0, 200, "a Kafka outage is not a stuck agent");
    for b in world.kafka.broker_racks().keys() {
        world.kafka.broker_up(*b)?;
    }
    agent.wait_caught_up(&log, "the agent to resume by itself after the outage")?;
    assert_eq!(http_get(&format!("{http}/healthz"))?.0, 200);
    let got = counts(&read_topic(&bootstrap, "outage")?);
    let missing = (0..TOTAL).filter(|n| !got.contains_key(&format!("line {n:07} {}", "o".repeat(60)))).count();
    assert_eq!(missing, 0, "lines lost after the outage");
    Ok(())
}

#[test]
fn an_authorization_error_keeps_lines_and_turns_readyz_red_until_fixed() -> Res {
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    let world = world()?;
    world.kafka.create_topic("acl", 3)?;
    let bootstrap = world.kafka.bootstrap();
    let tmp = tempfile::tempdir()?;
    let agent = Agent::start(&AgentSpec::new(&bootstrap, tmp.path(), "acl").imds(&world.metadata[0].endpoint()))?;
    // The ACL is missing for a while: the next produce requests are refused (the agent backs
    // off up to 5 s between rounds of retries, so a few refusals already take a while).
    world
        .kafka
        .mock()?
        .request_errors(RDKafkaApiKey::Produce, &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED; 6]);
    let log = tmp.path().join("logs/app.log");
    append(&log, (0..3000).map(|n| format!("acl line {n}")))?;
    let http = agent.http.clone();
    testkit::wait_until("/readyz to turn red with the refusal", Duration::from_secs(30), || {
        let (code, body) = http_get(&format!("{http}/readyz")).ok()?;
        (code != 200 && body.contains("refuses")).then_some(())
    })?;
    // The operator fixes the ACL (the injected errors run out): everything arrives.
    agent.wait_caught_up(&log, "every line after the ACL is fixed")?;
    testkit::wait_until("/readyz to turn green again", Duration::from_secs(20), || {
        (http_get(&format!("{http}/readyz")).ok()?.0 == 200).then_some(())
    })?;
    let got = counts(&read_topic(&bootstrap, "acl")?);
    let missing = (0..3000).filter(|n| !got.contains_key(&format!("acl line {n}"))).count();
    assert_eq!(missing, 0, "lines dropped on an authorization error");
    assert!(agent.metric("zonal_agent_errors_total", &[("kind", "refused")])? > 0.0);
    Ok(())
}

#[test]
/// A partition increase while lines are written: routing takes the new local partition from the
/// next topology, the producer (which may not know it yet) learns it when it refuses a record,
/// and every line is delivered, some to the new partition.
fn a_partition_increase_is_picked_up_with_every_line_delivered() -> Res {
    const TOTAL: usize = 20_000;
    let world = World::start(&WorldSpec {
        etcd: false,
        s3: false,
        security: testkit::Security::relay(),
        ..Default::default()
    })?;
    world.kafka.create_topic("grow", 6)?;
    world.kafka.set_visible_partitions("grow", Some(3))?;
    let bootstrap = world.kafka.bootstrap();
    let tmp = tempfile::tempdir()?;
    let agent = Agent::start(&AgentSpec::new(&bootstrap, tmp.path(), "grow").imds(&world.metadata[0].endpoint()))?;
    let local = |a: &Agent| -> Option<Vec<i64>> {
        Some(a.status().ok()?["streams"][0]["local_partitions"].as_array()?.iter().filter_map(|v| v.as_i64()).collect())
    };
    assert_eq!(local(&agent), Some(vec![0]));
    let w = writer(tmp.path().join("logs/app.log"), TOTAL, agent.http.clone());
    testkit::wait_until("some lines acknowledged", Duration::from_secs(30), || {
        (agent.metric("zonal_agent_acked_lines_total", &[]).ok()? > 3000.0).then_some(())
    })?;
    world.kafka.set_visible_partitions("grow", Some(6))?;
    testkit::wait_until("the agent to write to partition 3 too", Duration::from_secs(20), || {
        (local(&agent)? == vec![0, 3]).then_some(())
    })?;
    w.handle.join().map_err(|_| anyhow::anyhow!("writer panicked"))??;
    // On a fast run the writer can be done before the new partition is seen: lines written
    // after it is seen must reach it too.
    const AFTER: usize = 5_000;
    append(&tmp.path().join("logs/app.log"), (TOTAL..TOTAL + AFTER).map(|n| format!("line {n:07}")))?;
    agent.wait_caught_up(&tmp.path().join("logs/app.log"), "every line")?;
    let records = read_topic(&bootstrap, "grow")?;
    let got = counts(&records);
    let missing = (0..TOTAL + AFTER).filter(|n| !got.contains_key(&format!("line {n:07}"))).count();
    assert_eq!(missing, 0, "lines lost across a partition increase");
    let on_new = records.iter().filter(|(p, _, _)| *p == 3).count();
    assert!(on_new > 0, "nothing went to the new partition");
    assert!(records.iter().all(|(p, _, _)| [0, 3].contains(p)), "a line left the zone");
    Ok(())
}

#[test]
/// A fatal producer error (here the cluster refuses the idempotent producer an id) stops the
/// agent with a non-zero exit and the reason, checkpoints untouched; restarted by its supervisor,
/// it ships every line.
fn a_fatal_producer_error_exits_non_zero_and_the_restart_loses_nothing() -> Res {
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    let world = world()?;
    world.kafka.create_topic("fatal", 3)?;
    let bootstrap = world.kafka.bootstrap();
    let tmp = tempfile::tempdir()?;
    let log = tmp.path().join("logs/app.log");
    std::fs::create_dir_all(tmp.path().join("logs"))?;
    append(&log, (0..2000).map(|n| format!("fatal line {n}")))?;
    world.kafka.mock()?.request_errors(
        RDKafkaApiKey::InitProducerId,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED],
    );
    let mut agent =
        Agent::launch(&AgentSpec::new(&bootstrap, tmp.path(), "fatal").imds(&world.metadata[0].endpoint()))?;
    let code =
        agent.wait_exit(Duration::from_secs(30)).map_err(|e| anyhow::anyhow!("{e}; log:\n{}", agent.log_tail()))?;
    assert!(code.is_some_and(|c| c != 0), "exit code {code:?}");
    let text = std::fs::read_to_string(&agent.log)?;
    assert!(text.contains("fatal error"), "the reason is not logged:\n{text}");
    agent.restart()?;
    agent.wait_caught_up(&log, "every line after the restart")?;
    let got = counts(&read_topic(&bootstrap, "fatal")?);
    let missing = (0..2000).filter(|n| !got.contains_key(&format!("fatal line {n}"))).count();
    assert_eq!(missing, 0, "lines lost across a fatal producer error");
    Ok(())
}

#[test]
/// A rolling broker restart moves leaders under steady writing: routing follows librdkafka's own
/// view (its statistics), not the periodic refresh, and what went to the moved partition after
/// the move (so across zones) stays under 1% of the bytes of the run.
fn a_leader_move_during_steady_writing_sends_under_one_percent_across_zones() -> Res {
    const RATE: usize = 2_000; // lines per second
    const SECONDS: usize = 30;
    const MOVE_AT: usize = 8;
    let world = world()?;
    world.kafka.create_topic("follow", 6)?;
    let bootstrap = world.kafka.bootstrap();
    let tmp = tempfile::tempdir()?;
    let mut agent =
        Agent::start(&AgentSpec::new(&bootstrap, tmp.path(), "follow").imds(&world.metadata[0].endpoint()))?;
    // The periodic refresh is out of the picture.
    agent.kill9()?;
    agent.rewrite_config(|c| c.kafka.topology_refresh_secs = 3600)?;
    agent.restart()?;
    let local = |a: &Agent| -> Option<Vec<i64>> {
        Some(a.status().ok()?["streams"][0]["local_partitions"].as_array()?.iter().filter_map(|v| v.as_i64()).collect())
    };
    assert_eq!(local(&agent), Some(vec![0, 3]));
    // A steady writer: RATE lines a second in appends every 50 ms, paced by the clock (load, not
    // synchronisation).
    let path = tmp.path().join("logs/app.log");
    let written = Arc::new(AtomicUsize::new(0));
    let w = {
        let written = written.clone();
        std::thread::spawn(move || -> Res {
            let start = std::time::Instant::now();
            let per_tick = RATE / 20;
            for tick in 0..SECONDS * 20 {
                let at = start + Duration::from_millis(50 * tick as u64);
                std::thread::sleep(at.saturating_duration_since(std::time::Instant::now()));
                let first = tick * per_tick;
                append(&path, (first..first + per_tick).map(|n| format!("line {n:07}")))?;
                written.fetch_add(per_tick, Ordering::SeqCst);
            }
            Ok(())
        })
    };
    testkit::wait_until("the writer to reach the move", Duration::from_secs(60), || {
        (written.load(Ordering::SeqCst) >= MOVE_AT * RATE).then_some(())
    })?;
    let replicas = world.kafka.replicas("follow")?;
    let target = replicas[&3]
        .iter()
        .copied()
        .find(|&b| world.kafka.rack_of(b) == Some("use1-az2"))
        .ok_or_else(|| anyhow::anyhow!("no az2 replica"))?;
    let consumer: rdkafka::consumer::BaseConsumer =
        rdkafka::ClientConfig::new().set("bootstrap.servers", &bootstrap).create()?;
    use rdkafka::consumer::Consumer as _;
    let (_, before) = consumer.fetch_watermarks("follow", 3, Duration::from_secs(10))?;
    let moved = std::time::Instant::now();
    world.kafka.move_leader("follow", 3, target)?;
    testkit::wait_until("the agent to drop partition 3", Duration::from_secs(10), || {
        (local(&agent)? == vec![0]).then_some(())
    })?;
    let followed = moved.elapsed();
    w.join().map_err(|_| anyhow::anyhow!("writer panicked"))??;
    let total = SECONDS * RATE;
    agent.wait_caught_up(&tmp.path().join("logs/app.log"), "every line")?;
    let records = read_topic(&bootstrap, "follow")?;
    let got = counts(&records);
    let missing = (0..total).filter(|n| !got.contains_key(&format!("line {n:07}"))).count();
    assert_eq!(missing, 0);
    // Every line has the same length, so records are bytes.
    // The first client's view of partition 3's leader is stale now; ask until it has followed.
    let after = testkit::wait_until("partition 3's high watermark", Duration::from_secs(30), || {
        consumer.fetch_watermarks("follow", 3, Duration::from_secs(5)).ok().map(|(_, high)| high)
    })?;
    let across = (after - before) as f64 / records.len() as f64;
    eprintln!(
        "leader move followed in {followed:?}; {} of {} records ({:.3}%) went to the moved partition after the move",
        after - before,
        records.len(),
        across * 100.0
    );
    assert!(across < 0.01, "{:.3}% of the bytes went across zones", across * 100.0);
    Ok(())
}

/// A keyed stream's partition is led by a broker that goes down (in another zone than the agent)
/// while both streams write far more than the whole in-flight budget: the stuck stream holds its
/// share and no more, the healthy one keeps flowing to the end, and once the broker is back the
/// stuck lines arrive too, each once.
#[test]
fn a_stream_without_a_leader_holds_its_share_and_the_other_keeps_flowing() -> Res {
    const LINES: usize = 60_000;
    let world = world()?;
    world.kafka.create_topic("stuck", 1)?;
    world.kafka.create_topic("healthy", 3)?;
    let away = world.kafka.brokers_in(&world.kafka.zones()[1])[0];
    world.kafka.move_leader("stuck", 0, away)?;
    let bootstrap = world.kafka.bootstrap();
    let tmp = tempfile::tempdir()?;
    let (bad_log, good_log) = (tmp.path().join("logs/bad/app.log"), tmp.path().join("logs/good/app.log"));
    let spec = AgentSpec::new(&bootstrap, tmp.path(), "stuck").imds(&world.metadata[0].endpoint()).edit(|c| {
        c.max_in_flight_bytes = 2 * 1024 * 1024;
        let good = stream("good", &format!("{}/logs/good/*.log", tmp.path().display()), "healthy");
        let bad = &mut c.streams[0];
        bad.paths = vec![format!("{}/logs/bad/*.log", tmp.path().display())];
        bad.partitioning = zonal_agent::config::Partitioning::Keyed;
        bad.key = Some(zonal_agent::config::KeyConfig::Regex(r"^(\w+)".into()));
        let (batch_lines, linger_ms) = (bad.batch_lines, bad.linger_ms);
        c.streams.push(StreamConfig { batch_lines, linger_ms, ..good });
    });
    std::fs::create_dir_all(tmp.path().join("logs/bad"))?;
    std::fs::create_dir_all(tmp.path().join("logs/good"))?;
    let agent = Agent::start(&spec)?;
    world.kafka.broker_down(away)?;
    // 100-byte lines: each stream writes about three times the whole budget.
    let line = |what: &str, n: usize| format!("{what} {n:07} {}", "x".repeat(88));
    append(&bad_log, (0..LINES).map(|n| line("bad", n)))?;
    let share = |a: &Agent| -> Option<(u64, u64)> {
        let s = a.status().ok()?;
        Some((s["streams"][0]["in_flight_bytes"].as_u64()?, s["streams"][0]["in_flight_limit"].as_u64()?))
    };
    testkit::wait_until("the stuck stream to take its share", Duration::from_secs(30), || {
        let (used, limit) = share(&agent)?;
        assert!(used <= limit, "the stuck stream holds {used} bytes, over its share of {limit}");
        // 90% of an equal share of the budget, whatever the agent says its share is.
        (used * 10 >= 1024 * 1024 * 9).then_some(())
    })?;
    append(&good_log, (0..LINES).map(|n| line("good", n)))?;
    agent.wait_stream_caught_up(1, &good_log, "the healthy stream to deliver everything while the other is stuck")?;
    let (used, limit) = share(&agent).ok_or_else(|| anyhow::anyhow!("no status"))?;
    assert!(used <= limit, "the stuck stream holds {used} bytes, over its share of {limit}");
    world.kafka.broker_up(away)?;
    agent.wait_stream_caught_up(0, &bad_log, "the stuck stream to deliver everything once its leader is back")?;
    for (topic, what) in [("stuck", "bad"), ("healthy", "good")] {
        let got = counts(&read_topic(&bootstrap, topic)?);
        let wrong = (0..LINES).filter(|&n| got.get(&line(what, n)).copied() != Some(1)).count();
        assert_eq!(wrong, 0, "{topic}: {wrong} lines missing or repeated");
    }
    Ok(())
}

/// Kafka is away while a hundred files have lines to read: reading stops at the unsent bound
/// (`max-unsent-bytes`) instead of filling a buffer per file, the peak memory stays within the
/// README's formula, and once Kafka is back every line arrives once.
#[test]
fn kafka_away_with_a_hundred_busy_files_holds_memory_to_the_bound() -> Res {
    const FILES: usize = 100;
    const LINES: usize = 3_000;
    let world = world()?;
    // Three local partitions: the test cluster keeps 5 MiB a partition.
    world.kafka.create_topic("many", 9)?;
    let bootstrap = world.kafka.bootstrap();
    let tmp = tempfile::tempdir()?;
    let (in_flight, unsent) = (1024 * 1024, 4 * 1024 * 1024);
    let spec = AgentSpec::new(&bootstrap, tmp.path(), "many").imds(&world.metadata[0].endpoint()).edit(|c| {
        c.max_in_flight_bytes = in_flight;
        c.max_unsent_bytes = unsent;
        // Records time out and wait for a retry soon: the moment the stream reads on from other
        // files while its budget is held by records to re-send.
        c.kafka.options.insert("message.timeout.ms".to_owned(), "1500".to_owned());
    });
    let agent = Agent::start(&spec)?;
    let pid = agent.pid().ok_or_else(|| anyhow::anyhow!("agent not running"))?;
    let brokers: Vec<i32> = world.kafka.broker_racks().keys().copied().collect();
    for &b in &brokers {
        world.kafka.broker_down(b)?;
    }
    // 100 files of 300 kB each (30 MB): without the bound each would hold all of its lines.
    let line = |f: usize, n: usize| format!("file {f:03} line {n:05} {}", "x".repeat(80));
    for f in 0..FILES {
        append(&tmp.path().join(format!("logs/f{f:03}.log")), (0..LINES).map(|n| line(f, n)))?;
    }
    let most = std::cell::Cell::new(0.0f64);
    testkit::wait_until("the agent to fill its unsent bound", Duration::from_secs(60), || {
        let held = agent.metric("zonal_agent_unsent_bytes", &[]).ok()?;
        most.set(most.get().max(held));
        assert!(held <= 2.0 * unsent as f64, "unsent lines hold {held} bytes, bound {unsent}");
        (held >= 0.75 * unsent as f64).then_some(())
    })?;
    for &b in &brokers {
        world.kafka.broker_up(b)?;
    }
    for f in 0..FILES {
        agent.wait_caught_up(&tmp.path().join(format!("logs/f{f:03}.log")), "every file after Kafka came back")?;
    }
    let peak = testkit::process::peak_rss_mib(pid)?;
    let got = counts(&read_topic(&bootstrap, "many")?);
    let wrong = (0..FILES)
        .flat_map(|f| (0..LINES).map(move |n| (f, n)))
        .filter(|&(f, n)| !got.contains_key(&line(f, n)))
        .count();
    assert_eq!(wrong, 0, "lines lost");
    // The unsent bound holds up to one read's growth of a batch.
    assert!(most.get() <= 2.0 * unsent as f64, "unsent lines held {} bytes, bound {unsent}", most.get());
    // README: about 24 MB + 1.5 x max-in-flight-bytes + 2 x max-unsent-bytes, for the release
    // build; the tests run the debug build, whose base is about 36 MB.
    let bound = 40.0 + 1.5 * f64::from(in_flight as u32) / 1048576.0 + 2.0 * f64::from(unsent as u32) / 1048576.0;
    println!("peak RSS {peak:.1} MiB, bound {bound:.1} MiB, most unsent {:.1} MiB", most.get() / 1048576.0);
    assert!(peak <= bound, "peak RSS {peak:.1} MiB over the bound {bound:.1} MiB");
    Ok(())
}

/// A topic whose ACL is missing (its leader answers every Produce with
/// TOPIC_AUTHORIZATION_FAILED) beside a healthy one, both written at three times the whole
/// in-flight budget: the refused stream holds its share and no more while `/readyz` says why,
/// the healthy one delivers everything meanwhile, and once the topic is writable again (its
/// leader moved to a broker that accepts) the refused lines arrive too, each once.
#[test]
fn a_topic_refused_by_its_acl_holds_its_share_and_the_other_keeps_flowing() -> Res {
    use rdkafka::types::RDKafkaRespErr;
    const LINES: usize = 60_000;
    let world = world()?;
    world.kafka.create_topic("denied", 1)?;
    world.kafka.create_topic("healthy", 3)?;
    let zones = world.kafka.zones().to_vec();
    let (refusing, accepting) = (world.kafka.brokers_in(&zones[1])[0], world.kafka.brokers_in(&zones[2])[0]);
    world.kafka.move_leader("denied", 0, refusing)?;
    let bootstrap = world.kafka.bootstrap();
    let tmp = tempfile::tempdir()?;
    let (bad_log, good_log) = (tmp.path().join("logs/bad/app.log"), tmp.path().join("logs/good/app.log"));
    let spec = AgentSpec::new(&bootstrap, tmp.path(), "denied").imds(&world.metadata[0].endpoint()).edit(|c| {
        c.max_in_flight_bytes = 2 * 1024 * 1024;
        let good = stream("good", &format!("{}/logs/good/*.log", tmp.path().display()), "healthy");
        let bad = &mut c.streams[0];
        bad.paths = vec![format!("{}/logs/bad/*.log", tmp.path().display())];
        let (batch_lines, linger_ms) = (bad.batch_lines, bad.linger_ms);
        c.streams.push(StreamConfig { batch_lines, linger_ms, ..good });
    });
    std::fs::create_dir_all(tmp.path().join("logs/bad"))?;
    std::fs::create_dir_all(tmp.path().join("logs/good"))?;
    let agent = Agent::start(&spec)?;
    world.kafka.refuse_produce_at(refusing, RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED, 100_000)?;
    let line = |what: &str, n: usize| format!("{what} {n:07} {}", "x".repeat(88));
    append(&bad_log, (0..LINES).map(|n| line("bad", n)))?;
    let share = |a: &Agent| -> Option<(u64, u64)> {
        let s = a.status().ok()?;
        Some((s["streams"][0]["in_flight_bytes"].as_u64()?, s["streams"][0]["in_flight_limit"].as_u64()?))
    };
    testkit::wait_until("the refused stream to take its share", Duration::from_secs(30), || {
        let (used, limit) = share(&agent)?;
        assert!(used <= limit, "the refused stream holds {used} bytes, over its share of {limit}");
        (used * 10 >= 1024 * 1024 * 9).then_some(())
    })?;
    append(&good_log, (0..LINES).map(|n| line("good", n)))?;
    agent.wait_stream_caught_up(1, &good_log, "the healthy stream to deliver everything while the other is refused")?;
    let (code, body) = http_get(&format!("{}/readyz", agent.http))?;
    assert!(code != 200 && body.contains("refuses"), "/readyz while refused: {code} {body}");
    assert_eq!(
        counts(&read_topic(&bootstrap, "denied")?).len(),
        0,
        "the refusal held while the other stream delivered"
    );
    world.kafka.move_leader("denied", 0, accepting)?;
    agent.wait_stream_caught_up(0, &bad_log, "the refused stream to deliver everything once its topic is writable")?;
    for (topic, what) in [("denied", "bad"), ("healthy", "good")] {
        let got = counts(&read_topic(&bootstrap, topic)?);
        let wrong = (0..LINES).filter(|&n| got.get(&line(what, n)).copied() != Some(1)).count();
        assert_eq!(wrong, 0, "{topic}: {wrong} lines missing or repeated");
    }
    Ok(())
}
