//! What a worker measures of its partitions: bytes per second read from each (registered, so the
//! master weighs partitions by what they carry) and the lag librdkafka reports (exported).
//!
//! ```text
//!  pump: record bytes ──RateWindow (5 s)──> Worker::rates ──registration refresh──> master weights
//!  WorkerContext::lag (statistics) ──update_lag_metrics (owned partitions)──> lag_records{topic,partition}
//! ```

use std::sync::PoisonError;
use std::time::{Duration, Instant};

use az_core::TopicPartition;
use rdkafka::consumer::Consumer;

use super::Worker;
use crate::metrics::TpLabel;

/// How long bytes are counted before a rate is computed: long enough to smooth bursts, short
/// enough that a partition's weight follows a change within a registration refresh or two.
const WINDOW: Duration = Duration::from_secs(5);

/// Bytes read from one partition since a window started.
#[derive(Debug, Clone, Copy)]
pub(super) struct RateWindow {
    /// When the window started.
    started: Instant,
    /// Record payload bytes read since.
    bytes: u64,
}

impl RateWindow {
    /// A window starting now.
    pub(super) fn new() -> RateWindow {
        RateWindow { started: Instant::now(), bytes: 0 }
    }

    /// Counts `bytes` read; once the window is over, returns its rate in bytes per second and
    /// starts the next one.
    pub(super) fn add(&mut self, bytes: u64) -> Option<f64> {
        self.bytes += bytes;
        let elapsed = self.started.elapsed();
        if elapsed < WINDOW {
            return None;
        }
        let rate = self.bytes as f64 / elapsed.as_secs_f64();
        *self = RateWindow::new();
        Some(rate)
    }
}

impl Worker {
    /// The metric label of a partition.
    pub(super) fn label(tp: &TopicPartition) -> TpLabel {
        TpLabel { topic: tp.topic.clone(), partition: tp.partition.to_string() }
    }

    /// Records the rate of a partition for the next registration refresh.
    pub(super) fn record_rate(&self, tp: &TopicPartition, rate: f64) {
        self.rates.lock().unwrap_or_else(PoisonError::into_inner).insert(tp.clone(), rate);
    }

    /// Exports the latest statistics' lag of every owned partition.
    pub(super) fn update_lag_metrics(&self) {
        let lag =
            Consumer::client(&*self.consumer).context().lag.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let owned = self.owned.lock().unwrap_or_else(PoisonError::into_inner);
        for tp in owned.keys() {
            if let Some(l) = lag.get(tp) {
                self.metrics.lag.get_or_create(&Self::label(tp)).set(*l);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_comes_once_per_window() {
        let mut w = RateWindow::new();
        assert_eq!(w.add(1000), None);
        w.started -= WINDOW;
        let rate = w.add(1000).expect("a rate");
        assert!((rate - 400.0).abs() < 10.0, "{rate}");
        assert_eq!(w.bytes, 0, "the next window starts empty");
    }
}
