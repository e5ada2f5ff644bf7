//! One terminal connection, one task: read frames, answer each message as an
//! in-flight future (several may be outstanding), and write responses in the
//! order they complete, coalesced into one write per batch.
//!
//! Everything runs in the connection's own task: no spawn per message and no
//! hand-off to a writer task, so a burst of responses from the issuer link costs
//! one wake-up and one write syscall, not one of each per message.

use std::future::poll_fn;
use std::sync::Arc;

use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_util::codec::{Encoder, FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;

use super::ListenerContext;
use crate::frame::{Frame, FrameCodec, FrameError};
use crate::iso8583::Message;
use crate::log_limit::LogLimit;
use crate::switch::outcome::Refusal;
use crate::switch::{refusal_that_encodes, response_to, Switch, Undo};

/// Messages being answered at once on one connection; beyond this the
/// connection stops reading, so a flooding terminal slows only itself.
const MAX_IN_FLIGHT: usize = 4096;
/// Encoded responses waiting to be written: above this the connection takes no
/// new requests and no more answers until the socket has taken them, so a
/// reader that stops reading backpressures its own connection only, and a busy
/// connection still writes at least every this many bytes.
const WRITE_HIGH_WATER: usize = 32 * 1024;
/// Frames taken from the read buffer in one go before answers get a turn.
const READ_BATCH: usize = 64;

pub(super) async fn serve<S>(
    stream: S,
    context: Arc<ListenerContext>,
    switch: Arc<Switch>,
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (read_half, write_half) = tokio::io::split(stream);
    let mut reader = FramedRead::new(read_half, FrameCodec::new(context.frame));
    let mut writer = FramedWrite::new(write_half, FrameCodec::new(context.frame));
    let mut encoder = FrameCodec::new(context.frame);
    let listener = context.inbound.listener.clone();
    let mut in_flight = FuturesUnordered::new();
    let mut reading = true;
    // Approvals in the write buffer since the last completed flush: if the
    // terminal is gone before they are written, they are reversed.
    let mut unflushed: Vec<Undo> = Vec::new();
    // The terminal is gone: answers still coming have nowhere to go.
    let mut broken = false;
    // The idle timer is re-armed only when it fires, not per frame: resetting a
    // timer on every message costs more than the rest of the loop turn. A
    // connection is idle when it has neither sent a frame nor been answered
    // for the idle timeout, and has no request outstanding.
    let mut last_frame = Instant::now();
    let idle = tokio::time::sleep_until(last_frame + context.idle_timeout);
    tokio::pin!(idle);

    loop {
        let buffered = writer.write_buffer().len();
        let room = buffered < WRITE_HIGH_WATER || broken;
        if !reading && in_flight.is_empty() && (buffered == 0 || broken) {
            break;
        }
        tokio::select! {
            biased;
            _ = shutdown.cancelled(), if reading => reading = false,
            Some(response) = in_flight.next(), if room && !in_flight.is_empty() => {
                // An answer is activity too: idleness counts from the last one.
                last_frame = Instant::now();
                let mut next = Some(response);
                while let Some(response) = next {
                    if let Some((frame, undo)) = response {
                        if broken {
                            if let Some(undo) = undo {
                                undo_later(&switch, undo);
                            }
                        } else if queue(&mut encoder, &mut writer, &frame, &listener) {
                            unflushed.extend(undo);
                        } else if let Some(undo) = undo {
                            undo_later(&switch, undo);
                        }
                    }
                    if writer.write_buffer().len() >= WRITE_HIGH_WATER {
                        break;
                    }
                    next = in_flight.next().now_or_never().flatten();
                }
            }
            next = reader.next(), if reading && room && in_flight.len() < MAX_IN_FLIGHT => {
                let mut next = next;
                let mut taken = 0;
                loop {
                    match next {
                        None => {
                            reading = false;
                            break;
                        }
                        Some(Ok(frame)) => {
                            last_frame = Instant::now();
                            in_flight.push(answer(&context, &switch, frame));
                        }
                        Some(Err(e)) => {
                            // The stream cannot be resynchronised after a framing error.
                            framing_error(&listener, &e);
                            reading = false;
                            break;
                        }
                    }
                    taken += 1;
                    if taken >= READ_BATCH || in_flight.len() >= MAX_IN_FLIGHT {
                        break;
                    }
                    match reader.next().now_or_never() {
                        Some(more) => next = more,
                        None => break,
                    }
                }
            }
            () = &mut idle, if reading => {
                let due = last_frame + context.idle_timeout;
                if !in_flight.is_empty() {
                    // Waiting on its own answers is not idle.
                    idle.as_mut().reset(Instant::now() + context.idle_timeout);
                } else if Instant::now() >= due {
                    tracing::debug!(listener = %listener, "idle timeout, closing");
                    reading = false;
                } else {
                    idle.as_mut().reset(due);
                }
            }
            flushed = poll_fn(|cx| SinkExt::<Frame>::poll_flush_unpin(&mut writer, cx)), if buffered > 0 && !broken => {
                if flushed.is_err() {
                    // The terminal is gone: its answers have nowhere to go.
                    // What is still being answered is seen through, so no
                    // approval is left at the issuer unreversed.
                    broken = true;
                    reading = false;
                    writer.write_buffer_mut().clear();
                    for undo in unflushed.drain(..) {
                        undo_later(&switch, undo);
                    }
                } else {
                    unflushed.clear();
                }
            }
        }
    }
}

/// Appends one response to the write buffer; false when it does not fit the
/// framing and is not sent.
fn queue<W>(
    encoder: &mut FrameCodec,
    writer: &mut FramedWrite<W, FrameCodec>,
    frame: &Frame,
    listener: &str,
) -> bool {
    match encoder.encode(frame, writer.write_buffer_mut()) {
        Ok(()) => true,
        Err(e) => {
            tracing::error!(listener = %listener, error = %e, "response does not fit the framing; not sent");
            false
        }
    }
}

/// Reverses an approval its terminal will not get, off the connection's task.
fn undo_later(switch: &Arc<Switch>, undo: Undo) {
    let switch = switch.clone();
    tokio::spawn(async move { switch.undo(undo).await });
}

fn framing_error(listener: &str, e: &FrameError) {
    metrics::counter!(
        "isoswitch_framing_errors_total",
        "listener" => listener.to_string(),
        "reason" => e.reason(),
    )
    .increment(1);
    static LINES: LogLimit = LogLimit::new(10);
    if let Some(suppressed) = LINES.admit() {
        tracing::warn!(listener = %listener, error = %e, suppressed, "framing error, closing connection");
    }
}

/// Decodes, hands to the switch, encodes. A request that does not decode gets
/// 30, echoing what could be read of it (STAN, terminal id) so the terminal
/// can tell which request was refused; a response, or a message whose MTI
/// cannot be read, gets no answer.
async fn answer(
    context: &ListenerContext,
    switch: &Switch,
    frame: Frame,
) -> Option<(Frame, Option<Undo>)> {
    let spec = &context.spec;
    let (response, undo) = match Message::decode(spec, frame.payload.clone()) {
        Ok(request) => {
            let answer = switch.answer(&context.inbound, request).await?;
            if let Some(payload) = answer.payload {
                // Encoded, and counted as encoded, by the switch.
                return Some((frame.response(payload), answer.undo));
            }
            (answer.message, answer.undo)
        }
        Err(e) => {
            metrics::counter!(
                "isoswitch_decode_errors_total",
                "listener" => context.inbound.listener.to_string(),
                "reason" => e.kind().name(),
            )
            .increment(1);
            // Only the part, offset and kind: the bytes may hold card data.
            static LINES: LogLimit = LogLimit::new(10);
            if let Some(suppressed) = LINES.admit() {
                tracing::warn!(
                    listener = %context.inbound.listener,
                    part = %e.part(),
                    offset = e.offset(),
                    kind = %e.kind(),
                    suppressed,
                    "message does not decode"
                );
            }
            let readable = Message::decode_readable_part(spec, frame.payload.clone())
                .or_else(|| Message::peek_mti(spec, &frame.payload).map(Message::new))?;
            if !readable.mti().is_request() {
                // Answering a response could pass for the answer to a request.
                return None;
            }
            (response_to(&readable, Refusal::Decode(e)), None)
        }
    };
    let (payload, undo) = match response.encode(spec) {
        Ok(p) => (p, undo),
        Err(e) => {
            tracing::error!(listener = %context.inbound.listener, part = %e.part(), kind = %e.kind(), "response does not encode");
            // The terminal gets 96, not the approval: the issuer's is undone.
            if let Some(undo) = undo {
                switch.undo(undo).await;
            }
            (refusal_that_encodes(spec, &response, e)?.1, None)
        }
    };
    Some((frame.response(payload), undo))
}
