//! A private tokio runtime per server, so servers keep answering whatever the test's own
//! runtime is doing (blocking calls, a current-thread runtime that is not being polled).

use crate::{Result, TestkitError};

/// Owns a runtime and shuts it down without blocking when dropped, which is allowed even from
/// inside another runtime.
pub(crate) struct ServerRuntime(Option<tokio::runtime::Runtime>);

impl ServerRuntime {
    pub(crate) fn new(name: &'static str) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(name)
            .enable_all()
            .build()
            .map_err(|e| TestkitError::Start { server: name, reason: e.to_string() })?;
        Ok(ServerRuntime(Some(rt)))
    }

    pub(crate) fn handle(&self) -> tokio::runtime::Handle {
        match &self.0 {
            Some(rt) => rt.handle().clone(),
            None => unreachable!("runtime is only taken in drop"),
        }
    }
}

impl Drop for ServerRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}
