//! The programs of a local pipeline run as child processes on the testkit world: transporter
//! workers and agents, each with a config file, a log and an HTTP port, reached through
//! [`Node`]. Shared by `cargo xtask demo` and `cargo xtask chaos`.
//!
//! ```text
//!  FleetSpec ─transporter(zone, k)─> TransporterConfig ─toml─> t<zone>-<k>/transporter.toml ─> Process ─> Node
//!            └agent(zone)──────────> AgentConfig ───────toml─> agent<zone>/agent.toml ───────> Process ─> Node
//!  Process: zonal-transporter or zonal-agent run -c <that file>, with S3 credentials and no ambient zone
//!  Node: get(/path), metric(name, labels), ready(), the process (stop, kill -9, SIGSTOP, restart)
//! ```
//!
//! The configurations are the programs' own typed structs, serialized: a renamed field breaks
//! the build of xtask instead of the demo or the chaos run at run time.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use az_core::zone::ZoneSettings;
use serde::Serialize;
use testkit::World;
use testkit::process::{Process, ProcessSpec};
use zonal_agent::config::{AgentConfig, Partitioning, StreamConfig};
use zonal_transporter::config::TransporterConfig;

/// The objects' format, as the command lines of the demo, the chaos run and the benchmarks name
/// it (`s3.format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ObjectFormat {
    /// Values, one per line.
    Lines,
    /// JSON lines (partition and offset per record).
    Json,
    /// Parquet (a column per field).
    Parquet,
}

impl ObjectFormat {
    /// The name the configuration gives it.
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectFormat::Lines => "lines",
            ObjectFormat::Json => "json",
            ObjectFormat::Parquet => "parquet",
        }
    }
}

impl From<ObjectFormat> for zonal_transporter::config::Format {
    fn from(f: ObjectFormat) -> Self {
        match f {
            ObjectFormat::Lines => zonal_transporter::config::Format::Lines,
            ObjectFormat::Json => zonal_transporter::config::Format::Json,
            ObjectFormat::Parquet => zonal_transporter::config::Format::Parquet,
        }
    }
}

/// The S3 bucket pipelines write to.
pub const BUCKET: &str = "zonal-demo";

/// One running program of the pipeline.
pub struct Node {
    /// `t<zone>-<k>` or `agent<zone>`.
    pub name: String,
    /// Index of its zone in the world.
    pub zone: usize,
    /// `127.0.0.1:PORT` of its HTTP server.
    pub http: String,
    /// Its working directory (config, log, checkpoints or buffers).
    pub dir: PathBuf,
    /// The process.
    pub process: Process,
}

impl Node {
    /// The body of `GET path`.
    pub fn get(&self, path: &str) -> anyhow::Result<String> {
        Ok(testkit::http::get(&self.http, path)?.1)
    }

    /// A metric's value (0 when absent or unreachable).
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        testkit::http::metric(&self.get("/metrics").unwrap_or_default(), name, labels)
    }

    /// Bytes this client exchanged with Kafka in the given zone relation, both directions.
    pub fn kafka_bytes(&self, metric: &str, zone: &str) -> u64 {
        (self.metric(metric, &[("zone", zone), ("direction", "tx")])
            + self.metric(metric, &[("zone", zone), ("direction", "rx")])) as u64
    }

    /// Whether `/readyz` says ready.
    pub fn ready(&self) -> bool {
        self.get("/readyz").is_ok_and(|b| b.starts_with("ready"))
    }

    /// Its log's last lines, for error messages.
    pub fn log_tail(&self) -> String {
        format!("--- {}\n{}", self.name, self.process.log_tail(40))
    }

    /// SIGTERM and a graceful exit within 30 s (killed after that).
    pub fn stop(&mut self) {
        let _ = self.process.stop(Duration::from_secs(30));
    }
}

/// How the fleet is configured.
pub struct FleetSpec<'a> {
    /// The world it runs on.
    pub world: &'a World,
    /// Where `zonal-agent` and `zonal-transporter` are.
    pub bins: &'a Path,
    /// The topic agents write and transporters read.
    pub topic: &'a str,
    /// etcd cluster name and S3 prefix.
    pub name: &'a str,
    /// Zone-aware partitioning and assignment (false: random partitions, zones ignored).
    pub zone_aware: bool,
    /// The transporters' lease TTL.
    pub lease_ttl_secs: u64,
    /// The transporters' roll age.
    pub max_age_ms: u64,
    /// Lines per batch in the agents.
    pub batch_lines: usize,
    /// Extra top-level agent settings (TOML lines), laid over the typed configuration.
    pub agent_extra: String,
    /// Object format.
    pub format: ObjectFormat,
    /// librdkafka options every program gets (`kafka.options`).
    pub kafka_options: &'a [(&'a str, &'a str)],
    /// Run each zone's programs with the zone's own group id ([`zone_gid`]), so that the
    /// kernel's packet filter can tell a zone's traffic from the others' (chaos's
    /// `zone-isolation`); the user stays root, so files are reached as before.
    pub zone_groups: bool,
    /// The transporters' grace period for a departed worker (their default when `None`).
    pub grace_secs: Option<u64>,
}

/// The group id the programs of `zone` run with when [`FleetSpec::zone_groups`] is set.
pub fn zone_gid(zone: usize) -> u32 {
    61_000 + zone as u32
}

impl FleetSpec<'_> {
    /// The `kafka.options` of every program: statistics twice a second, then the spec's own.
    fn options(&self) -> BTreeMap<String, String> {
        let mut options = BTreeMap::from([("statistics.interval.ms".to_owned(), "500".to_owned())]);
        options.extend(self.kafka_options.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        options
    }

    /// Zone discovery from the fake EC2 metadata service of `zone`.
    fn zone(&self, zone: usize) -> anyhow::Result<ZoneSettings> {
        let imds = self.world.metadata.get(zone).context("no metadata server for the zone")?;
        Ok(ZoneSettings {
            providers: vec![az_core::Provider::Ec2],
            ec2_endpoint: Some(imds.endpoint()),
            ..ZoneSettings::default()
        })
    }

    /// Environment every program gets: S3 credentials, and no ambient AWS files or zone.
    fn command(&self, bin: &str, zone: usize, config: &Path, log: PathBuf) -> anyhow::Result<ProcessSpec> {
        let s3 = self.world.s3.as_ref().context("the world has no S3 server")?;
        let bin = self.bins.join(bin);
        let run = [bin.as_os_str(), "run".as_ref(), "-c".as_ref(), config.as_os_str()];
        let spec = if self.zone_groups {
            // setpriv execs the program: the process (and its pid) is the program's own.
            let gid = zone_gid(zone).to_string();
            let mut args: Vec<&std::ffi::OsStr> = vec!["--regid".as_ref(), gid.as_ref(), "--clear-groups".as_ref()];
            args.extend(run);
            ProcessSpec::new("setpriv", &args, log)
        } else {
            ProcessSpec::new(&bin, &run[1..], log)
        };
        Ok(spec
            .env("RUST_LOG", "info,rdkafka=warn")
            .env("AWS_CONFIG_FILE", "/nonexistent")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
            .env("AWS_ACCESS_KEY_ID", s3.access_key())
            .env("AWS_SECRET_ACCESS_KEY", s3.secret_key())
            .env("AWS_REGION", s3.region())
            .env_remove("ZONAL_ZONE"))
    }

    /// Writes `config` as TOML and starts `bin` of `zone` with it.
    fn launch(
        &self,
        bin: &str,
        zone: usize,
        path: &Path,
        config: &impl Serialize,
        log: PathBuf,
    ) -> anyhow::Result<Process> {
        let text = toml::to_string(config).with_context(|| format!("rendering {}", path.display()))?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
        Ok(Process::start(self.command(bin, zone, path, log)?)?)
    }

    /// The brokers a client in `zone` bootstraps through: its zone's own, as a deployment
    /// should list them, so that metadata requests stay in the zone.
    fn bootstrap(&self, zone: usize) -> anyhow::Result<String> {
        let rack = self.world.kafka.zones().get(zone).with_context(|| format!("no zone {zone}"))?;
        Ok(self.world.kafka.bootstrap_in(rack)?)
    }

    /// The configuration of transporter worker `id` of `zone`, buffering in `buffers`.
    fn transporter_config(
        &self,
        zone: usize,
        id: &str,
        buffers: PathBuf,
        port: u16,
    ) -> anyhow::Result<TransporterConfig> {
        let etcd = self.world.etcd.as_ref().context("the world has no etcd")?;
        let s3 = self.world.s3.as_ref().context("the world has no S3 server")?;
        let mut c = TransporterConfig { zone: self.zone(zone)?, ..TransporterConfig::default() };
        c.kafka.bootstrap_servers = self.bootstrap(zone)?;
        c.kafka.topics = vec![self.topic.to_owned()];
        c.kafka.topology_refresh_secs = 2;
        c.kafka.options = self.options();
        c.etcd.endpoints = vec![etcd.endpoint()];
        c.etcd.cluster = self.name.to_owned();
        c.etcd.lease_ttl_secs = self.lease_ttl_secs.try_into().context("lease TTL")?;
        c.worker.id = Some(id.to_owned());
        c.worker.buffer_dir = buffers;
        c.s3.bucket = BUCKET.to_owned();
        c.s3.prefix = self.name.to_owned();
        c.s3.endpoint = Some(s3.endpoint());
        c.s3.path_style = true;
        c.s3.format = self.format.into();
        c.roll.max_age_ms = self.max_age_ms;
        c.assignment.zone_aware = self.zone_aware;
        if let Some(grace) = self.grace_secs {
            c.worker.grace_period_secs = grace;
        }
        c.http.listen = ([127, 0, 0, 1], port).into();
        Ok(c)
    }

    /// Starts transporter worker `k` of `zone`, working in `dir/t<zone>-<k>`.
    pub fn transporter(&self, zone: usize, k: usize, dir: &Path) -> anyhow::Result<Node> {
        let id = format!("t{zone}-{k}");
        let wdir = dir.join(&id);
        std::fs::create_dir_all(wdir.join("buffers")).with_context(|| format!("creating {}", wdir.display()))?;
        let config = self.transporter_config(zone, &id, wdir.join("buffers"), testkit::net::free_port()?)?;
        let process = self.launch(
            "zonal-transporter",
            zone,
            &wdir.join("transporter.toml"),
            &config,
            wdir.join("transporter.log"),
        )?;
        Ok(Node { name: id, zone, http: config.http.listen.to_string(), dir: wdir, process })
    }

    /// The configuration of the agent of `zone` working in `adir`: one stream of `adir/logs/*.log`,
    /// then `agent_extra`'s settings on top.
    fn agent_config(&self, zone: usize, adir: &Path, port: u16) -> anyhow::Result<AgentConfig> {
        // `StreamConfig` has no `Default`: serde fills the optional fields in from a table of the
        // required ones, and the struct literal below names those, so a rename breaks the build.
        let defaults: StreamConfig = toml::toml! { name = "" paths = [] topic = "" }.try_into()?;
        let stream = StreamConfig {
            name: "app".to_owned(),
            paths: vec![format!("{}/logs/*.log", adir.display())],
            topic: self.topic.to_owned(),
            partitioning: if self.zone_aware { Partitioning::ZoneAware } else { Partitioning::Random },
            batch_lines: self.batch_lines,
            ..defaults
        };
        let mut c = AgentConfig {
            checkpoint_dir: adir.join("ckpt"),
            poll_interval_ms: 100,
            zone: self.zone(zone)?,
            streams: vec![stream],
            ..AgentConfig::default()
        };
        c.http.listen = ([127, 0, 0, 1], port).into();
        c.kafka.bootstrap_servers = self.bootstrap(zone)?;
        c.kafka.topology_refresh_secs = 2;
        c.kafka.options = self.options();
        if self.agent_extra.trim().is_empty() {
            return Ok(c);
        }
        // The extra settings are TOML of the top level: laid over the typed configuration and
        // read back, so that a key the agent does not have is refused here, not by the agent.
        let extra: toml::Table = toml::from_str(&self.agent_extra).context("agent_extra")?;
        let mut table = toml::Table::try_from(&c)?;
        table.extend(extra);
        table.try_into().context("agent_extra")
    }

    /// Starts the agent of `zone`, tailing `dir/agent<zone>/logs/*.log`.
    pub fn agent(&self, zone: usize, dir: &Path) -> anyhow::Result<Node> {
        let name = format!("agent{zone}");
        let adir = dir.join(&name);
        std::fs::create_dir_all(adir.join("logs")).with_context(|| format!("creating {}", adir.display()))?;
        let config = self.agent_config(zone, &adir, testkit::net::free_port()?)?;
        let process = self.launch("zonal-agent", zone, &adir.join("agent.toml"), &config, adir.join("agent.log"))?;
        Ok(Node { name, zone, http: config.http.listen.to_string(), dir: adir, process })
    }
}

/// Partitions owned and workers named in a worker's `/assignment`, and the master's count of
/// partitions read across zones; `None` when it cannot be read.
pub fn assignment(node: &Node) -> Option<(usize, usize, u64)> {
    let v: serde_json::Value = serde_json::from_str(&node.get("/assignment").ok()?).ok()?;
    let zones = v["zones"].as_object()?;
    let owned = zones
        .values()
        .flat_map(|ws| ws.as_object().into_iter().flatten())
        .map(|(_, ps)| ps.as_array().map_or(0, Vec::len))
        .sum();
    let workers = zones.values().map(|ws| ws.as_object().map_or(0, |o| o.len())).sum();
    Some((owned, workers, v["cross_zone"].as_u64().unwrap_or(0)))
}

/// Waits until some worker's assignment gives all `partitions` to all of `workers`; returns
/// the partitions read across zones.
pub fn wait_assigned(workers: &[Node], partitions: usize, within: Duration) -> anyhow::Result<u64> {
    testkit::wait_until("the fleet's assignment", within, || {
        workers.iter().find_map(|t| {
            let (owned, named, cross) = assignment(t)?;
            (owned == partitions && named == workers.len()).then_some(cross)
        })
    })
    .map_err(|e| anyhow::anyhow!("{e}\n{}", workers.iter().map(Node::log_tail).collect::<Vec<_>>().join("\n")))
}
