//! Wiring of a running transporter process: every process is a worker, and a candidate for
//! master.
//!
//! ```text
//!  discover zone ─> consumer (one, split queues) ─> Worker
//!  loop: lease ─> register /workers/<id> ─┬─ keepalive task (LeaseState)
//!                                         ├─ master candidate (campaign → lead)
//!                                         ├─ registration refresh (rates for weights)
//!                                         └─ worker control loop (assignment → partition tasks)
//!        lease lost ─> everything stops, discards buffers ─> new lease, register again
//!  SIGTERM/SIGINT ─> flush + commit + release every partition ─> revoke lease ─> exit 0
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use anyhow::Context;
use az_core::kafka_options::AuthFailure;
use az_core::zone::{Env, ZoneSettings};
use az_core::{TopologyWatcher, WatchOptions, ZoneInfo};
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::TransporterConfig;
use crate::coord::{self, Keys, LeaseState, OwnThread, WorkerInfo};
use crate::metrics::Metrics;
use crate::state::AppState;
use crate::worker::{self, Worker};

/// `check`: what `run` would refuse, refused now. The consumer is built the way `run` builds it,
/// so what librdkafka refuses as a whole fails here too; and the etcd TLS files `run` would read
/// are read.
pub fn check(cfg: &TransporterConfig) -> anyhow::Result<()> {
    let options = cfg.kafka.client_options()?;
    let cc = worker::consumer_config(cfg, None, &options);
    az_core::kafka_options::try_create::<rdkafka::consumer::BaseConsumer>(&cc, "consumer", &options)?;
    if let Some(t) = &cfg.etcd.tls {
        for f in [Some(&t.ca_file), t.cert_file.as_ref(), t.key_file.as_ref()].into_iter().flatten() {
            std::fs::metadata(f).with_context(|| format!("etcd.tls: {}", f.display()))?;
        }
    }
    Ok(())
}

/// Runs until SIGTERM or SIGINT.
pub async fn run(cfg: TransporterConfig) -> anyhow::Result<()> {
    let zone = az_core::discover(&cfg.zone.discovery(), &Env::Process).await;
    match &zone.zone {
        Some(z) => tracing::info!(zone = %z, source = %zone.source, "zone discovered"),
        None => {
            tracing::warn!(failures = ?zone.failures, "zone unknown; this worker gets partitions only as a fallback")
        }
    }
    let metrics = Arc::new(Metrics::default());
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let auth = Arc::new(AuthFailure::default());
    let worker = open_worker(&cfg, &zone, metrics, auth.clone()).await?;
    if cfg.s3.probe_on_start {
        crate::upload::probe::check_store(&cfg.s3, &worker.s3, worker.buffers.dir(), &worker.id).await?;
    }
    crate::upload::deployment::claim(&worker.s3, &cfg.s3, &worker.source).await.context("claiming s3.prefix")?;
    let main_queue = serve_main_queue(&worker);
    let topology =
        TopologyWatcher::start(worker.consumer.clone(), WatchOptions { topics: vec![], ..Default::default() });
    let state = Arc::new(AppState {
        worker: worker.clone(),
        registry,
        zone: zone.clone(),
        topology,
        registered: AtomicBool::new(false),
        assignment_view: Default::default(),
    });
    let server = shell::http::serve(cfg.http.listen, crate::http::router(state.clone())).await?;

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    // A refused login is fatal: librdkafka would retry it forever while nothing moves.
    let refused: Arc<Mutex<Option<String>>> = Arc::default();
    let signals = watch_signals(&cfg, auth, refused.clone(), shutdown_tx)?;
    // The zone as known now: an unknown zone is asked again in the background, and the next
    // registration refresh tells the master, which then assigns in-zone.
    let current_zone = Arc::new(RwLock::new(zone));
    let rediscovery = rediscover_zone(current_zone.clone(), cfg.zone.clone());
    let registration = Registration {
        id: worker.id.clone(),
        zone: current_zone,
        host: hostname::get().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default(),
        capacity: cfg.worker.capacity,
        http: server.addr.to_string(),
    };
    let mut backoff = Duration::from_millis(200);
    while !*shutdown_rx.borrow() {
        match serve_one_lease(&cfg, &worker, &state, &registration, &shutdown_rx).await? {
            Lease::Stopped => break,
            Lease::Lost => backoff = Duration::from_millis(200),
            Lease::NotGranted => {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
    signals.abort();
    rediscovery.abort();
    main_queue.abort();
    server.task.abort();
    if let Some(why) = refused.lock().unwrap_or_else(PoisonError::into_inner).take() {
        anyhow::bail!(why);
    }
    tracing::info!("stopped");
    Ok(())
}

/// Builds the worker: its consumer, etcd and S3 clients, and an emptied buffer directory.
async fn open_worker(
    cfg: &TransporterConfig,
    zone: &ZoneInfo,
    metrics: Arc<Metrics>,
    auth: Arc<AuthFailure>,
) -> anyhow::Result<Arc<Worker>> {
    let id = cfg.worker_id();
    let etcd = coord::connect(&cfg.etcd).await?;
    let s3 = crate::upload::client(&cfg.s3).await;
    // Creating the consumer may ask the cluster for its racks (follower fetching): blocking.
    let consumer = Arc::new(tokio::task::block_in_place(|| worker::consumer(cfg, zone.zone.as_ref(), auth))?);
    let cluster = {
        let c = consumer.clone();
        let topic = cfg.kafka.topics.first().cloned();
        tokio::task::spawn_blocking(move || {
            // librdkafka's cluster id waits for a metadata refresh to come by, which at start
            // came with the first broker connection's timer, a second later (two of three
            // workers started together registered a second after the third, and the first took
            // every partition meanwhile). Asking for one topic's metadata brings it now.
            let _ = rdkafka::consumer::Consumer::fetch_metadata(&*c, topic.as_deref(), Duration::from_secs(5));
            rdkafka::consumer::Consumer::client(&*c).fetch_cluster_id(Duration::from_secs(5))
        })
        .await
        .ok()
        .flatten()
    };
    let source = crate::upload::deployment::source(cluster.as_deref(), &cfg.etcd.cluster);
    let buffers = cfg.worker.buffer_dir.join(&id);
    std::fs::create_dir_all(&buffers)
        .with_context(|| format!("creating worker.buffer-dir {}", cfg.worker.buffer_dir.display()))?;
    let lock = lock_buffers(&buffers, &id)?;
    // Buffers left by a crash are not committed; their records are read again from Kafka.
    if let Ok(entries) = std::fs::read_dir(&buffers) {
        for e in entries.flatten().filter(|e| e.file_name() != LOCK_FILE) {
            let _ = std::fs::remove_file(e.path());
        }
    }
    Ok(Arc::new(Worker {
        keys: Keys::new(&cfg.etcd.cluster),
        id,
        txns: coord::Batcher::new(etcd.clone(), cfg.etcd.gathers_transactions()),
        etcd,
        s3,
        consumer,
        metrics,
        owned: Mutex::new(Default::default()),
        share: RwLock::new(None),
        buffers: crate::buffer::Slots::new(&buffers),
        times: crate::timepart::TimeParts::new(&cfg.records, cfg.s3.key_template(&cfg.roll))?,
        layout: crate::buffer::Layout::of(cfg),
        rolls: tokio::sync::Semaphore::new(cfg.worker.max_concurrent_rolls.max(1)),
        uploads: tokio::sync::Semaphore::new(cfg.worker.max_concurrent_uploads.max(1)),
        rates: Mutex::new(Default::default()),
        upload_refused: Mutex::new(None),
        buffer_lock: lock,
        source,
        topic_ids: Mutex::new(Default::default()),
        topic_lookup: tokio::sync::Mutex::new(()),
        disk: worker::disk::Disk::new(&buffers, cfg.worker.max_buffer_bytes, cfg.worker.min_free_bytes),
        health: crate::health::Health::default(),
        cfg: cfg.clone(),
    }))
}

/// The lock file in a worker's buffer folder.
const LOCK_FILE: &str = ".lock";

/// Takes the buffer folder's lock for the life of the process: a second process with the same
/// `worker.id` and `worker.buffer-dir` would empty and overwrite the first one's buffers (and
/// share its registration). The lock goes with the process, however it ends.
fn lock_buffers(dir: &std::path::Path, id: &str) -> anyhow::Result<std::fs::File> {
    let path = dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening the buffer lock {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "another zonal-transporter with worker.id {id:?} is using {} (its lock {} is held); give each process its own worker.id or worker.buffer-dir",
            dir.display(),
            path.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("locking the buffer folder {}", dir.display()))
        }
    }
}

/// Every partition has its own queue; the main queue only carries events, but must be served.
fn serve_main_queue(worker: &Worker) -> JoinHandle<()> {
    let consumer = worker.consumer.clone();
    tokio::spawn(async move {
        loop {
            match consumer.recv().await {
                Ok(m) => tracing::warn!(topic = rdkafka::Message::topic(&m), "record on the main queue ignored"),
                Err(e) => tracing::warn!(error = %e, "consumer error"),
            }
        }
    })
}

/// Sends the shutdown on SIGTERM or SIGINT, or on a refused login (with its explanation kept in
/// `refused`).
fn watch_signals(
    cfg: &TransporterConfig,
    auth: Arc<AuthFailure>,
    refused: Arc<Mutex<Option<String>>>,
    shutdown: watch::Sender<bool>,
) -> anyhow::Result<JoinHandle<()>> {
    let options = cfg.kafka.client_options()?;
    Ok(tokio::spawn(async move {
        tokio::select! {
            signal = shell::wait_for_signal() => if signal.is_err() { return },
            reason = auth.wait() => {
                let why = AuthFailure::explain(&reason, &options);
                *refused.lock().unwrap_or_else(PoisonError::into_inner) = Some(why);
            }
        }
        tracing::info!("stopping: flushing owned partitions");
        let _ = shutdown.send(true);
    }))
}

fn rediscover_zone(current: Arc<RwLock<ZoneInfo>>, settings: ZoneSettings) -> JoinHandle<()> {
    tokio::spawn(async move {
        let every = Duration::from_secs(settings.retry_secs.max(1));
        while current.read().unwrap_or_else(PoisonError::into_inner).zone.is_none() {
            tokio::time::sleep(every).await;
            let info = az_core::discover(&settings.discovery(), &Env::Process).await;
            if let Some(z) = &info.zone {
                tracing::info!(zone = %z, source = %info.source, "zone discovered on retry; registering it (client.rack needs a restart)");
                *current.write().unwrap_or_else(PoisonError::into_inner) = info;
            }
        }
    })
}

/// What this worker registers in etcd; the zone may be discovered late, and the rates change.
#[derive(Clone)]
struct Registration {
    id: String,
    zone: Arc<RwLock<ZoneInfo>>,
    host: String,
    capacity: f64,
    http: String,
}

impl Registration {
    fn info(&self, worker: &Worker) -> WorkerInfo {
        // Only the partitions it owns now, at most coord::MAX_RATES: a registration that kept
        // every partition ever read grew without bound, and 1,000 of them outgrew a reply.
        let owned: Vec<_> = worker.owned.lock().unwrap_or_else(PoisonError::into_inner).keys().cloned().collect();
        let rates = coord::registered_rates(&worker.rates.lock().unwrap_or_else(PoisonError::into_inner), owned);
        let zone = self.zone.read().unwrap_or_else(PoisonError::into_inner).zone.clone();
        WorkerInfo {
            id: self.id.clone(),
            zone_id: zone.as_ref().and_then(|z| z.id.clone()),
            zone_name: zone.as_ref().and_then(|z| z.name.clone()),
            host: self.host.clone(),
            capacity: self.capacity,
            http: self.http.clone(),
            rates,
        }
    }
}

/// How one lease ended.
enum Lease {
    /// No lease or no registration: try again after a backoff.
    NotGranted,
    /// The lease was lost; every partition was dropped. Register again.
    Lost,
    /// A clean stop: everything flushed and released.
    Stopped,
}

/// Takes a lease, registers, and works under it (as a worker and a master candidate) until the
/// lease is lost or the process stops.
async fn serve_one_lease(
    cfg: &TransporterConfig,
    worker: &Arc<Worker>,
    state: &AppState,
    registration: &Registration,
    shutdown: &watch::Receiver<bool>,
) -> anyhow::Result<Lease> {
    let coord::Lease { id: lease_id, state: lease_rx, keepalive } =
        match coord::lease(&worker.etcd, &cfg.etcd, cfg.etcd.lease_ttl_secs).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "etcd unavailable; retrying");
                worker.health.set_etcd(Some(format!("no lease could be granted ({e:#})")));
                return Ok(Lease::NotGranted);
            }
        };
    if let Err(e) = coord::register(&worker.etcd, &worker.keys, &registration.info(worker), lease_id).await {
        tracing::warn!(error = %format!("{e:#}"), "registration failed; retrying");
        worker.health.set_etcd(Some(format!("registering failed ({e:#})")));
        keepalive.abort();
        return Ok(Lease::NotGranted);
    }
    if let Err(e) = coord::clear_left(&worker.etcd, &worker.keys, &worker.id).await {
        tracing::warn!(error = %format!("{e:#}"), "could not clear an old clean-stop mark");
    }
    tracing::info!(worker = %worker.id, lease = lease_id, "registered");
    // The control loop is judged from now, not from its last round under an earlier lease.
    worker.health.beat_control();
    worker.health.set_etcd(None);
    state.registered.store(true, Ordering::Relaxed);
    let master = match master_candidate(worker.clone(), lease_rx.clone()) {
        Ok(m) => m,
        Err(e) => {
            keepalive.abort();
            return Err(e);
        }
    };
    let refresh = refresh_registration(worker.clone(), registration.clone(), lease_rx.clone(), lease_id);
    let outcome = worker.control(lease_rx, shutdown.clone()).await;
    state.registered.store(false, Ordering::Relaxed);
    master.abort();
    refresh.abort();
    keepalive.abort();
    match outcome {
        Ok(()) => {
            // Everything was flushed and released: tell the master so peers take the
            // partitions now, then drop the registration.
            let ttl = i64::try_from(cfg.worker.grace_period_secs).unwrap_or(i64::MAX).saturating_add(30);
            if let Err(e) = coord::mark_left(&worker.etcd, &worker.keys, &worker.id, ttl).await {
                tracing::warn!(error = %format!("{e:#}"), "could not mark the clean stop; peers wait for the grace period");
            }
            let mut c = worker.etcd.clone();
            let _ = c.lease_revoke(lease_id).await;
            Ok(Lease::Stopped)
        }
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "lost the lease: every partition was dropped; registering again");
            Ok(Lease::Lost)
        }
    }
}

/// The master candidate runs on a thread of its own, so the workers' records and rolls never
/// delay the election or the assignment (and the reverse).
fn master_candidate(worker: Arc<Worker>, lease: watch::Receiver<LeaseState>) -> anyhow::Result<OwnThread> {
    OwnThread::spawn("zonal-master", move || async move {
        loop {
            if !lease.borrow().valid() {
                return;
            }
            if let Err(e) = crate::master::run(worker.clone(), lease.clone()).await {
                tracing::info!(error = %format!("{e:#}"), "not master");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
}

/// Writes the registration again when it changed materially (a zone found late, rates that
/// moved), so the master weighs partitions by what they carry now.
fn refresh_registration(
    worker: Arc<Worker>,
    registration: Registration,
    lease: watch::Receiver<LeaseState>,
    lease_id: i64,
) -> JoinHandle<()> {
    let mut written = registration.info(&worker);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            let info = registration.info(&worker);
            if lease.borrow().valid()
                && written.differs_materially(&info)
                && coord::register(&worker.etcd, &worker.keys, &info, lease_id).await.is_ok()
            {
                written = info;
            }
        }
    })
}
