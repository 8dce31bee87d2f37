//! Shared helpers of the agent's integration tests: run the real `zonal-agent` binary against
//! the testkit world, write logs, read Kafka back.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

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

/// The agent's command line, as every test runs it.
fn command(config: &Path, log: &Path) -> ProcessSpec {
    ProcessSpec::new(env!("CARGO_BIN_EXE_zonal-agent"), &["run".as_ref(), "-c".as_ref(), config.as_os_str()], log)
        .env("RUST_LOG", "info,rdkafka=warn")
        .env_remove("ZONAL_ZONE")
}

/// Settings of one agent in a test.
pub struct AgentSpec {
    pub bootstrap: String,
    pub dir: PathBuf,
    pub glob: String,
    pub topic: String,
    /// Extra TOML inside the `[zone]` table.
    pub zone: String,
    /// Extra TOML inside the stream table.
    pub stream_extra: String,
    /// Extra top-level TOML (before any table).
    pub top_extra: String,
}

impl AgentSpec {
    pub fn new(bootstrap: &str, dir: &Path, topic: &str) -> AgentSpec {
        AgentSpec {
            bootstrap: bootstrap.to_owned(),
            dir: dir.to_owned(),
            glob: format!("{}/logs/*.log", dir.display()),
            topic: topic.to_owned(),
            zone: "providers = []".to_owned(),
            stream_extra: String::new(),
            top_extra: String::new(),
        }
    }

    pub fn imds(mut self, endpoint: &str) -> AgentSpec {
        self.zone = format!("providers = [\"ec2\"]\nec2-endpoint = \"{endpoint}\"");
        self
    }
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
        let port = free_port()?;
        let config = spec.dir.join("agent.toml");
        let text = format!(
            r#"checkpoint-dir = "{dir}/checkpoints"
poll-interval-ms = 50
checkpoint-interval-ms = 100
{top}
[http]
listen = "127.0.0.1:{port}"
[kafka]
bootstrap-servers = "{bootstrap}"
topology-refresh-secs = 1
[kafka.options]
"statistics.interval.ms" = "200"
[zone]
{zone}
[[streams]]
name = "app"
paths = ["{glob}"]
topic = "{topic}"
batch-lines = 50
linger-ms = 5
{extra}
"#,
            dir = spec.dir.display(),
            bootstrap = spec.bootstrap,
            zone = spec.zone,
            glob = spec.glob,
            topic = spec.topic,
            extra = spec.stream_extra,
            top = spec.top_extra,
        );
        std::fs::write(&config, text)?;
        let log = spec.dir.join("agent.log");
        let process = Process::start(command(&config, &log))?;
        Ok(Agent { process, http: format!("http://127.0.0.1:{port}"), config, log })
    }

    /// Starts an agent from an `agent.toml` already in `dir` (written by [`Agent::start`] and
    /// edited by the test).
    pub fn start_with_config(dir: &Path) -> Res<Agent> {
        let config = dir.join("agent.toml");
        let text = std::fs::read_to_string(&config)?;
        let listen = text
            .lines()
            .find_map(|l| l.strip_prefix("listen = \""))
            .and_then(|l| l.strip_suffix('"'))
            .ok_or_else(|| anyhow::anyhow!("no listen address in {}", config.display()))?
            .to_owned();
        let log = dir.join("agent.log");
        let process = Process::start(command(&config, &log))?;
        let agent = Agent { process, http: format!("http://{listen}"), config, log };
        agent.wait_ready()?;
        Ok(agent)
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
    pub fn metric(&self, name: &str, labels: &[&str]) -> Res<f64> {
        Ok(testkit::http::metric(&self.metrics()?, name, labels))
    }

    /// Waits until the stream tails `path` and every file it tails is acknowledged up to its
    /// size on disk (files that are gone: up to the size last seen).
    pub fn wait_caught_up(&self, path: &Path, what: &str) -> Res {
        testkit::wait_until(what, Duration::from_secs(60), || {
            let s = self.status().ok()?;
            let files = s["streams"][0]["files"].as_array()?.clone();
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

/// Every record of a topic: (partition, key, payload), read from the beginning.
/// One Kafka record as the tests see it: (partition, key, payload).
pub type Record = (i32, Option<Vec<u8>>, Vec<u8>);

pub fn read_topic(bootstrap: &str, topic: &str) -> Res<Vec<Record>> {
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
            out.push((m.partition(), m.key().map(<[u8]>::to_vec), m.payload().unwrap_or_default().to_vec()));
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
