//! The running agent's shared state: what the HTTP endpoints answer from (readiness, stalls,
//! `/status`, computed gauges) and each stream's routing, recomputed from every topology
//! snapshot.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use az_core::{Purpose, TopologyWatcher, ZoneInfo, ZoneMatcher};
use prometheus_client::registry::Registry;
use rdkafka::producer::Producer;

use crate::metrics::{FileLabel, Metrics, ReasonLabel, TrafficLabel};
use crate::partition::Routing;
use crate::status::{FileStatus, Status, StreamStatus};
use crate::stream::StreamShared;

/// State shared by the HTTP handlers and background tasks.
pub struct AgentState {
    /// The metrics registry.
    pub registry: Registry,
    pub(crate) metrics: Arc<Metrics>,
    /// Rediscovered in the background while unknown, so it can change once.
    pub(crate) zone: RwLock<ZoneInfo>,
    pub(crate) matcher: ZoneMatcher,
    pub(crate) streams: Vec<Arc<StreamShared>>,
    pub(crate) topology: TopologyWatcher,
    pub(crate) running: AtomicBool,
    pub(crate) stall_timeout: Duration,
    pub(crate) unacknowledged_not_ready: Duration,
}

impl AgentState {
    /// Bytes in flight over all streams.
    fn in_flight_bytes(&self) -> u64 {
        self.streams.iter().map(|s| s.budget.used()).sum()
    }

    /// Why the agent is not ready, or `None` when it is.
    pub fn not_ready(&self) -> Option<String> {
        if !self.running.load(Ordering::Relaxed) {
            return Some("stopping or not started".into());
        }
        if !self.topology.current().is_fetched() {
            return Some(format!("no topology yet: {:?}", self.topology.status().last_error));
        }
        for s in &self.streams {
            let name = &s.config.name;
            let last = s.producer.context().last_error.lock().unwrap_or_else(PoisonError::into_inner).clone();
            if let Some(e) = last {
                return Some(format!("stream {name}: Kafka refuses its records ({e}); they are kept and retried"));
            }
            if let Some(e) = s.checkpoint_error.lock().unwrap_or_else(PoisonError::into_inner).as_ref() {
                return Some(format!("stream {name}: {e}"));
            }
            if let Some(e) = s.listing_error.lock().unwrap_or_else(PoisonError::into_inner).as_ref() {
                return Some(format!("stream {name}: {e}; its files there are kept as they are"));
            }
            let waiting = s
                .tracks
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .values()
                .any(|t| t.with(|st| st.read_offset > st.acks.acked()));
            let since = s.producer.context().last_ack.elapsed();
            if waiting && since > self.unacknowledged_not_ready {
                return Some(format!(
                    "stream {name}: lines waiting and none acknowledged for {}s (Kafka unreachable?); they are kept and retried",
                    since.as_secs()
                ));
            }
        }
        None
    }

    /// Why the agent is stuck, if it is: a stream whose thread made no progress (no loop round,
    /// no wait for budget or routing) for `stall-timeout-secs`. A destination outage is not
    /// being stuck: the thread keeps scanning and retrying, and a restart would only close the
    /// descriptors that keep rotated and deleted files readable.
    pub fn stalled(&self) -> Option<String> {
        for s in &self.streams {
            let since = s.heartbeat.since();
            if since > self.stall_timeout {
                return Some(format!("stream {}: its thread made no progress for {}s", s.config.name, since.as_secs()));
            }
        }
        None
    }

    /// Updates the gauges that are computed rather than counted.
    pub fn refresh_gauges(&self) {
        let topo = self.topology.current();
        let zone = self.zone();
        self.metrics.in_flight_bytes.set(self.in_flight_bytes());
        // A zone discovered late replaces the `unknown` series. Stale series are removed after
        // the current ones are set, never cleared first: a scrape meanwhile would see none.
        let mut shown = self.metrics.stream_info_shown.lock().unwrap_or_else(PoisonError::into_inner);
        let mut now = Vec::with_capacity(self.streams.len());
        let rack = zone
            .zone
            .as_ref()
            .and_then(|z| self.matcher.rack_label(z, topo.brokers.values().filter_map(|b| b.rack.as_deref())));
        for s in &self.streams {
            let name = &s.config.name;
            let info = crate::metrics::StreamInfoLabel {
                stream: name.clone(),
                topic: s.config.topic.clone(),
                zone: zone.zone.as_ref().map_or("unknown", |z| z.display_label()).to_owned(),
                rack: rack.unwrap_or_default().to_owned(),
            };
            self.metrics.stream_info.get_or_create(&info).set(1);
            now.push(info);
            let traffic = &s.producer.context().traffic;
            let all = traffic.report(&topo, zone.zone.as_ref(), &self.matcher);
            let protocol = traffic.report_protocol_only(&topo, zone.zone.as_ref(), &self.matcher);
            for (family, t) in [(&self.metrics.kafka_bytes, all), (&self.metrics.kafka_protocol_bytes, protocol)] {
                for (zone, direction, bytes) in t.rows() {
                    let label = TrafficLabel { stream: name.clone(), zone: zone.into(), direction: direction.into() };
                    family.get_or_create(&label).set(bytes);
                }
            }
            for track in s.tracks.lock().unwrap_or_else(PoisonError::into_inner).values() {
                let (path, lag) =
                    track.with(|st| (st.path.display().to_string(), st.size.saturating_sub(st.acks.acked())));
                self.metrics.lag_bytes.get_or_create(&FileLabel { stream: name.clone(), path }).set(lag);
            }
        }
        for stale in shown.iter().filter(|l| !now.contains(l)) {
            self.metrics.stream_info.remove(stale);
        }
        *shown = now;
    }

    /// The zone as currently known.
    pub fn zone(&self) -> ZoneInfo {
        self.zone.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The `/status` document.
    pub fn status(&self) -> Status {
        let zone = self.zone();
        let streams = self
            .streams
            .iter()
            .map(|s| {
                let routing = s.routing.read().unwrap_or_else(PoisonError::into_inner).clone();
                let files = s
                    .tracks
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .values()
                    .map(|t| {
                        t.with(|st| FileStatus {
                            path: st.path.display().to_string(),
                            dev: st.id.dev,
                            ino: st.id.ino,
                            read_offset: st.read_offset,
                            acked_offset: st.acks.acked(),
                            size: st.size,
                            orphan: st.orphan,
                        })
                    })
                    .collect();
                StreamStatus {
                    name: s.config.name.clone(),
                    topic: s.config.topic.clone(),
                    partitioning: s.config.partitioning,
                    in_flight_bytes: s.budget.used(),
                    in_flight_limit: s.budget.max(),
                    listing_error: s.listing_error.lock().unwrap_or_else(PoisonError::into_inner).clone(),
                    local_partitions: routing.selection.as_ref().map(|x| x.partitions.clone()).unwrap_or_default(),
                    fallback_reason: routing.selection.as_ref().and_then(|x| x.fallback).map(|r| r.to_string()),
                    files,
                }
            })
            .collect();
        Status {
            zone: zone.zone.as_ref().map(|z| z.display_label().to_owned()),
            zone_source: zone.source.to_string(),
            topology_generation: self.topology.current().generation,
            in_flight_bytes: self.in_flight_bytes(),
            streams,
        }
    }
}

impl shell::http::Endpoints for AgentState {
    type Status = Status;

    fn registry(&self) -> &Registry {
        &self.registry
    }

    fn refresh_gauges(&self) {
        AgentState::refresh_gauges(self);
    }

    /// Unhealthy (so a supervisor restarts it from its checkpoints) when a stream's thread is
    /// stuck: no progress for `stall-timeout-secs`. Kafka being away shows in `/readyz`.
    fn unhealthy(&self) -> Option<String> {
        self.stalled()
    }

    fn not_ready(&self) -> Option<String> {
        AgentState::not_ready(self)
    }

    fn status(&self) -> Status {
        AgentState::status(self)
    }

    fn health(&self) -> Option<&shell::metrics::Health> {
        Some(&self.metrics.health)
    }
}

/// Recomputes every stream's routing from a topology snapshot.
pub(crate) fn update_routing(state: &AgentState) {
    let topo = state.topology.current();
    if !topo.is_fetched() {
        return;
    }
    let zone = state.zone();
    for s in &state.streams {
        let c = &s.config;
        let selection = az_core::select(&topo, &c.topic, zone.zone.as_ref(), &state.matcher, Purpose::Produce);
        let all = az_core::select(&topo, &c.topic, None, &state.matcher, Purpose::Produce).partitions;
        let count = topo.partitions(&c.topic).map_or(0, |p| p.len() as i32);
        let label = crate::metrics::Metrics::stream(&c.name);
        let mut routing = s.routing.write().unwrap_or_else(PoisonError::into_inner);
        if routing.selection.as_ref() != Some(&selection) {
            tracing::info!(stream = %c.name, topic = %c.topic, partitions = ?selection.partitions,
                fallback = ?selection.fallback.map(|r| r.as_str()), "zone-aware partitions");
        }
        let used = match c.partitioning {
            crate::config::Partitioning::ZoneAware => selection.partitions.len(),
            _ => all.len(),
        };
        state.metrics.local_partitions.get_or_create(&label).set(used as u64);
        for reason in az_core::FallbackReason::ALL {
            let on = u64::from(selection.fallback == Some(reason));
            state
                .metrics
                .fallback
                .get_or_create(&ReasonLabel { stream: c.name.clone(), reason: reason.as_str().into() })
                .set(on);
        }
        *routing = Routing { selection: Some(selection), all, count };
    }
}
