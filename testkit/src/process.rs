//! Child processes of tests, the demo and the benchmarks: started with their output appended to
//! a log file, stopped gracefully (SIGTERM, then a deadline), killed (SIGKILL), stalled and
//! resumed (SIGSTOP / SIGCONT), restarted with the same command, and killed when dropped. The
//! one place in the testkit where a child process is started or signalled with `unsafe`: the
//! etcd server runs through it too.
//!
//! ```text
//!  ProcessSpec { program, args, env, log } ──start──> Process (child, log appended)
//!     stop(): SIGTERM ──wait_until(exit, deadline)──> code      kill9(): SIGKILL + reap
//!     signal(SIGSTOP | SIGCONT)    restart(): same spec         drop: SIGKILL + reap
//! ```

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use crate::{Result, TestkitError, io_err};

/// How to start a process.
#[derive(Debug, Clone, Default)]
pub struct ProcessSpec {
    /// The program.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<OsString>,
    /// Variables set for it.
    pub env: Vec<(String, String)>,
    /// Variables removed from what it inherits.
    pub env_remove: Vec<String>,
    /// Where its stdout and stderr are appended.
    pub log: PathBuf,
}

impl ProcessSpec {
    /// `program` with `args`, logging to `log`.
    pub fn new(program: impl Into<PathBuf>, args: &[&std::ffi::OsStr], log: impl Into<PathBuf>) -> ProcessSpec {
        ProcessSpec {
            program: program.into(),
            args: args.iter().map(|a| a.to_os_string()).collect(),
            log: log.into(),
            ..ProcessSpec::default()
        }
    }

    /// Sets a variable.
    pub fn env(mut self, key: &str, value: impl Into<String>) -> ProcessSpec {
        self.env.push((key.to_owned(), value.into()));
        self
    }

    /// Removes an inherited variable.
    pub fn env_remove(mut self, key: &str) -> ProcessSpec {
        self.env_remove.push(key.to_owned());
        self
    }
}

/// A running (or stopped) child process.
#[derive(Debug)]
pub struct Process {
    spec: ProcessSpec,
    child: Option<Child>,
}

fn process_err(what: String) -> TestkitError {
    TestkitError::Start { server: "process", reason: what }
}

impl Process {
    /// Starts `spec`.
    pub fn start(spec: ProcessSpec) -> Result<Process> {
        let mut p = Process { spec, child: None };
        p.restart()?;
        Ok(p)
    }

    /// Starts the same command again (after a stop or a kill), appending to the same log.
    pub fn restart(&mut self) -> Result<()> {
        if self.child.is_some() {
            return Err(process_err(format!("{} is still running", self.spec.program.display())));
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.spec.log)
            .map_err(io_err(format!("open log {}", self.spec.log.display())))?;
        let mut cmd = Command::new(&self.spec.program);
        cmd.args(&self.spec.args);
        for (k, v) in &self.spec.env {
            cmd.env(k, v);
        }
        for k in &self.spec.env_remove {
            cmd.env_remove(k);
        }
        let out = log.try_clone().map_err(io_err("duplicate the log descriptor"))?;
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent. The kernel
        // kills the child when the thread that started it dies without running our Drop (a
        // harness killed by a timeout), so no program outlives its test.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(log)
            .spawn()
            .map_err(io_err(format!("start {}", self.spec.program.display())))?;
        self.child = Some(child);
        Ok(())
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether it was started and has not been stopped, killed or seen to exit.
    pub fn running(&mut self) -> bool {
        match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => true,
            Some(_) => {
                self.child = None;
                false
            }
            None => false,
        }
    }

    /// Its exit status, if it has exited by itself since it was started; it is reaped then and
    /// no longer running. A server waited on while it starts uses this to fail at once, with
    /// the status, instead of at the deadline.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        Some(status)
    }

    /// Sends `signal` (SIGSTOP and SIGCONT stall and resume it).
    pub fn signal(&self, signal: i32) -> Result<()> {
        let pid = self.pid().ok_or_else(|| process_err(format!("{} is not running", self.spec.program.display())))?;
        let pid = libc::pid_t::try_from(pid).map_err(|_| process_err(format!("pid {pid} out of range")))?;
        // SAFETY: kill(2) on a child of ours that has not been reaped (we hold its `Child`), so
        // the pid cannot have been reused.
        if unsafe { libc::kill(pid, signal) } != 0 {
            return Err(process_err(format!("kill({pid}, {signal}): {}", std::io::Error::last_os_error())));
        }
        Ok(())
    }

    /// SIGTERM, then waits up to `within` for the exit; returns the exit code (`None` when it
    /// died of a signal, or was not running). Past the deadline it is killed and that is an error.
    pub fn stop(&mut self, within: Duration) -> Result<Option<i32>> {
        if self.child.is_none() {
            return Ok(None);
        }
        // A stalled process would not see SIGTERM until continued.
        let _ = self.signal(libc::SIGCONT);
        self.signal(libc::SIGTERM)?;
        match self.wait_exit(within) {
            Ok(code) => Ok(code),
            Err(e) => {
                self.kill9()?;
                Err(e)
            }
        }
    }

    /// Waits up to `within` for the process to exit by itself; returns its exit code.
    pub fn wait_exit(&mut self, within: Duration) -> Result<Option<i32>> {
        let Some(c) = self.child.as_mut() else { return Ok(None) };
        let what = format!("{} to exit", self.spec.program.display());
        let status = crate::wait_until(&what, within, || c.try_wait().ok().flatten())?;
        self.child = None;
        Ok(status.code())
    }

    /// SIGKILL: no chance to flush or checkpoint.
    pub fn kill9(&mut self) -> Result<()> {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            c.wait().map_err(io_err("reap a killed process"))?;
        }
        Ok(())
    }

    /// The log's last `n` lines.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.spec.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Where its output goes.
    pub fn log(&self) -> &std::path::Path {
        &self.spec.log
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs `<program> check -c <config>` to its end: the configuration check both programs have.
pub fn check_config(program: &str, config: &Path) -> Result<std::process::Output> {
    Command::new(program)
        .args(["check", "-c"])
        .arg(config)
        .output()
        .map_err(|source| TestkitError::Io { what: format!("running {program} check -c {}", config.display()), source })
}

/// Peak resident memory of a running process (`VmHWM` in `/proc/<pid>/status`), in MiB.
pub fn peak_rss_mib(pid: u32) -> Result<f64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path)
        .map_err(|e| TestkitError::Start { server: "process", reason: format!("reading {path}: {e}") })?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| TestkitError::Start { server: "process", reason: format!("no VmHWM in {path}") })?;
    Ok(kb / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_kill_stall_and_restart_a_real_process() -> Result<()> {
        let dir = tempfile::tempdir().map_err(io_err("tempdir"))?;
        let log = dir.path().join("sleep.log");
        let spec = ProcessSpec::new("sh", &["-c".as_ref(), "echo started; exec sleep 30".as_ref()], &log);
        let mut p = Process::start(spec)?;
        crate::wait_until("the first line", Duration::from_secs(10), || {
            p.log_tail(1).contains("started").then_some(())
        })?;
        p.signal(libc::SIGSTOP)?;
        // A stalled process still stops: stop() continues it first.
        assert_eq!(p.stop(Duration::from_secs(10))?, None, "sleep dies of SIGTERM");
        assert!(!p.running());
        p.restart()?;
        assert!(p.running());
        p.kill9()?;
        assert!(!p.running());
        let mut failing = Process::start(ProcessSpec::new("sh", &["-c".as_ref(), "exit 3".as_ref()], &log))?;
        assert_eq!(failing.wait_exit(Duration::from_secs(10))?, Some(3));
        failing.restart()?;
        let status = crate::wait_until("the exit", Duration::from_secs(10), || failing.exited())?;
        assert_eq!(status.code(), Some(3));
        assert!(failing.exited().is_none() && !failing.running(), "reaped once");
        assert!(p.signal(libc::SIGTERM).is_err(), "no signal to a process that is gone");
        Ok(())
    }
}
