//! The secured mock cluster really requires what it advertises: TLS (and client certificates
//! when asked), SASL PLAIN and SCRAM over TLS with a wrong password refused; the real client
//! (rdkafka) and the reference client (Debian's kcat) carry zstd batches through it.

use std::process::Command;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use testkit::{KafkaCluster, KafkaSpec, Security};

fn spec() -> KafkaSpec {
    KafkaSpec { racks: vec!["use1-az1".into(), "use1-az2".into(), "use1-az3".into()], brokers_per_zone: 1 }
}

/// Produces `n` zstd-compressed records and reads them back with a fresh consumer.
fn round_trip(cluster: &KafkaCluster, cc: &ClientConfig, n: usize) -> anyhow::Result<usize> {
    cluster.create_topic("secure", 3)?;
    let mut pc = cc.clone();
    pc.set("compression.type", "zstd").set("linger.ms", "5");
    let producer: BaseProducer = pc.create()?;
    for i in 0..n {
        let v = format!("line {i}");
        producer
            .send(BaseRecord::<(), String>::to("secure").payload(&v).partition((i % 3) as i32))
            .map_err(|(e, _)| e)?;
    }
    producer.flush(Duration::from_secs(20))?;
    let mut c = cc.clone();
    c.set("group.id", "secure-reader").set("auto.offset.reset", "earliest");
    let consumer: BaseConsumer = c.create()?;
    consumer.subscribe(&["secure"])?;
    let mut got = 0;
    testkit::wait_until("records read back", Duration::from_secs(30), || {
        while let Some(m) = consumer.poll(Duration::from_millis(100)) {
            if m.ok()?.payload().is_some() {
                got += 1;
            }
        }
        (got >= n).then_some(())
    })?;
    Ok(got)
}

#[test]
fn tls_listener_carries_zstd_and_refuses_plaintext() -> anyhow::Result<()> {
    let cluster = KafkaCluster::start_secured(&spec(), &Security::tls())?;
    assert_eq!(round_trip(&cluster, &cluster.client_config(), 300)?, 300);
    // A plaintext client gets no metadata through a TLS listener.
    let plain: BaseConsumer = ClientConfig::new().set("bootstrap.servers", cluster.bootstrap()).create()?;
    assert!(plain.fetch_metadata(None, Duration::from_secs(3)).is_err());
    Ok(())
}

#[test]
fn mutual_tls_needs_the_client_certificate() -> anyhow::Result<()> {
    let cluster = KafkaCluster::start_secured(&spec(), &Security::mutual_tls())?;
    assert_eq!(round_trip(&cluster, &cluster.client_config(), 50)?, 50);
    let files = cluster.tls_files().ok_or_else(|| anyhow::anyhow!("no certificates"))?;
    let no_cert: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap())
        .set("security.protocol", "SSL")
        .set("ssl.ca.location", files.ca.display().to_string())
        .create()?;
    assert!(no_cert.fetch_metadata(None, Duration::from_secs(3)).is_err());
    Ok(())
}

#[test]
fn sasl_scram_and_plain_over_tls() -> anyhow::Result<()> {
    let cluster = KafkaCluster::start_secured(&spec(), &Security::sasl_ssl("alice", "alice-secret"))?;
    assert_eq!(round_trip(&cluster, &cluster.client_config(), 100)?, 100);
    for mechanism in ["SCRAM-SHA-256", "PLAIN"] {
        let mut cc = cluster.client_config();
        cc.set("sasl.mechanism", mechanism);
        let c: BaseConsumer = cc.create()?;
        c.fetch_metadata(None, Duration::from_secs(10)).map_err(|e| anyhow::anyhow!("{mechanism}: {e}"))?;
    }
    let mut wrong = cluster.client_config();
    wrong.set("sasl.password", "not-the-password");
    let c: BaseConsumer = wrong.create()?;
    assert!(c.fetch_metadata(None, Duration::from_secs(3)).is_err(), "a wrong password must be refused");
    Ok(())
}

#[test]
fn kcat_produces_and_consumes_zstd_over_sasl_ssl() -> anyhow::Result<()> {
    let cluster = KafkaCluster::start_secured(&spec(), &Security::sasl_ssl("bob", "bob-secret"))?;
    cluster.create_topic("kcat", 1)?;
    let mut args = vec!["-b".to_owned(), cluster.bootstrap()];
    for (k, v) in cluster.client_options() {
        args.push("-X".into());
        args.push(format!("{k}={v}"));
    }
    let mut produce = Command::new("kcat")
        .args(&args)
        .args(["-P", "-t", "kcat", "-p", "0", "-z", "zstd"])
        .stdin(std::process::Stdio::piped())
        .spawn()?;
    {
        use std::io::Write;
        let mut stdin = produce.stdin.take().ok_or_else(|| anyhow::anyhow!("no stdin"))?;
        for i in 0..20 {
            writeln!(stdin, "kcat line {i}")?;
        }
    }
    anyhow::ensure!(produce.wait()?.success(), "kcat -P failed");
    let out = Command::new("kcat")
        .args(&args)
        .args(["-C", "-t", "kcat", "-p", "0", "-o", "beginning", "-e", "-q"])
        .output()?;
    anyhow::ensure!(out.status.success(), "kcat -C failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout)?;
    assert_eq!(text.lines().count(), 20, "{text}");
    Ok(())
}
