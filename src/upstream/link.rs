//! One issuer connection: a task owning the transport (TCP, TLS or the in-process
//! simulator) and its table of outstanding requests, so matching needs no lock; it
//! writes its own STANs, signs on, echoes, times out (reversing) and reconnects.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::{sleep_until, Instant};
use tokio_rustls::TlsConnector;
use tokio_util::codec::{Decoder, Encoder};
use tokio_util::sync::CancellationToken;

use super::saf::{reversal_for, SafQueue};
use super::UpstreamError;
use crate::frame::{Frame, FrameCodec, FrameConfig, FrameError};
use crate::iso8583::fields::mask_pan;
use crate::iso8583::{CodecError, Message, Mti, Spec, Stan};
use crate::simulator::{Decision, Simulator};

/// Highest STAN; the counter cycles 000001..=999999.
const STAN_MAX: u32 = 999_999;
/// How long a timed-out request is remembered so its response is recognised as late.
const LATE_RETENTION: Duration = Duration::from_secs(60);
/// At most this many timed-out requests are remembered; the oldest go first.
const LATE_CAPACITY: usize = 10_000;
/// Requests waiting for a link task; a full queue makes callers wait (up to their deadline).
const COMMAND_QUEUE: usize = 1024;
/// Requests written before one flush, so a flood cannot starve reading.
const MAX_BATCH: usize = 256;
const RECONNECT_FIRST: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(10);
/// A session that lasted this long was healthy: the next reconnect starts
/// the backoff afresh. One that ended sooner continues it.
const STABLE_SESSION: Duration = Duration::from_secs(5);

const NETWORK_REQUEST: Mti = Mti::from_static("0800");
const NETWORK_RESPONSE: Mti = Mti::from_static("0810");
const SIGN_ON: &str = "001";
const ECHO: &str = "301";
const APPROVED: &[u8] = b"00";

/// An issuer that answers in process, without a socket: the simulator, or a
/// scripted stand-in in tests. The link treats it as just another transport.
pub trait InProcessIssuer: Send + Sync + 'static {
    fn decide(&self, request: &Message) -> Decision;
}

impl InProcessIssuer for Simulator {
    fn decide(&self, request: &Message) -> Decision {
        Simulator::decide(self, request)
    }
}

/// What every link of one issuer shares.
pub(crate) struct LinkSettings {
    pub spec: Arc<Spec>,
    pub frame: FrameConfig,
    pub timeout: Duration,
    /// Idle time before an echo; None turns echoes off.
    pub echo_interval: Option<Duration>,
    pub sign_on: bool,
}

/// Per-issuer context handed to each link.
#[derive(Clone)]
pub(crate) struct LinkContext {
    pub settings: Arc<LinkSettings>,
    pub telemetry: Arc<Telemetry>,
    pub saf: SafQueue,
    pub shutdown: CancellationToken,
}

/// How a link reaches its issuer.
pub(crate) enum Connector {
    Tcp {
        address: SocketAddr,
        tls: Option<(TlsConnector, ServerName<'static>)>,
    },
    InProcess(Arc<dyn InProcessIssuer>),
}

/// The caller's side of a link: a queue into its task and its up/signed-on flags.
pub(crate) struct LinkHandle {
    commands: mpsc::Sender<Command>,
    flags: Arc<LinkFlags>,
}

#[derive(Default)]
struct LinkFlags {
    up: AtomicBool,
    signed_on: AtomicBool,
}

type Reply = oneshot::Sender<Result<(Message, Stan), UpstreamError>>;

struct Command {
    request: Message,
    deadline: Instant,
    reversible: bool,
    reply: Reply,
}

impl LinkHandle {
    /// Whether the link can take requests (connected, and signed on if required).
    pub(crate) fn is_up(&self) -> bool {
        self.flags.up.load(Ordering::Acquire)
    }

    pub(crate) fn is_signed_on(&self) -> bool {
        self.flags.signed_on.load(Ordering::Acquire)
    }

    /// Sends `request` and waits for its response, which carries the caller's field
    /// 11 again; also returns the STAN the issuer saw. `reversible` requests are
    /// reversed through store-and-forward when they time out or the link drops.
    pub(crate) async fn send(
        &self,
        request: Message,
        deadline: Instant,
        reversible: bool,
    ) -> Result<(Message, Stan), UpstreamError> {
        let (reply, answer) = oneshot::channel();
        let command = Command {
            request,
            deadline,
            reversible,
            reply,
        };
        match tokio::time::timeout_at(deadline, self.commands.send(command)).await {
            Ok(Ok(())) => {}
            // Queue full until the deadline, or the link task has stopped: not sent.
            Ok(Err(_)) | Err(_) => return Err(UpstreamError::Unavailable),
        }
        // The task answers every command it takes; a dropped reply means it stopped first.
        answer.await.unwrap_or(Err(UpstreamError::Unavailable))
    }
}

/// Starts the task for one link. `endpoint` labels logs and the link-up gauge;
/// `first_stan` spreads the STANs of an issuer's links apart.
pub(crate) fn spawn(
    connector: Connector,
    endpoint: String,
    first_stan: u32,
    context: LinkContext,
) -> LinkHandle {
    let (commands, intake) = mpsc::channel(COMMAND_QUEUE);
    let flags = Arc::new(LinkFlags::default());
    let link_up = gauge!(
        "isoswitch_issuer_link_up",
        "issuer" => context.telemetry.issuer.to_string(),
        "endpoint" => endpoint.clone()
    );
    let link = Link {
        endpoint,
        connector,
        context,
        flags: flags.clone(),
        link_up,
        stans: StanCounter::new(first_stan),
        late: LateTable::default(),
        commands_open: true,
    };
    tokio::spawn(link.run(intake));
    LinkHandle { commands, flags }
}

/// State that outlives one connection.
struct Link {
    endpoint: String,
    connector: Connector,
    context: LinkContext,
    flags: Arc<LinkFlags>,
    link_up: Gauge,
    stans: StanCounter,
    late: LateTable,
    commands_open: bool,
}

/// How a connection ended.
enum SessionEnd {
    Lost(Closed),
    Shutdown,
}

/// Why a connection was closed.
#[derive(Debug, thiserror::Error)]
enum Closed {
    #[error("the issuer closed the connection")]
    ByIssuer,
    #[error("the issuer stopped reading: a write did not finish within the timeout")]
    WriteStalled,
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("framing error: {0}")]
    Framing(FrameError),
    #[error("sign-on refused with response code {0:?}")]
    SignOnRefused(String),
    #[error("sign-on not answered in time")]
    SignOnTimeout,
    #[error("echo not answered in time")]
    EchoTimeout,
    #[error("network management message does not encode: {0}")]
    NetworkMessage(UpstreamError),
    #[error("the simulator closed the connection")]
    BySimulator,
}

impl Link {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut backoff = Backoff::new(RECONNECT_FIRST, RECONNECT_MAX);
        let mut attempts = 0u64;
        while !self.context.shutdown.is_cancelled() && self.commands_open {
            if attempts > 0 {
                self.context.telemetry.reconnects.increment(1);
            }
            attempts += 1;
            let shutdown = self.context.shutdown.clone();
            let connected = tokio::select! {
                _ = shutdown.cancelled() => break,
                connected = self.connector.connect(&self.context.settings) => connected,
            };
            match connected {
                Ok(transport) => {
                    let in_process = transport.is_in_process();
                    let started = Instant::now();
                    let (end, was_up) = Session::new(&mut self, transport).run(&mut commands).await;
                    if matches!(end, SessionEnd::Shutdown) {
                        break;
                    }
                    // An issuer that accepts (or signs on) and drops at once
                    // is redialled with growing delays, not in a tight loop.
                    if was_up && started.elapsed() >= STABLE_SESSION {
                        backoff.reset();
                    }
                    if in_process {
                        // Nothing to wait for: the simulator is always there.
                        continue;
                    }
                }
                Err(error) => tracing::warn!(
                    issuer = %self.context.telemetry.issuer,
                    endpoint = %self.endpoint,
                    %error,
                    "cannot connect to issuer"
                ),
            }
            let delay = backoff.next_delay();
            if !self.wait_rejecting(&mut commands, delay).await {
                break;
            }
        }
        commands.close();
        while let Ok(command) = commands.try_recv() {
            let _ = command.reply.send(Err(UpstreamError::Unavailable));
        }
    }

    /// Waits `delay` before reconnecting, refusing requests meanwhile. False when
    /// the link should stop instead.
    async fn wait_rejecting(
        &mut self,
        commands: &mut mpsc::Receiver<Command>,
        delay: Duration,
    ) -> bool {
        let wake = sleep_until(Instant::now() + delay);
        tokio::pin!(wake);
        loop {
            tokio::select! {
                _ = self.context.shutdown.cancelled() => return false,
                () = &mut wake => return true,
                command = commands.recv(), if self.commands_open => match command {
                    Some(command) => {
                        let _ = command.reply.send(Err(UpstreamError::Unavailable));
                    }
                    None => {
                        self.commands_open = false;
                        return false;
                    }
                },
            }
        }
    }
}

/// Why a request is outstanding.
enum Purpose {
    Caller {
        reply: Reply,
        /// Field 11 as the caller sent it, restored on the response.
        caller_stan: Option<Vec<u8>>,
        reversible: bool,
    },
    SignOn,
    Echo,
}

struct Pending {
    /// As sent: field 11 holds the link's STAN (needed for field 90 of a reversal).
    request: Message,
    deadline: Instant,
    purpose: Purpose,
}

/// One connection's life: from connect to close.
struct Session<'l> {
    link: &'l mut Link,
    transport: Transport,
    outstanding: HashMap<u32, Pending>,
    /// (deadline, STAN) of every outstanding entry, earliest first.
    deadlines: BTreeSet<(Instant, u32)>,
    /// Signed on (or needing no sign-on): requests may be sent.
    up: bool,
    /// The flags and gauge currently say "up".
    advertised: bool,
    draining: bool,
    echo_in_flight: bool,
    last_traffic: Instant,
}

impl<'l> Session<'l> {
    fn new(link: &'l mut Link, transport: Transport) -> Session<'l> {
        Session {
            link,
            transport,
            outstanding: HashMap::new(),
            deadlines: BTreeSet::new(),
            up: false,
            advertised: false,
            draining: false,
            echo_in_flight: false,
            last_traffic: Instant::now(),
        }
    }

    /// Runs the connection to its end; also says whether it ever came up.
    async fn run(mut self, commands: &mut mpsc::Receiver<Command>) -> (SessionEnd, bool) {
        let end = match self.exchange(commands).await {
            Ok(()) => SessionEnd::Shutdown,
            Err(closed) => SessionEnd::Lost(closed),
        };
        let was_up = self.up;
        self.close(&end);
        (end, was_up)
    }

    async fn exchange(&mut self, commands: &mut mpsc::Receiver<Command>) -> Result<(), Closed> {
        tracing::debug!(
            issuer = %self.link.context.telemetry.issuer,
            endpoint = %self.link.endpoint,
            "connected to issuer"
        );
        if self.link.context.settings.sign_on && !self.transport.is_in_process() {
            self.send_network(SIGN_ON, Purpose::SignOn).await?;
        } else {
            self.mark_up(false);
        }
        let shutdown = self.link.context.shutdown.clone();
        loop {
            let timer = self.next_timer();
            let commands_open = self.link.commands_open;
            tokio::select! {
                _ = shutdown.cancelled(), if !self.draining => self.start_draining(),
                command = commands.recv(), if commands_open => match command {
                    Some(command) => self.take_commands(command, commands).await?,
                    None => {
                        self.link.commands_open = false;
                        self.start_draining();
                    }
                },
                incoming = self.transport.receive() => self.on_incoming(incoming).await?,
                () = sleep_until_some(timer) => self.on_timer().await?,
            }
            if self.draining && !self.has_callers() {
                return Ok(());
            }
        }
    }

    fn has_callers(&self) -> bool {
        self.outstanding
            .values()
            .any(|p| matches!(p.purpose, Purpose::Caller { .. }))
    }

    /// Writes `first` and whatever else is queued right now, then flushes once.
    async fn take_commands(
        &mut self,
        first: Command,
        commands: &mut mpsc::Receiver<Command>,
    ) -> Result<(), Closed> {
        let mut fed = self.accept(first);
        for _ in 1..MAX_BATCH {
            match commands.try_recv() {
                Ok(command) => fed |= self.accept(command),
                Err(_) => break,
            }
        }
        if fed {
            self.transport.flush().await?;
        }
        Ok(())
    }

    /// Feeds one request to the transport; false (and the caller answered) if it
    /// was not sent.
    fn accept(&mut self, command: Command) -> bool {
        let Command {
            mut request,
            deadline,
            reversible,
            reply,
        } = command;
        let now = Instant::now();
        // Too late to send means the issuer never sees it: nothing to reverse.
        if !self.up || self.draining || deadline <= now {
            let _ = reply.send(Err(UpstreamError::Unavailable));
            return false;
        }
        let Some(stan) = self.allocate_stan(now) else {
            tracing::warn!(
                issuer = %self.link.context.telemetry.issuer,
                endpoint = %self.link.endpoint,
                "every STAN is in use on this link"
            );
            let _ = reply.send(Err(UpstreamError::Unavailable));
            return false;
        };
        let caller_stan = request.get(11).map(<[u8]>::to_vec);
        set_field(&mut request, 11, stan.to_digits());
        if let Err(error) = self.transport.feed(&request) {
            let _ = reply.send(Err(error));
            return false;
        }
        self.last_traffic = now;
        self.insert(
            stan,
            Pending {
                request,
                deadline,
                purpose: Purpose::Caller {
                    reply,
                    caller_stan,
                    reversible,
                },
            },
        );
        true
    }

    fn allocate_stan(&mut self, now: Instant) -> Option<Stan> {
        let link = &mut *self.link;
        link.late.purge(now);
        let (outstanding, late) = (&self.outstanding, &link.late);
        link.stans
            .allocate(|stan| outstanding.contains_key(&stan) || late.contains(stan))
    }

    fn insert(&mut self, stan: Stan, pending: Pending) {
        if matches!(pending.purpose, Purpose::Caller { .. }) {
            self.link.context.telemetry.outstanding_changed(1);
        }
        self.deadlines.insert((pending.deadline, stan.0));
        self.outstanding.insert(stan.0, pending);
    }

    fn remove(&mut self, stan: Stan) -> Option<Pending> {
        let pending = self.outstanding.remove(&stan.0)?;
        self.deadlines.remove(&(pending.deadline, stan.0));
        if matches!(pending.purpose, Purpose::Caller { .. }) {
            self.link.context.telemetry.outstanding_changed(-1);
        }
        Some(pending)
    }

    /// Sends an 0800 (sign-on or echo) and tracks it like any request.
    async fn send_network(&mut self, code: &str, purpose: Purpose) -> Result<(), Closed> {
        let now = Instant::now();
        let Some(stan) = self.allocate_stan(now) else {
            return Ok(());
        };
        let mut request = Message::new(NETWORK_REQUEST);
        set_field(&mut request, 7, transmission_time_now());
        set_field(&mut request, 11, stan.to_digits());
        set_field(&mut request, 70, code);
        self.transport
            .feed(&request)
            .map_err(Closed::NetworkMessage)?;
        if matches!(purpose, Purpose::Echo) {
            self.echo_in_flight = true;
        }
        self.last_traffic = now;
        let deadline = now + self.link.context.settings.timeout;
        self.insert(
            stan,
            Pending {
                request,
                deadline,
                purpose,
            },
        );
        self.transport.flush().await
    }

    async fn on_incoming(&mut self, incoming: Incoming) -> Result<(), Closed> {
        match incoming {
            Incoming::Message(message) => {
                self.last_traffic = Instant::now();
                self.on_message(message).await
            }
            Incoming::Undecodable(error) => {
                self.last_traffic = Instant::now();
                tracing::warn!(
                    issuer = %self.link.context.telemetry.issuer,
                    endpoint = %self.link.endpoint,
                    part = %error.part(),
                    kind = %error.kind(),
                    "issuer message does not decode; dropped"
                );
                self.link.context.telemetry.unmatched_response();
                Ok(())
            }
            Incoming::Closed(closed) => Err(closed),
        }
    }

    async fn on_message(&mut self, message: Message) -> Result<(), Closed> {
        let mti = message.mti();
        if mti.is_request() {
            return self.answer_issuer_request(message).await;
        }
        let Ok(stan) = message.stan() else {
            self.unmatched(&message, "no valid STAN");
            return Ok(());
        };
        let expected = self
            .outstanding
            .get(&stan.0)
            .map(|pending| pending.request.mti().response());
        match expected {
            Some(Some(response_mti)) if response_mti == mti => {
                if let Some(pending) = self.remove(stan) {
                    self.complete(stan, pending, message)?;
                }
            }
            Some(_) => self.unmatched(&message, "MTI does not answer the request with this STAN"),
            None => match self.link.late.take(stan.0) {
                Some(late) if late.expected == Some(mti) => self.on_late(stan, &late, &message),
                Some(late) => {
                    self.link.late.put_back(stan.0, late);
                    self.unmatched(&message, "MTI does not answer the request with this STAN");
                }
                None => self.unmatched(&message, "no request outstanding with this STAN"),
            },
        }
        Ok(())
    }

    fn complete(
        &mut self,
        stan: Stan,
        pending: Pending,
        mut response: Message,
    ) -> Result<(), Closed> {
        match pending.purpose {
            Purpose::Caller {
                reply,
                caller_stan,
                reversible,
            } => {
                match caller_stan {
                    Some(value) => set_field(&mut response, 11, value),
                    None => {
                        response.remove(11);
                    }
                }
                let approved = is_approval(&response);
                if reply.send(Ok((response, stan))).is_err() && reversible && approved {
                    // Nobody will tell the cardholder: undo it at the issuer.
                    self.queue_reversal(&pending.request, "caller gone before the approval");
                }
                Ok(())
            }
            Purpose::SignOn => {
                if response.get(39) == Some(APPROVED) {
                    tracing::info!(
                        issuer = %self.link.context.telemetry.issuer,
                        endpoint = %self.link.endpoint,
                        "signed on to issuer"
                    );
                    self.mark_up(true);
                    Ok(())
                } else {
                    let code = response.get_str(39).unwrap_or("none").to_string();
                    Err(Closed::SignOnRefused(code))
                }
            }
            Purpose::Echo => {
                self.echo_in_flight = false;
                Ok(())
            }
        }
    }

    /// A response to a request that already timed out. Its reversal was queued at
    /// the timeout (every reversible request is reversed then), so an approval
    /// arriving now needs no second one.
    fn on_late(&self, stan: Stan, late: &LateEntry, response: &Message) {
        let approved = is_approval(response);
        let telemetry = &self.link.context.telemetry;
        telemetry.late.increment(1);
        telemetry.late_count.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            issuer = %telemetry.issuer,
            endpoint = %self.link.endpoint,
            mti = %response.mti(),
            issuer_stan = %stan,
            pan = %masked_pan(response),
            response_code = response.get_str(39).unwrap_or("-"),
            reversal_queued = late.reversal_queued,
            "late issuer response"
        );
        if approved && !late.reversal_queued {
            tracing::debug!(
                issuer = %telemetry.issuer,
                "late approval of a message that is not reversed (advice, reversal or network)"
            );
        }
    }

    fn unmatched(&self, message: &Message, why: &'static str) {
        let telemetry = &self.link.context.telemetry;
        telemetry.unmatched_response();
        tracing::warn!(
            issuer = %telemetry.issuer,
            endpoint = %self.link.endpoint,
            mti = %message.mti(),
            issuer_stan = message.get_str(11).unwrap_or("-"),
            pan = %masked_pan(message),
            why,
            "unmatched issuer message dropped"
        );
    }

    /// Answers an issuer's 0800 (sign-on, echo); any other request from the issuer
    /// is not ours to handle.
    async fn answer_issuer_request(&mut self, request: Message) -> Result<(), Closed> {
        if request.mti() != NETWORK_REQUEST {
            self.unmatched(&request, "unsolicited request from the issuer");
            return Ok(());
        }
        let mut response = Message::new(NETWORK_RESPONSE);
        for field in [7, 11, 70] {
            if let Some(value) = request.get(field) {
                set_field(&mut response, field, value);
            }
        }
        set_field(&mut response, 39, APPROVED);
        self.transport
            .feed(&response)
            .map_err(Closed::NetworkMessage)?;
        self.transport.flush().await
    }

    fn next_timer(&self) -> Option<Instant> {
        let deadline = self.deadlines.first().map(|(deadline, _)| *deadline);
        match (deadline, self.echo_due()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn echo_due(&self) -> Option<Instant> {
        if !self.up || self.draining || self.echo_in_flight || self.transport.is_in_process() {
            return None;
        }
        let interval = self.link.context.settings.echo_interval?;
        Some(self.last_traffic + interval)
    }

    async fn on_timer(&mut self) -> Result<(), Closed> {
        let now = Instant::now();
        while let Some(&(deadline, stan)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            if let Some(pending) = self.remove(Stan(stan)) {
                self.expire(Stan(stan), pending, now)?;
            }
        }
        if self.echo_due().is_some_and(|due| due <= now) {
            self.send_network(ECHO, Purpose::Echo).await?;
        }
        Ok(())
    }

    fn expire(&mut self, stan: Stan, pending: Pending, now: Instant) -> Result<(), Closed> {
        match pending.purpose {
            Purpose::Caller {
                reply, reversible, ..
            } => {
                let telemetry = &self.link.context.telemetry;
                telemetry.timeouts.increment(1);
                tracing::warn!(
                    issuer = %telemetry.issuer,
                    endpoint = %self.link.endpoint,
                    mti = %pending.request.mti(),
                    issuer_stan = %stan,
                    pan = %masked_pan(&pending.request),
                    reversed = reversible,
                    "issuer did not answer in time"
                );
                let _ = reply.send(Err(UpstreamError::Timeout { issuer_stan: stan }));
                if reversible {
                    self.queue_reversal(&pending.request, "timeout");
                }
                let late = LateEntry {
                    expires: now + LATE_RETENTION,
                    expected: pending.request.mti().response(),
                    reversal_queued: reversible,
                };
                self.link.late.insert(stan.0, late);
                Ok(())
            }
            Purpose::SignOn => Err(Closed::SignOnTimeout),
            Purpose::Echo => {
                let telemetry = &self.link.context.telemetry;
                telemetry.echo_failures.increment(1);
                tracing::warn!(
                    issuer = %telemetry.issuer,
                    endpoint = %self.link.endpoint,
                    "echo not answered; recycling the link"
                );
                Err(Closed::EchoTimeout)
            }
        }
    }

    fn queue_reversal(&self, request: &Message, why: &'static str) {
        let reversal = reversal_for(request);
        tracing::info!(
            issuer = %self.link.context.telemetry.issuer,
            endpoint = %self.link.endpoint,
            original_mti = %request.mti(),
            issuer_stan = request.get_str(11).unwrap_or("-"),
            pan = %masked_pan(request),
            why,
            "reversal queued"
        );
        self.link.context.saf.push(reversal);
    }

    fn mark_up(&mut self, signed_on: bool) {
        self.up = true;
        self.link
            .flags
            .signed_on
            .store(signed_on, Ordering::Release);
        self.advertise(true);
    }

    fn start_draining(&mut self) {
        self.draining = true;
        self.advertise(false);
    }

    /// Publishes whether the issuer may pick this link.
    fn advertise(&mut self, up: bool) {
        if self.advertised == up {
            return;
        }
        self.advertised = up;
        self.link.flags.up.store(up, Ordering::Release);
        if up {
            self.link.link_up.increment(1.0);
        } else {
            self.link.link_up.decrement(1.0);
        }
    }

    /// Fails everything outstanding: the issuer may have approved any of it, so
    /// each reversible request is reversed.
    fn close(&mut self, end: &SessionEnd) {
        self.advertise(false);
        self.link.flags.signed_on.store(false, Ordering::Release);
        let outstanding = std::mem::take(&mut self.outstanding);
        self.deadlines.clear();
        let mut lost = 0usize;
        for (stan, pending) in outstanding {
            if let Purpose::Caller {
                reply, reversible, ..
            } = pending.purpose
            {
                lost += 1;
                self.link.context.telemetry.outstanding_changed(-1);
                let issuer_stan = Stan(stan);
                let _ = reply.send(Err(UpstreamError::ConnectionLost { issuer_stan }));
                if reversible {
                    self.queue_reversal(&pending.request, "connection lost");
                }
            }
        }
        let telemetry = &self.link.context.telemetry;
        match end {
            SessionEnd::Lost(reason) => tracing::warn!(
                issuer = %telemetry.issuer,
                endpoint = %self.link.endpoint,
                %reason,
                lost,
                "issuer link closed"
            ),
            SessionEnd::Shutdown => tracing::info!(
                issuer = %telemetry.issuer,
                endpoint = %self.link.endpoint,
                "issuer link shut down"
            ),
        }
    }
}

async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn is_approval(response: &Message) -> bool {
    response
        .response_code()
        .is_ok_and(|code| code.is_approval())
}

/// Sets a field whose number is a constant in this module, so it is a data field.
fn set_field(message: &mut Message, field: u8, value: impl AsRef<[u8]>) {
    message
        .set(field, value)
        .expect("field numbers used by the link are data fields");
}

/// Field 2 masked for logs, or "-".
pub(crate) fn masked_pan(message: &Message) -> String {
    message.get_str(2).map_or_else(|| "-".to_string(), mask_pan)
}

/// What a transport delivered.
enum Incoming {
    Message(Message),
    /// A whole frame that the spec cannot decode; the stream is still in step.
    Undecodable(CodecError),
    Closed(Closed),
}

trait IoStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> IoStream for T {}

/// The only thing that differs between a socket link and an in-process one.
enum Transport {
    Wire(Wire),
    InProcess(InProcess),
}

impl Transport {
    fn is_in_process(&self) -> bool {
        matches!(self, Transport::InProcess(_))
    }

    /// Queues `message` for sending; nothing is written until [`Transport::flush`].
    fn feed(&mut self, message: &Message) -> Result<(), UpstreamError> {
        match self {
            Transport::Wire(wire) => wire.feed(message),
            Transport::InProcess(session) => {
                session.feed(message);
                Ok(())
            }
        }
    }

    async fn flush(&mut self) -> Result<(), Closed> {
        match self {
            Transport::Wire(wire) => wire.flush().await,
            Transport::InProcess(_) => Ok(()),
        }
    }

    /// The next message from the issuer. Cancel-safe: nothing is lost when another
    /// branch of a `select!` wins.
    async fn receive(&mut self) -> Incoming {
        match self {
            Transport::Wire(wire) => wire.receive().await,
            Transport::InProcess(session) => session.receive().await,
        }
    }
}

impl Connector {
    async fn connect(&self, settings: &LinkSettings) -> Result<Transport, std::io::Error> {
        match self {
            Connector::Tcp { address, tls } => {
                let timed_out =
                    |_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out");
                let tcp = tokio::time::timeout(settings.timeout, TcpStream::connect(address))
                    .await
                    .map_err(timed_out)??;
                tcp.set_nodelay(true)?;
                let stream: Box<dyn IoStream> = match tls {
                    Some((connector, name)) => Box::new(
                        tokio::time::timeout(
                            settings.timeout,
                            connector.connect(name.clone(), tcp),
                        )
                        .await
                        .map_err(timed_out)??,
                    ),
                    None => Box::new(tcp),
                };
                Ok(Transport::Wire(Wire::new(stream, settings)))
            }
            Connector::InProcess(issuer) => Ok(Transport::InProcess(InProcess {
                issuer: issuer.clone(),
                ready: VecDeque::new(),
                delayed: JoinSet::new(),
            })),
        }
    }
}

/// A framed byte stream (TCP or TLS) with its read and write buffers.
struct Wire {
    stream: Box<dyn IoStream>,
    codec: FrameCodec,
    spec: Arc<Spec>,
    read: BytesMut,
    write: BytesMut,
    /// How long one flush may wait for the socket. The link task does
    /// nothing else meanwhile (no timer fires), so an issuer that stops
    /// reading must end the session, failing (and reversing) what is out.
    write_limit: Duration,
}

impl Wire {
    fn new(stream: Box<dyn IoStream>, settings: &LinkSettings) -> Wire {
        Wire {
            stream,
            codec: FrameCodec::new(settings.frame),
            spec: settings.spec.clone(),
            read: BytesMut::with_capacity(8 * 1024),
            write: BytesMut::with_capacity(8 * 1024),
            write_limit: settings.timeout,
        }
    }

    fn feed(&mut self, message: &Message) -> Result<(), UpstreamError> {
        let payload = message.encode(&self.spec).map_err(UpstreamError::Encode)?;
        self.codec
            .encode(Frame::new(payload), &mut self.write)
            .map_err(UpstreamError::Frame)
    }

    async fn flush(&mut self) -> Result<(), Closed> {
        let write = async {
            self.stream.write_all(&self.write).await?;
            self.stream.flush().await
        };
        match tokio::time::timeout(self.write_limit, write).await {
            Ok(written) => written?,
            Err(_) => return Err(Closed::WriteStalled),
        }
        self.write.clear();
        Ok(())
    }

    async fn receive(&mut self) -> Incoming {
        loop {
            match self.codec.decode(&mut self.read) {
                Ok(Some(frame)) => {
                    return match Message::decode(&self.spec, frame.payload) {
                        Ok(message) => Incoming::Message(message),
                        Err(error) => Incoming::Undecodable(error),
                    }
                }
                Ok(None) => {}
                Err(error) => return Incoming::Closed(Closed::Framing(error)),
            }
            match self.stream.read_buf(&mut self.read).await {
                Ok(0) if self.read.is_empty() => return Incoming::Closed(Closed::ByIssuer),
                Ok(0) => {
                    let closed = match self.codec.decode_eof(&mut self.read) {
                        Err(error) => Closed::Framing(error),
                        Ok(_) => Closed::ByIssuer,
                    };
                    return Incoming::Closed(closed);
                }
                Ok(_) => {}
                Err(error) => return Incoming::Closed(Closed::Io(error)),
            }
        }
    }
}

/// A "connection" to the in-process simulator: its decisions, delivered after
/// their delay. Closing drops the delayed answers, as a socket would.
struct InProcess {
    issuer: Arc<dyn InProcessIssuer>,
    ready: VecDeque<Incoming>,
    delayed: JoinSet<Message>,
}

impl InProcess {
    fn feed(&mut self, request: &Message) {
        match self.issuer.decide(request) {
            Decision::Respond {
                response,
                delay: None,
            } => self.ready.push_back(Incoming::Message(response)),
            Decision::Respond {
                response,
                delay: Some(delay),
            } => {
                self.delayed.spawn(async move {
                    tokio::time::sleep(delay).await;
                    response
                });
            }
            Decision::Drop => {}
            Decision::Close => self.ready.push_back(Incoming::Closed(Closed::BySimulator)),
        }
    }

    async fn receive(&mut self) -> Incoming {
        if let Some(incoming) = self.ready.pop_front() {
            return incoming;
        }
        loop {
            match self.delayed.join_next().await {
                Some(Ok(response)) => return Incoming::Message(response),
                // A delayed answer cannot fail; skip one that was aborted.
                Some(Err(_)) => continue,
                None => std::future::pending::<()>().await,
            }
        }
    }
}

/// A timed-out request, remembered so its response is recognised as late.
struct LateEntry {
    expires: Instant,
    expected: Option<Mti>,
    reversal_queued: bool,
}

/// Timed-out requests by STAN, bounded in age and number.
#[derive(Default)]
struct LateTable {
    entries: HashMap<u32, LateEntry>,
    order: VecDeque<(Instant, u32)>,
}

impl LateTable {
    fn insert(&mut self, stan: u32, entry: LateEntry) {
        while self.entries.len() >= LATE_CAPACITY {
            match self.order.pop_front() {
                Some((_, oldest)) => {
                    self.entries.remove(&oldest);
                }
                None => break,
            }
        }
        self.order.push_back((entry.expires, stan));
        self.entries.insert(stan, entry);
    }

    fn contains(&self, stan: u32) -> bool {
        self.entries.contains_key(&stan)
    }

    fn take(&mut self, stan: u32) -> Option<LateEntry> {
        self.entries.remove(&stan)
    }

    fn put_back(&mut self, stan: u32, entry: LateEntry) {
        self.entries.insert(stan, entry);
    }

    fn purge(&mut self, now: Instant) {
        while let Some(&(expires, stan)) = self.order.front() {
            if expires > now {
                break;
            }
            self.order.pop_front();
            // The STAN may have been taken and reused since; only drop the old entry.
            if self
                .entries
                .get(&stan)
                .is_some_and(|e| e.expires == expires)
            {
                self.entries.remove(&stan);
            }
        }
    }
}

/// The link's STAN counter: 000001..=999999, cycling.
struct StanCounter {
    next: u32,
}

impl StanCounter {
    fn new(first: u32) -> StanCounter {
        StanCounter {
            next: first.clamp(1, STAN_MAX),
        }
    }

    /// The next STAN for which `busy` is false; None if every one is busy.
    fn allocate(&mut self, busy: impl Fn(u32) -> bool) -> Option<Stan> {
        for _ in 0..STAN_MAX {
            let candidate = self.next;
            self.next = if candidate >= STAN_MAX {
                1
            } else {
                candidate + 1
            };
            if !busy(candidate) {
                return Some(Stan(candidate));
            }
        }
        None
    }
}

/// Where link `index` of `count` starts counting, so an issuer's links rarely use
/// the same STAN at the same moment.
pub(crate) fn first_stan(index: usize, count: usize) -> u32 {
    let spacing = STAN_MAX as usize / count.max(1);
    u32::try_from(1 + index.saturating_mul(spacing) % STAN_MAX as usize).unwrap_or(1)
}

/// Capped exponential backoff with "equal jitter": half the delay fixed, half random,
/// so a fleet of links does not reconnect in step.
pub(crate) struct Backoff {
    first: Duration,
    max: Duration,
    current: Duration,
    random: u64,
}

impl Backoff {
    pub(crate) fn new(first: Duration, max: Duration) -> Backoff {
        // RandomState is seeded per process; good enough to spread reconnects.
        let seed = RandomState::new().hash_one(std::process::id()) | 1;
        Backoff {
            first,
            max,
            current: first,
            random: seed,
        }
    }

    pub(crate) fn reset(&mut self) {
        self.current = self.first;
    }

    pub(crate) fn next_delay(&mut self) -> Duration {
        let base = self.current;
        self.current = (base * 2).min(self.max);
        // xorshift64
        self.random ^= self.random << 13;
        self.random ^= self.random >> 7;
        self.random ^= self.random << 17;
        let half = base / 2;
        let span = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
        let jitter = if span == 0 { 0 } else { self.random % span };
        half + Duration::from_nanos(jitter)
    }
}

/// Field 7 for messages the link originates: MMDDhhmmss, UTC.
fn transmission_time_now() -> String {
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    transmission_time(seconds)
}

fn transmission_time(unix_seconds: u64) -> String {
    let (days, of_day) = (unix_seconds / 86_400, unix_seconds % 86_400);
    let (month, day) = month_and_day(days);
    format!(
        "{month:02}{day:02}{:02}{:02}{:02}",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

/// Month and day of the civil (proleptic Gregorian) date `days` after 1970-01-01
/// (Howard Hinnant's `civil_from_days`).
fn month_and_day(days: u64) -> (u64, u64) {
    let z = days + 719_468;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    (month, day)
}

/// Per-issuer metric handles and the counts `status()` reports. Metric handles are
/// resolved when the issuer starts, so the recorder must be installed before.
pub(crate) struct Telemetry {
    pub issuer: Arc<str>,
    pub requests: Counter,
    pub latency: Histogram,
    timeouts: Counter,
    reconnects: Counter,
    echo_failures: Counter,
    late: Counter,
    unmatched: Counter,
    outstanding_gauge: Gauge,
    outstanding: AtomicUsize,
    late_count: AtomicU64,
    unmatched_count: AtomicU64,
}

impl Telemetry {
    pub(crate) fn new(issuer: &str) -> Telemetry {
        let label = || issuer.to_string();
        Telemetry {
            issuer: Arc::from(issuer),
            requests: counter!("isoswitch_issuer_requests_total", "issuer" => label()),
            latency: histogram!("isoswitch_issuer_latency_seconds", "issuer" => label()),
            timeouts: counter!("isoswitch_issuer_timeouts_total", "issuer" => label()),
            reconnects: counter!("isoswitch_issuer_reconnects_total", "issuer" => label()),
            echo_failures: counter!("isoswitch_issuer_echo_failures_total", "issuer" => label()),
            late: counter!("isoswitch_issuer_late_responses_total", "issuer" => label()),
            unmatched: counter!("isoswitch_issuer_unmatched_responses_total", "issuer" => label()),
            outstanding_gauge: gauge!("isoswitch_issuer_outstanding", "issuer" => label()),
            outstanding: AtomicUsize::new(0),
            late_count: AtomicU64::new(0),
            unmatched_count: AtomicU64::new(0),
        }
    }

    fn outstanding_changed(&self, delta: isize) {
        let now = if delta >= 0 {
            self.outstanding
                .fetch_add(delta.unsigned_abs(), Ordering::Relaxed)
                + delta.unsigned_abs()
        } else {
            self.outstanding
                .fetch_sub(delta.unsigned_abs(), Ordering::Relaxed)
                .saturating_sub(delta.unsigned_abs())
        };
        self.outstanding_gauge.set(now as f64);
    }

    fn unmatched_response(&self) {
        self.unmatched.increment(1);
        self.unmatched_count.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::Relaxed)
    }

    pub(crate) fn late_responses(&self) -> u64 {
        self.late_count.load(Ordering::Relaxed)
    }

    pub(crate) fn unmatched_responses(&self) -> u64 {
        self.unmatched_count.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stan_counter_cycles_and_skips_busy_stans() {
        let mut stans = StanCounter::new(STAN_MAX - 1);
        assert_eq!(stans.allocate(|_| false), Some(Stan(STAN_MAX - 1)));
        assert_eq!(stans.allocate(|s| s == STAN_MAX), Some(Stan(1)));
        assert_eq!(stans.allocate(|s| s == 2 || s == 3), Some(Stan(4)));
        assert_eq!(stans.allocate(|_| true), None);
    }

    #[test]
    fn links_of_one_issuer_start_their_stans_apart() {
        assert_eq!(first_stan(0, 1), 1);
        assert_eq!(first_stan(0, 4), 1);
        assert_eq!(first_stan(1, 4), 249_999 + 1);
        assert!((1..=STAN_MAX).contains(&first_stan(3, 4)));
    }

    #[test]
    fn backoff_doubles_to_its_cap_with_jitter_and_resets() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let delays: Vec<Duration> = (0..6).map(|_| backoff.next_delay()).collect();
        let bases = [100u64, 200, 400, 800, 1000, 1000];
        for (delay, base) in delays.iter().zip(bases) {
            let base = Duration::from_millis(base);
            assert!(
                *delay >= base / 2 && *delay <= base,
                "{delay:?} for {base:?}"
            );
        }
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn transmission_time_is_utc_mmddhhmmss() {
        assert_eq!(transmission_time(0), "0101000000");
        // 2024-02-29 13:45:07 UTC
        assert_eq!(transmission_time(1_709_214_307), "0229134507");
        // 2023-12-31 23:59:59 UTC
        assert_eq!(transmission_time(1_704_067_199), "1231235959");
    }

    #[test]
    fn late_table_forgets_old_entries_by_age_and_count() {
        let start = Instant::now();
        let mut late = LateTable::default();
        let entry = |expires| LateEntry {
            expires,
            expected: None,
            reversal_queued: true,
        };
        late.insert(1, entry(start + Duration::from_secs(1)));
        late.insert(2, entry(start + Duration::from_secs(5)));
        late.purge(start + Duration::from_secs(2));
        assert!(!late.contains(1));
        assert!(late.contains(2));
        for stan in 10..10 + LATE_CAPACITY as u32 {
            late.insert(stan, entry(start + Duration::from_secs(10)));
        }
        assert!(!late.contains(2), "the oldest goes when full");
        assert_eq!(late.entries.len(), LATE_CAPACITY);
    }
}
