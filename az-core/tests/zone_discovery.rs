//! Zone discovery against the testkit's fake metadata servers: each provider, the precedence
//! order, a hung provider (bounded time) and nothing reachable (unknown, fast).

use std::time::{Duration, Instant};

use az_core::zone::{DiscoveryConfig, EC2_ENDPOINT_ENV, Env, GCE_METADATA_HOST_ENV, ZONAL_ZONE_ENV};
use az_core::{Provider, Zone, ZoneSource, discover};
use testkit::{MetadataBehaviour, MetadataServer, ZoneSpec};

fn zone(n: u32) -> ZoneSpec {
    ZoneSpec { id: format!("use1-az{n}"), name: format!("us-east-1{}", (b'a' + n as u8 - 1) as char) }
}

fn config(
    providers: &[Provider],
    ec2: Option<&MetadataServer>,
    gcp: Option<&MetadataServer>,
    azure: Option<&MetadataServer>,
) -> DiscoveryConfig {
    DiscoveryConfig {
        providers: providers.to_vec(),
        provider_timeout_ms: 1000,
        ec2_endpoint: ec2.map(MetadataServer::endpoint),
        gcp_endpoint: gcp.map(MetadataServer::endpoint),
        azure_endpoint: azure.map(MetadataServer::endpoint),
        ..Default::default()
    }
}

/// A loopback address where nothing listens: connections are refused at once.
fn dead_endpoint() -> anyhow::Result<String> {
    let port = testkit::net::free_port()?;
    Ok(format!("http://127.0.0.1:{port}"))
}

fn empty_env() -> Env {
    Env::fixed::<&str, &str>([])
}

#[tokio::test]
async fn ec2_imdsv2_gives_id_and_name() -> anyhow::Result<()> {
    let server = MetadataServer::start(zone(2), MetadataBehaviour::Ec2Only)?;
    let info = discover(&config(&[Provider::Ec2], Some(&server), None, None), &empty_env()).await;
    assert_eq!(info.source, ZoneSource::Metadata(Provider::Ec2), "{:?}", info.failures);
    assert_eq!(info.zone, Some(Zone { id: Some("use1-az2".into()), name: Some("us-east-1b".into()) }));
    Ok(())
}

#[tokio::test]
async fn ec2_endpoint_from_aws_variable() -> anyhow::Result<()> {
    let server = MetadataServer::start(zone(3), MetadataBehaviour::Ec2Only)?;
    let env = Env::fixed([(EC2_ENDPOINT_ENV, server.endpoint())]);
    let info = discover(&config(&[Provider::Ec2], None, None, None), &env).await;
    assert_eq!(info.zone.and_then(|z| z.id), Some("use1-az3".into()));
    Ok(())
}

#[tokio::test]
async fn gcp_metadata_flavor() -> anyhow::Result<()> {
    let server = MetadataServer::start(zone(1), MetadataBehaviour::GcpOnly)?;
    let info = discover(&config(&[Provider::Gcp], None, Some(&server), None), &empty_env()).await;
    assert_eq!(info.source, ZoneSource::Metadata(Provider::Gcp), "{:?}", info.failures);
    assert_eq!(info.zone.and_then(|z| z.name), Some("us-east-1a".into()));
    // GCE_METADATA_HOST is honoured as Google's libraries do (host:port without scheme).
    let host = server.endpoint().trim_start_matches("http://").to_owned();
    let info =
        discover(&config(&[Provider::Gcp], None, None, None), &Env::fixed([(GCE_METADATA_HOST_ENV, host)])).await;
    assert_eq!(info.zone.and_then(|z| z.name), Some("us-east-1a".into()));
    Ok(())
}

#[tokio::test]
async fn azure_imds() -> anyhow::Result<()> {
    let server = MetadataServer::start(zone(2), MetadataBehaviour::AzureOnly)?;
    let info = discover(&config(&[Provider::Azure], None, None, Some(&server)), &empty_env()).await;
    assert_eq!(info.source, ZoneSource::Metadata(Provider::Azure), "{:?}", info.failures);
    assert_eq!(info.zone.and_then(|z| z.id), Some("eastus-2".into()));
    Ok(())
}

#[tokio::test]
async fn precedence_config_env_ec2_gcp_azure() -> anyhow::Result<()> {
    let ec2 = MetadataServer::start(zone(1), MetadataBehaviour::Ec2Only)?;
    let gcp = MetadataServer::start(zone(2), MetadataBehaviour::GcpOnly)?;
    let azure = MetadataServer::start(zone(3), MetadataBehaviour::AzureOnly)?;
    let all = [Provider::Ec2, Provider::Gcp, Provider::Azure];

    let mut cfg = config(&all, Some(&ec2), Some(&gcp), Some(&azure));
    cfg.zone = Some("configured".into());
    let env = Env::fixed([(ZONAL_ZONE_ENV, "from-env")]);
    assert_eq!(discover(&cfg, &env).await.source, ZoneSource::Config);
    cfg.zone = None;
    assert_eq!(discover(&cfg, &env).await.source, ZoneSource::Env);
    let info = discover(&cfg, &empty_env()).await;
    assert_eq!(
        (info.source, info.zone.and_then(|z| z.id)),
        (ZoneSource::Metadata(Provider::Ec2), Some("use1-az1".into()))
    );

    // EC2 absent: GCP is next, even though Azure also answers.
    let cfg = config(&all, None, Some(&gcp), Some(&azure));
    let cfg = DiscoveryConfig { ec2_endpoint: Some(dead_endpoint()?), ..cfg };
    let info = discover(&cfg, &empty_env()).await;
    assert_eq!(info.source, ZoneSource::Metadata(Provider::Gcp));
    assert_eq!(info.failures.len(), 1);
    assert_eq!(info.failures[0].provider, Provider::Ec2);

    // Only Azure answers.
    let cfg = DiscoveryConfig { ec2_endpoint: Some(dead_endpoint()?), gcp_endpoint: Some(dead_endpoint()?), ..cfg };
    assert_eq!(discover(&cfg, &empty_env()).await.source, ZoneSource::Metadata(Provider::Azure));

    // The configured order is the priority order.
    let cfg = config(&[Provider::Azure, Provider::Ec2], Some(&ec2), None, Some(&azure));
    assert_eq!(discover(&cfg, &empty_env()).await.source, ZoneSource::Metadata(Provider::Azure));
    Ok(())
}

#[tokio::test]
async fn imdsv1_style_request_is_refused() -> anyhow::Result<()> {
    // The fake must reject a GET without a token, or the EC2 test proves nothing about IMDSv2.
    let server = MetadataServer::start(zone(1), MetadataBehaviour::Ec2Only)?;
    let url = format!("{}/latest/meta-data/placement/availability-zone-id", server.endpoint());
    let status = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let addr = url.trim_start_matches("http://").split('/').next().unwrap_or_default().to_owned();
        let mut s = std::net::TcpStream::connect(addr)?;
        write!(
            s,
            "GET /latest/meta-data/placement/availability-zone-id HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok::<_, std::io::Error>(out)
    })
    .await??;
    assert!(status.starts_with("HTTP/1.1 401"), "{status}");
    Ok(())
}

#[tokio::test]
async fn hung_provider_is_bounded() -> anyhow::Result<()> {
    let hung = MetadataServer::start(zone(1), MetadataBehaviour::Hang)?;
    let gcp = MetadataServer::start(zone(2), MetadataBehaviour::GcpOnly)?;
    let cfg = config(&[Provider::Ec2, Provider::Gcp, Provider::Azure], Some(&hung), Some(&gcp), Some(&hung));
    let start = Instant::now();
    let info = discover(&cfg, &empty_env()).await;
    let took = start.elapsed();
    assert_eq!(info.source, ZoneSource::Metadata(Provider::Gcp), "{:?}", info.failures);
    assert!(took < Duration::from_secs(3), "took {took:?}");
    assert!(info.failures.iter().any(|f| f.provider == Provider::Ec2));
    Ok(())
}

#[tokio::test]
async fn nothing_reachable_is_unknown_and_fast() -> anyhow::Result<()> {
    let hung = MetadataServer::start(zone(1), MetadataBehaviour::Hang)?;
    // Every provider hangs or is refused: the answer is "unknown" within one provider timeout.
    let cfg = DiscoveryConfig {
        ec2_endpoint: Some(hung.endpoint()),
        gcp_endpoint: Some(dead_endpoint()?),
        azure_endpoint: Some(hung.endpoint()),
        ..DiscoveryConfig::default()
    };
    let start = Instant::now();
    let info = discover(&cfg, &empty_env()).await;
    let took = start.elapsed();
    assert_eq!(info.zone, None);
    assert_eq!(info.source, ZoneSource::Unknown);
    assert_eq!(info.failures.len(), Provider::ALL.len(), "{:?}", info.failures);
    assert!(took < Duration::from_secs(3), "took {took:?}");
    Ok(())
}

/// The environment a pod sees: the downward API's node name and the API server's address, with
/// the fake server's token and CA in place of the kubelet's mounts.
fn pod(api: &testkit::KubeApi, node: &str) -> (DiscoveryConfig, Env) {
    let port = api.endpoint().rsplit(':').next().unwrap_or_default().to_owned();
    let cfg = DiscoveryConfig {
        providers: vec![Provider::Kubernetes, Provider::Ec2],
        kubernetes_token_file: Some(api.token_file().to_owned()),
        kubernetes_ca_file: Some(api.ca_file().to_owned()),
        ..Default::default()
    };
    let env = Env::fixed([
        (az_core::zone::kubernetes::NODE_NAME_ENV, node.to_owned()),
        (az_core::zone::kubernetes::SERVICE_HOST_ENV, "127.0.0.1".to_owned()),
        (az_core::zone::kubernetes::SERVICE_PORT_ENV, port),
        (az_core::zone::EC2_DISABLED_ENV, "true".to_owned()),
    ]);
    (cfg, env)
}

#[tokio::test]
async fn kubernetes_node_labels_through_the_api_server() -> anyhow::Result<()> {
    let api = testkit::KubeApi::start([("node-b".to_owned(), zone(2))])?;
    let (cfg, env) = pod(&api, "node-b");
    let info = discover(&cfg, &env).await;
    assert_eq!(info.source, ZoneSource::Metadata(Provider::Kubernetes), "{:?}", info.failures);
    assert_eq!(info.zone, Some(Zone { id: Some("use1-az2".into()), name: Some("us-east-1b".into()) }));
    assert_eq!(api.requests(), 1);
    Ok(())
}

#[tokio::test]
async fn kubernetes_refusals_are_reported_per_provider() -> anyhow::Result<()> {
    let api = testkit::KubeApi::start([("node-b".to_owned(), zone(2))])?;
    // A node the server does not know.
    let (cfg, env) = pod(&api, "node-x");
    let info = discover(&cfg, &env).await;
    assert_eq!(info.source, ZoneSource::Unknown);
    assert!(info.failures[0].error.contains("404"), "{:?}", info.failures);
    // A token the server refuses.
    let dir = tempfile::tempdir()?;
    let bad = dir.path().join("token");
    std::fs::write(&bad, "not-the-token")?;
    let (mut cfg, env) = pod(&api, "node-b");
    cfg.kubernetes_token_file = Some(bad);
    let info = discover(&cfg, &env).await;
    assert!(info.failures[0].error.contains("401"), "{:?}", info.failures);
    // Outside a pod the provider says why it does not apply, without a request.
    let info = discover(&cfg, &empty_env()).await;
    assert!(info.failures[0].error.contains("NODE_NAME"), "{:?}", info.failures);
    Ok(())
}
