//! The assignment in etcd, laid out to scale: a small summary and one key per worker holding its
//! share (its partitions and their zones). A worker reads and watches only its own share; the
//! master writes only the shares that changed, in transactions guarded by its leadership and
//! bounded in operations and bytes, so 100,000 partitions over 1,000 workers fit etcd's request
//! limit (1.5 MiB) many times over.
//!
//! ```text
//!  /<cluster>/assignment            Summary: generation, master, worker zones, departed workers
//!                                   (wall-clock, so a new master keeps their grace), counters
//!  /<cluster>/assignment/<worker>   Share: { topic/partition: zone } of that worker
//!
//!  master: AssignmentDoc ──split()──> Summary + Shares ──diff(previous)──> puts/deletes
//!          ──chunks of <= MAX_TXN_OPS ops, <= MAX_TXN_BYTES──> txn "my leader key is unchanged"
//!          (shares first, summary last)
//!  worker: get own share + watch it from the next revision
//!  views:  summary + paged range read of the shares ──join()──> AssignmentDoc
//! ```

use std::collections::BTreeMap;

use anyhow::Context;
use az_core::TopicPartition;
use etcd_client::{Client, Compare, CompareOp, Txn, TxnOp};
use serde::{Deserialize, Serialize};

use crate::coord::{AssignmentDoc, Keys};

/// Operations per transaction: below etcd's default `--max-txn-ops` (128).
pub const MAX_TXN_OPS: usize = 100;
/// Bytes per transaction: below etcd's default `--max-request-bytes` (1.5 MiB) with room.
pub const MAX_TXN_BYTES: usize = 1024 * 1024;
/// Keys per page when reading every share.
const PAGE: i64 = 200;

/// The summary of an assignment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Increases with every change.
    pub generation: u64,
    /// Master that wrote it.
    pub master: String,
    /// Worker id -> zone label, for every worker mentioned.
    pub workers: BTreeMap<String, String>,
    /// Partitions assigned across zones.
    pub cross_zone: usize,
    /// Partitions held for departed workers in their grace period.
    pub waiting: usize,
    /// Unix ms when written.
    pub written_at_ms: i64,
    /// Departed workers whose partitions wait for them -> Unix ms when they were noticed gone.
    #[serde(default)]
    pub departed_ms: BTreeMap<String, i64>,
}

/// One worker's partitions: partition (`topic/partition` in JSON) -> the zone it is read without
/// crossing zones from (empty when unknown).
pub type Share = BTreeMap<TopicPartition, String>;

/// An assignment as it is stored: its summary and the share of each worker that owns something.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Split {
    /// The summary.
    pub summary: Summary,
    /// Worker id -> its share.
    pub shares: BTreeMap<String, Share>,
}

/// Splits a full assignment into its summary and the share of each worker that owns something.
pub fn split(doc: &AssignmentDoc) -> Split {
    let mut shares: BTreeMap<String, Share> = BTreeMap::new();
    for (tp, w) in &doc.owners {
        shares.entry(w.clone()).or_default().insert(tp.clone(), doc.zones.get(tp).cloned().unwrap_or_default());
    }
    let summary = Summary {
        generation: doc.generation,
        master: doc.master.clone(),
        workers: doc.workers.clone(),
        cross_zone: doc.cross_zone,
        waiting: doc.waiting,
        written_at_ms: doc.written_at_ms,
        departed_ms: doc.departed_ms.clone(),
    };
    Split { summary, shares }
}

/// The full assignment from its summary and shares (the inverse of [`split`]).
pub fn join(summary: Summary, shares: BTreeMap<String, Share>) -> AssignmentDoc {
    let mut owners = BTreeMap::new();
    let mut zones = BTreeMap::new();
    for (w, share) in shares {
        for (tp, z) in share {
            if !z.is_empty() {
                zones.insert(tp.clone(), z);
            }
            owners.insert(tp, w.clone());
        }
    }
    AssignmentDoc {
        generation: summary.generation,
        master: summary.master,
        owners,
        zones,
        workers: summary.workers,
        cross_zone: summary.cross_zone,
        waiting: summary.waiting,
        written_at_ms: summary.written_at_ms,
        departed_ms: summary.departed_ms,
    }
}

/// One write of the master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// Put this value at this key.
    Put(String, Vec<u8>),
    /// Delete this key.
    Delete(String),
}

impl Write {
    /// Bytes it adds to a request.
    fn size(&self) -> usize {
        match self {
            Write::Put(k, v) => k.len() + v.len() + 16,
            Write::Delete(k) => k.len() + 16,
        }
    }
}

/// What moving from the shares as stored (`before`) to `next` writes: the shares that differ
/// (deleted when a worker owns nothing any more), then the summary. Unchanged shares are not
/// written; a stale one (a partition left in two shares by a master killed mid-write) differs
/// and is rewritten.
pub fn diff(keys: &Keys, before: &BTreeMap<String, Share>, next: &AssignmentDoc) -> anyhow::Result<Vec<Write>> {
    let Split { summary, shares } = split(next);
    let mut out = Vec::new();
    for (w, share) in &shares {
        if before.get(w) != Some(share) {
            out.push(Write::Put(keys.share(w), serde_json::to_vec(share)?));
        }
    }
    for w in before.keys().filter(|w| !shares.contains_key(*w)) {
        out.push(Write::Delete(keys.share(w)));
    }
    out.push(Write::Put(keys.assignment(), serde_json::to_vec(&summary)?));
    Ok(out)
}

/// Whether the shares as stored differ from what `doc` splits into (a partition in two shares,
/// or a share a joined view hides): the master then writes although its plan did not change.
pub fn needs_healing(stored: &BTreeMap<String, Share>, doc: &AssignmentDoc) -> bool {
    split(doc).shares != *stored
}

/// Cuts writes into transactions of at most [`MAX_TXN_OPS`] operations and [`MAX_TXN_BYTES`]
/// bytes (a single larger write goes alone), in order, so the summary stays last.
pub fn chunks(writes: Vec<Write>) -> Vec<Vec<Write>> {
    let mut out: Vec<Vec<Write>> = Vec::new();
    let mut bytes = 0;
    for w in writes {
        let size = w.size();
        match out.last_mut() {
            Some(last) if last.len() < MAX_TXN_OPS && bytes + size <= MAX_TXN_BYTES => {
                bytes += size;
                last.push(w);
            }
            _ => {
                bytes = size;
                out.push(vec![w]);
            }
        }
    }
    out
}

/// What a write of the master cost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteStats {
    /// Transactions sent.
    pub txns: usize,
    /// Keys put or deleted.
    pub keys: usize,
    /// Bytes of the largest transaction.
    pub max_txn_bytes: usize,
    /// Bytes of every transaction.
    pub bytes: usize,
}

/// Writes `writes`, each transaction guarded by the master's leader key still being the one it
/// was elected with. Returns `Ok(None)` when it no longer is (the master steps down).
pub async fn write(
    client: &Client,
    writes: Vec<Write>,
    leader_key: &[u8],
    leader_rev: i64,
) -> anyhow::Result<Option<WriteStats>> {
    let mut stats = WriteStats::default();
    let mut c = client.clone();
    for chunk in chunks(writes) {
        let size: usize = chunk.iter().map(Write::size).sum();
        stats.txns += 1;
        stats.keys += chunk.len();
        stats.bytes += size;
        stats.max_txn_bytes = stats.max_txn_bytes.max(size);
        let ops: Vec<TxnOp> = chunk
            .into_iter()
            .map(|w| match w {
                Write::Put(k, v) => TxnOp::put(k, v, None),
                Write::Delete(k) => TxnOp::delete(k, None),
            })
            .collect();
        let txn = Txn::new()
            .when([Compare::create_revision(leader_key.to_vec(), CompareOp::Equal, leader_rev)])
            .and_then(ops);
        let resp = c.txn(txn).await.context("writing the assignment")?;
        if !resp.succeeded() {
            return Ok(None);
        }
    }
    Ok(Some(stats))
}

/// Reads the summary; garbage is an error naming the key.
pub async fn summary(client: &Client, keys: &Keys) -> anyhow::Result<Option<Summary>> {
    let mut c = client.clone();
    let resp = c.get(keys.assignment(), None).await.context("reading the assignment summary from etcd")?;
    match resp.kvs().first() {
        None => Ok(None),
        Some(kv) => serde_json::from_slice(kv.value())
            .map(Some)
            .with_context(|| format!("{} holds an invalid assignment summary", keys.assignment())),
    }
}

/// Reads the whole assignment (summary and every share, a page at a time so that no response
/// nears the client's message limit). `None` before the first assignment.
pub async fn full(client: &Client, keys: &Keys) -> anyhow::Result<Option<AssignmentDoc>> {
    Ok(stored(client, keys).await?.map(|s| join(s.summary, s.shares)))
}

/// Reads the assignment as it is stored: the summary and every share as written. A master
/// killed between its transactions can leave a partition in two shares; the next master diffs
/// against this, not the joined view, so that the stale share is rewritten.
pub async fn stored(client: &Client, keys: &Keys) -> anyhow::Result<Option<Split>> {
    let Some(summary) = summary(client, keys).await? else { return Ok(None) };
    let prefix = keys.shares();
    let read = crate::coord::paged::range(client, &prefix, crate::coord::paged::RangeRead::values(PAGE))
        .await
        .context("reading the assignment shares from etcd")?;
    let mut shares = BTreeMap::new();
    for kv in &read.kvs {
        let key = String::from_utf8_lossy(kv.key()).into_owned();
        let worker = key.strip_prefix(&prefix).unwrap_or(&key).to_owned();
        let share: Share =
            serde_json::from_slice(kv.value()).with_context(|| format!("{key} holds an invalid assignment share"))?;
        shares.insert(worker, share);
    }
    Ok(Some(Split { summary, shares }))
}

/// A worker's own share as read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OwnShare {
    /// The share.
    pub share: Share,
    /// The etcd revision it was read at: the worker watches it from the next one.
    pub revision: i64,
}

/// Reads one worker's share and the revision it was read at (to watch from the next one).
pub async fn own(client: &Client, keys: &Keys, worker: &str) -> anyhow::Result<OwnShare> {
    let mut c = client.clone();
    let key = keys.share(worker);
    let resp = c.get(key.clone(), None).await.with_context(|| format!("reading {key}"))?;
    let revision = resp.header().map_or(0, |h| h.revision());
    let share = match resp.kvs().first() {
        None => Share::new(),
        Some(kv) => serde_json::from_slice(kv.value()).with_context(|| format!("{key} holds an invalid share"))?,
    };
    Ok(OwnShare { share, revision })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(text: &str) -> TopicPartition {
        text.parse().expect("a partition")
    }

    fn doc(owners: &[(&str, &str)], generation: u64) -> AssignmentDoc {
        AssignmentDoc {
            generation,
            master: "m".into(),
            owners: owners.iter().map(|(t, w)| (tp(t), (*w).to_owned())).collect(),
            zones: owners.iter().map(|(t, _)| (tp(t), "z1".to_owned())).collect(),
            workers: BTreeMap::from([("a".into(), "z1".into()), ("b".into(), "z1".into())]),
            ..AssignmentDoc::default()
        }
    }

    #[test]
    fn split_and_join_are_inverse() {
        let d = doc(&[("t/0", "a"), ("t/1", "b"), ("t/2", "a")], 3);
        let Split { summary, shares } = split(&d);
        assert_eq!(shares.len(), 2);
        assert_eq!(join(summary, shares), d);
    }

    #[test]
    fn only_changed_shares_are_written_and_the_summary_last() {
        let keys = Keys::new("c");
        let before = split(&doc(&[("t/0", "a"), ("t/1", "b")], 1)).shares;
        // Nothing moved: only the summary (a new generation).
        let same = diff(&keys, &before, &doc(&[("t/0", "a"), ("t/1", "b")], 2)).expect("diff");
        assert_eq!(same.len(), 1);
        assert!(matches!(&same[0], Write::Put(k, _) if k == "/c/assignment"));
        // b's partition moves to a: a's share is written, b's deleted, then the summary.
        let moved = diff(&keys, &before, &doc(&[("t/0", "a"), ("t/1", "a")], 2)).expect("diff");
        let kinds: Vec<String> = moved
            .iter()
            .map(|w| match w {
                Write::Put(k, _) => format!("put {k}"),
                Write::Delete(k) => format!("delete {k}"),
            })
            .collect();
        assert_eq!(kinds, vec!["put /c/assignment/a", "delete /c/assignment/b", "put /c/assignment"]);
        // A first assignment writes every share.
        let first = doc(&[("t/0", "a"), ("t/1", "b")], 1);
        assert_eq!(diff(&keys, &BTreeMap::new(), &first).expect("diff").len(), 3);
    }

    /// Issue 23, item 8: a master killed between its transactions left t/0 in both a's and b's
    /// shares. The joined view shows one owner, and a plan that keeps it is "unchanged"; against
    /// the shares as stored, the stale one differs and is rewritten.
    #[test]
    fn a_partition_left_in_two_shares_is_healed() {
        let keys = Keys::new("c");
        let stored = BTreeMap::from([
            ("a".to_owned(), Share::from([(tp("t/0"), "z1".to_owned())])),
            ("b".to_owned(), Share::from([(tp("t/0"), "z1".to_owned()), (tp("t/1"), "z1".to_owned())])),
        ]);
        let joined = join(Summary::default(), stored.clone());
        assert_eq!(joined.owners.get(&tp("t/0")).map(String::as_str), Some("b"), "the later share wins the join");
        assert!(needs_healing(&stored, &joined));
        let writes = diff(&keys, &stored, &joined).expect("diff");
        assert_eq!(writes.first(), Some(&Write::Delete("/c/assignment/a".into())), "{writes:?}");
        assert_eq!(writes.len(), 2, "a's stale share goes, then the summary: {writes:?}");
        assert!(!needs_healing(&split(&joined).shares, &joined));
    }

    #[test]
    fn chunks_respect_the_op_and_byte_limits_and_keep_order() {
        let writes: Vec<Write> = (0..250).map(|i| Write::Put(format!("k{i:03}"), vec![b'x'; 10_000])).collect();
        let cut = chunks(writes.clone());
        assert!(cut.iter().all(|c| c.len() <= MAX_TXN_OPS));
        assert!(cut.iter().all(|c| c.iter().map(Write::size).sum::<usize>() <= MAX_TXN_BYTES));
        assert_eq!(cut.concat(), writes);
        let big = vec![Write::Put("big".into(), vec![0; MAX_TXN_BYTES * 2]), Write::Delete("x".into())];
        assert_eq!(chunks(big).len(), 2);
    }

    /// A share is stored as it always was, `{"topic/partition": "zone"}`; a key that is not a
    /// partition is refused, and the refusal names it (the readers add the etcd key).
    #[test]
    fn shares_keep_their_json_and_refuse_keys_that_are_not_partitions() {
        let share: Share = [(tp("logs.app/3"), "z1".to_owned())].into();
        assert_eq!(serde_json::to_string(&share).expect("json"), r#"{"logs.app/3":"z1"}"#);
        let err = serde_json::from_str::<Share>(r#"{"logs.app":"z1"}"#).expect_err("not a partition");
        assert!(err.to_string().contains("\"logs.app\""), "{err}");
    }
}
