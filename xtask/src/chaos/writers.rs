//! The applications of a chaos run: one writer per zone appending numbered lines to
//! `logs/app.log` at a steady rate through one descriptor, as a service logging to a file does,
//! and the real `logrotate` rotating those files (`create` in most zones, `copytruncate` in the
//! second).
//!
//! ```text
//!  Writer thread ──append "chaos z<zone> <seq> …"──> logs/app.log  (reopens when the path names
//!       │                                              another file: after a `create` rotation it
//!       │                                              keeps the renamed file for up to 200 ms)
//!       └─ gate: held around a copytruncate, whose copy-then-truncate window loses lines
//!          whatever reads the file (logrotate documents it)
//!  rotate(zone) ──logrotate -f -s state conf──> app.log.1, app.log.2, …
//! ```

use std::io::Write as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// The least time between two rotations of one log. Two copytruncates within one poll of the
/// agent (100 ms here) leave the lines written between them in a copy the agent never saw the
/// head of, under a name its glob does not match: docs/guarantees.md names that window. logrotate
/// runs hours apart; back-to-back rotations (a periodic one, then a fault) were the harness's
/// own doing.
const ROTATION_SPACING: Duration = Duration::from_secs(1);

/// The first word of every generated line.
pub const TAG: &str = "chaos";

/// One zone's application writing its log.
pub struct Writer {
    /// The zone, part of every line.
    pub zone: usize,
    /// Lines written so far; line numbers are `0..written`.
    pub written: Arc<AtomicU64>,
    logs: PathBuf,
    copytruncate: bool,
    stop: Arc<AtomicBool>,
    gate: Arc<Mutex<()>>,
    /// When the log was last rotated.
    rotated: Mutex<Option<Instant>>,
    handle: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
}

/// The text of line `seq` of `zone`, `bytes` long without its newline.
pub fn line(zone: usize, seq: u64, bytes: usize) -> String {
    let mut l = format!("{TAG} z{zone} {seq:010} ");
    while l.len() < bytes {
        l.push((b'a' + ((seq as usize * 7 + l.len()) % 26) as u8) as char);
    }
    l
}

/// Reads `(zone, seq)` back from a line.
pub fn parse(line: &str) -> Option<(usize, u64)> {
    let mut words = line.split(' ');
    (words.next()? == TAG).then_some(())?;
    let zone = words.next()?.strip_prefix('z')?.parse().ok()?;
    let seq = words.next()?.parse().ok()?;
    Some((zone, seq))
}

impl Writer {
    /// Starts writing `rate` lines per second of `bytes` bytes into `logs/app.log`.
    pub fn start(zone: usize, logs: &Path, rate: u64, bytes: usize, copytruncate: bool) -> Writer {
        let written = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let gate = Arc::new(Mutex::new(()));
        let (w, s, g, path) = (written.clone(), stop.clone(), gate.clone(), logs.join("app.log"));
        let handle = std::thread::spawn(move || write_loop(&path, zone, rate, bytes, &w, &s, &g));
        Writer {
            zone,
            written,
            logs: logs.to_owned(),
            copytruncate,
            stop,
            gate,
            rotated: Mutex::new(None),
            handle: Some(handle),
        }
    }

    /// Rotates the log with logrotate, with this zone's configuration; a copytruncate holds the
    /// writer for its duration.
    pub fn rotate(&self) -> anyhow::Result<()> {
        self.rotate_with(if self.copytruncate { "copytruncate" } else { "create" })
    }

    /// Rotates the log with logrotate in `mode` (`create` or `copytruncate`), at least
    /// [`ROTATION_SPACING`] after the previous rotation.
    pub fn rotate_with(&self, mode: &str) -> anyhow::Result<()> {
        self.settle();
        let result = self.run_logrotate(mode);
        *self.rotated.lock().unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
        result
    }

    /// Waits until [`ROTATION_SPACING`] has passed since the last rotation, so the agent has
    /// polled the log since (call it before stopping the agent for a rotation while it is down).
    pub fn settle(&self) {
        let rotated = *self.rotated.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(wait) = rotated.and_then(|at| (at + ROTATION_SPACING).checked_duration_since(Instant::now())) {
            // Pacing of the scenario, not a wait for a condition.
            std::thread::sleep(wait);
        }
    }

    fn run_logrotate(&self, mode: &str) -> anyhow::Result<()> {
        let dir = self.logs.parent().unwrap_or(&self.logs);
        let conf = dir.join("logrotate.conf");
        let body =
            format!("{}/app.log {{\n  rotate 200\n  {mode}\n  nocompress\n  missingok\n}}\n", self.logs.display());
        std::fs::write(&conf, body).with_context(|| format!("writing {}", conf.display()))?;
        let _held = (mode == "copytruncate").then(|| self.gate.lock().unwrap_or_else(PoisonError::into_inner));
        let out = std::process::Command::new("logrotate")
            .arg("-f")
            .arg("-s")
            .arg(dir.join("logrotate.state"))
            .arg(&conf)
            .output()
            .context("running logrotate (apt install logrotate)")?;
        if !out.status.success() {
            bail!("logrotate {} failed: {}", conf.display(), String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    }

    /// Whether this zone rotates with copytruncate.
    pub fn copytruncate(&self) -> bool {
        self.copytruncate
    }

    /// Stops writing; returns the number of lines written.
    pub fn finish(&mut self) -> anyhow::Result<u64> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            h.join().map_err(|_| anyhow::anyhow!("the writer of zone {} panicked", self.zone))??;
        }
        Ok(self.written.load(Ordering::Relaxed))
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn open(path: &Path) -> anyhow::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))
}

fn write_loop(
    path: &Path,
    zone: usize,
    rate: u64,
    bytes: usize,
    written: &AtomicU64,
    stop: &AtomicBool,
    gate: &Mutex<()>,
) -> anyhow::Result<()> {
    let mut file = open(path)?;
    let start = Instant::now();
    let mut last_check = Instant::now();
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        // Line `seq` is due at seq / rate seconds: the load's pace, not a wait for anything.
        let due = start + Duration::from_secs_f64(seq as f64 / rate as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        // As an application reopening on a signal from the rotation, a little late.
        if last_check.elapsed() >= Duration::from_millis(200) {
            last_check = Instant::now();
            let current = std::fs::metadata(path).map(|m| m.ino()).ok();
            if current != Some(file.metadata().context("fstat of the log")?.ino()) {
                file = open(path)?;
            }
        }
        let _held = gate.lock().unwrap_or_else(PoisonError::into_inner);
        let mut text = line(zone, seq, bytes);
        text.push('\n');
        file.write_all(text.as_bytes()).with_context(|| format!("appending to {}", path.display()))?;
        seq += 1;
        written.store(seq, Ordering::Relaxed);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_back() {
        for (zone, seq, bytes) in [(0, 0, 10), (2, 123_456, 120), (5, 9_999_999_999, 200)] {
            let l = line(zone, seq, bytes);
            assert!(l.len() >= bytes);
            assert_eq!(parse(&l), Some((zone, seq)));
        }
        assert_eq!(parse("other z1 0000000001 x"), None);
        assert_eq!(parse("chaos zx 1"), None);
    }
}
