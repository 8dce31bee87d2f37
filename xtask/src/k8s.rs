//! `cargo xtask deploy kubernetes`: renders a kustomize overlay of `deploy/kubernetes/` with the
//! kustomize built into kubectl and checks what kubectl cannot: every referenced object present,
//! every selector matching, both programs' configurations (their ConfigMaps, merged as the pods
//! read them) valid, and memory and disk resources equal to the documented formulas; and, when
//! `kubernetes-validate` is installed (always in the test suite), the Kubernetes 1.30 schema.
//!
//! ```text
//!  deploy/kubernetes/overlays/<name> ──kubectl kustomize──> target/zonal-deploy/kubernetes/<name>.yaml
//!      └─ cross_references ─ configs (AgentConfig / TransporterConfig) ─ resources ─ kubernetes-validate
//! ```

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, ensure};
use serde_yaml::Value;

use pods::configs_and_resources;

mod pods;

/// The Kubernetes version the manifests are validated against.
pub const KUBERNETES_VERSION: &str = "1.30.0";

/// The overlays shipped in `deploy/kubernetes/overlays/`.
pub const OVERLAYS: [&str; 2] = ["plain", "eks"];

/// `deploy/kubernetes/`.
pub fn source_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes")
}

/// An overlay by name (one of [`OVERLAYS`]) or by path (a user's own overlay).
pub fn overlay_dir(overlay: &str) -> PathBuf {
    if OVERLAYS.contains(&overlay) { source_dir().join("overlays").join(overlay) } else { PathBuf::from(overlay) }
}

/// `kubectl kustomize DIR`: the rendered manifests as text.
pub fn render(dir: &Path) -> anyhow::Result<String> {
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .output()
        .context("running kubectl kustomize (kubectl carries kustomize since 1.14)")?;
    ensure!(
        out.status.success(),
        "kubectl kustomize {} failed: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).context("kubectl kustomize wrote something other than UTF-8")
}

/// The YAML documents of a rendering.
pub fn documents(text: &str) -> anyhow::Result<Vec<Value>> {
    let mut docs = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let v: Value = serde::Deserialize::deserialize(doc).context("parsing the rendered manifests")?;
        if !v.is_null() {
            docs.push(v);
        }
    }
    Ok(docs)
}

fn str_of<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    path.iter().fold(v, |v, k| &v[*k]).as_str().unwrap_or_default()
}

fn name_of(v: &Value) -> String {
    format!("{} {}/{}", str_of(v, &["kind"]), str_of(v, &["metadata", "namespace"]), str_of(v, &["metadata", "name"]))
}

/// The object of `kind` named `name` in `ns`.
fn find<'a>(docs: &'a [Value], kind: &str, ns: &str, name: &str) -> Option<&'a Value> {
    docs.iter().find(|d| {
        str_of(d, &["kind"]) == kind
            && str_of(d, &["metadata", "namespace"]) == ns
            && str_of(d, &["metadata", "name"]) == name
    })
}

/// Whether every `matchLabels` entry of `selector` is among `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    selector.as_mapping().is_some_and(|m| !m.is_empty() && m.iter().all(|(k, v)| &labels[k] == v))
}

/// Workloads (DaemonSet, StatefulSet, Deployment): their pod templates.
fn workloads(docs: &[Value]) -> impl Iterator<Item = &Value> {
    docs.iter().filter(|d| !d["spec"]["template"]["spec"].is_null())
}

/// Checks that every object the manifests refer to is among them, and that every selector
/// selects something.
pub fn cross_references(docs: &[Value]) -> anyhow::Result<()> {
    for v in docs {
        let ns = str_of(v, &["metadata", "namespace"]);
        let from = name_of(v);
        let need = |kind: &str, ns: &str, name: &str| -> anyhow::Result<()> {
            ensure!(
                find(docs, kind, ns, name).is_some(),
                "{from} refers to {kind} {ns}/{name}, which no manifest defines"
            );
            Ok(())
        };
        if !ns.is_empty() {
            need("Namespace", "", ns)?;
        }
        let pod = &v["spec"]["template"]["spec"];
        if !pod.is_null() {
            need("ServiceAccount", ns, str_of(pod, &["serviceAccountName"]))?;
            if let Some(pc) = pod["priorityClassName"].as_str() {
                need("PriorityClass", "", pc)?;
            }
            for vol in pod["volumes"].as_sequence().into_iter().flatten() {
                let optional = |src: &Value| src["optional"].as_bool() == Some(true);
                if let Some(s) = vol["secret"]["secretName"].as_str().filter(|_| !optional(&vol["secret"])) {
                    need("Secret", ns, s)?;
                }
                if let Some(c) = vol["configMap"]["name"].as_str().filter(|_| !optional(&vol["configMap"])) {
                    need("ConfigMap", ns, c)?;
                }
            }
            let labels = &v["spec"]["template"]["metadata"]["labels"];
            ensure!(
                selects(&v["spec"]["selector"]["matchLabels"], labels),
                "{from}: its selector does not match its pods"
            );
        }
        if let Some(svc) = v["spec"]["serviceName"].as_str() {
            need("Service", ns, svc)?;
        }
        match str_of(v, &["kind"]) {
            "ClusterRoleBinding" | "RoleBinding" => {
                need(str_of(v, &["roleRef", "kind"]), "", str_of(v, &["roleRef", "name"]))?;
                for s in v["subjects"].as_sequence().into_iter().flatten() {
                    need("ServiceAccount", s["namespace"].as_str().unwrap_or(ns), str_of(s, &["name"]))?;
                }
            }
            "Service" | "PodDisruptionBudget" | "NetworkPolicy" => {
                let selector = match str_of(v, &["kind"]) {
                    "Service" => &v["spec"]["selector"],
                    "NetworkPolicy" => &v["spec"]["podSelector"]["matchLabels"],
                    _ => &v["spec"]["selector"]["matchLabels"],
                };
                let pods: Vec<&Value> = workloads(docs)
                    .filter(|w| str_of(w, &["metadata", "namespace"]) == ns)
                    .filter(|w| selects(selector, &w["spec"]["template"]["metadata"]["labels"]))
                    .collect();
                ensure!(!pods.is_empty(), "{from} selects no pods");
                ports_exist(v, &pods, &from)?;
            }
            "ServiceMonitor" => {
                let services: Vec<&Value> = docs
                    .iter()
                    .filter(|d| str_of(d, &["kind"]) == "Service" && str_of(d, &["metadata", "namespace"]) == ns)
                    .filter(|d| selects(&v["spec"]["selector"]["matchLabels"], &d["metadata"]["labels"]))
                    .collect();
                ensure!(!services.is_empty(), "{from} selects no Service");
                for e in v["spec"]["endpoints"].as_sequence().into_iter().flatten() {
                    let port = str_of(e, &["port"]);
                    ensure!(
                        services.iter().all(|s| s["spec"]["ports"]
                            .as_sequence()
                            .into_iter()
                            .flatten()
                            .any(|p| p["name"] == port)),
                        "{from}: a selected Service has no port named {port:?}"
                    );
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// The ports a Service targets, or a NetworkPolicy opens, are ports of the selected pods.
fn ports_exist(v: &Value, pods: &[&Value], from: &str) -> anyhow::Result<()> {
    let container_ports: Vec<&Value> = pods
        .iter()
        .flat_map(|w| w["spec"]["template"]["spec"]["containers"].as_sequence().into_iter().flatten())
        .flat_map(|c| c["ports"].as_sequence().into_iter().flatten())
        .collect();
    let wanted = v["spec"]["ports"]
        .as_sequence()
        .into_iter()
        .flatten()
        .map(|p| if p["targetPort"].is_null() { &p["port"] } else { &p["targetPort"] })
        .chain(
            v["spec"]["ingress"]
                .as_sequence()
                .into_iter()
                .flatten()
                .flat_map(|i| i["ports"].as_sequence().into_iter().flatten().map(|p| &p["port"])),
        );
    for port in wanted {
        ensure!(
            container_ports.iter().any(|c| &c["name"] == port || &c["containerPort"] == port),
            "{from}: no selected container has port {port:?}"
        );
    }
    Ok(())
}

pub(crate) fn workload<'a>(docs: &'a [Value], kind: &str) -> anyhow::Result<&'a Value> {
    docs.iter().find(|d| str_of(d, &["kind"]) == kind).with_context(|| format!("no {kind}"))
}

/// Validates rendered manifests against the Kubernetes schema with `kubernetes-validate`
/// (the Prometheus Operator's kinds have no schema there: `cross_references` checks them).
pub fn validate_schema(text: &str) -> anyhow::Result<()> {
    let file = tempfile::Builder::new().suffix(".yaml").tempfile()?;
    std::fs::write(file.path(), text)?;
    let out = Command::new("kubernetes-validate")
        .args(["--strict", "--quiet", "--no-warn", "-k", KUBERNETES_VERSION])
        .arg(file.path())
        .output()
        .context("running kubernetes-validate (pip install kubernetes-validate)")?;
    ensure!(
        out.status.success(),
        "kubernetes-validate {KUBERNETES_VERSION} refused the manifests:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Renders and checks an overlay; the rendering.
pub fn check(overlay: &str) -> anyhow::Result<String> {
    let text = render(&overlay_dir(overlay))?;
    let docs = documents(&text)?;
    cross_references(&docs).with_context(|| format!("overlay {overlay}"))?;
    configs_and_resources(&docs).with_context(|| format!("overlay {overlay}"))?;
    let kinds: BTreeSet<&str> = docs.iter().map(|d| str_of(d, &["kind"])).collect();
    ensure!(kinds.contains("NetworkPolicy"), "overlay {overlay}: no NetworkPolicy");
    Ok(text)
}

/// `cargo xtask deploy kubernetes [--overlay NAME|PATH]`: every shipped overlay, or one.
pub fn run(overlay: Option<&str>) -> anyhow::Result<()> {
    let out = crate::target_dir().join("zonal-deploy/kubernetes");
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let chosen: Vec<&str> = overlay.map_or(OVERLAYS.to_vec(), |o| vec![o]);
    let validator = crate::tools::present("kubernetes-validate");
    for o in chosen {
        let text = check(o)?;
        if validator {
            validate_schema(&text)?;
        }
        let name =
            overlay_dir(o).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "overlay".into());
        let dest = out.join(format!("{name}.yaml"));
        std::fs::write(&dest, &text).with_context(|| format!("writing {}", dest.display()))?;
        eprintln!("==> {}: references, configurations and resources checked", dest.display());
        println!(
            "apply with: kubectl apply -f {}   (or kubectl apply -k {})",
            dest.display(),
            overlay_dir(o).display()
        );
    }
    if validator {
        eprintln!("==> valid against the Kubernetes {KUBERNETES_VERSION} schema");
    } else {
        eprintln!("==> kubernetes-validate not installed (pip install kubernetes-validate); schema not checked");
    }
    Ok(())
}

#[cfg(test)]
mod tests;
