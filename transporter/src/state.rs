//! The running worker's state as its HTTP endpoints see it: readiness (registered, with an
//! assignment read), the `/status` document and the computed traffic gauges. Only local state:
//! the endpoints must answer while etcd does not.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError};

use az_core::{TopicPartition, TopologyWatcher, ZoneInfo};
use prometheus_client::registry::Registry;
use serde::Serialize;

use crate::metrics::TrafficLabel;
use crate::worker::{OwnedStatus, Worker};

/// State the HTTP handlers read.
pub struct AppState {
    /// The worker.
    pub worker: Arc<Worker>,
    /// Metrics registry.
    pub registry: Registry,
    /// Zone discovery result.
    pub zone: ZoneInfo,
    /// Racks for accounting.
    pub topology: TopologyWatcher,
    /// Registered with a valid lease.
    pub registered: AtomicBool,
    /// The last assignment `/assignment` read from etcd.
    pub assignment_view: crate::http::AssignmentCache,
}

/// `/status` body.
#[derive(Debug, Serialize)]
pub struct Status {
    /// Worker id.
    pub id: String,
    /// `master` or `worker`.
    pub role: &'static str,
    /// Zone label, if known.
    pub zone: Option<String>,
    /// Where the zone came from.
    pub zone_source: String,
    /// Registered with a valid lease.
    pub registered: bool,
    /// Partitions in this worker's share of the assignment (`None` before it was read).
    pub assigned: Option<usize>,
    /// Partitions this worker owns now, with their offsets.
    pub owned: BTreeMap<TopicPartition, OwnedStatus>,
}

impl shell::http::Endpoints for AppState {
    type Status = Status;

    fn registry(&self) -> &Registry {
        &self.registry
    }

    fn refresh_gauges(&self) {
        let topo = self.topology.current();
        let traffic = &rdkafka::consumer::Consumer::client(&*self.worker.consumer).context().traffic;
        let (zone, matcher) = (self.zone.zone.as_ref(), self.worker.cfg.zone.matcher());
        let metrics = &self.worker.metrics;
        for (family, t) in [
            (&metrics.kafka_bytes, traffic.report(&topo, zone, &matcher)),
            (&metrics.kafka_protocol_bytes, traffic.report_protocol_only(&topo, zone, &matcher)),
        ] {
            for (zone, direction, bytes) in t.rows() {
                family.get_or_create(&TrafficLabel { zone: zone.into(), direction: direction.into() }).set(bytes);
            }
        }
    }

    fn unhealthy(&self) -> Option<String> {
        let master = self.worker.metrics.is_master.get() == 1;
        self.worker.health.stalled(self.registered.load(Ordering::Relaxed), master, crate::health::STALLED_AFTER)
    }

    fn health(&self) -> Option<&shell::metrics::Health> {
        Some(&self.worker.metrics.health)
    }

    fn not_ready(&self) -> Option<String> {
        if let Some(why) = self.worker.upload_refused.lock().unwrap_or_else(PoisonError::into_inner).as_ref() {
            return Some(format!("S3 refuses uploads: {why}"));
        }
        if let Some(why) = self.worker.disk.over() {
            return Some(format!("no room to buffer: {why}"));
        }
        if let Some(why) = self.worker.health.etcd() {
            return Some(format!("etcd: {why}"));
        }
        let context = rdkafka::consumer::Consumer::client(&*self.worker.consumer).context();
        if context.brokers_up.load(std::sync::atomic::Ordering::Relaxed) == 0 {
            return Some("Kafka: no broker connection is up".into());
        }
        let assigned = self.worker.share.read().unwrap_or_else(PoisonError::into_inner).is_some();
        if self.registered.load(Ordering::Relaxed) && assigned {
            None
        } else {
            Some("not registered or no assignment yet".into())
        }
    }

    fn status(&self) -> Status {
        let w = &self.worker;
        let assigned = w.share.read().unwrap_or_else(PoisonError::into_inner).as_ref().map(|s| s.len());
        let is_master = w.metrics.is_master.get() == 1;
        Status {
            id: w.id.clone(),
            role: if is_master { "master" } else { "worker" },
            zone: self.zone.zone.as_ref().map(|z| z.display_label().to_owned()),
            zone_source: self.zone.source.to_string(),
            registered: self.registered.load(Ordering::Relaxed),
            assigned,
            owned: w.owned.lock().unwrap_or_else(PoisonError::into_inner).clone(),
        }
    }
}
