//! What the pods read and need: each program's configuration files as its container sees them
//! (the ConfigMaps and Secrets mounted where its `-c` arguments point), and the memory and disk
//! resources the documented formulas give for that configuration.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail, ensure};
use serde_yaml::Value;
use shell::ProgramConfig as _;

use super::{find, name_of, str_of, workload};

const MIB: f64 = 1_048_576.0;

/// A container's configuration files (its `-c` arguments) read from the ConfigMaps mounted at
/// their folders, written under `dir` as the pod would see them; paths into mounted Secrets (a
/// password file) point at their keys written under `dir` too.
pub(crate) fn config_files(docs: &[Value], workload: &Value, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    use base64::Engine as _;
    let ns = str_of(workload, &["metadata", "namespace"]);
    let pod = &workload["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let volume_of = |mount: &Value| {
        pod["volumes"]
            .as_sequence()
            .into_iter()
            .flatten()
            .find(|v| v["name"] == mount["name"])
            .cloned()
            .unwrap_or_default()
    };
    let mounts: Vec<&Value> = container["volumeMounts"].as_sequence().into_iter().flatten().collect();
    let mut secret_dirs = Vec::new();
    for m in &mounts {
        let Some(secret) = find(docs, "Secret", ns, str_of(&volume_of(m), &["secret", "secretName"])) else { continue };
        let into = dir.join(format!("secret-{}", secret_dirs.len()));
        std::fs::create_dir_all(&into)?;
        for (k, v) in secret["data"].as_mapping().into_iter().flatten() {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(v.as_str().unwrap_or_default())
                .with_context(|| format!("{}: data is not base64", name_of(secret)))?;
            std::fs::write(into.join(k.as_str().unwrap_or_default()), bytes)?;
        }
        secret_dirs.push((format!("{}/", str_of(m, &["mountPath"])), format!("{}/", into.display())));
    }
    let command: Vec<&str> =
        container["command"].as_sequence().into_iter().flatten().filter_map(Value::as_str).collect();
    let mut files = Vec::new();
    for pair in command.windows(2).filter(|w| w[0] == "-c") {
        let path = Path::new(pair[1]);
        let (folder, key) = (path.parent().unwrap_or(Path::new("/")), path.file_name().unwrap_or_default());
        let mount = mounts
            .iter()
            .find(|m| Path::new(str_of(m, &["mountPath"])) == folder)
            .with_context(|| format!("{}: nothing is mounted at {}", name_of(workload), folder.display()))?;
        let map = find(docs, "ConfigMap", ns, str_of(&volume_of(mount), &["configMap", "name"]))
            .with_context(|| format!("{}: {} is not a ConfigMap", name_of(workload), folder.display()))?;
        let mut text = map["data"][key.to_string_lossy().as_ref()]
            .as_str()
            .with_context(|| format!("{}: has no {}", name_of(map), key.to_string_lossy()))?
            .to_owned();
        for (mounted, written) in &secret_dirs {
            text = text.replace(mounted.as_str(), written);
        }
        let dest = dir.join(format!("{}-{}", files.len(), key.to_string_lossy()));
        std::fs::write(&dest, text).with_context(|| format!("writing {}", dest.display()))?;
        files.push(dest);
    }
    ensure!(!files.is_empty(), "{}: its command has no -c FILE", name_of(workload));
    Ok(files)
}

/// A quantity in bytes (`388Mi`, `10Gi`, `1073741824`).
pub fn bytes_of(q: &str) -> anyhow::Result<f64> {
    let (digits, unit) = q.split_at(q.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(q.len()));
    let n: f64 = digits.parse().with_context(|| format!("quantity {q:?}"))?;
    let scale = match unit {
        "" => 1.0,
        "Ki" => 1024.0,
        "Mi" => MIB,
        "Gi" => MIB * 1024.0,
        other => bail!("quantity {q:?}: unit {other:?} is not used here"),
    };
    Ok(n * scale)
}

/// The agent's memory bound (docs/operations.md): 24 MiB + 1.5 x in flight + 2 x unsent.
pub fn agent_memory_bytes(c: &zonal_agent::config::AgentConfig) -> f64 {
    24.0 * MIB + 1.5 * c.max_in_flight_bytes as f64 + 2.0 * c.max_unsent_bytes as f64
}

/// The transporter's memory bound (docs/operations.md): 80 MiB + brokers x 8 MiB + partitions x
/// (queued + fetch + 0.2 MiB) + rolls x 24 MiB + uploads x 1 MiB.
pub fn transporter_memory_bytes(
    c: &zonal_transporter::config::TransporterConfig,
    brokers: f64,
    partitions: f64,
) -> f64 {
    let option = |k: &str, default: f64| c.kafka.options.get(k).and_then(|v| v.parse().ok()).unwrap_or(default);
    let per_partition = option("queued.max.messages.kbytes", 64.0) * 1024.0
        + option("max.partition.fetch.bytes", 262_144.0)
        + 0.2 * MIB;
    80.0 * MIB
        + brokers * 8.0 * MIB
        + partitions * per_partition
        + c.worker.max_concurrent_rolls as f64 * 24.0 * MIB
        + c.worker.max_concurrent_uploads as f64 * MIB
}

/// Requests equal to the formula and limits half as much again, in whole MiB.
fn memory_matches(w: &Value, bound: f64) -> anyhow::Result<()> {
    let res = &w["spec"]["template"]["spec"]["containers"][0]["resources"];
    let want_request = (bound / MIB).ceil();
    let want_limit = (bound * 1.5 / MIB).ceil();
    let got =
        (bytes_of(str_of(res, &["requests", "memory"]))? / MIB, bytes_of(str_of(res, &["limits", "memory"]))? / MIB);
    ensure!(
        got == (want_request, want_limit),
        "{}: memory request/limit {}Mi/{}Mi, the formula for its configuration says {want_request}Mi/{want_limit}Mi",
        name_of(w),
        got.0,
        got.1
    );
    Ok(())
}

/// Both programs read their configuration from the rendered ConfigMaps, and the pods' memory
/// and disk are what the formulas say for it.
pub fn configs_and_resources(docs: &[Value]) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let agent = workload(docs, "DaemonSet")?;
    let files = config_files(docs, agent, dir.path())?;
    let paths: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    let a = zonal_agent::config::AgentConfig::load_files(&paths).context("the agent's ConfigMaps")?;
    memory_matches(agent, agent_memory_bytes(&a))?;

    let sts = workload(docs, "StatefulSet")?;
    let files = config_files(docs, sts, dir.path())?;
    let paths: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    let t = zonal_transporter::config::TransporterConfig::load_files(&paths).context("the transporter's ConfigMaps")?;
    let sizing = |k: &str| -> anyhow::Result<f64> {
        str_of(sts, &["metadata", "annotations", k])
            .parse()
            .with_context(|| format!("{}: annotation {k}", name_of(sts)))
    };
    let bound = transporter_memory_bytes(
        &t,
        sizing("zonal.io/sizing-brokers")?,
        sizing("zonal.io/sizing-partitions-per-worker")?,
    );
    memory_matches(sts, bound)?;
    // Disk: the buffers' budget plus a quarter, as the emptyDir's limit and the pod's request.
    let want = t.worker.max_buffer_bytes as f64 * 1.25;
    let pod = &sts["spec"]["template"]["spec"];
    let buffers = pod["volumes"]
        .as_sequence()
        .into_iter()
        .flatten()
        .find(|v| v["name"] == "buffers")
        .context("no buffers volume")?;
    let res = &pod["containers"][0]["resources"];
    for (what, q) in [
        ("emptyDir.sizeLimit", str_of(buffers, &["emptyDir", "sizeLimit"])),
        ("ephemeral-storage request", str_of(res, &["requests", "ephemeral-storage"])),
    ] {
        ensure!(bytes_of(q)? == want, "{}: {what} {q}, worker.max-buffer-bytes x 1.25 is {want} bytes", name_of(sts));
    }
    Ok(())
}
