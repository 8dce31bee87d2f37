//! Kafka wire encoding for what the front adds to the mock cluster, which cannot do it itself:
//! a partition increase (Metadata responses list only the partitions made visible so far) and
//! topic configurations (DescribeConfigs answered from a table). Pure: bytes in, bytes out.
//!
//! ```text
//!  Metadata response (v0..v12, flexible from v9) ──rewrite_metadata(visible)──> partitions >= N dropped
//!  ApiVersions response (v0..v2) ──advertise(keys)──> more API keys listed
//!  DescribeConfigs request (v0..v1) ──describe_configs(table)──> response
//! ```
//!
//! Anything that does not parse is left alone (`None`): the front then relays the original bytes.
//! The primitive fields are read and written by `kafka_wire/codec.rs`.

pub(crate) mod codec;

use std::collections::BTreeMap;

pub(crate) use codec::put_str;
use codec::{Cursor, put_array_len};

/// API keys the front looks at.
pub const API_METADATA: i16 = 3;
/// DescribeConfigs.
pub const API_DESCRIBE_CONFIGS: i16 = 32;
/// ApiVersions.
pub const API_VERSIONS: i16 = 18;
/// Highest DescribeConfigs version the front answers (non-flexible).
pub const DESCRIBE_CONFIGS_MAX: i16 = 1;
const METADATA_FLEXIBLE_FROM: i16 = 9;

/// A Metadata response (from its correlation id on) for request `version`, with every topic of
/// `visible` listing only its partitions below the visible count. `None` when nothing changes
/// or the frame does not parse.
pub fn rewrite_metadata(frame: &[u8], version: i16, visible: &BTreeMap<String, i32>) -> Option<Vec<u8>> {
    if visible.is_empty() || !(0..=12).contains(&version) {
        return None;
    }
    let flexible = version >= METADATA_FLEXIBLE_FROM;
    // Everything before the topics is copied unchanged, so it is only skipped: the response
    // header's tagged fields, the throttle time (v3+), the brokers (id, host, port, rack from
    // v1), the cluster id (v2+) and the controller (v1+).
    let mut c = Cursor::new(frame, 4, flexible);
    c.tagged()?;
    if version >= 3 {
        c.i32()?;
    }
    for _ in 0..c.array_len()? {
        c.i32()?;
        c.string()?;
        c.i32()?;
        if version >= 1 {
            c.string()?;
        }
        c.tagged()?;
    }
    if version >= 2 {
        c.string()?;
    }
    if version >= 1 {
        c.i32()?;
    }
    let mut out = frame[..c.at].to_vec();
    let topics = c.array_len()?;
    put_array_len(&mut out, topics, flexible);
    let mut changed = false;
    for _ in 0..topics {
        // A topic's error code, name, id (v10+) and internal flag (v1+) are copied as they are.
        let start = c.at;
        c.i16()?;
        let name = c.string()?;
        if version >= 10 {
            c.take(16)?;
        }
        if version >= 1 {
            c.take(1)?;
        }
        out.extend_from_slice(&frame[start..c.at]);
        let limit = name.as_deref().and_then(|n| visible.get(n)).copied();
        let count = c.array_len()?;
        let mut kept: Vec<&[u8]> = Vec::with_capacity(count);
        // A partition is its error code, index, leader, leader epoch (v7+), replicas, in-sync
        // replicas and offline replicas (v5+); it is copied whole or not at all.
        for _ in 0..count {
            let p = c.at;
            c.i16()?;
            let index = c.i32()?;
            c.i32()?;
            if version >= 7 {
                c.i32()?;
            }
            c.i32_array()?;
            c.i32_array()?;
            if version >= 5 {
                c.i32_array()?;
            }
            c.tagged()?;
            if limit.is_none_or(|l| index < l) {
                kept.push(&frame[p..c.at]);
            }
        }
        changed |= kept.len() != count;
        put_array_len(&mut out, kept.len(), flexible);
        for k in kept {
            out.extend_from_slice(k);
        }
        // The topic's authorized operations (v8+) and tagged fields are copied after them.
        let rest = c.at;
        if version >= 8 {
            c.i32()?;
        }
        c.tagged()?;
        out.extend_from_slice(&frame[rest..c.at]);
    }
    out.extend_from_slice(&frame[c.at..]);
    changed.then_some(out)
}

/// A successful ApiVersions response (v0..v2, non-flexible) listing `keys` too (key, min, max),
/// replacing what the broker said for them.
pub fn advertise(answer: &[u8], request_version: i16, keys: &[(i16, i16, i16)]) -> Option<Vec<u8>> {
    if request_version > 2 {
        return None;
    }
    let mut c = Cursor::new(answer, 4, false);
    if c.i16()? != 0 {
        return None;
    }
    let count = usize::try_from(c.i32()?).ok()?;
    let mut entries: Vec<(i16, i16, i16)> = Vec::with_capacity(count + keys.len());
    for _ in 0..count {
        let e = (c.i16()?, c.i16()?, c.i16()?);
        if !keys.iter().any(|k| k.0 == e.0) {
            entries.push(e);
        }
    }
    entries.extend_from_slice(keys);
    let mut out = answer[..6].to_vec();
    out.extend_from_slice(&(entries.len() as i32).to_be_bytes());
    for (k, min, max) in entries {
        out.extend_from_slice(&k.to_be_bytes());
        out.extend_from_slice(&min.to_be_bytes());
        out.extend_from_slice(&max.to_be_bytes());
    }
    out.extend_from_slice(&answer[c.at..]);
    Some(out)
}

const RESOURCE_TOPIC: i8 = 2;
const CONFIG_SOURCE_DYNAMIC_TOPIC: i8 = 1;

/// The answer to a DescribeConfigs request (v0..v1; `body` starts after the request header):
/// topics answer their entries in `table` (only those asked for, when names are listed), other
/// resources and unknown topics an empty list. `None` when the request does not parse.
pub fn describe_configs(
    correlation_id: i32,
    version: i16,
    body: &[u8],
    table: &BTreeMap<String, BTreeMap<String, String>>,
) -> Option<Vec<u8>> {
    if !(0..=DESCRIBE_CONFIGS_MAX).contains(&version) {
        return None;
    }
    let mut c = Cursor::new(body, 0, false);
    let mut resources = Vec::new();
    for _ in 0..c.array_len()? {
        let kind = c.i8()?;
        let name = c.string()?.unwrap_or_default();
        let names: Option<Vec<String>> = match c.i32()? {
            n if n < 0 => None,
            n => Some((0..n).map(|_| c.string().map(Option::unwrap_or_default)).collect::<Option<_>>()?),
        };
        resources.push((kind, name, names));
    }
    // The response: correlation id, throttle time 0, then per resource no error, its kind and
    // name, and its entries.
    let mut out = correlation_id.to_be_bytes().to_vec();
    out.extend_from_slice(&0i32.to_be_bytes());
    out.extend_from_slice(&(resources.len() as i32).to_be_bytes());
    for (kind, name, names) in resources {
        out.extend_from_slice(&0i16.to_be_bytes());
        put_str(&mut out, None);
        out.push(kind as u8);
        put_str(&mut out, Some(&name));
        let entries: Vec<(&String, &String)> = match (kind, table.get(&name)) {
            (RESOURCE_TOPIC, Some(configs)) => {
                configs.iter().filter(|(k, _)| names.as_ref().is_none_or(|n| n.is_empty() || n.contains(k))).collect()
            }
            _ => Vec::new(),
        };
        out.extend_from_slice(&(entries.len() as i32).to_be_bytes());
        // Each entry is a name and value that is not read-only, set on the topic (v0 says "not
        // a default", v1 names the source), not sensitive, and without synonyms (v1).
        for (k, v) in entries {
            put_str(&mut out, Some(k));
            put_str(&mut out, Some(v));
            out.push(0);
            if version == 0 {
                out.push(0);
            } else {
                out.push(CONFIG_SOURCE_DYNAMIC_TOPIC as u8);
            }
            out.push(0);
            if version >= 1 {
                out.extend_from_slice(&0i32.to_be_bytes());
            }
        }
    }
    Some(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::codec::put_uvarint;
    use super::*;

    /// Builds a Metadata response with one broker and one topic of `partitions` partitions.
    pub(crate) fn metadata_response(version: i16, partitions: i32) -> Vec<u8> {
        let flexible = version >= METADATA_FLEXIBLE_FROM;
        let string = |out: &mut Vec<u8>, s: &str| {
            if flexible {
                put_uvarint(out, s.len() as u64 + 1);
            } else {
                out.extend_from_slice(&(s.len() as i16).to_be_bytes());
            }
            out.extend_from_slice(s.as_bytes());
        };
        let tagged = |out: &mut Vec<u8>| {
            if flexible {
                out.push(0);
            }
        };
        let mut out = 7i32.to_be_bytes().to_vec();
        tagged(&mut out);
        if version >= 3 {
            out.extend_from_slice(&0i32.to_be_bytes());
        }
        put_array_len(&mut out, 1, flexible);
        out.extend_from_slice(&1i32.to_be_bytes());
        string(&mut out, "127.0.0.1");
        out.extend_from_slice(&9092i32.to_be_bytes());
        if version >= 1 {
            string(&mut out, "use1-az1");
        }
        tagged(&mut out);
        if version >= 2 {
            string(&mut out, "cluster");
        }
        if version >= 1 {
            out.extend_from_slice(&1i32.to_be_bytes());
        }
        put_array_len(&mut out, 1, flexible);
        out.extend_from_slice(&0i16.to_be_bytes());
        string(&mut out, "logs");
        if version >= 10 {
            out.extend_from_slice(&[7; 16]);
        }
        if version >= 1 {
            out.push(0);
        }
        put_array_len(&mut out, partitions as usize, flexible);
        for p in 0..partitions {
            out.extend_from_slice(&0i16.to_be_bytes());
            out.extend_from_slice(&p.to_be_bytes());
            out.extend_from_slice(&1i32.to_be_bytes());
            if version >= 7 {
                out.extend_from_slice(&0i32.to_be_bytes());
            }
            for _ in 0..if version >= 5 { 3 } else { 2 } {
                put_array_len(&mut out, 1, flexible);
                out.extend_from_slice(&1i32.to_be_bytes());
            }
            tagged(&mut out);
        }
        if version >= 8 {
            out.extend_from_slice(&0i32.to_be_bytes());
        }
        tagged(&mut out);
        if (8..=10).contains(&version) {
            out.extend_from_slice(&0i32.to_be_bytes());
        }
        tagged(&mut out);
        out
    }

    #[test]
    fn metadata_lists_only_the_visible_partitions_at_every_version() {
        let visible = BTreeMap::from([("logs".to_owned(), 3)]);
        for version in 0..=12 {
            let rewritten = rewrite_metadata(&metadata_response(version, 6), version, &visible).expect("rewritten");
            assert_eq!(rewritten, metadata_response(version, 3), "version {version}");
            // With nothing to hide, the response is left alone.
            assert_eq!(rewrite_metadata(&metadata_response(version, 2), version, &visible), None, "version {version}");
        }
    }

    #[test]
    fn garbage_is_left_alone() {
        let visible = BTreeMap::from([("logs".to_owned(), 3)]);
        let mut frame = metadata_response(12, 6);
        frame.truncate(frame.len() / 2);
        assert_eq!(rewrite_metadata(&frame, 12, &visible), None);
        assert_eq!(rewrite_metadata(&[1, 2, 3], 4, &visible), None);
        assert_eq!(describe_configs(1, 1, &[0, 0, 0, 9], &BTreeMap::new()), None);
    }

    #[test]
    fn api_versions_gain_keys() {
        let mut answer = 5i32.to_be_bytes().to_vec();
        answer.extend_from_slice(&0i16.to_be_bytes());
        answer.extend_from_slice(&1i32.to_be_bytes());
        answer.extend_from_slice(&[0, 3, 0, 0, 0, 12]);
        // Version 1 ends with the throttle time.
        answer.extend_from_slice(&0i32.to_be_bytes());
        let out = advertise(&answer, 1, &[(API_DESCRIBE_CONFIGS, 0, 1)]).expect("advertised");
        assert_eq!(&out[6..10], &2i32.to_be_bytes());
        assert_eq!(&out[16..22], &[0, 32, 0, 0, 0, 1]);
        assert_eq!(&out[22..], &0i32.to_be_bytes());
        assert_eq!(advertise(&answer, 3, &[(32, 0, 1)]), None);
    }

    #[test]
    fn describe_configs_answers_from_the_table() {
        let mut body = 2i32.to_be_bytes().to_vec();
        body.push(2);
        put_str(&mut body, Some("logs"));
        body.extend_from_slice(&(-1i32).to_be_bytes());
        body.push(4);
        put_str(&mut body, Some("1"));
        body.extend_from_slice(&(-1i32).to_be_bytes());
        // Version 1 asks whether to include synonyms.
        body.push(0);
        let table = BTreeMap::from([(
            "logs".to_owned(),
            BTreeMap::from([("max.message.bytes".to_owned(), "1000".to_owned())]),
        )]);
        let out = describe_configs(9, 1, &body, &table).expect("answered");
        let mut c = Cursor::new(&out, 0, false);
        assert_eq!(c.i32(), Some(9));
        assert_eq!(c.i32(), Some(0));
        assert_eq!(c.i32(), Some(2));
        assert_eq!((c.i16(), c.string(), c.i8()), (Some(0), Some(None), Some(2)));
        assert_eq!(c.string(), Some(Some("logs".into())));
        assert_eq!(c.i32(), Some(1));
        assert_eq!((c.string(), c.string()), (Some(Some("max.message.bytes".into())), Some(Some("1000".into()))));
    }
}
