//! The fleet commands that read or change etcd without running a worker: `status` (master,
//! workers by zone, assignment, owners, offsets), `offsets` (show or set next offsets) and
//! `audit` (a topic's objects in S3 against its committed offsets and Kafka's log).

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Context;
use az_core::TopicPartition;

use crate::config::TransporterConfig;
use crate::continuity::ObjectSpan;
use crate::{audit, coord, http, master, shares};

/// An operator's `--set`: the next offset to read of a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetChange {
    /// The partition.
    pub tp: TopicPartition,
    /// Its next offset.
    pub next: i64,
}

/// Parses `TOPIC/PARTITION=OFFSET`.
pub fn parse_set(text: &str) -> anyhow::Result<OffsetChange> {
    let (tp, offset) =
        text.rsplit_once('=').with_context(|| format!("--set {text:?}: expected TOPIC/PARTITION=OFFSET"))?;
    let tp = TopicPartition::parse(tp).with_context(|| format!("--set {text:?}: {tp:?} is not TOPIC/PARTITION"))?;
    let offset: i64 = offset
        .trim()
        .parse()
        .ok()
        .filter(|o| *o >= 0)
        .with_context(|| format!("--set {text:?}: {offset:?} is not an offset (a number >= 0)"))?;
    Ok(OffsetChange { tp, next: offset })
}

/// `offsets`: applies the operator's changes (each refused while a worker owns the partition,
/// unless `while_owned`), then prints every partition's next offset and owner.
pub async fn offsets(
    cfg: TransporterConfig,
    changes: Vec<OffsetChange>,
    while_owned: bool,
    json: bool,
) -> anyhow::Result<()> {
    let client = coord::connect(&cfg.etcd).await?;
    let keys = coord::Keys::new(&cfg.etcd.cluster);
    let mut refused = Vec::new();
    for OffsetChange { tp, next } in &changes {
        match coord::set_offset(&client, &keys, tp, *next, while_owned).await? {
            coord::SetOffset::Done => eprintln!("{tp}: next offset set to {next}"),
            coord::SetOffset::Owned { by } => refused.push(format!(
                "{tp} is owned by worker {by:?}, whose next commit would overwrite it; stop that worker or pass --while-owned for a held partition"
            )),
        }
    }
    let offsets = coord::offsets(&client, &keys).await?;
    let owners = coord::owners(&client, &keys).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "offsets": offsets, "owners": owners }))?);
    } else {
        for (tp, next) in &offsets {
            // Padded as text: a partition's Display does not pad.
            let tp_text = tp.to_string();
            println!("{tp_text:<28} next offset {next:<12} owner {}", owners.get(tp).map_or("-", String::as_str));
        }
    }
    anyhow::ensure!(refused.is_empty(), "{}", refused.join("; "));
    Ok(())
}

/// `status`: the fleet as etcd holds it (master, workers by zone, assignment, owners, offsets),
/// as text or JSON.
pub async fn status(cfg: TransporterConfig, json: bool) -> anyhow::Result<()> {
    let client = coord::connect(&cfg.etcd).await?;
    let keys = coord::Keys::new(&cfg.etcd.cluster);
    let mut election = client.election_client();
    let master = match election.leader(keys.election()).await {
        Ok(r) => r.kv().map(|kv| String::from_utf8_lossy(kv.value()).into_owned()),
        Err(_) => None,
    };
    let coord::Registrations { workers, invalid: bad } = coord::workers(&client, &keys).await?;
    let doc = shares::full(&client, &keys).await?;
    let owners = coord::owners(&client, &keys).await?;
    let mut by_zone: BTreeMap<String, Vec<&coord::WorkerInfo>> = BTreeMap::new();
    for w in &workers {
        by_zone.entry(master::zone_label(w).unwrap_or_else(|| "unknown".into())).or_default().push(w);
    }
    if json {
        let v = serde_json::json!({
            "master": master, "workers": workers, "invalid_workers": bad,
            "assignment": doc.as_ref().map(http::view), "owners": owners,
            "offsets": coord::offsets(&client, &keys).await?,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("cluster: {}", cfg.etcd.cluster);
    println!("master: {}", master.as_deref().unwrap_or("(none)"));
    // Grouped once: at 100,000 partitions a scan per worker would be 10^8 comparisons.
    let mut held: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (tp, w) in doc.iter().flat_map(|d| d.owners.iter()) {
        held.entry(w.as_str()).or_default().push(tp.to_string());
    }
    for (zone, ws) in &by_zone {
        println!("zone {zone}:");
        for w in ws {
            let parts = held.get(w.id.as_str()).map_or(&[][..], Vec::as_slice);
            println!("  {:<24} host {:<20} capacity {:<4} partitions {:?}", w.id, w.host, w.capacity, parts);
        }
    }
    for b in bad {
        println!("invalid worker registration skipped: {b}");
    }
    match &doc {
        Some(d) => println!(
            "assignment: generation {} by {}, {} partitions, {} cross-zone, {} waiting for a returning worker",
            d.generation,
            d.master,
            d.owners.len(),
            d.cross_zone,
            d.waiting
        ),
        None => println!("assignment: none yet"),
    }
    let offsets = coord::offsets(&client, &keys).await?;
    println!("owners (fenced) and committed offsets:");
    let all: BTreeSet<&TopicPartition> = owners.keys().chain(offsets.keys()).collect();
    for tp in all {
        let owner = owners.get(tp).map_or("-", String::as_str);
        let off = offsets.get(tp).map_or("-", String::as_str);
        let tp_text = tp.to_string();
        println!("  {tp_text:<28} owner {owner:<24} next offset {off}");
    }
    Ok(())
}

/// `audit`: reads every object of `topic` under `s3.prefix` (its metadata, by HEAD), the
/// committed offsets (etcd) and the log's bounds (Kafka), and reports per partition the chain
/// of objects, holes, overlaps, explained gaps and objects past the committed offset. Read-only.
/// Fails when a partition has a hole, an overlap or an object that does not prove its offsets.
pub async fn audit(cfg: TransporterConfig, topic: String, json: bool) -> anyhow::Result<()> {
    let (mut by_partition, foreign) = objects_of(&cfg, &topic).await?;
    let client = coord::connect(&cfg.etcd).await?;
    let keys = coord::Keys::new(&cfg.etcd.cluster);
    let committed: BTreeMap<i32, i64> = coord::offsets(&client, &keys)
        .await?
        .into_iter()
        .filter(|(tp, _)| tp.topic == topic)
        .filter_map(|(tp, v)| Some((tp.partition, v.trim().parse().ok()?)))
        .collect();
    let kafka = log_bounds(&cfg, &topic).await;
    if let Err(e) = &kafka {
        eprintln!("Kafka's log bounds could not be read; the audit goes on without them: {e:#}");
    }
    let kafka = kafka.unwrap_or_default();
    let partitions: BTreeSet<i32> = by_partition.keys().chain(committed.keys()).chain(kafka.keys()).copied().collect();
    let reports: BTreeMap<String, audit::PartitionReport> = partitions
        .into_iter()
        .map(|p| {
            let objects = by_partition.remove(&p).unwrap_or_default();
            (format!("{topic}/{p}"), audit::partition(objects, committed.get(&p).copied(), kafka.get(&p).copied()))
        })
        .collect();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({ "partitions": reports, "objects_without_zonal_metadata": foreign })
            )?
        );
    } else {
        print_audit(&reports, foreign);
    }
    let bad: Vec<&String> = reports.iter().filter(|(_, r)| !r.clean()).map(|(tp, _)| tp).collect();
    anyhow::ensure!(
        bad.is_empty(),
        "audit: {} partitions with holes, overlaps or unproven objects: {bad:?}",
        bad.len()
    );
    Ok(())
}

/// The objects of `topic` under `s3.prefix`, by partition (their metadata, by HEAD), and how
/// many objects carry no zonal topic and partition.
async fn objects_of(
    cfg: &TransporterConfig,
    topic: &str,
) -> anyhow::Result<(BTreeMap<i32, Vec<audit::Object>>, usize)> {
    use futures::StreamExt;
    let s3 = crate::upload::client(&cfg.s3).await;
    let bucket = &cfg.s3.bucket;
    let mut keys = Vec::new();
    let mut pages = s3.list_objects_v2().bucket(bucket).prefix(&cfg.s3.prefix).into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page.with_context(|| format!("listing s3://{bucket}/{}", cfg.s3.prefix))?;
        // The store probes and the dead-letter objects (whose records the objects count) are
        // not part of a partition's chain.
        let probe = format!("/{}/", crate::upload::probe::PROBE_DIR);
        let folder = &cfg.parquet.dead_letter_folder;
        let dead = |k: &str| k.starts_with(&format!("{folder}/")) || k.contains(&format!("/{folder}/"));
        keys.extend(
            page.contents()
                .iter()
                .filter_map(|o| o.key())
                .filter(|k| !k.contains(&probe) && !dead(k))
                .map(str::to_owned),
        );
    }
    let heads = futures::stream::iter(keys)
        .map(|key| {
            let s3 = s3.clone();
            async move {
                let head = s3
                    .head_object()
                    .bucket(bucket)
                    .key(&key)
                    .send()
                    .await
                    .with_context(|| format!("HEAD s3://{bucket}/{key}"))?;
                let meta: BTreeMap<String, String> = head
                    .metadata()
                    .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                    .unwrap_or_default();
                anyhow::Ok(audit::Object { key, span: ObjectSpan::from_meta(&meta) })
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    let mut by_partition: BTreeMap<i32, Vec<audit::Object>> = BTreeMap::new();
    let mut foreign = 0usize;
    for o in heads {
        let o = o?;
        match (&o.span.topic, o.span.partition) {
            (Some(t), Some(p)) if *t == topic => by_partition.entry(p).or_default().push(o),
            (Some(_), Some(_)) => {}
            _ => foreign += 1,
        }
    }
    Ok((by_partition, foreign))
}

fn print_audit(reports: &BTreeMap<String, audit::PartitionReport>, foreign: usize) {
    let range = |r: &Option<audit::Range>| r.map_or("-".to_owned(), |r| format!("{}..={}", r.from, r.to));
    for (tp, r) in reports {
        println!(
            "{tp:<24} {:<5} objects {:<6} records {:<10} chain {:<20} committed {:<10} kafka {}",
            if r.clean() { "ok" } else { "BAD" },
            r.objects,
            r.records,
            range(&r.chain),
            r.committed.map_or("-".to_owned(), |c| c.to_string()),
            range(&r.kafka),
        );
        for (reason, n) in &r.gap_records {
            println!("    {n} offsets not in Kafka ({reason}), counted in the objects' metadata");
        }
        for h in &r.holes {
            println!("    HOLE {}..={} ({} offsets in no object)", h.from, h.to, h.to - h.from + 1);
        }
        for o in &r.overlaps {
            println!("    OVERLAP {}..={} (in two objects)", o.from, o.to);
        }
        for i in &r.inconsistent {
            println!("    UNPROVEN {i}");
        }
        for k in &r.past_committed {
            println!("    past the committed offset: {k}");
        }
    }
    if foreign > 0 {
        println!(
            "{foreign} objects under the prefix carry no zonal topic and partition (other writers, or older versions)"
        );
    }
}

/// Each partition's log start and end (ListOffsets), from a consumer of the worker's settings.
async fn log_bounds(cfg: &TransporterConfig, topic: &str) -> anyhow::Result<BTreeMap<i32, (i64, i64)>> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let options = cfg.kafka.client_options()?;
    let cc = crate::worker::consumer_config(cfg, None, &options);
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer<az_core::msk_iam::IamContext> =
            cc.create_with_context(az_core::msk_iam::IamContext).context("creating a Kafka client")?;
        az_core::msk_iam::prime(consumer.client(), &options);
        let timeout = std::time::Duration::from_secs(10);
        let md = consumer.fetch_metadata(Some(&topic), timeout).with_context(|| format!("metadata of {topic}"))?;
        let mut out = BTreeMap::new();
        for t in md.topics() {
            for p in t.partitions() {
                let w = consumer
                    .fetch_watermarks(&topic, p.id(), timeout)
                    .with_context(|| format!("log bounds of {topic}/{}", p.id()))?;
                out.insert(p.id(), w);
            }
        }
        anyhow::Ok(out)
    })
    .await
    .context("log bounds task")?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_takes_a_partition_and_an_offset() {
        let change = parse_set("logs.app/3=42").expect("valid");
        assert_eq!(change, OffsetChange { tp: TopicPartition::new("logs.app", 3), next: 42 });
        for (bad, named) in
            [("logs/3", "expected"), ("logs=4", "\"logs\""), ("logs/3=zero", "\"zero\""), ("logs/3=-1", "\"-1\"")]
        {
            let err = parse_set(bad).expect_err(bad);
            assert!(format!("{err:#}").contains(named), "{err:#} does not name {named}");
        }
    }
}
