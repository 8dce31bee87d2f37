//! The server side of SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802) for the front's SASL exchange:
//! the server-first message from the client-first one, then the proof in the client-final
//! message checked and answered with the server signature.

use std::num::NonZeroU32;

use aws_lc_rs::{digest, hmac, pbkdf2};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use super::sasl::{ERR_SASL_AUTHENTICATION_FAILED, Step};

const SCRAM_ITERATIONS: u32 = 4096;

/// The server side of RFC 5802 (SCRAM) between the client's first and final messages.
pub(super) struct ScramServer {
    sha512: bool,
    salted: Vec<u8>,
    nonce: String,
    client_first_bare: String,
    server_first: String,
}

/// The failure Kafka reports, naming the mechanism but not what was wrong, so a client learns
/// nothing about which user names exist.
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

    /// Answers the client-first message; the server is kept for the final one.
    pub(super) fn first(sha512: bool, auth: &[u8], users: &[(String, String)]) -> (Option<ScramServer>, Step) {
        let text = String::from_utf8_lossy(auth);
        // The message starts with the gs2 header ("n,," or "n,a=authzid,"); the bare message
        // after it is what the signatures cover.
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

    /// Checks the client-final message's nonce and proof; answers with the server signature.
    pub(super) fn last(self, auth: &[u8]) -> Step {
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

    /// The client's final message for `password`, computed as RFC 5802 says, from the
    /// client-first-bare and server-first messages.
    fn client_final(sha512: bool, password: &str, client_first_bare: &str, server_first: &str) -> String {
        let attr = |name: &str| server_first.split(',').find_map(|a| a.strip_prefix(name)).unwrap_or_default();
        let salt = B64.decode(attr("s=")).unwrap_or_default();
        let iterations = attr("i=").parse().ok().and_then(NonZeroU32::new).unwrap_or(NonZeroU32::MIN);
        let server = ScramServer { sha512, ..ScramServer::empty() };
        let mut salted = vec![0u8; if sha512 { 64 } else { 32 }];
        let alg = if sha512 { pbkdf2::PBKDF2_HMAC_SHA512 } else { pbkdf2::PBKDF2_HMAC_SHA256 };
        pbkdf2::derive(alg, iterations, &salt, password.as_bytes(), &mut salted);
        let client_key = server.hmac(&salted, b"Client Key");
        let without_proof = format!("c=biws,r={}", attr("r="));
        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let signature = server.hmac(&server.hash(&client_key), auth_message.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(&signature).map(|(a, b)| a ^ b).collect();
        format!("{without_proof},p={}", B64.encode(proof))
    }

    impl ScramServer {
        fn empty() -> ScramServer {
            ScramServer {
                sha512: false,
                salted: Vec::new(),
                nonce: String::new(),
                client_first_bare: String::new(),
                server_first: String::new(),
            }
        }
    }

    #[test]
    fn scram_accepts_the_password_and_refuses_others() {
        let users = vec![("alice".to_owned(), "pw".to_owned())];
        for sha512 in [false, true] {
            for (password, accepted) in [("pw", true), ("nope", false)] {
                let bare = "n=alice,r=clientnonce";
                let (server, first) = ScramServer::first(sha512, format!("n,,{bare}").as_bytes(), &users);
                let (Some(server), Step::Continue(first)) = (server, first) else { panic!("no server-first") };
                let first = String::from_utf8_lossy(&first).into_owned();
                assert!(first.starts_with("r=clientnonce"), "the server's nonce extends the client's");
                let last = client_final(sha512, password, bare, &first);
                let outcome = server.last(last.as_bytes());
                assert_eq!(matches!(outcome, Step::Done(ref v) if v.starts_with(b"v=")), accepted, "{password}");
            }
        }
        let (server, outcome) = ScramServer::first(false, b"no gs2 header", &users);
        assert!(server.is_none() && matches!(outcome, Step::Fail(ERR_SASL_AUTHENTICATION_FAILED, _)));
    }
}
