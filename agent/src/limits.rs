//! Record sizes prevented from being refused: every record (line and key) fits the producer's
//! `message.max.bytes` and the topic's `max.message.bytes`, checked once at start against what
//! the cluster says, so Kafka never refuses a record for its size (such a refusal could only be
//! retried forever).
//!
//! ```text
//!  streams' topics ──DescribeConfigs (admin client)──> max.message.bytes per topic
//!     check: max-message-bytes + RECORD_OVERHEAD <= topic limit   (else: refuse to start, naming both)
//!     producer: batch.size <= topic limit - RECORD_OVERHEAD        (batches fit too)
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};

use az_core::kafka_options::ClientOptions;

use crate::config::{AgentConfig, StreamConfig};

/// Room for a record's and a batch's framing (record batch header 61 bytes, record header up to
/// about 30) and its headers (the pod's, at most about 600 bytes with Kubernetes' longest names;
/// `zonal.source` with a host name of up to 253; `zonal.offset`; `log.iostream`): generous.
pub const RECORD_OVERHEAD: usize = 4096;

/// librdkafka's default `batch.size`.
const DEFAULT_BATCH: usize = 1_000_000;

/// The topics' `max.message.bytes`, as the cluster states them; a topic whose limit could not be
/// read (no DescribeConfigs permission, an old broker) is absent and warned about.
pub async fn topic_limits(config: &AgentConfig, options: &ClientOptions) -> BTreeMap<String, usize> {
    let mut topics: Vec<&str> = config.streams.iter().map(|s| s.topic.as_str()).collect();
    topics.sort_unstable();
    topics.dedup();
    let mut cc = rdkafka::ClientConfig::new();
    cc.set("bootstrap.servers", &config.kafka.bootstrap_servers);
    options.apply(&mut cc);
    let created = cc.create_with_context::<_, AdminClient<az_core::msk_iam::IamContext>>(az_core::msk_iam::IamContext);
    let admin = match created {
        Ok(a) => {
            az_core::msk_iam::prime(a.inner(), options);
            a
        }
        Err(e) => {
            tracing::warn!(error = %options.redactor().redact(&e.to_string()), "cannot ask the topics' max.message.bytes");
            return BTreeMap::new();
        }
    };
    // Any broker answers for a topic's configuration; aim at one the cluster lists (librdkafka
    // would otherwise wait for the controller, which some clusters and the test cluster do not
    // name usefully).
    let timeout = Duration::from_millis(config.kafka.request_timeout_ms);
    let broker = tokio::task::block_in_place(|| {
        admin.inner().fetch_metadata(None, timeout).ok().and_then(|md| md.brokers().first().map(|b| b.id()))
    });
    let specs: Vec<ResourceSpecifier<'_>> = topics.iter().map(|t| ResourceSpecifier::Topic(t)).collect();
    let opts = AdminOptions::new().request_timeout(Some(timeout)).broker_id(broker);
    let results = match admin.describe_configs(&specs, &opts).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the topics' max.message.bytes; record sizes are checked against the producer only");
            return BTreeMap::new();
        }
    };
    let mut out = BTreeMap::new();
    for (topic, result) in topics.iter().zip(results) {
        let limit = result
            .as_ref()
            .ok()
            .and_then(|r| r.get("max.message.bytes"))
            .and_then(|e| e.value.as_deref())
            .and_then(|v| v.parse::<usize>().ok());
        match limit {
            Some(l) => {
                out.insert((*topic).to_owned(), l);
            }
            None => {
                tracing::warn!(topic, result = ?result.err(), "the topic's max.message.bytes is unknown; record sizes are checked against the producer only")
            }
        }
    }
    out
}

/// Refuses a stream whose largest record (a line of `max-message-bytes`, its key included) the
/// topic would refuse.
pub fn check(index: usize, stream: &StreamConfig, topic_limit: Option<usize>) -> anyhow::Result<()> {
    if let Some(limit) = topic_limit {
        let largest = stream.max_message_bytes + RECORD_OVERHEAD;
        anyhow::ensure!(
            largest <= limit,
            "streams[{index}].max-message-bytes: {} (plus {RECORD_OVERHEAD} bytes of framing) exceeds topic {:?}'s max.message.bytes {limit}; lower it to at most {}",
            stream.max_message_bytes,
            stream.topic,
            limit.saturating_sub(RECORD_OVERHEAD)
        );
    }
    Ok(())
}

/// The producer's size settings: `message.max.bytes` holds the largest record, and `batch.size`
/// keeps batches within the topic's limit when it is known.
pub fn producer_sizes(stream: &StreamConfig, topic_limit: Option<usize>) -> Vec<(&'static str, String)> {
    let record = stream.max_message_bytes + RECORD_OVERHEAD;
    let mut out = vec![("message.max.bytes", record.max(DEFAULT_BATCH).to_string())];
    if let Some(limit) = topic_limit {
        out.push(("batch.size", limit.saturating_sub(RECORD_OVERHEAD).clamp(1, DEFAULT_BATCH).to_string()));
    }
    out
}

/// The topics' limits as a lookup by stream.
pub fn limit_of(limits: &BTreeMap<String, usize>, stream: &StreamConfig) -> Option<usize> {
    limits.get(&stream.topic).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(max: usize) -> StreamConfig {
        use figment::providers::Format as _;
        let toml = format!("name = \"s\"\npaths = [\"/x\"]\ntopic = \"t\"\nmax-message-bytes = {max}\n");
        figment::Figment::from(figment::providers::Toml::string(&toml)).extract().expect("a stream config")
    }

    #[test]
    fn a_stream_whose_largest_record_the_topic_refuses_does_not_start() {
        // Kafka's default topic limit holds the default max-message-bytes.
        assert!(check(0, &stream(1_000_000), Some(1_048_588)).is_ok());
        assert!(check(0, &stream(1_000_000), None).is_ok());
        let err = check(2, &stream(600_000), Some(500_000)).expect_err("refused").to_string();
        assert!(err.contains("streams[2].max-message-bytes") && err.contains("495904"), "{err}");
    }

    #[test]
    fn the_producer_keeps_records_and_batches_within_the_limits() {
        let sizes = producer_sizes(&stream(2_000_000), None);
        assert_eq!(sizes, vec![("message.max.bytes", "2004096".to_owned())]);
        let sizes = producer_sizes(&stream(100_000), Some(500_000));
        assert_eq!(sizes, vec![("message.max.bytes", "1000000".to_owned()), ("batch.size", "495904".to_owned())]);
    }
}
