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

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;

use aws_lc_rs::{digest, hmac, pbkdf2};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::kafka_wire::API_VERSIONS;
use crate::kafka_wire::put_str;
use crate::runtime::{ServerRuntime, bind_loopback};
use crate::tls::TlsFiles;
use crate::{Result, TestkitError};

/// How clients must connect to a secured cluster.
#[derive(Debug, Clone, Default)]
pub struct Security {
    /// Require TLS.
    pub tls: bool,
    /// With TLS, also require a client certificate signed by the test CA.
    pub client_certs: bool,
    /// Require SASL (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512) as one of these (user, password).
    pub sasl_users: Vec<(String, String)>,
    /// Put fronts before the brokers even without TLS or SASL, for what only the fronts can do:
    /// partition increases ([`crate::KafkaCluster::set_visible_partitions`]) and topic
    /// configurations ([`crate::KafkaCluster::set_topic_config`]).
    pub relay: bool,
}

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

    /// Plaintext, through fronts (see [`Security::relay`]).
    pub fn relay() -> Security {
        Security { relay: true, ..Security::default() }
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
}

// Kafka API keys and error codes the front speaks.
const API_SASL_HANDSHAKE: i16 = 17;
const API_SASL_AUTHENTICATE: i16 = 36;
const ERR_UNSUPPORTED_SASL_MECHANISM: i16 = 33;
const ERR_ILLEGAL_SASL_STATE: i16 = 34;
const ERR_SASL_AUTHENTICATION_FAILED: i16 = 58;
const SCRAM_ITERATIONS: u32 = 4096;
const MECHANISMS: [&str; 3] = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"];
/// Frames before authentication are small; anything larger is not a Kafka client.
const MAX_PREAUTH_FRAME: usize = 1 << 20;

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
    if !users.is_empty() && !authenticate(&mut client, &mut broker, users).await? {
        return client.shutdown().await;
    }
    crate::kafka_relay::relay_frames(client, broker, &wire).await
}

async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<Vec<u8>> {
    let len = r.read_i32().await?;
    let len = usize::try_from(len).ok().filter(|&l| (4..=MAX_PREAUTH_FRAME).contains(&l));
    let len = len.ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "bad frame size"))?;
    let mut buf = vec![0; len];
    r.read_exact(&mut buf).await?;
    Ok(buf)
}

/// Writes a whole frame (size, then `body`) and flushes it.
pub(crate) async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, body: &[u8]) -> std::io::Result<()> {
    let len = i32::try_from(body.len()).map_err(|_| std::io::Error::other("frame too large"))?;
    let mut out = Vec::with_capacity(body.len() + 4);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(body);
    w.write_all(&out).await?;
    w.flush().await
}

/// A request header (v1: key, version, correlation id, client id) and where its body starts.
/// Only non-flexible requests are read past the header (header v2 of flexible ones has tagged
/// fields after the client id).
pub(crate) struct Header {
    pub(crate) api_key: i16,
    pub(crate) api_version: i16,
    pub(crate) correlation_id: i32,
    pub(crate) body: usize,
}

pub(crate) fn i16_at(b: &[u8], at: usize) -> Option<i16> {
    Some(i16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

pub(crate) fn i32_at(b: &[u8], at: usize) -> Option<i32> {
    Some(i32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

pub(crate) fn parse_header(frame: &[u8]) -> Option<Header> {
    let client_id = i16_at(frame, 8)?;
    let body = 10 + usize::try_from(client_id.max(0)).ok()?;
    Some(Header { api_key: i16_at(frame, 0)?, api_version: i16_at(frame, 2)?, correlation_id: i32_at(frame, 4)?, body })
}

/// Runs the SASL exchange. Returns whether the client authenticated.
async fn authenticate<S: AsyncRead + AsyncWrite + Unpin>(
    client: &mut S,
    broker: &mut TcpStream,
    users: &[(String, String)],
) -> std::io::Result<bool> {
    let mut mechanism: Option<String> = None;
    let mut scram: Option<ScramServer> = None;
    loop {
        let frame = read_frame(client).await?;
        let h = parse_header(&frame).ok_or_else(|| std::io::Error::other("short request header"))?;
        let mut resp = h.correlation_id.to_be_bytes().to_vec();
        match h.api_key {
            API_VERSIONS => {
                write_frame(broker, &frame).await?;
                let answer = read_frame(broker).await?;
                write_frame(client, &advertise_sasl(answer, h.api_version)).await?;
            }
            API_SASL_HANDSHAKE => {
                let wanted = read_str(&frame, h.body).unwrap_or_default();
                let known = MECHANISMS.contains(&wanted.as_str());
                resp.extend_from_slice(&(if known { 0 } else { ERR_UNSUPPORTED_SASL_MECHANISM }).to_be_bytes());
                resp.extend_from_slice(&(MECHANISMS.len() as i32).to_be_bytes());
                for m in MECHANISMS {
                    put_str(&mut resp, Some(m));
                }
                write_frame(client, &resp).await?;
                if !known {
                    return Ok(false);
                }
                mechanism = Some(wanted);
            }
            API_SASL_AUTHENTICATE => {
                let auth = read_bytes(&frame, h.body).unwrap_or_default();
                let outcome = match mechanism.as_deref() {
                    Some("PLAIN") => plain(&auth, users),
                    Some(m @ ("SCRAM-SHA-256" | "SCRAM-SHA-512")) => match scram.take() {
                        None => {
                            let (server, first) = ScramServer::first(m == "SCRAM-SHA-512", &auth, users);
                            scram = server;
                            first
                        }
                        Some(server) => server.last(&auth),
                    },
                    _ => Step::Fail(ERR_ILLEGAL_SASL_STATE, "SaslAuthenticate before SaslHandshake".into()),
                };
                let (err, msg, bytes, done) = match outcome {
                    Step::Continue(b) => (0, None, b, false),
                    Step::Done(b) => (0, None, b, true),
                    Step::Fail(code, msg) => (code, Some(msg), Vec::new(), true),
                };
                resp.extend_from_slice(&err.to_be_bytes());
                put_str(&mut resp, msg.as_deref());
                resp.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
                resp.extend_from_slice(&bytes);
                if h.api_version >= 1 {
                    resp.extend_from_slice(&0i64.to_be_bytes());
                }
                write_frame(client, &resp).await?;
                if done {
                    return Ok(err == 0);
                }
            }
            // A broker refuses every other request before authentication and closes.
            _ => return Ok(false),
        }
    }
}

/// Adds SaslHandshake v0-1, SaslAuthenticate v0-1 and the front's own DescribeConfigs to a
/// successful non-flexible ApiVersions response (v0-2, which is all the mock answers), so clients
/// use the Kafka SASL framing; anything else is left as it is.
fn advertise_sasl(answer: Vec<u8>, request_version: i16) -> Vec<u8> {
    use crate::kafka_wire::{API_DESCRIBE_CONFIGS, DESCRIBE_CONFIGS_MAX, advertise};
    let keys =
        [(API_SASL_HANDSHAKE, 0, 1), (API_SASL_AUTHENTICATE, 0, 1), (API_DESCRIBE_CONFIGS, 0, DESCRIBE_CONFIGS_MAX)];
    advertise(&answer, request_version, &keys).unwrap_or(answer)
}

fn read_str(frame: &[u8], at: usize) -> Option<String> {
    let len = usize::try_from(i16_at(frame, at)?).ok()?;
    String::from_utf8(frame.get(at + 2..at + 2 + len)?.to_vec()).ok()
}

fn read_bytes(frame: &[u8], at: usize) -> Option<Vec<u8>> {
    let len = usize::try_from(i32_at(frame, at)?).ok()?;
    Some(frame.get(at + 4..at + 4 + len)?.to_vec())
}

enum Step {
    Continue(Vec<u8>),
    Done(Vec<u8>),
    Fail(i16, String),
}

fn plain(auth: &[u8], users: &[(String, String)]) -> Step {
    let parts: Vec<&[u8]> = auth.split(|&b| b == 0).collect();
    let ok = parts.len() == 3 && users.iter().any(|(u, p)| parts[1] == u.as_bytes() && parts[2] == p.as_bytes());
    if ok {
        Step::Done(Vec::new())
    } else {
        Step::Fail(ERR_SASL_AUTHENTICATION_FAILED, "Authentication failed: Invalid username or password".into())
    }
}

/// The server side of RFC 5802 (SCRAM) between the client's first and final messages.
struct ScramServer {
    sha512: bool,
    salted: Vec<u8>,
    nonce: String,
    client_first_bare: String,
    server_first: String,
}

fn scram_failed(sha512: bool) -> Step {
    let m = if sha512 { "SCRAM-SHA-512" } else { "SCRAM-SHA-256" };
    Step::Fail(
        ERR_SASL_AUTHENTICATION_FAILED,
        format!("Authentication failed during authentication due to invalid credentials with SASL mechanism {m}"),
    )
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    // A failing system RNG only weakens a throwaway test login.
    let _ = aws_lc_rs::rand::fill(&mut b);
    b
}

impl ScramServer {
    fn hmac(&self, key: &[u8], data: &[u8]) -> Vec<u8> {
        let alg = if self.sha512 { hmac::HMAC_SHA512 } else { hmac::HMAC_SHA256 };
        hmac::sign(&hmac::Key::new(alg, key), data).as_ref().to_vec()
    }

    fn hash(&self, data: &[u8]) -> Vec<u8> {
        digest::digest(if self.sha512 { &digest::SHA512 } else { &digest::SHA256 }, data).as_ref().to_vec()
    }

    fn first(sha512: bool, auth: &[u8], users: &[(String, String)]) -> (Option<ScramServer>, Step) {
        let text = String::from_utf8_lossy(auth);
        // gs2 header ("n,," or "n,a=authzid,"), then the bare message.
        let Some(bare) = text.splitn(3, ',').nth(2).map(str::to_owned) else {
            return (None, scram_failed(sha512));
        };
        let attr = |name: &str| bare.split(',').find_map(|a| a.strip_prefix(name)).map(str::to_owned);
        let (Some(user), Some(client_nonce)) = (attr("n="), attr("r=")) else {
            return (None, scram_failed(sha512));
        };
        let user = user.replace("=2C", ",").replace("=3D", "=");
        let salt = random_bytes::<16>();
        // Unknown users go through the same exchange with a random password and fail at the end,
        // as Kafka does, so a client cannot probe for user names.
        let password = users
            .iter()
            .find(|(u, _)| *u == user)
            .map(|(_, p)| p.clone().into_bytes())
            .unwrap_or_else(|| random_bytes::<32>().to_vec());
        let mut salted = vec![0u8; if sha512 { 64 } else { 32 }];
        let alg = if sha512 { pbkdf2::PBKDF2_HMAC_SHA512 } else { pbkdf2::PBKDF2_HMAC_SHA256 };
        let iterations = NonZeroU32::new(SCRAM_ITERATIONS).unwrap_or(NonZeroU32::MIN);
        pbkdf2::derive(alg, iterations, &salt, &password, &mut salted);
        let nonce = format!("{client_nonce}{}", B64.encode(random_bytes::<18>()));
        let server_first = format!("r={nonce},s={},i={SCRAM_ITERATIONS}", B64.encode(salt));
        let out = server_first.clone().into_bytes();
        (Some(ScramServer { sha512, salted, nonce, client_first_bare: bare, server_first }), Step::Continue(out))
    }

    fn last(self, auth: &[u8]) -> Step {
        let text = String::from_utf8_lossy(auth);
        let Some((without_proof, proof)) = text.rsplit_once(",p=") else { return scram_failed(self.sha512) };
        let nonce_ok = without_proof.split(',').any(|a| a.strip_prefix("r=") == Some(self.nonce.as_str()));
        let Ok(proof) = B64.decode(proof) else { return scram_failed(self.sha512) };
        let client_key = self.hmac(&self.salted, b"Client Key");
        let stored_key = self.hash(&client_key);
        let auth_message = format!("{},{},{without_proof}", self.client_first_bare, self.server_first);
        let signature = self.hmac(&stored_key, auth_message.as_bytes());
        if !nonce_ok || proof.len() != signature.len() {
            return scram_failed(self.sha512);
        }
        let recovered: Vec<u8> = proof.iter().zip(&signature).map(|(a, b)| a ^ b).collect();
        if self.hash(&recovered) != stored_key {
            return scram_failed(self.sha512);
        }
        let server_key = self.hmac(&self.salted, b"Server Key");
        let server_signature = self.hmac(&server_key, auth_message.as_bytes());
        Step::Done(format!("v={}", B64.encode(server_signature)).into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_versions_gain_the_sasl_keys_once() {
        // correlation id 7, no error, one key (ApiVersions 0..2), throttle 0.
        let mut answer = 7i32.to_be_bytes().to_vec();
        answer.extend_from_slice(&0i16.to_be_bytes());
        answer.extend_from_slice(&1i32.to_be_bytes());
        for v in [18i16, 0, 2] {
            answer.extend_from_slice(&v.to_be_bytes());
        }
        answer.extend_from_slice(&0i32.to_be_bytes());
        let patched = advertise_sasl(answer.clone(), 2);
        assert_eq!(i32_at(&patched, 6), Some(4));
        assert_eq!(i16_at(&patched, 16), Some(API_SASL_HANDSHAKE));
        assert_eq!(i16_at(&patched, 22), Some(API_SASL_AUTHENTICATE));
        assert_eq!(i16_at(&patched, 28), Some(crate::kafka_wire::API_DESCRIBE_CONFIGS));
        assert_eq!(i32_at(&patched, patched.len() - 4), Some(0), "throttle time stays last");
        assert_eq!(advertise_sasl(patched.clone(), 2), patched, "idempotent");
        assert_eq!(advertise_sasl(answer.clone(), 3), answer, "flexible answers untouched");
    }

    #[test]
    fn plain_checks_user_and_password() {
        let users = vec![("alice".to_owned(), "pw".to_owned())];
        assert!(matches!(plain(b"\0alice\0pw", &users), Step::Done(_)));
        assert!(matches!(plain(b"\0alice\0nope", &users), Step::Fail(ERR_SASL_AUTHENTICATION_FAILED, _)));
        assert!(matches!(plain(b"garbage", &users), Step::Fail(..)));
    }
}
