//! Record-time partitions: which `{date}`/`{hour}` a record belongs to, from its own time (the
//! Kafka timestamp or a JSON field of its value) in the configured zone. Pure logic.
//!
//! ```text
//!  record ──time_of (timestamp | value's JSON field)──> Option<ms>
//!         ──bucket (local date and hour in `records.time-zone`, as fine as the template asks)──> Bucket
//!  open buffer's bucket ≠ record's ──> the buffer ends before the record (an object per bucket)
//!  Bucket ──date_hour──> ("2026-11-22", "08") | (no-time, no-time)
//! ```
//!
//! A bucket is the local date-and-hour label, not an instant: in the hour a clock falls back,
//! two real hours share one label and one partition, as a reader filtering `hr=01` expects.

use chrono::{DateTime, NaiveDateTime, Offset, TimeZone, Timelike};
use chrono_tz::Tz;
use serde::Deserialize;
use serde::de::{IgnoredAny, MapAccess, Visitor};

use crate::buffer::Record;
use crate::config::{RecordsConfig, TimeSource};

/// How fine the key's time partitions are: what the template asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granularity {
    /// Neither `{date}` nor `{hour}`: objects are not cut by time.
    None,
    /// `{date}`.
    Day,
    /// `{hour}` (with or without `{date}`).
    Hour,
}

impl Granularity {
    /// The granularity a key template asks for.
    pub fn of_template(template: &str) -> Granularity {
        if crate::naming::uses(template, "hour") {
            Granularity::Hour
        } else if crate::naming::uses(template, "date") {
            Granularity::Day
        } else {
            Granularity::None
        }
    }
}

/// The time partition of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Bucket {
    /// The local date (and hour) as ms of a naive date-time truncated to the granularity.
    At(i64),
    /// A record without a usable time.
    NoTime,
}

/// Places records in time partitions.
#[derive(Debug, Clone)]
pub struct TimeParts {
    granularity: Granularity,
    zone: Tz,
    field: Option<String>,
    no_time: String,
}

impl TimeParts {
    /// From the configuration and the key template.
    pub fn new(records: &RecordsConfig, template: &str) -> anyhow::Result<TimeParts> {
        Ok(TimeParts {
            granularity: Granularity::of_template(template),
            zone: records.zone()?,
            field: match records.time_source {
                TimeSource::Record => None,
                TimeSource::JsonField => records.time_field.clone(),
            },
            no_time: records.no_time.clone(),
        })
    }

    /// Whether the template has time partitions at all.
    pub fn cuts(&self) -> bool {
        self.granularity != Granularity::None
    }

    /// A record's time in ms since the epoch: its timestamp, or its value's field.
    pub fn time_of(&self, r: &Record<'_>) -> Option<i64> {
        match &self.field {
            None => r.timestamp_ms,
            Some(f) => r.value.and_then(|v| json_time(v, f)),
        }
    }

    /// The partition of a record at `ms` (none: [`Bucket::NoTime`]).
    pub fn bucket(&self, ms: Option<i64>) -> Bucket {
        if self.granularity == Granularity::None {
            return Bucket::At(0);
        }
        let Some(local) = ms.and_then(|ms| self.local(ms)) else { return Bucket::NoTime };
        let truncated = match self.granularity {
            Granularity::Hour => local.date().and_hms_opt(local.hour(), 0, 0),
            _ => local.date().and_hms_opt(0, 0, 0),
        };
        truncated.map_or(Bucket::NoTime, |t| Bucket::At(t.and_utc().timestamp_millis()))
    }

    fn local(&self, ms: i64) -> Option<NaiveDateTime> {
        let utc = DateTime::from_timestamp_millis(ms)?.naive_utc();
        // Checked: a time within the zone's offset of chrono's range has no local date.
        utc.checked_add_offset(self.zone.offset_from_utc_datetime(&utc).fix())
    }

    /// `{date}` and `{hour}` of a bucket.
    pub fn date_hour(&self, b: Bucket) -> (String, String) {
        match b {
            Bucket::At(ms) => match DateTime::from_timestamp_millis(ms) {
                Some(t) => (t.format("%Y-%m-%d").to_string(), t.format("%H").to_string()),
                None => (self.no_time.clone(), self.no_time.clone()),
            },
            Bucket::NoTime => (self.no_time.clone(), self.no_time.clone()),
        }
    }
}

/// A time as JSON gives it.
#[derive(Deserialize)]
#[serde(untagged)]
enum JsonTime {
    Int(i64),
    Float(f64),
    Text(String),
}

/// The time in the top-level `field` of a JSON object `value`: a number of ms since the epoch,
/// or an RFC 3339 string. Anything else (not JSON, not an object, no such field, another type)
/// is no time. Other fields are skipped without being built.
pub fn json_time(value: &[u8], field: &str) -> Option<i64> {
    struct Find<'f>(&'f str);
    impl<'de> Visitor<'de> for Find<'_> {
        type Value = Option<JsonTime>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut found = None;
            while let Some(k) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                if found.is_none() && k == self.0 {
                    found = map.next_value::<Option<JsonTime>>().ok().flatten();
                    if found.is_none() {
                        // A value of another type: the rest of the object does not matter.
                        return Ok(None);
                    }
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(found)
        }
    }
    let mut de = serde_json::Deserializer::from_slice(value);
    let t = serde::Deserializer::deserialize_map(&mut de, Find(field)).ok()??;
    match t {
        JsonTime::Int(ms) => Some(ms),
        JsonTime::Float(ms) if ms.is_finite() && ms.abs() < 9.0e15 => Some(ms as i64),
        JsonTime::Float(_) => None,
        JsonTime::Text(s) => DateTime::parse_from_rfc3339(&s).ok().map(|t| t.timestamp_millis()),
    }
}

#[cfg(test)]
mod tests;
