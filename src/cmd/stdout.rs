//! Command output on stdout. Every command writes through here, so a reader
//! that stops early (`isoswitch spec show … | head`) ends the command quietly
//! with status 0 instead of a broken-pipe panic.

use std::io::{ErrorKind, Write};

/// A write to stdout that failed. Its own type, so a broken pipe on stdout
/// is told apart from one on a socket (`send` to a host that hung up), which
/// is a failure.
#[derive(Debug, thiserror::Error)]
#[error("cannot write to stdout: {0}")]
pub struct StdoutError(#[source] std::io::Error);

/// Writes `text` to stdout and flushes it.
pub fn print(text: impl AsRef<[u8]>) -> Result<(), StdoutError> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_ref())
        .and_then(|()| out.flush())
        .map_err(StdoutError)
}

/// Writes `line` and a newline to stdout.
pub fn println(line: impl std::fmt::Display) -> Result<(), StdoutError> {
    print(format!("{line}\n"))
}

/// Whether `error` is stdout's reader having gone away: not a failure of the
/// command, so it exits 0 without a message.
pub fn reader_went_away(error: &anyhow::Error) -> bool {
    error
        .chain()
        .any(|cause| matches!(cause.downcast_ref::<StdoutError>(), Some(StdoutError(e)) if e.kind() == ErrorKind::BrokenPipe))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broken_pipe() -> std::io::Error {
        std::io::Error::from(ErrorKind::BrokenPipe)
    }

    #[test]
    fn only_a_broken_stdout_is_a_reader_that_went_away() {
        let stdout = anyhow::Error::new(StdoutError(broken_pipe())).context("spec show");
        assert!(reader_went_away(&stdout));
        // `send` writing to a host that hung up is a failure to report.
        let socket = anyhow::Error::new(broken_pipe()).context("send to 127.0.0.1:8583");
        assert!(!reader_went_away(&socket));
        let full = anyhow::Error::new(StdoutError(std::io::Error::from(ErrorKind::StorageFull)));
        assert!(!reader_went_away(&full));
    }
}
