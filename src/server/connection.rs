//! One terminal connection: read frames, answer each message in its own task
//! (several may be outstanding), and write responses as they complete through
//! one writer that feeds every ready frame and flushes once.

use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;

use super::ListenerContext;
use crate::frame::{Frame, FrameCodec};
use crate::iso8583::{Message, ResponseCode};
use crate::switch::{decline, Switch};

/// Responses waiting for the writer; beyond this a slow reader applies
/// backpressure to its own connection only.
const WRITE_QUEUE: usize = 4096;

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
    let (tx, mut rx) = mpsc::channel::<Frame>(WRITE_QUEUE);
    let listener = context.inbound.listener.clone();

    let write_task = tokio::spawn(async move {
        while let Some(frame) = rx.recv().await {
            if writer.feed(frame).await.is_err() {
                return;
            }
            while let Ok(frame) = rx.try_recv() {
                if writer.feed(frame).await.is_err() {
                    return;
                }
            }
            if SinkExt::<Frame>::flush(&mut writer).await.is_err() {
                return;
            }
        }
    });

    loop {
        let next = tokio::select! {
            _ = shutdown.cancelled() => break,
            next = tokio::time::timeout(context.idle_timeout, reader.next()) => next,
        };
        let frame = match next {
            Err(_) => {
                tracing::debug!(listener = %listener, "idle timeout, closing");
                break;
            }
            Ok(None) => break,
            Ok(Some(Ok(frame))) => frame,
            Ok(Some(Err(e))) => {
                // The stream cannot be resynchronised after a framing error.
                metrics::counter!(
                    "isoswitch_framing_errors_total",
                    "listener" => listener.to_string(),
                    "reason" => e.reason(),
                )
                .increment(1);
                tracing::warn!(listener = %listener, error = %e, "framing error, closing connection");
                break;
            }
        };
        let tx = tx.clone();
        let context = context.clone();
        let switch = switch.clone();
        tokio::spawn(async move {
            if let Some(response) = answer(&context, &switch, &frame).await {
                let _ = tx.send(response).await;
            }
        });
    }
    // In-flight answers hold sender clones: the writer ends after the last one.
    drop(tx);
    let _ = write_task.await;
}

/// Decodes, hands to the switch, encodes. A message that does not decode gets
/// 30 when its MTI can be read, and no answer when not even that.
async fn answer(context: &ListenerContext, switch: &Switch, frame: &Frame) -> Option<Frame> {
    let spec = &context.spec;
    let response = match Message::decode(spec, frame.payload.clone()) {
        Ok(request) => switch.handle(&context.inbound, request).await?,
        Err(e) => {
            metrics::counter!(
                "isoswitch_decode_errors_total",
                "listener" => context.inbound.listener.to_string(),
                "reason" => e.kind().name(),
            )
            .increment(1);
            // Only the part, offset and kind: the bytes may hold card data.
            tracing::warn!(
                listener = %context.inbound.listener,
                part = %e.part(),
                offset = e.offset(),
                kind = %e.kind(),
                "message does not decode"
            );
            let mti = Message::peek_mti(spec, &frame.payload)?;
            decline(&Message::new(mti), ResponseCode::FORMAT_ERROR)
        }
    };
    let payload = match response.encode(spec) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(listener = %context.inbound.listener, part = %e.part(), kind = %e.kind(), "response does not encode");
            let mut fallback = decline(&response, ResponseCode::SYSTEM_MALFUNCTION);
            fallback.remove(2);
            fallback.encode(spec).ok()?
        }
    };
    Some(frame.response(payload))
}
