//! Real etcd (Debian's `etcd` binary) on free loopback ports with a temporary data directory
//! (in `/dev/shm` where the machine has it), killed when dropped, including during a panic's
//! unwinding. It can be paused (SIGSTOP, a network partition as clients see it) and killed and
//! restarted on the same ports and data.
//!
//! The process itself is a [`Process`]: it is started, signalled, killed and reaped there, so the
//! testkit controls child processes in one place.
//!
//! ```text
//!  Etcd::start ──ProcessSpec(etcd --listen-client-urls …, log)──> Process ──TCP connect──> ready
//!     pause / resume: SIGSTOP / SIGCONT      restart: kill -9, same spec      drop: kill -9
//! ```

use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use crate::process::{Process, ProcessSpec};
use crate::tls::{TlsFiles, make_certs};
use crate::{Result, TestkitError, io_err, wait_until};

/// How many times a start is tried: the ports are free when chosen but another process could
/// take one before etcd binds it, and a retry on new ports fixes that.
const START_ATTEMPTS: usize = 3;

/// A running etcd server.
pub struct Etcd {
    process: Process,
    client_port: u16,
    tls: Option<TlsFiles>,
    /// The data directory and the log. It is declared after the process so that it is removed
    /// only once the process is gone.
    _dir: tempfile::TempDir,
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

/// Where etcd keeps its data: in memory (`/dev/shm`) where the machine has it, else the temporary
/// folder. The test world runs etcd, Kafka, S3 and the programs on one disk, where every etcd
/// write waited for its fsync behind the buffers' writeback (a batch of 64 transactions took
/// 350 ms instead of 15 during `bench wide-transporter`), unlike a production etcd on disks of its
/// own. fsync guards against the machine losing power, which no test does: a process killed (by
/// `restart`) loses nothing, as its writes are in the kernel's page cache either way.
fn data_dir() -> Result<tempfile::TempDir> {
    let shm = Path::new("/dev/shm");
    let builder = tempfile::Builder::new().prefix("zonal-etcd-").clone();
    match builder.tempdir_in(shm) {
        Ok(dir) => Ok(dir),
        Err(_) => builder.tempdir().map_err(io_err("create etcd temp dir")),
    }
}

fn start_err(reason: String) -> TestkitError {
    TestkitError::Start { server: "etcd", reason }
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
        for _ in 0..START_ATTEMPTS {
            match Self::try_start(tls) {
                Ok(e) => return Ok(e),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| start_err("no attempt made".into())))
    }

    fn try_start(tls: bool) -> Result<Etcd> {
        let dir = data_dir()?;
        let files = if tls { Some(make_certs(dir.path())?) } else { None };
        let client_port = crate::net::free_port()?;
        let peer_port = crate::net::free_port()?;
        let spec = Self::spec(dir.path(), client_port, peer_port, files.as_ref());
        let process = Process::start(spec).map_err(|e| {
            start_err(format!(
                "spawning {:?} failed ({e}); install Debian's etcd-server or set ZONAL_ETCD_BIN",
                etcd_binary()
            ))
        })?;
        let mut etcd = Etcd { process, client_port, tls: files, _dir: dir };
        etcd.wait_serving()?;
        Ok(etcd)
    }

    /// The command line of a single-member cluster with its data and log in `dir`.
    fn spec(dir: &Path, client_port: u16, peer_port: u16, files: Option<&TlsFiles>) -> ProcessSpec {
        let scheme = if files.is_some() { "https" } else { "http" };
        let client = format!("{scheme}://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let mut args = vec![
            "--name=testkit".to_owned(),
            format!("--data-dir={}", dir.join("data").display()),
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
        let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
        ProcessSpec::new(etcd_binary(), &args, dir.join("etcd.log"))
    }

    /// Waits until the client port accepts connections, or the process exits.
    fn wait_serving(&mut self) -> Result<()> {
        let port = self.client_port;
        let process = &mut self.process;
        let ready = wait_until("etcd to accept connections", Duration::from_secs(20), || {
            if let Some(status) = process.exited() {
                return Some(Err(status));
            }
            TcpStream::connect(("127.0.0.1", port)).ok().map(|_| Ok(()))
        });
        match ready {
            Ok(Ok(())) => Ok(()),
            Ok(Err(status)) => Err(start_err(format!("exited with {status}; log: {}", self.log_tail()))),
            Err(e) => Err(start_err(format!("{e}; log: {}", self.log_tail()))),
        }
    }

    /// Kills etcd (SIGKILL, as a crashed host) and starts it again on the same ports and data
    /// directory; returns once it accepts connections. Leases it granted survive in its data
    /// with their remaining time, as after a real restart.
    pub fn restart(&mut self) -> Result<()> {
        // SIGKILL ends a paused (SIGSTOPped) etcd too, so no SIGCONT is needed first.
        self.process.kill9()?;
        self.process.restart()?;
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
        self.process.log_tail(5)
    }

    /// Stops the server (SIGSTOP): connections hang as they would during a network partition.
    pub fn pause(&self) -> Result<()> {
        self.process.signal(libc::SIGSTOP)
    }

    /// Resumes a paused server.
    pub fn resume(&self) -> Result<()> {
        self.process.signal(libc::SIGCONT)
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        // The data directory is removed after this; etcd must be gone before. A paused etcd
        // dies of SIGKILL as well.
        let _ = self.process.kill9();
    }
}
