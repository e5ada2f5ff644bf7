//! The simulator on a socket: one task per connection answers every framed request
//! as [`Simulator::decide`] says, several in flight at once, delayed answers on
//! their own timers, and answers coalesced into few writes. With a record
//! file, each message's line is in the file before its answer is written.

use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::codec::{Encoder, FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;

use super::config::SimulatorConfig;
use super::record::{self, Answered, Line, LineNo, RecordError, Recorder};
use super::{Decision, Simulator, SimulatorError};
use crate::frame::{Frame, FrameCodec, FrameConfig};
use crate::iso8583::{Message, Spec};
use crate::upstream::InProcessIssuer;

/// Delayed answers waiting for their connection.
const WRITE_QUEUE: usize = 4096;
/// Encoded answers waiting to be written: above this the connection reads no
/// more requests until the socket has taken them, so a peer that stops
/// reading backpressures its own connection only.
const WRITE_HIGH_WATER: usize = 32 * 1024;
/// Requests answered in one go before the write gets a turn.
const READ_BATCH: usize = 64;
/// How long a connection that ends itself waits to write the answers it had
/// already decided.
const CLOSE_FLUSH_LIMIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Pause after a failed accept (out of file descriptors, say) so the loop does
/// not spin while connections drain.
const ACCEPT_BACKOFF: std::time::Duration = std::time::Duration::from_millis(100);

/// Accepts connections on `listener` until `shutdown`, then closes them all and
/// returns once their tasks have ended.
pub async fn serve(
    sim: Arc<Simulator>,
    listener: TcpListener,
    spec: Arc<Spec>,
    frame: FrameConfig,
    shutdown: CancellationToken,
) -> io::Result<()> {
    serve_recording(sim, listener, spec, frame, None, shutdown).await
}

/// As [`serve`], writing each message received to `record` first.
async fn serve_recording(
    sim: Arc<Simulator>,
    listener: TcpListener,
    spec: Arc<Spec>,
    frame: FrameConfig,
    record: Option<Arc<Recorder>>,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    tracing::debug!(%peer, "simulator: connection accepted");
                    connections.spawn(connection(
                        stream,
                        peer,
                        sim.clone(),
                        spec.clone(),
                        frame,
                        record.clone(),
                        shutdown.child_token(),
                    ));
                }
                Err(error) => {
                    tracing::warn!(%error, "simulator: accept failed");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                    }
                }
            },
            // Reap finished connections so the set does not grow without bound.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// Resolves the spec and framing of `config`, opens its record file if it
/// names one, binds `config.bind` and spawns [`serve`] with a new simulator.
/// Returns the bound address (useful with port 0).
pub async fn bind_and_serve(
    config: &SimulatorConfig,
    shutdown: CancellationToken,
) -> Result<(SocketAddr, JoinHandle<io::Result<()>>), SimulatorError> {
    let sim = Arc::new(Simulator::new(config)?);
    bind_and_serve_with(sim, config, shutdown).await
}

/// As [`bind_and_serve`] with a simulator the caller keeps (to read its stats,
/// reversals and balances).
pub async fn bind_and_serve_with(
    sim: Arc<Simulator>,
    config: &SimulatorConfig,
    shutdown: CancellationToken,
) -> Result<(SocketAddr, JoinHandle<io::Result<()>>), SimulatorError> {
    let spec = Arc::new(crate::specs::resolve(&config.spec)?);
    let frame = FrameConfig {
        header: config.header().parse()?,
        header_includes_self: config.header_includes_self,
        ..FrameConfig::default()
    };
    // Before binding: a bad path is the one error, not a port taken for nothing.
    let record = match &config.record {
        Some(path) => Some(Arc::new(Recorder::open(path).map_err(|source| {
            RecordError {
                path: path.clone(),
                source,
            }
        })?)),
        None => None,
    };
    let bind_error = |source| SimulatorError::Bind {
        addr: config.bind,
        source,
    };
    let listener = TcpListener::bind(config.bind).await.map_err(bind_error)?;
    let addr = listener.local_addr().map_err(bind_error)?;
    tracing::info!(%addr, spec = %config.spec.display(), "issuer simulator listening");
    Ok((
        addr,
        tokio::spawn(serve_recording(
            sim, listener, spec, frame, record, shutdown,
        )),
    ))
}

/// One connection, one task: decide each request as it is read, append the
/// answer to the write buffer, and write once when nothing more is ready, so
/// a burst of requests costs one write, not a wake-up of a writer task and a
/// write per answer. Delayed answers wait on their own timers and come back
/// through a channel. `closing` ends the connection: shutdown, a `close`
/// decision, a framing error or a failed write. A `close` or a framing error
/// still writes the answers decided before it; delayed ones are dropped. A
/// peer that stops sending still gets the answers already due, delayed ones
/// included. With a record, answers are written only once the record holds
/// their lines (`recorded_before`).
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    sim: Arc<Simulator>,
    spec: Arc<Spec>,
    frame: FrameConfig,
    record: Option<Arc<Recorder>>,
    closing: CancellationToken,
) {
    // Responses are small and latency matters more than packet count.
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%peer, %error, "simulator: cannot set TCP_NODELAY");
    }
    let (read_half, write_half) = stream.into_split();
    let mut frames = FramedRead::new(read_half, FrameCodec::new(frame));
    let mut writer = FramedWrite::new(write_half, FrameCodec::new(frame));
    let mut encoder = FrameCodec::new(frame);
    let (delayed_tx, mut delayed_rx) = mpsc::channel::<(Frame, LineNo)>(WRITE_QUEUE);
    let mut progress = record.as_ref().map(|record| record.progress());
    // The last record line of an answer in the write buffer (or of a close).
    let mut recorded_before: LineNo = 0;
    // Dropped when reading ends, so the channel closes after the last delayed answer.
    let mut delayed_tx = Some(delayed_tx);
    let mut delayed_open = true;
    // Set when this connection ends itself (a framing error, a `close` rule).
    let mut flush_before_close = false;

    'connection: loop {
        let buffered = writer.write_buffer().len();
        let room = buffered < WRITE_HIGH_WATER;
        if delayed_tx.is_none() && !delayed_open && buffered == 0 {
            break;
        }
        tokio::select! {
            biased;
            _ = closing.cancelled() => break,
            next = frames.next(), if room && delayed_tx.is_some() => {
                let mut next = next;
                let mut taken = 0;
                loop {
                    let request_frame = match next {
                        None => {
                            delayed_tx = None;
                            break;
                        }
                        Some(Ok(request_frame)) => request_frame,
                        Some(Err(error)) if error.is_fatal() => {
                            // No way to find where the next frame starts.
                            tracing::warn!(%peer, %error, "simulator: framing error, closing connection");
                            closing.cancel();
                            flush_before_close = true;
                            break 'connection;
                        }
                        Some(Err(error)) => {
                            tracing::warn!(%peer, %error, "simulator: frame refused");
                            match frames.next().now_or_never() {
                                Some(more) => { next = more; continue; }
                                None => break,
                            }
                        }
                    };
                    let Some(tx) = delayed_tx.as_ref() else { break };
                    let (answer, line) = answer(&sim, &spec, &request_frame, peer, record.as_deref());
                    match answer {
                        Answer::Now(out) => {
                            recorded_before = recorded_before.max(line);
                            if let Err(error) = encoder.encode(out, writer.write_buffer_mut()) {
                                tracing::error!(%peer, %error, "simulator: response not framed; not sent");
                            }
                        }
                        Answer::Later(out, delay) => {
                            // Its own timer, so later requests are answered meanwhile.
                            let (tx, closing) = (tx.clone(), closing.clone());
                            tokio::spawn(async move {
                                tokio::select! {
                                    _ = closing.cancelled() => {}
                                    _ = tokio::time::sleep(delay) => {
                                        let _ = tx.send((out, line)).await;
                                    }
                                }
                            });
                        }
                        Answer::None => {}
                        Answer::Close => {
                            recorded_before = recorded_before.max(line);
                            closing.cancel();
                            flush_before_close = true;
                            break 'connection;
                        }
                    }
                    taken += 1;
                    if taken >= READ_BATCH || writer.write_buffer().len() >= WRITE_HIGH_WATER {
                        break;
                    }
                    match frames.next().now_or_never() {
                        Some(more) => next = more,
                        None => break,
                    }
                }
            }
            out = delayed_rx.recv(), if room && delayed_open => match out {
                Some((out, line)) => {
                    recorded_before = recorded_before.max(line);
                    if let Err(error) = encoder.encode(out, writer.write_buffer_mut()) {
                        tracing::error!(%peer, %error, "simulator: response not framed; not sent");
                    }
                }
                None => delayed_open = false,
            },
            flushed = async {
                record::written(progress.as_mut(), recorded_before).await;
                poll_fn(|cx| SinkExt::<Frame>::poll_flush_unpin(&mut writer, cx)).await
            }, if buffered > 0 => {
                if let Err(error) = flushed {
                    tracing::debug!(%peer, %error, "simulator: write failed, closing connection");
                    closing.cancel();
                    break;
                }
            }
        }
    }
    // Answers already decided moved money (a debit, a hold): they go out
    // before the close, or the acquirer times out on an approval it paid for.
    if flush_before_close {
        let flush = async {
            record::written(progress.as_mut(), recorded_before).await;
            poll_fn(|cx| SinkExt::<Frame>::poll_flush_unpin(&mut writer, cx)).await
        };
        match tokio::time::timeout(CLOSE_FLUSH_LIMIT, flush).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::debug!(%peer, %error, "simulator: answers before close not written")
            }
            Err(_) => {
                tracing::debug!(%peer, "simulator: peer not reading; answers before close dropped")
            }
        }
    }
}

/// What to do with one request.
enum Answer {
    Now(Frame),
    Later(Frame, std::time::Duration),
    None,
    Close,
}

/// Decodes and decides one request, and queues its line to `record`. An
/// undecodable one is counted and skipped: the framing is intact, so the next
/// frame can still be served. Also returns the number of the record line.
fn answer(
    sim: &Simulator,
    spec: &Spec,
    request_frame: &Frame,
    peer: SocketAddr,
    record: Option<&Recorder>,
) -> (Answer, LineNo) {
    let request = match Message::decode(spec, request_frame.payload.clone()) {
        Ok(request) => request,
        Err(error) => {
            // Part, offset and kind only: the bytes may hold card data.
            sim.count_undecodable();
            tracing::warn!(
                %peer,
                part = %error.part(),
                offset = error.offset(),
                kind = %error.kind(),
                "simulator: message does not decode; ignored"
            );
            let line = record.map_or(0, |record| record.append(&Line::undecodable()));
            return (Answer::None, line);
        }
    };
    let (decision, effect) = sim.decide_with_effect(&request);
    let (answer, answered) = match &decision {
        Decision::Respond { response, delay } => match encode(spec, request_frame, response) {
            None => (Answer::None, Answered::Drop),
            Some(out) => {
                let answer = match delay {
                    None => Answer::Now(out),
                    Some(delay) => Answer::Later(out, *delay),
                };
                (answer, Answered::of(&decision))
            }
        },
        Decision::Drop => (Answer::None, Answered::Drop),
        Decision::Close => {
            tracing::debug!(%peer, mti = %request.mti(), "simulator: closing connection by rule");
            (Answer::Close, Answered::Close)
        }
    };
    let line = match record {
        Some(record) => {
            let delay = match &decision {
                Decision::Respond { delay, .. } => *delay,
                _ => None,
            };
            record.append(&Line::of(&request, &answered, effect).delayed(delay))
        }
        None => 0,
    };
    (answer, line)
}

/// The switch can run the simulator in process: its links ask it directly,
/// without a socket, honouring its delay, drop and close.
impl InProcessIssuer for Simulator {
    fn decide(&self, request: &Message) -> Decision {
        Simulator::decide(self, request)
    }
}

fn encode(spec: &Spec, request_frame: &Frame, response: &Message) -> Option<Frame> {
    match response.encode(spec) {
        Ok(payload) => Some(request_frame.response(payload)),
        Err(error) => {
            tracing::error!(
                mti = %response.mti(),
                part = %error.part(),
                kind = %error.kind(),
                "simulator: response does not encode; not sent"
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use bytes::Bytes;
    use tokio::net::TcpStream;
    use tokio_util::codec::Framed;

    use super::*;
    use crate::iso8583::Mti;

    const CONFIG: &str = r#"
        bind = "127.0.0.1:0"
        spec = "iso87ascii"
        header = "2b"

        [[rule]]
        fields = { 41 = "SLOW0001" }
        respond = "00"
        delay_ms = 1000

        [[rule]]
        fields = { 41 = "CLOSE001" }
        respond = "close"

        [[account]]
        pan = "4111111111111111"
        balance = 100000
        expiry = "9912"
    "#;

    type Client = Framed<TcpStream, FrameCodec>;

    struct Running {
        sim: Arc<Simulator>,
        addr: SocketAddr,
        spec: Spec,
        shutdown: CancellationToken,
        task: JoinHandle<io::Result<()>>,
    }

    async fn start() -> Running {
        let config: SimulatorConfig = toml::from_str(CONFIG).expect("valid config");
        let sim = Arc::new(Simulator::new(&config).expect("simulator builds"));
        let shutdown = CancellationToken::new();
        let (addr, task) = bind_and_serve_with(sim.clone(), &config, shutdown.clone())
            .await
            .expect("binds");
        let spec = crate::specs::resolve(&config.spec).expect("built-in spec");
        Running {
            sim,
            addr,
            spec,
            shutdown,
            task,
        }
    }

    async fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).await.expect("connects");
        Framed::new(stream, FrameCodec::new(FrameConfig::default()))
    }

    fn purchase(stan: u32, terminal: &str) -> Message {
        let mut request = Message::new(Mti::from_static("0200"));
        let fields = [
            (2, "4111111111111111".to_owned()),
            (3, "000000".to_owned()),
            (4, "000000000100".to_owned()),
            (7, "0102030405".to_owned()),
            (11, format!("{stan:06}")),
            (41, terminal.to_owned()),
        ];
        for (n, v) in fields {
            request.set(n, v).expect("data field");
        }
        request
    }

    async fn send(client: &mut Client, spec: &Spec, request: &Message) {
        let payload = request.encode(spec).expect("encodes");
        client.send(Frame::new(payload)).await.expect("sends");
    }

    async fn receive(client: &mut Client, spec: &Spec) -> Option<Message> {
        let frame = client.next().await?.expect("frames");
        Some(Message::decode(spec, frame.payload).expect("decodes"))
    }

    /// Whether the server closed the connection (an unread request may make it a reset).
    async fn is_closed(client: &mut Client) -> bool {
        matches!(client.next().await, None | Some(Err(_)))
    }

    #[tokio::test]
    async fn pipelined_requests_are_answered_as_ready_and_matched_by_stan() {
        let running = start().await;
        let spec = &running.spec;
        let mut client = connect(running.addr).await;
        send(&mut client, spec, &purchase(1, "SLOW0001")).await;
        for stan in 2..=4 {
            send(&mut client, spec, &purchase(stan, "TERM0001")).await;
        }
        let mut order = Vec::new();
        let mut responses = HashMap::new();
        for _ in 1..=4 {
            let response = receive(&mut client, spec).await.expect("a response");
            let stan = response.stan().expect("STAN echoed").0;
            order.push(stan);
            responses.insert(stan, response);
        }
        assert_eq!(order, vec![2, 3, 4, 1], "the delayed answer comes last");
        for (stan, response) in &responses {
            assert_eq!(response.mti(), Mti::from_static("0210"));
            assert_eq!(response.get_str(39), Some("00"), "STAN {stan}");
            let terminal = if *stan == 1 { "SLOW0001" } else { "TERM0001" };
            assert_eq!(response.get_str(41), Some(terminal));
        }
        // The delayed one was approved by a rule, which holds nothing.
        assert_eq!(running.sim.balance("4111111111111111"), Some(99_700));
        running.shutdown.cancel();
        running.task.await.expect("joins").expect("serves");
    }

    #[tokio::test]
    async fn undecodable_frame_is_skipped_and_the_next_request_answered() {
        let running = start().await;
        let spec = &running.spec;
        let mut client = connect(running.addr).await;
        client
            .send(Frame::new(Bytes::from_static(b"garbage, not ISO 8583")))
            .await
            .expect("sends");
        let mut echo = Message::new(Mti::from_static("0800"));
        echo.set(11, "000321").expect("data field");
        echo.set(70, "301").expect("data field");
        send(&mut client, spec, &echo).await;
        let response = receive(&mut client, spec).await.expect("echo answered");
        assert_eq!(response.mti(), Mti::from_static("0810"));
        assert_eq!(response.get_str(11), Some("000321"));
        assert_eq!(response.get_str(39), Some("00"));
        assert_eq!(running.sim.stats().undecodable, 1);
        running.shutdown.cancel();
        running.task.await.expect("joins").expect("serves");
    }

    #[tokio::test]
    async fn close_rule_closes_only_that_connection() {
        let running = start().await;
        let spec = &running.spec;
        let mut closing = connect(running.addr).await;
        let mut other = connect(running.addr).await;
        send(&mut closing, spec, &purchase(1, "CLOSE001")).await;
        assert!(is_closed(&mut closing).await, "closed, no answer");
        send(&mut other, spec, &purchase(2, "TERM0001")).await;
        let response = receive(&mut other, spec).await.expect("still served");
        assert_eq!(response.get_str(39), Some("00"));
        assert_eq!(running.sim.stats().closes, 1);
        running.shutdown.cancel();
        running.task.await.expect("joins").expect("serves");
    }

    #[tokio::test]
    async fn broken_framing_closes_the_connection() {
        let running = start().await;
        let mut stream = TcpStream::connect(running.addr).await.expect("connects");
        // A zero length header: the stream cannot be resynchronised.
        tokio::io::AsyncWriteExt::write_all(&mut stream, b"\x00\x00junk")
            .await
            .expect("writes");
        let mut client = Framed::new(stream, FrameCodec::new(FrameConfig::default()));
        assert!(is_closed(&mut client).await);
        running.shutdown.cancel();
        running.task.await.expect("joins").expect("serves");
    }

    #[tokio::test]
    async fn shutdown_stops_serving_and_closes_open_connections() {
        let running = start().await;
        let spec = &running.spec;
        let mut client = connect(running.addr).await;
        // One round trip, so the connection is surely accepted before shutdown.
        send(&mut client, spec, &purchase(1, "TERM0001")).await;
        assert!(receive(&mut client, spec).await.is_some());
        send(&mut client, spec, &purchase(2, "SLOW0001")).await;
        running.shutdown.cancel();
        running.task.await.expect("joins").expect("serves");
        assert!(
            is_closed(&mut client).await,
            "closed without the delayed answer"
        );
        assert!(TcpStream::connect(running.addr).await.is_err());
    }

    #[tokio::test]
    async fn recorded_lines_are_in_the_file_before_the_answer_or_the_close() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("record.jsonl");
        let mut config: SimulatorConfig = toml::from_str(CONFIG).expect("valid config");
        config.record = Some(path.clone());
        let sim = Arc::new(Simulator::new(&config).expect("simulator builds"));
        let shutdown = CancellationToken::new();
        let (addr, task) = bind_and_serve_with(sim, &config, shutdown.clone())
            .await
            .expect("binds");
        let spec = crate::specs::resolve(&config.spec).expect("built-in spec");
        let recorded = || -> Vec<serde_json::Value> {
            std::fs::read_to_string(&path)
                .expect("record readable")
                .lines()
                .map(|line| serde_json::from_str(line).expect("whole JSON line"))
                .collect()
        };

        let mut client = connect(addr).await;
        send(&mut client, &spec, &purchase(1, "SLOW0001")).await;
        assert!(receive(&mut client, &spec).await.is_some());
        let lines = recorded();
        assert_eq!(lines.len(), 1);
        assert_eq!(
            (&lines[0]["answer"], &lines[0]["delay_ms"]),
            (&"00".into(), &1000.into())
        );

        let mut closing = connect(addr).await;
        send(&mut closing, &spec, &purchase(2, "CLOSE001")).await;
        assert!(is_closed(&mut closing).await);
        let lines = recorded();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1]["answer"], "close");
        assert_eq!(lines[1]["stan"], "000002");
        shutdown.cancel();
        task.await.expect("joins").expect("serves");
    }

    #[tokio::test]
    async fn bind_and_serve_refuses_an_unknown_spec() {
        let mut config: SimulatorConfig = toml::from_str(CONFIG).expect("valid config");
        config.spec = "no-such-spec".into();
        let err = bind_and_serve(&config, CancellationToken::new())
            .await
            .expect_err("unknown spec");
        assert!(err.to_string().contains("no-such-spec"), "{err}");
    }
}
