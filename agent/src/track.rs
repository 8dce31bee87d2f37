//! One tailed file's shared state and the acknowledgement of its batches: the tailer dispatches
//! batches, delivery reports complete them, the checkpointer writes the acknowledged offset.
//!
//! ```text
//!  Tailer ──BatchAck::dispatch(end offset, records)──> FileTrack.acks (AckTracker)
//!  delivery report ──settle_one()── last record of the batch ──> FileTrack.complete
//!  checkpointer ──write_checkpoints()──> Store.save(acked offset) when dirty
//! ```

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::ack::{AckTracker, Ticket};
use crate::checkpoint::{Checkpoint, FileId, Fingerprint, Store};
use crate::metrics::{ErrorKind, Metrics};

/// The tracks of one stream by file, shared by its tailer, the checkpointer and `/status`.
pub type Tracks = Arc<Mutex<BTreeMap<FileId, Arc<FileTrack>>>>;

/// One tailed file's shared state: the stream thread dispatches batches, delivery callbacks
/// complete them, the checkpointer reads the acknowledged offset.
#[derive(Debug)]
pub struct FileTrack {
    state: Mutex<TrackState>,
    /// The pod and container the file belongs to (`pod-metadata`), as record headers.
    pub pod: Option<Arc<crate::container::PodMeta>>,
    /// The file's identity for the `zonal.source` header (`source-headers`), set by the tailer
    /// before the track's first record is sent (it needs the file's first line).
    pub source: std::sync::OnceLock<Arc<str>>,
}

/// What the checkpointer and `/status` read of a file.
#[derive(Debug, Clone)]
pub struct TrackState {
    /// Device and inode of the file the track reads (changes when a copytruncate moves the
    /// track to the copy).
    pub id: FileId,
    /// Current path (updated on rename).
    pub path: std::path::PathBuf,
    /// Fingerprint of the head.
    pub fingerprint: Fingerprint,
    /// Acknowledgements.
    pub acks: AckTracker,
    /// Bytes read so far.
    pub read_offset: u64,
    /// Size at the last look.
    pub size: u64,
    /// The acknowledged offset changed since the last checkpoint write.
    pub dirty: bool,
    /// The file no longer matches any glob (renamed away or deleted).
    pub orphan: bool,
}

impl FileTrack {
    /// A track starting at `offset`.
    pub fn new(id: FileId, path: std::path::PathBuf, fingerprint: Fingerprint, offset: u64) -> FileTrack {
        FileTrack {
            state: Mutex::new(TrackState {
                id,
                path,
                fingerprint,
                acks: AckTracker::new(offset),
                read_offset: offset,
                size: offset,
                dirty: true,
                orphan: false,
            }),
            pod: None,
            source: std::sync::OnceLock::new(),
        }
    }

    /// The same track, its records carrying `pod` as headers.
    pub fn with_pod(mut self, pod: Option<crate::container::PodMeta>) -> FileTrack {
        self.pod = pod.map(Arc::new);
        self
    }

    /// The same track, its records carrying `source` and their offset as headers.
    pub fn with_source(self, source: Option<String>) -> FileTrack {
        if let Some(s) = source {
            let _ = self.source.set(Arc::from(s));
        }
        self
    }

    /// Runs `f` on the state under the lock.
    pub fn with<R>(&self, f: impl FnOnce(&mut TrackState) -> R) -> R {
        f(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn complete(&self, ticket: Ticket) {
        self.with(|s| {
            if s.acks.complete(ticket).is_some() {
                s.dirty = true;
            }
        });
    }
}

impl TrackState {
    /// The checkpoint that records this state: the file as it is now known (identity, path,
    /// head) and the offset acknowledged so far.
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint::new(&self.path, self.id, self.fingerprint, self.acks.acked())
    }
}

/// The shared acknowledgement of one batch; every record of the batch carries a reference.
#[derive(Debug)]
pub struct BatchAck {
    track: Arc<FileTrack>,
    /// What completes the batch in the track's [`AckTracker`].
    ticket: Ticket,
    /// Records of the batch not yet settled; the last one to settle completes the batch.
    remaining: AtomicUsize,
}

impl BatchAck {
    /// Registers a batch of `records` records ending at `end_offset` of the file.
    pub fn dispatch(track: &Arc<FileTrack>, end_offset: u64, records: usize) -> Arc<BatchAck> {
        let ticket = track.with(|s| s.acks.dispatch(end_offset));
        Arc::new(BatchAck { track: track.clone(), ticket, remaining: AtomicUsize::new(records) })
    }

    /// One record is settled (acknowledged, or dropped for good).
    pub fn settle_one(&self) {
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.track.complete(self.ticket);
        }
    }
}

/// Writes the checkpoint of every track of `stream` whose acknowledged offset moved: all of
/// them recorded, then one write of the stream's registry (two fsyncs a round, whatever the
/// number of files).
///
/// The map's lock is held only to list the tracks, not across the write: it fsyncs, and
/// `/metrics`, `/status` and the tailer (a new file, a file let go) take that lock. A track let
/// go or replaced meanwhile is skipped: the check is made under the store's lock, which the
/// tailer's removal of its checkpoint also takes, so a removed checkpoint is never written back.
/// Returns the failure of this round, if any, naming the folder.
pub fn write_checkpoints(stream: &str, store: &Store, tracks: &Tracks, metrics: &Metrics) -> Option<String> {
    let dirty: Vec<(FileId, Arc<FileTrack>)> = tracks
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .filter(|(_, t)| t.with(|s| s.dirty))
        .map(|(id, t)| (*id, t.clone()))
        .collect();
    let mut staged = Vec::with_capacity(dirty.len());
    for (id, t) in dirty {
        let decided = store.stage_with(|| {
            let current =
                tracks.lock().unwrap_or_else(PoisonError::into_inner).get(&id).is_some_and(|x| Arc::ptr_eq(x, &t));
            if !current {
                return None;
            }
            t.with(|s| s.dirty.then(|| s.checkpoint()))
        });
        if let Some(c) = decided {
            staged.push((t, c.offset));
        }
    }
    match store.flush() {
        Ok(()) => {
            // Acknowledgements that arrived meanwhile keep the track dirty for the next round.
            for (t, offset) in staged {
                t.with(|s| s.dirty = s.acks.acked() != offset);
            }
            None
        }
        Err(e) => {
            metrics.error(stream, ErrorKind::Checkpoint);
            tracing::error!(stream, error = %e, "writing the checkpoints failed");
            Some(format!("writing checkpoints in {} failed: {e}", store.dir().display()))
        }
    }
}
