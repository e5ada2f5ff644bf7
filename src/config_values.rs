//! Values several config sections read the same way: socket addresses, length
//! headers, spec files, and paths relative to the config file. The sections
//! (`config`, `simulator::config`, `risk::config`) all use them, so they live
//! apart and no section has to import another.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

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

/// The directory a loaded config file is in: its relative paths start there,
/// not at the process's working directory.
#[derive(Debug, Clone, Copy)]
pub struct ConfigDir<'a>(pub &'a Path);

impl ConfigDir<'_> {
    /// Makes a relative `path` relative to the config file; absolute ones stay.
    pub fn resolve(&self, path: &mut PathBuf) {
        if path.is_relative() {
            *path = self.0.join(&*path);
        }
    }

    pub fn resolve_optional(&self, path: &mut Option<PathBuf>) {
        if let Some(path) = path {
            self.resolve(path);
        }
    }

    /// As [`ConfigDir::resolve`], except that a built-in spec name
    /// (`iso87ascii`, `specs/iso87ascii.toml`) with no such file beside the
    /// config stays a name, so it still means the shipped spec.
    pub fn resolve_spec(&self, spec: &mut PathBuf) {
        let beside = self.0.join(&*spec);
        let builtin = spec.to_str().is_some_and(crate::specs::is_builtin);
        if spec.is_relative() && (beside.exists() || !builtin) {
            *spec = beside;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_start_at_the_config_dir_and_absolute_ones_stay() {
        let dir = ConfigDir(Path::new("/etc/isoswitch"));
        let mut relative = PathBuf::from("certs/pos.pem");
        dir.resolve(&mut relative);
        assert_eq!(relative, Path::new("/etc/isoswitch/certs/pos.pem"));
        let mut absolute = PathBuf::from("/var/lib/hotlist.txt");
        dir.resolve(&mut absolute);
        assert_eq!(absolute, Path::new("/var/lib/hotlist.txt"));
        let mut none = None;
        dir.resolve_optional(&mut none);
        assert_eq!(none, None);
    }

    #[test]
    fn a_builtin_spec_name_stays_a_name_unless_a_file_of_that_name_is_beside_the_config() {
        let dir = ConfigDir(Path::new("/nonexistent/isoswitch"));
        for name in ["iso87bcd", "specs/iso87ascii.toml"] {
            let mut spec = PathBuf::from(name);
            dir.resolve_spec(&mut spec);
            assert_eq!(spec, Path::new(name));
        }
        let mut own = PathBuf::from("bank.toml");
        dir.resolve_spec(&mut own);
        assert_eq!(own, Path::new("/nonexistent/isoswitch/bank.toml"));
        let repo = ConfigDir(Path::new(env!("CARGO_MANIFEST_DIR")));
        let mut shipped = PathBuf::from("specs/iso87ascii.toml");
        repo.resolve_spec(&mut shipped);
        assert_eq!(
            shipped,
            Path::new(env!("CARGO_MANIFEST_DIR")).join("specs/iso87ascii.toml")
        );
    }
}
