//! The keys of a roll's objects: the object's own (from the template, with the records' date
//! and hour), in deterministic mode the objects that start at the same offset, and the
//! dead-letter object's.

use az_core::TopicPartition;

use super::Worker;
use super::roll::{After, after};
use crate::buffer::{self, Finished};
use crate::naming::{self, ObjectName};
use crate::upload::Outcome;

impl Worker {
    /// The object key of a finished buffer.
    pub(super) fn object_key(&self, tp: &TopicPartition, f: &Finished) -> anyhow::Result<String> {
        Ok(naming::render(
            self.cfg.s3.key_template(&self.cfg.roll),
            &self.object_name(tp, f, &self.times.date_hour(f.bucket)),
        )?)
    }

    /// What a finished buffer's key is made of.
    fn object_name<'a>(
        &'a self,
        tp: &'a TopicPartition,
        f: &Finished,
        (date, hour): &'a (String, String),
    ) -> ObjectName<'a> {
        let s3 = &self.cfg.s3;
        ObjectName {
            prefix: &s3.prefix,
            topic: &tp.topic,
            partition: tp.partition,
            first_offset: f.first_offset,
            last_offset: f.span.last,
            date,
            hour,
            ext: buffer::extension(s3.format, s3.compression),
        }
    }

    /// In deterministic mode, the object that starts where `f` does under another key and
    /// holds the most records, when there is one: its records are in S3 already.
    pub(super) async fn same_start(
        &self,
        tp: &TopicPartition,
        key: &str,
        f: &Finished,
    ) -> anyhow::Result<Option<Outcome>> {
        if self.cfg.roll.offset_interval == 0 {
            return Ok(None);
        }
        let parts = self.times.date_hour(f.bucket);
        let prefix =
            naming::same_start_prefix(self.cfg.s3.key_template(&self.cfg.roll), &self.object_name(tp, f, &parts))?;
        let found = crate::upload::siblings::same_start(&self.s3, &self.cfg.s3, &prefix, key).await?;
        // The one that covers most (an unproven one is kept too: it stops the roll, as at our key).
        let rank = |o: &Outcome| match after(o, tp, &f.span, &self.source) {
            After::Unproven { .. } => i64::MAX,
            After::Theirs { last } => last,
            After::Ours => f.span.last,
        };
        Ok(found.into_iter().max_by_key(rank))
    }
}
