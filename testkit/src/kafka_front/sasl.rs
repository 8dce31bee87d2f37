//! The SASL exchange a front answers itself before relaying anything: ApiVersions (relayed, with
//! the SASL keys and DescribeConfigs added), SaslHandshake and SaslAuthenticate (every version
//! kafka-protocol knows, decoded and encoded by `kafka_wire`) with PLAIN, SCRAM or OAUTHBEARER carrying an MSK IAM token (`msk_iam`). A failed login is
//! answered with error 58 and the connection closed, as a broker does; every login is recorded.
//!
//! ```text
//!  ApiVersions ──> broker ──> answer + SaslHandshake, SaslAuthenticate, DescribeConfigs
//!  SaslHandshake(mechanism) ──> known? else error 33 and close
//!  SaslAuthenticate(bytes) ──> PLAIN: user and password checked
//!                          └─> SCRAM: first message ─> server-first; final ─> proof checked
//!                          └─> OAUTHBEARER: the MSK IAM token's signature and expiry checked
//! ```

use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use kafka_protocol::messages::{SaslAuthenticateRequest, SaslHandshakeRequest};
use kafka_protocol::protocol::Message;

use super::SaslLogin;
use super::frame::{read_frame, write_frame};
use super::scram::ScramServer;
use crate::kafka_wire::{
    API_SASL_AUTHENTICATE, API_SASL_HANDSHAKE, API_VERSIONS, advertise, own_versions, request, sasl_authenticate,
    sasl_authenticate_answer, sasl_handshake, sasl_handshake_answer,
};

// These are the Kafka error codes the exchange speaks.
const ERR_UNSUPPORTED_SASL_MECHANISM: i16 = 33;
const ERR_ILLEGAL_SASL_STATE: i16 = 34;
pub(super) const ERR_SASL_AUTHENTICATION_FAILED: i16 = 58;
const MECHANISMS: [&str; 4] = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"];

/// The outcome of one SaslAuthenticate round.
pub(super) enum Step {
    /// Answer these bytes and expect another round.
    Continue(Vec<u8>),
    /// Authenticated: answer these bytes and relay from now on.
    Done(Vec<u8>),
    /// Refused with this error code and message.
    Fail(i16, String),
}

/// How a login ended.
pub(super) enum Login {
    /// Refused (the connection is closed).
    Refused,
    /// Authenticated; with OAUTHBEARER, until the token expires.
    Accepted(Option<SystemTime>),
}

/// Runs the SASL exchange. `users` are (user, password) pairs, and for OAUTHBEARER (access key
/// id, secret access key) pairs.
pub(super) async fn authenticate<S: AsyncRead + AsyncWrite + Unpin>(
    client: &mut S,
    broker: &mut TcpStream,
    users: &[(String, String)],
    logins: &Mutex<Vec<SaslLogin>>,
) -> std::io::Result<Login> {
    let mut mechanism: Option<String> = None;
    let mut scram: Option<ScramServer> = None;
    let mut expires = None;
    loop {
        let frame = read_frame(client).await?;
        let (h, body) = request(&frame).ok_or_else(|| std::io::Error::other("a request that does not decode"))?;
        let unanswerable = || std::io::Error::other("an answer that does not encode");
        match h.request_api_key {
            API_VERSIONS => {
                write_frame(broker, &frame).await?;
                let answer = read_frame(broker).await?;
                write_frame(client, &advertise_sasl(answer, h.request_api_version)).await?;
            }
            API_SASL_HANDSHAKE => {
                let wanted = sasl_handshake(&h, body).unwrap_or_default();
                let known = MECHANISMS.contains(&wanted.as_str());
                let error = if known { 0 } else { ERR_UNSUPPORTED_SASL_MECHANISM };
                write_frame(client, &sasl_handshake_answer(&h, error, &MECHANISMS).ok_or_else(unanswerable)?).await?;
                if !known {
                    return Ok(Login::Refused);
                }
                mechanism = Some(wanted);
            }
            API_SASL_AUTHENTICATE => {
                let auth = sasl_authenticate(&h, body).unwrap_or_default();
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
                    Some("OAUTHBEARER") => {
                        let client_id = h.client_id.as_ref().map(|c| c.to_string());
                        let (step, expiry) = oauthbearer(&auth, users, logins, client_id);
                        expires = expiry;
                        step
                    }
                    _ => Step::Fail(ERR_ILLEGAL_SASL_STATE, "SaslAuthenticate before SaslHandshake".into()),
                };
                let (err, msg, bytes, done) = match outcome {
                    Step::Continue(b) => (0, None, b, false),
                    Step::Done(b) => (0, None, b, true),
                    Step::Fail(code, msg) => (code, Some(msg), Vec::new(), true),
                };
                write_frame(client, &sasl_authenticate_answer(&h, err, msg, bytes).ok_or_else(unanswerable)?).await?;
                if done {
                    return Ok(if err == 0 { Login::Accepted(expires) } else { Login::Refused });
                }
            }
            // A broker refuses every other request before authentication and closes.
            _ => return Ok(Login::Refused),
        }
    }
}

/// OAUTHBEARER with an MSK IAM token: checked, recorded, and the token's expiry when accepted.
fn oauthbearer(
    auth: &[u8],
    users: &[(String, String)],
    logins: &Mutex<Vec<SaslLogin>>,
    client_id: Option<String>,
) -> (Step, Option<SystemTime>) {
    let checked = super::msk_iam::bearer(auth)
        .ok_or_else(|| "no bearer token".to_owned())
        .and_then(|t| super::msk_iam::verify(&t, users, SystemTime::now()));
    let mut all = logins.lock().unwrap_or_else(PoisonError::into_inner);
    let mechanism = "OAUTHBEARER".to_owned();
    match checked {
        Ok(v) => {
            all.push(SaslLogin {
                mechanism,
                principal: Some(v.access_key),
                accepted: true,
                reason: None,
                expires: Some(v.expires),
                client_id,
            });
            (Step::Done(Vec::new()), Some(v.expires))
        }
        Err(why) => {
            all.push(SaslLogin {
                mechanism,
                principal: None,
                accepted: false,
                reason: Some(why.clone()),
                expires: None,
                client_id,
            });
            (Step::Fail(ERR_SASL_AUTHENTICATION_FAILED, format!("Authentication failed: {why}")), None)
        }
    }
}

/// Adds SaslHandshake, SaslAuthenticate and the APIs the front answers itself (each at the
/// versions the front reads) to a successful ApiVersions response, so clients use the Kafka SASL
/// framing; an error answer, or one that does not decode, is left as it is.
fn advertise_sasl(answer: Vec<u8>, request_version: i16) -> Vec<u8> {
    let (h, a) = (SaslHandshakeRequest::VERSIONS, SaslAuthenticateRequest::VERSIONS);
    let [d, r, e] = own_versions();
    let keys = [(API_SASL_HANDSHAKE, h.min, h.max), (API_SASL_AUTHENTICATE, a.min, a.max), d, r, e];
    advertise(&answer, request_version, &keys).unwrap_or(answer)
}

/// PLAIN: `authzid NUL user NUL password`, checked against the users.
fn plain(auth: &[u8], users: &[(String, String)]) -> Step {
    let parts: Vec<&[u8]> = auth.split(|&b| b == 0).collect();
    let ok = parts.len() == 3 && users.iter().any(|(u, p)| parts[1] == u.as_bytes() && parts[2] == p.as_bytes());
    if ok {
        Step::Done(Vec::new())
    } else {
        Step::Fail(ERR_SASL_AUTHENTICATION_FAILED, "Authentication failed: Invalid username or password".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_versions_gain_the_sasl_keys_once_at_every_version() {
        use kafka_protocol::messages::ApiVersionsResponse;
        use kafka_protocol::messages::api_versions_response::ApiVersion;
        use kafka_protocol::protocol::{Decodable, Encodable};
        for version in 0..=ApiVersionsResponse::VERSIONS.max {
            let mut answer = 7i32.to_be_bytes().to_vec();
            let mine = ApiVersionsResponse::default()
                .with_api_keys(vec![ApiVersion::default().with_api_key(API_VERSIONS).with_max_version(2)]);
            let mut body = bytes::BytesMut::new();
            mine.encode(&mut body, version).expect("encodes");
            answer.extend_from_slice(&body);
            let patched = advertise_sasl(answer.clone(), version);
            let mut rest = bytes::Bytes::copy_from_slice(&patched[4..]);
            let got = ApiVersionsResponse::decode(&mut rest, version).expect("decodes");
            let keys: Vec<i16> = got.api_keys.iter().map(|k| k.api_key).collect();
            assert_eq!(
                keys,
                [&[API_VERSIONS, API_SASL_HANDSHAKE, API_SASL_AUTHENTICATE][..], &own_versions().map(|k| k.0)].concat()
            );
            assert_eq!(advertise_sasl(patched.clone(), version), patched, "idempotent at version {version}");
            assert_eq!(advertise_sasl(answer[..6].to_vec(), version), answer[..6].to_vec(), "garbage untouched");
        }
    }

    #[test]
    fn plain_checks_user_and_password() {
        let users = vec![("alice".to_owned(), "pw".to_owned())];
        assert!(matches!(plain(b"\0alice\0pw", &users), Step::Done(_)));
        assert!(matches!(plain(b"\0alice\0nope", &users), Step::Fail(ERR_SASL_AUTHENTICATION_FAILED, _)));
        assert!(matches!(plain(b"garbage", &users), Step::Fail(..)));
    }
}
