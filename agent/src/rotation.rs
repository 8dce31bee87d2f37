//! Finding a tailed file again after rotation: where a rotated file may be, and which file a
//! checkpoint (or a truncated file's old head) describes. Used when the agent starts (rotation
//! while it was down) and when a copytruncate is noticed (finish the copy).
//!
//! ```text
//!  checkpoint {dev, ino, head CRC, offset} ──search dirs (glob dirs, recorded path's dir)──┐
//!     same dev+ino and same head ───────────────> the renamed file: finish it from offset  │
//!     other inode, same head, size >= offset ───> a copy (copytruncate): finish it          │
//!     nothing ──────────────────────────────────> gone (compressed, deleted): counted <────┘
//! ```
//!
//! The head fingerprint covers the first 256 bytes, as Vector's does: files that begin with the
//! same 256 bytes cannot be told apart, which is why a same-inode match is preferred.

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};

use crate::checkpoint::{FileId, Fingerprint};

/// The directory a glob pattern lists: its leading components without glob metacharacters.
pub fn pattern_dir(pattern: &str) -> PathBuf {
    let mut dir = PathBuf::new();
    let path = Path::new(pattern);
    let components: Vec<_> = path.components().collect();
    for (i, c) in components.iter().enumerate() {
        let text = c.as_os_str().to_string_lossy();
        if text.contains(['*', '?', '[', '{']) || i + 1 == components.len() {
            break;
        }
        dir.push(c);
    }
    dir
}

/// Where rotated files of a stream may be: the directories of its patterns and of the files
/// they matched, plus `extra` (a checkpoint's recorded path's directory); for a path that is a
/// symlink, the directory of the file it resolves to as well. On a Kubernetes node the globs
/// match `/var/log/containers/*.log`, symlinks to `/var/log/pods/<pod>/<container>/0.log`, and
/// kubelet renames `0.log` to `0.log.<timestamp>` in the target's folder, never beside the link.
pub fn search_dirs<'a>(
    patterns: &[String],
    matches: impl IntoIterator<Item = &'a Path>,
    extra: Option<&'a Path>,
) -> BTreeSet<PathBuf> {
    let mut dirs: BTreeSet<PathBuf> = patterns.iter().map(|p| pattern_dir(p)).collect();
    for path in matches.into_iter().chain(extra) {
        dirs.extend(path.parent().map(Path::to_path_buf));
        if let Some(target) = link_target(path) {
            dirs.extend(target.parent().map(Path::to_path_buf));
        }
    }
    dirs.retain(|d| !d.as_os_str().is_empty());
    dirs
}

/// Where a symlink points, resolved, even when the target is gone for the moment (kubelet
/// renamed `0.log` and the runtime has not reopened it yet); None for anything but a symlink.
pub fn link_target(path: &Path) -> Option<PathBuf> {
    if !std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        return None;
    }
    if let Ok(target) = std::fs::canonicalize(path) {
        return Some(target);
    }
    let target = std::fs::read_link(path).ok()?;
    Some(if target.is_absolute() { target } else { path.parent()?.join(target) })
}

/// A file found for a checkpoint or a truncated file's old head.
#[derive(Debug)]
pub struct Found {
    /// Where it is now.
    pub path: PathBuf,
    /// Opened.
    pub file: File,
    /// Its device and inode.
    pub id: FileId,
    /// The same inode as before (renamed), rather than a copy.
    pub same_inode: bool,
}

/// Looks in `dirs` for the file with inode `id` and head `head`, or else a copy of it: another
/// file with the same head and at least `min_size` bytes, not rejected by `skip`.
pub fn find(
    id: FileId,
    head: Fingerprint,
    min_size: u64,
    dirs: &BTreeSet<PathBuf>,
    skip: &dyn Fn(FileId) -> bool,
) -> Option<Found> {
    let mut copy: Option<Found> = None;
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else { continue };
        let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        paths.sort();
        for path in paths {
            let Ok(meta) = std::fs::metadata(&path) else { continue };
            if !meta.is_file() {
                continue;
            }
            let found = FileId::of(&meta);
            let same_inode = found == id;
            if !same_inode && (skip(found) || copy.is_some() || head.len == 0 || meta.len() < min_size) {
                continue;
            }
            let Ok(file) = File::open(&path) else { continue };
            // The descriptor must still be the file that was stat-ed, with the same head.
            let still = file.metadata().is_ok_and(|m| FileId::of(&m) == found);
            if !still || !head.same_file(&file).unwrap_or(false) {
                continue;
            }
            let f = Found { path, file, id: found, same_inode };
            if same_inode {
                return Some(f);
            }
            copy = Some(f);
        }
    }
    copy
}

/// Looks in `dirs` for the file with inode `id`, whatever it holds now: a file truncated by a
/// copytruncate and then renamed away still has new lines to finish.
pub fn find_inode(id: FileId, dirs: &BTreeSet<PathBuf>) -> Option<(PathBuf, File)> {
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else { continue };
        for path in entries.flatten().map(|e| e.path()) {
            if std::fs::metadata(&path).is_ok_and(|m| m.is_file() && FileId::of(&m) == id)
                && let Ok(file) = File::open(&path)
                && file.metadata().is_ok_and(|m| FileId::of(&m) == id)
                && !compressed(&file)
            {
                return Some((path, file));
            }
        }
    }
    None
}

/// Whether a file starts as a compressor writes (gzip, zstd, bzip2, xz). logrotate compresses
/// a rotated copy into a new file, which may get the inode the copy freed: found by inode, it
/// is not the log truncated and renamed, and its bytes are not lines.
fn compressed(file: &File) -> bool {
    use std::os::unix::fs::FileExt;
    const MAGIC: [&[u8]; 4] = [b"\x1f\x8b", b"\x28\xb5\x2f\xfd", b"BZh", b"\xfd7zXZ\x00"];
    let mut head = [0u8; 6];
    let n = file.read_at(&mut head, 0).unwrap_or(0);
    MAGIC.iter().any(|m| head[..n].starts_with(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A compressed file that took a checkpoint's inode is not that file (the agent shipped a
    /// gzip's bytes as lines when logrotate's compression reused a finished copy's inode).
    #[test]
    fn a_compressed_file_is_not_found_by_inode() {
        let dir = tempfile::tempdir().expect("dir");
        let gz = dir.path().join("app.log.2.gz");
        std::fs::write(&gz, b"\x1f\x8b\x08\x00rest of a gzip stream").expect("write");
        let plain = dir.path().join("app.log.1");
        std::fs::write(&plain, b"a line\n").expect("write");
        let dirs = BTreeSet::from([dir.path().to_owned()]);
        let id_of = |p: &Path| FileId::of(&std::fs::metadata(p).expect("stat"));
        assert!(find_inode(id_of(&gz), &dirs).is_none());
        assert_eq!(find_inode(id_of(&plain), &dirs).map(|(p, _)| p), Some(plain));
    }

    #[test]
    fn pattern_dirs_stop_at_the_first_glob() {
        assert_eq!(pattern_dir("/var/log/app/*.log"), PathBuf::from("/var/log/app"));
        assert_eq!(pattern_dir("/var/log/*/x.log"), PathBuf::from("/var/log"));
        assert_eq!(pattern_dir("/var/log/app.log"), PathBuf::from("/var/log"));
        assert_eq!(pattern_dir("app.log"), PathBuf::new());
        let dirs = search_dirs(&["/a/*.log".into()], [Path::new("/b/c.log")], Some(Path::new("/d/e.log")));
        assert_eq!(dirs.into_iter().collect::<Vec<_>>(), vec![PathBuf::from("/a"), "/b".into(), "/d".into()]);
    }

    /// A kubelet node: the globs match symlinks in `containers/`, kubelet renames the target
    /// in the pod's folder. The rotated file is found through the link's target folder.
    #[test]
    fn a_file_rotated_behind_a_symlink_is_found_in_the_target_folder() {
        use std::io::Write;
        let root = tempfile::tempdir().expect("tempdir");
        let pod = root.path().join("pods/ns_web-1_uid/app");
        let links = root.path().join("containers");
        std::fs::create_dir_all(&pod).expect("pod dir");
        std::fs::create_dir_all(&links).expect("links dir");
        let log = pod.join("0.log");
        std::fs::File::create(&log).and_then(|mut f| f.write_all(b"first line\n")).expect("write");
        let id = FileId::of(&std::fs::metadata(&log).expect("stat"));
        let link = links.join("web-1_ns_app-0123.log");
        std::os::unix::fs::symlink(&log, &link).expect("symlink");
        std::fs::rename(&log, pod.join("0.log.20261207-101010")).expect("rotate");
        std::fs::File::create(&log).expect("new 0.log");
        let pattern = format!("{}/*.log", links.display());
        let dirs = search_dirs(&[pattern], [link.as_path()], Some(&link));
        let canonical_pod = std::fs::canonicalize(&pod).expect("canonical");
        assert!(dirs.contains(&canonical_pod), "{dirs:?}");
        let f = find(id, Fingerprint::of(b"first line\n"), 0, &dirs, &|_| false).expect("found");
        assert!(f.same_inode && f.path.ends_with("0.log.20261207-101010"), "{f:?}");
        // Between kubelet's rename and the runtime's reopen the link dangles: still searched.
        std::fs::remove_file(&log).expect("no 0.log for a moment");
        let dirs = search_dirs(&[], [link.as_path()], None);
        assert!(dirs.iter().any(|d| d.ends_with("pods/ns_web-1_uid/app")), "{dirs:?}");
    }

    #[test]
    fn finds_the_renamed_file_before_a_copy() {
        use std::io::Write;
        let dir = tempfile::tempdir().expect("tempdir");
        let orig = dir.path().join("app.log");
        std::fs::File::create(&orig).and_then(|mut f| f.write_all(b"first line\nsecond line\n")).expect("write");
        let meta = std::fs::metadata(&orig).expect("stat");
        let id = FileId::of(&meta);
        let head = Fingerprint::of(b"first line\nsecond line\n");
        std::fs::copy(&orig, dir.path().join("app.log.0")).expect("copy");
        std::fs::rename(&orig, dir.path().join("app.log.1")).expect("rename");
        let dirs = BTreeSet::from([dir.path().to_path_buf()]);
        let f = find(id, head, 0, &dirs, &|_| false).expect("found");
        assert!(f.same_inode && f.path.ends_with("app.log.1"), "{f:?}");
        // The renamed file gone (compressed): the copy with the same head is found.
        std::fs::remove_file(dir.path().join("app.log.1")).expect("rm");
        let f = find(id, head, 10, &dirs, &|_| false).expect("copy found");
        assert!(!f.same_inode && f.path.ends_with("app.log.0"), "{f:?}");
        // Too short to hold what was acknowledged, or skipped: not it.
        assert!(find(id, head, 1000, &dirs, &|_| false).is_none());
        assert!(find(id, head, 0, &dirs, &|_| true).is_none());
        // A different head is never taken for it.
        assert!(find(id, Fingerprint::of(b"other"), 0, &dirs, &|_| false).is_none());
    }
}
