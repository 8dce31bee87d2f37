//! `OwnThread`: a task on a thread of its own with a single-threaded runtime, for the work no
//! other work may delay (the lease keepalive and the master).

use std::sync::Arc;

use anyhow::Context;

/// A task on a thread of its own with a single-threaded runtime, stopped when aborted or dropped.
/// For the work no other work may delay: the lease keepalive and the master.
pub struct OwnThread {
    stop: Arc<tokio::sync::Notify>,
    _thread: std::thread::JoinHandle<()>,
}

impl OwnThread {
    /// Runs the future `make()` returns on thread `name` until it ends or [`OwnThread::abort`].
    pub fn spawn<F, Fut>(name: &str, make: F) -> anyhow::Result<OwnThread>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()>,
    {
        let stop = Arc::new(tokio::sync::Notify::new());
        let stopped = stop.clone();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .with_context(|| format!("starting the runtime of {name}"))?;
        let handle = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                rt.block_on(async move {
                    tokio::select! {
                        () = make() => {}
                        () = stopped.notified() => {}
                    }
                });
            })
            .with_context(|| format!("starting thread {name}"))?;
        Ok(OwnThread { stop, _thread: handle })
    }

    /// Stops the task (at its next await) without waiting for the thread.
    pub fn abort(&self) {
        self.stop.notify_one();
    }
}

impl Drop for OwnThread {
    fn drop(&mut self) {
        self.abort();
    }
}
