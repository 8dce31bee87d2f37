//! Tests of the checkpoint format and store: round trips, atomic writes, corrupt files.

use super::*;

#[test]
fn round_trip_and_atomic_save() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), "app").expect("store");
    let id = FileId { dev: 7, ino: 42 };
    assert!(store.load(id).expect("load").is_none());
    let c = Checkpoint::new(Path::new("/var/log/a.log"), id, Fingerprint::of(b"hello\n"), 6);
    store.save(&c).expect("save");
    assert_eq!(store.load(id).expect("load"), Some(c.clone()));
    let leftovers = std::fs::read_dir(dir.path().join("app")).expect("dir").count();
    assert_eq!(leftovers, 1, "no temp file stays behind");
    store.remove(id).expect("remove");
    assert!(store.load(id).expect("load").is_none());
}

#[test]
fn corrupt_checkpoints_are_errors_not_panics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), "app").expect("store");
    let id = FileId { dev: 1, ino: 2 };
    let bad: [&[u8]; 5] = [
        b"",
        b"\x00\xff garbage",
        br#"{"version":99,"path":"x","dev":1,"ino":2,"fingerprint_len":0,"fingerprint_crc":0,"offset":0}"#,
        br#"{"version":1,"path":"x","dev":1,"ino":3,"fingerprint_len":0,"fingerprint_crc":0,"offset":0}"#,
        br#"{"version":1,"path":"x","dev":1,"ino":2,"fingerprint_len":9999,"fingerprint_crc":0,"offset":0}"#,
    ];
    for b in bad {
        std::fs::write(store.path_of(id), b).expect("write");
        let err = store.load(id).expect_err("corrupt");
        assert!(err.to_string().contains("1-2.json"), "{err}");
    }
    let moved = store.quarantine(id).expect("quarantine");
    assert!(moved.exists());
    assert!(store.load(id).expect("load").is_none());
}

#[test]
fn fingerprint_detects_replaced_content() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("f");
    std::fs::write(&p, b"first line\nsecond\n").expect("write");
    let mut f = File::open(&p).expect("open");
    let fp = Fingerprint::read(&f).expect("fp");
    assert_eq!(fp.len, 18);
    let c = Checkpoint::new(&p, FileId::of(&f.metadata().expect("meta")), fp, 11);
    assert_eq!(resume_offset(&c, &mut f, 18).expect("resume"), 11);
    std::fs::write(&p, b"other content entirely\n").expect("write");
    let mut f = File::open(&p).expect("open");
    assert_eq!(resume_offset(&c, &mut f, 23).expect("resume"), 0);
    // Same head but shorter than the checkpoint: truncated while we were away.
    std::fs::write(&p, b"first line\nsecond\n").expect("write");
    let mut f = File::open(&p).expect("open");
    let c = Checkpoint { offset: 100, ..c };
    assert_eq!(resume_offset(&c, &mut f, 18).expect("resume"), 0);
}

/// A write that fails (here the rename, over a folder in the registry's place; a full disk
/// fails the same way at the write or the fsync) leaves no temp file behind.
#[test]
fn a_failed_write_leaves_nothing_behind() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), "app").expect("store");
    let id = FileId { dev: 3, ino: 4 };
    std::fs::create_dir_all(store.dir().join(store::REGISTRY).join("in-the-way")).expect("a folder in the way");
    for _ in 0..3 {
        let c = Checkpoint::new(Path::new("/var/log/a.log"), id, Fingerprint::of(b"a\n"), 2);
        assert!(store.save(&c).is_err());
    }
    let names: Vec<String> = std::fs::read_dir(store.dir())
        .expect("dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec![store::REGISTRY.to_owned()], "only the folder in the way");
}

/// Checkpoints of an older version, a file each, are taken into the registry and deleted once
/// it is written; a corrupt line of the registry is reported and the others kept.
#[test]
fn older_checkpoints_are_taken_in_and_a_corrupt_line_costs_only_itself() {
    let dir = tempfile::tempdir().expect("tempdir");
    let folder = dir.path().join("app");
    std::fs::create_dir_all(&folder).expect("mkdir");
    let old = Checkpoint::new(Path::new("/var/log/old.log"), FileId { dev: 1, ino: 7 }, Fingerprint::of(b"x"), 9);
    std::fs::write(folder.join("1-7.json"), old.encode()).expect("an older version's checkpoint");
    let store = Store::open(dir.path(), "app").expect("store");
    assert_eq!(store.load(old.id).expect("load"), Some(old.clone()));
    let new = Checkpoint::new(Path::new("/var/log/new.log"), FileId { dev: 1, ino: 8 }, Fingerprint::of(b"y"), 3);
    store.stage(&new);
    store.flush().expect("flush");
    assert!(!folder.join("1-7.json").exists(), "deleted once the registry holds it");
    let mut text = std::fs::read_to_string(folder.join(store::REGISTRY)).expect("registry");
    text.insert_str(0, "{torn\n");
    std::fs::write(folder.join(store::REGISTRY), text).expect("write");
    let reopened = Store::open(dir.path(), "app").expect("store");
    let (good, bad) = reopened.list();
    assert_eq!(good, vec![old, new]);
    assert_eq!(bad.len(), 1, "the torn line");
    assert!(bad[0].1.to_string().contains(":1:"), "{}", bad[0].1);
}
