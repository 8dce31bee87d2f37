//! The buffer file's own record framing, for formats written at roll time (Parquet): every field
//! of a record, length-prefixed, so that the object can be built from the file alone.
//!
//! ```text
//!  u32 length of the rest | i64 offset | i64 timestamp (i64::MIN: none) | u8 timestamp type
//!  | i32 key length (-1: null) key | i32 value length (-1: null) value
//!  | u32 header count { u32 key length key | i32 value length (-1: null) value }
//! ```
//!
//! Little-endian. The file is this process's own, but it is read back with bounds checks: a
//! frame that does not parse is an error naming its offset in the file, never a panic.

use std::io::{self, Read};

use super::record::{Header, Record, TimestampType};

/// Appends the frame of `r` to `out`.
pub fn encode(r: &Record<'_>, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&r.offset.to_le_bytes());
    out.extend_from_slice(&r.timestamp_ms.unwrap_or(i64::MIN).to_le_bytes());
    out.push(r.timestamp_type.code());
    bytes(out, r.key);
    bytes(out, r.value);
    out.extend_from_slice(&(r.headers.len() as u32).to_le_bytes());
    for (k, v) in r.headers {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(k);
        bytes(out, *v);
    }
    let len = (out.len() - start - 4) as u32;
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
}

fn bytes(out: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        None => out.extend_from_slice(&(-1i32).to_le_bytes()),
        Some(b) => {
            out.extend_from_slice(&(b.len() as i32).to_le_bytes());
            out.extend_from_slice(b);
        }
    }
}

/// One decoded frame, borrowing from the bytes it was read from.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    /// Offset.
    pub offset: i64,
    /// Timestamp in ms.
    pub timestamp_ms: Option<i64>,
    /// Its type.
    pub timestamp_type: TimestampType,
    /// Key.
    pub key: Option<&'a [u8]>,
    /// Value.
    pub value: Option<&'a [u8]>,
    /// Headers.
    pub headers: Vec<Header<'a>>,
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("buffer frame: {what}"))
}

/// A cursor over one frame's bytes.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> io::Result<&'a [u8]> {
        if self.0.len() < n {
            return Err(bad("truncated"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> io::Result<[u8; N]> {
        self.take(N)?.try_into().map_err(|_| bad("truncated"))
    }

    fn bytes(&mut self) -> io::Result<Option<&'a [u8]>> {
        match i32::from_le_bytes(self.array()?) {
            -1 => Ok(None),
            n if n >= 0 => Ok(Some(self.take(n as usize)?)),
            _ => Err(bad("negative length")),
        }
    }
}

/// Decodes one frame's body (what follows its length).
pub fn decode(body: &[u8]) -> io::Result<Frame<'_>> {
    let mut c = Cursor(body);
    let offset = i64::from_le_bytes(c.array()?);
    let timestamp_ms = Some(i64::from_le_bytes(c.array()?)).filter(|t| *t != i64::MIN);
    let timestamp_type = TimestampType::from_code(c.array::<1>()?[0]);
    let key = c.bytes()?;
    let value = c.bytes()?;
    let count = u32::from_le_bytes(c.array()?) as usize;
    // Each header takes at least 8 bytes: a count that the rest cannot hold is corruption, not
    // a reason to allocate.
    if count > c.0.len() / 8 {
        return Err(bad("header count past the frame"));
    }
    let mut headers = Vec::with_capacity(count);
    for _ in 0..count {
        let klen = u32::from_le_bytes(c.array()?) as usize;
        let k = c.take(klen)?;
        headers.push((k, c.bytes()?));
    }
    if !c.0.is_empty() {
        return Err(bad("bytes after the last header"));
    }
    Ok(Frame { offset, timestamp_ms, timestamp_type, key, value, headers })
}

/// Reads the next frame's body into `buf`; `false` at the end of the file.
pub fn read_next(from: &mut impl Read, buf: &mut Vec<u8>) -> io::Result<bool> {
    let mut len = [0u8; 4];
    match from.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(false),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes(len) as usize;
    buf.clear();
    buf.resize(len, 0);
    from.read_exact(buf).map_err(|e| io::Error::new(e.kind(), format!("buffer frame of {len} bytes: {e}")))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Every record survives its frame, headers (repeated keys, null values) included.
        #[test]
        fn round_trip(
            offset in proptest::prelude::any::<i64>(),
            ts in proptest::option::of(0i64..i64::MAX),
            key in proptest::option::of(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40)),
            value in proptest::option::of(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)),
            headers in proptest::collection::vec((proptest::collection::vec(proptest::prelude::any::<u8>(), 0..5), proptest::option::of(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..8))), 0..5),
        ) {
            let hs: Vec<Header<'_>> = headers.iter().map(|(k, v)| (k.as_slice(), v.as_deref())).collect();
            let r = Record {
                topic: "t", partition: 1, offset, timestamp_ms: ts,
                timestamp_type: if ts.is_some() { TimestampType::LogAppendTime } else { TimestampType::None },
                key: key.as_deref(), value: value.as_deref(), headers: &hs,
            };
            let mut out = Vec::new();
            encode(&r, &mut out);
            encode(&r, &mut out);
            let mut reader = &out[..];
            let mut buf = Vec::new();
            for _ in 0..2 {
                proptest::prop_assert!(read_next(&mut reader, &mut buf).expect("read"));
                let f = decode(&buf).expect("decode");
                proptest::prop_assert_eq!((f.offset, f.timestamp_ms, f.timestamp_type), (offset, ts, r.timestamp_type));
                proptest::prop_assert_eq!((f.key, f.value), (key.as_deref(), value.as_deref()));
                proptest::prop_assert_eq!(&f.headers, &hs);
            }
            proptest::prop_assert!(!read_next(&mut reader, &mut buf).expect("end"));
        }

        /// Garbage is an error, never a panic or a huge allocation.
        #[test]
        fn garbage_is_an_error(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            let _ = decode(&body);
        }
    }
}
