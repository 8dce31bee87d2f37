//! Real etcd (Debian's `etcd` binary) on free loopback ports with a temporary data directory,
//! killed when dropped, including during a panic's unwinding. It can be paused (SIGSTOP, a
//! network partition as clients see it) and killed and restarted on the same ports and data.

use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::tls::{TlsFiles, make_certs};
use crate::{Result, TestkitError, io_err, wait_until};

/// A running etcd server.
pub struct Etcd {
    child: Child,
    client_port: u16,
    _dir: tempfile::TempDir,
    log: PathBuf,
    tls: Option<TlsFiles>,
    /// The command line, for restarts.
    args: Vec<String>,
}

impl std::fmt::Debug for Etcd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Etcd").field("endpoint", &self.endpoint()).finish()
    }
}

/// The etcd binary: `ZONAL_ETCD_BIN`, else `etcd` on PATH.
pub fn etcd_binary() -> String {
    std::env::var("ZONAL_ETCD_BIN").unwrap_or_else(|_| "etcd".to_owned())
}

impl Etcd {
    /// Starts etcd and waits until it accepts connections.
    pub fn start() -> Result<Etcd> {
        Self::start_with(false)
    }

    /// Starts etcd serving clients over TLS only, with certificates from a throwaway CA
    /// (see [`Etcd::tls_files`]).
    pub fn start_tls() -> Result<Etcd> {
        Self::start_with(true)
    }

    fn start_with(tls: bool) -> Result<Etcd> {
        let mut last = None;
        for _ in 0..3 {
            match Self::try_start(tls) {
                Ok(e) => return Ok(e),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or(TestkitError::Start { server: "etcd", reason: "no attempt made".into() }))
    }

    fn try_start(tls: bool) -> Result<Etcd> {
        let dir = tempfile::Builder::new().prefix("zonal-etcd-").tempdir().map_err(io_err("create etcd temp dir"))?;
        let files = if tls { Some(make_certs(dir.path())?) } else { None };
        let client_port = crate::net::free_port()?;
        let peer_port = crate::net::free_port()?;
        let scheme = if tls { "https" } else { "http" };
        let client = format!("{scheme}://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let log = dir.path().join("etcd.log");
        let mut args = vec![
            "--name=testkit".to_owned(),
            format!("--data-dir={}", dir.path().join("data").display()),
            format!("--listen-client-urls={client}"),
            format!("--advertise-client-urls={client}"),
            format!("--listen-peer-urls={peer}"),
            format!("--initial-advertise-peer-urls={peer}"),
            format!("--initial-cluster=testkit={peer}"),
            "--initial-cluster-state=new".to_owned(),
            "--logger=zap".to_owned(),
        ];
        args.extend(
            files
                .iter()
                .flat_map(|f| [format!("--cert-file={}", f.cert.display()), format!("--key-file={}", f.key.display())]),
        );
        let child = Self::spawn(&args, &log)?;
        let mut etcd = Etcd { child, client_port, _dir: dir, log, tls: files, args };
        etcd.wait_serving()?;
        Ok(etcd)
    }

    /// Starts the etcd process, its output appended to `log`.
    fn spawn(args: &[String], log: &std::path::Path) -> Result<Child> {
        let log_file =
            std::fs::OpenOptions::new().create(true).append(true).open(log).map_err(io_err("open etcd log"))?;
        let log_err = log_file.try_clone().map_err(io_err("clone etcd log"))?;
        let mut cmd = Command::new(etcd_binary());
        cmd.args(args).stdin(Stdio::null()).stdout(log_file).stderr(log_err);
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent. It asks the
        // kernel to kill etcd if the spawning thread dies without running our Drop (for
        // example when a test runner kills the test process).
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        cmd.spawn().map_err(|e| TestkitError::Start {
            server: "etcd",
            reason: format!(
                "spawning {:?} failed ({e}); install Debian's etcd-server or set ZONAL_ETCD_BIN",
                etcd_binary()
            ),
        })
    }

    /// Waits until the client port accepts connections, or the process exits.
    fn wait_serving(&mut self) -> Result<()> {
        let port = self.client_port;
        let child = &mut self.child;
        let ready = wait_until("etcd to accept connections", Duration::from_secs(20), || {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(Err(status));
            }
            TcpStream::connect(("127.0.0.1", port)).ok().map(|_| Ok(()))
        });
        match ready {
            Ok(Ok(())) => Ok(()),
            Ok(Err(status)) => Err(TestkitError::Start {
                server: "etcd",
                reason: format!("exited with {status}; log: {}", self.log_tail()),
            }),
            Err(e) => Err(TestkitError::Start { server: "etcd", reason: format!("{e}; log: {}", self.log_tail()) }),
        }
    }

    /// Kills etcd (SIGKILL, as a crashed host) and starts it again on the same ports and data
    /// directory; returns once it accepts connections. Leases it granted survive in its data
    /// with their remaining time, as after a real restart.
    pub fn restart(&mut self) -> Result<()> {
        let _ = self.signal(libc::SIGCONT);
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = Self::spawn(&self.args, &self.log)?;
        self.wait_serving()
    }

    /// The client URL, `http://127.0.0.1:PORT` (`https://` with TLS).
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    /// The certificates, when started with TLS.
    pub fn tls_files(&self) -> Option<&TlsFiles> {
        self.tls.as_ref()
    }

    /// The last lines of etcd's log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(5)..].join("\n")
    }

    /// Stops the server (SIGSTOP): connections hang as they would during a network partition.
    pub fn pause(&self) -> Result<()> {
        self.signal(libc::SIGSTOP)
    }

    /// Resumes a paused server.
    pub fn resume(&self) -> Result<()> {
        self.signal(libc::SIGCONT)
    }

    fn signal(&self, sig: libc::c_int) -> Result<()> {
        let pid = libc::pid_t::try_from(self.child.id())
            .map_err(|_| TestkitError::Start { server: "etcd", reason: "pid out of range".into() })?;
        // SAFETY: plain kill(2) on our own child's pid.
        if unsafe { libc::kill(pid, sig) } != 0 {
            return Err(io_err(format!("signal {sig} to etcd"))(std::io::Error::last_os_error()));
        }
        Ok(())
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        // SIGCONT first so a paused server can die; kill is SIGKILL.
        let _ = self.signal(libc::SIGCONT);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
