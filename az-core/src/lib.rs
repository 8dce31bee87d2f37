//! az-core: what both Zonal programs need to know about zones. Zone discovery, rack-aware
//! topology of a Kafka cluster, partition selection, cross-zone accounting, and the assignment
//! of partitions to transporter workers.
//!
//! ```text
//!  zone::discover ──> Zone ─┐
//!  topology::TopologyWatcher ──> Topology ─┼─> selection::select ──> local partitions (+ fallback reason)
//!  accounting::BrokerTraffic (librdkafka stats) ─┴─> same-zone / cross-zone bytes
//!  assign::assign (partitions, workers, previous) ──> partition -> worker, in zone, balanced
//! ```

pub mod accounting;
mod admin;
pub mod assign;
pub mod headers;
pub mod kafka_options;
pub mod leaders;
pub mod msk_iam;
pub mod selection;
pub mod topic_partition;
pub mod topology;
pub mod zone;

pub use accounting::{BrokerTraffic, Bytes, StatsContext, ZoneTraffic};
pub use selection::{FallbackReason, Purpose, Selection, select};
pub use topic_partition::TopicPartition;
pub use topology::{Broker, PartitionInfo, TopicInfo, Topology, TopologyWatcher, WatchOptions};
pub use zone::{DiscoveryConfig, Provider, Zone, ZoneInfo, ZoneMatcher, ZoneSource, discover};
