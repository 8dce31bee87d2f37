//! `zonal-agent leaders`: a leader placement proportional to each zone's produce rate, printed as
//! Kafka's tools take it and optionally applied. The planning is `az_core::leaders`; this is
//! the reading of rates and topology, the printing and the applying.
//!
//! ```text
//!  --rate ZONE=B/s ─┐
//!  --scrape ADDR ───┴─> bytes per zone (two scrapes, --window-secs apart; stream_info joins
//!                        each stream's bytes to its topic and rack)
//!  topology (DescribeCluster/Topics) ──> az_core::leaders::plan ──> reassignment JSON,
//!     election JSON, before/after table ──(--apply)──> reorder, wait, elect, wait ──> verified
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, bail};
use az_core::ZoneMatcher;
use az_core::leaders::{self, Plan, apply};
use az_core::topology::Topology;
use rdkafka::consumer::Consumer;

/// Arguments of `zonal-agent leaders`.
#[derive(clap::Args, Debug)]
pub struct LeadersArgs {
    /// Kafka bootstrap servers.
    #[arg(long)]
    pub bootstrap: String,
    /// The topic to place leaders for.
    #[arg(long)]
    pub topic: String,
    /// A zone's produce rate in bytes per second, `ZONE=RATE` (the zone as the brokers' racks
    /// name it); repeatable.
    #[arg(long = "rate", value_name = "ZONE=RATE")]
    pub rates: Vec<String>,
    /// An agent's metrics address (`host:port`, every address the host resolves to, such as a
    /// headless Service's pods; or a URL); its bytes for the topic are counted in its zone.
    /// Repeatable; combined with `--rate`.
    #[arg(long = "scrape", value_name = "ADDR")]
    pub scrape: Vec<String>,
    /// Seconds between the two scrapes a rate is measured over.
    #[arg(long, default_value_t = 10)]
    pub window_secs: u64,
    /// librdkafka properties, `key=value`, repeatable (TLS, SASL).
    #[arg(short = 'X', value_name = "KEY=VALUE")]
    pub options: Vec<String>,
    /// Print one JSON document instead of text.
    #[arg(long)]
    pub json: bool,
    /// Apply the plan through the Admin API (reorder replicas, then a preferred election) and
    /// wait until the leaders are where the plan puts them.
    #[arg(long)]
    pub apply: bool,
}

/// Runs `zonal-agent leaders`.
pub async fn leaders(args: LeadersArgs) -> anyhow::Result<()> {
    let mut rates = parse_rates(&args.rates)?;
    if !args.scrape.is_empty() {
        let window = Duration::from_secs(args.window_secs.max(1));
        for (zone, rate) in scrape_rates(&args.scrape, &args.topic, window).await? {
            *rates.entry(zone).or_default() += rate;
        }
    }
    if rates.is_empty() {
        bail!("no produce rates: give --rate ZONE=BYTES_PER_SECOND or --scrape AGENT_METRICS_ADDRESS");
    }
    let (client, options, raw) = crate::inspect::client(&args.bootstrap, &args.options)?;
    let topo = fetch(&client, &args.topic, &args.bootstrap).await?;
    let matcher = ZoneMatcher::default();
    let zone_of: BTreeMap<i32, String> =
        topo.brokers.values().filter_map(|b| Some((b.id, matcher.canonical(b.rack.as_deref()?).to_owned()))).collect();
    let rates = to_racks(rates, &zone_of, &matcher);
    let partitions = topo.partitions(&args.topic).with_context(|| format!("topic {} not found", args.topic))?;
    let plan = leaders::plan(partitions, &zone_of, &rates).with_context(|| format!("planning {}", args.topic))?;
    print(&args, &plan, &zone_of, &rates)?;
    if args.apply {
        let protocol = raw.get("security.protocol").map_or("plaintext", String::as_str);
        let addrs: Vec<String> = topo.brokers.values().map(|b| format!("{}:{}", b.host, b.port)).collect();
        apply_plan(&client, &args.topic, &plan, &addrs, protocol, &args.bootstrap).await?;
    }
    drop(options);
    Ok(())
}

/// `ZONE=RATE` pairs.
fn parse_rates(pairs: &[String]) -> anyhow::Result<BTreeMap<String, f64>> {
    let mut out = BTreeMap::new();
    for p in pairs {
        let Some((zone, rate)) = p.split_once('=') else { bail!("--rate {p:?}: expected ZONE=BYTES_PER_SECOND") };
        let rate: f64 = rate.trim().parse().with_context(|| format!("--rate {p:?}: {rate:?} is not a number"))?;
        if !rate.is_finite() || rate < 0.0 {
            bail!("--rate {p:?}: the rate must be a number of bytes per second, 0 or more");
        }
        *out.entry(zone.trim().to_owned()).or_default() += rate;
    }
    Ok(out)
}

/// Rates keyed by the rack label the brokers use (a zone given as an id, a name or an alias is
/// matched to it); zones no broker is in keep their own name, and lead nothing.
fn to_racks(rates: BTreeMap<String, f64>, zone_of: &BTreeMap<i32, String>, m: &ZoneMatcher) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for (zone, rate) in rates {
        let rack = zone_of.values().find(|r| m.same_zone(r, &zone)).cloned();
        if rack.is_none() {
            tracing::warn!(%zone, "no broker is in this zone: its traffic crosses zones whatever the plan");
        }
        *out.entry(rack.unwrap_or(zone)).or_default() += rate;
    }
    out
}

/// The bytes per second each zone's agents produce to `topic`, from two scrapes of every
/// address `window` apart.
async fn scrape_rates(addrs: &[String], topic: &str, window: Duration) -> anyhow::Result<BTreeMap<String, f64>> {
    let http = az_core::zone::plain_http_client(Duration::from_secs(10)).context("an HTTP client")?;
    let urls = expand(addrs).await?;
    let mut first = Vec::new();
    for (u, named) in &urls {
        // An address a name resolved to may be a pod that just ended: left out with a warning.
        // An address given as such must answer.
        let found = match scrape(&http, u, topic).await {
            Ok(found) => found,
            Err(e) if *named => {
                tracing::warn!(url = %u, error = %format!("{e:#}"), "left out: the agent did not answer");
                None
            }
            Err(e) => return Err(e),
        };
        first.push((found, tokio::time::Instant::now()));
    }
    let answered = first.iter().filter(|(f, _)| f.is_some()).count();
    if answered == 0 {
        bail!("no agent at {addrs:?} answered with a stream writing to {topic} and a known zone");
    }
    eprintln!("measuring produce rates over {} s from {answered} of {} agents", window.as_secs(), urls.len());
    tokio::time::sleep(window).await;
    let mut out = BTreeMap::new();
    for ((u, _), (before, at)) in urls.iter().zip(first) {
        // An agent without the topic (or a zone) at the first scrape has no starting point:
        // its whole counter over the window would overstate its rate many times.
        let Some((_, earlier)) = before else { continue };
        let Some((zone, bytes)) = scrape(&http, u, topic).await? else { continue };
        // A restarted agent's counter starts again at 0: its bytes since then are the rate.
        let delta = if bytes >= earlier { bytes - earlier } else { bytes };
        *out.entry(zone).or_default() += delta / at.elapsed().as_secs_f64().max(0.001);
    }
    Ok(out)
}

/// The metrics URL of every agent the addresses name, and whether it came from a name: a URL
/// as it is; a `host:port` for every address the host resolves to, so that a Kubernetes
/// headless Service (`zonal-agent.zonal.svc:9464`) names every agent pod at once. A name with
/// IPv4 addresses is taken at those only: a dual-stack pod has one of each, and is one agent.
async fn expand(addrs: &[String]) -> anyhow::Result<Vec<(String, bool)>> {
    let mut urls: Vec<(String, bool)> = Vec::new();
    for a in addrs {
        if a.contains("://") {
            urls.push((a.clone(), false));
            continue;
        }
        let named = a.parse::<std::net::SocketAddr>().is_err();
        let resolved: Vec<std::net::SocketAddr> = tokio::net::lookup_host(a.as_str())
            .await
            .with_context(|| format!("--scrape {a:?}: resolving it (HOST:PORT)"))?
            .collect();
        let v4 = resolved.iter().any(std::net::SocketAddr::is_ipv4);
        for addr in resolved.into_iter().filter(|r| !v4 || r.is_ipv4()) {
            let url = format!("http://{addr}/metrics");
            if !urls.iter().any(|(u, _)| *u == url) {
                urls.push((url, named));
            }
        }
    }
    Ok(urls)
}

async fn scrape(http: &reqwest::Client, url: &str, topic: &str) -> anyhow::Result<Option<(String, f64)>> {
    let text = http
        .get(url)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .with_context(|| format!("scraping {url}"))?
        .text()
        .await
        .with_context(|| format!("reading {url}"))?;
    let found = agent_bytes(&text, topic).with_context(|| format!("reading the metrics of {url}"))?;
    if found.is_none() {
        tracing::warn!(%url, %topic, "this agent has no stream writing to the topic, or no known zone");
    }
    Ok(found)
}

/// The zone (rack label, else zone) of the agent whose metrics are `text`, and the payload
/// bytes its streams have handed to Kafka for `topic`; `None` when no stream writes to it or
/// the agent's zone is unknown.
pub fn agent_bytes(text: &str, topic: &str) -> anyhow::Result<Option<(String, f64)>> {
    let scrape =
        prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).context("not Prometheus text")?;
    let mut zone = None;
    let mut streams = Vec::new();
    for s in scrape.samples.iter().filter(|s| s.metric == "zonal_agent_stream_info") {
        if s.labels.get("topic") != Some(topic) {
            continue;
        }
        let z = s.labels.get("rack").filter(|r| !r.is_empty()).or(s.labels.get("zone"));
        zone = z.filter(|z| *z != "unknown").map(str::to_owned);
        streams.extend(s.labels.get("stream").map(str::to_owned));
    }
    let Some(zone) = zone else { return Ok(None) };
    let bytes: f64 = scrape
        .samples
        .iter()
        .filter(|s| {
            s.metric == "zonal_agent_bytes_total"
                && s.labels.get("stream").is_some_and(|n| streams.iter().any(|x| x == n))
        })
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum();
    Ok(Some((zone, bytes)))
}

async fn fetch(client: &crate::inspect::InspectClient, topic: &str, bootstrap: &str) -> anyhow::Result<Topology> {
    let client = client.clone();
    let topics = vec![topic.to_owned()];
    tokio::task::spawn_blocking(move || {
        az_core::topology::fetch(Consumer::client(&*client), &topics, Duration::from_secs(10), 1)
    })
    .await
    .context("topology task")?
    .with_context(|| format!("reading the topology of {bootstrap}"))
}

fn print(
    args: &LeadersArgs,
    plan: &Plan,
    zone_of: &BTreeMap<i32, String>,
    rates: &BTreeMap<String, f64>,
) -> anyhow::Result<()> {
    let (rows, before, after) = leaders::table(plan, zone_of, rates);
    let reassignment = leaders::reassignment_json(&args.topic, plan);
    let election = leaders::election_json(&args.topic, plan);
    if args.json {
        let doc = serde_json::json!({
            "topic": args.topic, "rates": rates, "targets": plan.targets,
            "skew_before": before, "skew_after": after, "partitions": rows,
            "reassignment": reassignment, "election": election,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    println!("topic {}: produce rates {:?}; leaders wanted per zone {:?}", args.topic, rates, plan.targets);
    println!(
        "{:>9}  {:>14}  {:>12}  {:>14}  {:>12}",
        "partition", "leader now", "load now", "leader after", "load after"
    );
    for r in &rows {
        let now = format!(
            "{} ({})",
            r.leader_before.map_or("-".into(), |l| l.to_string()),
            r.zone_before.as_deref().unwrap_or("-")
        );
        let then = format!("{} ({})", r.leader_after, r.zone_after);
        println!("{:>9}  {now:>14}  {:>12.1}  {then:>14}  {:>12.1}", r.partition, r.load_before, r.load_after);
    }
    println!("load max/mean: {before:.3} now, {after:.3} after the plan");
    println!(
        "\n# step 1: kafka-reassign-partitions.sh --bootstrap-server {} --execute --reassignment-json-file reorder.json",
        args.bootstrap
    );
    println!("{}", serde_json::to_string(&reassignment)?);
    println!(
        "\n# step 2: kafka-leader-election.sh --bootstrap-server {} --election-type preferred --path-to-json-file elect.json",
        args.bootstrap
    );
    println!("{}", serde_json::to_string(&election)?);
    Ok(())
}

/// Applies `plan`: reorders, waits until metadata shows the new order, elects, waits until the
/// leaders are the planned ones.
async fn apply_plan(
    client: &crate::inspect::InspectClient,
    topic: &str,
    plan: &Plan,
    addrs: &[String],
    protocol: &str,
    bootstrap: &str,
) -> anyhow::Result<()> {
    let timeout = Duration::from_secs(30);
    apply::check(addrs, protocol, timeout).await?;
    let reordered = apply::reorder(addrs, protocol, topic, plan, timeout).await?;
    eprintln!("reordered the replicas of {} partitions; waiting for the new order", reordered.len());
    wait(client, topic, plan, bootstrap, |p, placed| p.replicas == placed.replicas).await?;
    let elect: Vec<i32> = leaders::election_json(topic, plan)["partitions"]
        .as_array()
        .map(|a| a.iter().filter_map(|p| p["partition"].as_i64()).map(|p| p as i32).collect())
        .unwrap_or_default();
    apply::elect_preferred(addrs, protocol, topic, &elect, timeout).await?;
    wait(client, topic, plan, bootstrap, |p, placed| p.leader == Some(placed.leader())).await?;
    eprintln!(
        "applied: {} partitions reordered, {} leaders elected; every leader is where the plan puts it",
        reordered.len(),
        elect.len()
    );
    Ok(())
}

/// Waits until every partition of `plan` is `done` as metadata shows it, for at most 120 s.
async fn wait(
    client: &crate::inspect::InspectClient,
    topic: &str,
    plan: &Plan,
    bootstrap: &str,
    done: impl Fn(&az_core::topology::PartitionInfo, &leaders::Placed) -> bool,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let topo = fetch(client, topic, bootstrap).await?;
        let parts = topo.partitions(topic).unwrap_or_default();
        let pending: Vec<i32> = plan
            .partitions
            .iter()
            .filter(|placed| !parts.iter().any(|p| p.id == placed.partition && done(p, placed)))
            .map(|placed| placed.partition)
            .collect();
        if pending.is_empty() {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("the cluster did not reach the planned placement within 120 s; partitions still apart: {pending:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
