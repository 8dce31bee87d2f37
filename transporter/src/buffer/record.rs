//! One Kafka record as the buffer sees it: borrowed from the consumer's message (or from a
//! record held back across a roll), so that appending copies its bytes only once.

use rdkafka::message::{BorrowedMessage, Message, Timestamp};

/// A header: its name's bytes (Kafka defines names as strings, but a producer can send any
/// bytes) and its value (`None` for a null value).
pub type Header<'a> = (&'a [u8], Option<&'a [u8]>);

/// One Kafka record.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    /// Topic.
    pub topic: &'a str,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Timestamp in ms, if any.
    pub timestamp_ms: Option<i64>,
    /// What the timestamp means.
    pub timestamp_type: TimestampType,
    /// Key.
    pub key: Option<&'a [u8]>,
    /// Value.
    pub value: Option<&'a [u8]>,
    /// Headers, in the order the producer gave them (a name may repeat).
    pub headers: &'a [Header<'a>],
}

/// What a record's timestamp means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampType {
    /// No timestamp.
    None,
    /// Set by the producer.
    CreateTime,
    /// Set by the broker when it appended the record.
    LogAppendTime,
}

impl TimestampType {
    /// The name objects carry, `None` for a record without a timestamp.
    pub fn name(self) -> Option<&'static str> {
        match self {
            TimestampType::None => None,
            TimestampType::CreateTime => Some("create-time"),
            TimestampType::LogAppendTime => Some("log-append-time"),
        }
    }

    /// The code the buffer's frames carry.
    pub fn code(self) -> u8 {
        match self {
            TimestampType::None => 0,
            TimestampType::CreateTime => 1,
            TimestampType::LogAppendTime => 2,
        }
    }

    /// From a frame's code (an unknown one is no timestamp type).
    pub fn from_code(code: u8) -> TimestampType {
        match code {
            1 => TimestampType::CreateTime,
            2 => TimestampType::LogAppendTime,
            _ => TimestampType::None,
        }
    }
}

/// The timestamp and its type as librdkafka gives them.
fn timestamp(t: Timestamp) -> (Option<i64>, TimestampType) {
    match t {
        Timestamp::NotAvailable => (None, TimestampType::None),
        // Kafka's "no timestamp" is -1; a negative one from a producer says nothing either.
        Timestamp::CreateTime(ms) if ms >= 0 => (Some(ms), TimestampType::CreateTime),
        Timestamp::LogAppendTime(ms) if ms >= 0 => (Some(ms), TimestampType::LogAppendTime),
        _ => (None, TimestampType::None),
    }
}

impl<'a> Record<'a> {
    /// A consumed message of `topic`, with its headers (`az_core::headers::of`).
    pub fn of_message(topic: &'a str, m: &'a BorrowedMessage<'_>, headers: &'a [Header<'a>]) -> Record<'a> {
        let (timestamp_ms, timestamp_type) = timestamp(m.timestamp());
        Record {
            topic,
            partition: m.partition(),
            offset: m.offset(),
            timestamp_ms,
            timestamp_type,
            key: m.key(),
            value: m.payload(),
            headers,
        }
    }
}

/// A record copied out of librdkafka: held back across a roll (its message cannot wait).
#[derive(Debug, Clone)]
pub struct OwnedRecord {
    partition: i32,
    offset: i64,
    timestamp_ms: Option<i64>,
    timestamp_type: TimestampType,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl OwnedRecord {
    /// A copy of `r`.
    pub fn of(r: &Record<'_>) -> OwnedRecord {
        OwnedRecord {
            partition: r.partition,
            offset: r.offset,
            timestamp_ms: r.timestamp_ms,
            timestamp_type: r.timestamp_type,
            key: r.key.map(<[u8]>::to_vec),
            value: r.value.map(<[u8]>::to_vec),
            headers: r.headers.iter().map(|(k, v)| (k.to_vec(), v.map(<[u8]>::to_vec))).collect(),
        }
    }

    /// Calls `f` with the record borrowed, as a record of `topic`.
    pub fn with<R>(&self, topic: &str, f: impl FnOnce(&Record<'_>) -> R) -> R {
        let headers: Vec<Header<'_>> = self.headers.iter().map(|(k, v)| (k.as_slice(), v.as_deref())).collect();
        f(&Record {
            topic,
            partition: self.partition,
            offset: self.offset,
            timestamp_ms: self.timestamp_ms,
            timestamp_type: self.timestamp_type,
            key: self.key.as_deref(),
            value: self.value.as_deref(),
            headers: &headers,
        })
    }
}
