//! A round of reads cut short by its deadline goes on at the next call from the file it
//! reached: with many busy files every one gets its turn, and scans keep their cadence.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Kafka, Tailer};
use crate::checkpoint::Store;
use crate::config::StreamConfig;
use crate::metrics::Metrics;

#[test]
fn a_round_cut_short_goes_on_where_it_stopped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).expect("mkdir");
    for name in ["a", "b", "c"] {
        let lines: String = (0..5).map(|i| format!("{name} {i}\n")).collect();
        std::fs::write(logs.join(format!("{name}.log")), lines).expect("write");
    }
    let toml = format!("name = \"s\"\npaths = [{:?}]\ntopic = \"t\"\n", logs.join("*.log").display().to_string());
    use figment::providers::Format as _;
    let config: StreamConfig =
        figment::Figment::from(figment::providers::Toml::string(&toml)).extract().expect("stream config");
    let store = Store::open(&dir.path().join("checkpoints"), "s").expect("store");
    let tracks = Arc::new(Mutex::new(BTreeMap::new()));
    let mut tailer =
        Tailer::new(&config, store, tracks, Arc::new(Metrics::default()), Duration::from_secs(60)).expect("tailer");
    let mut kafka = Kafka::default();
    tailer.scan(&mut kafka);
    // Every deadline is already past: each call reads one file, the next call the next one.
    // The files are read in the order of their identities, which need not be their names'.
    let files_read = |k: &Kafka| {
        let names: std::collections::BTreeSet<u8> =
            k.pending.iter().flat_map(|s| s.lines.iter().map(|l| l[0])).collect();
        names.len()
    };
    for expected in 1..=3 {
        assert!(tailer.read_all(&mut kafka, Instant::now()));
        assert_eq!(files_read(&kafka), expected, "one more file per call, in turn");
    }
}
