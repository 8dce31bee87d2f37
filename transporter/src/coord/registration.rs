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
use etcd_client::{Client, PutOptions};
use serde::{Deserialize, Serialize};

use super::Keys;
use super::paged::{self, RangeRead};

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
    let prefix = keys.left();
    let listed = paged::range(client, &prefix, RangeRead::keys(KEYS_PAGE)).await.context("listing clean stops")?;
    Ok(listed
        .kvs
        .iter()
        .filter_map(|kv| String::from_utf8_lossy(kv.key()).strip_prefix(prefix.as_str()).map(str::to_owned))
        .collect())
}

/// Live workers, read whole a page at a time; values that do not parse are reported and skipped.
pub async fn workers(client: &Client, keys: &Keys) -> anyhow::Result<Registrations> {
    let read = paged::range(client, &keys.workers(), RangeRead::values(VALUES_PAGE))
        .await
        .context("listing workers in etcd")?;
    Ok(Registrations::parse(read.kvs.iter().map(|kv| (kv.key(), kv.value()))))
}

/// Keys per page when listing keys only (about 60 bytes each).
const KEYS_PAGE: i64 = 1000;
/// Registrations per page: at most [`MAX_RATES`] rates of ~30 bytes each, so a page of 32
/// stays under the client's 4 MiB even when every worker registers its most.
const VALUES_PAGE: i64 = 32;

/// The most partition rates a registration carries (the largest ones): about 130 KB, so that one
/// registration stays far below etcd's 1.5 MiB request limit however many partitions a worker
/// owns. A partition without a rate weighs as the mean.
pub const MAX_RATES: usize = 4096;

/// The rates a worker registers: those of the partitions it owns now (a partition it gave away
/// is the new owner's to report), at most [`MAX_RATES`], largest first.
pub fn registered_rates(
    rates: &BTreeMap<TopicPartition, f64>,
    owned: impl IntoIterator<Item = TopicPartition>,
) -> BTreeMap<TopicPartition, f64> {
    let mut mine: Vec<(TopicPartition, f64)> =
        owned.into_iter().filter_map(|tp| rates.get(&tp).map(|r| (tp, *r))).collect();
    if mine.len() > MAX_RATES {
        mine.sort_by(|a, b| b.1.total_cmp(&a.1));
        mine.truncate(MAX_RATES);
    }
    mine.into_iter().collect()
}

/// What reading the registrations cost, for the master's log and the fleet-scale test.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadCost {
    /// Requests sent.
    pub requests: usize,
    /// Bytes of keys and values in the largest reply.
    pub largest_reply: usize,
    /// Registrations read with their values (the ones that changed).
    pub values: usize,
}

/// The master's view of the registrations, kept current by reading only what changed: every
/// refresh lists the keys and their revisions (about 60 bytes a worker), then reads the values
/// of the registrations written since the last refresh. At 1,000 workers a refresh with nothing
/// new is one small request, not the whole fleet's rates every half second.
#[derive(Debug, Default)]
pub struct Registry {
    /// Key -> (its modification revision, the registration or why it did not parse).
    by_key: BTreeMap<Vec<u8>, (i64, Result<WorkerInfo, String>)>,
    /// The revision the view is current at.
    revision: i64,
    /// What the last refresh cost.
    pub cost: ReadCost,
}

impl Registry {
    /// Brings the view up to date; true when a registration came, went or changed.
    pub async fn refresh(&mut self, client: &Client, keys: &Keys) -> anyhow::Result<bool> {
        let prefix = keys.workers();
        let listed = paged::range(client, &prefix, RangeRead::keys(KEYS_PAGE)).await.context("listing workers")?;
        let live: BTreeMap<Vec<u8>, i64> = listed.kvs.iter().map(|kv| (kv.key().to_vec(), kv.mod_revision())).collect();
        self.cost = ReadCost { requests: listed.pages, largest_reply: listed.largest_reply, values: 0 };
        let before = self.by_key.len();
        self.by_key.retain(|k, _| live.contains_key(k));
        let mut changed = self.by_key.len() != before;
        let stale = |by_key: &BTreeMap<Vec<u8>, (i64, Result<WorkerInfo, String>)>| {
            live.iter().any(|(k, rev)| by_key.get(k).is_none_or(|(r, _)| r != rev))
        };
        if stale(&self.by_key) {
            let since = RangeRead {
                min_mod_revision: self.revision + 1,
                revision: listed.revision,
                ..RangeRead::values(VALUES_PAGE)
            };
            let read = paged::range(client, &prefix, since).await.context("reading changed worker registrations")?;
            self.cost.requests += read.pages;
            self.cost.largest_reply = self.cost.largest_reply.max(read.largest_reply);
            self.cost.values = read.kvs.len();
            for kv in &read.kvs {
                let parsed = serde_json::from_slice::<WorkerInfo>(kv.value())
                    .map_err(|e| format!("{}: {e}", String::from_utf8_lossy(kv.key())));
                self.by_key.insert(kv.key().to_vec(), (kv.mod_revision(), parsed));
            }
            changed = true;
            if stale(&self.by_key) {
                // Not expected (both reads are at one revision); the next refresh reads all.
                self.revision = 0;
                return Ok(true);
            }
        }
        self.revision = listed.revision;
        Ok(changed)
    }

    /// The registrations as last refreshed.
    pub fn registrations(&self) -> Registrations {
        let mut out = Registrations::default();
        for (_, parsed) in self.by_key.values() {
            match parsed {
                Ok(w) => out.workers.push(w.clone()),
                Err(why) => out.invalid.push(why.clone()),
            }
        }
        out
    }
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

    /// Issue 23, item 1: a worker registered a rate for every partition it ever read. It now
    /// registers those it owns, at most MAX_RATES of them (the largest).
    #[test]
    fn only_owned_partitions_rates_are_registered_and_at_most_max_rates() {
        let tp = |p| TopicPartition::new("logs", p);
        let rates: BTreeMap<TopicPartition, f64> = (0..10_000).map(|p| (tp(p), f64::from(p))).collect();
        let mine = registered_rates(&rates, [tp(3), tp(5), tp(20_000)]);
        assert_eq!(mine, BTreeMap::from([(tp(3), 3.0), (tp(5), 5.0)]), "owned and known only");
        let all = registered_rates(&rates, (0..10_000).map(tp));
        assert_eq!(all.len(), MAX_RATES);
        assert!(all.keys().all(|k| k.partition >= 10_000 - MAX_RATES as i32), "the largest are kept");
        let info = WorkerInfo {
            id: "w".into(),
            zone_id: None,
            zone_name: None,
            host: "h".into(),
            capacity: 1.0,
            http: String::new(),
            rates: all
                .into_iter()
                .map(|(k, v)| (TopicPartition::new("a-long-topic-name.of.production.logs", k.partition), v))
                .collect(),
        };
        let bytes = serde_json::to_vec(&info).expect("json").len();
        assert!(bytes < 256 * 1024, "a registration of {bytes} bytes");
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
