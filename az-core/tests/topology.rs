//! Topology against a 3-zone, 6-broker testkit cluster: racks, leaders, replicas, ISR, and a
//! leader move seen after a refresh.

use std::sync::Arc;
use std::time::Duration;

use az_core::TopologyWatcher;
use az_core::topology::{TopicInfo, WatchOptions, fetch};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use testkit::{KafkaCluster, KafkaSpec, zone_specs};

fn cluster() -> anyhow::Result<KafkaCluster> {
    let racks = zone_specs(3).into_iter().map(|z| z.id).collect();
    Ok(KafkaCluster::start(&KafkaSpec { racks, brokers_per_zone: 2 })?)
}

fn consumer(bootstrap: &str) -> anyhow::Result<BaseConsumer> {
    Ok(ClientConfig::new().set("bootstrap.servers", bootstrap).set("group.id", "topology-test").create()?)
}

#[test]
fn every_rack_leader_and_replica() -> anyhow::Result<()> {
    let kafka = cluster()?;
    kafka.create_topic("logs", 12)?;
    let client = consumer(&kafka.bootstrap())?;
    let topo = fetch(client.client(), &["logs".to_owned(), "absent".to_owned()], Duration::from_secs(10), 1)?;

    let racks: Vec<(i32, Option<&str>)> = topo.brokers.values().map(|b| (b.id, b.rack.as_deref())).collect();
    let want: Vec<(i32, Option<String>)> = kafka.broker_racks().into_iter().map(|(id, r)| (id, Some(r))).collect();
    assert_eq!(racks.len(), 6);
    for ((id, rack), (wid, wrack)) in racks.iter().zip(&want) {
        assert_eq!((id, *rack), (wid, wrack.as_deref()));
    }
    assert!(topo.brokers.values().all(|b| (b.host == "127.0.0.1" || b.host == "localhost") && b.port > 0));

    let leaders = kafka.leaders("logs")?;
    let replicas = kafka.replicas("logs")?;
    let parts = topo.partitions("logs").ok_or_else(|| anyhow::anyhow!("logs missing"))?;
    assert_eq!(parts.len(), 12);
    for p in parts {
        assert_eq!(p.leader, leaders.get(&p.id).copied(), "leader of {}", p.id);
        assert_eq!(Some(&p.replicas), replicas.get(&p.id), "replicas of {}", p.id);
        assert_eq!(p.replicas.len(), 3);
        // The mock's ISR is its replica list.
        assert_eq!(p.isr, p.replicas);
        // One replica per zone, and leaders pinned round-robin over zones.
        let mut zones: Vec<&str> = p.replicas.iter().filter_map(|&r| topo.rack_of(r)).collect();
        zones.sort_unstable();
        assert_eq!(zones, ["use1-az1", "use1-az2", "use1-az3"]);
        assert_eq!(topo.leader_rack("logs", p.id), Some(kafka.zones()[p.id as usize % 3].as_str()));
    }
    assert!(matches!(topo.topics.get("absent"), Some(TopicInfo::Missing(_))), "{:?}", topo.topics.get("absent"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_sees_a_moved_leader() -> anyhow::Result<()> {
    let kafka = cluster()?;
    kafka.create_topic("moving", 3)?;
    let client = Arc::new(consumer(&kafka.bootstrap())?);
    let watcher = TopologyWatcher::start(
        client,
        WatchOptions { topics: vec!["moving".into()], interval: Duration::from_secs(3600), ..Default::default() },
    );
    let first = watcher.wait_for(Duration::from_secs(15), |t| t.is_fetched()).await;
    assert!(first.is_fetched(), "no topology: {:?}", watcher.status());
    let before = first.partition("moving", 0).and_then(|p| p.leader).ok_or_else(|| anyhow::anyhow!("no leader"))?;
    let replicas = kafka.replicas("moving")?;
    let target =
        replicas[&0].iter().copied().find(|&b| b != before).ok_or_else(|| anyhow::anyhow!("no other replica"))?;
    kafka.move_leader("moving", 0, target)?;

    // The interval is an hour, so only an on-demand refresh can show the move.
    let after = watcher.refresh(Duration::from_secs(15)).await;
    assert!(after.generation > first.generation);
    assert_eq!(after.partition("moving", 0).and_then(|p| p.leader), Some(target));
    assert_ne!(after.leader_rack("moving", 0), first.leader_rack("moving", 0));
    Ok(())
}

/// Each topic has an id of its own (base64 of 16 bytes), the same at every ask; an unknown topic
/// has none.
#[test]
fn topics_have_ids_of_their_own() -> anyhow::Result<()> {
    let kafka = cluster()?;
    kafka.create_topic("ids.a", 2)?;
    kafka.create_topic("ids.b", 2)?;
    let c = consumer(&kafka.bootstrap())?;
    let topics = vec!["ids.a".to_owned(), "ids.b".to_owned(), "ids.none".to_owned()];
    let ids = az_core::topology::topic_ids(c.client(), &topics, Duration::from_secs(10))?;
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert_ne!(ids["ids.a"], ids["ids.b"]);
    assert!(ids.values().all(|id| id.len() == 22), "{ids:?}");
    assert_eq!(az_core::topology::topic_ids(c.client(), &topics, Duration::from_secs(10))?, ids);
    Ok(())
}
