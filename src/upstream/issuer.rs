//! An issuer as the switch sees it: its links (per endpoint, in failover order), the
//! choice of a live link per request, its STANs, and a status snapshot.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use serde::Serialize;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;

use super::config::{Endpoint, IssuerConfig};
use super::deliver::{Deliver, Delivery};
use super::in_process::InProcessIssuer;
use super::link::{self, Failure, LinkContext, LinkHandle, LinkSettings, UnmatchedApprovalSink};
use super::stan::StanSource;
use super::telemetry::Telemetry;
use super::transport::Connector;
use super::{tls, UpstreamError};
use crate::frame::{FrameConfig, LengthHeader};
use crate::iso8583::{Message, Spec, Stan};

/// A running issuer: cheap to clone, all clones share the same links.
/// Its tasks run until the `shutdown` token given to [`Issuer::start`] is cancelled.
#[derive(Clone)]
pub struct Issuer {
    inner: Arc<Inner>,
}

struct Inner {
    name: Arc<str>,
    timeout: Duration,
    links: Arc<Links>,
    stans: Arc<StanSource>,
    telemetry: Arc<Telemetry>,
    unmatched_approvals: Arc<ArcSwapOption<UnmatchedApprovalSink>>,
    /// Cleared by [`Issuer::stop_taking_requests`], a stage of a graceful stop.
    taking_requests: AtomicBool,
}

/// How often a graceful stop looks again at what it waits for.
const STOP_POLL: Duration = Duration::from_millis(10);

/// A snapshot of an issuer's health, for the admin endpoint and tests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IssuerStatus {
    pub name: String,
    /// In failover order.
    pub endpoints: Vec<EndpointStatus>,
    /// Requests sent and not yet answered, timed out or lost.
    pub outstanding: usize,
    /// Responses that arrived after their request timed out.
    pub late_responses: u64,
    /// Messages from the issuer that matched no request (dropped).
    pub unmatched_responses: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EndpointStatus {
    /// `ip:port`, or `"sim"` for the in-process simulator.
    pub address: String,
    /// At least one link to it can take requests.
    pub up: bool,
    /// At least one link to it has signed on.
    pub signed_on: bool,
    pub links: usize,
    pub links_up: usize,
}

impl Issuer {
    /// Starts `config.connections` links to every endpoint. `in_process` serves `"sim"` endpoints without a socket: requests go to
    /// [`InProcessIssuer::decide`] directly, honouring its delay, drop and close.
    /// Must run inside a tokio runtime; install the metrics recorder first.
    pub fn start(
        config: &IssuerConfig,
        spec: Arc<Spec>,
        in_process: Option<Arc<dyn InProcessIssuer>>,
        shutdown: CancellationToken,
    ) -> Result<Issuer, UpstreamError> {
        let settings = link_settings(config, spec)?;
        let endpoints = connectors(config, in_process)?;
        Ok(Issuer::launch(&config.name, settings, endpoints, shutdown))
    }

    /// Spawns one link per connector.
    fn launch(
        name: &str,
        settings: LinkSettings,
        endpoints: Vec<(String, Vec<Connector>)>,
        shutdown: CancellationToken,
    ) -> Issuer {
        let timeout = settings.timeout;
        let settings = Arc::new(settings);
        let telemetry = Arc::new(Telemetry::new(name));
        let stans = Arc::new(StanSource::from_clock());
        let unmatched_approvals = Arc::new(ArcSwapOption::empty());
        let context = LinkContext {
            settings,
            telemetry: telemetry.clone(),
            stans: stans.clone(),
            unmatched_approvals: unmatched_approvals.clone(),
            shutdown,
        };
        let endpoints = endpoints
            .into_iter()
            .map(|(label, connectors)| EndpointLinks {
                links: connectors
                    .into_iter()
                    .map(|connector| link::spawn(connector, label.clone(), context.clone()))
                    .collect(),
                label,
            })
            .collect();
        let links = Arc::new(Links {
            endpoints,
            next: AtomicUsize::new(0),
        });
        Issuer {
            inner: Arc::new(Inner {
                name: Arc::from(name),
                timeout,
                links,
                stans,
                telemetry,
                unmatched_approvals,
                taking_requests: AtomicBool::new(true),
            }),
        }
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The name as a shared string, for records that outlive this call (no
    /// allocation per transaction).
    pub fn shared_name(&self) -> Arc<str> {
        self.inner.name.clone()
    }

    /// Where the reversal of an approval that matches no request goes (the
    /// switch queues it); without one it is only counted and logged.
    pub fn on_unmatched_approval(&self, sink: UnmatchedApprovalSink) {
        self.inner.unmatched_approvals.store(Some(Arc::new(sink)));
    }

    /// How long a request waits for the issuer's answer.
    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    /// Takes the STAN the next request will go out with. The switch takes it
    /// before forwarding, so the journal's write-ahead record (and any
    /// reversal built from it) names what the issuer will see.
    pub fn reserve_stan(&self) -> Stan {
        self.inner.stans.next()
    }

    /// Forwards a request as `stan` (from [`Issuer::reserve_stan`]) and returns
    /// the issuer's response, with the caller's field 11 restored. Gives up
    /// after the issuer's `timeout_ms`. Nothing is reversed here: a timeout or
    /// a lost link comes back as an error naming `stan`, and the caller,
    /// which journaled the request, queues its reversal.
    pub async fn request_as(&self, request: Message, stan: Stan) -> Result<Message, UpstreamError> {
        if !self.inner.taking_requests.load(Ordering::Acquire) {
            return Err(UpstreamError::Unavailable);
        }
        let telemetry = &self.inner.telemetry;
        telemetry.requests.increment(1);
        let started = Instant::now();
        let result = self
            .inner
            .links
            .send(request, stan, started + self.inner.timeout)
            .await;
        if result.is_ok() {
            telemetry.latency.record(started.elapsed().as_secs_f64());
        }
        result.map(|(response, _)| response)
    }

    /// As [`Issuer::request_as`] with a STAN of its own, also returned.
    pub async fn request_traced(&self, request: Message) -> Result<(Message, Stan), UpstreamError> {
        let stan = self.reserve_stan();
        self.request_as(request, stan)
            .await
            .map(|response| (response, stan))
    }

    /// As [`Issuer::request_traced`], without the STAN.
    pub async fn request(&self, request: Message) -> Result<Message, UpstreamError> {
        self.request_traced(request)
            .await
            .map(|(response, _)| response)
    }

    pub fn status(&self) -> IssuerStatus {
        let telemetry = &self.inner.telemetry;
        IssuerStatus {
            name: self.inner.name.to_string(),
            endpoints: self
                .inner
                .links
                .endpoints
                .iter()
                .map(EndpointLinks::status)
                .collect(),
            outstanding: telemetry.outstanding(),
            late_responses: telemetry.late_responses(),
            unmatched_responses: telemetry.unmatched_responses(),
        }
    }

    /// Whether any link can take a request now.
    pub fn is_available(&self) -> bool {
        self.inner
            .links
            .endpoints
            .iter()
            .any(|endpoint| endpoint.links.iter().any(LinkHandle::is_up))
    }

    // A graceful stop, in the order the stages run: stop_taking_requests and
    // drained (drain the links), then the `shutdown` token given to start.

    /// Refuses new requests (they fail as [`UpstreamError::Unavailable`]);
    /// those already sent go on to their answer or timeout, and store-and-forward
    /// keeps sending reversals and advices through [`Deliver`].
    pub fn stop_taking_requests(&self) {
        self.inner.taking_requests.store(false, Ordering::Release);
    }

    /// Waits until no request is outstanding (each answered, timed out or lost;
    /// the reversals they need are queued by then), or until `deadline`.
    /// Whether it got there.
    pub async fn drained(&self, deadline: Instant) -> bool {
        let telemetry = &self.inner.telemetry;
        wait_until(deadline, || telemetry.outstanding() == 0).await
    }
}

/// Polls `done` until it holds or `deadline` passes; whether it held.
async fn wait_until(deadline: Instant, done: impl Fn() -> bool) -> bool {
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep_until(deadline.min(Instant::now() + STOP_POLL)).await;
    }
}

/// What every link of the issuer shares, from its config.
fn link_settings(config: &IssuerConfig, spec: Arc<Spec>) -> Result<LinkSettings, UpstreamError> {
    let header: LengthHeader = config.header().parse().map_err(|e| UpstreamError::Config {
        issuer: config.name.clone(),
        problem: format!("{e}"),
    })?;
    Ok(LinkSettings {
        spec,
        frame: FrameConfig {
            header,
            header_includes_self: config.header_includes_self,
            ..FrameConfig::default()
        },
        timeout: Duration::from_millis(config.timeout_ms.max(1)),
        echo_interval: (config.echo_interval_s > 0)
            .then(|| Duration::from_secs(config.echo_interval_s)),
        sign_on: config.sign_on,
    })
}

/// `config.connections` connectors per endpoint, labelled by endpoint, in order.
fn connectors(
    config: &IssuerConfig,
    in_process: Option<Arc<dyn InProcessIssuer>>,
) -> Result<Vec<(String, Vec<Connector>)>, UpstreamError> {
    let config_error = |problem: &str| UpstreamError::Config {
        issuer: config.name.clone(),
        problem: problem.to_string(),
    };
    let tls_error = |source| UpstreamError::Tls {
        issuer: config.name.clone(),
        source,
    };
    if config.connections == 0 {
        return Err(config_error("expected connections >= 1, found 0"));
    }
    if config.endpoints.is_empty() {
        return Err(config_error("expected at least one endpoint, found none"));
    }
    let tls = match &config.tls {
        Some(settings) => Some((
            settings,
            TlsConnector::from(tls::client_config(settings).map_err(tls_error)?),
        )),
        None => None,
    };
    let mut endpoints = Vec::with_capacity(config.endpoints.len());
    for endpoint in &config.endpoints {
        let mut connectors = Vec::with_capacity(config.connections as usize);
        for _ in 0..config.connections {
            connectors.push(match endpoint {
                Endpoint::Simulator => match &in_process {
                    Some(issuer) => Connector::InProcess(issuer.clone()),
                    None => {
                        return Err(config_error(
                            "endpoint \"sim\" needs the in-process simulator, found none",
                        ))
                    }
                },
                Endpoint::Address(address) => Connector::Tcp {
                    address: *address,
                    tls: match &tls {
                        Some((settings, connector)) => Some((
                            connector.clone(),
                            tls::server_name(settings, *address).map_err(tls_error)?,
                        )),
                        None => None,
                    },
                },
            });
        }
        endpoints.push((endpoint.to_string(), connectors));
    }
    Ok(endpoints)
}

/// Every link of an issuer, grouped by endpoint in failover order.
pub(crate) struct Links {
    endpoints: Vec<EndpointLinks>,
    next: AtomicUsize,
}

struct EndpointLinks {
    label: String,
    links: Vec<LinkHandle>,
}

impl EndpointLinks {
    fn status(&self) -> EndpointStatus {
        let links_up = self.links.iter().filter(|link| link.is_up()).count();
        EndpointStatus {
            address: self.label.clone(),
            up: links_up > 0,
            signed_on: self.links.iter().any(LinkHandle::is_signed_on),
            links: self.links.len(),
            links_up,
        }
    }
}

impl Links {
    /// Round-robin among the up links of the first endpoint that has any.
    fn pick(&self) -> Option<&LinkHandle> {
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        self.endpoints.iter().find_map(|endpoint| {
            let up = endpoint.links.iter().filter(|link| link.is_up()).count();
            if up == 0 {
                return None;
            }
            let mut live = endpoint.links.iter().filter(|link| link.is_up());
            // A link may go down between the count and here; any live one will do.
            live.nth(turn % up)
                .or_else(|| endpoint.links.iter().find(|link| link.is_up()))
        })
    }

    /// Sends `request` on a live link; see [`LinkHandle::send`]. A request a
    /// link gives back unsent (it went down with the request still queued)
    /// goes to another live link while the deadline allows: the issuer never
    /// saw it, so a second link cannot make it count twice.
    pub(crate) async fn send(
        &self,
        mut request: Message,
        stan: Stan,
        deadline: Instant,
    ) -> Result<(Message, Stan), UpstreamError> {
        // Positions (over all endpoints' links) of the links that gave it back.
        let mut tried: Vec<usize> = Vec::new();
        loop {
            let Some((position, link)) = self.pick_except(&tried) else {
                return Err(UpstreamError::Unavailable);
            };
            match link.send(request, stan, deadline).await {
                Ok(answer) => return Ok(answer),
                Err(Failure::NotSent(unsent)) if Instant::now() < deadline => {
                    tried.push(position);
                    request = unsent;
                }
                Err(failure) => return Err(failure.into_error()),
            }
        }
    }

    fn all_links(&self) -> impl Iterator<Item = &LinkHandle> {
        self.endpoints
            .iter()
            .flat_map(|endpoint| endpoint.links.iter())
    }

    /// As [`Links::pick`] while nothing was tried, then any live link not in
    /// `tried`; with its position among all links.
    fn pick_except(&self, tried: &[usize]) -> Option<(usize, &LinkHandle)> {
        if tried.is_empty() {
            let link = self.pick()?;
            let position = self.all_links().position(|l| std::ptr::eq(l, link))?;
            return Some((position, link));
        }
        self.all_links()
            .enumerate()
            .find(|(position, link)| link.is_up() && !tried.contains(position))
    }
}

/// Store-and-forward's way out: a reversal or advice goes out with a fresh
/// STAN, also while the issuer takes no new requests (a graceful stop still
/// delivers the queue).
impl Deliver for Issuer {
    fn deliver(&self, message: Message, deadline: Instant) -> Delivery<'_> {
        Box::pin(async move {
            let stan = self.reserve_stan();
            self.inner
                .links
                .send(message, stan, deadline)
                .await
                .map(|(response, _)| response)
        })
    }

    fn ready(&self) -> bool {
        self.is_available()
    }
}

#[cfg(test)]
mod links_tests {
    //! How [`Links::send`] treats a request a link gives back unsent.
    use super::*;
    use crate::iso8583::Mti;
    use crate::upstream::link::Command;
    use tokio::sync::mpsc;

    fn links(handles: Vec<LinkHandle>) -> Links {
        Links {
            endpoints: vec![EndpointLinks {
                label: "127.0.0.1:1".into(),
                links: handles,
            }],
            next: AtomicUsize::new(0),
        }
    }

    fn request() -> Message {
        let mut m = Message::new(Mti::from_static("0100"));
        m.set(11, "000001").expect("field 11");
        m
    }

    /// Plays a link task that answers every command with `answer`.
    fn answering(
        mut intake: mpsc::Receiver<Command>,
        answer: fn(Command),
    ) -> tokio::task::JoinHandle<usize> {
        tokio::spawn(async move {
            let mut taken = 0;
            while let Some(command) = intake.recv().await {
                taken += 1;
                answer(command);
            }
            taken
        })
    }

    fn respond(command: Command) {
        let response = Message::new(Mti::from_static("0110"));
        let _ = command.reply.send(Ok((response, command.stan)));
    }

    fn give_back(command: Command) {
        let _ = command.reply.send(Err(Failure::NotSent(command.request)));
    }

    fn time_out(command: Command) {
        let stan = command.stan;
        let _ = command
            .reply
            .send(Err(Failure::Failed(UpstreamError::Timeout {
                issuer_stan: stan,
            })));
    }

    fn deadline() -> Instant {
        Instant::now() + Duration::from_secs(10)
    }

    #[tokio::test]
    async fn a_request_given_back_unsent_goes_out_on_another_link() {
        let (first, first_intake) = LinkHandle::scripted();
        let (second, second_intake) = LinkHandle::scripted();
        let first_task = answering(first_intake, give_back);
        let second_task = answering(second_intake, respond);
        let links = links(vec![first, second]);

        let (response, stan) = links
            .send(request(), Stan(7), deadline())
            .await
            .expect("answered by the second link");
        assert_eq!(response.mti(), Mti::from_static("0110"));
        assert_eq!(stan, Stan(7));
        drop(links);
        assert_eq!(first_task.await.expect("task"), 1);
        assert_eq!(second_task.await.expect("task"), 1);
    }

    #[tokio::test]
    async fn a_link_whose_task_stopped_gives_the_request_back_too() {
        let (first, first_intake) = LinkHandle::scripted();
        drop(first_intake);
        let (second, second_intake) = LinkHandle::scripted();
        let second_task = answering(second_intake, respond);
        let links = links(vec![first, second]);

        assert!(links.send(request(), Stan(8), deadline()).await.is_ok());
        drop(links);
        assert_eq!(second_task.await.expect("task"), 1);
    }

    #[tokio::test]
    async fn a_request_that_may_have_reached_the_issuer_is_never_sent_again() {
        let (first, first_intake) = LinkHandle::scripted();
        let (second, second_intake) = LinkHandle::scripted();
        let first_task = answering(first_intake, time_out);
        let second_task = answering(second_intake, respond);
        let links = links(vec![first, second]);

        let result = links.send(request(), Stan(9), deadline()).await;
        assert!(
            matches!(
                result,
                Err(UpstreamError::Timeout {
                    issuer_stan: Stan(9)
                })
            ),
            "{result:?}"
        );
        drop(links);
        assert_eq!(first_task.await.expect("task"), 1);
        assert_eq!(second_task.await.expect("task"), 0, "sent once only");
    }

    #[tokio::test]
    async fn when_every_link_gives_it_back_the_request_is_unavailable_once_each_was_tried() {
        let (first, first_intake) = LinkHandle::scripted();
        let (second, second_intake) = LinkHandle::scripted();
        let first_task = answering(first_intake, give_back);
        let second_task = answering(second_intake, give_back);
        let links = links(vec![first, second]);

        let result = links.send(request(), Stan(10), deadline()).await;
        assert!(
            matches!(result, Err(UpstreamError::Unavailable)),
            "{result:?}"
        );
        drop(links);
        assert_eq!(first_task.await.expect("task"), 1);
        assert_eq!(second_task.await.expect("task"), 1);
    }
}

#[cfg(test)]
mod tests {
    //! The issuer over a scripted in-process issuer. What needs a socket
    //! (sign-on, echo, failover, reconnects, TLS) is tested in
    //! tests/issuer_links.rs against the one TCP fake issuer.
    use std::sync::Mutex;

    use super::*;
    use crate::iso8583::Mti;
    use crate::upstream::Decision;

    fn spec() -> Arc<Spec> {
        Arc::new(
            crate::specs::builtin("iso87ascii")
                .expect("shipped spec")
                .expect("compiles"),
        )
    }

    fn config(endpoints: Vec<Endpoint>) -> IssuerConfig {
        IssuerConfig {
            name: "test".into(),
            endpoints,
            spec: "iso87ascii".into(),
            header: "2b".into(),
            header_includes_self: false,
            connections: 1,
            timeout_ms: 5_000,
            echo_interval_s: 0,
            sign_on: false,
            tls: None,
        }
    }

    fn mti(text: &str) -> Mti {
        text.parse().expect("valid MTI")
    }

    /// An 0100 as the switch would forward it.
    fn authorization(stan: &str) -> Message {
        let mut m = Message::new(mti("0100"));
        for (field, value) in [
            (2, "4111111111111111"),
            (3, "000000"),
            (4, "000000001000"),
            (7, "0615120000"),
            (11, stan),
            (22, "051"),
            (32, "12345"),
            (35, "4111111111111111=2812"),
            (37, "000000000001"),
            (41, "TERM0001"),
            (42, "MERCHANT0000001"),
            (49, "840"),
        ] {
            m.set(field, value).expect("data field");
        }
        m
    }

    /// The issuer's answer to `request` with response code `code`.
    fn answer(request: &Message, code: &str) -> Message {
        let mut response = Message::new(request.mti().response().expect("a request"));
        for field in [2, 3, 4, 7, 11, 37, 41, 70, 90] {
            if let Some(value) = request.get(field) {
                response.set(field, value).expect("data field");
            }
        }
        response.set(39, code).expect("data field");
        response
    }

    /// Polls `check` every millisecond (virtual time under a paused clock) until it
    /// holds; fails after ten thousand tries.
    async fn wait_for(what: &str, check: impl Fn() -> bool) {
        for _ in 0..10_000 {
            if check() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("gave up waiting for {what}");
    }

    /// Timeout for tests that wait for one: short, yet long enough for a busy
    /// machine to answer the requests that are meant to be answered.
    const QUICK_TIMEOUT: Duration = Duration::from_millis(300);

    /// An in-process issuer that follows a script and remembers what it was asked.
    struct Scripted {
        decide: Box<dyn Fn(&Message) -> Decision + Send + Sync>,
        asked: Mutex<Vec<Message>>,
    }

    impl InProcessIssuer for Scripted {
        fn decide(&self, request: &Message) -> Decision {
            if let Ok(mut asked) = self.asked.lock() {
                asked.push(request.clone());
            }
            (self.decide)(request)
        }
    }

    impl Scripted {
        fn asked(&self) -> Vec<Message> {
            self.asked.lock().map(|a| a.clone()).unwrap_or_default()
        }
    }

    fn start_scripted(
        decide: impl Fn(&Message) -> Decision + Send + Sync + 'static,
    ) -> (Issuer, Arc<Scripted>, CancellationToken) {
        let scripted = Arc::new(Scripted {
            decide: Box::new(decide),
            asked: Mutex::new(Vec::new()),
        });
        let config = IssuerConfig {
            sign_on: true,
            ..config(vec![Endpoint::Simulator])
        };
        let shutdown = CancellationToken::new();
        let mut settings = link_settings(&config, spec()).expect("settings");
        settings.timeout = QUICK_TIMEOUT;
        settings.echo_interval = Some(Duration::from_millis(20));
        let in_process: Arc<dyn InProcessIssuer> = scripted.clone();
        let endpoints = connectors(&config, Some(in_process)).expect("connectors");
        let issuer = Issuer::launch(&config.name, settings, endpoints, shutdown.clone());
        (issuer, scripted, shutdown)
    }

    fn respond(request: &Message) -> Decision {
        Decision::Respond {
            response: answer(request, "00"),
            delay: None,
        }
    }

    #[tokio::test]
    async fn in_process_simulator_answers_after_its_delay_without_sign_on_or_echo() {
        let delay = Duration::from_millis(150);
        let (issuer, scripted, shutdown) = start_scripted(move |m| Decision::Respond {
            response: answer(m, "00"),
            delay: Some(delay),
        });
        wait_for("simulator link up", || issuer.is_available()).await;
        let started = Instant::now();
        let response = issuer
            .request(authorization("123456"))
            .await
            .expect("answered");
        assert!(started.elapsed() >= delay);
        assert_eq!(response.get_str(11), Some("123456"));
        let asked: Vec<Mti> = scripted.asked().iter().map(Message::mti).collect();
        assert_eq!(asked, vec![mti("0100")], "no sign-on or echo in process");
        assert_eq!(issuer.status().endpoints[0].address, "sim");
        shutdown.cancel();
    }

    #[tokio::test]
    async fn in_process_drop_times_out_naming_the_stan_it_went_out_with() {
        let (issuer, scripted, shutdown) = start_scripted(|m| match m.mti().as_str() {
            "0100" => Decision::Drop,
            _ => respond(m),
        });
        wait_for("simulator link up", || issuer.is_available()).await;
        let stan = issuer.reserve_stan();
        let error = issuer
            .request_as(authorization("123456"), stan)
            .await
            .expect_err("dropped");
        assert!(
            matches!(error, UpstreamError::Timeout { issuer_stan } if issuer_stan == stan),
            "{error:?}"
        );
        // Reversing is the switch's: it journaled the request. The issuer
        // only saw the request, under the STAN the caller took.
        let asked = scripted.asked();
        assert_eq!(asked.len(), 1);
        assert_eq!(asked[0].get_str(11), Some(stan.to_string().as_str()));
        shutdown.cancel();
    }

    #[tokio::test]
    async fn in_process_close_loses_the_request_naming_its_stan() {
        let (issuer, _scripted, shutdown) = start_scripted(|m| match m.mti().as_str() {
            "0100" => Decision::Close,
            _ => respond(m),
        });
        wait_for("simulator link up", || issuer.is_available()).await;
        let stan = issuer.reserve_stan();
        let error = issuer
            .request_as(authorization("123456"), stan)
            .await
            .expect_err("closed");
        assert!(
            matches!(error, UpstreamError::ConnectionLost { issuer_stan } if issuer_stan == stan),
            "{error:?}"
        );
        assert!(issuer.is_available(), "the simulator is always there");
        shutdown.cancel();
    }

    #[tokio::test]
    async fn delivery_goes_out_while_the_issuer_takes_no_new_requests() {
        let (issuer, scripted, shutdown) = start_scripted(respond);
        wait_for("simulator link up", || issuer.is_available()).await;
        issuer.stop_taking_requests();
        let mut reversal = authorization("000042");
        reversal.set_mti(mti("0400"));
        let deadline = Instant::now() + Duration::from_secs(10);
        let answer = issuer.deliver(reversal, deadline).await.expect("answered");
        assert_eq!(answer.mti(), mti("0410"));
        let asked: Vec<Mti> = scripted.asked().iter().map(Message::mti).collect();
        assert_eq!(asked, vec![mti("0400")]);
        shutdown.cancel();
    }

    #[tokio::test]
    async fn a_draining_issuer_refuses_new_requests_and_lets_sent_ones_time_out() {
        let (issuer, scripted, shutdown) = start_scripted(|m| match m.mti().as_str() {
            "0100" => Decision::Drop,
            _ => respond(m),
        });
        wait_for("simulator link up", || issuer.is_available()).await;
        let in_flight = tokio::spawn({
            let issuer = issuer.clone();
            async move { issuer.request(authorization("123456")).await }
        });
        wait_for("request outstanding", || issuer.status().outstanding == 1).await;

        issuer.stop_taking_requests();
        assert!(matches!(
            issuer.request(authorization("000002")).await,
            Err(UpstreamError::Unavailable)
        ));
        let deadline = Instant::now() + Duration::from_secs(10);
        assert!(issuer.drained(deadline).await, "the held request timed out");
        let outcome = in_flight.await.expect("task");
        assert!(
            matches!(outcome, Err(UpstreamError::Timeout { .. })),
            "{outcome:?}"
        );
        let asked: Vec<Mti> = scripted.asked().iter().map(Message::mti).collect();
        assert_eq!(asked, vec![mti("0100")]);
        shutdown.cancel();
    }

    #[test]
    fn sim_endpoint_without_a_simulator_is_a_config_error() {
        // Refused before anything is spawned, so no runtime is needed.
        let result = Issuer::start(
            &config(vec![Endpoint::Simulator]),
            spec(),
            None,
            CancellationToken::new(),
        );
        let Err(error) = result else {
            panic!("expected a config error");
        };
        assert!(!error.is_upstream_fault());
        assert!(error.to_string().contains("\"sim\""), "{error}");
    }
}
