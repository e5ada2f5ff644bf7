//! One module per group of subcommands.

pub mod codec;
pub mod issuer_sim;
pub mod journal;
pub mod rules;
pub mod send;
pub mod serve;
pub mod spec;
pub mod stdout;
pub mod vt;

/// An error and its causes on one line, joined by ": ", each cause once. Many
/// error types already end their message with their cause's text (thiserror's
/// `{source}`) and also return it as `source()`; that cause is not repeated.
pub fn error_line(error: &(dyn std::error::Error + 'static)) -> String {
    let mut line = String::new();
    let mut cause = Some(error);
    while let Some(e) = cause {
        let text = e.to_string();
        if !line.ends_with(&text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&text);
        }
        cause = e.source();
    }
    line.replace('\n', " ")
}

/// Turns transparent huge pages off for this process. mimalloc asks the kernel
/// for 2 MiB pages, and it hands freed memory back to the OS: every first touch
/// of such a page zeroes 2 MiB in one page fault, on whichever thread is
/// answering a terminal at the time. On the 2-core bench VM that took the open
/// loop's p99 from about 1.5 ms to 3–10 ms and its p99.9 to tens of ms. Small
/// pages spread the same work thinly. Best effort: a kernel without the
/// setting just keeps its default.
pub fn prefer_small_pages() {
    #[cfg(target_os = "linux")]
    if let Err(error) = rustix::thread::disable_transparent_huge_pages(true) {
        tracing::debug!(%error, "cannot turn transparent huge pages off");
    }
}

/// The async runtime for a long-running command, with `worker_threads`
/// workers (0: [`default_worker_threads`]).
pub fn runtime(worker_threads: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    use anyhow::Context;
    let workers = match worker_threads {
        0 => default_worker_threads(),
        n => n,
    };
    isoswitch::runtime::build(workers).context("starting the async runtime")
}

/// One worker per core, but only one on a machine with two cores or fewer:
/// there a second worker costs more in cross-thread wake-ups (futex, IPIs)
/// than it gains, and the other core is wanted by the kernel's TCP work, the
/// log writer and whatever shares the machine. Measured on the 2-core bench
/// VM, embedded default at 20 000/s open loop: p99 0.9 ms with one worker,
/// 1.4 ms with two, at the same closed-loop throughput.
pub fn default_worker_threads() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    if cores <= 2 {
        1
    } else {
        cores
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("reading x.toml: {source}")]
    struct Repeats {
        source: std::io::Error,
    }

    #[test]
    fn error_line_prints_a_cause_its_error_already_shows_once() {
        let os = std::io::Error::from_raw_os_error(98);
        let error = anyhow::Error::new(Repeats { source: os }).context("serve");
        let line = error_line(error.as_ref());
        assert_eq!(line.matches("os error 98").count(), 1, "{line}");
        assert!(line.starts_with("serve: reading x.toml: "), "{line}");
    }
}
