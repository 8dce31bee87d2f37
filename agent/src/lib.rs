//! `zonal-agent` as a library: the binary's command line is in `main.rs`; everything it runs is
//! here, so that tests and `xtask` build its configuration from the typed structs.
//!
//! ```text
//!  config ─► app::run ─► tail (files, rotation) ─► batch ─► partition (Routing) ─► stream (producer)
//!                          ▲                                                         │
//!                          └──── track / ack / checkpoint ◄── kafka (delivery reports)┘
//! ```

pub mod ack;
pub mod app;
pub mod batch;
pub mod budget;
pub mod checkpoint;
pub mod config;
pub mod container;
pub mod inspect;
pub mod kafka;
pub mod leaders;
pub mod limits;
pub mod lines;
pub mod metrics;
pub mod partition;
pub mod record;
pub mod rotation;
pub mod state;
pub mod status;
pub mod stream;
pub mod tail;
pub mod track;
