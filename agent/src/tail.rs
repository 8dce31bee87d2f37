//! Tailing and rotation, without Kafka: find files by glob, follow renames and copytruncates,
//! finish files rotated while the agent was down, read chunks, split events and hand groups of
//! them to a [`Dispatch`] (the Kafka sender in production, a model in tests).
//!
//! ```text
//!  start: checkpoints of files not in the globs ──rotation::find──> finish the renamed file or copy
//!  glob rescan ──> files by (dev, ino) ──read chunk──> Splitter ──events──> Batch
//!     │ rename: follow the inode         copytruncate: size shrank or head changed ->
//!     │ gone: keep reading until idle       the track moves to the copy beside it (same head),
//!     │   for rotate-wait, then drop        the file restarts at 0; no copy: counted as lost
//!     │                                  Batch ──next_group(batch-lines, batch-bytes)──> Dispatch::send
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use regex::bytes::Regex;

use crate::batch::{Batch, Limits};
use crate::checkpoint::{self, Checkpoint, FileId, Fingerprint, Store};
use crate::config::{StartAt, StreamConfig};
use crate::lines::Splitter;
use crate::metrics::{FileLabel, Metrics};
use crate::rotation;
use crate::track::{FileTrack, Tracks};

const CHUNK: usize = 256 * 1024;
/// Bytes read from one file before the loop moves on to the next, for fairness.
const PER_FILE_PASS: usize = 4 * 1024 * 1024;

/// Where the tailer hands the lines it read.
pub trait Dispatch {
    /// Sends the events `range` of `batch`, read from the file of `track`, as one group (one
    /// partition choice, one [`crate::track::BatchAck`]). Returns false when it cannot now:
    /// the stream is stopping, or the budget is held by records waiting to be sent again.
    fn send(&mut self, track: &Arc<FileTrack>, batch: &Batch, range: Range<usize>) -> bool;
    /// A group of a file being let go could not be sent: do the work that makes room (send the
    /// records waiting for a retry), waiting briefly for a delivery report.
    fn make_room(&mut self);
    /// Whether the stream is stopping.
    fn stopping(&self) -> bool;
}

struct Tailed {
    file: File,
    track: Arc<FileTrack>,
    splitter: Splitter,
    offset: u64,
    last_data: Instant,
    unseen_scans: u32,
    batch: Batch,
}

/// The files of one stream.
pub struct Tailer {
    name: String,
    config: StreamConfig,
    limits: Limits,
    store: Store,
    tracks: Tracks,
    metrics: Arc<Metrics>,
    rotate_wait: Duration,
    files: BTreeMap<FileId, Tailed>,
    first_scan: bool,
    exclude: Vec<glob::Pattern>,
    multiline: Option<Regex>,
    buf: Vec<u8>,
}

impl Tailer {
    /// A tailer of `config`'s files; fails only on invalid patterns (refused by validation
    /// already). Files rotated away are read until idle for `rotate_wait`.
    pub fn new(
        config: &StreamConfig,
        store: Store,
        tracks: Tracks,
        metrics: Arc<Metrics>,
        rotate_wait: Duration,
    ) -> anyhow::Result<Tailer> {
        let exclude = config.exclude.iter().map(|p| glob::Pattern::new(p)).collect::<Result<_, _>>()?;
        let multiline = config.multiline_start.as_deref().map(Regex::new).transpose()?;
        Ok(Tailer {
            name: config.name.clone(),
            config: config.clone(),
            limits: Limits { lines: config.batch_lines, bytes: config.batch_bytes },
            store,
            tracks,
            metrics,
            rotate_wait,
            files: BTreeMap::new(),
            first_scan: true,
            exclude,
            multiline,
            buf: vec![0; CHUNK],
        })
    }

    fn name(&self) -> &str {
        &self.name
    }

    /// Reads every file once (up to a pass each, for fairness); returns whether anything was
    /// read or sent.
    pub fn read_all(&mut self, out: &mut impl Dispatch) -> bool {
        let ids: Vec<FileId> = self.files.keys().copied().collect();
        let mut progressed = false;
        for id in ids {
            if out.stopping() {
                break;
            }
            progressed |= self.read_file(id, out);
        }
        progressed
    }

    fn excluded(&self, path: &std::path::Path) -> bool {
        self.exclude.iter().any(|p| p.matches_path(path))
    }

    /// Lists the globs: follows renames, notices truncations and files that left the globs,
    /// finishes files rotated while the agent was down (first scan) and opens new files.
    pub fn scan(&mut self, out: &mut impl Dispatch) {
        let name = self.name().to_owned();
        let mut seen: BTreeMap<FileId, PathBuf> = BTreeMap::new();
        for pattern in &self.config.paths {
            let entries = match glob::glob(pattern) {
                Ok(e) => e,
                Err(e) => {
                    tracing::error!(stream = %name, pattern, error = %e, "invalid glob");
                    continue;
                }
            };
            for entry in entries {
                match entry {
                    Ok(path) if !self.excluded(&path) => match std::fs::metadata(&path) {
                        Ok(meta) if meta.is_file() => {
                            seen.entry(FileId::of(&meta)).or_insert(path);
                        }
                        Ok(_) => {}
                        Err(e) => tracing::debug!(stream = %name, path = %path.display(), error = %e, "stat failed"),
                    },
                    Ok(_) => {}
                    Err(e) => {
                        self.metrics.error(&name, "read");
                        tracing::warn!(stream = %name, error = %e, "glob entry unreadable");
                    }
                }
            }
        }

        // Known files: follow renames, notice files that left the globs.
        for (id, t) in self.files.iter_mut() {
            match seen.get(id) {
                Some(path) => {
                    let renamed = t.track.with(|s| {
                        let renamed = s.path != *path;
                        s.path = path.clone();
                        s.orphan = false;
                        renamed
                    });
                    if renamed {
                        self.metrics.renames.get_or_create(&Metrics::stream(&name)).inc();
                    }
                    t.unseen_scans = 0;
                }
                None => {
                    t.unseen_scans += 1;
                    if t.unseen_scans == 1 {
                        // Renamed out of the globs or deleted: finish reading it through the
                        // open descriptor, then let it go.
                        self.metrics.renames.get_or_create(&Metrics::stream(&name)).inc();
                    }
                    t.track.with(|s| s.orphan = true);
                }
            }
        }
        let ids: Vec<FileId> = self.files.keys().copied().collect();
        for id in ids {
            self.check_truncation(id, &seen, out);
        }
        self.release_finished_orphans(out);
        if self.first_scan {
            self.recover_checkpoints(&seen);
        }

        // New files.
        let known: BTreeSet<FileId> = self.files.keys().copied().collect();
        for (id, path) in seen.into_iter().filter(|(id, _)| !known.contains(id)) {
            self.open(id, path);
        }
        self.first_scan = false;
    }

    /// Directories where a rotated file of this stream may be.
    fn search_dirs(&self, seen: &BTreeMap<FileId, PathBuf>, extra: Option<&std::path::Path>) -> BTreeSet<PathBuf> {
        rotation::search_dirs(&self.config.paths, seen.values().map(PathBuf::as_path), extra)
    }

    /// At start: every checkpoint whose file is not among the glob matches describes a file
    /// rotated (renamed, copied) while the agent was down. Find it by inode or head and finish
    /// it from the checkpoint, so no line written before the rotation is lost.
    fn recover_checkpoints(&mut self, seen: &BTreeMap<FileId, PathBuf>) {
        let name = self.name().to_owned();
        let (checkpoints, errors) = self.store.list();
        for e in errors {
            self.metrics.error(&name, "checkpoint");
            tracing::error!(stream = %name, error = %e, "unreadable checkpoint skipped");
        }
        for c in checkpoints {
            if seen.contains_key(&c.id) || self.files.contains_key(&c.id) {
                continue;
            }
            let dirs = self.search_dirs(seen, Some(std::path::Path::new(&c.path)));
            let tailed: BTreeSet<FileId> = self.files.keys().chain(seen.keys()).copied().collect();
            match rotation::find(c.id, c.fingerprint(), c.offset, &dirs, &|id| tailed.contains(&id)) {
                Some(found) => {
                    tracing::info!(stream = %name, was = %c.path, now = %found.path.display(), offset = c.offset,
                        same_inode = found.same_inode, "finishing a file rotated while the agent was down");
                    self.metrics.recovered_files.get_or_create(&Metrics::stream(&name)).inc();
                    let same_inode = found.same_inode;
                    self.start(found.id, found.path, found.file, c.offset, c.fingerprint(), true);
                    if !same_inode {
                        // A copy: the file itself was truncated. If it still exists outside the
                        // globs (renamed after the truncation), what it holds now is new lines.
                        match rotation::find_inode(c.id, &dirs) {
                            Some((path, file)) if !self.files.contains_key(&c.id) => {
                                tracing::info!(stream = %name, path = %path.display(),
                                    "the truncated file was renamed too; finishing it from the start");
                                let fingerprint = Fingerprint::read(&file).unwrap_or_default();
                                self.start(c.id, path, file, 0, fingerprint, true);
                            }
                            _ => {
                                let _ = self.store.remove(c.id);
                            }
                        }
                    }
                }
                None => {
                    self.metrics.error(&name, "rotated-file-gone");
                    tracing::warn!(stream = %name, path = %c.path, offset = c.offset,
                        "the file of a checkpoint is gone (compressed or deleted while the agent was down); anything it held past the offset could not be read");
                    let _ = self.store.remove(c.id);
                }
            }
        }
    }

    fn open(&mut self, id: FileId, path: PathBuf) {
        let name = self.name().to_owned();
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) => {
                self.metrics.error(&name, "read");
                tracing::error!(stream = %name, path = %path.display(), error = %e, "cannot open file; other files continue");
                return;
            }
        };
        let meta = match file.metadata() {
            Ok(m) if FileId::of(&m) == id => m,
            // Replaced between stat and open: the next scan sees the new one.
            _ => return,
        };
        let size = meta.len();
        let fingerprint = Fingerprint::read(&file).unwrap_or_default();
        let offset = match self.store.load(id) {
            Ok(Some(c)) => {
                let offset = checkpoint::resume_offset(&c, &mut file, size).unwrap_or(0);
                let replaced = c.fingerprint().len > 0 && !c.fingerprint().same_file(&file).unwrap_or(true);
                if replaced || c.offset > size {
                    // Truncated (copytruncate) or replaced while the agent was down: the copy
                    // beside it, if logrotate kept one, holds the rest of the old content.
                    self.finish_copy_of(&c, id, &path);
                }
                offset
            }
            Ok(None) if self.first_scan && self.config.start_at == StartAt::End => size,
            Ok(None) => 0,
            Err(e) => {
                self.metrics.error(&name, "checkpoint");
                tracing::error!(stream = %name, path = %path.display(), error = %e,
                    "corrupt checkpoint; shipping the file from the start (duplicates rather than loss)");
                if let Err(e) = self.store.quarantine(id) {
                    tracing::error!(stream = %name, error = %e, "cannot move the corrupt checkpoint aside");
                }
                0
            }
        };
        self.start(id, path, file, offset, fingerprint, false);
    }

    /// Finds and finishes the copy of a file whose checkpoint no longer matches it.
    fn finish_copy_of(&mut self, c: &Checkpoint, id: FileId, path: &std::path::Path) {
        let name = self.name().to_owned();
        let dirs = self.search_dirs(&BTreeMap::new(), Some(path));
        let tailed: BTreeSet<FileId> = self.files.keys().copied().chain([id]).collect();
        match rotation::find(c.id, c.fingerprint(), c.offset, &dirs, &|f| tailed.contains(&f)) {
            Some(found) if found.id != id => {
                tracing::info!(stream = %name, path = %path.display(), copy = %found.path.display(), offset = c.offset,
                    "truncated while the agent was down; finishing the copy");
                self.metrics.recovered_files.get_or_create(&Metrics::stream(&name)).inc();
                self.start(found.id, found.path, found.file, c.offset, c.fingerprint(), true);
            }
            _ => {
                tracing::warn!(stream = %name, path = %path.display(), offset = c.offset,
                    "truncated or replaced while the agent was down and no copy beside it; unread lines of the old content cannot be recovered");
                self.metrics.error(&name, "rotated-file-gone");
            }
        }
    }

    /// Starts tailing an open file at `offset`. An `orphan` is a file outside the globs (a
    /// rotated file found again): it is finished and released once idle.
    fn start(
        &mut self,
        id: FileId,
        path: PathBuf,
        mut file: File,
        offset: u64,
        fingerprint: Fingerprint,
        orphan: bool,
    ) {
        let name = self.name().to_owned();
        let size = file.metadata().map(|m| m.len()).unwrap_or(offset);
        if let Err(e) = file.seek(SeekFrom::Start(offset)) {
            self.metrics.error(&name, "read");
            tracing::error!(stream = %name, path = %path.display(), error = %e, "seek failed");
            return;
        }
        tracing::info!(stream = %name, path = %path.display(), offset, size, orphan, "tailing");
        let track = Arc::new(FileTrack::new(id, path, fingerprint, offset));
        track.with(|s| {
            s.size = size;
            s.orphan = orphan;
        });
        // The checkpoint exists from the first moment: a crash before the first periodic write
        // must still leave what identifies this file (its inode and head) for the restart.
        if let Err(e) = self.store.save(&Checkpoint::new(&track.with(|s| s.path.clone()), id, fingerprint, offset)) {
            self.metrics.error(&name, "checkpoint");
            tracing::error!(stream = %name, error = %e, "writing a checkpoint failed");
        }
        self.tracks.lock().unwrap_or_else(PoisonError::into_inner).insert(id, track.clone());
        let splitter = Splitter::new(self.config.max_message_bytes, self.multiline.clone());
        self.files.insert(
            id,
            Tailed {
                file,
                track,
                splitter,
                offset,
                last_data: Instant::now(),
                unseen_scans: u32::from(orphan),
                batch: Batch::default(),
            },
        );
    }

    /// Copytruncate: the file shrank below what was read, or its head changed. logrotate keeps
    /// the copy beside the file: the track (its read position, unsent lines and in-flight
    /// batches) moves to the copy, which is finished like a renamed file, and the file itself
    /// starts again at 0. Without a copy, what was read is still sent and what was not is
    /// counted as lost.
    fn check_truncation(&mut self, id: FileId, seen: &BTreeMap<FileId, PathBuf>, out: &mut impl Dispatch) {
        let name = self.name().to_owned();
        let Some(t) = self.files.get_mut(&id) else { return };
        let size = match t.file.metadata() {
            Ok(m) => m.len(),
            Err(_) => return,
        };
        let fp = t.track.with(|s| s.fingerprint);
        let same = fp.same_file(&t.file).unwrap_or(true);
        if size >= t.offset && same {
            if (fp.len as usize) < checkpoint::FINGERPRINT_BYTES && size > u64::from(fp.len) {
                save_longer_head(&self.store, &name, t);
            }
            return;
        }
        let (path, read, last_size) = (t.track.with(|s| s.path.clone()), t.offset, t.track.with(|s| s.size));
        self.metrics.truncations.get_or_create(&Metrics::stream(&name)).inc();
        let dirs = self.search_dirs(seen, Some(&path));
        let tailed: BTreeSet<FileId> = self.files.keys().chain(seen.keys()).copied().collect();
        let copy = rotation::find(id, fp, read, &dirs, &|f| tailed.contains(&f)).filter(|f| f.id != id);
        let Some(old) = self.files.remove(&id) else { return };
        let truncated: Option<File>;
        self.tracks.lock().unwrap_or_else(PoisonError::into_inner).remove(&id);
        match copy {
            Some(found) => {
                tracing::info!(stream = %name, path = %path.display(), copy = %found.path.display(), read,
                    "file truncated (copytruncate); finishing the copy, then the file from the start");
                self.metrics.recovered_files.get_or_create(&Metrics::stream(&name)).inc();
                let Tailed { file: own, track, splitter, batch, last_data, .. } = old;
                truncated = Some(own);
                let mut file = found.file;
                let _ = file.seek(SeekFrom::Start(read));
                let copy_size = file.metadata().map(|m| m.len()).unwrap_or(read);
                track.with(|s| {
                    s.id = found.id;
                    s.path = found.path.clone();
                    s.orphan = true;
                    s.size = copy_size;
                    s.dirty = true;
                });
                // The copy's checkpoint is written before the file's own is reset below: a crash
                // in between must still find the copy and where to finish it.
                let (fp, acked) = track.with(|s| (s.fingerprint, s.acks.acked()));
                if let Err(e) = self.store.save(&Checkpoint::new(&found.path, found.id, fp, acked)) {
                    self.metrics.error(&name, "checkpoint");
                    tracing::error!(stream = %name, error = %e, "writing a checkpoint failed");
                }
                self.tracks.lock().unwrap_or_else(PoisonError::into_inner).insert(found.id, track.clone());
                self.files.insert(
                    found.id,
                    Tailed { file, track, splitter, offset: read, last_data, unseen_scans: 1, batch },
                );
            }
            None => {
                let lost = last_size.saturating_sub(read);
                tracing::warn!(stream = %name, path = %path.display(), read, lost_bytes = lost,
                    "file truncated (copytruncate) with no copy beside it; lines not read before the truncation are lost");
                self.metrics.unrecoverable_bytes.get_or_create(&Metrics::stream(&name)).inc_by(lost);
                // What was read is sent all the same: the track stays alive while its batches
                // are in flight, under a key no file uses.
                let Tailed { file, track, mut splitter, mut batch, offset, .. } = old;
                truncated = Some(file);
                splitter.flush_partial(offset, &mut |d: &[u8], e: u64, _tr: bool| batch.push(d, e));
                splitter.flush_pending(&mut |d: &[u8], e: u64, _tr: bool| batch.push(d, e));
                self.send_leftover(&track, batch, out);
            }
        }
        // The file itself starts again from 0, through the descriptor already open: it may
        // have been renamed since the truncation (a rename rotation right after a copytruncate)
        // and its new lines must not be lost. Outside the globs it is finished like any renamed
        // file.
        let Some(file) = truncated else { return };
        let orphan = !seen.contains_key(&id);
        let path = seen.get(&id).cloned().unwrap_or(path);
        let fingerprint = Fingerprint::read(&file).unwrap_or_default();
        self.start(id, path, file, 0, fingerprint, orphan);
    }

    /// Sends the lines of a file that is no longer tailed, all of them.
    fn send_leftover(&mut self, track: &Arc<FileTrack>, batch: Batch, out: &mut impl Dispatch) {
        let mut start = 0;
        while let Some(range) = batch.next_group(start, self.limits, true) {
            if out.stopping() {
                return;
            }
            if out.send(track, &batch, range.clone()) {
                start = range.end;
            } else {
                out.make_room();
            }
        }
    }

    fn release_finished_orphans(&mut self, out: &mut impl Dispatch) {
        let at_end: Vec<FileId> = self
            .files
            .iter()
            .filter(|(_, t)| {
                // Writers may keep their descriptor after a rename (until a reopen signal), so a
                // file outside the globs is read until it has been idle for rotate-wait.
                t.unseen_scans >= 1
                    && t.last_data.elapsed() >= self.rotate_wait
                    && t.batch.is_empty()
                    && t.track.with(|s| s.acks.in_flight() == 0)
                    && t.file.metadata().is_ok_and(|m| m.len() <= t.offset)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in at_end {
            let Some(t) = self.files.get_mut(&id) else { continue };
            if t.splitter.buffered() > 0 {
                // An orphan's unterminated last line will never get its newline: ship it, and
                // release the file once that is acknowledged.
                let Tailed { splitter, batch, offset, .. } = t;
                splitter.flush_partial(*offset, &mut |d: &[u8], e: u64, _tr: bool| batch.push(d, e));
                splitter.flush_pending(&mut |d: &[u8], e: u64, _tr: bool| batch.push(d, e));
                self.send_batch(id, true, out);
                continue;
            }
            if t.track.with(|s| s.acks.acked() < t.offset) {
                continue;
            }
            if let Some(t) = self.files.remove(&id) {
                let path = t.track.with(|s| s.path.clone());
                tracing::info!(stream = %self.name(), path = %path.display(), "finished a rotated or deleted file");
                self.tracks.lock().unwrap_or_else(PoisonError::into_inner).remove(&id);
                self.metrics
                    .lag_bytes
                    .remove(&FileLabel { stream: self.name().to_owned(), path: path.display().to_string() });
                if let Err(e) = self.store.remove(id) {
                    tracing::warn!(stream = %self.name(), error = %e, "removing a checkpoint failed");
                }
            }
        }
    }

    /// Reads up to one pass worth of a file; returns whether anything was read or sent.
    fn read_file(&mut self, id: FileId, out: &mut impl Dispatch) -> bool {
        let name = self.name().to_owned();
        let multiline_timeout = Duration::from_millis(self.config.multiline_timeout_ms);
        let mut read_total = 0usize;
        // Lines read and not yet sent are bounded: while the budget is exhausted, reading stops.
        let unsent_cap = self.config.batch_bytes.max(CHUNK) * 2;
        loop {
            let Some(t) = self.files.get_mut(&id) else { return false };
            if t.batch.bytes() >= unsent_cap {
                self.send_batch(id, false, out);
                if self.files.get(&id).is_some_and(|t| t.batch.bytes() >= unsent_cap) {
                    return read_total > 0;
                }
                continue;
            }
            let n = match t.file.read(&mut self.buf) {
                Ok(n) => n,
                Err(e) => {
                    self.metrics.error(&name, "read");
                    tracing::error!(stream = %name, error = %e, "read failed; will retry");
                    return false;
                }
            };
            if n == 0 {
                // At the end for now: send what is complete; a stale multi-line event goes too.
                if t.splitter.has_pending() && t.last_data.elapsed() >= multiline_timeout {
                    let Tailed { splitter, batch, .. } = t;
                    splitter.flush_pending(&mut |d: &[u8], e: u64, _tr: bool| batch.push(d, e));
                }
                let size = t.file.metadata().map(|m| m.len()).unwrap_or(t.offset);
                t.track.with(|s| s.size = size);
                let sent = !t.batch.is_empty();
                if size < t.offset {
                    // Noticed at the next rescan, which also knows the glob matches.
                    return true;
                }
                self.send_batch(id, true, out);
                return read_total > 0 || sent;
            }
            let Tailed { splitter, batch, offset, .. } = t;
            let mut truncated = 0u64;
            splitter.push(&self.buf[..n], *offset, &mut |d: &[u8], e: u64, tr: bool| {
                truncated += u64::from(tr);
                batch.push(d, e);
            });
            *offset += n as u64;
            t.last_data = Instant::now();
            let off = *offset;
            let head_grew = t.track.with(|s| {
                s.read_offset = off;
                s.size = s.size.max(off);
                (s.fingerprint.len as usize) < checkpoint::FINGERPRINT_BYTES && off > u64::from(s.fingerprint.len)
            });
            if head_grew {
                save_longer_head(&self.store, &name, t);
            }
            if truncated > 0 {
                self.metrics.truncated_lines.get_or_create(&Metrics::stream(&name)).inc_by(truncated);
            }
            read_total += n;
            if !self.send_batch(id, false, out) {
                return true;
            }
            if read_total >= PER_FILE_PASS {
                return true;
            }
        }
    }

    /// Sends the file's batch in groups of `batch-lines`/`batch-bytes`, each to one partition.
    /// Unless `all`, an incomplete last group waits for more lines. Returns false when the
    /// dispatcher refused a group (stopping, or budget held by retries).
    fn send_batch(&mut self, id: FileId, all: bool, out: &mut impl Dispatch) -> bool {
        let limits = self.limits;
        let Some(t) = self.files.get_mut(&id) else { return true };
        let mut batch = std::mem::take(&mut t.batch);
        let track = t.track.clone();
        let mut start = 0;
        let mut ok = true;
        while let Some(range) = batch.next_group(start, limits, all) {
            if !out.send(&track, &batch, range.clone()) {
                ok = false;
                break;
            }
            start = range.end;
        }
        // Keep what was not sent.
        batch.consume(start);
        if let Some(t) = self.files.get_mut(&id) {
            t.batch = batch;
        }
        ok
    }
}

/// The head identifies a file after a restart (a copytruncate or a rename while the agent was
/// down is told by it), so a longer head goes to the checkpoint at once, before any of the lines
/// it covers is sent: a file first seen empty would otherwise be found by nothing. The head stops
/// growing at [`checkpoint::FINGERPRINT_BYTES`], so this is a few writes per file.
fn save_longer_head(store: &Store, stream: &str, t: &Tailed) {
    let Ok(new_fp) = Fingerprint::read(&t.file) else { return };
    let changed = t.track.with(|s| {
        let changed = s.fingerprint != new_fp;
        s.fingerprint = new_fp;
        changed.then(|| (s.id, s.path.clone(), s.acks.acked()))
    });
    if let Some((id, path, acked)) = changed
        && let Err(e) = store.save(&Checkpoint::new(&path, id, new_fp, acked))
    {
        tracing::error!(stream, error = %e, "writing a checkpoint failed");
    }
}

/// The tailer against a model of everything that happens to log files (writes, partial lines,
/// rename rotations with writers that keep their descriptor, copytruncate, agent crashes at any
/// point, acknowledgements in any order), with real files in a temporary directory and a
/// dispatcher that acknowledges when the model says so. After any sequence, once the writer
/// reopens and everything is acknowledged, every line written has been delivered.
#[cfg(test)]
mod model {
    use std::collections::BTreeSet;
    use std::fs::{File, OpenOptions};
    use std::io::Write;
    use std::path::{Path, PathBuf};
    use std::sync::{Arc, Mutex};

    use proptest::prelude::*;

    use super::*;
    use crate::track::BatchAck;

    /// Groups handed over and not yet acknowledged, and the lines acknowledged.
    #[derive(Default)]
    struct Kafka {
        pending: Vec<(Arc<BatchAck>, Vec<Vec<u8>>)>,
        delivered: Vec<Vec<u8>>,
    }

    impl Kafka {
        fn ack(&mut self, i: usize) {
            if self.pending.is_empty() {
                return;
            }
            let (ack, lines) = self.pending.remove(i % self.pending.len());
            for _ in &lines {
                ack.settle_one();
            }
            self.delivered.extend(lines);
        }
    }

    impl Dispatch for Kafka {
        fn send(&mut self, track: &Arc<FileTrack>, batch: &Batch, range: Range<usize>) -> bool {
            let Some(end) = batch.end_offset(&range) else { return true };
            let ack = BatchAck::dispatch(track, end, range.len());
            self.pending.push((ack, batch.events(range).map(|(d, _)| d.to_vec()).collect()));
            true
        }

        fn make_room(&mut self) {
            self.ack(0);
        }

        fn stopping(&self) -> bool {
            false
        }
    }

    /// An application writing `app.log` through one descriptor, as nginx does: after a rename
    /// it goes on writing to the renamed file until it reopens.
    struct App {
        dir: PathBuf,
        fd: File,
        seq: u64,
        /// The rest of a line whose first part was written.
        unfinished: Option<Vec<u8>>,
        /// Every complete line written.
        lines: BTreeSet<Vec<u8>>,
        /// The descriptor points at a renamed file.
        renamed: bool,
        /// The agent has not listed the globs since `app.log` was created. A file rotated away
        /// before the agent ever saw it cannot be told from an old rotated file (shipping every
        /// `app.log.N` at start would resend old logs), so the model rotates only seen files.
        unseen: bool,
        /// The agent last saw `app.log` empty (or has not looked since the last copytruncate).
        /// A copytruncate of a file the agent last saw empty leaves nothing to tell it by (same
        /// inode, size 0 again, no head to look for in the copy), so lines written within one
        /// poll before such a rotation are a named limit, and the model does not copytruncate
        /// then.
        seen_empty: bool,
    }

    impl App {
        fn open(dir: &Path) -> File {
            OpenOptions::new().create(true).append(true).open(dir.join("app.log")).expect("open app.log")
        }

        fn write(&mut self, lines: usize, unfinished: bool) {
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

        fn finish_line(&mut self) {
            if let Some(rest) = self.unfinished.take() {
                self.fd.write_all(&rest).expect("write");
            }
        }

        /// `app.log.N` becomes `app.log.N+1`, as logrotate shifts (nothing is deleted).
        fn shift(&self) {
            let mut n = 1;
            while self.dir.join(format!("app.log.{n}")).exists() {
                n += 1;
            }
            for k in (1..n).rev() {
                std::fs::rename(self.dir.join(format!("app.log.{k}")), self.dir.join(format!("app.log.{}", k + 1)))
                    .expect("shift");
            }
        }

        /// logrotate `create`: rename; the application keeps writing to the renamed file.
        fn rename(&mut self) {
            if self.renamed || self.unseen {
                return;
            }
            self.shift();
            std::fs::rename(self.dir.join("app.log"), self.dir.join("app.log.1")).expect("rename");
            self.renamed = true;
        }

        /// The application reopens (SIGUSR1): new lines go to a new `app.log`.
        fn reopen(&mut self) {
            self.finish_line();
            self.fd = App::open(&self.dir);
            self.unseen |= self.renamed;
            self.renamed = false;
        }

        /// logrotate `copytruncate` (copy and truncate with no write in between).
        fn copytruncate(&mut self) {
            if self.renamed || self.unseen || self.seen_empty {
                return;
            }
            self.finish_line();
            self.shift();
            std::fs::copy(self.dir.join("app.log"), self.dir.join("app.log.1")).expect("copy");
            self.fd.set_len(0).expect("truncate");
            // Two rotations within one poll leave the agent the head of only the first copy.
            self.seen_empty = true;
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Write {
            lines: usize,
            unfinished: bool,
        },
        Rename,
        Reopen,
        CopyTruncate,
        Tick,
        Ack(usize),
        AckAll,
        Checkpoint,
        /// kill -9 and start again: unacknowledged groups are gone, the checkpoints stay.
        Restart,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (1usize..30, any::<bool>()).prop_map(|(lines, unfinished)| Op::Write { lines, unfinished }),
            1 => Just(Op::Rename),
            1 => Just(Op::Reopen),
            1 => Just(Op::CopyTruncate),
            5 => Just(Op::Tick),
            3 => any::<usize>().prop_map(Op::Ack),
            1 => Just(Op::AckAll),
            2 => Just(Op::Checkpoint),
            1 => Just(Op::Restart),
        ]
    }

    struct World {
        _dir: tempfile::TempDir,
        config: StreamConfig,
        store: Store,
        metrics: Arc<Metrics>,
        tracks: Tracks,
        tailer: Tailer,
        kafka: Kafka,
        delivered: Vec<Vec<u8>>,
        restarts: usize,
    }

    impl World {
        fn new() -> World {
            let dir = tempfile::tempdir().expect("tempdir");
            let logs = dir.path().join("logs");
            std::fs::create_dir(&logs).expect("mkdir");
            let toml = format!(
                "name = \"s\"\npaths = [{:?}]\ntopic = \"t\"\nbatch-lines = 7\nbatch-bytes = 300\n",
                logs.join("app.log").display().to_string()
            );
            use figment::providers::Format as _;
            let config: StreamConfig =
                figment::Figment::from(figment::providers::Toml::string(&toml)).extract().expect("stream config");
            let store = Store::open(&dir.path().join("checkpoints"), "s").expect("store");
            let metrics = Arc::new(Metrics::default());
            let tracks: Tracks = Arc::new(Mutex::new(BTreeMap::new()));
            let tailer = World::tailer(&config, &store, &tracks, &metrics);
            World {
                _dir: dir,
                config,
                store,
                metrics,
                tracks,
                tailer,
                kafka: Kafka::default(),
                delivered: Vec::new(),
                restarts: 0,
            }
        }

        fn logs(&self) -> PathBuf {
            self._dir.path().join("logs")
        }

        fn tailer(config: &StreamConfig, store: &Store, tracks: &Tracks, metrics: &Arc<Metrics>) -> Tailer {
            // Writers keep renamed files for as long as the model likes: nothing is released.
            Tailer::new(config, store.clone(), tracks.clone(), metrics.clone(), Duration::from_secs(3600))
                .expect("tailer")
        }

        fn tick(&mut self) {
            self.tailer.scan(&mut self.kafka);
            while self.tailer.read_all(&mut self.kafka) {}
        }

        fn checkpoint(&self) {
            crate::track::write_checkpoints("s", &self.store, &self.tracks, &self.metrics);
        }

        fn restart(&mut self) {
            self.delivered.append(&mut self.kafka.delivered);
            self.kafka = Kafka::default();
            self.tracks = Arc::new(Mutex::new(BTreeMap::new()));
            self.tailer = World::tailer(&self.config, &self.store, &self.tracks, &self.metrics);
            self.restarts += 1;
        }

        fn apply(&mut self, app: &mut App, op: &Op) {
            match op {
                Op::Write { lines, unfinished } => app.write(*lines, *unfinished),
                Op::Rename => app.rename(),
                Op::Reopen => app.reopen(),
                Op::CopyTruncate => app.copytruncate(),
                Op::Tick => {
                    self.tick();
                    app.unseen = false;
                    app.seen_empty = app.fd.metadata().map(|m| m.len()).unwrap_or(0) == 0;
                }
                Op::Ack(i) => self.kafka.ack(*i),
                Op::AckAll => {
                    while !self.kafka.pending.is_empty() {
                        self.kafka.ack(0);
                    }
                }
                Op::Checkpoint => self.checkpoint(),
                Op::Restart => self.restart(),
            }
        }
    }

    fn run(ops: &[Op]) -> Result<(), TestCaseError> {
        let mut world = World::new();
        let logs = world.logs();
        let mut app = App {
            fd: App::open(&logs),
            dir: logs,
            seq: 0,
            unfinished: None,
            lines: BTreeSet::new(),
            renamed: false,
            unseen: true,
            seen_empty: true,
        };
        for op in ops {
            world.apply(&mut app, op);
        }
        // The application reopens; everything is read and acknowledged.
        app.reopen();
        for _ in 0..4 {
            world.tick();
            world.apply(&mut app, &Op::AckAll);
            world.checkpoint();
        }
        world.delivered.append(&mut world.kafka.delivered);
        let delivered: BTreeSet<Vec<u8>> = world.delivered.iter().cloned().collect();
        let lost: Vec<String> =
            app.lines.difference(&delivered).map(|l| String::from_utf8_lossy(l).into_owned()).collect();
        prop_assert!(lost.is_empty(), "{} lines lost, first {:?}", lost.len(), lost.first());
        let foreign: Vec<String> =
            delivered.difference(&app.lines).map(|l| String::from_utf8_lossy(l).into_owned()).collect();
        prop_assert!(foreign.is_empty(), "lines never written were delivered: {:?}", foreign.first());
        if world.restarts == 0 {
            prop_assert_eq!(world.delivered.len(), delivered.len(), "duplicates without a restart");
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]
        #[test]
        fn no_line_is_lost_whatever_happens_to_the_files(ops in proptest::collection::vec(op(), 1..60)) {
            run(&ops)?;
        }
    }

    /// The moments the issue names, spelled out: a restart between the rename and the reopen
    /// with lines unread; a copytruncate with lines unread; an unfinished line in a renamed file.
    #[test]
    fn named_moments() -> Result<(), TestCaseError> {
        use Op::*;
        let w = |lines| Write { lines, unfinished: false };
        run(&[w(20), Tick, Checkpoint, w(20), Rename, w(5), Restart, Tick])?;
        run(&[w(20), Tick, AckAll, Checkpoint, w(30), CopyTruncate, w(10), Tick])?;
        run(&[w(20), Tick, w(3), CopyTruncate, Restart, w(4), Tick])?;
        run(&[Write { lines: 5, unfinished: true }, Tick, Rename, Tick, Restart, Tick, Reopen, w(2)])?;
        run(&[w(10), Tick, Rename, Reopen, w(10), Rename, Restart, Reopen, w(3), CopyTruncate, Tick])?;
        Ok(())
    }
}
