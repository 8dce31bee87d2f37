//! Many files on one host: descriptors held to a bound whatever the number of files (idle files
//! closed and reopened by identity, new files waiting for room), under a descriptor limit far
//! below the number of files, with nothing lost.

mod common;

use std::time::Duration;

use common::*;
use testkit::{World, WorldSpec};

/// The log files among a process's open descriptors (not the folder, which listings open).
fn open_logs(pid: u32, logs: &std::path::Path) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|fds| {
            fds.flatten()
                .filter(|fd| std::fs::read_link(fd.path()).is_ok_and(|t| t.starts_with(logs) && t != logs))
                .count()
        })
        .unwrap_or(0)
}

/// 150 files under a hard limit of 128 descriptors (prlimit): at most a handful are open at a
/// time, every line arrives, the files closed while idle are reopened when they grow, and one
/// renamed away while closed is found again by its inode and finished.
#[test]
fn a_hundred_and_fifty_files_under_a_limit_of_128_descriptors_lose_nothing() -> Res {
    const FILES: usize = 150;
    let world = World::start(&WorldSpec { etcd: false, s3: false, ..Default::default() })?;
    world.kafka.create_topic("many", 3)?;
    let bootstrap = world.kafka.bootstrap();
    let tmp = tempfile::tempdir()?;
    let logs = tmp.path().join("logs");
    let mut spec = AgentSpec::new(&bootstrap, tmp.path(), "many").edit(|c| c.close_idle_secs = 1);
    spec.wrapper = vec!["prlimit".into(), "--nofile=128:128".into()];
    let agent = Agent::start(&spec)?;
    let pid = agent.pid().ok_or_else(|| anyhow::anyhow!("agent not running"))?;
    let line = |f: usize, round: usize, n: usize| format!("file {f:03} round {round} line {n:03}");
    let file = |f: usize| logs.join(format!("f{f:03}.log"));
    for f in 0..FILES {
        append(&file(f), (0..100).map(|n| line(f, 0, n)))?;
    }
    let most_open = std::cell::Cell::new(0);
    let delivered = |want: usize| -> Res {
        testkit::wait_until("every line delivered", Duration::from_secs(60), || {
            most_open.set(most_open.get().max(open_logs(pid, &logs)));
            (agent.metric("zonal_agent_acked_lines_total", &[]).ok()? as usize >= want).then_some(())
        })?;
        Ok(())
    };
    delivered(FILES * 100)?;
    testkit::wait_until("idle files closed", Duration::from_secs(30), || (open_logs(pid, &logs) == 0).then_some(()))?;
    // More lines in every file, and one file renamed away while closed.
    for f in 0..FILES {
        append(&file(f), (0..50).map(|n| line(f, 1, n)))?;
    }
    std::fs::rename(file(7), logs.join("f007.log.1"))?;
    delivered(FILES * 150)?;
    let got = counts(&read_topic(&bootstrap, "many")?);
    for f in 0..FILES {
        for (round, lines) in [(0, 100), (1, 50)] {
            for n in 0..lines {
                assert_eq!(got.get(&line(f, round, n)).copied(), Some(1), "{}", line(f, round, n));
            }
        }
    }
    // 128 less the room kept for sockets and checkpoints leaves 8 files open at most.
    assert!(most_open.get() <= 8, "{} log files open at once", most_open.get());
    assert_eq!(agent.metric("zonal_agent_errors_total", &[("kind", "read")])?, 0.0);
    Ok(())
}

/// A folder of the globs that the agent (running as another user, so that permissions hold)
/// cannot list for a while, its file closed as idle: the file is not taken as gone, `/readyz`
/// and `/status` say which folder, and once it can be listed again nothing is sent twice.
#[test]
fn a_folder_that_cannot_be_listed_keeps_its_files_and_turns_readyz_red() -> Res {
    use std::os::unix::fs::PermissionsExt;
    let world = World::start(&WorldSpec { etcd: false, s3: false, ..Default::default() })?;
    world.kafka.create_topic("locked", 1)?;
    let bootstrap = world.kafka.bootstrap();
    let tmp = tempfile::tempdir()?;
    let team = tmp.path().join("logs/team");
    std::fs::create_dir_all(&team)?;
    // nobody (65534) owns the agent's folders; the log folder is the one it loses access to.
    let nobody = "65534";
    let mut spec = AgentSpec::new(&bootstrap, tmp.path(), "locked").edit(|c| {
        c.streams[0].paths = vec![format!("{}/logs/*/*.log", tmp.path().display())];
        // Files idle and acknowledged would be let go at once if taken as gone; and the file is
        // closed as idle before the folder is locked, so the reopen must not take it as gone.
        c.rotate_wait_ms = 0;
        c.close_idle_secs = 1;
    });
    let log = team.join("app.log");
    append(&log, (0..100).map(|n| format!("locked {n}")))?;
    // Root reads any folder: the agent runs as nobody, from a copy of its binary that nobody
    // can reach, in folders nobody owns.
    if unsafe { libc::geteuid() } == 0 {
        spec.wrapper = ["setpriv", "--reuid", nobody, "--regid", nobody, "--clear-groups"].map(String::from).to_vec();
        let bin = tmp.path().join("zonal-agent");
        std::fs::copy(env!("CARGO_BIN_EXE_zonal-agent"), &bin)?;
        spec.bin = Some(bin);
        std::fs::create_dir_all(tmp.path().join("checkpoints"))?;
        let owner = format!("{nobody}:{nobody}");
        let status = std::process::Command::new("chown").args(["-R", &owner]).arg(tmp.path()).status()?;
        anyhow::ensure!(status.success(), "chown failed");
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755))?;
    }
    let agent = Agent::start(&spec)?;
    agent.wait_caught_up(&log, "the lines before the folder is locked")?;
    let pid = agent.pid().ok_or_else(|| anyhow::anyhow!("agent not running"))?;
    let logs = tmp.path().join("logs");
    testkit::wait_until("the idle file closed", Duration::from_secs(20), || {
        (open_logs(pid, &logs) == 0).then_some(())
    })?;
    std::fs::set_permissions(&team, std::fs::Permissions::from_mode(0o000))?;
    let http = agent.http.clone();
    testkit::wait_until("/readyz to name the folder", Duration::from_secs(20), || {
        let (code, body) = http_get(&format!("{http}/readyz")).ok()?;
        (code != 200 && body.contains("cannot list")).then_some(())
    })?;
    let s = agent.status()?;
    assert!(s["streams"][0]["listing_error"].as_str().is_some_and(|e| e.contains("team")), "{s}");
    assert_eq!(s["streams"][0]["files"].as_array().map(Vec::len), Some(1), "the file is still tailed: {s}");
    std::fs::set_permissions(&team, std::fs::Permissions::from_mode(0o755))?;
    append(&log, (100..150).map(|n| format!("locked {n}")))?;
    agent.wait_caught_up(&log, "the lines after the folder is back")?;
    testkit::wait_until("/readyz green again", Duration::from_secs(20), || {
        (http_get(&format!("{http}/readyz")).ok()?.0 == 200).then_some(())
    })?;
    let got = counts(&read_topic(&bootstrap, "locked")?);
    for n in 0..150 {
        assert_eq!(got.get(&format!("locked {n}")).copied(), Some(1), "locked {n}");
    }
    assert!(agent.metric("zonal_agent_errors_total", &[("kind", "list")])? > 0.0);
    Ok(())
}
