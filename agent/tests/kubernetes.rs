//! zonal-agent on a Kubernetes node's log layout (`testkit::kubelet`: kubelet's folders, names,
//! symlinks, rotation by rename with the runtime writing on to the renamed file, gzip of older
//! rotations, pod folders deleted), with `format = "cri"`: records are the messages, long
//! lines joined from their parts, with pod metadata headers; the agent killed (SIGKILL) before,
//! during and after rotations loses nothing.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use rdkafka::message::{Headers, Message};
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
    read_topic_with(bootstrap, topic, |m| Rec {
        value: m.payload().unwrap_or_default().to_vec(),
        headers: m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| (h.key.to_owned(), String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned()))
                    .collect()
            })
            .unwrap_or_default(),
        timestamp: m.timestamp().to_millis(),
    })
}

/// Waits until every checkpoint of the stream records its file read and acknowledged to its
/// size: a kill after this resends nothing written before.
fn settled(tmp: &std::path::Path) -> Res {
    testkit::wait_until("every checkpoint at its file's end", Duration::from_secs(60), || {
        let mut any = false;
        for c in checkpoints(tmp)? {
            let size = std::fs::metadata(c["path"].as_str()?).map_or(0, |m| m.len());
            if c["offset"].as_u64()? < size {
                return None;
            }
            any = true;
        }
        any.then_some(())
    })?;
    Ok(())
}

/// The stream's checkpoints in place (its registry's lines), or `None` while they cannot be
/// read. A `.tmpN` beside the registry is a write that a kill may cut before its rename, so it
/// never counts.
fn checkpoints(tmp: &std::path::Path) -> Option<Vec<serde_json::Value>> {
    let text = std::fs::read_to_string(tmp.join("checkpoints/app/checkpoints.jsonl")).ok()?;
    text.lines().map(|l| serde_json::from_str(l).ok()).collect()
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
    settled(tmp.path())?;
    agent.kill9()?;
    lines(&mut web1, "before", 100, &mut expected)?;
    node.rotate(&mut web1)?;
    lines(&mut web1, "renamed", 50, &mut expected)?;
    web1.reopen()?;
    lines(&mut web1, "reopened", 50, &mut expected)?;
    agent.restart()?;

    // During a rotation: web-2 renamed, the agent killed before the runtime reopens.
    settled(tmp.path())?;
    lines(&mut web2, "during", 100, &mut expected)?;
    node.rotate(&mut web2)?;
    agent.kill9()?;
    lines(&mut web2, "renamed", 50, &mut expected)?;
    web2.reopen()?;
    lines(&mut web2, "reopened", 50, &mut expected)?;
    agent.restart()?;

    // After a rotation: web-1 rotated again (its previous rotation is gzipped, the agent
    // having finished it), the agent killed after the reopen.
    settled(tmp.path())?;
    node.rotate(&mut web1)?;
    web1.reopen()?;
    lines(&mut web1, "after", 100, &mut expected)?;
    agent.kill9()?;
    lines(&mut web1, "after-kill", 100, &mut expected)?;
    agent.restart()?;

    // The pod db-0 goes while the agent runs (and tails it): its last lines, then its folder
    // and link removed at once. (A pod deleted while the agent is down takes its unread lines
    // with it: a named limit.)
    agent.wait_tailing(db.link())?;
    lines(&mut db, "last", 300, &mut expected)?;
    node.delete_pod(db)?;

    let want: BTreeMap<String, ()> = expected.iter().map(|l| (l.clone(), ())).collect();
    let got = testkit::wait_until("every line in Kafka", Duration::from_secs(90), || {
        let recs = read_all(&bootstrap, "k8s").ok()?;
        let have: std::collections::BTreeSet<String> =
            recs.iter().map(|r| String::from_utf8_lossy(&r.value).into_owned()).collect();
        want.keys().all(|l| have.contains(l)).then_some(recs)
    })
    .map_err(|e| {
        let have: std::collections::BTreeSet<String> = read_all(&bootstrap, "k8s")
            .unwrap_or_default()
            .iter()
            .map(|r| String::from_utf8_lossy(&r.value).into_owned())
            .collect();
        let missing: Vec<&String> = want.keys().filter(|l| !have.contains(*l)).take(5).collect();
        anyhow::anyhow!("{e}: missing e.g. {missing:?}\n{}", std::fs::read_to_string(&agent.log).unwrap_or_default())
    })?;

    // Values are the messages alone; the long one is whole.
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for r in &got {
        let v = String::from_utf8_lossy(&r.value).into_owned();
        assert!(!v.starts_with("2026-12-07T"), "a CRI prefix left in {v:?}");
        *seen.entry(v).or_default() += 1;
    }
    // The 40 KiB message arrives whole (twice at most: it was written just before a kill), and
    // never as its parts.
    assert!(seen.get(&long).is_some_and(|n| *n <= 2), "the 40 KiB message, joined from its parts");
    assert!(
        !seen.keys().any(|v| v.len() < long.len() && long.starts_with(v.as_str()) && v.len() > 100),
        "a part alone"
    );
    // At-least-once: only lines written since the agent last settled may come twice (at most
    // 100 before each of the two kills that do not follow a settle), never whole files.
    let dups: usize = seen.values().map(|n| n - 1).sum();
    assert!(dups <= 2 * 100 + 1, "{dups} duplicates over {} lines", expected.len());
    assert_eq!(agent.metric("zonal_agent_malformed_lines_total", &[])?, 0.0);

    assert_checkpoints_private(tmp.path())?;
    assert_headers(&got, &web1)?;
    assert_kcat_sees_messages_and_headers(&bootstrap)
}

/// Checkpoints name the node's pods and files: private to the agent (0700 folders, 0600 files),
/// as docs/operations.md says, whatever the umask it was started with.
fn assert_checkpoints_private(tmp: &std::path::Path) -> Res {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.permissions().mode() & 0o777);
    for dir in [tmp.join("checkpoints"), tmp.join("checkpoints/app")] {
        assert_eq!(mode(&dir)?, 0o700, "{}", dir.display());
    }
    assert_eq!(mode(&tmp.join("checkpoints/app/checkpoints.jsonl"))?, 0o600);
    Ok(())
}

/// kcat, a reader nobody here wrote, sees the message alone and the headers.
fn assert_kcat_sees_messages_and_headers(bootstrap: &str) -> Res {
    let out = std::process::Command::new("kcat")
        .args(["-C", "-b", bootstrap, "-t", "k8s", "-e", "-q", "-f", "%h\t%s\n"])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line =
        text.lines().find(|l| l.ends_with("\tdb-0 last 00299")).ok_or_else(|| anyhow::anyhow!("kcat: {text:.500}"))?;
    for h in ["k8s.namespace.name=data", "k8s.pod.name=db-0", "k8s.container.name=postgres", "log.iostream=stdout"] {
        assert!(line.contains(h), "{h} not in {line:?}");
    }
    Ok(())
}

/// Headers from the path alone, the stream and the runtime's time from the line.
fn assert_headers(got: &[Rec], web1: &Container) -> Res {
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

/// The log folder is not there when the agent starts (a volume not mounted yet, a hostPath
/// that appears late): the checkpoints are kept, not taken as files gone, and once the folder
/// is back each file goes on from its checkpoint; nothing is sent again from the start.
#[test]
fn a_folder_missing_at_start_keeps_its_checkpoints() -> Res {
    let world = testkit::World::start(&testkit::WorldSpec { etcd: false, s3: false, ..Default::default() })?;
    world.kafka.create_topic("mount", 3)?;
    let bootstrap = world.kafka.bootstrap();
    let tmp = tempfile::tempdir()?;
    let spec = AgentSpec::new(&bootstrap, tmp.path(), "mount").imds(&world.metadata[0].endpoint());
    let logs = tmp.path().join("logs");
    std::fs::create_dir_all(&logs)?;
    let log = logs.join("app.log");
    append(&log, (0..1000).map(|i| format!("mounted {i:05}")))?;
    let mut agent = Agent::start(&spec)?;
    agent.wait_caught_up(&log, "the first lines")?;
    // Past a checkpoint write, so that the restart starts at the end.
    testkit::wait_until("the checkpoint at the end", Duration::from_secs(10), || {
        let c = checkpoints(tmp.path())?.into_iter().next()?;
        (c["offset"].as_u64()? == std::fs::metadata(&log).ok()?.len()).then_some(())
    })?;
    agent.kill9()?;
    let away = tmp.path().join("logs.unmounted");
    std::fs::rename(&logs, &away)?;
    agent.restart()?;
    testkit::wait_until("the agent to keep the checkpoint", Duration::from_secs(20), || {
        std::fs::read_to_string(&agent.log).ok()?.contains("cannot be listed now").then_some(())
    })?;
    std::fs::rename(&away, &logs)?;
    append(&log, (1000..1100).map(|i| format!("mounted {i:05}")))?;
    agent.wait_caught_up(&log, "the lines after the folder came back")?;
    let got = counts(&read_topic(&bootstrap, "mount")?);
    for i in 0..1100 {
        let n = got.get(&format!("mounted {i:05}")).copied().unwrap_or(0);
        assert_eq!(n, 1, "line {i} delivered {n} times");
    }
    assert_eq!(agent.metric("zonal_agent_errors_total", &[("kind", "rotated-file-gone")])?, 0.0);
    Ok(())
}
