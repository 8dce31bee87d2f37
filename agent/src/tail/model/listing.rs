//! A scan whose listing fails (EACCES, EMFILE, a stale NFS handle) while the files are all
//! there: an idle, acknowledged file is not taken as gone, so its checkpoint stays and the next
//! good scan does not send it again from the start.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Kafka, Tailer};
use crate::checkpoint::Store;
use crate::config::StreamConfig;
use crate::metrics::Metrics;

#[test]
fn a_failed_listing_is_not_a_deletion() {
    let dir = tempfile::tempdir().expect("tempdir");
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).expect("mkdir");
    std::fs::write(logs.join("app.log"), (0..5).map(|i| format!("line {i}\n")).collect::<String>()).expect("write");
    let toml = format!("name = \"s\"\npaths = [{:?}]\ntopic = \"t\"\n", logs.join("*.log").display().to_string());
    use figment::providers::Format as _;
    let config: StreamConfig =
        figment::Figment::from(figment::providers::Toml::string(&toml)).extract().expect("stream config");
    let store = Store::open(&dir.path().join("checkpoints"), "s").expect("store");
    let tracks = Arc::new(Mutex::new(BTreeMap::new()));
    let metrics = Arc::new(Metrics::default());
    // No rotate-wait: a file taken as gone would be let go at once.
    let mut tailer =
        Tailer::new(&config, store.clone(), tracks.clone(), metrics.clone(), Duration::ZERO).expect("tailer");
    let mut kafka = Kafka::default();
    let tick = |tailer: &mut Tailer, kafka: &mut Kafka| {
        tailer.scan(kafka);
        while tailer.read_all(kafka, Instant::now() + Duration::from_secs(60)) {}
        while !kafka.pending.is_empty() {
            kafka.ack(0);
        }
        crate::track::write_checkpoints("s", &store, &tracks, &metrics);
    };
    tick(&mut tailer, &mut kafka);
    assert_eq!(kafka.delivered.len(), 5);
    tailer.listing_fails = true;
    tick(&mut tailer, &mut kafka);
    tick(&mut tailer, &mut kafka);
    tailer.listing_fails = false;
    assert_eq!(store.list().0.len(), 1, "the checkpoint stays");
    tick(&mut tailer, &mut kafka);
    tick(&mut tailer, &mut kafka);
    assert_eq!(kafka.delivered.len(), 5, "nothing sent again");
}
