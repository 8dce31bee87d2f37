//! The `[etcd]` section: how a worker reaches etcd (endpoints, user, TLS), the fleet's key
//! space, and the lease that fences a worker's partitions.

use std::path::PathBuf;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

/// etcd settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct EtcdConfig {
    /// Client endpoints, e.g. `http://10.0.0.1:2379`.
    pub endpoints: Vec<String>,
    /// Fleet name; every key lives under `/<cluster>/`.
    pub cluster: String,
    /// User name, when etcd authentication is on.
    pub username: Option<String>,
    /// Password for `username` (prefer `password-file`, or `ZONAL_TRANSPORTER__ETCD__PASSWORD`).
    pub password: Option<String>,
    /// File holding the password for `username` (a Kubernetes Secret, a systemd credential).
    pub password_file: Option<PathBuf>,
    /// TLS to etcd (endpoints then use `https://`).
    pub tls: Option<EtcdTls>,
    /// Lease TTL in seconds: how long a dead worker keeps its partitions fenced.
    pub lease_ttl_secs: i64,
    /// Whether the partitions' transactions made at the same moment (taking, committing,
    /// releasing) go to etcd as nested transactions of one request (`coord::batch`): a
    /// thousand partitions start with a few dozen requests instead of two thousand. Unset: on,
    /// except when the worker authenticates to etcd (`username` or a client certificate).
    /// etcd releases without the fix of GHSA-rfx7-8w68-q57q (March 2026; Debian's 3.4.23 is
    /// one) do not check a role's key permissions on nested transactions, so a role narrower
    /// than the fleet's keys would not hold; set `true` with an etcd that has the fix.
    pub gather_transactions: Option<bool>,
}

impl Default for EtcdConfig {
    fn default() -> Self {
        EtcdConfig {
            endpoints: Vec::new(),
            cluster: "zonal".into(),
            username: None,
            password: None,
            password_file: None,
            tls: None,
            lease_ttl_secs: 10,
            gather_transactions: None,
        }
    }
}

impl EtcdConfig {
    /// The password, from `password` or read from `password-file` (a trailing newline is not
    /// part of it).
    pub fn resolved_password(&self) -> anyhow::Result<Option<String>> {
        match (&self.password, &self.password_file) {
            (Some(p), _) => Ok(Some(p.clone())),
            (None, Some(f)) => {
                let text = std::fs::read_to_string(f)
                    .with_context(|| format!("etcd.password-file: reading {}", f.display()))?;
                Ok(Some(text.trim_end_matches(['\n', '\r']).to_owned()))
            }
            (None, None) => Ok(None),
        }
    }

    /// Whether transactions are gathered: `gather-transactions`, or by default unless the
    /// worker authenticates.
    pub fn gathers_transactions(&self) -> bool {
        let authenticates = self.username.is_some() || self.tls.as_ref().is_some_and(|t| t.cert_file.is_some());
        self.gather_transactions.unwrap_or(!authenticates)
    }

    /// Checks what serde cannot; the password file is read, so a missing one fails at startup.
    pub(super) fn validate(&self) -> anyhow::Result<()> {
        if self.endpoints.is_empty() {
            bail!("etcd.endpoints: at least one endpoint is required");
        }
        if self.cluster.is_empty() || self.cluster.contains('/') {
            bail!("etcd.cluster: must be non-empty without '/'");
        }
        if !(2..=3600).contains(&self.lease_ttl_secs) {
            bail!("etcd.lease-ttl-secs: must be between 2 and 3600, got {}", self.lease_ttl_secs);
        }
        if let Some(t) = &self.tls {
            if t.cert_file.is_some() != t.key_file.is_some() {
                bail!("etcd.tls: cert-file and key-file go together");
            }
            if let Some(e) = self.endpoints.iter().find(|e| e.starts_with("http://")) {
                bail!("etcd.endpoints: {e:?} is plain http while etcd.tls is set; use https://");
            }
        }
        if self.password.is_some() && self.password_file.is_some() {
            bail!("etcd.password and etcd.password-file: set one");
        }
        if (self.password.is_some() || self.password_file.is_some()) && self.username.is_none() {
            bail!("etcd.password: set etcd.username too");
        }
        self.resolved_password()?;
        Ok(())
    }
}

/// TLS settings for etcd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct EtcdTls {
    /// PEM file of the CA that signed etcd's server certificate.
    pub ca_file: PathBuf,
    /// PEM client certificate, when etcd requires client certificates.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert-file`.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Server name to verify, when it differs from the endpoint's host.
    #[serde(default)]
    pub domain: Option<String>,
}
