//! etcd clients: the usual one, whose every request times out, and the untimed one for requests
//! that wait by design (a standby's campaign), both with user/password and TLS.

use std::time::Duration;

use anyhow::Context;
use etcd_client::{Client, ConnectOptions};

use crate::config::EtcdConfig;

/// Connects to etcd with optional user/password and TLS; every request times out after 5 s.
pub async fn connect(cfg: &EtcdConfig) -> anyhow::Result<Client> {
    connect_with(cfg, Some(Duration::from_secs(5))).await
}

/// Connects to etcd for requests that wait by design (a campaign blocks until elected): a
/// request timeout would cut every standby's campaign and churn the election.
pub async fn connect_untimed(cfg: &EtcdConfig) -> anyhow::Result<Client> {
    connect_with(cfg, None).await
}

async fn connect_with(cfg: &EtcdConfig, request_timeout: Option<Duration>) -> anyhow::Result<Client> {
    let mut opts = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(3))
        // etcd closes the connection of a client pinging more often than its
        // --grpc-keepalive-min-time (5 s by default): every 10 s, 5 s to answer.
        .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
    if let Some(t) = request_timeout {
        opts = opts.with_timeout(t);
    }
    if let (Some(u), Some(p)) = (&cfg.username, cfg.resolved_password()?) {
        opts = opts.with_user(u.clone(), p);
    }
    if let Some(t) = &cfg.tls {
        let read = |p: &std::path::Path, what: &str| {
            std::fs::read(p).with_context(|| format!("reading etcd.tls.{what} {}", p.display()))
        };
        let mut tls = etcd_client::TlsOptions::new()
            .ca_certificate(etcd_client::Certificate::from_pem(read(&t.ca_file, "ca-file")?));
        if let (Some(c), Some(k)) = (&t.cert_file, &t.key_file) {
            tls = tls.identity(etcd_client::Identity::from_pem(read(c, "cert-file")?, read(k, "key-file")?));
        }
        if let Some(d) = &t.domain {
            tls = tls.domain_name(d.clone());
        }
        opts = opts.with_tls(tls);
    }
    Client::connect(cfg.endpoints.clone(), Some(opts))
        .await
        .with_context(|| format!("connecting to etcd {:?}", cfg.endpoints))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coord::Keys;

    /// A standby's campaign waits as long as the master lives. etcd refuses HTTP/2 pings more
    /// often than every 5 s (`--grpc-keepalive-min-time`) and closes the connection of a client
    /// that sends them: the campaign must not be cut by our own keepalive.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_standby_campaign_is_not_cut_by_keepalive_pings() {
        let etcd = testkit::Etcd::start().expect("etcd");
        let cfg = EtcdConfig { endpoints: vec![etcd.endpoint()], ..EtcdConfig::default() };
        let client = connect(&cfg).await.expect("connect");
        let keys = Keys::new("pings");
        let lease = client.clone().lease_grant(60, None).await.expect("lease").id();
        let standby_lease = client.clone().lease_grant(60, None).await.expect("lease").id();
        client.election_client().campaign(keys.election(), "master", lease).await.expect("campaign");
        let mut standby = connect_untimed(&cfg).await.expect("connect").election_client();
        let waited =
            tokio::time::timeout(Duration::from_secs(15), standby.campaign(keys.election(), "standby", standby_lease))
                .await;
        assert!(waited.is_err(), "the standby's campaign ended while the master lived: {waited:?}");
    }
}
