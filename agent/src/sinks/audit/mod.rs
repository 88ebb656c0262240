//! Tamper-evident audit log: append-only, hash-chained JSON lines in size-bounded segments.
//!
//! - [`AuditLog`] appends records (`record::RecordKind`) and makes each durable before
//!   acknowledging it (write + `fdatasync` per record; see `docs/audit.md`).
//! - [`AuditLog::open`] recovers from a crash: a torn last line is moved to a `.torn` file and the
//!   chain continues with an explicit `recovery` record.
//! - [`verify`] / [`run_verify`] implement `rampwatch audit verify DIR [--key FILE]`;
//!   `anchor`: `rampwatch audit anchor` and `verify --anchor`, which catch a truncated tail.
//!
//! Blocking std I/O on purpose: the agent calls it from a dedicated thread, and an audit
//! record is only acknowledged once it is on disk.

mod anchor;
mod key;
mod record;
mod segment;
mod verify;
mod writer;

#[cfg(test)]
mod tests;

use std::path::PathBuf;

pub use anchor::{AnchorError, AnchorSpec, read_anchor, run_anchor, run_verify_anchored};
pub use key::{HmacKey, KeyError};
pub use record::{
    AckRecord, AuditOutcome, FORMAT_VERSION, GENESIS_PREV, LostRecord, RecordKind, RecoveryRecord,
    UsageOtherRecord, UsageQuota, UsageRecord, ViolationRecord,
};
pub use verify::{
    Anchor, AuditEntry, Finding, LostNote, Problem, RecoveryNote, VerifyReport, run_verify, verify,
    verify_visit,
};
pub use writer::{Appended, AuditLog, AuditOptions, OpenReport, Recovered};

/// Why the audit log cannot be opened or appended to.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log: cannot {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "audit log directory {dir} is in use by another rampwatch process; stop it or use another --audit-dir"
    )]
    Locked { dir: PathBuf },
    #[error(
        "audit log {path} ends in a record that cannot be read ({reason}); run `rampwatch audit verify {dir}` and move the damaged segment aside",
        dir = .path.parent().map(|p| p.display().to_string()).unwrap_or_default()
    )]
    Damaged { path: PathBuf, reason: String },
    #[error("audit log: cannot serialise a record: {0}")]
    Serialise(#[from] serde_json::Error),
    #[error("audit log: cannot format the current time: {0}")]
    Time(#[from] time::error::Format),
    #[error(
        "audit log {dir} stopped accepting records after a failed write ({reason}); restart the agent so it can recover the log"
    )]
    Poisoned { dir: PathBuf, reason: String },
}

impl AuditError {
    /// The log cannot be written for now (disk full, read-only, I/O errors, a write that left it
    /// poisoned): the agent keeps running, counts what it cannot write and tries again. The other
    /// errors need an operator (another agent holds the log, a damaged segment).
    pub fn is_outage(&self) -> bool {
        matches!(self, Self::Io { .. } | Self::Poisoned { .. })
    }

    /// Whether the open log must be dropped and opened again (which recovers a torn tail)
    /// before it can take records.
    pub fn needs_reopen(&self) -> bool {
        matches!(self, Self::Poisoned { .. })
    }

    fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { op, path, source }
    }
}
