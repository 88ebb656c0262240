//! Anchors: `rampwatch audit anchor DIR` prints the chain head (seq and
//! hash) to keep somewhere the log's writer cannot reach, and `audit verify
//! --anchor SEQ:HASH` (or a file holding it) checks the log against it. A
//! chain alone cannot reveal records deleted from its end; an anchor can:
//! the log must still hold that seq with that hash.

use std::{fmt, io::Write, path::Path, str::FromStr};

use serde::{Deserialize, Serialize};

use super::{
    HmacKey,
    verify::{Finding, Problem, exit_code, verify_seeking},
};

/// A kept chain head: `SEQ:HASH`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnchorSpec {
    pub seq: u64,
    /// The record's `hash`: 64 lowercase hex digits.
    pub hash: String,
}

impl fmt::Display for AnchorSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.seq, self.hash)
    }
}

/// Why an anchor cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnchorError {
    #[error(
        "{0}: not an anchor; pass SEQ:HASH as `rampwatch audit anchor` prints it (e.g. 42:3cb1…), or a file holding it"
    )]
    Syntax(String),
    #[error("cannot read the anchor file {path}: {reason}")]
    Read { path: String, reason: String },
}

impl FromStr for AnchorSpec {
    type Err = AnchorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || AnchorError::Syntax(shorten(s));
        let (seq, hash) = s.trim().split_once(':').ok_or_else(bad)?;
        let seq: u64 = seq.parse().map_err(|_| bad())?;
        let hash = hash.to_ascii_lowercase();
        if seq == 0 || hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        Ok(Self { seq, hash })
    }
}

/// Error messages echo at most the start of what was given.
fn shorten(s: &str) -> String {
    let s = s.trim();
    match s.char_indices().nth(80) {
        Some((i, _)) => format!("{:?}…", s.get(..i).unwrap_or_default()),
        None => format!("{s:?}"),
    }
}

/// Anchor files larger than this are not anchors.
const MAX_ANCHOR_FILE: u64 = 64 * 1024;

/// `--anchor` argument: `SEQ:HASH`, or a file holding `SEQ:HASH` or the JSON
/// object `audit anchor -o json` prints.
pub fn read_anchor(arg: &str) -> Result<AnchorSpec, AnchorError> {
    if let Ok(spec) = arg.parse() {
        return Ok(spec);
    }
    let path = Path::new(arg);
    if !path.is_file() {
        return Err(AnchorError::Syntax(shorten(arg)));
    }
    let read_err = |reason: String| AnchorError::Read {
        path: arg.to_owned(),
        reason,
    };
    let text = {
        use std::io::Read as _;
        let mut text = String::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_ANCHOR_FILE).read_to_string(&mut text))
            .map_err(|e| read_err(e.to_string()))?;
        text
    };
    let text = text.trim();
    if text.starts_with('{') {
        return serde_json::from_str::<AnchorSpec>(text)
            .map_err(|e| read_err(format!("not an anchor object ({e})")))
            .and_then(|a| a.to_string().parse());
    }
    text.parse()
}

/// The last record of an intact log, as `audit anchor -o json` prints it.
#[derive(Debug, Clone, Serialize)]
struct AnchorView {
    seq: u64,
    hash: String,
    segment: String,
    line: u64,
    anchor: String,
}

/// `rampwatch audit anchor DIR [--key FILE] [-o json]`: verifies the log,
/// then prints its head as `SEQ:HASH` (JSON with its segment and line with
/// `json`). A log that does not verify has no anchor worth keeping: the
/// report goes to `err` and the exit code is `verify`'s.
pub fn run_anchor(
    dir: &Path,
    key_file: Option<&Path>,
    json: bool,
    out: &mut impl Write,
    err: &mut impl Write,
) -> i32 {
    let key = match key_file.map(HmacKey::from_file).transpose() {
        Ok(key) => key,
        Err(e) => {
            let _ = writeln!(err, "error: {e}");
            return 2;
        }
    };
    let (report, _) = verify_seeking(dir, key.as_ref(), None);
    let last = match (&report.first_bad, &report.last) {
        (None, Some(last)) => last,
        _ => {
            let _ = write!(err, "{report}");
            let _ = writeln!(
                err,
                "no anchor printed: the log does not verify, so its head proves nothing"
            );
            return exit_code(&report).max(1);
        }
    };
    let spec = AnchorSpec {
        seq: last.seq,
        hash: last.hash.clone(),
    };
    let written = if json {
        let view = AnchorView {
            seq: spec.seq,
            hash: spec.hash.clone(),
            segment: last
                .segment
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            line: last.line,
            anchor: spec.to_string(),
        };
        serde_json::to_string(&view)
            .map_err(std::io::Error::other)
            .and_then(|line| writeln!(out, "{line}"))
    } else {
        writeln!(out, "{spec}")
    };
    match written {
        Ok(()) => 0,
        Err(e) => {
            let _ = writeln!(err, "error: cannot write the anchor: {e}");
            2
        }
    }
}

/// `rampwatch audit verify DIR [--key FILE] [--anchor SEQ:HASH|FILE]`: as
/// [`super::run_verify`], and with an anchor the log must also still hold
/// that seq with that hash; a shorter intact log is a truncated tail.
pub fn run_verify_anchored(
    dir: &Path,
    key_file: Option<&Path>,
    anchor: Option<&str>,
    out: &mut impl Write,
) -> i32 {
    let Some(anchor) = anchor else {
        return super::run_verify(dir, key_file, out);
    };
    let spec = match read_anchor(anchor) {
        Ok(spec) => spec,
        Err(e) => {
            let _ = writeln!(out, "error: {e}");
            return 2;
        }
    };
    let key = match key_file.map(HmacKey::from_file).transpose() {
        Ok(key) => key,
        Err(e) => {
            let _ = writeln!(out, "error: {e}");
            return 2;
        }
    };
    let (mut report, found) = verify_seeking(dir, key.as_ref(), Some(spec.seq));
    let mut anchor_line = None;
    match found {
        Some(record) if record.hash == spec.hash => {
            anchor_line = Some(format!(
                "  anchor:     seq {} hash {} found: nothing up to it was removed or rewritten",
                spec.seq, spec.hash
            ));
        }
        Some(record) => {
            // The chain is intact up to the anchor's seq, yet that record
            // differs: a consistent rewrite. It is the first bad record.
            report.first_bad = Some(Finding {
                segment: Some(record.segment.clone()),
                line: Some(record.line),
                seq: Some(spec.seq),
                problem: Problem::AnchorMismatch {
                    seq: spec.seq,
                    anchor_hash: spec.hash.clone(),
                    found: record.hash,
                },
            });
        }
        None if report.first_bad.is_none() => {
            let last = report.last.as_ref().map_or(0, |l| l.seq);
            report.first_bad = Some(Finding {
                segment: report.last.as_ref().map(|l| l.segment.clone()),
                line: None,
                seq: Some(spec.seq),
                problem: Problem::TruncatedTail {
                    anchor: spec.seq,
                    last,
                },
            });
        }
        // The chain broke before the anchor's seq; that break is reported.
        None => {
            anchor_line = Some(format!(
                "  anchor:     seq {} not reached: the chain breaks before it",
                spec.seq
            ));
        }
    }
    let _ = write!(out, "{report}");
    if let Some(line) = anchor_line {
        let _ = writeln!(out, "{line}");
    }
    exit_code(&report)
}
