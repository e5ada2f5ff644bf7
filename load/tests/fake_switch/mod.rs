//! A small fake switch for the load generator's tests: answers each request on
//! 127.0.0.1 with its response MTI and a code (00, or the code configured for the
//! PAN), answering every batch that arrives together in reverse order so the
//! client must match by STAN. It can also drop one request to cause a timeout.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures_util::{FutureExt, SinkExt, StreamExt};
use isoswitch::frame::{Frame, FrameCodec, FrameConfig};
use isoswitch::iso8583::{Message, Spec};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_util::codec::Framed;

/// Fields a response copies from its request.
const ECHO: [u8; 10] = [2, 3, 4, 7, 11, 12, 13, 41, 42, 49];

/// How the fake answers.
#[derive(Clone, Default)]
pub struct Behaviour {
    /// (PAN, code) pairs; every other card gets 00.
    pub codes: Vec<(&'static str, &'static str)>,
    /// The request with this number (1-based, counted over all connections) is
    /// never answered.
    pub drop_request: Option<u64>,
    /// The request with this number is answered with terminal id `XX000000`
    /// in field 41: another terminal's answer under the right STAN.
    pub foreign_request: Option<u64>,
}

/// What the fake saw.
#[derive(Default)]
pub struct Seen {
    /// Connections accepted (before any TLS handshake).
    pub accepted: AtomicU64,
    /// The most requests any one connection carried.
    pub most_per_connection: AtomicU64,
    pub requests: AtomicU64,
    /// Requests per configured PAN, in the order of `Behaviour::codes`.
    pub special: [AtomicU64; 4],
    /// Responses written in a different order from their requests.
    pub reordered: AtomicU64,
}

pub struct FakeSwitch {
    pub addr: SocketAddr,
    pub seen: Arc<Seen>,
}

pub fn spec() -> Spec {
    isoswitch::specs::builtin("iso87ascii")
        .expect("iso87ascii is shipped")
        .expect("iso87ascii compiles")
}

pub async fn start(behaviour: Behaviour) -> FakeSwitch {
    start_with(behaviour, None).await
}

/// Like [`start`], with TLS when `tls` is given.
pub async fn start_with(
    behaviour: Behaviour,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> FakeSwitch {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr");
    let seen = Arc::new(Seen::default());
    let spec = Arc::new(spec());
    let shared = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            shared.accepted.fetch_add(1, Ordering::Relaxed);
            let (spec, behaviour, seen) = (spec.clone(), behaviour.clone(), shared.clone());
            match tls.clone() {
                None => {
                    tokio::spawn(serve(stream, spec, behaviour, seen));
                }
                Some(acceptor) => {
                    tokio::spawn(async move {
                        if let Ok(stream) = acceptor.accept(stream).await {
                            serve(stream, spec, behaviour, seen).await;
                        }
                    });
                }
            }
        }
    });
    FakeSwitch { addr, seen }
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    spec: Arc<Spec>,
    behaviour: Behaviour,
    seen: Arc<Seen>,
) {
    let mut framed = Framed::new(stream, FrameCodec::new(FrameConfig::default()));
    let mut carried = 0u64;
    while let Some(Ok(first)) = framed.next().await {
        let mut batch = vec![first];
        while let Some(Some(Ok(frame))) = framed.next().now_or_never() {
            batch.push(frame);
        }
        carried += batch.len() as u64;
        seen.most_per_connection
            .fetch_max(carried, Ordering::Relaxed);
        if batch.len() > 1 {
            seen.reordered
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
        }
        for frame in batch.into_iter().rev() {
            if let Some(response) = answer(&spec, &behaviour, &seen, &frame) {
                if SinkExt::<Frame>::feed(&mut framed, response).await.is_err() {
                    return;
                }
            }
        }
        if SinkExt::<Frame>::flush(&mut framed).await.is_err() {
            return;
        }
    }
}

fn answer(spec: &Spec, behaviour: &Behaviour, seen: &Seen, frame: &Frame) -> Option<Frame> {
    let number = seen.requests.fetch_add(1, Ordering::Relaxed) + 1;
    let request =
        Message::decode(spec, frame.payload.clone()).expect("loadgen sends valid messages");
    if behaviour.drop_request == Some(number) {
        return None;
    }
    let pan = request.get_str(2).unwrap_or_default();
    let mut code = "00";
    for (i, (special, special_code)) in behaviour.codes.iter().enumerate() {
        if pan == *special {
            seen.special[i].fetch_add(1, Ordering::Relaxed);
            code = special_code;
        }
    }
    let mut response = Message::new(request.mti().response().expect("a request"));
    for n in ECHO {
        if let Some(v) = request.get(n) {
            response.set(n, v).expect("data field");
        }
    }
    response.set(39, code).expect("data field");
    if behaviour.foreign_request == Some(number) {
        response.set(41, "XX000000").expect("data field");
    }
    let payload = response.encode(spec).expect("response encodes");
    Some(frame.response(payload))
}

/// A CA and a server certificate for "localhost" signed by it, the CA written as
/// PEM to a file for `--tls-ca`; the acceptor serves the server certificate.
pub struct TestPki {
    pub ca_file: std::path::PathBuf,
    pub acceptor: tokio_rustls::TlsAcceptor,
}

impl Drop for TestPki {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.ca_file);
    }
}

pub fn test_pki(name: &str) -> TestPki {
    let ca_key = rcgen::KeyPair::generate().expect("key generation");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).expect("self-signed CA");
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let server_key = rcgen::KeyPair::generate().expect("key generation");
    let server_cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .expect("server params")
        .signed_by(&server_key, &issuer)
        .expect("signed server certificate");
    let ca_file =
        std::env::temp_dir().join(format!("loadgen-test-{}-{name}-ca.pem", std::process::id()));
    std::fs::write(&ca_file, ca_cert.pem()).expect("write CA file");
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(server_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_no_client_auth()
    .with_single_cert(vec![server_cert.der().clone()], key)
    .expect("server config");
    TestPki {
        ca_file,
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
    }
}
