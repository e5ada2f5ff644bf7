//! Values several config sections read the same way: socket addresses, length
//! headers and spec files. Both `config` and `simulator::config` use them, so
//! they live apart and neither section has to import the other.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer};

/// Length-header kinds a connection may use (the framing module owns their meaning).
pub const HEADER_KINDS: [&str; 4] = ["2b", "4b", "2a", "4a"];

/// The spec used when a section names none: a file, or else the built-in spec.
pub fn default_spec() -> PathBuf {
    PathBuf::from("specs/iso87ascii.toml")
}

pub fn default_header() -> String {
    "2b".to_owned()
}

/// Reads a string and refuses it with `check`'s message, so toml points at the value.
pub fn checked<'de, D: Deserializer<'de>>(
    deserializer: D,
    check: fn(&str) -> Result<(), String>,
) -> Result<String, D::Error> {
    let text = String::deserialize(deserializer)?;
    check(&text).map_err(D::Error::custom)?;
    Ok(text)
}

pub fn socket_addr<'de, D: Deserializer<'de>>(deserializer: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(deserializer)?;
    text.parse().map_err(|_| {
        D::Error::custom(format!(
            "expected an IP address and port like \"127.0.0.1:8583\", found {text:?}"
        ))
    })
}

pub fn optional_socket_addr<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<SocketAddr>, D::Error> {
    socket_addr(deserializer).map(Some)
}

/// One of [`HEADER_KINDS`].
pub fn header_kind<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    checked(deserializer, |text| {
        if HEADER_KINDS.contains(&text) {
            Ok(())
        } else {
            Err(format!(
                "expected a length header of \"2b\", \"4b\", \"2a\" or \"4a\", found {text:?}"
            ))
        }
    })
}
