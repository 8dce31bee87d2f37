//! Tests of the container log formats: CRI and docker lines, parts joined back whatever the
//! split, malformed lines passed through and counted, and RFC 3339 times.

use proptest::prelude::*;

use super::*;

/// Every message `lines` decode to, with its metadata and whether it was cut.
fn decode_all(format: LogFormat, max: usize, lines: &[Vec<u8>]) -> Vec<(Vec<u8>, EventMeta, bool)> {
    let mut d = Decoder::new(format, max);
    let mut out = Vec::new();
    for l in lines {
        d.decode(l, &mut |m: &[u8], meta, cut| out.push((m.to_vec(), meta, cut)));
    }
    d.flush(&mut |m: &[u8], meta, cut| out.push((m.to_vec(), meta, cut)));
    out
}

fn cri(stream: &str, tag: &str, msg: &[u8]) -> Vec<u8> {
    let mut l = format!("2026-12-02T17:00:00.123456789Z {stream} {tag} ").into_bytes();
    l.extend_from_slice(msg);
    l
}

fn docker(stream: &str, log: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "log": log, "stream": stream, "time": "2026-12-02T17:00:00.5Z" }))
        .expect("json")
}

/// A message of `len` bytes cut at `cuts` (taken modulo its length): the parts' ranges, in
/// order, none empty but the only one of an empty message.
fn split(len: usize, cuts: &[usize]) -> Vec<std::ops::Range<usize>> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (len + 1)).filter(|p| *p > 0 && *p < len).collect();
    points.sort_unstable();
    points.dedup();
    let mut from = 0;
    let mut parts: Vec<std::ops::Range<usize>> = points
        .into_iter()
        .map(|p| {
            let r = from..p;
            from = p;
            r
        })
        .collect();
    parts.push(from..len);
    parts
}

const T: i64 = 1_796_230_800_123;

#[test]
fn cri_lines_become_messages_with_time_and_stream() {
    let got = decode_all(
        LogFormat::Cri,
        1000,
        &[
            cri("stdout", "F", b"hello world"),
            cri("stderr", "P", b"par"),
            cri("stderr", "F", b"ts"),
            cri("stdout", "F", b""),
        ],
    );
    let meta = |stream| EventMeta { timestamp_ms: Some(T), stream: Some(stream), malformed: false };
    assert_eq!(
        got,
        vec![
            (b"hello world".to_vec(), meta(IoStream::Stdout), false),
            (b"parts".to_vec(), meta(IoStream::Stderr), false),
            (Vec::new(), meta(IoStream::Stdout), false),
        ]
    );
}

#[test]
fn docker_lines_become_messages_and_split_logs_join() {
    let got = decode_all(
        LogFormat::Docker,
        1000,
        &[docker("stdout", "one\n"), docker("stderr", "long "), docker("stderr", "line\n")],
    );
    let ts = Some(1_796_230_800_500);
    assert_eq!(
        got[0],
        (b"one".to_vec(), EventMeta { timestamp_ms: ts, stream: Some(IoStream::Stdout), malformed: false }, false)
    );
    assert_eq!(got[1].0, b"long line".to_vec());
    assert_eq!(got[1].1.stream, Some(IoStream::Stderr));
    assert_eq!(got.len(), 2);
}

#[test]
fn malformed_lines_pass_through_as_they_are_and_are_marked() {
    for (format, good) in [(LogFormat::Cri, cri("stdout", "P", b"part")), (LogFormat::Docker, docker("stdout", "part"))]
    {
        let bad = b"\xff not a container line".to_vec();
        let got = decode_all(format, 1000, &[good, bad.clone(), b"2026-13-99T00:00:00Z stdout F x".to_vec()]);
        assert_eq!(got.len(), 3, "{format:?}: {got:?}");
        // The part waiting when the malformed line came is emitted first, as it is.
        assert_eq!(got[0].0, b"part".to_vec());
        assert!(!got[0].1.malformed);
        assert_eq!((got[1].0.clone(), got[1].1.malformed), (bad, true));
        assert!(got[2].1.malformed, "an impossible date is not a CRI line");
    }
    // Raw lines are never malformed.
    assert!(!decode_all(LogFormat::Raw, 10, &[b"x y z".to_vec()])[0].1.malformed);
}

#[test]
fn a_message_over_the_maximum_is_cut_and_marked() {
    let got = decode_all(LogFormat::Cri, 8, &[cri("stdout", "P", b"12345"), cri("stdout", "F", b"67890")]);
    assert_eq!(got, vec![(b"12345678".to_vec(), got[0].1, true)]);
}

#[test]
fn rfc3339_times_as_runtimes_write_them() {
    assert_eq!(rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
    assert_eq!(rfc3339_ms("2026-12-02T17:00:00.123456789Z"), Some(T));
    assert_eq!(rfc3339_ms("2026-12-02T18:00:00.123+01:00"), Some(T));
    assert_eq!(rfc3339_ms("2000-02-29T00:00:00.5Z"), Some(951_782_400_500));
    for bad in [
        "",
        "2026-12-02",
        "2026-12-02T17:00:00",
        "2026-12-02T17:00:00.Z",
        "2026-12-02T25:00:00Z",
        "x026-12-02T17:00:00Z",
    ] {
        assert_eq!(rfc3339_ms(bad), None, "{bad}");
    }
}

proptest! {
    /// Any split of a message into CRI parts (as containerd splits at 16 KiB, or anywhere)
    /// joins back to the message; with other messages around it, each comes out once, in order.
    #[test]
    fn any_split_into_parts_joins_back(
        msgs in proptest::collection::vec(proptest::collection::vec(any::<u8>().prop_filter("no newline", |b| *b != b'\n'), 0..200), 1..6),
        cuts in proptest::collection::vec(0usize..200, 0..10),
    ) {
        let mut lines = Vec::new();
        for m in &msgs {
            let parts = split(m.len(), &cuts);
            let (last, rest) = parts.split_last().expect("one part at least");
            lines.extend(rest.iter().map(|r| cri("stdout", "P", &m[r.clone()])));
            lines.push(cri("stdout", "F", &m[last.clone()]));
        }
        let got: Vec<Vec<u8>> = decode_all(LogFormat::Cri, 10_000, &lines).into_iter().map(|(m, _, _)| m).collect();
        prop_assert_eq!(got, msgs);
    }
}

#[test]
fn pod_metadata_from_kubelet_and_docker_paths() {
    use std::path::Path;
    let pods = PodMeta::from_name(Path::new("/var/log/pods/shop_web-7d9f_0b1c-uid/app/0.log.20261207-101010.gz"));
    assert_eq!(
        pods,
        PodMeta {
            namespace: Some("shop".into()),
            pod: Some("web-7d9f".into()),
            uid: Some("0b1c-uid".into()),
            container: Some("app".into()),
            container_id: None
        }
    );
    let link = PodMeta::from_name(Path::new("/var/log/containers/web-7d9f_shop_app-0123abcd.log"));
    assert_eq!(
        (link.pod.as_deref(), link.namespace.as_deref(), link.container.as_deref()),
        (Some("web-7d9f"), Some("shop"), Some("app"))
    );
    assert_eq!(link.container_id.as_deref(), Some("0123abcd"));
    let docker = PodMeta::from_name(Path::new("/var/lib/docker/containers/abc123/abc123-json.log"));
    assert_eq!(docker.container_id.as_deref(), Some("abc123"));
    assert_eq!(PodMeta::from_name(Path::new("/var/log/app/x.log")), PodMeta::default());
    // Through the symlink, the uid comes from the target folder.
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("pods/shop_web-7d9f_uid-1/app");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("0.log"), b"").expect("log");
    std::fs::create_dir_all(root.path().join("containers")).expect("links");
    let link = root.path().join("containers/web-7d9f_shop_app-0123.log");
    std::os::unix::fs::symlink(dir.join("0.log"), &link).expect("symlink");
    let m = PodMeta::of(&link).expect("meta");
    assert_eq!((m.uid.as_deref(), m.container_id.as_deref()), (Some("uid-1"), Some("0123")));
    assert_eq!(m.headers().len(), 5);
}

proptest! {
    /// The same for docker's json-file driver, which splits a long line into entries whose
    /// `log` has no newline until the last.
    #[test]
    fn any_split_into_docker_entries_joins_back(
        msgs in proptest::collection::vec("[a-zA-Z0-9 \\-_.:/{}\\[\\]\"\\\\]{0,120}", 1..6),
        cuts in proptest::collection::vec(0usize..120, 0..8),
    ) {
        let mut lines = Vec::new();
        for m in &msgs {
            let parts = split(m.len(), &cuts);
            let (last, rest) = parts.split_last().expect("one part at least");
            lines.extend(rest.iter().map(|r| docker("stderr", &m[r.clone()])));
            lines.push(docker("stderr", &format!("{}\n", &m[last.clone()])));
        }
        let got: Vec<String> = decode_all(LogFormat::Docker, 10_000, &lines)
            .into_iter()
            .map(|(m, meta, _)| {
                assert_eq!(meta.stream, Some(IoStream::Stderr));
                String::from_utf8_lossy(&m).into_owned()
            })
            .collect();
        prop_assert_eq!(got, msgs);
    }
}
