//! Deterministic mode (`roll.offset-interval`): the objects that start at the offset a roll
//! starts at, whatever their last offset. Keys name both offsets there, so an object cut by
//! age or a handover and the one a later reader cuts elsewhere have different keys; listing
//! the part of the key before `{last_offset}` finds the earlier one, and the roll goes on after
//! it (as it does after an object found at its own key) instead of writing its records again.
//!
//! ```text
//!  same_start_prefix(key) ──ListObjectsV2 (prefix, ≤ 100)──> keys ≠ ours ──HEAD──> ObjectSpan each
//! ```

use anyhow::Context;
use aws_sdk_s3::Client;

use super::Outcome;
use crate::config::S3Config;

/// Objects under `prefix` other than `key`, as [`Outcome::Exists`] with what their metadata
/// says. At most 100: one first offset has one object, or a few when writers cut it
/// differently.
pub async fn same_start(client: &Client, cfg: &S3Config, prefix: &str, key: &str) -> anyhow::Result<Vec<Outcome>> {
    let listed = client
        .list_objects_v2()
        .bucket(&cfg.bucket)
        .prefix(prefix)
        .max_keys(100)
        .send()
        .await
        .with_context(|| format!("listing s3://{}/{prefix}", cfg.bucket))?;
    let mut out = Vec::new();
    for other in listed.contents().iter().filter_map(|o| o.key()).filter(|k| *k != key) {
        out.push(super::existing(client, cfg, other).await?);
    }
    Ok(out)
}
