//! Applying a leader plan through Kafka's Admin API: AlterPartitionReassignments (the same
//! replicas, the planned leader first) and then a preferred-leader election (ElectLeaders), the
//! two steps `kafka-reassign-partitions.sh` and `kafka-leader-election.sh` take. librdkafka has
//! no AlterPartitionReassignments, so these requests are spoken here with the `kafka-protocol`
//! crate (generated from Kafka's own schemas) on a plaintext connection.
//!
//! ```text
//!  brokers (advertised host:port) ──connect──> ApiVersions: keys 45 and 43 offered?
//!     no ──> Unsupported (the printed JSON and the tools still work)
//!  AlterPartitionReassignments(reordered partitions) ──NOT_CONTROLLER──> next broker
//!  ElectLeaders(PREFERRED, partitions whose leader changes) ──> per-partition errors
//! ```
//!
//! Deliberately absent: TLS and SASL. A cluster that needs them is refused with the commands
//! that apply the same plan ([`ApplyError::Security`]), rather than half-implementing them here.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::alter_partition_reassignments_request::{ReassignablePartition, ReassignableTopic};
use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, ApiKey, ApiVersionsRequest,
    ApiVersionsResponse, BrokerId, ElectLeadersRequest, ElectLeadersResponse, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Message, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::Plan;

/// `NOT_CONTROLLER`: the request must go to another broker.
const NOT_CONTROLLER: i16 = 41;
/// `UNSUPPORTED_VERSION`: the broker does not speak that version of the request.
const UNSUPPORTED_VERSION: i16 = 35;
/// `ELECTION_NOT_NEEDED`: the preferred replica already leads.
const ELECTION_NOT_NEEDED: i16 = 84;
/// What the client waits beyond the time a request gives the broker.
const MARGIN: Duration = Duration::from_secs(5);
/// Responses larger than this are refused rather than allocated.
const MAX_RESPONSE: usize = 64 << 20;

/// Why a plan could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The connection is not plaintext.
    #[error(
        "--apply speaks Kafka's Admin API itself and only over PLAINTEXT listeners; this cluster uses \
         security.protocol={0}. Apply the same plan with Kafka's tools: kafka-reassign-partitions.sh \
         --reassignment-json-file <the printed JSON> --execute, then kafka-leader-election.sh \
         --election-type preferred --path-to-json-file <the printed election JSON>"
    )]
    Security(String),
    /// The broker does not offer an API the plan needs.
    #[error(
        "the broker at {addr} does not support {api} (API key {key}) in a version this tool speaks; \
         the cluster cannot apply a leader plan through the Admin API (Kafka 2.4 or later can). \
         Apply the printed JSON by hand, or move leaders with the cluster's own tools"
    )]
    Unsupported {
        /// The broker asked.
        addr: String,
        /// The API's name.
        api: &'static str,
        /// Its key.
        key: i16,
    },
    /// A broker could not be reached or spoke something else.
    #[error("talking to the broker at {addr}: {what}")]
    Io {
        /// The broker.
        addr: String,
        /// What failed.
        what: String,
    },
    /// No broker accepted the reassignment as controller.
    #[error("no broker accepted the reassignment (every one answered NOT_CONTROLLER): {0:?}")]
    NoController(Vec<String>),
    /// Partitions were refused (every one the broker refused, with Kafka's error code and
    /// message; partition -1 stands for the whole request).
    #[error("{api} refused for {topic}: {}", refused.iter().map(|(p, code, m)| format!("partition {p}: error {code} {m}")).collect::<Vec<_>>().join("; "))]
    Refused {
        /// The request.
        api: &'static str,
        /// The topic.
        topic: String,
        /// (partition, error code, message).
        refused: Vec<(i32, i16, String)>,
    },
}

/// One plaintext connection to a broker, with the API versions it offers.
struct Connection {
    addr: String,
    stream: TcpStream,
    correlation: i32,
    offered: BTreeMap<i16, (i16, i16)>,
}

impl Connection {
    async fn open(addr: &str, timeout: Duration) -> Result<Connection, ApplyError> {
        let io = |what: String| ApplyError::Io { addr: addr.to_owned(), what };
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| io(format!("no connection within {timeout:?}")))?
            .map_err(|e| io(e.to_string()))?;
        let mut c = Connection { addr: addr.to_owned(), stream, correlation: 0, offered: BTreeMap::new() };
        let request = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("zonal-agent"))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let body = c.exchange::<_, ApiVersionsResponse>(ApiKey::ApiVersions, 3, &request, timeout).await?;
        // A broker that does not speak v3 answers UNSUPPORTED_VERSION in the v0 layout with the
        // versions it does speak (Kafka), so a v3 decode may fail; or in the asked layout
        // without them.
        let mut answer = match ApiVersionsResponse::decode(&mut body.clone(), 3) {
            Ok(a) => a,
            Err(_) => ApiVersionsResponse::decode(&mut body.clone(), 0)
                .map_err(|e| io(format!("decoding ApiVersions: {e}")))?,
        };
        if answer.error_code == UNSUPPORTED_VERSION && answer.api_keys.is_empty() {
            // Refused without a list (librdkafka's mock does this): v0 every broker speaks.
            answer = c.call(ApiKey::ApiVersions, 0, &ApiVersionsRequest::default(), timeout).await?;
        }
        // UNSUPPORTED_VERSION with a list is the v0 answer read above: the list is what counts.
        let listed = answer.error_code == UNSUPPORTED_VERSION && !answer.api_keys.is_empty();
        if answer.error_code != 0 && !listed {
            return Err(io(format!("ApiVersions answered error {}", answer.error_code)));
        }
        c.offered = answer.api_keys.iter().map(|k| (k.api_key, (k.min_version, k.max_version))).collect();
        Ok(c)
    }

    /// The highest version of `key` both sides speak.
    fn version<M: Message>(&self, key: ApiKey, api: &'static str) -> Result<i16, ApplyError> {
        let ours = M::VERSIONS;
        match self.offered.get(&(key as i16)) {
            Some((min, max)) if *max >= ours.min && *min <= ours.max => Ok((*max).min(ours.max)),
            _ => Err(ApplyError::Unsupported { addr: self.addr.clone(), api, key: key as i16 }),
        }
    }

    async fn call<Q, R>(&mut self, key: ApiKey, version: i16, body: &Q, timeout: Duration) -> Result<R, ApplyError>
    where
        Q: Encodable + HeaderVersion,
        R: Decodable + HeaderVersion,
    {
        let mut buf = self.exchange::<Q, R>(key, version, body, timeout).await?;
        R::decode(&mut buf, version).map_err(|e| self.io(format!("decoding the response: {e}")))
    }

    fn io(&self, what: String) -> ApplyError {
        ApplyError::Io { addr: self.addr.clone(), what }
    }

    /// Sends one request and returns its response's body (after the header). The read waits
    /// `timeout` plus a margin: requests carry `timeout` less a margin as their own, so the
    /// broker answers before the client gives up on a change the broker may have made.
    async fn exchange<Q, R>(
        &mut self,
        key: ApiKey,
        version: i16,
        body: &Q,
        timeout: Duration,
    ) -> Result<Bytes, ApplyError>
    where
        Q: Encodable + HeaderVersion,
        R: HeaderVersion,
    {
        self.correlation += 1;
        let header = RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation)
            .with_client_id(Some(StrBytes::from_static_str("zonal-agent-leaders")));
        let mut frame = BytesMut::new();
        frame.put_i32(0);
        header.encode(&mut frame, Q::header_version(version)).map_err(|e| self.io(format!("encoding: {e}")))?;
        body.encode(&mut frame, version).map_err(|e| self.io(format!("encoding: {e}")))?;
        let size = i32::try_from(frame.len() - 4).map_err(|_| self.io("request too large".into()))?;
        frame[0..4].copy_from_slice(&size.to_be_bytes());
        let stream = &mut self.stream;
        let exchange = async {
            stream.write_all(&frame).await?;
            let size = stream.read_i32().await?;
            let size = usize::try_from(size)
                .ok()
                .filter(|s| *s <= MAX_RESPONSE)
                .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("response size {size}")))?;
            let mut buf = vec![0; size];
            stream.read_exact(&mut buf).await?;
            Ok::<_, std::io::Error>(buf)
        };
        let wait = timeout + MARGIN;
        let buf = tokio::time::timeout(wait, exchange)
            .await
            .map_err(|_| self.io(format!("no answer within {wait:?}")))?
            .map_err(|e| self.io(e.to_string()))?;
        let mut buf = Bytes::from(buf);
        let header = ResponseHeader::decode(&mut buf, R::header_version(version))
            .map_err(|e| self.io(format!("decoding the response header: {e}")))?;
        if header.correlation_id != self.correlation {
            return Err(self.io(format!("answer to request {} instead of {}", header.correlation_id, self.correlation)));
        }
        Ok(buf)
    }
}

/// A connection to the first broker of `addrs` that answers, once it is known to offer both
/// APIs a plan needs (checked before anything changes: half a plan is worse than none), with
/// their versions.
async fn open(
    addrs: &[String],
    security_protocol: &str,
    timeout: Duration,
) -> Result<(Connection, i16, i16), ApplyError> {
    if !security_protocol.eq_ignore_ascii_case("plaintext") {
        return Err(ApplyError::Security(security_protocol.to_owned()));
    }
    let mut last = ApplyError::NoController(Vec::new());
    for addr in addrs {
        match Connection::open(addr, timeout).await {
            Ok(c) => {
                let alter = c.version::<AlterPartitionReassignmentsRequest>(
                    ApiKey::AlterPartitionReassignments,
                    "AlterPartitionReassignments",
                )?;
                let elect = c.version::<ElectLeadersRequest>(ApiKey::ElectLeaders, "ElectLeaders")?;
                return Ok((c, alter, elect));
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Checks that the cluster at `addrs` can apply a plan (plaintext, both APIs offered), before
/// anything is changed.
pub async fn check(addrs: &[String], security_protocol: &str, timeout: Duration) -> Result<(), ApplyError> {
    open(addrs, security_protocol, timeout).await.map(|_| ())
}

/// Step 1: the planned leader made the preferred replica of every partition where it is not
/// (AlterPartitionReassignments with the same replicas reordered, so no data moves). Returns
/// the partitions reordered.
pub async fn reorder(
    addrs: &[String],
    security_protocol: &str,
    topic: &str,
    plan: &Plan,
    timeout: Duration,
) -> Result<Vec<i32>, ApplyError> {
    let reordered: Vec<&super::Placed> = plan.partitions.iter().filter(|p| p.replicas != p.replicas_before).collect();
    if reordered.is_empty() {
        return Ok(Vec::new());
    }
    let partitions: Vec<ReassignablePartition> = reordered
        .iter()
        .map(|p| {
            ReassignablePartition::default()
                .with_partition_index(p.partition)
                .with_replicas(Some(p.replicas.iter().map(|b| BrokerId(*b)).collect()))
        })
        .collect();
    let request = AlterPartitionReassignmentsRequest::default()
        .with_timeout_ms(millis(timeout))
        .with_topics(vec![ReassignableTopic::default().with_name(name(topic)).with_partitions(partitions)]);
    open(addrs, security_protocol, timeout).await?;
    let answers = at_controller(addrs, timeout, |mut c| {
        let request = request.clone();
        async move {
            // Each broker's own versions: in a rolling upgrade they differ.
            let version = c.version::<AlterPartitionReassignmentsRequest>(
                ApiKey::AlterPartitionReassignments,
                "AlterPartitionReassignments",
            )?;
            let a: AlterPartitionReassignmentsResponse =
                c.call(ApiKey::AlterPartitionReassignments, version, &request, timeout).await?;
            let mut errors = vec![(-1, a.error_code, text(a.error_message.as_ref()))];
            errors.extend(
                a.responses
                    .iter()
                    .flat_map(|t| &t.partitions)
                    .map(|p| (p.partition_index, p.error_code, text(p.error_message.as_ref()))),
            );
            Ok(errors)
        }
    })
    .await?;
    refusals("AlterPartitionReassignments", topic, answers, &[])?;
    Ok(reordered.iter().map(|p| p.partition).collect())
}

/// Step 2, once the new order shows in metadata: a preferred-leader election for `partitions`.
/// A partition already led by its preferred replica is not an error.
pub async fn elect_preferred(
    addrs: &[String],
    security_protocol: &str,
    topic: &str,
    partitions: &[i32],
    timeout: Duration,
) -> Result<(), ApplyError> {
    if partitions.is_empty() {
        return Ok(());
    }
    open(addrs, security_protocol, timeout).await?;
    let request =
        ElectLeadersRequest::default().with_election_type(0).with_timeout_ms(millis(timeout)).with_topic_partitions(
            Some(vec![TopicPartitions::default().with_topic(name(topic)).with_partitions(partitions.to_vec())]),
        );
    let answers = at_controller(addrs, timeout, |mut c| {
        let request = request.clone();
        async move {
            let version = c.version::<ElectLeadersRequest>(ApiKey::ElectLeaders, "ElectLeaders")?;
            let a: ElectLeadersResponse = c.call(ApiKey::ElectLeaders, version, &request, timeout).await?;
            let mut errors = vec![(-1, a.error_code, String::new())];
            errors.extend(
                a.replica_election_results
                    .iter()
                    .flat_map(|t| &t.partition_result)
                    .map(|p| (p.partition_id, p.error_code, text(p.error_message.as_ref()))),
            );
            Ok(errors)
        }
    })
    .await?;
    refusals("ElectLeaders", topic, answers, &[ELECTION_NOT_NEEDED])
}

/// Sends a request with `call` to each broker of `addrs` in turn until one answers other than
/// NOT_CONTROLLER (for the request or every partition): clusters before KIP-590 take these
/// requests only at the controller. Returns the answer's (partition, error, message) triples.
async fn at_controller<F, Fut>(
    addrs: &[String],
    timeout: Duration,
    call: F,
) -> Result<Vec<(i32, i16, String)>, ApplyError>
where
    F: Fn(Connection) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<(i32, i16, String)>, ApplyError>>,
{
    let mut not_controller = Vec::new();
    let mut last = None;
    for addr in addrs {
        // A broker that cannot be reached, or fails the exchange, is one of several: the next
        // one is tried, and the last failure reported if none answers.
        let answers = match Connection::open(addr, timeout).await {
            Ok(c) => call(c).await,
            Err(e) => Err(e),
        };
        let answers = match answers {
            Ok(a) => a,
            Err(e) => {
                last = Some(e);
                continue;
            }
        };
        let whole = answers.first().map_or(0, |a| a.1);
        let parts = &answers[1.min(answers.len())..];
        if whole == NOT_CONTROLLER || (!parts.is_empty() && parts.iter().all(|p| p.1 == NOT_CONTROLLER)) {
            not_controller.push(addr.clone());
            continue;
        }
        return Ok(answers);
    }
    match last {
        Some(e) if not_controller.is_empty() => Err(e),
        _ => Err(ApplyError::NoController(not_controller)),
    }
}

/// Every refusal in `answers` but those with an error in `fine`, as one error.
fn refusals(api: &'static str, topic: &str, answers: Vec<(i32, i16, String)>, fine: &[i16]) -> Result<(), ApplyError> {
    let refused: Vec<(i32, i16, String)> =
        answers.into_iter().filter(|(_, code, _)| *code != 0 && !fine.contains(code)).collect();
    if refused.is_empty() { Ok(()) } else { Err(ApplyError::Refused { api, topic: topic.to_owned(), refused }) }
}

fn text(message: Option<&StrBytes>) -> String {
    message.map(|m| m.to_string()).unwrap_or_default()
}

/// The time a request gives the broker: the client's timeout less [`MARGIN`].
fn millis(d: Duration) -> i32 {
    i32::try_from(d.saturating_sub(MARGIN).as_millis()).unwrap_or(i32::MAX)
}

fn name(topic: &str) -> TopicName {
    TopicName(StrBytes::from_string(topic.to_owned()))
}
