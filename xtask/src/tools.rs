//! Finding and installing the system tools Zonal's tests and demo need, with a clear message
//! when they cannot be installed automatically.

use std::process::{Command, Stdio};

use anyhow::bail;

/// A tool on PATH and the Debian package that provides it.
#[derive(Debug, Clone, Copy)]
pub struct Package {
    /// A binary the package installs.
    pub binary: &'static str,
    /// The Debian package.
    pub debian: &'static str,
}

/// What `cargo xtask test` needs: etcd for the transporter's coordination tests, protoc for
/// etcd-client's build, OpenSSL's headers and pkg-config for librdkafka's TLS build, kcat as the
/// reference client, logrotate for rotation tests. (The tests' certificates are made in-process.)
pub const TEST_PACKAGES: [Package; 8] = [
    Package { binary: "etcd", debian: "etcd-server" },
    Package { binary: "protoc", debian: "protobuf-compiler" },
    // libprotobuf-dev carries the well-known .proto files protoc includes.
    Package { binary: "/usr/include/google/protobuf/empty.proto", debian: "libprotobuf-dev" },
    Package { binary: "/usr/include/openssl/ssl.h", debian: "libssl-dev" },
    Package { binary: "pkg-config", debian: "pkg-config" },
    Package { binary: "kcat", debian: "kcat" },
    Package { binary: "logrotate", debian: "logrotate" },
    // systemd-analyze rates the units' sandboxing.
    Package { binary: "systemd-analyze", debian: "systemd" },
];

/// A Python package from PyPI, and how to tell it is there.
#[derive(Debug, Clone, Copy)]
pub struct Pip {
    /// A command it puts on PATH, or (`import …`) a module `python3` imports.
    pub present: &'static str,
    /// The pip requirement.
    pub requirement: &'static str,
}

/// Python tools the tests need: the Kubernetes schema validator (it carries the 1.30 schema
/// offline), and pyarrow, the independent reader of the transporter's Parquet objects.
pub const TEST_PIP: [Pip; 2] =
    [Pip { present: "kubernetes-validate", requirement: "kubernetes-validate==1.37.0" }, PYARROW];

/// pyarrow: the demo and the chaos run read Parquet objects back with it.
pub const PYARROW: Pip = Pip { present: "import pyarrow.parquet", requirement: "pyarrow>=17" };

impl Pip {
    fn is_present(&self) -> bool {
        match self.present.strip_prefix("import ") {
            Some(module) => Command::new("python3")
                .args(["-c", &format!("import {module}")])
                .output()
                .is_ok_and(|o| o.status.success()),
            None => present(self.present),
        }
    }
}

/// Installs missing Python packages with pip (user site when not root).
pub fn ensure_pip(tools: &[Pip]) -> anyhow::Result<()> {
    for tool in tools {
        if tool.is_present() {
            continue;
        }
        let requirement = tool.requirement;
        eprintln!("==> pip install {requirement}");
        let pip = |extra: &[&str]| {
            Command::new("python3")
                .args(["-m", "pip", "install", "--quiet"])
                .args(extra)
                .arg(requirement)
                .status()
                .is_ok_and(|s| s.success())
        };
        // Debian's own Python refuses installs outside a virtualenv (PEP 668); the tool is a
        // test dependency, so installing beside the system packages is what is wanted.
        let ok = pip(&[]) || pip(&["--break-system-packages"]);
        if !ok || !tool.is_present() {
            bail!(
                "installing {requirement} failed; run `python3 -m pip install '{requirement}'` and make sure `{}` works",
                tool.present
            );
        }
    }
    Ok(())
}

/// What `cargo xtask demo` needs.
pub const DEMO_PACKAGES: [Package; 5] =
    [TEST_PACKAGES[0], TEST_PACKAGES[1], TEST_PACKAGES[2], TEST_PACKAGES[3], TEST_PACKAGES[4]];

/// What `cargo xtask chaos` needs: the demo's, logrotate, chattr (e2fsprogs) to make a
/// directory unwritable even to root, and iptables to cut a zone off (`zone-isolation`).
pub const CHAOS_PACKAGES: [Package; 8] = [
    TEST_PACKAGES[0],
    TEST_PACKAGES[1],
    TEST_PACKAGES[2],
    TEST_PACKAGES[3],
    TEST_PACKAGES[4],
    TEST_PACKAGES[6],
    Package { binary: "chattr", debian: "e2fsprogs" },
    Package { binary: "iptables", debian: "iptables" },
];

/// Whether a binary is on PATH (or, for an absolute path, the file exists).
pub fn present(binary: &str) -> bool {
    if binary.starts_with('/') {
        return std::path::Path::new(binary).exists();
    }
    Command::new("sh")
        .args(["-c", &format!("command -v {binary}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether `cargo nextest` is installed.
pub fn has_nextest() -> bool {
    Command::new("cargo")
        .args(["nextest", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Installs every missing package with apt-get (directly as root, else through sudo), or
/// fails naming exactly what to install.
pub fn ensure_installed(packages: &[Package]) -> anyhow::Result<()> {
    let missing: Vec<&str> = packages.iter().filter(|p| !present(p.binary)).map(|p| p.debian).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let list = missing.join(" ");
    let apt = present("apt-get");
    let prefix: Option<Vec<&str>> = if !apt {
        None
    } else if is_root() {
        Some(vec![])
    } else if present("sudo") {
        Some(vec!["sudo", "-n"])
    } else {
        None
    };
    let Some(prefix) = prefix else {
        bail!(
            "missing system packages: {list}. Install them (Debian/Ubuntu: `sudo apt-get install -y {list}`) and run again"
        );
    };
    eprintln!("==> installing {list}");
    let sh = |args: &[&str]| {
        let mut cmd = Command::new(prefix.first().copied().unwrap_or(args[0]));
        cmd.args(prefix.iter().skip(1)).args(if prefix.is_empty() { &args[1..] } else { args });
        cmd.env("DEBIAN_FRONTEND", "noninteractive").status().is_ok_and(|s| s.success())
    };
    let mut install = vec!["apt-get", "install", "-y", "-q", "--no-install-recommends"];
    install.extend(&missing);
    let installed = sh(&install) || (sh(&["apt-get", "update", "-q"]) && sh(&install));
    if !installed {
        bail!(
            "installing {list} with apt-get failed. Install them by hand (`sudo apt-get install -y {list}`) and run again"
        );
    }
    let still: Vec<&str> = packages.iter().filter(|p| !present(p.binary)).map(|p| p.debian).collect();
    if !still.is_empty() {
        bail!("after apt-get, still missing: {}", still.join(" "));
    }
    Ok(())
}
