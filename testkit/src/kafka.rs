//! A multi-zone Kafka cluster on librdkafka's mock cluster: a real Kafka wire-protocol server
//! on loopback that any client reaches over TCP.
//!
//! ```text
//!  KafkaSpec { racks, brokers_per_zone } ──start()──> mock brokers 1..=N, rack(id) = racks[(id-1) % Z]
//!  create_topic(name, partitions) ──> RF 3 (consecutive brokers, so one replica per zone)
//!                                 ──> leaders pinned round-robin over zones (the mock picks randomly)
//!  move_leader / broker_down / broker_up: what a real cluster does on its own, done by the test
//! ```

mod markers;
mod requests;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, DefaultProducerContext, Producer};

use crate::kafka_front::{Front, Security, Wire};
use crate::tls::{TlsFiles, make_certs};
use crate::{Result, TestkitError, io_err};

/// Shape of the cluster.
#[derive(Debug, Clone)]
pub struct KafkaSpec {
    /// Rack label of each zone, in zone order.
    pub racks: Vec<String>,
    /// Brokers in each zone.
    pub brokers_per_zone: usize,
}

/// A running multi-zone mock Kafka cluster.
///
/// The cluster lives inside a client created with `test.mock.num.brokers` (the host), so that
/// the raw cluster handle is reachable for what rdkafka does not wrap (advertised listeners).
pub struct KafkaCluster {
    host: BaseProducer,
    bootstrap: String,
    racks: BTreeMap<i32, String>,
    zones: Vec<String>,
    admin: BaseConsumer,
    client_options: Vec<(String, String)>,
    tls: Option<TlsFiles>,
    wire: Arc<Wire>,
    _front: Option<(Front, tempfile::TempDir)>,
}

impl std::fmt::Debug for KafkaCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaCluster").field("bootstrap", &self.bootstrap).field("racks", &self.racks).finish()
    }
}

impl Drop for KafkaCluster {
    fn drop(&mut self) {
        // The fronts may still answer an election while the host client (and its mock cluster)
        // goes: the pointer is taken away first, under the lock every election holds.
        *self.wire.mock.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
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
        Self::start_secured(spec, &Security::default())
    }

    /// Like [`KafkaCluster::start`], but clients must connect as `security` says: every broker
    /// is advertised at a front that terminates TLS and SASL (see `kafka_front`).
    /// [`KafkaCluster::client_options`] are the librdkafka properties a client needs.
    pub fn start_secured(spec: &KafkaSpec, security: &Security) -> Result<Self> {
        if spec.racks.is_empty() || spec.brokers_per_zone == 0 {
            return Err(TestkitError::Start {
                server: "kafka",
                reason: "need at least one zone and one broker".into(),
            });
        }
        let n = i32::try_from(spec.racks.len() * spec.brokers_per_zone)
            .map_err(|_| TestkitError::Start { server: "kafka", reason: "too many brokers".into() })?;
        let host: BaseProducer = ClientConfig::new()
            .set("test.mock.num.brokers", n.to_string())
            // The host client never produces; keep it from refreshing metadata through fronts it
            // has no credentials for.
            .set("topic.metadata.refresh.interval.ms", "-1")
            .create()
            .map_err(kafka_err("create mock cluster"))?;
        let mut cluster = KafkaCluster {
            host,
            bootstrap: String::new(),
            racks: BTreeMap::new(),
            zones: spec.racks.clone(),
            admin: ClientConfig::new().create().map_err(kafka_err("create placeholder client"))?,
            client_options: Vec::new(),
            tls: None,
            wire: Arc::default(),
            _front: None,
        };
        let plain = cluster.mock()?.bootstrap_servers();
        for id in 1..=n {
            let rack = spec.racks[(id as usize - 1) % spec.racks.len()].clone();
            cluster.mock()?.broker_rack(id, &rack).map_err(kafka_err(format!("set rack of broker {id}")))?;
            cluster.racks.insert(id, rack);
        }
        cluster.bootstrap = if security.needs_front() {
            // The mock's own bootstrap string is computed once at creation and keeps the plain
            // ports; clients must start at the fronts.
            cluster.secure(security, &plain)?
        } else {
            plain
        };
        let mut admin = ClientConfig::new();
        admin.set("bootstrap.servers", &cluster.bootstrap).set("group.id", "testkit-admin");
        for (k, v) in &cluster.client_options {
            admin.set(k, v);
        }
        cluster.admin = admin.create().map_err(kafka_err("create testkit metadata client"))?;
        Ok(cluster)
    }

    /// Starts the fronts and makes every broker advertise its front.
    fn secure(&mut self, security: &Security, plain_bootstrap: &str) -> Result<String> {
        let dir = tempfile::Builder::new().prefix("zonal-kafka-tls-").tempdir().map_err(io_err("create TLS dir"))?;
        let files = if security.tls { Some(make_certs(dir.path())?) } else { None };
        // The mock lists brokers 1..=N in bootstrap order.
        let upstreams = plain_bootstrap
            .split(',')
            .enumerate()
            .map(|(i, a)| {
                let addr = a.parse().map_err(|e| TestkitError::Start {
                    server: "kafka",
                    reason: format!("mock broker address {a:?}: {e}"),
                })?;
                Ok((i as i32 + 1, addr))
            })
            .collect::<Result<Vec<_>>>()?;
        let (front, ports) = Front::start(security, files.as_ref(), &upstreams, self.wire.clone())?;
        // SAFETY: the host client is alive; the call only reads its mock cluster pointer.
        let cluster = unsafe { rdkafka_sys::rd_kafka_handle_mock_cluster(self.host.client().native_ptr()) };
        if cluster.is_null() {
            return Err(TestkitError::Start { server: "kafka", reason: "the host client has no mock cluster".into() });
        }
        *self.wire.mock.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some(crate::kafka_front::MockPtr(cluster));
        let host = c"127.0.0.1";
        let bootstrap = ports.iter().map(|(_, port)| format!("127.0.0.1:{port}")).collect::<Vec<_>>().join(",");
        for (id, port) in ports {
            // SAFETY: the cluster pointer comes from the live host client, which owns the cluster
            // for as long as `self` lives; the function copies the host string under the
            // cluster's lock.
            unsafe { rdkafka_sys::rd_kafka_mock_broker_set_host_port(cluster, id, host.as_ptr(), i32::from(port)) };
        }
        let options = security.client_options(files.as_ref());
        self.client_options = options;
        self.tls = files;
        self._front = Some((front, dir));
        Ok(bootstrap)
    }

    /// Shows clients only the first `count` partitions of `topic` (`None`: all of them). Create the
    /// topic with its final partition count and raise this to make a partition increase as
    /// clients see it: their next metadata lists the new partitions. Needs fronts
    /// ([`Security::relay`]).
    pub fn set_visible_partitions(&self, topic: &str, count: Option<i32>) -> Result<()> {
        self.require_front("visible partitions")?;
        let mut v = self.wire.visible.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match count {
            Some(c) => v.insert(topic.to_owned(), c),
            None => v.remove(topic),
        };
        Ok(())
    }

    /// The options a program under test logs in with through MSK IAM, on a cluster started with
    /// [`Security::msk_iam`]: [`KafkaCluster::client_options`] with `sasl.mechanism =
    /// AWS_MSK_IAM` and its region instead of the SCRAM user.
    pub fn msk_iam_client_options(&self) -> Vec<(String, String)> {
        let sasl = ["sasl.mechanism", "sasl.username", "sasl.password"];
        let mut options: Vec<_> =
            self.client_options.iter().filter(|(k, _)| !sasl.contains(&k.as_str())).cloned().collect();
        options.push(("sasl.mechanism".into(), "AWS_MSK_IAM".into()));
        options.push(("sasl.aws-msk-iam.region".into(), crate::kafka_front::MSK_REGION.into()));
        options
    }

    /// Every OAUTHBEARER (MSK IAM) login the fronts judged, in order.
    pub fn sasl_logins(&self) -> Vec<crate::kafka_front::SaslLogin> {
        self.wire.logins.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Sets a topic configuration entry that DescribeConfigs answers (e.g. `max.message.bytes`).
    /// Needs fronts ([`Security::relay`]).
    pub fn set_topic_config(&self, topic: &str, key: &str, value: &str) -> Result<()> {
        self.require_front("topic configurations")?;
        self.wire
            .configs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(topic.to_owned())
            .or_default()
            .insert(key.to_owned(), value.to_owned());
        Ok(())
    }

    fn require_front(&self, what: &str) -> Result<()> {
        if self._front.is_none() {
            return Err(TestkitError::Start {
                server: "kafka",
                reason: format!("{what} need fronts: start the cluster with Security::relay()"),
            });
        }
        Ok(())
    }

    /// The librdkafka properties a client needs besides `bootstrap.servers` (empty for a
    /// plaintext cluster): `security.protocol`, CA, client certificate and SASL login.
    pub fn client_options(&self) -> &[(String, String)] {
        &self.client_options
    }

    /// A client configuration with `bootstrap.servers` and [`KafkaCluster::client_options`].
    pub fn client_config(&self) -> ClientConfig {
        let mut cc = ClientConfig::new();
        cc.set("bootstrap.servers", &self.bootstrap);
        for (k, v) in &self.client_options {
            cc.set(k, v);
        }
        cc
    }

    /// The certificates of a TLS cluster.
    pub fn tls_files(&self) -> Option<&TlsFiles> {
        self.tls.as_ref()
    }

    /// The `bootstrap.servers` string.
    pub fn bootstrap(&self) -> String {
        self.bootstrap.clone()
    }

    /// A `bootstrap.servers` string of only the brokers in `rack`, as advertised (the fronts of
    /// a secured cluster): what a client in that zone should bootstrap through, so that its
    /// metadata requests stay in its zone.
    pub fn bootstrap_in(&self, rack: &str) -> Result<String> {
        let md = self.admin.fetch_metadata(None, Duration::from_secs(10)).map_err(kafka_err("metadata"))?;
        let addresses: Vec<String> = md
            .brokers()
            .iter()
            .filter(|b| self.racks.get(&b.id()).is_some_and(|r| r == rack))
            .map(|b| format!("{}:{}", b.host(), b.port()))
            .collect();
        if addresses.is_empty() {
            return Err(TestkitError::Start { server: "kafka", reason: format!("no broker in rack {rack:?}") });
        }
        Ok(addresses.join(","))
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
    pub fn mock(&self) -> Result<MockCluster<'_, DefaultProducerContext>> {
        self.host.client().mock_cluster().ok_or_else(|| TestkitError::Start {
            server: "kafka",
            reason: "the host client has no mock cluster".into(),
        })
    }

    /// Creates a topic with RF 3 (or fewer brokers) and pins leaders round-robin over the zones:
    /// partition p is led by its replica in zone `p % zones`.
    pub fn create_topic(&self, topic: &str, partitions: i32) -> Result<()> {
        let rf = 3.min(self.racks.len() as i32);
        self.mock()?.create_topic(topic, partitions, rf).map_err(kafka_err(format!("create topic {topic}")))?;
        let replicas = self.replicas(topic)?;
        let moves: Vec<(i32, i32)> = (0..partitions)
            .filter_map(|p| {
                let zone = &self.zones[p as usize % self.zones.len()];
                let reps = replicas.get(&p).cloned().unwrap_or_default();
                // A replica in the wanted zone when there is one; with fewer zones than RF there
                // always is.
                let leader = reps.iter().copied().find(|b| self.racks.get(b) == Some(zone)).or(reps.first().copied());
                leader.map(|l| (p, l))
            })
            .collect();
        // Each leader move waits for the mock's thread to take it up (about a tenth of a second
        // when it is idle); moves sent from many threads are taken up together, so a topic of
        // 1,000 partitions is ready in seconds rather than minutes.
        std::thread::scope(|scope| {
            let workers: Vec<_> = moves
                .chunks(moves.len().div_ceil(64).max(1))
                .map(|chunk| scope.spawn(move || chunk.iter().try_for_each(|&(p, l)| self.move_leader(topic, p, l))))
                .collect();
            workers.into_iter().try_for_each(|w| {
                w.join().unwrap_or_else(|_| {
                    Err(TestkitError::Start { server: "kafka", reason: "a leader move panicked".into() })
                })
            })
        })
    }

    /// Replica lists per partition, as the cluster reports them.
    pub fn replicas(&self, topic: &str) -> Result<BTreeMap<i32, Vec<i32>>> {
        self.per_partition(topic, |p| p.replicas().to_vec())
    }

    /// Leader per partition, as the cluster reports them.
    pub fn leaders(&self, topic: &str) -> Result<BTreeMap<i32, i32>> {
        self.per_partition(topic, rdkafka::metadata::MetadataPartition::leader)
    }

    /// `what` of each partition of `topic`, from a fresh metadata request.
    fn per_partition<T>(
        &self,
        topic: &str,
        what: impl Fn(&rdkafka::metadata::MetadataPartition) -> T,
    ) -> Result<BTreeMap<i32, T>> {
        let md = self
            .admin
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .map_err(kafka_err(format!("metadata of {topic}")))?;
        let topics = md.topics().iter().filter(|t| t.name() == topic);
        Ok(topics.flat_map(|t| t.partitions()).map(|p| (p.id(), what(p))).collect())
    }

    /// Makes `broker` the leader of a partition, as a real cluster would after a failover or a
    /// preferred-leader election.
    pub fn move_leader(&self, topic: &str, partition: i32, broker: i32) -> Result<()> {
        self.mock()?
            .partition_leader(topic, partition, Some(broker))
            .map_err(kafka_err(format!("move leader of {topic}/{partition} to {broker}")))
    }

    /// Disconnects a broker and refuses new connections. Leadership does not move by itself.
    pub fn broker_down(&self, broker: i32) -> Result<()> {
        self.mock()?.broker_down(broker).map_err(kafka_err(format!("take broker {broker} down")))
    }

    /// Lets a downed broker accept connections again.
    pub fn broker_up(&self, broker: i32) -> Result<()> {
        self.mock()?.broker_up(broker).map_err(kafka_err(format!("bring broker {broker} up")))
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

/// Sends `record`, waiting while the producer's queue is full: a full queue empties as
/// deliveries are served, so they are served and the record is tried again. Any other refusal
/// is tried again the same way (the mock cluster's refusals are transient).
pub fn send_waiting<K, P>(producer: &BaseProducer, mut record: rdkafka::producer::BaseRecord<'_, K, P>)
where
    K: rdkafka::message::ToBytes + ?Sized,
    P: rdkafka::message::ToBytes + ?Sized,
{
    loop {
        match producer.send(record) {
            Ok(()) => return,
            Err((_, r)) => {
                producer.poll(Duration::from_millis(5));
                record = r;
            }
        }
    }
}
