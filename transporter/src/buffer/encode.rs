//! Encoding a record into a buffer: its value as a line (line breaks escaped), a JSON object
//! that keeps every byte, key and header, or a frame for formats built at roll time.

use base64::Engine;
use serde::Serialize;

use super::{Format, Record};

/// Whether a value holds a line break, which `lines` must escape (or refuse). memchr scans 16
/// or 32 bytes at a time; the byte loop it replaces was a sixth of a worker's CPU while reading
/// (`perf` during `bench wide-transporter`), as every record's value is scanned.
pub fn needs_escape(value: &[u8]) -> bool {
    memchr::memchr2(b'\n', b'\r', value).is_some()
}

/// Appends the encoding of `r` to `out`; returns whether line breaks were escaped. Lines: the
/// value, its `\n` and `\r` written as two characters each, and `\n` (a tombstone is an empty
/// line). JSON: an object with key, value, headers, offset, partition, topic, timestamp and its
/// type; bytes that are not UTF-8 are given base64 in `<name>_b64` instead, so nothing is lost.
/// Parquet: the record's frame (`frame`).
pub fn encode(format: Format, r: &Record<'_>, out: &mut Vec<u8>) -> bool {
    match format {
        Format::Lines => {
            let value = r.value.unwrap_or_default();
            let escaped = needs_escape(value);
            if escaped {
                for &c in value {
                    match c {
                        b'\n' => out.extend_from_slice(b"\\n"),
                        b'\r' => out.extend_from_slice(b"\\r"),
                        c => out.push(c),
                    }
                }
            } else {
                out.extend_from_slice(value);
            }
            out.push(b'\n');
            escaped
        }
        Format::Json => {
            // Written from borrowed fields in one pass: no map, no owned strings, except the
            // base64 of bytes that are not UTF-8. Keys in alphabetical order, as before.
            let (key, key_b64) = text_or_base64(r.key);
            let (value, value_b64) = text_or_base64(r.value);
            let headers = r
                .headers
                .iter()
                .map(|(k, v)| {
                    let (key, key_b64) = text_or_base64(Some(k));
                    let (value, value_b64) = text_or_base64(*v);
                    JsonHeader { key, key_b64, value, value_b64 }
                })
                .collect();
            let doc = JsonRecord {
                headers,
                key,
                key_b64,
                offset: r.offset,
                partition: r.partition,
                timestamp: r.timestamp_ms,
                timestamp_type: r.timestamp_type.name(),
                topic: r.topic,
                value,
                value_b64,
            };
            if serde_json::to_writer(&mut *out, &doc).is_ok() {
                out.push(b'\n');
            }
            false
        }
        Format::Parquet => {
            super::frame::encode(r, out);
            false
        }
    }
}

/// A header as JSON: its key and its value as text, `null`, or base64.
#[derive(Serialize)]
struct JsonHeader<'a> {
    #[serde(skip_serializing_if = "Field::is_base64")]
    key: Field<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_b64: Option<String>,
    #[serde(skip_serializing_if = "Field::is_base64")]
    value: Field<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value_b64: Option<String>,
}

/// A record as one JSON object. A field that is not UTF-8 is written as `<name>_b64` instead of
/// `<name>`; an absent one as `null`.
#[derive(Serialize)]
struct JsonRecord<'a> {
    headers: Vec<JsonHeader<'a>>,
    #[serde(skip_serializing_if = "Field::is_base64")]
    key: Field<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_b64: Option<String>,
    offset: i64,
    partition: i32,
    timestamp: Option<i64>,
    timestamp_type: Option<&'static str>,
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
        obj.insert("timestamp_type".into(), r.timestamp_type.name().map_or(serde_json::Value::Null, Into::into));
        let headers: Vec<serde_json::Value> = r
            .headers
            .iter()
            .map(|(k, v)| {
                let mut h = serde_json::Map::new();
                match std::str::from_utf8(k) {
                    Ok(k) => h.insert("key".into(), k.into()),
                    Err(_) => h.insert("key_b64".into(), base64::engine::general_purpose::STANDARD.encode(k).into()),
                };
                match v.map(std::str::from_utf8) {
                    None => h.insert("value".into(), serde_json::Value::Null),
                    Some(Ok(s)) => h.insert("value".into(), s.into()),
                    Some(Err(_)) => h.insert(
                        "value_b64".into(),
                        base64::engine::general_purpose::STANDARD.encode(v.unwrap_or_default()).into(),
                    ),
                };
                serde_json::Value::Object(h)
            })
            .collect();
        obj.insert("headers".into(), headers.into());
        let mut out = serde_json::to_vec(&obj).expect("json");
        out.push(b'\n');
        out
    }

    #[test]
    fn json_is_the_same_as_a_map_of_the_fields() {
        let headers: [super::super::Header<'_>; 4] =
            [(b"trace", Some(b"abc")), (b"trace", None), (b"bin", Some(b"\xff")), (b"\xfe key", Some(b"v"))];
        let cases = [
            Record { headers: &headers, ..rec(0, b"with headers") },
            Record { timestamp_type: super::super::TimestampType::LogAppendTime, ..rec(6, b"appended") },
            rec(1, b"plain"),
            rec(2, b"caf\xe9"),
            rec(3, "quote \" and \\ and \u{1F600} and \n".as_bytes()),
            Record {
                key: None,
                timestamp_ms: None,
                timestamp_type: super::super::TimestampType::None,
                ..rec(4, b"no key")
            },
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

    #[test]
    fn lines_escape_line_breaks_and_keep_one_line_per_record() {
        let mut out = Vec::new();
        assert!(encode(Format::Lines, &rec(1, b"first\n  at frame\r\n"), &mut out));
        assert!(!encode(Format::Lines, &rec(2, br#"{"msg":"a \"quoted\" \\ path"}"#), &mut out));
        assert!(!encode(Format::Lines, &Record { value: None, ..rec(3, b"") }, &mut out));
        assert_eq!(out, b"first\\n  at frame\\r\\n\n{\"msg\":\"a \\\"quoted\\\" \\\\ path\"}\n\n");
        // JSON log lines stay JSON: backslashes are not doubled, and a raw line break (invalid
        // inside a JSON string) becomes the escape JSON reads as one.
        let mut out = Vec::new();
        encode(Format::Lines, &rec(4, b"{\"msg\":\"two\nlines\"}"), &mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).expect("still JSON");
        assert_eq!(v["msg"], "two\nlines");
    }
}
