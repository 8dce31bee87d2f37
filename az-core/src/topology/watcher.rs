//! Keeping a topology fresh: [`TopologyWatcher`] refreshes in the background, periodically and on
//! demand, through any client that implements [`KafkaClient`], and hands out snapshots through a
//! watch channel.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::client::Client;
use rdkafka::consumer::{BaseConsumer, ConsumerContext, StreamConsumer};
use rdkafka::producer::{BaseProducer, Partitioner, ProducerContext, ThreadedProducer};
use serde::Serialize;
use tokio::sync::{Notify, watch};

use super::{Topology, TopologyError, fetch};

/// Anything that holds an rdkafka client whose connections topology requests may reuse.
pub trait KafkaClient: Send + Sync + 'static {
    /// The client's context.
    type Context: ClientContext;
    /// The underlying client.
    fn kafka_client(&self) -> &Client<Self::Context>;
}

impl<C: ClientContext + 'static> KafkaClient for Client<C> {
    type Context = C;
    fn kafka_client(&self) -> &Client<C> {
        self
    }
}

impl<C: ProducerContext<Part> + 'static, Part: Partitioner + Send + Sync + 'static> KafkaClient
    for BaseProducer<C, Part>
{
    type Context = C;
    fn kafka_client(&self) -> &Client<C> {
        rdkafka::producer::Producer::client(self)
    }
}

impl<C: ProducerContext<Part> + 'static, Part: Partitioner + Send + Sync + 'static> KafkaClient
    for ThreadedProducer<C, Part>
{
    type Context = C;
    fn kafka_client(&self) -> &Client<C> {
        rdkafka::producer::Producer::client(self)
    }
}

impl<C: ConsumerContext + 'static> KafkaClient for BaseConsumer<C> {
    type Context = C;
    fn kafka_client(&self) -> &Client<C> {
        rdkafka::consumer::Consumer::client(self)
    }
}

impl<C: ConsumerContext + 'static, R: Send + Sync + 'static> KafkaClient for StreamConsumer<C, R> {
    type Context = C;
    fn kafka_client(&self) -> &Client<C> {
        rdkafka::consumer::Consumer::client(self)
    }
}

/// Settings of a [`TopologyWatcher`].
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// Topics to describe.
    pub topics: Vec<String>,
    /// Time between periodic refreshes.
    pub interval: Duration,
    /// Timeout of each admin request.
    pub request_timeout: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions { topics: Vec::new(), interval: Duration::from_secs(30), request_timeout: Duration::from_secs(5) }
    }
}

/// The outcome of the most recent fetch attempt, for health and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FetchStatus {
    /// Successful fetches so far.
    pub successes: u64,
    /// Failed fetches so far.
    pub failures: u64,
    /// The last error, cleared by the next success.
    pub last_error: Option<String>,
}

/// Keeps a [`Topology`] fresh in the background: periodically and whenever asked, for example
/// after a produce or fetch error that means leadership moved. Cloning is cheap; every clone
/// sees the same snapshots.
#[derive(Clone)]
pub struct TopologyWatcher {
    snapshot: watch::Receiver<Arc<Topology>>,
    status: watch::Receiver<FetchStatus>,
    wake: Arc<Notify>,
    _task: Arc<TaskGuard>,
}

/// Aborts the refresh task when the last clone of the watcher drops it, so that a watcher nobody
/// holds any more stops asking the cluster.
struct TaskGuard(tokio::task::JoinHandle<()>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl std::fmt::Debug for TopologyWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TopologyWatcher").field("generation", &self.snapshot.borrow().generation).finish()
    }
}

impl TopologyWatcher {
    /// Starts watching through `client`. The first fetch starts at once; until it succeeds the
    /// snapshot is empty (see [`Topology::is_fetched`]). The background task stops when the last
    /// clone of the watcher is dropped.
    pub fn start<K: KafkaClient>(client: Arc<K>, options: WatchOptions) -> Self {
        let (tx, rx) = watch::channel(Arc::new(Topology::default()));
        let (status_tx, status_rx) = watch::channel(FetchStatus::default());
        let wake = Arc::new(Notify::new());
        let task_wake = wake.clone();
        let task = tokio::spawn(async move {
            let mut generation = 0u64;
            loop {
                let client = client.clone();
                let topics = options.topics.clone();
                let timeout = options.request_timeout;
                let next = generation + 1;
                let result = tokio::task::spawn_blocking(move || fetch(client.kafka_client(), &topics, timeout, next))
                    .await
                    .unwrap_or_else(|e| Err(TopologyError::Task(e.to_string())));
                match result {
                    Ok(t) => {
                        generation = next;
                        status_tx.send_modify(|s| {
                            s.successes += 1;
                            s.last_error = None;
                        });
                        tx.send_replace(Arc::new(t));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "topology refresh failed");
                        status_tx.send_modify(|s| {
                            s.failures += 1;
                            s.last_error = Some(e.to_string());
                        });
                    }
                }
                if tx.is_closed() {
                    return;
                }
                // Retry quickly while nothing has been fetched yet.
                let wait =
                    if generation == 0 { options.interval.min(Duration::from_secs(1)) } else { options.interval };
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = task_wake.notified() => {}
                }
            }
        });
        TopologyWatcher { snapshot: rx, status: status_rx, wake, _task: Arc::new(TaskGuard(task)) }
    }

    /// The current snapshot.
    pub fn current(&self) -> Arc<Topology> {
        self.snapshot.borrow().clone()
    }

    /// The outcome of fetches so far.
    pub fn status(&self) -> FetchStatus {
        self.status.borrow().clone()
    }

    /// Asks for a refresh now, without waiting for it.
    pub fn refresh_now(&self) {
        self.wake.notify_one();
    }

    /// Asks for a refresh and waits until a snapshot newer than the current one arrives, or the
    /// deadline passes (then the current snapshot is returned).
    pub async fn refresh(&self, deadline: Duration) -> Arc<Topology> {
        let before = self.snapshot.borrow().generation;
        self.refresh_now();
        self.wait_for(deadline, |t| t.generation > before).await
    }

    /// Waits until a snapshot satisfies `pred` or `deadline` passes; returns the latest snapshot.
    pub async fn wait_for(&self, deadline: Duration, pred: impl Fn(&Topology) -> bool) -> Arc<Topology> {
        let mut rx = self.snapshot.clone();
        let _ = tokio::time::timeout(deadline, rx.wait_for(|t| pred(t))).await;
        self.current()
    }

    /// A receiver that is notified of every new snapshot.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Topology>> {
        self.snapshot.clone()
    }
}
