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
//!
//! One concern per file, all of them methods of the one [`Tailer`]:
//!
//! - `discover`: what the globs match; renames of known files; new files opened at their
//!   checkpoint.
//! - `recover`: files rotated while the agent was down, found again from their checkpoints.
//! - `truncate`: a copytruncate noticed while tailing; a growing head saved at once.
//! - `lifecycle`: a file starting to be tailed (track, first checkpoint) and being let go.
//! - `read`: chunks to events to groups handed to the [`Dispatch`].
//! - `model` (tests only): the tailer against a model of file operations and crashes.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use regex::bytes::Regex;

use crate::batch::{Batch, Limits};
use crate::checkpoint::{FileId, Store};
use crate::config::StreamConfig;
use crate::lines::Splitter;
use crate::metrics::Metrics;
use crate::track::{FileTrack, Tracks};

mod discover;
mod idle;
mod lifecycle;
#[cfg(test)]
mod model;
mod read;
mod recover;
mod renumber;
mod truncate;

/// Bytes asked of a file per read; one buffer of this size serves every file of the stream.
const CHUNK: usize = 256 * 1024;
/// Bytes read from one file before the loop moves on to the next, for fairness.
const PER_FILE_PASS: usize = 4 * 1024 * 1024;

/// The files the globs matched at one scan, by identity, each with the first path it matched at.
type Matches = BTreeMap<FileId, PathBuf>;

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

/// One file being tailed.
struct Tailed {
    /// The open descriptor: a file renamed away or deleted is still read through it. `None`
    /// while the file is closed for being idle at its end (`close-idle-secs`, or to stay under
    /// `max-open-files`); it is reopened by identity when it changes.
    file: Option<File>,
    /// What the checkpointer, `/status` and the delivery reports share of the file.
    track: Arc<FileTrack>,
    /// Cuts what is read into events; holds back a partial last line and a multi-line event
    /// that may still continue.
    splitter: Splitter,
    /// Bytes of the file read so far: where the next read starts.
    offset: u64,
    /// When bytes were last read, for the multi-line timeout and rotate-wait.
    last_data: Instant,
    /// Scans in a row whose globs did not match the file; a file outside the globs from the
    /// start (one found again after a rotation) begins at 1.
    unseen_scans: u32,
    /// Events read and not yet sent.
    batch: Batch,
}

impl Tailed {
    /// Moves a multi-line event still waiting for its continuation into the batch: the
    /// continuation did not come in time, and the event must not wait for ever.
    fn flush_pending(&mut self) {
        let Tailed { splitter, batch, .. } = self;
        splitter.flush_pending(&mut |d: &[u8], e: u64, _tr: bool, m| batch.push(d, e, m));
    }

    /// Moves everything the splitter holds back into the batch, an unterminated last line
    /// included: the file will not be read any further, so that line never gets its newline.
    fn flush_all(&mut self) {
        let Tailed { splitter, batch, offset, .. } = self;
        splitter.flush_partial(*offset, &mut |d: &[u8], e: u64, _tr: bool, m| batch.push(d, e, m));
        splitter.flush_pending(&mut |d: &[u8], e: u64, _tr: bool, m| batch.push(d, e, m));
    }
}

/// The files of one stream.
pub struct Tailer {
    /// The stream's name, for logs and metric labels.
    name: String,
    config: StreamConfig,
    /// How large a group may be (`batch-lines`, `batch-bytes`).
    limits: Limits,
    store: Store,
    tracks: Tracks,
    metrics: Arc<Metrics>,
    /// How long a file outside the globs is read after its last data before it is let go.
    rotate_wait: Duration,
    /// The files being tailed, by identity.
    files: BTreeMap<FileId, Tailed>,
    /// No scan has run yet: `start-at = end` applies only then, and only then do checkpoints
    /// that the globs do not match describe files rotated while the agent was down.
    first_scan: bool,
    exclude: Vec<glob::Pattern>,
    /// The multi-line start pattern, which every file's splitter gets a copy of.
    multiline: Option<Regex>,
    /// The read buffer, one for all files since they are read one after the other.
    buf: Vec<u8>,
    /// Checkpoints whose files could not be told found or gone (their folder could not be
    /// listed): looked for again at every scan, never removed meanwhile.
    deferred: Vec<crate::checkpoint::Checkpoint>,
    /// What the globs matched at the last scan: a truncation noticed between scans is handled
    /// with it.
    last_seen: Matches,
    /// When the agent first tailed this stream (`None`: now). `start-at = end` skips only
    /// what files created before then hold.
    first_start: Option<std::time::SystemTime>,
    /// The most memory the files' batches (lines read, not yet sent) may hold together.
    unsent_limit: usize,
    /// What the batches of the files other than the one being read hold (kept by `read_all`
    /// so that a read does not add up every file's batch).
    others_unsent: usize,
    /// A file idle at its end this long is closed.
    close_idle: Duration,
    /// The most files this stream keeps open.
    max_open: usize,
    /// This host's name, for the files' `zonal.source` headers.
    host: String,
    /// Why the last scan could not list every folder of the globs, for `/status` and `/readyz`.
    listing: Arc<std::sync::Mutex<Option<String>>>,
    /// Checkpoints staged to identify files and not yet written.
    unflushed: bool,
    /// The model's listing failure: the globs yield nothing while the files are there.
    #[cfg(test)]
    listing_fails: bool,
    /// The file the next pass starts at: a pass cut short by its deadline goes on from there,
    /// so every file gets its turn however many there are.
    cursor: FileId,
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
        let first_start = store.first_start().map(|t| if store.lost_some() { Some(std::time::UNIX_EPOCH) } else { t });
        let first_start = first_start.unwrap_or_else(|e| {
            // Unknown: every file without a checkpoint is read from its start (duplicates
            // rather than loss).
            tracing::error!(stream = %config.name, error = %e, "when this stream was first tailed is unknown; files without a checkpoint start at byte 0");
            Some(std::time::UNIX_EPOCH)
        });
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
            deferred: Vec::new(),
            last_seen: Matches::new(),
            first_start,
            host: crate::record::host_name(),
            unsent_limit: 16 * 1024 * 1024,
            close_idle: Duration::from_secs(300),
            max_open: usize::MAX,
            others_unsent: 0,
            cursor: FileId { dev: 0, ino: 0 },
            listing: Arc::default(),
            unflushed: false,
            #[cfg(test)]
            listing_fails: false,
        })
    }

    /// The same tailer, its files' unsent lines held to `limit` bytes together.
    pub fn with_unsent_limit(mut self, limit: u64) -> Tailer {
        // Room for a chunk at least, however small the share.
        self.unsent_limit = usize::try_from(limit).unwrap_or(usize::MAX).max(2 * CHUNK);
        self
    }

    /// The same tailer, closing files idle at their end for `close_idle` and keeping at most
    /// `max_open` open.
    pub fn with_descriptors(mut self, close_idle: Duration, max_open: usize) -> Tailer {
        self.close_idle = close_idle;
        self.max_open = max_open.max(1);
        self
    }

    /// The same tailer, reporting its listing failures to `report`.
    pub fn with_listing_report(mut self, report: Arc<std::sync::Mutex<Option<String>>>) -> Tailer {
        self.listing = report;
        self
    }

    /// Memory the files' batches hold together.
    fn unsent_held(&self) -> usize {
        self.files.values().map(|t| t.batch.held()).sum()
    }

    /// Reads every file once (up to a pass each, for fairness) until `deadline`; returns
    /// whether anything was read or sent. A round cut short by the deadline (many busy files
    /// while catching up, a slow Kafka) goes on at the next call from the file it reached, so
    /// that scans keep their cadence and every file its turn.
    pub fn read_all(&mut self, out: &mut impl Dispatch, deadline: Instant) -> bool {
        let ids: Vec<FileId> =
            self.files.range(self.cursor..).chain(self.files.range(..self.cursor)).map(|(id, _)| *id).collect();
        let mut progressed = false;
        let mut total = self.unsent_held();
        let mut ids = ids.into_iter().peekable();
        while let Some(id) = ids.next() {
            if out.stopping() {
                break;
            }
            self.others_unsent = total.saturating_sub(self.held_by(id));
            progressed |= self.read_file(id, out);
            total = self.others_unsent + self.held_by(id);
            self.metrics.unsent_bytes.get_or_create(&Metrics::stream(&self.name)).set(total as u64);
            // At least one file per call, so a deadline already past still makes progress.
            if let Some(&next) = ids.peek()
                && Instant::now() >= deadline
            {
                self.cursor = next;
                break;
            }
        }
        progressed || ids.peek().is_some()
    }

    /// Memory the batch of file `id` holds.
    fn held_by(&self, id: FileId) -> usize {
        self.files.get(&id).map_or(0, |t| t.batch.held())
    }

    /// Lists the globs: follows renames, notices truncations and files that left the globs,
    /// finishes files rotated while the agent was down (first scan) and opens new files.
    pub fn scan(&mut self, out: &mut impl Dispatch) {
        let seen = self.list_globs();
        self.follow_known(&seen);
        self.reopen_changed(&seen);
        let ids: Vec<FileId> = self.files.keys().copied().collect();
        for id in ids {
            self.check_truncation(id, &seen, out);
        }
        self.release_finished_orphans(out);
        if self.first_scan {
            self.recover_checkpoints(&seen);
        } else if !self.deferred.is_empty() {
            self.retry_deferred(&seen);
        }
        // What the globs match and no track follows is new since the last scan (at the first
        // scan, everything is), so it is opened where its checkpoint, if any, says.
        let known: BTreeSet<FileId> = self.files.keys().copied().collect();
        for (id, path) in seen.iter().filter(|(id, _)| !known.contains(id)) {
            // At `max-open-files`, the rest wait for a later scan (their lines stay on disk).
            if !self.room_to_open() {
                break;
            }
            self.open(*id, path.clone());
        }
        self.close_idle();
        self.last_seen = seen;
        self.first_scan = false;
        self.flush_identities();
    }
}
