//! `zonal-agent inspect`: what the agent would see from here, without running it: its zone,
//! the brokers with their racks, the topic's partitions and which of them are local.

use std::time::Duration;

use anyhow::{Context, bail};
use az_core::zone::{DiscoveryConfig, Env};
use az_core::{Purpose, ZoneMatcher};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

/// Prints (as text, or JSON with `json`) what the agent sees of `topic` on `bootstrap`.
pub async fn inspect(
    bootstrap: String,
    topic: String,
    zone: Option<String>,
    ec2_endpoint: Option<String>,
    options: Vec<String>,
    json: bool,
) -> anyhow::Result<()> {
    let discovery = DiscoveryConfig { zone, ec2_endpoint, ..Default::default() };
    let info = az_core::discover(&discovery, &Env::Process).await;
    let (consumer, _options, _) = client(&bootstrap, &options)?;
    let topics = vec![topic.clone()];
    let topo = tokio::task::spawn_blocking(move || {
        az_core::topology::fetch(Consumer::client(&*consumer), &topics, Duration::from_secs(10), 1)
    })
    .await
    .context("topology task")?
    .with_context(|| format!("reading the topology of {bootstrap}"))?;
    let matcher = ZoneMatcher::default();
    let sel = az_core::select(&topo, &topic, info.zone.as_ref(), &matcher, Purpose::Produce);
    if json {
        let doc = serde_json::json!({ "zone": info, "topology": topo, "selection": sel });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    match &info.zone {
        Some(z) => println!("zone: {z} (source: {})", info.source),
        None => {
            println!("zone: unknown");
            for f in &info.failures {
                println!("  {}: {}", f.provider, f.error);
            }
        }
    }
    println!("brokers:");
    for b in topo.brokers.values() {
        println!("  {:>4}  {}:{}  rack={}", b.id, b.host, b.port, b.rack.as_deref().unwrap_or("-"));
    }
    println!("topic {topic}:");
    match topo.partitions(&topic) {
        Some(parts) => {
            for p in parts {
                let leader = p.leader.map_or("-".to_owned(), |l| l.to_string());
                let rack = p.leader.and_then(|l| topo.rack_of(l)).unwrap_or("-");
                let local = if sel.is_local() && sel.partitions.contains(&p.id) { "  local" } else { "" };
                println!(
                    "  partition {:>4}  leader {leader:>4} ({rack})  replicas {:?}  isr {:?}{local}",
                    p.id, p.replicas, p.isr
                );
            }
        }
        None => println!("  missing: {:?}", topo.topics.get(&topic)),
    }
    match sel.fallback {
        None => println!("local partitions: {:?}", sel.partitions),
        Some(r) => println!("no zone-local selection ({r}); writing to all partitions: {:?}", sel.partitions),
    }
    Ok(())
}

/// A Kafka client for the one-shot commands (metadata and admin calls).
pub type InspectClient = std::sync::Arc<BaseConsumer<az_core::msk_iam::IamContext>>;

/// A client of `bootstrap` with the `-X key=value` `options` (TLS, SASL, MSK IAM), the options
/// resolved, and the raw options.
pub fn client(
    bootstrap: &str,
    options: &[String],
) -> anyhow::Result<(InspectClient, az_core::kafka_options::ClientOptions, std::collections::BTreeMap<String, String>)>
{
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", bootstrap).set("group.id", "zonal-agent-inspect");
    let mut raw = std::collections::BTreeMap::new();
    for o in options {
        let Some((k, v)) = o.split_once('=') else { bail!("-X {:?}: expected KEY=VALUE", o.split('=').next()) };
        raw.insert(k.to_owned(), v.to_owned());
    }
    let resolved = az_core::kafka_options::ClientOptions::resolve(&raw)?;
    resolved.apply(&mut cc);
    let consumer: BaseConsumer<az_core::msk_iam::IamContext> = cc
        .create_with_context(az_core::msk_iam::IamContext)
        .map_err(|e| anyhow::anyhow!(resolved.redactor().redact(&e.to_string())))
        .context("creating a Kafka client")?;
    az_core::msk_iam::prime(consumer.client(), &resolved);
    Ok((std::sync::Arc::new(consumer), resolved, raw))
}
