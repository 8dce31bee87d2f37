//! The program shell: what `zonal-agent` and `zonal-transporter` do the same way around their
//! own work, so that each binary keeps only what is its own.
//!
//! ```text
//!   main ──► run::main (logs, exit status) ──► run::runtime ──► the program's `run`
//!                                                                  │
//!   config::extract (defaults ◄ file ◄ env) ──► validate ──────────┤
//!                                                                  ▼
//!   http::serve(router(Endpoints)) ◄── /metrics /healthz /readyz /status
//!   run::wait_for_signal ──► the program drains and exits
//! ```
//!
//! Deliberately absent: anything about files, Kafka topics, etcd or S3. A program brings those,
//! and answers the shell's questions (ready? healthy? status?) through [`http::Endpoints`].

pub mod config;
pub mod http;
pub mod kafka;
pub mod metrics;
pub mod run;

pub use config::ProgramConfig;
pub use run::{ConfigFile, check_command, main, parse_command, run_command, runtime, wait_for_signal};
