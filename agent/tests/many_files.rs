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
    spec.nofile = Some(128);
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
    assert_eq!(agent.metric("zonal_agent_errors_total", &["read"])?, 0.0);
    Ok(())
}
