//! The virtual terminal over TLS: the `[virtual_terminal.tls]` table loads
//! with the same rustls setup as terminal listeners, a login over HTTPS gets
//! a `Secure` session cookie even while another client stalls its handshake,
//! and plain HTTP to the TLS port gets nothing.

mod common;
mod vt_common;

use common::TlsFiles;
use isoswitch::switch::Switch;
use isoswitch::tls::ListenerTls;
use isoswitch::vt::{BoundVt, VtStores};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_over_tls_gets_a_secure_cookie() {
    let files = TlsFiles::generate();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = vt_common::config(dir.path());
    let vt = config.virtual_terminal.as_mut().expect("virtual terminal");
    vt.tls = Some(ListenerTls {
        cert: files.server_cert.clone(),
        key: files.server_key.clone(),
        client_ca: None,
    });
    let vt_config = vt.clone();
    let shutdown = CancellationToken::new();
    let switch = Switch::start(config, shutdown.clone()).expect("switch starts");
    let bound = BoundVt::bind(&vt_config, switch, VtStores::in_memory())
        .await
        .expect("binds with TLS");
    assert!(bound.url().starts_with("https://"));
    let addr = bound.local_addr().expect("address");
    tokio::spawn(bound.run(shutdown.clone()));

    // A client that connects and never starts its handshake holds up no other.
    let _silent = tokio::net::TcpStream::connect(addr).await.expect("connect");

    let body = r#"{"username":"demo","password":"demo-password"}"#;
    let request = format!(
        "POST /api/v1/login HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let mut tls = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        files.connector(false).connect(name, tcp),
    )
    .await
    .expect("the handshake is not held up by the silent client")
    .expect("TLS handshake");
    tls.write_all(request.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    let _ = tls.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let cookie = answer
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .expect("a cookie");
    assert!(
        cookie.contains("; Secure") && cookie.contains("HttpOnly"),
        "{cookie}"
    );

    // Plain HTTP to the TLS port is not served.
    let mut plain = tokio::net::TcpStream::connect(addr).await.expect("connect");
    plain
        .write_all(b"GET /login HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut bytes = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(15),
        plain.read_to_end(&mut bytes),
    )
    .await;
    assert!(read.is_ok(), "the connection is closed, not left hanging");
    assert!(!String::from_utf8_lossy(&bytes).contains("HTTP/1.1 200"));
    shutdown.cancel();
}
