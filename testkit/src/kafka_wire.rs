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

use std::collections::BTreeMap;

/// API keys the front looks at.
pub const API_METADATA: i16 = 3;
/// DescribeConfigs.
pub const API_DESCRIBE_CONFIGS: i16 = 32;
/// ApiVersions.
pub const API_VERSIONS: i16 = 18;
/// Highest DescribeConfigs version the front answers (non-flexible).
pub const DESCRIBE_CONFIGS_MAX: i16 = 1;
const METADATA_FLEXIBLE_FROM: i16 = 9;

/// A reader over a frame.
struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
    flexible: bool,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.b.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(s)
    }
    fn i8(&mut self) -> Option<i8> {
        Some(i8::from_be_bytes(self.take(1)?.try_into().ok()?))
    }
    fn i16(&mut self) -> Option<i16> {
        Some(i16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }
    fn i32(&mut self) -> Option<i32> {
        Some(i32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
    fn uvarint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.take(1)?[0];
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    /// An array's element count (`None` for a null array is folded into 0).
    fn array_len(&mut self) -> Option<usize> {
        if self.flexible {
            Some(usize::try_from(self.uvarint()?.saturating_sub(1)).ok()?)
        } else {
            Some(usize::try_from(self.i32()?.max(0)).ok()?)
        }
    }
    /// A (nullable) string.
    fn string(&mut self) -> Option<Option<String>> {
        let len = if self.flexible {
            match self.uvarint()? {
                0 => return Some(None),
                n => usize::try_from(n - 1).ok()?,
            }
        } else {
            match self.i16()? {
                n if n < 0 => return Some(None),
                n => usize::try_from(n).ok()?,
            }
        };
        Some(Some(String::from_utf8_lossy(self.take(len)?).into_owned()))
    }
    fn tagged(&mut self) -> Option<()> {
        if self.flexible {
            for _ in 0..self.uvarint()? {
                self.uvarint()?;
                let size = usize::try_from(self.uvarint()?).ok()?;
                self.take(size)?;
            }
        }
        Some(())
    }
    fn i32_array(&mut self) -> Option<()> {
        let n = self.array_len()?;
        self.take(n.checked_mul(4)?)?;
        Some(())
    }
}

fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_array_len(out: &mut Vec<u8>, n: usize, flexible: bool) {
    if flexible {
        put_uvarint(out, n as u64 + 1);
    } else {
        out.extend_from_slice(&(n as i32).to_be_bytes());
    }
}

/// A non-flexible (nullable) string.
pub(crate) fn put_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => {
            out.extend_from_slice(&(s.len() as i16).to_be_bytes());
            out.extend_from_slice(s.as_bytes());
        }
        None => out.extend_from_slice(&(-1i16).to_be_bytes()),
    }
}

/// A Metadata response (from its correlation id on) for request `version`, with every topic of
/// `visible` listing only its partitions below the visible count. `None` when nothing changes
/// or the frame does not parse.
pub fn rewrite_metadata(frame: &[u8], version: i16, visible: &BTreeMap<String, i32>) -> Option<Vec<u8>> {
    if visible.is_empty() || !(0..=12).contains(&version) {
        return None;
    }
    let flexible = version >= METADATA_FLEXIBLE_FROM;
    let mut c = Cursor { b: frame, at: 4, flexible };
    c.tagged()?; // response header v1
    if version >= 3 {
        c.i32()?; // throttle
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
        c.string()?; // cluster id
    }
    if version >= 1 {
        c.i32()?; // controller
    }
    let mut out = frame[..c.at].to_vec();
    let topics = c.array_len()?;
    put_array_len(&mut out, topics, flexible);
    let mut changed = false;
    for _ in 0..topics {
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
    let mut c = Cursor { b: answer, at: 4, flexible: false };
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
    let mut c = Cursor { b: body, at: 0, flexible: false };
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
    let mut out = correlation_id.to_be_bytes().to_vec();
    out.extend_from_slice(&0i32.to_be_bytes()); // throttle
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
        for (k, v) in entries {
            put_str(&mut out, Some(k));
            put_str(&mut out, Some(v));
            out.push(0); // read-only
            if version == 0 {
                out.push(0); // is-default
            } else {
                out.push(CONFIG_SOURCE_DYNAMIC_TOPIC as u8);
            }
            out.push(0); // sensitive
            if version >= 1 {
                out.extend_from_slice(&0i32.to_be_bytes()); // synonyms
            }
        }
    }
    Some(out)
}

#[cfg(test)]
pub(crate) mod tests {
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
            // Nothing to hide: left alone.
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
        answer.extend_from_slice(&0i32.to_be_bytes()); // v1 throttle
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
        body.push(0); // include synonyms
        let table = BTreeMap::from([(
            "logs".to_owned(),
            BTreeMap::from([("max.message.bytes".to_owned(), "1000".to_owned())]),
        )]);
        let out = describe_configs(9, 1, &body, &table).expect("answered");
        let mut c = Cursor { b: &out, at: 0, flexible: false };
        assert_eq!(c.i32(), Some(9));
        assert_eq!(c.i32(), Some(0));
        assert_eq!(c.i32(), Some(2));
        assert_eq!((c.i16(), c.string(), c.i8()), (Some(0), Some(None), Some(2)));
        assert_eq!(c.string(), Some(Some("logs".into())));
        assert_eq!(c.i32(), Some(1));
        assert_eq!((c.string(), c.string()), (Some(Some("max.message.bytes".into())), Some(Some("1000".into()))));
    }
}
