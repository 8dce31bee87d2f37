//! Checks that keep the documents true as the code moves: every workspace path that
//! ARCHITECTURE.md, the README or a page of `docs/` names (in backticks) exists; the README
//! stays short; the transporter's IAM policy (`docs/iam/transporter-s3.json`) allows every S3
//! operation the code calls, and nothing else.

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Backticked words of `text` that name a path under one of the workspace's folders.
    fn named_paths(text: &str) -> Vec<String> {
        const ROOTS: [&str; 8] =
            ["agent/", "az-core/", "shell/", "transporter/", "testkit/", "xtask/", "deploy/", "docs/"];
        text.split('`')
            .skip(1)
            .step_by(2)
            .filter(|w| ROOTS.iter().any(|r| w.starts_with(r)) && !w.contains(' ') && !w.contains('*'))
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn every_path_the_documents_name_exists() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut missing = Vec::new();
        let mut docs = vec!["ARCHITECTURE.md".to_owned(), "README.md".to_owned(), "deploy/README.md".to_owned()];
        for entry in std::fs::read_dir(root.join("docs")).expect("docs/") {
            let name = entry.expect("entry").file_name().to_string_lossy().into_owned();
            if name.ends_with(".md") {
                docs.push(format!("docs/{name}"));
            }
        }
        assert!(docs.len() >= 8, "{docs:?}");
        for doc in &docs {
            let doc = doc.as_str();
            let text = std::fs::read_to_string(root.join(doc)).unwrap_or_else(|e| panic!("reading {doc}: {e}"));
            let paths = named_paths(&text);
            assert!(
                !paths.is_empty() || doc != "ARCHITECTURE.md",
                "{doc} names no path: the check would prove nothing"
            );
            for p in paths {
                if !root.join(&p).exists() {
                    missing.push(format!("{doc}: {p}"));
                }
            }
        }
        assert!(missing.is_empty(), "paths named in the documents that do not exist: {missing:#?}");
    }

    /// The README is what a newcomer reads: what Zonal does, the demo, the two commands, a quick
    /// start and links; the rest lives in `docs/`.
    #[test]
    fn the_readme_stays_under_250_lines() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let lines = std::fs::read_to_string(root.join("README.md")).expect("README").lines().count();
        assert!(lines < 250, "README.md has {lines} lines: move detail into docs/");
    }

    /// The IAM action each S3 operation needs (multipart parts are `s3:PutObject`, HEAD is
    /// `s3:GetObject`, listing is `s3:ListBucket`).
    fn s3_action(operation: &str) -> Option<&'static str> {
        Some(match operation {
            "put_object" | "create_multipart_upload" | "upload_part" | "complete_multipart_upload" => "s3:PutObject",
            "get_object" | "head_object" => "s3:GetObject",
            "abort_multipart_upload" => "s3:AbortMultipartUpload",
            "list_objects_v2" | "list_objects" | "head_bucket" => "s3:ListBucket",
            "delete_object" => "s3:DeleteObject",
            "list_multipart_uploads" => "s3:ListBucketMultipartUploads",
            _ => return None,
        })
    }

    /// Every operation of the AWS SDK's S3 client: the folders of its `src/operation/`, found
    /// through `cargo metadata`, so that a call the mapping above does not know fails the test.
    fn sdk_operations() -> Vec<String> {
        let out = std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["metadata", "--offline", "--format-version", "1"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("cargo metadata");
        let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("cargo metadata JSON");
        let manifest = meta["packages"]
            .as_array()
            .expect("packages")
            .iter()
            .find(|p| p["name"] == "aws-sdk-s3")
            .and_then(|p| p["manifest_path"].as_str())
            .expect("aws-sdk-s3 among the packages");
        let dir = Path::new(manifest).parent().expect("crate folder").join("src/operation");
        let mut ops: Vec<String> = std::fs::read_dir(&dir)
            .expect("the SDK's operations")
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        ops.sort();
        ops
    }

    /// The transporter's source without its tests: files named `tests.rs`, and what follows a
    /// file's `#[cfg(test)]`.
    fn transporter_source(dir: &Path, out: &mut Vec<(String, String)>) {
        for entry in std::fs::read_dir(dir).expect("source folder").filter_map(|e| e.ok()) {
            let path = entry.path();
            if path.is_dir() {
                transporter_source(&path, out);
            } else if path.extension().is_some_and(|x| x == "rs") && !path.ends_with("tests.rs") {
                let text = std::fs::read_to_string(&path).expect("source");
                let code = text.split("#[cfg(test)]").next().unwrap_or_default().to_owned();
                out.push((path.display().to_string(), code));
            }
        }
    }

    #[test]
    fn the_iam_policy_allows_every_s3_operation_the_transporter_calls_and_nothing_more() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let ops = sdk_operations();
        assert!(ops.len() > 80 && ops.iter().any(|o| o == "put_object"), "{} operations", ops.len());
        let mut source = Vec::new();
        transporter_source(&root.join("transporter/src"), &mut source);
        let mut needed = std::collections::BTreeSet::new();
        for op in &ops {
            let callers: Vec<&str> =
                source.iter().filter(|(_, code)| code.contains(&format!(".{op}()"))).map(|(f, _)| f.as_str()).collect();
            if callers.is_empty() {
                continue;
            }
            let action = s3_action(op)
                .unwrap_or_else(|| panic!("{callers:?} call S3 {op}: add its IAM action here and to the policy"));
            needed.insert(action);
            if op == "delete_object" {
                // The policy allows deleting only the start-up probe's objects and dead-letter
                // objects a roll wrote and no object refers to.
                let allowed = ["upload/probe.rs", "worker/dead_letter.rs"];
                assert!(callers.iter().all(|f| allowed.iter().any(|a| f.ends_with(a))), "{callers:?} delete objects");
            }
        }
        assert!(needed.len() >= 4, "{needed:?}");
        let policy: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(root.join("docs/iam/transporter-s3.json")).expect("policy"))
                .expect("the policy is JSON");
        let mut allowed = std::collections::BTreeSet::new();
        for st in policy["Statement"].as_array().expect("statements") {
            assert_eq!(st["Effect"], "Allow");
            for a in st["Action"].as_array().expect("actions") {
                let a = a.as_str().expect("action");
                if a.starts_with("s3:") {
                    allowed.insert(a);
                }
            }
        }
        assert_eq!(allowed, needed.iter().copied().collect(), "docs/iam/transporter-s3.json against the code's calls");
    }

    #[test]
    fn named_paths_are_found_in_backticks_only() {
        let text = "see `agent/src/tail.rs` and `az-core/` but not agent/x or `worker` or `deploy/*.toml`";
        assert_eq!(named_paths(text), vec!["agent/src/tail.rs".to_owned(), "az-core/".to_owned()]);
    }
}
