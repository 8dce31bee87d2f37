//! Wiring of a running agent: zone discovery, one producer and tailing thread per stream, the
//! topology watcher that keeps each stream's routing current, the checkpointer, the HTTP
//! server, and a graceful stop.
//!
//! ```text
//!  discover zone ──┐                      ┌─> StreamRunner thread (per stream) ──> producer
//!  TopologyWatcher ─┴─ routing task ──────┤   (reads Routing, charges Budget, dispatches BatchAcks)
//!                                          ├─> checkpointer task (every checkpoint-interval-ms)
//!                                          └─> HTTP (axum): /metrics /healthz /readyz /status
//!  SIGTERM/SIGINT ──> stop threads ──> flush producers ──> final checkpoints ──> exit 0
//! ```

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use anyhow::Context;
use az_core::zone::Env;
use az_core::{Purpose, TopologyWatcher, WatchOptions, ZoneInfo, ZoneMatcher};
use prometheus_client::registry::Registry;
use rdkafka::producer::{Producer, ThreadedProducer};

use crate::checkpoint::Store;
use crate::config::AgentConfig;
use crate::http::{FileStatus, Status, StreamStatus};
use crate::kafka::{self, AgentContext, Budget};
use crate::metrics::{FileLabel, Metrics, ReasonLabel, TrafficLabel};
use crate::partition::Routing;
use crate::stream::{StreamRunner, StreamShared};

/// State shared by the HTTP handlers and background tasks.
pub struct AgentState {
    /// The metrics registry.
    pub registry: Registry,
    metrics: Arc<Metrics>,
    /// Rediscovered in the background while unknown, so it can change once.
    zone: RwLock<ZoneInfo>,
    matcher: ZoneMatcher,
    streams: Vec<Arc<StreamShared>>,
    topology: TopologyWatcher,
    budget: Arc<Budget>,
    running: AtomicBool,
    stall_timeout: Duration,
}

impl AgentState {
    /// Why the agent is not ready, or `None` when it is.
    pub fn not_ready(&self) -> Option<String> {
        if !self.running.load(Ordering::Relaxed) {
            return Some("stopping or not started".into());
        }
        if !self.topology.current().is_fetched() {
            return Some(format!("no topology yet: {:?}", self.topology.status().last_error));
        }
        for s in &self.streams {
            let last = s.producer.context().last_error.lock().unwrap_or_else(PoisonError::into_inner).clone();
            if let Some(e) = last {
                return Some(format!(
                    "stream {}: Kafka refuses its records ({e}); they are kept and retried",
                    s.config.name
                ));
            }
        }
        None
    }

    /// Why the agent is stuck, if it is: a stream with unacknowledged lines and no
    /// acknowledgement for `stall-timeout-secs`.
    pub fn stalled(&self) -> Option<String> {
        for s in &self.streams {
            let waiting = s
                .tracks
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .values()
                .any(|t| t.with(|st| st.read_offset > st.acks.acked()));
            let since = s.producer.context().last_ack.lock().unwrap_or_else(PoisonError::into_inner).elapsed();
            if waiting && since > self.stall_timeout {
                return Some(format!(
                    "stream {}: lines waiting and none acknowledged for {}s",
                    s.config.name,
                    since.as_secs()
                ));
            }
        }
        None
    }

    /// Updates the gauges that are computed rather than counted.
    pub fn refresh_gauges(&self) {
        let topo = self.topology.current();
        let zone = self.zone();
        self.metrics.in_flight_bytes.set(self.budget.used());
        for s in &self.streams {
            let name = &s.config.name;
            let t = s.producer.context().traffic.report(&topo, zone.zone.as_ref(), &self.matcher);
            for (zone, bytes) in [("same-zone", t.same_zone), ("cross-zone", t.cross_zone), ("unknown", t.unknown)] {
                for (dir, v) in [("tx", bytes.tx), ("rx", bytes.rx)] {
                    let label = TrafficLabel { stream: name.clone(), zone: zone.into(), direction: dir.into() };
                    self.metrics.kafka_bytes.get_or_create(&label).set(v);
                }
            }
            for track in s.tracks.lock().unwrap_or_else(PoisonError::into_inner).values() {
                let (path, lag) =
                    track.with(|st| (st.path.display().to_string(), st.size.saturating_sub(st.acks.acked())));
                self.metrics.lag_bytes.get_or_create(&FileLabel { stream: name.clone(), path }).set(lag);
            }
        }
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
            in_flight_bytes: self.budget.used(),
            streams,
        }
    }
}

/// Recomputes every stream's routing from a topology snapshot.
fn update_routing(state: &AgentState) {
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

/// Runs the agent until SIGTERM or SIGINT.
pub async fn run(config: AgentConfig) -> anyhow::Result<()> {
    let zone = az_core::discover(&config.zone.discovery(), &Env::Process).await;
    match &zone.zone {
        Some(z) => tracing::info!(zone = %z, source = %zone.source, "zone discovered"),
        None => tracing::warn!(failures = ?zone.failures, "zone unknown; streams fall back to all partitions"),
    }
    let matcher = config.zone.matcher();
    let metrics = Arc::new(Metrics::default());
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let budget = Arc::new(Budget::new(config.max_in_flight_bytes));
    let stop = Arc::new(AtomicBool::new(false));
    let auth = Arc::new(az_core::kafka_options::AuthFailure::default());
    let options = config.kafka.client_options()?;

    // Records Kafka would refuse for their size are prevented, not retried forever.
    let limits = crate::limits::topic_limits(&config, &options).await;
    for (i, sc) in config.streams.iter().enumerate() {
        crate::limits::check(i, sc, crate::limits::limit_of(&limits, sc))?;
    }
    let mut streams = Vec::new();
    let mut runners = Vec::new();
    for sc in &config.streams {
        let (tx, rx) = std::sync::mpsc::channel();
        let limit = crate::limits::limit_of(&limits, sc);
        let producer =
            Arc::new(kafka::producer(&config, sc, metrics.clone(), budget.clone(), tx, auth.clone(), limit)?);
        let store = Store::open(&config.checkpoint_dir, &sc.name)
            .with_context(|| format!("opening checkpoint directory {}", config.checkpoint_dir.display()))?;
        let shared = Arc::new(StreamShared {
            config: sc.clone(),
            routing: RwLock::new(Routing::default()),
            tracks: Arc::new(Mutex::new(BTreeMap::new())),
            store,
            producer,
        });
        let runner = StreamRunner::new(
            shared.clone(),
            metrics.clone(),
            budget.clone(),
            rx,
            stop.clone(),
            Duration::from_millis(config.poll_interval_ms),
            Duration::from_millis(config.rotate_wait_ms),
        )?;
        streams.push(shared);
        runners.push(runner);
    }
    let first: Arc<ThreadedProducer<AgentContext>> =
        streams.first().map(|s| s.producer.clone()).context("no streams configured")?;
    let mut topics: Vec<String> = config.streams.iter().map(|s| s.topic.clone()).collect();
    topics.sort();
    topics.dedup();
    let topology = TopologyWatcher::start(
        first,
        WatchOptions {
            topics,
            interval: Duration::from_secs(config.kafka.topology_refresh_secs.max(1)),
            request_timeout: Duration::from_millis(config.kafka.request_timeout_ms),
        },
    );
    for s in &streams {
        let _ = s.producer.context().topology.set(topology.clone());
    }
    let state = Arc::new(AgentState {
        registry,
        metrics: metrics.clone(),
        zone: RwLock::new(zone),
        matcher,
        streams: streams.clone(),
        topology: topology.clone(),
        budget: budget.clone(),
        running: AtomicBool::new(true),
        stall_timeout: Duration::from_secs(config.stall_timeout_secs),
    });

    // Routing follows every new topology snapshot.
    let routing_task = {
        let state = state.clone();
        let mut rx = topology.subscribe();
        tokio::spawn(async move {
            update_routing(&state);
            while rx.changed().await.is_ok() {
                update_routing(&state);
            }
        })
    };

    // A fatal producer error (idempotent producer fenced or refused an id) makes every later
    // send fail: each stream's producer is asked when an error may have been one, and once a
    // second in case a report was missed; the agent then stops with the reason.
    let fatal_watches: Vec<_> = streams
        .iter()
        .map(|s| {
            let s = s.clone();
            let auth = auth.clone();
            tokio::spawn(async move {
                let wake = s.producer.context().fatal_check.clone();
                loop {
                    let _ = tokio::time::timeout(Duration::from_secs(1), wake.notified()).await;
                    if let Some((code, reason)) = s.producer.client().fatal_error() {
                        tracing::error!(stream = %s.config.name, code = ?code, reason, "fatal producer error; stopping");
                        auth.fatal(&format!("stream {}: {reason}", s.config.name));
                        return;
                    }
                }
            })
        })
        .collect();

    // An unknown zone is asked again in the background (metadata services that were slow at
    // boot, a node label added later); the first answer switches routing without a restart.
    let rediscovery = {
        let state = state.clone();
        let settings = config.zone.clone();
        tokio::spawn(async move {
            let every = Duration::from_secs(settings.retry_secs.max(1));
            while state.zone().zone.is_none() {
                tokio::time::sleep(every).await;
                let info = az_core::discover(&settings.discovery(), &Env::Process).await;
                if let Some(z) = &info.zone {
                    tracing::info!(zone = %z, source = %info.source, "zone discovered on retry; routing follows it");
                    *state.zone.write().unwrap_or_else(PoisonError::into_inner) = info;
                    update_routing(&state);
                }
            }
        })
    };

    let threads: Vec<std::thread::JoinHandle<()>> = runners
        .into_iter()
        .map(|r| std::thread::Builder::new().name("zonal-stream".into()).spawn(move || r.run()))
        .collect::<Result<_, _>>()
        .context("starting stream threads")?;

    let checkpointer = {
        let streams = streams.clone();
        let metrics = metrics.clone();
        let every = Duration::from_millis(config.checkpoint_interval_ms);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let streams = streams.clone();
                let metrics = metrics.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    for s in &streams {
                        s.write_checkpoints(&metrics);
                    }
                })
                .await;
            }
        })
    };

    let listener = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("binding http.listen {}", config.http.listen))?;
    tracing::info!(addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "HTTP listening");
    let server = tokio::spawn(axum::serve(listener, crate::http::router(state.clone())).into_future());

    // A refused login is fatal: librdkafka would retry it forever while nothing moves.
    let refused = tokio::select! {
        signal = az_core::program::wait_for_signal() => {
            signal.context("installing signal handlers")?;
            None
        }
        reason = auth.wait() => Some(az_core::kafka_options::AuthFailure::explain(&reason, &options)),
    };
    tracing::info!("stopping: flushing in-flight records and writing checkpoints");
    state.running.store(false, Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    budget.wake();
    // Everything below shares one budget, inside what systemd and Kubernetes allow before they
    // kill (60 s by default): stream threads stop, every producer flushes at the same time, and
    // the checkpointer keeps writing while they do; the final checkpoints are written last.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(config.shutdown_timeout_secs);
    let joined = tokio::task::spawn_blocking(move || threads.into_iter().all(|t| t.join().is_ok())).await;
    if !matches!(joined, Ok(true)) {
        tracing::error!("a stream thread panicked");
    }
    routing_task.abort();
    rediscovery.abort();
    for w in fatal_watches {
        w.abort();
    }
    let flushes: Vec<_> = streams
        .iter()
        .map(|s| {
            let s = s.clone();
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            tokio::task::spawn_blocking(move || {
                if let Err(e) = s.producer.flush(left) {
                    tracing::warn!(stream = %s.config.name, error = %e, "flush incomplete; unacknowledged lines are read again on restart");
                }
            })
        })
        .collect();
    for f in flushes {
        let _ = f.await;
    }
    checkpointer.abort();
    let streams_final = streams.clone();
    let metrics_final = metrics.clone();
    tokio::task::spawn_blocking(move || {
        for s in &streams_final {
            s.write_checkpoints(&metrics_final);
        }
    })
    .await
    .context("final checkpoints")?;
    server.abort();
    if let Some(refused) = refused {
        anyhow::bail!(refused);
    }
    tracing::info!("stopped");
    Ok(())
}
