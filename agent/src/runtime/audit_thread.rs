//! The audit log's writer thread.
//!
//! Every record is fsynced before `append` returns; doing that on the
//! engine's task would stall packet processing, so records go through a
//! channel to one thread that owns the log.
//!
//! A log that cannot be written (disk full, read-only or failing audit
//! directory) is an outage, not a reason to stop judging: the thread says so
//! once, counts every record it cannot write (`audit_write_failed`), shows the
//! state in `rampwatch status` and `rampwatch_audit_writable`, and tries again
//! every [`RETRY`]. The first record that gets through is a `records_lost`
//! record naming how many records are missing after which seq, so the chain
//! itself tells the story. A failed write never leaves a partial line in the
//! chain: the writer cuts it off, or, when it cannot, the log is dropped and
//! opened again, which moves a torn tail aside with a `recovery` record.

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

use super::paths;
use crate::sinks::audit::{
    AuditError, AuditLog, AuditOptions, HmacKey, LostRecord, OpenReport, RecordKind,
};

/// How often a log that cannot be written is tried again.
pub const RETRY: Duration = Duration::from_secs(1);

/// What `rampwatch status` and the metrics show about the log.
#[derive(Debug, Default)]
pub struct AuditHealth {
    /// Records that could not be written, since start.
    pub failed: AtomicU64,
    /// The log takes records.
    pub writable: AtomicBool,
    /// Why it does not, one sentence (`None` while writable).
    problem: Mutex<Option<String>>,
    /// The last record written (0 before the first).
    pub last_seq: AtomicU64,
}

impl AuditHealth {
    pub fn problem(&self) -> Option<String> {
        self.problem
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn set_problem(&self, problem: Option<String>) {
        self.writable.store(problem.is_none(), Ordering::Relaxed);
        *self
            .problem
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = problem;
    }
}

pub struct AuditWriter {
    tx: Option<mpsc::Sender<RecordKind>>,
    thread: Option<thread::JoinHandle<()>>,
    pub health: Arc<AuditHealth>,
}

/// An outage in progress: records not written since the log stopped taking them.
struct Outage {
    lost: u64,
    first_lost_at: String,
    last_lost_at: String,
    reason: String,
    last_try: Instant,
}

/// The thread's side: the log (when open) and what it needs to open it again.
struct Owner {
    dir: PathBuf,
    key: Option<HmacKey>,
    log: Option<AuditLog>,
    outage: Option<Outage>,
    health: Arc<AuditHealth>,
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// The cause of an error without the log's own prefix, for the record and status.
fn reason(e: &AuditError) -> String {
    match e {
        AuditError::Io { source, .. } => source.to_string(),
        other => other.to_string(),
    }
}

fn log_open_report(report: &OpenReport) {
    for r in &report.recovered {
        tracing::warn!(
            found = %r.found,
            segment = %r.segment.display(),
            torn_bytes = r.torn_bytes,
            last_good_seq = r.last_good_seq,
            "the audit log ended in a torn record (a crash mid-write); it was moved aside and the chain continues with a recovery record"
        );
    }
    for w in &report.warnings {
        tracing::warn!("audit log: {w}");
    }
}

/// Why the log could not be opened.
#[derive(Debug, thiserror::Error)]
enum OpenError {
    #[error(transparent)]
    Path(#[from] paths::PathError),
    #[error(transparent)]
    Audit(#[from] AuditError),
}

/// Opens the log after checking that no other user can change its
/// directory, and checks again after open (which creates missing
/// directories): a component created by someone else in between is caught.
fn open_checked(dir: &Path, key: Option<HmacKey>) -> Result<(AuditLog, OpenReport), OpenError> {
    paths::check_dir(dir, "audit directory")?;
    let opened = AuditLog::open(dir, key, AuditOptions::default())?;
    paths::check_dir(dir, "audit directory")?;
    Ok(opened)
}

impl Owner {
    /// Opens the log. An outage (full or read-only disk) is not fatal: it is
    /// recorded and retried; anything else is returned.
    fn open(&mut self) -> Result<(), OpenError> {
        match open_checked(&self.dir, self.key.clone()) {
            Ok((log, report)) => {
                log_open_report(&report);
                self.health
                    .last_seq
                    .store(report.last_seq, Ordering::Relaxed);
                self.log = Some(log);
                Ok(())
            }
            Err(OpenError::Audit(e)) if e.is_outage() => {
                self.begin_outage(&e, 0);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    fn begin_outage(&mut self, e: &AuditError, lost: u64) {
        let reason = reason(e);
        let after_seq = self.health.last_seq.load(Ordering::Relaxed);
        tracing::error!(
            dir = %self.dir.display(),
            after_seq,
            "the audit log in {} cannot be written ({reason}); judging and metrics go on, every record from now on is counted as lost (rampwatch_events_lost_total{{reason=\"audit_write_failed\"}}) and the log is tried again each second: free space or make the directory writable",
            self.dir.display(),
        );
        self.health.set_problem(Some(format!(
            "the audit log in {} cannot be written since {}: {reason}",
            self.dir.display(),
            now_rfc3339()
        )));
        let now = now_rfc3339();
        self.outage = Some(Outage {
            lost,
            first_lost_at: now.clone(),
            last_lost_at: now,
            reason,
            last_try: Instant::now(),
        });
    }

    fn lose(&mut self) {
        self.health.failed.fetch_add(1, Ordering::Relaxed);
        if let Some(o) = &mut self.outage {
            o.lost += 1;
            o.last_lost_at = now_rfc3339();
        }
    }

    /// During an outage, at most once per [`RETRY`]: opens the log if it is
    /// closed and writes the `records_lost` record. True when the log takes
    /// records again.
    fn try_recover(&mut self, force: bool) -> bool {
        let Some(outage) = &mut self.outage else {
            return true;
        };
        if !force && outage.last_try.elapsed() < RETRY {
            return false;
        }
        outage.last_try = Instant::now();
        if self.log.is_none() {
            match open_checked(&self.dir, self.key.clone()) {
                Ok((log, report)) => {
                    log_open_report(&report);
                    self.log = Some(log);
                }
                Err(OpenError::Path(e)) => {
                    // Refused, not merely unavailable: say so where the
                    // operator looks.
                    self.health.set_problem(Some(e.to_string()));
                    return false;
                }
                Err(OpenError::Audit(e)) => {
                    tracing::debug!(error = %e, "the audit log still cannot be opened");
                    return false;
                }
            }
        }
        let Some(log) = &mut self.log else {
            return false;
        };
        let Some(outage) = &self.outage else {
            return true;
        };
        let record = LostRecord {
            lost: outage.lost,
            after_seq: log.last().0,
            first_lost_at: outage.first_lost_at.clone(),
            last_lost_at: outage.last_lost_at.clone(),
            reason: outage.reason.clone(),
        };
        match log.append(RecordKind::RecordsLost(record.clone())) {
            Ok(appended) => {
                tracing::warn!(
                    dir = %self.dir.display(),
                    lost = record.lost,
                    after_seq = record.after_seq,
                    seq = appended.seq,
                    "the audit log in {} is writable again; {} records were lost between seq {} and seq {}, and the chain says so in a records_lost record",
                    self.dir.display(),
                    record.lost,
                    record.after_seq,
                    appended.seq,
                );
                self.health.last_seq.store(appended.seq, Ordering::Relaxed);
                self.health.set_problem(None);
                self.outage = None;
                true
            }
            Err(e) => {
                tracing::debug!(error = %e, "the audit log still cannot be written");
                if e.needs_reopen() {
                    self.log = None;
                }
                false
            }
        }
    }

    fn write(&mut self, record: RecordKind) {
        if self.outage.is_some() && !self.try_recover(false) {
            self.lose();
            return;
        }
        let Some(log) = &mut self.log else {
            self.lose();
            return;
        };
        match log.append(record) {
            Ok(appended) => self.health.last_seq.store(appended.seq, Ordering::Relaxed),
            Err(e) => {
                if e.needs_reopen() || !e.is_outage() {
                    // Poisoned: only a reopen (which recovers a torn tail)
                    // can continue safely.
                    self.log = None;
                }
                self.health.failed.fetch_add(1, Ordering::Relaxed);
                self.begin_outage(&e, 1);
            }
        }
    }

    fn run(mut self, rx: mpsc::Receiver<RecordKind>) {
        loop {
            match rx.recv_timeout(RETRY) {
                Ok(record) => self.write(record),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    self.try_recover(false);
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // One last try, so a recovered disk gets its records_lost
                    // record before the agent exits.
                    self.try_recover(true);
                    return;
                }
            }
        }
    }
}

impl AuditWriter {
    /// Opens the log in `dir` (recovering a torn tail) and starts the thread.
    /// A log that cannot be written now (full or read-only disk) starts the
    /// agent in an outage; another agent's lock, a damaged segment or an
    /// unusable key stop it.
    pub fn open(dir: &Path, key_file: Option<&Path>) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let key = key_file
            .map(HmacKey::from_file)
            .transpose()
            .context("the audit key file cannot be used")?;
        let health = Arc::new(AuditHealth::default());
        health.writable.store(true, Ordering::Relaxed);
        let mut owner = Owner {
            dir: dir.to_owned(),
            key,
            log: None,
            outage: None,
            health: Arc::clone(&health),
        };
        owner
            .open()
            .with_context(|| format!("cannot open the audit log in {}", dir.display()))?;
        let (tx, rx) = mpsc::channel::<RecordKind>();
        let thread = thread::Builder::new()
            .name("audit".into())
            .spawn(move || owner.run(rx))
            .context("cannot start the audit thread")?;
        Ok(Self {
            tx: Some(tx),
            thread: Some(thread),
            health,
        })
    }

    pub fn record(&self, record: RecordKind) {
        if let Some(tx) = &self.tx
            && tx.send(record).is_err()
        {
            self.health.failed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records that could not be written, since start.
    pub fn failed(&self) -> u64 {
        self.health.failed.load(Ordering::Relaxed)
    }

    /// Writes what is queued and stops the thread.
    pub fn close(mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::AuditWriter;
    use crate::sinks::audit::{RecordKind, verify};

    /// Polls `done` for up to 20 s (the writer retries once a second).
    fn wait_until(done: impl Fn() -> bool) -> bool {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::time::Instant::now() < deadline {
            if done() {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        done()
    }

    fn stop(reason: &str) -> RecordKind {
        RecordKind::AgentStop {
            reason: reason.to_owned(),
        }
    }

    /// An audit directory that cannot be created (a file is in the way)
    /// starts the writer in an outage; once the path is free, the first
    /// record written says how many were lost, and the chain verifies.
    #[test]
    fn an_outage_is_counted_and_closed_by_a_records_lost_record() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("audit");
        std::fs::write(&dir, b"in the way").expect("write a file where the log goes");
        let writer = AuditWriter::open(&dir, None).expect("an outage is not fatal");
        assert!(!writer.health.writable.load(Ordering::Relaxed));
        assert!(
            writer
                .health
                .problem()
                .is_some_and(|p| p.contains("cannot be written")),
            "{:?}",
            writer.health.problem()
        );
        for i in 0..3 {
            writer.record(stop(&format!("lost {i}")));
        }
        assert!(wait_until(|| writer.failed() == 3), "3 records counted");

        std::fs::remove_file(&dir).expect("free the path");
        assert!(
            wait_until(|| writer.health.writable.load(Ordering::Relaxed)),
            "the writer recovers on its own"
        );
        writer.record(stop("kept"));
        writer.close();

        let report = verify(&dir, None);
        assert!(report.is_intact(), "{report}");
        assert_eq!(report.lost.len(), 1, "{report}");
        assert_eq!(report.lost[0].lost, 3);
        assert_eq!(report.lost[0].after_seq, 0);
        assert_eq!(report.records, 2, "records_lost, then the kept record");
        assert!(
            report
                .to_string()
                .contains("3 records between seq 0 and seq 1")
        );
    }

    /// Another agent's lock is not an outage: start-up fails with the sentence.
    #[test]
    fn a_locked_log_still_stops_the_start() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let first = AuditWriter::open(tmp.path(), None).expect("first writer");
        let Err(e) = AuditWriter::open(tmp.path(), None) else {
            panic!("a second writer must be refused");
        };
        assert!(format!("{e:#}").contains("in use by another rampwatch process"));
        first.close();
    }
}
