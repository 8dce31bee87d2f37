//! Counting the requests the mock brokers receive, by API key: what a client costs the cluster
//! (the benchmarks compare kcat's Fetch requests with the transporters'); and errors one broker
//! answers, so that one topic's records can be refused while another's are not.

use std::collections::BTreeMap;

use rdkafka::producer::Producer as _;

use super::KafkaCluster;

impl KafkaCluster {
    /// Starts recording every request the brokers receive (for [`KafkaCluster::requests`]).
    pub fn track_requests(&self) {
        // SAFETY: the host client is alive, and owns the cluster for as long as `self` lives.
        let cluster = unsafe { rdkafka_sys::rd_kafka_handle_mock_cluster(self.host.client().native_ptr()) };
        if !cluster.is_null() {
            // SAFETY: a live cluster pointer; the call takes the cluster's lock.
            unsafe { rdkafka_sys::rd_kafka_mock_start_request_tracking(cluster) };
        }
    }

    /// The requests received since [`KafkaCluster::track_requests`] or the last call, counted
    /// by API key (1 is Fetch, 3 Metadata, 8 OffsetCommit; the Kafka protocol's numbering);
    /// the record is cleared.
    pub fn requests(&self) -> BTreeMap<i16, usize> {
        let mut by_key = BTreeMap::new();
        // SAFETY: as in `track_requests`.
        let cluster = unsafe { rdkafka_sys::rd_kafka_handle_mock_cluster(self.host.client().native_ptr()) };
        if cluster.is_null() {
            return by_key;
        }
        let mut n = 0usize;
        // SAFETY: the call returns a new array of `n` requests, which is ours to read and
        // destroy; the cluster keeps its own copies until cleared.
        unsafe {
            let reqs = rdkafka_sys::rd_kafka_mock_get_requests(cluster, &mut n);
            if !reqs.is_null() {
                for i in 0..n {
                    *by_key.entry(rdkafka_sys::rd_kafka_mock_request_api_key(*reqs.add(i))).or_insert(0) += 1;
                }
                rdkafka_sys::rd_kafka_mock_request_destroy_array(reqs, n);
            }
            rdkafka_sys::rd_kafka_mock_clear_requests(cluster);
        }
        by_key
    }

    /// Makes broker `broker` answer its next `count` Produce requests with `error` (an ACL
    /// missing for the topics it leads, say); other brokers answer as usual, so moving a
    /// partition's leader away from it ends the refusal for that partition.
    pub fn refuse_produce_at(
        &self,
        broker: i32,
        error: rdkafka::types::RDKafkaRespErr,
        count: usize,
    ) -> crate::Result<()> {
        // SAFETY: as in `track_requests`.
        let cluster = unsafe { rdkafka_sys::rd_kafka_handle_mock_cluster(self.host.client().native_ptr()) };
        if cluster.is_null() {
            return Err(crate::TestkitError::Start { server: "kafka", reason: "no mock cluster".into() });
        }
        let produce = rdkafka::types::RDKafkaApiKey::Produce as i16;
        for _ in 0..count {
            // SAFETY: a live cluster pointer; one (error, round-trip time) pair follows the
            // count of 1, as the variadic function reads them (`rd_kafka_resp_err_t`, `int`).
            let err = unsafe {
                rdkafka_sys::rd_kafka_mock_broker_push_request_error_rtts(
                    cluster,
                    broker,
                    produce,
                    1,
                    error as i32,
                    0i32,
                )
            };
            if err != rdkafka_sys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                return Err(crate::TestkitError::Start {
                    server: "kafka",
                    reason: format!("refusing at broker {broker}: {err:?}"),
                });
            }
        }
        Ok(())
    }
}
