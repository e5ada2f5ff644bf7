//! The `[[issuer]]` section: an issuer host (or group of failover hosts), how
//! the switch reaches it, and its timeouts. `config` assembles it with the
//! other sections and checks how they relate.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;

use crate::config_values::{default_header, default_spec, header_kind};
use crate::tls::IssuerTls;

/// The special endpoint that means "the in-process issuer simulator".
pub const SIMULATOR_ENDPOINT: &str = "sim";

/// An issuer host (or group of failover hosts) the switch forwards to.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    pub name: String,
    /// Tried in order; the first reachable one is used.
    pub endpoints: Vec<Endpoint>,
    #[serde(default = "default_spec")]
    pub spec: PathBuf,
    #[serde(default = "default_header", deserialize_with = "header_kind")]
    pub header: String,
    #[serde(default)]
    pub header_includes_self: bool,
    /// Connections kept open to the active endpoint.
    #[serde(default = "default_issuer_connections")]
    pub connections: u32,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Seconds of silence before an echo (0800/301); 0 turns echoes off.
    #[serde(default = "default_echo_interval_s")]
    pub echo_interval_s: u64,
    /// Send a sign-on (0800/001) after connecting.
    #[serde(default = "default_sign_on")]
    pub sign_on: bool,
    #[serde(default)]
    pub tls: Option<IssuerTls>,
}

impl IssuerConfig {
    /// The length-header kind, one of [`HEADER_KINDS`](crate::config_values::HEADER_KINDS).
    pub fn header(&self) -> &str {
        &self.header
    }

    /// The files this issuer reads when it starts: its spec file (a path
    /// that does not exist means a built-in spec, as `specs::resolve` reads
    /// it), and its TLS CA, client certificate and key. A reload compares
    /// what they contain, not only their paths.
    pub fn files(&self) -> Vec<&Path> {
        let mut files = Vec::new();
        if self.spec.exists() {
            files.push(self.spec.as_path());
        }
        if let Some(tls) = &self.tls {
            files.push(tls.ca.as_path());
            files.extend(tls.cert.as_deref());
            files.extend(tls.key.as_deref());
        }
        files
    }
}

/// Where an issuer link connects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "String")]
pub enum Endpoint {
    /// The in-process issuer simulator (`"sim"`).
    Simulator,
    Address(SocketAddr),
}

impl FromStr for Endpoint {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text == SIMULATOR_ENDPOINT {
            return Ok(Endpoint::Simulator);
        }
        text.parse().map(Endpoint::Address).map_err(|_| {
            format!(
                "expected an endpoint like \"127.0.0.1:9100\" (IP address and port) or \"{SIMULATOR_ENDPOINT}\", found {text:?}"
            )
        })
    }
}

impl TryFrom<String> for Endpoint {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Simulator => f.write_str(SIMULATOR_ENDPOINT),
            Endpoint::Address(address) => address.fmt(f),
        }
    }
}

// ---- explicit defaults ----

fn default_issuer_connections() -> u32 {
    1
}
fn default_timeout_ms() -> u64 {
    // Below the schemes' stand-in limits, so our 91 reaches the terminal first.
    5_000
}
fn default_echo_interval_s() -> u64 {
    30
}
fn default_sign_on() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::tests::TempDir;

    fn issuer(keys: &str) -> IssuerConfig {
        toml::from_str(&format!("name = \"bank\"\nendpoints = [\"sim\"]\n{keys}"))
            .expect("valid issuer section")
    }

    fn quoted(path: &Path) -> String {
        toml::Value::String(path.display().to_string()).to_string()
    }

    #[test]
    fn files_are_the_spec_file_and_every_tls_file() {
        let dir = TempDir::new("issuer-files");
        let spec = dir.write("bank.toml", "");
        let (ca, cert, key) = (
            dir.0.join("ca.pem"),
            dir.0.join("c.pem"),
            dir.0.join("c.key"),
        );
        let config = issuer(&format!(
            "spec = {}\ntls = {{ ca = {}, cert = {}, key = {} }}",
            quoted(&spec),
            quoted(&ca),
            quoted(&cert),
            quoted(&key)
        ));
        assert_eq!(config.files(), [&spec, &ca, &cert, &key]);
    }

    #[test]
    fn a_built_in_spec_name_is_no_file() {
        assert!(issuer("spec = \"iso87bcd\"").files().is_empty());
    }
}
