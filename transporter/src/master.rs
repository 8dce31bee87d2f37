//! The master: one worker at a time, elected through etcd's election API. It watches workers and
//! the topology and writes the assignment with a generation number.
//!
//! ```text
//!  campaign(/<cluster>/master, lease) ──elected──> lead: every 500 ms
//!     read:   topics (list, pattern) + topology (az-core) + workers + clean stops   [lead, I/O]
//!     decide: can_plan? ──plan()──> Plan { doc, moved, changed }                    [plan, pure]
//!     write:  changed ──shares::diff──> txn "my leader key is unchanged" ──> /<cluster>/assignment…
//!  lease lost or txn fails ──> step down, campaign again
//! ```
//!
//! Every decision is in `plan` (pure, table-tested); `lead` only reads, calls it, and writes.

mod lead;
mod plan;
#[cfg(test)]
mod scale;
mod steady;

use std::sync::Arc;

use anyhow::Context;
use tokio::sync::watch;

use crate::coord::{self, LeaseState};
use crate::worker::Worker;

pub use plan::{Plan, PlanInput, PlanSettings, can_plan, partition_specs, plan, zone_label};

/// Campaigns for mastership and, while master, keeps the assignment current. Returns when the
/// lease is lost.
/// It runs on a thread of its own (see `app`), with connections of its own: the campaign's has no
/// request timeout (it blocks until elected; a timeout would churn the election key), the
/// master's work uses the usual one.
pub async fn run(worker: Arc<Worker>, lease: watch::Receiver<LeaseState>) -> anyhow::Result<()> {
    let etcd = coord::connect(&worker.cfg.etcd).await?;
    let mut election = coord::connect_untimed(&worker.cfg.etcd).await?.election_client();
    let lease_id = lease.borrow().id;
    let name = worker.keys.election();
    let resp = election.campaign(name.clone(), worker.id.clone(), lease_id).await.context("campaigning for master")?;
    let leader = resp.leader().context("campaign answered without a leader key")?.clone();
    tracing::info!(worker = %worker.id, "elected master");
    // The master's loop is judged from now: a standby's campaign is not a stall.
    worker.health.beat_master();
    worker.metrics.is_master.set(1);
    let term = lead::Leader { key: leader.key().to_vec(), revision: leader.rev() };
    let result = lead::lead(&worker, &etcd, &lease, &term).await;
    worker.metrics.is_master.set(0);
    let _ = election.resign(Some(etcd_client::ResignOptions::new().with_leader(leader))).await;
    result
}
