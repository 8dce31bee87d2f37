//! One Kafka record as the buffer sees it: borrowed from the consumer's message (or from a
//! record held back across a roll), so that appending copies its bytes only once.

use rdkafka::message::{
    BorrowedHeaders, BorrowedMessage, Headers as _, Message, OwnedHeaders, OwnedMessage, Timestamp,
};

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
    /// Headers, in the order the producer gave them (a key may repeat).
    pub headers: Headers<'a>,
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

/// A record's headers, wherever they are kept.
#[derive(Clone, Copy, Default)]
pub enum Headers<'a> {
    /// None.
    #[default]
    None,
    /// A consumed message's.
    Borrowed(&'a BorrowedHeaders),
    /// A record held back across a roll.
    Owned(&'a OwnedHeaders),
    /// Given as a list (decoded from a buffer frame, or in tests).
    List(&'a [(&'a str, Option<&'a [u8]>)]),
}

impl std::fmt::Debug for Headers<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter().map(|(k, v)| (k, v.map(<[u8]>::len)))).finish()
    }
}

impl<'a> Headers<'a> {
    /// How many.
    pub fn len(&self) -> usize {
        match self {
            Headers::None => 0,
            Headers::Borrowed(h) => h.count(),
            Headers::Owned(h) => h.count(),
            Headers::List(l) => l.len(),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Header `i`: its key and value (`None` for a header without one).
    pub fn get(&self, i: usize) -> Option<(&'a str, Option<&'a [u8]>)> {
        match *self {
            Headers::None => None,
            Headers::Borrowed(h) => h.try_get(i).map(|h| (h.key, h.value)),
            Headers::Owned(h) => h.try_get(i).map(|h| (h.key, h.value)),
            Headers::List(l) => l.get(i).copied(),
        }
    }

    /// Every header in order.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, Option<&'a [u8]>)> + '_ {
        (0..self.len()).filter_map(|i| self.get(i))
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
    /// A consumed message of `topic`.
    pub fn of_message(topic: &'a str, m: &'a BorrowedMessage<'_>) -> Record<'a> {
        let (timestamp_ms, timestamp_type) = timestamp(m.timestamp());
        Record {
            topic,
            partition: m.partition(),
            offset: m.offset(),
            timestamp_ms,
            timestamp_type,
            key: m.key(),
            value: m.payload(),
            headers: m.headers().map_or(Headers::None, Headers::Borrowed),
        }
    }

    /// A record held back across a roll.
    pub fn of_owned(topic: &'a str, m: &'a OwnedMessage) -> Record<'a> {
        let (timestamp_ms, timestamp_type) = timestamp(m.timestamp());
        Record {
            topic,
            partition: m.partition(),
            offset: m.offset(),
            timestamp_ms,
            timestamp_type,
            key: m.key(),
            value: m.payload(),
            headers: m.headers().map_or(Headers::None, Headers::Owned),
        }
    }
}
