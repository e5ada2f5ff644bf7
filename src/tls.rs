//! TLS for both sides, on rustls with the ring provider: the listener's server
//! config (optional client-certificate check), the client config towards issuers
//! (CA bundle, optional client certificate for mutual TLS) and the PEM loading
//! they share, and the `tls` tables of the listener and issuer sections. Errors
//! name the file at fault.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::ClientConfig;
use serde::Deserialize;

/// Server-side TLS for a listener.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// When set, clients must present a certificate signed by this CA.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
}

/// Client-side TLS towards an issuer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerTls {
    /// CA that signs the issuer's server certificate.
    pub ca: PathBuf,
    /// Client certificate and key, for issuers that require mutual TLS (both or neither).
    #[serde(default)]
    pub cert: Option<PathBuf>,
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// Name checked against the server certificate; defaults to the endpoint's IP address.
    #[serde(default)]
    pub server_name: Option<String>,
}

/// A TLS setting that cannot be used; names the file or value at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("server_name {name:?} is not a valid DNS name or IP address")]
    ServerName { name: String },
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
}

fn file_error(path: &Path, message: impl ToString) -> TlsError {
    TlsError::File {
        path: path.display().to_string(),
        message: message.to_string(),
    }
}

/// Every certificate in a PEM file; at least one.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(path, format!("cannot read PEM certificates: {e}")))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, format!("cannot read PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(file_error(
            path,
            "expected at least one PEM certificate, found none",
        ));
    }
    Ok(certs)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) in a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| file_error(path, format!("expected a PEM private key: {e}")))
}

/// The rustls client config for `tls`: trusts only the CAs in `tls.ca` and, when
/// `cert` and `key` are both set, presents that client certificate.
pub fn client_config(tls: &IssuerTls) -> Result<Arc<ClientConfig>, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots(&tls.ca)?);
    let mut config = match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => {
            builder.with_client_auth_cert(load_certs(cert)?, load_key(key)?)?
        }
        (None, None) => builder.with_no_client_auth(),
        // Config validation refuses this; keep the message here too.
        (Some(path), None) | (None, Some(path)) => {
            return Err(file_error(
                path,
                "expected both cert and key (mutual TLS) or neither, found only one",
            ))
        }
    };
    // Every redial verifies the issuer's certificate afresh: a resumed
    // session skips the check, so a certificate that expired (or a CA that
    // was replaced) while the link was up would go unnoticed.
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

/// An explicit provider, so nothing depends on a process-wide default being installed.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The CAs in a PEM bundle, as a trust store.
fn roots(ca: &Path) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in load_certs(ca)? {
        roots.add(cert).map_err(|e| file_error(ca, e))?;
    }
    Ok(roots)
}

/// The acceptor for a listener's `tls = { cert, key, client_ca }`.
pub fn acceptor(tls: &ListenerTls) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
    let certs = load_certs(&tls.cert)?;
    let key = load_key(&tls.key)?;
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?;
    let config = match &tls.client_ca {
        Some(ca) => {
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots(ca)?),
                provider(),
            )
            .build()
            .map_err(|e| file_error(ca, e))?;
            let mut config = builder
                .with_client_cert_verifier(verifier)
                .with_single_cert(certs, key)?;
            // Each connection presents and verifies its client certificate:
            // no resumption that would skip the check.
            config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
            config.send_tls13_tickets = 0;
            config
        }
        None => builder.with_no_client_auth().with_single_cert(certs, key)?,
    };
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// A client connector trusting the CAs in `ca`, for `isoswitch send --tls-ca`
/// and the load generator.
pub fn connector(ca: &Path) -> Result<tokio_rustls::TlsConnector, TlsError> {
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots(ca)?)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// The name checked against the issuer's certificate: `server_name` when set,
/// else the endpoint's IP address.
pub fn server_name(tls: &IssuerTls, address: SocketAddr) -> Result<ServerName<'static>, TlsError> {
    match &tls.server_name {
        Some(name) => ServerName::try_from(name.clone())
            .map_err(|_| TlsError::ServerName { name: name.clone() }),
        None => Ok(ServerName::IpAddress(address.ip().into())),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A fresh directory under the system temp dir, removed on drop.
    pub(crate) struct TempDir(pub PathBuf);

    impl TempDir {
        pub(crate) fn new(tag: &str) -> TempDir {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let path = std::env::temp_dir().join(format!(
                "isoswitch-upstream-{tag}-{}-{n}",
                std::process::id()
            ));
            std::fs::create_dir_all(&path).expect("temp dir is writable");
            TempDir(path)
        }

        pub(crate) fn write(&self, name: &str, text: &str) -> PathBuf {
            let path = self.0.join(name);
            std::fs::write(&path, text).expect("temp file is writable");
            path
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// PEM files for a CA and a server certificate it signed for `localhost`
    /// and 127.0.0.1.
    pub(crate) struct TestPki {
        /// Kept so the files live as long as the test needs them.
        pub _dir: TempDir,
        pub ca: PathBuf,
        pub server_cert: PathBuf,
        pub server_key: PathBuf,
    }

    pub(crate) fn test_pki() -> TestPki {
        let ca_key = rcgen::KeyPair::generate().expect("key generation");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).expect("self-signed CA");
        let issuer = rcgen::Issuer::new(ca_params, ca_key);

        let server_key = rcgen::KeyPair::generate().expect("key generation");
        let server_params =
            rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .expect("server params");
        let server_cert = server_params
            .signed_by(&server_key, &issuer)
            .expect("signed server certificate");

        let dir = TempDir::new("pki");
        TestPki {
            ca: dir.write("ca.pem", &ca_cert.pem()),
            server_cert: dir.write("server.pem", &server_cert.pem()),
            server_key: dir.write("server.key", &server_key.serialize_pem()),
            _dir: dir,
        }
    }

    fn issuer_tls(ca: PathBuf) -> IssuerTls {
        IssuerTls {
            ca,
            cert: None,
            key: None,
            server_name: None,
        }
    }

    #[test]
    fn client_config_trusts_the_given_ca_and_presents_a_client_certificate() {
        let pki = test_pki();
        assert!(client_config(&issuer_tls(pki.ca.clone())).is_ok());
        let mutual = IssuerTls {
            cert: Some(pki.server_cert.clone()),
            key: Some(pki.server_key.clone()),
            ..issuer_tls(pki.ca.clone())
        };
        let config = client_config(&mutual).expect("mutual TLS config");
        assert!(config.client_auth_cert_resolver.has_certs());
    }

    #[test]
    fn unreadable_or_empty_pem_files_are_named() {
        let dir = TempDir::new("bad-pem");
        let missing = dir.0.join("missing.pem");
        let err = client_config(&issuer_tls(missing.clone())).expect_err("missing file");
        assert!(err.to_string().contains("missing.pem"), "{err}");

        let empty = dir.write("empty.pem", "not a certificate\n");
        let err = client_config(&issuer_tls(empty)).expect_err("no certificate");
        assert!(err.to_string().contains("found none"), "{err}");

        let pki = test_pki();
        let no_key = IssuerTls {
            cert: Some(pki.server_cert.clone()),
            key: Some(pki.server_cert.clone()),
            ..issuer_tls(pki.ca.clone())
        };
        let err = client_config(&no_key).expect_err("certificate is not a key");
        assert!(err.to_string().contains("private key"), "{err}");
    }

    #[test]
    fn server_name_defaults_to_the_endpoint_ip() {
        let address: SocketAddr = "10.1.2.3:9000".parse().expect("address");
        let tls = issuer_tls(PathBuf::from("ca.pem"));
        assert_eq!(
            server_name(&tls, address).expect("ip name"),
            ServerName::IpAddress(address.ip().into())
        );
        let named = IssuerTls {
            server_name: Some("issuer.example".into()),
            ..tls.clone()
        };
        assert_eq!(
            server_name(&named, address).expect("dns name").to_str(),
            "issuer.example"
        );
        let bad = IssuerTls {
            server_name: Some("not a name!".into()),
            ..tls
        };
        assert!(matches!(
            server_name(&bad, address),
            Err(TlsError::ServerName { .. })
        ));
    }
}
