//! `isoswitch vt`: tools for the web virtual terminal.

use std::io::{BufRead, Write};

use anyhow::{bail, Context, Result};

#[derive(clap::Subcommand)]
pub enum VtCommand {
    /// Read a password from stdin (one line) and print its argon2 hash as the
    /// last line, for `password_hash` in [[virtual_terminal.operator]].
    HashPassword,
}

pub fn run(command: VtCommand) -> Result<()> {
    match command {
        VtCommand::HashPassword => hash_password(),
    }
}

fn hash_password() -> Result<()> {
    let stdin = std::io::stdin();
    if std::io::IsTerminal::is_terminal(&stdin) {
        eprintln!("password (one line, then Enter):");
    }
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .context("reading the password from stdin")?;
    let password = line.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        bail!("stdin: expected a password on the first line, found an empty line");
    }
    let hash = isoswitch::vt::auth::hash_password(password)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{hash}")?;
    Ok(())
}
