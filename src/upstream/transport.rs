//! How a link reaches its issuer and moves messages: a framed TCP or TLS stream,
//! or the in-process issuer, behind one `Transport` the session drives.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_util::codec::{Decoder, Encoder};

use super::in_process::{InProcess, InProcessIssuer};
use super::link::LinkSettings;
use super::session::Closed;
use super::UpstreamError;
use crate::frame::{Frame, FrameCodec};
use crate::iso8583::{CodecError, Message, Spec};

/// How a link reaches its issuer.
pub(crate) enum Connector {
    Tcp {
        address: SocketAddr,
        tls: Option<(TlsConnector, ServerName<'static>)>,
    },
    InProcess(Arc<dyn InProcessIssuer>),
}

/// What a transport delivered.
pub(super) enum Incoming {
    Message(Message),
    /// A whole frame that the spec cannot decode; the stream is still in step.
    Undecodable(CodecError),
    Closed(Closed),
}

trait IoStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> IoStream for T {}

/// The only thing that differs between a socket link and an in-process one.
pub(super) enum Transport {
    Wire(Wire),
    InProcess(InProcess),
}

impl Transport {
    pub(super) fn is_in_process(&self) -> bool {
        matches!(self, Transport::InProcess(_))
    }

    /// Queues `message` for sending; nothing is written until [`Transport::flush`].
    pub(super) fn feed(&mut self, message: &Message) -> Result<(), UpstreamError> {
        match self {
            Transport::Wire(wire) => wire.feed(message),
            Transport::InProcess(session) => {
                session.feed(message);
                Ok(())
            }
        }
    }

    pub(super) async fn flush(&mut self) -> Result<(), Closed> {
        match self {
            Transport::Wire(wire) => wire.flush().await,
            Transport::InProcess(_) => Ok(()),
        }
    }

    /// The next message from the issuer. Cancel-safe: nothing is lost when another
    /// branch of a `select!` wins.
    pub(super) async fn receive(&mut self) -> Incoming {
        match self {
            Transport::Wire(wire) => wire.receive().await,
            Transport::InProcess(session) => session.receive().await,
        }
    }
}

impl Connector {
    pub(super) async fn connect(
        &self,
        settings: &LinkSettings,
    ) -> Result<Transport, std::io::Error> {
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
            Connector::InProcess(issuer) => {
                Ok(Transport::InProcess(InProcess::new(issuer.clone())))
            }
        }
    }
}

/// A framed byte stream (TCP or TLS) with its read and write buffers.
pub(super) struct Wire {
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
