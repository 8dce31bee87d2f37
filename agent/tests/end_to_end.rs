//! Three agents, one per zone, each learning its zone from its own fake IMDS, ship logs with
//! rotation by rename and by copytruncate in the middle: every line arrives, each agent's lines
//! are only in partitions led in its zone, and cross-zone produce bytes are ~0.

mod common;

use std::collections::BTreeSet;

use common::*;
use testkit::{World, WorldSpec};
use zonal_agent::config::Compression;

const LINES: usize = 3000;

#[test]
fn three_zones_rotations_no_loss_no_cross_zone() -> Res {
    let world = World::start(&WorldSpec { etcd: false, s3: false, ..Default::default() })?;
    world.kafka.create_topic("logs", 12)?;
    let bootstrap = world.kafka.bootstrap();
    let tmp = tempfile::tempdir()?;

    let mut agents = Vec::new();
    for (i, server) in world.metadata.iter().enumerate() {
        let dir = tmp.path().join(format!("zone{i}"));
        // Uncompressed, so that the bytes counted on the wire compare with the bytes written.
        let spec = AgentSpec::new(&bootstrap, &dir, "logs")
            .imds(&server.endpoint())
            .edit_stream(|s| s.compression = Compression::None);
        let agent = Agent::start(&spec)?;
        agents.push((dir, agent));
    }
    for (i, (_, agent)) in agents.iter().enumerate() {
        let s = agent.status()?;
        assert_eq!(s["zone"], world.zones[i].id.as_str());
        assert_eq!(s["zone_source"], "metadata:ec2");
        let want: Vec<i64> = (0..12).filter(|p| p % 3 == i as i64).collect();
        let got: Vec<i64> =
            s["streams"][0]["local_partitions"].as_array().into_iter().flatten().filter_map(|v| v.as_i64()).collect();
        assert_eq!(got, want, "zone {i} local partitions");
    }

    let line = |zone: usize, n: usize| format!("zone{zone} line {n:06} {}", "x".repeat(100));
    for (z, (dir, agent)) in agents.iter().enumerate() {
        let log = dir.join("logs/app.log");
        append(&log, (0..LINES / 2).map(|n| line(z, n)))?;
        match z {
            // Rotation by rename: the old file keeps being read through its inode.
            0 => {
                // The agent must have seen the file before it is rotated (as it would have,
                // during the hours a real log file lives).
                agent.wait_tailing(&log)?;
                std::fs::rename(&log, dir.join("logs/app.log.1"))?;
                append(&log, (LINES / 2..LINES).map(|n| line(z, n)))?;
            }
            // Copytruncate: copy, truncate in place, continue writing at 0. The copy does not
            // match the glob; lines must be read before the truncate, as with logrotate.
            1 => {
                agent.wait_caught_up(&log, "zone1 agent to read the first half")?;
                std::fs::copy(&log, dir.join("logs/app.log.1"))?;
                std::fs::OpenOptions::new().write(true).open(&log)?.set_len(0)?;
                append(&log, (LINES / 2..LINES).map(|n| line(z, n)))?;
            }
            // Delete and re-create.
            _ => {
                agent.wait_caught_up(&log, "zone2 agent to read the first half")?;
                std::fs::remove_file(&log)?;
                append(&log, (LINES / 2..LINES).map(|n| line(z, n)))?;
            }
        }
    }
    for (dir, agent) in &agents {
        agent.wait_caught_up(&dir.join("logs/app.log"), "agents to ship everything")?;
    }

    let records = read_topic(&bootstrap, "logs")?;
    let got = counts(&records);
    for z in 0..3 {
        for n in 0..LINES {
            assert!(got.contains_key(&line(z, n)), "missing {}", line(z, n));
        }
    }
    assert_eq!(got.len(), 3 * LINES);
    for (p, _, payload) in &records {
        let text = String::from_utf8_lossy(payload);
        let zone: i32 = text[4..5].parse()?;
        assert_eq!(p % 3, zone, "a zone{zone} line in partition {p}, led in another zone");
    }
    let partitions: BTreeSet<i32> = records.iter().map(|r| r.0).collect();
    assert_eq!(partitions.len(), 12, "every partition of every zone is used: {partitions:?}");

    // Copytruncate was noticed; the rename was followed.
    assert!(agents[1].1.metric("zonal_agent_truncations_total", &[])? >= 1.0);
    assert!(agents[0].1.metric("zonal_agent_renames_total", &[])? >= 1.0);

    for (_, agent) in &agents {
        testkit::wait_until("statistics to cover the produced bytes", std::time::Duration::from_secs(20), || {
            let same = agent.metric("zonal_agent_kafka_bytes", &[("zone", "same-zone"), ("direction", "tx")]).ok()?;
            (same >= (LINES * 100) as f64).then_some(())
        })?;
        let cross = agent.metric("zonal_agent_kafka_bytes", &[("zone", "cross-zone"), ("direction", "tx")])?;
        let same = agent.metric("zonal_agent_kafka_bytes", &[("zone", "same-zone"), ("direction", "tx")])?;
        assert!(cross / (cross + same) < 0.02, "cross-zone share {cross} / {}", cross + same);
    }

    for (_, agent) in &mut agents {
        assert_eq!(agent.stop()?, Some(0), "graceful stop exits 0");
    }
    Ok(())
}
