//! `floor`: the one-hop floor a switch is measured against. It answers each
//! frame (2-byte binary length header) by sending it back with the MTI's
//! third digit raised by one (0100 → 0110, 0200 → 0210): no codec, no
//! journal, no issuer, and the same batched writes a switch can use (every
//! answer to what one read brought is written in one go). What loadgen
//! measures against it is the cost of the network, the kernel and loadgen
//! itself on this machine; `load/shapes.sh` reports the switch as a share
//! of it. With `--tls-cert` and `--tls-key` it speaks TLS through the
//! switch's own acceptor (rustls, ring), so connect-per-request over TLS has
//! a floor too.
//!
//!   floor --bind 127.0.0.1:18600 [--threads 1] [--tls-cert cert.pem --tls-key key.pem]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use isoswitch::tls::ListenerTls;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// Read buffer per connection; a frame may be up to 65 535 bytes.
const READ_CHUNK: usize = 64 * 1024;

#[derive(Parser, Debug)]
#[command(
    name = "floor",
    about = "Answers each ISO 8583 frame by flipping its MTI (loopback only)"
)]
struct Cli {
    /// Address to listen on; loopback only.
    #[arg(long, default_value = "127.0.0.1:18600")]
    bind: SocketAddr,
    /// Runtime worker threads (0: one per core).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Serve TLS with this PEM certificate (chain); needs --tls-key.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !cli.bind.ip().is_loopback() {
        eprintln!("floor: --bind {}: only loopback addresses", cli.bind);
        return ExitCode::from(2);
    }
    let tls = match (cli.tls_cert, cli.tls_key) {
        (Some(cert), Some(key)) => {
            let settings = ListenerTls {
                cert,
                key,
                client_ca: None,
            };
            match isoswitch::tls::acceptor(&settings) {
                Ok(acceptor) => Some(acceptor),
                Err(e) => {
                    eprintln!("floor: TLS: {e}");
                    return ExitCode::from(2);
                }
            }
        }
        _ => None,
    };
    let runtime = match isoswitch::runtime::build(cli.threads) {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("floor: starting the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(serve(cli.bind, tls)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("floor: {e}");
            ExitCode::from(2)
        }
    }
}

async fn serve(bind: SocketAddr, tls: Option<TlsAcceptor>) -> std::io::Result<()> {
    let listener = TcpListener::bind(bind).await?;
    let over = if tls.is_some() { " (TLS)" } else { "" };
    eprintln!("floor: listening on {}{over}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        match &tls {
            None => {
                tokio::spawn(answer(stream));
            }
            Some(acceptor) => {
                let handshake = acceptor.accept(stream);
                tokio::spawn(async move {
                    if let Ok(stream) = handshake.await {
                        answer(stream).await;
                    }
                });
            }
        }
    }
}

/// Answers every whole frame each read brings, in one write; keeps a partial
/// frame for the next read. Ends quietly when the peer goes.
async fn answer<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S) {
    // Read straight into the spare capacity: no zeroed chunk per connection,
    // which a connection per request would pay for every transaction.
    let mut buffer: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    let mut out: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    loop {
        if buffer.capacity() - buffer.len() < READ_CHUNK / 2 {
            buffer.reserve(READ_CHUNK);
        }
        match stream.read_buf(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let used = flip_frames(&buffer, &mut out);
        buffer.drain(..used);
        if !out.is_empty() {
            if stream.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
    }
}

/// Appends to `out` each whole frame of `input` with its MTI's third digit
/// raised; returns how many bytes of `input` it used.
fn flip_frames(input: &[u8], out: &mut Vec<u8>) -> usize {
    let mut at = 0;
    while let Some(header) = input.get(at..at + 2) {
        let len = usize::from(u16::from_be_bytes([header[0], header[1]]));
        let Some(frame) = input.get(at..at + 2 + len) else {
            break;
        };
        let start = out.len();
        out.extend_from_slice(frame);
        // ASCII MTI "0100" at the start of the payload: digit 3 is the function.
        if let Some(function) = out.get_mut(start + 4) {
            *function = function.wrapping_add(1);
        }
        at += 2 + len;
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_frames_are_answered_with_the_mti_flipped_and_a_partial_one_kept() {
        let mut input = vec![0, 6];
        input.extend_from_slice(b"0100ab");
        input.extend_from_slice(&[0, 4]);
        input.extend_from_slice(b"0200");
        input.extend_from_slice(&[0, 9, b'0', b'1']);
        let mut out = Vec::new();
        let used = flip_frames(&input, &mut out);
        assert_eq!(used, 14);
        assert_eq!(out, b"\x00\x060110ab\x00\x040210");
    }
}
