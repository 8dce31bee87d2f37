//! A program's life around its work: log set-up, the exit status, the runtime and the stop signal.

use std::path::Path;

use anyhow::Context;

use crate::config::ProgramConfig;

/// Parses the command line into the program's commands `C`, with `name`, the version and `about`
/// in `--help`; exits with clap's message on a bad command line.
pub fn parse_command<C: clap::Subcommand + clap::FromArgMatches>(name: &'static str, about: &'static str) -> C {
    let command = clap::Command::new(name)
        .version(env!("CARGO_PKG_VERSION"))
        .about(about)
        .subcommand_required(true)
        .arg_required_else_help(true);
    let matches = C::augment_subcommands(command).get_matches();
    C::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// The `-c FILE` argument of every command that reads the configuration.
#[derive(Debug, clap::Args)]
pub struct ConfigFile {
    /// Configuration file (TOML); repeatable, later files' keys win and tables merge (a base
    /// file and a Kafka-login file, as the Kubernetes overlays mount them). The program's
    /// `ZONAL_…__` environment variables override them all.
    #[arg(short, long, required = true)]
    pub config: Vec<std::path::PathBuf>,
}

impl ConfigFile {
    /// The files, in the order given.
    pub fn files(&self) -> Vec<&Path> {
        self.config.iter().map(std::path::PathBuf::as_path).collect()
    }
}

/// `run -c FILE`: loads the configuration and runs `program` on the shell's runtime until it
/// returns (after SIGTERM or SIGINT, or a fatal error).
pub fn run_command<C: ProgramConfig, F: Future<Output = anyhow::Result<()>>>(
    file: &ConfigFile,
    program: impl FnOnce(C) -> F,
) -> anyhow::Result<()> {
    let config = C::load_files(&file.files())?;
    set_log_format(config.log().format);
    runtime().context("starting the runtime")?.block_on(program(config))
}

/// `check -c FILE`: loads the configuration, runs the program's own `check` (what `run` would
/// refuse: clients librdkafka will not create, files it could not read), and prints the
/// effective configuration with its secrets hidden.
pub fn check_command<C: ProgramConfig>(
    file: &ConfigFile,
    check: impl FnOnce(&C) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let config = C::load_files(&file.files())?;
    check(&config)?;
    print!("{}", config.to_toml()?);
    Ok(())
}

/// Logs to stderr, filtered by `RUST_LOG` (default: info, librdkafka's own warnings only), as
/// text until the configuration says `log.format = "json"` ([`set_log_format`]). Colours only
/// on a terminal: a log file or a container runtime's log gets plain text that log collectors
/// and `grep` read.
pub fn init_tracing() {
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,rdkafka=warn".into()),
        )
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .event_format(Switch {
            text: Default::default(),
            json: tracing_subscriber::fmt::format().json().flatten_event(false),
        })
        .init();
}

/// Whether log lines are JSON: set once the configuration is loaded, which is after logging
/// starts (a configuration error is itself logged).
static JSON: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Switches the log lines to `format` (`log.format`).
pub fn set_log_format(format: crate::config::LogFormat) {
    JSON.store(format == crate::config::LogFormat::Json, std::sync::atomic::Ordering::Relaxed);
}

/// The event format: tracing's text or JSON one, as [`JSON`] says. JSON lines have stable fields:
/// `timestamp` (RFC 3339, UTC), `level`, `target`, `fields` (`message` and the event's own
/// fields), and `span`/`spans` when inside one.
struct Switch {
    text: tracing_subscriber::fmt::format::Format,
    json: tracing_subscriber::fmt::format::Format<tracing_subscriber::fmt::format::Json>,
}

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for Switch
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        if JSON.load(std::sync::atomic::Ordering::Relaxed) {
            self.json.format_event(ctx, writer, event)
        } else {
            self.text.format_event(ctx, writer, event)
        }
    }
}

/// Runs a program's body: logs set up first, then an error becomes one line on stderr, with its
/// causes, and a failure exit status.
pub fn main<E: std::fmt::Display>(name: &str, body: impl FnOnce() -> Result<(), E>) -> std::process::ExitCode {
    limit_malloc_arenas();
    private_files();
    init_tracing();
    match body() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Everything the programs create is their own: files 0600, folders 0700 (umask 077). The
/// agent's checkpoints name the files it reads, the transporter's buffers hold raw log records,
/// and on a Kubernetes node both live on host paths or volumes other pods may mount.
fn private_files() {
    // SAFETY: umask only sets this process's file mode creation mask; it cannot fail.
    unsafe {
        libc::umask(0o077);
    }
}

/// Caps glibc's malloc at two arenas, before any thread starts, unless `MALLOC_ARENA_MAX` says
/// otherwise. glibc gives each new thread an arena (up to eight per core) and keeps what is freed
/// in it: with librdkafka's threads and the blocking threads compression runs on, each holding a
/// compressor for a while, peak RSS grew with the number of threads that had ever compressed
/// (measured: 63-80 MB per transporter worker with the default, 52-56 MB with two arenas, at the
/// same throughput).
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets a malloc parameter; it is called before this program starts
        // any thread, and an unsupported parameter is reported by its return value, not UB.
        let _ = unsafe { libc::mallopt(libc::M_ARENA_MAX, 2) };
    }
}

/// The runtime both programs run on. Two workers: the heavy lifting is on librdkafka's threads
/// and on blocking tasks, and the async side only waits; more workers would only compete with
/// them on small nodes.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()
}

/// Resolves on SIGTERM or SIGINT. SIGHUP, which asks many daemons to reload, is answered with a
/// warning: restart is the reload (a restart resumes from checkpoints and committed offsets, and
/// a rolling restart applies a change with nothing lost), and SIGHUP's default action would
/// have ended the process without its orderly stop.
pub async fn wait_for_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
            _ = hup.recv() => tracing::warn!(
                "SIGHUP: the configuration is not reloaded; restart the process (SIGTERM, or a rolling restart) to apply a change"
            ),
        }
    }
}
