//! `cargo xtask`: the developer commands. `test` installs what is missing and runs every check
//! and test; `demo` runs Zonal on the local multi-zone world and reports cross-zone traffic.

mod bench;
mod chaos;
mod demo;
mod deploy;
mod docs_check;
mod fleet;
mod k8s;
mod size_check;
mod tools;

use std::process::Command;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Zonal developer commands")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install missing system packages, then run fmt, clippy, every test and a short chaos run.
    Test {
        /// Skip `cargo fmt --check` and clippy (tests only).
        #[arg(long)]
        no_lint: bool,
        /// Skip the short chaos run (also skipped when a test filter is given).
        #[arg(long)]
        no_chaos: bool,
        /// Extra arguments passed to the test runner (e.g. a test name filter).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Run the whole pipeline twice (zone-unaware, zone-aware) on the testkit world and report
    /// cross-zone traffic, loss and duplicates.
    Demo(demo::DemoArgs),
    /// The whole pipeline under a seeded schedule of faults, then drained and checked: nothing
    /// lost, nothing duplicated in S3. Exit status 1 when anything was.
    Chaos(chaos::ChaosArgs),
    /// Benchmarks as ratios against a reference run in the same invocation (kcat).
    Bench(bench::BenchArgs),
    /// Build release binaries, validate example configs, stage a deployable bundle; or render
    /// the Kubernetes manifests, or build the container image.
    Deploy {
        #[command(subcommand)]
        target: Option<DeployTarget>,
    },
}

#[derive(Subcommand)]
enum DeployTarget {
    /// Render the kustomize overlays of deploy/kubernetes/ into target/zonal-deploy/kubernetes/
    /// and check them (references, configurations, resources, the Kubernetes schema).
    Kubernetes {
        /// One overlay: `plain`, `eks`, or the path of your own; every shipped one when absent.
        #[arg(long)]
        overlay: Option<String>,
    },
    /// Build the container image (Dockerfile) with docker or podman.
    Image {
        /// Image name and tag.
        #[arg(long, default_value = "ghcr.io/zonal/zonal:0.1.0")]
        tag: String,
    },
}

fn main() -> std::process::ExitCode {
    match real_main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn real_main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Cmd::Test { no_lint, no_chaos, args } => {
            test(no_lint, &args)?;
            if no_chaos || !args.is_empty() {
                return Ok(());
            }
            // Every fault kind once, on a fixed seed: the reliability tests' proof under many
            // faults in one run (`cargo xtask chaos --faults 100` is the long one).
            tools::ensure_installed(&tools::CHAOS_PACKAGES)?;
            eprintln!("==> cargo xtask chaos --seed 1 --faults {}", chaos::schedule::Kind::ALL.len());
            chaos::run(&chaos::ChaosArgs::short_run())
        }
        Cmd::Demo(args) => {
            tools::ensure_installed(&tools::DEMO_PACKAGES)?;
            demo::run(&args)
        }
        Cmd::Chaos(args) => {
            tools::ensure_installed(&tools::CHAOS_PACKAGES)?;
            chaos::run(&args)
        }
        // The world (the S3 server, the status polling) runs inside this process and shares the
        // two cores with what is measured: a debug build of it would charge its own slowness to
        // Zonal's figures, so the benchmarks always run in an optimised xtask.
        Cmd::Bench(_) if cfg!(debug_assertions) => run(
            "cargo run --release -p xtask -- bench",
            cargo().args(["run", "--release", "-p", "xtask", "--"]).args(std::env::args_os().skip(1)),
        ),
        Cmd::Bench(args) => bench::run(&args),
        Cmd::Deploy { target: None } => deploy::run(),
        Cmd::Deploy { target: Some(DeployTarget::Kubernetes { overlay }) } => k8s::run(overlay.as_deref()),
        Cmd::Deploy { target: Some(DeployTarget::Image { tag }) } => deploy::image(&tag),
    }
}

/// The workspace's target directory.
fn target_dir() -> std::path::PathBuf {
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    dir.canonicalize().unwrap_or(dir)
}

/// A cargo command without the variables `cargo run` set for xtask itself: build scripts that
/// watch them (ring's watches `CARGO_PKG_NAME` and `CARGO_MANIFEST_DIR`) would otherwise see
/// them change between a nested build and a direct one and rebuild everything above them.
fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()));
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("CARGO_PKG_")
            || key.starts_with("CARGO_MANIFEST_")
            || ["CARGO_CRATE_NAME", "CARGO_BIN_NAME", "CARGO_PRIMARY_PACKAGE", "OUT_DIR"].contains(&key.as_ref())
        {
            cmd.env_remove(key.as_ref());
        }
    }
    cmd
}

fn run(step: &str, cmd: &mut Command) -> anyhow::Result<()> {
    eprintln!("==> {step}");
    let status = cmd.status().with_context(|| format!("starting {step}"))?;
    if !status.success() {
        bail!("{step} failed ({status})");
    }
    Ok(())
}

fn test(no_lint: bool, args: &[String]) -> anyhow::Result<()> {
    tools::ensure_installed(&tools::TEST_PACKAGES)?;
    tools::ensure_pip(&tools::TEST_PIP)?;
    if !no_lint {
        run("cargo fmt --check", cargo().args(["fmt", "--all", "--check"]))?;
        run(
            "cargo clippy",
            cargo().args(["clippy", "--workspace", "--all-targets", "--locked", "--", "-D", "warnings"]),
        )?;
    }
    if tools::has_nextest() {
        // nextest runs every test in its own process: mock clusters and servers of one test
        // never share a process with another's.
        run(
            "cargo nextest run",
            cargo().args(["nextest", "run", "--workspace", "--locked", "--no-fail-fast"]).args(args),
        )?;
        // nextest does not run doctests.
        run("cargo test --doc", cargo().args(["test", "--workspace", "--doc", "--locked"]))
    } else {
        run("cargo test", cargo().args(["test", "--workspace", "--locked", "--no-fail-fast"]).args(args))
    }
}
