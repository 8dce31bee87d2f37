//! What both Zonal programs do the same way around their work: log setup, waiting for a stop
//! signal, and turning configuration errors into one line that names the file and the field.

use std::path::Path;

/// Logs to stderr, filtered by `RUST_LOG` (default: info, librdkafka's own warnings only).
pub fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,rdkafka=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
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
