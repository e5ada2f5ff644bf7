//! TLS towards a switch listener: a rustls client trusting the CA certificates in
//! one PEM file, with the ring provider the switch itself uses.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

use crate::driver::TlsTarget;

/// A connector trusting the certificates in `ca`, checking the server against `name`.
pub fn target(ca: &Path, name: &str) -> Result<TlsTarget> {
    let shown = ca.display();
    let certs = CertificateDer::pem_file_iter(ca)
        .with_context(|| format!("--tls-ca {shown}"))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("--tls-ca {shown}: expected PEM certificates"))?;
    if certs.is_empty() {
        bail!("--tls-ca {shown}: expected at least one PEM certificate, found none");
    }
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs {
        roots.add(cert).with_context(|| {
            format!("--tls-ca {shown}: a certificate cannot be used as a trust anchor")
        })?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS setup")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let server_name = ServerName::try_from(name.to_string())
        .with_context(|| format!("--tls-server-name: {name:?} is not a DNS name or IP address"))?;
    Ok(TlsTarget {
        connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
        server_name,
    })
}
