//! A check that keeps the rooms small: no source file under a crate's `src/` is over 400 lines,
//! tests included. (Functions over 80 lines are clippy's `too_many_lines`, set in `clippy.toml`
//! and denied with the workspace's lints.) A newcomer should be able to read any one file whole.

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    const MAX_LINES: usize = 400;
    const CRATES: [&str; 6] = ["az-core", "shell", "agent", "transporter", "testkit", "xtask"];

    fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
        let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                rust_files(&path, out);
            } else if path.extension().is_some_and(|x| x == "rs") {
                out.push(path);
            }
        }
    }

    #[test]
    fn no_source_file_is_over_400_lines() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut files = Vec::new();
        for krate in CRATES {
            rust_files(&root.join(krate).join("src"), &mut files);
        }
        assert!(files.len() > 50, "found only {} files: the check would prove little", files.len());
        let mut over: Vec<String> = files
            .iter()
            .filter_map(|f| {
                let text = std::fs::read_to_string(f).unwrap_or_else(|e| panic!("reading {}: {e}", f.display()));
                let lines = text.lines().count();
                (lines > MAX_LINES).then(|| format!("{} ({lines} lines)", f.strip_prefix(&root).unwrap_or(f).display()))
            })
            .collect();
        over.sort();
        assert!(over.is_empty(), "source files over {MAX_LINES} lines: {over:#?}");
    }
}
