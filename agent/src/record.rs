//! What a Kafka record carries besides its payload: headers (the pod's, the container's
//! stream, where in which file the line was), the log's timestamp, and what it charges the
//! in-flight budget.

use rdkafka::message::{Header, OwnedHeaders};

use crate::container::{EventMeta, header};
use crate::kafka::PER_MESSAGE_OVERHEAD;
use crate::track::FileTrack;

/// Header naming the file a record was read from: `<host>/<dev>-<ino>-<crc of its first line>`,
/// the same for every line of a file on this host (renames and restarts included), and another
/// for the new content of a truncated file or a reused inode.
pub const SOURCE: &str = "zonal.source";
/// Header with the byte offset in that file where the record's line ends. With
/// [`SOURCE`], a key downstream can drop the agent's at-least-once duplicates by.
pub const OFFSET: &str = "zonal.offset";

/// Longest decimal `u64`.
const OFFSET_DIGITS: u64 = 20;

/// A record about to be handed to librdkafka.
#[derive(Debug)]
pub struct Outgoing<'a> {
    /// Payload.
    pub payload: &'a [u8],
    /// Key, for keyed streams.
    pub key: Option<&'a [u8]>,
    /// Headers.
    pub headers: Option<OwnedHeaders>,
    /// Timestamp (ms), when the log gave one.
    pub timestamp: Option<i64>,
}

/// The headers of the records of one group, read from one file: the file's pod and its
/// identity, listed once for the group; each record adds its container stream and offset.
#[derive(Debug)]
pub struct GroupHeaders<'a> {
    shared: Vec<(&'static str, &'a str)>,
    /// Bytes of the shared headers (names and values).
    shared_bytes: u64,
    /// Whether each record carries its offset (the file's identity is among `shared`).
    offsets: bool,
}

impl<'a> GroupHeaders<'a> {
    /// The headers of records read from `track`'s file.
    pub fn of(track: &'a FileTrack) -> GroupHeaders<'a> {
        let mut shared = track.pod.as_deref().map(crate::container::PodMeta::headers).unwrap_or_default();
        if let Some(source) = track.source.get() {
            shared.push((SOURCE, &**source));
        }
        let shared_bytes = shared.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum();
        GroupHeaders { shared, shared_bytes, offsets: track.source.get().is_some() }
    }

    /// What one record charges the in-flight budget: its line (the payload before any cut),
    /// its headers, and librdkafka's own per-record overhead. Computed once, carried with the
    /// record ([`crate::kafka::Sent`]) and given back exactly on delivery.
    pub fn charge(&self, line: usize, meta: &EventMeta) -> u64 {
        let stream = meta.stream.map_or(0, |s| (header::IOSTREAM.len() + s.as_str().len()) as u64);
        let offset = if self.offsets { OFFSET.len() as u64 + OFFSET_DIGITS } else { 0 };
        line as u64 + self.shared_bytes + stream + offset + PER_MESSAGE_OVERHEAD
    }

    /// A record's headers, for a line of the file ending at byte `end`; none when there are
    /// none to carry.
    pub fn record(&self, meta: &EventMeta, end: u64) -> Option<OwnedHeaders> {
        if self.shared.is_empty() && meta.stream.is_none() {
            return None;
        }
        let mut h = OwnedHeaders::new_with_capacity(self.shared.len() + 2);
        for &(key, value) in &self.shared {
            h = h.insert(Header { key, value: Some(value) });
        }
        if let Some(s) = meta.stream {
            h = h.insert(Header { key: header::IOSTREAM, value: Some(s.as_str()) });
        }
        if self.offsets {
            h = h.insert(Header { key: OFFSET, value: Some(end.to_string().as_str()) });
        }
        Some(h)
    }
}

/// The identity of a file for [`SOURCE`]: the host, the device and inode, and a CRC of the
/// file's first line (at most its first 256 bytes), which is fixed once written: the key a
/// resend after a crash carries is the first sending's, and the new content of a truncated file
/// (or a later file on a reused inode) starts another. `None` when the head cannot be read.
pub fn source_of(host: &str, id: crate::checkpoint::FileId, file: &std::fs::File) -> Option<String> {
    use std::os::unix::fs::FileExt;
    let mut head = [0u8; 256];
    let mut n = 0;
    while n < head.len() {
        match file.read_at(&mut head[n..], n as u64) {
            Ok(0) => break,
            Ok(got) => n += got,
            Err(_) => return None,
        }
    }
    let first = head[..n].iter().position(|b| *b == b'\n').map_or(n, |i| i + 1);
    Some(format!("{host}/{}-{}-{:08x}", id.dev, id.ino, crc32fast::hash(&head[..first])))
}

/// This host's name for [`SOURCE`]: `NODE_NAME` where Kubernetes sets it (a DaemonSet pod's own
/// name changes at every rollout, its node's does not), else the kernel's host name (asked of
/// the kernel, not read from `/proc`, which the systemd unit's `ProcSubset=pid` hides).
pub fn host_name() -> String {
    if let Ok(node) = std::env::var("NODE_NAME")
        && !node.trim().is_empty()
    {
        return node.trim().to_owned();
    }
    let host = gethostname::gethostname().to_string_lossy().trim().to_owned();
    if host.is_empty() { "unknown-host".to_owned() } else { host }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use rdkafka::message::Headers;

    use super::*;
    use crate::checkpoint::{FileId, Fingerprint};
    use crate::container::{IoStream, PodMeta};

    fn track(pod: bool, source: bool) -> FileTrack {
        let pod = pod.then(|| PodMeta {
            namespace: Some("shop".into()),
            pod: Some("web-1".into()),
            uid: Some("0b6f-uid".into()),
            container: Some("app".into()),
            container_id: Some("c0ffee".into()),
        });
        let id = FileId { dev: 1, ino: 2 };
        let source = source.then(|| format!("node-7/{}-{}-1796637600123456789", id.dev, id.ino));
        FileTrack::new(id, "/var/log/x.log".into(), Fingerprint::default(), 0).with_pod(pod).with_source(source)
    }

    /// The source names the content by its first line: appending keeps it (a resend carries
    /// the first sending's key), a truncation and new content change it (new lines at the same
    /// offsets are not taken for duplicates).
    #[test]
    fn a_truncated_file_written_again_is_another_source() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("app.log");
        std::fs::write(&path, "2026-12-07 first line\n").expect("write");
        let f = std::fs::File::open(&path).expect("open");
        let id = FileId::of(&f.metadata().expect("meta"));
        let first = source_of("node", id, &f).expect("source");
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut a| {
                use std::io::Write;
                a.write_all(b"second line\n")
            })
            .expect("append");
        assert_eq!(source_of("node", id, &f), Some(first.clone()), "appending keeps it");
        std::fs::write(&path, "2026-12-08 another first line\n").expect("truncate and write");
        let after = source_of("node", id, &f).expect("source");
        assert_ne!(after, first, "new content after a truncation");
        assert!(after.starts_with(&format!("node/{}-{}-", id.dev, id.ino)), "{after}");
    }

    proptest! {
        /// What a record charges covers what librdkafka holds of it (payload, key, headers, its
        /// own bookkeeping), whatever the line, its key, its cut to `max-message-bytes`, its
        /// headers and offset; and the figure is a function of what the group knows before the
        /// cut, so the group's charge is the sum of its records' and each is given back as it
        /// was taken.
        #[test]
        fn a_record_s_charge_covers_what_librdkafka_holds(
            line in 0usize..5000,
            key in 0usize..300,
            max in 1usize..4000,
            pod in any::<bool>(),
            source in any::<bool>(),
            stderr in proptest::option::of(any::<bool>()),
            end in any::<u64>(),
        ) {
            let t = track(pod, source);
            let group = GroupHeaders::of(&t);
            let meta = EventMeta {
                timestamp_ms: None,
                stream: stderr.map(|e| if e { IoStream::Stderr } else { IoStream::Stdout }),
                malformed: false,
            };
            // The sender's cut: the payload gives way to the key within max-message-bytes.
            let key = key.min(max);
            let payload = if line + key > max { max.saturating_sub(key).min(line) } else { line };
            let headers = group.record(&meta, end);
            let header_bytes: usize = headers.as_ref().map_or(0, |h| {
                (0..h.count()).map(|i| { let x = h.get(i); x.key.len() + x.value.map_or(0, <[u8]>::len) }).sum()
            });
            let charge = group.charge(line, &meta);
            // The payload (the line, or what is left of it beside the key) and the headers are
            // charged in full; the key, a copy of part of the line, is not (it is known only once
            // the budget is taken), so an unkeyed record's charge covers all librdkafka holds.
            let held = (payload + header_bytes) as u64 + crate::kafka::PER_MESSAGE_OVERHEAD;
            prop_assert!(charge >= held, "charge {} < payload and headers {}", charge, held);
            prop_assert_eq!(charge, GroupHeaders::of(&t).charge(line, &meta), "the same figure when given back");
        }
    }
}
