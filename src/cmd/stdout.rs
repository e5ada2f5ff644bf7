//! Command output on stdout. Every command writes through here, so a reader
//! that stops early (`isoswitch spec show … | head`) ends the command quietly
//! with status 0 instead of a broken-pipe panic.

use std::io::{ErrorKind, Write};

/// Writes `text` to stdout and flushes it.
pub fn print(text: impl AsRef<[u8]>) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_ref())?;
    out.flush()
}

/// Writes `line` and a newline to stdout.
pub fn println(line: impl std::fmt::Display) -> std::io::Result<()> {
    print(format!("{line}\n"))
}

/// Whether `error` is stdout's reader having gone away: not a failure of the
/// command, so it exits 0 without a message.
pub fn reader_went_away(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == ErrorKind::BrokenPipe)
    })
}
