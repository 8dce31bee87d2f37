//! The tailer against a model of everything that happens to log files (writes, partial lines,
//! rename rotations with writers that keep their descriptor, copytruncate, agent crashes at any
//! point, acknowledgements in any order), with real files in a temporary directory and a
//! dispatcher that acknowledges when the model says so. After any sequence, once the writer
//! reopens and everything is acknowledged, every line written has been delivered.
//!
//! Two layouts: a plain folder (`logs/app.log`, rotated to `app.log.N`), and a Kubernetes
//! node's (the glob matches `containers/<pod>_<ns>_<c>-<id>.log`, a symlink to
//! `pods/<ns>_<pod>_<uid>/<c>/0.log`, which kubelet renames to `0.log.N` beside it; the pod's
//! folder can be deleted, the runtime's last line finished first). In both, the oldest
//! rotation is deleted once it was read.
//!
//! ```text
//!  Op sequence (proptest) ──> App: writes, rename, reopen, copytruncate on real files
//!                        └──> World: Tick = Tailer::scan + read_all ──groups──> model Kafka
//!                             Ack / AckAll ──settle──> delivered; Checkpoint; Restart (kill -9)
//!  end: reopen, tick, acknowledge everything ──> delivered = written: none lost, none foreign,
//!                                                no duplicates without a restart
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proptest::prelude::*;

use super::Tailer;
use crate::checkpoint::Store;
use crate::config::StreamConfig;
use crate::metrics::Metrics;
use crate::track::Tracks;

mod kafka;

use kafka::Kafka;

mod app;
mod corrupt;
mod listing;
mod moments;
mod pass;

use app::App;

#[derive(Debug, Clone)]
enum Op {
    Write {
        lines: usize,
        unfinished: bool,
    },
    Rename,
    Reopen,
    CopyTruncate,
    Tick,
    /// Reading with no scan before it (between scans, which come a pass apart).
    Read,
    /// A scan whose listing fails (EACCES, EMFILE, a stale handle): the globs yield nothing
    /// while the files are all there.
    ListingFails,
    Ack(usize),
    AckAll,
    Checkpoint,
    /// kill -9 and start again: unacknowledged groups are gone, the checkpoints stay.
    Restart,
    /// A restart after a reboot that renumbered the device: the checkpoints name another
    /// device number than the files now have.
    Renumber,
    /// The pod goes (kubelet layout): its last line finished, its folder and link deleted.
    DeletePod,
    /// The oldest rotation is deleted (logrotate's `rotate N`, kubelet's max files).
    DeleteRotated,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1usize..30, any::<bool>()).prop_map(|(lines, unfinished)| Op::Write { lines, unfinished }),
        1 => Just(Op::Rename),
        1 => Just(Op::Reopen),
        1 => Just(Op::CopyTruncate),
        5 => Just(Op::Tick),
        2 => Just(Op::Read),
        1 => Just(Op::ListingFails),
        3 => any::<usize>().prop_map(Op::Ack),
        1 => Just(Op::AckAll),
        2 => Just(Op::Checkpoint),
        1 => Just(Op::Restart),
        1 => Just(Op::Renumber),
        1 => Just(Op::DeletePod),
        1 => Just(Op::DeleteRotated),
    ]
}

/// Where the files are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// `logs/app.log`, tailed by name.
    Plain,
    /// A kubelet node: a symlink in `containers/` to `pods/<ns>_<pod>_<uid>/<c>/0.log`.
    Kubelet,
    /// The plain folder, with every file closed as soon as it is at rest (`close-idle-secs` of
    /// 0), so that each change is met by a reopen by identity.
    PlainClosing,
}

struct World {
    _dir: tempfile::TempDir,
    layout: Layout,
    /// No restart since the last scan: the agent holds descriptors of every file it saw.
    scanned_since_restart: bool,
    config: StreamConfig,
    store: Store,
    metrics: Arc<Metrics>,
    tracks: Tracks,
    tailer: Tailer,
    kafka: Kafka,
    delivered: Vec<Vec<u8>>,
    restarts: usize,
}

impl World {
    fn new(layout: Layout) -> World {
        let dir = tempfile::tempdir().expect("tempdir");
        let glob = match layout {
            Layout::Plain | Layout::PlainClosing => {
                let logs = dir.path().join("logs");
                std::fs::create_dir(&logs).expect("mkdir");
                logs.join("app.log").display().to_string()
            }
            Layout::Kubelet => {
                let pod = dir.path().join("pods/shop_web-1_uid-1/app");
                let links = dir.path().join("containers");
                std::fs::create_dir_all(&pod).expect("mkdir pod");
                std::fs::create_dir_all(&links).expect("mkdir containers");
                std::os::unix::fs::symlink(pod.join("0.log"), links.join("web-1_shop_app-0123.log")).expect("link");
                format!("{}/*.log", links.display())
            }
        };
        let toml = format!("name = \"s\"\npaths = [{glob:?}]\ntopic = \"t\"\nbatch-lines = 7\nbatch-bytes = 300\n");
        use figment::providers::Format as _;
        let config: StreamConfig =
            figment::Figment::from(figment::providers::Toml::string(&toml)).extract().expect("stream config");
        let store = Store::open(&dir.path().join("checkpoints"), "s").expect("store");
        let metrics = Arc::new(Metrics::default());
        let tracks: Tracks = Arc::new(Mutex::new(BTreeMap::new()));
        let tailer = World::tailer(layout, &config, &store, &tracks, &metrics);
        World {
            _dir: dir,
            layout,
            scanned_since_restart: false,
            config,
            store,
            metrics,
            tracks,
            tailer,
            kafka: Kafka::default(),
            delivered: Vec::new(),
            restarts: 0,
        }
    }

    /// The folder the application writes in, and its log's name there.
    fn logs(&self) -> (PathBuf, &'static str) {
        match self.layout {
            Layout::Plain | Layout::PlainClosing => (self._dir.path().join("logs"), "app.log"),
            Layout::Kubelet => (self._dir.path().join("pods/shop_web-1_uid-1/app"), "0.log"),
        }
    }

    fn tailer(layout: Layout, config: &StreamConfig, store: &Store, tracks: &Tracks, metrics: &Arc<Metrics>) -> Tailer {
        // Writers keep renamed files for as long as the model likes: nothing is released.
        let t = Tailer::new(config, store.clone(), tracks.clone(), metrics.clone(), Duration::from_secs(3600))
            .expect("tailer");
        match layout {
            Layout::PlainClosing => t.with_descriptors(Duration::ZERO, usize::MAX),
            _ => t,
        }
    }

    fn tick(&mut self) {
        self.tailer.scan(&mut self.kafka);
        self.read();
    }

    /// Reads without a scan: what the agent does between scans, a long pass while catching up.
    fn read(&mut self) {
        let forever = std::time::Instant::now() + Duration::from_secs(3600);
        while self.tailer.read_all(&mut self.kafka, forever) {}
    }

    fn checkpoint(&self) {
        crate::track::write_checkpoints("s", &self.store, &self.tracks, &self.metrics);
    }

    fn restart(&mut self) {
        self.delivered.append(&mut self.kafka.delivered);
        self.kafka = Kafka::default();
        self.tracks = Arc::new(Mutex::new(BTreeMap::new()));
        self.tailer = World::tailer(self.layout, &self.config, &self.store, &self.tracks, &self.metrics);
        self.restarts += 1;
        self.scanned_since_restart = false;
    }

    /// Rewrites every checkpoint as if its file's device had another number: what a reboot
    /// that renumbers the device leaves behind.
    fn renumber(&self) {
        let (checkpoints, _) = self.store.list();
        for mut c in checkpoints {
            self.store.remove(c.id).expect("remove");
            c.id.dev += 1000;
            self.store.save(&c).expect("save");
        }
    }

    /// The oldest rotation goes, as logrotate and kubelet delete rotations past their count.
    /// One deleted before the agent read it takes its lines with it (a named limit), so the
    /// model deletes one only when every line in it was delivered, and never the file the
    /// application still writes to.
    fn delete_rotated(&mut self, app: &App) {
        let (dir, name) = (&app.dir, app.name);
        let mut n = 1;
        while dir.join(format!("{name}.{n}")).exists() {
            n += 1;
        }
        let oldest = n - 1;
        if oldest == 0 || (oldest == 1 && app.renamed) {
            return;
        }
        let path = dir.join(format!("{name}.{oldest}"));
        let Ok(bytes) = std::fs::read(&path) else { return };
        if bytes.last().is_some_and(|b| *b != b'\n') {
            return;
        }
        let delivered: BTreeSet<&[u8]> =
            self.delivered.iter().chain(&self.kafka.delivered).map(Vec::as_slice).collect();
        if bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()).all(|l| delivered.contains(l)) {
            std::fs::remove_file(&path).expect("delete a rotation");
        }
    }

    /// Kubelet deletes the pod's folder and link once the runtime finished its last line. The
    /// agent reads what is left through its descriptors; a pod deleted while the agent is down
    /// and has not seen its files is gone with them (a named limit), so the model deletes only
    /// a pod whose every file the running agent holds.
    fn delete_pod(&mut self, app: &mut App) {
        if self.layout != Layout::Kubelet || app.deleted || app.unseen || !self.scanned_since_restart {
            return;
        }
        app.finish_line();
        app.deleted = true;
        let _ = std::fs::remove_file(self._dir.path().join("containers/web-1_shop_app-0123.log"));
        std::fs::remove_dir_all(self._dir.path().join("pods/shop_web-1_uid-1")).expect("delete the pod");
    }

    fn apply(&mut self, app: &mut App, op: &Op) {
        match op {
            Op::Write { lines, unfinished } => app.write(*lines, *unfinished),
            Op::Rename => app.rename(),
            Op::Reopen => app.reopen(),
            Op::CopyTruncate => app.copytruncate(),
            Op::Tick => {
                self.tick();
                self.scanned_since_restart = true;
                app.unseen = false;
                app.seen_empty = app.fd.metadata().map(|m| m.len()).unwrap_or(0) == 0;
            }
            Op::Read => self.read(),
            Op::ListingFails => {
                self.tailer.listing_fails = true;
                self.tick();
                self.tailer.listing_fails = false;
            }
            Op::DeletePod => self.delete_pod(app),
            Op::DeleteRotated => self.delete_rotated(app),
            Op::Ack(i) => self.kafka.ack(*i),
            Op::AckAll => {
                while !self.kafka.pending.is_empty() {
                    self.kafka.ack(0);
                }
            }
            Op::Checkpoint => self.checkpoint(),
            // Once the pod is gone its files live only in the agent's descriptors: a crash
            // then loses what was not acknowledged (a named limit), so the model does not crash.
            Op::Restart | Op::Renumber if app.deleted => {}
            Op::Restart => self.restart(),
            Op::Renumber => {
                self.restart();
                self.renumber();
            }
        }
    }
}

fn run(ops: &[Op]) -> Result<usize, TestCaseError> {
    run_in(Layout::Plain, ops)
}

/// Runs `ops`, then checks that every line written was delivered and nothing else; returns
/// how many lines were delivered more than once.
fn run_in(layout: Layout, ops: &[Op]) -> Result<usize, TestCaseError> {
    let mut world = World::new(layout);
    let (logs, name) = world.logs();
    let mut app = App {
        fd: App::open(&logs, name),
        dir: logs,
        name,
        deleted: false,
        copytruncates: layout != Layout::Kubelet,
        seq: 0,
        unfinished: None,
        lines: BTreeSet::new(),
        renamed: false,
        unseen: true,
        seen_empty: true,
    };
    for op in ops {
        world.apply(&mut app, op);
    }
    // The application reopens; everything is read and acknowledged.
    app.reopen();
    for _ in 0..4 {
        world.tick();
        world.apply(&mut app, &Op::AckAll);
        world.checkpoint();
    }
    world.delivered.append(&mut world.kafka.delivered);
    let delivered: BTreeSet<Vec<u8>> = world.delivered.iter().cloned().collect();
    let lost: Vec<String> = app.lines.difference(&delivered).map(|l| String::from_utf8_lossy(l).into_owned()).collect();
    prop_assert!(lost.is_empty(), "{} lines lost, first {:?}", lost.len(), lost.first());
    let foreign: Vec<String> =
        delivered.difference(&app.lines).map(|l| String::from_utf8_lossy(l).into_owned()).collect();
    prop_assert!(foreign.is_empty(), "lines never written were delivered: {:?}", foreign.first());
    if world.restarts == 0 {
        prop_assert_eq!(world.delivered.len(), delivered.len(), "duplicates without a restart");
    }
    Ok(world.delivered.len() - delivered.len())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]
    #[test]
    fn no_line_is_lost_whatever_happens_to_the_files(ops in proptest::collection::vec(op(), 1..60)) {
        run(&ops)?;
    }

    /// The same on a kubelet node: symlinked globs, rotations beside the link's target, the
    /// pod's folder deleted.
    #[test]
    fn no_line_is_lost_on_a_kubelet_node(ops in proptest::collection::vec(op(), 1..60)) {
        run_in(Layout::Kubelet, &ops)?;
    }

    /// The same with every file closed once at rest and reopened by identity when it changes.
    #[test]
    fn no_line_is_lost_with_idle_files_closed(ops in proptest::collection::vec(op(), 1..60)) {
        run_in(Layout::PlainClosing, &ops)?;
    }
}
