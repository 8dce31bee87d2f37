//! Keyed streams match the Java client's murmur2 choice; zone-unknown and zone-without-leaders
//! fall back to all partitions and say why.

mod common;

use std::time::Duration;

use common::*;
use rdkafka::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use testkit::{World, WorldSpec};
use zonal_agent::config::{KeyConfig, Partitioning};

fn world() -> Res<World> {
    Ok(World::start(&WorldSpec { etcd: false, s3: false, ..Default::default() })?)
}

#[test]
fn keyed_lines_land_where_java_murmur2_puts_them() -> Res {
    let world = world()?;
    world.kafka.create_topic("keyed", 12)?;
    world.kafka.create_topic("reference", 12)?;
    let bootstrap = world.kafka.bootstrap();
    let tmp = tempfile::tempdir()?;
    let spec = AgentSpec::new(&bootstrap, tmp.path(), "keyed").imds(&world.metadata[0].endpoint()).edit_stream(|s| {
        s.partitioning = Partitioning::Keyed;
        s.key = Some(KeyConfig::Regex(r"user=(\w+)".to_owned()));
    });
    let agent = Agent::start(&spec)?;
    let log = tmp.path().join("logs/app.log");
    let users: Vec<String> = (0..200).map(|u| format!("u{u}")).collect();
    append(&log, (0..2000).map(|n| format!("event {n} user={} did something", users[n % users.len()])))?;
    agent.wait_caught_up(&log, "keyed lines shipped")?;

    // librdkafka's murmur2_random partitioner is the Java client's default; ask it where each key goes.
    let reference: BaseProducer =
        ClientConfig::new().set("bootstrap.servers", &bootstrap).set("partitioner", "murmur2_random").create()?;
    for u in &users {
        reference.send(BaseRecord::to("reference").key(u.as_str()).payload(u.as_str())).map_err(|(e, _)| e)?;
    }
    reference.flush(Duration::from_secs(10))?;
    let java: std::collections::BTreeMap<String, i32> = read_topic(&bootstrap, "reference")?
        .into_iter()
        .map(|(p, _, payload)| (String::from_utf8_lossy(&payload).into_owned(), p))
        .collect();

    let records = read_topic(&bootstrap, "keyed")?;
    assert_eq!(records.len(), 2000);
    let mut partition_of = std::collections::BTreeMap::new();
    for (p, key, payload) in &records {
        let key = String::from_utf8_lossy(key.as_deref().unwrap_or_default()).into_owned();
        assert!(String::from_utf8_lossy(payload).contains(&format!("user={key} ")), "key {key} not from its line");
        assert_eq!(*partition_of.entry(key.clone()).or_insert(*p), *p, "key {key} in two partitions");
        assert_eq!(java.get(&key), Some(p), "key {key}: agent chose {p}, Java murmur2 {:?}", java.get(&key));
    }
    assert_eq!(partition_of.len(), users.len());
    Ok(())
}

#[test]
fn unknown_zone_falls_back_to_all_partitions() -> Res {
    let world = world()?;
    world.kafka.create_topic("nozone", 6)?;
    let bootstrap = world.kafka.bootstrap();
    let tmp = tempfile::tempdir()?;
    // No provider to ask and no zone set.
    let agent = Agent::start(&AgentSpec::new(&bootstrap, tmp.path(), "nozone"))?;
    let s = agent.status()?;
    assert_eq!(s["zone"], serde_json::Value::Null);
    assert_eq!(s["zone_source"], "unknown");
    assert_eq!(s["streams"][0]["fallback_reason"], "unknown-zone");
    assert_eq!(agent.metric("zonal_agent_fallback", &[("reason", "unknown-zone")])?, 1.0);
    let log = tmp.path().join("logs/app.log");
    append(&log, (0..600).map(|n| format!("line {n}")))?;
    agent.wait_caught_up(&log, "lines shipped")?;
    let parts: std::collections::BTreeSet<i32> = read_topic(&bootstrap, "nozone")?.iter().map(|r| r.0).collect();
    assert_eq!(parts.len(), 6, "fallback spreads over every partition: {parts:?}");
    Ok(())
}

#[test]
fn zone_without_leaders_falls_back_and_says_why() -> Res {
    let world = world()?;
    world.kafka.create_topic("noleader", 3)?;
    // Every partition led from zone 2 or 3: zone 1 has no local partition.
    for (p, reps) in world.kafka.replicas("noleader")? {
        let b = reps
            .iter()
            .copied()
            .find(|&b| world.kafka.rack_of(b) != Some("use1-az1"))
            .ok_or_else(|| anyhow::anyhow!("replica"))?;
        world.kafka.move_leader("noleader", p, b)?;
    }
    let bootstrap = world.kafka.bootstrap();
    let tmp = tempfile::tempdir()?;
    let agent = Agent::start(&AgentSpec::new(&bootstrap, tmp.path(), "noleader").imds(&world.metadata[0].endpoint()))?;
    assert_eq!(agent.status()?["zone"], "use1-az1");
    assert_eq!(agent.status()?["streams"][0]["fallback_reason"], "no-local-partition");
    assert_eq!(agent.metric("zonal_agent_fallback", &[("reason", "no-local-partition")])?, 1.0);
    let log = tmp.path().join("logs/app.log");
    append(&log, (0..300).map(|n| format!("line {n}")))?;
    agent.wait_caught_up(&log, "lines shipped")?;
    assert_eq!(read_topic(&bootstrap, "noleader")?.len(), 300);
    Ok(())
}

#[test]
fn inspect_shows_zone_racks_and_local_partitions() -> Res {
    let world = world()?;
    world.kafka.create_topic("seen", 6)?;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_zonal-agent"))
        .args([
            "inspect",
            "--bootstrap",
            &world.kafka.bootstrap(),
            "--topic",
            "seen",
            "--ec2-endpoint",
            &world.metadata[1].endpoint(),
        ])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("zone: use1-az2 (us-east-1b) (source: metadata:ec2)"), "{text}");
    for (id, rack) in world.kafka.broker_racks() {
        assert!(
            text.lines().any(|l| l.trim_start().starts_with(&id.to_string()) && l.contains(&format!("rack={rack}"))),
            "{text}"
        );
    }
    assert!(text.contains("local partitions: [1, 4]"), "{text}");
    assert_eq!(text.lines().filter(|l| l.ends_with("local")).count(), 2, "{text}");
    Ok(())
}

#[test]
fn a_zone_found_later_switches_routing_without_a_restart() -> Res {
    let world = world()?;
    world.kafka.create_topic("late", 6)?;
    let bootstrap = world.kafka.bootstrap();
    let tmp = tempfile::tempdir()?;
    // The metadata service does not answer at start (IMDS hop limit, a slow boot).
    world.metadata[0].set_silent(true);
    let spec = AgentSpec::new(&bootstrap, tmp.path(), "late")
        .imds(&world.metadata[0].endpoint())
        .edit(|c| c.zone.retry_secs = 1);
    let agent = Agent::start(&spec)?;
    assert_eq!(agent.status()?["streams"][0]["fallback_reason"], "unknown-zone");
    world.metadata[0].set_silent(false);
    let s = testkit::wait_until("the zone to be found on retry", Duration::from_secs(20), || {
        let s = agent.status().ok()?;
        (s["zone"] == "use1-az1" && s["streams"][0]["fallback_reason"].is_null()).then_some(s)
    })?;
    let local: std::collections::BTreeSet<i64> =
        s["streams"][0]["local_partitions"].as_array().into_iter().flatten().filter_map(|p| p.as_i64()).collect();
    let log = tmp.path().join("logs/app.log");
    append(&log, (0..500).map(|n| format!("line {n}")))?;
    agent.wait_caught_up(&log, "lines shipped")?;
    let parts: std::collections::BTreeSet<i64> =
        read_topic(&bootstrap, "late")?.iter().map(|r| i64::from(r.0)).collect();
    assert!(parts.is_subset(&local) && !local.is_empty(), "wrote {parts:?}, local {local:?}");
    Ok(())
}
