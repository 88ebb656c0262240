//! Stand-ins for `identity` types until that module lands.

/// A SHA-256 fingerprint (placeholder).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    pub fn of_credential(_header: &str, raw: &[u8]) -> Self {
        let mut out = [0u8; 32];
        for (i, b) in raw.iter().enumerate() {
            out[i % 32] ^= *b;
        }
        Self(out)
    }
}
