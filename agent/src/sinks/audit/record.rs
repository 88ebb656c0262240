//! Audit records and their canonical, hash-chained line form.
//!
//! A stored line is the canonical body with the seal appended:
//!
//! ```text
//! {"seq":7,"time":"…Z","v":2,"kind":"stage_changed",…kind fields…,"prev":"<hex>","hash":"<hex>","hmac":"<hex>"}\n
//! ```
//!
//! The canonical body is `serde_json` (compact, no whitespace) of `seq`, `time`, `v` (the
//! record format version, [`FORMAT_VERSION`]; absent in records written before versions
//! existed, which are format 1), the kind's fields (the `kind` tag first, then the fields in
//! declaration order) and `prev`, in that order. `hash` is SHA-256 over exactly those body bytes; `hmac` is HMAC-SHA256 over the same
//! bytes. Both are lowercase hex. The seal is spliced in before the body's closing brace, so the
//! body is recovered by serialising the parsed record again; a line that does not reproduce
//! byte for byte (extra fields, reordered keys, whitespace, escaped characters) was edited.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::key::HmacKey;

/// `prev` of the first record of a log: there is no previous record.
pub const GENESIS_PREV: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The record format this agent writes, as every record's `v` field. 1 is
/// the format before versions existed (no `v` field): those records verify
/// and read unchanged. 2 added `v` itself and the `usage` and `usage_other`
/// kinds. A reader that meets a higher version says which one, rather than
/// calling the record tampered.
pub const FORMAT_VERSION: u32 = 2;

/// What happened. The variant name is the record's `kind` field (snake_case).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RecordKind {
    /// The agent started (`version` is the agent's build version).
    AgentStart {
        version: String,
    },
    /// The agent stopped cleanly (`reason`: signal or shutdown cause).
    AgentStop {
        reason: String,
    },
    /// A contract became active; `sha256` is the hex SHA-256 of the file's bytes.
    ContractLoaded {
        contract: String,
        sha256: String,
    },
    /// A new contract file was rejected and the last good one stays active.
    /// `sha256` identifies the rejected bytes; `errors` summarises why (one entry per error).
    ContractReloadRejected {
        sha256: String,
        errors: Vec<String>,
    },
    /// The active stage changed (`from` is `None` for the first stage after start).
    StageChanged {
        contract: String,
        from: Option<String>,
        to: String,
    },
    ViolationOpened(ViolationRecord),
    ViolationEscalated(ViolationRecord),
    ViolationResolved(ViolationRecord),
    /// Someone acknowledged an open violation (`rampwatch ack`); the clock
    /// keeps running.
    ViolationAcknowledged(AckRecord),
    /// Written by `AuditLog::open` after it moved a torn tail aside.
    Recovery(RecoveryRecord),
    /// Records the agent could not write (disk full, read-only or failing audit directory),
    /// written as soon as the log takes records again: the chain itself says that `lost`
    /// records are missing between seq `after_seq` and this record.
    RecordsLost(LostRecord),
    /// Requests of one (client, endpoint) pair in one usage interval (see
    /// [`UsageRecord`]); only pairs with traffic in the interval get one.
    Usage(UsageRecord),
    /// The pairs of an interval past the per-interval cap, summed in one
    /// record, so the log stays bounded and the totals stay exact.
    UsageOther(UsageOtherRecord),
    /// Last record of a full segment; names the segment the chain continues in, so that a
    /// deleted last segment is detectable.
    SegmentEnd {
        next_segment: String,
    },
}

/// A violation lifecycle step. `violation` is the violation kind (`kind` is taken by the record
/// tag); `client` is a contract client name, `unknown` or a fingerprint, never a raw credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViolationRecord {
    pub violation: String,
    pub endpoint: String,
    pub client: String,
    pub severity: String,
    pub count: u64,
    pub detail: String,
    /// `revoked_client`, `unknown_client`, `stale_credential`: what the API
    /// answered their requests so far (absent in records of other kinds
    /// and of older agents).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<AuditOutcome>,
    /// `quota_overshoot`: requests answered 429 while open so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttled: Option<u64>,
    /// The violation's stable id (`rampwatch violations`); absent in
    /// records written before ids existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// On `violation_resolved`: seconds from first seen to resolution
    /// (time to resolve).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_secs: Option<u64>,
    /// The client's local workload at the latest occurrence (live only;
    /// absent, and so outside the hash, when unknown: older logs verify).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_workload: Option<crate::identity::workload::FlowWorkload>,
}

/// Counts of what the API answered (see docs/audit.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditOutcome {
    pub served: u64,
    pub refused: u64,
    pub unknown: u64,
}

/// An acknowledgement: who (the name given and the caller's uid from
/// `SO_PEERCRED`), of what, why; the record's time says when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckRecord {
    pub id: String,
    pub violation: String,
    pub endpoint: String,
    pub client: String,
    /// Its severity when acknowledged.
    pub severity: String,
    pub by: String,
    pub uid: u32,
    pub note: String,
}

/// What `AuditLog::open` found and moved aside after a crash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveryRecord {
    /// One sentence: what was wrong with the tail.
    pub found: String,
    /// Segment file name the problem was found in.
    pub segment: String,
    /// File name (in the audit directory) holding the torn bytes, for forensics; `None` when
    /// nothing was cut (a missing last segment).
    pub torn_file: Option<String>,
    pub torn_bytes: u64,
    /// The last intact record before the torn bytes (0 / `GENESIS_PREV` when there was none).
    pub last_good_seq: u64,
    pub last_good_hash: String,
}

/// What an audit outage cost: written by the agent's audit thread when the log is writable
/// again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LostRecord {
    /// Records that were never written (each one the agent tried to append).
    pub lost: u64,
    /// The last record written before the outage; the lost ones belong between it and this one.
    pub after_seq: u64,
    /// RFC 3339 times of the first and the last record that could not be written.
    pub first_lost_at: String,
    pub last_lost_at: String,
    /// The first failure, one sentence (`No space left on device`, `Read-only file system`).
    pub reason: String,
}

/// Usage of one (client, endpoint) pair in one interval. Intervals are
/// aligned to multiples of their length since the Unix epoch, so intervals
/// of several nodes line up and `rampwatch report` can sum them; the first
/// one after start and the last one at a clean stop are shorter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageRecord {
    /// Contract client name, `unknown`, or a credential fingerprint —
    /// never a raw credential (the same label as the metrics).
    pub client: String,
    /// Endpoint name, or `unlisted`.
    pub endpoint: String,
    /// The active stage at the interval's end (`None` before the first).
    pub stage: Option<String>,
    /// RFC 3339 start and end of the interval (what the counts cover).
    pub from: String,
    pub to: String,
    /// The configured interval length in seconds (the aligned bucket).
    pub interval_secs: u64,
    /// Requests in the interval, and since the agent started.
    pub requests: u64,
    pub total: u64,
    /// The quota in force at the interval's end; `None` when the stage
    /// grants none.
    pub quota: Option<UsageQuota>,
    /// Responses in the interval by status class (`2xx`, `4xx`, `unknown`,
    /// …), only classes that occurred; sorted, so the form is canonical.
    pub responses: std::collections::BTreeMap<String, u64>,
}

/// A quota as written in the log: decimal strings, since the canonical form
/// has no floats (`"0.5"`, `"10"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageQuota {
    pub rps: String,
    pub burst: String,
}

/// What the per-interval cap left out of [`UsageRecord`]s.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageOtherRecord {
    pub stage: Option<String>,
    pub from: String,
    pub to: String,
    pub interval_secs: u64,
    /// Pairs not written one by one, and their requests in the interval.
    pub pairs: u64,
    pub requests: u64,
}

/// The hashed part of a record, in canonical field order.
#[derive(Serialize)]
struct Body<'a> {
    seq: u64,
    time: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    v: Option<u32>,
    #[serde(flatten)]
    kind: &'a RecordKind,
    prev: &'a str,
}

/// A stored line as parsed back.
#[derive(Deserialize)]
struct StoredLine {
    seq: u64,
    time: String,
    #[serde(default)]
    v: Option<u32>,
    #[serde(flatten)]
    kind: RecordKind,
    prev: String,
    hash: String,
    #[serde(default)]
    hmac: Option<String>,
}

/// A record read back from a segment whose line is canonical and whose hash matches.
#[derive(Debug, Clone)]
pub(crate) struct Parsed {
    pub seq: u64,
    pub time: String,
    /// The format version (`None`: format 1, before versions existed).
    pub v: Option<u32>,
    pub kind: RecordKind,
    pub prev: String,
    pub hash: String,
    pub hmac: Option<String>,
    /// The canonical body bytes the hash and HMAC cover.
    pub body: Vec<u8>,
}

/// Why a line is not an intact record.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LineError {
    #[error("not a valid audit record ({0})")]
    Malformed(String),
    #[error("record is not in canonical form: bytes were added, removed or reformatted")]
    NotCanonical,
    #[error("hash mismatch: the record's content was changed after it was written")]
    HashMismatch,
    #[error(
        "record is in audit format {0}, newer than this rampwatch reads ({FORMAT_VERSION}); verify the log with the rampwatch version that wrote it"
    )]
    NewerFormat(u32),
}

/// Canonical body bytes of a record.
pub(crate) fn body_bytes(
    seq: u64,
    time: &str,
    v: Option<u32>,
    kind: &RecordKind,
    prev: &str,
) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(&Body {
        seq,
        time,
        v,
        kind,
        prev,
    })
}

/// Lowercase hex SHA-256 of the body.
pub(crate) fn hash_hex(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

/// The stored line (with trailing newline) for a body and its seal.
pub(crate) fn sealed_line(body: &[u8], hash: &str, hmac: Option<&str>) -> Vec<u8> {
    // The body is a JSON object, so it ends with '}'; the seal goes before it.
    let open = body.strip_suffix(b"}").unwrap_or(body);
    let mut line = Vec::with_capacity(body.len() + 160);
    line.extend_from_slice(open);
    line.extend_from_slice(b",\"hash\":\"");
    line.extend_from_slice(hash.as_bytes());
    line.push(b'"');
    if let Some(hmac) = hmac {
        line.extend_from_slice(b",\"hmac\":\"");
        line.extend_from_slice(hmac.as_bytes());
        line.push(b'"');
    }
    line.extend_from_slice(b"}\n");
    line
}

/// Builds the stored line of a new record (format [`FORMAT_VERSION`]);
/// returns (line, hash).
pub(crate) fn seal(
    seq: u64,
    time: &str,
    kind: &RecordKind,
    prev: &str,
    key: Option<&HmacKey>,
) -> Result<(Vec<u8>, String), serde_json::Error> {
    let body = body_bytes(seq, time, Some(FORMAT_VERSION), kind, prev)?;
    let hash = hash_hex(&body);
    let hmac = key.map(|k| k.mac_hex(&body));
    Ok((sealed_line(&body, &hash, hmac.as_deref()), hash))
}

/// Parses one line (without its newline) and checks canonical form and hash.
/// HMAC and chain checks are the caller's: they need the key and the previous record.
pub(crate) fn parse_line(line: &[u8]) -> Result<Parsed, LineError> {
    let stored: StoredLine = serde_json::from_slice(line).map_err(|e| {
        // A newer agent's record may hold a kind or field this one does not
        // know: name the version instead of calling it malformed.
        newer_format(line).unwrap_or_else(|| LineError::Malformed(e.to_string()))
    })?;
    if stored.v.is_some_and(|v| v > FORMAT_VERSION) {
        return Err(newer_format(line).unwrap_or(LineError::HashMismatch));
    }
    let body = body_bytes(
        stored.seq,
        &stored.time,
        stored.v,
        &stored.kind,
        &stored.prev,
    )
    .map_err(|e| LineError::Malformed(e.to_string()))?;
    let mut expected = sealed_line(&body, &stored.hash, stored.hmac.as_deref());
    expected.pop(); // the newline
    if expected != line {
        return Err(LineError::NotCanonical);
    }
    if hash_hex(&body) != stored.hash {
        return Err(LineError::HashMismatch);
    }
    Ok(Parsed {
        seq: stored.seq,
        time: stored.time,
        v: stored.v,
        kind: stored.kind,
        prev: stored.prev,
        hash: stored.hash,
        hmac: stored.hmac,
        body,
    })
}

/// What to say about a line with a `v` above [`FORMAT_VERSION`]: a newer
/// format when the line's hash covers it (the body is the line cut at its
/// seal, as docs/audit.md shows), a hash mismatch when it does not (an
/// edited `v` is tampering, not a newer agent). `None` for other lines.
fn newer_format(line: &[u8]) -> Option<LineError> {
    #[derive(Deserialize)]
    struct VersionOnly {
        v: u32,
        hash: String,
    }
    let x = serde_json::from_slice::<VersionOnly>(line).ok()?;
    if x.v <= FORMAT_VERSION {
        return None;
    }
    let seal = line.windows(9).rposition(|w| w == b",\"hash\":\"")?;
    let mut body = line.get(..seal)?.to_vec();
    body.push(b'}');
    Some(if hash_hex(&body) == x.hash {
        LineError::NewerFormat(x.v)
    } else {
        LineError::HashMismatch
    })
}

/// Current time as RFC 3339 UTC with nanoseconds.
pub(crate) fn now_rfc3339() -> Result<String, time::error::Format> {
    time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339)
}
