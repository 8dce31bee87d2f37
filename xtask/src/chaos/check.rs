//! The outcome of a chaos run: every object read back through the S3 API and decompressed,
//! compared with the lines the writers wrote and with Kafka's offsets.
//!
//! ```text
//!  ListObjectsV2 + GetObject ──zstd -d──> JSON records {partition, offset, value}
//!                            ──pyarrow (an independent reader, all new objects at once)──> Parquet rows
//!       └─ cached by key and ETag (objects are read again while the pipeline drains)
//!  Records + lines written per zone + Kafka watermarks ──tally (pure)──> Outcome
//!     lost: a written line in no record            duplicated_in_s3: an offset in two records
//!     missing_offsets: an offset of Kafka in none  kafka_duplicates: a line at two offsets
//! ```

use std::collections::{BTreeMap, HashMap};

use anyhow::Context;

use super::writers;

/// One record read back from an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Kafka partition.
    pub partition: i32,
    /// Kafka offset.
    pub offset: i64,
    /// `(zone, seq)` of the line, `None` for a value that is not a generated line.
    pub line: Option<(usize, u64)>,
}

/// What a run ended with.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Outcome {
    /// Lines the writers wrote.
    pub lines_generated: u64,
    /// Distinct generated lines found in S3.
    pub lines_in_s3: u64,
    /// Lines written and not in S3.
    pub lost: u64,
    /// Records in S3 beyond the first for their Kafka offset.
    pub duplicated_in_s3: u64,
    /// Offsets Kafka has (between its watermarks) that no object holds.
    pub missing_offsets: u64,
    /// Lines Kafka holds at more than one offset (the agent's at-least-once resends).
    pub kafka_duplicates: u64,
    /// Records whose value is not a generated line.
    pub foreign_records: u64,
    /// A few lost lines, `(zone, seq)`, to start an investigation from.
    pub lost_examples: Vec<(usize, u64)>,
}

/// Compares what S3 holds with what was written and what Kafka has. `written[z]` is the
/// number of lines zone `z` wrote; `watermarks` maps a partition to its `(low, high)`.
pub fn tally(records: &[Record], written: &[u64], watermarks: &BTreeMap<i32, (i64, i64)>) -> Outcome {
    let mut out = Outcome { lines_generated: written.iter().sum(), ..Outcome::default() };
    let mut per_offset: HashMap<(i32, i64), u32> = HashMap::with_capacity(records.len());
    let mut per_line: HashMap<(usize, u64), u32> = HashMap::with_capacity(records.len());
    for r in records {
        let n = per_offset.entry((r.partition, r.offset)).or_default();
        *n += 1;
        if *n > 1 {
            out.duplicated_in_s3 += 1;
            continue;
        }
        match r.line {
            Some(l) => *per_line.entry(l).or_default() += 1,
            None => out.foreign_records += 1,
        }
    }
    for (&p, &(low, high)) in watermarks {
        out.missing_offsets += (low..high).filter(|o| !per_offset.contains_key(&(p, *o))).count() as u64;
    }
    out.kafka_duplicates = per_line.values().map(|&n| u64::from(n - 1)).sum();
    for (zone, &n) in written.iter().enumerate() {
        for seq in 0..n {
            if per_line.contains_key(&(zone, seq)) {
                out.lines_in_s3 += 1;
            } else {
                out.lost += 1;
                if out.lost_examples.len() < 10 {
                    out.lost_examples.push((zone, seq));
                }
            }
        }
    }
    out
}

/// Reads a bucket's objects under a prefix through the S3 API, keeping what it decoded.
pub struct Reader {
    client: aws_sdk_s3::Client,
    rt: tokio::runtime::Runtime,
    bucket: String,
    prefix: String,
    /// key -> (version: the ETag, or size and time, records).
    cache: HashMap<String, (String, Vec<Record>)>,
    /// Where Parquet objects are put for pyarrow to read.
    scratch: tempfile::TempDir,
}

impl Reader {
    /// A client of the testkit S3 server.
    pub fn new(s3: &testkit::S3Server, bucket: &str, prefix: &str) -> anyhow::Result<Reader> {
        let creds = aws_sdk_s3::config::Credentials::new(s3.access_key(), s3.secret_key(), None, None, "chaos");
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .endpoint_url(s3.endpoint())
            .region(aws_sdk_s3::config::Region::new(s3.region().to_owned()))
            .credentials_provider(creds)
            .force_path_style(true)
            .build();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("a tokio runtime")?;
        Ok(Reader {
            client: aws_sdk_s3::Client::from_conf(config),
            rt,
            bucket: bucket.to_owned(),
            prefix: format!("{prefix}/"),
            cache: HashMap::new(),
            scratch: tempfile::tempdir().context("a folder for Parquet objects")?,
        })
    }

    /// Every record of every object now in the bucket under the prefix.
    pub fn records(&mut self) -> anyhow::Result<Vec<Record>> {
        let listed = self.rt.block_on(self.list())?;
        self.cache.retain(|k, _| listed.iter().any(|(key, _)| key == k));
        let mut parquet = Vec::new();
        for (key, etag) in listed {
            if self.cache.get(&key).is_some_and(|(e, _)| *e == etag) {
                continue;
            }
            let body = self.rt.block_on(self.get(&key))?;
            if key.ends_with(".parquet") {
                let path = self.scratch.path().join(format!("{}.parquet", parquet.len()));
                std::fs::write(&path, &body).with_context(|| format!("writing {}", path.display()))?;
                parquet.push((key, etag, path));
                continue;
            }
            let records = decode(&key, &body)?;
            self.cache.insert(key, (etag, records));
        }
        let paths: Vec<_> = parquet.iter().map(|(_, _, p)| p.clone()).collect();
        let read = testkit::pyarrow::read(&paths).context("reading the Parquet objects with pyarrow")?;
        for ((key, etag, _), object) in parquet.into_iter().zip(read) {
            let records = object
                .rows
                .iter()
                .map(|r| Record {
                    partition: i32::try_from(r.partition).unwrap_or(-1),
                    offset: r.offset,
                    line: r.value_bytes().and_then(|v| String::from_utf8(v).ok()).and_then(|l| writers::parse(&l)),
                })
                .collect();
            self.cache.insert(key, (etag, records));
        }
        Ok(self.cache.values().flat_map(|(_, r)| r.iter().cloned()).collect())
    }

    async fn list(&self) -> anyhow::Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        let mut pages = self.client.list_objects_v2().bucket(&self.bucket).prefix(&self.prefix).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.with_context(|| format!("listing s3://{}/{}", self.bucket, self.prefix))?;
            for o in page.contents() {
                // The ETag when the server lists it (s3s-fs does not); size and time otherwise.
                let version = o.e_tag().map(str::to_owned).unwrap_or_else(|| {
                    format!(
                        "{}@{}",
                        o.size().unwrap_or(-1),
                        o.last_modified().map(|t| t.to_string()).unwrap_or_default()
                    )
                });
                // The workers' store probes come and go under the prefix; they hold no records.
                let probe = format!("/{}/", zonal_transporter::upload::probe::PROBE_DIR);
                if let Some(k) = o.key().filter(|k| !k.contains(&probe)) {
                    out.push((k.to_owned(), version));
                }
            }
        }
        Ok(out)
    }

    async fn get(&self, key: &str) -> anyhow::Result<Vec<u8>> {
        let resp = self.client.get_object().bucket(&self.bucket).key(key).send().await;
        let resp = resp.with_context(|| format!("reading s3://{}/{key}", self.bucket))?;
        let body = resp.body.collect().await.with_context(|| format!("reading the body of {key}"))?;
        Ok(body.into_bytes().to_vec())
    }
}

/// The records of one `.jsonl.zst` object.
fn decode(key: &str, body: &[u8]) -> anyhow::Result<Vec<Record>> {
    let text = zstd::stream::decode_all(body).with_context(|| format!("decompressing {key}"))?;
    let mut out = Vec::new();
    for (i, l) in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()).enumerate() {
        let v: serde_json::Value =
            serde_json::from_slice(l).with_context(|| format!("record {i} of {key} is not JSON"))?;
        let partition = v["partition"].as_i64().and_then(|p| i32::try_from(p).ok());
        let offset = v["offset"].as_i64();
        let (Some(partition), Some(offset)) = (partition, offset) else {
            anyhow::bail!("record {i} of {key} has no partition or offset: {v}");
        };
        out.push(Record { partition, offset, line: v["value"].as_str().and_then(writers::parse) });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(partition: i32, offset: i64, zone: usize, seq: u64) -> Record {
        Record { partition, offset, line: Some((zone, seq)) }
    }

    #[test]
    fn a_complete_run_counts_nothing_wrong() {
        let records = vec![rec(0, 0, 0, 0), rec(0, 1, 0, 1), rec(1, 0, 1, 0)];
        let marks = BTreeMap::from([(0, (0, 2)), (1, (0, 1))]);
        let o = tally(&records, &[2, 1], &marks);
        assert_eq!((o.lines_generated, o.lines_in_s3, o.lost, o.duplicated_in_s3, o.missing_offsets), (3, 3, 0, 0, 0));
        assert_eq!(o.kafka_duplicates, 0);
    }

    #[test]
    fn loss_s3_duplicates_gaps_and_kafka_duplicates_are_told_apart() {
        // Line (0,1) lost; offset 0/0 written twice to S3; offset 0/3 never read; line (1,0)
        // produced twice (offsets 1/0 and 1/1).
        let records = vec![
            rec(0, 0, 0, 0),
            rec(0, 0, 0, 0),
            rec(0, 2, 0, 2),
            rec(1, 0, 1, 0),
            rec(1, 1, 1, 0),
            Record { partition: 1, offset: 2, line: None },
        ];
        let marks = BTreeMap::from([(0, (0, 4)), (1, (0, 3))]);
        let o = tally(&records, &[3, 1], &marks);
        assert_eq!(o.lost, 1);
        assert_eq!(o.lost_examples, vec![(0, 1)]);
        assert_eq!(o.duplicated_in_s3, 1);
        assert_eq!(o.missing_offsets, 2, "0/1 and 0/3");
        assert_eq!(o.kafka_duplicates, 1);
        assert_eq!(o.foreign_records, 1);
        assert_eq!(o.lines_in_s3, 3);
    }

    #[test]
    fn offsets_below_the_low_watermark_are_not_asked_for() {
        let o = tally(&[rec(0, 5, 0, 0)], &[1], &BTreeMap::from([(0, (5, 6))]));
        assert_eq!(o.missing_offsets, 0);
    }
}
