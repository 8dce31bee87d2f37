//! Transaction markers written into the mock cluster's log. The mock accepts transactions but
//! writes no commit markers, so a consumer never sees the offsets markers take in a real
//! cluster; this writes one (a control batch, as a transaction coordinator does) with a raw
//! Produce request to the partition's leader, so tests see the jump a real marker makes.
//!
//! ```text
//!  RecordBatch v2 { attributes: transactional | control, one record: key = (version 0, type COMMIT),
//!                   value = (version 0, coordinator epoch 0) }, CRC-32C over attributes..end
//!  Produce v3 { acks 1, [topic [partition, batch]] } ──TCP──> leader ──> its error code checked
//! ```

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use rdkafka::consumer::Consumer;

use super::KafkaCluster;
use crate::kafka_wire::codec::put_str;
use crate::{Result, TestkitError};

/// Attributes of a transactional control batch.
const CONTROL_TRANSACTIONAL: i16 = 0x20 | 0x10;
/// The control record type of a commit (0 is abort).
const COMMIT: i16 = 1;

fn put_varint(out: &mut Vec<u8>, v: i64) {
    // Records encode their lengths and deltas as zigzag varints.
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

/// A control batch holding one commit marker of `producer_id`.
fn commit_batch(producer_id: i64) -> Vec<u8> {
    let mut record = Vec::new();
    record.push(0); // attributes
    put_varint(&mut record, 0); // timestamp delta
    put_varint(&mut record, 0); // offset delta
    let key = [0i16.to_be_bytes(), COMMIT.to_be_bytes()].concat();
    put_varint(&mut record, key.len() as i64);
    record.extend_from_slice(&key);
    let value = [&0i16.to_be_bytes()[..], &0i32.to_be_bytes()[..]].concat();
    put_varint(&mut record, value.len() as i64);
    record.extend_from_slice(&value);
    put_varint(&mut record, 0); // headers
    let mut records = Vec::new();
    put_varint(&mut records, record.len() as i64);
    records.extend_from_slice(&record);

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(0));
    // From the attributes on: what the CRC covers.
    let mut tail = Vec::new();
    tail.extend_from_slice(&CONTROL_TRANSACTIONAL.to_be_bytes());
    tail.extend_from_slice(&0i32.to_be_bytes()); // last offset delta
    tail.extend_from_slice(&now.to_be_bytes()); // base timestamp
    tail.extend_from_slice(&now.to_be_bytes()); // max timestamp
    tail.extend_from_slice(&producer_id.to_be_bytes());
    tail.extend_from_slice(&0i16.to_be_bytes()); // producer epoch
    tail.extend_from_slice(&(-1i32).to_be_bytes()); // base sequence
    tail.extend_from_slice(&1i32.to_be_bytes()); // records
    tail.extend_from_slice(&records);
    let mut batch = Vec::new();
    batch.extend_from_slice(&0i64.to_be_bytes()); // base offset (the broker assigns it)
    // Length after this field: leader epoch (4) + magic (1) + crc (4) + the rest.
    batch.extend_from_slice(&(9 + tail.len() as i32).to_be_bytes());
    batch.extend_from_slice(&(-1i32).to_be_bytes()); // partition leader epoch
    batch.push(2); // magic
    batch.extend_from_slice(&crc32c::crc32c(&tail).to_be_bytes());
    batch.extend_from_slice(&tail);
    batch
}

/// A Produce v3 request (acks 1) of `batch` to one partition, framed.
fn produce_request(topic: &str, partition: i32, batch: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&0i16.to_be_bytes()); // Produce
    body.extend_from_slice(&3i16.to_be_bytes()); // version
    body.extend_from_slice(&7i32.to_be_bytes()); // correlation id
    put_str(&mut body, Some("testkit-markers"));
    put_str(&mut body, None); // transactional id
    body.extend_from_slice(&1i16.to_be_bytes()); // acks
    body.extend_from_slice(&10_000i32.to_be_bytes()); // timeout
    body.extend_from_slice(&1i32.to_be_bytes()); // topics
    put_str(&mut body, Some(topic));
    body.extend_from_slice(&1i32.to_be_bytes()); // partitions
    body.extend_from_slice(&partition.to_be_bytes());
    body.extend_from_slice(&(batch.len() as i32).to_be_bytes());
    body.extend_from_slice(batch);
    let mut frame = (body.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    frame
}

/// The error code of the one partition in a Produce v3 response (after its size).
fn produce_error(resp: &[u8], topic: &str) -> Option<i16> {
    // correlation id (4), topics (4), topic name (2 + len), partitions (4), partition (4), error
    let at = 4 + 4 + 2 + topic.len() + 4 + 4;
    Some(i16::from_be_bytes(resp.get(at..at + 2)?.try_into().ok()?))
}

impl KafkaCluster {
    /// Appends a transaction commit marker of `producer_id` to a partition: one offset that
    /// consumers skip, as a real cluster writes at the end of every transaction.
    pub fn append_commit_marker(&self, topic: &str, partition: i32, producer_id: i64) -> Result<()> {
        let fail = |reason: String| TestkitError::Start { server: "kafka", reason };
        let leader =
            *self.leaders(topic)?.get(&partition).ok_or_else(|| fail(format!("{topic}/{partition} has no leader")))?;
        let md =
            self.admin.fetch_metadata(None, Duration::from_secs(10)).map_err(|e| fail(format!("metadata: {e}")))?;
        let broker = md
            .brokers()
            .iter()
            .find(|b| b.id() == leader)
            .ok_or_else(|| fail(format!("leader {leader} is not in the metadata")))?;
        let io = |e: std::io::Error| fail(format!("producing a marker to broker {leader}: {e}"));
        let mut conn = TcpStream::connect((broker.host(), broker.port() as u16)).map_err(io)?;
        conn.set_read_timeout(Some(Duration::from_secs(10))).map_err(io)?;
        conn.write_all(&produce_request(topic, partition, &commit_batch(producer_id))).map_err(io)?;
        let mut size = [0u8; 4];
        conn.read_exact(&mut size).map_err(io)?;
        let mut resp = vec![0u8; usize::try_from(i32::from_be_bytes(size).max(0)).unwrap_or(0)];
        conn.read_exact(&mut resp).map_err(io)?;
        match produce_error(&resp, topic) {
            Some(0) => Ok(()),
            other => Err(fail(format!("the marker for {topic}/{partition} was refused: error {other:?}"))),
        }
    }
}
