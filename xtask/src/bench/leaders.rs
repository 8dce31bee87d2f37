//! `cargo xtask bench leaders`: three zones whose agents write at 1:2:4, the load of every
//! partition measured from Kafka before and after `zonal-agent leaders` plans the leaders from
//! the agents' own metrics; the plan is applied with the mock cluster's leader controls (the
//! mock has no AlterPartitionReassignments or ElectLeaders, and `--apply` says so).
//!
//! ```text
//!  3 agents (zone-aware), writers at R, 2R, 4R lines/s ──> 28 partitions, led round-robin
//!     measure: records per partition over a window ──> max/mean before (the reference)
//!  zonal-agent leaders --scrape agent0..2 --json ──> plan ──> mock: leader of p := leader_after
//!     agents re-route (topology refresh) ──> measure again ──> max/mean after (Zonal's figure)
//! ```

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer};
use testkit::{World, WorldSpec};

use super::Row;
use crate::chaos::writers::Writer;
use crate::fleet::{FleetSpec, Node, ObjectFormat};

const TOPIC: &str = "bench-leaders";
/// A multiple of 1 + 2 + 4, so that leaders can follow the rates exactly.
const PARTITIONS: i32 = 28;
/// Lines per second of the slowest zone; the others write 2x and 4x.
const BASE_RATE: u64 = 400;
const LINE_BYTES: usize = 200;
const WINDOW: Duration = Duration::from_secs(15);

pub(super) fn run(dir: &Path) -> anyhow::Result<Vec<Row>> {
    crate::run(
        "cargo build --release -p zonal-agent",
        crate::cargo().args(["build", "--release", "-p", "zonal-agent"]),
    )?;
    let bins = crate::target_dir().join("release");
    let world = World::start(&WorldSpec { etcd: false, ..WorldSpec::default() })?;
    world.kafka.create_topic(TOPIC, PARTITIONS)?;
    let work = tempfile::tempdir_in(dir)?;
    let fleet = FleetSpec {
        world: &world,
        bins: &bins,
        topic: TOPIC,
        name: "bench-leaders",
        zone_aware: true,
        lease_ttl_secs: 10,
        max_age_ms: 1000,
        // Small batches, so that a window holds many per partition and the balance shows.
        batch_lines: 20,
        agent_extra: String::new(),
        format: ObjectFormat::Lines,
        kafka_options: &[],
        zone_groups: false,
        grace_secs: None,
    };
    let agents: Vec<Node> = (0..3).map(|z| fleet.agent(z, work.path())).collect::<anyhow::Result<_>>()?;
    testkit::wait_until("the agents ready", Duration::from_secs(60), || agents.iter().all(Node::ready).then_some(()))?;
    let _writers: Vec<Writer> = agents
        .iter()
        .map(|a| Writer::start(a.zone, &a.dir.join("logs"), BASE_RATE << a.zone, LINE_BYTES, false))
        .collect();
    let consumer: BaseConsumer = world.kafka.client_config().create().context("a client for watermarks")?;
    let before = skew(&measure(&consumer, "before the plan")?);

    let plan = plan(&world, &bins, &agents)?;
    let expected = (plan["skew_before"].as_f64().unwrap_or(0.0), plan["skew_after"].as_f64().unwrap_or(0.0));
    let mut moved = 0;
    for row in plan["partitions"].as_array().into_iter().flatten() {
        let (p, to) = (row["partition"].as_i64().unwrap_or(-1) as i32, row["leader_after"].as_i64().unwrap_or(-1));
        if row["leader_before"].as_i64() != Some(to) {
            world.kafka.move_leader(TOPIC, p, to as i32)?;
            moved += 1;
        }
    }
    eprintln!("moved {moved} leaders as planned; waiting for the agents to route by them");
    let wanted: Vec<usize> = ["use1-az1", "use1-az2", "use1-az3"]
        .iter()
        .map(|z| plan["targets"][z].as_u64().unwrap_or(0) as usize)
        .collect();
    testkit::wait_until("every agent writing to its zone's new partitions", Duration::from_secs(60), || {
        agents.iter().all(|a| local_partitions(a) == Some(wanted[a.zone])).then_some(())
    })?;
    let after = skew(&measure(&consumer, "after the plan")?);
    eprintln!(
        "partition load max/mean: {before:.3} before, {after:.3} after (the plan expected {:.3} and {:.3})",
        expected.0, expected.1
    );
    Ok(vec![
        Row { case: "leaders", metric: "load max/mean, 1:2:4", value: after, reference: before },
        Row { case: "leaders", metric: "planned max/mean", value: expected.1, reference: expected.0 },
    ])
}

/// Records written to each partition over [`WINDOW`].
fn measure(consumer: &BaseConsumer, what: &str) -> anyhow::Result<Vec<f64>> {
    let high = |c: &BaseConsumer| -> anyhow::Result<Vec<i64>> {
        // A partition whose leader just moved answers NOT_LEADER until the client's metadata
        // catches up: asked again until it answers.
        (0..PARTITIONS)
            .map(|p| {
                testkit::wait_until("a partition's high watermark", Duration::from_secs(30), || {
                    c.fetch_watermarks(TOPIC, p, Duration::from_secs(10)).ok().map(|w| w.1)
                })
                .with_context(|| format!("watermarks of {TOPIC}/{p}"))
            })
            .collect()
    };
    let start = high(consumer)?;
    let began = Instant::now();
    eprintln!("measuring partition load {what} for {} s", WINDOW.as_secs());
    // The measurement window itself, not a wait for a condition.
    std::thread::sleep(WINDOW);
    let end = high(consumer)?;
    let secs = began.elapsed().as_secs_f64();
    Ok(start.iter().zip(&end).map(|(a, b)| (b - a) as f64 / secs).collect())
}

fn skew(loads: &[f64]) -> f64 {
    az_core::leaders::skew(loads)
}

/// The plan `zonal-agent leaders` makes from the agents' metrics.
fn plan(world: &World, bins: &Path, agents: &[Node]) -> anyhow::Result<serde_json::Value> {
    let bootstrap = world.kafka.bootstrap();
    let mut args = vec!["leaders", "--bootstrap", &bootstrap, "--topic", TOPIC, "--window-secs", "5", "--json"];
    for a in agents {
        args.extend(["--scrape", a.http.as_str()]);
    }
    let out =
        std::process::Command::new(bins.join("zonal-agent")).args(&args).output().context("zonal-agent leaders")?;
    anyhow::ensure!(out.status.success(), "zonal-agent leaders: {}", String::from_utf8_lossy(&out.stderr));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).context("the plan's JSON")?;
    let rates: BTreeMap<String, f64> = serde_json::from_value(plan["rates"].clone()).unwrap_or_default();
    eprintln!("measured produce rates (B/s): {rates:.0?}");
    Ok(plan)
}

/// How many partitions the agent's stream writes to now.
fn local_partitions(agent: &Node) -> Option<usize> {
    let status: serde_json::Value = serde_json::from_str(&agent.get("/status").ok()?).ok()?;
    Some(status["streams"][0]["local_partitions"].as_array()?.len())
}
