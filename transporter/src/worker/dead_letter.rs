//! A roll's dead-letter object (Parquet with `parquet.value-schema`): the records whose value did
//! not fit, uploaded before the object itself, so that no committed object lacks its dead
//! letters; removed again, when this roll wrote it, if the roll did not write the object
//! either (an object already there holds the records, and its dead letters went up before it).
//!
//! ```text
//!  Finished.dead_letter ──key: <prefix>/<dead-letter-folder>/<object key>-upto-<last>──>
//!     upload (If-None-Match: *; an object at that key holds the same range, so the same records)
//!  object written by this roll ──> kept | found there ──> deleted if this roll wrote it
//!     (best effort: a leftover is a duplicate, never a loss; one found at its key is never deleted)
//! ```

use anyhow::Context;
use az_core::TopicPartition;
use tokio::sync::watch;

use super::Worker;
use crate::buffer::{DEAD_LETTER_RECORDS, Finished};
use crate::coord::LeaseState;
use crate::upload::{Body, Condition, Outcome};

impl Worker {
    /// Uploads the dead-letter object of `f` (whose object goes to `key`), when it has one;
    /// returns its key when this roll wrote it (one already at the key is not ours to remove).
    pub(super) async fn upload_dead_letter(
        &self,
        tp: &TopicPartition,
        key: &str,
        f: &Finished,
        lease: &watch::Receiver<LeaseState>,
    ) -> anyhow::Result<Option<String>> {
        let Some((path, size, records)) = &f.dead_letter else { return Ok(None) };
        let cfg = &self.cfg.s3;
        let dl = crate::naming::dead_letter_key(key, &cfg.prefix, &self.cfg.parquet.dead_letter_folder, f.span.last);
        let mut meta = f.span.to_meta(&tp.topic, tp.partition, &self.source);
        meta.push((DEAD_LETTER_RECORDS, records.to_string()));
        let body = Body { path, size: *size };
        // An object already at this key holds the same range of the same partition: the same
        // records, written by a roll that did not commit. Either way they are in S3.
        let up = crate::upload::upload(&self.s3, cfg, &dl, body, &meta, &Condition::Create, lease)
            .await
            .inspect_err(|e| self.upload_failed(e))
            .with_context(|| format!("uploading the {records} dead letters of {tp} to {dl}"))?;
        tracing::warn!(partition = %tp, key = dl, records, from = f.span.from, last = f.span.last,
            "records whose value does not fit parquet.value-schema written to the dead-letter object");
        Ok((up.outcome == Outcome::Written).then_some(dl))
    }

    /// Removes a dead-letter object this roll wrote and no object will reference.
    pub(super) async fn drop_dead_letter(&self, dl: Option<&str>) {
        let Some(dl) = dl else { return };
        if let Err(e) = self.s3.delete_object().bucket(&self.cfg.s3.bucket).key(dl).send().await {
            tracing::warn!(key = dl, error = %e, "removing an unneeded dead-letter object failed; its records may be in the dead letters twice");
        }
    }
}
