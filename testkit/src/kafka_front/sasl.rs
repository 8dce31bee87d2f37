//! The SASL exchange a front answers itself before relaying anything: ApiVersions (relayed, with
//! the SASL keys and DescribeConfigs added), SaslHandshake (v0-1) and SaslAuthenticate (v0-1)
//! with PLAIN, SCRAM or OAUTHBEARER carrying an MSK IAM token (`msk_iam`). A failed login is
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

use super::SaslLogin;
use super::frame::{parse_header, read_bytes, read_frame, read_str, write_frame};
use super::scram::ScramServer;
use crate::kafka_wire::{API_DESCRIBE_CONFIGS, API_VERSIONS, DESCRIBE_CONFIGS_MAX, advertise, put_str};

// These are the Kafka API keys and error codes the exchange speaks.
const API_SASL_HANDSHAKE: i16 = 17;
const API_SASL_AUTHENTICATE: i16 = 36;
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
                    return Ok(Login::Refused);
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
                    Some("OAUTHBEARER") => {
                        let client_id = read_str(&frame, 8);
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
                resp.extend_from_slice(&err.to_be_bytes());
                put_str(&mut resp, msg.as_deref());
                resp.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
                resp.extend_from_slice(&bytes);
                // Version 1 adds the session lifetime; 0 means the session does not expire.
                if h.api_version >= 1 {
                    resp.extend_from_slice(&0i64.to_be_bytes());
                }
                write_frame(client, &resp).await?;
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

/// Adds SaslHandshake v0-1, SaslAuthenticate v0-1 and the front's own DescribeConfigs to a
/// successful non-flexible ApiVersions response (v0-2, which is all the mock answers), so clients
/// use the Kafka SASL framing; anything else is left as it is.
fn advertise_sasl(answer: Vec<u8>, request_version: i16) -> Vec<u8> {
    let keys =
        [(API_SASL_HANDSHAKE, 0, 1), (API_SASL_AUTHENTICATE, 0, 1), (API_DESCRIBE_CONFIGS, 0, DESCRIBE_CONFIGS_MAX)];
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
    use super::super::frame::{i16_at, i32_at};
    use super::*;

    #[test]
    fn api_versions_gain_the_sasl_keys_once() {
        // The answer has correlation id 7, no error, one key (ApiVersions 0..2) and throttle 0.
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
        assert_eq!(i16_at(&patched, 28), Some(API_DESCRIBE_CONFIGS));
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
