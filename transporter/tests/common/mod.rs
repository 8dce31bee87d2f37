//! Shared helpers of the transporter's integration tests: a fleet of real `zonal-transporter`
//! processes against the testkit world (mock Kafka with racks, real etcd, embedded S3), a
//! producer, and an exactly-once check that reads S3 back.
//!
//! A worker's configuration is the typed [`TransporterConfig`] the binary reads, built from the
//! [`FleetSpec`] and serialized; a test changes a field the spec does not name with
//! [`FleetSpec::edit`], so that a renamed field breaks the build, not a test at run time.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use testkit::net::free_port;
use testkit::process::{Process, ProcessSpec};
use testkit::{World, WorldSpec};
use zonal_transporter::config::{Format, TransporterConfig};

pub type Res<T = ()> = anyhow::Result<T>;

pub const BUCKET: &str = "zonal";

/// The world every transporter test uses.
pub fn world() -> Res<World> {
    let w = World::start(&WorldSpec::default())?;
    if let Some(s3) = &w.s3 {
        s3.create_bucket(BUCKET)?;
    }
    Ok(w)
}

/// One worker process, killed on drop.
pub struct Worker {
    pub id: String,
    pub zone: usize,
    process: Process,
    pub http: String,
    pub log: PathBuf,
}

/// A change to a worker's configuration beyond the fields of [`FleetSpec`]; shared, so that a
/// spec stays `Clone` and every worker of a fleet gets the same change.
pub type ConfigEdit = Arc<dyn Fn(&mut TransporterConfig) + Send + Sync>;

/// Fleet settings.
#[derive(Clone)]
pub struct FleetSpec {
    pub topics: Vec<String>,
    pub grace_secs: u64,
    pub lease_ttl_secs: u64,
    pub max_age_ms: u64,
    pub max_records: u64,
    /// Changes applied last to every worker's configuration, in order (see [`FleetSpec::edit`]).
    pub edits: Vec<ConfigEdit>,
    /// `kafka.topic-pattern`, when set.
    pub topic_pattern: Option<String>,
    /// More `kafka.options` entries (TLS, SASL).
    pub kafka_options: Vec<(String, String)>,
    /// More environment variables of the worker process.
    pub env: Vec<(String, String)>,
}

impl Default for FleetSpec {
    fn default() -> Self {
        FleetSpec {
            topics: vec!["logs".into()],
            grace_secs: 3,
            lease_ttl_secs: 3,
            max_age_ms: 400,
            max_records: 300,
            edits: Vec::new(),
            topic_pattern: None,
            kafka_options: Vec::new(),
            env: Vec::new(),
        }
    }
}

impl FleetSpec {
    /// Adds a change to every worker's configuration:
    /// `FleetSpec::default().edit(|c| c.s3.compression = Compression::None)`.
    pub fn edit(mut self, edit: impl Fn(&mut TransporterConfig) + Send + Sync + 'static) -> FleetSpec {
        self.edits.push(Arc::new(edit));
        self
    }

    /// The configuration of worker `id` in `zone` (index into the world's zones; `None`: no
    /// zone provider, so the zone is unknown), working in `dir` and serving HTTP on `port`.
    pub fn config(
        &self,
        world: &World,
        dir: &Path,
        id: &str,
        zone: Option<usize>,
        port: u16,
    ) -> Res<TransporterConfig> {
        let etcd = world.etcd.as_ref().ok_or_else(|| anyhow::anyhow!("no etcd"))?;
        let s3 = world.s3.as_ref().ok_or_else(|| anyhow::anyhow!("no s3"))?;
        let mut c = TransporterConfig::default();
        c.kafka.bootstrap_servers = world.kafka.bootstrap();
        c.kafka.topics.clone_from(&self.topics);
        c.kafka.topic_pattern.clone_from(&self.topic_pattern);
        c.kafka.topology_refresh_secs = 1;
        c.kafka.options.insert("statistics.interval.ms".to_owned(), "200".to_owned());
        c.kafka.options.extend(self.kafka_options.iter().cloned());
        c.etcd.endpoints = vec![etcd.endpoint()];
        c.etcd.cluster = "test".to_owned();
        c.etcd.lease_ttl_secs = self.lease_ttl_secs.try_into()?;
        c.zone.providers = Vec::new();
        if let Some(z) = zone {
            c.zone.providers = vec![az_core::Provider::Ec2];
            c.zone.ec2_endpoint = Some(world.metadata[z].endpoint());
        }
        c.worker.id = Some(id.to_owned());
        c.worker.grace_period_secs = self.grace_secs;
        c.worker.buffer_dir = dir.join("buffers");
        c.s3.bucket = BUCKET.to_owned();
        c.s3.prefix = "out".to_owned();
        c.s3.endpoint = Some(s3.endpoint());
        c.s3.path_style = true;
        c.s3.format = Format::Json;
        c.roll.max_age_ms = self.max_age_ms;
        c.roll.max_records = self.max_records;
        c.http.listen = ([127, 0, 0, 1], port).into();
        for edit in &self.edits {
            edit(&mut c);
        }
        Ok(c)
    }
}

/// The transporter's command line with `config`: the S3 credentials and the spec's variables
/// in its environment, and no ambient zone or AWS profile.
fn command(world: &World, config: &Path, log: &Path, spec: &FleetSpec) -> Res<ProcessSpec> {
    let s3 = world.s3.as_ref().ok_or_else(|| anyhow::anyhow!("no s3"))?;
    let mut command = ProcessSpec::new(
        env!("CARGO_BIN_EXE_zonal-transporter"),
        &["run".as_ref(), "-c".as_ref(), config.as_os_str()],
        log,
    )
    .env("RUST_LOG", "info,rdkafka=warn")
    .env_remove("ZONAL_ZONE");
    for (k, v) in aws_env(s3) {
        command = command.env(k, v);
    }
    for (k, v) in &spec.env {
        command = command.env(k, v.clone());
    }
    Ok(command)
}

/// The test S3 server's credentials and no others: nothing from the developer's own AWS
/// profile reaches a worker or a command.
fn aws_env(s3: &testkit::S3Server) -> [(&'static str, String); 5] {
    [
        ("AWS_CONFIG_FILE", "/nonexistent".to_owned()),
        ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent".to_owned()),
        ("AWS_ACCESS_KEY_ID", s3.access_key().to_owned()),
        ("AWS_SECRET_ACCESS_KEY", s3.secret_key().to_owned()),
        ("AWS_REGION", s3.region().to_owned()),
    ]
}

/// Runs the `zonal-transporter` command `args[0]` with the configuration of worker `id` in
/// `dir` and the rest of `args`, as an operator would (`offsets`, `audit`, `status`).
pub fn cli(world: &World, dir: &Path, id: &str, args: &[&str]) -> Res<std::process::Output> {
    let s3 = world.s3.as_ref().ok_or_else(|| anyhow::anyhow!("no s3"))?;
    let (command, rest) = args.split_first().ok_or_else(|| anyhow::anyhow!("no command"))?;
    Ok(std::process::Command::new(env!("CARGO_BIN_EXE_zonal-transporter"))
        .args([command, "-c"])
        .arg(dir.join(format!("{id}.toml")))
        .args(rest)
        .envs(aws_env(s3))
        .output()?)
}

impl Worker {
    /// Starts worker `id` in `zone` (index into the world's zones; `None`: unknown zone), with
    /// its configuration in `dir/<id>.toml` and its log in `dir/<id>.log`.
    pub fn start(world: &World, dir: &Path, id: &str, zone: Option<usize>, spec: &FleetSpec) -> Res<Worker> {
        let config = spec.config(world, dir, id, zone, free_port()?)?;
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!("{id}.toml"));
        std::fs::write(&path, toml::to_string(&config)?)?;
        let log = dir.join(format!("{id}.log"));
        let process = Process::start(command(world, &path, &log, spec)?)?;
        Ok(Worker {
            id: id.to_owned(),
            zone: zone.unwrap_or(usize::MAX),
            process,
            http: config.http.listen.to_string(),
            log,
        })
    }

    pub fn kill9(&mut self) -> Res {
        Ok(self.process.kill9()?)
    }

    /// Waits up to `within` for the process to exit by itself; its exit code.
    pub fn wait_exit(&mut self, within: Duration) -> Res<Option<i32>> {
        Ok(self.process.wait_exit(within)?)
    }

    pub fn stop(&mut self) -> Res<Option<i32>> {
        Ok(self.process.stop(Duration::from_secs(30))?)
    }

    pub fn restart(&mut self) -> Res {
        Ok(self.process.restart()?)
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// Sends a signal (SIGSTOP / SIGCONT to stall and resume it).
    pub fn signal(&self, sig: i32) -> Res {
        Ok(self.process.signal(sig)?)
    }

    pub fn get(&self, path: &str) -> Res<(u16, String)> {
        Ok(testkit::http::get(&self.http, path)?)
    }

    pub fn status(&self) -> Res<serde_json::Value> {
        Ok(serde_json::from_str(&self.get("/status")?.1)?)
    }

    pub fn owned(&self) -> Vec<String> {
        self.status().ok().and_then(|s| s["owned"].as_object().map(|o| o.keys().cloned().collect())).unwrap_or_default()
    }

    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Res<f64> {
        Ok(testkit::http::metric(&self.get("/metrics")?.1, name, labels))
    }

    pub fn log_tail(&self) -> String {
        self.process.log_tail(20)
    }
}

/// Six workers, two per zone (ids `w<zone>-<k>`), returned once the master has assigned every
/// partition of the spec's topics in zone over all six.
pub fn fleet(world: &World, dir: &std::path::Path, spec: &FleetSpec) -> Res<Vec<Worker>> {
    let mut out = Vec::new();
    for z in 0..3 {
        for k in 0..2 {
            out.push(Worker::start(world, dir, &format!("w{z}-{k}"), Some(z), spec)?);
        }
    }
    let mut partitions = 0;
    for t in &spec.topics {
        partitions += world.kafka.leaders(t)?.len();
    }
    wait_converged(&out.iter().collect::<Vec<_>>(), partitions, out.len()).map_err(|e| {
        // Which worker is missing, and what it said.
        let logs: Vec<String> = out.iter().map(|w| format!("--- {}\n{}", w.id, w.log_tail())).collect();
        anyhow::anyhow!("{e}\n{}", logs.join("\n"))
    })?;
    Ok(out)
}

/// Produces `per_partition` records to every partition; values are `<tag>-p<partition>-<i>`
/// padded to ~210 bytes, so payload dominates protocol overhead in byte counts.
pub fn produce(world: &World, topic: &str, partitions: i32, per_partition: usize, tag: &str) -> Res {
    let p: BaseProducer = world.kafka.client_config().set("linger.ms", "5").create()?;
    for part in 0..partitions {
        for i in 0..per_partition {
            let v = format!("{tag}-p{part}-{i} {}", "x".repeat(200));
            testkit::kafka::send_waiting(&p, BaseRecord::<(), String>::to(topic).payload(&v).partition(part));
        }
    }
    p.flush(Duration::from_secs(30))?;
    Ok(())
}

/// (topic, partition, offset) -> times seen in S3.
pub type Seen = BTreeMap<(String, i64, i64), usize>;

/// The keys of the objects the transporters wrote (their control folder, the store probe's and
/// the deployment marker's, left out, and the dead-letter objects: [`dead_letter_keys`]).
pub fn object_keys(world: &World) -> Res<Vec<String>> {
    let s3 = world.s3.as_ref().ok_or_else(|| anyhow::anyhow!("no s3"))?;
    let control = format!("/{}/", zonal_transporter::upload::probe::PROBE_DIR);
    Ok(s3.list_keys(BUCKET)?.into_iter().filter(|k| !k.contains(&control) && !k.contains("/_dead-letter/")).collect())
}

/// The keys of the dead-letter objects (the default `parquet.dead-letter-folder`).
pub fn dead_letter_keys(world: &World) -> Res<Vec<String>> {
    let s3 = world.s3.as_ref().ok_or_else(|| anyhow::anyhow!("no s3"))?;
    Ok(s3.list_keys(BUCKET)?.into_iter().filter(|k| k.contains("/_dead-letter/")).collect())
}

/// The size of each object the transporters wrote, by key.
pub fn object_sizes(world: &World) -> Res<Vec<u64>> {
    let s3 = world.s3.as_ref().ok_or_else(|| anyhow::anyhow!("no s3"))?;
    Ok(object_keys(world)?
        .iter()
        .map(|k| std::fs::metadata(s3.root().join(BUCKET).join(k)).map_or(0, |m| m.len()))
        .collect())
}

/// A client of the world's etcd.
pub async fn etcd_client(world: &World) -> Res<etcd_client::Client> {
    let etcd = world.etcd.as_ref().ok_or_else(|| anyhow::anyhow!("etcd"))?;
    Ok(etcd_client::Client::connect([etcd.endpoint()], None).await?)
}

/// Waits for a worker expected to stop by itself; its exit code and its whole log.
pub fn exited_with(w: &mut Worker) -> Res<(Option<i32>, String)> {
    let code = w.wait_exit(Duration::from_secs(60)).map_err(|e| anyhow::anyhow!("{e}\n{}", w.log_tail()))?;
    Ok((code, std::fs::read_to_string(&w.log)?))
}

/// Every record in S3: (topic, partition, offset) -> times seen, plus the object count.
pub fn s3_records(world: &World) -> Res<(Seen, usize)> {
    let s3 = world.s3.as_ref().ok_or_else(|| anyhow::anyhow!("no s3"))?;
    let keys = object_keys(world)?;
    let mut out = BTreeMap::new();
    for k in &keys {
        if k.ends_with(".parquet") {
            for (topic, partition, offset) in parquet_offsets(&s3.root().join(BUCKET).join(k))? {
                *out.entry((topic, partition, offset)).or_insert(0) += 1;
            }
            continue;
        }
        let body = std::fs::read(s3.root().join(BUCKET).join(k))?;
        let text = if k.ends_with(".zst") { zstd::stream::decode_all(&body[..])? } else { body };
        for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let v: serde_json::Value = serde_json::from_slice(line)?;
            let key = (
                v["topic"].as_str().unwrap_or_default().to_owned(),
                v["partition"].as_i64().unwrap_or(-1),
                v["offset"].as_i64().unwrap_or(-1),
            );
            *out.entry(key).or_insert(0) += 1;
        }
    }
    Ok((out, keys.len()))
}

/// (topic, partition, offset) of every row of a Parquet object, read with the parquet crate.
pub fn parquet_offsets(path: &Path) -> Res<Vec<(String, i64, i64)>> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Int32Type, Int64Type};
    let reader =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(path)?)?.build()?;
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch?;
        let col = |name: &str| batch.column_by_name(name).ok_or_else(|| anyhow::anyhow!("no column {name}"));
        let (topic, partition, offset) = (col("topic")?, col("partition")?, col("offset")?);
        let (topic, partition, offset) =
            (topic.as_string::<i32>(), partition.as_primitive::<Int32Type>(), offset.as_primitive::<Int64Type>());
        for i in 0..batch.num_rows() {
            out.push((topic.value(i).to_owned(), i64::from(partition.value(i)), offset.value(i)));
        }
    }
    Ok(out)
}

/// Waits until S3 holds `expected` distinct records, then checks none is there twice.
pub fn wait_exactly_once(
    world: &World,
    expected: usize,
    workers: &[&Worker],
) -> Res<BTreeMap<(String, i64, i64), usize>> {
    let got = testkit::wait_until("every record in S3", Duration::from_secs(90), || {
        let (recs, _) = s3_records(world).ok()?;
        (recs.len() >= expected).then_some(recs)
    })
    .map_err(|e| {
        let (recs, n) = s3_records(world).unwrap_or_default();
        let logs: Vec<String> = workers.iter().map(|w| format!("--- {}\n{}", w.id, w.log_tail())).collect();
        anyhow::anyhow!("{e}: {} of {expected} records in {n} objects\n{}", recs.len(), logs.join("\n"))
    })?;
    // The count matching is not the end: a roll in flight could still land a record a second
    // time. Wait until every partition the workers own has committed past its last record in
    // S3 (nothing of it is in flight any more), then count again.
    let mut last: BTreeMap<String, i64> = BTreeMap::new();
    for (topic, partition, offset) in got.keys() {
        let e = last.entry(format!("{topic}/{partition}")).or_insert(-1);
        *e = (*e).max(*offset);
    }
    testkit::wait_until("every owned partition to commit past its records", Duration::from_secs(60), || {
        workers
            .iter()
            .all(|w| {
                let Ok(status) = w.status() else { return true };
                status["owned"].as_object().into_iter().flatten().all(|(tp, o)| {
                    o["buffered"].as_u64() == Some(0)
                        && last.get(tp).is_none_or(|l| o["committed"].as_i64().is_some_and(|c| c > *l))
                })
            })
            .then_some(())
    })
    .map_err(|e| {
        let status: Vec<String> =
            workers.iter().map(|w| format!("--- {}: {:?}\n{}", w.id, w.status().ok(), w.log_tail())).collect();
        anyhow::anyhow!("{e}; last records in S3 {last:?}\n{}", status.join("\n"))
    })?;
    let (got, _) = s3_records(world)?;
    let dups: Vec<_> = got.iter().filter(|(_, c)| **c > 1).collect();
    anyhow::ensure!(dups.is_empty(), "{} records duplicated in S3, e.g. {:?}", dups.len(), dups.first());
    anyhow::ensure!(got.len() == expected, "{} records in S3, expected {expected}", got.len());
    Ok(got)
}

/// The assignment as the master serves it.
pub fn assignment(workers: &[&Worker]) -> Option<serde_json::Value> {
    workers.iter().find_map(|w| {
        let (code, body) = w.get("/assignment").ok()?;
        (code == 200).then(|| serde_json::from_str(&body).ok()).flatten()
    })
}

/// Partition -> worker from an assignment view.
pub fn owners_of(view: &serde_json::Value) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Some(zones) = view["zones"].as_object() {
        for workers in zones.values() {
            for (w, parts) in workers.as_object().into_iter().flatten() {
                for p in parts.as_array().into_iter().flatten() {
                    out.insert(p["partition"].as_str().unwrap_or_default().to_owned(), w.clone());
                }
            }
        }
    }
    out
}

/// Waits until the master's assignment covers `partitions` partitions over `workers` workers
/// with no cross-zone partition: the fleet has converged.
pub fn wait_converged(fleet: &[&Worker], partitions: usize, workers: usize) -> Res<serde_json::Value> {
    testkit::wait_until("the assignment to converge in zone", Duration::from_secs(30), || {
        let v = assignment(fleet)?;
        let owners = owners_of(&v);
        let distinct: std::collections::BTreeSet<&String> = owners.values().collect();
        (v["cross_zone"] == 0 && owners.len() == partitions && distinct.len() == workers && v["waiting"] == 0)
            .then_some(v)
    })
    .map_err(|e| anyhow::anyhow!("{e}: last view {:?}", assignment(fleet)))
}
