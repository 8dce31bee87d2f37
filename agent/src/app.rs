//! Wiring of a running agent: zone discovery, one producer and tailing thread per stream, the
//! topology watcher that keeps each stream's routing current, the checkpointer, the HTTP
//! server, and a graceful stop.
//!
//! ```text
//!  discover zone ──┐                      ┌─> StreamRunner thread (per stream) ──> producer
//!  TopologyWatcher ─┴─ routing task ──────┤   (reads Routing, charges Budget, dispatches BatchAcks)
//!                                          ├─> checkpointer task (every checkpoint-interval-ms)
//!                                          └─> HTTP (shell): /metrics /healthz /readyz /status
//!  SIGTERM/SIGINT ──> stop threads ──> flush producers ──> final checkpoints ──> exit 0
//! ```

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use anyhow::Context;
use az_core::kafka_options::{AuthFailure, ClientOptions};
use az_core::zone::Env;
use az_core::{TopologyWatcher, WatchOptions, ZoneInfo};
use prometheus_client::registry::Registry;
use rdkafka::producer::{Producer, ThreadedProducer};
use tokio::task::JoinHandle;

use crate::checkpoint::Store;
use crate::config::AgentConfig;
use crate::kafka::{self, AgentContext, Budget};
use crate::metrics::Metrics;
use crate::partition::Routing;
use crate::state::{AgentState, update_routing};
use crate::stream::{StreamRunner, StreamShared};

/// `check`: what `run` would refuse, refused now. Every stream's producer is built the way `run`
/// builds it, so whatever librdkafka refuses as a whole (a missing certificate file, a mechanism
/// without its settings) fails here too.
pub fn check(config: &AgentConfig) -> anyhow::Result<()> {
    let options = config.kafka.client_options()?;
    for stream in &config.streams {
        let cc = kafka::producer_config(config, stream, &options, None);
        az_core::kafka_options::try_create::<rdkafka::producer::BaseProducer>(&cc, "producer", &options)
            .with_context(|| format!("streams.{}", stream.name))?;
    }
    Ok(())
}

/// Runs the agent until SIGTERM or SIGINT.
pub async fn run(config: AgentConfig) -> anyhow::Result<()> {
    let zone = az_core::discover(&config.zone.discovery(), &Env::Process).await;
    match &zone.zone {
        Some(z) => tracing::info!(zone = %z, source = %zone.source, "zone discovered"),
        None => tracing::warn!(failures = ?zone.failures, "zone unknown; streams fall back to all partitions"),
    }
    let metrics = Arc::new(Metrics::default());
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let shared = Shared { stop: Arc::new(AtomicBool::new(false)), auth: Arc::new(AuthFailure::default()), metrics };
    let options = config.kafka.client_options()?;
    let (streams, runners) = open_streams(&config, &options, &shared).await?;
    let topology = watch_topology(&config, &streams)?;
    let state = Arc::new(AgentState {
        registry,
        metrics: shared.metrics.clone(),
        zone: RwLock::new(zone),
        matcher: config.zone.matcher(),
        streams: streams.clone(),
        topology,
        running: AtomicBool::new(true),
        stall_timeout: Duration::from_secs(config.stall_timeout_secs),
        unacknowledged_not_ready: Duration::from_secs(config.unacknowledged_not_ready_secs),
    });
    let tasks = Background::start(&config, &state, &shared);
    let threads: Vec<std::thread::JoinHandle<()>> = runners
        .into_iter()
        .map(|r| std::thread::Builder::new().name("zonal-stream".into()).spawn(move || r.run()))
        .collect::<Result<_, _>>()
        .context("starting stream threads")?;
    let server = shell::http::serve(config.http.listen, shell::http::router(state.clone())).await?;

    // A refused login is fatal: librdkafka would retry it forever while nothing moves.
    let refused = tokio::select! {
        signal = shell::wait_for_signal() => {
            signal.context("installing signal handlers")?;
            None
        }
        reason = shared.auth.wait() => Some(AuthFailure::explain(&reason, &options)),
    };
    stop(&config, &state, &shared, threads, tasks).await?;
    server.task.abort();
    if let Some(refused) = refused {
        anyhow::bail!(refused);
    }
    tracing::info!("stopped");
    Ok(())
}

/// What every stream shares: the stop flag, the fatal-error latch and the metrics. The in-flight
/// budget is not shared: each stream has its own part of it, so none can hold up the others.
struct Shared {
    stop: Arc<AtomicBool>,
    auth: Arc<AuthFailure>,
    metrics: Arc<Metrics>,
}

/// Opens every stream: its producer, its checkpoint store and the runner that will tail it.
async fn open_streams(
    config: &AgentConfig,
    options: &ClientOptions,
    shared: &Shared,
) -> anyhow::Result<(Vec<Arc<StreamShared>>, Vec<StreamRunner>)> {
    // Records Kafka would refuse for their size are prevented, not retried forever.
    let limits = crate::limits::topic_limits(config, options).await;
    for (i, sc) in config.streams.iter().enumerate() {
        crate::limits::check(i, sc, crate::limits::limit_of(&limits, sc))?;
    }
    let nofile = raise_nofile();
    let mut streams = Vec::new();
    let mut runners = Vec::new();
    for sc in &config.streams {
        let (tx, rx) = std::sync::mpsc::channel();
        let limit = crate::limits::limit_of(&limits, sc);
        let budget = Arc::new(Budget::new(config.in_flight_bytes_of(sc)));
        let producer = Arc::new(kafka::producer(
            config,
            sc,
            shared.metrics.clone(),
            budget.clone(),
            tx,
            shared.auth.clone(),
            limit,
        )?);
        let store = Store::open(&config.checkpoint_dir, &sc.name)
            .with_context(|| format!("opening checkpoint directory {}", config.checkpoint_dir.display()))?;
        let stream = Arc::new(StreamShared {
            config: sc.clone(),
            routing: RwLock::new(Routing::default()),
            tracks: Arc::new(Mutex::new(BTreeMap::new())),
            store,
            producer,
            budget,
            heartbeat: Default::default(),
            checkpoint_error: Default::default(),
            listing_error: Default::default(),
        });
        let runner = StreamRunner::new(
            stream.clone(),
            shared.metrics.clone(),
            rx,
            shared.stop.clone(),
            Duration::from_millis(config.poll_interval_ms),
            crate::stream::FileLimits {
                rotate_wait: Duration::from_millis(config.rotate_wait_ms),
                unsent_bytes: config.unsent_bytes_of(sc),
                close_idle: Duration::from_secs(config.close_idle_secs),
                max_open: usize::try_from(config.open_files_of(sc, nofile)).unwrap_or(usize::MAX),
            },
        )?;
        streams.push(stream);
        runners.push(runner);
    }
    Ok((streams, runners))
}

/// Starts the topology watcher on the first stream's producer and hands it to every stream
/// (their contexts route retries by it).
fn watch_topology(config: &AgentConfig, streams: &[Arc<StreamShared>]) -> anyhow::Result<TopologyWatcher> {
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
    for s in streams {
        let _ = s.producer.context().topology.set(topology.clone());
    }
    Ok(topology)
}

/// The agent's background tasks; all stop with the agent.
struct Background {
    routing: JoinHandle<()>,
    fatal_watches: Vec<JoinHandle<()>>,
    rediscovery: JoinHandle<()>,
    checkpointer: JoinHandle<()>,
}

impl Background {
    fn start(config: &AgentConfig, state: &Arc<AgentState>, shared: &Shared) -> Background {
        Background {
            routing: follow_topology(state.clone()),
            fatal_watches: state.streams.iter().map(|s| watch_fatal(s.clone(), shared.auth.clone())).collect(),
            rediscovery: rediscover_zone(state.clone(), config.zone.clone()),
            checkpointer: checkpoint_every(
                state.streams.clone(),
                shared.metrics.clone(),
                Duration::from_millis(config.checkpoint_interval_ms),
            ),
        }
    }

    /// Stops everything but the checkpointer, which keeps writing while producers flush.
    fn stop_all_but_checkpoints(&self) {
        self.routing.abort();
        self.rediscovery.abort();
        for w in &self.fatal_watches {
            w.abort();
        }
    }
}

/// Routing follows every new topology snapshot.
fn follow_topology(state: Arc<AgentState>) -> JoinHandle<()> {
    let mut rx = state.topology.subscribe();
    tokio::spawn(async move {
        update_routing(&state);
        while rx.changed().await.is_ok() {
            update_routing(&state);
        }
    })
}

/// A fatal producer error (idempotent producer fenced or refused an id) makes every later send
/// fail: the stream's producer is asked when an error may have been one, and once a second in
/// case a report was missed; the agent then stops with the reason.
fn watch_fatal(s: Arc<StreamShared>, auth: Arc<AuthFailure>) -> JoinHandle<()> {
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
}

/// An unknown zone is asked again in the background (metadata services that were slow at boot,
/// a node label added later); the first answer switches routing without a restart.
fn rediscover_zone(state: Arc<AgentState>, settings: az_core::zone::ZoneSettings) -> JoinHandle<()> {
    tokio::spawn(async move {
        let every = Duration::from_secs(settings.retry_secs.max(1));
        while state.zone().zone.is_none() {
            tokio::time::sleep(every).await;
            let info: ZoneInfo = az_core::discover(&settings.discovery(), &Env::Process).await;
            if let Some(z) = &info.zone {
                tracing::info!(zone = %z, source = %info.source, "zone discovered on retry; routing follows it");
                *state.zone.write().unwrap_or_else(PoisonError::into_inner) = info;
                update_routing(&state);
            }
        }
    })
}

/// Writes every stream's checkpoints each `every`, off the runtime (they fsync).
fn checkpoint_every(streams: Vec<Arc<StreamShared>>, metrics: Arc<Metrics>, every: Duration) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            let _ = write_checkpoints(&streams, &metrics).await;
        }
    })
}

async fn write_checkpoints(
    streams: &[Arc<StreamShared>],
    metrics: &Arc<Metrics>,
) -> Result<(), tokio::task::JoinError> {
    let streams = streams.to_vec();
    let metrics = metrics.clone();
    tokio::task::spawn_blocking(move || {
        for s in &streams {
            s.write_checkpoints(&metrics);
        }
    })
    .await
}

/// The graceful stop, inside what systemd and Kubernetes allow
/// before they kill (60 s by default): stream threads stop, every producer flushes at the same
/// time, and the checkpointer keeps writing while they do; the final checkpoints are written last.
async fn stop(
    config: &AgentConfig,
    state: &AgentState,
    shared: &Shared,
    threads: Vec<std::thread::JoinHandle<()>>,
    tasks: Background,
) -> anyhow::Result<()> {
    tracing::info!("stopping: flushing in-flight records and writing checkpoints");
    state.running.store(false, Ordering::Relaxed);
    shared.stop.store(true, Ordering::Relaxed);
    for s in &state.streams {
        s.budget.wake();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(config.shutdown_timeout_secs);
    let joined = tokio::task::spawn_blocking(move || threads.into_iter().all(|t| t.join().is_ok())).await;
    if !matches!(joined, Ok(true)) {
        tracing::error!("a stream thread panicked");
    }
    tasks.stop_all_but_checkpoints();
    let flushes: Vec<_> = state
        .streams
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
    tasks.checkpointer.abort();
    write_checkpoints(&state.streams, &shared.metrics).await.context("final checkpoints")
}

/// Raises the soft limit on open descriptors to the hard one (systemd's and container
/// runtimes' soft default of 1,024 is far below what a node's log files need) and returns the
/// limit in force.
fn raise_nofile() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => {
            tracing::info!(limit = n, "open descriptors limit");
            n
        }
        Err(e) => {
            let n = rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft);
            tracing::warn!(error = %e, limit = n, "cannot raise the open descriptors limit");
            n
        }
    }
}
