//! A corrupt checkpoint of a file rotated away while the agent was down: moved aside, and the
//! file finished from its start (lines may repeat; none is lost).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Kafka, Tailer};
use crate::checkpoint::{FileId, Store};
use crate::config::StreamConfig;
use crate::metrics::Metrics;

#[test]
fn a_rotated_file_with_a_corrupt_checkpoint_is_finished_from_its_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).expect("mkdir");
    let lines: String = (0..5).map(|i| format!("rotated {i}\n")).collect();
    std::fs::write(logs.join("app.log.1"), &lines).expect("write");
    std::fs::write(logs.join("app.log"), "current 0\n").expect("write");
    let toml = format!("name = \"s\"\npaths = [{:?}]\ntopic = \"t\"\n", logs.join("app.log").display().to_string());
    use figment::providers::Format as _;
    let config: StreamConfig =
        figment::Figment::from(figment::providers::Toml::string(&toml)).extract().expect("stream config");
    let store = Store::open(&dir.path().join("checkpoints"), "s").expect("store");
    let rotated = FileId::of(&std::fs::metadata(logs.join("app.log.1")).expect("meta"));
    std::fs::write(store.path_of(rotated), b"\x00 not a checkpoint").expect("corrupt checkpoint");
    let metrics = Arc::new(Metrics::default());
    let mut tailer =
        Tailer::new(&config, store.clone(), Arc::new(Mutex::new(BTreeMap::new())), metrics, Duration::from_secs(60))
            .expect("tailer");
    let mut kafka = Kafka::default();
    tailer.scan(&mut kafka);
    while tailer.read_all(&mut kafka, Instant::now() + Duration::from_secs(60)) {}
    let mut got: Vec<String> =
        kafka.pending.iter().flat_map(|s| s.lines.iter().map(|l| String::from_utf8_lossy(l).into_owned())).collect();
    got.sort();
    let mut want: Vec<String> = (0..5).map(|i| format!("rotated {i}")).chain(["current 0".to_owned()]).collect();
    want.sort();
    assert_eq!(got, want);
    assert!(store.path_of(rotated).with_extension("json.corrupt").exists(), "moved aside");
}
