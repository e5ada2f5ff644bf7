//! Drives the connections: connect (plain TCP or TLS), offer load closed-loop
//! (N × window, each response triggering the next request), open-loop (a fixed
//! arrival rate) or connect-per-request (`dial`: a new connection for every
//! request), match responses to requests by STAN, expire timeouts, and hand
//! the counts to `report`.
//!
//! Open-loop latency is measured from each request's *intended* send time
//! (t0 + i/R), never from when the sender got round to it, so a server that stalls
//! cannot hide its tail by slowing the sender down (no coordinated omission).

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::poll_fn;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use bytes::Bytes;
use futures_util::{FutureExt, Sink, StreamExt};
use isoswitch::frame::{Frame, FrameCodec, FrameConfig, FrameError, Tpdu};
use isoswitch::iso8583::fields::mask_pan;
use isoswitch::iso8583::{Message, Mti, ResponseCode, Spec, Stan};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;

mod dial;

use crate::pacer::Pacer;
use crate::report::{self, micros_between, ModeReport, Report, Tally};
use crate::scenario::{Scenario, WireTime};

/// Highest STAN; the counter wraps to 1 after it.
const MAX_STAN: u32 = 999_999;
/// Outstanding requests one connection may have; STANs must stay unique among them.
pub const MAX_OUTSTANDING: usize = 100_000;
/// Mismatches described on stderr before the rest are only counted.
const MISMATCH_LINES: u32 = 10;
/// Responses handled in one go before the other duties (timers, writes) get a turn.
const READ_BATCH: usize = 256;

/// How load is offered.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// Each connection keeps `window` requests outstanding.
    Closed { window: usize },
    /// `rate` requests per second across all connections, request i intended at
    /// t0 + i/rate on connection i mod N; at most `max_outstanding` per connection.
    Open { rate: f64, max_outstanding: usize },
    /// Dial-up and GPRS terminals: each of the N workers connects (and shakes
    /// hands when TLS is on), sends one request, reads its answer and closes,
    /// then starts over. Latency runs from the start of the connect.
    ConnectPerRequest,
}

/// TLS towards the switch.
#[derive(Clone)]
pub struct TlsTarget {
    pub connector: tokio_rustls::TlsConnector,
    pub server_name: rustls::pki_types::ServerName<'static>,
}

/// Everything a run needs besides the scenario.
#[derive(Clone)]
pub struct RunConfig {
    pub addr: SocketAddr,
    /// How `--to` was written, for the report.
    pub target: String,
    pub tls: Option<TlsTarget>,
    pub spec: Arc<Spec>,
    pub frame: FrameConfig,
    pub tpdu: Option<Tpdu>,
    pub connections: usize,
    pub mode: Mode,
    /// Total requests across all connections.
    pub requests: Option<u64>,
    /// How long to send after the warmup.
    pub duration: Option<Duration>,
    pub warmup: Duration,
    /// A request without a response this long after it was sent is a timeout.
    pub timeout: Duration,
    /// Print a progress line to stderr each second.
    pub progress: bool,
    /// Check each response code against the scenario; off for a floor host
    /// that answers without field 39 (MTI and STAN are still checked).
    pub check_codes: bool,
}

impl RunConfig {
    fn check(&self) -> Result<()> {
        if self.connections == 0 {
            bail!("--connections must be at least 1");
        }
        if self.requests.is_none() && self.duration.is_none() {
            bail!("give --requests, --duration or both");
        }
        match self.mode {
            Mode::Closed { window } if window == 0 || window > MAX_OUTSTANDING => {
                bail!("--window must be 1 to {MAX_OUTSTANDING}")
            }
            Mode::Open { rate, .. } if !(rate.is_finite() && rate > 0.0) => {
                bail!("--rate must be a positive number of requests per second")
            }
            Mode::Open {
                max_outstanding, ..
            } if max_outstanding == 0 || max_outstanding > MAX_OUTSTANDING => {
                bail!("--max-outstanding must be 1 to {MAX_OUTSTANDING}")
            }
            _ => Ok(()),
        }
    }

    fn mode_report(&self) -> ModeReport {
        match self.mode {
            Mode::Closed { window } => ModeReport::ClosedLoop {
                connections: self.connections,
                window,
            },
            Mode::Open {
                rate,
                max_outstanding,
            } => ModeReport::OpenLoop {
                connections: self.connections,
                rate_per_s: rate,
                max_outstanding_per_connection: max_outstanding,
            },
            Mode::ConnectPerRequest => ModeReport::ConnectPerRequest {
                concurrency: self.connections,
            },
        }
    }
}

/// Builds one request with the scenario and encodes it, to find out before any
/// load is sent whether the scenario's fields fit the spec.
pub fn check_scenario_fits_spec(scenario: &Scenario, spec: &Spec) -> Result<()> {
    let mut rng = fastrand::Rng::with_seed(scenario.seed);
    let planned = scenario
        .next_request(&mut rng, Stan(1), "LG000001", &WireTime::now())
        .context("building a sample request")?;
    planned.message.encode(spec).with_context(|| {
        format!(
            "scenario {}: a sample request does not encode with this spec",
            scenario.name
        )
    })?;
    Ok(())
}

/// Runs the load and returns the report. Connects every connection first, so the
/// schedule starts only when all are up; a failed connect ends the run with an
/// error. Connect-per-request connects inside the run instead, and counts a
/// failed connect as an error of its transaction. Cancelling `stop` ends
/// sending early; outstanding requests still get their answer or their timeout.
pub async fn run(
    config: RunConfig,
    scenario: Arc<Scenario>,
    stop: CancellationToken,
) -> Result<Report> {
    config.check()?;
    check_scenario_fits_spec(&scenario, &config.spec)?;
    let dialling = config.mode == Mode::ConnectPerRequest;
    let mut streams = Vec::with_capacity(config.connections);
    if !dialling {
        for index in 0..config.connections {
            let stream = connect(&config)
                .await
                .with_context(|| format!("connection {} to {}", index + 1, config.target))?;
            streams.push(stream);
        }
    }

    let start = Instant::now();
    let warmup_end = start + config.warmup;
    let send_until = config.duration.map(|d| warmup_end + d);
    let mismatch_lines = Arc::new(AtomicU32::new(0));
    let mut tallies = Vec::with_capacity(config.connections);
    let mut tasks = tokio::task::JoinSet::new();
    let mut streams = streams.into_iter();
    for index in 0..config.connections {
        let tally = Arc::new(Mutex::new(Tally::default()));
        tallies.push(tally.clone());
        let connection = Connection::new(
            &config,
            scenario.clone(),
            index,
            start,
            warmup_end,
            send_until,
            tally,
            mismatch_lines.clone(),
        );
        let stop = stop.clone();
        if dialling {
            let dialer = dial::Dialer::new(&config);
            tasks.spawn(async move { connection.dial(dialer, stop).await });
        } else if let Some(stream) = streams.next() {
            tasks.spawn(async move { connection.run(stream, stop).await });
        }
    }

    let mut ticker = tokio::time::interval_at(
        tokio::time::Instant::from_std(start + Duration::from_secs(1)),
        Duration::from_secs(1),
    );
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_tick = start;
    loop {
        tokio::select! {
            joined = tasks.join_next() => match joined {
                None => break,
                Some(Ok(())) => {}
                Some(Err(e)) => bail!("a connection task failed: {e}"),
            },
            _ = ticker.tick() => {
                let now = Instant::now();
                let line = progress(&tallies, start, now, last_tick, warmup_end);
                last_tick = now;
                if config.progress {
                    eprintln!("{line}");
                }
            }
        }
    }
    let elapsed = start.elapsed();
    let mut total = Tally::default();
    for tally in &tallies {
        total.merge(&lock(tally));
    }
    Ok(Report::new(
        &scenario.name,
        &config.target,
        config.mode_report(),
        &total,
        elapsed,
        config.warmup,
        warmup_end,
    ))
}

/// Collects the last second from every connection and formats the progress line.
fn progress(
    tallies: &[Arc<Mutex<Tally>>],
    start: Instant,
    now: Instant,
    last: Instant,
    warmup_end: Instant,
) -> String {
    let mut interval = report::latency_histogram();
    let (mut sent, mut errors) = (0, 0);
    for tally in tallies {
        let mut t = lock(tally);
        let _ = interval.add(&t.interval);
        t.interval.reset();
        sent += t.sent;
        errors += t.errors();
    }
    let seconds = now.saturating_duration_since(last).as_secs_f64().max(1e-3);
    report::progress_line(
        now.saturating_duration_since(start),
        interval.len() as f64 / seconds,
        &interval,
        sent,
        errors,
        // The line covers [last, now]: warmup if that second began before the warmup ended.
        last < warmup_end,
    )
}

/// A tally stays usable even if a task panicked while holding it: its counts are
/// plain numbers.
fn lock(tally: &Mutex<Tally>) -> MutexGuard<'_, Tally> {
    tally.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A byte stream to the switch, TCP or TLS.
trait ByteStream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> ByteStream for T {}

async fn connect(config: &RunConfig) -> Result<Box<dyn ByteStream>> {
    Ok(dial::Dialer::new(config).connect().await?)
}

/// One request waiting for its response.
#[derive(Debug, Clone, Copy)]
struct Pending {
    /// Latency is measured from here.
    intended: Instant,
    /// Tells this request from an earlier one that had the same STAN.
    seq: u64,
    card: u32,
    expect: u16,
    mti: Mti,
    /// Field 4 as sent, to check the answer's echo.
    amount: u64,
}

/// STAN allocation and the table of outstanding requests with their deadlines.
/// STANs are unique among the connection's outstanding requests.
#[derive(Debug, Default)]
struct Outstanding {
    next_stan: u32,
    seq: u64,
    pending: HashMap<u32, Pending>,
    /// (deadline, STAN, seq) in send order; entries already answered are skipped
    /// when they reach the front, so no search is needed on each response.
    deadlines: VecDeque<(Instant, u32, u64)>,
    /// STANs that timed out, so a late response is told from an unknown one.
    timed_out: HashSet<u32>,
}

impl Outstanding {
    fn new() -> Outstanding {
        Outstanding {
            next_stan: 1,
            ..Outstanding::default()
        }
    }

    fn len(&self) -> usize {
        self.pending.len()
    }

    /// The next STAN not outstanding. Callers keep fewer than 999 999 requests
    /// outstanding, so one is always free.
    fn allocate_stan(&mut self) -> u32 {
        loop {
            let stan = self.next_stan;
            self.next_stan = if stan >= MAX_STAN { 1 } else { stan + 1 };
            if !self.pending.contains_key(&stan) {
                self.timed_out.remove(&stan);
                return stan;
            }
        }
    }

    /// Records a sent request; `deadline` is when it times out.
    fn insert(&mut self, stan: u32, mut pending: Pending, deadline: Instant) {
        self.seq += 1;
        pending.seq = self.seq;
        self.pending.insert(stan, pending);
        self.deadlines.push_back((deadline, stan, self.seq));
    }

    /// The request a response with this STAN answers.
    fn take(&mut self, stan: u32) -> Option<Pending> {
        self.pending.remove(&stan)
    }

    /// Whether this STAN timed out earlier (and was not reused since).
    fn take_timed_out(&mut self, stan: u32) -> bool {
        self.timed_out.remove(&stan)
    }

    fn is_live(&self, stan: u32, seq: u64) -> bool {
        self.pending.get(&stan).is_some_and(|p| p.seq == seq)
    }

    /// The earliest deadline of a request still outstanding.
    fn next_deadline(&mut self) -> Option<Instant> {
        while let Some(&(deadline, stan, seq)) = self.deadlines.front() {
            if self.is_live(stan, seq) {
                return Some(deadline);
            }
            self.deadlines.pop_front();
        }
        None
    }

    /// Times out every outstanding request; returns how many.
    fn expire_all(&mut self) -> u64 {
        let stans: Vec<u32> = self.pending.keys().copied().collect();
        self.timed_out.extend(stans.iter().copied());
        self.forget_all()
    }

    /// Drops every outstanding request without a trace; returns how many.
    fn forget_all(&mut self) -> u64 {
        let n = self.pending.len() as u64;
        self.pending.clear();
        self.deadlines.clear();
        n
    }

    /// Removes and counts the requests whose deadline is at or before `now`.
    fn expire(&mut self, now: Instant) -> u64 {
        let mut expired = 0;
        while let Some(deadline) = self.next_deadline() {
            if deadline > now {
                break;
            }
            if let Some((_, stan, _)) = self.deadlines.pop_front() {
                self.pending.remove(&stan);
                self.timed_out.insert(stan);
                expired += 1;
            }
        }
        expired
    }
}

/// One connection's state; its task owns the socket.
struct Connection {
    index: usize,
    terminal_id: String,
    scenario: Arc<Scenario>,
    spec: Arc<Spec>,
    frame: FrameConfig,
    tpdu: Option<Tpdu>,
    mode: Mode,
    connections: usize,
    rng: fastrand::Rng,
    time: WireTime,
    outstanding: Outstanding,
    /// Requests this connection may still send (its share of --requests).
    quota: Option<u64>,
    start: Instant,
    warmup_end: Instant,
    send_until: Option<Instant>,
    timeout: Duration,
    /// Open loop: the position of this connection's next request in the schedule.
    schedule_index: u64,
    stopped: bool,
    queue: VecDeque<Frame>,
    unflushed: bool,
    encoded: Vec<u8>,
    tally: Arc<Mutex<Tally>>,
    mismatch_lines: Arc<AtomicU32>,
    check_codes: bool,
}

impl Connection {
    #[allow(clippy::too_many_arguments)]
    fn new(
        config: &RunConfig,
        scenario: Arc<Scenario>,
        index: usize,
        start: Instant,
        warmup_end: Instant,
        send_until: Option<Instant>,
        tally: Arc<Mutex<Tally>>,
        mismatch_lines: Arc<AtomicU32>,
    ) -> Connection {
        let n = config.connections as u64;
        let quota = config
            .requests
            .map(|r| r / n + u64::from((index as u64) < r % n));
        // Each connection draws its own sequence, so the traffic does not depend on
        // how the connections interleave.
        let rng = fastrand::Rng::with_seed(
            scenario
                .seed
                .wrapping_add(index as u64 + 1)
                .wrapping_mul(0x9E37_79B9_7F4A_7C15),
        );
        Connection {
            index,
            terminal_id: format!("LG{:06}", index + 1),
            scenario,
            spec: config.spec.clone(),
            frame: config.frame,
            tpdu: config.tpdu,
            mode: config.mode,
            connections: config.connections,
            rng,
            time: WireTime::now(),
            outstanding: Outstanding::new(),
            quota,
            start,
            warmup_end,
            send_until,
            timeout: config.timeout,
            schedule_index: 0,
            stopped: false,
            queue: VecDeque::new(),
            unflushed: false,
            encoded: Vec::with_capacity(256),
            tally,
            mismatch_lines,
            check_codes: config.check_codes,
        }
    }

    async fn run(mut self, stream: Box<dyn ByteStream>, stop: CancellationToken) {
        lock(&self.tally).connections_opened += 1;
        let (read, write) = tokio::io::split(stream);
        let mut reader = FramedRead::new(read, FrameCodec::new(self.frame));
        let mut writer = FramedWrite::new(write, FrameCodec::new(self.frame));
        let deadline_timer = tokio::time::sleep_until(self.start.into());
        tokio::pin!(deadline_timer);
        // The schedule needs sub-millisecond timing; the 10 s deadlines do not.
        let mut pacer = match Pacer::new() {
            Ok(pacer) => pacer,
            Err(e) => {
                self.fail(&format!("creating the open-loop timer: {e}"));
                return;
            }
        };
        // Timers are re-armed only when their instant changes: resetting a tokio
        // timer on every loop turn costs more than the rest of the turn.
        let mut armed_deadline: Option<Instant> = None;
        let mut armed_intended: Option<Instant> = None;

        if let Mode::Closed { window } = self.mode {
            for _ in 0..window {
                if !self.may_send(Instant::now()) {
                    break;
                }
                if let Err(e) = self.enqueue(Instant::now()) {
                    self.fail(&format!("{e:#}"));
                    return;
                }
            }
        }

        loop {
            let next_intended = self.next_intended();
            if self.is_finished(next_intended) {
                break;
            }
            if next_intended != armed_intended {
                if let Some(at) = next_intended {
                    if let Err(e) = pacer.arm(at) {
                        self.fail(&format!("arming the open-loop timer: {e}"));
                        return;
                    }
                }
                armed_intended = next_intended;
            }
            let next_deadline = self.outstanding.next_deadline();
            if next_deadline != armed_deadline {
                if let Some(at) = next_deadline {
                    deadline_timer.as_mut().reset(at.into());
                }
                armed_deadline = next_deadline;
            }
            let writing = !self.queue.is_empty() || self.unflushed;

            tokio::select! {
                biased;
                _ = stop.cancelled(), if !self.stopped => self.stopped = true,
                frame = reader.next() => match frame {
                    Some(Ok(frame)) => {
                        let mut result = self.on_frame(frame);
                        // Take what else has arrived before writing, so the
                        // requests those responses trigger go out in one flush.
                        let mut handled = 1;
                        while result.is_ok() && handled < READ_BATCH {
                            match reader.next().now_or_never() {
                                Some(Some(Ok(frame))) => result = self.on_frame(frame),
                                Some(Some(Err(e))) => {
                                    self.fail(&format!("reading: {e}"));
                                    return;
                                }
                                Some(None) | None => break,
                            }
                            handled += 1;
                        }
                        if let Err(e) = result {
                            self.fail(&format!("{e:#}"));
                            return;
                        }
                    }
                    Some(Err(e)) => {
                        self.fail(&format!("reading: {e}"));
                        return;
                    }
                    None => {
                        self.fail("the switch closed the connection");
                        return;
                    }
                },
                _ = &mut deadline_timer, if next_deadline.is_some() => {
                    armed_deadline = None;
                    if let Err(e) = self.on_deadline(Instant::now()) {
                        self.fail(&format!("{e:#}"));
                        return;
                    }
                }
                expired = pacer.expired(), if next_intended.is_some() => {
                    armed_intended = None;
                    if let Err(e) = expired {
                        self.fail(&format!("open-loop timer: {e}"));
                        return;
                    }
                    if let Err(e) = self.send_due(Instant::now()) {
                        self.fail(&format!("{e:#}"));
                        return;
                    }
                }
                written = poll_fn(|cx| drive_writer(cx, &mut writer, &mut self.queue, &mut self.unflushed)), if writing => {
                    if let Err(e) = written {
                        self.fail(&format!("writing: {e}"));
                        return;
                    }
                }
            }
        }
    }

    /// Whether another request may be sent at `now`: not stopped, quota left and
    /// the duration not over.
    fn may_send(&self, now: Instant) -> bool {
        !self.stopped && self.quota != Some(0) && self.send_until.map_or(true, |end| now < end)
    }

    /// Open loop: when this connection's next request is due; None when it will
    /// send no more (or in closed loop).
    fn next_intended(&self) -> Option<Instant> {
        let Mode::Open { rate, .. } = self.mode else {
            return None;
        };
        if self.stopped || self.quota == Some(0) {
            return None;
        }
        let position = self.index as u64 + self.schedule_index * self.connections as u64;
        let at = self.start + Duration::from_secs_f64(position as f64 / rate);
        self.send_until.map_or(true, |end| at < end).then_some(at)
    }

    /// Nothing left to send (closed loop sends only from responses and timeouts,
    /// so an empty table means the end), nothing outstanding, nothing unwritten.
    fn is_finished(&self, next_intended: Option<Instant>) -> bool {
        next_intended.is_none()
            && self.outstanding.len() == 0
            && self.queue.is_empty()
            && !self.unflushed
    }

    /// Open loop: sends every request whose intended time has come. A sender that
    /// fell behind sends at once, but each request keeps its intended time.
    fn send_due(&mut self, now: Instant) -> Result<()> {
        let Mode::Open {
            max_outstanding, ..
        } = self.mode
        else {
            return Ok(());
        };
        while let Some(intended) = self.next_intended() {
            if intended > now {
                break;
            }
            self.schedule_index += 1;
            if self.outstanding.len() >= max_outstanding {
                // The request was due and could not go: an error, not a silent skip.
                self.consume_quota();
                lock(&self.tally).unsent += 1;
                continue;
            }
            self.enqueue(intended)?;
        }
        Ok(())
    }

    fn consume_quota(&mut self) {
        if let Some(q) = self.quota.as_mut() {
            *q = q.saturating_sub(1);
        }
    }

    /// Builds, encodes and queues one request intended at `intended`.
    fn enqueue(&mut self, intended: Instant) -> Result<()> {
        self.time.refresh();
        let stan = self.outstanding.allocate_stan();
        let planned = self
            .scenario
            .next_request(&mut self.rng, Stan(stan), &self.terminal_id, &self.time)
            .context("building a request")?;
        self.encoded.clear();
        planned
            .message
            .encode_into(&self.spec, &mut self.encoded)
            .context("encoding a request")?;
        let payload = Bytes::copy_from_slice(&self.encoded);
        self.queue.push_back(Frame {
            tpdu: self.tpdu,
            payload,
        });
        let pending = Pending {
            intended,
            seq: 0,
            card: planned.card,
            expect: planned.expect,
            mti: planned.message.mti(),
            amount: planned.amount,
        };
        self.outstanding
            .insert(stan, pending, Instant::now() + self.timeout);
        self.consume_quota();
        lock(&self.tally).sent += 1;
        Ok(())
    }

    /// Closed loop: keeps the window full after a response or a timeout.
    fn refill(&mut self) -> Result<()> {
        if let Mode::Closed { window } = self.mode {
            while self.outstanding.len() < window && self.may_send(Instant::now()) {
                self.enqueue(Instant::now())?;
            }
        }
        Ok(())
    }

    fn on_deadline(&mut self, now: Instant) -> Result<()> {
        let expired = self.outstanding.expire(now);
        if expired > 0 {
            lock(&self.tally).timeouts += expired;
        }
        self.refill()
    }

    /// Matches one response to its request by STAN and checks its code.
    fn on_frame(&mut self, frame: Frame) -> Result<()> {
        let now = Instant::now();
        let response = match Message::decode(&self.spec, frame.payload) {
            Ok(m) => m,
            Err(e) => {
                lock(&self.tally).decode_errors += 1;
                self.say(&format!("undecodable response: {e}"));
                return Ok(());
            }
        };
        let Some(stan) = response.stan().ok().map(|s| s.0) else {
            lock(&self.tally).unknown_stan += 1;
            self.say("response without a STAN (field 11)");
            return Ok(());
        };
        let Some(pending) = self.outstanding.take(stan) else {
            let late = self.outstanding.take_timed_out(stan);
            let mut tally = lock(&self.tally);
            if late {
                tally.late += 1;
            } else {
                tally.unknown_stan += 1;
                drop(tally);
                self.say(&format!(
                    "response with STAN {stan:06} matches no outstanding request"
                ));
            }
            return Ok(());
        };
        if let Some(field) = self.foreign_echo(&response, &pending) {
            lock(&self.tally).foreign += 1;
            self.say_limited(&format!(
                "answer for STAN {stan:06} echoes another request's field {field}"
            ));
            return self.refill();
        }
        let code = response
            .get(39)
            .and_then(|v| <[u8; 2]>::try_from(v).ok())
            .and_then(ResponseCode::new);
        let expected_mti = pending.mti.response();
        let mti_ok = expected_mti == Some(response.mti());
        let expect = self.scenario.expectation(pending.expect);
        let code_ok = !self.check_codes || expect.is_some_and(|e| e.accepts(code));
        let latency = micros_between(pending.intended, now);
        {
            let mut tally = lock(&self.tally);
            tally.responses += 1;
            match code {
                Some(c) => *tally.codes.entry(c).or_default() += 1,
                None => tally.no_code += 1,
            }
            if !(mti_ok && code_ok) {
                tally.mismatches += 1;
            }
            tally.interval.saturating_record(latency);
            if pending.intended >= self.warmup_end {
                tally.measured += 1;
                tally.latency.saturating_record(latency);
                tally.last_measured = Some(now);
            }
        }
        if !(mti_ok && code_ok) {
            let pan = self
                .scenario
                .card(pending.card)
                .map(|c| mask_pan(&c.pan))
                .unwrap_or_default();
            let wanted = expect.map(|e| e.codes_text()).unwrap_or_default();
            let got = code.map_or_else(|| "no code".to_string(), |c| c.as_str().to_string());
            let line = if mti_ok {
                format!(
                    "mismatch: {} card {pan} STAN {stan:06}: expected {wanted}, got {got}",
                    pending.mti
                )
            } else {
                format!(
                    "mismatch: {} card {pan} STAN {stan:06}: expected response MTI {}, got {} ({got})",
                    pending.mti,
                    expected_mti.map(|m| m.to_string()).unwrap_or_default(),
                    response.mti()
                )
            };
            self.say_limited(&line);
        }
        self.refill()
    }

    /// The first identifying field the answer echoes differently from the
    /// request it was matched to by STAN: terminal id (41), card (2) or amount
    /// (4). Absent fields are not checked; a refusal may lack 2 and 4.
    fn foreign_echo(&self, response: &Message, pending: &Pending) -> Option<u8> {
        if response
            .get(41)
            .is_some_and(|id| id != self.terminal_id.as_bytes())
        {
            return Some(41);
        }
        if let (Some(pan), Some(card)) = (response.get(2), self.scenario.card(pending.card)) {
            if pan != card.pan.as_bytes() {
                return Some(2);
            }
        }
        if let Some(amount) = response.get_str(4) {
            if amount.parse::<u64>().ok() != Some(pending.amount) {
                return Some(4);
            }
        }
        None
    }

    /// Ends the connection after a failure: counts it and what was outstanding.
    fn fail(&mut self, why: &str) {
        let lost = self.outstanding.len() as u64;
        {
            let mut tally = lock(&self.tally);
            tally.count_connection_error(why);
            tally.lost += lost;
        }
        self.say(&format!("{why}; {lost} outstanding requests lost"));
    }

    fn say(&self, what: &str) {
        eprintln!("loadgen: connection {}: {what}", self.index + 1);
    }

    /// Mismatches can come by the thousand: describe the first few only.
    fn say_limited(&self, what: &str) {
        let n = self.mismatch_lines.fetch_add(1, Ordering::Relaxed);
        if n < MISMATCH_LINES {
            self.say(what);
        } else if n == MISMATCH_LINES {
            eprintln!("loadgen: further mismatches are counted, not shown");
        }
    }
}

/// Writes every queued frame, then flushes once: one write per batch instead of
/// per request. Pending while the socket is full, which leaves the task free to
/// keep reading responses.
fn drive_writer<W: AsyncWrite + Unpin>(
    cx: &mut Context<'_>,
    writer: &mut FramedWrite<W, FrameCodec>,
    queue: &mut VecDeque<Frame>,
    unflushed: &mut bool,
) -> Poll<Result<(), FrameError>> {
    while !queue.is_empty() {
        ready!(Sink::<Frame>::poll_ready(Pin::new(&mut *writer), cx))?;
        if let Some(frame) = queue.pop_front() {
            Sink::<Frame>::start_send(Pin::new(&mut *writer), frame)?;
            *unflushed = true;
        }
    }
    if *unflushed {
        ready!(Sink::<Frame>::poll_flush(Pin::new(&mut *writer), cx))?;
        *unflushed = false;
    }
    Poll::Ready(Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(at: Instant) -> Pending {
        Pending {
            intended: at,
            seq: 0,
            card: 0,
            expect: 0,
            mti: Mti::from_static("0100"),
            amount: 0,
        }
    }

    #[test]
    fn stans_skip_those_still_outstanding_and_wrap_after_999999() {
        let now = Instant::now();
        let mut o = Outstanding::new();
        let first = o.allocate_stan();
        assert_eq!(first, 1);
        o.insert(first, pending(now), now);
        o.next_stan = 1;
        assert_eq!(o.allocate_stan(), 2, "1 is outstanding");
        o.next_stan = MAX_STAN;
        assert_eq!(o.allocate_stan(), MAX_STAN);
        assert_eq!(o.allocate_stan(), 2, "wrapped past the outstanding 1");
    }

    #[test]
    fn deadlines_expire_only_unanswered_requests() {
        let t = Instant::now();
        let mut o = Outstanding::new();
        for i in 0..3u32 {
            let stan = o.allocate_stan();
            o.insert(
                stan,
                pending(t),
                t + Duration::from_millis(u64::from(i) * 10),
            );
        }
        assert!(o.take(1).is_some(), "STAN 1 answered");
        assert_eq!(o.next_deadline(), Some(t + Duration::from_millis(10)));
        assert_eq!(
            o.expire(t + Duration::from_millis(15)),
            1,
            "only STAN 2 was due"
        );
        assert!(o.take_timed_out(2), "a late answer to 2 is recognised");
        assert!(!o.take_timed_out(2), "only once");
        assert_eq!(o.len(), 1);
        assert_eq!(o.expire(t + Duration::from_millis(20)), 1);
        assert_eq!(o.next_deadline(), None);
    }

    #[test]
    fn a_scenario_field_the_spec_refuses_is_caught_before_sending() {
        let text = r#"
[cards]
count = 10
bins = [{ prefix = "4", weight = 1 }]
expect = ["00"]
[amount]
min = 1
max = 2
[fields]
49 = "TOO-LONG"
"#;
        let scenario = Scenario::from_toml_str(text, "t", "t", time::OffsetDateTime::now_utc())
            .expect("valid scenario");
        let spec = isoswitch::specs::builtin("iso87ascii")
            .expect("shipped")
            .expect("compiles");
        let e = check_scenario_fits_spec(&scenario, &spec).expect_err("field 49 is 3 long");
        let text = format!("{e:#}");
        assert!(text.contains("49"), "{text}");
    }

    #[test]
    fn a_reused_stan_is_not_expired_by_the_old_deadline() {
        let t = Instant::now();
        let mut o = Outstanding::new();
        o.insert(7, pending(t), t);
        assert!(o.take(7).is_some());
        o.insert(7, pending(t), t + Duration::from_secs(60));
        assert_eq!(o.expire(t + Duration::from_secs(1)), 0);
        assert_eq!(o.len(), 1);
    }
}
