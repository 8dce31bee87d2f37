//! The fleet commands that read or change etcd without running a worker: `status` (master,
//! workers by zone, assignment, owners, offsets) and `offsets` (show or set next offsets).

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Context;
use az_core::TopicPartition;

use crate::config::TransporterConfig;
use crate::{coord, http, master, shares};

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
    for (zone, ws) in &by_zone {
        println!("zone {zone}:");
        for w in ws {
            let parts: Vec<String> = doc
                .iter()
                .flat_map(|d| d.owners.iter())
                .filter(|(_, o)| **o == w.id)
                .map(|(tp, _)| tp.to_string())
                .collect();
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
