//! Canary secrets: fresh random tokens planted in test traffic, and a scan
//! that finds any of them (or an encoded or cut-off piece of one) in what
//! rampwatch printed, logged, exported or audited.
//!
//! Std only, because `agent/tests/canary_replay.rs` includes this file with
//! `#[path]` too: the agent crate cannot depend on this crate (it is the
//! other way round), and both tests must agree on what counts as a leak.
//!
//! What counts: the marker `rwcanary` anywhere, or any 12-character piece of
//! a planted secret as sent (so a token cut short by a table column or a log
//! field still counts), of its lowercase hex, of its base64 (at each of the
//! three byte alignments, so a secret inside a longer base64 blob counts),
//! or of its percent-encoding. Matching ignores ASCII case. Hashes are not
//! leaks: SHA-256 fingerprints never contain a 12-character piece of the
//! token they hash, except by a chance of about 16^-12 per position.

use std::{
    collections::{HashMap, HashSet},
    fmt::Write as _,
};

/// Every canary starts with this; seeing it anywhere is a leak.
pub const MARKER: &str = "rwcanary";

/// Length of the pieces compared.
const PIECE: usize = 12;

/// A small deterministic generator (xorshift64*): the seed is printed so a
/// failing run can be repeated, and no crate is needed for it.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    /// Seed from the clock and pid: a new set of canaries every run.
    pub fn from_entropy() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        #[expect(
            clippy::cast_possible_truncation,
            reason = "mixing bits, truncation is fine"
        )]
        let seed = (nanos as u64) ^ (u64::from(std::process::id()) << 32);
        Self::new(seed)
    }

    pub fn seed(&self) -> u64 {
        self.0
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (n > 0); the modulo bias does not matter here.
    pub fn below(&mut self, n: usize) -> usize {
        #[expect(
            clippy::cast_possible_truncation,
            reason = "n is a usize, the result is below it"
        )]
        let r = (self.next_u64() % n.max(1) as u64) as usize;
        r
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let bytes = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = vec![0; n];
        self.fill(&mut v);
        v
    }
}

/// One planted secret and where it was planted (for the failure message).
#[derive(Clone, Debug)]
struct Planted {
    label: String,
    secret: String,
}

/// The secrets of one test run.
#[derive(Debug)]
pub struct Canaries {
    rng: Rng,
    planted: Vec<Planted>,
}

/// A canary found in an output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leak {
    /// Which output it was found in.
    pub output: String,
    /// Which planted secret, and in what form.
    pub what: String,
    /// The text around it.
    pub context: String,
}

impl std::fmt::Display for Leak {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} in {}: …{}…", self.what, self.output, self.context)
    }
}

impl Canaries {
    pub fn new(rng: Rng) -> Self {
        Self {
            rng,
            planted: Vec::new(),
        }
    }

    /// A fresh canary `rwcanary-<24 hex>` for `label` (where it goes).
    pub fn mint(&mut self, label: &str) -> String {
        let mut token = format!("{MARKER}-");
        for b in self.rng.bytes(12) {
            let _ = write!(token, "{b:02x}");
        }
        self.plant(label, &token);
        token
    }

    /// Registers a secret made from canaries (a Basic credential's base64,
    /// say) so its own pieces are looked for too.
    pub fn plant(&mut self, label: &str, secret: &str) {
        self.planted.push(Planted {
            label: label.to_owned(),
            secret: secret.to_owned(),
        });
    }

    /// Labels of the secrets of which no piece, in any form, is in
    /// `text`: a check that the traffic really carries every canary, so
    /// the scan of the outputs can fail.
    pub fn missing_from(&self, text: &[u8]) -> Vec<String> {
        let found: HashSet<usize> = self.matches(text).into_iter().map(|m| m.secret).collect();
        (0..self.planted.len())
            .filter(|i| !found.contains(i))
            .map(|i| self.planted[i].label.clone())
            .collect()
    }

    /// Lowercase 12-character pieces to look for, each with the secret's
    /// index and the form it is in.
    fn pieces(&self) -> Vec<(String, usize, &'static str)> {
        let mut out = Vec::new();
        for (i, p) in self.planted.iter().enumerate() {
            let raw = p.secret.as_bytes();
            let mut forms = vec![("as sent", p.secret.clone())];
            forms.push(("hex", hex(raw)));
            forms.push(("percent-encoded", percent_encode(raw)));
            for pad in 0..3 {
                // Base64 of the secret after `pad` other bytes: drop the
                // characters that also depend on the neighbours.
                let mut padded = vec![0u8; pad];
                padded.extend_from_slice(raw);
                let b64 = base64(&padded);
                let skip = if pad == 0 { 0 } else { 4 };
                let inner = b64
                    .get(skip..b64.len().saturating_sub(4))
                    .unwrap_or_default();
                forms.push(("base64", inner.to_owned()));
                forms.push(("base64url", inner.replace('+', "-").replace('/', "_")));
            }
            for (form, text) in forms {
                let lower = text.to_ascii_lowercase();
                let bytes = lower.as_bytes();
                for w in bytes.windows(PIECE) {
                    out.push((String::from_utf8_lossy(w).into_owned(), i, form));
                }
            }
        }
        out
    }

    /// Where pieces of secrets occur in `text`: the first place of each
    /// (secret, form).
    fn matches(&self, text: &[u8]) -> Vec<Match> {
        let lower = text.to_ascii_lowercase();
        let pieces = self.pieces();
        let mut wanted: HashMap<&[u8], Vec<(usize, &'static str)>> = HashMap::new();
        for (piece, secret, form) in &pieces {
            wanted
                .entry(piece.as_bytes())
                .or_default()
                .push((*secret, form));
        }
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for (at, w) in lower.windows(PIECE).enumerate() {
            for &(secret, form) in wanted.get(w).into_iter().flatten() {
                if seen.insert((secret, form)) {
                    out.push(Match { secret, form, at });
                }
            }
        }
        out
    }

    /// Every leak of any canary in `text`, the output called `output`.
    pub fn scan(&self, output: &str, text: &[u8]) -> Vec<Leak> {
        let context = |at: usize, len: usize| {
            let from = at.saturating_sub(60);
            let to = (at + len + 60).min(text.len());
            String::from_utf8_lossy(text.get(from..to).unwrap_or_default()).into_owned()
        };
        let mut leaks = Vec::new();
        if let Some(at) = find(&text.to_ascii_lowercase(), MARKER.as_bytes()) {
            leaks.push(Leak {
                output: output.to_owned(),
                what: format!("the canary marker {MARKER:?}"),
                context: context(at, MARKER.len()),
            });
        }
        for m in self.matches(text) {
            leaks.push(Leak {
                output: output.to_owned(),
                what: format!("canary {:?} ({})", self.planted[m.secret].label, m.form),
                context: context(m.at, PIECE),
            });
        }
        leaks
    }
}

struct Match {
    secret: usize,
    form: &'static str,
    at: usize,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Fails the test with every leak found, and the seed that repeats the run.
pub fn assert_no_leaks(seed: u64, leaks: &[Leak]) {
    assert!(
        leaks.is_empty(),
        "canaries leaked (seed {seed}):\n{}",
        leaks
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Standard base64 with padding (RFC 4648), as HTTP Basic uses.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk.first().copied().unwrap_or(0),
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub fn percent_encode(bytes: &[u8]) -> String {
    let mut s = String::new();
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            s.push(char::from(b));
        } else {
            let _ = write!(s, "%{b:02X}");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }

    #[test]
    fn scan_finds_every_form_and_cut_pieces_but_not_hashes() {
        let mut c = Canaries::new(Rng::new(7));
        let t = c.mint("test");
        let tail = t.get(9..).expect("random part").to_owned();
        let found = |text: &str| !c.scan("x", text.as_bytes()).is_empty();
        assert!(found(&format!("token={t}")));
        assert!(found(&t.to_ascii_uppercase()));
        assert!(found(&format!("cut {}…", tail.get(..12).expect("12"))));
        assert!(found(&hex(t.as_bytes())));
        assert!(found(&base64(format!("user:{t}").as_bytes())));
        assert!(found(&base64(format!("ab{t}").as_bytes())));
        assert!(!found("sha256:0123456789abcdef fingerprint, nothing else"));
        assert!(!found(&tail[..11]));
    }
}
