//! Object naming: the S3 key of a rolled buffer, from a template. Deterministic in (topic,
//! partition, first offset, the records' time partition), so that whoever uploads the same
//! records again overwrites the same object instead of duplicating it. Pure logic.
//!
//! ```text
//!  "{prefix}/{topic}/dt={date}/hr={hour}/{topic}-{partition}-{first_offset:020}.{ext}"
//!     + ObjectName { topic: "logs", partition: 3, first_offset: 42, date: "2026-11-22", hour: "07", .. }
//!     = "zonal/logs/dt=2026-11-22/hr=07/logs-3-00000000000000000042.jsonl.zst"
//! ```

/// What a key is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectName<'a> {
    /// `{prefix}`.
    pub prefix: &'a str,
    /// `{topic}`.
    pub topic: &'a str,
    /// `{partition}`.
    pub partition: i32,
    /// `{first_offset}`.
    pub first_offset: i64,
    /// `{last_offset}` (deterministic mode only: `roll.offset-interval`).
    pub last_offset: i64,
    /// `{date}`: the records' local date (`timepart`), or `records.no-time`.
    pub date: &'a str,
    /// `{hour}`: their hour.
    pub hour: &'a str,
    /// `{ext}`, e.g. `jsonl.zst`.
    pub ext: &'a str,
}

/// Why a template is unusable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TemplateError {
    /// An unknown `{placeholder}`.
    #[error("unknown placeholder {{{0}}}")]
    Unknown(String),
    /// An unclosed `{`.
    #[error("unclosed '{{' at byte {0}")]
    Unclosed(usize),
    /// A placeholder whose value a restart does not reproduce.
    #[error(
        "{{{0}}} is not allowed: an object re-read after a crash can end at another offset, get another key and duplicate records (it is for roll.offset-interval, whose objects end where the offsets say)"
    )]
    NotReproducible(&'static str),
    /// In deterministic mode, `{last_offset}` must follow every other placeholder but `{ext}`:
    /// the objects that start at an offset are found by listing the key before it.
    #[error("with roll.offset-interval, {{last_offset}} must come after every other placeholder except {{ext}}")]
    LastOffsetNotLast,
    /// A placeholder every key needs is absent.
    #[error("must contain {{{0}}} so that keys are unique and re-uploads overwrite")]
    Missing(&'static str),
}

const NAMES: [&str; 8] = ["prefix", "topic", "partition", "first_offset", "last_offset", "date", "hour", "ext"];

/// A placeholder: start and end byte, name, zero-padding width.
type Placeholder<'a> = (usize, usize, &'a str, Option<usize>);

fn placeholders(template: &str) -> Result<Vec<Placeholder<'_>>, TemplateError> {
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(open) = template[i..].find('{') {
        let start = i + open;
        let close = template[start..].find('}').ok_or(TemplateError::Unclosed(start))? + start;
        let inner = &template[start + 1..close];
        let (name, width) = match inner.split_once(':') {
            Some((n, w)) => {
                let w = w.strip_prefix('0').and_then(|w| w.parse::<usize>().ok()).filter(|w| *w <= 32);
                (n, Some(w.ok_or_else(|| TemplateError::Unknown(inner.to_owned()))?))
            }
            None => (inner, None),
        };
        if !NAMES.contains(&name) {
            return Err(TemplateError::Unknown(inner.to_owned()));
        }
        out.push((start, close + 1, name, width));
        i = close + 1;
    }
    Ok(out)
}

/// Whether `template` has placeholder `name` (with or without padding); false for a template
/// that does not parse (`check_template` reports it).
pub fn uses(template: &str, name: &str) -> bool {
    placeholders(template).is_ok_and(|ps| ps.iter().any(|p| p.2 == name))
}

/// Checks a template: known placeholders, and topic, partition and first offset present. In
/// deterministic mode (`roll.offset-interval`) `{last_offset}` is required, after every other
/// placeholder but `{ext}`; otherwise it is refused (a re-read would end elsewhere).
pub fn check_template(template: &str, deterministic: bool) -> Result<(), TemplateError> {
    let ps = placeholders(template)?;
    for need in ["topic", "partition", "first_offset"] {
        if !ps.iter().any(|p| p.2 == need) {
            return Err(TemplateError::Missing(need));
        }
    }
    let last = ps.iter().position(|p| p.2 == "last_offset");
    match (deterministic, last) {
        (false, Some(_)) => Err(TemplateError::NotReproducible("last_offset")),
        (true, None) => Err(TemplateError::Missing("last_offset")),
        (true, Some(i)) if ps[i + 1..].iter().any(|p| p.2 != "ext") => Err(TemplateError::LastOffsetNotLast),
        _ => Ok(()),
    }
}

/// The part of a deterministic key that does not depend on its last offset: listing it finds
/// every object that starts where this one does, whatever its end.
pub fn same_start_prefix(template: &str, n: &ObjectName<'_>) -> Result<String, TemplateError> {
    let low = render(template, &ObjectName { last_offset: 0, ..n.clone() })?;
    let high = render(template, &ObjectName { last_offset: i64::MAX, ..n.clone() })?;
    let common = low.bytes().zip(high.bytes()).take_while(|(a, b)| a == b).count();
    Ok(low[..common].to_owned())
}

/// The key of an object's dead-letter object: in `folder` under `prefix`, the object's own key
/// with the span's last offset added (`…-upto-<last>.<ext>`), so that objects cut differently
/// never share one.
pub fn dead_letter_key(key: &str, prefix: &str, folder: &str, last: i64) -> String {
    let prefix = prefix.trim_matches('/');
    let (head, rest) = match key.strip_prefix(prefix).and_then(|r| r.strip_prefix('/')) {
        Some(rest) if !prefix.is_empty() => (format!("{prefix}/{folder}/"), rest),
        _ => (format!("{folder}/"), key),
    };
    let (dir, file) = rest.rsplit_once('/').map_or(("", rest), |(d, f)| (d, f));
    let (stem, ext) = file.split_once('.').unwrap_or((file, ""));
    let dir = if dir.is_empty() { String::new() } else { format!("{dir}/") };
    let ext = if ext.is_empty() { String::new() } else { format!(".{ext}") };
    format!("{head}{dir}{stem}-upto-{last:020}{ext}")
}

/// Renders a key. An empty prefix leaves no leading or doubled `/`. Every placeholder is a
/// function of the records, never of the worker, so any owner renders the same key.
pub fn render(template: &str, n: &ObjectName<'_>) -> Result<String, TemplateError> {
    let ps = placeholders(template)?;
    let mut out = String::with_capacity(template.len() + 64);
    let mut last = 0;
    for (start, end, name, width) in ps {
        out.push_str(&template[last..start]);
        let value = match name {
            "prefix" => n.prefix.to_owned(),
            "topic" => n.topic.to_owned(),
            "partition" => n.partition.to_string(),
            "first_offset" => n.first_offset.to_string(),
            "last_offset" => n.last_offset.to_string(),
            "date" => n.date.to_owned(),
            "hour" => n.hour.to_owned(),
            _ => n.ext.to_owned(),
        };
        match width {
            Some(w) => out.push_str(&format!("{value:0>w$}")),
            None => out.push_str(&value),
        }
        last = end;
    }
    out.push_str(&template[last..]);
    // Collapse the empty segments an empty prefix leaves.
    let mut key = String::with_capacity(out.len());
    for seg in out.split('/').filter(|s| !s.is_empty()) {
        if !key.is_empty() {
            key.push('/');
        }
        key.push_str(seg);
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DEFAULT_KEY_TEMPLATE, DETERMINISTIC_KEY_TEMPLATE};

    fn name(prefix: &str) -> ObjectName<'_> {
        ObjectName {
            prefix,
            topic: "logs",
            partition: 3,
            first_offset: 42,
            last_offset: 99,
            date: "2026-11-22",
            hour: "08",
            ext: "jsonl.zst",
        }
    }

    #[test]
    fn default_template() {
        let key = render(DEFAULT_KEY_TEMPLATE, &name("zonal")).expect("render");
        assert_eq!(key, "zonal/logs/dt=2026-11-22/hr=08/logs-3-00000000000000000042.jsonl.zst");
        let key = render(DEFAULT_KEY_TEMPLATE, &name("")).expect("render");
        assert_eq!(key, "logs/dt=2026-11-22/hr=08/logs-3-00000000000000000042.jsonl.zst");
    }

    #[test]
    fn bad_templates() {
        assert_eq!(check_template("{topic}/{partition}", false), Err(TemplateError::Missing("first_offset")));
        assert_eq!(
            check_template("{topic}/{partition}/{first_offset}/{nope}", false),
            Err(TemplateError::Unknown("nope".into()))
        );
        assert_eq!(
            check_template("{topic}/{partition}/{first_offset:x}", false),
            Err(TemplateError::Unknown("first_offset:x".into()))
        );
        assert!(matches!(check_template("{topic}/{partition}/{first_offset", false), Err(TemplateError::Unclosed(_))));
        assert_eq!(
            check_template("{topic}/{partition}/{first_offset}-{last_offset}", false),
            Err(TemplateError::NotReproducible("last_offset"))
        );
        assert!(check_template(DEFAULT_KEY_TEMPLATE, false).is_ok());
        assert_eq!(check_template(DEFAULT_KEY_TEMPLATE, true), Err(TemplateError::Missing("last_offset")));
        assert_eq!(
            check_template("{topic}/{partition}/{last_offset}-{first_offset}", true),
            Err(TemplateError::LastOffsetNotLast)
        );
        assert!(check_template(DETERMINISTIC_KEY_TEMPLATE, true).is_ok());
    }

    proptest::proptest! {
        /// Keys are deterministic and distinct for distinct (topic, partition, first offset).
        #[test]
        fn unique_and_deterministic(p1 in 0i32..1000, o1 in 0i64..i64::MAX, p2 in 0i32..1000, o2 in 0i64..i64::MAX, hour in "[0-2][0-9]") {
            let a = ObjectName { partition: p1, first_offset: o1, hour: &hour, ..name("z") };
            let b = ObjectName { partition: p2, first_offset: o2, hour: &hour, ..name("z") };
            let ka = render(DEFAULT_KEY_TEMPLATE, &a).expect("render");
            proptest::prop_assert_eq!(&ka, &render(DEFAULT_KEY_TEMPLATE, &a).expect("render"));
            let kb = render(DEFAULT_KEY_TEMPLATE, &b).expect("render");
            proptest::prop_assert_eq!(ka == kb, (p1, o1) == (p2, o2));
        }
    }

    #[test]
    fn the_same_start_prefix_finds_every_end() {
        let n = name("zonal");
        let prefix = same_start_prefix(DETERMINISTIC_KEY_TEMPLATE, &n).expect("prefix");
        assert_eq!(prefix, "zonal/logs/dt=2026-11-22/hr=08/logs-3-00000000000000000042-0");
        for last in [42, 99, 1_000_000, i64::MAX] {
            let key = render(DETERMINISTIC_KEY_TEMPLATE, &ObjectName { last_offset: last, ..n.clone() }).expect("key");
            assert!(key.starts_with(&prefix), "{key}");
        }
        let other = render(DETERMINISTIC_KEY_TEMPLATE, &ObjectName { first_offset: 420, ..n.clone() }).expect("key");
        assert!(!other.starts_with(&prefix), "{other}");
    }

    #[test]
    fn dead_letter_keys_sit_in_their_folder_and_name_the_end() {
        let key = "zonal/logs/dt=2026-11-22/hr=08/logs-3-00000000000000000042.parquet";
        assert_eq!(
            dead_letter_key(key, "zonal", "_dead-letter", 99),
            "zonal/_dead-letter/logs/dt=2026-11-22/hr=08/logs-3-00000000000000000042-upto-00000000000000000099.parquet"
        );
        assert_eq!(
            dead_letter_key("logs-3-42.parquet", "", "_dl", 7),
            "_dl/logs-3-42-upto-00000000000000000007.parquet"
        );
        assert_ne!(dead_letter_key(key, "zonal", "_dl", 99), dead_letter_key(key, "zonal", "_dl", 100));
    }
}
