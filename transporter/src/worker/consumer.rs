//! The worker's one Kafka consumer: its settings (manual assignment, no automatic commit or
//! reset, per-partition prefetch bounds, `client.rack` for follower fetching) and its context,
//! which turns librdkafka's statistics into cross-zone traffic and per-partition lag.
//!
//! ```text
//!  librdkafka statistics (JSON) ──stats_raw──> BrokerTraffic (bytes per broker, for /metrics)
//!                                          └─> lag per partition (consumer_lag) ──> stats::update_lag_metrics
//!  errors ──> AuthFailure (a refused login stops the process) | warning
//! ```

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context;
use az_core::kafka_options::{AuthFailure, ClientOptions};
use az_core::{BrokerTraffic, TopicPartition, Zone};
use rdkafka::ClientContext;
use rdkafka::consumer::{Consumer, ConsumerContext, StreamConsumer};
use serde::Deserialize;

use crate::config::TransporterConfig;

/// Consumer context: statistics feed cross-zone accounting, per-partition lag and the brokers
/// connected (`/readyz`).
pub struct WorkerContext {
    /// Bytes per broker.
    pub traffic: BrokerTraffic,
    /// Lag per partition from the latest statistics.
    pub lag: Mutex<BTreeMap<TopicPartition, i64>>,
    /// Where a refused login is reported.
    pub auth: Arc<AuthFailure>,
    /// Brokers with a connection up, from the latest statistics (-1 before the first).
    pub brokers_up: AtomicI64,
}

impl Default for WorkerContext {
    fn default() -> Self {
        WorkerContext {
            traffic: BrokerTraffic::default(),
            lag: Mutex::default(),
            auth: Arc::default(),
            brokers_up: AtomicI64::new(-1),
        }
    }
}

/// The part of librdkafka's statistics the lag comes from.
#[derive(Deserialize)]
struct Stats {
    #[serde(default)]
    topics: BTreeMap<String, TopicStats>,
    #[serde(default)]
    brokers: BTreeMap<String, BrokerStats>,
}
#[derive(Deserialize)]
struct BrokerStats {
    #[serde(default)]
    nodeid: i32,
    #[serde(default)]
    state: String,
}
#[derive(Deserialize)]
struct TopicStats {
    #[serde(default)]
    partitions: BTreeMap<String, PartStats>,
}
#[derive(Deserialize)]
struct PartStats {
    #[serde(default)]
    consumer_lag: i64,
}

impl Stats {
    /// Brokers (not bootstrap entries, whose node id is -1) with a connection up.
    fn brokers_up(&self) -> i64 {
        self.brokers.values().filter(|b| b.nodeid >= 0 && b.state == "UP").count() as i64
    }

    /// Lag per partition; librdkafka's internal partition `-1` and negative lags (unknown) are
    /// left out or counted as none.
    fn lag(self) -> BTreeMap<TopicPartition, i64> {
        let mut lag = BTreeMap::new();
        for (t, ts) in self.topics {
            for (p, ps) in ts.partitions {
                if let Ok(p) = p.parse::<i32>()
                    && p >= 0
                {
                    lag.insert(TopicPartition { topic: t.clone(), partition: p }, ps.consumer_lag.max(0));
                }
            }
        }
        lag
    }
}

impl ClientContext for WorkerContext {
    // MSK IAM tokens (`sasl.mechanism = "AWS_MSK_IAM"`); without it librdkafka never asks.
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn generate_oauth_token(
        &self,
        config: Option<&str>,
    ) -> Result<rdkafka::client::OAuthToken, Box<dyn std::error::Error>> {
        az_core::msk_iam::generate(config)
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        if self.auth.observe(&error, reason) {
            tracing::error!(error = %error, reason, "Kafka refused the login");
        } else {
            tracing::warn!(error = %error, reason, "kafka client error");
        }
    }

    fn stats_raw(&self, statistics: &[u8]) {
        if let Err(e) = self.traffic.ingest(statistics) {
            tracing::warn!(error = %e, "ignoring librdkafka statistics");
        }
        if let Ok(s) = serde_json::from_slice::<Stats>(statistics) {
            self.brokers_up.store(s.brokers_up(), Ordering::Relaxed);
            *self.lag.lock().unwrap_or_else(PoisonError::into_inner) = s.lag();
        }
    }
}

impl ConsumerContext for WorkerContext {}

/// The worker's consumer configuration: manual assignment, no auto commit, the group for
/// mirrored offsets, `client.rack` when follower fetching is on, passthrough options on top
/// (guarded ones were refused when the configuration was loaded).
pub fn consumer_config(cfg: &TransporterConfig, rack: Option<&str>, options: &ClientOptions) -> rdkafka::ClientConfig {
    let mut cc = shell::kafka::base(
        &cfg.kafka.bootstrap_servers,
        &format!("zonal-transporter-{}", cfg.worker_id()),
        Duration::from_secs(5),
    );
    cc.set("group.id", &cfg.kafka.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        // librdkafka's default, set so that it is never someone else's: read_uncommitted would
        // write aborted transactions' records to S3 (kafka.options refuses it too).
        .set("isolation.level", "read_committed")
        // Never reset silently: an offset out of range reaches `pump`, which applies
        // kafka.on-offset-out-of-range and counts it.
        .set("auto.offset.reset", "error")
        .set("fetch.wait.max.ms", "100")
        // Prefetch is per partition with split queues (librdkafka has no limit for the whole
        // consumer). Each partition's records go to its buffer file as they come, even while
        // an object uploads, so a queue only needs to cover one fetch round trip: 64 KiB
        // each, fetched at most 256 KiB at a time, in responses of at most 8 MiB per broker;
        // memory is the formula in docs/operations.md in the partitions owned (override in kafka.options).
        .set("queued.min.messages", "20000")
        .set("queued.max.messages.kbytes", "64")
        .set("max.partition.fetch.bytes", "262144")
        .set("fetch.max.bytes", "8388608")
        // A partition whose queue is over those bounds is fetched again after this long. The
        // default (1 s) left small queues empty most of the time: the benchmark took 10.5 s
        // with it and 4.2 s with 20 ms.
        .set("fetch.queue.backoff.ms", "20");
    if cfg.kafka.follower_fetching
        && let Some(r) = rack
    {
        cc.set("client.rack", r);
    }
    options.apply(&mut cc);
    cc
}

/// `client.rack` in the form the brokers' racks use: brokers compare it with their own
/// `broker.rack` literally, so a zone known by id must be written as a name when racks are
/// names (or through an alias). Asked of the cluster once; without an answer, the zone's id.
fn client_rack(cfg: &TransporterConfig, zone: &Zone, options: &ClientOptions) -> String {
    let probe: anyhow::Result<Vec<String>> = (|| {
        let consumer: rdkafka::consumer::BaseConsumer<az_core::msk_iam::IamContext> =
            consumer_config(cfg, None, options).create_with_context(az_core::msk_iam::IamContext)?;
        az_core::msk_iam::prime(consumer.client(), options);
        let topo = az_core::topology::fetch(consumer.client(), &[], Duration::from_secs(10), 0)?;
        Ok(topo.brokers.values().filter_map(|b| b.rack.clone()).collect())
    })();
    match probe {
        Ok(racks) => match cfg.zone.matcher().rack_label(zone, racks.iter().map(String::as_str)) {
            Some(r) => r.to_owned(),
            None => {
                tracing::warn!(zone = %zone, ?racks, "no broker rack in this zone; follower fetching reads from leaders");
                zone.display_label().to_owned()
            }
        },
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "could not read broker racks; client.rack is the zone's id");
            zone.display_label().to_owned()
        }
    }
}

/// Creates the worker's consumer (see [`consumer_config`]); a refused login is reported to `auth`.
pub fn consumer(
    cfg: &TransporterConfig,
    zone: Option<&Zone>,
    auth: Arc<AuthFailure>,
) -> anyhow::Result<StreamConsumer<WorkerContext>> {
    let options = cfg.kafka.client_options()?;
    let rack = match zone {
        Some(z) if cfg.kafka.follower_fetching => Some(client_rack(cfg, z, &options)),
        _ => None,
    };
    let cc = consumer_config(cfg, rack.as_deref(), &options);
    let consumer: StreamConsumer<WorkerContext> = cc
        .create_with_context(WorkerContext { auth, ..WorkerContext::default() })
        .map_err(|e| anyhow::anyhow!(options.redactor().redact(&e.to_string())))
        .context("creating the Kafka consumer")?;
    az_core::msk_iam::prime(consumer.client(), &options);
    Ok(consumer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_comes_from_the_statistics_of_real_partitions() {
        let stats = br#"{"topics":{"logs":{"partitions":{"0":{"consumer_lag":12},"1":{"consumer_lag":-1},"-1":{"consumer_lag":5}}}}}"#;
        let lag = serde_json::from_slice::<Stats>(stats).expect("stats").lag();
        let want = BTreeMap::from([(TopicPartition::new("logs", 0), 12), (TopicPartition::new("logs", 1), 0)]);
        assert_eq!(lag, want);
    }

    #[test]
    fn brokers_up_count_real_brokers_with_a_connection() {
        let stats = br#"{"brokers":{"a:1/bootstrap":{"nodeid":-1,"state":"UP"},"b:2/1":{"nodeid":1,"state":"UP"},"c:3/2":{"nodeid":2,"state":"DOWN"},"d:4/3":{"nodeid":3,"state":"UP"}}}"#;
        assert_eq!(serde_json::from_slice::<Stats>(stats).expect("stats").brokers_up(), 2);
        let down = br#"{"brokers":{"b:2/1":{"nodeid":1,"state":"CONNECT"},"c:3/2":{"nodeid":2,"state":"DOWN"}}}"#;
        assert_eq!(serde_json::from_slice::<Stats>(down).expect("stats").brokers_up(), 0);
    }
}
