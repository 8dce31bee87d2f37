//! What the fronts add to the mock cluster, seen by real clients: a partition increase (the
//! partitions made visible later appear in the clients' next metadata and take records) and topic
//! configurations answered to DescribeConfigs.

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
    assert!(listing.contains("with 3 partitions"), "{listing}");

    // A producer that knows only 3 partitions refuses partition 5 at once.
    let mut pc = cc.clone();
    pc.set("linger.ms", "5").set("topic.metadata.refresh.interval.ms", "500");
    let producer: BaseProducer = pc.create()?;
    producer.send(BaseRecord::<(), str>::to("grow").payload("before").partition(0)).map_err(|(e, _)| e)?;
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
    let mut c = cc.clone();
    c.set("group.id", "grow-reader");
    let consumer: BaseConsumer = c.create()?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("grow", 5, Offset::Beginning)?;
    consumer.assign(&tpl)?;
    let got = testkit::wait_until("the record on partition 5", Duration::from_secs(20), || {
        consumer.poll(Duration::from_millis(100)).and_then(|m| m.ok().map(|m| m.payload().map(<[u8]>::to_vec)))
    })?;
    assert_eq!(got.as_deref(), Some(&b"after"[..]));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_configs_answers_the_topic_configuration() -> anyhow::Result<()> {
    let cluster = cluster()?;
    cluster.create_topic("sized", 3)?;
    cluster.set_topic_config("sized", "max.message.bytes", "200000")?;
    let admin: AdminClient<DefaultClientContext> = cluster.client_config().create()?;
    let opts = AdminOptions::new().request_timeout(Some(Duration::from_secs(10))).broker_id(1);
    let results =
        admin.describe_configs(&[ResourceSpecifier::Topic("sized"), ResourceSpecifier::Topic("other")], &opts).await?;
    let sized = results[0].as_ref().map_err(|e| anyhow::anyhow!("{e:?}"))?;
    assert_eq!(sized.get("max.message.bytes").and_then(|e| e.value.as_deref()), Some("200000"));
    let other = results[1].as_ref().map_err(|e| anyhow::anyhow!("{e:?}"))?;
    assert!(other.entries.is_empty());
    // Without fronts there is nothing to answer from: refused with a reason.
    let plain = KafkaCluster::start(&KafkaSpec { racks: vec!["z".into()], brokers_per_zone: 1 })?;
    assert!(plain.set_topic_config("sized", "max.message.bytes", "1").is_err());
    Ok(())
}
