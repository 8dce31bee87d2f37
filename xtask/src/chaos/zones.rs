//! Faults of a whole zone, and what they cost in cross-zone bytes.
//!
//! - `zone-outage`: the zone's brokers go down, their leadership first moved to replicas in the
//!   other zones (as the controller does when a broker stops); the zone's workers and agent are
//!   killed. After the hold everything comes back and leadership returns to the preferred
//!   replicas (as `auto.leader.rebalance.enable` does).
//! - `zone-isolation`: the zone's programs keep running, cut off from the other zones' brokers
//!   and from etcd by the kernel's packet filter: each zone's programs run with their own group
//!   id (`fleet::zone_gid`), and `iptables -m owner --gid-owner` drops their packets to those
//!   ports. A real partition of the network, chosen over the testkit fronts (every client
//!   shares them, so they cannot tell zones apart) and over network namespaces (the servers
//!   bind only to the host's loopback, which another namespace cannot reach).
//!
//! ```text
//!  Meter::sample (every program's cross-zone and total Kafka bytes) ─ before ─┐
//!  inject: outage or isolation ── hold (lease + grace: failover happens) ── heal
//!  Meter::sample ─ at heal ─> cross-zone bytes during the fault
//!  Meter::window, every second after healing ─> seconds until the cross-zone share < 1%
//! ```

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::inject::Pipeline;
use super::schedule::Fault;
use crate::fleet::{Node, zone_gid};

/// The cross-zone share under which a zone is back to zone-aware traffic.
pub const ZONE_AWARE_SHARE: f64 = 0.01;

impl ZoneCost {
    /// The cost of a fault during which `(cross, all)` Kafka bytes moved, under 1% cross-zone
    /// again `back` seconds after healing.
    pub fn new((cross, all): (u64, u64), back: Option<f64>) -> ZoneCost {
        let share = if all == 0 { 0.0 } else { cross as f64 / all as f64 };
        ZoneCost { cross_zone_bytes: cross, cross_zone_share: share, seconds_to_zone_aware: back }
    }

    /// The cost as the fault's line shows it.
    pub(crate) fn line(&self) -> String {
        let back = self.seconds_to_zone_aware.map_or("not within 2 min".to_owned(), |s| format!("after {s:.1} s"));
        format!(
            "; cost: {:.1} MB cross-zone during the fault ({:.1}% of Kafka bytes), under 1% again {back}",
            self.cross_zone_bytes as f64 / 1e6,
            self.cross_zone_share * 100.0
        )
    }
}

/// What a zone's fault cost in cross-zone traffic.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ZoneCost {
    /// Kafka bytes every program sent or received across zones from injection to healing.
    pub cross_zone_bytes: u64,
    /// The same bytes' share of all Kafka bytes in that time.
    pub cross_zone_share: f64,
    /// Seconds from healing until a second of traffic is again under 1% cross-zone; `None`
    /// when that did not happen within two minutes of recovery.
    pub seconds_to_zone_aware: Option<f64>,
}

/// Per program, the Kafka bytes it reported last: (cross-zone, all).
#[derive(Default)]
pub struct Meter {
    last: BTreeMap<String, (u64, u64)>,
    at: Option<Instant>,
}

impl Meter {
    /// Bytes (cross-zone, all) every program moved since the previous sample. A program that
    /// restarted counts from 0 again.
    pub fn sample(&mut self, p: &Pipeline) -> (u64, u64) {
        let (mut cross, mut all) = (0, 0);
        let nodes = p.agents.iter().map(|n| (n, "zonal_agent_kafka_bytes"));
        for (n, metric) in nodes.chain(p.workers.iter().map(|n| (n, "zonal_transporter_kafka_bytes"))) {
            let Some((c, a)) = bytes(n, metric) else { continue };
            let (lc, la) = self.last.insert(n.name.clone(), (c, a)).unwrap_or((0, 0));
            cross += if c >= lc { c - lc } else { c };
            all += if a >= la { a - la } else { a };
        }
        self.at = Some(Instant::now());
        (cross, all)
    }

    /// The cross-zone share since the previous sample, once at least a second has passed (and
    /// bytes moved); `None` otherwise.
    pub fn window(&mut self, p: &Pipeline) -> Option<f64> {
        if self.at.is_some_and(|at| at.elapsed() < Duration::from_secs(1)) {
            return None;
        }
        let (cross, all) = self.sample(p);
        (all > 0).then(|| cross as f64 / all as f64)
    }
}

/// A program's Kafka bytes (cross-zone, all), both directions; `None` when it does not answer.
fn bytes(n: &Node, metric: &str) -> Option<(u64, u64)> {
    let text = n.get("/metrics").ok()?;
    let m = |zone: &str| testkit::http::metric(&text, metric, &[("zone", zone)]) as u64;
    let cross = m("cross-zone");
    Some((cross, cross + m("same-zone") + m("unknown")))
}

/// How long a zone's fault is held: past the lease and the grace, so that its partitions fail
/// over to the other zones' workers while it lasts.
fn zone_hold(p: &Pipeline, f: &Fault) -> Duration {
    p.lease_ttl + super::GRACE + Duration::from_secs(4) + Duration::from_millis(f.hold_ms)
}

fn hold(d: Duration) {
    // How long the fault lasts: part of the scenario, not a wait for a condition.
    std::thread::sleep(d);
}

impl Pipeline {
    /// `zone-outage`: brokers down (leadership moved away first), workers and agent killed,
    /// all restored after the hold and leadership moved back.
    pub fn zone_outage(&mut self, f: &Fault) -> anyhow::Result<String> {
        let zones = self.world.kafka.zones().to_vec();
        let z = (f.target % zones.len() as u64) as usize;
        let down = self.world.kafka.brokers_in(&zones[z]);
        let kafka = &self.world.kafka;
        let (replicas, leaders) = testkit::wait_until("the topic's metadata", Duration::from_secs(120), || {
            Some((kafka.replicas(&self.topic).ok()?, kafka.leaders(&self.topic).ok()?))
        })?;
        let mut moved = Vec::new();
        for (p, l) in leaders.iter().filter(|(_, l)| down.contains(l)) {
            let others: Vec<i32> =
                replicas.get(p).into_iter().flatten().copied().filter(|b| !down.contains(b)).collect();
            let Some(to) = others.get((f.variant % others.len().max(1) as u64) as usize) else {
                bail!("partition {p} has no replica outside zone {}", zones[z]);
            };
            kafka.move_leader(&self.topic, *p, *to)?;
            moved.push((*p, *l));
        }
        let programs: Vec<usize> = (0..self.workers.len()).filter(|&i| self.workers[i].zone == z).collect();
        for &i in &programs {
            self.workers[i].process.kill9()?;
        }
        self.agents[z].process.kill9()?;
        for b in &down {
            kafka.broker_down(*b)?;
        }
        let held = zone_hold(self, f);
        hold(held);
        for b in &down {
            self.world.kafka.broker_up(*b)?;
        }
        for &i in &programs {
            self.workers[i].process.restart()?;
        }
        self.agents[z].process.restart()?;
        for (p, l) in &moved {
            self.world.kafka.move_leader(&self.topic, *p, *l)?;
        }
        Ok(format!(
            "{} for {:.0} s: brokers {down:?}, {} leaders moved, {} workers and its agent",
            zones[z],
            held.as_secs_f64(),
            moved.len(),
            programs.len()
        ))
    }

    /// `zone-isolation`: the zone's programs cut off from the other zones' brokers and from
    /// etcd for the hold, while they keep running.
    pub fn zone_isolation(&mut self, f: &Fault) -> anyhow::Result<String> {
        let zones = self.world.kafka.zones().to_vec();
        let z = (f.target % zones.len() as u64) as usize;
        let mut ports = Vec::new();
        for (i, rack) in zones.iter().enumerate().filter(|(i, _)| *i != z) {
            let bootstrap = self.world.kafka.bootstrap_in(rack).with_context(|| format!("the brokers of zone {i}"))?;
            ports.extend(bootstrap.split(',').filter_map(|a| a.rsplit(':').next()?.parse::<u16>().ok()));
        }
        let etcd = self.world.etcd.as_ref().context("no etcd")?.endpoint();
        let etcd_port: u16 = etcd.rsplit(':').next().and_then(|p| p.parse().ok()).context("etcd's port")?;
        ports.push(etcd_port);
        let cut = Cut::drop(zone_gid(z), &ports)?;
        cut.verify(etcd_port)?;
        let held = zone_hold(self, f);
        hold(held);
        drop(cut);
        Ok(format!("{} for {:.0} s: cut from ports {ports:?}", zones[z], held.as_secs_f64()))
    }
}

/// Packet-filter rules dropping a group's TCP packets to some loopback ports, removed on drop.
struct Cut {
    rules: Vec<Vec<String>>,
    gid: u32,
}

impl Cut {
    fn drop(gid: u32, ports: &[u16]) -> anyhow::Result<Cut> {
        let mut cut = Cut { rules: Vec::new(), gid };
        for port in ports {
            let rule: Vec<String> = [
                "OUTPUT",
                "-o",
                "lo",
                "-p",
                "tcp",
                "-d",
                "127.0.0.1",
                "--dport",
                &port.to_string(),
                "-m",
                "owner",
                "--gid-owner",
                &gid.to_string(),
                "-j",
                "DROP",
            ]
            .map(str::to_owned)
            .to_vec();
            iptables("-A", &rule)?;
            cut.rules.push(rule);
        }
        Ok(cut)
    }

    /// A fault that silently did nothing would prove nothing: a connection from the group to
    /// `port` must not get through.
    fn verify(&self, port: u16) -> anyhow::Result<()> {
        let probe = format!("exec 3<>/dev/tcp/127.0.0.1/{port}");
        let out = Command::new("setpriv")
            .args(["--regid", &self.gid.to_string(), "--clear-groups", "timeout", "2", "bash", "-c", &probe])
            .output()
            .context("running setpriv (util-linux)")?;
        if out.status.success() {
            bail!("iptables did not cut group {} off from port {port}", self.gid);
        }
        Ok(())
    }
}

impl Drop for Cut {
    fn drop(&mut self) {
        for rule in &self.rules {
            if let Err(e) = iptables("-D", rule) {
                eprintln!("warning: removing a zone-isolation rule: {e}");
            }
        }
    }
}

fn iptables(op: &str, rule: &[String]) -> anyhow::Result<()> {
    let out = Command::new("iptables")
        .arg("-w")
        .arg(op)
        .args(rule)
        .output()
        .context("running iptables (apt install iptables; it needs CAP_NET_ADMIN)")?;
    if !out.status.success() {
        bail!("iptables {op} {}: {}", rule.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}
