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

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ApiKey, ProduceRequest, ProduceResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};
use rdkafka::consumer::Consumer;

use super::KafkaCluster;
use crate::kafka_wire::{read_response, request_frame};
use crate::{Result, TestkitError};

/// The control record type of a commit (0 is abort).
const COMMIT: i16 = 1;
/// The Produce version sent (the oldest kafka-protocol writes, which every broker takes).
const PRODUCE_VERSION: i16 = 3;

/// A control batch (magic 2) holding one commit marker of `producer_id`: key (version 0, type
/// COMMIT), value (version 0, coordinator epoch 0).
fn commit_batch(producer_id: i64) -> Option<Bytes> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(0));
    let marker = Record {
        transactional: true,
        control: true,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id,
        producer_epoch: 0,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: -1,
        timestamp: now,
        key: Some(Bytes::from([0i16.to_be_bytes(), COMMIT.to_be_bytes()].concat())),
        value: Some(Bytes::from([&0i16.to_be_bytes()[..], &0i32.to_be_bytes()[..]].concat())),
        headers: Default::default(),
    };
    let mut batch = BytesMut::new();
    let options = RecordEncodeOptions { version: 2, compression: Compression::None };
    RecordBatchEncoder::encode(&mut batch, [&marker], &options).ok()?;
    Some(batch.freeze())
}

/// A Produce request (acks 1) of `batch` to one partition, framed with its size.
fn produce_request(topic: &str, partition: i32, batch: Bytes) -> Option<Vec<u8>> {
    let data = PartitionProduceData::default().with_index(partition).with_records(Some(batch));
    let topic = TopicProduceData::default()
        .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
        .with_partition_data(vec![data]);
    let request = ProduceRequest::default().with_acks(1).with_timeout_ms(10_000).with_topic_data(vec![topic]);
    let body = request_frame(ApiKey::Produce, PRODUCE_VERSION, "testkit-markers", &request)?;
    let mut frame = i32::try_from(body.len()).ok()?.to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    Some(frame)
}

/// The error code of the one partition in a Produce response (after its size).
fn produce_error(resp: &[u8]) -> Option<i16> {
    let (_, answer) = read_response::<ProduceResponse>(resp, PRODUCE_VERSION)?;
    Some(answer.responses.first()?.partition_responses.first()?.error_code)
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
        let request = commit_batch(producer_id)
            .and_then(|batch| produce_request(topic, partition, batch))
            .ok_or_else(|| fail("encoding the marker's Produce request".into()))?;
        conn.write_all(&request).map_err(io)?;
        let mut size = [0u8; 4];
        conn.read_exact(&mut size).map_err(io)?;
        let mut resp = vec![0u8; usize::try_from(i32::from_be_bytes(size).max(0)).unwrap_or(0)];
        conn.read_exact(&mut resp).map_err(io)?;
        match produce_error(&resp) {
            Some(0) => Ok(()),
            other => Err(fail(format!("the marker for {topic}/{partition} was refused: error {other:?}"))),
        }
    }
}
