//! `zonal-transporter` as a library: the binary's command line is in `main.rs`; everything it
//! runs is here, so that tests and `xtask` build its configuration from the typed structs.
//!
//! ```text
//!  app ─► coord (lease, registration, fencing) ─► master (election ─► plan ─► shares)
//!   │                                               │
//!   └─► worker (assignment ─► partition tasks) ─► buffer ─► upload (S3, naming) ─► commit
//! ```

pub mod app;
pub mod audit;
pub mod buffer;
pub mod commands;
pub mod config;
pub mod continuity;
pub mod coord;
pub mod health;
pub mod http;
pub mod master;
pub mod metrics;
pub mod naming;
pub mod shares;
pub mod state;
pub mod timepart;
pub mod topics;
pub mod upload;
pub mod worker;
