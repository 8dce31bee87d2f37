//! Fronts of the mock cluster: one listener per mock broker, for what the mock cannot do itself.
//! A front terminates TLS (rustls, optionally requiring a client certificate), answers the SASL
//! exchange itself (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 over SaslHandshake v1 and
//! SaslAuthenticate) and then relays frames to the broker (`kafka_relay`), rewriting what
//! clients must see differently: partitions hidden until a test raises the count (a partition
//! increase) and topic configurations answered to DescribeConfigs. The mock brokers advertise
//! these listeners (`rd_kafka_mock_broker_set_host_port`), so every connection a client makes,
//! bootstrap or not, goes through a front.
//!
//! ```text
//!  client ──TLS──> front (127.0.0.1:P_i) ──ApiVersions──> mock broker i (plaintext)
//!                    │ <─────────── + SaslHandshake, SaslAuthenticate, DescribeConfigs advertised
//!                    ├─ SaslHandshake(mechanism) ─> answered here
//!                    ├─ SaslAuthenticate(...)    ─> PLAIN / SCRAM checked here; failure: error 58, close
//!                    └─ authenticated ─────────────> kafka_relay: frames streamed, Metadata rewritten,
//!                                                    DescribeConfigs answered here
//! ```
//!
//! The modules under `kafka_front/`: `frame` (frame I/O and request headers), `sasl` (the
//! exchange before relaying) and `scram` (the SCRAM server side).

mod frame;
mod msk_iam;
mod sasl;
mod scram;

use std::net::SocketAddr;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

pub(crate) use frame::{i16_at, i32_at, write_frame};

use crate::runtime::{ServerRuntime, bind_loopback};
use crate::tls::{CLIENT_KEY_PASSWORD, TlsFiles};
use crate::{Result, TestkitError};

/// How clients must connect to a secured cluster.
#[derive(Debug, Clone, Default)]
pub struct Security {
    /// Require TLS.
    pub tls: bool,
    /// With TLS, also require a client certificate signed by the test CA.
    pub client_certs: bool,
    /// Require SASL (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512) as one of these (user, password), or
    /// OAUTHBEARER with an MSK IAM token signed with one of them as (access key id, secret key).
    pub sasl_users: Vec<(String, String)>,
    /// Put fronts before the brokers even without TLS or SASL, for what only the fronts can do:
    /// partition increases ([`crate::KafkaCluster::set_visible_partitions`]) and topic
    /// configurations ([`crate::KafkaCluster::set_topic_config`]).
    pub relay: bool,
    /// The programs under test log in with MSK IAM (OAUTHBEARER), with
    /// [`crate::KafkaCluster::msk_iam_client_options`]; the testkit's own clients keep SCRAM
    /// with the same key pair as user and password.
    pub msk_iam: bool,
}

/// The region MSK IAM tokens are signed for in tests.
pub const MSK_REGION: &str = "us-east-1";

impl Security {
    /// TLS with server verification only (`security.protocol=SSL`).
    pub fn tls() -> Security {
        Security { tls: true, ..Security::default() }
    }

    /// TLS requiring a client certificate (mutual TLS).
    pub fn mutual_tls() -> Security {
        Security { tls: true, client_certs: true, ..Security::default() }
    }

    /// SASL over TLS (`security.protocol=SASL_SSL`) with one user.
    pub fn sasl_ssl(user: &str, password: &str) -> Security {
        Security { tls: true, sasl_users: vec![(user.to_owned(), password.to_owned())], ..Security::default() }
    }

    /// Amazon MSK's IAM login over TLS (`security.protocol=SASL_SSL`, OAUTHBEARER carrying a
    /// SigV4-presigned token) for one AWS access key; a session ends when its token expires.
    /// The listeners take SCRAM with the same pair too, for the testkit's own clients.
    pub fn msk_iam(access_key_id: &str, secret_access_key: &str) -> Security {
        Security { msk_iam: true, ..Security::sasl_ssl(access_key_id, secret_access_key) }
    }

    /// Plaintext, through fronts (see [`Security::relay`]).
    pub fn relay() -> Security {
        Security { relay: true, ..Security::default() }
    }

    /// The librdkafka options a client needs for this security (with the test CA's files).
    pub fn client_options(&self, files: Option<&TlsFiles>) -> Vec<(String, String)> {
        let protocol = match (self.tls, self.sasl_users.is_empty()) {
            (true, true) => "SSL",
            (true, false) => "SASL_SSL",
            (false, false) => "SASL_PLAINTEXT",
            (false, true) => "PLAINTEXT",
        };
        let mut options = vec![("security.protocol".to_owned(), protocol.to_owned())];
        if let Some(f) = files {
            options.push(("ssl.ca.location".into(), f.ca.display().to_string()));
            if self.client_certs {
                options.push(("ssl.certificate.location".into(), f.client_cert.display().to_string()));
                options.push(("ssl.key.location".into(), f.client_key.display().to_string()));
                options.push(("ssl.key.password".into(), CLIENT_KEY_PASSWORD.to_owned()));
            }
        }
        if let Some((user, password)) = self.sasl_users.first() {
            options.push(("sasl.mechanism".into(), "SCRAM-SHA-512".into()));
            options.push(("sasl.username".into(), user.clone()));
            options.push(("sasl.password".into(), password.clone()));
        }
        options
    }

    /// Whether brokers need fronts.
    pub fn needs_front(&self) -> bool {
        self.tls || !self.sasl_users.is_empty() || self.relay
    }
}

/// What the fronts add to the cluster, changeable while it runs.
#[derive(Debug, Default)]
pub(crate) struct Wire {
    /// Topic -> partitions clients see (the rest exist, hidden until raised).
    pub visible: std::sync::Mutex<std::collections::BTreeMap<String, i32>>,
    /// Topic -> configuration entries DescribeConfigs answers.
    pub configs: std::sync::Mutex<std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>>>,
    /// Every OAUTHBEARER login, in order.
    pub logins: std::sync::Mutex<Vec<SaslLogin>>,
    /// Replica orders set through AlterPartitionReassignments.
    pub preferred: std::sync::Mutex<crate::kafka_wire::Preferred>,
    /// The mock cluster, for elections; `None` once the cluster is being dropped.
    pub mock: std::sync::Mutex<Option<MockPtr>>,
}

/// The mock cluster's handle. librdkafka's mock control functions post to the cluster's own
/// thread and may be called from any thread; the handle lives as long as the host client, and
/// `KafkaCluster` clears it before that client is dropped.
#[derive(Debug)]
pub(crate) struct MockPtr(pub *mut rdkafka_sys::rd_kafka_mock_cluster_t);

// SAFETY: see `MockPtr`: the functions called through it are thread-safe, and every use holds
// `Wire::mock`'s lock, which the cluster's drop takes before the pointer dies.
unsafe impl Send for MockPtr {}

impl Wire {
    /// Makes `broker` the leader of `topic`/`partition`; false when the mock refused or is gone.
    pub fn elect(&self, topic: &str, partition: i32, broker: i32) -> bool {
        let mock = self.mock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (Some(mock), Ok(topic)) = (mock.as_ref(), std::ffi::CString::new(topic)) else { return false };
        // SAFETY: the pointer is live while the lock is held (see `MockPtr`); the topic string
        // outlives the call, which copies it.
        let err = unsafe { rdkafka_sys::rd_kafka_mock_partition_set_leader(mock.0, topic.as_ptr(), partition, broker) };
        err == rdkafka_sys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
    }
}

/// An OAUTHBEARER login as a front judged it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaslLogin {
    /// The mechanism.
    pub mechanism: String,
    /// The access key id of an accepted token.
    pub principal: Option<String>,
    /// Whether it was accepted.
    pub accepted: bool,
    /// Why it was refused.
    pub reason: Option<String>,
    /// When an accepted token expires (its session is closed then).
    pub expires: Option<std::time::SystemTime>,
    /// The client's `client.id`, from the request header.
    pub client_id: Option<String>,
}

/// The running listeners; they stop when this is dropped.
pub(crate) struct Front {
    _runtime: ServerRuntime,
}

impl Front {
    /// Binds one listener per `(broker id, broker address)`, returning the listeners' ports in
    /// the same order.
    pub(crate) fn start(
        security: &Security,
        files: Option<&TlsFiles>,
        upstreams: &[(i32, SocketAddr)],
        wire: Arc<Wire>,
    ) -> Result<(Front, Vec<(i32, u16)>)> {
        let runtime = ServerRuntime::new("kafka-front")?;
        let acceptor = match (security.tls, files) {
            (true, Some(files)) => {
                Some(tokio_rustls::TlsAcceptor::from(Arc::new(server_config(files, security.client_certs)?)))
            }
            (true, None) => return Err(start_err("TLS asked for without certificates".into())),
            (false, _) => None,
        };
        let users = Arc::new(security.sasl_users.clone());
        let mut ports = Vec::new();
        for &(id, upstream) in upstreams {
            let (listener, port) = bind_loopback("kafka-front")?;
            ports.push((id, port));
            let acceptor = acceptor.clone();
            let users = users.clone();
            let wire = wire.clone();
            runtime.handle().spawn(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else { return };
                while let Ok((conn, _)) = listener.accept().await {
                    let acceptor = acceptor.clone();
                    let users = users.clone();
                    let wire = wire.clone();
                    tokio::spawn(async move {
                        // A failed handshake or a refused login ends the connection, as a broker's
                        // would; the client reports it.
                        let _ = serve(conn, upstream, acceptor, users, wire).await;
                    });
                }
            });
        }
        Ok((Front { _runtime: runtime }, ports))
    }
}

fn start_err(reason: String) -> TestkitError {
    TestkitError::Start { server: "kafka-front", reason }
}

fn server_config(files: &TlsFiles, client_certs: bool) -> Result<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let pem = |e: rustls::pki_types::pem::Error| start_err(format!("reading PEM: {e}"));
    let certs = CertificateDer::pem_file_iter(&files.cert).map_err(pem)?.collect::<Result<Vec<_>, _>>().map_err(pem)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(pem)?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| start_err(e.to_string()))?;
    let builder = if client_certs {
        let mut roots = rustls::RootCertStore::empty();
        for ca in CertificateDer::pem_file_iter(&files.ca).map_err(pem)? {
            roots.add(ca.map_err(pem)?).map_err(|e| start_err(e.to_string()))?;
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| start_err(e.to_string()))?;
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    builder.with_single_cert(certs, key).map_err(|e| start_err(e.to_string()))
}

async fn serve(
    conn: TcpStream,
    upstream: SocketAddr,
    tls: Option<tokio_rustls::TlsAcceptor>,
    users: Arc<Vec<(String, String)>>,
    wire: Arc<Wire>,
) -> std::io::Result<()> {
    conn.set_nodelay(true)?;
    match tls {
        Some(acceptor) => relay(acceptor.accept(conn).await?, upstream, &users, wire).await,
        None => relay(conn, upstream, &users, wire).await,
    }
}

async fn relay<S: AsyncRead + AsyncWrite + Unpin>(
    mut client: S,
    upstream: SocketAddr,
    users: &[(String, String)],
    wire: Arc<Wire>,
) -> std::io::Result<()> {
    let mut broker = TcpStream::connect(upstream).await?;
    broker.set_nodelay(true)?;
    let mut until = None;
    if !users.is_empty() {
        match sasl::authenticate(&mut client, &mut broker, users, &wire.logins).await? {
            sasl::Login::Refused => return client.shutdown().await,
            sasl::Login::Accepted(expires) => until = expires,
        }
    }
    let Some(expires) = until else { return crate::kafka_relay::relay_frames(client, broker, &wire).await };
    // A session ends when its token expires, as a broker closes a connection that was not
    // authenticated again by then (`connections.max.reauth.ms`): the client must connect again
    // with a token of its own refreshing.
    let left = expires.duration_since(std::time::SystemTime::now()).unwrap_or_default();
    match tokio::time::timeout(left, crate::kafka_relay::relay_frames(client, broker, &wire)).await {
        Ok(done) => done,
        Err(_) => Ok(()),
    }
}
