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
    // A zone's bootstrap list: its brokers only, as the cluster advertises them.
    let all: Vec<String> = kafka.bootstrap().split(',').map(str::to_owned).collect();
    let in_a = kafka.bootstrap_in("a")?;
    let in_a: Vec<&str> = in_a.split(',').collect();
    assert_eq!(in_a.len(), 2, "{in_a:?}");
    assert!(in_a.iter().all(|a| all.iter().any(|b| b == a)), "{in_a:?} not in {all:?}");
    assert!(kafka.bootstrap_in("c").is_err());
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

/// A client that does not retry, so each injected fault meets one request.
fn s3_client_no_retry(s3: &S3Server) -> aws_sdk_s3::Client {
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(s3.endpoint())
        .region(Region::new(s3.region().to_owned()))
        .credentials_provider(Credentials::new(s3.access_key(), s3.secret_key(), None, None, "testkit"))
        .force_path_style(true)
        .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled())
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

#[tokio::test]
async fn s3_faults_fail_cut_and_delay_requests_then_stop() -> anyhow::Result<()> {
    let s3 = S3Server::start()?;
    s3.create_bucket("logs")?;
    let client = s3_client_no_retry(&s3);
    let put = |key: &'static str| {
        client.put_object().bucket("logs").key(key).body(ByteStream::from(vec![b'x'; 64 * 1024])).send()
    };

    // 5xx: the next two requests, whatever they are, then normal service.
    s3.fail_next_requests(2, 503);
    for _ in 0..2 {
        let err = put("a").await.expect_err("an injected 503");
        let status = err.raw_response().map(|r| r.status().as_u16());
        assert_eq!(status, Some(503), "{err:?}");
    }
    put("a").await?;
    assert_eq!(s3.pending_faults(), 0);

    // A cut: the connection drops halfway through the body, with no response; nothing is stored.
    s3.cut_next_writes(1);
    let err = put("b").await.expect_err("a cut upload");
    assert!(err.raw_response().is_none(), "a cut connection has no response: {err:?}");
    assert!(!s3.list_keys("logs")?.contains(&"b".to_owned()));
    put("b").await?;

    // Latency: every request waits first.
    s3.set_latency(300);
    let started = std::time::Instant::now();
    client.head_object().bucket("logs").key("a").send().await?;
    assert!(started.elapsed() >= Duration::from_millis(300));
    s3.set_latency(0);
    assert_eq!(s3.list_keys("logs")?, vec!["a".to_owned(), "b".to_owned()]);
    Ok(())
}

/// AWS decides a conditional PUT when the write completes: of two creates of one key, the one
/// whose body arrives first wins, and the other is refused although it started first. (A server
/// that checks at the start lets the slow one replace the fast one's object.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_conditional_puts_are_decided_when_they_complete() -> anyhow::Result<()> {
    let s3 = S3Server::start()?;
    s3.create_bucket("logs")?;
    let client = s3_client_no_retry(&s3);
    s3.set_upload_rate(100 * 1024);
    let create = |body: Vec<u8>| {
        client.put_object().bucket("logs").key("k").if_none_match("*").body(ByteStream::from(body)).send()
    };
    // The slow one (about 1.5 s of body) reaches the server first; the quick one (0.2 s) ends
    // first.
    let slow = tokio::spawn(create(vec![b's'; 150 * 1024]));
    tokio::task::block_in_place(|| {
        testkit::wait_until("the slow create to reach the server", Duration::from_secs(10), || {
            (s3.paced_requests() == 1).then_some(())
        })
    })?;
    create(vec![b'q'; 20 * 1024]).await?;
    let slow = slow.await?;
    let err = slow.expect_err("the slow create must be refused: the object exists when it completes");
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(412), "{err:?}");
    let stored = std::fs::read(s3.root().join("logs/k"))?;
    assert!(stored.iter().all(|b| *b == b'q') && stored.len() == 20 * 1024, "the quick object was replaced");
    Ok(())
}

#[tokio::test]
async fn etcd_restarts_on_its_ports_with_its_data() -> anyhow::Result<()> {
    let mut etcd = Etcd::start()?;
    let mut client = etcd_client::Client::connect([etcd.endpoint()], None).await?;
    client.put("/zonal/kept", "yes", None).await?;
    etcd.pause()?;
    etcd.restart()?;
    let mut client = etcd_client::Client::connect([etcd.endpoint()], None).await?;
    let resp = client.get("/zonal/kept", None).await?;
    assert_eq!(resp.kvs().first().map(|kv| kv.value().to_vec()).as_deref(), Some(&b"yes"[..]));
    Ok(())
}

#[test]
fn kafka_counts_the_requests_it_receives_by_api_key() -> anyhow::Result<()> {
    use rdkafka::consumer::{BaseConsumer, Consumer as _};
    let kafka = KafkaCluster::start(&KafkaSpec { racks: vec!["a".into()], brokers_per_zone: 1 })?;
    assert!(kafka.requests().is_empty(), "nothing is recorded before tracking starts");
    kafka.track_requests();
    let consumer: BaseConsumer = kafka.client_config().create()?;
    consumer.fetch_metadata(None, Duration::from_secs(10))?;
    let counts = kafka.requests();
    // ApiVersions (18) opens the connection, Metadata (3) is what was asked.
    assert!(counts.get(&18).is_some_and(|n| *n >= 1), "{counts:?}");
    assert!(counts.get(&3).is_some_and(|n| *n >= 1), "{counts:?}");
    Ok(())
}
