//! The programs of a local pipeline run as child processes on the testkit world: transporter
//! workers and agents, each with a config file, a log and an HTTP port, reached through
//! [`Node`]. Shared by `cargo xtask demo` and `cargo xtask chaos`.
//!
//! ```text
//!  FleetSpec ──transporter(zone, k)──> t<zone>-<k>.toml ──> Process(zonal-transporter run -c …) ──> Node
//!            └─agent(zone)───────────> agent<zone>/agent.toml ──> Process(zonal-agent run -c …) ──> Node
//!  Node: get(/path), metric(name, labels), ready(), the process (stop, kill -9, SIGSTOP, restart)
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use testkit::World;
use testkit::process::{Process, ProcessSpec};

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
    pub fn metric(&self, name: &str, labels: &[&str]) -> f64 {
        testkit::http::metric(&self.get("/metrics").unwrap_or_default(), name, labels)
    }

    /// Bytes this client exchanged with Kafka in the given zone relation, both directions.
    pub fn kafka_bytes(&self, metric: &str, zone: &str) -> u64 {
        (self.metric(metric, &[zone, "\"tx\""]) + self.metric(metric, &[zone, "\"rx\""])) as u64
    }

    /// Whether `/readyz` says ready.
    pub fn ready(&self) -> bool {
        self.get("/readyz").is_ok_and(|b| b.starts_with("ready"))
    }

    /// Its log's last lines, for error messages.
    pub fn log_tail(&self) -> String {
        format!("--- {}\n{}", self.name, self.process.log_tail(10))
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
    /// Extra top-level agent settings (TOML lines).
    pub agent_extra: String,
    /// Object format: `lines` or `json` (with partition and offset per record).
    pub format: &'a str,
    /// librdkafka options every program gets (`[kafka.options]`).
    pub kafka_options: &'a [(&'a str, &'a str)],
}

impl FleetSpec<'_> {
    /// The `[kafka.options]` lines: statistics twice a second, then the spec's own.
    fn options(&self) -> String {
        let mut text = "\"statistics.interval.ms\" = \"500\"\n".to_owned();
        for (k, v) in self.kafka_options {
            text.push_str(&format!("\"{k}\" = \"{v}\"\n"));
        }
        text
    }
}

impl FleetSpec<'_> {
    /// Environment every program gets: S3 credentials, and no ambient AWS files or zone.
    fn command(&self, bin: &str, config: &Path, log: PathBuf) -> anyhow::Result<ProcessSpec> {
        let s3 = self.world.s3.as_ref().context("the world has no S3 server")?;
        Ok(ProcessSpec::new(self.bins.join(bin), &["run".as_ref(), "-c".as_ref(), config.as_os_str()], log)
            .env("RUST_LOG", "info,rdkafka=warn")
            .env("AWS_CONFIG_FILE", "/nonexistent")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
            .env("AWS_ACCESS_KEY_ID", s3.access_key())
            .env("AWS_SECRET_ACCESS_KEY", s3.secret_key())
            .env("AWS_REGION", s3.region())
            .env_remove("ZONAL_ZONE"))
    }

    /// Writes `config` and starts `bin` with it.
    fn launch(&self, bin: &str, config: &Path, text: &str, log: PathBuf) -> anyhow::Result<Process> {
        std::fs::write(config, text).with_context(|| format!("writing {}", config.display()))?;
        Ok(Process::start(self.command(bin, config, log)?)?)
    }

    /// Starts transporter worker `k` of `zone`, working in `dir/t<zone>-<k>`.
    pub fn transporter(&self, zone: usize, k: usize, dir: &Path) -> anyhow::Result<Node> {
        let (world, name, topic) = (self.world, self.name, self.topic);
        let etcd = world.etcd.as_ref().context("the world has no etcd")?;
        let s3 = world.s3.as_ref().context("the world has no S3 server")?;
        let imds = world.metadata.get(zone).context("no metadata server for the zone")?;
        let id = format!("t{zone}-{k}");
        let wdir = dir.join(&id);
        std::fs::create_dir_all(wdir.join("buffers")).with_context(|| format!("creating {}", wdir.display()))?;
        let port = testkit::net::free_port()?;
        let config = wdir.join("transporter.toml");
        let text = format!(
            "[kafka]\nbootstrap-servers = \"{b}\"\ntopics = [\"{topic}\"]\ntopology-refresh-secs = 2\n\
             [kafka.options]\n{options}\
             [etcd]\nendpoints = [\"{e}\"]\ncluster = \"{name}\"\nlease-ttl-secs = {ttl}\n\
             [zone]\nproviders = [\"ec2\"]\nec2-endpoint = \"{imds}\"\n\
             [worker]\nid = \"{id}\"\nbuffer-dir = \"{buffers}\"\n\
             [s3]\nbucket = \"{BUCKET}\"\nprefix = \"{name}\"\nendpoint = \"{s}\"\npath-style = true\nformat = \"{format}\"\n\
             [roll]\nmax-age-ms = {age}\n[assignment]\nzone-aware = {aware}\n[http]\nlisten = \"127.0.0.1:{port}\"\n",
            b = world.kafka.bootstrap(),
            e = etcd.endpoint(),
            ttl = self.lease_ttl_secs,
            imds = imds.endpoint(),
            buffers = wdir.join("buffers").display(),
            s = s3.endpoint(),
            age = self.max_age_ms,
            aware = self.zone_aware,
            format = self.format,
            options = self.options(),
        );
        let process = self.launch("zonal-transporter", &config, &text, wdir.join("transporter.log"))?;
        Ok(Node { name: id, zone, http: format!("127.0.0.1:{port}"), dir: wdir, process })
    }

    /// Starts the agent of `zone`, tailing `dir/agent<zone>/logs/*.log`.
    pub fn agent(&self, zone: usize, dir: &Path) -> anyhow::Result<Node> {
        let world = self.world;
        let imds = world.metadata.get(zone).context("no metadata server for the zone")?;
        let name = format!("agent{zone}");
        let adir = dir.join(&name);
        std::fs::create_dir_all(adir.join("logs")).with_context(|| format!("creating {}", adir.display()))?;
        let port = testkit::net::free_port()?;
        let config = adir.join("agent.toml");
        let text = format!(
            "checkpoint-dir = \"{d}/ckpt\"\npoll-interval-ms = 100\n{extra}\n[http]\nlisten = \"127.0.0.1:{port}\"\n\
             [kafka]\nbootstrap-servers = \"{b}\"\ntopology-refresh-secs = 2\n[kafka.options]\n{options}\
             [zone]\nproviders = [\"ec2\"]\nec2-endpoint = \"{imds}\"\n\
             [[streams]]\nname = \"app\"\npaths = [\"{d}/logs/*.log\"]\ntopic = \"{topic}\"\npartitioning = \"{p}\"\nbatch-lines = {lines}\n",
            d = adir.display(),
            extra = self.agent_extra,
            b = world.kafka.bootstrap(),
            imds = imds.endpoint(),
            topic = self.topic,
            p = if self.zone_aware { "zone-aware" } else { "random" },
            lines = self.batch_lines,
            options = self.options(),
        );
        let process = self.launch("zonal-agent", &config, &text, adir.join("agent.log"))?;
        Ok(Node { name, zone, http: format!("127.0.0.1:{port}"), dir: adir, process })
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
