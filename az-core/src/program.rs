//! What both Zonal programs do the same way around their work: log setup, the exit status,
//! waiting for a stop signal, configuration layering, and configuration errors in one line that
//! names the file and the field.

use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};

/// Logs to stderr, filtered by `RUST_LOG` (default: info, librdkafka's own warnings only).
pub fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,rdkafka=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
}

/// Runs a program's body: logs set up first, then an error becomes one line on stderr, with its
/// causes, and a failure exit status.
pub fn main<E: std::fmt::Display>(name: &str, body: impl FnOnce() -> Result<(), E>) -> std::process::ExitCode {
    init_tracing();
    match body() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Configuration layers, later ones winning: `T::default()`, the TOML file (when given), then
/// environment variables `<prefix>SECTION__KEY` (`__` separates levels, `_` stands for `-`).
pub fn layered<T: serde::Serialize + Default>(env_prefix: &str, file: Option<&Path>) -> Figment {
    let mut f = Figment::from(Serialized::defaults(T::default()));
    if let Some(file) = file {
        f = f.merge(Toml::file_exact(file));
    }
    f.merge(Env::prefixed(env_prefix).split("__").map(|k| k.as_str().replace('_', "-").into()))
}

/// Resolves on SIGTERM or SIGINT.
pub async fn wait_for_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

/// One line for a figment extraction error: every failure with the dotted path of its field.
pub fn config_error(e: figment::Error, file: Option<&Path>) -> String {
    let where_ = file.map(|f| format!(" {}", f.display())).unwrap_or_default();
    let text = e
        .into_iter()
        .map(|e| {
            let path = e.path.join(".");
            if path.is_empty() { e.kind.to_string() } else { format!("{path}: {}", e.kind) }
        })
        .collect::<Vec<_>>()
        .join("; ");
    format!("invalid configuration{where_}: {text}")
}
