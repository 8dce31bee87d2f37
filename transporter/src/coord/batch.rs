//! A worker's partition writes to etcd, gathered: the transactions its partition tasks make at
//! the same moment (taking owner keys, first and later commits, releases) go to etcd as nested
//! transactions of one request, each still with its own condition and its own answer.
//!
//! ```text
//!  partition tasks ──Job { partition, txn }──> queue ──drain (at most `cap`, one job per partition)──>
//!      Txn [ ] then [ Txn(job 1), Txn(job 2), … ] ──> etcd ──> each job's own TxnResponse + the revision
//!      ├─refused as such (too many operations, permissions)─> each job sent alone; all pass: `cap` lowered
//!      └─any other failure (timeout, unreachable)─> every job's error: the callers back off
//!  `cap` at 1 (`etcd.gather-transactions` off, or lowered to it) ──> each transaction straight to etcd
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
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use az_core::TopicPartition;
use etcd_client::{Client, Txn, TxnOp, TxnOpResponse, TxnResponse};
use tokio::sync::{Semaphore, mpsc, oneshot};

/// Nested transactions per request at most, to start with.
const CAP: usize = 64;
/// Gathered requests in flight at once. Jobs gather while these are out; more of them would
/// send each job alone again at low load, fewer would queue jobs behind a slow request (an
/// etcd that does not answer holds each for the client's 5 s timeout).
const IN_FLIGHT: usize = 16;

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
    shared: Arc<Shared>,
    client: Client,
}

/// What the batcher and its requests share.
#[derive(Debug)]
struct Shared {
    /// Nested transactions per request at most.
    cap: AtomicUsize,
    /// Requests sent to etcd.
    sent: AtomicU64,
}

impl Shared {
    /// Counts a request and sends it.
    async fn txn(&self, client: &mut Client, txn: Txn) -> Result<TxnResponse, etcd_client::Error> {
        self.sent.fetch_add(1, Ordering::Relaxed);
        client.txn(txn).await
    }
}

impl Batcher {
    /// Starts the gathering task on the current runtime; it ends when the last clone is dropped.
    /// Without `gather`, every transaction goes alone (see `etcd.gather-transactions`).
    pub fn new(client: Client, gather: bool) -> Batcher {
        let (jobs, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared { cap: AtomicUsize::new(if gather { CAP } else { 1 }), sent: AtomicU64::new(0) });
        tokio::spawn(run(client.clone(), rx, shared.clone()));
        Batcher { jobs, shared, client }
    }

    /// Sends `txn`, a transaction about `partition`'s keys only, and returns its answer. When
    /// nothing is gathered (`etcd.gather-transactions` off, or etcd refused gathering), it goes
    /// straight to etcd, with no limit on the requests in flight, as before gathering existed.
    pub async fn txn(&self, partition: &TopicPartition, txn: Txn) -> anyhow::Result<Answer> {
        if self.cap() <= 1 {
            return Ok(alone(self.shared.txn(&mut self.client.clone(), txn).await?));
        }
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job { partition: partition.clone(), txn, reply })
            .map_err(|_| anyhow::anyhow!("the etcd batcher stopped"))?;
        answer.await.map_err(|_| anyhow::anyhow!("the etcd batcher stopped"))?.map_err(anyhow::Error::msg)
    }

    /// How many transactions a request gathers at most now.
    pub fn cap(&self) -> usize {
        self.shared.cap.load(Ordering::Relaxed)
    }

    /// How many requests went to etcd so far.
    pub fn requests(&self) -> u64 {
        self.shared.sent.load(Ordering::Relaxed)
    }
}

/// Drains the queue into requests, a few in flight at once.
async fn run(client: Client, mut rx: mpsc::UnboundedReceiver<Job>, shared: Arc<Shared>) {
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
        let (batch, later) = gather(first, &mut deferred, &mut rx, shared.cap.load(Ordering::Relaxed));
        deferred = later;
        let (client, shared) = (client.clone(), shared.clone());
        tokio::spawn(async move {
            send(client, batch, &shared).await;
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

/// Sends one request and answers its jobs. A request etcd refused as such (`refused_as_such`)
/// is sent again job by job, so that one bad job (or etcd's limits) cannot fail the others;
/// when every job then passed alone, the gathering was at fault, and later requests gather at
/// most half as many as were refused (down to one: no gathering). The cap does not rise again:
/// etcd's limits and its handling of nested transactions do not change while it runs.
async fn send(mut client: Client, mut batch: Vec<Job>, shared: &Shared) {
    if batch.is_empty() {
        return;
    }
    if let [_] = batch.as_slice() {
        let job = batch.remove(0);
        let r = shared.txn(&mut client, job.txn).await;
        let _ = job.reply.send(r.map(alone).map_err(|e| format!("{e}")));
        return;
    }
    let outer = Txn::new().and_then(batch.iter().map(|j| TxnOp::txn(j.txn.clone())).collect::<Vec<_>>());
    let e = match shared.txn(&mut client, outer).await {
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
    // Any other failure (a timeout, etcd unreachable or overloaded, a leader changing) is every
    // job's: sent again alone, they would multiply the load on an etcd that is struggling, each
    // perhaps applied twice, past the callers' own backoff. A refusal of the request itself is
    // made before anything is applied, so its jobs are sent again, alone.
    if !refused_as_such(&e) {
        let e = format!("{e}");
        for job in batch {
            let _ = job.reply.send(Err(e.clone()));
        }
        return;
    }
    let jobs = batch.len();
    let alone = batch.into_iter().filter(|job| !job.reply.is_closed()).map(|job| {
        let mut c = client.clone();
        async move { (job.reply, shared.txn(&mut c, job.txn).await.map(alone).map_err(|e| format!("{e}"))) }
    });
    let answers = futures::future::join_all(alone).await;
    // The cap is lowered before anyone is answered, so that what a caller sends next already
    // goes out in smaller requests: to half of what was refused, at most (one refusal seen by
    // several requests in flight lowers it once, not once each).
    if answers.iter().all(|(_, r)| r.is_ok()) {
        let now = (jobs / 2).max(1);
        let was = shared.cap.fetch_min(now, Ordering::Relaxed);
        if now < was {
            tracing::warn!(error = %e, jobs, cap = now, "etcd refused a request of gathered transactions that it took one by one; gathering fewer");
        }
    } else {
        tracing::debug!(error = %e, jobs, "etcd refused a request of gathered transactions; sent them one by one");
    }
    for (reply, answer) in answers {
        let _ = reply.send(answer);
    }
}

/// Whether etcd refused a request as such, before applying any of it, rather than failing to
/// answer: InvalidArgument (over `--max-txn-ops` or `--max-request-bytes`), NotFound (a put's
/// lease is gone: one job's, or every job's of a worker whose lease ended), PermissionDenied (an
/// etcd that refuses nested transactions to roles), FailedPrecondition, Unimplemented. A
/// timeout, or etcd unreachable or electing, says nothing about the jobs or the gathering.
fn refused_as_such(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(s) if matches!(s.code() as i32, 3 | 5 | 7 | 9 | 12))
}

/// A transaction sent alone: its answer with its own header's revision.
fn alone(resp: TxnResponse) -> Answer {
    let revision = resp.header().map_or(0, |h| h.revision());
    Answer { resp, revision }
}
