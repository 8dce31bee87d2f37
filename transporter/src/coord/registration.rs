//! Workers in etcd: each registers under its lease (rewritten only on a material change), and
//! one that stopped cleanly leaves a mark so the master gives its partitions away at once.
//!
//! ```text
//!  worker ──register (lease)──> /workers/<id>  ──workers()──> master: Registrations
//!                                                              (invalid values reported, skipped)
//!  clean stop ──mark_left (own lease >= grace)──> /left/<id> ──left()──> master: no grace
//!  registering again ──clear_left──> the mark goes (a later crash deserves its grace)
//! ```

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Context;
use az_core::TopicPartition;
use etcd_client::{Client, GetOptions, PutOptions};
use serde::{Deserialize, Serialize};

use super::Keys;

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
    /// Observed bytes/s per partition it owns.
    #[serde(default, deserialize_with = "rates_by_partition")]
    pub rates: BTreeMap<TopicPartition, f64>,
}

/// Rates as etcd holds them, keyed `topic/partition`. A key that is not a partition is dropped
/// with a warning, not the whole registration: a rate only weighs the assignment, and a worker
/// must not leave the fleet over one.
fn rates_by_partition<'de, D: serde::Deserializer<'de>>(d: D) -> Result<BTreeMap<TopicPartition, f64>, D::Error> {
    let raw = BTreeMap::<String, f64>::deserialize(d)?;
    Ok(raw
        .into_iter()
        .filter_map(|(key, rate)| match key.parse() {
            Ok(tp) => Some((tp, rate)),
            Err(e) => {
                tracing::warn!(key, error = %e, "ignoring the rate of something that is not a partition");
                None
            }
        })
        .collect())
}

impl WorkerInfo {
    /// Whether `next` says something the master acts on that `self` (the registration in etcd)
    /// does not: another zone, capacity or address, partitions gained or lost, or a rate that
    /// moved by more than a fifth (rates under 1 KiB/s are noise). Registrations are rewritten
    /// only then, so the etcd keyspace (and its history until compaction) does not grow by one
    /// revision per worker every few seconds.
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

/// The registrations read from etcd.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Registrations {
    /// Workers whose registration parsed.
    pub workers: Vec<WorkerInfo>,
    /// Registrations that did not parse, as `<key>: <why>`; the master reports and skips them
    /// rather than stopping the whole fleet's assignment for one bad value.
    pub invalid: Vec<String>,
}

impl Registrations {
    /// Parses `(key, value)` pairs as etcd returns them.
    pub fn parse<'a>(kvs: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) -> Registrations {
        let mut out = Registrations::default();
        for (key, value) in kvs {
            match serde_json::from_slice::<WorkerInfo>(value) {
                Ok(w) => out.workers.push(w),
                Err(e) => out.invalid.push(format!("{}: {e}", String::from_utf8_lossy(key))),
            }
        }
        out
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
pub async fn workers(client: &Client, keys: &Keys) -> anyhow::Result<Registrations> {
    let mut c = client.clone();
    let resp = c.get(keys.workers(), Some(GetOptions::new().with_prefix())).await.context("listing workers in etcd")?;
    Ok(Registrations::parse(resp.kvs().iter().map(|kv| (kv.key(), kv.value()))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registrations_change_only_for_what_the_master_uses() {
        let tp = |p| TopicPartition::new("logs", p);
        let base = WorkerInfo {
            id: "w".into(),
            zone_id: Some("use1-az1".into()),
            zone_name: None,
            host: "h".into(),
            capacity: 1.0,
            http: "127.0.0.1:1".into(),
            rates: BTreeMap::from([(tp(0), 1000.0), (tp(1), 0.0)]),
        };
        let with = |f: &dyn Fn(&mut WorkerInfo)| {
            let mut w = base.clone();
            f(&mut w);
            w
        };
        assert!(!base.differs_materially(&base));
        assert!(!base.differs_materially(&with(&|w| {
            w.rates.insert(tp(0), 1150.0);
        })));
        assert!(!base.differs_materially(&with(&|w| {
            w.rates.insert(tp(1), 0.9);
        })));
        assert!(base.differs_materially(&with(&|w| {
            w.rates.insert(tp(0), 1300.0);
        })));
        assert!(base.differs_materially(&with(&|w| {
            w.rates.insert(tp(2), 0.0);
        })));
        assert!(base.differs_materially(&with(&|w| w.zone_id = Some("use1-az2".into()))));
        assert!(base.differs_materially(&with(&|w| w.capacity = 2.0)));
    }

    /// The rates are keyed `topic/partition` in etcd, as they always were. A registration that is
    /// not JSON is reported with its key and skipped; a rate whose key is not a partition is
    /// dropped and its worker kept.
    #[test]
    fn invalid_registrations_are_reported_by_key_and_skipped() {
        let good = br#"{"id":"w1","zone_id":"az1","zone_name":null,"host":"h","capacity":1.0,"http":"x","rates":{"logs/0":5.0}}"#;
        let bad_rate =
            br#"{"id":"w2","zone_id":null,"zone_name":null,"host":"h","capacity":1.0,"http":"x","rates":{"logs":5.0,"logs/1":2.0}}"#;
        let kvs: [(&[u8], &[u8]); 3] =
            [(b"/c/workers/w1", good), (b"/c/workers/w2", bad_rate), (b"/c/workers/w3", b"not json")];
        let r = Registrations::parse(kvs);
        assert_eq!(r.workers.len(), 2);
        assert_eq!(r.workers[0].rates, BTreeMap::from([(TopicPartition::new("logs", 0), 5.0)]));
        assert_eq!(serde_json::to_vec(&r.workers[0]).expect("json").as_slice(), good.as_slice(), "byte-identical");
        assert_eq!(r.workers[1].id, "w2");
        assert_eq!(r.workers[1].rates, BTreeMap::from([(TopicPartition::new("logs", 1), 2.0)]));
        assert_eq!(r.invalid.len(), 1);
        assert!(r.invalid[0].starts_with("/c/workers/w3: "), "{:?}", r.invalid);
    }
}
