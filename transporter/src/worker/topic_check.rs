//! A partition's offsets are checked against its topic's id before it is read (`coord::topic_id`),
//! and again before each of its uploads and in each commit: a topic deleted and created again
//! under its name would otherwise be read from the old topic's offsets, skipping its first
//! records with nothing counted.
//!
//! ```text
//!  topic id (DescribeTopics, cached a minute) ──unknown (broker before 2.8)──> read (not checked)
//!  recorded id ──none──> record it ──> read      ──same──> read
//!              ──other──> hold (topic-recreated, once) ── offsets --set drops it ──> record ──> read
//!  while owned: before an upload, the id now = the id at start?  no ──> the partition starts again (held above)
//!               the commit's transaction: recorded id = the id at start?  no ──> likewise, nothing committed
//! ```

use std::sync::PoisonError;
use std::time::{Duration, Instant};

use az_core::TopicPartition;
use tokio::sync::watch;

use super::partition::Started;
use super::{Stop, Worker};
use crate::coord::{self, LeaseState};
use crate::metrics::ErrorKind;

/// How long a topic's id is taken as known when checked.
pub(super) const TOPIC_ID_FRESH: Duration = Duration::from_secs(60);

/// How fresh an id must be to be recorded: the partitions of a topic starting together share
/// one question, and an id from before a re-creation is not written as the new topic's.
pub(super) const TOPIC_ID_TO_RECORD: Duration = Duration::from_secs(5);

impl Worker {
    /// Before an upload: the id the partition started with (when known), as long as the topic
    /// still has it. An error otherwise (the topic was created again while owned): nothing is
    /// uploaded or committed, and the partition starts again, where `same_topic` holds it.
    ///
    /// Uploads do not wait on Kafka for it: the last answer (or failure) serves for a minute,
    /// then one roll asks again while the others go on with the last answer.
    pub(super) async fn topic_unchanged(&self, tp: &TopicPartition) -> anyhow::Result<Option<String>> {
        let started =
            self.owned.lock().unwrap_or_else(PoisonError::into_inner).get(tp).and_then(|s| s.topic_id.clone());
        let Some(started) = started else { return Ok(None) };
        let last = self.topic_ids.lock().unwrap_or_else(PoisonError::into_inner).get(&tp.topic).cloned();
        let now = match last {
            Some((id, at)) if at.elapsed() < TOPIC_ID_FRESH => id,
            last => match self.topic_lookup.try_lock() {
                Ok(_asking) => self.ask_topic_id(&tp.topic).await,
                Err(_) => last.and_then(|(id, _)| id),
            },
        };
        match now {
            Some(now) if now != started => {
                let kind = ErrorKind::TopicRecreated;
                self.metrics.error(kind);
                anyhow::bail!(
                    "{tp}: the topic was created again while owned (id {started} at start, {now} now); nothing more is uploaded from it"
                )
            }
            _ => Ok(Some(started)),
        }
    }

    /// The id of `topic`, as asked of the cluster at most `fresh` ago; `None` when the cluster
    /// does not say (then nothing is checked). Only an id counts here: a topic missing between
    /// its deletion and its creation again is asked again next time.
    pub(super) async fn topic_id(&self, topic: &str, fresh: Duration) -> Option<String> {
        let cached = || {
            self.topic_ids
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(topic)
                .filter(|(_, at)| at.elapsed() < fresh)
                .and_then(|(id, _)| id.clone())
        };
        if let Some(id) = cached() {
            return Some(id);
        }
        // One question at a time: the partitions of a topic starting together wait for the
        // first one's answer instead of each asking.
        let _asking = self.topic_lookup.lock().await;
        if let Some(id) = cached() {
            return Some(id);
        }
        self.ask_topic_id(topic).await
    }

    /// Asks the cluster for `topic`'s id (the caller holds `topic_lookup`) and keeps the answer
    /// with its time; a failure or a missing topic is kept as `None`, which `topic_id` asks
    /// again but `topic_unchanged` does not, for a minute.
    async fn ask_topic_id(&self, topic: &str) -> Option<String> {
        let consumer = self.consumer.clone();
        let topics = vec![topic.to_owned()];
        let asked = tokio::task::spawn_blocking(move || {
            az_core::topology::topic_ids(
                rdkafka::consumer::Consumer::client(&*consumer),
                &topics,
                Duration::from_secs(5),
            )
        })
        .await;
        let id = match asked {
            Ok(Ok(ids)) => ids.get(topic).cloned(),
            Ok(Err(e)) => {
                tracing::debug!(topic, error = %e, "the topic's id could not be asked for");
                None
            }
            Err(_) => None,
        };
        self.topic_ids
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(topic.to_owned(), (id.clone(), Instant::now()));
        id
    }

    /// Where an owned partition with committed offset `committed` starts: there, once its
    /// topic's id is the one recorded (or recorded now), with that id. Held while another id is recorded,
    /// until an operator sets the offset; `None` when told to stop or fenced first. The first
    /// look at the recorded id is `recorded` when the taking transaction read it.
    pub(super) async fn same_topic(
        &self,
        tp: &TopicPartition,
        mut committed: i64,
        mut recorded: Option<Option<String>>,
        lease: &watch::Receiver<LeaseState>,
        stop: &mut watch::Receiver<Stop>,
    ) -> Option<Started> {
        let unchecked = |offset| Some(Started { offset, topic_id: None });
        let mut reported = false;
        loop {
            let fresh = if reported { Duration::ZERO } else { TOPIC_ID_FRESH };
            let Some(current) = self.topic_id(&tp.topic, fresh).await else { return unchecked(committed) };
            let l = *lease.borrow();
            let read = match recorded.take() {
                Some(r) => Ok(r),
                None => coord::topic_id::recorded(&self.etcd, &self.keys, tp).await,
            };
            let wait = match read {
                Ok(Some(r)) if r == current => return Some(Started { offset: committed, topic_id: Some(current) }),
                // Recorded from a fresh answer (not an id cached before a re-creation); the
                // offset is read again after, since an operator's `offsets --set` may have come
                // between the first read and the record.
                Ok(None) => match self.topic_id(&tp.topic, TOPIC_ID_TO_RECORD).await {
                    None => return unchecked(committed),
                    Some(id) => match coord::topic_id::record(&self.etcd, &self.keys, tp, &id, &self.id, l.id).await {
                        Ok(true) => {
                            let offset = match coord::committed(&self.etcd, &self.keys, tp).await {
                                Ok(Some(now)) => now,
                                _ => committed,
                            };
                            return Some(Started { offset, topic_id: Some(id) });
                        }
                        Ok(false) => return None,
                        Err(e) => {
                            tracing::warn!(partition = %tp, error = %format!("{e:#}"), "recording the topic id failed; trying again");
                            Duration::from_millis(500)
                        }
                    },
                },
                Ok(Some(recorded)) => {
                    if !reported {
                        let kind = ErrorKind::TopicRecreated;
                        self.metrics.error(kind);
                        tracing::error!(kind = kind.as_str(), partition = %tp, recorded, current, committed,
                            "the topic was created again since its offsets were committed; the partition is held until an operator sets its offset (zonal-transporter offsets --set {tp}=<offset> --while-owned)");
                        reported = true;
                    }
                    Duration::from_secs(2)
                }
                Err(e) => {
                    tracing::warn!(partition = %tp, error = %format!("{e:#}"), "reading the recorded topic id failed; trying again");
                    Duration::from_millis(500)
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => {}
            }
            if *stop.borrow() != Stop::Run || !lease.borrow().valid() {
                return None;
            }
            // An operator's offset comes with the recorded id dropped: start from it.
            if let Ok(Some(set)) = coord::committed(&self.etcd, &self.keys, tp).await {
                committed = set;
            }
        }
    }
}
