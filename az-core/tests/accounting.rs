//! Cross-zone accounting end to end: a producer in zone use1-az1 (learned from its own fake
//! IMDS) writes to its local partitions, then to all partitions; the cross-zone share computed
//! from librdkafka statistics is ~0 and ~2/3.

use std::sync::Arc;
use std::time::Duration;

use az_core::zone::{DiscoveryConfig, Env};
use az_core::{
    Provider, Purpose, StatsContext, TopologyWatcher, WatchOptions, ZoneMatcher, ZoneTraffic, discover, select,
};
use rdkafka::ClientConfig;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use testkit::{MetadataBehaviour, MetadataServer, World, WorldSpec, wait_until_async};

const MESSAGES: usize = 3000;
const SIZE: usize = 1024;

async fn produce(
    bootstrap: &str,
    topic: &str,
    partitions: &[i32],
    world_topology: &TopologyWatcher,
    zone: &az_core::Zone,
) -> anyhow::Result<ZoneTraffic> {
    let context = StatsContext::default();
    let traffic = context.traffic.clone();
    let producer: Arc<ThreadedProducer<StatsContext>> = Arc::new(
        ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("statistics.interval.ms", "100")
            .set("linger.ms", "5")
            .set("acks", "all")
            .create_with_context(context)?,
    );
    let payload = vec![b'x'; SIZE];
    for i in 0..MESSAGES {
        let p = partitions[i % partitions.len()];
        let mut record = BaseRecord::<(), [u8]>::to(topic).payload(&payload[..]).partition(p);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((e, r)) if e.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::QueueFull) => {
                    producer.poll(Duration::from_millis(10));
                    record = r;
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
    }
    producer.flush(Duration::from_secs(30))?;
    let topo = world_topology.current();
    let matcher = ZoneMatcher::default();
    // Statistics arrive every 100 ms; wait until they account for every byte produced.
    let want = (MESSAGES * SIZE) as u64;
    let report = wait_until_async("statistics covering all produced bytes", Duration::from_secs(20), || {
        let r = traffic.report(&topo, Some(zone), &matcher);
        async move { (r.same_zone.tx + r.cross_zone.tx >= want).then_some(r) }
    })
    .await?;
    Ok(report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_partitions_cross_nothing_all_partitions_cross_two_thirds() -> anyhow::Result<()> {
    let world = World::start(&WorldSpec { etcd: false, s3: false, ..Default::default() })?;
    world.kafka.create_topic("acct", 12)?;
    let bootstrap = world.kafka.bootstrap();

    // The client learns its zone the cloud way, from zone 0's IMDS.
    let imds = MetadataServer::start(world.zones[0].clone(), MetadataBehaviour::Ec2Only)?;
    let cfg =
        DiscoveryConfig { providers: vec![Provider::Ec2], ec2_endpoint: Some(imds.endpoint()), ..Default::default() };
    let zone =
        discover(&cfg, &Env::fixed::<&str, &str>([])).await.zone.ok_or_else(|| anyhow::anyhow!("zone not found"))?;
    assert_eq!(zone.id.as_deref(), Some("use1-az1"));

    let meta: Arc<rdkafka::consumer::BaseConsumer> =
        Arc::new(ClientConfig::new().set("bootstrap.servers", &bootstrap).set("group.id", "acct").create()?);
    let watcher = TopologyWatcher::start(meta, WatchOptions { topics: vec!["acct".into()], ..Default::default() });
    let topo = watcher.wait_for(Duration::from_secs(15), |t| t.is_fetched()).await;
    let local = select(&topo, "acct", Some(&zone), &ZoneMatcher::default(), Purpose::Produce);
    assert!(local.is_local(), "{local:?}");
    assert_eq!(local.partitions, vec![0, 3, 6, 9]);
    let all: Vec<i32> = (0..12).collect();

    let aware = produce(&bootstrap, "acct", &local.partitions, &watcher, &zone).await?;
    let unaware = produce(&bootstrap, "acct", &all, &watcher, &zone).await?;
    println!("zone-aware: {aware:?} share {:.3}", aware.cross_zone_share());
    println!("zone-unaware: {unaware:?} share {:.3}", unaware.cross_zone_share());
    assert!(aware.cross_zone_share() < 0.05, "zone-aware cross-zone share {:.3}", aware.cross_zone_share());
    let share = unaware.cross_zone_share();
    assert!((share - 2.0 / 3.0).abs() < 0.06, "zone-unaware cross-zone share {share:.3}");
    Ok(())
}
