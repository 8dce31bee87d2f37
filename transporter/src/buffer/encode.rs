//! Encoding a record into a buffer: its value as a line, or a JSON object that keeps every byte.

use base64::Engine;
use serde::Serialize;

use super::{Format, Record};

/// Appends the encoding of `r` to `out`. Lines: the value and `\n`. JSON: an object with key,
/// value, offset, partition, topic and timestamp; bytes that are not UTF-8 are given base64 in
/// `key_b64` / `value_b64` instead, so nothing is lost.
pub fn encode(format: Format, r: &Record<'_>, out: &mut Vec<u8>) {
    match format {
        Format::Lines => {
            out.extend_from_slice(r.value.unwrap_or_default());
            out.push(b'\n');
        }
        Format::Json => {
            // Written from borrowed fields in one pass: no map, no owned strings, except the
            // base64 of bytes that are not UTF-8. Keys in alphabetical order, as before.
            let (key, key_b64) = text_or_base64(r.key);
            let (value, value_b64) = text_or_base64(r.value);
            let doc = JsonRecord {
                key,
                key_b64,
                offset: r.offset,
                partition: r.partition,
                timestamp: r.timestamp_ms,
                topic: r.topic,
                value,
                value_b64,
            };
            if serde_json::to_writer(&mut *out, &doc).is_ok() {
                out.push(b'\n');
            }
        }
    }
}

/// A record as one JSON object. A field that is not UTF-8 is written as `<name>_b64` instead of
/// `<name>`; an absent one as `null`.
#[derive(Serialize)]
struct JsonRecord<'a> {
    #[serde(skip_serializing_if = "Field::is_base64")]
    key: Field<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_b64: Option<String>,
    offset: i64,
    partition: i32,
    timestamp: Option<i64>,
    topic: &'a str,
    #[serde(skip_serializing_if = "Field::is_base64")]
    value: Field<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value_b64: Option<String>,
}

/// A key or value as JSON: text, `null`, or (not UTF-8) left to its `_b64` field.
#[derive(Serialize)]
#[serde(untagged)]
enum Field<'a> {
    Text(&'a str),
    Null(Option<()>),
    #[serde(skip)]
    Base64,
}

impl Field<'_> {
    fn is_base64(&self) -> bool {
        matches!(self, Field::Base64)
    }
}

fn text_or_base64(bytes: Option<&[u8]>) -> (Field<'_>, Option<String>) {
    match bytes {
        None => (Field::Null(None), None),
        Some(b) => match std::str::from_utf8(b) {
            Ok(s) => (Field::Text(s), None),
            Err(_) => (Field::Base64, Some(base64::engine::general_purpose::STANDARD.encode(b))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::rec;
    use super::*;

    #[test]
    fn json_keeps_every_byte() {
        let mut out = Vec::new();
        encode(Format::Json, &rec(5, b"caf\xe9"), &mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(v["offset"], 5);
        assert_eq!(v["key"], "k");
        let b64 = v["value_b64"].as_str().expect("b64");
        assert_eq!(base64::engine::general_purpose::STANDARD.decode(b64).expect("decode"), b"caf\xe9");
        assert!(out.ends_with(b"\n"));
    }

    /// The JSON a `serde_json::Map` of the same fields gives (the encoding before it was written
    /// from borrowed fields): the objects must be byte for byte the same.
    fn map_encoding(r: &Record<'_>) -> Vec<u8> {
        let mut obj = serde_json::Map::new();
        for (name, v) in [("key", r.key), ("value", r.value)] {
            match v.map(std::str::from_utf8) {
                None => obj.insert(name.into(), serde_json::Value::Null),
                Some(Ok(s)) => obj.insert(name.into(), s.into()),
                Some(Err(_)) => obj.insert(
                    format!("{name}_b64"),
                    base64::engine::general_purpose::STANDARD.encode(v.unwrap_or_default()).into(),
                ),
            };
        }
        obj.insert("topic".into(), r.topic.into());
        obj.insert("partition".into(), r.partition.into());
        obj.insert("offset".into(), r.offset.into());
        obj.insert("timestamp".into(), r.timestamp_ms.map_or(serde_json::Value::Null, Into::into));
        let mut out = serde_json::to_vec(&obj).expect("json");
        out.push(b'\n');
        out
    }

    #[test]
    fn json_is_the_same_as_a_map_of_the_fields() {
        let cases = [
            rec(1, b"plain"),
            rec(2, b"caf\xe9"),
            rec(3, "quote \" and \\ and \u{1F600} and \n".as_bytes()),
            Record { key: None, timestamp_ms: None, ..rec(4, b"no key") },
            Record { key: Some(b"\xff\xfe"), value: None, ..rec(5, b"") },
        ];
        for r in cases {
            let mut out = Vec::new();
            encode(Format::Json, &r, &mut out);
            assert_eq!(
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(&map_encoding(&r)),
                "offset {}",
                r.offset
            );
        }
    }
}
