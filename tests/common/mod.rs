//! What the `switch_*` tests share: a switch started in process from a TOML
//! string (every socket on 127.0.0.1:0), issuer simulators on TCP, a recording
//! relay to see what an issuer received, and a terminal that speaks any framing,
//! with or without TLS. Dropping a handle stops what it started.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

pub mod log_capture;
mod ports;
mod wait;

pub use ports::HeldPort;
pub use wait::poll_until;

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use isoswitch::config::Config;
use isoswitch::frame::{Frame, FrameCodec, Tpdu};
use isoswitch::iso8583::{Message, Mti, Spec};
use isoswitch::journal::Stores;
use isoswitch::server::Listener;
use isoswitch::simulator::Simulator;
use isoswitch::simulator::SimulatorConfig;
use isoswitch::switch::Switch;
use isoswitch::upstream::{Issuer, SafSettings};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

/// Longest a test waits for one response or one condition before failing.
pub const WAIT: Duration = Duration::from_secs(10);

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// Logs to the test output when `RUST_LOG` is set; silent otherwise.
fn init_logging() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_default_env() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_test_writer()
                .try_init();
        }
    });
}

/// The spec every test listener and issuer uses.
pub fn spec() -> Arc<Spec> {
    static SPEC: OnceLock<Arc<Spec>> = OnceLock::new();
    SPEC.get_or_init(|| {
        Arc::new(
            isoswitch::specs::builtin("iso87ascii")
                .expect("shipped spec")
                .expect("shipped spec compiles"),
        )
    })
    .clone()
}

/// Parses a switch config and moves every bind (listeners, metrics, simulator)
/// to 127.0.0.1:0, so tests never contend for a port.
pub fn parse_config(toml: &str) -> Config {
    let mut config = Config::from_toml_str(toml, "test config").expect("test config is valid");
    for listener in &mut config.listeners {
        listener.bind = loopback();
    }
    config.metrics.bind = loopback();
    if let Some(simulator) = &mut config.simulator {
        simulator.bind = loopback();
    }
    config
}

/// One POS listener and an issuer "bank" (at `endpoints`, TOML strings) for
/// cards starting 4, answering within `timeout_ms`, with no echoes.
pub fn bank_config(endpoints: &str, timeout_ms: u64) -> String {
    format!(
        r#"
[[listener]]
name = "pos"
bind = "127.0.0.1:0"

[[issuer]]
name = "bank"
endpoints = [{endpoints}]
timeout_ms = {timeout_ms}
echo_interval_s = 0

[[route]]
name = "visa"
bins = ["4"]
issuer = "bank"
"#
    )
}

/// Polls `condition` until it holds; fails the test after [`WAIT`].
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    poll_until(what, WAIT, || std::future::ready(condition().then_some(()))).await
}

// ---------------------------------------------------------------- the switch

/// A switch with its listeners, running until dropped.
pub struct TestSwitch {
    pub switch: Arc<Switch>,
    listeners: HashMap<String, SocketAddr>,
    pub shutdown: CancellationToken,
}

impl TestSwitch {
    /// Starts the switch and every `[[listener]]` of `toml`, and waits until each
    /// issuer has a link up (so the first request does not race the links).
    pub async fn start(toml: &str) -> TestSwitch {
        TestSwitch::start_with(toml, Stores::in_memory()).await
    }

    /// As [`TestSwitch::start`], journaling to `stores` (shared with a
    /// later switch to play a restart).
    pub async fn start_with(toml: &str, stores: Stores) -> TestSwitch {
        let running = TestSwitch::start_with_issuers_down(toml, stores).await;
        running.wait_for_issuers().await;
        running
    }

    /// As [`TestSwitch::start_with`], without waiting for any issuer link.
    pub async fn start_with_issuers_down(toml: &str, stores: Stores) -> TestSwitch {
        init_logging();
        let config = parse_config(toml);
        let shutdown = CancellationToken::new();
        let mut bound = Vec::new();
        for listener in &config.listeners {
            bound.push(Listener::bind(listener).await.expect("listener binds"));
        }
        let switch = Switch::start_with(config, stores, SafSettings::default(), shutdown.clone())
            .expect("switch starts");
        let mut listeners = HashMap::new();
        for listener in bound {
            let addr = listener
                .local_addr()
                .expect("bound listener has an address");
            listeners.insert(listener.name().to_string(), addr);
            tokio::spawn(listener.run(switch.clone(), shutdown.clone()));
        }
        TestSwitch {
            switch,
            listeners,
            shutdown,
        }
    }

    /// Waits until every issuer of the current snapshot can take a request.
    pub async fn wait_for_issuers(&self) {
        let snapshot = self.switch.snapshot();
        eventually("every issuer has a link up", || {
            snapshot.issuers.iter().all(|e| e.issuer.is_available())
        })
        .await;
    }

    /// Where listener `name` accepts connections.
    pub fn addr(&self, name: &str) -> SocketAddr {
        *self
            .listeners
            .get(name)
            .unwrap_or_else(|| panic!("no listener named {name:?}"))
    }

    /// A plain-TCP terminal with 2-byte binary headers on listener `name`.
    pub async fn terminal(&self, name: &str) -> Terminal {
        Terminal::connect(self.addr(name), Framing::default()).await
    }

    /// The in-process simulator.
    pub fn simulator(&self) -> Arc<Simulator> {
        self.switch
            .simulator()
            .expect("the config runs the in-process simulator")
            .clone()
    }

    /// The running issuer `name` of the current snapshot.
    pub fn issuer(&self, name: &str) -> Issuer {
        self.switch
            .snapshot()
            .issuer(name)
            .unwrap_or_else(|| panic!("no issuer named {name:?}"))
            .clone()
    }
}

impl Drop for TestSwitch {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

// ------------------------------------------------------ issuers on a socket

/// An issuer simulator on a TCP socket, running until dropped.
pub struct TcpSimulator {
    pub sim: Arc<Simulator>,
    pub addr: SocketAddr,
    shutdown: CancellationToken,
}

impl TcpSimulator {
    /// Starts a simulator from the body of a `[simulator]` section (rules as
    /// `[[rule]]`, accounts as `[[account]]`); it binds 127.0.0.1:0.
    pub async fn start(toml: &str) -> TcpSimulator {
        init_logging();
        let mut config: SimulatorConfig = toml::from_str(toml).expect("simulator config is valid");
        config.bind = loopback();
        let sim = Arc::new(Simulator::new(&config).expect("simulator builds"));
        let shutdown = CancellationToken::new();
        let (addr, _task) =
            isoswitch::simulator::bind_and_serve_with(sim.clone(), &config, shutdown.clone())
                .await
                .expect("simulator binds");
        TcpSimulator {
            sim,
            addr,
            shutdown,
        }
    }

    /// The address as an `endpoints` entry.
    pub fn endpoint(&self) -> String {
        format!("\"{}\"", self.addr)
    }
}

impl Drop for TcpSimulator {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// An address nothing listens on, held (refusing connections) until dropped.
pub async fn closed_port() -> HeldPort {
    HeldPort::new()
}

/// One message the tap saw, and which way it went.
#[derive(Debug, Clone)]
pub struct Tapped {
    pub to_issuer: bool,
    pub message: Message,
}

/// A relay between the switch and an issuer (2-byte binary headers) that
/// records every message that crosses it, so a test can see exactly what the
/// issuer received — STANs the switch rewrote included.
pub struct IssuerTap {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Tapped>>>,
    shutdown: CancellationToken,
}

impl IssuerTap {
    pub async fn start(upstream: SocketAddr) -> IssuerTap {
        let listener = TcpListener::bind(loopback()).await.expect("tap binds");
        let addr = listener.local_addr().expect("tap has an address");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let shutdown = CancellationToken::new();
        let (record, token) = (seen.clone(), shutdown.clone());
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = token.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                let Ok((downstream, _)) = accepted else {
                    continue;
                };
                tokio::spawn(relay(downstream, upstream, record.clone(), token.clone()));
            }
        });
        IssuerTap {
            addr,
            seen,
            shutdown,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("\"{}\"", self.addr)
    }

    /// Messages the switch sent to the issuer, in order.
    pub fn sent_to_issuer(&self) -> Vec<Message> {
        self.seen
            .lock()
            .expect("tap record")
            .iter()
            .filter(|t| t.to_issuer)
            .map(|t| t.message.clone())
            .collect()
    }
}

impl Drop for IssuerTap {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn relay(
    downstream: TcpStream,
    upstream: SocketAddr,
    seen: Arc<Mutex<Vec<Tapped>>>,
    shutdown: CancellationToken,
) {
    let Ok(upstream) = TcpStream::connect(upstream).await else {
        return;
    };
    let codec = || FrameCodec::new(isoswitch::frame::FrameConfig::default());
    let mut switch_side = Framed::new(downstream, codec());
    let mut issuer_side = Framed::new(upstream, codec());
    let spec = spec();
    let record = |frame: &Frame, to_issuer: bool| {
        if let Ok(message) = Message::decode(&spec, frame.payload.clone()) {
            seen.lock()
                .expect("tap record")
                .push(Tapped { to_issuer, message });
        }
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            from_switch = switch_side.next() => match from_switch {
                Some(Ok(frame)) => {
                    record(&frame, true);
                    if issuer_side.send(frame).await.is_err() {
                        return;
                    }
                }
                _ => return,
            },
            from_issuer = issuer_side.next() => match from_issuer {
                Some(Ok(frame)) => {
                    record(&frame, false);
                    if switch_side.send(frame).await.is_err() {
                        return;
                    }
                }
                _ => return,
            },
        }
    }
}

// ------------------------------------------------------------- the terminal

/// How a terminal frames its messages.
#[derive(Debug, Clone, Copy)]
pub struct Framing {
    pub header: &'static str,
    pub includes_self: bool,
    pub tpdu: Option<Tpdu>,
}

impl Default for Framing {
    fn default() -> Self {
        Framing {
            header: "2b",
            includes_self: false,
            tpdu: None,
        }
    }
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// A terminal (or acquiring host) connection to a switch listener.
pub struct Terminal {
    framed: Framed<Box<dyn Stream>, FrameCodec>,
    spec: Arc<Spec>,
    tpdu: Option<Tpdu>,
}

impl Terminal {
    pub async fn connect(addr: SocketAddr, framing: Framing) -> Terminal {
        let tcp = TcpStream::connect(addr).await.expect("terminal connects");
        tcp.set_nodelay(true).expect("nodelay");
        Terminal::over(Box::new(tcp), framing)
    }

    /// Connects with TLS; the error is the handshake's (or the connection's).
    pub async fn connect_tls(
        addr: SocketAddr,
        framing: Framing,
        connector: &tokio_rustls::TlsConnector,
    ) -> io::Result<Terminal> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("a DNS name");
        let tls = tokio::time::timeout(WAIT, connector.connect(name, tcp))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))??;
        Ok(Terminal::over(Box::new(tls), framing))
    }

    fn over(stream: Box<dyn Stream>, framing: Framing) -> Terminal {
        let config = isoswitch::server::frame_config(
            framing.header,
            framing.includes_self,
            framing.tpdu.is_some(),
        )
        .expect("a valid framing");
        Terminal {
            framed: Framed::new(stream, FrameCodec::new(config)),
            spec: spec(),
            tpdu: framing.tpdu,
        }
    }

    fn frame(&self, message: &Message) -> Frame {
        let payload = message.encode(&self.spec).expect("request encodes");
        match self.tpdu {
            Some(tpdu) => Frame::with_tpdu(tpdu, payload),
            None => Frame::new(payload),
        }
    }

    /// Sends one message and flushes.
    pub async fn send(&mut self, message: &Message) {
        let frame = self.frame(message);
        self.framed.send(frame).await.expect("request sent");
    }

    /// Sends one message; false if the connection refused it (closed, reset).
    pub async fn try_send(&mut self, message: &Message) -> bool {
        let frame = self.frame(message);
        self.framed.send(frame).await.is_ok()
    }

    /// Queues one message without flushing (to pipeline many in one write).
    pub async fn feed(&mut self, message: &Message) {
        let frame = self.frame(message);
        self.framed.feed(frame).await.expect("request queued");
    }

    pub async fn flush(&mut self) {
        SinkExt::<Frame>::flush(&mut self.framed)
            .await
            .expect("requests flushed");
    }

    /// Writes bytes straight to the socket, past the framing.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        let stream = self.framed.get_mut();
        stream.write_all(bytes).await.expect("raw bytes sent");
        stream.flush().await.expect("raw bytes flushed");
    }

    /// The next frame; fails the test if none arrives within [`WAIT`].
    pub async fn recv_frame(&mut self) -> Frame {
        match tokio::time::timeout(WAIT, self.framed.next()).await {
            Err(_) => panic!("no response within {WAIT:?}"),
            Ok(None) => panic!("the switch closed the connection"),
            Ok(Some(Err(e))) => panic!("reading the response: {e}"),
            Ok(Some(Ok(frame))) => frame,
        }
    }

    /// The next message; fails the test if none arrives within [`WAIT`].
    pub async fn recv(&mut self) -> Message {
        let frame = self.recv_frame().await;
        Message::decode(&self.spec, frame.payload).expect("response decodes")
    }

    /// Sends `request` and returns the next message.
    pub async fn exchange(&mut self, request: &Message) -> Message {
        self.send(request).await;
        self.recv().await
    }

    /// Whether the other side closes the connection (or it breaks) before
    /// sending anything; false if a frame arrives. Fails after [`WAIT`].
    pub async fn is_closed(&mut self) -> bool {
        match tokio::time::timeout(WAIT, self.framed.next()).await {
            Err(_) => panic!("the connection neither closed nor answered within {WAIT:?}"),
            Ok(None | Some(Err(_))) => true,
            Ok(Some(Ok(_))) => false,
        }
    }
}

// ------------------------------------------------------------------ messages

static NEXT_STAN: AtomicU32 = AtomicU32::new(1);

/// A STAN no other request of this test process uses.
pub fn next_stan() -> String {
    let n = NEXT_STAN.fetch_add(1, Ordering::Relaxed) % 1_000_000;
    format!("{n:06}")
}

/// Field 7 of every request: a fixed, valid MMDDhhmmss.
pub const TRANSMISSION_TIME: &str = "0615120000";

/// A terminal request: fields 2, 3 (purchase), 4, 7, 11 (a fresh STAN) and 41.
pub fn request(mti: &str, pan: &str, amount: u64) -> Message {
    let mut message = Message::new(mti.parse::<Mti>().expect("a valid MTI"));
    let fields = [
        (2, pan.to_string()),
        (3, "000000".to_string()),
        (4, format!("{amount:012}")),
        (7, TRANSMISSION_TIME.to_string()),
        (11, next_stan()),
        (41, "TERM0001".to_string()),
    ];
    for (n, value) in fields {
        message.set(n, value).expect("a data field");
    }
    message
}

/// An 0100 authorization.
pub fn authorization(pan: &str, amount: u64) -> Message {
    request("0100", pan, amount)
}

/// An 0200 purchase.
pub fn purchase(pan: &str, amount: u64) -> Message {
    request("0200", pan, amount)
}

/// `message` with field `n` set to `value`.
pub fn with(mut message: Message, n: u8, value: &str) -> Message {
    message.set(n, value).expect("a data field");
    message
}

/// Field 39 of a response.
pub fn code(response: &Message) -> &str {
    response.get_str(39).unwrap_or("(no field 39)")
}

// ---------------------------------------------------------------------- TLS

/// A CA, a server certificate for "localhost" and a client certificate, all
/// signed by the CA, written as PEM to a fresh directory removed on drop.
pub struct TlsFiles {
    pub dir: PathBuf,
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    ca_der: rustls::pki_types::CertificateDer<'static>,
    client_cert: rustls::pki_types::CertificateDer<'static>,
    client_key: Vec<u8>,
}

impl TlsFiles {
    pub fn generate() -> TlsFiles {
        TlsFiles::build(None)
    }

    /// As [`TlsFiles::generate`], with a server certificate that is valid
    /// only until `not_after` (X.509 keeps whole seconds).
    pub fn generate_server_expiring(not_after: time::OffsetDateTime) -> TlsFiles {
        TlsFiles::build(Some(not_after))
    }

    fn build(server_not_after: Option<time::OffsetDateTime>) -> TlsFiles {
        static NEXT_DIR: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "isoswitch-test-tls-{}-{}",
            std::process::id(),
            NEXT_DIR.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");

        let ca_key = rcgen::KeyPair::generate().expect("CA key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "isoswitch test CA");
        ca_params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let ca_cert = ca_params.self_signed(&ca_key).expect("CA certificate");
        let ca = rcgen::Issuer::new(ca_params, ca_key);

        let server_key = rcgen::KeyPair::generate().expect("server key");
        let mut server_params =
            rcgen::CertificateParams::new(vec!["localhost".to_string()]).expect("server params");
        if let Some(not_after) = server_not_after {
            server_params.not_after = not_after;
        }
        let server_cert = server_params
            .signed_by(&server_key, &ca)
            .expect("server certificate");

        let client_key = rcgen::KeyPair::generate().expect("client key");
        let mut client_params = rcgen::CertificateParams::new(vec!["terminal-0001".to_string()])
            .expect("client params");
        client_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "TERM0001");
        client_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let client_cert = client_params
            .signed_by(&client_key, &ca)
            .expect("client certificate");

        let write = |name: &str, text: String| -> PathBuf {
            let path = dir.join(name);
            std::fs::write(&path, text).expect("PEM written");
            path
        };
        TlsFiles {
            ca: write("ca.pem", ca_cert.pem()),
            server_cert: write("server.pem", server_cert.pem()),
            server_key: write("server.key", server_key.serialize_pem()),
            dir,
            ca_der: ca_cert.der().clone(),
            client_cert: client_cert.der().clone(),
            client_key: client_key.serialize_der(),
        }
    }

    /// A listener's `tls = {...}` value; `client_ca` makes client certificates required.
    pub fn listener_tls(&self, client_ca: bool) -> String {
        let client_ca = if client_ca {
            format!(", client_ca = {}", toml_path(&self.ca))
        } else {
            String::new()
        };
        format!(
            "{{ cert = {}, key = {}{client_ca} }}",
            toml_path(&self.server_cert),
            toml_path(&self.server_key)
        )
    }

    /// A client trusting the CA; with `certificate`, it presents the CA-signed one.
    pub fn connector(&self, certificate: bool) -> tokio_rustls::TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der.clone()).expect("CA certificate");
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots);
        let config = if certificate {
            let key = rustls::pki_types::PrivateKeyDer::Pkcs8(self.client_key.clone().into());
            builder
                .with_client_auth_cert(vec![self.client_cert.clone()], key)
                .expect("client certificate")
        } else {
            builder.with_no_client_auth()
        };
        tokio_rustls::TlsConnector::from(Arc::new(config))
    }
}

impl Drop for TlsFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A path as a TOML string.
fn toml_path(path: &Path) -> String {
    toml::Value::String(path.display().to_string()).to_string()
}

// ------------------------------------------------------- a scripted issuer

// One fake issuer on TCP for the tests that script the issuer side
// (issuer_links, graceful_stop): it reports what it receives and answers
// as its script says.
/// The issuer's answer to `request` with response code `code`.
pub fn answer(request: &Message, code: &str) -> Message {
    let mut response = Message::new(request.mti().response().expect("a request"));
    for field in [2, 3, 4, 7, 11, 32, 37, 41, 70, 90] {
        if let Some(value) = request.get(field) {
            response.set(field, value).expect("data field");
        }
    }
    response.set(39, code).expect("data field");
    response
}

/// Field 90's STAN digits (positions 4..10).
pub fn field_90_stan(message: &Message) -> Option<String> {
    message
        .get_str(90)
        .and_then(|f| f.get(4..10))
        .map(str::to_string)
}

/// What the fake issuer does with one message.
pub enum Act {
    Answer(Vec<Message>),
    /// Say nothing (the test may answer later through `Seen::out`).
    Hold,
    /// Close this connection; the issuer accepts new ones.
    Close,
    /// Close this connection and stop accepting new ones (issuer down).
    CloseAndDie,
    /// Write these bytes as they are, past the framing (garbage, a bare
    /// length header), and keep the connection.
    Raw(Vec<u8>),
    /// Write these bytes as they are, then close (an answer cut off midway).
    RawThenClose(Vec<u8>),
}

pub type Script = Arc<dyn Fn(&Message) -> Act + Send + Sync>;

/// One event at the fake issuer.
pub enum Seen {
    /// A connection was accepted; connections are numbered from 0.
    Connected(usize),
    Message {
        connection: usize,
        message: Message,
        out: tokio::sync::mpsc::UnboundedSender<Message>,
    },
}

/// A scripted issuer on 127.0.0.1:0 with 2-byte binary length headers.
pub struct FakeIssuer {
    pub addr: SocketAddr,
    seen: tokio::sync::mpsc::UnboundedReceiver<Seen>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeIssuer {
    /// Waits up to `within` for a reversal whose field 90 names `stan`; if
    /// none comes, the STANs the reversals that did come named.
    pub async fn reversal_naming(
        &mut self,
        stan: &str,
        within: Duration,
    ) -> Result<(), Vec<Option<String>>> {
        let mut named = Vec::new();
        let found = tokio::time::timeout(within, async {
            loop {
                let (reversal, _) = self.next_of_class(4).await;
                let named_stan = field_90_stan(&reversal);
                named.push(named_stan.clone());
                if named_stan.as_deref() == Some(stan) {
                    return;
                }
            }
        })
        .await;
        found.map_err(|_| named)
    }

    pub async fn start(script: Script) -> FakeIssuer {
        let listener = TcpListener::bind(loopback()).await.expect("fake binds");
        FakeIssuer::serve(listener, script, None)
    }

    /// A fake on `listener`, speaking TLS when `tls` is given.
    pub fn serve(
        listener: TcpListener,
        script: Script,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> FakeIssuer {
        let addr = listener.local_addr().expect("address");
        let (report, seen) = tokio::sync::mpsc::unbounded_channel();
        let die = CancellationToken::new();
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            for id in 0.. {
                let accepted = tokio::select! {
                    _ = die.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                let Ok((tcp, _)) = accepted else { return };
                let _ = report.send(Seen::Connected(id));
                let (script, report, die) = (script.clone(), report.clone(), die.clone());
                let tls = tls.clone();
                connections.spawn(async move {
                    match tls {
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(tcp).await {
                                serve_fake_connection(stream, id, script, report, die).await;
                            }
                        }
                        None => serve_fake_connection(tcp, id, script, report, die).await,
                    }
                });
            }
        });
        FakeIssuer { addr, seen, task }
    }

    pub fn endpoint(&self) -> String {
        format!("\"{}\"", self.addr)
    }

    /// Stops listening and drops every connection, like a crashed issuer.
    pub async fn stop(self) {
        self.task.abort();
    }

    /// The next message received, on whichever connection.
    pub async fn next_message(
        &mut self,
    ) -> (usize, Message, tokio::sync::mpsc::UnboundedSender<Message>) {
        loop {
            if let Seen::Message {
                connection,
                message,
                out,
            } = self.next().await
            {
                return (connection, message, out);
            }
        }
    }

    /// The next connection accepted.
    pub async fn next_connection(&mut self) -> usize {
        loop {
            if let Seen::Connected(id) = self.next().await {
                return id;
            }
        }
    }

    pub async fn next(&mut self) -> Seen {
        match tokio::time::timeout(WAIT, self.seen.recv()).await {
            Ok(Some(seen)) => seen,
            Ok(None) => panic!("the fake issuer stopped"),
            Err(_) => panic!("nothing reached the fake issuer within {WAIT:?}"),
        }
    }

    /// What the fake has reported and the test has not taken yet, without waiting.
    pub fn try_next(&mut self) -> Option<Seen> {
        self.seen.try_recv().ok()
    }

    /// The next message of MTI class `class` (2 = financial, 4 = reversal).
    pub async fn next_of_class(
        &mut self,
        class: u8,
    ) -> (Message, tokio::sync::mpsc::UnboundedSender<Message>) {
        loop {
            if let Seen::Message { message, out, .. } = self.next().await {
                if message.mti().class() == class {
                    return (message, out);
                }
            }
        }
    }
}

impl Drop for FakeIssuer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_fake_connection<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    id: usize,
    script: Script,
    report: tokio::sync::mpsc::UnboundedSender<Seen>,
    die: CancellationToken,
) {
    let spec = spec();
    let mut framed = Framed::new(
        stream,
        FrameCodec::new(isoswitch::frame::FrameConfig::default()),
    );
    let (out, mut outgoing) = tokio::sync::mpsc::unbounded_channel::<Message>();
    loop {
        tokio::select! {
            _ = die.cancelled() => return,
            frame = framed.next() => {
                let Some(Ok(frame)) = frame else { return };
                let Ok(message) = Message::decode(&spec, frame.payload) else { continue };
                let act = script(&message);
                let _ = report.send(Seen::Message { connection: id, message, out: out.clone() });
                match act {
                    Act::Answer(messages) => {
                        for m in messages {
                            let payload = m.encode(&spec).expect("fake answers encode");
                            if framed.send(Frame::new(payload)).await.is_err() {
                                return;
                            }
                        }
                    }
                    Act::Hold => {}
                    Act::Raw(bytes) => {
                        if write_raw(framed.get_mut(), &bytes).await.is_err() {
                            return;
                        }
                    }
                    Act::RawThenClose(bytes) => {
                        let _ = write_raw(framed.get_mut(), &bytes).await;
                        return;
                    }
                    Act::Close => return,
                    Act::CloseAndDie => {
                        die.cancel();
                        return;
                    }
                }
            }
            Some(m) = outgoing.recv() => {
                let payload = m.encode(&spec).expect("test messages encode");
                if framed.send(Frame::new(payload)).await.is_err() {
                    return;
                }
            }
        }
    }
}

async fn write_raw<S: AsyncWrite + Unpin>(stream: &mut S, bytes: &[u8]) -> io::Result<()> {
    stream.write_all(bytes).await?;
    stream.flush().await
}

/// `message` as the fake issuer frames it (2-byte binary length header), for
/// a script that writes it whole, cut short or after garbage.
pub fn framed_bytes(message: &Message) -> Vec<u8> {
    let payload = message.encode(&spec()).expect("test messages encode");
    isoswitch::frame::encode_frame(
        &isoswitch::frame::FrameConfig::default(),
        &Frame::new(payload),
    )
    .expect("test messages frame")
}

/// Answers every request with 00.
pub fn approve_everything() -> Script {
    Arc::new(|m: &Message| match m.mti().response() {
        Some(_) => Act::Answer(vec![answer(m, "00")]),
        None => Act::Hold,
    })
}
