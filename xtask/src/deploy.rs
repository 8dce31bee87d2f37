//! `cargo xtask deploy`: builds release binaries, validates the example configurations with the
//! binaries' own `check`, and stages a bundle for hosts or images in `target/zonal-deploy/`.
//!
//! ```text
//!  cargo build --release ──> zonal-agent, zonal-transporter ──check──> deploy/*/*.example.toml
//!  target/zonal-deploy/{bin,systemd,config,kubernetes,grafana}/ + SHA256SUMS
//! ```

use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};

pub fn run() -> anyhow::Result<()> {
    crate::run(
        "cargo build --release -p zonal-agent -p zonal-transporter",
        crate::cargo().args(["build", "--release", "-p", "zonal-agent", "-p", "zonal-transporter"]),
    )?;
    let root = crate::target_dir().join("..");
    let release = crate::target_dir().join("release");
    let out = crate::target_dir().join("zonal-deploy");
    if out.exists() {
        std::fs::remove_dir_all(&out).with_context(|| format!("clearing {}", out.display()))?;
    }
    let copy = |from: &Path, to: &str| -> anyhow::Result<()> {
        let dest = out.join(to);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::copy(from, &dest).with_context(|| format!("copying {} to {}", from.display(), dest.display()))?;
        Ok(())
    };
    for (bin, example) in [
        ("zonal-agent", "deploy/agent/agent.example.toml"),
        ("zonal-transporter", "deploy/transporter/transporter.example.toml"),
    ] {
        let path = release.join(bin);
        let check = Command::new(&path)
            .args(["check", "-c"])
            .arg(root.join(example))
            .output()
            .with_context(|| format!("running {bin} check"))?;
        if !check.status.success() {
            bail!("{example} does not pass `{bin} check`: {}", String::from_utf8_lossy(&check.stderr));
        }
        eprintln!("==> {example}: valid");
        copy(&path, &format!("bin/{bin}"))?;
    }
    for (from, to) in [
        ("deploy/agent/agent.example.toml", "config/agent.toml"),
        ("deploy/transporter/transporter.example.toml", "config/transporter.toml"),
        ("deploy/agent/zonal-agent.service", "systemd/zonal-agent.service"),
        ("deploy/transporter/zonal-transporter.service", "systemd/zonal-transporter.service"),
        ("deploy/zonal-sysusers.conf", "systemd/zonal-sysusers.conf"),
        ("deploy/grafana/zonal-dashboard.json", "grafana/zonal-dashboard.json"),
    ] {
        copy(&root.join(from), to)?;
    }
    for overlay in crate::k8s::OVERLAYS {
        let text = crate::k8s::check(overlay).context("rendering the Kubernetes manifests")?;
        let dest = out.join(format!("kubernetes/{overlay}.yaml"));
        std::fs::create_dir_all(out.join("kubernetes"))?;
        std::fs::write(&dest, text).with_context(|| format!("writing {}", dest.display()))?;
    }
    let sums = Command::new("sh")
        .current_dir(&out)
        .args(["-c", "find . -type f ! -name SHA256SUMS | sort | xargs sha256sum > SHA256SUMS"])
        .status()
        .context("writing SHA256SUMS")?;
    if !sums.success() {
        bail!("sha256sum failed");
    }
    println!("bundle staged in {}", out.display());
    println!(
        "hosts: copy bin/* to /usr/local/bin, config/* to /etc/zonal, systemd/* to /etc/systemd/system, then `systemctl enable --now zonal-agent`"
    );
    println!(
        "kubernetes: `cargo xtask deploy image`, push it, copy deploy/kubernetes/overlays/<plain|eks> and edit it, `kubectl apply -k` it (or apply kubernetes/<overlay>.yaml); import grafana/zonal-dashboard.json"
    );
    Ok(())
}

/// Builds the container image with docker or podman, whichever is installed.
pub fn image(tag: &str) -> anyhow::Result<()> {
    let Some(tool) = ["docker", "podman"].into_iter().find(|t| crate::tools::present(t)) else {
        bail!("neither docker nor podman is installed; the Dockerfile at the repository root builds the image");
    };
    let root = crate::target_dir().join("..");
    crate::run(&format!("{tool} build -t {tag}"), Command::new(tool).current_dir(&root).args(["build", "-t", tag, "."]))
}
