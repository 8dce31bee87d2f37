//! The worker's etcd lease: granted on the main runtime, then kept alive on a thread of its own,
//! and its validity as the worker sees it (a watch channel every partition task reads).
//!
//! ```text
//!  lease_grant(ttl) ──> LeaseState { valid_until: granted + ttl - margin }
//!  OwnThread "zonal-lease": every ttl/3: keepalive ──answer──> valid_until = sent + ttl - margin
//!                                                 ──ttl 0───> lost (etcd dropped it)
//!                                                 ──nothing─> retry; past valid_until ──> lost
//! ```

use std::time::{Duration, Instant};

use anyhow::Context;
use etcd_client::Client;
use tokio::sync::watch;

use super::{OwnThread, connect};
use crate::config::EtcdConfig;

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

/// A granted lease being kept alive.
pub struct Lease {
    /// The lease id, to bind keys to.
    pub id: i64,
    /// Its state as the keepalive sees it.
    pub state: watch::Receiver<LeaseState>,
    /// The keepalive's thread; dropping or aborting it stops the renewals.
    pub keepalive: OwnThread,
}

/// Grants a lease and keeps it alive on a thread of its own, with its own runtime and etcd
/// connection: no amount of work on the main runtime (records, rolls, the assignment) can delay a
/// keepalive and lose the lease while etcd is healthy. The watch channel carries its state.
pub async fn lease(client: &Client, cfg: &EtcdConfig, ttl_secs: i64) -> anyhow::Result<Lease> {
    let mut c = client.clone();
    let granted = Instant::now();
    let resp = c.lease_grant(ttl_secs, None).await.context("granting an etcd lease")?;
    let id = resp.id();
    let ttl = Duration::from_secs(u64::try_from(resp.ttl()).unwrap_or(1));
    let margin = ttl / 5;
    let (tx, state) = watch::channel(LeaseState { id, valid_until: granted + ttl - margin, lost: false });
    let cfg = cfg.clone();
    let keepalive = OwnThread::spawn("zonal-lease", move || keep_alive(cfg, id, ttl, margin, tx))?;
    Ok(Lease { id, state, keepalive })
}

/// Renews the lease every third of its TTL until etcd says it is gone or it expired unanswered.
/// A failed round is retried quickly: the worker stays owner until the lease would expire.
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Both threads of the main runtime blocked for longer than the lease lasts (a busy worker:
    /// compression, a huge roll): the keepalive runs on its own thread, so the lease lives on in
    /// etcd and the worker still knows itself owner.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_starved_runtime_does_not_lose_the_lease() {
        let etcd = testkit::Etcd::start().expect("etcd");
        let cfg = EtcdConfig { endpoints: vec![etcd.endpoint()], ..EtcdConfig::default() };
        let client = connect(&cfg).await.expect("connect");
        let Lease { id, state, keepalive: _keepalive } = lease(&client, &cfg, 2).await.expect("lease");
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
}
