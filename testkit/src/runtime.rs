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

/// Binds a loopback listener on a free port without entering any runtime (so it works from
/// inside a test's runtime too); convert it with `tokio::net::TcpListener::from_std` inside a
/// task of the server's runtime.
pub(crate) fn bind_loopback(what: &'static str) -> Result<(std::net::TcpListener, u16)> {
    let start = |e: std::io::Error| TestkitError::Start { server: what, reason: format!("bind 127.0.0.1:0: {e}") };
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(start)?;
    listener.set_nonblocking(true).map_err(start)?;
    let port = listener.local_addr().map_err(start)?.port();
    Ok((listener, port))
}
