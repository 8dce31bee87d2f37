//! testkit: a whole multi-zone world on loopback for Zonal's tests, demo and benchmarks.
//!
//! ```text
//!  World ─┬─ Kafka: librdkafka mock cluster, zones x brokers, racks round-robin, RF 3
//!         ├─ Etcd: Debian's etcd server, free port, data dir in /dev/shm, killed on drop
//!         ├─ S3: s3s + s3s-fs on a free port, with credentials
//!         └─ MetadataServer per zone: fake EC2 IMDSv2, GCP and Azure endpoints
//! ```
//!
//! Every server binds 127.0.0.1 only and stops when its handle is dropped.

pub mod etcd;
pub mod http;
pub mod jail;
pub mod kafka;
pub mod kafka_front;
mod kafka_relay;
mod kafka_wire;
pub mod kube;
pub mod kubelet;
pub mod metadata;
pub mod net;
pub mod process;
pub mod promql;
pub mod pyarrow;
pub mod readme;
mod runtime;
pub mod s3;
pub mod tls;
pub mod wait;

use std::time::Duration;

pub use etcd::Etcd;
pub use kafka::{KafkaCluster, KafkaSpec};
pub use kafka_front::Security;
pub use kube::KubeApi;
pub use metadata::{MetadataBehaviour, MetadataServer, ZoneSpec};
pub use s3::S3Server;
pub use tls::TlsFiles;
pub use wait::{wait_until, wait_until_async, wait_until_every};

/// Errors of the testkit.
#[derive(Debug, thiserror::Error)]
pub enum TestkitError {
    /// The mock Kafka cluster refused an operation.
    #[error("mock Kafka: {what}: {source}")]
    Kafka {
        /// The operation.
        what: String,
        /// librdkafka's error.
        source: rdkafka::error::KafkaError,
    },
    /// A server could not be started.
    #[error("starting {server} failed: {reason}")]
    Start {
        /// Which server.
        server: &'static str,
        /// Why.
        reason: String,
    },
    /// An independent reader (pyarrow) could not read what it was given.
    #[error("{reader}: {reason}")]
    Reader {
        /// Which reader.
        reader: &'static str,
        /// Why.
        reason: String,
    },
    /// A condition was not met before its deadline.
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long.
        after: Duration,
    },
    /// A filesystem or socket error.
    #[error("{what}: {source}")]
    Io {
        /// What failed.
        what: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A PromQL query (a dashboard's or an alert's) does not parse.
    #[error("PromQL {expr:?} does not parse: {reason}")]
    Query {
        /// The query.
        expr: String,
        /// The parser's message.
        reason: String,
    },
}

/// Result alias of the testkit.
pub type Result<T, E = TestkitError> = std::result::Result<T, E>;

pub(crate) fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> TestkitError {
    let what = what.into();
    move |source| TestkitError::Io { what, source }
}

/// The standard zones of the world: AWS-style AZ ids and names, so both kinds of matching are
/// exercised. More than six zones get generated labels.
pub fn zone_specs(count: usize) -> Vec<ZoneSpec> {
    (0..count)
        .map(|i| {
            let letter = (b'a' + (i % 26) as u8) as char;
            ZoneSpec { id: format!("use1-az{}", i + 1), name: format!("us-east-1{letter}") }
        })
        .collect()
}

/// What a [`World`] contains.
#[derive(Debug, Clone)]
pub struct WorldSpec {
    /// Number of zones.
    pub zones: usize,
    /// Brokers in each zone.
    pub brokers_per_zone: usize,
    /// Start etcd.
    pub etcd: bool,
    /// Start the S3 server.
    pub s3: bool,
    /// How Kafka clients must connect (plaintext by default).
    pub security: Security,
    /// Where the S3 server keeps its buckets (a new folder under it); the system's temporary
    /// folder when absent. Benchmarks put it on a memory file system: S3 stands for a remote
    /// service, whose storage should not compete with what is measured for the local disk.
    pub s3_parent: Option<std::path::PathBuf>,
}

impl Default for WorldSpec {
    fn default() -> Self {
        WorldSpec {
            zones: 3,
            brokers_per_zone: 2,
            etcd: true,
            s3: true,
            security: Security::default(),
            s3_parent: None,
        }
    }
}

/// A running multi-zone world.
pub struct World {
    /// The zones, in order; broker racks and metadata servers use their ids.
    pub zones: Vec<ZoneSpec>,
    /// The Kafka cluster.
    pub kafka: KafkaCluster,
    /// etcd, when asked for.
    pub etcd: Option<Etcd>,
    /// S3, when asked for.
    pub s3: Option<S3Server>,
    /// One metadata server per zone, same order as `zones`.
    pub metadata: Vec<MetadataServer>,
}

impl std::fmt::Debug for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("World").field("zones", &self.zones).field("bootstrap", &self.kafka.bootstrap()).finish()
    }
}

impl World {
    /// Starts everything the spec asks for.
    pub fn start(spec: &WorldSpec) -> Result<World> {
        let zones = zone_specs(spec.zones);
        let kafka = KafkaCluster::start_secured(
            &KafkaSpec { racks: zones.iter().map(|z| z.id.clone()).collect(), brokers_per_zone: spec.brokers_per_zone },
            &spec.security,
        )?;
        let etcd = if spec.etcd { Some(Etcd::start()?) } else { None };
        let s3 = if spec.s3 { Some(S3Server::start_in(spec.s3_parent.as_deref())?) } else { None };
        let metadata = zones
            .iter()
            .map(|z| MetadataServer::start(z.clone(), MetadataBehaviour::Answer))
            .collect::<Result<Vec<_>>>()?;
        Ok(World { zones, kafka, etcd, s3, metadata })
    }

    /// `KEY=value` lines describing every endpoint, as `testkit up` prints them.
    pub fn endpoints(&self) -> Vec<(String, String)> {
        let mut out = vec![("KAFKA_BOOTSTRAP".to_owned(), self.kafka.bootstrap())];
        for (k, v) in self.kafka.client_options() {
            out.push((format!("KAFKA_OPTION_{}", k.to_uppercase().replace('.', "_")), v.clone()));
        }
        for (id, rack) in self.kafka.broker_racks() {
            out.push((format!("KAFKA_BROKER_{id}_RACK"), rack));
        }
        if let Some(e) = &self.etcd {
            out.push(("ETCD_ENDPOINT".into(), e.endpoint()));
        }
        if let Some(s) = &self.s3 {
            out.push(("S3_ENDPOINT".into(), s.endpoint()));
            out.push(("AWS_ACCESS_KEY_ID".into(), s.access_key().to_owned()));
            out.push(("AWS_SECRET_ACCESS_KEY".into(), s.secret_key().to_owned()));
            out.push(("AWS_REGION".into(), s.region().to_owned()));
        }
        for (i, (z, m)) in self.zones.iter().zip(&self.metadata).enumerate() {
            out.push((format!("ZONE_{i}_ID"), z.id.clone()));
            out.push((format!("ZONE_{i}_NAME"), z.name.clone()));
            out.push((format!("ZONE_{i}_METADATA_ENDPOINT"), m.endpoint()));
        }
        out
    }
}
