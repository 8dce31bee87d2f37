//! A worker's partition writes to etcd, gathered: the transactions its partition tasks make at
//! the same moment (taking owner keys, first and later commits, releases) go to etcd as nested
//! transactions of one request, each still with its own condition and its own answer.
//!
//! ```text
//!  partition tasks ──Job { partition, txn }──> queue ──drain (at most `cap`, one job per partition)──>
//!      Txn [ ] then [ Txn(job 1), Txn(job 2), … ] ──> etcd ──> each job's own TxnResponse + the revision
//!      └─the request refused─> each job sent alone (and `cap` halved when etcd said "too many")
//! ```
//!
//! Why: 1,000 partitions starting together made 2,000 write transactions at once, and etcd
//! answered each after 100-500 ms (`bench wide-transporter`); a write request costs etcd one
//! raft entry and one apply whatever it holds. Fencing is unchanged: a nested transaction is
//! evaluated exactly as it would be alone, at the revision its request is applied at, and its
//! branch is taken on its own condition only. A request holds at most one job per partition,
//! so that no two of its writes touch the same key (etcd refuses such a request whole).
//! etcd counts a nested transaction's operations against `--max-txn-ops` (128 by default) less
//! the outer request's own, so `cap` starts at 64 nested transactions of at most 3 operations.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use az_core::TopicPartition;
use etcd_client::{Client, Txn, TxnOp, TxnOpResponse, TxnResponse};
use tokio::sync::{Semaphore, mpsc, oneshot};

/// Nested transactions per request at most, to start with.
const CAP: usize = 64;
/// Requests in flight at once: a request waits for etcd's disk, so a few overlap.
const IN_FLIGHT: usize = 4;

/// A nested transaction's answer.
#[derive(Debug)]
pub struct Answer {
    /// Its own response: whether its condition held, and its branch's results.
    pub resp: TxnResponse,
    /// The revision the whole request was applied at (nested responses carry no header).
    pub revision: i64,
}

type Reply = oneshot::Sender<Result<Answer, String>>;

struct Job {
    partition: TopicPartition,
    txn: Txn,
    reply: Reply,
}

/// Sends transactions, gathering those made at the same moment into one request.
#[derive(Clone)]
pub struct Batcher {
    jobs: mpsc::UnboundedSender<Job>,
    cap: Arc<AtomicUsize>,
}

impl Batcher {
    /// Starts the gathering task on the current runtime; it ends when the last clone is dropped.
    /// Without `gather`, every transaction goes alone (see `etcd.gather-transactions`).
    pub fn new(client: Client, gather: bool) -> Batcher {
        let (jobs, rx) = mpsc::unbounded_channel();
        let cap = Arc::new(AtomicUsize::new(if gather { CAP } else { 1 }));
        tokio::spawn(run(client, rx, cap.clone()));
        Batcher { jobs, cap }
    }

    /// Sends `txn`, a transaction about `partition`'s keys only, and returns its answer.
    pub async fn txn(&self, partition: &TopicPartition, txn: Txn) -> anyhow::Result<Answer> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job { partition: partition.clone(), txn, reply })
            .map_err(|_| anyhow::anyhow!("the etcd batcher stopped"))?;
        answer.await.map_err(|_| anyhow::anyhow!("the etcd batcher stopped"))?.map_err(anyhow::Error::msg)
    }

    /// How many transactions a request gathers at most now.
    pub fn cap(&self) -> usize {
        self.cap.load(Ordering::Relaxed)
    }
}

/// Drains the queue into requests, a few in flight at once.
async fn run(client: Client, mut rx: mpsc::UnboundedReceiver<Job>, cap: Arc<AtomicUsize>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut deferred: VecDeque<Job> = VecDeque::new();
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let first = match deferred.pop_front() {
            Some(j) => j,
            None => match rx.recv().await {
                Some(j) => j,
                None => return,
            },
        };
        let (batch, later) = gather(first, &mut deferred, &mut rx, cap.load(Ordering::Relaxed));
        deferred = later;
        let (client, cap) = (client.clone(), cap.clone());
        tokio::spawn(async move {
            send(client, batch, &cap).await;
            drop(slot);
        });
    }
}

/// One request's jobs: `first`, then deferred jobs, then queued ones, up to `cap`, one per
/// partition (the others wait, in order, for the next request). Jobs whose caller gave up
/// (a partition task stopped) are dropped.
fn gather(
    first: Job,
    deferred: &mut VecDeque<Job>,
    rx: &mut mpsc::UnboundedReceiver<Job>,
    cap: usize,
) -> (Vec<Job>, VecDeque<Job>) {
    let mut seen = BTreeSet::new();
    let mut batch = Vec::new();
    let mut later = VecDeque::new();
    let mut next = Some(first);
    while let Some(job) = next.take() {
        if !job.reply.is_closed() {
            if batch.len() < cap && seen.insert(job.partition.clone()) {
                batch.push(job);
            } else {
                later.push_back(job);
            }
        }
        if batch.len() >= cap {
            break;
        }
        next = deferred.pop_front().or_else(|| rx.try_recv().ok());
    }
    later.extend(deferred.drain(..));
    (batch, later)
}

/// Sends one request and answers its jobs. A refused request is sent again job by job, so that
/// one bad job (or etcd's limits) cannot fail the others; when etcd refused the request itself
/// (`refuses_gathering`) and every job passed alone, the gathering was at fault, and later
/// requests gather half as many (down to one: no gathering).
async fn send(mut client: Client, mut batch: Vec<Job>, cap: &AtomicUsize) {
    if let [_] = batch.as_slice() {
        let job = batch.remove(0);
        let r = client.txn(job.txn).await;
        let _ = job.reply.send(r.map(alone).map_err(|e| format!("{e}")));
        return;
    }
    let outer = Txn::new().and_then(batch.iter().map(|j| TxnOp::txn(j.txn.clone())).collect::<Vec<_>>());
    let e = match client.txn(outer).await {
        Ok(resp) => {
            let revision = resp.header().map_or(0, |h| h.revision());
            let mut nested = resp.op_responses().into_iter();
            for job in batch {
                let answer = match nested.next() {
                    Some(TxnOpResponse::Txn(resp)) => Ok(Answer { resp, revision }),
                    _ => Err("etcd answered a gathered request without this transaction's answer".to_owned()),
                };
                let _ = job.reply.send(answer);
            }
            return;
        }
        Err(e) => e,
    };
    let jobs = batch.len();
    let alone = batch.into_iter().map(|job| {
        let mut c = client.clone();
        async move { (job.reply, c.txn(job.txn).await.map(alone).map_err(|e| format!("{e}"))) }
    });
    let answers = futures::future::join_all(alone).await;
    // The cap is lowered before anyone is answered, so that what a caller sends next already
    // goes out in smaller requests.
    let passed = answers.iter().all(|(_, r)| r.is_ok());
    if passed && refuses_gathering(&e) {
        let now = (cap.load(Ordering::Relaxed) / 2).max(1);
        cap.store(now, Ordering::Relaxed);
        tracing::warn!(error = %e, jobs, cap = now, "etcd refused a request of gathered transactions that it took one by one; gathering fewer");
    } else {
        tracing::debug!(error = %e, jobs, "a request of gathered transactions failed; sent them one by one");
    }
    for (reply, answer) in answers {
        let _ = reply.send(answer);
    }
}

/// Whether etcd's refusal of a request is about the request itself rather than the moment:
/// InvalidArgument (over `--max-txn-ops` or `--max-request-bytes`), PermissionDenied (an etcd
/// that refuses nested transactions to roles), FailedPrecondition, Unimplemented. A refusal
/// while etcd was unreachable or electing says nothing about gathering.
fn refuses_gathering(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(s) if matches!(s.code() as i32, 3 | 7 | 9 | 12))
}

/// A transaction sent alone: its answer with its own header's revision.
fn alone(resp: TxnResponse) -> Answer {
    let revision = resp.header().map_or(0, |h| h.revision());
    Answer { resp, revision }
}
