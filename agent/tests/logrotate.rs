//! Real `logrotate` around a running, killed and restarted agent: no line is lost.
//!
//! - `create` rotation (rename + new file, `compress` + `delaycompress`) with a writer that keeps
//!   the old descriptor for a while after each rotation (as nginx does until it gets USR1), and
//!   the agent killed with SIGKILL before a rotation, right after one, and while the writer still
//!   appends to the renamed file.
//! - `copytruncate` with a writer that never reopens, the agent running through some rotations
//!   killed or stalled (SIGSTOP) while unread lines pile up and the file is copied and truncated:
//!   the copy is finished from where the agent was.
//!
//! Duplicates are allowed (at-least-once) and reported; losses are not.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use testkit::{World, WorldSpec};

fn world() -> Res<World> {
    Ok(World::start(&WorldSpec { etcd: false, s3: false, ..Default::default() })?)
}

/// Runs logrotate once, forced, with its own state file.
fn logrotate(dir: &Path, body: &str) -> Res {
    let conf = dir.join("logrotate.conf");
    let log = dir.join("logs/app.log");
    std::fs::write(&conf, format!("{} {{\n{body}\n}}\n", log.display()))?;
    let out = Command::new("logrotate").arg("-f").arg("-s").arg(dir.join("logrotate.state")).arg(&conf).output()?;
    anyhow::ensure!(out.status.success(), "logrotate failed: {}", String::from_utf8_lossy(&out.stderr));
    Ok(())
}

/// A writer thread appending numbered lines to `logs/app.log`, 20 every 2 ms (the load; the
/// scenarios below are paced by lines written, not by time). `reopen_after` makes it open the
/// path again after some more lines (after a `create` rotation it keeps appending to the renamed
/// file until then, as nginx does until USR1); `gate` pauses it (held by the test around a
/// copytruncate, whose copy-then-truncate window loses lines whatever reads the file).
struct Writer {
    written: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    /// Reopen once this many lines are written (0: no reopen pending).
    reopen_at: Arc<AtomicUsize>,
    gate: Arc<Mutex<()>>,
    handle: Option<std::thread::JoinHandle<Res>>,
}

impl Writer {
    fn start(path: PathBuf, tag: &'static str) -> Writer {
        let (written, stop, reopen_at, gate) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicUsize::new(0)),
            Arc::new(Mutex::new(())),
        );
        let (w, s, r, g) = (written.clone(), stop.clone(), reopen_at.clone(), gate.clone());
        let handle = std::thread::spawn(move || -> Res {
            let open = || std::fs::OpenOptions::new().create(true).append(true).open(&path);
            let mut file = open()?;
            while !s.load(Ordering::Relaxed) {
                {
                    let _held = g.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    let n = w.load(Ordering::Relaxed);
                    let at = r.load(Ordering::Relaxed);
                    if at > 0 && n >= at {
                        file = open()?;
                        r.store(0, Ordering::Relaxed);
                    }
                    let mut text = String::new();
                    for i in n..n + 20 {
                        text.push_str(&format!("{tag} {i:07} {}\n", "x".repeat(60)));
                    }
                    file.write_all(text.as_bytes())?;
                    w.store(n + 20, Ordering::Relaxed);
                }
                // The write rate of the load, not a wait for anything.
                std::thread::sleep(Duration::from_millis(2));
            }
            Ok(())
        });
        Writer { written, stop, reopen_at, gate, handle: Some(handle) }
    }

    /// Waits until `n` more lines are written.
    fn wait_lines(&self, n: usize, what: &str) -> Res {
        let target = self.written.load(Ordering::Relaxed) + n;
        testkit::wait_until(what, Duration::from_secs(60), || {
            (self.written.load(Ordering::Relaxed) >= target).then_some(())
        })?;
        Ok(())
    }

    /// The writer reopens the path after `n` more lines.
    fn reopen_after(&self, n: usize) {
        self.reopen_at.store(self.written.load(Ordering::Relaxed) + n, Ordering::Relaxed);
    }

    /// Waits until a pending reopen happened.
    fn wait_reopened(&self) -> Res {
        testkit::wait_until("the writer to reopen the log", Duration::from_secs(60), || {
            (self.reopen_at.load(Ordering::Relaxed) == 0).then_some(())
        })?;
        Ok(())
    }

    fn finish(mut self) -> Res<usize> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            h.join().map_err(|_| anyhow::anyhow!("writer panicked"))??;
        }
        Ok(self.written.load(Ordering::Relaxed))
    }
}

/// In-flight budget of the agents here: it bounds what a kill can make the agent send twice.
const IN_FLIGHT: usize = 256 * 1024;

/// The duplicates one kill may cause: the lines in flight (the budget, at the writer's ~75-byte
/// lines plus librdkafka's per-record charge) and those acknowledged since the last checkpoint
/// write (100 ms at ~10,000 lines/s), with room.
const DUPLICATES_PER_KILL: usize = IN_FLIGHT / (75 + 160) + 1000 + 1000;

/// Every line of `tag` in the topic must be there; returns the number of duplicates.
fn check_complete(bootstrap: &str, topic: &str, tag: &str, written: usize) -> Res<usize> {
    let records = read_topic(bootstrap, topic)?;
    let mut seen: BTreeMap<usize, usize> = BTreeMap::new();
    for (_, _, payload) in &records {
        let text = String::from_utf8_lossy(payload);
        let mut parts = text.split(' ');
        anyhow::ensure!(parts.next() == Some(tag), "foreign line {text:?}");
        let n: usize = parts.next().unwrap_or_default().parse()?;
        *seen.entry(n).or_default() += 1;
    }
    let missing: Vec<usize> = (0..written).filter(|n| !seen.contains_key(n)).collect();
    anyhow::ensure!(
        missing.is_empty(),
        "{} of {written} lines lost, first {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    Ok(seen.values().map(|c| c - 1).sum())
}

/// Waits until the agent has acknowledged the live file up to the size it has on disk now (the
/// writer goes on, so "equal" never holds for long) and every other file it tails to its end.
fn wait_caught_up_with_writer(agent: &Agent, path: &Path) -> Res {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path)?;
    let (ino, target) = (meta.ino(), meta.len());
    testkit::wait_until("the agent to catch up with the writer", Duration::from_secs(60), || {
        let s = agent.status().ok()?;
        let files = s["streams"][0]["files"].as_array()?.clone();
        let live = files
            .iter()
            .any(|f| f["ino"].as_u64() == Some(ino) && f["acked_offset"].as_u64().is_some_and(|a| a >= target));
        let rest = files
            .iter()
            .filter(|f| f["ino"].as_u64() != Some(ino))
            .all(|f| f["acked_offset"].as_u64() == f["size"].as_u64());
        (live && rest).then_some(())
    })
    .map_err(|e| anyhow::anyhow!("{e}: {:?}\n{}", agent.status().ok(), agent.log_tail()))?;
    Ok(())
}

#[test]
fn create_rotation_with_kills_before_after_and_during_writer_reopen_loses_nothing() -> Res {
    let world = world()?;
    world.kafka.create_topic("rot", 6)?;
    let bootstrap = world.kafka.bootstrap();
    let tmp = tempfile::tempdir()?;
    let spec = AgentSpec::new(&bootstrap, tmp.path(), "rot").imds(&world.metadata[0].endpoint()).edit(|c| {
        c.rotate_wait_ms = 3000;
        c.max_in_flight_bytes = IN_FLIGHT as u64;
    });
    std::fs::create_dir_all(tmp.path().join("logs"))?;
    let writer = Writer::start(tmp.path().join("logs/app.log"), "create");
    let mut agent = Agent::start(&spec)?;
    let rotate = "rotate 10\ncreate\ncompress\ndelaycompress\nmissingok";
    // After each rotation the writer keeps appending to the renamed file for 15,000 lines
    // (about 1.5 s), then reopens.
    const KEEP: usize = 15_000;
    for cycle in 0..4 {
        writer.wait_lines(7_000, "lines before the rotation")?;
        match cycle {
            // Killed before the rotation, restarted after it: the renamed file is found by its
            // checkpoint's inode and finished.
            0 => {
                agent.kill9()?;
                logrotate(tmp.path(), rotate)?;
                writer.reopen_after(KEEP);
                writer.wait_lines(3_000, "lines into the renamed file while the agent is down")?;
                agent.restart()?;
            }
            // Rotated while running; killed while the writer still appends to the renamed file,
            // restarted before it reopens.
            1 => {
                logrotate(tmp.path(), rotate)?;
                writer.reopen_after(KEEP);
                writer.wait_lines(4_000, "lines into the renamed file")?;
                agent.kill9()?;
                writer.wait_lines(3_000, "lines into the renamed file while the agent is down")?;
                agent.restart()?;
            }
            // Killed right after the rotation.
            2 => {
                logrotate(tmp.path(), rotate)?;
                agent.kill9()?;
                writer.reopen_after(KEEP);
                writer.wait_lines(2_000, "lines into the renamed file while the agent is down")?;
                agent.restart()?;
            }
            // Rotated while running, no kill.
            _ => {
                logrotate(tmp.path(), rotate)?;
                writer.reopen_after(KEEP);
            }
        }
        writer.wait_reopened()?;
        // The next rotation compresses the previous one: let the agent finish it first, as it
        // would have long before a real rotation interval.
        wait_caught_up_with_writer(&agent, &tmp.path().join("logs/app.log"))?;
    }
    let written = writer.finish()?;
    agent.wait_caught_up(&tmp.path().join("logs/app.log"), "the last lines")?;
    let dups = check_complete(&bootstrap, "rot", "create", written)?;
    eprintln!("create rotation: {written} lines, 0 lost, {dups} duplicates");
    assert!(dups <= 3 * DUPLICATES_PER_KILL, "{dups} duplicates for 3 kills");
    assert!(agent.metric("zonal_agent_recovered_files_total", &[])? >= 1.0, "a rotated file was found again");
    Ok(())
}

#[test]
fn copytruncate_with_kills_loses_nothing() -> Res {
    let world = world()?;
    world.kafka.create_topic("ct", 6)?;
    let bootstrap = world.kafka.bootstrap();
    let tmp = tempfile::tempdir()?;
    let spec = AgentSpec::new(&bootstrap, tmp.path(), "ct").imds(&world.metadata[0].endpoint()).edit(|c| {
        c.rotate_wait_ms = 2000;
        c.max_in_flight_bytes = IN_FLIGHT as u64;
    });
    std::fs::create_dir_all(tmp.path().join("logs"))?;
    let writer = Writer::start(tmp.path().join("logs/app.log"), "ct");
    let mut agent = Agent::start(&spec)?;
    let rotate = "rotate 10\ncopytruncate\ncompress\ndelaycompress\nmissingok";
    for cycle in 0..4 {
        // Unread lines pile up before each rotation: the agent is down (even cycles) or stalled
        // with SIGSTOP (odd cycles) while the writer goes on.
        let kill = cycle % 2 == 0;
        let noticed = agent.metric("zonal_agent_truncations_total", &[])?;
        if kill {
            agent.kill9()?;
        } else {
            agent.signal(libc::SIGSTOP)?;
        }
        writer.wait_lines(7_000, "unread lines to pile up")?;
        {
            // copytruncate's own window (between the copy and the truncate) loses whatever is
            // written in it, whoever reads the file; the writer waits it out.
            let _paused = writer.gate.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            logrotate(tmp.path(), rotate)?;
        }
        if kill {
            agent.restart()?;
        } else {
            agent.signal(libc::SIGCONT)?;
            // Until it notices the truncation, its view of the file is the old one.
            testkit::wait_until("the resumed agent to notice the truncation", Duration::from_secs(20), || {
                (agent.metric("zonal_agent_truncations_total", &[]).ok()? > noticed).then_some(())
            })?;
        }
        // Caught up with the file on disk (not the agent's own last look, which a just-resumed
        // agent has not refreshed): a second rotation while it lags would compress the copy.
        wait_caught_up_with_writer(&agent, &tmp.path().join("logs/app.log"))?;
    }
    let written = writer.finish()?;
    agent.wait_caught_up(&tmp.path().join("logs/app.log"), "the last lines")?;
    let dups = check_complete(&bootstrap, "ct", "ct", written)
        .map_err(|e| anyhow::anyhow!("{e}\n{}", std::fs::read_to_string(&agent.log).unwrap_or_default()))?;
    eprintln!("copytruncate: {written} lines, 0 lost, {dups} duplicates");
    assert!(dups <= 2 * DUPLICATES_PER_KILL, "{dups} duplicates for 2 kills");
    assert_eq!(agent.metric("zonal_agent_unrecoverable_bytes_total", &[])?, 0.0);
    assert!(agent.metric("zonal_agent_recovered_files_total", &[])? >= 1.0, "the copy was finished");
    Ok(())
}
