//! The appending side: open (with crash recovery), append, rotate.

use std::{
    fs::{File, OpenOptions, TryLockError},
    io::Write,
    os::unix::fs::{DirBuilderExt, OpenOptionsExt},
    path::{Path, PathBuf},
};

use super::{
    AuditError, GENESIS_PREV, HmacKey, RecordKind, RecoveryRecord,
    record::{self, Parsed},
    segment::{self, Segment},
};

/// Tuning for [`AuditLog`].
#[derive(Debug, Clone)]
pub struct AuditOptions {
    /// A segment is closed (with a `segment_end` record) before a record would take it past
    /// this size, so a segment exceeds it by at most that one `segment_end` line. A single
    /// record larger than this still goes into its own segment.
    pub max_segment_bytes: u64,
}

impl Default for AuditOptions {
    fn default() -> Self {
        Self {
            max_segment_bytes: 16 * 1024 * 1024,
        }
    }
}

/// An acknowledged record: it is on disk (fdatasync'ed) when this is returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    pub seq: u64,
    pub hash: String,
    pub segment: PathBuf,
}

/// What [`AuditLog::open`] found and did.
#[derive(Debug)]
pub struct OpenReport {
    pub dir: PathBuf,
    /// No segment existed: a new log was started.
    pub created: bool,
    /// Segment files after open.
    pub segments: usize,
    /// The last record after open (including a recovery record written by open);
    /// seq 0 and [`GENESIS_PREV`] for a new log.
    pub last_seq: u64,
    pub last_hash: String,
    /// Recoveries performed, each with the `recovery` record written to the chain: a torn
    /// tail moved aside, or a missing last segment.
    pub recovered: Vec<Recovered>,
    /// An empty segment left by a rotation that crashed before sealing its predecessor.
    pub removed_empty_segment: Option<PathBuf>,
    /// Things an operator should know (key changes, truncation found); one sentence each.
    pub warnings: Vec<String>,
}

/// A recovery performed at open.
#[derive(Debug, Clone)]
pub struct Recovered {
    pub found: String,
    /// Segment the torn bytes were cut from.
    pub segment: PathBuf,
    /// Where the torn bytes are kept (`None` when nothing had to be cut).
    pub torn_file: Option<PathBuf>,
    pub torn_bytes: u64,
    pub last_good_seq: u64,
    pub last_good_hash: String,
    /// The `recovery` record written to the chain.
    pub record: Appended,
}

/// An open, locked audit log. Not shared between threads; the agent owns it in one task.
#[derive(Debug)]
pub struct AuditLog {
    dir: PathBuf,
    key: Option<HmacKey>,
    opts: AuditOptions,
    /// Holds an exclusive `flock` on `DIR/.lock` for the log's lifetime: two writers would fork
    /// the chain.
    _lock: File,
    segment: Segment,
    file: File,
    /// Bytes in the current segment, all of them acknowledged records.
    len: u64,
    next_seq: u64,
    last_hash: String,
    poisoned: Option<String>,
}

/// How the current segment's tail looks.
struct Tail {
    /// Offset to cut at and why, when the tail is torn.
    cut: Option<(u64, String)>,
    /// The last intact line of the segment before the cut.
    last_good: Option<Parsed>,
}

/// The last line of `bytes` (which does not end in a newline) and its start offset.
fn last_line(bytes: &[u8]) -> Option<(usize, &[u8])> {
    if bytes.is_empty() {
        return None;
    }
    let line = bytes.rsplit(|&b| b == b'\n').next()?;
    Some((bytes.len() - line.len(), line))
}

/// Finds a torn tail: bytes after the last newline (a write that never completed) and a last
/// complete line that is not an intact record (a write whose blocks were only partly persisted).
/// Only the last record can be torn: each earlier one was fdatasync'ed before the next was
/// written. A damaged line before it is not a crash artefact, so it is an error here.
fn analyse_tail(path: &Path, bytes: &[u8]) -> Result<Tail, AuditError> {
    let complete_len = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let partial = bytes.len() - complete_len;
    let mut cut = (partial > 0).then(|| {
        (
            complete_len as u64,
            format!("incomplete last line ({partial} bytes without a newline)"),
        )
    });
    let complete = bytes.get(..complete_len).unwrap_or_default();
    let lines = complete.strip_suffix(b"\n").unwrap_or(complete);
    let Some((start, line)) = last_line(lines) else {
        return Ok(Tail {
            cut,
            last_good: None,
        });
    };
    match record::parse_line(line) {
        Ok(parsed) => Ok(Tail {
            cut,
            last_good: Some(parsed),
        }),
        Err(e) => {
            let also = if cut.is_some() {
                " followed by an incomplete line"
            } else {
                ""
            };
            cut = Some((start as u64, format!("damaged last record ({e}){also}")));
            let before = lines.get(..start.saturating_sub(1)).unwrap_or_default();
            let last_good = match last_line(before) {
                Some((_, prev)) => {
                    Some(record::parse_line(prev).map_err(|e| AuditError::Damaged {
                        path: path.to_owned(),
                        reason: format!("the two last records are damaged: {e}"),
                    })?)
                }
                None => None,
            };
            Ok(Tail { cut, last_good })
        }
    }
}

fn read(path: &Path) -> Result<Vec<u8>, AuditError> {
    std::fs::read(path).map_err(AuditError::io("read", path))
}

/// The last record of a segment that must be complete (every segment before the last was
/// sealed and synced before the next one got records).
fn last_record_of_sealed(seg: &Segment) -> Result<Option<Parsed>, AuditError> {
    let tail = analyse_tail(&seg.path, &read(&seg.path)?)?;
    if let Some((_, reason)) = tail.cut {
        return Err(AuditError::Damaged {
            path: seg.path.clone(),
            reason,
        });
    }
    Ok(tail.last_good)
}

fn is_seal(p: &Parsed) -> bool {
    matches!(p.kind, RecordKind::SegmentEnd { .. })
}

fn lock(dir: &Path) -> Result<File, AuditError> {
    let path = dir.join(".lock");
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(AuditError::io("open lock file", &path))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(AuditError::Locked {
            dir: dir.to_owned(),
        }),
        Err(TryLockError::Error(e)) => Err(AuditError::io("lock", &path)(e)),
    }
}

/// Keeps the torn bytes in `<segment>.torn` (or `<segment>.N.torn`), then cuts them off.
fn move_aside(dir: &Path, seg: &Segment, bytes: &[u8], at: u64) -> Result<PathBuf, AuditError> {
    let torn = usize::try_from(at)
        .ok()
        .and_then(|at| bytes.get(at..))
        .unwrap_or_default();
    let base = seg.file_name();
    let mut n = 0u32;
    let (path, mut file) = loop {
        let name = if n == 0 {
            format!("{base}{}", segment::TORN_SUFFIX)
        } else {
            format!("{base}.{n}{}", segment::TORN_SUFFIX)
        };
        let path = dir.join(name);
        match segment::create_new(&path) {
            Ok(f) => break (path, f),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => n += 1,
            Err(e) => return Err(AuditError::io("create", path)(e)),
        }
    };
    file.write_all(torn)
        .and_then(|()| file.sync_all())
        .map_err(AuditError::io("write", &path))?;
    segment::sync_dir(dir).map_err(AuditError::io("sync directory", dir))?;
    // Only now that the bytes are safe elsewhere, cut them off.
    let f = OpenOptions::new()
        .write(true)
        .open(&seg.path)
        .map_err(AuditError::io("open", &seg.path))?;
    f.set_len(at)
        .and_then(|()| f.sync_all())
        .map_err(AuditError::io("truncate", &seg.path))?;
    Ok(path)
}

fn key_warnings(key: Option<&HmacKey>, last: &Parsed) -> Option<String> {
    match (key, &last.hmac) {
        (Some(k), Some(h)) if !k.verify_hex(&last.body, h) => Some(format!(
            "the last record (seq {}) has an HMAC that does not match the configured key; was the key changed? `audit verify --key` will fail on the older records",
            last.seq
        )),
        (Some(_), None) => Some(format!(
            "records up to seq {} carry no HMAC; `audit verify --key` will report them as missing their HMAC",
            last.seq
        )),
        (None, Some(_)) => Some(
            "earlier records carry an HMAC but no key is configured; new records will have none"
                .to_owned(),
        ),
        _ => None,
    }
}

impl AuditLog {
    /// Opens (or creates) the log in `dir`, recovers a torn tail and takes the directory lock.
    pub fn open(
        dir: &Path,
        key: Option<HmacKey>,
        opts: AuditOptions,
    ) -> Result<(Self, OpenReport), AuditError> {
        ensure_dir(dir)?;
        let lock = lock(dir)?;
        let mut segments = segment::list(dir).map_err(AuditError::io("list", dir))?;
        let created = segments.is_empty();
        let mut warnings = Vec::new();
        let removed_empty_segment = drop_interrupted_rotation(dir, &mut segments)?;
        let mut current = last_or_first_segment(dir, &mut segments)?;

        let bytes = read(&current.path)?;
        let tail = analyse_tail(&current.path, &bytes)?;
        let mut torn = None;
        if let Some((at, found)) = tail.cut {
            let torn_file = move_aside(dir, &current, &bytes, at)?;
            torn = Some((found, torn_file, bytes.len() as u64 - at));
        }
        let mut last_good = tail.last_good;
        let sealed_current = last_good.as_ref().is_some_and(is_seal);
        if last_good.is_none()
            && let [.., prev, _] = segments.as_slice()
        {
            last_good = last_record_of_sealed(prev)?;
        }

        let mut recoveries = Vec::new();
        if let Some((found, torn_file, torn_bytes)) = torn {
            recoveries.push((found, current.clone(), Some(torn_file), torn_bytes));
        }
        // The last segment ends with a seal, but the segment it names is gone: the log was
        // truncated while no agent was running. Continue in a new segment of that name and say
        // so in the chain, since the removed records cannot be recovered.
        if sealed_current {
            let next = Segment::new(dir, current.number + 1);
            let found = format!(
                "{} ends with a segment_end naming {}, which was missing: the tail of the log was deleted",
                current.file_name(),
                next.file_name()
            );
            warnings.push(found.clone());
            segment::create_new(&next.path).map_err(AuditError::io("create", &next.path))?;
            segment::sync_dir(dir).map_err(AuditError::io("sync directory", dir))?;
            segments.push(next.clone());
            recoveries.push((found, current.clone(), None, 0));
            current = next;
        }

        if let Some(w) = last_good
            .as_ref()
            .and_then(|l| key_warnings(key.as_ref(), l))
        {
            warnings.push(w);
        }
        let (last_good_seq, last_good_hash) =
            last_good.map_or((0, GENESIS_PREV.to_owned()), |p| (p.seq, p.hash));

        let file =
            segment::open_append(&current.path).map_err(AuditError::io("open", &current.path))?;
        let len = file
            .metadata()
            .map_err(AuditError::io("stat", &current.path))?
            .len();
        let mut log = Self {
            dir: dir.to_owned(),
            key,
            opts,
            _lock: lock,
            segment: current,
            file,
            len,
            next_seq: last_good_seq + 1,
            last_hash: last_good_hash.clone(),
            poisoned: None,
        };

        let recovered = log.record_recoveries(recoveries, last_good_seq, &last_good_hash)?;

        let report = OpenReport {
            dir: dir.to_owned(),
            created,
            segments: segment::list(dir).map_or(segments.len(), |s| s.len()),
            last_seq: log.next_seq - 1,
            last_hash: log.last_hash.clone(),
            recovered,
            removed_empty_segment,
            warnings,
        };
        Ok((log, report))
    }

    /// Writes one `recovery` record per repair `open` made, so the chain says
    /// what was found and where the torn bytes went.
    fn record_recoveries(
        &mut self,
        recoveries: Vec<(String, Segment, Option<PathBuf>, u64)>,
        last_good_seq: u64,
        last_good_hash: &str,
    ) -> Result<Vec<Recovered>, AuditError> {
        let mut recovered = Vec::new();
        for (found, seg, torn_file, torn_bytes) in recoveries {
            let record = self.append(RecordKind::Recovery(RecoveryRecord {
                found: found.clone(),
                segment: seg.file_name(),
                torn_file: torn_file
                    .as_ref()
                    .and_then(|p| p.file_name())
                    .map(|n| n.to_string_lossy().into_owned()),
                torn_bytes,
                last_good_seq,
                last_good_hash: last_good_hash.to_owned(),
            }))?;
            recovered.push(Recovered {
                found,
                segment: seg.path,
                torn_file,
                torn_bytes,
                last_good_seq,
                last_good_hash: last_good_hash.to_owned(),
                record,
            });
        }
        Ok(recovered)
    }

    /// Appends a record and returns once it is durable (write + fdatasync). Rotates first when
    /// the record would take the segment past `max_segment_bytes`.
    pub fn append(&mut self, kind: RecordKind) -> Result<Appended, AuditError> {
        if let Some(reason) = &self.poisoned {
            return Err(AuditError::Poisoned {
                dir: self.dir.clone(),
                reason: reason.clone(),
            });
        }
        let time = record::now_rfc3339()?;
        let (line, _) = record::seal(
            self.next_seq,
            &time,
            &kind,
            &self.last_hash,
            self.key.as_ref(),
        )?;
        if self.len > 0 && self.len + line.len() as u64 > self.opts.max_segment_bytes {
            self.rotate(&time)?;
        }
        self.write_record(&time, &kind)
    }

    /// The last acknowledged record's seq and hash (0 and [`GENESIS_PREV`] for an empty log):
    /// worth exporting, since only an external copy can reveal a deleted tail.
    pub fn last(&self) -> (u64, &str) {
        (self.next_seq - 1, &self.last_hash)
    }

    /// The segment new records go to.
    pub fn current_segment(&self) -> &Path {
        &self.segment.path
    }

    fn rotate(&mut self, time: &str) -> Result<(), AuditError> {
        let next = Segment::new(&self.dir, self.segment.number + 1);
        // Create the next segment (durably) before sealing this one, so a seal always names
        // an existing file and a missing one means deletion.
        let file =
            segment::open_append(&next.path).map_err(AuditError::io("create", &next.path))?;
        segment::sync_dir(&self.dir).map_err(AuditError::io("sync directory", &self.dir))?;
        let len = file
            .metadata()
            .map_err(AuditError::io("stat", &next.path))?
            .len();
        if len != 0 {
            return Err(AuditError::Damaged {
                path: next.path,
                reason: "the next segment already holds data".to_owned(),
            });
        }
        self.write_record(
            time,
            &RecordKind::SegmentEnd {
                next_segment: next.file_name(),
            },
        )?;
        self.segment = next;
        self.file = file;
        self.len = 0;
        Ok(())
    }

    fn write_record(&mut self, time: &str, kind: &RecordKind) -> Result<Appended, AuditError> {
        let (line, hash) = record::seal(
            self.next_seq,
            time,
            kind,
            &self.last_hash,
            self.key.as_ref(),
        )?;
        if let Err(e) = self.file.write_all(&line) {
            // Cut a partial line off so the next record starts on a line of its own; if that
            // fails too, only a reopen (which recovers torn tails) can continue safely.
            if let Err(t) = self.file.set_len(self.len) {
                self.poisoned = Some(format!("write failed ({e}) and truncating failed ({t})"));
            }
            return Err(AuditError::io("write", &self.segment.path)(e));
        }
        if let Err(e) = self.file.sync_data() {
            // After a failed fsync the kernel may have dropped the dirty pages: what is on
            // disk is unknown, so stop and let a reopen sort it out.
            self.poisoned = Some(format!("fdatasync failed ({e})"));
            return Err(AuditError::io("fdatasync", &self.segment.path)(e));
        }
        self.len += line.len() as u64;
        let seq = self.next_seq;
        self.next_seq += 1;
        self.last_hash.clone_from(&hash);
        Ok(Appended {
            seq,
            hash,
            segment: self.segment.path.clone(),
        })
    }
}

/// Creates the log directory (mode 0750) if it is missing, durably.
fn ensure_dir(dir: &Path) -> Result<(), AuditError> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(dir)
        .map_err(AuditError::io("create directory", dir))?;
    // The new directory's own entry must survive a crash too.
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        segment::sync_dir(parent).map_err(AuditError::io("sync directory", parent))?;
    }
    Ok(())
}

/// A rotation creates the next segment before sealing the current one; a
/// crash in between leaves an empty last segment behind an unsealed one.
/// Drops it (the next rotation redoes it) and returns its path.
fn drop_interrupted_rotation(
    dir: &Path,
    segments: &mut Vec<Segment>,
) -> Result<Option<PathBuf>, AuditError> {
    let [.., prev, last] = segments.as_slice() else {
        return Ok(None);
    };
    let empty = std::fs::metadata(&last.path)
        .map_err(AuditError::io("stat", &last.path))?
        .len()
        == 0;
    let prev_sealed = analyse_tail(&prev.path, &read(&prev.path)?)
        .map(|t| t.cut.is_none() && t.last_good.as_ref().is_some_and(is_seal))
        .unwrap_or(false);
    if !empty || prev_sealed {
        return Ok(None);
    }
    let removed = last.path.clone();
    std::fs::remove_file(&removed).map_err(AuditError::io("remove", &removed))?;
    segment::sync_dir(dir).map_err(AuditError::io("sync directory", dir))?;
    segments.pop();
    Ok(Some(removed))
}

/// The segment to append to: the last one, or a new first one.
fn last_or_first_segment(dir: &Path, segments: &mut Vec<Segment>) -> Result<Segment, AuditError> {
    if let Some(seg) = segments.last() {
        return Ok(seg.clone());
    }
    let seg = Segment::new(dir, 1);
    segment::create_new(&seg.path).map_err(AuditError::io("create", &seg.path))?;
    segment::sync_dir(dir).map_err(AuditError::io("sync directory", dir))?;
    segments.push(seg.clone());
    Ok(seg)
}
