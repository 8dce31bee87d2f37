//! Which topic a partition's committed offset belongs to. Offsets are kept by topic name; a
//! topic deleted and created again under the same name starts over at 0 with another id, and
//! the old offsets would skip its first records (or, past its end, wait) with nothing counted.
//! The owner records the topic's id beside the offset, and a partition whose recorded id is
//! not the topic's is held until an operator sets its offset (`offsets --set`, which drops the
//! recorded id).
//!
//! ```text
//!  start: recorded(tp) ──None──> record(current id) (txn: owner = me, my lease) ──> read
//!                      ──Some(current)──> read
//!                      ──Some(other)──> hold, errors{kind="topic-recreated"}, until the offset is set
//! ```

use anyhow::Context;
use az_core::TopicPartition;
use etcd_client::{Client, Txn, TxnOp};

use super::Keys;

/// The topic id recorded for a partition's offsets, if any.
pub async fn recorded(client: &Client, keys: &Keys, tp: &TopicPartition) -> anyhow::Result<Option<String>> {
    let mut c = client.clone();
    let key = keys.topic_id(tp);
    let resp = c.get(key.clone(), None).await.with_context(|| format!("reading {key}"))?;
    Ok(resp.kvs().first().map(|kv| String::from_utf8_lossy(kv.value()).into_owned()))
}

/// Records `id` for a partition's offsets, only if this worker owns it under this lease; false
/// when fenced out.
pub async fn record(
    client: &Client,
    keys: &Keys,
    tp: &TopicPartition,
    id: &str,
    me: &str,
    lease: i64,
) -> anyhow::Result<bool> {
    let mut c = client.clone();
    let txn = Txn::new().when(super::ownership::owned_by(keys, tp, me, lease)).and_then([TxnOp::put(
        keys.topic_id(tp),
        id,
        None,
    )]);
    let resp = c.txn(txn).await.with_context(|| format!("recording the topic id of {tp}"))?;
    Ok(resp.succeeded())
}
