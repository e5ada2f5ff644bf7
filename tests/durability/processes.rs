//! The real binaries as child processes: `isoswitch issuer-sim --record` and
//! `isoswitch serve`, with the addresses they bound read from their own
//! output, and the ways a test ends them (kill -9, SIGTERM).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::time::timeout;

use super::wait::poll_until;

/// Longest a process gets to start, log a line or answer over HTTP.
pub const WAIT: Duration = Duration::from_secs(15);
/// Longest a SIGTERM may take: the switch's own drain is 10 s.
const EXIT_WAIT: Duration = Duration::from_secs(30);

/// Every line a child writes to stderr, read to the end so it never blocks
/// on a full pipe.
fn read_stderr(child: &mut Child) -> mpsc::UnboundedReceiver<String> {
    let stderr = child.stderr.take().expect("stderr is piped");
    let (report, lines) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut reader = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            let _ = report.send(line);
        }
    });
    lines
}

fn isoswitch(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_isoswitch"));
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

fn path_arg(path: &Path) -> &str {
    path.to_str().expect("temp paths are UTF-8")
}

// ------------------------------------------------------------ the simulator

/// `isoswitch issuer-sim` on 127.0.0.1:0, recording what it receives; killed
/// when dropped.
pub struct SimProcess {
    _child: Child,
    pub addr: SocketAddr,
    pub record: PathBuf,
}

impl SimProcess {
    pub async fn start(config: &Path, record: &Path) -> SimProcess {
        let mut child = isoswitch(&[
            "issuer-sim",
            "--bind",
            "127.0.0.1:0",
            "--config",
            path_arg(config),
            "--record",
            path_arg(record),
        ])
        .env("RUST_LOG", "warn")
        .spawn()
        .expect("issuer-sim starts");
        let mut lines = read_stderr(&mut child);
        let addr = timeout(WAIT, async {
            while let Some(line) = lines.recv().await {
                if let Some(addr) = line.strip_prefix("issuer simulator listening on ") {
                    return addr.parse().expect("the simulator names a socket address");
                }
            }
            panic!("issuer-sim exited without reporting its address");
        })
        .await
        .expect("issuer-sim reports its address in time");
        // Keep draining stderr.
        tokio::spawn(async move { while lines.recv().await.is_some() {} });
        SimProcess {
            _child: child,
            addr,
            record: record.to_owned(),
        }
    }
}

// --------------------------------------------------------------- the switch

/// `isoswitch serve` with JSON logs; killed when dropped.
pub struct SwitchProcess {
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
    seen: Vec<String>,
    pub terminal_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
}

impl SwitchProcess {
    /// Starts the switch, reads the addresses it bound and waits until
    /// /readyz says ready (the issuer link is up), so load does not race it.
    pub async fn start(config: &Path) -> SwitchProcess {
        let switch = SwitchProcess::spawn(config).await;
        switch.wait_ready().await;
        switch
    }

    /// Starts the switch and reads the addresses it bound, no more.
    pub async fn spawn(config: &Path) -> SwitchProcess {
        let mut child = isoswitch(&[
            "serve",
            "--log-format",
            "json",
            "--config",
            path_arg(config),
        ])
        .env("RUST_LOG", "info")
        .spawn()
        .expect("isoswitch serve starts");
        let lines = read_stderr(&mut child);
        let mut switch = SwitchProcess {
            child,
            lines,
            seen: Vec::new(),
            terminal_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            metrics_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        switch.metrics_addr = switch.logged_addr("metrics on /metrics").await;
        switch.terminal_addr = switch.logged_addr("listening").await;
        switch
    }

    /// Waits for a log line whose message starts with `message`; its `addr`.
    async fn logged_addr(&mut self, message: &str) -> SocketAddr {
        loop {
            let line = match timeout(WAIT, self.lines.recv()).await {
                Ok(Some(line)) => line,
                Ok(None) => panic!(
                    "isoswitch exited before logging {message:?}: {:#?}",
                    self.seen
                ),
                Err(_) => panic!("isoswitch did not log {message:?}: {:#?}", self.seen),
            };
            self.seen.push(line.clone());
            let Ok(parsed) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            let fields = &parsed["fields"];
            if fields["message"]
                .as_str()
                .is_some_and(|m| m.starts_with(message))
            {
                return fields["addr"]
                    .as_str()
                    .and_then(|a| a.parse().ok())
                    .unwrap_or_else(|| panic!("{message:?} line without an addr: {line}"));
            }
        }
    }

    pub async fn wait_ready(&self) {
        let metrics = self.metrics_addr;
        poll_until("the switch's /readyz answers 200", WAIT, || async move {
            let (status, _) = http_get(metrics, "/readyz").await;
            (status == 200).then_some(())
        })
        .await;
    }

    /// GET `path` on the metrics endpoint: status and body.
    pub async fn get(&self, path: &str) -> (u16, String) {
        http_get(self.metrics_addr, path).await
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("still running").to_string();
        let status = std::process::Command::new("kill")
            .args([signal, &pid])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {signal} {pid} failed");
    }

    /// kill -9, and waits until the process is gone.
    pub async fn kill_9(mut self) -> Vec<String> {
        self.signal("-KILL");
        self.exit().await.1
    }

    /// SIGTERM; the exit status and every log line once it has exited.
    pub async fn terminate(mut self) -> (ExitStatus, Vec<String>) {
        self.signal("-TERM");
        self.exit().await
    }

    async fn exit(&mut self) -> (ExitStatus, Vec<String>) {
        let status = timeout(EXIT_WAIT, self.child.wait())
            .await
            .expect("isoswitch exits in time")
            .expect("exit status");
        while let Some(line) = self.lines.recv().await {
            self.seen.push(line);
        }
        (status, std::mem::take(&mut self.seen))
    }
}

/// A plain HTTP/1.1 GET with `Connection: close`: status and body. A refused
/// or broken connection is status 0, so a caller polling it just looks again.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    let Ok(Ok(response)) = timeout(WAIT, exchange).await else {
        return (0, String::new());
    };
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, body)| body.to_owned());
    (status, body)
}
