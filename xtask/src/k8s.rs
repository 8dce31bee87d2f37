//! `cargo xtask deploy kubernetes`: renders the manifests in `deploy/k8s/` with their parameters
//! and checks them: every placeholder resolved, every referenced object (namespace, service
//! account, secret, config map, priority class, cluster role) present, and, in the test suite,
//! the Kubernetes 1.30 schema (`kubernetes-validate --strict`).
//!
//! ```text
//!  deploy/k8s/values.toml (+ --values FILE) ──┐
//!  deploy/k8s/*.yaml with ${name} ────────────┴─ render ──> target/zonal-deploy/k8s/*.yaml
//!                                                  └─ cross_references ─ kubernetes-validate
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// The Kubernetes version the manifests are validated against.
pub const KUBERNETES_VERSION: &str = "1.30.0";

/// The sources and their default parameters.
pub fn source_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/k8s")
}

/// Parameters: `values.toml`, then `overrides` on top. Every value must be a string.
pub fn values(overrides: Option<&Path>) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let defaults = source_dir().join("values.toml");
    for file in std::iter::once(defaults.as_path()).chain(overrides) {
        let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        let table: toml::Table = toml::from_str(&text).with_context(|| format!("parsing {}", file.display()))?;
        for (k, v) in table {
            let v = v.as_str().with_context(|| format!("{}: {k} must be a string", file.display()))?;
            out.insert(k, v.to_owned());
        }
    }
    Ok(out)
}

/// `${name}` replaced by its value; a placeholder without a value is an error naming it.
pub fn substitute(text: &str, values: &BTreeMap<String, String>, file: &str) -> anyhow::Result<String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').with_context(|| format!("{file}: unterminated ${{ placeholder"))?;
        let name = &after[..end];
        let value = values.get(name).with_context(|| format!("{file}: no value for ${{{name}}}"))?;
        out.push_str(value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Renders every source manifest into `out`, returning the files written.
pub fn render(overrides: Option<&Path>, out: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let values = values(overrides)?;
    let mut sources: Vec<PathBuf> = std::fs::read_dir(source_dir())
        .context("listing deploy/k8s")?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    sources.sort();
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut written = Vec::new();
    for src in sources {
        let name = src.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let text = std::fs::read_to_string(&src).with_context(|| format!("reading {}", src.display()))?;
        let rendered = substitute(&text, &values, &name)?;
        let dest = out.join(&name);
        std::fs::write(&dest, rendered).with_context(|| format!("writing {}", dest.display()))?;
        written.push(dest);
    }
    cross_references(&written)?;
    Ok(written)
}

/// One object's identity.
type Id = (String, String, String); // (kind, namespace, name)

/// Checks that every object the manifests refer to is among them.
pub fn cross_references(files: &[PathBuf]) -> anyhow::Result<()> {
    let mut objects: BTreeSet<Id> = BTreeSet::new();
    let mut docs = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let v: serde_yaml::Value =
                serde::Deserialize::deserialize(doc).with_context(|| format!("parsing {}", f.display()))?;
            if v.is_null() {
                continue;
            }
            let kind = v["kind"].as_str().unwrap_or_default().to_owned();
            let ns = v["metadata"]["namespace"].as_str().unwrap_or_default().to_owned();
            let name = v["metadata"]["name"].as_str().unwrap_or_default().to_owned();
            objects.insert((kind, ns, name));
            docs.push((f.clone(), v));
        }
    }
    let need = |kind: &str, ns: &str, name: &str, from: &str| -> anyhow::Result<()> {
        if objects.contains(&(kind.to_owned(), ns.to_owned(), name.to_owned())) {
            Ok(())
        } else {
            bail!("{from} refers to {kind} {ns}/{name}, which no manifest defines")
        }
    };
    for (file, v) in &docs {
        let kind = v["kind"].as_str().unwrap_or_default();
        let ns = v["metadata"]["namespace"].as_str().unwrap_or_default();
        let from = format!("{} {kind} {}", file.display(), v["metadata"]["name"].as_str().unwrap_or_default());
        if !ns.is_empty() {
            need("Namespace", "", ns, &from)?;
        }
        let pod = &v["spec"]["template"]["spec"];
        if !pod.is_null() {
            if let Some(sa) = pod["serviceAccountName"].as_str() {
                need("ServiceAccount", ns, sa, &from)?;
            }
            if let Some(pc) = pod["priorityClassName"].as_str() {
                need("PriorityClass", "", pc, &from)?;
            }
            for vol in pod["volumes"].as_sequence().into_iter().flatten() {
                if let Some(s) = vol["secret"]["secretName"].as_str() {
                    need("Secret", ns, s, &from)?;
                }
                if let Some(c) = vol["configMap"]["name"].as_str() {
                    need("ConfigMap", ns, c, &from)?;
                }
            }
            let selector = &v["spec"]["selector"]["matchLabels"];
            let labels = &v["spec"]["template"]["metadata"]["labels"];
            for (k, want) in selector.as_mapping().into_iter().flatten() {
                if &labels[k] != want {
                    bail!("{from}: the selector {k:?} does not match the pod template's labels");
                }
            }
        }
        if let Some(svc) = v["spec"]["serviceName"].as_str() {
            need("Service", ns, svc, &from)?;
        }
        if kind == "ClusterRoleBinding" || kind == "RoleBinding" {
            let role = &v["roleRef"];
            need(role["kind"].as_str().unwrap_or_default(), "", role["name"].as_str().unwrap_or_default(), &from)?;
            for s in v["subjects"].as_sequence().into_iter().flatten() {
                let sns = s["namespace"].as_str().unwrap_or(ns);
                need("ServiceAccount", sns, s["name"].as_str().unwrap_or_default(), &from)?;
            }
        }
    }
    Ok(())
}

/// Validates rendered manifests against the Kubernetes schema with `kubernetes-validate`.
pub fn validate_schema(files: &[PathBuf]) -> anyhow::Result<()> {
    let out = Command::new("kubernetes-validate")
        .args(["--strict", "--quiet", "-k", KUBERNETES_VERSION])
        .args(files)
        .output()
        .context("running kubernetes-validate (pip install kubernetes-validate)")?;
    if !out.status.success() {
        bail!(
            "kubernetes-validate {KUBERNETES_VERSION} refused the manifests:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// `cargo xtask deploy kubernetes`.
pub fn run(overrides: Option<&Path>) -> anyhow::Result<()> {
    let out = crate::target_dir().join("zonal-deploy/k8s");
    let files = render(overrides, &out)?;
    for f in &files {
        eprintln!("==> {}", f.display());
    }
    if crate::tools::present("kubernetes-validate") {
        validate_schema(&files)?;
        eprintln!("==> valid against the Kubernetes {KUBERNETES_VERSION} schema");
    } else {
        eprintln!("==> kubernetes-validate not installed (pip install kubernetes-validate); schema not checked");
    }
    println!("apply with: kubectl apply -f {}", out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde::Deserialize as _;

    use super::*;

    #[test]
    fn placeholders_must_all_resolve() {
        let values = BTreeMap::from([("a".to_owned(), "1".to_owned())]);
        assert_eq!(substitute("x ${a} y", &values, "f").expect("resolves"), "x 1 y");
        let e = substitute("x ${b}", &values, "f.yaml").expect_err("unknown");
        assert!(e.to_string().contains("${b}") && e.to_string().contains("f.yaml"), "{e}");
    }

    #[test]
    fn rendered_manifests_are_complete_and_valid_for_kubernetes_1_30() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = render(None, dir.path()).expect("renders with cross-references intact");
        assert!(files.len() >= 5, "{files:?}");
        let all: String = files.iter().map(|f| std::fs::read_to_string(f).expect("read")).collect();
        for kind in ["Namespace", "ServiceAccount", "ClusterRole", "DaemonSet", "StatefulSet", "PodDisruptionBudget"] {
            assert!(all.contains(&format!("kind: {kind}")), "no {kind}");
        }
        validate_schema(&files).expect("schema");
        // The agent's configuration in its ConfigMap is one the agent reads (an unknown or
        // misspelt key is an error there).
        let agent = files.iter().find(|f| f.ends_with("30-agent.yaml")).expect("the agent's manifest");
        let text = std::fs::read_to_string(agent).expect("read");
        let toml_text = serde_yaml::Deserializer::from_str(&text)
            .filter_map(|d| serde_yaml::Value::deserialize(d).ok())
            .find_map(|v| v["data"]["agent.toml"].as_str().map(str::to_owned))
            .expect("a ConfigMap with agent.toml");
        let cfg: zonal_agent::config::AgentConfig = toml::from_str(&toml_text).expect("the agent reads its ConfigMap");
        assert_eq!(cfg.streams[0].format, zonal_agent::container::LogFormat::Cri);
        assert!(!cfg.streams[0].exclude.is_empty(), "the agent's own logs are excluded");
        // A broken reference is caught.
        let broken = dir.path().join("30-agent.yaml");
        let text =
            std::fs::read_to_string(&broken).expect("read").replace("secretName: zonal-kafka", "secretName: nope");
        std::fs::write(&broken, text).expect("write");
        let e = cross_references(&files).expect_err("dangling secret");
        assert!(e.to_string().contains("Secret") && e.to_string().contains("nope"), "{e}");
    }

    #[test]
    fn systemd_units_are_sandboxed() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        for unit in ["deploy/agent/zonal-agent.service", "deploy/transporter/zonal-transporter.service"] {
            let out = Command::new("systemd-analyze")
                .args(["security", "--offline=true", "--threshold=40"])
                .arg(root.join(unit))
                .output()
                .expect("systemd-analyze (Debian's systemd) runs");
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "{unit} is exposed above 4.0:\n{text}");
        }
    }
}
