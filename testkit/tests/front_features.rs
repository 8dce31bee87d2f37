//! What the fronts add to the mock cluster, seen by real clients: a partition increase (the
//! partitions made visible later appear in the clients' next metadata and take records) and topic
//! configurations answered to DescribeConfigs.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use testkit::{KafkaCluster, KafkaSpec, Security};

fn cluster() -> anyhow::Result<KafkaCluster> {
    let spec = KafkaSpec { racks: vec!["use1-az1".into(), "use1-az2".into(), "use1-az3".into()], brokers_per_zone: 1 };
    Ok(KafkaCluster::start_secured(&spec, &Security::relay())?)
}

fn partitions_seen(cc: &ClientConfig, topic: &str) -> anyhow::Result<usize> {
    let consumer: BaseConsumer = cc.create()?;
    let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    Ok(md.topics().iter().find(|t| t.name() == topic).map_or(0, |t| t.partitions().len()))
}

#[test]
fn a_partition_increase_is_seen_by_clients_and_the_new_partitions_take_records() -> anyhow::Result<()> {
    let cluster = cluster()?;
    cluster.create_topic("grow", 6)?;
    cluster.set_visible_partitions("grow", Some(3))?;
    let cc = cluster.client_config();
    assert_eq!(partitions_seen(&cc, "grow")?, 3);
    // Debian's kcat, a separate process, sees the same through the wire.
    let out = Command::new("kcat").args(["-L", "-b", &cluster.bootstrap(), "-t", "grow"]).output()?;
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && listing.contains("topic \"grow\" with 3 partitions"), "{listing}");

    // The visible partitions take records; a producer that knows only them refuses partition 5
    // at once.
    let mut pc = cc.clone();
    pc.set("linger.ms", "5").set("topic.metadata.refresh.interval.ms", "500");
    let producer: BaseProducer = pc.create()?;
    for p in 0..3 {
        let before = format!("before {p}");
        producer.send(BaseRecord::<(), str>::to("grow").payload(&before).partition(p)).map_err(|(e, _)| e)?;
    }
    producer.flush(Duration::from_secs(10))?;
    testkit::wait_until("the producer to know the topic", Duration::from_secs(10), || {
        let refused = producer.send(BaseRecord::<(), str>::to("grow").payload("early").partition(5)).is_err();
        refused.then_some(())
    })?;

    // The increase: the same producer learns it from its next metadata and writes there.
    cluster.set_visible_partitions("grow", Some(6))?;
    assert_eq!(partitions_seen(&cc, "grow")?, 6);
    testkit::wait_until("the producer to accept partition 5", Duration::from_secs(20), || {
        producer.send(BaseRecord::<(), str>::to("grow").payload("after").partition(5)).ok()
    })?;
    producer.flush(Duration::from_secs(10))?;
    let got = first_records(&cc, "grow", &[0, 1, 2, 5])?;
    let want = [(0, "before 0"), (1, "before 1"), (2, "before 2"), (5, "after")];
    assert_eq!(got, want.map(|(p, v)| (p, v.as_bytes().to_vec())).into_iter().collect::<BTreeMap<_, _>>());
    Ok(())
}

/// The first record of each of `partitions`, read by a fresh consumer.
fn first_records(cc: &ClientConfig, topic: &str, partitions: &[i32]) -> anyhow::Result<BTreeMap<i32, Vec<u8>>> {
    let mut c = cc.clone();
    c.set("group.id", "front-features-reader");
    let consumer: BaseConsumer = c.create()?;
    let mut tpl = TopicPartitionList::new();
    for &p in partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let mut got = BTreeMap::new();
    testkit::wait_until("the first record of every partition", Duration::from_secs(20), || {
        while let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = m.ok()?;
            got.entry(m.partition()).or_insert_with(|| m.payload().unwrap_or_default().to_vec());
        }
        (got.len() == partitions.len()).then_some(())
    })?;
    Ok(got)
}

#[test]
fn visible_partitions_apply_behind_tls_and_sasl_too() -> anyhow::Result<()> {
    let spec = KafkaSpec { racks: vec!["use1-az1".into(), "use1-az2".into()], brokers_per_zone: 1 };
    let cluster = KafkaCluster::start_secured(&spec, &Security::sasl_ssl("alice", "secret"))?;
    cluster.create_topic("grow", 4)?;
    cluster.set_visible_partitions("grow", Some(1))?;
    assert_eq!(partitions_seen(&cluster.client_config(), "grow")?, 1);
    cluster.set_visible_partitions("grow", None)?;
    assert_eq!(partitions_seen(&cluster.client_config(), "grow")?, 4);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_configs_answers_the_topic_configuration() -> anyhow::Result<()> {
    let cluster = cluster()?;
    cluster.create_topic("sized", 3)?;
    cluster.set_topic_config("sized", "max.message.bytes", "1048588")?;
    let admin: AdminClient<DefaultClientContext> = cluster.client_config().create()?;
    let opts = AdminOptions::new().request_timeout(Some(Duration::from_secs(10))).broker_id(1);
    let asked = [ResourceSpecifier::Topic("sized"), ResourceSpecifier::Topic("other"), ResourceSpecifier::Broker(1)];
    let results = admin.describe_configs(&asked, &opts).await?;
    let sized = results[0].as_ref().map_err(|e| anyhow::anyhow!("{e:?}"))?;
    assert_eq!(sized.get("max.message.bytes").and_then(|e| e.value.as_deref()), Some("1048588"));
    // A topic without configured entries and a broker: no entries, no error.
    for other in &results[1..] {
        assert!(other.as_ref().map_err(|e| anyhow::anyhow!("{e:?}"))?.entries.is_empty());
    }
    // Set while clients run: the next request answers it.
    cluster.set_topic_config("sized", "retention.ms", "3600000")?;
    let results = admin.describe_configs(&asked[..1], &opts).await?;
    let sized = results[0].as_ref().map_err(|e| anyhow::anyhow!("{e:?}"))?;
    assert_eq!(sized.get("retention.ms").and_then(|e| e.value.as_deref()), Some("3600000"));
    assert_eq!(sized.entries.len(), 2);
    // Without fronts there is nothing to answer from: refused with a reason.
    let plain = KafkaCluster::start(&KafkaSpec { racks: vec!["z".into()], brokers_per_zone: 1 })?;
    assert!(plain.set_topic_config("sized", "max.message.bytes", "1").is_err());
    Ok(())
}
