//! What one run of the demo measured: the lines S3 holds (read back from the bucket), the bytes
//! the agents and transporters exchanged with Kafka by zone relation (their own `/metrics`,
//! from librdkafka statistics), and the replication bytes that the topic's layout implies.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use anyhow::Context;
use testkit::World;

use super::Phase;
use crate::fleet::{BUCKET, Node};

/// The zone relations the clients' byte counters are labelled with.
const RELATIONS: [&str; 3] = ["same-zone", "cross-zone", "unknown"];
const AGENT_BYTES: &str = "zonal_agent_kafka_bytes";
const TRANSPORTER_BYTES: &str = "zonal_transporter_kafka_bytes";
const AGENT_PROTOCOL_BYTES: &str = "zonal_agent_kafka_protocol_bytes";
const TRANSPORTER_PROTOCOL_BYTES: &str = "zonal_transporter_kafka_protocol_bytes";

/// The lines of one run's objects in S3.
#[derive(Default)]
pub(super) struct Contents {
    /// Every line, duplicates included.
    pub total: u64,
    /// Lines counted once however often they occur.
    pub distinct: u64,
    /// Lines per partition, from the objects' keys (-1 for a key that names none).
    pub per_partition: BTreeMap<i32, u64>,
}

/// Reads every object of a phase back from the S3 server's storage and counts lines: the
/// values of `lines` objects (zstd), of JSON lines, and of Parquet objects as pyarrow (an
/// independent reader) reads them.
pub(super) fn read_back(s3: &testkit::S3Server, prefix: &str) -> anyhow::Result<Contents> {
    let mut seen: HashSet<Vec<u8>> = HashSet::new();
    let mut c = Contents::default();
    let mut count = |partition: i32, line: &[u8]| {
        c.total += 1;
        *c.per_partition.entry(partition).or_default() += 1;
        if seen.insert(line.to_vec()) {
            c.distinct += 1;
        }
    };
    let mut parquet = Vec::new();
    for key in s3.list_keys(BUCKET)?.iter().filter(|k| k.starts_with(&format!("{prefix}/"))) {
        let (partition, path) = (partition_of(key), s3.root().join(BUCKET).join(key));
        if key.ends_with(".parquet") {
            parquet.push((partition, path));
        } else if key.ends_with(".jsonl.zst") {
            let text = zstd::stream::decode_all(std::fs::File::open(&path)?)?;
            for l in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                let v: serde_json::Value = serde_json::from_slice(l).with_context(|| format!("a record of {key}"))?;
                count(partition, v["value"].as_str().unwrap_or_default().as_bytes());
            }
        } else if key.ends_with(".log.zst") {
            let text = zstd::stream::decode_all(std::fs::File::open(&path)?)?;
            for l in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                count(partition, l);
            }
        }
    }
    let paths: Vec<_> = parquet.iter().map(|(_, p)| p.clone()).collect();
    for ((partition, _), object) in parquet.iter().zip(testkit::pyarrow::read(&paths)?) {
        for row in &object.rows {
            count(*partition, &row.value_bytes().unwrap_or_default());
        }
    }
    Ok(c)
}

/// The partition an object's key names, -1 when it names none. Keys end in
/// `<topic>-<partition>-<first offset>.log.zst`, so the partition is the second field from the
/// right of the file name's stem (topic names may contain dashes themselves).
fn partition_of(key: &str) -> i32 {
    let stem = key.rsplit('/').next().and_then(|f| f.split('.').next()).unwrap_or_default();
    stem.rsplit('-').nth(1).and_then(|p| p.parse().ok()).unwrap_or(-1)
}

/// A run whose workload has been written and shipped, with its fleet still up.
pub(super) struct Finished<'a> {
    pub world: &'a World,
    pub topic: &'a str,
    pub partitions: i32,
    pub agents: &'a [Node],
    pub transporters: &'a [Node],
}

impl Finished<'_> {
    /// Everything the report shows about this run.
    pub(super) fn measure(
        &self,
        lines_generated: u64,
        cross_zone_partitions: u64,
        contents: &Contents,
    ) -> anyhow::Result<Phase> {
        self.wait_statistics()?;
        let mut p = Phase { lines_generated, cross_zone_partitions, ..Default::default() };
        for a in self.agents {
            p.producer_cross_zone_bytes += a.kafka_bytes(AGENT_BYTES, "cross-zone");
            p.producer_protocol_cross_zone_bytes += a.kafka_bytes(AGENT_PROTOCOL_BYTES, "cross-zone");
            p.producer_bytes += total_bytes(a, AGENT_BYTES);
        }
        for t in self.transporters {
            p.consumer_cross_zone_bytes += t.kafka_bytes(TRANSPORTER_BYTES, "cross-zone");
            p.consumer_protocol_cross_zone_bytes += t.kafka_bytes(TRANSPORTER_PROTOCOL_BYTES, "cross-zone");
            p.consumer_bytes += total_bytes(t, TRANSPORTER_BYTES);
        }
        p.replication_cross_zone_bytes = (p.producer_bytes as f64 * self.replication_factor(contents)?) as u64;
        p.lines_in_s3 = contents.distinct;
        p.lost = lines_generated.saturating_sub(contents.distinct);
        p.duplicated = contents.total - contents.distinct;
        p.partition_skew = self.partition_skew(contents);
        Ok(p)
    }

    /// The clients' byte counters come from librdkafka statistics, emitted periodically: waits
    /// until every client has reported once more after the last line landed, so that the
    /// counters include it.
    fn wait_statistics(&self) -> anyhow::Result<()> {
        let clients: Vec<(&Node, &str)> = self
            .agents
            .iter()
            .map(|a| (a, AGENT_BYTES))
            .chain(self.transporters.iter().map(|t| (t, TRANSPORTER_BYTES)))
            .collect();
        let before: Vec<u64> = clients.iter().map(|(c, m)| total_bytes(c, m)).collect();
        testkit::wait_until("statistics after the last delivery", Duration::from_secs(15), || {
            clients.iter().zip(&before).all(|((c, m), b)| total_bytes(c, m) > *b).then_some(())
        })?;
        Ok(())
    }

    /// Cross-zone replication bytes per byte produced. Each partition's bytes travel to every
    /// follower outside the leader's zone, so the factor is the number of such followers,
    /// averaged over the partitions weighted by the lines each received.
    fn replication_factor(&self, contents: &Contents) -> anyhow::Result<f64> {
        let kafka = &self.world.kafka;
        let leaders = kafka.leaders(self.topic)?;
        let replicas = kafka.replicas(self.topic)?;
        let total_records: u64 = contents.per_partition.values().sum();
        let mut factor = 0.0;
        for (part, n) in &contents.per_partition {
            let leader = leaders.get(part).copied().unwrap_or(-1);
            let lz = kafka.rack_of(leader);
            let cross =
                replicas.get(part).map_or(0, |r| r.iter().filter(|&&b| b != leader && kafka.rack_of(b) != lz).count());
            factor += *n as f64 / total_records.max(1) as f64 * cross as f64;
        }
        Ok(factor)
    }

    /// The busiest partition's lines over the mean of all partitions (0 when none has any).
    fn partition_skew(&self, contents: &Contents) -> f64 {
        let counts: Vec<f64> =
            (0..self.partitions).map(|i| *contents.per_partition.get(&i).unwrap_or(&0) as f64).collect();
        let mean = counts.iter().sum::<f64>() / counts.len().max(1) as f64;
        if mean > 0.0 { counts.iter().cloned().fold(0.0, f64::max) / mean } else { 0.0 }
    }
}

/// Bytes a client exchanged with Kafka in every zone relation, both directions.
fn total_bytes(client: &Node, metric: &str) -> u64 {
    RELATIONS.iter().map(|z| client.kafka_bytes(metric, z)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_partition_is_read_from_the_key() {
        assert_eq!(partition_of("baseline/demo-baseline/2026/demo-baseline-7-1200.log.zst"), 7);
        assert_eq!(partition_of("zone-aware/x/demo-zone-aware-11-0.log.zst"), 11);
        assert_eq!(partition_of("baseline/garbage.zst"), -1);
    }
}
