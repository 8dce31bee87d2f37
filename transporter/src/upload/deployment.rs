//! Which deployment owns a bucket prefix. Two deployments writing to one prefix (staging beside
//! production, a second Kafka cluster, both left at the default `s3.prefix` and `etcd.cluster`
//! "zonal") make the same object keys: each takes the other's objects for a previous owner's
//! and commits past records it never wrote. A worker claims the prefix for its source (the
//! Kafka cluster's id and `etcd.cluster`) with a marker, and refuses to start on a prefix
//! claimed by another; every object names its source too (`zonal-source`), so an object of
//! another deployment met at a key is never taken for one's own.
//!
//! ```text
//!  PUT {prefix}/_zonal-probe/deployment.json (If-None-Match: *) ──200──> claimed
//!                                                              ──412──> GET: same source ──> ours
//!                                                                        other source ──> refuse to start
//!  cluster id unknown: no PUT; GET: none, or the same fleet ──> go on | another fleet ──> refuse
//! ```

use anyhow::Context;
use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use serde::{Deserialize, Serialize};

use super::precondition_failed;
use super::probe::PROBE_DIR;
use crate::config::S3Config;

/// The marker's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marker {
    /// The deployment's source: `<kafka cluster id>/<etcd.cluster>`.
    pub source: String,
    /// When it was claimed (RFC 3339), for the operator.
    pub claimed_at: String,
}

/// A worker's source: the Kafka cluster it reads and the fleet it belongs to. `None` for the
/// cluster id when Kafka did not say (then the marker is not written, but a marker there is
/// still checked against the fleet).
pub fn source(kafka_cluster_id: Option<&str>, etcd_cluster: &str) -> String {
    format!("{}/{etcd_cluster}", kafka_cluster_id.unwrap_or(UNKNOWN))
}

/// The cluster part of a source that could not be known.
pub const UNKNOWN: &str = "unknown";

/// Whether two sources may be the same deployment: equal, or, when one names no Kafka cluster
/// (it was not known at that worker's start), of the same `etcd.cluster`.
pub fn same_deployment(a: &str, b: &str) -> bool {
    let fleet = |s: &str| s.split_once('/').map_or(s, |(_, f)| f).to_owned();
    a == b || ((!known(a) || !known(b)) && fleet(a) == fleet(b))
}

/// Whether a source names its Kafka cluster.
fn known(source: &str) -> bool {
    !source.starts_with(&format!("{UNKNOWN}/"))
}

/// The marker's key under the prefix.
pub fn key(cfg: &S3Config) -> String {
    format!("{}/{PROBE_DIR}/deployment.json", cfg.prefix.trim_end_matches('/'))
}

/// Claims the prefix for `source`, or finds it claimed by the same source; an error naming both
/// sources and the settings to change when another deployment claimed it.
pub async fn claim(client: &Client, cfg: &S3Config, source: &str) -> anyhow::Result<()> {
    let key = key(cfg);
    if !known(source) {
        // Without the cluster's id the prefix is not claimed (a later worker that knows it
        // would find a marker it cannot match), but a marker of another fleet still refuses.
        tracing::warn!(
            source,
            "the Kafka cluster's id is not known: the prefix is not claimed, only checked against a claim"
        );
        return match read(client, cfg, &key).await? {
            Some(theirs) => refuse_other(cfg, &key, source, &theirs),
            None => Ok(()),
        };
    }
    let marker = Marker { source: source.to_owned(), claimed_at: chrono::Utc::now().to_rfc3339() };
    let put = cfg
        .object_settings()
        .on_put(client.put_object())
        .bucket(&cfg.bucket)
        .key(&key)
        .if_none_match("*")
        .body(ByteStream::from(serde_json::to_vec(&marker)?))
        .send()
        .await;
    match put {
        Ok(_) => {
            tracing::info!(source, key, "claimed the bucket prefix for this deployment");
            return Ok(());
        }
        Err(e) if precondition_failed(&e) => {}
        Err(e) => return Err(e).with_context(|| format!("writing the deployment marker s3://{}/{key}", cfg.bucket)),
    }
    let theirs = read(client, cfg, &key)
        .await?
        .with_context(|| format!("s3://{}/{key} was refused as existing, then not found", cfg.bucket))?;
    refuse_other(cfg, &key, source, &theirs)
}

/// The marker at `key`, if there is one.
async fn read(client: &Client, cfg: &S3Config, key: &str) -> anyhow::Result<Option<Marker>> {
    let got = match client.get_object().bucket(&cfg.bucket).key(key).send().await {
        Ok(got) => got,
        Err(e) if e.as_service_error().is_some_and(|e| e.is_no_such_key()) => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading the deployment marker s3://{}/{key}", cfg.bucket)),
    };
    let body = got.body.collect().await.with_context(|| format!("reading s3://{}/{key}", cfg.bucket))?.into_bytes();
    let theirs: Marker = serde_json::from_slice(&body).with_context(|| {
        format!("s3://{}/{key} is not a deployment marker; remove it if nothing else wrote it", cfg.bucket)
    })?;
    Ok(Some(theirs))
}

/// An error naming both sources and the settings to change, when the marker is another
/// deployment's.
fn refuse_other(cfg: &S3Config, key: &str, source: &str, theirs: &Marker) -> anyhow::Result<()> {
    anyhow::ensure!(
        same_deployment(source, &theirs.source),
        "s3://{}/{} belongs to another deployment (source {:?}, claimed {}); this one is {source:?}. Two deployments in one prefix would take each other's objects for their own: give this one its own s3.prefix (or bucket), or, if this is the same deployment after a Kafka cluster change, remove {key}",
        cfg.bucket,
        cfg.prefix,
        theirs.source,
        theirs.claimed_at
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_match_when_equal_or_unknown() {
        let prod = source(Some("lkc-prod"), "zonal");
        assert_eq!(prod, "lkc-prod/zonal");
        assert!(same_deployment(&prod, &prod));
        assert!(!same_deployment(&prod, &source(Some("lkc-staging"), "zonal")));
        assert!(!same_deployment(&prod, &source(Some("lkc-prod"), "zonal-eu")));
        assert!(same_deployment(&prod, &source(None, "zonal")), "an unknown cluster of the same fleet");
        assert!(!same_deployment(&prod, &source(None, "staging")), "an unknown cluster of another fleet");
    }
}
