//! Counting the requests the mock brokers receive, by API key: what a client costs the cluster
//! (the benchmarks compare kcat's Fetch requests with the transporters').

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
}
