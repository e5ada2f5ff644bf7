//! The real `isoswitch serve` binary stopped with SIGTERM while requests are
//! at a slow issuer: every terminal is answered, every timed-out request's
//! reversal reaches the (still reachable) issuer before the process exits,
//! and it exits 0.
//!
//! Every socket is on 127.0.0.1 with port 0; the switch's listener address is
//! read from its own "listening" log line.

mod common;

use std::collections::BTreeSet;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use common::{
    answer, field_90_stan, request, Act, FakeIssuer, Framing, Script, Seen, Terminal, WAIT,
};
use isoswitch::iso8583::Message;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::time::timeout;

const CARD: &str = "4761739001010010";
/// Purchases of this amount or more the fake issuer never answers.
const SLOW_AMOUNT: u64 = 50_000;
const SLOW_TERMINALS: usize = 3;
/// Long enough for the process to drain, flush and exit.
const EXIT_WAIT: Duration = Duration::from_secs(30);

/// Answers everything at once except slow purchases, which it holds.
fn slow_for_big_purchases() -> Script {
    Arc::new(|m: &Message| {
        let amount: u64 = m.get_str(4).and_then(|a| a.parse().ok()).unwrap_or(0);
        if m.mti().class() == 2 && amount >= SLOW_AMOUNT {
            return Act::Hold;
        }
        match m.mti().response() {
            Some(_) => Act::Answer(vec![answer(m, "00")]),
            None => Act::Hold,
        }
    })
}

fn config(issuer: &str) -> String {
    format!(
        r#"
[[listener]]
name = "pos"
bind = "127.0.0.1:0"

[metrics]
bind = "127.0.0.1:0"

[[issuer]]
name = "bank"
endpoints = [{issuer}]
timeout_ms = 1000
echo_interval_s = 0
sign_on = false

[[route]]
name = "visa"
bins = ["4"]
issuer = "bank"
"#
    )
}

/// The running binary and its log lines, as they come.
struct Serving {
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
    seen: Vec<String>,
}

impl Serving {
    fn start(config_path: &std::path::Path) -> Serving {
        let mut child = Command::new(env!("CARGO_BIN_EXE_isoswitch"))
            .args(["serve", "--log-format", "json", "--config"])
            .arg(config_path)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("isoswitch starts");
        let stderr = child.stderr.take().expect("stderr piped");
        let (report, lines) = mpsc::unbounded_channel();
        // Read to the end, so the process never blocks on a full pipe.
        tokio::spawn(async move {
            let mut reader = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                let _ = report.send(line);
            }
        });
        Serving {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a log line with this message; returns its fields.
    async fn logged(&mut self, message: &str) -> serde_json::Value {
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
            if parsed["fields"]["message"] == message {
                return parsed["fields"].clone();
            }
        }
    }

    fn terminate(&self) {
        let pid = self.child.id().expect("still running").to_string();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -TERM {pid} failed");
    }

    /// Waits for the exit; returns whether it succeeded and every log line.
    async fn exit(mut self) -> (bool, Vec<String>) {
        let status = timeout(EXIT_WAIT, self.child.wait())
            .await
            .expect("isoswitch exits after SIGTERM")
            .expect("exit status");
        while let Some(line) = self.lines.recv().await {
            self.seen.push(line);
        }
        (status.success(), self.seen)
    }
}

#[tokio::test]
async fn sigterm_answers_every_terminal_and_reverses_every_timeout_before_exit() {
    let mut issuer = FakeIssuer::start(slow_for_big_purchases()).await;
    // The journal goes beside the config: the directory lives to the end.
    let dir = tempfile::tempdir().expect("temp dir");
    let config_path = dir.path().join("switch.toml");
    std::fs::write(&config_path, config(&issuer.endpoint())).expect("config written");

    let mut serving = Serving::start(&config_path);
    let listening = serving.logged("listening").await;
    let addr = listening["addr"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .expect("the listening line names its address");

    // One fast purchase, answered at once, and slow ones held at the issuer.
    let mut fast = Terminal::connect(addr, Framing::default()).await;
    let fast_request = request("0200", CARD, 100);
    let fast_answer = fast.exchange(&fast_request).await;
    assert_eq!(fast_answer.get_str(11), fast_request.get_str(11));
    let mut slow = Vec::new();
    for i in 0..SLOW_TERMINALS {
        let mut terminal = Terminal::connect(addr, Framing::default()).await;
        let sent = request("0200", CARD, SLOW_AMOUNT + i as u64);
        terminal.send(&sent).await;
        slow.push((terminal, sent));
    }
    // Every slow purchase is at the issuer: the issuer-side STANs to reverse.
    let mut held = BTreeSet::new();
    while held.len() < SLOW_TERMINALS {
        let (message, _) = issuer.next_of_class(2).await;
        let amount: u64 = message.get_str(4).and_then(|a| a.parse().ok()).unwrap_or(0);
        if amount >= SLOW_AMOUNT {
            held.insert(message.get_str(11).expect("a STAN").to_string());
        }
    }

    serving.terminate();

    for (terminal, sent) in &mut slow {
        let answer = terminal.recv().await;
        assert_eq!(answer.mti().as_str(), "0210");
        assert_eq!(answer.get_str(11), sent.get_str(11), "its own answer");
        assert!(
            terminal.is_closed().await,
            "exactly one answer, then closed"
        );
    }
    assert!(fast.is_closed().await, "the idle terminal is closed too");

    // Each timed-out purchase is reversed at the issuer, naming its STAN.
    let mut reversed = BTreeSet::new();
    while reversed.len() < held.len() {
        let (reversal, _) = issuer.next_of_class(4).await;
        reversed.insert(field_90_stan(&reversal).expect("field 90 names a STAN"));
    }
    assert_eq!(reversed, held);

    let (success, log) = serving.exit().await;
    assert!(success, "exit status 0; log: {log:#?}");
    // Nothing else reached the issuer: no repeats needed, nothing after exit.
    while let Some(seen) = issuer.try_next() {
        if let Seen::Message { message, .. } = seen {
            assert_ne!(message.mti().class(), 2, "no purchase after SIGTERM");
        }
    }
    for dropped in [
        "store-and-forward has stopped; message not queued",
        "store-and-forward item not delivered",
    ] {
        assert!(
            !log.iter().any(|line| line.contains(dropped)),
            "{dropped:?} logged: {log:#?}"
        );
    }
    assert!(
        log.iter().any(|line| line.contains("\"stopped\"")),
        "the last stage ran: {log:#?}"
    );
}
