//! Checks that keep the documents true as the code moves: every workspace path that
//! ARCHITECTURE.md or the README names (in backticks) exists.

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Backticked words of `text` that name a path under one of the workspace's folders.
    fn named_paths(text: &str) -> Vec<String> {
        const ROOTS: [&str; 7] = ["agent/", "az-core/", "shell/", "transporter/", "testkit/", "xtask/", "deploy/"];
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
        for doc in ["ARCHITECTURE.md", "README.md"] {
            let text = std::fs::read_to_string(root.join(doc)).unwrap_or_else(|e| panic!("reading {doc}: {e}"));
            let paths = named_paths(&text);
            assert!(!paths.is_empty() || doc == "README.md", "{doc} names no path: the check would prove nothing");
            for p in paths {
                if !root.join(&p).exists() {
                    missing.push(format!("{doc}: {p}"));
                }
            }
        }
        assert!(missing.is_empty(), "paths named in the documents that do not exist: {missing:#?}");
    }

    #[test]
    fn named_paths_are_found_in_backticks_only() {
        let text = "see `agent/src/tail.rs` and `az-core/` but not agent/x or `worker` or `deploy/*.toml`";
        assert_eq!(named_paths(text), vec!["agent/src/tail.rs".to_owned(), "az-core/".to_owned()]);
    }
}
