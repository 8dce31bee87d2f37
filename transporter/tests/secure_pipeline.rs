//! The whole pipeline against listeners that really require TLS (with a client certificate whose
//! key has a password) and SASL/SCRAM over TLS: agent -> Kafka (zstd) -> transporter fleet -> S3,
//! every line once. Secrets come from files and environment variables and appear in no output;
//! a wrong password stops both programs at once with a message that names the login. Amazon
//! MSK's IAM login (OAUTHBEARER with SigV4-signed tokens) carries the same pipeline while every
//! session is closed as its token expires.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{BUCKET, FleetSpec, Res, Worker};
use testkit::process::{Process, ProcessSpec};
use testkit::{Security, World, WorldSpec};
use zonal_agent::config::{AgentConfig, Compression, StreamConfig};

const PASSWORD: &str = "Zonal-SCRAM-pw-93f1";

/// The agent binary, built beside this package's binary by the workspace build.
fn agent_bin() -> Res<PathBuf> {
    let p = Path::new(env!("CARGO_BIN_EXE_zonal-transporter")).with_file_name("zonal-agent");
    anyhow::ensure!(p.exists(), "{} is missing: build the workspace (cargo build --workspace)", p.display());
    Ok(p)
}

fn world(security: Security) -> Res<World> {
    let w = World::start(&WorldSpec { security, ..WorldSpec::default() })?;
    if let Some(s3) = &w.s3 {
        s3.create_bucket(BUCKET)?;
    }
    w.kafka.create_topic("logs", 6)?;
    Ok(w)
}

/// The cluster's client options with `secret` replaced by an indirection (`-file` or `-env`).
fn options_with(world: &World, secret: &str, indirection: (&str, &str)) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> =
        world.kafka.client_options().iter().filter(|(k, _)| k != secret).cloned().collect();
    out.push((format!("{secret}{}", indirection.0), indirection.1.to_owned()));
    out
}

/// The agent's configuration: one stream of zstd batches into `logs`, the zone from the first
/// zone's metadata server, the given Kafka options. `StreamConfig` has no `Default`, so serde
/// fills its optional fields in from a table of the required ones.
fn write_agent_config(world: &World, dir: &Path, options: &[(String, String)], port: u16) -> Res<PathBuf> {
    std::fs::create_dir_all(dir.join("logs"))?;
    let defaults: StreamConfig = toml::toml! { name = "" paths = [] topic = "" }.try_into()?;
    let stream = StreamConfig {
        name: "app".to_owned(),
        paths: vec![format!("{}/logs/*.log", dir.display())],
        topic: "logs".to_owned(),
        compression: Compression::Zstd,
        batch_lines: 100,
        linger_ms: 5,
        ..defaults
    };
    let mut config = AgentConfig {
        checkpoint_dir: dir.join("checkpoints"),
        poll_interval_ms: 50,
        checkpoint_interval_ms: 100,
        streams: vec![stream],
        ..AgentConfig::default()
    };
    config.http.listen = ([127, 0, 0, 1], port).into();
    config.kafka.bootstrap_servers = world.kafka.bootstrap();
    config.kafka.options = options.iter().cloned().collect();
    config.zone.providers = vec![az_core::Provider::Ec2];
    config.zone.ec2_endpoint = Some(world.metadata[0].endpoint());
    let path = dir.join("agent.toml");
    std::fs::write(&path, toml::to_string(&config)?)?;
    Ok(path)
}

fn spawn_agent(config: &Path, log: &Path, env: &[(&str, &str)]) -> Res<Process> {
    let mut spec = ProcessSpec::new(agent_bin()?, &["run".as_ref(), "-c".as_ref(), config.as_os_str()], log)
        .env("RUST_LOG", "info,rdkafka=warn")
        .env_remove("ZONAL_ZONE");
    for (k, v) in env {
        spec = spec.env(k, *v);
    }
    Ok(Process::start(spec)?)
}

/// Every value in the bucket, counted.
fn values_in_s3(world: &World) -> Res<BTreeMap<String, usize>> {
    let s3 = world.s3.as_ref().ok_or_else(|| anyhow::anyhow!("no s3"))?;
    let mut out = BTreeMap::new();
    for k in common::object_keys(world)? {
        let body = zstd::stream::decode_all(&std::fs::read(s3.root().join(BUCKET).join(&k))?[..])?;
        for line in body.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let v: serde_json::Value = serde_json::from_slice(line)?;
            *out.entry(v["value"].as_str().unwrap_or_default().to_owned()).or_insert(0) += 1;
        }
    }
    Ok(out)
}

/// Runs agent and a fleet of three through the secured cluster and checks every line arrives
/// once; returns everything the programs printed or served, for the secret checks.
fn pipeline(world: &World, dir: &Path, agent_options: &[(String, String)], fleet: &FleetSpec) -> Res<String> {
    pipeline_with(world, dir, agent_options, &[], fleet, &|| Ok(()))
}

/// As [`pipeline`], with more environment variables for the agent, and `halfway` called
/// between the first half of the lines and the second (the programs running meanwhile).
fn pipeline_with(
    world: &World,
    dir: &Path,
    agent_options: &[(String, String)],
    agent_env: &[(&str, &str)],
    fleet: &FleetSpec,
    halfway: &dyn Fn() -> Res,
) -> Res<String> {
    let port = testkit::net::free_port()?;
    let config = write_agent_config(world, dir, agent_options, port)?;
    let check = Command::new(agent_bin()?)
        .args(["check", "-c"])
        .arg(&config)
        .envs(agent_env.iter().map(|(k, v)| (k.to_owned(), v.to_owned())))
        .output()?;
    let mut printed = format!("{}{}", String::from_utf8_lossy(&check.stdout), String::from_utf8_lossy(&check.stderr));
    anyhow::ensure!(check.status.success(), "zonal-agent check failed: {printed}");
    let agent_log = dir.join("agent.log");
    let _agent = spawn_agent(&config, &agent_log, agent_env)?;
    let http = format!("127.0.0.1:{port}");
    testkit::wait_until("the agent to be ready through the secured listener", Duration::from_secs(30), || {
        testkit::http::get(&http, "/readyz").ok().filter(|(c, _)| *c == 200)
    })
    .map_err(|e| anyhow::anyhow!("{e}: {}", std::fs::read_to_string(&agent_log).unwrap_or_default()))?;

    let workers = (0..3)
        .map(|z| Worker::start(world, &dir.join("fleet"), &format!("w{z}"), Some(z), fleet))
        .collect::<Res<Vec<_>>>()?;
    let refs: Vec<&Worker> = workers.iter().collect();
    common::wait_converged(&refs, 6, 3)?;

    let lines: Vec<String> = (0..3000).map(|i| format!("secure line {i:05} {}", "z".repeat(120))).collect();
    for (i, chunk) in lines.chunks(500).enumerate() {
        if i == 3 {
            halfway()?;
        }
        let mut text = chunk.join("\n");
        text.push('\n');
        use std::io::Write;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("logs/app.log"))?
            .write_all(text.as_bytes())?;
    }
    let seen = testkit::wait_until("every line in S3", Duration::from_secs(90), || {
        values_in_s3(world).ok().filter(|v| lines.iter().all(|l| v.contains_key(l)))
    })
    .map_err(|e| {
        let logs: Vec<String> = workers.iter().map(|w| format!("--- {}\n{}", w.id, w.log_tail())).collect();
        anyhow::anyhow!("{e}\n{}", logs.join("\n"))
    })?;
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    anyhow::ensure!(twice.is_empty(), "{} lines twice in S3, e.g. {:?}", twice.len(), twice.first());
    assert_eq!(seen.len(), lines.len());

    let mut scrapes = testkit::http::get(&http, "/metrics")?.1;
    for path in ["/status", "/metrics", "/readyz"] {
        printed.push_str(&testkit::http::get(&http, path)?.1);
    }
    for w in &workers {
        scrapes.push_str(&w.get("/metrics")?.1);
    }
    monitoring_queries_name_only_exported_metrics(&scrapes)?;
    printed.push_str(&std::fs::read_to_string(&agent_log)?);
    for w in &workers {
        for path in ["/status", "/metrics", "/assignment"] {
            printed.push_str(&w.get(path)?.1);
        }
        printed.push_str(&std::fs::read_to_string(&w.log)?);
        let check = Command::new(env!("CARGO_BIN_EXE_zonal-transporter"))
            .args(["check", "-c"])
            .arg(dir.join("fleet").join(format!("{}.toml", w.id)))
            .envs(fleet.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()?;
        printed.push_str(&String::from_utf8_lossy(&check.stdout));
        printed.push_str(&String::from_utf8_lossy(&check.stderr));
        anyhow::ensure!(check.status.success(), "zonal-transporter check failed: {printed}");
    }
    Ok(printed)
}

/// Every query of the Grafana dashboard and of the PrometheusRule parses as PromQL and names
/// only metrics that the running programs export (the master's included).
fn monitoring_queries_name_only_exported_metrics(scrapes: &str) -> Res {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("deploy/grafana/zonal-dashboard.json"))?)?;
    let mut queries = testkit::promql::grafana_queries(&dashboard);
    anyhow::ensure!(queries.len() >= 20, "the dashboard has {} queries", queries.len());
    let rules = std::fs::read_to_string(root.join("deploy/kubernetes/components/prometheus-operator/monitoring.yaml"))?;
    let mut alerts = 0;
    for doc in serde_yaml::Deserializer::from_str(&rules) {
        let v = <serde_yaml::Value as serde::Deserialize>::deserialize(doc)?;
        for group in v["spec"]["groups"].as_sequence().into_iter().flatten() {
            for rule in group["rules"].as_sequence().into_iter().flatten() {
                queries.push(rule["expr"].as_str().unwrap_or_default().to_owned());
                alerts += 1;
            }
        }
    }
    anyhow::ensure!(alerts >= 8, "the PrometheusRule has {alerts} alerts");
    let unknown = testkit::promql::unknown_metrics(&queries, scrapes)?;
    anyhow::ensure!(unknown.is_empty(), "queries name metrics the programs do not export: {unknown:#?}");

    // docs/metrics.md names each exported family (a counter by its `_total` series) and nothing else.
    let reference = std::fs::read_to_string(root.join("docs/metrics.md"))?;
    let named: std::collections::BTreeSet<&str> =
        reference.split('`').skip(1).step_by(2).filter(|w| w.starts_with("zonal_")).collect();
    let offered = testkit::promql::exported(scrapes);
    // A histogram is named by its family (its series end in `_bucket`, `_sum`, `_count`).
    let stale: Vec<&&str> =
        named.iter().filter(|n| !offered.contains(**n) && !offered.contains(&format!("{n}_bucket"))).collect();
    anyhow::ensure!(stale.is_empty(), "docs/metrics.md names metrics nobody exports: {stale:?}");
    let undocumented: Vec<String> = scrapes
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| {
            let (name, kind) = l.split_once(' ')?;
            Some(if kind == "counter" { format!("{name}_total") } else { name.to_owned() })
        })
        .filter(|n| !named.contains(n.as_str()))
        .collect();
    anyhow::ensure!(undocumented.is_empty(), "docs/metrics.md does not document {undocumented:?}");
    Ok(())
}

#[test]
fn sasl_scram_over_tls_end_to_end_with_zstd_and_no_secret_in_any_output() -> Res {
    let world = world(Security::sasl_ssl("zonal", PASSWORD))?;
    let dir = tempfile::tempdir()?;
    // The agent reads the password from a file (a Kubernetes Secret), the fleet from a variable.
    let pw_file = dir.path().join("kafka-password");
    std::fs::write(&pw_file, format!("{PASSWORD}\n"))?;
    let agent_options = options_with(&world, "sasl.password", ("-file", &pw_file.display().to_string()));
    let fleet = FleetSpec {
        kafka_options: options_with(&world, "sasl.password", ("-env", "ZONAL_TEST_KAFKA_PASSWORD")),
        env: vec![("ZONAL_TEST_KAFKA_PASSWORD".into(), PASSWORD.into())],
        ..FleetSpec::default()
    };
    let printed = pipeline(&world, dir.path(), &agent_options, &fleet)?;
    assert!(!printed.contains(PASSWORD), "the password appears in an output");
    assert!(printed.contains("sasl.password-file"), "check shows where the secret comes from");
    Ok(())
}

#[test]
fn mutual_tls_end_to_end_with_a_password_protected_key() -> Res {
    let world = world(Security::mutual_tls())?;
    let dir = tempfile::tempdir()?;
    let key_pw = testkit::tls::CLIENT_KEY_PASSWORD;
    let pw_file = dir.path().join("key-password");
    std::fs::write(&pw_file, key_pw)?;
    let agent_options = options_with(&world, "ssl.key.password", ("-file", &pw_file.display().to_string()));
    let fleet = FleetSpec {
        kafka_options: options_with(&world, "ssl.key.password", ("-env", "ZONAL_TEST_KEY_PASSWORD")),
        env: vec![("ZONAL_TEST_KEY_PASSWORD".into(), key_pw.into())],
        ..FleetSpec::default()
    };
    let printed = pipeline(&world, dir.path(), &agent_options, &fleet)?;
    assert!(!printed.contains(key_pw), "the key password appears in an output");
    Ok(())
}

#[test]
fn a_wrong_password_stops_both_programs_with_a_clear_message() -> Res {
    let world = world(Security::sasl_ssl("zonal", PASSWORD))?;
    let dir = tempfile::tempdir()?;
    let wrong = "wrong-pw-5e2a";
    let options = options_with(&world, "sasl.password", ("-env", "ZONAL_TEST_KAFKA_PASSWORD"));
    let config = write_agent_config(&world, dir.path(), &options, testkit::net::free_port()?)?;
    let log = dir.path().join("agent.log");
    let mut agent = spawn_agent(&config, &log, &[("ZONAL_TEST_KAFKA_PASSWORD", wrong)])?;
    let code = agent.wait_exit(Duration::from_secs(30))?;
    let text = std::fs::read_to_string(&log)?;
    assert!(code.is_some_and(|c| c != 0), "{text}");
    assert!(text.contains("refused the login of sasl.username \"zonal\""), "{text}");
    assert!(!text.contains(wrong), "{text}");

    let fleet = FleetSpec {
        kafka_options: options,
        env: vec![("ZONAL_TEST_KAFKA_PASSWORD".into(), wrong.into())],
        ..FleetSpec::default()
    };
    let worker = Worker::start(&world, &dir.path().join("fleet"), "w0", Some(0), &fleet)?;
    testkit::wait_until("the worker to stop", Duration::from_secs(30), || {
        let text = std::fs::read_to_string(&worker.log).ok()?;
        text.contains("refused the login of sasl.username \"zonal\"").then_some(())
    })
    .map_err(|e| anyhow::anyhow!("{e}: {}", worker.log_tail()))?;
    let text = std::fs::read_to_string(&worker.log)?;
    assert!(!text.contains(wrong), "{text}");
    Ok(())
}

/// Amazon MSK's IAM login: both programs sign OAUTHBEARER tokens with the AWS credentials chain
/// (the environment's keys here); the fronts check each token's SigV4 signature with their own
/// implementation and close every session when its token expires (after 10 s here), as MSK
/// does. The pipeline completes only if every client refreshed its token before it expired:
/// a client that did not is refused at its next connection, and a refused login stops it.
#[test]
fn msk_iam_login_end_to_end_with_tokens_refreshed_before_they_expire() -> Res {
    let (key, secret) = testkit::s3::test_credentials();
    let world = world(Security::msk_iam(&key, &secret))?;
    let dir = tempfile::tempdir()?;
    let mut options = world.kafka.msk_iam_client_options();
    // librdkafka refreshes a token at 80% of its life, looking once a second: 10 s leaves it
    // a second to spare.
    options.push(("sasl.aws-msk-iam.token-lifetime-secs".into(), "10".into()));
    // The chain finds the environment's keys; instance metadata is never asked.
    // IRSA and instance credentials always carry a session token; the signature covers it.
    let agent_env = [
        ("AWS_SESSION_TOKEN", "zonal-test-session/token+1"),
        ("AWS_ACCESS_KEY_ID", key.as_str()),
        ("AWS_SECRET_ACCESS_KEY", secret.as_str()),
        ("AWS_CONFIG_FILE", "/nonexistent"),
        ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ];
    let fleet = FleetSpec {
        kafka_options: options.clone(),
        env: vec![("AWS_EC2_METADATA_DISABLED".into(), "true".into())],
        ..FleetSpec::default()
    };
    // Halfway through the lines, the run goes on until the agent's producer and every worker's
    // consumer have logged in again with a token signed after their first one expired: each
    // session had been closed by then and opened again with a refreshed token.
    let long_lived = ["zonal-agent-app", "zonal-transporter-w0", "zonal-transporter-w1", "zonal-transporter-w2"];
    let refreshed = || -> Res {
        testkit::wait_until(
            "every long-lived client to log in with a refreshed token",
            Duration::from_secs(40),
            || {
                let logins = world.kafka.sasl_logins();
                long_lived
                    .iter()
                    .all(|id| {
                        let mine: Vec<_> = logins
                            .iter()
                            .filter(|l| l.client_id.as_deref() == Some(id))
                            .filter_map(|l| l.expires)
                            .collect();
                        let (first, last) = (mine.iter().min(), mine.iter().max());
                        first.zip(last).is_some_and(|(f, l)| *l > *f + Duration::from_secs(10))
                    })
                    .then_some(())
            },
        )
        .map_err(|e| {
            let ids: std::collections::BTreeSet<_> =
                world.kafka.sasl_logins().into_iter().filter_map(|l| l.client_id).collect();
            anyhow::anyhow!("{e}: clients that logged in: {ids:?}")
        })?;
        Ok(())
    };
    let printed = pipeline_with(&world, dir.path(), &options, &agent_env, &fleet, &refreshed)?;
    assert!(!printed.contains(&secret), "the secret key appears in an output");
    let logins = world.kafka.sasl_logins();
    let refused: Vec<_> = logins.iter().filter(|l| !l.accepted).collect();
    assert!(refused.is_empty(), "{} of {} logins refused, e.g. {:?}", refused.len(), logins.len(), refused.first());
    assert!(logins.iter().all(|l| l.principal.as_deref() == Some(key.as_str())), "{logins:?}");
    Ok(())
}
