//! The HMAC key that makes audit records unforgeable by anyone who can only read and write the
//! log: without it, a recomputed SHA-256 chain is indistinguishable from the original.

use std::{
    fmt,
    io::Read,
    path::{Path, PathBuf},
};

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// An HMAC-SHA256 key. Its bytes never appear in `Debug` output or errors.
#[derive(Clone)]
pub struct HmacKey(Vec<u8>);

/// Why a key file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read audit key file {path}: {source}; check the path and its permissions")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "audit key file {path} is empty; write at least {min} random bytes to it, e.g. `head -c 32 /dev/urandom > {path}`",
        min = HmacKey::MIN_LEN
    )]
    Empty { path: PathBuf },
    #[error(
        "audit key file {path} holds only {len} key bytes; use at least {min} random bytes (or {hex} hex digits)",
        min = HmacKey::MIN_LEN,
        hex = HmacKey::MIN_LEN * 2
    )]
    TooShort { path: PathBuf, len: usize },
    #[error(
        "audit key file {path} is larger than {max} bytes, so it is not a key file; point --audit-key at a file of 32 random bytes (or 64 hex digits)",
        max = HmacKey::MAX_FILE_LEN
    )]
    TooLarge { path: PathBuf },
}

impl HmacKey {
    /// Shorter keys weaken HMAC-SHA256 below its 256-bit output; refuse them.
    pub const MIN_LEN: usize = 32;
    /// Key files are small; anything bigger is the wrong file.
    const MAX_FILE_LEN: u64 = 4096;

    /// Loads a key file. A file whose content, ignoring surrounding whitespace, is an even
    /// number of hex digits is hex-decoded (so `openssl rand -hex 32 > FILE` works); anything
    /// else is used as raw bytes, unchanged (so `head -c 32 /dev/urandom > FILE` works).
    pub fn from_file(path: &Path) -> Result<Self, KeyError> {
        let read_err = |source| KeyError::Read {
            path: path.to_owned(),
            source,
        };
        // Bounded: a mistaken path such as /dev/urandom must fail, not hang.
        let mut raw = Vec::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(Self::MAX_FILE_LEN + 1).read_to_end(&mut raw))
            .map_err(read_err)?;
        // Who else can read it is the agent's check (runtime/paths.rs).
        Self::from_file_bytes(path, raw)
    }

    /// A key from a key file's content (`path` names it in errors): see
    /// [`Self::from_file`]. Public for the fuzz target.
    pub fn from_file_bytes(path: &Path, raw: Vec<u8>) -> Result<Self, KeyError> {
        if raw.len() as u64 > Self::MAX_FILE_LEN {
            return Err(KeyError::TooLarge {
                path: path.to_owned(),
            });
        }
        let trimmed = raw.trim_ascii();
        if trimmed.is_empty() {
            return Err(KeyError::Empty {
                path: path.to_owned(),
            });
        }
        let bytes = if trimmed.len().is_multiple_of(2) && trimmed.iter().all(u8::is_ascii_hexdigit)
        {
            hex::decode(trimmed).unwrap_or(raw)
        } else {
            raw
        };
        Self::from_bytes(bytes).map_err(|len| KeyError::TooShort {
            path: path.to_owned(),
            len,
        })
    }

    /// A key from bytes; `Err(len)` when shorter than [`Self::MIN_LEN`].
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, usize> {
        if bytes.len() < Self::MIN_LEN {
            return Err(bytes.len());
        }
        Ok(Self(bytes))
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC accepts keys of any length (long ones are hashed), so this never fails.
        HmacSha256::new_from_slice(&self.0).expect("HMAC accepts keys of any length")
    }

    /// Lowercase hex HMAC-SHA256 of `data`.
    pub(crate) fn mac_hex(&self, data: &[u8]) -> String {
        let mut mac = self.mac();
        mac.update(data);
        hex::encode(mac.finalize().into_bytes())
    }

    /// Constant-time check of a hex HMAC over `data`.
    pub(crate) fn verify_hex(&self, data: &[u8], hmac_hex: &str) -> bool {
        let Ok(tag) = hex::decode(hmac_hex) else {
            return false;
        };
        let mut mac = self.mac();
        mac.update(data);
        mac.verify_slice(&tag).is_ok()
    }
}

impl fmt::Debug for HmacKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HmacKey(<{} bytes, redacted>)", self.0.len())
    }
}

impl Drop for HmacKey {
    fn drop(&mut self) {
        // Best effort: do not leave the key in freed memory.
        self.0.iter_mut().for_each(|b| *b = 0);
        std::hint::black_box(&self.0);
    }
}
