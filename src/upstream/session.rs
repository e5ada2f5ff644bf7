//! One connection's life, from connect to close: the state machine that signs on,
//! matches answers to outstanding requests by STAN, echoes when idle, times out
//! and fails what is outstanding when the connection ends.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering;

use time::{OffsetDateTime, UtcOffset};
use tokio::sync::mpsc;
use tokio::time::{sleep_until, Instant};

use super::link::{Command, Failure, Link, Reply};
use super::saf::reversal_for;
use super::stan::{LateEntry, LATE_RETENTION};
use super::transport::{Incoming, Transport};
use super::UpstreamError;
use crate::frame::FrameError;
use crate::iso8583::{Message, Mti, Stan};
use crate::log_limit::LogLimit;

/// Requests written before one flush, so a flood cannot starve reading.
const MAX_BATCH: usize = 256;

const NETWORK_REQUEST: Mti = Mti::from_static("0800");
const NETWORK_RESPONSE: Mti = Mti::from_static("0810");
const SIGN_ON: &str = "001";
const ECHO: &str = "301";
const APPROVED: &[u8] = b"00";

/// How a connection ended.
pub(super) enum SessionEnd {
    Lost(Closed),
    Shutdown,
}

/// Why a connection was closed.
#[derive(Debug, thiserror::Error)]
pub(super) enum Closed {
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

/// Why a request is outstanding.
enum Purpose {
    Caller {
        reply: Reply,
        /// Field 11 as the caller sent it, restored on the response.
        caller_stan: Option<Vec<u8>>,
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
pub(super) struct Session<'l> {
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
    pub(super) fn new(link: &'l mut Link, transport: Transport) -> Session<'l> {
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
    pub(super) async fn run(
        mut self,
        commands: &mut mpsc::Receiver<Command>,
    ) -> (SessionEnd, bool) {
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
            stan,
            deadline,
            reply,
        } = command;
        let now = Instant::now();
        // Too late to send means the issuer never sees it: nothing to reverse.
        if !self.up || self.draining || deadline <= now {
            let _ = reply.send(Err(Failure::NotSent(request)));
            return false;
        }
        if self.stan_busy(stan.0, now) {
            // A million STANs went round within the late-answer window.
            tracing::warn!(
                issuer = %self.link.context.telemetry.issuer,
                endpoint = %self.link.endpoint,
                issuer_stan = %stan,
                "STAN still in use on this link; request not sent"
            );
            let _ = reply.send(Err(Failure::NotSent(request)));
            return false;
        }
        let caller_stan = request.get(11).map(<[u8]>::to_vec);
        set_field(&mut request, 11, stan.to_digits());
        if let Err(error) = self.transport.feed(&request) {
            let _ = reply.send(Err(Failure::Failed(error)));
            return false;
        }
        self.last_traffic = now;
        self.insert(
            stan,
            Pending {
                request,
                deadline,
                purpose: Purpose::Caller { reply, caller_stan },
            },
        );
        true
    }

    /// Whether `stan` is outstanding here or waiting for a late answer.
    fn stan_busy(&mut self, stan: u32, now: Instant) -> bool {
        self.link.late.purge(now);
        self.outstanding.contains_key(&stan) || self.link.late.contains(stan)
    }

    /// A free STAN from the issuer's source, for a message of the link's own.
    fn allocate_stan(&mut self, now: Instant) -> Option<Stan> {
        let stans = self.link.context.stans.clone();
        (0..16)
            .map(|_| stans.next())
            .find(|stan| !self.stan_busy(stan.0, now))
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
        let expected = self.outstanding.get(&stan.0).map(|pending| {
            (
                pending.request.mti().response(),
                echo_mismatch(&pending.request, &message),
            )
        });
        match expected {
            Some((Some(response_mti), None)) if response_mti == mti => {
                if let Some(pending) = self.remove(stan) {
                    self.complete(stan, pending, message)?;
                }
            }
            // Another transaction's answer under this STAN: never handed to
            // this caller, who keeps waiting for its own (or its timeout).
            Some((Some(response_mti), Some(why))) if response_mti == mti => {
                self.unmatched(&message, why)
            }
            Some(_) => self.unmatched(&message, "MTI does not answer the request with this STAN"),
            None => match self.link.late.take(stan.0) {
                Some(late) if late.expected == Some(mti) => self.on_late(stan, &message),
                Some(late) => {
                    self.link.late.put_back(stan.0, late);
                    self.unmatched(&message, "MTI does not answer the request with this STAN");
                }
                None => {
                    self.unmatched(&message, "no request outstanding with this STAN");
                    self.reverse_stray_approval(&message);
                }
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
            Purpose::Caller { reply, caller_stan } => {
                match caller_stan {
                    Some(value) => set_field(&mut response, 11, value),
                    None => {
                        response.remove(11);
                    }
                }
                let approved = is_approval(&response);
                if reply.send(Ok((response, stan))).is_err() && approved {
                    // The journal holds it as forwarded and unanswered: the
                    // switch's in-doubt sweep reverses it.
                    tracing::warn!(
                        issuer = %self.link.context.telemetry.issuer,
                        endpoint = %self.link.endpoint,
                        issuer_stan = %stan,
                        pan = %pending.request.masked_pan(),
                        "approval arrived for a request nobody waits for any more"
                    );
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

    /// A response to a request that already timed out. Whoever sent it was
    /// told of the timeout and has queued its reversal where one is due.
    fn on_late(&self, stan: Stan, response: &Message) {
        let telemetry = &self.link.context.telemetry;
        telemetry.late_response();
        static LINES: LogLimit = LogLimit::new(20);
        if let Some(suppressed) = LINES.admit() {
            tracing::warn!(
                issuer = %telemetry.issuer,
                endpoint = %self.link.endpoint,
                mti = %response.mti(),
                issuer_stan = %stan,
                pan = %response.masked_pan(),
                response_code = response.get_str(39).unwrap_or("-"),
                suppressed,
                "late issuer response"
            );
        }
    }

    fn unmatched(&self, message: &Message, why: &'static str) {
        let telemetry = &self.link.context.telemetry;
        telemetry.unmatched_response();
        static LINES: LogLimit = LogLimit::new(20);
        if let Some(suppressed) = LINES.admit() {
            tracing::warn!(
                issuer = %telemetry.issuer,
                endpoint = %self.link.endpoint,
                mti = %message.mti(),
                issuer_stan = message.get_str(11).unwrap_or("-"),
                pan = %message.masked_pan(),
                why,
                suppressed,
                "unmatched issuer message dropped"
            );
        }
    }

    /// An approval under a STAN with nothing outstanding (nor a late answer
    /// expected) may still hold money at the issuer: it is reversed from what
    /// it echoes (STAN, card, amount, RRN). One under a STAN that is
    /// outstanding is not: that request is reversed at its own timeout.
    fn reverse_stray_approval(&self, message: &Message) {
        if !is_approval(message) || !matches!(message.mti().class(), 1 | 2) {
            return;
        }
        let Some(sink) = self.link.context.unmatched_approvals.load_full() else {
            return;
        };
        let [version, class, ..] = *message.mti().as_bytes();
        if let Some(request_mti) = Mti::new([version, class, b'0', b'0']) {
            let mut original = message.clone();
            original.set_mti(request_mti);
            sink(&self.link.context.telemetry.issuer, reversal_for(&original));
        }
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
            Purpose::Caller { reply, .. } => {
                let telemetry = &self.link.context.telemetry;
                telemetry.timeouts.increment(1);
                tracing::warn!(
                    issuer = %telemetry.issuer,
                    endpoint = %self.link.endpoint,
                    mti = %pending.request.mti(),
                    issuer_stan = %stan,
                    pan = %pending.request.masked_pan(),
                    "issuer did not answer in time"
                );
                let _ = reply.send(Err(Failure::Failed(UpstreamError::Timeout {
                    issuer_stan: stan,
                })));
                let late = LateEntry {
                    expires: now + LATE_RETENTION,
                    expected: pending.request.mti().response(),
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

    /// Fails everything outstanding: the issuer may have approved any of it,
    /// which each caller learns as [`UpstreamError::ConnectionLost`].
    fn close(&mut self, end: &SessionEnd) {
        self.advertise(false);
        self.link.flags.signed_on.store(false, Ordering::Release);
        let outstanding = std::mem::take(&mut self.outstanding);
        self.deadlines.clear();
        let mut lost = 0usize;
        for (stan, pending) in outstanding {
            if let Purpose::Caller { reply, .. } = pending.purpose {
                lost += 1;
                self.link.context.telemetry.outstanding_changed(-1);
                let issuer_stan = Stan(stan);
                let _ = reply.send(Err(Failure::Failed(UpstreamError::ConnectionLost {
                    issuer_stan,
                })));
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

/// Fields an answer echoes that identify its request: terminal id, RRN,
/// card number, amount.
const IDENTIFYING: [(u8, &str); 4] = [
    (
        41,
        "terminal id (41) differs from the request with this STAN",
    ),
    (37, "RRN (37) differs from the request with this STAN"),
    (2, "card number (2) differs from the request with this STAN"),
    (4, "amount (4) differs from the request with this STAN"),
];

/// Why `response` cannot be `request`'s answer although the STAN matches:
/// an identifying field both carry differs. None when every one that both
/// carry is equal (an issuer need not echo them all).
fn echo_mismatch(request: &Message, response: &Message) -> Option<&'static str> {
    IDENTIFYING.iter().find_map(
        |&(field, why)| match (request.get(field), response.get(field)) {
            (Some(sent), Some(echoed)) if sent != echoed => Some(why),
            _ => None,
        },
    )
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

/// Field 7 for messages the link originates: MMDDhhmmss, UTC.
fn transmission_time_now() -> String {
    transmission_time(OffsetDateTime::now_utc())
}

fn transmission_time(at: OffsetDateTime) -> String {
    let at = at.to_offset(UtcOffset::UTC);
    format!(
        "{:02}{:02}{:02}{:02}{:02}",
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transmission_time_is_utc_mmddhhmmss() {
        let at = |unix: i64| OffsetDateTime::from_unix_timestamp(unix).expect("in range");
        assert_eq!(transmission_time(at(0)), "0101000000");
        // 2024-02-29 13:45:07 UTC
        assert_eq!(transmission_time(at(1_709_214_307)), "0229134507");
        // 2023-12-31 23:59:59 UTC
        assert_eq!(transmission_time(at(1_704_067_199)), "1231235959");
        // The same instant seen from UTC+2 is still written in UTC.
        let east = at(1_704_067_199).to_offset(UtcOffset::from_hms(2, 0, 0).expect("offset"));
        assert_eq!(transmission_time(east), "1231235959");
    }
}
