//! The fleet commands that read or change etcd without running a worker: `status` (master,
//! workers by zone, assignment, owners, offsets) and `offsets` (show or set next offsets).

use std::collections::BTreeMap;

use anyhow::Context;

use crate::config::TransporterConfig;
use crate::{coord, http, master, shares};

/// `TOPIC/PARTITION=OFFSET`.
pub fn parse_set(text: &str) -> anyhow::Result<(az_core::assign::TopicPartition, i64)> {
    let (tp, offset) =
        text.rsplit_once('=').with_context(|| format!("--set {text:?}: expected TOPIC/PARTITION=OFFSET"))?;
    let tp = az_core::assign::TopicPartition::parse(tp)
        .with_context(|| format!("--set {text:?}: {tp:?} is not TOPIC/PARTITION"))?;
    let offset: i64 = offset
        .trim()
        .parse()
        .ok()
        .filter(|o| *o >= 0)
        .with_context(|| format!("--set {text:?}: {offset:?} is not an offset (a number >= 0)"))?;
    Ok((tp, offset))
}

pub async fn offsets(
    cfg: TransporterConfig,
    changes: Vec<(az_core::assign::TopicPartition, i64)>,
    while_owned: bool,
    json: bool,
) -> anyhow::Result<()> {
    let client = coord::connect(&cfg.etcd).await?;
    let keys = coord::Keys::new(&cfg.etcd.cluster);
    let mut refused = Vec::new();
    for (tp, next) in &changes {
        match coord::set_offset(&client, &keys, tp, *next, while_owned).await? {
            coord::SetOffset::Done => eprintln!("{}: next offset set to {next}", tp.key()),
            coord::SetOffset::Owned(owner) => refused.push(format!(
                "{} is owned by worker {owner:?}, whose next commit would overwrite it; stop that worker or pass --while-owned for a held partition",
                tp.key()
            )),
        }
    }
    let offsets = coord::offsets(&client, &keys).await?;
    let owners = coord::owners(&client, &keys).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "offsets": offsets, "owners": owners }))?);
    } else {
        for (tp, next) in &offsets {
            println!("{tp:<28} next offset {next:<12} owner {}", owners.get(tp).map_or("-", String::as_str));
        }
    }
    anyhow::ensure!(refused.is_empty(), "{}", refused.join("; "));
    Ok(())
}

pub async fn status(cfg: TransporterConfig, json: bool) -> anyhow::Result<()> {
    let client = coord::connect(&cfg.etcd).await?;
    let keys = coord::Keys::new(&cfg.etcd.cluster);
    let mut election = client.election_client();
    let master = match election.leader(keys.election()).await {
        Ok(r) => r.kv().map(|kv| String::from_utf8_lossy(kv.value()).into_owned()),
        Err(_) => None,
    };
    let (workers, bad) = coord::workers(&client, &keys).await?;
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
            let parts: Vec<&String> =
                doc.iter().flat_map(|d| d.owners.iter()).filter(|(_, o)| **o == w.id).map(|(tp, _)| tp).collect();
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
    let all: std::collections::BTreeSet<&String> = owners.keys().chain(offsets.keys()).collect();
    for tp in all {
        let owner = owners.get(tp).map_or("-", String::as_str);
        let off = offsets.get(tp).map_or("-", String::as_str);
        println!("  {tp:<28} owner {owner:<24} next offset {off}");
    }
    Ok(())
}
