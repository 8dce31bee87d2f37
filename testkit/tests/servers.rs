//! The testkit's servers answer real clients: etcd-client put/get, aws-sdk-s3 put/get with
//! credential checks, and the Kafka cluster's broker down/up.

use std::time::Duration;

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::primitives::ByteStream;
use testkit::{Etcd, KafkaCluster, KafkaSpec, S3Server, World, WorldSpec, wait_until};

#[tokio::test]
async fn etcd_answers_etcd_client() -> anyhow::Result<()> {
    let etcd = Etcd::start()?;
    let mut client = etcd_client::Client::connect([etcd.endpoint()], None).await?;
    client.put("/zonal/test", "hello", None).await?;
    let resp = client.get("/zonal/test", None).await?;
    let value = resp.kvs().first().map(|kv| kv.value().to_vec());
    assert_eq!(value.as_deref(), Some(&b"hello"[..]));
    Ok(())
}

#[test]
fn etcd_is_killed_on_drop() -> anyhow::Result<()> {
    let etcd = Etcd::start()?;
    let endpoint = etcd.endpoint();
    let port: u16 = endpoint.rsplit(':').next().unwrap_or_default().parse()?;
    drop(etcd);
    wait_until("etcd port to close", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err().then_some(())
    })?;
    Ok(())
}

fn s3_client(s3: &S3Server, secret: &str) -> aws_sdk_s3::Client {
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(s3.endpoint())
        .region(Region::new(s3.region().to_owned()))
        .credentials_provider(Credentials::new(s3.access_key(), secret, None, None, "testkit"))
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

#[tokio::test]
async fn s3_answers_aws_sdk_and_checks_credentials() -> anyhow::Result<()> {
    let s3 = S3Server::start()?;
    let client = s3_client(&s3, s3.secret_key());
    client.create_bucket().bucket("logs").send().await?;
    client
        .put_object()
        .bucket("logs")
        .key("topic/dt=2026-11-22/part-0.json")
        .body(ByteStream::from_static(b"line one\nline two\n"))
        .send()
        .await?;
    let got = client.get_object().bucket("logs").key("topic/dt=2026-11-22/part-0.json").send().await?;
    let body = got.body.collect().await?.into_bytes();
    assert_eq!(&body[..], b"line one\nline two\n");
    assert_eq!(s3.list_keys("logs")?, vec!["topic/dt=2026-11-22/part-0.json".to_owned()]);

    let wrong = s3_client(&s3, "not-the-secret");
    let err = wrong.get_object().bucket("logs").key("topic/dt=2026-11-22/part-0.json").send().await;
    assert!(err.is_err(), "a wrong secret must be refused");
    Ok(())
}

#[test]
fn kafka_racks_and_broker_down_up() -> anyhow::Result<()> {
    let kafka = KafkaCluster::start(&KafkaSpec { racks: vec!["a".into(), "b".into()], brokers_per_zone: 2 })?;
    assert_eq!(
        kafka.broker_racks().into_iter().collect::<Vec<_>>(),
        vec![(1, "a".into()), (2, "b".into()), (3, "a".into()), (4, "b".into())]
    );
    kafka.create_topic("t", 4)?;
    let leaders = kafka.leaders("t")?;
    for (p, leader) in &leaders {
        assert_eq!(kafka.rack_of(*leader), Some(if p % 2 == 0 { "a" } else { "b" }), "partition {p}");
    }
    let addr = kafka.bootstrap().split(',').next().unwrap_or_default().to_owned();
    kafka.broker_down(1)?;
    wait_until("broker 1 to refuse connections", Duration::from_secs(10), || {
        std::net::TcpStream::connect(&addr).is_err().then_some(())
    })?;
    kafka.broker_up(1)?;
    wait_until("broker 1 to accept connections", Duration::from_secs(10), || {
        std::net::TcpStream::connect(&addr).ok().map(|_| ())
    })?;
    Ok(())
}

#[test]
fn world_prints_every_endpoint() -> anyhow::Result<()> {
    let world = World::start(&WorldSpec::default())?;
    let keys: Vec<String> = world.endpoints().into_iter().map(|(k, _)| k).collect();
    for k in ["KAFKA_BOOTSTRAP", "KAFKA_BROKER_6_RACK", "ETCD_ENDPOINT", "S3_ENDPOINT", "ZONE_2_METADATA_ENDPOINT"] {
        assert!(keys.iter().any(|x| x == k), "{k} missing from {keys:?}");
    }
    Ok(())
}
