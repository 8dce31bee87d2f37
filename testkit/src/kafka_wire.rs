//! Kafka messages the fronts rewrite or answer for the mock cluster, which cannot do it itself:
//! a partition increase (Metadata responses list only the partitions made visible so far),
//! topic configurations (DescribeConfigs answered from a table), and the SASL exchange
//! (SaslHandshake and SaslAuthenticate, answered by the front). Decoded and encoded with the
//! `kafka-protocol` crate, which is generated from Kafka's own message schemas, so every version
//! a client may send is read as Kafka reads it. Pure: bytes in, bytes out.
//!
//! ```text
//!  Metadata response (v0..v13) ──rewrite_metadata(visible, preferred)──> partitions >= N dropped,
//!                                                       replicas in the order reassigned
//!  ApiVersions response (v0..v4) ──advertise(keys)──> more API keys listed
//!  DescribeConfigs request (v1..v4) ──describe_configs(table)──> response
//!  SaslHandshake / SaslAuthenticate request ──sasl_*──> what the client sent; answers encoded
//!  AlterPartitionReassignments / ElectLeaders request ──reassign / elect──> the order recorded,
//!                                                       the preferred replica made leader
//! ```
//!
//! Anything that does not decode is left alone (`None`): the front then relays the original
//! bytes, or refuses the login.

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::describe_configs_response::{DescribeConfigsResourceResult, DescribeConfigsResult};
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, ApiKey, ApiVersionsResponse, BrokerId,
    DescribeConfigsRequest, DescribeConfigsResponse, ElectLeadersRequest, ElectLeadersResponse, MetadataResponse,
    RequestHeader, ResponseHeader, SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest,
    SaslHandshakeResponse,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Message, StrBytes};

/// API keys the fronts look at.
pub const API_METADATA: i16 = ApiKey::Metadata as i16;
/// DescribeConfigs.
pub const API_DESCRIBE_CONFIGS: i16 = ApiKey::DescribeConfigs as i16;
/// ApiVersions.
pub const API_VERSIONS: i16 = ApiKey::ApiVersions as i16;
/// SaslHandshake.
pub const API_SASL_HANDSHAKE: i16 = ApiKey::SaslHandshake as i16;
/// SaslAuthenticate.
pub const API_SASL_AUTHENTICATE: i16 = ApiKey::SaslAuthenticate as i16;

/// AlterPartitionReassignments.
pub const API_REASSIGN: i16 = ApiKey::AlterPartitionReassignments as i16;
/// ElectLeaders.
pub const API_ELECT: i16 = ApiKey::ElectLeaders as i16;

/// Replica orders set by AlterPartitionReassignments, by (topic, partition): the mock keeps
/// its own order, so the fronts show this one in Metadata and elect its first replica.
pub type Preferred = BTreeMap<(String, i32), Vec<i32>>;

/// The APIs the front answers itself, with the versions it reads (advertised in ApiVersions).
pub fn own_versions() -> [(i16, i16, i16); 3] {
    let (d, r, e) =
        (DescribeConfigsRequest::VERSIONS, AlterPartitionReassignmentsRequest::VERSIONS, ElectLeadersRequest::VERSIONS);
    [(API_DESCRIBE_CONFIGS, d.min, d.max), (API_REASSIGN, r.min, r.max), (API_ELECT, e.min, e.max)]
}

/// A request's header, read with the header version its API key and version call for, and the
/// body after it.
pub fn request(frame: &[u8]) -> Option<(RequestHeader, Bytes)> {
    let key = ApiKey::try_from(i16::from_be_bytes(frame.get(0..2)?.try_into().ok()?)).ok()?;
    let version = i16::from_be_bytes(frame.get(2..4)?.try_into().ok()?);
    let mut buf = Bytes::copy_from_slice(frame);
    let header = RequestHeader::decode(&mut buf, key.request_header_version(version)).ok()?;
    Some((header, buf))
}

/// A request body of type `M` at `version`, or `None` when bytes are missing. Bytes after it
/// are ignored, as brokers ignore them.
fn decode_body<M: Decodable>(mut buf: Bytes, version: i16) -> Option<M> {
    M::decode(&mut buf, version).ok()
}

/// A response frame (from the correlation id on): its header and `body` at `version`, then
/// `trailing` (what followed the message in the frame it was read from) as it was:
/// librdkafka's mock broker ends some responses with one more (empty) tagged-field count than
/// the schema has, and clients read it as the broker wrote it.
fn response_with<M: Encodable + HeaderVersion>(
    correlation_id: i32,
    body: &M,
    version: i16,
    trailing: &[u8],
) -> Option<Vec<u8>> {
    let mut out = BytesMut::new();
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    header.encode(&mut out, M::header_version(version)).ok()?;
    body.encode(&mut out, version).ok()?;
    out.extend_from_slice(trailing);
    Some(out.to_vec())
}

/// A response frame of the front's own.
fn response<M: Encodable + HeaderVersion>(correlation_id: i32, body: &M, version: i16) -> Option<Vec<u8>> {
    response_with(correlation_id, body, version, &[])
}

/// A request frame (without its size): the header for `key` at `version`, then `body`.
pub fn request_frame<M: Encodable + HeaderVersion>(
    key: ApiKey,
    version: i16,
    client_id: &str,
    body: &M,
) -> Option<Vec<u8>> {
    let header = RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(1)
        .with_client_id(Some(StrBytes::from_string(client_id.to_owned())));
    let mut out = BytesMut::new();
    header.encode(&mut out, M::header_version(version)).ok()?;
    body.encode(&mut out, version).ok()?;
    Some(out.to_vec())
}

/// A response frame read back: its correlation id and body.
pub fn read_response<M: Decodable + HeaderVersion>(frame: &[u8], version: i16) -> Option<(i32, M)> {
    read_response_with(frame, version).map(|(id, m, _)| (id, m))
}

/// As [`read_response`], with the bytes after the message.
fn read_response_with<M: Decodable + HeaderVersion>(frame: &[u8], version: i16) -> Option<(i32, M, Bytes)> {
    let mut buf = Bytes::copy_from_slice(frame);
    let header = ResponseHeader::decode(&mut buf, M::header_version(version)).ok()?;
    let m = M::decode(&mut buf, version).ok()?;
    Some((header.correlation_id, m, buf))
}

/// A Metadata response for request `version`, with every topic of `visible` listing only its
/// partitions below the visible count. `None` when nothing changes or the frame does not decode.
pub fn rewrite_metadata(
    frame: &[u8],
    version: i16,
    visible: &BTreeMap<String, i32>,
    preferred: &Preferred,
) -> Option<Vec<u8>> {
    if visible.is_empty() && preferred.is_empty() {
        return None;
    }
    let (id, mut meta, trailing) = read_response_with::<MetadataResponse>(frame, version)?;
    let mut changed = false;
    for t in &mut meta.topics {
        let Some(name) = t.name.as_ref().map(|n| n.to_string()) else { continue };
        if let Some(limit) = visible.get(&name) {
            let before = t.partitions.len();
            t.partitions.retain(|p| p.partition_index < *limit);
            changed |= t.partitions.len() != before;
        }
        for p in &mut t.partitions {
            if let Some(order) = preferred.get(&(name.clone(), p.partition_index)) {
                p.replica_nodes = order.iter().map(|b| BrokerId(*b)).collect();
                changed = true;
            }
        }
    }
    if changed { response_with(id, &meta, version, &trailing) } else { None }
}

/// A successful ApiVersions response listing `keys` too (key, min, max), replacing what the
/// broker said for them. `None` for an error answer or one that does not decode.
pub fn advertise(answer: &[u8], request_version: i16, keys: &[(i16, i16, i16)]) -> Option<Vec<u8>> {
    let (id, mut versions, trailing) = read_response_with::<ApiVersionsResponse>(answer, request_version)?;
    if versions.error_code != 0 {
        return None;
    }
    versions.api_keys.retain(|k| !keys.iter().any(|(key, ..)| *key == k.api_key));
    for (key, min, max) in keys {
        versions.api_keys.push(ApiVersion::default().with_api_key(*key).with_min_version(*min).with_max_version(*max));
    }
    response_with(id, &versions, request_version, &trailing)
}

const RESOURCE_TOPIC: i8 = 2;
const CONFIG_SOURCE_DYNAMIC_TOPIC: i8 = 1;

/// The answer to a DescribeConfigs request frame: topics answer their entries in `table` (only
/// those asked for, when names are listed), other resources and unknown topics an empty list.
/// `None` when the request does not decode.
pub fn describe_configs(frame: &[u8], table: &BTreeMap<String, BTreeMap<String, String>>) -> Option<Vec<u8>> {
    let (header, body) = request(frame)?;
    let version = header.request_api_version;
    let asked: DescribeConfigsRequest = decode_body(body, version)?;
    let results = asked
        .resources
        .iter()
        .map(|r| {
            let wanted = |k: &String| {
                r.configuration_keys.as_ref().is_none_or(|n| n.is_empty() || n.iter().any(|n| n.as_str() == k))
            };
            let configs = match (r.resource_type, table.get(r.resource_name.as_str())) {
                (RESOURCE_TOPIC, Some(configs)) => configs
                    .iter()
                    .filter(|(k, _)| wanted(k))
                    .map(|(k, v)| {
                        DescribeConfigsResourceResult::default()
                            .with_name(StrBytes::from_string(k.clone()))
                            .with_value(Some(StrBytes::from_string(v.clone())))
                            .with_config_source(CONFIG_SOURCE_DYNAMIC_TOPIC)
                    })
                    .collect(),
                _ => Vec::new(),
            };
            DescribeConfigsResult::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone())
                .with_configs(configs)
        })
        .collect();
    response(header.correlation_id, &DescribeConfigsResponse::default().with_results(results), version)
}

/// The answer to an AlterPartitionReassignments request frame: each partition's replica order
/// recorded in `preferred` (a cancellation, without replicas, forgets it). `None` when it does
/// not decode.
pub fn reassign(frame: &[u8], preferred: &mut Preferred) -> Option<Vec<u8>> {
    let (header, body) = request(frame)?;
    let version = header.request_api_version;
    let asked: AlterPartitionReassignmentsRequest = decode_body(body, version)?;
    let mut topics = Vec::new();
    for t in &asked.topics {
        let mut partitions = Vec::new();
        for p in &t.partitions {
            let key = (t.name.to_string(), p.partition_index);
            match &p.replicas {
                Some(r) => preferred.insert(key, r.iter().map(|b| b.0).collect()),
                None => preferred.remove(&key),
            };
            partitions.push(ReassignablePartitionResponse::default().with_partition_index(p.partition_index));
        }
        topics.push(ReassignableTopicResponse::default().with_name(t.name.clone()).with_partitions(partitions));
    }
    response(header.correlation_id, &AlterPartitionReassignmentsResponse::default().with_responses(topics), version)
}

/// The answer to an ElectLeaders request frame: each partition with a recorded order is led
/// by its first replica (`elect(topic, partition, broker)`, false when that failed:
/// error 84 ELECTION_NOT_NEEDED is answered for partitions without one, as for a preferred
/// replica that already leads). `None` when it does not decode.
pub fn elect(frame: &[u8], preferred: &Preferred, mut elect: impl FnMut(&str, i32, i32) -> bool) -> Option<Vec<u8>> {
    let (header, body) = request(frame)?;
    let version = header.request_api_version;
    let asked: ElectLeadersRequest = decode_body(body, version)?;
    let mut results = Vec::new();
    for t in asked.topic_partitions.iter().flatten() {
        let partition_result = t
            .partitions
            .iter()
            .map(|&p| {
                let code = match preferred.get(&(t.topic.to_string(), p)).and_then(|r| r.first()) {
                    Some(&leader) if elect(&t.topic, p, leader) => 0,
                    Some(_) => 15, // COORDINATOR_NOT_AVAILABLE stands for "the controller failed".
                    None => 84,
                };
                PartitionResult::default().with_partition_id(p).with_error_code(code)
            })
            .collect();
        results
            .push(ReplicaElectionResult::default().with_topic(t.topic.clone()).with_partition_result(partition_result));
    }
    response(header.correlation_id, &ElectLeadersResponse::default().with_replica_election_results(results), version)
}

/// The mechanism a SaslHandshake request names.
pub fn sasl_handshake(header: &RequestHeader, body: Bytes) -> Option<String> {
    let r: SaslHandshakeRequest = decode_body(body, header.request_api_version)?;
    Some(r.mechanism.to_string())
}

/// The answer to a SaslHandshake: `error` (0 when the mechanism is known) and the mechanisms.
pub fn sasl_handshake_answer(header: &RequestHeader, error: i16, mechanisms: &[&'static str]) -> Option<Vec<u8>> {
    let answer = SaslHandshakeResponse::default()
        .with_error_code(error)
        .with_mechanisms(mechanisms.iter().map(|m| StrBytes::from_static_str(m)).collect());
    response(header.correlation_id, &answer, header.request_api_version)
}

/// The bytes a SaslAuthenticate request carries.
pub fn sasl_authenticate(header: &RequestHeader, body: Bytes) -> Option<Bytes> {
    let r: SaslAuthenticateRequest = decode_body(body, header.request_api_version)?;
    Some(r.auth_bytes)
}

/// The answer to a SaslAuthenticate: `error`, its message, the server's bytes; the session's
/// lifetime is 0 (it does not expire: the front closes it when the token does).
pub fn sasl_authenticate_answer(
    header: &RequestHeader,
    error: i16,
    message: Option<String>,
    bytes: Vec<u8>,
) -> Option<Vec<u8>> {
    let answer = SaslAuthenticateResponse::default()
        .with_error_code(error)
        .with_error_message(message.map(StrBytes::from_string))
        .with_auth_bytes(Bytes::from(bytes));
    response(header.correlation_id, &answer, header.request_api_version)
}

#[cfg(test)]
pub(crate) mod tests;
