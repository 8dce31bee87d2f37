//! An owner's commits: its partition's first (where it starts) and each object's, every one
//! conditioned on the fence and on what is committed already, so offsets advance only
//! contiguously and a late copy of an earlier commit cannot move them back.
//!
//! ```text
//!  commit_start: txn [owner = me, lease = mine, no offset yet] ──put offset (+ topic id)──> Done | Fenced | Exists
//!  commit:       txn [owner = me, lease = mine, offset = the object's first, topic id as at start]
//!                  ──put offset = next──> Done | Fenced | TopicId | Moved
//! ```

use anyhow::Context;
use az_core::TopicPartition;
use etcd_client::{Compare, CompareOp, Txn, TxnOp};

use super::Keys;
use super::batch::Batcher;
use super::ownership::owned_by;

/// What a commit came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Committed {
    /// The offset is written (or an earlier send of this same commit had written it).
    Done,
    /// Another worker (or another lease) owns the partition.
    Fenced,
    /// Still ours, but the recorded topic id is no longer the one the partition started with:
    /// an operator set its offset (which drops the id), or the id was recorded for a topic
    /// created again. Nothing is written.
    TopicId {
        /// The id recorded now, if any.
        recorded: Option<String>,
    },
    /// Still ours, same topic, but the committed offset is not the one the object starts at:
    /// the object would not follow what is committed (an operator's offset, or a commit this
    /// worker never made). Nothing is written.
    Moved {
        /// The offset recorded now, as stored.
        recorded: Option<String>,
    },
}

/// Commits `next` for a partition, only if this worker still owns it under this lease, the
/// committed offset is still `from` as stored (the offset the object starts at: offsets are
/// committed only contiguously, each object following the last; `None`: no offset stored) and, when `topic_id` is given,
/// the recorded topic id is still that one (so that an owner does not commit its progress over
/// an operator's offset, or past records of another incarnation of the topic).
#[allow(clippy::too_many_arguments)] // the condition's parts, each one of the fence's
pub async fn commit(
    txns: &Batcher,
    keys: &Keys,
    tp: &TopicPartition,
    me: &str,
    lease: i64,
    from: Option<&str>,
    next: i64,
    topic_id: Option<&str>,
) -> anyhow::Result<Committed> {
    let mut when = owned_by(keys, tp, me, lease).to_vec();
    when.push(match from {
        Some(from) => Compare::value(keys.offset(tp), CompareOp::Equal, from),
        // The offset key removed while owned: the object still follows what this owner
        // committed last, and the commit puts it back.
        None => Compare::create_revision(keys.offset(tp), CompareOp::Equal, 0),
    });
    if let Some(id) = topic_id {
        when.push(Compare::value(keys.topic_id(tp), CompareOp::Equal, id));
    }
    let txn = Txn::new().when(when).and_then([TxnOp::put(keys.offset(tp), next.to_string(), None)]).or_else([
        TxnOp::get(keys.owner(tp), None),
        TxnOp::get(keys.topic_id(tp), None),
        TxnOp::get(keys.offset(tp), None),
    ]);
    let resp = txns.txn(tp, txn).await.context("committing an offset")?.resp;
    if resp.succeeded() {
        return Ok(Committed::Done);
    }
    let [owner, recorded_id, recorded_offset] = reads(&resp);
    let (recorded_id, recorded_offset) = (recorded_id.map(|(v, _)| text(v)), recorded_offset.map(|(v, _)| text(v)));
    let ours = owner.is_some_and(|(id, l)| id == me.as_bytes() && l == lease);
    Ok(if !ours {
        Committed::Fenced
    } else if topic_id.is_some() && recorded_id.as_deref() != topic_id {
        Committed::TopicId { recorded: recorded_id }
    } else if recorded_offset.as_deref() == Some(next.to_string().as_str()) {
        // An earlier send of this commit landed, its answer lost (a timeout).
        Committed::Done
    } else {
        Committed::Moved { recorded: recorded_offset }
    })
}

/// What a partition's first commit came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitStart {
    /// The start offset (and topic id) are written.
    Done,
    /// Another worker (or another lease) owns the partition.
    Fenced,
    /// Still ours, but an offset is committed already: an earlier send of this first commit
    /// that landed after its answer was lost (a timeout), whose offset is where to start.
    Exists {
        /// The offset as stored.
        offset: String,
        /// The topic id recorded with it.
        topic_id: Option<String>,
    },
}

/// Commits `next`, and the id of the topic it was read in when given (a partition's first
/// commit, of where it starts), in one transaction, only if this worker still owns it under
/// this lease and no offset is committed yet (so that a late copy of an earlier attempt, with
/// an older start, cannot land over this one).
pub async fn commit_start(
    txns: &Batcher,
    keys: &Keys,
    tp: &TopicPartition,
    me: &str,
    lease: i64,
    next: i64,
    topic_id: Option<&str>,
) -> anyhow::Result<CommitStart> {
    let mut puts = vec![TxnOp::put(keys.offset(tp), next.to_string(), None)];
    if let Some(id) = topic_id {
        puts.push(TxnOp::put(keys.topic_id(tp), id, None));
    }
    let mut when = owned_by(keys, tp, me, lease).to_vec();
    when.push(Compare::create_revision(keys.offset(tp), CompareOp::Equal, 0));
    let txn = Txn::new().when(when).and_then(puts).or_else([
        TxnOp::get(keys.owner(tp), None),
        TxnOp::get(keys.offset(tp), None),
        TxnOp::get(keys.topic_id(tp), None),
    ]);
    let resp = txns.txn(tp, txn).await.context("committing an offset")?.resp;
    if resp.succeeded() {
        return Ok(CommitStart::Done);
    }
    let [owner, offset, recorded_id] = reads(&resp);
    let ours = owner.is_some_and(|(id, l)| id == me.as_bytes() && l == lease);
    Ok(match (ours, offset) {
        (true, Some((offset, _))) => {
            CommitStart::Exists { offset: text(offset), topic_id: recorded_id.map(|(v, _)| text(v)) }
        }
        _ => CommitStart::Fenced,
    })
}

/// The three keys a failed commit reads, each with its value and lease when present.
fn reads(resp: &etcd_client::TxnResponse) -> [Option<(Vec<u8>, i64)>; 3] {
    let mut reads = resp.op_responses().into_iter().map(|r| match r {
        etcd_client::TxnOpResponse::Get(g) => g.kvs().first().map(|kv| (kv.value().to_vec(), kv.lease())),
        _ => None,
    });
    [reads.next().flatten(), reads.next().flatten(), reads.next().flatten()]
}

fn text(v: Vec<u8>) -> String {
    String::from_utf8_lossy(&v).into_owned()
}
