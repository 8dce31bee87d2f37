//! One run of the demo on the shared world: its topic, its transporter fleet and agents (started
//! through `crate::fleet`), the generators that write its logs, and the wait until S3 holds
//! every line. What the run measured is taken by `measure` before the fleet is stopped.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use testkit::World;

use super::measure::{self, Contents, Finished};
use super::{DemoArgs, Phase};
use crate::fleet::{self, FleetSpec, Node};

/// Transporter workers started in every zone, so that the master has a choice within a zone.
const TRANSPORTERS_PER_ZONE: usize = 2;

/// One run of the pipeline on the shared world: what the two runs share, and what tells them
/// apart (name and zone awareness).
pub(super) struct PhaseRun<'a> {
    pub args: &'a DemoArgs,
    pub world: &'a World,
    /// Where `zonal-agent` and `zonal-transporter` are.
    pub bins: &'a Path,
    /// The working directory of this run's programs.
    pub dir: PathBuf,
    /// `baseline` or `zone-aware`: the topic's suffix, the etcd cluster, the S3 prefix and the
    /// tag of every generated line.
    pub name: &'static str,
    /// Zone-aware partitioning in the agents and zone-aware assignment in the master.
    pub zone_aware: bool,
    /// The progress display both runs draw on.
    pub multi: &'a MultiProgress,
}

impl PhaseRun<'_> {
    /// Starts the fleet, writes the workload, waits for it in S3, measures and stops the fleet.
    pub(super) fn run(&self) -> anyhow::Result<Phase> {
        std::fs::create_dir_all(&self.dir)?;
        let topic = format!("demo-{}", self.name);
        self.world.kafka.create_topic(&topic, self.args.partitions)?;
        let s3 = self.world.s3.as_ref().context("no S3")?;
        let spec = self.fleet_spec(&topic);
        let (mut transporters, cross_zone_partitions) = self.start_transporters(&spec)?;
        let mut agents = self.start_agents(&spec)?;
        let total = self.generate(&agents)?;
        let contents = self.wait_shipped(s3, total)?;
        let finished = Finished {
            world: self.world,
            topic: &topic,
            partitions: self.args.partitions,
            agents: &agents,
            transporters: &transporters,
        };
        let phase = finished.measure(total, cross_zone_partitions, &contents)?;
        for a in &mut agents {
            a.stop();
        }
        for t in &mut transporters {
            t.stop();
        }
        Ok(phase)
    }

    fn fleet_spec<'s>(&'s self, topic: &'s str) -> FleetSpec<'s> {
        FleetSpec {
            world: self.world,
            bins: self.bins,
            topic,
            name: self.name,
            zone_aware: self.zone_aware,
            lease_ttl_secs: 5,
            max_age_ms: 1000,
            batch_lines: 100,
            agent_extra: String::new(),
            format: self.args.format,
            kafka_options: &[],
            zone_groups: false,
            grace_secs: None,
        }
    }

    /// Starts the transporters and waits until the master has assigned every partition;
    /// returns them with the number of partitions assigned across zones.
    fn start_transporters(&self, spec: &FleetSpec) -> anyhow::Result<(Vec<Node>, u64)> {
        let mut transporters = Vec::new();
        for zone in 0..self.world.zones.len() {
            for k in 0..TRANSPORTERS_PER_ZONE {
                transporters.push(spec.transporter(zone, k, &self.dir)?);
            }
        }
        let setup = self.multi.add(ProgressBar::new_spinner());
        setup.set_prefix(self.name);
        setup.set_message("waiting for the transporter fleet to assign every partition");
        setup.enable_steady_tick(Duration::from_millis(120));
        let partitions = self.args.partitions as usize;
        let cross_zone_partitions = fleet::wait_assigned(&transporters, partitions, Duration::from_secs(60))?;
        setup.finish_and_clear();
        Ok((transporters, cross_zone_partitions))
    }

    /// Starts one agent per zone and waits until each is ready.
    fn start_agents(&self, spec: &FleetSpec) -> anyhow::Result<Vec<Node>> {
        let agents =
            (0..self.world.zones.len()).map(|z| spec.agent(z, &self.dir)).collect::<anyhow::Result<Vec<_>>>()?;
        for a in &agents {
            testkit::wait_until("an agent to become ready", Duration::from_secs(30), || a.ready().then_some(()))
                .map_err(|e| anyhow::anyhow!("{e}\n{}", a.log_tail()))?;
        }
        Ok(agents)
    }

    /// Runs one generator per agent (`rate` lines/s for `duration` s, rotating by rename every
    /// 5 s) until all have finished; returns the number of lines written.
    fn generate(&self, agents: &[Node]) -> anyhow::Result<u64> {
        let args = self.args;
        let total = args.rate * args.duration * agents.len() as u64;
        let gen_bar = self.bar(total, "lines written");
        let written = Arc::new(AtomicU64::new(0));
        let mut generators = Vec::new();
        for (z, agent) in agents.iter().enumerate() {
            let (adir, written, a, tag) = (agent.dir.clone(), written.clone(), args.clone(), self.name);
            generators.push(std::thread::spawn(move || generate(&adir.join("logs"), z, tag, &a, &written)));
        }
        testkit::wait_until_every(
            "the generators",
            Duration::from_secs(args.duration * 2 + 60),
            Duration::from_millis(100),
            || {
                gen_bar.set_position(written.load(Ordering::Relaxed));
                generators.iter().all(|g| g.is_finished()).then_some(())
            },
        )?;
        for g in generators {
            g.join().map_err(|_| anyhow::anyhow!("a generator panicked"))??;
        }
        gen_bar.finish();
        Ok(total)
    }

    /// Waits until S3 holds every line, and returns what it holds. A timeout is only a
    /// warning: the report then counts the lines that did not arrive as lost.
    fn wait_shipped(&self, s3: &testkit::S3Server, total: u64) -> anyhow::Result<Contents> {
        let ship_bar = self.bar(total, "lines in S3");
        // Reading the bucket back decompresses every object: check twice a second, not faster.
        let mut contents = Contents::default();
        let shipped =
            testkit::wait_until_every("every line in S3", Duration::from_secs(180), Duration::from_millis(500), || {
                match measure::read_back(s3, self.name) {
                    Ok(c) => contents = c,
                    Err(e) => return Some(Err(e)),
                }
                ship_bar.set_position(contents.distinct);
                (contents.distinct >= total).then_some(Ok(()))
            });
        ship_bar.finish();
        match shipped {
            Ok(r) => r?,
            Err(e) => eprintln!("warning: {e}"),
        }
        Ok(contents)
    }

    /// A progress bar of this run, counting up to `len`.
    fn bar(&self, len: u64, message: &'static str) -> ProgressBar {
        let style = ProgressStyle::with_template("{prefix:>12} {spinner} [{bar:40}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        let bar = self.multi.add(ProgressBar::new(len));
        bar.set_style(style);
        bar.set_prefix(self.name);
        bar.set_message(message);
        bar
    }
}

/// Writes lines at the configured rate, rotating `app.log` to `app.log.N` every 5 seconds.
fn generate(dir: &Path, zone: usize, tag: &str, args: &DemoArgs, written: &AtomicU64) -> anyhow::Result<()> {
    let path = dir.join("app.log");
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&path)?;
    let start = Instant::now();
    let total = args.rate * args.duration;
    let mut rotation = 0;
    let mut line = Vec::with_capacity(args.line_bytes + 1);
    for n in 0..total {
        // The sleep paces the workload and waits for nothing: line n is due at n / rate
        // seconds, and what was written so far is flushed first so that the agent sees it.
        let due = start + Duration::from_secs_f64(n as f64 / args.rate as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            file.flush()?;
            std::thread::sleep(wait);
        }
        if n > 0 && n % (args.rate * 5) == 0 {
            rotation += 1;
            std::fs::rename(&path, dir.join(format!("app.log.{rotation}")))?;
            file = std::fs::OpenOptions::new().create(true).append(true).open(&path)?;
        }
        line.clear();
        write!(line, "{tag} zone{zone} line {n:09} ")?;
        while line.len() < args.line_bytes {
            line.push(b'a' + ((n as usize * 7 + line.len()) % 26) as u8);
        }
        line.push(b'\n');
        file.write_all(&line)?;
        written.fetch_add(1, Ordering::Relaxed);
    }
    file.flush()?;
    Ok(())
}
