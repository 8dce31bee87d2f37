//! Splitting a file's bytes into events: lines ending at `\n`, capped at the maximum message
//! size, decoded from a container log format (parts joined), optionally joined into multi-line
//! events. Pure logic, no I/O.
//!
//! ```text
//!  chunk @ offset ──> Splitter ──emit(event bytes, end offset, truncated, meta)──> batcher
//!                      │ partial last line waits for its `\n` (bounded by max bytes)
//!                      │ CRI / docker: the message of each line, P parts joined (container::Decoder)
//!                      └ multiline: messages not matching `start` join the pending event
//! ```
//!
//! Over-long lines are truncated to `max` bytes and the rest up to the newline is dropped and
//! counted; splitting them into several messages would interleave fragments with other lines on
//! other partitions and break readers that expect one record per line.

use regex::bytes::Regex;

use crate::container::{Decoder, EventMeta, LogFormat};

/// An event handed to the batcher.
pub trait Sink {
    /// One event: its bytes (without the trailing `\n`), the file offset just after it,
    /// whether it was truncated, and what its container log said of it.
    fn event(&mut self, data: &[u8], end_offset: u64, truncated: bool, meta: EventMeta);
}

impl<F: FnMut(&[u8], u64, bool, EventMeta)> Sink for F {
    fn event(&mut self, data: &[u8], end_offset: u64, truncated: bool, meta: EventMeta) {
        self(data, end_offset, truncated, meta)
    }
}

/// Splits a byte stream into events.
#[derive(Debug)]
pub struct Splitter {
    max: usize,
    partial: Vec<u8>,
    partial_truncated: bool,
    /// Container log lines to messages (CRI, docker), parts joined; none for raw lines.
    decoder: Option<Decoder>,
    /// The file offset just past the last whole line: where parts held by the decoder end.
    line_end: u64,
    multiline: Option<Multiline>,
}

#[derive(Debug)]
struct Multiline {
    start: Regex,
    pending: Vec<u8>,
    pending_end: u64,
    pending_truncated: bool,
    pending_meta: EventMeta,
    has_pending: bool,
}

impl Splitter {
    /// A splitter of lines written as `format`, with the given maximum event size and optional
    /// multi-line start pattern (applied to messages, after parts are joined).
    pub fn new(max: usize, multiline_start: Option<Regex>, format: LogFormat) -> Splitter {
        let max = max.max(1);
        Splitter {
            max,
            partial: Vec::new(),
            partial_truncated: false,
            decoder: (format != LogFormat::Raw).then(|| Decoder::new(format, max)),
            line_end: 0,
            multiline: multiline_start.map(|start| Multiline {
                start,
                pending: Vec::new(),
                pending_end: 0,
                pending_truncated: false,
                pending_meta: EventMeta::default(),
                has_pending: false,
            }),
        }
    }

    /// Bytes held back: a partial line, parts of a container message, a pending multi-line event.
    pub fn buffered(&self) -> usize {
        self.partial.len()
            + self.decoder.as_ref().map_or(0, Decoder::buffered)
            + self.multiline.as_ref().map_or(0, |m| m.pending.len())
    }

    /// Whether an event is waiting for its continuation: a multi-line event, or parts of a
    /// container message whose last part has not come.
    pub fn has_pending(&self) -> bool {
        self.multiline.as_ref().is_some_and(|m| m.has_pending) || self.decoder.as_ref().is_some_and(Decoder::joining)
    }

    /// Feeds `chunk`, which starts at file offset `offset`.
    pub fn push(&mut self, chunk: &[u8], offset: u64, sink: &mut impl Sink) {
        let mut pos = 0;
        while pos < chunk.len() {
            match memchr::memchr(b'\n', &chunk[pos..]) {
                Some(i) => {
                    let line = &chunk[pos..pos + i];
                    let end = offset + (pos + i + 1) as u64;
                    if self.partial.is_empty() && !self.partial_truncated {
                        let (data, truncated) = cap(line, self.max);
                        self.line(data, end, truncated, sink);
                    } else {
                        let room = self.max.saturating_sub(self.partial.len());
                        let take = line.len().min(room);
                        self.partial.extend_from_slice(&line[..take]);
                        let truncated = self.partial_truncated || take < line.len();
                        let data = std::mem::take(&mut self.partial);
                        self.line(&data, end, truncated, sink);
                        self.partial = data;
                        self.partial.clear();
                        self.partial_truncated = false;
                    }
                    pos += i + 1;
                }
                None => {
                    // A partial last line waits for its newline; only `max` bytes of it are kept.
                    let rest = &chunk[pos..];
                    let room = self.max.saturating_sub(self.partial.len());
                    let take = rest.len().min(room);
                    self.partial.extend_from_slice(&rest[..take]);
                    if take < rest.len() {
                        self.partial_truncated = true;
                    }
                    pos = chunk.len();
                }
            }
        }
    }

    /// One line: decoded (a container log line's message, parts joined), then joined into a
    /// multi-line event when that is on.
    fn line(&mut self, data: &[u8], end: u64, truncated: bool, sink: &mut impl Sink) {
        self.line_end = end;
        let Splitter { max, decoder, multiline, .. } = self;
        match decoder {
            None => join(multiline, *max, data, end, truncated, EventMeta::default(), sink),
            Some(d) => {
                d.decode(data, &mut |m: &[u8], meta, cut| join(multiline, *max, m, end, truncated || cut, meta, sink))
            }
        }
    }

    /// Emits an unterminated last line as an event ending at `end_offset` (for files that are
    /// gone and will never get the newline), and parts of a container message whose last part
    /// will not come either.
    pub fn flush_partial(&mut self, end_offset: u64, sink: &mut impl Sink) {
        if !self.partial.is_empty() || self.partial_truncated {
            let data = std::mem::take(&mut self.partial);
            let truncated = self.partial_truncated;
            self.partial_truncated = false;
            self.line(&data, end_offset, truncated, sink);
        }
        let Splitter { max, decoder, multiline, .. } = self;
        if let Some(d) = decoder {
            d.flush(&mut |m: &[u8], meta, cut| join(multiline, *max, m, end_offset, cut, meta, sink));
        }
    }

    /// Emits a pending event whose continuation did not come in time: a multi-line event, or
    /// parts of a container message (ending where the last part's line ends: a partial line
    /// after it is not part of it).
    pub fn flush_pending(&mut self, sink: &mut impl Sink) {
        let Splitter { max, decoder, multiline, line_end, .. } = self;
        if let Some(d) = decoder {
            d.flush(&mut |m: &[u8], meta, cut| join(multiline, *max, m, *line_end, cut, meta, sink));
        }
        if let Some(m) = multiline
            && m.has_pending
        {
            sink.event(&m.pending, m.pending_end, m.pending_truncated, m.pending_meta);
            m.pending.clear();
            m.has_pending = false;
            m.pending_truncated = false;
        }
    }
}

/// Hands a message to the sink, or, with multi-line joining on, to the pending event: a message
/// matching the start pattern (or the first one) starts a new event and emits the pending one.
fn join(
    multiline: &mut Option<Multiline>,
    max: usize,
    data: &[u8],
    end: u64,
    truncated: bool,
    meta: EventMeta,
    sink: &mut impl Sink,
) {
    let Some(m) = multiline else {
        sink.event(data, end, truncated, meta);
        return;
    };
    if m.start.is_match(data) || !m.has_pending {
        if m.has_pending {
            sink.event(&m.pending, m.pending_end, m.pending_truncated, m.pending_meta);
        }
        m.pending.clear();
        m.pending.extend_from_slice(data);
        m.pending_truncated = truncated;
        m.pending_meta = meta;
        m.has_pending = true;
    } else {
        let room = max.saturating_sub(m.pending.len());
        if room == 0 {
            m.pending_truncated = true;
        } else {
            m.pending.push(b'\n');
            let take = data.len().min(room - 1);
            m.pending.extend_from_slice(&data[..take]);
            m.pending_truncated |= truncated || take < data.len();
        }
    }
    m.pending_end = end;
}

fn cap(line: &[u8], max: usize) -> (&[u8], bool) {
    if line.len() > max { (&line[..max], true) } else { (line, false) }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The events a sink got, in order: (bytes, end offset, truncated).
    type Got = Vec<(Vec<u8>, u64, bool)>;

    fn run(s: &mut Splitter, chunks: &[&[u8]]) -> Got {
        let mut got = Vec::new();
        let mut off = 0u64;
        for c in chunks {
            s.push(c, off, &mut |d: &[u8], e: u64, t: bool, _m| got.push((d.to_vec(), e, t)));
            off += c.len() as u64;
        }
        got
    }

    #[test]
    fn lines_partial_lines_and_offsets() {
        let mut s = Splitter::new(100, None, LogFormat::Raw);
        let got = run(&mut s, &[b"one\ntw", b"o\n", b"three"]);
        assert_eq!(got, vec![(b"one".to_vec(), 4, false), (b"two".to_vec(), 8, false)]);
        assert_eq!(s.buffered(), 5);
        let mut more = Vec::new();
        s.push(b"\n", 13, &mut |d: &[u8], e: u64, t: bool, _m| more.push((d.to_vec(), e, t)));
        assert_eq!(more, vec![(b"three".to_vec(), 14, false)]);
    }

    #[test]
    fn binary_and_empty_lines_pass_as_bytes() {
        let mut s = Splitter::new(100, None, LogFormat::Raw);
        let got = run(&mut s, &[b"\xff\xfe\x00bin\n\n\xc3\x28\n"]);
        assert_eq!(
            got.iter().map(|(data, _end, _truncated)| data.clone()).collect::<Vec<_>>(),
            vec![b"\xff\xfe\x00bin".to_vec(), vec![], b"\xc3\x28".to_vec()]
        );
    }

    #[test]
    fn long_lines_are_truncated_and_memory_is_bounded() {
        let mut s = Splitter::new(10, None, LogFormat::Raw);
        let big = vec![b'x'; 10_000];
        let mut chunks: Vec<&[u8]> = big.chunks(999).collect();
        chunks.push(b"\nshort\n");
        let got = run(&mut s, &chunks);
        assert_eq!(got[0], (vec![b'x'; 10], 10_001, true));
        assert_eq!(got[1], (b"short".to_vec(), 10_007, false));
        let got = run(&mut Splitter::new(3, None, LogFormat::Raw), &[b"abcdef\nab\n"]);
        assert_eq!(got, vec![(b"abc".to_vec(), 7, true), (b"ab".to_vec(), 10, false)]);
        let mut s = Splitter::new(10, None, LogFormat::Raw);
        let _ = run(&mut s, &[&big]);
        assert_eq!(s.buffered(), 10);
    }

    #[test]
    fn multiline_joins_continuations() {
        let start = Regex::new(r"^\d{4}-").ok();
        let mut s = Splitter::new(1000, start, LogFormat::Raw);
        let got = run(&mut s, &[b"2026-01 first\n  at x\n  at y\n2026-02 second\n"]);
        assert_eq!(got, vec![(b"2026-01 first\n  at x\n  at y".to_vec(), 28, false)]);
        assert!(s.has_pending());
        let mut rest = Vec::new();
        s.flush_pending(&mut |d: &[u8], e: u64, t: bool, _m| rest.push((d.to_vec(), e, t)));
        assert_eq!(rest, vec![(b"2026-02 second".to_vec(), 43, false)]);
        assert!(!s.has_pending());
    }

    proptest::proptest! {
        /// Whatever the chunking, the events are the input's lines (capped), with end offsets
        /// just past each newline.
        #[test]
        fn chunking_does_not_matter(data in proptest::collection::vec(proptest::prop_oneof![Just(b'\n'), 0u8..=255], 0..400),
                                    cuts in proptest::collection::vec(0usize..400, 0..10), max in 1usize..50) {
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(data.len())).collect();
            cuts.sort_unstable();
            let mut chunks = Vec::new();
            let mut last = 0;
            for c in cuts { chunks.push(&data[last..c]); last = c; }
            chunks.push(&data[last..]);
            let got = run(&mut Splitter::new(max, None, LogFormat::Raw), &chunks);
            let mut want = Vec::new();
            let mut start = 0;
            for (i, b) in data.iter().enumerate() {
                if *b == b'\n' {
                    let line = &data[start..i];
                    want.push((line[..line.len().min(max)].to_vec(), (i + 1) as u64, line.len() > max));
                    start = i + 1;
                }
            }
            proptest::prop_assert_eq!(got, want);
        }
    }
}
