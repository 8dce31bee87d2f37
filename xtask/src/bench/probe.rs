//! What the benchmark cases measure with: progress bars, the peak RSS of a running process, a
//! timed reference command (kcat), and the records a topic holds.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

/// How often the peak RSS is sampled: often enough to see a short-lived peak's high-water mark
/// before the process exits, rarely enough to cost the process nothing.
const RSS_SAMPLE: Duration = Duration::from_millis(20);

/// A progress bar counting bytes towards `len`.
pub(super) fn bar(len: u64, msg: &'static str) -> ProgressBar {
    let b = ProgressBar::new(len);
    b.set_style(
        ProgressStyle::with_template("{msg:>20} [{bar:40}] {percent:>3}% {binary_bytes_per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    b.set_message(msg);
    b
}

/// Peak RSS of a running process, sampled from `/proc/<pid>/status` (VmHWM, the high-water mark
/// of its own address space). `ru_maxrss` from wait4 is not usable: Rust spawns children with
/// vfork, and the kernel then charges the parent's memory to the child's maximum.
pub(super) struct PeakRss {
    peak: Arc<AtomicU64>,
    /// CPU centiseconds at the last sample: the process's use up to (at most one period before)
    /// its exit.
    cpu: Arc<AtomicU64>,
    /// The most descriptors the process had open at a sample (`/proc/<pid>/fd`).
    fds: Arc<AtomicU64>,
    /// Dropping the sender stops the sampler at once, between two samples.
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// CPU seconds (user + system) a process has used, from `/proc/<pid>/stat` (`self` for this
/// one). Ticks are USER_HZ, 100 on Linux whatever the kernel's own tick.
pub(super) fn cpu_seconds(pid: &str) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = text.get(text.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines().find_map(|l| l.strip_prefix("VmHWM:"))?.trim().trim_end_matches("kB").trim().parse().ok()
}

impl PeakRss {
    /// Starts sampling every [`RSS_SAMPLE`] until [`PeakRss::finish`] or the process is gone.
    pub(super) fn watch(pid: u32) -> PeakRss {
        let peak = Arc::new(AtomicU64::new(0));
        let cpu = Arc::new(AtomicU64::new(0));
        let fds = Arc::new(AtomicU64::new(0));
        let (stop, stopped) = mpsc::channel::<()>();
        let (p, c, f) = (peak.clone(), cpu.clone(), fds.clone());
        let thread = std::thread::spawn(move || {
            while let Some(k) = vm_hwm_kib(pid) {
                p.fetch_max(k, Ordering::Relaxed);
                if let Some(secs) = cpu_seconds(&pid.to_string()) {
                    c.fetch_max((secs * 100.0) as u64, Ordering::Relaxed);
                }
                if let Ok(open) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
                    f.fetch_max(open.count() as u64, Ordering::Relaxed);
                }
                // The receive is the sampling period; it ends early when `finish` drops the
                // sender.
                if !matches!(stopped.recv_timeout(RSS_SAMPLE), Err(mpsc::RecvTimeoutError::Timeout)) {
                    return;
                }
            }
        });
        PeakRss { peak, cpu, fds, stop: Some(stop), thread: Some(thread) }
    }

    /// The most descriptors the process had open at a sample so far.
    pub(super) fn most_descriptors(&self) -> u64 {
        self.fds.load(Ordering::Relaxed)
    }

    /// Takes one more sample (call before the process exits) and returns the peak in MB.
    pub(super) fn finish(self, pid: u32) -> f64 {
        self.finish_with_cpu(pid).0
    }

    /// Like [`PeakRss::finish`], with the CPU seconds the process used.
    pub(super) fn finish_with_cpu(mut self, pid: u32) -> (f64, f64) {
        if let Some(k) = vm_hwm_kib(pid) {
            self.peak.fetch_max(k, Ordering::Relaxed);
        }
        if let Some(secs) = cpu_seconds(&pid.to_string()) {
            self.cpu.fetch_max((secs * 100.0) as u64, Ordering::Relaxed);
        }
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        (self.peak.load(Ordering::Relaxed) as f64 / 1024.0, self.cpu.load(Ordering::Relaxed) as f64 / 100.0)
    }
}

/// A reference command's run: exit code, seconds and peak RSS.
pub(super) struct Timed {
    /// The exit code (-1 when it died of a signal).
    pub code: i32,
    pub secs: f64,
    pub rss_mb: f64,
    /// CPU seconds it used.
    pub cpu_secs: f64,
}

/// Runs `cmd` to its end with `spinner` turning, timing it from just before the start.
pub(super) fn timed(cmd: &mut Command, spinner: ProgressBar) -> anyhow::Result<Timed> {
    spinner.enable_steady_tick(Duration::from_millis(200));
    let start = Instant::now();
    let program = cmd.get_program().to_string_lossy().into_owned();
    let mut child = cmd.spawn().with_context(|| format!("starting {program}"))?;
    let peak = PeakRss::watch(child.id());
    let status = child.wait().context("waiting for a child process")?;
    let (rss_mb, cpu_secs) = peak.finish_with_cpu(child.id());
    let secs = start.elapsed().as_secs_f64();
    spinner.finish_and_clear();
    Ok(Timed { code: status.code().unwrap_or(-1), secs, rss_mb, cpu_secs })
}

/// The records `topic` holds: the sum of its partitions' high watermarks.
pub(super) fn high_watermarks(bootstrap: &str, topic: &str) -> anyhow::Result<i64> {
    let c: BaseConsumer = ClientConfig::new().set("bootstrap.servers", bootstrap).set("group.id", "bench").create()?;
    let md = c.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let mut total = 0;
    for p in md.topics().iter().flat_map(|t| t.partitions()) {
        total += c.fetch_watermarks(topic, p.id(), Duration::from_secs(10))?.1;
    }
    Ok(total)
}

/// CPU seconds of this process's threads, summed by thread name (digits dropped, so that a
/// pool's threads count as one): where the world's CPU goes, broker or S3 server.
pub(super) fn cpu_by_thread() -> std::collections::BTreeMap<String, f64> {
    let mut by = std::collections::BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return by };
    for t in tasks.flatten() {
        let tid = t.file_name().to_string_lossy().into_owned();
        let name = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        let name: String = name.trim().chars().filter(|c| !c.is_ascii_digit()).collect();
        if let Some(secs) = cpu_seconds(&format!("self/task/{tid}")) {
            *by.entry(name).or_insert(0.0) += secs;
        }
    }
    by
}

/// What each thread group used between two [`cpu_by_thread`] readings, largest first, as text.
pub(super) fn cpu_delta(before: &std::collections::BTreeMap<String, f64>) -> String {
    let mut d: Vec<(String, f64)> =
        cpu_by_thread().into_iter().map(|(k, v)| (k.clone(), v - before.get(&k).copied().unwrap_or(0.0))).collect();
    d.sort_by(|a, b| b.1.total_cmp(&a.1));
    d.iter().filter(|(_, v)| *v >= 0.1).map(|(k, v)| format!("{k} {v:.1}")).collect::<Vec<_>>().join(", ")
}
