//! Partition ownership, the fence that makes exactly-once hold: a worker owns a partition while
//! `/owners/<tp>` holds its id under its lease; offsets are committed only by transactions that
//! re-check that (`commit`), and operators set them only while nobody owns the partition.
//!
//! ```text
//!  acquire:    txn [owner key absent] ──put id (lease), get offset + topic id──> Acquired(Taken)
//!                                     └─else get ──────> Owned { by, revision } (or Acquired: ours, same lease)
//!  owner_released: watch the owner key from revision + 1 for its deletion
//!  committed:  get /offsets/<tp> ──> Some(next) | None | Unreachable (retry) | Invalid (hold)
//!  set_offset: txn [no owner] (unless while_owned) ──put──> Done | Owned { by }
//!  release:    txn [owner = me] ──delete owner key
//! ```

use std::collections::BTreeMap;

use anyhow::Context;
use az_core::TopicPartition;
use etcd_client::{Client, Compare, CompareOp, PutOptions, Txn, TxnOp, TxnResponse};

use super::Keys;
use super::batch::{Answer, Batcher};

/// What [`acquire`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquire {
    /// This worker owns the partition under its current lease; with what the taking
    /// transaction read (None when the key was ours already, from an earlier attempt).
    Acquired(Option<Taken>),
    /// Another owner holds the key: `by` is the id it holds (this worker's own id when the key is
    /// bound to an older lease of ours, which must expire first).
    Owned {
        /// The owner's worker id.
        by: String,
        /// The etcd revision the key was seen at: a watch from the next one sees it go.
        revision: i64,
    },
}

/// What the transaction that took an owner key read in the same revision: the partition's
/// committed offset and recorded topic id. A partition starting reads both at once instead of
/// in two requests after the taking one (at 1,000 partitions starting together, each request
/// waited about 100 ms for etcd).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Taken {
    /// `/offsets/<tp>` as stored, not yet parsed.
    pub offset: Option<String>,
    /// `/topic-ids/<tp>`.
    pub topic_id: Option<String>,
}

impl Taken {
    /// The committed offset read with the key, parsed as [`committed`] parses it.
    pub fn committed(&self, keys: &Keys, tp: &TopicPartition) -> Result<Option<i64>, CommittedError> {
        self.offset.as_deref().map(|v| parse_offset(keys.offset(tp), v)).transpose()
    }
}

/// Tries to become the owner of a partition: succeeds if nobody owns it (or we already do under
/// this lease), and says who does otherwise.
pub async fn acquire(
    txns: &Batcher,
    keys: &Keys,
    tp: &TopicPartition,
    me: &str,
    lease: i64,
) -> anyhow::Result<Acquire> {
    let key = keys.owner(tp);
    let txn = Txn::new()
        .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
        .and_then([
            TxnOp::put(key.clone(), me, Some(PutOptions::new().with_lease(lease))),
            TxnOp::get(keys.offset(tp), None),
            TxnOp::get(keys.topic_id(tp), None),
        ])
        .or_else([TxnOp::get(key.clone(), None)]);
    let Answer { resp, revision } = txns.txn(tp, txn).await.with_context(|| format!("acquiring {key}"))?;
    if resp.succeeded() {
        let mut reads = resp.op_responses().into_iter().filter_map(|r| match r {
            etcd_client::TxnOpResponse::Get(g) => {
                Some(g.kvs().first().map(|kv| String::from_utf8_lossy(kv.value()).into_owned()))
            }
            _ => None,
        });
        let offset = reads.next().flatten();
        let topic_id = reads.next().flatten();
        return Ok(Acquire::Acquired(Some(Taken { offset, topic_id })));
    }
    // The comparison and the read are one transaction, so the key exists; were it gone, the
    // owner is reported as "" and the next attempt takes the key.
    let holder = holder(resp).unwrap_or_default();
    if holder.id == me && holder.lease == lease {
        Ok(Acquire::Acquired(None))
    } else {
        Ok(Acquire::Owned { by: holder.id, revision })
    }
}

/// Waits until the owner key of `tp` is deleted after `revision` (released, or its lease
/// expired), by watching it: one request per waiting partition instead of a poll every 200 ms
/// (at 100,000 partitions after an etcd restart, a poll was 500,000 transactions a second).
/// Returns when the key went, or with an error when the watch could not be set up or broke;
/// the caller bounds the wait (a deletion missed by a compaction is caught by trying again).
pub async fn owner_released(client: &Client, keys: &Keys, tp: &TopicPartition, revision: i64) -> anyhow::Result<()> {
    let mut c = client.clone();
    let key = keys.owner(tp);
    let opts = etcd_client::WatchOptions::new()
        .with_start_revision(revision + 1)
        .with_filters([etcd_client::WatchFilterType::NoPut]);
    let mut stream = c.watch(key.clone(), Some(opts)).await.with_context(|| format!("watching {key}"))?;
    loop {
        let resp = stream.message().await.with_context(|| format!("watching {key}"))?;
        let resp = resp.with_context(|| format!("the watch of {key} ended"))?;
        if resp.canceled() {
            anyhow::bail!("etcd cancelled the watch of {key}: {}", resp.cancel_reason());
        }
        if resp.events().iter().any(|e| e.event_type() == etcd_client::EventType::Delete) {
            return Ok(());
        }
    }
}

/// Who holds an owner key.
#[derive(Debug, Default)]
struct Holder {
    /// The worker id the key holds.
    id: String,
    /// The lease the key is bound to.
    lease: i64,
}

/// The holder of the owner key the `or_else` branch of a transaction read.
fn holder(resp: TxnResponse) -> Option<Holder> {
    resp.op_responses().into_iter().find_map(|r| match r {
        etcd_client::TxnOpResponse::Get(g) => {
            g.kvs().first().map(|kv| Holder { id: String::from_utf8_lossy(kv.value()).into_owned(), lease: kv.lease() })
        }
        _ => None,
    })
}

/// Gives up ownership, if still ours.
pub async fn release(txns: &Batcher, keys: &Keys, tp: &TopicPartition, me: &str) -> anyhow::Result<()> {
    let key = keys.owner(tp);
    let txn = Txn::new().when([Compare::value(key.clone(), CompareOp::Equal, me)]).and_then([TxnOp::delete(key, None)]);
    txns.txn(tp, txn).await.context("releasing a partition")?;
    Ok(())
}

/// The committed offset (next to read), if any; a garbage value is an error naming the key.
pub async fn committed(client: &Client, keys: &Keys, tp: &TopicPartition) -> Result<Option<i64>, CommittedError> {
    let mut c = client.clone();
    let key = keys.offset(tp);
    let resp = c
        .get(key.clone(), None)
        .await
        .map_err(|e| CommittedError::Unreachable(anyhow::Error::new(e).context(format!("reading {key}"))))?;
    match resp.kvs().first() {
        None => Ok(None),
        Some(kv) => parse_offset(key, &String::from_utf8_lossy(kv.value())).map(Some),
    }
}

/// An offset as stored: a number >= 0, surrounding whitespace allowed (`etcdctl put` by hand).
fn parse_offset(key: String, text: &str) -> Result<i64, CommittedError> {
    stored_offset(text).ok_or_else(|| CommittedError::Invalid { key, value: text.to_owned() })
}

/// A committed offset as stored, read as every reader of it reads it: a non-negative number,
/// spaces around it allowed (an operator's `etcdctl put`).
pub fn stored_offset(text: &str) -> Option<i64> {
    text.trim().parse::<i64>().ok().filter(|v| *v >= 0)
}

/// Why a committed offset could not be read. Neither is ever taken for "no offset": that would
/// restart the partition from `start-from` (duplicates or loss).
#[derive(Debug, thiserror::Error)]
pub enum CommittedError {
    /// etcd did not answer (timeout, leader change): try again.
    #[error("{0:#}")]
    Unreachable(anyhow::Error),
    /// The value is not an offset: an operator must set it.
    #[error("{key} holds {value:?}, not an offset; set it with `etcdctl put {key} <next offset>`")]
    Invalid {
        /// The key.
        key: String,
        /// What it holds.
        value: String,
    },
}

/// The condition of every write an owner makes for its partition: the owner key holds its id
/// under its current lease (a fenced worker's write fails the transaction).
pub(super) fn owned_by(keys: &Keys, tp: &TopicPartition, me: &str, lease: i64) -> [Compare; 2] {
    let owner = keys.owner(tp);
    [Compare::value(owner.clone(), CompareOp::Equal, me), Compare::lease(owner, CompareOp::Equal, lease)]
}

/// What `set_offset` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetOffset {
    /// The offset was written.
    Done,
    /// Not written: a worker owns the partition and would overwrite it with its own progress.
    Owned {
        /// The owner's worker id.
        by: String,
    },
}

/// An operator sets the next offset of a partition. Refused while a worker owns it (its next
/// commit would overwrite the value), unless `while_owned`: for a partition held on an invalid or
/// out-of-range offset, whose owner reads the value again until it can use it.
pub async fn set_offset(
    client: &Client,
    keys: &Keys,
    tp: &TopicPartition,
    next: i64,
    while_owned: bool,
) -> anyhow::Result<SetOffset> {
    let mut c = client.clone();
    let owner = keys.owner(tp);
    // The operator's offset is for the topic as it is now: the recorded topic id goes with it,
    // and the next owner records the current one (a partition held because its topic was
    // created again starts here).
    let ops = [TxnOp::put(keys.offset(tp), next.to_string(), None), TxnOp::delete(keys.topic_id(tp), None)];
    let txn = if while_owned {
        Txn::new().and_then(ops)
    } else {
        Txn::new()
            .when([Compare::version(owner.clone(), CompareOp::Equal, 0)])
            .and_then(ops)
            .or_else([TxnOp::get(owner, None)])
    };
    let resp = c.txn(txn).await.with_context(|| format!("setting the offset of {tp}"))?;
    if resp.succeeded() {
        return Ok(SetOffset::Done);
    }
    Ok(SetOffset::Owned { by: holder(resp).unwrap_or_default().id })
}

/// Every partition key under `prefix` (`<prefix><topic>/<partition>`) and its value as text. A
/// key that does not name a partition is an error naming it: the listing is for operators, who
/// must see it rather than a partial answer.
async fn by_partition(client: &Client, prefix: String, what: &str) -> anyhow::Result<BTreeMap<TopicPartition, String>> {
    let read = super::paged::range(client, &prefix, super::paged::RangeRead::values(PARTITIONS_PAGE))
        .await
        .with_context(|| format!("listing {what}"))?;
    read.kvs
        .iter()
        .map(|kv| {
            let tp = partition_key(&prefix, &String::from_utf8_lossy(kv.key()))?;
            Ok((tp, String::from_utf8_lossy(kv.value()).into_owned()))
        })
        .collect()
}

/// Partition keys per page: 100,000 owners or offsets are 100 small replies.
const PARTITIONS_PAGE: i64 = 1000;

/// The partition a key under `prefix` is for.
fn partition_key(prefix: &str, key: &str) -> anyhow::Result<TopicPartition> {
    let rest = key.strip_prefix(prefix).with_context(|| format!("etcd key {key:?} is not under {prefix}"))?;
    rest.parse().with_context(|| format!("etcd key {key:?} does not name a partition ({prefix}<topic>/<partition>)"))
}

/// Owners of every partition (partition -> worker id).
pub async fn owners(client: &Client, keys: &Keys) -> anyhow::Result<BTreeMap<TopicPartition, String>> {
    by_partition(client, keys.owners(), "owners").await
}

/// Committed offsets of every partition (partition -> value as stored, which an operator may
/// have set to something that is not an offset).
pub async fn offsets(client: &Client, keys: &Keys) -> anyhow::Result<BTreeMap<TopicPartition, String>> {
    by_partition(client, keys.offsets(), "offsets").await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_keys_parse_or_name_the_key() {
        let keys = Keys::new("c");
        let tp = TopicPartition::new("logs.app", 3);
        assert_eq!(partition_key(&keys.owners(), &keys.owner(&tp)).expect("parses"), tp);
        assert_eq!(keys.offset(&tp), "/c/offsets/logs.app/3", "the layout is unchanged");
        for bad in ["/c/owners/logs", "/c/owners/logs/x", "/c/owners/logs/-1", "/c/other/logs/1"] {
            let err = partition_key(&keys.owners(), bad).expect_err(bad);
            assert!(format!("{err:#}").contains(bad), "{err:#} does not name {bad}");
        }
    }

    #[test]
    fn stored_offsets_are_numbers_or_invalid() {
        let key = || "/c/offsets/logs/3".to_owned();
        assert_eq!(parse_offset(key(), " 42\n").expect("offset"), 42);
        for bad in ["minus seven", "-1", ""] {
            let err = parse_offset(key(), bad).expect_err(bad);
            assert!(matches!(&err, CommittedError::Invalid { value, .. } if value == bad), "{err}");
            assert!(err.to_string().contains("/c/offsets/logs/3"), "{err}");
        }
    }
}
