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
use az_core::zone::Env;
use az_core::{TopologyWatcher, WatchOptions, ZoneInfo};
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use crate::config::TransporterConfig;
use crate::coord::{self, Keys, WorkerInfo};
use crate::metrics::{Metrics, TrafficLabel};
use crate::worker::{self, Worker};

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
}

impl AppState {
    /// Refreshes computed gauges.
    pub fn refresh_gauges(&self) {
        let topo = self.topology.current();
        let t = rdkafka::consumer::Consumer::client(&*self.worker.consumer).context().traffic.report(
            &topo,
            self.zone.zone.as_ref(),
            &self.worker.cfg.zone.matcher(),
        );
        for (zone, bytes) in [("same-zone", t.same_zone), ("cross-zone", t.cross_zone), ("unknown", t.unknown)] {
            for (dir, v) in [("tx", bytes.tx), ("rx", bytes.rx)] {
                self.worker
                    .metrics
                    .kafka_bytes
                    .get_or_create(&TrafficLabel { zone: zone.into(), direction: dir.into() })
                    .set(v);
            }
        }
    }
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
    let id = cfg.worker_id();
    let metrics = Arc::new(Metrics::default());
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let etcd = coord::connect(&cfg.etcd).await?;
    let s3 = crate::upload::client(&cfg.s3).await;
    let auth = Arc::new(az_core::kafka_options::AuthFailure::default());
    let options = cfg.kafka.client_options()?;
    // Creating the consumer may ask the cluster for its racks (follower fetching): blocking.
    let consumer = Arc::new(tokio::task::block_in_place(|| worker::consumer(&cfg, zone.zone.as_ref(), auth.clone()))?);
    std::fs::create_dir_all(cfg.worker.buffer_dir.join(&id))
        .with_context(|| format!("creating worker.buffer-dir {}", cfg.worker.buffer_dir.display()))?;
    // Buffers left by a crash are not committed; their records are read again from Kafka.
    if let Ok(entries) = std::fs::read_dir(cfg.worker.buffer_dir.join(&id)) {
        for e in entries.flatten() {
            let _ = std::fs::remove_file(e.path());
        }
    }
    let worker = Arc::new(Worker {
        keys: Keys::new(&cfg.etcd.cluster),
        id: id.clone(),
        etcd,
        s3,
        consumer: consumer.clone(),
        metrics: metrics.clone(),
        owned: Mutex::new(Default::default()),
        share: RwLock::new(None),
        rolls: tokio::sync::Semaphore::new(cfg.worker.max_concurrent_rolls.max(1)),
        rates: Mutex::new(Default::default()),
        cfg: cfg.clone(),
    });
    // Every partition has its own queue; the main queue only carries events, but must be served.
    let main_queue = {
        let consumer = consumer.clone();
        tokio::spawn(async move {
            loop {
                match consumer.recv().await {
                    Ok(m) => tracing::warn!(topic = rdkafka::Message::topic(&m), "record on the main queue ignored"),
                    Err(e) => tracing::warn!(error = %e, "consumer error"),
                }
            }
        })
    };
    let topology = TopologyWatcher::start(consumer.clone(), WatchOptions { topics: vec![], ..Default::default() });
    let state = Arc::new(AppState {
        worker: worker.clone(),
        registry,
        zone: zone.clone(),
        topology,
        registered: AtomicBool::new(false),
    });
    let listener = tokio::net::TcpListener::bind(cfg.http.listen)
        .await
        .with_context(|| format!("binding http.listen {}", cfg.http.listen))?;
    let http_addr = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
    let server = tokio::spawn(axum::serve(listener, crate::http::router(state.clone())).into_future());

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    // A refused login is fatal: librdkafka would retry it forever while nothing moves.
    let refused: Arc<Mutex<Option<String>>> = Arc::default();
    let signals = {
        let auth = auth.clone();
        let refused = refused.clone();
        tokio::spawn(async move {
            tokio::select! {
                signal = az_core::program::wait_for_signal() => if signal.is_err() { return },
                reason = auth.wait() => {
                    let why = az_core::kafka_options::AuthFailure::explain(&reason, &options);
                    *refused.lock().unwrap_or_else(PoisonError::into_inner) = Some(why);
                }
            }
            tracing::info!("stopping: flushing owned partitions");
            let _ = shutdown_tx.send(true);
        })
    };

    // The zone as known now: an unknown zone is asked again in the background, and the next
    // registration refresh tells the master, which then assigns in-zone.
    let current_zone = Arc::new(RwLock::new(zone.clone()));
    let rediscovery = {
        let current = current_zone.clone();
        let settings = cfg.zone.clone();
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
    };
    let host = hostname::get().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default();
    let make_info = {
        let (id, current, host, capacity, http) =
            (id.clone(), current_zone.clone(), host, cfg.worker.capacity, http_addr.clone());
        move |rates| {
            let zone = current.read().unwrap_or_else(PoisonError::into_inner).zone.clone();
            WorkerInfo {
                id: id.clone(),
                zone_id: zone.as_ref().and_then(|z| z.id.clone()),
                zone_name: zone.as_ref().and_then(|z| z.name.clone()),
                host: host.clone(),
                capacity,
                http: http.clone(),
                rates,
            }
        }
    };
    let info = || make_info(worker.rates.lock().unwrap_or_else(PoisonError::into_inner).clone());
    let mut backoff = Duration::from_millis(200);
    loop {
        if *shutdown_rx.borrow() {
            break;
        }
        let (lease_id, lease_rx, keepalive) = match coord::lease(&worker.etcd, &cfg.etcd, cfg.etcd.lease_ttl_secs).await
        {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "etcd unavailable; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        if let Err(e) = coord::register(&worker.etcd, &worker.keys, &info(), lease_id).await {
            tracing::warn!(error = %format!("{e:#}"), "registration failed; retrying");
            keepalive.abort();
            tokio::time::sleep(backoff).await;
            continue;
        }
        backoff = Duration::from_millis(200);
        if let Err(e) = coord::clear_left(&worker.etcd, &worker.keys, &id).await {
            tracing::warn!(error = %format!("{e:#}"), "could not clear an old clean-stop mark");
        }
        tracing::info!(worker = %id, lease = lease_id, "registered");
        state.registered.store(true, Ordering::Relaxed);
        // The master candidate runs on a thread of its own, so the workers' records and rolls
        // never delay the election or the assignment (and the reverse).
        let master = {
            let w = worker.clone();
            let l = lease_rx.clone();
            coord::OwnThread::spawn("zonal-master", move || async move {
                loop {
                    if !l.borrow().valid() {
                        return;
                    }
                    if let Err(e) = crate::master::run(w.clone(), l.clone()).await {
                        tracing::info!(error = %format!("{e:#}"), "not master");
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            })
        };
        let master = match master {
            Ok(m) => m,
            Err(e) => {
                keepalive.abort();
                return Err(e);
            }
        };
        let refresh = {
            let w = worker.clone();
            let l = lease_rx.clone();
            let make_info = make_info.clone();
            let mut written = info();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    let i = make_info(w.rates.lock().unwrap_or_else(PoisonError::into_inner).clone());
                    if l.borrow().valid()
                        && written.differs_materially(&i)
                        && coord::register(&w.etcd, &w.keys, &i, lease_id).await.is_ok()
                    {
                        written = i;
                    }
                }
            })
        };
        let outcome = worker.control(lease_rx.clone(), shutdown_rx.clone()).await;
        state.registered.store(false, Ordering::Relaxed);
        master.abort();
        refresh.abort();
        keepalive.abort();
        match outcome {
            Ok(()) => {
                // Everything was flushed and released: tell the master so peers take the
                // partitions now, then drop the registration.
                let ttl = i64::try_from(cfg.worker.grace_period_secs).unwrap_or(i64::MAX).saturating_add(30);
                if let Err(e) = coord::mark_left(&worker.etcd, &worker.keys, &id, ttl).await {
                    tracing::warn!(error = %format!("{e:#}"), "could not mark the clean stop; peers wait for the grace period");
                }
                let mut c = worker.etcd.clone();
                let _ = c.lease_revoke(lease_id).await;
                break;
            }
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "lost the lease: every partition was dropped; registering again")
            }
        }
    }
    signals.abort();
    rediscovery.abort();
    main_queue.abort();
    server.abort();
    if let Some(why) = refused.lock().unwrap_or_else(PoisonError::into_inner).take() {
        anyhow::bail!(why);
    }
    tracing::info!("stopped");
    Ok(())
}
