//! Tests of the Kubernetes manifests: each overlay as kubectl renders it, checked and validated,
//! and the checks themselves shown to catch what they are for.

use super::pods::{bytes_of, config_files};
use super::*;
use shell::ProgramConfig as _;

const MIB: f64 = 1_048_576.0;

fn rendered(overlay: &str) -> (String, Vec<Value>) {
    let text = check(overlay).unwrap_or_else(|e| panic!("overlay {overlay}: {e:#}"));
    let docs = documents(&text).expect("parses");
    (text, docs)
}

#[test]
fn every_overlay_renders_checks_and_validates_for_kubernetes_1_30() {
    for overlay in OVERLAYS {
        let (text, docs) = rendered(overlay);
        validate_schema(&text).unwrap_or_else(|e| panic!("overlay {overlay}: {e:#}"));
        let kinds: BTreeSet<&str> = docs.iter().map(|d| str_of(d, &["kind"])).collect();
        for kind in [
            "Namespace",
            "ServiceAccount",
            "ClusterRole",
            "DaemonSet",
            "StatefulSet",
            "PodDisruptionBudget",
            "NetworkPolicy",
            "ServiceMonitor",
            "PrometheusRule",
        ] {
            assert!(kinds.contains(kind), "overlay {overlay}: no {kind}");
        }
        // Both programs read the base file and the overlay's Kafka file.
        for kind in ["DaemonSet", "StatefulSet"] {
            let w = workload(&docs, kind).expect("present");
            let dir = tempfile::tempdir().expect("tempdir");
            assert_eq!(config_files(&docs, w, dir.path()).expect("files").len(), 2, "{overlay} {kind}");
        }
    }
}

#[test]
fn the_eks_overlay_logs_in_with_msk_iam_through_irsa_roles_and_the_plain_one_with_a_secret() {
    let (_, eks) = rendered("eks");
    for sa in ["zonal-agent", "zonal-transporter"] {
        let v = find(&eks, "ServiceAccount", "zonal", sa).expect("service account");
        assert!(
            str_of(v, &["metadata", "annotations", "eks.amazonaws.com/role-arn"]).starts_with("arn:aws:iam::"),
            "{sa}"
        );
    }
    assert!(!eks.iter().any(|d| str_of(d, &["kind"]) == "Secret"), "MSK IAM has no password");
    let dir = tempfile::tempdir().expect("tempdir");
    let files = config_files(&eks, workload(&eks, "StatefulSet").expect("sts"), dir.path()).expect("files");
    let paths: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    let t = zonal_transporter::config::TransporterConfig::load_files(&paths).expect("valid");
    assert_eq!(t.kafka.options.get("sasl.mechanism").map(String::as_str), Some("AWS_MSK_IAM"));

    let (_, plain) = rendered("plain");
    let secret = plain.iter().find(|d| str_of(d, &["kind"]) == "Secret").expect("the password's Secret");
    let name = str_of(secret, &["metadata", "name"]);
    let sts = workload(&plain, "StatefulSet").expect("sts");
    let volumes = sts["spec"]["template"]["spec"]["volumes"].as_sequence().expect("volumes");
    assert!(volumes.iter().any(|v| v["secret"]["secretName"] == name), "the pods mount the generated Secret");
}

#[test]
fn the_checks_catch_a_dangling_reference_a_stray_selector_and_resources_off_the_formula() {
    let (_, docs) = rendered("plain");
    let edit = |f: &dyn Fn(&mut Vec<Value>)| {
        let mut d = docs.clone();
        f(&mut d);
        d
    };
    let pods = |d: &mut Vec<Value>, kind: &str| -> usize {
        d.iter().position(|x| str_of(x, &["kind"]) == kind).expect("present")
    };
    let broken = edit(&|d| {
        let i = pods(d, "DaemonSet");
        d[i]["spec"]["template"]["spec"]["serviceAccountName"] = Value::from("nope");
    });
    let e = cross_references(&broken).expect_err("dangling").to_string();
    assert!(e.contains("ServiceAccount") && e.contains("nope"), "{e}");

    let broken = edit(&|d| {
        let i = d.iter().position(|x| str_of(x, &["kind"]) == "NetworkPolicy").expect("policy");
        d[i]["spec"]["ingress"][0]["ports"][0]["port"] = Value::from(9999);
    });
    let e = cross_references(&broken).expect_err("a port no pod has").to_string();
    assert!(e.contains("9999"), "{e}");

    let broken = edit(&|d| {
        let i = d.iter().position(|x| str_of(x, &["kind"]) == "ServiceMonitor").expect("monitor");
        d[i]["spec"]["endpoints"][0]["port"] = Value::from("metrics");
    });
    let e = cross_references(&broken).expect_err("a port no Service names").to_string();
    assert!(e.contains("metrics"), "{e}");

    let broken = edit(&|d| {
        let i = pods(d, "StatefulSet");
        d[i]["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"] = Value::from("1Gi");
    });
    let e = configs_and_resources(&broken).expect_err("off the formula").to_string();
    assert!(e.contains("formula") && e.contains("1024Mi"), "{e}");

    let broken = edit(&|d| {
        let i = pods(d, "StatefulSet");
        d[i]["metadata"]["annotations"]["zonal.io/sizing-brokers"] = Value::from("12");
    });
    assert!(configs_and_resources(&broken).is_err(), "sized for other brokers");
}

/// docs/operations.md's security claims about the pods.
#[test]
fn pods_run_without_privileges_and_only_scrapers_reach_them() {
    for overlay in OVERLAYS {
        let (_, docs) = rendered(overlay);
        for w in workloads(&docs) {
            let pod = &w["spec"]["template"]["spec"];
            for c in pod["containers"].as_sequence().expect("containers") {
                let sc = &c["securityContext"];
                assert_eq!(sc["allowPrivilegeEscalation"], Value::from(false), "{}", name_of(w));
                assert_eq!(sc["readOnlyRootFilesystem"], Value::from(true), "{}", name_of(w));
                assert_eq!(sc["capabilities"]["drop"][0], Value::from("ALL"), "{}", name_of(w));
                let seccomp = if sc["seccompProfile"].is_null() { &pod["securityContext"] } else { sc };
                assert_eq!(seccomp["seccompProfile"]["type"], Value::from("RuntimeDefault"), "{}", name_of(w));
            }
            let labels = &w["spec"]["template"]["metadata"]["labels"];
            let policy = docs
                .iter()
                .filter(|d| str_of(d, &["kind"]) == "NetworkPolicy")
                .find(|p| selects(&p["spec"]["podSelector"]["matchLabels"], labels))
                .unwrap_or_else(|| panic!("{}: no NetworkPolicy", name_of(w)));
            let from = &policy["spec"]["ingress"][0]["from"][0]["namespaceSelector"]["matchLabels"];
            assert_eq!(from["zonal.io/scrape"], Value::from("true"), "{}", name_of(policy));
        }
        let sts = workload(&docs, "StatefulSet").expect("sts");
        assert_eq!(sts["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"], Value::from(true));
    }
}

#[test]
fn quantities_are_read_in_bytes() {
    assert_eq!(bytes_of("388Mi").expect("Mi"), 388.0 * MIB);
    assert_eq!(bytes_of("10Gi").expect("Gi"), 10.0 * 1024.0 * MIB);
    assert_eq!(bytes_of("4096").expect("bytes"), 4096.0);
    assert!(bytes_of("1G").is_err(), "decimal units are not used by these manifests");
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

#[test]
fn every_alert_has_a_troubleshooting_entry() {
    let (_, docs) = rendered("plain");
    let guide = std::fs::read_to_string(source_dir().join("../../docs/troubleshooting.md")).expect("the guide");
    let rule = docs.iter().find(|d| str_of(d, &["kind"]) == "PrometheusRule").expect("rules");
    let mut alerts = 0;
    for group in rule["spec"]["groups"].as_sequence().expect("groups") {
        for r in group["rules"].as_sequence().expect("rules") {
            let name = str_of(r, &["alert"]);
            assert!(guide.contains(&format!("\n### {name}\n")), "docs/troubleshooting.md has no entry for {name}");
            alerts += 1;
        }
    }
    assert!(alerts >= 8, "{alerts} alerts");
}
