//! The `[journal]` and `[store_and_forward]` sections: where the journal lives,
//! how durable a write is, its data key, and how the persistent queue retries.
//! Values are checked as they are read where they stand alone; ranges that
//! relate two keys are checked by `validate`, which names the key at fault.

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer};

use super::card_data::{DataKey, KeyError};
use super::Durability;
use crate::config_values::ConfigDir;
use crate::iso8583::ResponseCode;

/// The environment variable that supplies the journal's data key (64 hex
/// digits); when set, it wins over any key file.
pub const KEY_ENV: &str = "ISOSWITCH_JOURNAL_KEY";

/// `[journal]`: the transaction journal and the store-and-forward queue share
/// one SQLite file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournalConfig {
    /// The SQLite file; relative to the config file's directory (to the
    /// working directory for the embedded default).
    #[serde(default = "default_path")]
    pub path: PathBuf,
    #[serde(default)]
    pub durability: JournalMode,
    /// Transactions older than this many days are deleted; 0 keeps them forever.
    #[serde(default = "default_retention_days")]
    pub retention_days: u32,
    /// Where the data key is kept; `None` means [`JournalConfig::key_path`]'s
    /// default, `<path>.key`.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// `postgresql://user@host:port/db`: the journal and queue in PostgreSQL,
    /// shared by every instance given the same URL, instead of `path`.
    /// Instances sharing it need the same data key (so `key_file` or
    /// [`KEY_ENV`], never a key generated beside one of them).
    #[serde(default, deserialize_with = "postgres_url")]
    pub url: Option<String>,
}

impl Default for JournalConfig {
    fn default() -> Self {
        JournalConfig {
            url: None,
            path: default_path(),
            durability: JournalMode::default(),
            retention_days: default_retention_days(),
            key_file: None,
        }
    }
}

/// `durability`: when an approval may be answered, relative to its journal write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(try_from = "String")]
pub enum JournalMode {
    /// `"commit"`: once the record is committed to disk.
    #[default]
    Commit,
    /// `"async"`: once the writer has accepted it; a crash may lose the last records.
    Async,
    /// `"none"`: journal and queue are kept in memory only, so nothing
    /// survives a restart; for measuring what the journal costs.
    None,
}

impl JournalMode {
    /// How the SQLite journal resolves its writes; `None` when there is no
    /// SQLite journal at all.
    pub fn durability(self) -> Option<Durability> {
        match self {
            JournalMode::Commit => Some(Durability::Commit),
            JournalMode::Async => Some(Durability::Async),
            JournalMode::None => None,
        }
    }
}

impl TryFrom<String> for JournalMode {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        match text.as_str() {
            "commit" => Ok(JournalMode::Commit),
            "async" => Ok(JournalMode::Async),
            "none" => Ok(JournalMode::None),
            _ => Err(format!(
                "durability: expected \"commit\", \"async\" or \"none\", found {text:?}"
            )),
        }
    }
}

impl fmt::Display for JournalMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            JournalMode::Commit => "commit",
            JournalMode::Async => "async",
            JournalMode::None => "none",
        })
    }
}

/// Where a data key came from, so start-up can say so (never the key itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// [`KEY_ENV`].
    Env,
    /// An existing key file.
    File(PathBuf),
    /// A key generated just now and written to this file.
    Created(PathBuf),
}

impl fmt::Display for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::Env => write!(f, "the environment variable {KEY_ENV}"),
            KeySource::File(path) => write!(f, "the key file {}", path.display()),
            KeySource::Created(path) => write!(
                f,
                "a new key generated into {} (fine for trying things out; in production \
                 supply your own key through {KEY_ENV} or key_file)",
                path.display()
            ),
        }
    }
}

/// Why the journal's data key could not be had.
#[derive(Debug, thiserror::Error)]
pub enum JournalKeyError {
    /// The variable is set but is not a key; says what it held without printing it.
    #[error("{KEY_ENV}: expected 64 hex digits (a 256-bit key), found {0}")]
    Env(String),
    #[error(transparent)]
    File(#[from] KeyError),
}

impl JournalConfig {
    /// Makes `path` and `key_file` relative to the config file's directory.
    pub fn resolve_paths(&mut self, dir: ConfigDir<'_>) {
        dir.resolve(&mut self.path);
        dir.resolve_optional(&mut self.key_file);
    }

    /// The key file: `key_file`, or else the journal's path with `.key`
    /// appended (`isoswitch.db.key`).
    pub fn key_path(&self) -> PathBuf {
        match &self.key_file {
            Some(path) => path.clone(),
            None => {
                let mut path = OsString::from(self.path.as_os_str());
                path.push(".key");
                PathBuf::from(path)
            }
        }
    }

    /// The data key that seals card data in the journal: from [`KEY_ENV`]
    /// when it is set, else from [`JournalConfig::key_path`], which is
    /// created with a fresh random key (mode 0600) when it does not exist.
    ///
    /// A generated key is for trying things out: it sits beside the data it
    /// protects. Production supplies its own key (from a secrets manager
    /// through [`KEY_ENV`], or a `key_file` on other storage); the returned
    /// [`KeySource`] says which happened so start-up can warn.
    pub fn load_key(&self) -> Result<(DataKey, KeySource), JournalKeyError> {
        self.load_key_with(std::env::var_os(KEY_ENV))
    }

    /// [`JournalConfig::load_key`] with the variable's value given, so tests
    /// need not change the process environment.
    fn load_key_with(
        &self,
        env: Option<OsString>,
    ) -> Result<(DataKey, KeySource), JournalKeyError> {
        if let Some(value) = env {
            return key_from_env(&value).map(|key| (key, KeySource::Env));
        }
        let path = self.key_path();
        let (key, created) = DataKey::load_or_create(&path)?;
        let source = if created {
            KeySource::Created(path)
        } else {
            KeySource::File(path)
        };
        Ok((key, source))
    }
}

/// The key in [`KEY_ENV`], when the variable is set: what the look-up tools
/// hash a PAN with when the journal has no key file beside it (PostgreSQL).
pub fn env_key() -> Option<Result<DataKey, JournalKeyError>> {
    std::env::var_os(KEY_ENV).map(|value| key_from_env(&value))
}

/// Exactly 64 hex digits (surrounding whitespace allowed). Unlike a key file,
/// 32 raw bytes are refused: a variable that happens to be 32 characters
/// long is a mistake, not a key.
fn key_from_env(value: &OsString) -> Result<DataKey, JournalKeyError> {
    let Some(text) = value.to_str() else {
        return Err(JournalKeyError::Env("text that is not UTF-8".to_owned()));
    };
    let text = text.trim();
    if text.len() != 64 {
        return Err(JournalKeyError::Env(format!("{} characters", text.len())));
    }
    if let Some(position) = text.bytes().position(|b| !b.is_ascii_hexdigit()) {
        return Err(JournalKeyError::Env(format!(
            "a character that is not a hex digit at position {}",
            position + 1
        )));
    }
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(text, &mut bytes)
        .map_err(|_| JournalKeyError::Env("text that is not hex".to_owned()))?;
    Ok(DataKey::from_bytes(bytes))
}

/// `[store_and_forward]`: how queued reversals and advices are retried.
/// An issuer's answer with one of `retry_codes` is retried; any other
/// answer settles the item; no answer is retried until `expiry_s`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SafConfig {
    /// An item still unanswered this long after it was queued is marked failed.
    #[serde(default = "default_expiry_s")]
    pub expiry_s: u64,
    #[serde(default = "default_retry_codes", deserialize_with = "retry_codes")]
    pub retry_codes: Vec<ResponseCode>,
    /// Items outstanding at once per issuer.
    #[serde(default = "default_in_flight")]
    pub in_flight: usize,
    /// Backoff between attempts of one item: starts here, doubles, stops at `retry_max_ms`.
    #[serde(default = "default_retry_first_ms")]
    pub retry_first_ms: u64,
    #[serde(default = "default_retry_max_ms")]
    pub retry_max_ms: u64,
}

impl Default for SafConfig {
    fn default() -> Self {
        SafConfig {
            expiry_s: default_expiry_s(),
            retry_codes: default_retry_codes(),
            in_flight: default_in_flight(),
            retry_first_ms: default_retry_first_ms(),
            retry_max_ms: default_retry_max_ms(),
        }
    }
}

/// A setting that is well-formed but cannot work: which key, and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {problem}")]
pub struct InvalidSetting {
    pub key: &'static str,
    pub problem: String,
}

fn invalid(key: &'static str, problem: String) -> InvalidSetting {
    InvalidSetting { key, problem }
}

impl SafConfig {
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if self.expiry_s == 0 {
            return Err(invalid("expiry_s", "expected > 0, found 0".to_owned()));
        }
        if self.in_flight == 0 {
            return Err(invalid("in_flight", "expected >= 1, found 0".to_owned()));
        }
        if self.retry_first_ms == 0 {
            // A zero backoff never grows: the sender would resend in a tight loop.
            return Err(invalid(
                "retry_first_ms",
                "expected > 0, found 0".to_owned(),
            ));
        }
        if self.retry_first_ms > self.retry_max_ms {
            return Err(invalid(
                "retry_first_ms",
                format!(
                    "expected retry_first_ms <= retry_max_ms, found {} > {}",
                    self.retry_first_ms, self.retry_max_ms
                ),
            ));
        }
        Ok(())
    }
}

/// Two-character response codes. An approval is refused: retrying an
/// answered item on approval would send it until it expired.
fn retry_codes<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<ResponseCode>, D::Error> {
    let texts = Vec::<String>::deserialize(deserializer)?;
    texts
        .iter()
        .map(|text| {
            let code: ResponseCode = text.parse().map_err(|_| {
                D::Error::custom(format!(
                    "retry_codes: expected response codes of two letters or digits (\"91\"), \
                     found {text:?}"
                ))
            })?;
            if code.is_approval() {
                return Err(D::Error::custom(format!(
                    "retry_codes: expected codes that are not approvals, found {text:?}"
                )));
            }
            Ok(code)
        })
        .collect()
}

/// A `postgresql://` (or `postgres://`) URL.
fn postgres_url<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    let text = String::deserialize(deserializer)?;
    if !super::postgres::is_url(&text) {
        return Err(D::Error::custom(format!(
            "url: expected postgresql://user@host:port/database, found {:?}",
            super::postgres::redacted(&text)
        )));
    }
    Ok(Some(text))
}

// ---- explicit defaults ----

fn default_path() -> PathBuf {
    PathBuf::from("isoswitch.db")
}
fn default_retention_days() -> u32 {
    90
}
fn default_expiry_s() -> u64 {
    86_400
}
fn default_retry_codes() -> Vec<ResponseCode> {
    vec![ResponseCode::ISSUER_INOPERATIVE]
}
fn default_in_flight() -> usize {
    128
}
fn default_retry_first_ms() -> u64 {
    500
}
fn default_retry_max_ms() -> u64 {
    30_000
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// The two sections as a whole config file would hold them.
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Sections {
        #[serde(default)]
        journal: JournalConfig,
        #[serde(default)]
        store_and_forward: SafConfig,
    }

    fn parse(text: &str) -> Result<Sections, String> {
        toml::from_str(text).map_err(|e| e.message().to_owned())
    }

    fn fresh_dir(test: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "isoswitch-journal-config-{test}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    #[test]
    fn absent_sections_take_their_documented_defaults() {
        let sections = parse("").expect("empty is valid");
        let journal = sections.journal;
        assert_eq!(journal.path, Path::new("isoswitch.db"));
        assert_eq!(journal.durability, JournalMode::Commit);
        assert_eq!(journal.retention_days, 90);
        assert_eq!(journal.key_file, None);
        assert_eq!(journal.url, None);
        assert_eq!(journal.key_path(), Path::new("isoswitch.db.key"));
        let saf = sections.store_and_forward;
        assert_eq!(saf.expiry_s, 86_400);
        assert_eq!(saf.retry_codes, [ResponseCode::ISSUER_INOPERATIVE]);
        assert_eq!(saf.in_flight, 128);
        assert_eq!((saf.retry_first_ms, saf.retry_max_ms), (500, 30_000));
        assert_eq!(saf.validate(), Ok(()));
    }

    #[test]
    fn each_durability_maps_to_the_journal_s_and_none_to_no_journal() {
        for (text, mode, durability) in [
            ("commit", JournalMode::Commit, Some(Durability::Commit)),
            ("async", JournalMode::Async, Some(Durability::Async)),
            ("none", JournalMode::None, None),
        ] {
            let sections =
                parse(&format!("[journal]\ndurability = \"{text}\"\n")).expect("valid mode");
            assert_eq!(sections.journal.durability, mode);
            assert_eq!(mode.durability(), durability);
            assert_eq!(mode.to_string(), text);
        }
        let error = parse("[journal]\ndurability = \"fsync\"\n").expect_err("unknown mode");
        assert!(
            error.contains(
                "durability: expected \"commit\", \"async\" or \"none\", found \"fsync\""
            ),
            "{error}"
        );
    }

    #[test]
    fn a_journal_url_must_be_postgresql_and_errors_hide_its_password() {
        let journal = parse("[journal]\nurl = \"postgresql://switch@db:5432/isoswitch\"\n")
            .expect("valid")
            .journal;
        assert_eq!(
            journal.url.as_deref(),
            Some("postgresql://switch@db:5432/isoswitch")
        );
        let error =
            parse("[journal]\nurl = \"mysql://u:secret@db/x\"\n").expect_err("not postgres");
        assert!(
            error.contains("url: expected postgresql://user@host:port/database"),
            "{error}"
        );
        assert!(!error.contains("secret"), "{error}");
    }

    #[test]
    fn paths_resolve_beside_the_config_and_the_key_follows_the_journal() {
        let mut journal = parse("[journal]\npath = \"data/switch.db\"\n")
            .expect("valid")
            .journal;
        journal.resolve_paths(ConfigDir(Path::new("/etc/isoswitch")));
        assert_eq!(journal.path, Path::new("/etc/isoswitch/data/switch.db"));
        assert_eq!(
            journal.key_path(),
            Path::new("/etc/isoswitch/data/switch.db.key")
        );

        let mut journal = parse("[journal]\nkey_file = \"keys/journal.key\"\n")
            .expect("valid")
            .journal;
        journal.resolve_paths(ConfigDir(Path::new("/etc/isoswitch")));
        assert_eq!(
            journal.key_path(),
            Path::new("/etc/isoswitch/keys/journal.key")
        );
    }

    #[test]
    fn the_key_file_is_created_once_then_read_back() {
        let dir = fresh_dir("create");
        let journal = JournalConfig {
            path: dir.join("j.db"),
            ..JournalConfig::default()
        };
        let (first, source) = journal.load_key_with(None).expect("created");
        assert_eq!(source, KeySource::Created(dir.join("j.db.key")));
        assert!(
            source.to_string().contains("supply your own key"),
            "{source}"
        );
        let (second, source) = journal.load_key_with(None).expect("read back");
        assert_eq!(source, KeySource::File(dir.join("j.db.key")));
        // Same key: what one seals, the other opens.
        let sealed = super::super::CardVault::new(&first)
            .seal("txn:1", b"4111111111111111")
            .expect("seal");
        let opened = super::super::CardVault::new(&second).open("txn:1", &sealed);
        assert_eq!(opened.as_deref(), Ok(&b"4111111111111111"[..]));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_environment_key_wins_and_no_file_is_written() {
        let dir = fresh_dir("env");
        let journal = JournalConfig {
            path: dir.join("j.db"),
            ..JournalConfig::default()
        };
        let hex_key = format!(" {}\n", "0f".repeat(32));
        let (key, source) = journal
            .load_key_with(Some(hex_key.into()))
            .expect("a valid key");
        assert_eq!(source, KeySource::Env);
        assert!(!journal.key_path().exists());
        let sealed = super::super::CardVault::new(&DataKey::from_bytes([0x0f; 32]))
            .seal("txn:1", b"x")
            .expect("seal");
        assert!(super::super::CardVault::new(&key)
            .open("txn:1", &sealed)
            .is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_malformed_environment_key_is_refused_without_printing_it() {
        let journal = JournalConfig::default();
        let raw32 = "k".repeat(32);
        let not_hex = format!("{}zz", "ab".repeat(31));
        for (value, found) in [
            (raw32.as_str(), "found 32 characters"),
            ("", "found 0 characters"),
            (not_hex.as_str(), "not a hex digit at position 63"),
        ] {
            let error = journal
                .load_key_with(Some(value.into()))
                .expect_err("not a key")
                .to_string();
            assert!(
                error.starts_with("ISOSWITCH_JOURNAL_KEY: expected 64 hex digits"),
                "{error}"
            );
            assert!(error.contains(found), "{error}");
            assert!(value.is_empty() || !error.contains(value), "{error}");
        }
    }

    #[test]
    fn an_unreadable_key_file_names_its_path() {
        let journal = JournalConfig {
            key_file: Some(PathBuf::from("/nonexistent/isoswitch/journal.key")),
            ..JournalConfig::default()
        };
        let error = journal.load_key_with(None).expect_err("no such directory");
        assert!(
            error
                .to_string()
                .contains("/nonexistent/isoswitch/journal.key"),
            "{error}"
        );
    }

    #[test]
    fn retry_codes_must_be_two_characters_and_not_approvals() {
        let saf = parse("[store_and_forward]\nretry_codes = [\"91\", \"96\"]\n")
            .expect("valid")
            .store_and_forward;
        assert_eq!(
            saf.retry_codes,
            [
                ResponseCode::ISSUER_INOPERATIVE,
                ResponseCode::SYSTEM_MALFUNCTION
            ]
        );
        let error = parse("[store_and_forward]\nretry_codes = [\"911\"]\n").expect_err("3 chars");
        assert!(
            error.contains("retry_codes: expected response codes"),
            "{error}"
        );
        assert!(error.contains("found \"911\""), "{error}");
        let error = parse("[store_and_forward]\nretry_codes = [\"00\"]\n").expect_err("approval");
        assert!(
            error.contains("retry_codes: expected codes that are not approvals"),
            "{error}"
        );
    }

    #[test]
    fn saf_ranges_are_checked_naming_the_key() {
        let base = SafConfig::default();
        let cases = [
            (
                SafConfig {
                    expiry_s: 0,
                    ..base.clone()
                },
                "expiry_s: expected > 0",
            ),
            (
                SafConfig {
                    in_flight: 0,
                    ..base.clone()
                },
                "in_flight: expected >= 1",
            ),
            (
                SafConfig {
                    retry_first_ms: 0,
                    ..base.clone()
                },
                "retry_first_ms: expected > 0",
            ),
            (
                SafConfig {
                    retry_first_ms: 30_001,
                    ..base.clone()
                },
                "retry_first_ms: expected retry_first_ms <= retry_max_ms, found 30001 > 30000",
            ),
        ];
        for (saf, expected) in cases {
            let error = saf.validate().expect_err(expected).to_string();
            assert!(error.starts_with(expected), "{error}");
        }
        let equal = SafConfig {
            retry_first_ms: 30_000,
            ..base
        };
        assert_eq!(
            equal.validate(),
            Ok(()),
            "first == max is a constant backoff"
        );
    }
}
