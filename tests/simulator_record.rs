//! `isoswitch issuer-sim --record`: the real binary on 127.0.0.1:0 writes one
//! JSON line per message it receives, and each line is in the file before its
//! answer reaches the peer, so a test can read the file the moment it has its
//! last answer.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use isoswitch::frame::{Frame, FrameCodec, FrameConfig};
use isoswitch::iso8583::{Message, Spec};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::time::timeout;
use tokio_util::codec::Framed;

/// Longest any step waits on the simulator.
const WAIT: Duration = Duration::from_secs(10);

const CARD: &str = "4111111111111111";
const TIME: &str = "1207181500";

/// A running `isoswitch issuer-sim`, killed when dropped.
struct Sim {
    _child: Child,
    client: Framed<TcpStream, FrameCodec>,
    spec: Spec,
}

impl Sim {
    /// Starts the binary with `args` after `issuer-sim --bind 127.0.0.1:0`
    /// and connects to the address it reports.
    async fn start(args: &[&str]) -> Sim {
        let mut child = Command::new(env!("CARGO_BIN_EXE_isoswitch"))
            .args(["issuer-sim", "--bind", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "off")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("isoswitch starts");
        let mut stderr = BufReader::new(child.stderr.take().expect("stderr piped")).lines();
        let addr = timeout(WAIT, async {
            while let Some(line) = stderr.next_line().await.expect("stderr readable") {
                if let Some(addr) = line.strip_prefix("issuer simulator listening on ") {
                    return addr.to_owned();
                }
            }
            panic!("issuer-sim exited without reporting its address");
        })
        .await
        .expect("issuer-sim reports its address in time");
        // Keep reading, so the simulator never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = stderr.next_line().await {} });
        let stream = timeout(WAIT, TcpStream::connect(&addr))
            .await
            .expect("connects in time")
            .expect("connects");
        Sim {
            _child: child,
            client: Framed::new(stream, FrameCodec::new(FrameConfig::default())),
            spec: isoswitch::specs::resolve(Path::new("iso87ascii")).expect("built-in spec"),
        }
    }

    async fn send(&mut self, request: &Message) {
        let payload = request.encode(&self.spec).expect("encodes");
        timeout(WAIT, self.client.send(Frame::new(payload)))
            .await
            .expect("sends in time")
            .expect("sends");
    }

    async fn exchange(&mut self, request: &Message) -> Message {
        self.send(request).await;
        let frame = timeout(WAIT, self.client.next())
            .await
            .expect("answered in time")
            .expect("not closed")
            .expect("frames");
        Message::decode(&self.spec, frame.payload).expect("answer decodes")
    }
}

fn message(mti: &str, fields: &[(u8, &str)]) -> Message {
    let mut message = Message::new(mti.parse().expect("valid MTI"));
    for (n, v) in fields {
        message.set(*n, v).expect("data field");
    }
    message
}

fn authorization(stan: &str, amount: &str) -> Message {
    message(
        "0100",
        &[
            (2, CARD),
            (3, "000000"),
            (4, amount),
            (7, TIME),
            (11, stan),
            (37, &format!("634218{stan}")),
            (41, "TERM0001"),
        ],
    )
}

/// The record's lines, each parsed, without `at_ms` (checked separately).
fn lines(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).expect("record readable");
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "a half line: {text}"
    );
    text.lines()
        .map(|line| {
            let mut value: Value = serde_json::from_str(line).expect("each line is JSON");
            let at_ms = value
                .as_object_mut()
                .expect("an object")
                .remove("at_ms")
                .and_then(|at| at.as_u64());
            assert!(at_ms.is_some_and(|ms| ms > 1_700_000_000_000), "{line}");
            value
        })
        .collect()
}

#[tokio::test]
async fn every_message_is_recorded_with_what_the_simulator_did_before_its_answer() {
    let dir = tempfile::tempdir().expect("temp dir");
    let record = dir.path().join("sim.jsonl");
    let mut sim = Sim::start(&["--record", record.to_str().expect("UTF-8 path")]).await;

    let approved = sim.exchange(&authorization("000101", "000000001000")).await;
    assert_eq!(approved.get_str(39), Some("00"));
    // 999.50: the default config's rule drops it; the next answer proves it was read.
    sim.send(&authorization("000102", "000000099950")).await;
    let original = format!("0100000101{TIME}{}", "0".repeat(22));
    let reversal = |mti| {
        message(
            mti,
            &[
                (2, CARD),
                (4, "000000001000"),
                (7, "1207181510"),
                (11, "000103"),
                (41, "TERM0001"),
                (90, &original),
            ],
        )
    };
    assert_eq!(
        sim.exchange(&reversal("0400")).await.get_str(39),
        Some("00")
    );
    assert_eq!(
        sim.exchange(&reversal("0401")).await.get_str(39),
        Some("00")
    );
    let advice = |mti| {
        message(
            mti,
            &[
                (2, CARD),
                (4, "000000000500"),
                (7, TIME),
                (11, "000105"),
                (38, "123456"),
                (39, "00"),
                (41, "TERM0001"),
            ],
        )
    };
    for mti in ["0120", "0121"] {
        let answer = sim.exchange(&advice(mti)).await;
        assert_eq!(answer.mti().to_string(), "0130");
        assert_eq!(answer.get_str(39), Some("00"));
        assert_eq!(answer.get_str(11), Some("000105"));
    }

    // No polling: the last answer came after its line, and lines are in order.
    let recorded = lines(&record);
    let pan = "411111******1111";
    let auth_code = approved.get_str(38).expect("approval code");
    assert!(!auth_code.is_empty());
    assert_eq!(
        recorded,
        vec![
            json!({"mti": "0100", "stan": "000101", "rrn": "634218000101", "terminal": "TERM0001",
                   "pan": pan, "amount": 1000, "transmission": TIME, "answer": "00"}),
            json!({"mti": "0100", "stan": "000102", "rrn": "634218000102", "terminal": "TERM0001",
                   "pan": pan, "amount": 99950, "transmission": TIME, "answer": "drop"}),
            json!({"mti": "0400", "stan": "000103", "terminal": "TERM0001", "pan": pan,
                   "amount": 1000, "transmission": "1207181510", "answer": "00",
                   "original_mti": "0100", "original_stan": "000101",
                   "original_transmission": TIME, "reversal": "released"}),
            json!({"mti": "0401", "stan": "000103", "terminal": "TERM0001", "pan": pan,
                   "amount": 1000, "transmission": "1207181510", "answer": "00",
                   "original_mti": "0100", "original_stan": "000101",
                   "original_transmission": TIME, "reversal": "duplicate"}),
            json!({"mti": "0120", "stan": "000105", "terminal": "TERM0001", "pan": pan,
                   "amount": 500, "transmission": TIME, "answer": "00",
                   "advice": true, "duplicate": false}),
            json!({"mti": "0121", "stan": "000105", "terminal": "TERM0001", "pan": pan,
                   "amount": 500, "transmission": TIME, "answer": "00",
                   "advice": true, "duplicate": true}),
        ]
    );
    let text = std::fs::read_to_string(&record).expect("record readable");
    assert!(!text.contains(CARD), "a full PAN in the record");
}

#[tokio::test]
async fn the_config_names_the_record_relative_to_itself_and_the_flag_wins() {
    let dir = tempfile::tempdir().expect("temp dir");
    let default =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/default.toml"))
            .expect("default config readable");
    assert!(default.contains("\n[simulator]\n"));
    let config = dir.path().join("isoswitch.toml");
    std::fs::write(
        &config,
        default.replace(
            "\n[simulator]\n",
            "\n[simulator]\nrecord = \"from-config.jsonl\"\n",
        ),
    )
    .expect("config written");
    let config = config.to_str().expect("UTF-8 path");
    let echo = message("0800", &[(7, TIME), (11, "000001"), (70, "301")]);

    let mut sim = Sim::start(&["--config", config]).await;
    assert_eq!(sim.exchange(&echo).await.get_str(39), Some("00"));
    let from_config = lines(&dir.path().join("from-config.jsonl"));
    assert_eq!(from_config.len(), 1);
    assert_eq!(from_config[0]["mti"], "0800");
    drop(sim);

    let flag = dir.path().join("from-flag.jsonl");
    let flag_arg = flag.to_str().expect("UTF-8 path");
    let mut sim = Sim::start(&["--config", config, "--record", flag_arg]).await;
    assert_eq!(sim.exchange(&echo).await.get_str(39), Some("00"));
    assert_eq!(lines(&flag).len(), 1);
    assert_eq!(
        lines(&dir.path().join("from-config.jsonl")).len(),
        1,
        "the flag's file, not the config's"
    );
}

#[tokio::test]
async fn a_record_file_that_cannot_be_opened_is_one_error_at_start_up() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("no-such-dir").join("sim.jsonl");
    let child = Command::new(env!("CARGO_BIN_EXE_isoswitch"))
        .args(["issuer-sim", "--bind", "127.0.0.1:0", "--record"])
        .arg(&missing)
        .env("RUST_LOG", "off")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("isoswitch starts");
    // Killed on drop if it serves anyway.
    let output = timeout(WAIT, child.wait_with_output())
        .await
        .expect("exits at start-up")
        .expect("exit status");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let errors: Vec<&str> = stderr.lines().collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("record file"), "{stderr}");
    assert!(errors[0].contains("no-such-dir"), "{stderr}");
    assert!(errors[0].contains("No such file"), "{stderr}");
}
