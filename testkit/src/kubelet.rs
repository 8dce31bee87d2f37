//! A Kubernetes node's container logs laid out as kubelet and containerd leave them, for tests
//! of a log agent: the same folders, names, line format, rotation and compression.
//!
//! ```text
//!  <root>/var/log/pods/<ns>_<pod>_<uid>/<container>/0.log                 the runtime writes CRI lines here
//!                                                  /0.log.<YYYYMMDD-HHMMSS> renamed by kubelet's rotation
//!                                                  /0.log.<…>.gz           rotations older than the newest, gzipped
//!  <root>/var/log/containers/<pod>_<ns>_<container>-<id>.log ──symlink──> …/<container>/0.log
//!
//!  rotate: rename 0.log ──> 0.log.<time>; the runtime keeps writing to the renamed file until
//!          it is asked to reopen (`reopen`), then writes a new 0.log; the rotation before the
//!          newest is gzipped (the plain file removed)
//!  delete_pod: the pod's folder and its links removed (the agent may still hold descriptors)
//! ```
//!
//! Lines are `<RFC 3339 time> <stdout|stderr> <P|F> <message>`; a message over 16 KiB is split
//! into `P` parts and a last `F` part, as containerd splits it.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::{Result, io_err};

/// containerd's split size: a message longer than this is written in parts.
pub const SPLIT: usize = 16 * 1024;

/// A node's log folders under a root.
#[derive(Debug)]
pub struct Node {
    root: PathBuf,
    /// Rotations so far, for unique rotation times.
    rotations: u64,
}

/// One container of a pod, writing its log.
#[derive(Debug)]
pub struct Container {
    /// Namespace.
    pub namespace: String,
    /// Pod name.
    pub pod: String,
    /// Pod uid.
    pub uid: String,
    /// Container name.
    pub name: String,
    /// Container id (64 hex digits, as containerd's).
    pub id: String,
    dir: PathBuf,
    link: PathBuf,
    /// Where the runtime writes: 0.log, or the renamed file until `reopen`.
    out: File,
    /// Rotations of this container, oldest first.
    rotated: Vec<PathBuf>,
}

impl Node {
    /// The layout under `root` (folders created).
    pub fn new(root: &Path) -> Result<Node> {
        for d in ["var/log/pods", "var/log/containers"] {
            std::fs::create_dir_all(root.join(d)).map_err(io_err(format!("creating {d}")))?;
        }
        Ok(Node { root: root.to_owned(), rotations: 0 })
    }

    /// The glob a log agent's DaemonSet tails: every container's symlink.
    pub fn containers_glob(&self) -> String {
        format!("{}/*.log", self.root.join("var/log/containers").display())
    }

    /// `/var/log/pods` of this node.
    pub fn pods_dir(&self) -> PathBuf {
        self.root.join("var/log/pods")
    }

    /// Starts a container: its folder, an empty `0.log` and the symlink to it.
    pub fn start(&self, namespace: &str, pod: &str, name: &str) -> Result<Container> {
        let uid = format!("{:08x}-0000-4000-8000-{:012x}", crc(pod), crc(name));
        let id = format!("{:016x}{:016x}{:016x}{:016x}", crc(namespace), crc(pod), crc(name), crc(&uid));
        let dir = self.pods_dir().join(format!("{namespace}_{pod}_{uid}")).join(name);
        std::fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
        let log = dir.join("0.log");
        let out = OpenOptions::new().create(true).append(true).open(&log).map_err(io_err("creating 0.log"))?;
        let link = self.root.join("var/log/containers").join(format!("{pod}_{namespace}_{name}-{id}.log"));
        std::os::unix::fs::symlink(&log, &link).map_err(io_err(format!("linking {}", link.display())))?;
        Ok(Container {
            namespace: namespace.into(),
            pod: pod.into(),
            uid,
            name: name.into(),
            id,
            dir,
            link,
            out,
            rotated: Vec::new(),
        })
    }

    /// Kubelet's rotation of `c`: `0.log` renamed to `0.log.<time>` (the runtime writes on to
    /// the renamed file until [`Container::reopen`]), and every rotation but the newest gzipped.
    pub fn rotate(&mut self, c: &mut Container) -> Result<PathBuf> {
        self.rotations += 1;
        // Unique, ordered times: 2026-12-07 10:00:00 plus a second per rotation.
        let secs = 36_000 + self.rotations;
        let name = format!("0.log.20261207-{:02}{:02}{:02}", secs / 3600, secs / 60 % 60, secs % 60);
        let rotated = c.dir.join(name);
        std::fs::rename(c.dir.join("0.log"), &rotated).map_err(io_err("rotating 0.log"))?;
        for older in &mut c.rotated {
            if older.extension().is_none_or(|e| e != "gz") {
                *older = gzip(older)?;
            }
        }
        c.rotated.push(rotated.clone());
        Ok(rotated)
    }

    /// Removes a pod's folder and its containers' links, as kubelet does when the pod goes.
    pub fn delete_pod(&self, c: Container) -> Result<()> {
        let _ = std::fs::remove_file(&c.link);
        let pod_dir = c.dir.parent().map(Path::to_path_buf).unwrap_or_else(|| c.dir.clone());
        std::fs::remove_dir_all(&pod_dir).map_err(io_err(format!("removing {}", pod_dir.display())))
    }
}

impl Container {
    /// Writes one message as the runtime does: CRI lines, in parts of at most [`SPLIT`] bytes.
    pub fn write(&mut self, stream: &str, message: &[u8]) -> Result<()> {
        let mut buf = Vec::with_capacity(message.len() + 64);
        let time = "2026-12-07T10:00:00.123456789Z";
        let mut parts = message.chunks(SPLIT).peekable();
        if parts.peek().is_none() {
            buf.extend_from_slice(format!("{time} {stream} F \n").as_bytes());
        }
        while let Some(part) = parts.next() {
            let tag = if parts.peek().is_some() { "P" } else { "F" };
            buf.extend_from_slice(format!("{time} {stream} {tag} ").as_bytes());
            buf.extend_from_slice(part);
            buf.push(b'\n');
        }
        self.out.write_all(&buf).map_err(io_err("writing a container log"))
    }

    /// The runtime reopens its log after a rotation: it writes a new `0.log` from now on.
    pub fn reopen(&mut self) -> Result<()> {
        let log = self.dir.join("0.log");
        self.out = OpenOptions::new().create(true).append(true).open(&log).map_err(io_err("reopening 0.log"))?;
        Ok(())
    }

    /// The symlink in `/var/log/containers`.
    pub fn link(&self) -> &Path {
        &self.link
    }

    /// The container's folder under `/var/log/pods`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Gzips `path` to `path.gz` and removes it, as kubelet compresses old rotations.
fn gzip(path: &Path) -> Result<PathBuf> {
    let mut gz = path.as_os_str().to_owned();
    gz.push(".gz");
    let gz = PathBuf::from(gz);
    let data = std::fs::read(path).map_err(io_err(format!("reading {}", path.display())))?;
    let file = File::create(&gz).map_err(io_err(format!("creating {}", gz.display())))?;
    let mut enc = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
    enc.write_all(&data).and_then(|()| enc.finish().map(drop)).map_err(io_err("compressing a rotation"))?;
    std::fs::remove_file(path).map_err(io_err(format!("removing {}", path.display())))?;
    Ok(gz)
}

/// A short stable number from a name, for generated uids and ids.
fn crc(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}
