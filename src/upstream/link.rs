//! One issuer connection: a task owning the transport (TCP, TLS or the in-process
//! issuer) across reconnects; each connection is a [`Session`]. Callers reach it
//! through a [`LinkHandle`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use metrics::{gauge, Gauge};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;

use super::backoff::Backoff;
use super::session::{Session, SessionEnd};
use super::stan::{LateTable, StanSource};
use super::telemetry::Telemetry;
use super::transport::Connector;
use super::UpstreamError;
use crate::frame::FrameConfig;
use crate::iso8583::{Message, Spec, Stan};

/// Requests waiting for a link task; a full queue makes callers wait (up to their deadline).
const COMMAND_QUEUE: usize = 1024;
const RECONNECT_FIRST: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(10);
/// A session that lasted this long was healthy: the next reconnect starts
/// the backoff afresh. One that ended sooner continues it.
const STABLE_SESSION: Duration = Duration::from_secs(5);

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
    /// The issuer's STANs, for the link's own sign-ons and echoes.
    pub stans: Arc<StanSource>,
    /// Where the reversal of an approval that matches no request goes.
    pub unmatched_approvals: Arc<ArcSwapOption<UnmatchedApprovalSink>>,
    pub shutdown: CancellationToken,
}

/// The caller's side of a link: a queue into its task and its up/signed-on flags.
pub(crate) struct LinkHandle {
    commands: mpsc::Sender<Command>,
    flags: Arc<LinkFlags>,
}

#[derive(Default)]
pub(super) struct LinkFlags {
    pub up: AtomicBool,
    pub signed_on: AtomicBool,
}

/// Takes the reversal of an approval that matched no request (its issuer's
/// name, the reversal): the switch queues it for store-and-forward.
pub type UnmatchedApprovalSink = Box<dyn Fn(&str, Message) + Send + Sync>;

/// What a link answers a command with.
pub(super) type Answer = Result<(Message, Stan), Failure>;

pub(super) type Reply = oneshot::Sender<Answer>;

/// Why a link did not answer a command with a response.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Never written to the issuer (the link went down, was not up yet, or the
    /// deadline had passed): the request comes back, so another link may take
    /// it, and there is nothing to reverse.
    NotSent(Message),
    /// Anything else: timeouts and lost links (sent, maybe approved), and
    /// requests that do not encode or frame for the issuer.
    Failed(UpstreamError),
}

impl Failure {
    pub(crate) fn into_error(self) -> UpstreamError {
        match self {
            Failure::NotSent(_) => UpstreamError::Unavailable,
            Failure::Failed(error) => error,
        }
    }
}

pub(super) struct Command {
    pub request: Message,
    /// The STAN it goes out with, taken from the issuer's [`StanSource`].
    pub stan: Stan,
    pub deadline: Instant,
    pub reply: Reply,
}

impl LinkHandle {
    /// A handle with no link task behind it, marked up: the test plays the
    /// task with the receiver.
    #[cfg(test)]
    pub(super) fn scripted() -> (LinkHandle, mpsc::Receiver<Command>) {
        let (commands, intake) = mpsc::channel(COMMAND_QUEUE);
        let flags = Arc::new(LinkFlags::default());
        flags.up.store(true, Ordering::Release);
        (LinkHandle { commands, flags }, intake)
    }

    /// Whether the link can take requests (connected, and signed on if required).
    pub(crate) fn is_up(&self) -> bool {
        self.flags.up.load(Ordering::Acquire)
    }

    pub(crate) fn is_signed_on(&self) -> bool {
        self.flags.signed_on.load(Ordering::Acquire)
    }

    /// Sends `request` as `stan` and waits for its response, which carries the
    /// caller's field 11 again. Nothing is reversed here: whoever took the STAN
    /// knows what a timeout or a lost link means for the request.
    pub(crate) async fn send(&self, request: Message, stan: Stan, deadline: Instant) -> Answer {
        let (reply, answer) = oneshot::channel();
        let command = Command {
            request,
            stan,
            deadline,
            reply,
        };
        match tokio::time::timeout_at(deadline, self.commands.send(command)).await {
            Ok(Ok(())) => {}
            // The link task has stopped: not sent, and the request is back.
            Ok(Err(mpsc::error::SendError(command))) => {
                return Err(Failure::NotSent(command.request))
            }
            // Queue full until the deadline: not sent, and too late for another link.
            Err(_) => return Err(Failure::Failed(UpstreamError::Unavailable)),
        }
        // The task answers every command it takes; a dropped reply means it stopped first.
        answer
            .await
            .unwrap_or(Err(Failure::Failed(UpstreamError::Unavailable)))
    }
}

/// Starts the task for one link. `endpoint` labels logs and the link-up gauge.
pub(crate) fn spawn(connector: Connector, endpoint: String, context: LinkContext) -> LinkHandle {
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
        late: LateTable::default(),
        commands_open: true,
    };
    tokio::spawn(link.run(intake));
    LinkHandle { commands, flags }
}

/// State that outlives one connection.
pub(super) struct Link {
    pub endpoint: String,
    connector: Connector,
    pub context: LinkContext,
    pub flags: Arc<LinkFlags>,
    pub link_up: Gauge,
    pub late: LateTable,
    pub commands_open: bool,
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
            let _ = command.reply.send(Err(Failure::NotSent(command.request)));
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
                        let _ = command.reply.send(Err(Failure::NotSent(command.request)));
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
