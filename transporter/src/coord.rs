//! Coordination through etcd: worker registration under a lease, the lease's validity as the
//! worker sees it, partition ownership (fencing) and offset commits conditioned on ownership,
//! and the assignment document.
//!
//! ```text
//!  /<cluster>/workers/<id>          WorkerInfo JSON, bound to the worker's lease
//!  /<cluster>/master                election (etcd's election API), value = worker id
//!  /<cluster>/assignment            assignment summary, written by the master (txn: still leader)
//!  /<cluster>/assignment/<worker>   that worker's share of the assignment (see `shares`)
//!  /<cluster>/owners/<topic>/<p>    worker id, bound to its lease: the fence
//!  /<cluster>/offsets/<topic>/<p>   next offset to read, written by txn "owner = me, my lease"
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use etcd_client::{Client, Compare, CompareOp, ConnectOptions, GetOptions, PutOptions, Txn, TxnOp};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::config::EtcdConfig;
use az_core::assign::TopicPartition;

/// What a worker registers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerInfo {
    /// Worker id.
    pub id: String,
    /// Zone id, when known.
    pub zone_id: Option<String>,
    /// Zone name, when known.
    pub zone_name: Option<String>,
    /// Host name.
    pub host: String,
    /// Relative capacity.
    pub capacity: f64,
    /// HTTP address.
    pub http: String,
    /// Observed bytes/s per partition it owns (`topic/partition` keys).
    #[serde(default)]
    pub rates: BTreeMap<String, f64>,
}

impl WorkerInfo {
    /// Whether `next` says something the master acts on that `self` (the registration in etcd)
    /// does not: another zone, capacity or address, partitions gained or lost, or a rate that
    /// moved by more than a fifth (rates under 1 KiB/s are noise). Registrations are rewritten only then, so the etcd keyspace
    /// (and its history until compaction) does not grow by one revision per worker every few
    /// seconds.
    pub fn differs_materially(&self, next: &WorkerInfo) -> bool {
        let rate_moved = |a: f64, b: f64| (a - b).abs() > 0.2 * a.abs().max(b.abs()).max(1024.0);
        self.id != next.id
            || self.zone_id != next.zone_id
            || self.zone_name != next.zone_name
            || self.host != next.host
            || self.capacity != next.capacity
            || self.http != next.http
            || self.rates.len() != next.rates.len()
            || self.rates.iter().zip(&next.rates).any(|((ka, a), (kb, b))| ka != kb || rate_moved(*a, *b))
    }
}

/// The master's assignment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AssignmentDoc {
    /// Increases with every change.
    pub generation: u64,
    /// Master that wrote it.
    pub master: String,
    /// `topic/partition` -> worker id.
    pub owners: BTreeMap<String, String>,
    /// `topic/partition` -> zone the partition is read without crossing zones from (leader's
    /// zone), when known.
    pub zones: BTreeMap<String, String>,
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

/// Key layout under `/<cluster>/`.
#[derive(Debug, Clone)]
pub struct Keys {
    root: String,
}

impl Keys {
    /// The layout of a fleet.
    pub fn new(cluster: &str) -> Keys {
        Keys { root: format!("/{cluster}") }
    }
    /// Worker registrations prefix.
    pub fn workers(&self) -> String {
        format!("{}/workers/", self.root)
    }
    /// One worker.
    pub fn worker(&self, id: &str) -> String {
        format!("{}/workers/{id}", self.root)
    }
    /// Marks of workers that stopped cleanly (their partitions need no grace period).
    pub fn left(&self) -> String {
        format!("{}/left/", self.root)
    }
    /// One worker's clean-stop mark.
    pub fn left_mark(&self, id: &str) -> String {
        format!("{}/left/{id}", self.root)
    }
    /// Election name.
    pub fn election(&self) -> String {
        format!("{}/master", self.root)
    }
    /// Assignment summary (see `shares`).
    pub fn assignment(&self) -> String {
        format!("{}/assignment", self.root)
    }
    /// Prefix of the workers' assignment shares.
    pub fn shares(&self) -> String {
        format!("{}/assignment/", self.root)
    }
    /// One worker's assignment share.
    pub fn share(&self, worker: &str) -> String {
        format!("{}/assignment/{worker}", self.root)
    }
    /// Owner of a partition.
    pub fn owner(&self, tp: &TopicPartition) -> String {
        format!("{}/owners/{}", self.root, tp.key())
    }
    /// Owners prefix.
    pub fn owners(&self) -> String {
        format!("{}/owners/", self.root)
    }
    /// Committed offset of a partition.
    pub fn offset(&self, tp: &TopicPartition) -> String {
        format!("{}/offsets/{}", self.root, tp.key())
    }
    /// Offsets prefix.
    pub fn offsets(&self) -> String {
        format!("{}/offsets/", self.root)
    }
}

/// Connects to etcd with optional user/password and TLS; every request times out after 5 s.
pub async fn connect(cfg: &EtcdConfig) -> anyhow::Result<Client> {
    connect_with(cfg, Some(Duration::from_secs(5))).await
}

/// Connects to etcd for requests that wait by design (a campaign blocks until elected): a
/// request timeout would cut every standby's campaign and churn the election.
pub async fn connect_untimed(cfg: &EtcdConfig) -> anyhow::Result<Client> {
    connect_with(cfg, None).await
}

async fn connect_with(cfg: &EtcdConfig, request_timeout: Option<Duration>) -> anyhow::Result<Client> {
    let mut opts = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(3))
        // etcd closes the connection of a client pinging more often than its
        // --grpc-keepalive-min-time (5 s by default): every 10 s, 5 s to answer.
        .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
    if let Some(t) = request_timeout {
        opts = opts.with_timeout(t);
    }
    if let (Some(u), Some(p)) = (&cfg.username, cfg.resolved_password()?) {
        opts = opts.with_user(u.clone(), p);
    }
    if let Some(t) = &cfg.tls {
        let read = |p: &std::path::Path, what: &str| {
            std::fs::read(p).with_context(|| format!("reading etcd.tls.{what} {}", p.display()))
        };
        let mut tls = etcd_client::TlsOptions::new()
            .ca_certificate(etcd_client::Certificate::from_pem(read(&t.ca_file, "ca-file")?));
        if let (Some(c), Some(k)) = (&t.cert_file, &t.key_file) {
            tls = tls.identity(etcd_client::Identity::from_pem(read(c, "cert-file")?, read(k, "key-file")?));
        }
        if let Some(d) = &t.domain {
            tls = tls.domain_name(d.clone());
        }
        opts = opts.with_tls(tls);
    }
    Client::connect(cfg.endpoints.clone(), Some(opts))
        .await
        .with_context(|| format!("connecting to etcd {:?}", cfg.endpoints))
}

/// The lease as this worker knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseState {
    /// Lease id.
    pub id: i64,
    /// Until when the lease is certainly alive in etcd (last keepalive answer + TTL, less a
    /// margin for clock-rate drift). Uploads and commits must finish before it.
    pub valid_until: Instant,
    /// etcd said the lease is gone, or `valid_until` passed: ownership is lost.
    pub lost: bool,
}

impl LeaseState {
    /// Whether the worker may act as owner now.
    pub fn valid(&self) -> bool {
        !self.lost && Instant::now() < self.valid_until
    }
}

/// Grants a lease and keeps it alive on a thread of its own, with its own runtime and etcd
/// connection: no amount of work on the main runtime (records, rolls, the assignment) can delay a
/// keepalive and lose the lease while etcd is healthy. The watch channel carries its state.
pub async fn lease(
    client: &Client,
    cfg: &EtcdConfig,
    ttl_secs: i64,
) -> anyhow::Result<(i64, watch::Receiver<LeaseState>, OwnThread)> {
    let mut c = client.clone();
    let granted = Instant::now();
    let resp = c.lease_grant(ttl_secs, None).await.context("granting an etcd lease")?;
    let id = resp.id();
    let ttl = Duration::from_secs(u64::try_from(resp.ttl()).unwrap_or(1));
    let margin = ttl / 5;
    let (tx, rx) = watch::channel(LeaseState { id, valid_until: granted + ttl - margin, lost: false });
    let cfg = cfg.clone();
    let thread = OwnThread::spawn("zonal-lease", move || keep_alive(cfg, id, ttl, margin, tx))?;
    Ok((id, rx, thread))
}

async fn keep_alive(cfg: EtcdConfig, id: i64, ttl: Duration, margin: Duration, tx: watch::Sender<LeaseState>) {
    let every = ttl / 3;
    let mut client: Option<Client> = None;
    let mut keeper = None;
    loop {
        if tx.borrow().valid_until <= Instant::now() {
            tx.send_modify(|s| s.lost = true);
            tracing::error!(lease = id, "lease expired without a keepalive answer: ownership lost");
            return;
        }
        let sent = Instant::now();
        if client.is_none() {
            client = tokio::time::timeout(every, connect(&cfg)).await.ok().and_then(Result::ok);
        }
        if keeper.is_none()
            && let Some(c) = client.as_mut()
        {
            keeper = tokio::time::timeout(every, c.lease_keep_alive(id)).await.ok().and_then(Result::ok);
        }
        let mut ok = false;
        if let Some((k, stream)) = keeper.as_mut() {
            let round = async {
                k.keep_alive().await?;
                stream.message().await
            };
            match tokio::time::timeout(every, round).await {
                Ok(Ok(Some(r))) if r.ttl() > 0 => {
                    let ttl = Duration::from_secs(u64::try_from(r.ttl()).unwrap_or(0));
                    tx.send_modify(|s| s.valid_until = sent + ttl - margin);
                    ok = true;
                }
                Ok(Ok(Some(_))) => {
                    tx.send_modify(|s| s.lost = true);
                    tracing::error!(lease = id, "etcd says the lease is gone: ownership lost");
                    return;
                }
                _ => {}
            }
        }
        if !ok {
            keeper = None;
            tracing::warn!(lease = id, "lease keepalive failed; still owner until the lease would expire");
        }
        tokio::time::sleep(if ok { every } else { Duration::from_millis(300) }).await;
    }
}

/// A task on a thread of its own with a single-threaded runtime, stopped when aborted or dropped.
/// For the work no other work may delay: the lease keepalive and the master.
pub struct OwnThread {
    stop: Arc<tokio::sync::Notify>,
    _thread: std::thread::JoinHandle<()>,
}

impl OwnThread {
    /// Runs the future `make()` returns on thread `name` until it ends or [`OwnThread::abort`].
    pub fn spawn<F, Fut>(name: &str, make: F) -> anyhow::Result<OwnThread>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()>,
    {
        let stop = Arc::new(tokio::sync::Notify::new());
        let stopped = stop.clone();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .with_context(|| format!("starting the runtime of {name}"))?;
        let handle = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                rt.block_on(async move {
                    tokio::select! {
                        () = make() => {}
                        () = stopped.notified() => {}
                    }
                });
            })
            .with_context(|| format!("starting thread {name}"))?;
        Ok(OwnThread { stop, _thread: handle })
    }

    /// Stops the task (at its next await) without waiting for the thread.
    pub fn abort(&self) {
        self.stop.notify_one();
    }
}

impl Drop for OwnThread {
    fn drop(&mut self) {
        self.abort();
    }
}

/// Registers (or refreshes) a worker under its lease.
pub async fn register(client: &Client, keys: &Keys, info: &WorkerInfo, lease: i64) -> anyhow::Result<()> {
    let mut c = client.clone();
    let value = serde_json::to_vec(info)?;
    c.put(keys.worker(&info.id), value, Some(PutOptions::new().with_lease(lease)))
        .await
        .context("registering the worker")?;
    Ok(())
}

/// Marks this worker as stopped cleanly: it flushed and released everything, so the master gives
/// its partitions to peers at once instead of holding them for the grace period (which is for
/// crashes). The mark lives on its own lease of `ttl_secs` (at least the grace period), so it
/// cannot outlive its purpose; registering again removes it.
pub async fn mark_left(client: &Client, keys: &Keys, id: &str, ttl_secs: i64) -> anyhow::Result<()> {
    let mut c = client.clone();
    let lease = c.lease_grant(ttl_secs.max(5), None).await.context("granting the clean-stop lease")?.id();
    c.put(
        keys.left_mark(id),
        chrono::Utc::now().timestamp_millis().to_string(),
        Some(PutOptions::new().with_lease(lease)),
    )
    .await
    .context("marking the clean stop")?;
    Ok(())
}

/// Removes this worker's clean-stop mark (it is back; a later crash deserves its grace period).
pub async fn clear_left(client: &Client, keys: &Keys, id: &str) -> anyhow::Result<()> {
    let mut c = client.clone();
    c.delete(keys.left_mark(id), None).await.context("clearing the clean-stop mark")?;
    Ok(())
}

/// Ids of workers that stopped cleanly.
pub async fn left(client: &Client, keys: &Keys) -> anyhow::Result<BTreeSet<String>> {
    let mut c = client.clone();
    let prefix = keys.left();
    let resp = c
        .get(prefix.clone(), Some(GetOptions::new().with_prefix().with_keys_only()))
        .await
        .context("listing clean stops")?;
    Ok(resp
        .kvs()
        .iter()
        .filter_map(|kv| String::from_utf8_lossy(kv.key()).strip_prefix(prefix.as_str()).map(str::to_owned))
        .collect())
}

/// Live workers; values that do not parse are reported and skipped.
pub async fn workers(client: &Client, keys: &Keys) -> anyhow::Result<(Vec<WorkerInfo>, Vec<String>)> {
    let mut c = client.clone();
    let resp = c.get(keys.workers(), Some(GetOptions::new().with_prefix())).await.context("listing workers in etcd")?;
    let mut out = Vec::new();
    let mut bad = Vec::new();
    for kv in resp.kvs() {
        match serde_json::from_slice::<WorkerInfo>(kv.value()) {
            Ok(w) => out.push(w),
            Err(e) => bad.push(format!("{}: {e}", String::from_utf8_lossy(kv.key()))),
        }
    }
    Ok((out, bad))
}

/// Tries to become the owner of a partition: succeeds if nobody owns it (or we already do).
/// Returns the current owner otherwise.
pub async fn acquire(
    client: &Client,
    keys: &Keys,
    tp: &TopicPartition,
    me: &str,
    lease: i64,
) -> anyhow::Result<Result<(), String>> {
    let mut c = client.clone();
    let key = keys.owner(tp);
    let txn = Txn::new()
        .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
        .and_then([TxnOp::put(key.clone(), me, Some(PutOptions::new().with_lease(lease)))])
        .or_else([TxnOp::get(key.clone(), None)]);
    let resp = c.txn(txn).await.with_context(|| format!("acquiring {key}"))?;
    if resp.succeeded() {
        return Ok(Ok(()));
    }
    let owner = resp
        .op_responses()
        .into_iter()
        .find_map(|r| match r {
            etcd_client::TxnOpResponse::Get(g) => {
                g.kvs().first().map(|kv| (String::from_utf8_lossy(kv.value()).into_owned(), kv.lease()))
            }
            _ => None,
        })
        .unwrap_or_default();
    if owner.0 == me && owner.1 == lease { Ok(Ok(())) } else { Ok(Err(owner.0)) }
}

/// Gives up ownership, if still ours.
pub async fn release(client: &Client, keys: &Keys, tp: &TopicPartition, me: &str) -> anyhow::Result<()> {
    let mut c = client.clone();
    let key = keys.owner(tp);
    let txn = Txn::new().when([Compare::value(key.clone(), CompareOp::Equal, me)]).and_then([TxnOp::delete(key, None)]);
    c.txn(txn).await.context("releasing a partition")?;
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
        Some(kv) => {
            let text = String::from_utf8_lossy(kv.value());
            match text.trim().parse::<i64>() {
                Ok(v) if v >= 0 => Ok(Some(v)),
                _ => Err(CommittedError::Invalid { key, value: text.into_owned() }),
            }
        }
    }
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

/// Commits `next` for a partition, only if this worker still owns it under this lease.
/// Returns false when fenced out.
pub async fn commit(
    client: &Client,
    keys: &Keys,
    tp: &TopicPartition,
    me: &str,
    lease: i64,
    next: i64,
) -> anyhow::Result<bool> {
    let mut c = client.clone();
    let owner = keys.owner(tp);
    let txn = Txn::new()
        .when([Compare::value(owner.clone(), CompareOp::Equal, me), Compare::lease(owner, CompareOp::Equal, lease)])
        .and_then([TxnOp::put(keys.offset(tp), next.to_string(), None)]);
    let resp = c.txn(txn).await.context("committing an offset")?;
    Ok(resp.succeeded())
}

/// What `set_offset` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetOffset {
    /// The offset was written.
    Done,
    /// Not written: a worker owns the partition and would overwrite it with its own progress.
    Owned(String),
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
    let put = TxnOp::put(keys.offset(tp), next.to_string(), None);
    let txn = if while_owned {
        Txn::new().and_then([put])
    } else {
        Txn::new()
            .when([Compare::version(owner.clone(), CompareOp::Equal, 0)])
            .and_then([put])
            .or_else([TxnOp::get(owner, None)])
    };
    let resp = c.txn(txn).await.with_context(|| format!("setting the offset of {}", tp.key()))?;
    if resp.succeeded() {
        return Ok(SetOffset::Done);
    }
    let holder = resp
        .op_responses()
        .into_iter()
        .find_map(|r| match r {
            etcd_client::TxnOpResponse::Get(g) => {
                g.kvs().first().map(|kv| String::from_utf8_lossy(kv.value()).into_owned())
            }
            _ => None,
        })
        .unwrap_or_default();
    Ok(SetOffset::Owned(holder))
}

/// Every key under `prefix`, with the prefix stripped, and its value as text.
async fn list(client: &Client, prefix: String, what: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let mut c = client.clone();
    let resp = c
        .get(prefix.clone(), Some(GetOptions::new().with_prefix()))
        .await
        .with_context(|| format!("listing {what}"))?;
    Ok(resp
        .kvs()
        .iter()
        .map(|kv| {
            let k = String::from_utf8_lossy(kv.key());
            (k.strip_prefix(&prefix).unwrap_or(&k).to_owned(), String::from_utf8_lossy(kv.value()).into_owned())
        })
        .collect())
}

/// Owners of every partition (`topic/partition` -> worker id).
pub async fn owners(client: &Client, keys: &Keys) -> anyhow::Result<BTreeMap<String, String>> {
    list(client, keys.owners(), "owners").await
}

/// Committed offsets of every partition (`topic/partition` -> value as stored).
pub async fn offsets(client: &Client, keys: &Keys) -> anyhow::Result<BTreeMap<String, String>> {
    list(client, keys.offsets(), "offsets").await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registrations_change_only_for_what_the_master_uses() {
        let base = WorkerInfo {
            id: "w".into(),
            zone_id: Some("use1-az1".into()),
            zone_name: None,
            host: "h".into(),
            capacity: 1.0,
            http: "127.0.0.1:1".into(),
            rates: BTreeMap::from([("logs/0".into(), 1000.0), ("logs/1".into(), 0.0)]),
        };
        let with = |f: &dyn Fn(&mut WorkerInfo)| {
            let mut w = base.clone();
            f(&mut w);
            w
        };
        assert!(!base.differs_materially(&base));
        assert!(!base.differs_materially(&with(&|w| {
            w.rates.insert("logs/0".into(), 1150.0);
        })));
        assert!(!base.differs_materially(&with(&|w| {
            w.rates.insert("logs/1".into(), 0.9);
        })));
        assert!(base.differs_materially(&with(&|w| {
            w.rates.insert("logs/0".into(), 1300.0);
        })));
        assert!(base.differs_materially(&with(&|w| {
            w.rates.insert("logs/2".into(), 0.0);
        })));
        assert!(base.differs_materially(&with(&|w| w.zone_id = Some("use1-az2".into()))));
        assert!(base.differs_materially(&with(&|w| w.capacity = 2.0)));
    }

    /// Both threads of the main runtime blocked for longer than the lease lasts (a busy worker:
    /// compression, a huge roll): the keepalive runs on its own thread, so the lease lives on in
    /// etcd and the worker still knows itself owner.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_starved_runtime_does_not_lose_the_lease() {
        let etcd = testkit::Etcd::start().expect("etcd");
        let cfg = EtcdConfig { endpoints: vec![etcd.endpoint()], ..EtcdConfig::default() };
        let client = connect(&cfg).await.expect("connect");
        let (id, state, _keepalive) = lease(&client, &cfg, 2).await.expect("lease");
        let hogs: Vec<_> = (0..2)
            .map(|_| {
                tokio::spawn(async {
                    // Deliberately blocking the runtime thread: this is the fault under test.
                    std::thread::sleep(Duration::from_secs(4));
                })
            })
            .collect();
        for h in hogs {
            h.await.expect("hog");
        }
        assert!(state.borrow().valid(), "the worker thinks its lease is gone: {:?}", *state.borrow());
        let mut c = client.clone();
        let ttl = c.lease_time_to_live(id, None).await.expect("ttl").ttl();
        assert!(ttl > 0, "etcd expired the lease (ttl {ttl})");
    }

    /// A standby's campaign waits as long as the master lives. etcd refuses HTTP/2 pings more
    /// often than every 5 s (`--grpc-keepalive-min-time`) and closes the connection of a client
    /// that sends them: the campaign must not be cut by our own keepalive.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_standby_campaign_is_not_cut_by_keepalive_pings() {
        let etcd = testkit::Etcd::start().expect("etcd");
        let cfg = EtcdConfig { endpoints: vec![etcd.endpoint()], ..EtcdConfig::default() };
        let client = connect(&cfg).await.expect("connect");
        let keys = Keys::new("pings");
        let lease = client.clone().lease_grant(60, None).await.expect("lease").id();
        let standby_lease = client.clone().lease_grant(60, None).await.expect("lease").id();
        client.election_client().campaign(keys.election(), "master", lease).await.expect("campaign");
        let mut standby = connect_untimed(&cfg).await.expect("connect").election_client();
        let waited =
            tokio::time::timeout(Duration::from_secs(15), standby.campaign(keys.election(), "standby", standby_lease))
                .await;
        assert!(waited.is_err(), "the standby's campaign ended while the master lived: {waited:?}");
    }
}
