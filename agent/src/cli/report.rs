//! `rampwatch report --stage NAME [--audit-dir DIR]...`: what happened during
//! a stage, from audit logs alone.
//!
//! Every log is verified first (a broken chain means no report: evidence
//! built on a tampered log is worse than none). Then, for the stage's span
//! (from its `stage_changed` records: entered at the first change to it,
//! left at the last change away from it; a stage still active runs to the
//! newest record), the records of all directories (one per node) are summed:
//! usage per client and endpoint against quota, the violations' lifecycles
//! and SLA breaches, acknowledgements, contract loads, stage changes, and
//! each node's starts, stops, recoveries and lost records. Field names of
//! the JSON form are documented in docs/audit.md and stay stable.

use std::{
    io::Write,
    path::{Path, PathBuf},
};

pub use super::{
    report_build::build,
    report_md::markdown,
    report_model::{
        Ack, Breach, ContractEvent, Lost, NodeSummary, Quota, Report, StageChange, Timed, Totals,
        UsageOther, UsageRow, ViolationRow,
    },
};
use crate::sinks::audit::{self, AuditEntry, HmacKey};

/// Why no report was built: one sentence each.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("the audit key file {path} cannot be used: {source}")]
    Key {
        path: PathBuf,
        source: audit::KeyError,
    },
    #[error(
        "give one --key for every --audit-dir, or one for all of them ({keys} keys for {dirs} directories)"
    )]
    KeyCount { keys: usize, dirs: usize },
    #[error("the audit log in {dir} cannot be read: {problem}")]
    Unreadable { dir: PathBuf, problem: String },
    #[error(
        "the audit log in {dir} is not intact: {place}: {problem}; no report is built from it (run `rampwatch audit verify {dir}` for details)"
    )]
    NotIntact {
        dir: PathBuf,
        place: String,
        problem: String,
    },
    #[error(transparent)]
    Anchor(#[from] audit::AnchorError),
    #[error(
        "give one --anchor for every --audit-dir, in the same order ({anchors} anchors for {dirs} directories)"
    )]
    AnchorCount { anchors: usize, dirs: usize },
    #[error("stage {stage:?} was never entered in these audit logs ({seen})")]
    NeverEntered { stage: String, seen: String },
}

impl ReportError {
    /// 1: a log does not verify; 2: the report could not be made.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::NotIntact { .. } => 1,
            _ => 2,
        }
    }
}

/// One directory's intact records.
#[derive(Debug)]
pub struct NodeLog {
    pub dir: PathBuf,
    pub entries: Vec<AuditEntry>,
    pub head: Option<(u64, String)>,
}

/// Verifies `dir` (against `anchor`, a head kept earlier, when given) and
/// returns its records.
pub fn read_node(
    dir: &Path,
    key: Option<&HmacKey>,
    anchor: Option<&audit::AnchorSpec>,
) -> Result<NodeLog, ReportError> {
    let mut entries = Vec::new();
    let report = audit::verify_visit(dir, key, &mut |e| entries.push(e));
    if let Some(bad) = &report.first_bad {
        if matches!(
            bad.problem,
            audit::Problem::Io(_) | audit::Problem::NoSegments
        ) {
            let problem = bad.problem.to_string();
            return Err(ReportError::Unreadable {
                dir: dir.to_owned(),
                problem: problem
                    .strip_prefix("cannot read the audit log: ")
                    .unwrap_or(&problem)
                    .to_owned(),
            });
        }
        let file = bad
            .segment
            .as_ref()
            .and_then(|s| s.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut place = file;
        if let Some(l) = bad.line {
            place.push_str(&format!(" line {l}"));
        }
        if let Some(s) = bad.seq {
            place.push_str(&format!(" (seq {s})"));
        }
        return Err(ReportError::NotIntact {
            dir: dir.to_owned(),
            place,
            problem: bad.problem.to_string(),
        });
    }
    if let Some(anchor) = anchor {
        let problem = match entries.iter().find(|e| e.seq == anchor.seq) {
            Some(e) if e.hash == anchor.hash => None,
            Some(e) => Some(audit::Problem::AnchorMismatch {
                seq: anchor.seq,
                anchor_hash: anchor.hash.clone(),
                found: e.hash.clone(),
            }),
            None => Some(audit::Problem::TruncatedTail {
                anchor: anchor.seq,
                last: entries.last().map_or(0, |e| e.seq),
            }),
        };
        if let Some(problem) = problem {
            return Err(ReportError::NotIntact {
                dir: dir.to_owned(),
                place: format!("against the anchor {anchor}"),
                problem: problem.to_string(),
            });
        }
    }
    Ok(NodeLog {
        dir: dir.to_owned(),
        entries,
        head: report.last.map(|a| (a.seq, a.hash)),
    })
}

/// `rampwatch report`: verifies every directory, builds the report, prints
/// it. `json`: one JSON object; otherwise Markdown.
pub fn run(
    stage: &str,
    dirs: &[PathBuf],
    keys: &[PathBuf],
    anchors: &[String],
    json: bool,
    out: &mut dyn Write,
) -> Result<(), anyhow::Error> {
    if !anchors.is_empty() && anchors.len() != dirs.len() {
        return Err(ReportError::AnchorCount {
            anchors: anchors.len(),
            dirs: dirs.len(),
        }
        .into());
    }
    let anchors = anchors
        .iter()
        .map(|a| audit::read_anchor(a).map_err(ReportError::from))
        .collect::<Result<Vec<_>, _>>()?;
    if !keys.is_empty() && keys.len() != 1 && keys.len() != dirs.len() {
        return Err(ReportError::KeyCount {
            keys: keys.len(),
            dirs: dirs.len(),
        }
        .into());
    }
    let keys = keys
        .iter()
        .map(|p| {
            HmacKey::from_file(p).map_err(|source| ReportError::Key {
                path: p.clone(),
                source,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut nodes = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        let key = keys.get(i).or_else(|| (keys.len() == 1).then(|| &keys[0]));
        nodes.push(read_node(dir, key, anchors.get(i))?);
    }
    let report = build(stage, &nodes)?;
    if json {
        serde_json::to_writer(&mut *out, &report)?;
        writeln!(out)?;
    } else {
        markdown(&report, out)?;
    }
    Ok(())
}
