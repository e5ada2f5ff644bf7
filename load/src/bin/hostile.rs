//! `hostile`: misbehaving terminals against an isoswitch listener, for
//! `load/soak.sh --hostile`. Beside the well-behaved traffic of `loadgen`, it
//! runs for `--duration` and, each on its own schedule:
//!
//! - **idle**: holds `--idle` connections that never send; reopens any the
//!   switch closes (idle timeout) and counts refused connects;
//! - **garbage**: frames of random bytes, then an echo test that must be
//!   answered (or the connection closed); frames of length 0;
//! - **cut**: a frame cut off by a close, and a length header far beyond any
//!   frame limit;
//! - **slowloris**: valid requests written one byte a second;
//! - **flood**: more valid requests at once than the switch keeps in flight on
//!   one connection (4 096), written without reading, then every answer read;
//! - **unsolicited**: responses (0110) the switch never asked for, each
//!   followed by an echo test (0800) that must be the only thing answered.
//!
//! Valid requests carry a card from BIN 5 (never one of the soak's fault
//! cards) and terminal id `HF...`. Every valid request must get exactly one
//! answer, its own (STAN and terminal id), before the connection ends; a
//! garbage frame may get a refusal or a close. Exit status: 0 when no such
//! error was counted, 1 otherwise, 2 when it could not start. Frames use a
//! 2-byte binary length header (the bench listener's).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use isoswitch::iso8583::{Message, Mti, Spec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};

/// How long a valid request may wait for its answer before it counts as lost.
const ANSWER_WAIT: Duration = Duration::from_secs(30);

#[derive(Parser, Debug)]
#[command(
    name = "hostile",
    about = "Misbehaving terminals against an isoswitch listener (loopback only)"
)]
struct Cli {
    /// HOST:PORT of the switch listener; loopback only.
    #[arg(long)]
    to: SocketAddr,
    /// How long to misbehave (30s, 10m).
    #[arg(long, value_parser = loadgen::parse_duration, default_value = "60s")]
    duration: Duration,
    /// Idle connections to hold open.
    #[arg(long, default_value_t = 200)]
    idle: usize,
    /// Requests per flood (more than the switch's 4 096 in flight).
    #[arg(long, default_value_t = 6000)]
    flood: usize,
    /// Seconds between floods.
    #[arg(long, default_value_t = 10)]
    flood_every_s: u64,
    /// Seed for the random bytes and cards.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// What each behaviour did; `errors` decides the exit status.
#[derive(Default)]
struct Counts {
    idle_opened: AtomicU64,
    idle_closed_by_switch: AtomicU64,
    connect_refused: AtomicU64,
    garbage_frames: AtomicU64,
    garbage_refusals: AtomicU64,
    garbage_closes: AtomicU64,
    garbage_echoes: AtomicU64,
    zero_frames: AtomicU64,
    zero_refusals: AtomicU64,
    zero_closes: AtomicU64,
    cut_frames: AtomicU64,
    oversize_closes: AtomicU64,
    slow_requests: AtomicU64,
    slow_answered: AtomicU64,
    slow_closed: AtomicU64,
    floods: AtomicU64,
    flood_requests: AtomicU64,
    flood_answers: AtomicU64,
    unsolicited: AtomicU64,
    errors: AtomicU64,
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !cli.to.ip().is_loopback() {
        eprintln!("hostile: --to {}: only loopback targets", cli.to);
        return ExitCode::from(2);
    }
    let runtime = match isoswitch::runtime::build(1) {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("hostile: starting the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(counts) => {
            print_summary(&counts);
            if counts.errors.load(Ordering::Relaxed) == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("hostile: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> Result<Counts> {
    let spec = Arc::new(isoswitch::specs::resolve(std::path::Path::new(
        "iso87ascii",
    ))?);
    // Fails early, with exit status 2, when nothing listens.
    TcpStream::connect(cli.to)
        .await
        .with_context(|| format!("connecting to {}", cli.to))?;
    let counts = Arc::new(Counts::default());
    let end = Instant::now() + cli.duration;
    let target = Target {
        addr: cli.to,
        spec,
        counts: counts.clone(),
        end,
    };
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(idle(target.clone(), cli.idle));
    tasks.spawn(garbage(target.clone(), cli.seed));
    tasks.spawn(cut(target.clone()));
    for n in 0..4 {
        tasks.spawn(slowloris(target.clone(), n));
    }
    tasks.spawn(flood(
        target.clone(),
        cli.flood,
        cli.flood_every_s,
        cli.seed,
    ));
    tasks.spawn(unsolicited(target.clone()));
    while let Some(done) = tasks.join_next().await {
        if let Err(e) = done {
            bail!("a behaviour failed: {e}");
        }
    }
    drop(target);
    Arc::try_unwrap(counts)
        .map_err(|_| anyhow::anyhow!("counts still shared after every task ended"))
}

#[derive(Clone)]
struct Target {
    addr: SocketAddr,
    spec: Arc<Spec>,
    counts: Arc<Counts>,
    end: Instant,
}

impl Target {
    fn running(&self) -> bool {
        Instant::now() < self.end
    }

    async fn connect(&self) -> Option<TcpStream> {
        match TcpStream::connect(self.addr).await {
            Ok(stream) => Some(stream),
            Err(e) => {
                add(&self.counts.connect_refused, 1);
                eprintln!("hostile: connect: {e}");
                None
            }
        }
    }

    fn error(&self, what: &str) {
        let n = self.counts.errors.fetch_add(1, Ordering::Relaxed);
        if n < 20 {
            eprintln!("hostile: error: {what}");
        }
    }
}

/// Sleeps `period` or until the run ends, whichever is first.
async fn pause(target: &Target, period: Duration) {
    tokio::time::sleep_until((Instant::now() + period).min(target.end)).await;
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 2);
    out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Reads one frame; `None` when the switch closed the connection.
async fn read_frame(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut header = [0u8; 2];
    stream.read_exact(&mut header).await.ok()?;
    let mut payload = vec![0u8; usize::from(u16::from_be_bytes(header))];
    stream.read_exact(&mut payload).await.ok()?;
    Some(payload)
}

/// A valid authorization request from terminal `terminal` with STAN `stan`.
fn request(spec: &Spec, rng: &mut fastrand::Rng, terminal: &str, stan: u32) -> Vec<u8> {
    let mut body: Vec<u8> = b"5".to_vec();
    body.extend((0..14).map(|_| b'0' + rng.u8(0..10)));
    body.push(loadgen::scenario::luhn_check_digit(&body));
    let pan = String::from_utf8_lossy(&body).into_owned();
    let mut message = Message::new(Mti::from_static("0100"));
    let built = message
        .set(2, pan)
        .and_then(|m| m.set(3, "000000"))
        .and_then(|m| m.set(4, format!("{:012}", rng.u64(100..10_000))))
        .and_then(|m| m.set(7, "1207120000"))
        .and_then(|m| m.set(11, format!("{stan:06}")))
        .and_then(|m| m.set(14, "3012"))
        .and_then(|m| m.set(22, "051"))
        .and_then(|m| m.set(41, terminal))
        .and_then(|m| m.set(42, "HOSTILE00000001"))
        .and_then(|m| m.set(49, "840"))
        .is_ok();
    assert!(built, "the request's fields are in range");
    message
        .encode(spec)
        .expect("a request built from valid values encodes")
}

/// The STAN and terminal id of an answer, if it decodes.
fn identity(spec: &Spec, payload: Vec<u8>) -> Option<(u32, String)> {
    let message = Message::decode(spec, payload.into()).ok()?;
    let stan = message.get_str(11)?.parse().ok()?;
    Some((stan, message.get_str(41).unwrap_or_default().to_owned()))
}

async fn idle(target: Target, count: usize) {
    let mut held: Vec<TcpStream> = Vec::with_capacity(count);
    while target.running() {
        while held.len() < count && target.running() {
            match target.connect().await {
                Some(stream) => {
                    add(&target.counts.idle_opened, 1);
                    held.push(stream);
                }
                None => break,
            }
        }
        // A connection the switch closed reads as end of stream.
        let before = held.len();
        let mut probe = [0u8; 1];
        held.retain(|stream| !matches!(stream.try_read(&mut probe), Ok(0)));
        add(
            &target.counts.idle_closed_by_switch,
            (before - held.len()) as u64,
        );
        pause(&target, Duration::from_secs(1)).await;
    }
}

async fn garbage(target: Target, seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut stan = 0u32;
    while target.running() {
        let Some(mut stream) = target.connect().await else {
            pause(&target, Duration::from_secs(1)).await;
            continue;
        };
        let mut out = Vec::new();
        for _ in 0..5 {
            let len = rng.usize(1..200);
            let payload: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
            out.extend(frame(&payload));
        }
        add(&target.counts.garbage_frames, 5);
        // Then an echo test: the connection must still serve (or have been
        // closed). Garbage with a readable request MTI gets a refusal first;
        // garbage without one cannot be answered and gets nothing.
        stan = stan % 999_000 + 1;
        match echo_test(stan).encode(&target.spec) {
            Ok(echo) => out.extend(frame(&echo)),
            Err(_) => target.error("the echo test does not encode"),
        }
        if stream.write_all(&out).await.is_ok() {
            let mut refusals = 0;
            loop {
                match timeout(Duration::from_secs(10), read_frame(&mut stream)).await {
                    Ok(Some(answer)) => match Message::decode(&target.spec, answer.into()) {
                        Ok(m) if m.mti().as_str() == "0810" => {
                            add(&target.counts.garbage_echoes, 1);
                            break;
                        }
                        _ => refusals += 1,
                    },
                    Ok(None) => {
                        add(&target.counts.garbage_closes, 1);
                        break;
                    }
                    Err(_) => {
                        target.error("after garbage frames, an echo test got neither its answer nor a close in 10 s");
                        break;
                    }
                }
            }
            add(&target.counts.garbage_refusals, refusals);
        }
        zero_length(&target).await;
        pause(&target, Duration::from_millis(100)).await;
    }
}

/// An echo test (0800, network code 301) with STAN `stan`.
fn echo_test(stan: u32) -> Message {
    let mut echo = Message::new(Mti::from_static("0800"));
    let built = echo
        .set(7, "1207120000")
        .and_then(|m| m.set(11, format!("{stan:06}")))
        .and_then(|m| m.set(70, "301"))
        .is_ok();
    assert!(built, "the echo test's fields are in range");
    echo
}

/// A frame of length 0 on a connection of its own: refused or closed.
async fn zero_length(target: &Target) {
    let Some(mut stream) = target.connect().await else {
        return;
    };
    add(&target.counts.zero_frames, 1);
    if stream.write_all(&[0, 0]).await.is_err() {
        return;
    }
    match timeout(Duration::from_secs(10), read_frame(&mut stream)).await {
        Ok(Some(_)) => add(&target.counts.zero_refusals, 1),
        Ok(None) => add(&target.counts.zero_closes, 1),
        Err(_) => target.error("a frame of length 0 got neither a refusal nor a close in 10 s"),
    }
}

async fn cut(target: Target) {
    while target.running() {
        if let Some(mut stream) = target.connect().await {
            // 300 bytes announced, 100 sent, then closed.
            let mut out = 300u16.to_be_bytes().to_vec();
            out.extend([b'0'; 100]);
            let _ = stream.write_all(&out).await;
            add(&target.counts.cut_frames, 1);
        }
        if let Some(mut stream) = target.connect().await {
            // A length far beyond any frame limit: the switch must close.
            let _ = stream.write_all(&[0xFF, 0xFF, b'0', b'1']).await;
            match timeout(Duration::from_secs(10), read_frame(&mut stream)).await {
                Ok(None) => add(&target.counts.oversize_closes, 1),
                Ok(Some(_)) => target.error("an oversize length header was answered"),
                Err(_) => target.error("an oversize length header was not refused in 10 s"),
            }
        }
        pause(&target, Duration::from_millis(200)).await;
    }
}

async fn slowloris(target: Target, n: u32) {
    let mut rng = fastrand::Rng::with_seed(u64::from(n) + 100);
    let terminal = format!("HS{:06}", n + 1);
    let mut stan = 0;
    while target.running() {
        let Some(mut stream) = target.connect().await else {
            pause(&target, Duration::from_secs(1)).await;
            continue;
        };
        stan += 1;
        let bytes = frame(&request(&target.spec, &mut rng, &terminal, stan));
        add(&target.counts.slow_requests, 1);
        let mut sent_all = true;
        for byte in bytes {
            if !target.running() {
                return;
            }
            if stream.write_all(&[byte]).await.is_err() {
                sent_all = false;
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        match timeout(ANSWER_WAIT, read_frame(&mut stream)).await {
            Ok(Some(answer)) if sent_all => match identity(&target.spec, answer) {
                Some((s, t)) if s == stan && t == terminal => add(&target.counts.slow_answered, 1),
                _ => target.error("a slow request got someone else's answer"),
            },
            Ok(Some(_)) => target.error("an answer to a request that was never completed"),
            Ok(None) => add(&target.counts.slow_closed, 1),
            Err(_) => target.error("a completed slow request was neither answered nor closed"),
        }
    }
}

async fn flood(target: Target, size: usize, every_s: u64, seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed ^ 0xF100D);
    let mut round = 0u32;
    while target.running() {
        round += 1;
        let terminal = format!("HF{round:06}");
        let Some(mut stream) = target.connect().await else {
            pause(&target, Duration::from_secs(1)).await;
            continue;
        };
        let mut out = Vec::with_capacity(size * 120);
        for stan in 1..=size as u32 {
            out.extend(frame(&request(&target.spec, &mut rng, &terminal, stan)));
        }
        add(&target.counts.floods, 1);
        add(&target.counts.flood_requests, size as u64);
        let (mut reader, mut writer) = stream.split();
        // Written without reading; the switch must push back, not buffer all.
        let write = async {
            let _ = writer.write_all(&out).await;
        };
        let read = async {
            let mut answers: HashMap<u32, u32> = HashMap::with_capacity(size);
            let mut foreign = 0;
            while answers.len() < size {
                let mut header = [0u8; 2];
                let got = timeout(ANSWER_WAIT, async {
                    reader.read_exact(&mut header).await.ok()?;
                    let mut payload = vec![0u8; usize::from(u16::from_be_bytes(header))];
                    reader.read_exact(&mut payload).await.ok()?;
                    Some(payload)
                })
                .await;
                match got {
                    Ok(Some(payload)) => match identity(&target.spec, payload) {
                        Some((stan, t)) if t == terminal => *answers.entry(stan).or_default() += 1,
                        _ => foreign += 1,
                    },
                    _ => break,
                }
            }
            (answers, foreign)
        };
        let ((), (answers, foreign)) = tokio::join!(write, read);
        add(
            &target.counts.flood_answers,
            answers.values().map(|n| u64::from(*n)).sum(),
        );
        let missing = (1..=size as u32)
            .filter(|s| !answers.contains_key(s))
            .count();
        let repeated = answers.values().filter(|n| **n > 1).count();
        if missing > 0 || repeated > 0 || foreign > 0 {
            target.error(&format!(
                "flood {round}: {missing} requests unanswered, {repeated} answered twice, {foreign} foreign answers"
            ));
        }
        pause(&target, Duration::from_secs(every_s)).await;
    }
}

async fn unsolicited(target: Target) {
    let mut stan = 0u32;
    while target.running() {
        let Some(mut stream) = target.connect().await else {
            pause(&target, Duration::from_secs(1)).await;
            continue;
        };
        stan = stan % 999_000 + 1;
        let mut response = Message::new(Mti::from_static("0110"));
        let built = response
            .set(11, format!("{stan:06}"))
            .and_then(|m| m.set(39, "00"))
            .and_then(|m| m.set(41, "HU000001"))
            .is_ok();
        assert!(built, "the response's fields are in range");
        let echo = echo_test(stan + 1);
        let (Ok(response), Ok(echo)) = (response.encode(&target.spec), echo.encode(&target.spec))
        else {
            target.error("the unsolicited response or the echo test did not encode");
            return;
        };
        let mut out = frame(&response);
        out.extend(frame(&echo));
        add(&target.counts.unsolicited, 1);
        if stream.write_all(&out).await.is_ok() {
            match timeout(ANSWER_WAIT, read_frame(&mut stream)).await {
                Ok(Some(answer)) => match Message::decode(&target.spec, answer.into()) {
                    Ok(m) if m.mti().as_str() == "0810" => {}
                    _ => target.error("an unsolicited response was answered"),
                },
                _ => target.error("the echo test after an unsolicited response was not answered"),
            }
        }
        pause(&target, Duration::from_millis(100)).await;
    }
}

fn print_summary(c: &Counts) {
    let v = |a: &AtomicU64| a.load(Ordering::Relaxed);
    println!("hostile terminals:");
    println!(
        "  idle         {} opened, {} closed by the switch, {} connects refused",
        v(&c.idle_opened),
        v(&c.idle_closed_by_switch),
        v(&c.connect_refused)
    );
    println!(
        "  garbage      {} frames: {} refusals; then {} echo tests answered, {} connections closed",
        v(&c.garbage_frames),
        v(&c.garbage_refusals),
        v(&c.garbage_echoes),
        v(&c.garbage_closes)
    );
    println!(
        "  zero length  {} frames: {} refusals, {} connections closed",
        v(&c.zero_frames),
        v(&c.zero_refusals),
        v(&c.zero_closes)
    );
    println!(
        "  cut          {} frames cut by a close; {} oversize headers closed",
        v(&c.cut_frames),
        v(&c.oversize_closes)
    );
    println!(
        "  slowloris    {} requests at a byte a second: {} answered, {} closed by the switch",
        v(&c.slow_requests),
        v(&c.slow_answered),
        v(&c.slow_closed)
    );
    println!(
        "  flood        {} floods, {} requests, {} answers",
        v(&c.floods),
        v(&c.flood_requests),
        v(&c.flood_answers)
    );
    println!(
        "  unsolicited  {} responses sent, none answered unless counted as an error",
        v(&c.unsolicited)
    );
    println!("  errors       {}", v(&c.errors));
}
