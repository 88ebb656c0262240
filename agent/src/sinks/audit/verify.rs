//! `rampwatch audit verify DIR [--key FILE]`: walks every segment and reports the first record
//! that breaks the chain.

use std::{
    fmt,
    fs::File,
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
};

use super::{
    GENESIS_PREV, HmacKey, RecordKind,
    record::{self, LineError},
    segment::{self, Segment},
};

/// The last intact record: copy it somewhere the log's writer cannot reach (a metrics system,
/// a ticket) — only such an anchor reveals records deleted from the end of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anchor {
    pub seq: u64,
    pub hash: String,
    pub segment: PathBuf,
    /// 1-based line number in `segment`.
    pub line: u64,
}

/// A valid `recovery` record: the agent found a torn tail (or a missing last segment) at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryNote {
    pub segment: PathBuf,
    pub line: u64,
    pub seq: u64,
    pub found: String,
    pub torn_file: Option<String>,
}

/// A valid `records_lost` record: the agent could not write `lost` records after `after_seq`
/// (disk full, read-only directory) and said so once the log was writable again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LostNote {
    pub segment: PathBuf,
    pub line: u64,
    pub seq: u64,
    pub lost: u64,
    pub after_seq: u64,
    pub reason: String,
}

/// Where the first problem is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub segment: Option<PathBuf>,
    /// 1-based line number in `segment`.
    pub line: Option<u64>,
    /// The seq the bad line claims, when it could be read.
    pub seq: Option<u64>,
    pub problem: Problem,
}

/// What is wrong. Each message says what it implies.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("cannot read the audit log: {0}")]
    Io(String),
    #[error("no audit segments (audit-NNNNNN.jsonl) in this directory; check the path")]
    NoSegments,
    #[error("segment {name} is missing: the records it held were deleted")]
    MissingSegment { name: String },
    #[error("{0}")]
    Malformed(String),
    #[error("record is not in canonical form: bytes were added, removed or reformatted")]
    NotCanonical,
    #[error("hash mismatch: the record's content was changed after it was written")]
    HashMismatch,
    #[error(
        "record is in audit format {version}, newer than this rampwatch reads ({}); verify the log with the rampwatch version that wrote it",
        super::record::FORMAT_VERSION
    )]
    NewerFormat { version: u32 },
    #[error("expected seq {expected} but found {found}: records were deleted")]
    Deleted { expected: u64, found: u64 },
    #[error(
        "expected seq {expected} but found {found}; seq {expected} appears later at {later}: records were reordered"
    )]
    Reordered {
        expected: u64,
        found: u64,
        later: String,
    },
    #[error(
        "expected seq {expected} but found {found}, which came earlier: records were duplicated or reordered"
    )]
    SeqBackwards { expected: u64, found: u64 },
    #[error(
        "prev does not match the hash of the previous record (seq {previous}): that record was changed and its hash recomputed, or records between them were removed"
    )]
    PrevMismatch { previous: u64 },
    #[error(
        "record has no hmac although a key was given: it was written without a key or the hmac was stripped"
    )]
    MissingHmac,
    #[error(
        "hmac mismatch: the record was forged (hash recomputed without the key) or written with another key"
    )]
    HmacMismatch,
    #[error(
        "last line is incomplete ({bytes} bytes without a newline): the log was truncated or the agent crashed mid-write (the agent moves it aside at its next start)"
    )]
    TornLine { bytes: u64 },
    #[error("a record follows this segment's segment_end record: records were appended or moved")]
    RecordAfterSegmentEnd,
    #[error(
        "the previous segment does not end with a segment_end record naming this one: its tail was deleted"
    )]
    UnsealedPredecessor,
    #[error("the previous segment's segment_end names {named}, not this segment")]
    WrongSuccessor { named: String },
    #[error(
        "this segment ends with a segment_end naming {next}, which is missing: the tail of the log was deleted"
    )]
    MissingLastSegment { next: String },
    #[error(
        "the log ends at seq {last}, but the anchor names seq {anchor}: records {first_missing}..={anchor} were deleted from the end",
        first_missing = .last + 1
    )]
    TruncatedTail { anchor: u64, last: u64 },
    #[error(
        "the record at seq {seq} has hash {found}, not the anchor's {anchor_hash}: the log was rewritten from there on, or the anchor is of another log"
    )]
    AnchorMismatch {
        seq: u64,
        anchor_hash: String,
        found: String,
    },
}

/// Result of [`verify`].
#[derive(Debug, Clone)]
pub struct VerifyReport {
    pub dir: PathBuf,
    pub segments: Vec<PathBuf>,
    /// Intact records before the first problem (all of them when intact).
    pub records: u64,
    pub last: Option<Anchor>,
    pub hmac_checked: bool,
    /// Intact records that carry an hmac.
    pub hmac_records: u64,
    pub recoveries: Vec<RecoveryNote>,
    /// Outages the agent recorded: records it never wrote.
    pub lost: Vec<LostNote>,
    /// `.torn` files kept by past recoveries.
    pub torn_files: Vec<PathBuf>,
    pub first_bad: Option<Finding>,
}

impl VerifyReport {
    pub fn is_intact(&self) -> bool {
        self.first_bad.is_none()
    }
}

/// An intact record as [`verify_visit`] hands it over: what `rampwatch
/// report` reads.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    pub seq: u64,
    /// RFC 3339, as written.
    pub time: String,
    /// The format version (`None`: format 1, before versions existed).
    pub v: Option<u32>,
    pub kind: RecordKind,
    /// The record's `hash` (what an anchor names).
    pub hash: String,
}

struct Walk<'a> {
    key: Option<&'a HmacKey>,
    /// Sees every intact record in chain order.
    visit: Option<&'a mut dyn FnMut(AuditEntry)>,
    report: VerifyReport,
    expected_seq: u64,
    prev_hash: String,
    /// `next_segment` of the last record, when it was a segment_end.
    sealed: Option<String>,
    /// The seq whose hash the caller wants (an anchor's), and that hash
    /// once an intact record with that seq was read.
    want: Option<u64>,
    wanted: Option<Anchor>,
}

/// Verifies the whole log in `dir`; with a key, every record must carry a matching hmac.
pub fn verify(dir: &Path, key: Option<&HmacKey>) -> VerifyReport {
    verify_seeking(dir, key, None).0
}

/// [`verify`], handing every intact record to `visit` in chain order. The
/// records before a problem are handed over too: only trust what was
/// visited when the report [`VerifyReport::is_intact`].
pub fn verify_visit(
    dir: &Path,
    key: Option<&HmacKey>,
    visit: &mut dyn FnMut(AuditEntry),
) -> VerifyReport {
    walk(dir, key, None, Some(visit)).0
}

/// [`verify`], also returning the intact record `want` (if the chain
/// reaches it): what an anchor is compared with.
pub(super) fn verify_seeking(
    dir: &Path,
    key: Option<&HmacKey>,
    want: Option<u64>,
) -> (VerifyReport, Option<Anchor>) {
    walk(dir, key, want, None)
}

fn walk<'a>(
    dir: &Path,
    key: Option<&'a HmacKey>,
    want: Option<u64>,
    visit: Option<&'a mut dyn FnMut(AuditEntry)>,
) -> (VerifyReport, Option<Anchor>) {
    let mut walk = Walk {
        key,
        visit,
        report: VerifyReport {
            dir: dir.to_owned(),
            segments: Vec::new(),
            records: 0,
            last: None,
            hmac_checked: key.is_some(),
            hmac_records: 0,
            recoveries: Vec::new(),
            lost: Vec::new(),
            torn_files: segment::list_torn(dir).unwrap_or_default(),
            first_bad: None,
        },
        expected_seq: 1,
        prev_hash: GENESIS_PREV.to_owned(),
        sealed: None,
        want,
        wanted: None,
    };
    if let Err(finding) = walk.run(dir) {
        walk.report.first_bad = Some(finding);
    }
    (walk.report, walk.wanted)
}

fn at(seg: &Segment, line: u64, seq: Option<u64>, problem: Problem) -> Finding {
    Finding {
        segment: Some(seg.path.clone()),
        line: Some(line),
        seq,
        problem,
    }
}

impl Walk<'_> {
    fn run(&mut self, dir: &Path) -> Result<(), Finding> {
        let segments = segment::list(dir).map_err(|e| Finding {
            segment: None,
            line: None,
            seq: None,
            problem: Problem::Io(format!("{}: {e}", dir.display())),
        })?;
        self.report.segments = segments.iter().map(|s| s.path.clone()).collect();
        if segments.is_empty() {
            return Err(Finding {
                segment: None,
                line: None,
                seq: None,
                problem: Problem::NoSegments,
            });
        }
        let mut expected_number = 1;
        for (i, seg) in segments.iter().enumerate() {
            if seg.number != expected_number {
                return Err(at(
                    seg,
                    1,
                    None,
                    Problem::MissingSegment {
                        name: segment::name(expected_number),
                    },
                ));
            }
            if i > 0 {
                match self.sealed.take() {
                    None => return Err(at(seg, 1, None, Problem::UnsealedPredecessor)),
                    Some(named) if named != seg.file_name() => {
                        return Err(at(seg, 1, None, Problem::WrongSuccessor { named }));
                    }
                    Some(_) => {}
                }
            }
            self.segment(seg, &segments)?;
            expected_number = seg.number + 1;
        }
        if let (Some(next), Some(last)) = (self.sealed.take(), self.report.last.clone()) {
            return Err(Finding {
                segment: Some(last.segment),
                line: Some(last.line),
                seq: Some(last.seq),
                problem: Problem::MissingLastSegment { next },
            });
        }
        Ok(())
    }

    fn segment(&mut self, seg: &Segment, all: &[Segment]) -> Result<(), Finding> {
        let io = |line, e: std::io::Error| {
            at(
                seg,
                line,
                None,
                Problem::Io(format!("{}: {e}", seg.path.display())),
            )
        };
        let mut reader = BufReader::new(File::open(&seg.path).map_err(|e| io(0, e))?);
        let mut buf = Vec::new();
        let mut line_no = 0u64;
        loop {
            buf.clear();
            let n = reader
                .read_until(b'\n', &mut buf)
                .map_err(|e| io(line_no + 1, e))?;
            if n == 0 {
                return Ok(());
            }
            line_no += 1;
            let Some(line) = buf.strip_suffix(b"\n") else {
                return Err(at(
                    seg,
                    line_no,
                    None,
                    Problem::TornLine { bytes: n as u64 },
                ));
            };
            self.record(seg, line_no, line, all)?;
        }
    }

    fn record(
        &mut self,
        seg: &Segment,
        line_no: u64,
        line: &[u8],
        all: &[Segment],
    ) -> Result<(), Finding> {
        let claimed = claimed_seq(line);
        if self.sealed.is_some() {
            return Err(at(seg, line_no, claimed, Problem::RecordAfterSegmentEnd));
        }
        let parsed = record::parse_line(line).map_err(|e| {
            let problem = match e {
                LineError::Malformed(m) => {
                    Problem::Malformed(format!("not a valid audit record ({m})"))
                }
                LineError::NotCanonical => Problem::NotCanonical,
                LineError::HashMismatch => Problem::HashMismatch,
                LineError::NewerFormat(v) => Problem::NewerFormat { version: v },
            };
            at(seg, line_no, claimed, problem)
        })?;
        let seq = Some(parsed.seq);
        if parsed.seq != self.expected_seq {
            let (expected, found) = (self.expected_seq, parsed.seq);
            let problem = if found < expected {
                Problem::SeqBackwards { expected, found }
            } else if let Some(later) = find_seq(all, seg, line_no, expected) {
                Problem::Reordered {
                    expected,
                    found,
                    later,
                }
            } else {
                Problem::Deleted { expected, found }
            };
            return Err(at(seg, line_no, seq, problem));
        }
        if parsed.prev != self.prev_hash {
            return Err(at(
                seg,
                line_no,
                seq,
                Problem::PrevMismatch {
                    previous: parsed.seq.saturating_sub(1),
                },
            ));
        }
        if let Some(key) = self.key {
            match &parsed.hmac {
                None => return Err(at(seg, line_no, seq, Problem::MissingHmac)),
                Some(h) if !key.verify_hex(&parsed.body, h) => {
                    return Err(at(seg, line_no, seq, Problem::HmacMismatch));
                }
                Some(_) => {}
            }
        }
        match &parsed.kind {
            RecordKind::Recovery(r) => self.report.recoveries.push(RecoveryNote {
                segment: seg.path.clone(),
                line: line_no,
                seq: parsed.seq,
                found: r.found.clone(),
                torn_file: r.torn_file.clone(),
            }),
            RecordKind::RecordsLost(l) => self.report.lost.push(LostNote {
                segment: seg.path.clone(),
                line: line_no,
                seq: parsed.seq,
                lost: l.lost,
                after_seq: l.after_seq,
                reason: l.reason.clone(),
            }),
            RecordKind::SegmentEnd { next_segment } => self.sealed = Some(next_segment.clone()),
            _ => {}
        }
        self.report.records += 1;
        self.report.hmac_records += u64::from(parsed.hmac.is_some());
        self.expected_seq = parsed.seq + 1;
        self.report.last = Some(Anchor {
            seq: parsed.seq,
            hash: parsed.hash.clone(),
            segment: seg.path.clone(),
            line: line_no,
        });
        if self.want == Some(parsed.seq) {
            self.wanted.clone_from(&self.report.last);
        }
        if let Some(visit) = self.visit.as_mut() {
            visit(AuditEntry {
                seq: parsed.seq,
                time: parsed.time,
                v: parsed.v,
                kind: parsed.kind,
                hash: parsed.hash.clone(),
            });
        }
        self.prev_hash = parsed.hash;
        Ok(())
    }
}

/// The seq a damaged line claims, for the report.
fn claimed_seq(line: &[u8]) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct SeqOnly {
        seq: u64,
    }
    serde_json::from_slice::<SeqOnly>(line).ok().map(|s| s.seq)
}

/// Looks for a line claiming `seq` after (`seg`, `line_no`), to tell reordering from deletion.
fn find_seq(all: &[Segment], seg: &Segment, line_no: u64, seq: u64) -> Option<String> {
    for s in all.iter().filter(|s| s.number >= seg.number) {
        let Ok(file) = File::open(&s.path) else {
            continue;
        };
        for (i, line) in BufReader::new(file).split(b'\n').enumerate() {
            let n = i as u64 + 1;
            if s.number == seg.number && n <= line_no {
                continue;
            }
            if line.ok().and_then(|l| claimed_seq(&l)) == Some(seq) {
                return Some(format!("{} line {n}", s.file_name()));
            }
        }
    }
    None
}

fn file_name(p: &Path) -> String {
    p.file_name().map_or_else(
        || p.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.is_intact() {
            "INTACT"
        } else {
            "NOT INTACT"
        };
        writeln!(f, "audit log {}: {verdict}", self.dir.display())?;
        match (self.segments.first(), self.segments.last()) {
            (Some(a), Some(b)) if self.segments.len() > 1 => writeln!(
                f,
                "  segments:   {} ({} .. {})",
                self.segments.len(),
                file_name(a),
                file_name(b)
            )?,
            (Some(a), _) => writeln!(f, "  segments:   1 ({})", file_name(a))?,
            _ => writeln!(f, "  segments:   0")?,
        }
        let verb = if self.is_intact() {
            "verified"
        } else {
            "intact before the problem"
        };
        writeln!(f, "  records:    {} {verb}", self.records)?;
        if self.hmac_checked {
            writeln!(f, "  hmac:       checked with the given key")?;
        } else if self.hmac_records > 0 {
            writeln!(
                f,
                "  hmac:       NOT checked ({} records carry one; pass --key FILE to check them)",
                self.hmac_records
            )?;
        } else {
            writeln!(
                f,
                "  hmac:       none (without a key, a rewritten chain cannot be told from the original)"
            )?;
        }
        for r in &self.recoveries {
            writeln!(
                f,
                "  recovery:   seq {} ({} line {}): {}{}",
                r.seq,
                file_name(&r.segment),
                r.line,
                r.found,
                r.torn_file
                    .as_ref()
                    .map(|t| format!("; torn bytes kept in {t}"))
                    .unwrap_or_default()
            )?;
        }
        for l in &self.lost {
            writeln!(
                f,
                "  lost:       {} records between seq {} and seq {} ({} line {}): the agent could not write them ({})",
                l.lost,
                l.after_seq,
                l.seq,
                file_name(&l.segment),
                l.line,
                l.reason
            )?;
        }
        for t in &self.torn_files {
            writeln!(f, "  torn file:  {}", file_name(t))?;
        }
        if let Some(bad) = &self.first_bad {
            let place = match (&bad.segment, bad.line) {
                (Some(s), Some(l)) => format!("{} line {l}", file_name(s)),
                (Some(s), None) => file_name(s),
                _ => self.dir.display().to_string(),
            };
            let seq = bad.seq.map(|s| format!(" (seq {s})")).unwrap_or_default();
            writeln!(f, "  FIRST BAD:  {place}{seq}: {}", bad.problem)?;
        }
        match &self.last {
            Some(a) => writeln!(
                f,
                "  last good:  seq {} hash {} in {}\n  Keep this seq and hash outside this host: records deleted from the end of the log are only detectable against such an anchor.",
                a.seq,
                a.hash,
                file_name(&a.segment)
            ),
            None => writeln!(f, "  last good:  none"),
        }
    }
}

/// `rampwatch audit verify`: prints the report to `out`. Exit code 0 when intact, 1 when a bad
/// record was found, 2 when the log could not be checked (key file unusable, no segments,
/// unreadable directory).
pub fn run_verify(dir: &Path, key_file: Option<&Path>, out: &mut impl Write) -> i32 {
    let key = match key_file.map(HmacKey::from_file).transpose() {
        Ok(key) => key,
        Err(e) => {
            let _ = writeln!(out, "error: {e}");
            return 2;
        }
    };
    let report = verify(dir, key.as_ref());
    // A failed write to `out` (closed pipe) does not change the verdict.
    let _ = write!(out, "{report}");
    exit_code(&report)
}

/// 0 intact, 2 when the log could not be checked, 1 otherwise.
pub(super) fn exit_code(report: &VerifyReport) -> i32 {
    match &report.first_bad {
        None => 0,
        Some(Finding {
            problem: Problem::Io(_) | Problem::NoSegments,
            ..
        }) => 2,
        Some(_) => 1,
    }
}
