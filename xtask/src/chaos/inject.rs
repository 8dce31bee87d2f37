//! Injecting one planned fault into the running pipeline and healing it: signals to the
//! programs, logrotate, the mock cluster's leader, broker and request-error controls, etcd
//! paused or restarted, the testkit S3 server's error, latency and cut controls, and `chattr +i`
//! on a directory (it binds root too, unlike a mode change).
//!
//! ```text
//!  Fault { kind, target, variant, hold, count } ──inject──> the world changed
//!        ──hold──> heal (continue, restart, up, resume, clear, chattr -i) ──> Injected { healed_at, note }
//! ```

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

use super::schedule::{Fault, Kind};
use super::writers::Writer;
use crate::fleet::Node;

/// The running pipeline the faults act on.
pub struct Pipeline {
    /// The world (Kafka, etcd, S3, metadata servers).
    pub world: testkit::World,
    /// The topic.
    pub topic: String,
    /// Its partition count.
    pub partitions: i32,
    /// One agent per zone.
    pub agents: Vec<Node>,
    /// Transporter workers.
    pub workers: Vec<Node>,
    /// One writer per zone.
    pub writers: Vec<Writer>,
    /// The workers' lease TTL.
    pub lease_ttl: Duration,
}

/// What an injection did.
pub struct Injected {
    /// When the fault was healed (or injected, for faults with nothing to heal).
    pub healed_at: Instant,
    /// What was hit, for the log.
    pub note: String,
}

/// `chattr +i` on a directory for as long as it lives; `chattr -i` when dropped.
struct Immutable(PathBuf);

impl Immutable {
    fn set(dir: &Path) -> anyhow::Result<Immutable> {
        chattr("+i", dir)?;
        let guard = Immutable(dir.to_owned());
        // Verify it binds: a fault that silently did nothing would prove nothing.
        let probe = dir.join(".chaos-probe");
        if std::fs::write(&probe, b"").is_ok() {
            let _ = std::fs::remove_file(&probe);
            bail!("chattr +i did not make {} unwritable on this filesystem", dir.display());
        }
        Ok(guard)
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = chattr("-i", &self.0);
    }
}

fn chattr(flag: &str, dir: &Path) -> anyhow::Result<()> {
    let out = std::process::Command::new("chattr")
        .arg(flag)
        .arg(dir)
        .output()
        .context("running chattr (apt install e2fsprogs)")?;
    if !out.status.success() {
        bail!("chattr {flag} {}: {}", dir.display(), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

fn pick<T>(items: &[T], n: u64) -> anyhow::Result<&T> {
    if items.is_empty() {
        bail!("no candidate to inject into");
    }
    Ok(&items[(n % items.len() as u64) as usize])
}

fn index(len: usize, n: u64) -> usize {
    (n % len.max(1) as u64) as usize
}

/// Waits `d`: how long a fault lasts, part of the scenario, not a wait for a condition.
pub(super) fn hold(d: Duration) {
    std::thread::sleep(d);
}

impl Pipeline {
    /// The worker that says it is the master, if one does.
    fn master(&self) -> Option<usize> {
        self.workers.iter().position(|w| w.metric("zonal_transporter_is_master", &[]) == 1.0)
    }

    /// Injects `f`, holds it and heals it.
    pub fn inject(&mut self, f: &Fault) -> anyhow::Result<Injected> {
        let held = Duration::from_millis(f.hold_ms);
        let holds = Holds { held, past_lease: self.lease_ttl + Duration::from_secs(2) + held / 2 };
        let note = match f.kind {
            Kind::AgentKill => self.kill_agent(f, holds)?,
            Kind::WorkerKill | Kind::MasterKill => self.kill_worker(f, holds)?,
            Kind::WorkerStall => self.stall_worker(f, holds)?,
            Kind::RotateWhileDown => self.rotate_while_down(f, holds)?,
            Kind::Copytruncate => self.copytruncate(f)?,
            Kind::LeaderMove => self.move_leader(f)?,
            Kind::BrokerDown => self.broker_down(f, holds)?,
            Kind::KafkaErrors => self.kafka_errors(f, holds)?,
            Kind::EtcdPause | Kind::EtcdRestart => self.etcd_fault(f, holds)?,
            Kind::S3Errors => self.s3_errors(f, holds)?,
            Kind::S3Slow => self.s3_slow(f, holds)?,
            Kind::S3Cut => self.s3_cut(f)?,
            Kind::DirUnwritable => self.dir_unwritable(f, holds)?,
            Kind::FetchOutOfRange => self.fetch_out_of_range(f, holds)?,
            Kind::S3SlowPastLease => self.s3_slow_past_lease(f, holds)?,
            Kind::ZoneOutage => self.zone_outage(f)?,
            Kind::ZoneIsolation => self.zone_isolation(f)?,
        };
        Ok(Injected { healed_at: Instant::now(), note })
    }
}

/// How long a fault is held: its own time, or past the workers' lease (a stall or an etcd outage
/// must outlast the lease to test what a lost lease does).
#[derive(Debug, Clone, Copy)]
struct Holds {
    held: Duration,
    past_lease: Duration,
}

/// One method per kind of fault: inject, hold for `holds.held` (or past the lease), heal; each
/// returns the note the report shows.
impl Pipeline {
    fn kill_agent(&mut self, f: &Fault, holds: Holds) -> anyhow::Result<String> {
        let i = index(self.agents.len(), f.target);
        let a = &mut self.agents[i];
        a.process.kill9()?;
        hold(holds.held);
        a.process.restart()?;
        Ok(a.name.clone())
    }

    fn kill_worker(&mut self, f: &Fault, holds: Holds) -> anyhow::Result<String> {
        let master = testkit::wait_until("a master", Duration::from_secs(60), || self.master())?;
        let i = if f.kind == Kind::MasterKill {
            master
        } else {
            let others: Vec<usize> = (0..self.workers.len()).filter(|&i| i != master).collect();
            *pick(&others, f.target)?
        };
        let w = &mut self.workers[i];
        w.process.kill9()?;
        hold(holds.held);
        w.process.restart()?;
        Ok(w.name.clone())
    }

    fn stall_worker(&mut self, f: &Fault, holds: Holds) -> anyhow::Result<String> {
        let w = &self.workers[index(self.workers.len(), f.target)];
        w.process.signal(libc::SIGSTOP)?;
        hold(holds.past_lease);
        w.process.signal(libc::SIGCONT)?;
        Ok(format!("{} for {:.1} s", w.name, holds.past_lease.as_secs_f64()))
    }

    fn rotate_while_down(&mut self, f: &Fault, holds: Holds) -> anyhow::Result<String> {
        let z = index(self.agents.len(), f.target);
        self.writers[z].settle();
        self.agents[z].process.kill9()?;
        self.writers[z].rotate()?;
        hold(holds.held);
        self.agents[z].process.restart()?;
        let mode = if self.writers[z].copytruncate() { "copytruncate" } else { "create" };
        Ok(format!("{} ({mode})", self.agents[z].name))
    }

    fn copytruncate(&mut self, f: &Fault) -> anyhow::Result<String> {
        let z = index(self.agents.len(), f.target);
        // Zone 1 rotates with copytruncate anyway; elsewhere it is forced here.
        let w = &self.writers[z];
        w.rotate_with("copytruncate")?;
        Ok(self.agents[z].name.clone())
    }

    fn move_leader(&mut self, f: &Fault) -> anyhow::Result<String> {
        let p = index(self.partitions as usize, f.variant) as i32;
        // The harness's own client meets the faults too (a connection to a broker that
        // was down may hang until its socket timeout): ask again until it answers.
        let kafka = &self.world.kafka;
        let (replicas, leaders) = testkit::wait_until("the topic's metadata", Duration::from_secs(120), || {
            Some((kafka.replicas(&self.topic).ok()?, kafka.leaders(&self.topic).ok()?))
        })?;
        let leader = leaders.get(&p).copied().unwrap_or(-1);
        let others: Vec<i32> = replicas.get(&p).into_iter().flatten().copied().filter(|&b| b != leader).collect();
        let to = *pick(&others, f.target)?;
        self.world.kafka.move_leader(&self.topic, p, to)?;
        Ok(format!("{}/{p} from broker {leader} to {to}", self.topic))
    }

    fn broker_down(&mut self, f: &Fault, holds: Holds) -> anyhow::Result<String> {
        let brokers: Vec<i32> = self.world.kafka.broker_racks().into_keys().collect();
        let b = *pick(&brokers, f.target)?;
        self.world.kafka.broker_down(b)?;
        hold(holds.held + Duration::from_secs(1));
        self.world.kafka.broker_up(b)?;
        Ok(format!("broker {b}"))
    }

    fn kafka_errors(&mut self, f: &Fault, holds: Holds) -> anyhow::Result<String> {
        let apis = [
            RDKafkaApiKey::Produce,
            RDKafkaApiKey::Fetch,
            RDKafkaApiKey::Metadata,
            RDKafkaApiKey::ListOffsets,
            RDKafkaApiKey::OffsetCommit,
            RDKafkaApiKey::OffsetFetch,
        ];
        let errors = [
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
        ];
        let api = *pick(&apis, f.target)?;
        let err = *pick(&errors, f.variant)?;
        let mock = self.world.kafka.mock()?;
        mock.request_errors(api, &vec![err; f.count]);
        hold(holds.held);
        mock.clear_request_errors(api);
        Ok(format!("{} x {err:?} on {api:?}", f.count))
    }

    fn etcd_fault(&mut self, f: &Fault, holds: Holds) -> anyhow::Result<String> {
        let etcd = self.world.etcd.as_mut().context("no etcd")?;
        etcd.pause()?;
        hold(holds.past_lease);
        if f.kind == Kind::EtcdRestart {
            etcd.restart()?;
        } else {
            etcd.resume()?;
        }
        Ok(format!("for {:.1} s", holds.past_lease.as_secs_f64()))
    }

    fn s3_errors(&mut self, f: &Fault, holds: Holds) -> anyhow::Result<String> {
        let s3 = self.world.s3.as_ref().context("no S3")?;
        let status = if f.variant.is_multiple_of(2) { 503 } else { 500 };
        s3.fail_next_requests(f.count, status);
        hold(holds.held);
        s3.fail_next_requests(0, status);
        Ok(format!("{} x {status}", f.count))
    }

    fn s3_slow(&mut self, f: &Fault, holds: Holds) -> anyhow::Result<String> {
        let s3 = self.world.s3.as_ref().context("no S3")?;
        let latency = 200 + f.variant % 1_300;
        let rate = 50_000 + (f.target % 450_000);
        s3.set_latency(latency);
        s3.set_upload_rate(rate);
        hold(holds.held * 2);
        s3.set_latency(0);
        s3.set_upload_rate(0);
        Ok(format!("{latency} ms, {} KB/s", rate / 1000))
    }

    /// Out-of-range answers for offsets the log holds: the workers must read the same offsets
    /// again, never skip to the log start or past a hole.
    fn fetch_out_of_range(&mut self, f: &Fault, holds: Holds) -> anyhow::Result<String> {
        let mock = self.world.kafka.mock()?;
        let api = RDKafkaApiKey::Fetch;
        mock.request_errors(api, &vec![RDKafkaRespErr::RD_KAFKA_RESP_ERR_OFFSET_OUT_OF_RANGE; f.count]);
        hold(holds.held);
        mock.clear_request_errors(api);
        Ok(format!("{} fetches", f.count))
    }

    /// A link to S3 so slow that an upload under way lasts longer than the lease TTL: the lease
    /// is renewed meanwhile, the attempt deadline gives up and tries again, nothing is lost or
    /// written twice.
    fn s3_slow_past_lease(&mut self, f: &Fault, holds: Holds) -> anyhow::Result<String> {
        let s3 = self.world.s3.as_ref().context("no S3")?;
        let rate = 20_000 + (f.variant % 30_000);
        s3.set_upload_rate(rate);
        hold(holds.past_lease * 2);
        s3.set_upload_rate(0);
        Ok(format!("{} KB/s for {:.1} s", rate / 1000, (holds.past_lease * 2).as_secs_f64()))
    }

    fn s3_cut(&mut self, f: &Fault) -> anyhow::Result<String> {
        let s3 = self.world.s3.as_ref().context("no S3")?;
        let n = f.count.min(3);
        s3.cut_next_writes(n);
        // Until the cuts have happened (writes come with every roll), at most 20 s.
        let _ = testkit::wait_until("the cuts", Duration::from_secs(20), || (s3.pending_faults() == 0).then_some(()));
        s3.cut_next_writes(0);
        Ok(format!("{n} uploads"))
    }

    fn dir_unwritable(&mut self, f: &Fault, holds: Holds) -> anyhow::Result<String> {
        let n = self.agents.len() + self.workers.len();
        let i = index(n, f.target);
        let (name, dir) = if i < self.agents.len() {
            (self.agents[i].name.clone(), self.agents[i].dir.join("ckpt"))
        } else {
            let w = &self.workers[i - self.agents.len()];
            (w.name.clone(), w.dir.join("buffers"))
        };
        let guard = Immutable::set(&dir)?;
        hold(holds.held + Duration::from_secs(1));
        drop(guard);
        Ok(format!("{name}: {}", dir.file_name().map(|d| d.to_string_lossy()).unwrap_or_default()))
    }
}
