//! The application of the tail model: it writes its log through one descriptor and rotates
//! it the ways logrotate and kubelet do.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// An application writing its log through one descriptor, as nginx or a container runtime
/// does: after a rename it goes on writing to the renamed file until it reopens.
pub(super) struct App {
    pub(super) dir: PathBuf,
    /// The log's name in `dir`: `app.log`, or kubelet's `0.log`.
    pub(super) name: &'static str,
    /// The pod's folder was deleted: nothing more is written.
    pub(super) deleted: bool,
    /// The rotation can copy and truncate (logrotate); kubelet only renames.
    pub(super) copytruncates: bool,
    pub(super) fd: File,
    pub(super) seq: u64,
    /// The rest of a line whose first part was written.
    pub(super) unfinished: Option<Vec<u8>>,
    /// Every complete line written.
    pub(super) lines: BTreeSet<Vec<u8>>,
    /// The descriptor points at a renamed file.
    pub(super) renamed: bool,
    /// The agent has not listed the globs since `app.log` was created. A file rotated away
    /// before the agent ever saw it cannot be told from an old rotated file (shipping every
    /// `app.log.N` at start would resend old logs), so the model rotates only seen files.
    pub(super) unseen: bool,
    /// The agent last saw `app.log` empty (or has not looked since the last copytruncate).
    /// A copytruncate of a file the agent last saw empty leaves nothing to tell it by (same
    /// inode, size 0 again, no head to look for in the copy), so lines written within one
    /// poll before such a rotation are a named limit, and the model does not copytruncate
    /// then.
    pub(super) seen_empty: bool,
}

impl App {
    pub(super) fn open(dir: &Path, name: &str) -> File {
        OpenOptions::new().create(true).append(true).open(dir.join(name)).expect("open the log")
    }

    pub(super) fn write(&mut self, lines: usize, unfinished: bool) {
        if self.deleted {
            return;
        }
        let mut out = self.unfinished.take().unwrap_or_default();
        for _ in 0..lines {
            self.seq += 1;
            let line = format!("line {:06} {}", self.seq, "x".repeat((self.seq % 23) as usize));
            self.lines.insert(line.clone().into_bytes());
            out.extend_from_slice(line.as_bytes());
            out.push(b'\n');
        }
        if unfinished {
            self.seq += 1;
            let line = format!("line {:06} unfinished", self.seq);
            self.lines.insert(line.clone().into_bytes());
            let (head, tail) = line.as_bytes().split_at(line.len() / 2);
            out.extend_from_slice(head);
            let mut rest = tail.to_vec();
            rest.push(b'\n');
            self.unfinished = Some(rest);
        }
        self.fd.write_all(&out).expect("write");
    }

    pub(super) fn finish_line(&mut self) {
        if let Some(rest) = self.unfinished.take() {
            self.fd.write_all(&rest).expect("write");
        }
    }

    /// `<log>.N` becomes `<log>.N+1`, as logrotate shifts (nothing is deleted).
    pub(super) fn shift(&self) {
        let name = self.name;
        let mut n = 1;
        while self.dir.join(format!("{name}.{n}")).exists() {
            n += 1;
        }
        for k in (1..n).rev() {
            std::fs::rename(self.dir.join(format!("{name}.{k}")), self.dir.join(format!("{name}.{}", k + 1)))
                .expect("shift");
        }
    }

    /// logrotate `create`, or kubelet's rotation: rename; the application keeps writing to the
    /// renamed file.
    pub(super) fn rename(&mut self) {
        if self.renamed || self.unseen || self.deleted {
            return;
        }
        self.shift();
        std::fs::rename(self.dir.join(self.name), self.dir.join(format!("{}.1", self.name))).expect("rename");
        self.renamed = true;
    }

    /// The application reopens (SIGUSR1, the runtime's reopen): new lines go to a new log.
    pub(super) fn reopen(&mut self) {
        if self.deleted {
            return;
        }
        self.finish_line();
        self.fd = App::open(&self.dir, self.name);
        self.unseen |= self.renamed;
        self.renamed = false;
    }

    /// logrotate `copytruncate` (copy and truncate with no write in between).
    pub(super) fn copytruncate(&mut self) {
        if self.renamed || self.unseen || self.seen_empty || self.deleted || !self.copytruncates {
            return;
        }
        self.finish_line();
        self.shift();
        std::fs::copy(self.dir.join(self.name), self.dir.join(format!("{}.1", self.name))).expect("copy");
        self.fd.set_len(0).expect("truncate");
        // Two rotations within one poll leave the agent the head of only the first copy.
        self.seen_empty = true;
    }
}
