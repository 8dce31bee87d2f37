//! A partition's offsets are checked against its topic's id before it is read (`coord::topic_id`):
//! a topic deleted and created again under its name would otherwise be read from the old
//! topic's offsets, skipping its first records with nothing counted.
//!
//! ```text
//!  topic id (DescribeTopics, cached a minute) ──unknown (broker before 2.8)──> read (not checked)
//!  recorded id ──none──> record it ──> read      ──same──> read
//!              ──other──> hold (topic-recreated, once) ── offsets --set drops it ──> record ──> read
//! ```

use std::sync::PoisonError;
use std::time::{Duration, Instant};

use az_core::TopicPartition;
use tokio::sync::watch;

use super::{Stop, Worker};
use crate::coord::{self, LeaseState};
use crate::metrics::ErrorKind;

/// How long a topic's id is taken as known.
const TOPIC_ID_FRESH: Duration = Duration::from_secs(60);

impl Worker {
    /// The id of `topic`, asked of the cluster at most once a minute; `None` when the cluster
    /// does not say (then nothing is checked).
    pub(super) async fn topic_id(&self, topic: &str) -> Option<String> {
        if let Some((id, at)) = self.topic_ids.lock().unwrap_or_else(PoisonError::into_inner).get(topic)
            && at.elapsed() < TOPIC_ID_FRESH
        {
            return id.clone();
        }
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
                return None;
            }
            Err(_) => return None,
        };
        self.topic_ids
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(topic.to_owned(), (id.clone(), Instant::now()));
        id
    }

    /// Where an owned partition with committed offset `committed` starts: there, once its
    /// topic's id is the one recorded (or recorded now). Held while another id is recorded,
    /// until an operator sets the offset; `None` when told to stop or fenced first.
    pub(super) async fn same_topic(
        &self,
        tp: &TopicPartition,
        mut committed: i64,
        lease: &watch::Receiver<LeaseState>,
        stop: &mut watch::Receiver<Stop>,
    ) -> Option<i64> {
        let mut reported = false;
        loop {
            let Some(current) = self.topic_id(&tp.topic).await else { return Some(committed) };
            let l = *lease.borrow();
            let wait = match coord::topic_id::recorded(&self.etcd, &self.keys, tp).await {
                Ok(Some(r)) if r == current => return Some(committed),
                Ok(None) => match coord::topic_id::record(&self.etcd, &self.keys, tp, &current, &self.id, l.id).await {
                    Ok(true) => return Some(committed),
                    Ok(false) => return None,
                    Err(e) => {
                        tracing::warn!(partition = %tp, error = %format!("{e:#}"), "recording the topic id failed; trying again");
                        Duration::from_millis(500)
                    }
                },
                Ok(Some(recorded)) => {
                    if !reported {
                        let kind = ErrorKind::TopicRecreated;
                        self.metrics.error(kind);
                        tracing::error!(kind = kind.as_str(), partition = %tp, recorded, current, committed,
                            "the topic was created again since its offsets were committed; the partition is held until an operator sets its offset (zonal-transporter offsets --set {tp}=<offset>)");
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
