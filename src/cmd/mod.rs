//! One module per group of subcommands.

pub mod codec;
pub mod issuer_sim;
pub mod rules;
pub mod send;
pub mod serve;
pub mod spec;

/// Log line format.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Logs to stderr, level from RUST_LOG (default info). Lines are written by a
/// background thread through a buffer, so a transaction never waits on a
/// write syscall; under a flood the buffer drops lines (and says how many)
/// rather than slow authorizations. Keep the guard until exit: dropping it
/// flushes what is buffered.
pub fn init_logging(format: LogFormat) -> tracing_appender::non_blocking::WorkerGuard {
    let (writer, guard) = tracing_appender::non_blocking(std::io::stderr());
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only for a person at a terminal, not in files or pipes.
    let colours = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colours)
        .with_writer(writer);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    guard
}
