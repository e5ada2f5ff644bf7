//! Card data at rest: the data key, AES-256-GCM sealing of what a reversal
//! needs, and the keyed PAN hash for look-ups. Hash and encryption keys are
//! both derived from the data key with HKDF, so neither reveals the other.

use std::fmt;
use std::fs::OpenOptions;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey, NONCE_LEN};
use ring::hkdf;
use ring::hmac;
use ring::rand::{SecureRandom as _, SystemRandom};

/// Why a data key could not be had.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read the journal key file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot create the journal key file {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the journal key file {path} must hold 32 raw bytes or 64 hex digits")]
    Malformed { path: PathBuf },
    #[error("the system random source failed")]
    Random,
}

/// The 256-bit journal data key. It never prints.
pub struct DataKey([u8; 32]);

impl DataKey {
    pub fn from_bytes(bytes: [u8; 32]) -> DataKey {
        DataKey(bytes)
    }

    /// A fresh random key.
    pub fn generate() -> Result<DataKey, KeyError> {
        let mut bytes = [0u8; 32];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| KeyError::Random)?;
        Ok(DataKey(bytes))
    }

    /// A key from 32 raw bytes or 64 hex digits (surrounding whitespace allowed).
    pub fn parse(contents: &[u8]) -> Option<DataKey> {
        if let Ok(raw) = <[u8; 32]>::try_from(contents) {
            return Some(DataKey(raw));
        }
        let text = std::str::from_utf8(contents).ok()?.trim();
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text, &mut bytes).ok()?;
        Some(DataKey(bytes))
    }

    /// The key in `path`.
    pub fn load(path: &Path) -> Result<DataKey, KeyError> {
        let contents = std::fs::read(path).map_err(|source| KeyError::Read {
            path: path.to_owned(),
            source,
        })?;
        DataKey::parse(&contents).ok_or_else(|| KeyError::Malformed {
            path: path.to_owned(),
        })
    }

    /// The key in `path`, or a new one written there as 64 hex digits with
    /// mode 0600. The flag says whether it was created, so the caller can say
    /// that production should supply its own.
    pub fn load_or_create(path: &Path) -> Result<(DataKey, bool), KeyError> {
        let key = DataKey::generate()?;
        let created = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path);
        match created {
            Ok(mut file) => {
                let written = file
                    .write_all(hex::encode(key.0).as_bytes())
                    .and_then(|()| file.sync_all());
                written.map_err(|source| KeyError::Create {
                    path: path.to_owned(),
                    source,
                })?;
                Ok((key, true))
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                DataKey::load(path).map(|key| (key, false))
            }
            Err(source) => Err(KeyError::Create {
                path: path.to_owned(),
                source,
            }),
        }
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey(..)")
    }
}

/// A sealed value: the nonce, stored beside the ciphertext and its tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub nonce: [u8; NONCE_LEN],
    pub ciphertext: Vec<u8>,
}

/// A sealed value that does not open: wrong key, wrong record, or tampered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("sealed card data does not open: tampered with, moved or under another key")]
pub struct OpenError;

/// Seals and opens card data and hashes PANs, with keys derived from one [`DataKey`].
pub struct CardVault {
    sealing: LessSafeKey,
    pan_hash: hmac::Key,
    random: SystemRandom,
}

/// HKDF salt and labels: changing them changes every key, so they are fixed.
const HKDF_SALT: &[u8] = b"isoswitch journal v1";
const SEALING_INFO: &[u8] = b"aes-256-gcm card data";
const PAN_HASH_INFO: &[u8] = b"hmac-sha256 pan hash";

impl CardVault {
    pub fn new(key: &DataKey) -> CardVault {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, HKDF_SALT).extract(&key.0);
        let sealing_info = [SEALING_INFO];
        let pan_info = [PAN_HASH_INFO];
        // Expanding to 32 bytes (one SHA-256 block) cannot fail.
        let sealing = prk
            .expand(&sealing_info, &aead::AES_256_GCM)
            .expect("HKDF output of one block is within its limit");
        let pan_hash = prk
            .expand(&pan_info, hmac::HMAC_SHA256)
            .expect("HKDF output of one block is within its limit");
        CardVault {
            sealing: LessSafeKey::new(UnboundKey::from(sealing)),
            pan_hash: hmac::Key::from(pan_hash),
            random: SystemRandom::new(),
        }
    }

    /// HMAC-SHA-256 of the PAN's digits under the derived hash key.
    pub fn pan_hash(&self, pan: &str) -> [u8; 32] {
        let tag = hmac::sign(&self.pan_hash, pan.as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        out
    }

    /// Encrypts `plaintext` under a fresh random nonce; `record` (the row's
    /// identity) is authenticated with it, so a value moved to another row fails.
    pub fn seal(&self, record: &str, plaintext: &[u8]) -> Result<Sealed, KeyError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.random.fill(&mut nonce).map_err(|_| KeyError::Random)?;
        let mut ciphertext = plaintext.to_vec();
        self.sealing
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(record.as_bytes()),
                &mut ciphertext,
            )
            .map_err(|_| KeyError::Random)?;
        Ok(Sealed { nonce, ciphertext })
    }

    /// Decrypts what [`CardVault::seal`] sealed for the same `record`.
    pub fn open(&self, record: &str, sealed: &Sealed) -> Result<Vec<u8>, OpenError> {
        let mut buffer = sealed.ciphertext.clone();
        let plaintext = self
            .sealing
            .open_in_place(
                Nonce::assume_unique_for_key(sealed.nonce),
                Aad::from(record.as_bytes()),
                &mut buffer,
            )
            .map_err(|_| OpenError)?;
        Ok(plaintext.to_vec())
    }
}

/// The associated data naming a transaction row.
pub(crate) fn txn_record(id: i64) -> String {
    format!("txn:{id}")
}

/// The associated data naming a card on file.
pub(crate) fn card_record(token: &str) -> String {
    format!("card:{token}")
}

/// The associated data naming a queue row.
pub(crate) fn saf_record(id: i64) -> String {
    format!("saf:{id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vault() -> CardVault {
        CardVault::new(&DataKey::from_bytes([7; 32]))
    }

    #[test]
    fn sealed_data_opens_for_its_own_record_only() {
        let v = vault();
        let sealed = v.seal("txn:1", b"4111111111111111").expect("seal");
        assert_eq!(v.open("txn:1", &sealed).expect("open"), b"4111111111111111");
        assert_eq!(v.open("txn:2", &sealed), Err(OpenError));
    }

    #[test]
    fn a_flipped_bit_is_detected() {
        let v = vault();
        let mut sealed = v.seal("saf:3", b"field data").expect("seal");
        sealed.ciphertext[0] ^= 1;
        assert_eq!(v.open("saf:3", &sealed), Err(OpenError));
    }

    #[test]
    fn each_seal_takes_a_new_nonce() {
        let v = vault();
        let a = v.seal("txn:1", b"same").expect("seal");
        let b = v.seal("txn:1", b"same").expect("seal");
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.ciphertext, b.ciphertext);
    }

    #[test]
    fn another_key_cannot_open_and_hashes_differ() {
        let other = CardVault::new(&DataKey::from_bytes([8; 32]));
        let sealed = vault().seal("txn:1", b"x").expect("seal");
        assert_eq!(other.open("txn:1", &sealed), Err(OpenError));
        assert_ne!(
            vault().pan_hash("4111111111111111"),
            other.pan_hash("4111111111111111")
        );
        assert_eq!(
            vault().pan_hash("4111111111111111"),
            vault().pan_hash("4111111111111111")
        );
    }

    #[test]
    fn the_pan_hash_key_is_not_the_data_key() {
        // A plain HMAC under the raw data key must not match the journal's hash.
        let raw = hmac::Key::new(hmac::HMAC_SHA256, &[7; 32]);
        let plain = hmac::sign(&raw, b"4111111111111111");
        assert_ne!(plain.as_ref(), vault().pan_hash("4111111111111111"));
    }

    #[test]
    fn key_parses_raw_or_hex_and_never_prints() {
        assert!(DataKey::parse(&[1; 32]).is_some());
        let hex_key = format!("{}\n", "ab".repeat(32));
        assert!(DataKey::parse(hex_key.as_bytes()).is_some());
        assert!(DataKey::parse(b"short").is_none());
        assert_eq!(format!("{:?}", DataKey::from_bytes([9; 32])), "DataKey(..)");
    }
}
