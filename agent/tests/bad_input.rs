//! Bad input does not crash the agent or lose data: config errors name the field, binary and
//! non-UTF-8 lines ship as bytes, a 10 MB line is truncated and counted, a corrupt checkpoint is
//! reported and the file shipped from the start.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use testkit::{World, WorldSpec};

fn check(config: &str) -> Res<(bool, String)> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, config)?;
    let out = testkit::process::check_config(env!("CARGO_BIN_EXE_zonal-agent"), &path)?;
    Ok((
        out.status.success(),
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
    ))
}

const GOOD: &str = r#"
[kafka]
bootstrap-servers = "127.0.0.1:9092"
[[streams]]
name = "app"
paths = ["/var/log/*.log"]
topic = "logs"
"#;

#[test]
fn check_prints_effective_config_or_names_the_field() -> Res {
    let (ok, out) = check(GOOD)?;
    assert!(ok, "{out}");
    assert!(out.contains("partitioning = \"zone-aware\"") && out.contains("max-in-flight-bytes"), "{out}");
    for (bad, field) in [
        (GOOD.replace("topic = \"logs\"", "topic = \"logs\"\ncompression = \"brotli\""), "compression"),
        (GOOD.replace("[kafka]", "[kafka]\nbootstrap = \"x\""), "bootstrap"),
        (GOOD.replace("name = \"app\"", "name = \"\""), "streams[0].name"),
        (GOOD.replace("[kafka]", "[http]\nlisten = \"not an address\"\n[kafka]"), "http.listen"),
    ] {
        let (ok, out) = check(&bad)?;
        assert!(!ok, "accepted: {bad}");
        assert!(out.contains(field), "{out:?} does not name {field}");
    }
    Ok(())
}

/// Every key of the effective configuration (all struct fields, via `check`) is documented in
/// the configuration reference (docs/configuration.md), so the reference cannot drift from the struct.
#[test]
fn the_configuration_reference_documents_every_key() -> Res {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new(env!("CARGO_BIN_EXE_zonal-agent"))
        .args(["check", "-c"])
        .arg(root.join("deploy/agent/agent.example.toml"))
        .output()?;
    assert!(out.status.success());
    let effective: toml::Table = toml::from_str(&String::from_utf8(out.stdout)?)?;
    let readme = std::fs::read_to_string(root.join("docs/configuration.md"))?;
    let keys = testkit::readme::config_keys(&effective);
    assert!(keys.len() > 25, "{keys:?}");
    let missing =
        testkit::readme::undocumented_keys(&effective, &readme, "## zonal-agent", "## zonal-transporter", &|_| false);
    assert!(missing.is_empty(), "docs/configuration.md's agent reference lacks {missing:?}");
    Ok(())
}

#[test]
fn the_shipped_example_config_is_valid() -> Res {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/agent/agent.example.toml");
    let out = testkit::process::check_config(env!("CARGO_BIN_EXE_zonal-agent"), &path)?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    Ok(())
}

#[test]
fn garbage_huge_lines_and_corrupt_checkpoints_do_not_stop_it() -> Res {
    let world = World::start(&WorldSpec { etcd: false, s3: false, ..Default::default() })?;
    world.kafka.create_topic("garbage", 3)?;
    let bootstrap = world.kafka.bootstrap();
    let tmp = tempfile::tempdir()?;
    std::fs::create_dir_all(tmp.path().join("logs"))?;

    // A file the agent will find with a corrupt checkpoint.
    let old = tmp.path().join("logs/old.log");
    append(&old, (0..10).map(|n| format!("old {n}")))?;
    let meta = std::fs::metadata(&old)?;
    use std::os::unix::fs::MetadataExt;
    let ckpt_dir = tmp.path().join("checkpoints/app");
    std::fs::create_dir_all(&ckpt_dir)?;
    std::fs::write(ckpt_dir.join(format!("{}-{}.json", meta.dev(), meta.ino())), b"\x00{not json")?;
    // An unreadable file beside it.
    let locked = tmp.path().join("logs/locked.log");
    append(&locked, ["secret".to_owned()])?;
    std::fs::set_permissions(&locked, std::os::unix::fs::PermissionsExt::from_mode(0o000))?;

    let spec = AgentSpec::new(&bootstrap, tmp.path(), "garbage")
        .imds(&world.metadata[0].endpoint())
        .edit_stream(|s| s.max_message_bytes = 1_000_000);
    let agent = Agent::start(&spec)?;

    let log = tmp.path().join("logs/app.log");
    let mut bytes = Vec::new();
    bytes.extend_from_slice(b"\xff\xfe\x00binary\x01\x02\n");
    bytes.extend_from_slice(b"caf\xe9 latin-1 not utf-8\n");
    bytes.extend(std::iter::repeat_n(b'Z', 10 * 1024 * 1024));
    bytes.push(b'\n');
    bytes.extend_from_slice(b"after the huge line\n");
    std::fs::write(&log, &bytes)?;
    agent.wait_caught_up(&log, "garbage shipped")?;
    agent.wait_caught_up(&old, "file with corrupt checkpoint shipped")?;

    let records = read_topic(&bootstrap, "garbage")?;
    let payloads: Vec<&[u8]> = records.iter().map(|r| r.2.as_slice()).collect();
    assert!(payloads.contains(&&b"\xff\xfe\x00binary\x01\x02"[..]));
    assert!(payloads.contains(&&b"caf\xe9 latin-1 not utf-8"[..]));
    assert!(payloads.contains(&&b"after the huge line"[..]));
    let huge: Vec<&&[u8]> = payloads.iter().filter(|p| p.first() == Some(&b'Z')).collect();
    assert_eq!(huge.len(), 1);
    assert_eq!(huge[0].len(), 1_000_000, "truncated to max-message-bytes");
    assert_eq!(agent.metric("zonal_agent_truncated_lines_total", &[])?, 1.0);
    for n in 0..10 {
        assert!(payloads.contains(&format!("old {n}").as_bytes()), "old {n} missing");
    }
    assert!(agent.metric("zonal_agent_errors_total", &[("kind", "checkpoint")])? >= 1.0);
    // Root can read anything, so the unreadable file only counts as an error for other users.
    if unsafe { libc::geteuid() } != 0 {
        assert!(agent.metric("zonal_agent_errors_total", &[("kind", "read")])? >= 1.0);
    }
    assert!(ckpt_dir.read_dir()?.flatten().any(|e| e.file_name().to_string_lossy().ends_with(".corrupt")));
    assert_eq!(common::http_get(&format!("{}/healthz", agent.http))?.0, 200);
    Ok(())
}

#[test]
fn check_refuses_what_librdkafka_or_the_guarantees_refuse_and_hides_secrets() -> Res {
    let with = |options: &str| GOOD.replace("[[streams]]", &format!("[kafka.options]\n{options}\n[[streams]]"));
    // This build has TLS, SASL/SCRAM and zstd: the settings issue #8 found refused are accepted.
    let (ok, out) = check(&with(
        "\"security.protocol\" = \"SASL_SSL\"\n\"sasl.mechanism\" = \"SCRAM-SHA-512\"\n\"sasl.username\" = \"u\"\n\"sasl.password\" = \"hunter2-secret\"",
    ))?;
    assert!(ok, "{out}");
    assert!(!out.contains("hunter2-secret") && out.contains("***"), "{out}");
    let (ok, out) = check(&GOOD.replace("topic = \"logs\"", "topic = \"logs\"\ncompression = \"zstd\""))?;
    assert!(ok, "{out}");
    for (options, named) in [
        ("\"no.such.property\" = \"1\"", "no.such.property"),
        ("\"compression.type\" = \"brotli\"", "compression.type"),
        ("\"acks\" = \"1\"", "at-least-once"),
        ("\"enable.idempotence\" = \"false\"", "enable.idempotence"),
        ("\"delivery.report.only.error\" = \"true\"", "delivery.report.only.error"),
        ("\"security.protocol\" = \"SASL_SSL\"\n\"sasl.mechanism\" = \"NOPE\"", "sasl.mechanism"),
        ("\"ssl.ca.location\" = \"/nonexistent/ca.pem\"\n\"security.protocol\" = \"SSL\"", "ssl.ca.location"),
        ("\"sasl.password-file\" = \"/nonexistent/pw\"", "/nonexistent/pw"),
        ("\"sasl.password-env\" = \"ZONAL_TEST_UNSET_VARIABLE\"", "ZONAL_TEST_UNSET_VARIABLE"),
    ] {
        let (ok, out) = check(&with(options))?;
        assert!(!ok, "accepted: {options}");
        assert!(out.contains(named), "{out:?} does not name {named}");
    }
    Ok(())
}

#[test]
/// A stream whose largest record the topic would refuse does not start (such records could only
/// be retried forever); within the topic's limit it ships every line, long ones truncated.
fn a_topic_that_would_refuse_the_largest_record_is_named_at_start() -> Res {
    let world = testkit::World::start(&testkit::WorldSpec {
        etcd: false,
        s3: false,
        security: testkit::Security::relay(),
        ..Default::default()
    })?;
    world.kafka.create_topic("sized", 3)?;
    world.kafka.set_topic_config("sized", "max.message.bytes", "200000")?;
    let bootstrap = world.kafka.bootstrap();
    let tmp = tempfile::tempdir()?;
    let spec = AgentSpec::new(&bootstrap, tmp.path(), "sized").imds(&world.metadata[0].endpoint());
    let mut agent = Agent::launch(&spec)?;
    let code = agent.wait_exit(Duration::from_secs(30))?;
    let log = std::fs::read_to_string(&agent.log)?;
    assert!(code.is_some_and(|c| c != 0), "exit {code:?}: {log}");
    assert!(
        log.contains("streams[0].max-message-bytes") && log.contains("max.message.bytes 200000"),
        "the refusal does not name the field and the limit: {log}"
    );
    let spec = spec.edit_stream(|s| s.max_message_bytes = 150_000);
    let agent = Agent::start(&spec)?;
    let path = tmp.path().join("logs/app.log");
    append(&path, (0..50).map(|n| format!("big {n:03} {}", "y".repeat(300_000))))?;
    append(&path, (0..5000).map(|n| format!("small {n:05}")))?;
    agent.wait_caught_up(&path, "every line")?;
    let records = read_topic(&bootstrap, "sized")?;
    assert_eq!(records.len(), 5050);
    assert!(records.iter().all(|(_, _, v)| v.len() <= 150_000));
    assert_eq!(agent.metric("zonal_agent_truncated_lines_total", &[])?, 50.0);
    Ok(())
}

/// A line larger than librdkafka's default queue (16 MiB) under a `max-message-bytes` that
/// allows it: the producer's queue is sized to hold it, so it is delivered whole instead of
/// being answered QUEUE_FULL forever while its stream stands still.
#[test]
fn a_line_over_sixteen_mebibytes_is_delivered_whole() -> Res {
    const HUGE: usize = 20 * 1024 * 1024;
    let world = World::start(&WorldSpec { etcd: false, s3: false, ..Default::default() })?;
    world.kafka.create_topic("huge", 1)?;
    let bootstrap = world.kafka.bootstrap();
    let tmp = tempfile::tempdir()?;
    let spec = AgentSpec::new(&bootstrap, tmp.path(), "huge").edit_stream(|s| s.max_message_bytes = 30_000_000);
    let agent = Agent::start(&spec)?;
    let log = tmp.path().join("logs/app.log");
    let mut bytes = b"before\n".to_vec();
    bytes.extend(std::iter::repeat_n(b'H', HUGE));
    bytes.extend_from_slice(b"\nafter\n");
    std::fs::write(&log, &bytes)?;
    agent.wait_caught_up(&log, "the huge line delivered")?;
    let records = read_topic(&bootstrap, "huge")?;
    let lens: Vec<usize> = records.iter().map(|r| r.2.len()).collect();
    assert_eq!(lens, vec![6, HUGE, 5], "before, the huge line whole, after");
    assert_eq!(agent.metric("zonal_agent_truncated_lines_total", &[])?, 0.0);
    Ok(())
}

/// `start-at = end` skips what was there at the agent's first start, and only that: after a
/// restart, a file created while the agent was down is read from its first line, and a known
/// file goes on from its checkpoint.
#[test]
fn start_at_end_skips_only_what_predates_the_first_start() -> Res {
    let world = World::start(&WorldSpec { etcd: false, s3: false, ..Default::default() })?;
    world.kafka.create_topic("tail", 1)?;
    let bootstrap = world.kafka.bootstrap();
    let tmp = tempfile::tempdir()?;
    std::fs::create_dir_all(tmp.path().join("logs"))?;
    let old = tmp.path().join("logs/old.log");
    append(&old, (0..10).map(|n| format!("old before {n}")))?;
    let spec =
        AgentSpec::new(&bootstrap, tmp.path(), "tail").edit_stream(|s| s.start_at = zonal_agent::config::StartAt::End);
    let mut agent = Agent::start(&spec)?;
    agent.wait_tailing(&old)?;
    append(&old, (0..10).map(|n| format!("old after {n}")))?;
    agent.wait_caught_up(&old, "the lines written after the first start")?;
    agent.stop()?;
    // While the agent is down: a new file, and more lines in the known one.
    let new = tmp.path().join("logs/new.log");
    append(&new, (0..10).map(|n| format!("new while down {n}")))?;
    append(&old, (0..10).map(|n| format!("old while down {n}")))?;
    agent.restart()?;
    agent.wait_caught_up(&new, "the file created while the agent was down")?;
    agent.wait_caught_up(&old, "the known file")?;
    let got = counts(&read_topic(&bootstrap, "tail")?);
    for n in 0..10 {
        assert!(!got.contains_key(&format!("old before {n}")), "a line from before the first start was shipped");
        for line in [format!("old after {n}"), format!("new while down {n}"), format!("old while down {n}")] {
            assert_eq!(got.get(&line).copied(), Some(1), "{line}");
        }
    }
    Ok(())
}
