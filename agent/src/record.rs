//! What a Kafka record carries besides its payload: headers (the pod's, the container's
//! stream), the log's timestamp, and what it charges the in-flight budget.

use rdkafka::message::{Header, OwnedHeaders};

use crate::container::{EventMeta, PodMeta, header};
use crate::kafka::PER_MESSAGE_OVERHEAD;

/// A record about to be handed to librdkafka.
#[derive(Debug)]
pub struct Outgoing<'a> {
    /// Payload.
    pub payload: &'a [u8],
    /// Key, for keyed streams.
    pub key: Option<&'a [u8]>,
    /// Headers.
    pub headers: Option<OwnedHeaders>,
    /// Timestamp (ms), when the log gave one.
    pub timestamp: Option<i64>,
}

/// What one record charges the in-flight budget: its line (the payload before any cut), its
/// headers, and librdkafka's own per-record overhead. Computed once, carried with the record
/// ([`Sent`]) and given back exactly on delivery.
pub fn record_charge(line: usize, pod_bytes: u64, meta: &EventMeta) -> u64 {
    let stream = meta.stream.map_or(0, |s| (header::IOSTREAM.len() + s.as_str().len()) as u64);
    line as u64 + pod_bytes + stream + PER_MESSAGE_OVERHEAD
}

/// A file's pod headers, listed once for all the records of a group.
pub fn pod_headers(pod: Option<&PodMeta>) -> Vec<(&'static str, &str)> {
    pod.map(PodMeta::headers).unwrap_or_default()
}

/// Bytes of pod headers (names and values).
pub fn pod_header_bytes(pod: &[(&str, &str)]) -> u64 {
    pod.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum()
}

/// A record's headers: its pod's, and the container stream it was written to; none when
/// there is neither.
pub fn headers(pod: &[(&str, &str)], meta: &EventMeta) -> Option<OwnedHeaders> {
    if pod.is_empty() && meta.stream.is_none() {
        return None;
    }
    let mut h = OwnedHeaders::new_with_capacity(pod.len() + 1);
    for &(key, value) in pod {
        h = h.insert(Header { key, value: Some(value) });
    }
    if let Some(s) = meta.stream {
        h = h.insert(Header { key: header::IOSTREAM, value: Some(s.as_str()) });
    }
    Some(h)
}
