//! Cross-zone accounting: bytes a Kafka client sent to and received from each broker (from
//! librdkafka's statistics), joined with broker racks into same-zone / cross-zone / unknown.
//!
//! ```text
//!  librdkafka stats JSON (every statistics.interval.ms) ──ingest()──> BrokerTraffic
//!        per broker handle: nodeid, txbytes, rxbytes (cumulative)       │
//!                               Topology racks + own Zone ──report()──> ZoneTraffic
//! ```
//!
//! Counters in the statistics are cumulative per broker connection, so the latest document per
//! broker handle replaces the previous one; nothing is summed over time here.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use rdkafka::ClientContext;
use rdkafka::consumer::ConsumerContext;
use rdkafka::producer::{DeliveryResult, ProducerContext};
use serde::{Deserialize, Serialize};

use crate::topology::Topology;
use crate::zone::{Zone, ZoneMatcher};

/// Why a statistics document was rejected.
#[derive(Debug, thiserror::Error)]
pub enum AccountingError {
    /// The document is not librdkafka statistics JSON.
    #[error("statistics JSON is malformed: {0}")]
    Malformed(#[from] serde_json::Error),
}

#[derive(Deserialize)]
struct StatsDoc {
    #[serde(default)]
    brokers: BTreeMap<String, BrokerStats>,
}

#[derive(Deserialize)]
struct BrokerStats {
    nodeid: i32,
    #[serde(default)]
    txbytes: u64,
    #[serde(default)]
    rxbytes: u64,
    /// Requests sent, by request type (`Produce`, `Fetch`, `Metadata`, …).
    #[serde(default)]
    req: BTreeMap<String, u64>,
}

impl BrokerStats {
    /// Whether records went over this connection (produced or fetched): otherwise its bytes are
    /// all protocol (metadata, admin, coordinator, handshakes).
    fn carried_records(&self) -> bool {
        ["Produce", "Fetch"].iter().any(|r| self.req.get(*r).is_some_and(|n| *n > 0))
    }
}

/// What the client exchanged with one broker connection.
#[derive(Debug, Clone, Copy)]
struct Connection {
    nodeid: i32,
    bytes: Bytes,
    carried_records: bool,
}

/// Bytes exchanged with one broker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Bytes {
    /// Bytes sent by the client.
    pub tx: u64,
    /// Bytes received by the client.
    pub rx: u64,
}

impl Bytes {
    /// Sent plus received.
    pub fn total(&self) -> u64 {
        self.tx + self.rx
    }

    fn add(&mut self, other: Bytes) {
        self.tx += other.tx;
        self.rx += other.rx;
    }
}

/// Traffic of one client, broken down by zone relation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ZoneTraffic {
    /// To and from brokers in the client's zone.
    pub same_zone: Bytes,
    /// To and from brokers in other zones.
    pub cross_zone: Bytes,
    /// To and from brokers whose zone is not known (no rack, bootstrap connections before the
    /// broker id is known, or the client's own zone unknown).
    pub unknown: Bytes,
}

impl ZoneTraffic {
    /// All bytes.
    pub fn total(&self) -> u64 {
        self.same_zone.total() + self.cross_zone.total() + self.unknown.total()
    }

    /// Cross-zone share of the bytes whose zone relation is known, in 0..=1; 0 when none.
    pub fn cross_zone_share(&self) -> f64 {
        let known = self.same_zone.total() + self.cross_zone.total();
        if known == 0 { 0.0 } else { self.cross_zone.total() as f64 / known as f64 }
    }

    /// Every figure as `(zone relation, direction, bytes)`, the labels of the programs'
    /// `kafka_bytes` gauges: relation `same-zone`, `cross-zone` or `unknown`; direction `tx` or `rx`.
    pub fn rows(&self) -> [(&'static str, &'static str, u64); 6] {
        [
            ("same-zone", "tx", self.same_zone.tx),
            ("same-zone", "rx", self.same_zone.rx),
            ("cross-zone", "tx", self.cross_zone.tx),
            ("cross-zone", "rx", self.cross_zone.rx),
            ("unknown", "tx", self.unknown.tx),
            ("unknown", "rx", self.unknown.rx),
        ]
    }

    /// Adds another client's traffic.
    pub fn add(&mut self, other: &ZoneTraffic) {
        self.same_zone.add(other.same_zone);
        self.cross_zone.add(other.cross_zone);
        self.unknown.add(other.unknown);
    }
}

/// Cumulative bytes per broker of one client, fed from its statistics. Cheap to clone; clones
/// share the counters.
#[derive(Debug, Clone, Default)]
pub struct BrokerTraffic {
    // Keyed by librdkafka's broker handle name, which is stable for the client's lifetime.
    inner: Arc<Mutex<BTreeMap<String, Connection>>>,
}

impl BrokerTraffic {
    /// A new, empty counter set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes in one statistics document.
    pub fn ingest(&self, json: &[u8]) -> Result<(), AccountingError> {
        let doc: StatsDoc = serde_json::from_slice(json)?;
        let mut map = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        for (name, b) in doc.brokers {
            let carried_records = b.carried_records();
            map.insert(
                name,
                Connection { nodeid: b.nodeid, bytes: Bytes { tx: b.txbytes, rx: b.rxbytes }, carried_records },
            );
        }
        Ok(())
    }

    /// Bytes per broker id; connections not yet tied to a broker id are under -1.
    pub fn per_broker(&self) -> BTreeMap<i32, Bytes> {
        self.per_broker_where(|_| true)
    }

    fn per_broker_where(&self, keep: impl Fn(&Connection) -> bool) -> BTreeMap<i32, Bytes> {
        let map = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out: BTreeMap<i32, Bytes> = BTreeMap::new();
        for c in map.values().filter(|c| keep(c)) {
            out.entry(if c.nodeid < 0 { -1 } else { c.nodeid }).or_default().add(c.bytes);
        }
        out
    }

    /// Joins the counters with broker racks, from the point of view of a client in `zone`.
    pub fn report(&self, topology: &Topology, zone: Option<&Zone>, matcher: &ZoneMatcher) -> ZoneTraffic {
        classify(&self.per_broker(), topology, zone, matcher)
    }

    /// Like [`BrokerTraffic::report`], over only the connections that carried no records (no
    /// produce or fetch request): metadata, admin, group coordinator and handshakes. A
    /// zone-aware client's cross-zone bytes should all be here.
    pub fn report_protocol_only(&self, topology: &Topology, zone: Option<&Zone>, matcher: &ZoneMatcher) -> ZoneTraffic {
        classify(&self.per_broker_where(|c| !c.carried_records), topology, zone, matcher)
    }
}

/// Classifies per-broker bytes into same-zone, cross-zone and unknown. Pure.
pub fn classify(
    per_broker: &BTreeMap<i32, Bytes>,
    topology: &Topology,
    zone: Option<&Zone>,
    matcher: &ZoneMatcher,
) -> ZoneTraffic {
    let mut t = ZoneTraffic::default();
    for (&id, &bytes) in per_broker {
        let bucket = match (zone, topology.rack_of(id)) {
            (Some(z), Some(rack)) if matcher.matches(z, rack) => &mut t.same_zone,
            (Some(_), Some(_)) => &mut t.cross_zone,
            _ => &mut t.unknown,
        };
        bucket.add(bytes);
    }
    t
}

/// A client context that feeds librdkafka statistics into a [`BrokerTraffic`], for clients that
/// need no context of their own. Clients with their own context call
/// [`BrokerTraffic::ingest`] from their `stats_raw`.
#[derive(Debug, Clone, Default)]
pub struct StatsContext {
    /// The counters this context feeds.
    pub traffic: BrokerTraffic,
}

impl ClientContext for StatsContext {
    fn stats_raw(&self, statistics: &[u8]) {
        if let Err(e) = self.traffic.ingest(statistics) {
            tracing::warn!(error = %e, "ignoring librdkafka statistics");
        }
    }
}

impl ConsumerContext for StatsContext {}

impl ProducerContext for StatsContext {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &DeliveryResult<'_>, _: Self::DeliveryOpaque) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::Broker;

    #[test]
    fn ingest_keeps_latest_and_classifies() {
        let traffic = BrokerTraffic::new();
        let doc = |tx1: u64, tx2: u64| {
            format!(
                r#"{{"name":"p","brokers":{{
                "127.0.0.1:1/1":{{"nodeid":1,"txbytes":{tx1},"rxbytes":10}},
                "127.0.0.1:2/2":{{"nodeid":2,"txbytes":{tx2},"rxbytes":20}},
                "127.0.0.1:1/bootstrap":{{"nodeid":-1,"txbytes":5,"rxbytes":5}},
                "127.0.0.1:3/3":{{"nodeid":3,"txbytes":7,"rxbytes":7}}}}}}"#
            )
        };
        traffic.ingest(doc(100, 50).as_bytes()).expect("valid stats");
        traffic.ingest(doc(300, 90).as_bytes()).expect("valid stats");
        let mut topo = Topology::default();
        for (id, rack) in [(1, Some("a")), (2, Some("b")), (3, None)] {
            topo.brokers.insert(id, Broker { id, host: String::new(), port: 0, rack: rack.map(Into::into) });
        }
        let r = traffic.report(&topo, Some(&Zone::label("a")), &ZoneMatcher::default());
        assert_eq!(r.same_zone, Bytes { tx: 300, rx: 10 });
        assert_eq!(r.cross_zone, Bytes { tx: 90, rx: 20 });
        assert_eq!(r.unknown, Bytes { tx: 12, rx: 12 });
        assert!((r.cross_zone_share() - 110.0 / 420.0).abs() < 1e-9);
        let r = traffic.report(&topo, None, &ZoneMatcher::default());
        assert_eq!(r.unknown.total(), r.total());
    }

    #[test]
    fn connections_without_records_are_protocol_only() {
        let traffic = BrokerTraffic::new();
        let doc = r#"{"brokers":{
            "b:1/1":{"nodeid":1,"txbytes":1000,"rxbytes":100,"req":{"Produce":9,"Metadata":2}},
            "b:2/2":{"nodeid":2,"txbytes":40,"rxbytes":400,"req":{"Metadata":3,"ApiVersion":1}},
            "b:3/3":{"nodeid":3,"txbytes":10,"rxbytes":900,"req":{"Fetch":5}},
            "b:1/bootstrap":{"nodeid":-1,"txbytes":5,"rxbytes":5}}}"#;
        traffic.ingest(doc.as_bytes()).expect("valid stats");
        let mut topo = Topology::default();
        for (id, rack) in [(1, "a"), (2, "b"), (3, "c")] {
            topo.brokers.insert(id, Broker { id, host: String::new(), port: 0, rack: Some(rack.into()) });
        }
        let zone = Zone::label("a");
        let all = traffic.report(&topo, Some(&zone), &ZoneMatcher::default());
        let protocol = traffic.report_protocol_only(&topo, Some(&zone), &ZoneMatcher::default());
        assert_eq!(all.cross_zone, Bytes { tx: 50, rx: 1300 });
        assert_eq!(protocol.cross_zone, Bytes { tx: 40, rx: 400 }, "broker 3 carried fetches");
        assert_eq!(protocol.same_zone, Bytes::default(), "broker 1 carried produce requests");
        assert_eq!(protocol.unknown, Bytes { tx: 5, rx: 5 });
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let traffic = BrokerTraffic::new();
        assert!(traffic.ingest(b"\xff\xfe not json").is_err());
        assert!(traffic.ingest(br#"{"brokers":{"x":{"nodeid":"one"}}}"#).is_err());
        assert!(traffic.ingest(br#"{"name":"no brokers"}"#).is_ok());
        assert!(traffic.per_broker().is_empty());
    }
}
