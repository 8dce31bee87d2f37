//! Amazon MSK's IAM login as a broker checks it, written from the SigV4 specification rather
//! than with AWS's signer (so that it checks the client's signer, not itself): the OAUTHBEARER
//! token is a base64url presigned `GET https://kafka.<region>.amazonaws.com/?Action=
//! kafka-cluster%3AConnect`; the front recomputes the signature with the secret of the access
//! key it names and refuses a token that is malformed, signed wrongly, for another action or
//! service, from the future, or past its `X-Amz-Expires`.
//!
//! ```text
//!  "n,,\x01auth=Bearer <token>\x01\x01" ──> base64url decode ──> URL ──> query parameters
//!     canonical request (GET, /, sorted query without X-Amz-Signature and User-Agent,
//!     host, empty payload hash) ──> string to sign ──HMAC chain(secret, date, region,
//!     "kafka-cluster")──> signature == X-Amz-Signature? and now within [date, date + expires]
//! ```

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::{digest, hmac};
use base64::Engine as _;

/// How far in the future a token's date may be (clock skew), as AWS allows.
const SKEW: Duration = Duration::from_secs(300);

/// The bearer token in an OAUTHBEARER client-first message (RFC 7628).
pub(super) fn bearer(message: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(message).ok()?;
    text.split('\x01').find_map(|kv| kv.strip_prefix("auth=Bearer ").map(str::to_owned))
}

/// A token checked: the access key it was signed with and when it expires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Verified {
    pub access_key: String,
    pub expires: SystemTime,
}

/// Checks an MSK IAM token against `keys` (access key id, secret) at `now`.
pub(super) fn verify(token: &str, keys: &[(String, String)], now: SystemTime) -> Result<Verified, String> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.trim_end_matches('='))
        .map_err(|e| format!("the token is not base64url: {e}"))?;
    let url = String::from_utf8(bytes).map_err(|_| "the token is not a URL".to_owned())?;
    let rest = url.strip_prefix("https://").ok_or("the token is not an https URL")?;
    let (host, query) = rest.split_once("/?").ok_or("the token's URL has no query")?;
    let mut params = BTreeMap::new();
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').ok_or_else(|| format!("malformed query parameter {pair:?}"))?;
        params.insert(decode(k)?, decode(v)?);
    }
    let get = |k: &str| params.get(k).map(String::as_str).ok_or_else(|| format!("{k} is missing"));
    if get("Action")? != "kafka-cluster:Connect" {
        return Err(format!("the action is {:?}, not kafka-cluster:Connect", get("Action")?));
    }
    if get("X-Amz-Algorithm")? != "AWS4-HMAC-SHA256" {
        return Err("the algorithm is not AWS4-HMAC-SHA256".into());
    }
    if get("X-Amz-SignedHeaders")? != "host" {
        return Err("only the host header may be signed".into());
    }
    let credential = get("X-Amz-Credential")?;
    let scope: Vec<&str> = credential.split('/').collect();
    let [access_key, date, region, service, "aws4_request"] = scope[..] else {
        return Err(format!("malformed credential scope {credential:?}"));
    };
    if service != "kafka-cluster" || host != format!("kafka.{region}.amazonaws.com") {
        return Err(format!("signed for service {service:?} at {host:?}, not kafka-cluster in {region}"));
    }
    let secret = keys.iter().find(|(k, _)| k == access_key).map(|(_, s)| s).ok_or("unknown access key")?;
    let amz_date = get("X-Amz-Date")?;
    let signed_at = parse_amz_date(amz_date).ok_or("malformed X-Amz-Date")?;
    if !amz_date.starts_with(date) {
        return Err("the credential's date is not the request's".into());
    }
    let expires_in: u64 = get("X-Amz-Expires")?.parse().map_err(|_| "malformed X-Amz-Expires")?;
    if expires_in > 900 {
        return Err("X-Amz-Expires is over 900 seconds".into());
    }
    let expires = signed_at + Duration::from_secs(expires_in);
    if signed_at > now + SKEW {
        return Err("the token is signed in the future".into());
    }
    if now >= expires {
        return Err("the token has expired".into());
    }
    let canonical_query = params
        .iter()
        .filter(|(k, _)| *k != "X-Amz-Signature" && *k != "User-Agent")
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&");
    let empty_hash = hex(digest::digest(&digest::SHA256, b"").as_ref());
    let canonical = format!("GET\n/\n{canonical_query}\nhost:{host}\n\nhost\n{empty_hash}");
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{date}/{region}/{service}/aws4_request\n{}",
        hex(digest::digest(&digest::SHA256, canonical.as_bytes()).as_ref())
    );
    let mut key = format!("AWS4{secret}").into_bytes();
    for part in [date, region, service, "aws4_request"] {
        key = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &key), part.as_bytes()).as_ref().to_vec();
    }
    let signature = hex(hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &key), to_sign.as_bytes()).as_ref());
    if signature != get("X-Amz-Signature")? {
        return Err("the signature does not match".into());
    }
    Ok(Verified { access_key: access_key.to_owned(), expires })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SigV4's encoding: unreserved characters kept, every other byte `%XX`.
const SIGV4: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

fn encode(v: &str) -> String {
    percent_encoding::utf8_percent_encode(v, SIGV4).to_string()
}

fn decode(v: &str) -> Result<String, String> {
    let bytes: Vec<u8> = percent_encoding::percent_decode_str(v).collect();
    String::from_utf8(bytes).map_err(|_| "an escape that is not UTF-8".to_owned())
}

/// `20261207T133000Z` as a time.
fn parse_amz_date(s: &str) -> Option<SystemTime> {
    let t = chrono::NaiveDateTime::parse_from_str(s, "%Y%m%dT%H%M%SZ").ok()?.and_utc();
    Some(UNIX_EPOCH + Duration::from_secs(u64::try_from(t.timestamp()).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amz_dates_parse() {
        let t = parse_amz_date("20261207T133000Z").expect("date");
        assert_eq!(t.duration_since(UNIX_EPOCH).expect("after").as_secs(), 1_796_650_200);
        assert_eq!(parse_amz_date("2026-12-07"), None);
    }

    #[test]
    fn the_bearer_comes_from_the_client_first_message() {
        assert_eq!(bearer(b"n,,\x01auth=Bearer abc\x01\x01").as_deref(), Some("abc"));
        assert_eq!(bearer(b"n,,\x01\x01"), None);
    }

    #[test]
    fn garbage_is_refused_with_a_reason() {
        let keys = vec![("AKID".to_owned(), "secret".to_owned())];
        assert!(verify("!!", &keys, SystemTime::now()).is_err());
        let url = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode("https://kafka.us-east-1.amazonaws.com/?Action=other");
        assert!(verify(&url, &keys, SystemTime::now()).expect_err("another action").contains("action"));
    }
}
