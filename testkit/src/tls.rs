//! Throwaway certificates for TLS tests, made in-process with `rcgen` (no `openssl` command): a
//! CA, a server certificate for 127.0.0.1 and localhost, and a client certificate whose key is
//! encrypted with a password (PKCS#8, PBES2 with PBKDF2-SHA256 and AES-256-CBC, as `openssl
//! pkcs8 -topk8 -v2 aes-256-cbc` writes it), so `ssl.key.password` is exercised too.
//!
//! ```text
//!  ca.pem (CA:TRUE) ──signs──> server.pem (SAN IP:127.0.0.1, DNS:localhost), server.key (PKCS#8, clear)
//!                  └─signs──> client-plain.pem (CN=zonal-client), client.key (encrypted PKCS#8)
//! ```

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};

use crate::{Result, TestkitError, io_err};

/// The password of the client key (`ssl.key.password`).
pub const CLIENT_KEY_PASSWORD: &str = "client-key-pw-8c1f";

/// Certificates of a TLS server, with a client certificate signed by the same CA.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// CA certificate (PEM): what clients trust, and what a server checks client certificates
    /// against.
    pub ca: PathBuf,
    /// Server certificate (PEM).
    pub cert: PathBuf,
    /// Server key (PEM, PKCS#8, unencrypted).
    pub key: PathBuf,
    /// Client certificate (PEM).
    pub client_cert: PathBuf,
    /// Client key (PEM, PKCS#8 encrypted with [`CLIENT_KEY_PASSWORD`]).
    pub client_key: PathBuf,
}

fn tls_err(what: &str, e: impl std::fmt::Display) -> TestkitError {
    TestkitError::Start { server: "tls", reason: format!("{what}: {e}") }
}

/// Parameters of a certificate with `cn`, valid from a day ago for two days (clocks may
/// differ a little; the certificates live as long as a test).
fn params(cn: &str, sans: &[SanType]) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.subject_alt_names = sans.to_vec();
    let now = std::time::SystemTime::now();
    p.not_before = (now - std::time::Duration::from_secs(86_400)).into();
    p.not_after = (now + std::time::Duration::from_secs(2 * 86_400)).into();
    p
}

/// The client key encrypted as OpenSSL's `pkcs8 -topk8 -v2 aes-256-cbc` does.
fn encrypted_pem(key: &KeyPair, password: &str) -> Result<String> {
    use pkcs8::PrivateKeyInfo;
    use pkcs8::der::pem::LineEnding;
    let der = key.serialize_der();
    let info = PrivateKeyInfo::try_from(der.as_slice()).map_err(|e| tls_err("reading the client key", e))?;
    let (salt, iv): ([u8; 16], [u8; 16]) = (rand_bytes(), rand_bytes());
    let params = pkcs8::pkcs5::pbes2::Parameters::pbkdf2_sha256_aes256cbc(2048, &salt, &iv)
        .map_err(|e| tls_err("PBES2 parameters", e))?;
    let doc = info.encrypt_with_params(params, password).map_err(|e| tls_err("encrypting the client key", e))?;
    doc.to_pem("ENCRYPTED PRIVATE KEY", LineEnding::LF)
        .map(|p| p.to_string())
        .map_err(|e| tls_err("writing the client key", e))
}

/// Random bytes from the operating system (via aws-lc-rs).
fn rand_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    // A failure leaves zeros: a fixed salt and IV are still a valid (if predictable) test key.
    let _ = aws_lc_rs::rand::fill(&mut b);
    b
}

/// Generates a CA, a server certificate (SAN 127.0.0.1 and localhost) and a client certificate
/// with EC P-256 keys in `dir`.
pub fn make_certs(dir: &Path) -> Result<TlsFiles> {
    let ca_key = KeyPair::generate().map_err(|e| tls_err("CA key", e))?;
    let mut ca = params("testkit-ca", &[]);
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let ca = ca.self_signed(&ca_key).map_err(|e| tls_err("CA certificate", e))?;

    let server_key = KeyPair::generate().map_err(|e| tls_err("server key", e))?;
    let ip = std::net::IpAddr::from([127, 0, 0, 1]);
    let localhost = "localhost".try_into().map_err(|e| tls_err("SAN", e))?;
    let mut server = params("127.0.0.1", &[SanType::IpAddress(ip), SanType::DnsName(localhost)]);
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server = server.signed_by(&server_key, &ca, &ca_key).map_err(|e| tls_err("server certificate", e))?;

    let client_key = KeyPair::generate().map_err(|e| tls_err("client key", e))?;
    let mut client = params("zonal-client", &[]);
    client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client = client.signed_by(&client_key, &ca, &ca_key).map_err(|e| tls_err("client certificate", e))?;

    let files = TlsFiles {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
        client_cert: dir.join("client-plain.pem"),
        client_key: dir.join("client.key"),
    };
    for (path, text) in [
        (&files.ca, ca.pem()),
        (&files.cert, server.pem()),
        (&files.key, server_key.serialize_pem()),
        (&files.client_cert, client.pem()),
        (&files.client_key, encrypted_pem(&client_key, CLIENT_KEY_PASSWORD)?),
    ] {
        std::fs::write(path, text).map_err(io_err(format!("write {}", path.display())))?;
    }
    Ok(files)
}
