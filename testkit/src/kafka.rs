//! A multi-zone Kafka cluster on librdkafka's mock cluster: a real Kafka wire-protocol server
//! on loopback that any client reaches over TCP.
//!
//! ```text
//!  KafkaSpec { racks, brokers_per_zone } ──start()──> mock brokers 1..=N, rack(id) = racks[(id-1) % Z]
//!  create_topic(name, partitions) ──> RF 3 (consecutive brokers, so one replica per zone)
//!                                 ──> leaders pinned round-robin over zones (the mock picks randomly)
//!  move_leader / broker_down / broker_up: what a real cluster does on its own, done by the test
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;

use crate::{Result, TestkitError};

/// Shape of the cluster.
#[derive(Debug, Clone)]
pub struct KafkaSpec {
    /// Rack label of each zone, in zone order.
    pub racks: Vec<String>,
    /// Brokers in each zone.
    pub brokers_per_zone: usize,
}

/// The mock cluster owns raw librdkafka pointers and so is neither `Send` nor `Sync` in Rust's
/// eyes. librdkafka's mock API is thread-safe: every call is marshalled as an op onto the
/// cluster's own thread and waited for, so sharing the handle between threads is sound.
struct SharedMock(MockCluster<'static, DefaultProducerContext>);

// SAFETY: see the type's comment; rd_kafka_mock_* functions only enqueue ops and wait for replies.
unsafe impl Send for SharedMock {}
// SAFETY: as above; no method takes `&mut self`.
unsafe impl Sync for SharedMock {}

/// A running multi-zone mock Kafka cluster.
pub struct KafkaCluster {
    mock: SharedMock,
    bootstrap: String,
    racks: BTreeMap<i32, String>,
    zones: Vec<String>,
    admin: BaseConsumer,
}

impl std::fmt::Debug for KafkaCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaCluster").field("bootstrap", &self.bootstrap).field("racks", &self.racks).finish()
    }
}

fn kafka_err(what: impl Into<String>) -> impl FnOnce(rdkafka::error::KafkaError) -> TestkitError {
    let what = what.into();
    move |source| TestkitError::Kafka { what, source }
}

impl KafkaCluster {
    /// Starts `racks.len() * brokers_per_zone` brokers with racks assigned round-robin, so that
    /// the mock's consecutive replica lists put one replica of each partition in each zone.
    pub fn start(spec: &KafkaSpec) -> Result<Self> {
        if spec.racks.is_empty() || spec.brokers_per_zone == 0 {
            return Err(TestkitError::Start {
                server: "kafka",
                reason: "need at least one zone and one broker".into(),
            });
        }
        let n = i32::try_from(spec.racks.len() * spec.brokers_per_zone)
            .map_err(|_| TestkitError::Start { server: "kafka", reason: "too many brokers".into() })?;
        let mock = MockCluster::new(n).map_err(kafka_err("create mock cluster"))?;
        let mut racks = BTreeMap::new();
        for id in 1..=n {
            let rack = spec.racks[(id as usize - 1) % spec.racks.len()].clone();
            mock.broker_rack(id, &rack).map_err(kafka_err(format!("set rack of broker {id}")))?;
            racks.insert(id, rack);
        }
        let bootstrap = mock.bootstrap_servers();
        let admin: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", "testkit-admin")
            .create()
            .map_err(kafka_err("create testkit metadata client"))?;
        Ok(KafkaCluster { mock: SharedMock(mock), bootstrap, racks, zones: spec.racks.clone(), admin })
    }

    /// The `bootstrap.servers` string.
    pub fn bootstrap(&self) -> String {
        self.bootstrap.clone()
    }

    /// Broker id -> rack.
    pub fn broker_racks(&self) -> BTreeMap<i32, String> {
        self.racks.clone()
    }

    /// Zone rack labels, in zone order.
    pub fn zones(&self) -> &[String] {
        &self.zones
    }

    /// The underlying mock cluster, for error injection the testkit does not wrap.
    pub fn mock(&self) -> &MockCluster<'static, DefaultProducerContext> {
        &self.mock.0
    }

    /// Creates a topic with RF 3 (or fewer brokers) and pins leaders round-robin over the zones:
    /// partition p is led by its replica in zone `p % zones`.
    pub fn create_topic(&self, topic: &str, partitions: i32) -> Result<()> {
        let rf = 3.min(self.racks.len() as i32);
        self.mock.0.create_topic(topic, partitions, rf).map_err(kafka_err(format!("create topic {topic}")))?;
        let replicas = self.replicas(topic)?;
        for p in 0..partitions {
            let zone = &self.zones[p as usize % self.zones.len()];
            let reps = replicas.get(&p).cloned().unwrap_or_default();
            // A replica in the wanted zone when there is one; with fewer zones than RF there
            // always is.
            let leader = reps.iter().copied().find(|b| self.racks.get(b) == Some(zone)).or(reps.first().copied());
            if let Some(leader) = leader {
                self.move_leader(topic, p, leader)?;
            }
        }
        Ok(())
    }

    /// Replica lists per partition, as the cluster reports them.
    pub fn replicas(&self, topic: &str) -> Result<BTreeMap<i32, Vec<i32>>> {
        let md = self
            .admin
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .map_err(kafka_err(format!("metadata of {topic}")))?;
        Ok(md
            .topics()
            .iter()
            .filter(|t| t.name() == topic)
            .flat_map(|t| t.partitions())
            .map(|p| (p.id(), p.replicas().to_vec()))
            .collect())
    }

    /// Leader per partition, as the cluster reports them.
    pub fn leaders(&self, topic: &str) -> Result<BTreeMap<i32, i32>> {
        let md = self
            .admin
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .map_err(kafka_err(format!("metadata of {topic}")))?;
        Ok(md
            .topics()
            .iter()
            .filter(|t| t.name() == topic)
            .flat_map(|t| t.partitions())
            .map(|p| (p.id(), p.leader()))
            .collect())
    }

    /// Makes `broker` the leader of a partition, as a real cluster would after a failover or a
    /// preferred-leader election.
    pub fn move_leader(&self, topic: &str, partition: i32, broker: i32) -> Result<()> {
        self.mock
            .0
            .partition_leader(topic, partition, Some(broker))
            .map_err(kafka_err(format!("move leader of {topic}/{partition} to {broker}")))
    }

    /// Sets the follower a fetch for the partition is redirected to (the mock ignores
    /// `client.rack` and uses this instead).
    pub fn set_follower(&self, topic: &str, partition: i32, broker: i32) -> Result<()> {
        self.mock
            .0
            .partition_follower(topic, partition, broker)
            .map_err(kafka_err(format!("set follower of {topic}/{partition} to {broker}")))
    }

    /// Disconnects a broker and refuses new connections. Leadership does not move by itself.
    pub fn broker_down(&self, broker: i32) -> Result<()> {
        self.mock.0.broker_down(broker).map_err(kafka_err(format!("take broker {broker} down")))
    }

    /// Lets a downed broker accept connections again.
    pub fn broker_up(&self, broker: i32) -> Result<()> {
        self.mock.0.broker_up(broker).map_err(kafka_err(format!("bring broker {broker} up")))
    }

    /// The rack of a broker.
    pub fn rack_of(&self, broker: i32) -> Option<&str> {
        self.racks.get(&broker).map(String::as_str)
    }

    /// Brokers in the given zone (rack label).
    pub fn brokers_in(&self, rack: &str) -> Vec<i32> {
        self.racks.iter().filter(|(_, r)| r.as_str() == rack).map(|(&id, _)| id).collect()
    }
}
