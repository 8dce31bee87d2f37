//! One stream's tailing loop, on its own thread: find files by glob, read them in chunks,
//! split lines, cut batches, choose a partition per batch, send, and re-send failed records.
//!
//! ```text
//!  start: checkpoints of files not in the globs ──rotation::find──> finish the renamed file or copy
//!  glob rescan ──> files by (dev, ino) ──read chunk──> Splitter ──events──> Batch
//!     │ rename: follow the inode         copytruncate: size shrank or head changed ->
//!     │ gone: keep reading until idle       the track moves to the copy beside it (same head),
//!     │   for rotate-wait, then drop        the file restarts at 0; no copy: counted as lost
//!     │                                  Batch ──groups of batch-lines──> Routing (az-core selection)
//!                                              ──budget──> producer.send (opaque: BatchAck)
//!  Retry queue (failed deliveries) ──> sent again, partition chosen afresh
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use az_core::Selection;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use regex::bytes::Regex;

use crate::checkpoint::{self, Checkpoint, FileId, Fingerprint, Store};
use crate::config::{KeyConfig, Partitioning, StartAt, StreamConfig};
use crate::kafka::{AgentContext, BatchAck, Budget, FileTrack, PER_MESSAGE_OVERHEAD, Retry};
use crate::lines::Splitter;
use crate::metrics::{FileLabel, Metrics};
use crate::partition::{Chooser, keyed_partition};
use crate::rotation;

const CHUNK: usize = 256 * 1024;
/// Bytes read from one file before the loop moves on to the next, for fairness.
const PER_FILE_PASS: usize = 4 * 1024 * 1024;
const RETRY_BACKOFF: Duration = Duration::from_millis(200);
const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(5);

/// Where a stream may write, recomputed whenever the topology changes.
#[derive(Debug, Clone, Default)]
pub struct Routing {
    /// az-core's zone-aware selection.
    pub selection: Option<Selection>,
    /// Every partition with a leader (all partitions when none has).
    pub all: Vec<i32>,
    /// Number of partitions of the topic (for keyed hashing).
    pub count: i32,
}

impl Routing {
    fn candidates(&self, strategy: Partitioning) -> &[i32] {
        match strategy {
            Partitioning::ZoneAware => self.selection.as_ref().map_or(&[][..], |s| &s.partitions),
            _ => &self.all,
        }
    }
}

/// What the rest of the agent sees of a stream.
pub struct StreamShared {
    /// Its configuration.
    pub config: StreamConfig,
    /// Current routing.
    pub routing: RwLock<Routing>,
    /// Tailed files, for the checkpointer and `/status`.
    pub tracks: Mutex<BTreeMap<FileId, Arc<FileTrack>>>,
    /// Checkpoint files.
    pub store: Store,
    /// The producer.
    pub producer: Arc<ThreadedProducer<AgentContext>>,
}

impl StreamShared {
    /// Writes the checkpoint of every file whose acknowledged offset moved.
    pub fn write_checkpoints(&self, metrics: &Metrics) {
        let tracks = self.tracks.lock().unwrap_or_else(PoisonError::into_inner);
        for t in tracks.values() {
            let snapshot = t.with(|s| s.dirty.then(|| (s.id, s.path.clone(), s.fingerprint, s.acks.acked())));
            let Some((id, path, fp, acked)) = snapshot else { continue };
            match self.store.save(&Checkpoint::new(&path, id, fp, acked)) {
                Ok(()) => t.with(|s| s.dirty = s.acks.acked() != acked),
                Err(e) => {
                    metrics.error(&self.config.name, "checkpoint");
                    tracing::error!(stream = %self.config.name, error = %e, "writing a checkpoint failed");
                }
            }
        }
    }
}

enum KeyExtractor {
    None,
    Regex(Regex),
    Json(String),
}

impl KeyExtractor {
    fn new(config: &StreamConfig) -> anyhow::Result<KeyExtractor> {
        Ok(match (&config.partitioning, &config.key) {
            (Partitioning::Keyed, Some(KeyConfig::Regex(r))) => KeyExtractor::Regex(Regex::new(r)?),
            (Partitioning::Keyed, Some(KeyConfig::JsonField(f))) => KeyExtractor::Json(f.clone()),
            _ => KeyExtractor::None,
        })
    }

    fn key(&self, line: &[u8]) -> Option<Vec<u8>> {
        match self {
            KeyExtractor::None => None,
            KeyExtractor::Regex(re) => {
                let caps = re.captures(line)?;
                caps.name("key").or_else(|| caps.get(1)).map(|m| m.as_bytes().to_vec())
            }
            KeyExtractor::Json(field) => {
                let v: serde_json::Value = serde_json::from_slice(line).ok()?;
                match v.get(field)? {
                    serde_json::Value::String(s) => Some(s.as_bytes().to_vec()),
                    serde_json::Value::Null => None,
                    other => Some(other.to_string().into_bytes()),
                }
            }
        }
    }
}

/// Events read but not yet sent, from one file.
#[derive(Default)]
struct Batch {
    data: Vec<u8>,
    /// (start, len, end offset in the file) per event.
    spans: Vec<(usize, usize, u64)>,
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

/// Runs one stream until `stop` is set.
pub struct StreamRunner {
    shared: Arc<StreamShared>,
    metrics: Arc<Metrics>,
    budget: Arc<Budget>,
    retries: Receiver<Retry>,
    pending_retries: Vec<Retry>,
    retry_after: Instant,
    /// Consecutive rounds of re-sending (reset when nothing waits for a retry).
    retry_rounds: u32,
    stop: Arc<AtomicBool>,
    poll: Duration,
    rotate_wait: Duration,
    files: BTreeMap<FileId, Tailed>,
    first_scan: bool,
    exclude: Vec<glob::Pattern>,
    multiline: Option<Regex>,
    chooser: Chooser,
    rng: rand::rngs::StdRng,
    keys: KeyExtractor,
    buf: Vec<u8>,
}

impl StreamRunner {
    /// Prepares the runner; fails only on invalid patterns (already checked by validation).
    pub fn new(
        shared: Arc<StreamShared>,
        metrics: Arc<Metrics>,
        budget: Arc<Budget>,
        retries: Receiver<Retry>,
        stop: Arc<AtomicBool>,
        poll: Duration,
        rotate_wait: Duration,
    ) -> anyhow::Result<StreamRunner> {
        let c = &shared.config;
        let exclude = c.exclude.iter().map(|p| glob::Pattern::new(p)).collect::<Result<_, _>>()?;
        let multiline = c.multiline_start.as_deref().map(Regex::new).transpose()?;
        let keys = KeyExtractor::new(c)?;
        Ok(StreamRunner {
            shared,
            metrics,
            budget,
            retries,
            pending_retries: Vec::new(),
            retry_after: Instant::now(),
            retry_rounds: 0,
            stop,
            poll,
            rotate_wait,
            files: BTreeMap::new(),
            first_scan: true,
            exclude,
            multiline,
            chooser: Chooser::default(),
            rng: rand::SeedableRng::from_os_rng(),
            keys,
            buf: vec![0; CHUNK],
        })
    }

    fn name(&self) -> &str {
        &self.shared.config.name
    }

    /// The loop. Returns when `stop` is set; what was read but not sent stays unacknowledged and
    /// is read again after a restart.
    pub fn run(mut self) {
        let mut last_scan: Option<Instant> = None;
        while !self.stop.load(Ordering::Relaxed) {
            self.process_retries();
            if last_scan.is_none_or(|t| t.elapsed() >= self.poll) {
                self.rescan();
                last_scan = Some(Instant::now());
            }
            let ids: Vec<FileId> = self.files.keys().copied().collect();
            let mut progressed = false;
            for id in ids {
                if self.stop.load(Ordering::Relaxed) {
                    break;
                }
                progressed |= self.read_file(id);
            }
            if !progressed {
                // Idle: wait for the next poll, waking early when a retry arrives.
                if let Ok(r) = self.retries.recv_timeout(self.poll.min(Duration::from_millis(50))) {
                    self.shared.producer.context().retries_waiting.fetch_sub(1, Ordering::AcqRel);
                    self.pending_retries.push(r);
                }
            }
        }
        tracing::info!(stream = %self.name(), "stream stopped");
    }

    fn excluded(&self, path: &std::path::Path) -> bool {
        self.exclude.iter().any(|p| p.matches_path(path))
    }

    fn rescan(&mut self) {
        let name = self.name().to_owned();
        let mut seen: BTreeMap<FileId, PathBuf> = BTreeMap::new();
        for pattern in &self.shared.config.paths {
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
            self.check_truncation(id, &seen);
        }
        self.release_finished_orphans();
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
        rotation::search_dirs(&self.shared.config.paths, seen.values().map(PathBuf::as_path), extra)
    }

    /// At start: every checkpoint whose file is not among the glob matches describes a file
    /// rotated (renamed, copied) while the agent was down. Find it by inode or head and finish
    /// it from the checkpoint, so no line written before the rotation is lost.
    fn recover_checkpoints(&mut self, seen: &BTreeMap<FileId, PathBuf>) {
        let name = self.name().to_owned();
        let (checkpoints, errors) = self.shared.store.list();
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
                    if !found.same_inode {
                        let _ = self.shared.store.remove(c.id);
                    }
                    self.start(found.id, found.path, found.file, c.offset, c.fingerprint(), true);
                }
                None => {
                    self.metrics.error(&name, "rotated-file-gone");
                    tracing::warn!(stream = %name, path = %c.path, offset = c.offset,
                        "the file of a checkpoint is gone (compressed or deleted while the agent was down); anything it held past the offset could not be read");
                    let _ = self.shared.store.remove(c.id);
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
        let offset = match self.shared.store.load(id) {
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
            Ok(None) if self.first_scan && self.shared.config.start_at == StartAt::End => size,
            Ok(None) => 0,
            Err(e) => {
                self.metrics.error(&name, "checkpoint");
                tracing::error!(stream = %name, path = %path.display(), error = %e,
                    "corrupt checkpoint; shipping the file from the start (duplicates rather than loss)");
                if let Err(e) = self.shared.store.quarantine(id) {
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
        if let Err(e) =
            self.shared.store.save(&Checkpoint::new(&track.with(|s| s.path.clone()), id, fingerprint, offset))
        {
            self.metrics.error(&name, "checkpoint");
            tracing::error!(stream = %name, error = %e, "writing a checkpoint failed");
        }
        self.shared.tracks.lock().unwrap_or_else(PoisonError::into_inner).insert(id, track.clone());
        let splitter = Splitter::new(self.shared.config.max_message_bytes, self.multiline.clone());
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
    fn check_truncation(&mut self, id: FileId, seen: &BTreeMap<FileId, PathBuf>) {
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
                // A longer head identifies the file better after a restart: save it.
                let new_fp = Fingerprint::read(&t.file).unwrap_or(fp);
                t.track.with(|s| {
                    s.dirty |= s.fingerprint != new_fp;
                    s.fingerprint = new_fp;
                });
            }
            return;
        }
        let (path, read, last_size) = (t.track.with(|s| s.path.clone()), t.offset, t.track.with(|s| s.size));
        self.metrics.truncations.get_or_create(&Metrics::stream(&name)).inc();
        let dirs = self.search_dirs(seen, Some(&path));
        let tailed: BTreeSet<FileId> = self.files.keys().chain(seen.keys()).copied().collect();
        let copy = rotation::find(id, fp, read, &dirs, &|f| tailed.contains(&f)).filter(|f| f.id != id);
        let Some(old) = self.files.remove(&id) else { return };
        self.shared.tracks.lock().unwrap_or_else(PoisonError::into_inner).remove(&id);
        match copy {
            Some(found) => {
                tracing::info!(stream = %name, path = %path.display(), copy = %found.path.display(), read,
                    "file truncated (copytruncate); finishing the copy, then the file from the start");
                self.metrics.recovered_files.get_or_create(&Metrics::stream(&name)).inc();
                let Tailed { track, splitter, batch, last_data, .. } = old;
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
                if let Err(e) = self.shared.store.save(&Checkpoint::new(&found.path, found.id, fp, acked)) {
                    self.metrics.error(&name, "checkpoint");
                    tracing::error!(stream = %name, error = %e, "writing a checkpoint failed");
                }
                self.shared.tracks.lock().unwrap_or_else(PoisonError::into_inner).insert(found.id, track.clone());
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
                splitter.flush_partial(offset, &mut |d: &[u8], e: u64, _tr: bool| push_event(&mut batch, d, e));
                splitter.flush_pending(&mut |d: &[u8], e: u64, _tr: bool| push_event(&mut batch, d, e));
                drop(file);
                self.send_leftover(&track, batch);
            }
        }
        // The file itself starts again from 0.
        match File::open(&path) {
            Ok(file) if file.metadata().is_ok_and(|m| FileId::of(&m) == id) => {
                let fingerprint = Fingerprint::read(&file).unwrap_or_default();
                self.start(id, path, file, 0, fingerprint, false);
            }
            // Gone or replaced meanwhile: the next scan opens whatever is at the path.
            other => {
                tracing::info!(stream = %name, path = %path.display(), error = ?other.err(), "truncated file not reopened");
                let _ = self.shared.store.remove(id);
            }
        }
    }

    /// Sends the lines of a file that is no longer tailed.
    fn send_leftover(&mut self, track: &Arc<FileTrack>, batch: Batch) {
        let max_lines = self.shared.config.batch_lines.max(1);
        let mut start = 0;
        while start < batch.spans.len() && !self.stop.load(Ordering::Relaxed) {
            let end = (start + max_lines).min(batch.spans.len());
            if self.send_group(track, &batch, start, end) {
                start = end;
            } else {
                // Budget is held by records to retry: send those, then wait for the next
                // delivery report (a retry or a release of budget) before trying again.
                self.retry_after = Instant::now();
                self.process_retries();
                if let Ok(r) = self.retries.recv_timeout(Duration::from_millis(20)) {
                    self.shared.producer.context().retries_waiting.fetch_sub(1, Ordering::AcqRel);
                    self.pending_retries.push(r);
                }
            }
        }
    }

    fn release_finished_orphans(&mut self) {
        let at_end: Vec<FileId> = self
            .files
            .iter()
            .filter(|(_, t)| {
                // Writers may keep their descriptor after a rename (until a reopen signal), so a
                // file outside the globs is read until it has been idle for rotate-wait.
                t.unseen_scans >= 1
                    && t.last_data.elapsed() >= self.rotate_wait
                    && t.batch.spans.is_empty()
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
                splitter.flush_partial(*offset, &mut |d: &[u8], e: u64, _tr: bool| push_event(batch, d, e));
                splitter.flush_pending(&mut |d: &[u8], e: u64, _tr: bool| push_event(batch, d, e));
                self.send_batch(id, true);
                continue;
            }
            if t.track.with(|s| s.acks.acked() < t.offset) {
                continue;
            }
            if let Some(t) = self.files.remove(&id) {
                let path = t.track.with(|s| s.path.clone());
                tracing::info!(stream = %self.name(), path = %path.display(), "finished a rotated or deleted file");
                self.shared.tracks.lock().unwrap_or_else(PoisonError::into_inner).remove(&id);
                self.metrics
                    .lag_bytes
                    .remove(&FileLabel { stream: self.name().to_owned(), path: path.display().to_string() });
                if let Err(e) = self.shared.store.remove(id) {
                    tracing::warn!(stream = %self.name(), error = %e, "removing a checkpoint failed");
                }
            }
        }
    }

    /// Reads up to one pass worth of a file; returns whether anything was read or sent.
    fn read_file(&mut self, id: FileId) -> bool {
        let name = self.name().to_owned();
        let multiline_timeout = Duration::from_millis(self.shared.config.multiline_timeout_ms);
        let mut read_total = 0usize;
        // Lines read and not yet sent are bounded: while the budget is exhausted, reading stops.
        let unsent_cap = self.shared.config.batch_bytes.max(CHUNK) * 2;
        loop {
            let Some(t) = self.files.get_mut(&id) else { return false };
            if t.batch.data.len() >= unsent_cap {
                self.send_batch(id, false);
                if self.files.get(&id).is_some_and(|t| t.batch.data.len() >= unsent_cap) {
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
                    splitter.flush_pending(&mut |d: &[u8], e: u64, _tr: bool| push_event(batch, d, e));
                }
                let size = t.file.metadata().map(|m| m.len()).unwrap_or(t.offset);
                t.track.with(|s| s.size = size);
                let sent = !t.batch.spans.is_empty();
                if size < t.offset {
                    // Noticed at the next rescan, which also knows the glob matches.
                    return true;
                }
                self.send_batch(id, true);
                return read_total > 0 || sent;
            }
            let Tailed { splitter, batch, offset, .. } = t;
            let mut truncated = 0u64;
            splitter.push(&self.buf[..n], *offset, &mut |d: &[u8], e: u64, tr: bool| {
                truncated += u64::from(tr);
                push_event(batch, d, e);
            });
            *offset += n as u64;
            t.last_data = Instant::now();
            let off = *offset;
            let (fp, head_grew) = t.track.with(|s| {
                s.read_offset = off;
                s.size = s.size.max(off);
                (
                    s.fingerprint,
                    (s.fingerprint.len as usize) < checkpoint::FINGERPRINT_BYTES && off > u64::from(s.fingerprint.len),
                )
            });
            if head_grew {
                // The head identifies the file after a restart (a copytruncate while the agent
                // was down is told by it). A file first seen empty gets its head now, and the
                // checkpoint has it before any of these lines is sent.
                let new_fp = Fingerprint::read(&t.file).unwrap_or(fp);
                let (path, acked) = t.track.with(|s| {
                    s.dirty |= s.fingerprint != new_fp;
                    s.fingerprint = new_fp;
                    (s.path.clone(), s.acks.acked())
                });
                if fp.len == 0 && new_fp.len > 0 {
                    let id = t.track.with(|s| s.id);
                    if let Err(e) = self.shared.store.save(&Checkpoint::new(&path, id, new_fp, acked)) {
                        tracing::error!(stream = %name, error = %e, "writing a checkpoint failed");
                    }
                }
            }
            if truncated > 0 {
                self.metrics.truncated_lines.get_or_create(&Metrics::stream(&name)).inc_by(truncated);
            }
            read_total += n;
            if !self.send_batch(id, false) {
                return true;
            }
            if read_total >= PER_FILE_PASS {
                return true;
            }
        }
    }

    /// Sends the file's batch in groups of `batch-lines`/`batch-bytes`, each to one partition.
    /// Unless `all`, an incomplete last group waits for more lines. Returns false when stopping.
    fn send_batch(&mut self, id: FileId, all: bool) -> bool {
        let (max_lines, max_bytes) = (self.shared.config.batch_lines, self.shared.config.batch_bytes);
        let Some(mut batch) = self.files.get_mut(&id).map(|t| std::mem::take(&mut t.batch)) else { return true };
        let Some(track) = self.files.get(&id).map(|t| t.track.clone()) else { return true };
        let mut start = 0;
        let mut ok = true;
        while start < batch.spans.len() {
            let mut end = start;
            let mut bytes = 0;
            while end < batch.spans.len()
                && end - start < max_lines
                && (bytes == 0 || bytes + batch.spans[end].1 <= max_bytes)
            {
                bytes += batch.spans[end].1;
                end += 1;
            }
            let full = end - start >= max_lines || end < batch.spans.len();
            if !full && !all {
                break;
            }
            if !self.send_group(&track, &batch, start, end) {
                ok = false;
                break;
            }
            start = end;
        }
        // Keep what was not sent.
        if start > 0 {
            let cut = batch.spans.get(start).map_or(batch.data.len(), |s| s.0);
            batch.data.drain(..cut);
            batch.spans.drain(..start);
            for s in &mut batch.spans {
                s.0 -= cut;
            }
        }
        if let Some(t) = self.files.get_mut(&id) {
            t.batch = batch;
        }
        ok
    }

    /// Waits for a partition to write to; false when stopping.
    fn wait_for_routing(&self) -> bool {
        let strategy = self.shared.config.partitioning;
        loop {
            if !self.shared.routing.read().unwrap_or_else(PoisonError::into_inner).candidates(strategy).is_empty() {
                return true;
            }
            if self.stop.load(Ordering::Relaxed) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn send_group(&mut self, track: &Arc<FileTrack>, batch: &Batch, start: usize, end: usize) -> bool {
        let name = self.shared.config.name.clone();
        let strategy = self.shared.config.partitioning;
        let spans = &batch.spans[start..end];
        let charge: u64 = spans.iter().map(|s| s.1 as u64 + PER_MESSAGE_OVERHEAD).sum();
        // Records waiting for a retry hold budget that only this thread can free by sending
        // them again: never wait for budget while there are any (a long outage would otherwise
        // stall the stream for good).
        let waiting = self.shared.producer.context().retries_waiting.clone();
        let has_retries = !self.pending_retries.is_empty();
        let interrupt = move || has_retries || waiting.load(Ordering::Acquire) > 0;
        if !self.wait_for_routing() || !self.budget.acquire(charge, &self.stop, &interrupt) {
            return false;
        }
        let routing = self.shared.routing.read().unwrap_or_else(PoisonError::into_inner).clone();
        let candidates = routing.candidates(strategy);
        let group_bytes: u64 = spans.iter().map(|s| s.1 as u64).sum();
        let Some(partition) = self.chooser.for_batch(strategy, candidates, group_bytes, &mut self.rng) else {
            self.budget.release(charge);
            return false;
        };
        let Some(last) = spans.last() else {
            self.budget.release(charge);
            return true;
        };
        let ack = BatchAck::dispatch(track, last.2, spans.len());
        let topic = self.shared.config.topic.clone();
        let mut payload_bytes = 0u64;
        for &(s, len, _) in spans {
            let line = &batch.data[s..s + len];
            payload_bytes += len as u64;
            let key = self.keys.key(line);
            let p = match (&key, strategy) {
                (Some(k), Partitioning::Keyed) => keyed_partition(k, routing.count),
                (None, Partitioning::Keyed) => {
                    self.metrics.error(&name, "key-missing");
                    partition
                }
                _ => partition,
            };
            self.send_one(&topic, line, key.as_deref(), p, ack.clone());
        }
        let label = Metrics::stream(&name);
        self.metrics.lines.get_or_create(&label).inc_by(spans.len() as u64);
        self.metrics.bytes.get_or_create(&label).inc_by(payload_bytes);
        self.metrics.batches.get_or_create(&label).inc();
        true
    }

    fn send_one(&mut self, topic: &str, payload: &[u8], key: Option<&[u8]>, partition: i32, ack: Arc<BatchAck>) {
        let mut record = BaseRecord::with_opaque_to(topic, ack).payload(payload).partition(partition);
        if let Some(k) = key {
            record = record.key(k);
        }
        loop {
            match self.shared.producer.send(record) {
                Ok(()) => return,
                Err((e, r)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) => {
                    // librdkafka's queue is sized above our budget, so this is rare: give its
                    // thread a moment to drain.
                    self.shared.producer.poll(Duration::from_millis(5));
                    record = r;
                    if self.stop.load(Ordering::Relaxed) {
                        return;
                    }
                }
                Err((e, r)) => {
                    tracing::debug!(stream = %self.name(), error = %e, "send refused; will retry");
                    self.metrics.error(self.name(), "delivery");
                    self.pending_retries.push(Retry {
                        payload: payload.to_vec(),
                        key: key.map(<[u8]>::to_vec),
                        ack: r.delivery_opaque,
                    });
                    return;
                }
            }
        }
    }

    fn process_retries(&mut self) {
        let waiting = self.shared.producer.context().retries_waiting.clone();
        while let Ok(r) = self.retries.try_recv() {
            waiting.fetch_sub(1, Ordering::AcqRel);
            self.pending_retries.push(r);
        }
        if self.pending_retries.is_empty() {
            if waiting.load(Ordering::Acquire) == 0 {
                self.retry_rounds = 0;
            }
            return;
        }
        if Instant::now() < self.retry_after {
            return;
        }
        if !self.wait_for_routing() {
            return;
        }
        let strategy = self.shared.config.partitioning;
        let topic = self.shared.config.topic.clone();
        let retries = std::mem::take(&mut self.pending_retries);
        tracing::debug!(stream = %self.name(), records = retries.len(), "re-sending failed records");
        for r in retries {
            let routing = self.shared.routing.read().unwrap_or_else(PoisonError::into_inner).clone();
            let p = match (&r.key, strategy) {
                (Some(k), Partitioning::Keyed) => keyed_partition(k, routing.count),
                _ => match self.chooser.for_batch(
                    strategy,
                    routing.candidates(strategy),
                    r.payload.len() as u64,
                    &mut self.rng,
                ) {
                    Some(p) => p,
                    None => {
                        self.pending_retries.push(r);
                        continue;
                    }
                },
            };
            self.send_one(&topic, &r.payload, r.key.as_deref(), p, r.ack);
        }
        // Back off while records keep failing (an outage, a refusal), up to a few seconds.
        self.retry_rounds = self.retry_rounds.saturating_add(1);
        let backoff = RETRY_BACKOFF.saturating_mul(1 << self.retry_rounds.min(5)).min(MAX_RETRY_BACKOFF);
        self.retry_after = Instant::now() + backoff;
    }
}

fn push_event(batch: &mut Batch, data: &[u8], end: u64) {
    let start = batch.data.len();
    batch.data.extend_from_slice(data);
    batch.spans.push((start, data.len(), end));
}
