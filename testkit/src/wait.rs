//! Waiting for a condition with a deadline: the only way tests synchronise with servers and
//! pipelines (no fixed sleeps).

use std::time::{Duration, Instant};

use crate::{Result, TestkitError};

const POLL: Duration = Duration::from_millis(20);

/// Polls `cond` until it returns `Some`, or fails after `deadline` naming `what`.
pub fn wait_until<T>(what: &str, deadline: Duration, cond: impl FnMut() -> Option<T>) -> Result<T> {
    wait_until_every(what, deadline, POLL, cond)
}

/// [`wait_until`] with a chosen polling interval, for conditions that are costly to check
/// (reading a bucket back) or that drive a progress bar.
pub fn wait_until_every<T>(
    what: &str,
    deadline: Duration,
    every: Duration,
    mut cond: impl FnMut() -> Option<T>,
) -> Result<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = cond() {
            return Ok(v);
        }
        if start.elapsed() >= deadline {
            return Err(TestkitError::Timeout { what: what.to_owned(), after: deadline });
        }
        std::thread::sleep(every);
    }
}

/// Async form of [`wait_until`]: polls an async condition.
pub async fn wait_until_async<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    deadline: Duration,
    mut cond: impl FnMut() -> F,
) -> Result<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = cond().await {
            return Ok(v);
        }
        if start.elapsed() >= deadline {
            return Err(TestkitError::Timeout { what: what.to_owned(), after: deadline });
        }
        tokio::time::sleep(POLL).await;
    }
}
