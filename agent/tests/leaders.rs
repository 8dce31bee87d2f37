//! `zonal-agent leaders` against the testkit cluster: a 1:2:4 world planned even, the plan
//! keeping every replica set, `--apply` refused clearly where the cluster lacks the Admin API,
//! and rates read from a running agent's metrics.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};

use common::*;
use testkit::{World, WorldSpec};

fn world() -> Res<World> {
    Ok(World::start(&WorldSpec { etcd: false, s3: false, ..Default::default() })?)
}

fn leaders(world: &World, topic: &str, extra: &[&str]) -> Res<Output> {
    let bootstrap = world.kafka.bootstrap();
    let mut args = vec!["leaders", "--bootstrap", &bootstrap, "--topic", topic];
    args.extend(extra);
    Ok(Command::new(env!("CARGO_BIN_EXE_zonal-agent")).args(&args).env("RUST_LOG", "warn").output()?)
}

fn json(out: &Output) -> Res<serde_json::Value> {
    anyhow::ensure!(out.status.success(), "leaders failed: {}", String::from_utf8_lossy(&out.stderr));
    Ok(serde_json::from_slice(&out.stdout)?)
}

#[test]
fn a_1_2_4_world_is_planned_even_without_moving_data() -> Res {
    let world = world()?;
    world.kafka.create_topic("lead", 28)?;
    let rates = ["--rate", "use1-az1=1000", "--rate", "use1-az2=2000", "--rate", "use1-az3=4000", "--json"];
    let doc = json(&leaders(&world, "lead", &rates)?)?;
    let before = doc["skew_before"].as_f64().unwrap_or(0.0);
    let after = doc["skew_after"].as_f64().unwrap_or(f64::MAX);
    assert!(before > 1.5, "the mock leads round-robin, so the 4x zone's partitions run hot: {before}");
    assert!(after <= 1.1, "after the plan: {after}");
    let targets: Vec<u64> =
        ["use1-az1", "use1-az2", "use1-az3"].iter().filter_map(|z| doc["targets"][z].as_u64()).collect();
    assert_eq!(targets, vec![4, 8, 16]);
    // Every reassignment is the partition's own replicas, reordered; its leader is in the zone the
    // table says.
    let replicas = world.kafka.replicas("lead")?;
    let racks = world.kafka.broker_racks();
    let moves = doc["reassignment"]["partitions"].as_array().cloned().unwrap_or_default();
    assert!(!moves.is_empty());
    for m in &moves {
        let p = m["partition"].as_i64().unwrap_or(-1) as i32;
        let new: Vec<i32> =
            m["replicas"].as_array().into_iter().flatten().filter_map(|b| b.as_i64()).map(|b| b as i32).collect();
        let old = replicas.get(&p).cloned().unwrap_or_default();
        assert_eq!(new.iter().collect::<BTreeSet<_>>(), old.iter().collect::<BTreeSet<_>>(), "partition {p}");
        let row = &doc["partitions"][p as usize];
        assert_eq!(row["leader_after"].as_i64(), Some(i64::from(new[0])));
        assert_eq!(racks.get(&new[0]).map(String::as_str), row["zone_after"].as_str());
    }
    // The election names exactly the partitions whose leader changes.
    let elected: BTreeSet<i64> = doc["election"]["partitions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["partition"].as_i64())
        .collect();
    let changed: BTreeSet<i64> = doc["partitions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["leader_before"] != r["leader_after"])
        .filter_map(|r| r["partition"].as_i64())
        .collect();
    assert_eq!(elected, changed);
    // librdkafka's mock offers neither AlterPartitionReassignments nor ElectLeaders: --apply says
    // so before changing anything.
    let leaders_before = world.kafka.leaders("lead")?;
    let out = leaders(&world, "lead", &[&rates[..6], &["--apply"]].concat())?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("does not support AlterPartitionReassignments (API key 45)"), "{err}");
    assert_eq!(world.kafka.leaders("lead")?, leaders_before);
    Ok(())
}

/// Through the testkit fronts, which answer AlterPartitionReassignments (the order shown in
/// Metadata) and ElectLeaders (the mock's leader control), as a cluster of Kafka 2.4 or later does.
#[test]
fn apply_reorders_replicas_and_elects_the_planned_leaders() -> Res {
    let spec = WorldSpec { etcd: false, s3: false, security: testkit::Security::relay(), ..Default::default() };
    let world = World::start(&spec)?;
    world.kafka.create_topic("applied", 28)?;
    let replicas = world.kafka.replicas("applied")?;
    let rates = ["--rate", "use1-az1=1000", "--rate", "use1-az2=2000", "--rate", "use1-az3=4000", "--json"];
    let doc = json(&leaders(&world, "applied", &[&rates[..], &["--apply"]].concat())?)?;
    let leaders_now = world.kafka.leaders("applied")?;
    let replicas_now = world.kafka.replicas("applied")?;
    for row in doc["partitions"].as_array().into_iter().flatten() {
        let p = row["partition"].as_i64().unwrap_or(-1) as i32;
        let planned = row["leader_after"].as_i64().map(|l| l as i32);
        assert_eq!(leaders_now.get(&p).copied(), planned, "partition {p}");
        assert_eq!(replicas_now[&p].first().copied(), planned, "partition {p}: the planned leader is preferred");
        let (mut a, mut b) = (replicas_now[&p].clone(), replicas[&p].clone());
        a.sort_unstable();
        b.sort_unstable();
        assert_eq!(a, b, "partition {p}: the same replicas");
    }
    // Planned again, the cluster is where the plan puts it: nothing left to move.
    let again = json(&leaders(&world, "applied", &rates)?)?;
    assert!(again["skew_before"].as_f64().unwrap_or(f64::MAX) <= 1.1, "{}", again["skew_before"]);
    assert_eq!(again["reassignment"]["partitions"].as_array().map(Vec::len), Some(0));
    assert_eq!(again["election"]["partitions"].as_array().map(Vec::len), Some(0));
    Ok(())
}

#[test]
fn rates_come_from_the_agents_metrics() -> Res {
    let world = world()?;
    world.kafka.create_topic("measured", 6)?;
    let tmp = tempfile::tempdir()?;
    let spec = AgentSpec::new(&world.kafka.bootstrap(), tmp.path(), "measured").imds(&world.metadata[1].endpoint());
    let agent = Agent::start(&spec)?;
    assert_eq!(agent.metric("zonal_agent_stream_info", &[("topic", "measured"), ("rack", "use1-az2")])?, 1.0);
    let log = tmp.path().join("logs/app.log");
    let done = AtomicBool::new(false);
    let doc = std::thread::scope(|s| {
        // Lines keep coming while the command measures.
        s.spawn(|| {
            let mut n = 0;
            while !done.load(Ordering::Relaxed) {
                let _ = append(&log, (n..n + 100).map(|i| format!("line {i} {}", "x".repeat(100))));
                n += 100;
                // Paced by the agent: the next lines once these are shipped.
                let _ = agent.wait_caught_up(&log, "lines shipped");
            }
        });
        // By name: every address it resolves to is scraped once (a headless Service's pods).
        let addr = agent.http.trim_start_matches("http://").replace("127.0.0.1", "localhost");
        let out = leaders(&world, "measured", &["--scrape", &addr, "--window-secs", "2", "--json"]);
        done.store(true, Ordering::Relaxed);
        out
    })?;
    let doc = json(&doc)?;
    let rates: BTreeMap<String, f64> = serde_json::from_value(doc["rates"].clone())?;
    assert_eq!(rates.keys().collect::<Vec<_>>(), vec!["use1-az2"], "{rates:?}");
    assert!(rates["use1-az2"] > 1000.0, "{rates:?}");
    // One zone produces: it leads every partition.
    assert_eq!(doc["targets"]["use1-az2"], 6);
    Ok(())
}

#[test]
fn bad_rates_are_named() -> Res {
    let world = world()?;
    world.kafka.create_topic("named", 3)?;
    for (arg, says) in [("use1-az1", "expected ZONE=BYTES_PER_SECOND"), ("use1-az1=fast", "is not a number")] {
        let out = leaders(&world, "named", &["--rate", arg])?;
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains(says), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let out = leaders(&world, "named", &["--rate", "use1-az1=0"])?;
    assert!(String::from_utf8_lossy(&out.stderr).contains("no zone that holds replicas"));
    Ok(())
}
