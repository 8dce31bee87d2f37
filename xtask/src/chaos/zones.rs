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

use super::inject::{Pipeline, hold};
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
    /// Bytes (cross-zone, all) every program moved since the previous sample (the first sample
    /// of a program is its baseline). A program that restarted counts from 0 again.
    pub fn sample(&mut self, p: &Pipeline) -> (u64, u64) {
        let (mut cross, mut all) = (0, 0);
        let nodes = p.agents.iter().map(|n| (n, "zonal_agent_kafka_bytes"));
        for (n, metric) in nodes.chain(p.workers.iter().map(|n| (n, "zonal_transporter_kafka_bytes"))) {
            // A program that does not answer (restarting) starts again from its next answer:
            // counting all it did until then into one window would misplace it in time.
            let Some((c, a)) = bytes(n, metric) else {
                self.last.remove(&n.name);
                continue;
            };
            let Some((lc, la)) = self.last.insert(n.name.clone(), (c, a)) else { continue };
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

/// After a zone's fault has been recovered from, waits (two minutes at most, with the
/// programs supervised meanwhile) until `back` holds the seconds to a zone-aware share again,
/// calling `watch` at every look. Not reaching it is a figure (`None`), not a failure.
pub fn settle(
    p: &mut Pipeline,
    exits: &mut Vec<String>,
    watch: &mut impl FnMut(&Pipeline),
    back: &std::cell::Cell<Option<f64>>,
) {
    let every = Duration::from_millis(250);
    let _ = testkit::wait_until_every("the zone-aware share", Duration::from_secs(120), every, || {
        super::supervise(p, exits);
        watch(p);
        back.get()
    });
}

/// How long a zone's fault is held: past the lease and the grace, so that its partitions fail
/// over to the other zones' workers while it lasts.
fn zone_hold(p: &Pipeline, f: &Fault) -> Duration {
    p.lease_ttl + super::GRACE + Duration::from_secs(4) + Duration::from_millis(f.hold_ms)
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
        // Every move is known before anything changes: a partition without a replica elsewhere
        // stops the fault before it starts.
        let mut moves = Vec::new();
        for (p, l) in leaders.iter().filter(|(_, l)| down.contains(l)) {
            let others: Vec<i32> =
                replicas.get(p).into_iter().flatten().copied().filter(|b| !down.contains(b)).collect();
            let Some(to) = others.get((f.variant % others.len().max(1) as u64) as usize) else {
                bail!("partition {p} has no replica outside zone {}", zones[z]);
            };
            moves.push((*p, *l, *to));
        }
        let programs: Vec<usize> = (0..self.workers.len()).filter(|&i| self.workers[i].zone == z).collect();
        let held = zone_hold(self, f);
        let outage = self.take_zone_down(z, &down, &moves, &programs, held);
        // Restored whatever happened: a fault left half-injected would fail every later one.
        let mut restored = Vec::new();
        for b in &down {
            restored.push(self.world.kafka.broker_up(*b).map_err(anyhow::Error::from));
        }
        for &i in &programs {
            if !self.workers[i].process.running() {
                restored.push(self.workers[i].process.restart().map_err(anyhow::Error::from));
            }
        }
        if !self.agents[z].process.running() {
            restored.push(self.agents[z].process.restart().map_err(anyhow::Error::from));
        }
        for (p, from, _) in &moves {
            restored.push(self.world.kafka.move_leader(&self.topic, *p, *from).map_err(anyhow::Error::from));
        }
        let restored = restored.into_iter().collect::<anyhow::Result<Vec<()>>>();
        match (outage, restored) {
            (Err(e), Err(r)) => bail!("{e:#}; restoring the zone failed too: {r:#}"),
            (Err(e), Ok(_)) | (Ok(()), Err(e)) => return Err(e),
            (Ok(()), Ok(_)) => {}
        }
        let moved = moves;
        Ok(format!(
            "{} for {:.0} s: brokers {down:?}, {} leaders moved, {} workers and its agent",
            zones[z],
            held.as_secs_f64(),
            moved.len(),
            programs.len()
        ))
    }

    /// Leadership moved away, the zone's programs killed, its brokers down, held.
    fn take_zone_down(
        &mut self,
        z: usize,
        down: &[i32],
        moves: &[(i32, i32, i32)],
        programs: &[usize],
        held: Duration,
    ) -> anyhow::Result<()> {
        for (p, _, to) in moves {
            self.world.kafka.move_leader(&self.topic, *p, *to)?;
        }
        for &i in programs {
            self.workers[i].process.kill9()?;
        }
        self.agents[z].process.kill9()?;
        for b in down {
            self.world.kafka.broker_down(*b)?;
        }
        hold(held);
        Ok(())
    }

    /// `zone-isolation`: the zone's programs cut off from the other zones' brokers and from
    /// etcd for the hold, while they keep running.
    pub fn zone_isolation(&mut self, f: &Fault) -> anyhow::Result<String> {
        let zones = self.world.kafka.zones().to_vec();
        let z = (f.target % zones.len() as u64) as usize;
        let mut ports = Vec::new();
        for (i, rack) in zones.iter().enumerate().filter(|(i, _)| *i != z) {
            // The harness's own client meets the faults too (a connection to a broker that was
            // down may hang until its socket timeout): asked again until it answers.
            let kafka = &self.world.kafka;
            let bootstrap =
                testkit::wait_until("a zone's brokers", Duration::from_secs(120), || kafka.bootstrap_in(rack).ok())
                    .with_context(|| format!("the brokers of zone {i}"))?;
            ports.extend(bootstrap.split(',').filter_map(|a| a.rsplit(':').next()?.parse::<u16>().ok()));
        }
        let etcd = self.world.etcd.as_ref().context("no etcd")?.endpoint();
        let etcd_port: u16 = etcd.rsplit(':').next().and_then(|p| p.parse().ok()).context("etcd's port")?;
        ports.push(etcd_port);
        let cut = Cut::verified(zone_gid(z), &ports, etcd_port)?;
        let held = zone_hold(self, f);
        hold(held);
        cut.heal(etcd_port)?;
        Ok(format!("{} for {:.0} s: cut from ports {ports:?}", zones[z], held.as_secs_f64()))
    }
}

/// The harness's own chain: OUTPUT jumps to it first, and it is flushed before every cut and
/// after it, so rules left by a harness that was killed mid-fault bind nothing for long.
const CHAIN: &str = "ZONAL-CHAOS";

/// Flushes rules a killed harness left behind, before a run starts (silently: the chain may not
/// exist, and only `zone-isolation` needs iptables).
pub fn clear_leftover_cuts() {
    let _ = iptables(&["-F", CHAIN]);
}

/// Packet-filter rules dropping a group's TCP packets to some loopback ports; removed by
/// [`Cut::heal`], or when dropped (a fault that failed on the way).
struct Cut {
    gid: u32,
}

impl Cut {
    fn drop(gid: u32, ports: &[u16]) -> anyhow::Result<Cut> {
        // -N fails when the chain exists already (an earlier fault made it).
        let _ = iptables(&["-N", CHAIN]);
        if iptables(&["-C", "OUTPUT", "-j", CHAIN]).is_err() {
            iptables(&["-I", "OUTPUT", "1", "-j", CHAIN])?;
        }
        iptables(&["-F", CHAIN])?;
        let cut = Cut { gid };
        for port in ports {
            let (port, gid) = (port.to_string(), gid.to_string());
            iptables(&[
                "-A",
                CHAIN,
                "-o",
                "lo",
                "-p",
                "tcp",
                "-d",
                "127.0.0.1",
                "--dport",
                &port,
                "-m",
                "owner",
                "--gid-owner",
                &gid,
                "-j",
                "DROP",
            ])?;
        }
        Ok(cut)
    }

    /// A connection from the group to `port`: `Ok(true)` when it got through within 2 s,
    /// `Ok(false)` when it timed out (dropped packets), an error when the probe could not run.
    fn probe(gid: u32, port: u16) -> anyhow::Result<bool> {
        let script = format!("exec 3<>/dev/tcp/127.0.0.1/{port}");
        let out = Command::new("setpriv")
            .args(["--regid", &gid.to_string(), "--clear-groups", "timeout", "2", "bash", "-c", &script])
            .output()
            .context("running setpriv (util-linux)")?;
        match out.status.code() {
            Some(0) => Ok(true),
            // timeout(1)'s status when the command ran out of time.
            Some(124) => Ok(false),
            other => bail!(
                "probing port {port} as group {gid} failed ({other:?}): {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        }
    }

    /// A fault that silently did nothing would prove nothing: the same probe that gets through
    /// before the cut must time out after it.
    fn verified(gid: u32, ports: &[u16], probe_port: u16) -> anyhow::Result<Cut> {
        if !Cut::probe(gid, probe_port)? {
            bail!("group {gid} cannot reach port {probe_port} even before the cut");
        }
        let cut = Cut::drop(gid, ports)?;
        if Cut::probe(gid, probe_port)? {
            bail!("iptables did not cut group {} off from port {probe_port}", cut.gid);
        }
        Ok(cut)
    }
}

impl Cut {
    /// Removes the rules and checks that the group gets through again: a zone left cut off
    /// would fail every later fault without saying why.
    fn heal(self, probe_port: u16) -> anyhow::Result<()> {
        iptables(&["-F", CHAIN])?;
        if !Cut::probe(self.gid, probe_port)? {
            bail!("group {} still cannot reach port {probe_port} after the rules were removed", self.gid);
        }
        Ok(())
    }
}

impl Drop for Cut {
    fn drop(&mut self) {
        if let Err(e) = iptables(&["-F", CHAIN]) {
            eprintln!("warning: removing the zone-isolation rules: {e}");
        }
    }
}

fn iptables(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("iptables")
        .args(["-w", "10"])
        .args(args)
        .output()
        .context("running iptables (apt install iptables; it needs CAP_NET_ADMIN)")?;
    if !out.status.success() {
        bail!("iptables {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}
