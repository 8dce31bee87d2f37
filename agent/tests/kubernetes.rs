//! zonal-agent on a Kubernetes node's log layout (`testkit::kubelet`: kubelet's folders, names,
//! symlinks, rotation by rename with the runtime writing on to the renamed file, gzip of older
//! rotations, pod folders deleted), with `format = "cri"`: records are the messages, long
//! lines joined from their parts, with pod metadata headers; the agent killed (SIGKILL) before,
//! during and after rotations loses nothing.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use testkit::kubelet::{Container, Node};
use zonal_agent::container::LogFormat;

/// One record as this test reads it: value, headers, timestamp.
struct Rec {
    value: Vec<u8>,
    headers: BTreeMap<String, String>,
    timestamp: Option<i64>,
}

/// Every record of `topic`, from the beginning, with headers.
fn read_all(bootstrap: &str, topic: &str) -> Res<Vec<Rec>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "k8s-test-reader")
        .set("enable.auto.commit", "false")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    let mut high = BTreeMap::new();
    for p in 0..3 {
        let (lo, hi) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10))?;
        if hi > lo {
            high.insert(p, hi);
            tpl.add_partition_offset(topic, p, Offset::Beginning)?;
        }
    }
    consumer.assign(&tpl)?;
    let mut pos: BTreeMap<i32, i64> = BTreeMap::new();
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while high.iter().any(|(p, h)| pos.get(p).copied().unwrap_or(-1) + 1 < *h) {
        anyhow::ensure!(std::time::Instant::now() < deadline, "reading {topic} timed out");
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            let m = m?;
            pos.insert(m.partition(), m.offset());
            let headers = m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| (h.key.to_owned(), String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned()))
                        .collect()
                })
                .unwrap_or_default();
            out.push(Rec {
                value: m.payload().unwrap_or_default().to_vec(),
                headers,
                timestamp: m.timestamp().to_millis(),
            });
        }
    }
    Ok(out)
}

/// The messages a container writes: `<pod> <phase> <i>`.
fn lines(c: &mut Container, phase: &str, n: usize, expected: &mut Vec<String>) -> Res {
    for i in 0..n {
        let msg = format!("{} {phase} {i:05}", c.pod);
        c.write(if i % 7 == 0 { "stderr" } else { "stdout" }, msg.as_bytes())?;
        expected.push(msg);
    }
    Ok(())
}

#[test]
fn a_kubelet_node_through_rotations_kills_and_pod_deletion_loses_nothing() -> Res {
    let world = testkit::World::start(&testkit::WorldSpec { etcd: false, s3: false, ..Default::default() })?;
    world.kafka.create_topic("k8s", 3)?;
    let bootstrap = world.kafka.bootstrap();
    let tmp = tempfile::tempdir()?;
    let mut node = Node::new(&tmp.path().join("node"))?;
    let spec = AgentSpec::new(&bootstrap, tmp.path(), "k8s").imds(&world.metadata[0].endpoint()).edit_stream(|s| {
        s.paths = vec![node.containers_glob()];
        s.format = LogFormat::Cri;
    });
    let mut web1 = node.start("shop", "web-1", "app")?;
    let mut web2 = node.start("shop", "web-2", "app")?;
    let mut db = node.start("data", "db-0", "postgres")?;
    let mut expected = Vec::new();
    let mut agent = Agent::start(&spec)?;

    // A message of 40 KiB, written as containerd writes it: two P parts and an F part.
    let long: String = (0..40 * 1024).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    web1.write("stdout", long.as_bytes())?;
    for c in [&mut web1, &mut web2, &mut db] {
        lines(c, "first", 200, &mut expected)?;
    }

    // Before a rotation: killed with lines unread; kubelet rotates web-1 while the agent is
    // down, the runtime writes on to the renamed file, then reopens 0.log.
    agent.kill9()?;
    lines(&mut web1, "before", 100, &mut expected)?;
    node.rotate(&mut web1)?;
    lines(&mut web1, "renamed", 50, &mut expected)?;
    web1.reopen()?;
    lines(&mut web1, "reopened", 50, &mut expected)?;
    agent.restart()?;

    // During a rotation: web-2 renamed, the agent killed before the runtime reopens.
    lines(&mut web2, "during", 100, &mut expected)?;
    node.rotate(&mut web2)?;
    agent.kill9()?;
    lines(&mut web2, "renamed", 50, &mut expected)?;
    web2.reopen()?;
    lines(&mut web2, "reopened", 50, &mut expected)?;
    agent.restart()?;

    // After a rotation: web-1 rotated again (its previous rotation is gzipped, the agent
    // having finished it), the agent killed after the reopen.
    let want_so_far = expected.len();
    testkit::wait_until("the agent to catch up", Duration::from_secs(60), || {
        (read_all(&bootstrap, "k8s").ok()?.len() > want_so_far).then_some(())
    })?;
    node.rotate(&mut web1)?;
    web1.reopen()?;
    lines(&mut web1, "after", 100, &mut expected)?;
    agent.kill9()?;
    lines(&mut web1, "after-kill", 100, &mut expected)?;
    agent.restart()?;

    // The pod db-0 goes: its last lines, then its folder and link removed at once.
    lines(&mut db, "last", 300, &mut expected)?;
    node.delete_pod(db)?;

    let want: BTreeMap<String, ()> = expected.iter().map(|l| (l.clone(), ())).collect();
    let got = testkit::wait_until("every line in Kafka", Duration::from_secs(90), || {
        let recs = read_all(&bootstrap, "k8s").ok()?;
        let have: std::collections::BTreeSet<String> =
            recs.iter().map(|r| String::from_utf8_lossy(&r.value).into_owned()).collect();
        want.keys().all(|l| have.contains(l)).then_some(recs)
    })
    .map_err(|e| anyhow::anyhow!("{e}\n{}", agent.log_tail()))?;

    // Values are the messages alone; the long one is whole.
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for r in &got {
        let v = String::from_utf8_lossy(&r.value).into_owned();
        assert!(!v.starts_with("2026-12-07T"), "a CRI prefix left in {v:?}");
        *seen.entry(v).or_default() += 1;
    }
    assert_eq!(seen.get(&long), Some(&1), "the 40 KiB message, joined from its parts, once");
    // At-least-once: lines after the last checkpoint of each kill may come twice, no more.
    let dups: usize = seen.values().map(|n| n - 1).sum();
    assert!(dups <= 4 * 50 * 3, "{dups} duplicates over {} lines", expected.len());
    assert_eq!(agent.metric("zonal_agent_malformed_lines_total", &[])?, 0.0);

    // Headers from the path alone, the stream and the runtime's time from the line.
    let rec = |prefix: &str| got.iter().find(|r| r.value.starts_with(prefix.as_bytes()));
    let r = rec("web-1 renamed 00000").ok_or_else(|| anyhow::anyhow!("a web-1 record"))?;
    assert_eq!(r.headers.get("k8s.namespace.name").map(String::as_str), Some("shop"));
    assert_eq!(r.headers.get("k8s.pod.name").map(String::as_str), Some("web-1"));
    assert_eq!(r.headers.get("k8s.container.name").map(String::as_str), Some("app"));
    assert_eq!(r.headers.get("k8s.pod.uid"), Some(&web1.uid));
    assert_eq!(r.headers.get("container.id"), Some(&web1.id));
    assert_eq!(r.headers.get("log.iostream").map(String::as_str), Some("stderr"), "line 0 goes to stderr");
    assert_eq!(r.timestamp, Some(1_796_637_600_123));
    let d = rec("db-0 last 00299").ok_or_else(|| anyhow::anyhow!("the last db-0 record"))?;
    assert_eq!(d.headers.get("k8s.namespace.name").map(String::as_str), Some("data"));
    assert_eq!(d.headers.get("log.iostream").map(String::as_str), Some("stdout"));
    Ok(())
}
