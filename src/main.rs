//! The `isoswitch` command: the switch (`serve`), the issuer simulator, `send`,
//! and codec tools for QA teams (parse, build, explain, spec import/export).
//! Each subcommand lives in `cmd/`; errors reach the user as one line on stderr
//! and exit status 1.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cmd;

/// mimalloc: the switch allocates small short-lived buffers per message from
/// several threads, where glibc malloc showed up at 12% of the profile.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "isoswitch",
    version,
    about = "ISO 8583 switch, issuer simulator and codec tools"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Decode one message from stdin and print it as JSON.
    Parse(cmd::codec::CodecArgs),
    /// Read the JSON form from stdin and write the encoded message.
    Build(cmd::codec::CodecArgs),
    /// Decode one message from stdin and print a table a person reads (PAN masked).
    Explain(cmd::codec::CodecArgs),
    /// Run the switch (embedded default config when --config is absent).
    Serve(cmd::serve::ServeArgs),
    /// Run the issuer simulator alone as a TCP issuer host.
    IssuerSim(cmd::issuer_sim::IssuerSimArgs),
    /// Send one message (JSON) to a host and print the response as JSON.
    Send(cmd::send::SendArgs),
    /// Import, export and show message specs.
    #[command(subcommand)]
    Spec(cmd::spec::SpecCommand),
    /// Check risk rules and try requests against them, sending nothing.
    #[command(subcommand)]
    Rules(cmd::rules::RulesCommand),
    /// Look transactions up in the journal and count them, for support.
    #[command(subcommand)]
    Journal(cmd::journal::JournalCommand),
    /// Web virtual terminal tools (hash an operator's password).
    #[command(subcommand)]
    Vt(cmd::vt::VtCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Parse(args) => cmd::codec::parse(&args),
        Command::Build(args) => cmd::codec::build(&args),
        Command::Explain(args) => cmd::codec::explain(&args),
        Command::Spec(command) => cmd::spec::run(command),
        Command::Rules(command) => cmd::rules::run(command),
        Command::Journal(command) => cmd::journal::run(command),
        Command::Serve(args) => cmd::serve::run(args),
        Command::IssuerSim(args) => cmd::issuer_sim::run(args),
        Command::Send(args) => cmd::send::run(args),
        Command::Vt(command) => cmd::vt::run(command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // `isoswitch spec show … | head`: the reader has what it wanted.
        Err(e) if cmd::stdout::reader_went_away(&e) => ExitCode::SUCCESS,
        Err(e) => {
            let error: &(dyn std::error::Error + 'static) = e.as_ref();
            eprintln!("isoswitch: {}", cmd::error_line(error));
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot bind 127.0.0.1:1: {source}")]
    struct Bind {
        source: std::io::Error,
    }

    #[test]
    fn an_os_error_is_printed_once() {
        let os = std::io::Error::new(std::io::ErrorKind::AddrInUse, "address in use");
        let e = anyhow::Error::new(Bind { source: os }).context("listener \"pos\"");
        assert_eq!(
            cmd::error_line(e.as_ref()),
            "listener \"pos\": cannot bind 127.0.0.1:1: address in use"
        );
    }

    #[test]
    fn causes_not_in_the_message_are_joined() {
        let e = anyhow::anyhow!("no such file").context("reading\nconfig");
        assert_eq!(cmd::error_line(e.as_ref()), "reading config: no such file");
    }
}
