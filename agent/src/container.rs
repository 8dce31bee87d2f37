//! Container log formats, without I/O: a line of a CRI log (containerd, CRI-O) or of a docker
//! json-file log becomes its message, with the runtime's timestamp and stream; the parts a
//! runtime split a long line into (CRI `P`, docker's `log` without its newline) are joined
//! back, up to the maximum message size.
//!
//! ```text
//!  CRI:    2026-12-02T17:00:00.123456789Z stdout P <part> ──┐ (joined until an F line)
//!          2026-12-02T17:00:00.123456789Z stdout F <rest> ──┴─> message, timestamp, stdout
//!  docker: {"log":"<part>","stream":"stderr","time":"…"} ──┐ (joined until a log ending in \n)
//!          {"log":"<rest>\n","stream":"stderr","time":"…"} ──┴─> message, timestamp, stderr
//!  anything else ──> the line as it is, counted as malformed (never dropped)
//! ```

use serde::{Deserialize, Serialize};

/// How a stream's lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    /// Lines as they are.
    #[default]
    Raw,
    /// The CRI log format of containerd and CRI-O: `<RFC 3339 time> <stdout|stderr> <P|F> <message>`.
    Cri,
    /// Docker's json-file driver: `{"log":…,"stream":…,"time":…}` per line.
    Docker,
}

/// Which output of the container a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl IoStream {
    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            IoStream::Stdout => "stdout",
            IoStream::Stderr => "stderr",
        }
    }

    fn parse(s: &[u8]) -> Option<IoStream> {
        match s {
            b"stdout" => Some(IoStream::Stdout),
            b"stderr" => Some(IoStream::Stderr),
            _ => None,
        }
    }
}

/// What a container log says of an event besides its message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventMeta {
    /// The runtime's timestamp, in ms since the epoch.
    pub timestamp_ms: Option<i64>,
    /// stdout or stderr.
    pub stream: Option<IoStream>,
    /// The line was not in the stream's format and is shipped as it is.
    pub malformed: bool,
}

/// One line of a container log, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Parsed<'a> {
    meta: EventMeta,
    /// The message (of this part).
    message: std::borrow::Cow<'a, [u8]>,
    /// The runtime split the line here: more parts follow.
    partial: bool,
}

/// Turns container log lines into messages, joining parts.
#[derive(Debug)]
pub struct Decoder {
    format: LogFormat,
    max: usize,
    /// The parts joined so far, and the first part's metadata.
    joined: Vec<u8>,
    joined_meta: EventMeta,
    joined_truncated: bool,
    joining: bool,
}

impl Decoder {
    /// A decoder of `format` whose messages are at most `max` bytes.
    pub fn new(format: LogFormat, max: usize) -> Decoder {
        Decoder {
            format,
            max: max.max(1),
            joined: Vec::new(),
            joined_meta: EventMeta::default(),
            joined_truncated: false,
            joining: false,
        }
    }

    /// Whether parts are waiting for the rest of their message.
    pub fn joining(&self) -> bool {
        self.joining
    }

    /// Bytes held in parts.
    pub fn buffered(&self) -> usize {
        self.joined.len()
    }

    /// Decodes one line (without its newline) and hands every whole message to `emit`
    /// (message, metadata, cut at the maximum): none for a part, one for a line that ends a
    /// message, two for a malformed line that comes between parts (the parts, cut short, then
    /// the line as it is).
    pub fn decode(&mut self, line: &[u8], emit: &mut impl FnMut(&[u8], EventMeta, bool)) {
        let parsed = match self.format {
            LogFormat::Raw => None,
            LogFormat::Cri => parse_cri(line),
            LogFormat::Docker => parse_docker(line),
        };
        let Some(p) = parsed else {
            self.flush(emit);
            let take = line.len().min(self.max);
            let malformed = self.format != LogFormat::Raw;
            emit(&line[..take], EventMeta { malformed, ..EventMeta::default() }, take < line.len());
            return;
        };
        if !self.joining {
            self.joined_meta = p.meta;
            self.joined_truncated = false;
        }
        let room = self.max.saturating_sub(self.joined.len());
        let take = p.message.len().min(room);
        self.joined.extend_from_slice(&p.message[..take]);
        self.joined_truncated |= take < p.message.len();
        self.joining = true;
        if !p.partial {
            self.flush(emit);
        }
    }

    /// Emits the parts joined so far as a message (its last part will never come: the file
    /// ended, a malformed line came between).
    pub fn flush(&mut self, emit: &mut impl FnMut(&[u8], EventMeta, bool)) {
        if !self.joining {
            return;
        }
        emit(&self.joined, self.joined_meta, self.joined_truncated);
        self.joined.clear();
        self.joining = false;
        self.joined_truncated = false;
    }
}

mod pod;

pub use pod::{PodMeta, header};

/// `<time> <stream> <tags> <message>`; tags are `P` or `F`, possibly followed by more after a
/// `:` (the CRI spec leaves room for them).
fn parse_cri(line: &[u8]) -> Option<Parsed<'_>> {
    let mut fields = line.splitn(4, |&b| b == b' ');
    let time = fields.next()?;
    let stream = IoStream::parse(fields.next()?)?;
    let tags = fields.next()?;
    let message = fields.next().unwrap_or_default();
    let partial = match tags.split(|&b| b == b':').next()? {
        b"P" => true,
        b"F" => false,
        _ => return None,
    };
    let timestamp_ms = rfc3339_ms(std::str::from_utf8(time).ok()?)?;
    Some(Parsed {
        meta: EventMeta { timestamp_ms: Some(timestamp_ms), stream: Some(stream), malformed: false },
        message: std::borrow::Cow::Borrowed(message),
        partial,
    })
}

#[derive(Deserialize)]
struct DockerLine {
    log: String,
    stream: String,
    time: String,
}

/// `{"log":…,"stream":…,"time":…}`; a `log` not ending in a newline was split by the daemon.
fn parse_docker(line: &[u8]) -> Option<Parsed<'static>> {
    let d: DockerLine = serde_json::from_slice(line).ok()?;
    let stream = IoStream::parse(d.stream.as_bytes())?;
    let timestamp_ms = rfc3339_ms(&d.time)?;
    let mut message = d.log.into_bytes();
    let partial = message.last() != Some(&b'\n');
    if !partial {
        message.pop();
    }
    Some(Parsed {
        meta: EventMeta { timestamp_ms: Some(timestamp_ms), stream: Some(stream), malformed: false },
        message: std::borrow::Cow::Owned(message),
        partial,
    })
}

/// Milliseconds since the epoch of an RFC 3339 time (`2026-12-02T17:00:00.123456789Z`,
/// `…+01:00`), as container runtimes write them; None for anything else.
pub fn rfc3339_ms(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = b.get(r)?;
        part.iter().all(u8::is_ascii_digit).then(|| part.iter().fold(0i64, |n, d| n * 10 + i64::from(d - b'0')))
    };
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut i = 19;
    let mut millis = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            if i - start < 3 {
                millis = millis * 10 + i64::from(b[i] - b'0');
            }
            i += 1;
        }
        if i == start {
            return None;
        }
        for _ in (i - start)..3 {
            millis *= 10;
        }
    }
    let offset_min = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if i + 6 == b.len() && b[i + 3] == b':' => {
            let m = num(i + 1..i + 3)? * 60 + num(i + 4..i + 6)?;
            if *sign == b'+' { m } else { -m }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    Some(((days * 86_400 + hour * 3600 + minute * 60 + second - offset_min * 60) * 1000) + millis)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests;
