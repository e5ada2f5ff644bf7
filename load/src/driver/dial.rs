//! Connect-per-request, as dial-up and GPRS terminals work: each worker
//! connects, shakes hands when TLS is on, sends one request, reads its answer
//! and closes, then starts over. The connect and the handshake are part of the
//! transaction's latency, and a connect or handshake that fails is an error
//! of that transaction, counted with its reason, not the end of the run.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Result;
use futures_util::{SinkExt, StreamExt};
use isoswitch::frame::{Frame, FrameCodec};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

use super::{lock, ByteStream, Connection, RunConfig, TlsTarget};

/// Opens connections to the target: TCP, then TLS when configured.
#[derive(Clone)]
pub(super) struct Dialer {
    addr: SocketAddr,
    tls: Option<TlsTarget>,
    /// The connect, and the handshake, each get this long.
    pub(super) timeout: Duration,
}

/// Why a connection could not be opened; the text is the reason the report counts.
#[derive(Debug, thiserror::Error)]
pub(super) enum DialError {
    #[error("connecting: no answer within {0} ms")]
    ConnectTimeout(u128),
    #[error("connecting: {0}")]
    Connect(std::io::Error),
    #[error("setting TCP_NODELAY: {0}")]
    NoDelay(std::io::Error),
    #[error("TLS handshake: no answer within {0} ms")]
    HandshakeTimeout(u128),
    #[error("TLS handshake: {0}")]
    Handshake(std::io::Error),
}

impl Dialer {
    pub(super) fn new(config: &RunConfig) -> Dialer {
        Dialer {
            addr: config.addr,
            tls: config.tls.clone(),
            timeout: config.timeout,
        }
    }

    pub(super) async fn connect(&self) -> Result<Box<dyn ByteStream>, DialError> {
        let limit = self.timeout;
        let tcp = tokio::time::timeout(limit, TcpStream::connect(self.addr))
            .await
            .map_err(|_| DialError::ConnectTimeout(limit.as_millis()))?
            .map_err(DialError::Connect)?;
        // Requests are small and latency is what we measure: no Nagle delay.
        tcp.set_nodelay(true).map_err(DialError::NoDelay)?;
        match &self.tls {
            None => Ok(Box::new(tcp)),
            Some(tls) => {
                let stream = tokio::time::timeout(
                    limit,
                    tls.connector.connect(tls.server_name.clone(), tcp),
                )
                .await
                .map_err(|_| DialError::HandshakeTimeout(limit.as_millis()))?
                .map_err(DialError::Handshake)?;
                Ok(Box::new(stream))
            }
        }
    }
}

impl Connection {
    /// Runs transactions one after the other, each on a connection of its own,
    /// until the quota or the duration is used up or `stop` is cancelled.
    pub(super) async fn dial(mut self, dialer: Dialer, stop: CancellationToken) {
        loop {
            if stop.is_cancelled() {
                self.stopped = true;
            }
            let began = Instant::now();
            if !self.may_send(began) {
                return;
            }
            if let Err(e) = self.dial_once(&dialer, began).await {
                self.fail(&format!("{e:#}"));
                return;
            }
        }
    }

    /// One transaction: connect, send, read the answer, close. Errors only when
    /// no request can be built; what the network does is counted instead.
    async fn dial_once(&mut self, dialer: &Dialer, began: Instant) -> Result<()> {
        let stream = match dialer.connect().await {
            Ok(stream) => stream,
            Err(e) => {
                self.consume_quota();
                self.dial_failed(&e.to_string());
                return Ok(());
            }
        };
        lock(&self.tally).connections_opened += 1;
        self.enqueue(began)?;
        let Some(request) = self.queue.pop_front() else {
            return Ok(());
        };
        // The request's deadline counts from the start of the connect.
        let deadline = began + dialer.timeout;
        let mut framed = Framed::new(stream, FrameCodec::new(self.frame));
        match tokio::time::timeout_at(deadline.into(), exchange(&mut framed, request)).await {
            Err(_) => {
                let expired = self.outstanding.expire_all();
                lock(&self.tally).timeouts += expired;
            }
            Ok(Err(why)) => self.dial_failed(&why),
            Ok(Ok(answer)) => {
                self.on_frame(answer)?;
                // An answer that matched nothing leaves its request unanswered.
                let unanswered = self.outstanding.forget_all();
                lock(&self.tally).lost += unanswered;
            }
        }
        // A terminal hangs up once it has its answer: FIN, and close_notify over TLS.
        let _ = framed.get_mut().shutdown().await;
        Ok(())
    }

    /// Counts a connection that failed before its answer, and the request on
    /// it (if it was sent) as lost.
    fn dial_failed(&mut self, why: &str) {
        let lost = self.outstanding.forget_all();
        {
            let mut tally = lock(&self.tally);
            tally.count_connection_error(why);
            tally.lost += lost;
        }
        self.say_limited(why);
    }
}

/// Writes the request and reads one frame back.
async fn exchange(
    framed: &mut Framed<Box<dyn ByteStream>, FrameCodec>,
    request: Frame,
) -> Result<Frame, String> {
    framed
        .send(request)
        .await
        .map_err(|e| format!("writing: {e}"))?;
    match framed.next().await {
        Some(Ok(answer)) => Ok(answer),
        Some(Err(e)) => Err(format!("reading: {e}")),
        None => Err("the switch closed the connection before answering".to_string()),
    }
}
