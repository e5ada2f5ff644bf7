//! `loadgen`: drives ISO 8583 traffic at an isoswitch listener and reports
//! sustained throughput and latency (see `loadgen --help`). Exit status: 0 when
//! every request got an expected answer, 1 when any error was counted, 2 when the
//! run could not start.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use isoswitch::frame::{FrameConfig, LengthHeader, Tpdu};
use loadgen::driver::{self, Mode, RunConfig};
use loadgen::report::Report;
use loadgen::scenario::Scenario;
use tokio_util::sync::CancellationToken;

/// Window per connection when neither --window nor --rate is given.
const DEFAULT_WINDOW: usize = 16;
/// Run length when neither --requests nor --duration is given.
const DEFAULT_DURATION: Duration = Duration::from_secs(10);

#[derive(Parser, Debug)]
#[command(
    name = "loadgen",
    version,
    about = "ISO 8583 load generator for isoswitch: closed loop (--window) or open loop (--rate), HDR latency",
    after_help = "Closed loop: each of --connections keeps --window requests outstanding; every response \
immediately triggers the next request. Open loop: --rate requests per second across all connections, \
latency measured from each request's intended send time, so a stalled switch shows in the tail. \
Connect per request (--connect-per-request): each of --connections workers connects (and shakes hands \
with --tls-ca), sends one request, reads its answer and closes, then starts over; latency runs from the \
start of the connect, and throughput is new connections per second.\n\n\
The run sends for --warmup plus --duration, or until --requests are sent, whichever comes first, then \
waits for the outstanding responses (at most --timeout-ms). Exit status: 0 clean, 1 any mismatch, \
timeout, connection or decode error, 2 the run could not start."
)]
struct Cli {
    /// HOST:PORT of the switch listener. Loopback only unless --allow-remote.
    #[arg(long, default_value = "127.0.0.1:8583")]
    to: String,
    /// Send load to a non-loopback address.
    #[arg(long)]
    allow_remote: bool,
    /// Scenario file (TOML): cards, amounts, MTI and processing-code mix, expected codes.
    #[arg(long, default_value = "load/scenarios/default.toml")]
    scenario: PathBuf,
    /// Spec file, or a built-in spec name such as iso87ascii.
    #[arg(long, default_value = "iso87ascii")]
    spec: PathBuf,
    /// Length header: 2b, 4b (binary), 2a, 4a (ASCII digits).
    #[arg(long, default_value = "2b")]
    header: LengthHeader,
    /// The length counts the header itself.
    #[arg(long)]
    header_includes_self: bool,
    /// Send this 5-byte TPDU (10 hex digits, e.g. 6000010000) before each message.
    #[arg(long)]
    tpdu: Option<Tpdu>,
    /// Connect with TLS, trusting the CA certificates in this PEM file.
    #[arg(long)]
    tls_ca: Option<PathBuf>,
    /// Name to check the server certificate against (default: the host of --to).
    #[arg(long, requires = "tls_ca")]
    tls_server_name: Option<String>,
    /// Connections to open.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Closed loop: requests outstanding per connection [default: 16].
    #[arg(long, conflicts_with = "rate")]
    window: Option<usize>,
    /// Open loop: requests per second across all connections.
    #[arg(long)]
    rate: Option<f64>,
    /// A new connection for every request, as dial-up and GPRS terminals do:
    /// connect (TLS handshake with --tls-ca), send, read the answer, close;
    /// --connections of these run at a time.
    #[arg(long, conflicts_with_all = ["rate", "window"])]
    connect_per_request: bool,
    /// Open loop: requests outstanding per connection before further due requests
    /// are counted as unsent errors.
    #[arg(long, default_value_t = 10_000)]
    max_outstanding: usize,
    /// Stop after sending this many requests in all.
    #[arg(long)]
    requests: Option<u64>,
    /// Send for this long after the warmup (30s, 500ms, 2m) [default: 10s when
    /// --requests is absent].
    #[arg(long, value_parser = loadgen::parse_duration)]
    duration: Option<Duration>,
    /// Send for this long first without measuring throughput or latency.
    #[arg(long, value_parser = loadgen::parse_duration, default_value = "0s")]
    warmup: Duration,
    /// A request unanswered this long after it was sent is a timeout.
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Runtime worker threads: 1 runs every connection on one thread (no
    /// wake-ups between threads; over 200 000 requests/s here), 0 one per
    /// core. More only when one thread cannot keep up with the rate asked.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Do not check response codes (for a floor host that answers without
    /// field 39); response MTI and STAN are still checked.
    #[arg(long)]
    any_code: bool,
    /// No progress lines on stderr.
    #[arg(long, short)]
    quiet: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match start(cli) {
        Ok(report) if report.is_clean() => ExitCode::SUCCESS,
        Ok(report) => {
            eprintln!("loadgen: {} errors (see above)", report.errors.total);
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("loadgen: {}", format!("{e:#}").replace('\n', " "));
            ExitCode::from(2)
        }
    }
}

fn start(cli: Cli) -> Result<Report> {
    let runtime = isoswitch::runtime::build(cli.threads).context("starting the async runtime")?;
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> Result<Report> {
    let addr = resolve_target(&cli.to, cli.allow_remote)?;
    let scenario = Arc::new(Scenario::load(&cli.scenario)?);
    let spec = isoswitch::specs::resolve(&cli.spec)
        .with_context(|| format!("--spec {}", cli.spec.display()))?;
    let tls = match &cli.tls_ca {
        Some(ca) => {
            let name = cli
                .tls_server_name
                .clone()
                .unwrap_or_else(|| host_of(&cli.to).to_string());
            Some(loadgen::tls::target(ca, &name)?)
        }
        None => None,
    };
    let mode = match (cli.rate, cli.window) {
        _ if cli.connect_per_request => Mode::ConnectPerRequest,
        (Some(rate), _) => Mode::Open {
            rate,
            max_outstanding: cli.max_outstanding,
        },
        (None, window) => Mode::Closed {
            window: window.unwrap_or(DEFAULT_WINDOW),
        },
    };
    let duration = match (cli.requests, cli.duration) {
        (None, None) => Some(DEFAULT_DURATION),
        (_, d) => d,
    };
    let config = RunConfig {
        addr,
        target: cli.to.clone(),
        tls,
        spec: Arc::new(spec),
        frame: FrameConfig {
            header: cli.header,
            header_includes_self: cli.header_includes_self,
            tpdu: cli.tpdu.is_some(),
            ..FrameConfig::default()
        },
        tpdu: cli.tpdu,
        connections: cli.connections,
        mode,
        requests: cli.requests,
        duration,
        warmup: cli.warmup,
        timeout: Duration::from_millis(cli.timeout_ms),
        progress: !cli.quiet,
        check_codes: !cli.any_code,
    };
    if !cli.quiet {
        eprintln!("loadgen: {}", scenario.describe());
    }

    let stop = CancellationToken::new();
    let on_interrupt = stop.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("loadgen: interrupted: no more requests; waiting for the outstanding ones");
            on_interrupt.cancel();
        }
    });
    let report = driver::run(config, scenario, stop).await?;
    print!("{}", report.summary());
    if let Some(path) = &cli.json {
        std::fs::write(path, report.to_json() + "\n")
            .with_context(|| format!("--json {}", path.display()))?;
    }
    Ok(report)
}

/// The address to load. Refuses anything but loopback without --allow-remote, so
/// a typo cannot turn a benchmark on someone else's host.
fn resolve_target(to: &str, allow_remote: bool) -> Result<SocketAddr> {
    let addrs: Vec<SocketAddr> = to
        .to_socket_addrs()
        .with_context(|| format!("--to {to}: expected HOST:PORT"))?
        .collect();
    if let Some(loopback) = addrs.iter().find(|a| a.ip().is_loopback()) {
        return Ok(*loopback);
    }
    match addrs.first() {
        Some(addr) if allow_remote => Ok(*addr),
        Some(addr) => bail!(
            "--to {to} ({addr}) is not a loopback address; pass --allow-remote to load a remote switch"
        ),
        None => bail!("--to {to}: the name resolves to no address"),
    }
}

fn host_of(to: &str) -> &str {
    let host = to.rsplit_once(':').map_or(to, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_targets_without_allow_remote() {
        assert!(resolve_target("127.0.0.1:8583", false).is_ok());
        assert!(resolve_target("[::1]:8583", false).is_ok());
        let e = resolve_target("10.1.2.3:8583", false).expect_err("remote refused");
        assert!(e.to_string().contains("--allow-remote"), "{e}");
        assert!(resolve_target("10.1.2.3:8583", true).is_ok());
        assert!(resolve_target("no-port", false).is_err());
    }

    #[test]
    fn host_of_strips_port_and_brackets() {
        assert_eq!(host_of("switch.example:8583"), "switch.example");
        assert_eq!(host_of("[::1]:8583"), "::1");
    }

    #[test]
    fn window_and_rate_exclude_each_other() {
        let both = Cli::try_parse_from(["loadgen", "--window", "4", "--rate", "100"]);
        assert!(both.is_err());
        let cli = Cli::try_parse_from([
            "loadgen",
            "--rate",
            "100",
            "--duration",
            "2s",
            "--header",
            "4a",
        ])
        .expect("valid");
        assert_eq!(cli.header, LengthHeader::Ascii4);
        assert_eq!(cli.duration, Some(Duration::from_secs(2)));
        assert!(Cli::try_parse_from(["loadgen", "--header", "3x"]).is_err());
    }

    #[test]
    fn connect_per_request_takes_neither_window_nor_rate() {
        for other in [["--window", "4"], ["--rate", "100"]] {
            let both =
                Cli::try_parse_from(["loadgen", "--connect-per-request", other[0], other[1]]);
            assert!(both.is_err(), "{other:?}");
        }
        let cli = Cli::try_parse_from(["loadgen", "--connect-per-request", "--connections", "64"])
            .expect("valid");
        assert!(cli.connect_per_request);
        assert_eq!(cli.connections, 64);
    }
}
