//! The model's Kafka: groups handed over wait until the model acknowledges them, in any order.

use std::ops::Range;
use std::sync::Arc;

use crate::batch::Batch;
use crate::tail::Dispatch;
use crate::track::{BatchAck, FileTrack};

/// Groups handed over and not yet acknowledged, and the lines acknowledged.
#[derive(Default)]
pub(super) struct Kafka {
    pub(super) pending: Vec<Sent>,
    pub(super) delivered: Vec<Vec<u8>>,
}

/// A group handed over to the model Kafka and not acknowledged yet.
pub(super) struct Sent {
    /// What the group's records settle when the model acknowledges them.
    pub(super) ack: Arc<BatchAck>,
    /// The group's lines, delivered when the model acknowledges them.
    pub(super) lines: Vec<Vec<u8>>,
}

impl Kafka {
    pub(super) fn ack(&mut self, i: usize) {
        if self.pending.is_empty() {
            return;
        }
        let Sent { ack, lines } = self.pending.remove(i % self.pending.len());
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
        self.pending.push(Sent { ack, lines: batch.events(range).map(|(d, _)| d.to_vec()).collect() });
        true
    }

    fn make_room(&mut self) {
        self.ack(0);
    }

    fn stopping(&self) -> bool {
        false
    }
}
