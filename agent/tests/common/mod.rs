//! Shared helpers of the agent's integration tests: run the real `zonal-agent` binary against
//! the testkit world, write logs, read Kafka back.
//!
//! A test describes its agent with an [`AgentSpec`], whose `config` is the typed
//! [`AgentConfig`] the binary reads: a test changes a field with [`AgentSpec::edit`] or
//! [`AgentSpec::edit_stream`], or, for an agent already written to disk, with
//! [`Agent::rewrite_config`]. A renamed field then breaks the build, not a test at run time.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use zonal_agent::config::{AgentConfig, StreamConfig};

pub type Res<T = ()> = anyhow::Result<T>;

use testkit::net::free_port;
use testkit::process::{Process, ProcessSpec};

/// A running agent process, killed on drop.
pub struct Agent {
    process: Process,
    pub http: String,
    pub config: PathBuf,
    pub log: PathBuf,
}

/// The agent's command line, as every test runs it; after `wrapper` (a program and its
/// arguments, which then runs the agent: `prlimit`, `setpriv`) when the test gives one.
fn command(config: &Path, log: &Path, wrapper: &[String], bin: Option<&Path>) -> ProcessSpec {
    let bin = bin.unwrap_or(Path::new(env!("CARGO_BIN_EXE_zonal-agent")));
    let agent = [bin.as_os_str(), "run".as_ref(), "-c".as_ref(), config.as_os_str()];
    let spec = match wrapper {
        [] => ProcessSpec::new(bin, &agent[1..], log),
        [program, args @ ..] => {
            let mut all: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
            all.extend(agent);
            ProcessSpec::new(program, &all, log)
        }
    };
    spec.env("RUST_LOG", "info,rdkafka=warn").env_remove("ZONAL_ZONE")
}

/// Settings of one agent in a test: where it works and the configuration it is started with.
/// The HTTP port is chosen when the agent is launched, so that a spec launched twice never
/// reuses a port another process may have taken since.
pub struct AgentSpec {
    pub dir: PathBuf,
    /// The configuration written to `dir/agent.toml`, apart from `http.listen`.
    pub config: AgentConfig,
    /// A program the agent runs under, with its arguments (`prlimit --nofile=128:128`,
    /// `setpriv --reuid=...`); none by default.
    pub wrapper: Vec<String>,
    /// The agent's binary, when not the one cargo built (a copy another user can run).
    pub bin: Option<PathBuf>,
}

/// A stream with every optional field at the agent's own default. `StreamConfig` has no
/// `Default`, so serde fills the optional fields in from a table of the required ones; the struct
/// literal then names the required fields, so that renaming one of them breaks the build.
pub fn stream(name: &str, glob: &str, topic: &str) -> StreamConfig {
    let required = toml::toml! { name = "" paths = [] topic = "" };
    let defaults: StreamConfig = required.try_into().expect("a stream needs only a name, paths and a topic");
    StreamConfig { name: name.to_owned(), paths: vec![glob.to_owned()], topic: topic.to_owned(), ..defaults }
}

impl AgentSpec {
    /// An agent tailing `dir/logs/*.log` into `topic`, polling and checkpointing often and
    /// refreshing the topology every second, with no zone provider (so the zone is unknown).
    pub fn new(bootstrap: &str, dir: &Path, topic: &str) -> AgentSpec {
        let mut config = AgentConfig {
            checkpoint_dir: dir.join("checkpoints"),
            poll_interval_ms: 50,
            checkpoint_interval_ms: 100,
            streams: vec![StreamConfig {
                batch_lines: 50,
                linger_ms: 5,
                ..stream("app", &format!("{}/logs/*.log", dir.display()), topic)
            }],
            ..AgentConfig::default()
        };
        config.kafka.bootstrap_servers = bootstrap.to_owned();
        config.kafka.topology_refresh_secs = 1;
        config.kafka.options.insert("statistics.interval.ms".to_owned(), "200".to_owned());
        config.zone.providers = Vec::new();
        AgentSpec { dir: dir.to_owned(), config, wrapper: Vec::new(), bin: None }
    }

    /// The zone comes from the fake EC2 instance metadata service at `endpoint`.
    pub fn imds(self, endpoint: &str) -> AgentSpec {
        self.edit(|c| {
            c.zone.providers = vec![az_core::Provider::Ec2];
            c.zone.ec2_endpoint = Some(endpoint.to_owned());
        })
    }

    /// Changes the configuration: `spec.edit(|c| c.max_in_flight_bytes = 65536)`.
    pub fn edit(mut self, edit: impl FnOnce(&mut AgentConfig)) -> AgentSpec {
        edit(&mut self.config);
        self
    }

    /// Changes the one stream: `spec.edit_stream(|s| s.compression = Compression::None)`.
    pub fn edit_stream(self, edit: impl FnOnce(&mut StreamConfig)) -> AgentSpec {
        self.edit(|c| {
            if let Some(stream) = c.streams.first_mut() {
                edit(stream);
            }
        })
    }
}

/// Writes a configuration where the agent reads it.
fn write_config(path: &Path, config: &AgentConfig) -> Res {
    std::fs::write(path, toml::to_string(config)?)?;
    Ok(())
}

/// Reads the configuration at `path`, changes it with `edit` and writes it back; the next start
/// of an agent on it runs with the change.
pub fn rewrite_config(path: &Path, edit: impl FnOnce(&mut AgentConfig)) -> Res {
    let mut config: AgentConfig = toml::from_str(&std::fs::read_to_string(path)?)?;
    edit(&mut config);
    write_config(path, &config)
}

impl Agent {
    /// Writes the config and starts the agent; returns once it is ready.
    pub fn start(spec: &AgentSpec) -> Res<Agent> {
        let agent = Agent::launch(spec)?;
        agent.wait_ready()?;
        Ok(agent)
    }

    /// Writes the config and starts the agent without waiting for it to be ready (it may exit).
    pub fn launch(spec: &AgentSpec) -> Res<Agent> {
        std::fs::create_dir_all(spec.dir.join("logs"))?;
        let mut config = spec.config.clone();
        config.http.listen = ([127, 0, 0, 1], free_port()?).into();
        let path = spec.dir.join("agent.toml");
        write_config(&path, &config)?;
        let log = spec.dir.join("agent.log");
        let process = Process::start(command(&path, &log, &spec.wrapper, spec.bin.as_deref()))?;
        Ok(Agent { process, http: format!("http://{}", config.http.listen), config: path, log })
    }

    /// Starts an agent from an `agent.toml` already in `dir` (written by [`Agent::start`] and
    /// changed by the test with [`rewrite_config`]).
    pub fn start_with_config(dir: &Path) -> Res<Agent> {
        let path = dir.join("agent.toml");
        let config: AgentConfig = toml::from_str(&std::fs::read_to_string(&path)?)?;
        let log = dir.join("agent.log");
        let process = Process::start(command(&path, &log, &[], None))?;
        let agent = Agent { process, http: format!("http://{}", config.http.listen), config: path, log };
        agent.wait_ready()?;
        Ok(agent)
    }

    /// Changes the configuration file of this agent; a stopped or killed agent picks the change
    /// up at its next [`Agent::restart`].
    pub fn rewrite_config(&self, edit: impl FnOnce(&mut AgentConfig)) -> Res {
        rewrite_config(&self.config, edit)
    }

    /// Waits for the agent to exit by itself; returns its exit code.
    pub fn wait_exit(&mut self, within: Duration) -> Res<Option<i32>> {
        Ok(self.process.wait_exit(within)?)
    }

    pub fn wait_ready(&self) -> Res {
        let url = format!("{}/readyz", self.http);
        testkit::wait_until("agent to become ready", Duration::from_secs(30), || {
            http_get(&url).ok().filter(|(code, _)| *code == 200).map(|_| ())
        })
        .map_err(|e| anyhow::anyhow!("{e}; agent log:\n{}", self.log_tail()))
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    pub fn log_tail(&self) -> String {
        self.process.log_tail(30)
    }

    /// SIGKILL, no chance to flush or checkpoint.
    pub fn kill9(&mut self) -> Res {
        Ok(self.process.kill9()?)
    }

    /// SIGTERM and wait for a clean exit; returns the exit status code.
    pub fn stop(&mut self) -> Res<Option<i32>> {
        Ok(self.process.stop(Duration::from_secs(40))?)
    }

    /// Sends a signal (SIGSTOP / SIGCONT to stall and resume it).
    pub fn signal(&self, sig: i32) -> Res {
        Ok(self.process.signal(sig)?)
    }

    /// Starts the agent again (same config, same log) and waits until it is ready.
    pub fn restart(&mut self) -> Res {
        self.process.restart()?;
        self.wait_ready()
    }

    pub fn status(&self) -> Res<serde_json::Value> {
        let (code, body) = http_get(&format!("{}/status", self.http))?;
        anyhow::ensure!(code == 200, "status {code}");
        Ok(serde_json::from_str(&body)?)
    }

    pub fn metrics(&self) -> Res<String> {
        Ok(http_get(&format!("{}/metrics", self.http))?.1)
    }

    /// Sum of a metric's samples whose label text contains every given fragment.
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Res<f64> {
        Ok(testkit::http::metric(&self.metrics()?, name, labels))
    }

    /// Waits until the stream tails `path` and every file it tails is acknowledged up to its
    /// size on disk (files that are gone: up to the size last seen).
    pub fn wait_caught_up(&self, path: &Path, what: &str) -> Res {
        self.wait_stream_caught_up(0, path, what)
    }

    /// [`Agent::wait_caught_up`] for the stream at `index` in the configuration.
    pub fn wait_stream_caught_up(&self, index: usize, path: &Path, what: &str) -> Res {
        testkit::wait_until(what, Duration::from_secs(60), || {
            let s = self.status().ok()?;
            let files = s["streams"][index]["files"].as_array()?.clone();
            use std::os::unix::fs::MetadataExt;
            let meta = std::fs::metadata(path).ok()?;
            // The entry for the file now at `path` (by inode, not by name: a deleted file of the
            // same name may still be listed) must be acknowledged up to its size on disk.
            let has = files.iter().any(|f| {
                f["ino"].as_u64() == Some(meta.ino())
                    && f["dev"].as_u64() == Some(meta.dev())
                    && f["acked_offset"].as_u64() == Some(meta.len())
            });
            let done = files.iter().all(|f| f["acked_offset"].as_u64() == f["size"].as_u64());
            (has && done).then_some(())
        })
        .map_err(|e| anyhow::anyhow!("{e}; status: {:?}\nlog:\n{}", self.status().ok(), self.log_tail()))
    }

    /// Waits until the stream tails `path` at all.
    pub fn wait_tailing(&self, path: &Path) -> Res {
        let want = path.display().to_string();
        testkit::wait_until("agent to tail the file", Duration::from_secs(30), || {
            let s = self.status().ok()?;
            s["streams"][0]["files"].as_array()?.iter().any(|f| f["path"].as_str() == Some(want.as_str())).then_some(())
        })?;
        Ok(())
    }
}

/// GETs a URL of the agent's own server (`http://127.0.0.1:PORT/path`).
pub fn http_get(url: &str) -> Res<(u16, String)> {
    let rest = url.strip_prefix("http://").ok_or_else(|| anyhow::anyhow!("not http: {url}"))?;
    let (host, path) = rest.split_once('/').map(|(h, p)| (h, format!("/{p}"))).unwrap_or((rest, "/".into()));
    Ok(testkit::http::get(host, &path)?)
}

/// Appends lines to a file, creating it.
pub fn append(path: &Path, lines: impl IntoIterator<Item = String>) -> Res {
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    let mut buf = Vec::new();
    for l in lines {
        buf.extend_from_slice(l.as_bytes());
        buf.push(b'\n');
    }
    f.write_all(&buf)?;
    Ok(())
}

/// One Kafka record as the tests see it: (partition, key, payload).
pub type Record = (i32, Option<Vec<u8>>, Vec<u8>);

/// Every record of a topic: (partition, key, payload), read from the beginning.
pub fn read_topic(bootstrap: &str, topic: &str) -> Res<Vec<Record>> {
    read_topic_with(bootstrap, topic, |m| {
        (m.partition(), m.key().map(<[u8]>::to_vec), m.payload().unwrap_or_default().to_vec())
    })
}

/// Every record of a topic, read from the beginning, as `f` takes it from the message.
pub fn read_topic_with<T>(
    bootstrap: &str,
    topic: &str,
    mut f: impl FnMut(&rdkafka::message::BorrowedMessage<'_>) -> T,
) -> Res<Vec<T>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "agent-test-reader")
        .set("enable.auto.commit", "false")
        .create()?;
    let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let parts: Vec<i32> =
        md.topics().iter().filter(|t| t.name() == topic).flat_map(|t| t.partitions()).map(|p| p.id()).collect();
    let mut high = BTreeMap::new();
    let mut tpl = TopicPartitionList::new();
    for &p in &parts {
        let (lo, hi) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10))?;
        if hi > lo {
            high.insert(p, hi);
            tpl.add_partition_offset(topic, p, Offset::Beginning)?;
        }
    }
    consumer.assign(&tpl)?;
    let mut out = Vec::new();
    let mut pos: BTreeMap<i32, i64> = BTreeMap::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while high.iter().any(|(p, h)| pos.get(p).copied().unwrap_or(-1) + 1 < *h) {
        anyhow::ensure!(std::time::Instant::now() < deadline, "reading {topic} timed out at {pos:?} of {high:?}");
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            let m = m?;
            pos.insert(m.partition(), m.offset());
            out.push(f(&m));
        }
    }
    Ok(out)
}

/// Payloads as strings, counted.
pub fn counts(records: &[Record]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for (_, _, p) in records {
        *m.entry(String::from_utf8_lossy(p).into_owned()).or_insert(0) += 1;
    }
    m
}
