//! Throwaway certificates for TLS tests, made with Debian's `openssl` command: a CA, a server
//! certificate for 127.0.0.1 and localhost, and a client certificate whose key is encrypted with
//! a password (so `ssl.key.password` is exercised too).
//!
//! ```text
//!  ca.pem/ca.key ──signs──> server.pem (SAN IP:127.0.0.1, DNS:localhost), server.key (PKCS#8, clear)
//!               └─signs──> client.pem (CN=zonal-client), client.key (PKCS#8, AES-256, CLIENT_KEY_PASSWORD)
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;

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

fn openssl(dir: &Path, args: &[&str]) -> Result<()> {
    let out = Command::new("openssl").current_dir(dir).args(args).output().map_err(|e| TestkitError::Start {
        server: "tls",
        reason: format!("running openssl ({e}); install Debian's openssl to test TLS"),
    })?;
    if !out.status.success() {
        return Err(TestkitError::Start {
            server: "tls",
            reason: format!("openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr)),
        });
    }
    Ok(())
}

const EC: [&str; 5] = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];

/// A key and certificate signed by the CA in `dir`, with the given subject and extensions.
fn signed(dir: &Path, name: &str, subject: &str, extensions: &str) -> Result<()> {
    let (key, csr, pem, ext) =
        (format!("{name}.key"), format!("{name}.csr"), format!("{name}.pem"), format!("{name}.cnf"));
    let mut req = vec!["req"];
    req.extend(EC);
    req.extend(["-keyout", &key, "-out", &csr, "-subj", subject]);
    openssl(dir, &req)?;
    std::fs::write(dir.join(&ext), extensions).map_err(io_err(format!("write {ext}")))?;
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "2",
            "-extfile",
            &ext,
        ],
    )
}

/// Generates a CA, a server certificate (SAN 127.0.0.1 and localhost) and a client certificate
/// with EC P-256 keys in `dir`.
pub fn make_certs(dir: &Path) -> Result<TlsFiles> {
    let mut ca = vec!["req", "-x509"];
    ca.extend(EC);
    ca.extend(["-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=testkit-ca"]);
    openssl(dir, &ca)?;
    signed(dir, "server", "/CN=127.0.0.1", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")?;
    signed(dir, "client-plain", "/CN=zonal-client", "extendedKeyUsage=clientAuth\n")?;
    let pass = format!("pass:{CLIENT_KEY_PASSWORD}");
    openssl(
        dir,
        &["pkcs8", "-topk8", "-v2", "aes-256-cbc", "-in", "client-plain.key", "-out", "client.key", "-passout", &pass],
    )?;
    std::fs::remove_file(dir.join("client-plain.key")).map_err(io_err("remove the clear client key"))?;
    Ok(TlsFiles {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
        client_cert: dir.join("client-plain.pem"),
        client_key: dir.join("client.key"),
    })
}
